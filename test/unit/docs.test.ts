/**
 * The README documents every metric and every New Relic attribute the code
 * produces, and nothing that it does not.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeMetrics } from '../../src/aggregate/registry.js';
import { NEW_RELIC_ATTRIBUTES } from '../../src/sinks/newrelic.js';
import { tableNames } from '../helpers/readme.js';

test('every metric is in the README metrics table, and only those', () => {
  assert.deepEqual(tableNames('### Metrics'), describeMetrics().map((d) => d.name));
});

test('every New Relic attribute is in the README attribute table, and only those', () => {
  assert.deepEqual(tableNames('### New Relic events'), Object.keys(NEW_RELIC_ATTRIBUTES));
});
