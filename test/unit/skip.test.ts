/**
 * Suites that cannot run here skip loudly; under CI=true a skip is a failure.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const skipModule = fileURLToPath(new URL('../helpers/skip.js', import.meta.url));

function runSuite(ci: string | undefined) {
  const script = `import { describe, test } from 'node:test';
import { skipLoudly } from ${JSON.stringify(skipModule)};
const skip = skipLoudly('the widget tests', 'no widget here');
describe('widgets', { skip }, () => { test('works', () => {}); });`;
  const env = { ...process.env };
  delete env.CI;
  if (ci !== undefined) env.CI = ci;
  // NODE_TEST_CONTEXT set by the outer runner would make the child report to it instead
  delete env.NODE_TEST_CONTEXT;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env });
}

test('without CI: the suite is skipped, loudly, and the run passes', () => {
  const r = runSuite(undefined);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /\*\*\* SKIPPING the widget tests: no widget here \*\*\*/);
  assert.match(r.stdout, /# SKIP no widget here/);
});

test('under CI=true: the same skip fails the run, naming the reason', () => {
  const r = runSuite('true');
  assert.notEqual(r.status, 0);
  assert.match(r.stdout, /the widget tests must run under CI=true/);
  assert.match(r.stdout, /no widget here/);
  assert.match(r.stdout, /# fail 1/);
});
