/**
 * The pipeline keeps kernel order while a batch waits for a container
 * lookup, and does not wait when the queue is too long.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ConnRecord } from '../../src/bpf/decode.js';
import { RuntimeUnavailableError, type ContainerInfo, type RuntimeClient } from '../../src/metadata/container.js';
import { Containers } from '../../src/metadata/containers.js';
import { Enricher } from '../../src/metadata/enrich.js';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import { ProcessCache } from '../../src/metadata/process-cache.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import type { Sink } from '../../src/sinks/sink.js';
import { toJsonLine } from '../../src/sinks/stdout.js';
import { createLogger } from '../../src/util/log.js';
import { repoRoot } from '../helpers/paths.js';
import { mkdirSync, statSync } from 'node:fs';
import { CgroupIndex } from '../../src/metadata/cgroup-index.js';
import { tempDir } from '../helpers/tmp.js';

const ID = 'd'.repeat(64);

/** A runtime whose answer the test releases by hand. */
class GatedRuntime implements RuntimeClient {
  readonly runtime = 'docker' as const;
  readonly endpoint = 'test';
  release: () => void = () => undefined;
  private readonly gate = new Promise<void>((r) => (this.release = r));
  async inspect(id: string): Promise<ContainerInfo | null> {
    await this.gate;
    if (id !== ID) throw new RuntimeUnavailableError('docker', 'unexpected id');
    return { id, name: 'web', image: 'nginx:1', runtime: 'docker', labels: {} };
  }
  close(): void {}
}

class Collect implements Sink {
  readonly name = 'collect';
  events: ConnectionEvent[] = [];
  write(events: readonly ConnectionEvent[]): void {
    this.events.push(...events);
  }
  async close(): Promise<void> {}
  stats() {
    return { sent: this.events.length, dropped: 0 };
  }
}

function conn(connId: number, cgroupId: number): ConnRecord {
  return {
    kind: 'connect', proto: 'tcp', pid: 0, tsSec: 0, tsNsec: 1, tid: 0, uid: 0, ppid: 0, comm: '', ownerKnown: false, startSeen: true, existing: false,
    connId, cgroupId, netns: 1, family: 4, direction: 'outbound', localIp: '10.0.0.1', localPort: 1000 + connId,
    remoteIp: '10.0.0.2', remotePort: 80, error: 0, bytesSent: 0, bytesReceived: 0, durationMs: 0, srttUs: 0,
    retransmits: 0, oldState: 0, deltaSent: 0, deltaReceived: 0, packetsSent: 0, packetsReceived: 0, deltaRetransmits: 0,
  };
}

async function setup(maxWaiting?: number, indexFirst = true, maxBacklogRecords?: number) {
  // a socket whose cgroup is a docker container's, found through a real directory tree
  const root = tempDir('convis-pipe-');
  mkdirSync(join(root, 'docker', ID), { recursive: true });
  const containerCg = Number(statSync(join(root, 'docker', ID)).ino);
  const hostCg = Number(statSync(root).ino);
  const cgroups = new CgroupIndex({ root });
  if (indexFirst) await cgroups.refresh();
  const runtime = new GatedRuntime();
  const containers = new Containers({ runtimes: [runtime], cgroups, log: createLogger(false, () => undefined) });
  const processes = new ProcessCache({ procRoot: join(repoRoot, 'test/fixtures/proc') });
  const enricher = new Enricher({ processes, containers, node: 'n', clockOffset: { sec: 0, nsec: 0 } });
  const sink = new Collect();
  const pipeline = new Pipeline({
    enricher,
    containers,
    sinks: [sink],
    ...(maxWaiting !== undefined ? { maxWaiting } : {}),
    ...(maxBacklogRecords !== undefined ? { maxBacklogRecords } : {}),
  });
  return { pipeline, sink, runtime, containerCg, hostCg, enricher, containers };
}

