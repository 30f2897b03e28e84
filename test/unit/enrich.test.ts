/**
 * Enricher: kernel records in, ConnectionEvents out, with a real
 * ProcessCache over the fixture /proc tree (test/fixtures/proc).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ConnKind, ConnRecord, ExecRecord, KernelRecord, TaskRecord } from '../../src/bpf/decode.js';
import { Enricher, errnoName } from '../../src/metadata/enrich.js';
import { ProcessCache } from '../../src/metadata/process-cache.js';
import { Containers } from '../../src/metadata/containers.js';
import { createLogger } from '../../src/util/log.js';
import { repoRoot } from '../helpers/paths.js';

const procRoot = join(repoRoot, 'test/fixtures/proc');
const GONE = 700000; // not in the fixture tree
/** CLOCK_REALTIME − CLOCK_MONOTONIC in these tests: booted at 1,700,000,000.25 */
const BOOT_OFFSET = { sec: 1_700_000_000, nsec: 250_000_000 };

function conn(kind: ConnKind, pid: number, over: Partial<ConnRecord> = {}): ConnRecord {
  return {
    kind,
    proto: 'tcp',
    existing: false,
    pid,
    tsSec: 5,
    tsNsec: 123,
    tid: pid,
    uid: 1000,
    ppid: 1,
    comm: 'kcomm',
    ownerKnown: true,
    startSeen: true,
    connId: 9,
    cgroupId: 4321,
    netns: 4026531840,
    family: 4,
    direction: 'outbound',
    localIp: '10.0.0.1',
    localPort: 51000,
    remoteIp: '10.0.0.2',
    remotePort: 443,
    error: 0,
    bytesSent: 0,
    bytesReceived: 0,
    durationMs: 0,
    srttUs: 0,
    retransmits: 0,
    oldState: 0,
    deltaSent: 0,
    deltaReceived: 0,
    packetsSent: 0,
    packetsReceived: 0,
    deltaRetransmits: 0,
    ...over,
  };
}

function exec(pid: number, argv: string[], over: Partial<ExecRecord> = {}): ExecRecord {
  return { kind: 'exec', pid, tsSec: 0, tsNsec: 1, ppid: 1, uid: 1000, cgroupId: 4321, comm: argv[0] ?? '', filename: `/usr/bin/${argv[0]}`, argv, argsTruncated: false, ...over };
}

function task(kind: 'fork' | 'exit', pid: number, over: Partial<TaskRecord> = {}): TaskRecord {
  return { kind, pid, tsSec: 0, tsNsec: 1, ppid: 1, uid: 1000, exitCode: 0, cgroupId: 4321, comm: 'task', ...over };
}

function one(enricher: Enricher, r: ConnRecord) {
  return run(enricher, [r])[0]!;
}

/** ingest() then finish(): what the pipeline does when no lookup is needed */
function run(enricher: Enricher, records: KernelRecord[]) {
  return enricher.finish(enricher.ingest(records));
}

function setup(opts: { exitedTtlMs?: number; now?: () => number } = {}) {
  const processes = new ProcessCache({ procRoot, exitedTtlMs: opts.exitedTtlMs ?? 1000 });
  const containers = new Containers({ runtimes: [], log: createLogger(false, () => undefined) });
  const enricher = new Enricher({
    processes,
    containers,
    node: 'node-a',
    clockOffset: BOOT_OFFSET,
    now: opts.now ?? (() => 5000),
  });
  return { processes, enricher };
}

describe('errnoName', () => {
  const cases: { n: number; want: string }[] = [
    { n: 111, want: 'ECONNREFUSED' },
    { n: 110, want: 'ETIMEDOUT' },
    { n: 113, want: 'EHOSTUNREACH' },
    { n: 101, want: 'ENETUNREACH' },
    { n: 104, want: 'ECONNRESET' },
    { n: 99, want: 'EADDRNOTAVAIL' },
    { n: 13, want: 'EACCES' },
    { n: 1, want: 'EPERM' },
    { n: 0, want: 'errno 0' },
    { n: 9999, want: 'errno 9999' },
    { n: -111, want: 'errno -111' },
  ];
  for (const c of cases) {
    test(`${c.n} -> ${c.want}`, () => {
      assert.equal(errnoName(c.n), c.want);
    });
  }
});

