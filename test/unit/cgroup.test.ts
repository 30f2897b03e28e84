/**
 * Container ids from cgroup paths, for every runtime and cgroup driver, on
 * fixture /proc/<pid>/cgroup files shaped as each layout writes them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { containerFromPath, containerFromProcCgroup, type ContainerRef } from '../../src/metadata/cgroup.js';
import { repoRoot } from '../helpers/paths.js';

const dir = join(repoRoot, 'test/fixtures/cgroup');
const A = '3f9c1b7e5d2a4c6b8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d';
const UID = '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c';

const EXPECTED: Record<string, ContainerRef | undefined> = {
  'docker-cgroupfs-hybrid.txt': { id: A, runtime: 'docker' },
  'docker-cgroupfs-hybrid-unified.txt': { id: A, runtime: 'docker' },
  'docker-systemd-v2.txt': { id: A, runtime: 'docker' },
  'docker-systemd-v1.txt': { id: A, runtime: 'docker' },
  'cri-cgroupfs-hybrid.txt': { id: A, runtime: 'cri', podUid: UID },
  'cri-cgroupfs-v2.txt': { id: A, runtime: 'cri', podUid: UID },
  'containerd-systemd-v2.txt': { id: A, runtime: 'containerd', podUid: UID },
  'containerd-systemd-guaranteed-v2.txt': { id: A, runtime: 'containerd', podUid: UID },
  'containerd-k8sio-v2.txt': { id: A, runtime: 'containerd' },
  'crio-systemd-v2.txt': { id: A, runtime: 'cri-o', podUid: UID },
  'crio-cgroupfs-hybrid.txt': { id: A, runtime: 'cri-o', podUid: UID },
  'podman-cgroupfs-hybrid.txt': { id: A, runtime: 'podman' },
  'podman-systemd-v2.txt': { id: A, runtime: 'podman' },
  'podman-rootless-v2.txt': { id: A, runtime: 'podman' },
  // conmon watches a podman container but is not in it
  'podman-conmon-v2.txt': undefined,
  // seen from inside a cgroup namespace: paths are relative to its root
  'cgroupns-relative-v2.txt': { id: A, runtime: 'cri', podUid: UID },
  'cgroupns-own-root-v2.txt': undefined,
  // kind: a kubelet inside a Docker container; the innermost container wins
  'nested-kind-v2.txt': { id: A, runtime: 'containerd', podUid: UID },
  'host-session-v2.txt': undefined,
  'host-hybrid.txt': undefined,
  'host-init-v2.txt': undefined,
};

test('every fixture has an expectation and every expectation a fixture', () => {
  assert.deepEqual(readdirSync(dir).sort(), Object.keys(EXPECTED).sort());
});

for (const [file, want] of Object.entries(EXPECTED)) {
  test(`/proc/<pid>/cgroup: ${file}`, () => {
    assert.deepEqual(containerFromProcCgroup(readFileSync(join(dir, file), 'utf8')), want);
  });
}

test('single paths, including near misses', () => {
  const cases: [string, ContainerRef | undefined][] = [
    [`/docker/${A}`, { id: A, runtime: 'docker' }],
    [`/docker/${A.slice(1)}`, undefined], // 63 hex digits
    [`/docker/${A.toUpperCase()}`, undefined], // ids are lower-case
    [`/system.slice/docker-${A}.scope/init.scope`, { id: A, runtime: 'docker' }],
    [`/system.slice/docker.service`, undefined],
    [`/some/where/${A}`, { id: A, runtime: 'cri' }],
    [`/`, undefined],
    [``, undefined],
  ];
  for (const [path, want] of cases) assert.deepEqual(containerFromPath(path), want, path);
});

test('malformed lines are ignored, not fatal', () => {
  assert.equal(containerFromProcCgroup('garbage\n\n::\n'), undefined);
  assert.deepEqual(containerFromProcCgroup(`junk\n4:memory:/docker/${A}\n`), { id: A, runtime: 'docker' });
});
