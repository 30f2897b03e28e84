/**
 * The container cache and lookup policy, with in-process runtime clients
 * that implement the RuntimeClient contract (the real runtimes are tested
 * in test/privileged). The cgroup index walks real directories.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CgroupIndex, cgroup2MountPoints } from '../../src/metadata/cgroup-index.js';
import type { ContainerRef } from '../../src/metadata/cgroup.js';
import { RuntimeUnavailableError, type ContainerInfo, type PodSandbox, type RuntimeClient, type RuntimeName } from '../../src/metadata/container.js';
import { Containers } from '../../src/metadata/containers.js';
import { createLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/tmp.js';

const ID1 = '1'.repeat(64);
const NONE: ReadonlySet<number> = new Set();
const ID2 = '2'.repeat(64);

class FakeRuntime implements RuntimeClient {
  readonly endpoint: string;
  calls: string[] = [];
  known = new Map<string, ContainerInfo>();
  down = false;
  hang = false;
  pods: PodSandbox[] = [];
  constructor(readonly runtime: RuntimeName) {
    this.endpoint = `/run/${runtime}.sock`;
  }
  async inspect(id: string): Promise<ContainerInfo | null> {
    this.calls.push(id);
    if (this.hang) await new Promise(() => undefined);
    if (this.down) throw new RuntimeUnavailableError(this.runtime, `connect ENOENT ${this.endpoint}`);
    return this.known.get(id) ?? null;
  }
  async listPodSandboxes(): Promise<PodSandbox[]> {
    if (this.down) throw new RuntimeUnavailableError(this.runtime, 'down');
    return this.pods;
  }
  close(): void {}
}

const info = (id: string, runtime: RuntimeName, pod?: ContainerInfo['pod']): ContainerInfo => ({
  id,
  name: `n-${id.slice(0, 4)}`,
  image: 'img:1',
  runtime,
  labels: {},
  ...(pod ? { pod } : {}),
});

function setup(runtimes: FakeRuntime[], extra: Partial<ConstructorParameters<typeof Containers>[0]> = {}) {
  const lines: string[] = [];
  let now = 1000;
  const c = new Containers({ runtimes, log: createLogger(false, (l) => lines.push(l)), now: () => now, ...extra });
  return { c, lines, advance: (ms: number) => (now += ms) };
}

const ref = (id: string, runtime: RuntimeName = 'docker'): ContainerRef => ({ id, runtime });

describe('Containers', () => {
  test('each container is asked about once; concurrent lookups share one call', async () => {
    const docker = new FakeRuntime('docker');
    docker.known.set(ID1, info(ID1, 'docker'));
    const { c } = setup([docker]);
    assert.equal(c.needs([ref(ID1)], NONE), true);
    await Promise.all([c.resolve([ref(ID1)], NONE), c.resolve([ref(ID1)], NONE)]);
    assert.deepEqual(docker.calls, [ID1]);
    assert.equal(c.get(ID1)?.name, 'n-1111');
    assert.equal(c.needs([ref(ID1)], NONE), false);
    await c.resolve([ref(ID1)], NONE);
    assert.deepEqual(docker.calls, [ID1]);
  });

  test('the runtime the cgroup path names is asked first, then the others', async () => {
    const docker = new FakeRuntime('docker');
    const cri = new FakeRuntime('containerd');
    cri.known.set(ID1, info(ID1, 'containerd'));
    const { c } = setup([docker, cri]);
    await c.resolve([ref(ID1, 'cri')], NONE);
    assert.deepEqual(cri.calls, [ID1]);
    assert.deepEqual(docker.calls, []);
    await c.resolve([ref(ID2, 'podman')], NONE); // nobody matches podman: all are asked
    assert.deepEqual(docker.calls, [ID2]);
    assert.deepEqual(cri.calls, [ID1, ID2]);
  });

  test('an id nobody knows is not asked about again until unknownForMs has passed', async () => {
    const docker = new FakeRuntime('docker');
    const { c, advance } = setup([docker], { unknownForMs: 60_000 });
    await c.resolve([ref(ID1)], NONE);
    assert.equal(c.needs([ref(ID1)], NONE), false);
    advance(59_999);
    assert.equal(c.needs([ref(ID1)], NONE), false);
    advance(1);
    assert.equal(c.needs([ref(ID1)], NONE), true);
    assert.equal(c.stats().unknown, 1);
  });

  test('a runtime that is down: one warning, skipped for downForMs, then asked again', async () => {
    const docker = new FakeRuntime('docker');
    docker.down = true;
    const { c, lines, advance } = setup([docker], { downForMs: 30_000, unknownForMs: 0 });
    await c.resolve([ref(ID1)], NONE);
    await c.resolve([ref(ID2)], NONE);
    assert.deepEqual(docker.calls, [ID1], 'not asked while down');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^convis: warning: docker at \/run\/docker\.sock is unavailable \(connect ENOENT/);
    assert.equal(c.stats().runtimeErrors, 1);
    advance(30_000);
    docker.down = false;
    docker.known.set(ID2, info(ID2, 'docker'));
    await c.resolve([ref(ID2)], NONE);
    assert.equal(c.get(ID2)?.id, ID2);
    assert.match(lines[1]!, /docker at \/run\/docker\.sock answers again/);
  });

  test('a hung runtime holds a batch for waitMs at most', async () => {
    const docker = new FakeRuntime('docker');
    docker.hang = true;
    const { c } = setup([docker], { waitMs: 50, now: Date.now });
    const t0 = Date.now();
    await c.resolve([ref(ID1)], NONE);
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(c.stats().lateBatches, 1);
  });

  test('pod IPs come from the pod runtime and are re-read when a new pod container appears', async () => {
    const cri = new FakeRuntime('containerd');
    cri.pods = [{ id: 's1', name: 'db-0', namespace: 'shop', uid: 'u1', ips: ['10.88.0.5', 'fd00::5'] }];
    cri.known.set(ID1, info(ID1, 'containerd', { name: 'web-0', namespace: 'shop', uid: 'u2' }));
    const { c } = setup([cri], { pods: cri, podRefreshMs: 60_000 });
    await c.resolve([], NONE);
    assert.equal(c.podByIp('10.88.0.5')?.name, 'db-0');
    assert.equal(c.podByIp('fd00::5')?.namespace, 'shop');
    cri.pods.push({ id: 's2', name: 'web-0', namespace: 'shop', uid: 'u2', ips: ['10.88.0.6'] });
    await c.resolve([ref(ID1, 'cri')], NONE);
    assert.equal(c.podByIp('10.88.0.6')?.name, 'web-0', 're-read although podRefreshMs has not passed');
    assert.equal(c.stats().podIps, 3);
  });

  test('the least recently used container is forgotten past maxContainers', async () => {
    const docker = new FakeRuntime('docker');
    const ids = ['a', 'b', 'c'].map((x) => x.repeat(64));
    for (const id of ids) docker.known.set(id, info(id, 'docker'));
    const { c } = setup([docker], { maxContainers: 2 });
    await c.resolve([ref(ids[0]!)], NONE);
    await c.resolve([ref(ids[1]!)], NONE);
    c.get(ids[0]!); // used: b is now the least recent
    await c.resolve([ref(ids[2]!)], NONE);
    assert.ok(c.get(ids[0]!));
    assert.equal(c.get(ids[1]!), undefined);
    assert.ok(c.get(ids[2]!));
  });
});

describe('CgroupIndex', () => {
  test('maps directory inode numbers to paths and remembers removed cgroups', async () => {
    const root = tempDir('convis-cg-');
    const dir = join(root, 'docker', ID1);
    mkdirSync(dir, { recursive: true });
    const ino = Number(statSync(dir).ino);
    const index = new CgroupIndex({ root });
    assert.equal(index.get(ino), undefined);
    await index.find([ino]);
    assert.equal(index.get(ino), `/docker/${ID1}`);
    assert.equal(index.get(Number(statSync(root).ino)), '/');
    rmSync(join(root, 'docker'), { recursive: true });
    await index.refresh();
    assert.equal(index.get(ino), `/docker/${ID1}`, 'a container that just exited is still named');
    const c = new Containers({ runtimes: [], log: createLogger(false, () => undefined), cgroups: index });
    assert.deepEqual(c.refOfCgroup(ino), { id: ID1, runtime: 'docker' });
    assert.equal(c.mayFindCgroup(ino), false, 'known already');
    assert.equal(c.mayFindCgroup(424242), true);
  });

  test('find() walks only for ids worth looking for; one that was not found is not looked for again soon', async () => {
    const root = tempDir('convis-cg-');
    let now = 0;
    const index = new CgroupIndex({ root, missedForMs: 30_000, now: () => now });
    await index.find([999_999_999]);
    assert.equal(index.refreshes, 1);
    assert.equal(index.isWorthLookingFor(999_999_999), false);
    await index.find([999_999_999]);
    assert.equal(index.refreshes, 1, 'a recent miss does not walk again');
    // a cgroup made after the last walk is found by the next one
    mkdirSync(join(root, 'fresh'));
    const fresh = Number(statSync(join(root, 'fresh')).ino);
    await index.find([fresh]);
    assert.equal(index.get(fresh), '/fresh');
    assert.equal(index.refreshes, 2);
    now = 30_000;
    assert.equal(index.isWorthLookingFor(999_999_999), true);
  });

  test('a refresh asked for during a walk gets a walk of its own, shared by callers', async () => {
    const root = tempDir('convis-cg-');
    const index = new CgroupIndex({ root });
    const first = index.refresh();
    const second = index.refresh();
    const third = index.refresh();
    assert.notEqual(first, second);
    assert.equal(second, third);
    await Promise.all([first, second, third]);
    assert.equal(index.refreshes, 2);
  });

  test('cgroup2 mount points from mountinfo', () => {
    const mountinfo = [
      '25 30 0:23 / /sys/fs/cgroup rw,nosuid shared:9 - tmpfs tmpfs ro,mode=755',
      '26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw',
      '27 25 0:25 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory',
    ].join('\n');
    assert.deepEqual(cgroup2MountPoints(mountinfo), ['/sys/fs/cgroup/unified']);
    assert.deepEqual(cgroup2MountPoints('30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n'), ['/sys/fs/cgroup']);
    assert.deepEqual(cgroup2MountPoints('garbage\n'), []);
  });
});

test('ids no runtime knows: at most maxUnknown held; the oldest is forgotten, counted, and may be asked about again', async () => {
  const docker = new FakeRuntime('docker');
  const { c } = setup([docker], { maxUnknown: 2 });
  const ids = ['a', 'b', 'c'].map((x) => x.repeat(64));
  for (const id of ids) await c.resolve([ref(id)], NONE);
  assert.deepEqual(docker.calls, ids);
  assert.equal(c.stats().unknown, 3);
  assert.equal(c.stats().unknownCached, 2);
  assert.equal(c.stats().unknownEvicted, 1);
  // the two held are not asked again; the forgotten one is
  assert.equal(c.needs([ref(ids[1]!)], NONE), false);
  assert.equal(c.needs([ref(ids[2]!)], NONE), false);
  assert.equal(c.needs([ref(ids[0]!)], NONE), true);
});

test('known containers: at most maxContainers held, the least recently used forgotten and counted', async () => {
  const docker = new FakeRuntime('docker');
  for (const id of [ID1, ID2]) docker.known.set(id, info(id, 'docker'));
  const { c } = setup([docker], { maxContainers: 1 });
  await c.resolve([ref(ID1)], NONE);
  await c.resolve([ref(ID2)], NONE);
  assert.equal(c.stats().cached, 1);
  assert.equal(c.stats().evicted, 1);
  assert.equal(c.get(ID1), undefined);
  assert.equal(c.get(ID2)?.name, 'n-2222');
});
