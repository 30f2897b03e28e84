/**
 * The README documents every metric and every New Relic attribute the code
 * produces, and nothing that it does not.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeMetrics } from '../../src/aggregate/registry.js';
import { NEW_RELIC_ATTRIBUTES } from '../../src/sinks/newrelic.js';
import { repoRoot } from '../helpers/paths.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The first-column names of the markdown table rows that follow a heading. */
function tableNames(heading: string): string[] {
  const start = readme.indexOf(heading);
  assert.ok(start >= 0, `README has "${heading}"`);
  const rows = readme.slice(start).split('\n').slice(1);
  const names: string[] = [];
  let inTable = false;
  for (const row of rows) {
    if (row.startsWith('|')) {
      inTable = true;
      const m = /^\| `([^`]+)` \|/.exec(row);
      if (m) names.push(m[1]!);
    } else if (inTable) break;
  }
  return names;
}

test('every metric is in the README metrics table, and only those', () => {
  assert.deepEqual(tableNames('### Metrics'), describeMetrics().map((d) => d.name));
});

test('every New Relic attribute is in the README attribute table, and only those', () => {
  assert.deepEqual(tableNames('### New Relic events'), Object.keys(NEW_RELIC_ATTRIBUTES));
});
