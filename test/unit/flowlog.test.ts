/**
 * The flow log: events folded into one row per connection with exact
 * totals, retention by age and size, and `convis query` over a real SQLite
 * file: every filter, the rankings, both formats and the errors.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ConfigError } from '../../src/config/errors.js';
import { FlowLogError, openForWriting, WRITER_CACHE_KIB } from '../../src/flowlog/db.js';
import { runQuery } from '../../src/flowlog/query.js';
import { Rows } from '../../src/flowlog/rows.js';
import { FlowLogSink, parseFlowLogOptions } from '../../src/flowlog/sink.js';
import { createSinks } from '../../src/sinks/index.js';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import { createLogger } from '../../src/util/log.js';
import { sampleEvent, sampleProcess, udpUpdate } from '../helpers/events.js';
import { tempDir } from '../helpers/tmp.js';

const log = createLogger(false, () => undefined);
const T0 = 1_700_000_000; // sampleEvent's second
const at = (sec: number) => ({ timeSec: T0 + sec, timeNsec: 0 });

/** Writes events through a flowlog sink into a fresh file; returns its path. */
async function logOf(events: ConnectionEvent[], options: { retainMs?: number; maxBytes?: number; path?: string } = {}): Promise<string> {
  const path = options.path ?? join(tempDir('convis-flowlog-'), 'flows.db');
  const sink = await FlowLogSink.open({ path, retainMs: options.retainMs ?? 1e15, maxBytes: options.maxBytes ?? 1024 ** 3 }, log);
  sink.write(events);
  await sink.close();
  return path;
}

const rows = (path: string) =>
  new Database(path, { readonly: true }).prepare('SELECT c.*, w.pid, w.comm, w.cmd, w.container_name FROM connections c JOIN workloads w ON w.id = c.workload ORDER BY c.id').all() as Record<string, unknown>[];

const q = (args: string[], now = (T0 + 100) * 1000) => {
  let text = '';
  const status = runQuery(args, (t) => (text += t), now);
  return { status, text, lines: text.trimEnd().split('\n').filter((l) => l !== '') };
};

/**
 * Opens a held writer's gate and closes its sink (again, if the test did):
 * after a failed assertion the writer thread would otherwise wait at the
 * gate for good, and the test file would never end.
 */
async function release(gate: Int32Array, sink: FlowLogSink): Promise<void> {
  Atomics.store(gate, 0, 0);
  Atomics.notify(gate, 0);
  await sink.close();
}

