/**
 * Network namespace handles for the start-up snapshot, on a fixture tree:
 * one path per namespace (by inode), from processes and from bind mounts.
 */
import assert from 'node:assert/strict';
import { linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { netnsPaths } from '../../src/metadata/netns.js';
import { tempDir } from '../helpers/tmp.js';

test('one handle per namespace: processes sharing one are walked once, bind mounts add the rest', () => {
  const root = tempDir('convis-netns-');
  const proc = join(root, 'proc');
  const bind = join(root, 'run-netns');
  mkdirSync(bind, { recursive: true });
  const ns = (pid: string) => {
    mkdirSync(join(proc, pid, 'ns'), { recursive: true });
    return join(proc, pid, 'ns/net');
  };
  // pids 1 and 2 share a namespace (hard links: one inode), 3 has its own
  writeFileSync(ns('1'), 'a');
  linkSync(join(proc, '1/ns/net'), ns('2'));
  writeFileSync(ns('3'), 'b');
  // not a pid, and a pid without a readable namespace
  mkdirSync(join(proc, 'self'), { recursive: true });
  mkdirSync(join(proc, '4'), { recursive: true });
  // a bind mount of pid 3's namespace and one of a namespace with no process
  linkSync(join(proc, '3/ns/net'), join(bind, 'same-as-3'));
  writeFileSync(join(bind, 'empty'), 'c');
  assert.deepEqual(netnsPaths(proc, [bind, join(root, 'missing')]), [join(proc, '1/ns/net'), join(proc, '3/ns/net'), join(bind, 'empty')]);
});

test('no procfs and no bind mounts: nothing to walk but the agent\'s own namespace', () => {
  const root = tempDir('convis-netns-');
  assert.deepEqual(netnsPaths(join(root, 'nope'), [join(root, 'none')]), []);
});
