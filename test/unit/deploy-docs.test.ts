/**
 * The README's deploy sections, scripts/image.sh and deploy/image/Dockerfile
 * say the same as the code and the tests: the capability list, the mounts,
 * and the image's settings.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { REQUIRED_CAPABILITIES } from '../../src/tracer/preflight.js';
import { CAPABILITIES, IMAGE, MOUNTS } from '../helpers/deploy.js';
import { repoRoot } from '../helpers/paths.js';
import { readme, tableNames } from '../helpers/readme.js';

const read = (p: string) => readFileSync(join(repoRoot, p), 'utf8');

test('the README lists exactly the capabilities preflight requires, and the mounts the image tests use', () => {
  assert.deepEqual(tableNames('### Capabilities'), REQUIRED_CAPABILITIES.map((c) => c.name));
  assert.deepEqual(tableNames('### Mounts'), MOUNTS.map((m) => m.path));
  assert.ok(MOUNTS.every((m) => m.readOnly));
});

test("the README's docker run is the tests' flags: --cap-drop=ALL, the capabilities, host pid, read-only mounts, the image", () => {
  const m = /```sh\n(docker run [^`]*)```/.exec(readme);
  assert.ok(m, 'README has a docker run example');
  const cmd = m[1]!.replace(/\\\n\s*/g, ' ');
  assert.match(cmd, /--cap-drop=ALL/);
  assert.deepEqual([...cmd.matchAll(/--cap-add=(\w+)/g)].map((x) => x[1]), CAPABILITIES);
  assert.match(cmd, /--pid=host/);
  assert.match(cmd, /--read-only/);
  assert.doesNotMatch(cmd, /--privileged/);
  for (const mount of MOUNTS.filter((x) => x.path.startsWith('/sys'))) assert.ok(cmd.includes(`-v ${mount.host}:${mount.path}:ro`), mount.path);
  assert.ok(cmd.includes(IMAGE), IMAGE);
});

test('deploy/image/Dockerfile gives the image the settings scripts/image.sh gives it', () => {
  const script = read('scripts/image.sh');
  const changes = [...script.matchAll(/--change ['"]([A-Z]+) (.*)['"]$/gm)].map((x) => [x[1]!, x[2]!] as const);
  const dockerfile = read('deploy/image/Dockerfile');
  const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM scratch'));
  const version = (JSON.parse(read('package.json')) as { version: string }).version;
  const instructions = final.split('\n').filter((l) => /^[A-Z]+ /.test(l));
  for (const [kind, value] of changes) {
    const expected = `${kind} ${value.replace('$version', version)}`;
    assert.ok(instructions.includes(expected), `the Dockerfile lacks: ${expected}`);
  }
  assert.equal(instructions.filter((l) => !l.startsWith('FROM') && !l.startsWith('COPY')).length, changes.length);
  assert.match(dockerfile, /bash deploy\/image\/rootfs\.sh \/rootfs/);
  assert.match(dockerfile, new RegExp(`-t ${IMAGE.replace(/[.]/g, '\\.')} `));
});