describe('FlowLogSink', () => {
  test('one row per connection with its totals: updates add, the close sets the lifetime totals', async () => {
    const conn = { connId: 10 };
    const path = await logOf([
      sampleEvent('connect', { ...conn, ...at(0) }),
      sampleEvent('alert', { ...conn, ...at(0), rule: 'egress', trigger: 'connect' }),
      sampleEvent('update', { ...conn, ...at(10), bytesSent: 100, bytesReceived: 5, retransmits: 1 }),
      sampleEvent('update', { ...conn, ...at(20), bytesSent: 50, bytesReceived: 0, retransmits: 0 }),
      sampleEvent('close', { ...conn, ...at(25), bytesSent: 160, bytesReceived: 9, retransmits: 1, durationMs: 25000 }),
      sampleEvent('update', { ...udpUpdate, connId: 11, ...at(10), remote: { ip: '10.0.0.53', port: 53 } }),
      sampleEvent('update', { ...udpUpdate, connId: 11, ...at(20), remote: { ip: '10.0.0.53', port: 53 } }),
      sampleEvent('accept', { connId: 12, existing: true, bytesSent: 7000, bytesReceived: 8000, ...at(1) }),
      sampleEvent('update', { connId: 12, ...at(11), bytesSent: 1, bytesReceived: 2 }),
      sampleEvent('connect_failed', { connId: 13, error: 'ECONNREFUSED', ...at(2) }),
      sampleEvent('listen', { connId: 14 }),
    ]);
    const r = rows(path);
    assert.equal(r.length, 4, 'no row for a listener');
    const byId = Object.fromEntries(r.map((x) => [x.conn_id as number, x]));
    const c = byId[10]!;
    assert.deepEqual(
      [c.bytes_sent, c.bytes_received, c.retransmits, c.duration_ms, c.closed, c.alert_rule, c.first_seen, c.last_seen, c.comm, c.cmd, [...(c.remote as Buffer)].slice(12).join('.'), c.service_port],
      [160, 9, 1, 25000, 1, 'egress', T0 * 1000, (T0 + 25) * 1000, 'curl', sampleProcess.cmd, '10.0.0.2', 80],
    );
    const u = byId[11]!;
    assert.deepEqual([u.proto, u.bytes_sent, u.bytes_received, u.datagrams_sent, u.datagrams_received, u.closed], ['udp', 2 * udpUpdate.bytesSent!, 2 * udpUpdate.bytesReceived!, 2 * udpUpdate.datagramsSent!, 2 * udpUpdate.datagramsReceived!, 0]);
    assert.deepEqual([byId[12]!.existing, byId[12]!.bytes_sent, byId[12]!.bytes_received, byId[12]!.closed], [1, 7001, 8002, 0]);
    assert.deepEqual([byId[13]!.error, byId[13]!.closed], ['ECONNREFUSED', 1]);
  });

  test('a connection written while open is updated in place, not written twice', async () => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3 }, log);
    sink.write([sampleEvent('connect', { connId: 1, ...at(0) }), sampleEvent('update', { connId: 1, ...at(10), bytesSent: 5, bytesReceived: 6 })]);
    await new Promise((r) => setTimeout(r, 1300)); // one flush
    assert.deepEqual(rows(path).map((x) => [x.conn_id, x.bytes_sent, x.closed]), [[1, 5, 0]]);
    assert.equal(sink.stats().openRows, 1);
    sink.write([sampleEvent('close', { connId: 1, ...at(12), bytesSent: 9, bytesReceived: 6 })]);
    await sink.close();
    assert.deepEqual(rows(path).map((x) => [x.conn_id, x.bytes_sent, x.closed]), [[1, 9, 1]]);
  });

  test('past its bound of open connections the writer forgets the oldest: a row not written yet is dropped and counted, a written one stays as written', async () => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3, maxOpen: 100 }, log);
    const connects = (from: number, n: number, t: number) => Array.from({ length: n }, (_, i) => sampleEvent('connect', { connId: from + i, ...at(t) }));
    const ids = () => new Set(rows(path).map((x) => x.conn_id as number));
    // 60 open connections, written
    sink.write(connects(1, 60, 0));
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(rows(path).length, 60);
    // 130 more before the next write: the 60 written ones are forgotten, then the 30 oldest of these
    sink.write(connects(1000, 130, 1));
    await new Promise((r) => setTimeout(r, 1300));
    assert.deepEqual([sink.stats().openRows, sink.stats().dropped], [100, 30]);
    let got = ids();
    assert.equal(got.size, 160);
    assert.ok([...Array(60).keys()].every((i) => got.has(1 + i)), 'rows written before they were forgotten stay');
    assert.ok([...Array(30).keys()].every((i) => !got.has(1000 + i)), 'rows forgotten before their write are not written');
    // closes free their slots, and new connections take them
    sink.write(Array.from({ length: 30 }, (_, i) => sampleEvent('close', { connId: 1100 + i, ...at(2), bytesSent: 7, bytesReceived: 8 })));
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(sink.stats().openRows, 70);
    sink.write(connects(2000, 30, 3));
    await sink.close();
    assert.deepEqual([sink.stats().openRows, sink.stats().dropped], [100, 30]);
    got = ids();
    assert.equal(got.size, 190);
    const closed = rows(path).filter((x) => x.closed === 1);
    assert.deepEqual(closed.map((x) => [x.conn_id, x.bytes_sent, x.bytes_received]), Array.from({ length: 30 }, (_, i) => [1100 + i, 7, 8]));
  });

  test('once a burst of open connections has closed, the rows in memory shrink, and the connections still open keep their rows', async () => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    // checked every 500 ms here (a minute by default)
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3, shrinkAfterMs: 500 }, log);
    try {
      const n = 5000;
      sink.write(Array.from({ length: n }, (_, i) => sampleEvent('connect', { connId: 1 + i, ...at(0) })));
      await new Promise((r) => setTimeout(r, 1300));
      assert.equal(sink.stats().openRows, n);
      assert.equal(sink.rowSlots(), 8192, 'grown for 5,000 at once');
      // all but every 500th close
      const stay = (id: number) => id % 500 === 0;
      sink.write(Array.from({ length: n }, (_, i) => 1 + i).filter((id) => !stay(id)).map((id) => sampleEvent('close', { connId: id, ...at(1), bytesSent: id, bytesReceived: 1 })));
      await new Promise((r) => setTimeout(r, 1300));
      assert.equal(sink.stats().openRows, 10);
      // the check after the closes still counts the burst; the next one shrinks
      for (let waited = 0; sink.rowSlots() !== 1024 && waited < 5000; waited += 100) await new Promise((r) => setTimeout(r, 100));
      assert.equal(sink.rowSlots(), 1024, 'moved into the smallest columns');
      // the ones still open go on in their new slots
      const open = Array.from({ length: 10 }, (_, i) => 500 * (i + 1));
      sink.write(open.map((id) => sampleEvent('update', { connId: id, ...at(2), bytesSent: 3, bytesReceived: 4 })));
      sink.write(open.map((id) => sampleEvent('close', { connId: id, ...at(3), bytesSent: id + 3, bytesReceived: 4 })));
      await sink.close();
      const got = rows(path);
      assert.equal(got.length, n, 'one row per connection');
      assert.ok(got.every((x) => x.closed === 1 && x.bytes_sent === (stay(x.conn_id as number) ? (x.conn_id as number) + 3 : x.conn_id) && x.bytes_received === (stay(x.conn_id as number) ? 4 : 1)), 'every row with its own totals');
      assert.equal(sink.stats().dropped, 0);
    } finally {
      // after a failed check too: an open sink's writer would keep the test file running
      await sink.close();
    }
  });

  test('a writer that falls behind: past max_queue batches are dropped and counted, write() never waits, sent + dropped = written', async (ctx) => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const lines: string[] = [];
    // the writer thread stops before each batch while hold[0] is 1: a stalled disk
    const hold = new SharedArrayBuffer(4);
    const gate = new Int32Array(hold);
    Atomics.store(gate, 0, 1);
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3, maxQueue: 10, hold }, createLogger(false, (l) => lines.push(l)));
    ctx.after(() => release(gate, sink));
    let next = 0;
    const batch = () => Array.from({ length: 4 }, () => sampleEvent('connect', { connId: next++, ...at(0) }));
    const written: number[][] = [];
    for (let i = 0; i < 5; i++) {
      const b = batch();
      written.push(b.map((e) => e.connId));
      const t = process.hrtime.bigint();
      sink.write([...b, sampleEvent('listen', { connId: 1000 + i })]);
      assert.ok(Number(process.hrtime.bigint() - t) < 50e6, 'write() does not wait for the writer');
    }
    // 4 + 4 fit in 10; the next three batches do not
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 12, failed: 0, queueDepth: 8, openRows: 0 });
    assert.deepEqual(lines, ['convis: warning: flowlog ' + path + ': the writer is not keeping up (8 events waiting); dropping events until it does\n']);
    Atomics.store(gate, 0, 0);
    Atomics.notify(gate, 0);
    await sink.taken();
    // the writer keeps the 8 connections it took as open rows (no close came)
    assert.deepEqual(sink.stats(), { sent: 8, dropped: 12, failed: 0, queueDepth: 0, openRows: 8 });
    const last = batch();
    sink.write(last);
    assert.equal(lines[1], `convis: warning: flowlog ${path}: the writer caught up; 12 events were dropped\n`);
    await sink.close();
    const s = sink.stats();
    assert.deepEqual(s, { sent: 12, dropped: 12, failed: 0, queueDepth: 0, openRows: 12 });
    assert.equal(s.sent + s.dropped, 6 * 4, 'every event written is sent or dropped');
    assert.deepEqual(rows(path).map((r) => r.conn_id), [...written[0]!, ...written[1]!, ...last.map((e) => e.connId)], 'the rows are the events taken, no more');
    sink.write(batch());
    assert.equal(sink.stats().dropped, 16, 'after close, counted as dropped');
  });

  test('close() waits for the writer at most closeTimeoutMs; what it did not take is counted as dropped', async (ctx) => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const lines: string[] = [];
    const hold = new SharedArrayBuffer(4);
    const gate = new Int32Array(hold);
    Atomics.store(gate, 0, 1);
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3, hold, closeTimeoutMs: 300 }, createLogger(false, (l) => lines.push(l)));
    ctx.after(() => release(gate, sink));
    sink.write([sampleEvent('connect', { connId: 1 }), sampleEvent('close', { connId: 1 })]);
    const t = Date.now();
    await sink.close();
    assert.ok(Date.now() - t < 5000, `close() returned after ${Date.now() - t} ms`);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 2, failed: 0, queueDepth: 0, openRows: 0 });
    assert.deepEqual(lines, [`convis: warning: flowlog ${path}: the writer did not finish within 0.3 s; 2 events not written are counted as dropped\n`]);
  });

  test('a file that cannot be written: one line, counted as failed and dropped, and write() goes on meanwhile', async () => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const lines: string[] = [];
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3 }, createLogger(false, (l) => lines.push(l)));
    // another writer holds the lock: the flush waits SQLite's busy timeout (5 s) and fails
    const other = new Database(path);
    other.exec('BEGIN EXCLUSIVE');
    sink.write([sampleEvent('connect', { connId: 1, ...at(0) }), sampleEvent('connect', { connId: 2, ...at(0) })]);
    for (let i = 0; i < 150 && lines.length === 0; i++) {
      // the main thread stays free while the writer is stuck
      sink.write([sampleEvent('update', { connId: 3, ...at(i) })]);
      await new Promise((r) => setTimeout(r, 100));
    }
    other.exec('ROLLBACK');
    other.close();
    assert.equal(lines.length, 1, lines.join(''));
    assert.match(lines[0]!, /^convis: warning: flowlog .*flows\.db: write failed \(database is locked\); \d+ rows not written\n$/);
    const rowsLost = Number(/(\d+) rows not written/.exec(lines[0]!)![1]);
    await sink.close();
    const s = sink.stats();
    assert.equal(s.failed, 1);
    assert.equal(s.dropped, rowsLost, 'the rows not written');
    // what came after the failure is written
    assert.ok(rows(path).some((r) => r.conn_id === 3));
  });

  test('a file that cannot be opened: open() rejects with one line, and no thread is left behind', async () => {
    const path = join(tempDir('convis-flowlog-'), 'no-such-dir', 'flows.db');
    await assert.rejects(FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3 }, log), (e: Error) => /directory does not exist/.test(e.message) && !e.message.includes('\n'));
    const created = createSinks([{ type: 'flowlog', parsed: parseFlowLogOptions({ path }), metrics: false, events: true }], { log, metrics: undefined as never, onClosed: () => undefined });
    await assert.rejects(created, (e: Error) => e instanceof ConfigError && e.message.startsWith(`--sink flowlog: cannot use ${JSON.stringify(path)} (`));
  });

  test("the writer's page cache is SQLite's 2 MiB, not better-sqlite3's 16 MiB (it held RSS that crept up for minutes)", () => {
    const db = openForWriting(join(tempDir('convis-flowlog-'), 'flows.db'));
    try {
      assert.equal(WRITER_CACHE_KIB, 2048);
      assert.equal(db.pragma('cache_size', { simple: true }), -WRITER_CACHE_KIB);
    } finally {
      db.close();
    }
  });

  test('past 65,536 addresses and workloads the ids start over on both sides, and every row keeps its own', async () => {
    const n = 80_000;
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: 1024 ** 3 }, log);
    const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    const processes = Array.from({ length: n }, (_, i) => ({ ...sampleProcess, pid: i }));
    const event = (connId: number, i: number) => sampleEvent('connect', { connId, ...at(0), process: processes[i]!, remote: { ip: ip(i), port: 80 } });
    // the ids are checked at each write: the eighth starts with 70,000 of each, past the bound
    for (let i = 0; i < n; i += 10_000) {
      sink.write(Array.from({ length: 10_000 }, (_, k) => event(i + k, i + k)));
      await sink.taken();
    }
    // the same process objects and addresses again, after both sides forgot their ids
    sink.write(Array.from({ length: 1000 }, (_, k) => event(n + k, k)));
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: n + 1000, dropped: 0, failed: 0, queueDepth: 0, openRows: n + 1000 });
    const r = rows(path);
    assert.equal(r.length, n + 1000);
    const of = (connId: number) => (connId >= n ? connId - n : connId);
    const wrong = r.filter((x) => x.pid !== of(x.conn_id as number) || [...(x.remote as Buffer)].slice(12).join('.') !== ip(of(x.conn_id as number)));
    assert.deepEqual(wrong.slice(0, 3), []);
  });

  test('rows last seen longer ago than retain are deleted', async () => {
    const path = await logOf([sampleEvent('connect', { connId: 1, timeSec: 1_000_000, timeNsec: 0 }), sampleEvent('connect', { connId: 2, timeSec: Math.floor(Date.now() / 1000), timeNsec: 0 })]);
    assert.equal(rows(path).length, 2);
    await logOf([], { path, retainMs: 3_600_000 });
    assert.deepEqual(rows(path).map((r) => r.conn_id), [2]);
  });

  test('over max_size the oldest rows go and the file shrinks', async () => {
    // a process each, with a long command line: workloads rows go with the connections that used them
    const events = Array.from({ length: 6000 }, (_, i) => sampleEvent('connect', { connId: i, process: { ...sampleProcess, pid: i, cmd: `${i} ${'x'.repeat(2000)}` }, timeSec: Math.floor(Date.now() / 1000) - 6000 + i, timeNsec: 0 }));
    const path = await logOf(events);
    assert.ok(statSync(path).size > 8 * 1024 ** 2, 'the log is large first');
    await logOf([], { path, maxBytes: 2 * 1024 ** 2 });
    assert.ok(statSync(path).size <= 2 * 1024 ** 2, `shrunk to ${statSync(path).size}`);
    const kept = rows(path).map((r) => r.conn_id as number);
    assert.ok(kept.length > 0 && kept.length < 6000);
    assert.equal(Math.max(...kept), 5999, 'the newest stay');
    assert.equal(Math.min(...kept), 6000 - kept.length, 'the oldest went');
    const workloads = (new Database(path, { readonly: true }).prepare('SELECT count(*) AS n FROM workloads').get() as { n: number }).n;
    assert.equal(workloads, kept.length, 'no workload is left without a connection');
  });

  test('a file that grows over max_size while the agent runs is trimmed within seconds, not at the next minute', async () => {
    const path = join(tempDir('convis-flowlog-'), 'flows.db');
    const max = 2 * 1024 ** 2;
    const sink = await FlowLogSink.open({ path, retainMs: 1e15, maxBytes: max }, log);
    const size = () => statSync(path).size + (existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0);
    try {
      const now = Math.floor(Date.now() / 1000);
      sink.write(Array.from({ length: 6000 }, (_, i) => sampleEvent('connect', { connId: i, process: { ...sampleProcess, pid: i, cmd: `${i} ${'x'.repeat(2000)}` }, timeSec: now - 6000 + i, timeNsec: 0 })));
      await sink.taken();
      // written within a second, checked every 5 s: well before the minute's prune
      let largest = 0;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const s = size();
        largest = Math.max(largest, s);
        if (largest > 4 * max && s <= max) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(largest > 4 * max, `the file grew first (to ${largest} bytes)`);
      assert.ok(size() <= max, `trimmed to max_size while running: ${size()} bytes`);
    } finally {
      await sink.close();
    }
    const kept = rows(path).map((r) => r.conn_id as number);
    assert.ok(kept.length > 0 && kept.length < 6000);
    assert.equal(Math.max(...kept), 5999, 'the newest stay');
  });

  test('options: path required, retain, max_size and max_queue checked, unknown keys refused', () => {
    assert.deepEqual(parseFlowLogOptions({ path: '/x.db', retain: '12h', max_size: '500MiB' }), { path: '/x.db', retainMs: 12 * 3_600_000, maxBytes: 500 * 1024 ** 2, maxQueue: 262_144 });
    assert.deepEqual(parseFlowLogOptions({ path: '/x.db' }), { path: '/x.db', retainMs: 7 * 86_400_000, maxBytes: 1024 ** 3, maxQueue: 262_144 });
    assert.equal(parseFlowLogOptions({ path: '/x.db', max_queue: '5000' }).maxQueue, 5000);
    for (const [o, re] of [
      [{}, /path= is required/],
      [{ path: '/x', retain: 'forever' }, /retain must be a duration/],
      [{ path: '/x', max_size: '10KiB' }, /max_size must be a size of at least 1MiB/],
      [{ path: '/x', size: '1G' }, /unknown option "size"/],
      [{ path: '/x', max_queue: '10' }, /max_queue must be a number of events of at least 1000/],
      [{ path: '/x', max_queue: '1e6' }, /max_queue must be a number of events/],
    ] as const) {
      assert.throws(() => parseFlowLogOptions(o as Record<string, string>), (e: Error) => e instanceof ConfigError && re.test(e.message));
    }
  });
});

