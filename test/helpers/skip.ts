/**
 * Skipping a suite that cannot run here (not root, no BTF, no dockerd):
 * loudly, with the reason on stderr and in the test report. Under CI=true
 * nothing may skip: the suite is still skipped, but a failing test with the
 * reason takes its place, so CI goes red instead of passing on less.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

export const inCI = (): boolean => process.env.CI === 'true' || process.env.CI === '1';

/** `why` as a skip reason for node:test (false: run), said loudly; under CI=true it also registers a failing test. */
export function skipLoudly(what: string, why: string | undefined | false): string | false {
  if (!why) return false;
  process.stderr.write(`\n*** SKIPPING ${what}: ${why} ***\n\n`);
  if (inCI()) {
    test(`${what} must run under CI=true`, () => {
      assert.fail(`${what} would be skipped (${why}); CI=true does not allow skipping`);
    });
  }
  return why;
}