describe('Enricher.batch', () => {
  test('process records feed the cache; only connection events come out, in order', () => {
    const { enricher, processes } = setup();
    const records: KernelRecord[] = [
      exec(GONE, ['curl', '-s', 'https://example.com'], { filename: '/usr/bin/curl' }),
      conn('connect', GONE, { connId: 1 }),
      task('fork', GONE + 1, { ppid: GONE, comm: 'curl-child', uid: 1001 }),
      conn('accept', GONE + 1, { connId: 2, direction: 'inbound' }),
      task('exit', GONE),
      conn('close', GONE, { connId: 1 }),
      conn('connect_failed', GONE + 1, { connId: 3, error: 111 }),
    ];
    const out = run(enricher, records);
    assert.deepEqual(
      out.map((e) => [e.event, e.connId]),
      [
        ['connect', 1],
        ['accept', 2],
        ['close', 1],
        ['connect_failed', 3],
      ],
    );
    // exec's argv, the fork's inheritance, and a close after exit still attributed
    assert.equal(out[0]!.process?.cmd, 'curl -s https://example.com');
    assert.equal(out[0]!.process?.exe, '/usr/bin/curl');
    assert.deepEqual(out[1]!.process, { pid: GONE + 1, ppid: GONE, uid: 1001, comm: 'curl-child', cmd: 'curl -s https://example.com', exe: '/usr/bin/curl' });
    assert.equal(out[2]!.process?.cmd, 'curl -s https://example.com');
    assert.equal(out[3]!.process?.pid, GONE + 1);
    assert.deepEqual(processes.stats(), { size: 2, hits: 4, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 });
  });

  test('ingest: the batch holds the connection records alone, one entry each and no gaps, however many process records came between', () => {
    const { enricher } = setup();
    const records: KernelRecord[] = [];
    for (let i = 0; i < 300; i++) records.push(i % 3 === 0 ? task('fork', GONE + i, { ppid: GONE }) : conn(i % 2 ? 'connect' : 'close', GONE, { connId: i }));
    const batch = enricher.ingest(records);
    const conns = records.filter((r) => r.kind !== 'fork');
    for (const a of [batch.recs, batch.processes, batch.containers, batch.names]) {
      assert.equal(a.length, conns.length);
      assert.equal(Object.keys(a).length, a.length);
    }
    assert.deepEqual(batch.recs, conns);
    const out = enricher.finish(batch);
    assert.equal(Object.keys(out).length, conns.length);
    assert.deepEqual(out.map((e) => e.connId), conns.map((r) => (r as ConnRecord).connId));
  });

  test('an empty batch and a batch of only process records give no events', () => {
    const { enricher, processes } = setup();
    assert.deepEqual(run(enricher, []), []);
    assert.deepEqual(run(enricher, [exec(GONE, ['a']), task('fork', GONE + 1, { ppid: GONE }), task('exit', GONE + 1)]), []);
    assert.equal(processes.stats().size, 2);
  });

  test('exit is stamped with now(): gc drops it only after the TTL from that time', () => {
    const { enricher, processes } = setup({ exitedTtlMs: 100, now: () => 5000 });
    run(enricher, [exec(GONE, ['a']), task('exit', GONE)]);
    processes.gc(5100);
    assert.equal(processes.stats().size, 1);
    processes.gc(5101);
    assert.equal(processes.stats().size, 0);
  });

  test('the event time is the record time plus the clock offset, carrying into the seconds', () => {
    const { enricher } = setup();
    const [a, b, c] = run(enricher, [
      conn('connect', GONE, { tsSec: 0, tsNsec: 42 }),
      conn('close', GONE, { tsSec: 3000, tsNsec: 0 }),
      // 0.9 s + 0.25 s offset: one more second
      conn('close', GONE, { tsSec: 10, tsNsec: 900_000_000 }),
    ]);
    assert.deepEqual([a!.timeSec, a!.timeNsec], [BOOT_OFFSET.sec, BOOT_OFFSET.nsec + 42]);
    assert.deepEqual([b!.timeSec, b!.timeNsec], [BOOT_OFFSET.sec + 3000, BOOT_OFFSET.nsec]);
    assert.deepEqual([c!.timeSec, c!.timeNsec], [BOOT_OFFSET.sec + 11, 150_000_000]);
  });
});