describe('convis query', () => {
  const web = { id: 'w'.repeat(64), name: 'web', image: 'nginx', runtime: 'docker' };
  const redis = { ...sampleProcess, pid: 77, comm: 'redis-server', cmd: 'redis-server' };
  const events: ConnectionEvent[] = [
    // curl to 203.0.113.7:443, 1000 bytes, at +10 s
    sampleEvent('connect', { connId: 1, ...at(10), remote: { ip: '203.0.113.7', port: 443 } }),
    sampleEvent('close', { connId: 1, ...at(12), remote: { ip: '203.0.113.7', port: 443 }, bytesSent: 600, bytesReceived: 400 }),
    // web container to 10.1.2.3:5432, 5000 bytes, at +50 s, alert
    sampleEvent('connect', { connId: 2, ...at(50), container: web, pod: { name: 'web-0', namespace: 'shop', uid: 'u' }, remote: { ip: '10.1.2.3', port: 5432 } }),
    sampleEvent('alert', { connId: 2, ...at(50), rule: 'no-db', trigger: 'connect', container: web, remote: { ip: '10.1.2.3', port: 5432 } }),
    sampleEvent('close', { connId: 2, ...at(55), container: web, remote: { ip: '10.1.2.3', port: 5432 }, bytesSent: 1000, bytesReceived: 4000 }),
    // redis accepts from 10.1.2.4 twice (IPv6 once), 10 bytes each
    sampleEvent('accept', { connId: 3, ...at(60), process: redis, local: { ip: '10.0.0.1', port: 6379 }, remote: { ip: '10.1.2.4', port: 40000 } }),
    sampleEvent('close', { connId: 3, ...at(61), process: redis, direction: 'inbound', local: { ip: '10.0.0.1', port: 6379 }, remote: { ip: '10.1.2.4', port: 40000 }, bytesSent: 5, bytesReceived: 5 }),
    sampleEvent('accept', { connId: 4, ...at(70), process: redis, local: { ip: 'fd00::1', port: 6379 }, remote: { ip: 'fd00::4', port: 40001 } }),
    sampleEvent('close', { connId: 4, ...at(71), process: redis, direction: 'inbound', local: { ip: 'fd00::1', port: 6379 }, remote: { ip: 'fd00::4', port: 40001 }, bytesSent: 5, bytesReceived: 5 }),
  ];
  let db = '';
  const ids = (r: ReturnType<typeof q>) => r.lines.map((l) => JSON.parse(l).conn_id as number);

  test('filters: remote address and prefix (IPv4, IPv6), port, process, container, pod, namespace, alerts', async () => {
    db = await logOf(events);
    const json = (...a: string[]) => ids(q(['--db', db, '--format', 'json', ...a]));
    assert.deepEqual(json(), [4, 3, 2, 1], 'newest first');
    assert.deepEqual(json('--remote', '203.0.113.7'), [1]);
    assert.deepEqual(json('--remote', '10.1.2.0/24'), [3, 2]);
    assert.deepEqual(json('--remote', 'fd00::/8'), [4]);
    assert.deepEqual(json('--remote', '10.0.0.0/8', '--port', '6379'), [3]);
    assert.deepEqual(json('--process', 'redis-*'), [4, 3]);
    assert.deepEqual(json('--container', 'we?'), [2]);
    assert.deepEqual(json('--pod', 'web-*', '--namespace', 'shop'), [2]);
    assert.deepEqual(json('--alerts'), [2]);
    assert.deepEqual(json('--domain', '*.example.com'), [], 'no DNS names yet');
    assert.deepEqual(json('--limit', '1'), [4]);
    const one = JSON.parse(q(['--db', db, '--format', 'json', '--alerts']).lines[0]!);
    assert.deepEqual([one.alert_rule, one.bytes_sent, one.bytes_received, one.closed, one.first_seen], ['no-db', 1000, 4000, true, new Date((T0 + 50) * 1000).toISOString()]);
  });

  test('time windows: RFC 3339 and ages', () => {
    const json = (...a: string[]) => ids(q(['--db', db, '--format', 'json', ...a]));
    const iso = (s: number) => new Date((T0 + s) * 1000).toISOString();
    assert.deepEqual(json('--since', iso(55), '--until', iso(65)), [3, 2], 'what overlaps the window');
    assert.deepEqual(json('--until', iso(20)), [1]);
    // now is T0+100 s: 35 s ago is T0+65
    assert.deepEqual(json('--since', '35s'), [4]);
  });

  test('--top ranks by bytes or connections, as a table or JSON', () => {
    const top = q(['--db', db, '--top', 'process']);
    assert.deepEqual(top.lines.map((l) => l.split(/\s+/)), [
      ['PROCESS', 'CONNECTIONS', 'SENT', 'RECEIVED', 'BYTES'],
      ['curl', '2', '1600', '4400', '6000'],
      ['redis-server', '2', '10', '10', '20'],
    ]);
    assert.deepEqual(q(['--db', db, '--top', 'remote', '--by', 'connections', '--format', 'json', '--limit', '2']).lines.map((l) => JSON.parse(l)), [
      { remote: '10.1.2.3', connections: 1, bytes_sent: 1000, bytes_received: 4000, bytes: 5000 },
      { remote: '10.1.2.4', connections: 1, bytes_sent: 5, bytes_received: 5, bytes: 10 },
    ]);
    assert.deepEqual(q(['--db', db, '--top', 'container', '--format', 'json']).lines.map((l) => JSON.parse(l).container), ['web', null]);
    assert.deepEqual(q(['--db', db, '--top', 'pod', '--format', 'json']).lines.map((l) => JSON.parse(l).pod), ['shop/web-0', null]);
  });

  test('the table lists one line per connection, aligned', () => {
    const t = q(['--db', db, '--remote', '10.1.2.3']);
    assert.equal(t.lines.length, 2);
    assert.match(t.lines[0]!, /^FIRST SEEN +LAST SEEN +PROTO +DIR +LOCAL +REMOTE +NAME +PID +PROCESS +CONTAINER +POD +SENT +RECEIVED +STATE +ALERT$/);
    assert.match(t.lines[1]!, / tcp +out +10\.0\.0\.1:51000 +10\.1\.2\.3:5432 +- +4242 +curl +web +shop\/web-0 +1000 +4000 +closed +no-db$/);
    assert.equal(t.lines[0]!.indexOf('REMOTE'), t.lines[1]!.indexOf('10.1.2.3'));
  });

  test('usage errors and unreadable logs are one line', () => {
    const err = (args: string[]) => {
      try {
        q(args);
      } catch (e) {
        return e;
      }
      return undefined;
    };
    assert.ok(err(['--remote', '1.2.3.4']) instanceof ConfigError, 'no --db');
    for (const a of [['--remote', '1.2.3'], ['--port', 'http'], ['--since', 'yesterday'], ['--top', 'user'], ['--by', 'bytes'], ['--format', 'xml']]) {
      const e = err(['--db', db, ...a]);
      assert.ok(e instanceof ConfigError && !e.message.includes('\n'), `${a.join(' ')}: ${String(e)}`);
    }
    const missing = err(['--db', join(tempDir('convis-q-'), 'none.db')]);
    assert.ok(missing instanceof FlowLogError && /no such flow log$/.test(missing.message), String(missing));
    const junk = join(tempDir('convis-q-'), 'junk.db');
    writeFileSync(junk, 'this is not SQLite '.repeat(100));
    const corrupt = err(['--db', junk]);
    assert.ok(corrupt instanceof FlowLogError && /not a flow log/.test(corrupt.message), String(corrupt));
  });
});

