/**
 * The bench and the soak start each agent as its own first line would
 * (`#!/usr/bin/env -S NAME=VALUE node --flag`): the variables and the Node
 * flags are read from it, so a build from another commit is measured as it
 * runs, and the measured agent is the one users start.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { convisSpec, shebangEnv, shebangNodeFlags } from '../../bench/lib.js';
import { repoRoot } from '../helpers/paths.js';

test('bin/convis: the bench reads its variables and flags from the first line', () => {
  const entry = join(repoRoot, 'bin/convis');
  assert.deepEqual(shebangEnv(entry), { MALLOC_ARENA_MAX: '2' });
  assert.deepEqual(shebangNodeFlags(entry), ['--v8-pool-size=1']);
  const spec = convisSpec(entry, ['stdout']);
  assert.deepEqual(spec.env, { MALLOC_ARENA_MAX: '2' });
  assert.deepEqual(spec.args, ['--v8-pool-size=1', entry, '--sink', 'stdout']);
});

test('first lines of other shapes: several variables, none, no flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'convis-shebang-'));
  try {
    const cases: [string, Record<string, string>, string[]][] = [
      ['#!/usr/bin/env -S A=1 B_2=x node --max-old-space-size=64 --v8-pool-size=1', { A: '1', B_2: 'x' }, ['--max-old-space-size=64', '--v8-pool-size=1']],
      ['#!/usr/bin/env -S node --v8-pool-size=1', {}, ['--v8-pool-size=1']],
      ['#!/usr/bin/env node', {}, []],
    ];
    for (const [line, env, flags] of cases) {
      const f = join(dir, 'entry');
      writeFileSync(f, `${line}\nconsole.log(1);\n`);
      assert.deepEqual(shebangEnv(f), env, line);
      assert.deepEqual(shebangNodeFlags(f), flags, line);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