test('a batch waiting for a lookup holds later batches back, and all arrive in order with the name', async () => {
  const { pipeline, sink, runtime, containerCg, hostCg } = await setup();
  pipeline.push([conn(1, containerCg)]);
  pipeline.push([conn(2, hostCg)]); // needs nothing, but must not overtake
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(sink.events.length, 0);
  runtime.release();
  await pipeline.drain();
  assert.deepEqual(sink.events.map((e) => e.connId), [1, 2]);
  assert.equal(sink.events[0]!.container?.name, 'web');
  assert.equal(sink.events[1]!.container, null);
  assert.deepEqual(pipeline.stats(), { waited: 1, hurried: 0, released: 0, queued: 0, backlogRecords: 0 });
});

test('with the queue full, a batch goes on without waiting and is counted', async () => {
  const { pipeline, sink, runtime, containerCg } = await setup(1);
  pipeline.push([conn(1, containerCg)]);
  pipeline.push([conn(2, containerCg)]);
  runtime.release();
  await pipeline.drain();
  assert.deepEqual(sink.events.map((e) => e.connId), [1, 2]);
  assert.deepEqual(pipeline.stats(), { waited: 1, hurried: 1, released: 0, queued: 0, backlogRecords: 0 });
});

test('the backlog is bounded: past maxBacklogRecords it goes on at once, in order, without its lookups, and is counted', async () => {
  const { pipeline, sink, runtime, containerCg, hostCg } = await setup(undefined, true, 5);
  pipeline.push([conn(1, containerCg)]); // waits for the runtime, which does not answer yet
  pipeline.push([conn(2, hostCg), conn(3, hostCg)]);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(sink.events.length, 0);
  assert.deepEqual(pipeline.stats(), { waited: 1, hurried: 0, released: 0, queued: 2, backlogRecords: 3 });
  // 3 + 3 > 5: the two queued batches go on now, and the new one takes their place
  pipeline.push([conn(4, hostCg), conn(5, hostCg), conn(6, containerCg)]);
  assert.deepEqual(sink.events.map((e) => e.connId), [1, 2, 3]);
  assert.equal(sink.events[0]!.container?.name, null, 'sent on before the runtime answered');
  assert.deepEqual(pipeline.stats(), { waited: 1, hurried: 0, released: 2, queued: 1, backlogRecords: 3 });
  runtime.release();
  await pipeline.drain();
  assert.deepEqual(sink.events.map((e) => e.connId), [1, 2, 3, 4, 5, 6]);
  assert.equal(sink.events[5]!.container?.name, 'web', 'the lookup went on, for later events');
  assert.equal(pipeline.stats().queued, 0);
});

test('a socket cgroup the index has not seen yet is found by a walk, then its container looked up', async () => {
  const { pipeline, sink, runtime, containerCg } = await setup(undefined, false);
  pipeline.push([conn(1, containerCg)]);
  runtime.release();
  await pipeline.drain();
  assert.deepEqual(sink.events[0]!.container, { id: ID, name: 'web', image: 'nginx:1', runtime: 'docker' });
});

test('events share one container object until the runtime answers, then a new one with the name (JSON follows)', async () => {
  const { runtime, containerCg, enricher, containers } = await setup();
  const one = (id: number) => enricher.finish(enricher.ingest([conn(id, containerCg)]))[0]!;
  const before = [one(1), one(2)];
  assert.equal(before[0]!.container?.name, null);
  assert.equal(before[0]!.container, before[1]!.container, 'the same object while nothing changed');
  runtime.release();
  const batch = enricher.ingest([conn(3, containerCg)]);
  await containers.resolve(batch.refs.values(), batch.unknownCgroups);
  const after = [enricher.finish(batch)[0]!, one(4)];
  assert.equal(after[0]!.container?.name, 'web');
  assert.notEqual(after[0]!.container, before[0]!.container);
  assert.equal(after[0]!.container, after[1]!.container);
  // the JSON fast path caches by object: it must show the name now
  assert.equal((JSON.parse(toJsonLine(before[0]!)) as { container: { name: null } }).container.name, null);
  assert.equal((JSON.parse(toJsonLine(after[1]!)) as { container: { name: string } }).container.name, 'web');
});