describe('Rows', () => {
  test('compact() moves the slots in use into smaller columns, with every field, and frees the rest', () => {
    const r = new Rows();
    const slots = Array.from({ length: 3000 }, () => r.take());
    assert.equal(r.capacity, 4096);
    for (const s of slots) {
      r.connId[s] = 10_000 + s;
      r.bytesSent[s] = s * 2;
      r.flags[s] = s % 200;
      r.localPort[s] = s;
      r.remoteName[s] = `host-${s}`;
      r.remote[s] = Buffer.from([s & 255]);
      r.alertRule[s] = s % 2 ? 'egress' : null;
    }
    const live = [7, 100, 2047, 2999, 1500];
    for (const s of slots) if (!live.includes(s)) r.release(s);
    // the most in use at once since the last look, then those in use now
    assert.equal(r.takePeak(), 3000);
    assert.equal(r.takePeak(), live.length);
    assert.equal(r.compactedCapacity(live.length), 1024);
    assert.equal(r.compactedCapacity(600), 0, 'not for less than half');
    r.compact(live, 1024);
    assert.equal(r.capacity, 1024);
    live.forEach((old, i) => {
      assert.deepEqual(
        [r.connId[i], r.bytesSent[i], r.flags[i], r.localPort[i], r.remoteName[i], r.remote[i]![0], r.alertRule[i]],
        [10_000 + old, old * 2, old % 200, old, `host-${old}`, old & 255, old % 2 ? 'egress' : null],
      );
    });
    // the other slots are free, each once, and past them the columns grow again
    const next = Array.from({ length: 1024 - live.length }, () => r.take());
    assert.deepEqual([...next].sort((a, b) => a - b), Array.from({ length: 1024 - live.length }, (_, i) => live.length + i));
    assert.equal(r.capacity, 1024);
    r.take();
    assert.equal(r.capacity, 2048);
  });
});