describe('Enricher.connection', () => {
  test('every field of a connect event', () => {
    const { enricher, processes } = setup();
    processes.onExec(exec(GONE, ['wget', 'x']));
    const r = conn('connect', GONE, {
      tsSec: 0,
      tsNsec: 77,
      connId: 1234,
      cgroupId: 5555,
      netns: 4026532000,
      localIp: '2001:db8::1',
      localPort: 40000,
      remoteIp: '2001:db8::2',
      remotePort: 8443,
      family: 6,
    });
    // its own fields (events are instances of a class)
    assert.deepEqual({ ...one(enricher, r) }, {
      timeSec: BOOT_OFFSET.sec,
      timeNsec: BOOT_OFFSET.nsec + 77,
      event: 'connect',
      proto: 'tcp',
      direction: 'outbound',
      local: { ip: '2001:db8::1', port: 40000 },
      remote: { ip: '2001:db8::2', port: 8443 },
      process: { pid: GONE, ppid: 1, uid: 1000, comm: 'wget', cmd: 'wget x', exe: '/usr/bin/wget' },
      container: null,
      pod: null,
      node: 'node-a',
      cgroupId: 5555,
      netns: 4026532000,
      connId: 1234,
    });
  });

  test('direction inbound and outbound pass through', () => {
    const { enricher } = setup();
    assert.equal(one(enricher, conn('accept', GONE, { direction: 'inbound' })).direction, 'inbound');
    assert.equal(one(enricher, conn('connect', GONE, { direction: 'outbound' })).direction, 'outbound');
  });

  const nullCases: { name: string; pid: number; ownerKnown: boolean }[] = [
    { name: 'owner not known', pid: 4242, ownerKnown: false },
    { name: 'pid 0', pid: 0, ownerKnown: true },
    { name: 'both', pid: 0, ownerKnown: false },
  ];
  for (const c of nullCases) {
    test(`process is null: ${c.name}, and the cache is not asked`, () => {
      const { enricher, processes } = setup();
      const e = one(enricher, conn('accept', c.pid, { ownerKnown: c.ownerKnown, direction: 'inbound' }));
      assert.equal(e.process, null);
      assert.deepEqual(processes.stats(), { size: 0, hits: 0, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 });
    });
  }

  test('a process only in procfs is read from there', () => {
    const { enricher, processes } = setup();
    const e = one(enricher, conn('connect', 4300, { comm: 'hint-comm', uid: 5, ppid: 6 }));
    assert.deepEqual(e.process, { pid: 4300, ppid: 1, uid: 1001, comm: 'sleep', cmd: 'sleep infinity', exe: '' });
    assert.equal(processes.stats().procfsReads, 1);
  });

  test('a process gone everywhere: the record\'s comm, ppid and uid', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('connect', GONE, { comm: 'short-lived', uid: 5, ppid: 6 }));
    assert.deepEqual(e.process, { pid: GONE, ppid: 6, uid: 5, comm: 'short-lived', cmd: '', exe: '' });
  });

  test('close: the counters are copied', () => {
    const { enricher } = setup();
    const e = one(enricher, 
      conn('close', GONE, { bytesSent: 1_000_000, bytesReceived: 2_500, durationMs: 12.345678, srttUs: 250, retransmits: 3, error: 111 }),
    );
    assert.equal(e.bytesSent, 1_000_000);
    assert.equal(e.bytesReceived, 2_500);
    assert.equal(e.durationMs, 12.345678);
    assert.equal(e.srttUs, 250);
    assert.equal(e.retransmits, 3);
    assert.equal('error' in e, false);
  });

  const failCases: { errno: number; want: string }[] = [
    { errno: 111, want: 'ECONNREFUSED' },
    { errno: 110, want: 'ETIMEDOUT' },
    { errno: 113, want: 'EHOSTUNREACH' },
    { errno: 4242, want: 'errno 4242' },
  ];
  for (const c of failCases) {
    test(`connect_failed: errno ${c.errno} -> ${c.want}, no close counters`, () => {
      const { enricher } = setup();
      const e = one(enricher, conn('connect_failed', GONE, { error: c.errno, bytesSent: 5 }));
      assert.equal(e.error, c.want);
      for (const k of ['bytesSent', 'bytesReceived', 'durationMs', 'srttUs', 'retransmits']) assert.equal(k in e, false, k);
    });
  }

  test('close: the lifetime totals, and what was not reported before', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('close', GONE, { bytesSent: 9000, bytesReceived: 50, deltaSent: 100, deltaReceived: 5, retransmits: 4, deltaRetransmits: 1 }));
    assert.deepEqual(
      [e.bytesSent, e.bytesReceived, e.bytesSentDelta, e.bytesReceivedDelta, e.retransmits, e.retransmitsDelta],
      [9000, 50, 100, 5, 4, 1],
    );
  });

  test('close of a connection nothing of which was reported before: no delta fields (the totals are the delta)', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('close', GONE, { bytesSent: 10, bytesReceived: 20, deltaSent: 10, deltaReceived: 20, retransmits: 1, deltaRetransmits: 1 }));
    for (const k of ['bytesSentDelta', 'bytesReceivedDelta', 'retransmitsDelta']) assert.equal(k in e, false, k);
  });

  test('TCP update: what moved since the previous report, the age so far, srtt', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('update', GONE, { bytesSent: 9000, bytesReceived: 50, deltaSent: 100, deltaReceived: 5, deltaRetransmits: 2, retransmits: 7, durationMs: 10_000, srttUs: 40 }));
    assert.deepEqual([e.event, e.proto, e.bytesSent, e.bytesReceived, e.retransmits, e.durationMs, e.srttUs], ['update', 'tcp', 100, 5, 2, 10_000, 40]);
    assert.equal('bytesSentDelta' in e, false);
    assert.equal('datagramsSent' in e, false);
  });

  test('UDP update: bytes and datagrams since the previous report, no TCP fields', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('update', GONE, { proto: 'udp', bytesSent: 300, deltaSent: 300, deltaReceived: 7, packetsSent: 3, packetsReceived: 1, srttUs: 9 }));
    assert.deepEqual([e.proto, e.bytesSent, e.bytesReceived, e.datagramsSent, e.datagramsReceived], ['udp', 300, 7, 3, 1]);
    for (const k of ['srttUs', 'retransmits', 'durationMs']) assert.equal(k in e, false, k);
  });

  test('listen and unlisten: inbound, no remote; existing only where the snapshot found it', () => {
    const { enricher } = setup();
    const l = one(enricher, conn('listen', GONE, { direction: 'listen', existing: true }));
    assert.deepEqual([l.direction, l.remote, l.existing], ['inbound', null, true]);
    const u = one(enricher, conn('unlisten', GONE, { direction: 'listen', existing: true }));
    assert.deepEqual([u.direction, u.remote, 'existing' in u], ['inbound', null, false]);
  });

  test('an existing connect or accept carries what moved before the agent started', () => {
    const { enricher } = setup();
    const e = one(enricher, conn('accept', GONE, { direction: 'inbound', existing: true, bytesSent: 12, bytesReceived: 34 }));
    assert.deepEqual([e.existing, e.bytesSent, e.bytesReceived], [true, 12, 34]);
  });

  test('sweep ends make no event', () => {
    const { enricher } = setup();
    assert.deepEqual(run(enricher, [{ kind: 'sweep', pid: 0, tsSec: 1, tsNsec: 0, seq: 4 }]), []);
  });

  test('connect and accept carry neither counters nor error', () => {
    const { enricher } = setup();
    for (const kind of ['connect', 'accept'] as const) {
      const e = one(enricher, conn(kind, GONE, { bytesSent: 5, error: 111 }));
      assert.deepEqual(
        Object.keys(e).filter((k) => ['bytesSent', 'bytesReceived', 'durationMs', 'srttUs', 'retransmits', 'error'].includes(k)),
        [],
      );
    }
  });
});
