/**
 * The decoder against raw ring-buffer records captured from a real run
 * (test/fixtures/capture-raw.mjs). The expected facts come from the
 * scenario's own process, not from the decoder.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeBatch, decodeBatchInChunks, RECORD_HEADER, type ConnRecord, type ExecRecord, type KernelRecord } from '../../src/bpf/decode.js';
import { AF_INET, AF_INET6, ConnEvent, EventType, Header } from '../../src/bpf/events.js';
import { formatIPv4, formatIPv6 } from '../../src/util/ip.js';
import { repoRoot } from '../helpers/paths.js';
import { xorshift32 } from '../helpers/random.js';

interface Facts {
  pid: number;
  ppid: number;
  uid: number;
  exchanges: { host: string; server_port: number; client_port: number; client_sends: number; server_sends: number }[];
  refused: { port: number; errno: number };
  long: { server_port: number; client_port: number; parts: number[] };
  udp: { server_port: number; client_port: number; datagrams: number; size: number; answer: number };
  records: number;
}

const dir = join(repoRoot, 'test/fixtures/raw');
const raw = readFileSync(join(dir, 'scenario.bin'));
const facts = JSON.parse(readFileSync(join(dir, 'scenario.json'), 'utf8')) as Facts;

test('every captured record decodes, none malformed', () => {
  const { records, malformed } = decodeBatch(raw, facts.records);
  assert.equal(malformed, 0);
  assert.equal(records.length, facts.records);
});

test('each exchange: connect, accept and two closes with ports, owner and exact bytes', () => {
  const { records } = decodeBatch(raw, facts.records);
  const conns = records.filter((r): r is ConnRecord => r.kind !== 'exec' && r.kind !== 'exit' && r.kind !== 'fork' && r.kind !== 'sweep');
  for (const x of facts.exchanges) {
    const out = conns.filter((r) => r.direction === 'outbound' && r.localPort === x.client_port && r.remotePort === x.server_port);
    const inb = conns.filter((r) => r.direction === 'inbound' && r.localPort === x.server_port && r.remotePort === x.client_port);
    assert.deepEqual(out.map((r) => r.kind).sort(), ['close', 'connect'], `outbound of ${x.host}`);
    assert.deepEqual(inb.map((r) => r.kind).sort(), ['accept', 'close'], `inbound of ${x.host}`);
    for (const r of [...out, ...inb]) {
      assert.equal(r.pid, facts.pid);
      assert.equal(r.ppid, facts.ppid);
      assert.equal(r.uid, facts.uid);
      assert.equal(r.localIp, x.host);
      assert.equal(r.remoteIp, x.host);
      assert.equal(r.family, x.host.includes(':') ? 6 : 4);
      assert.ok(r.ownerKnown);
      assert.ok(r.netns > 0);
      assert.ok(r.tsSec > 0 || r.tsNsec > 0);
      assert.ok(Number.isInteger(r.tsNsec) && r.tsNsec >= 0 && r.tsNsec < 1e9);
    }
    const cclose = out.find((r) => r.kind === 'close')!;
    const sclose = inb.find((r) => r.kind === 'close')!;
    assert.equal(cclose.bytesSent, x.client_sends);
    assert.equal(cclose.bytesReceived, x.server_sends);
    assert.equal(sclose.bytesSent, x.server_sends);
    assert.equal(sclose.bytesReceived, x.client_sends);
    assert.ok(cclose.durationMs > 0 && cclose.durationMs < 10_000);
    assert.equal(out[0]!.connId, out[1]!.connId);
  }
});

test('the refused connect decodes as connect_failed with errno 111', () => {
  const { records } = decodeBatch(raw, facts.records);
  const failed = records.filter((r) => r.kind === 'connect_failed') as ConnRecord[];
  assert.equal(failed.length, 1);
  assert.equal(failed[0]!.remotePort, facts.refused.port);
  assert.equal(failed[0]!.error, facts.refused.errno);
  assert.equal(failed[0]!.localIp, '127.0.0.1');
});

const connRecords = () => decodeBatch(raw, facts.records).records.filter((r): r is ConnRecord => 'connId' in r);

test('a connection open across sweeps: updates carry what moved since the previous report, the close the rest and the lifetime totals', () => {
  const l = facts.long;
  const total = l.parts.reduce((a, b) => a + b, 0);
  const side = (dir: string, local: number, remote: number) =>
    connRecords().filter((r) => r.direction === dir && r.localPort === local && r.remotePort === remote);
  for (const [dir, local, remote, sent, received] of [
    ['outbound', l.client_port, l.server_port, total, 0],
    ['inbound', l.server_port, l.client_port, 0, total],
  ] as const) {
    const rs = side(dir, local, remote);
    const updates = rs.filter((r) => r.kind === 'update');
    const close = rs.find((r) => r.kind === 'close')!;
    // the two parts are 0.6 s apart and sweeps run every 0.2 s: each part is reported while open
    assert.ok(updates.length >= 2, `${dir}: ${updates.length} updates`);
    for (const u of updates) {
      assert.equal(u.proto, 'tcp');
      assert.equal(u.pid, facts.pid);
      assert.ok(u.deltaSent + u.deltaReceived > 0, 'an update is made only when bytes moved');
    }
    const moved = (which: 'deltaSent' | 'deltaReceived') => updates.reduce((a, u) => a + u[which], 0) + close[which];
    assert.equal(moved('deltaSent'), sent, `${dir}: every byte sent in exactly one report`);
    assert.equal(moved('deltaReceived'), received, `${dir}: every byte received in exactly one report`);
    assert.equal(close.bytesSent, sent, `${dir}: lifetime total sent`);
    assert.equal(close.bytesReceived, received, `${dir}: lifetime total received`);
    // the first part is reported on its own: an update that carries exactly it
    const first = dir === 'outbound' ? updates[0]!.deltaSent : updates[0]!.deltaReceived;
    assert.equal(first, l.parts[0]);
    assert.ok(new Set(rs.map((r) => r.connId)).size === 1, 'one conn_id for all of it');
  }
});

test('UDP: datagrams and bytes each way per socket and remote endpoint, connected or not', () => {
  const u = facts.udp;
  const rs = connRecords().filter((r) => r.proto === 'udp');
  const client = rs.filter((r) => r.localPort === u.client_port && r.remotePort === u.server_port);
  const server = rs.filter((r) => r.localPort === u.server_port && r.remotePort === u.client_port);
  const sum = (list: ConnRecord[], k: 'deltaSent' | 'deltaReceived' | 'packetsSent' | 'packetsReceived') => list.reduce((a, r) => a + r[k], 0);
  assert.ok(client.length >= 1 && server.length >= 1);
  for (const r of [...client, ...server]) {
    assert.equal(r.kind, 'update');
    assert.equal(r.pid, facts.pid);
    assert.equal(r.remoteIp, '127.0.0.1');
    assert.equal(r.bytesSent, r.deltaSent, 'UDP updates carry deltas in both fields');
  }
  // the client sent first: outbound; the server received first: inbound
  assert.ok(client.every((r) => r.direction === 'outbound'));
  assert.ok(server.every((r) => r.direction === 'inbound'));
  assert.equal(sum(client, 'packetsSent'), u.datagrams);
  assert.equal(sum(client, 'deltaSent'), u.datagrams * u.size);
  assert.equal(sum(client, 'packetsReceived'), 1);
  assert.equal(sum(client, 'deltaReceived'), u.answer);
  assert.equal(sum(server, 'packetsReceived'), u.datagrams);
  assert.equal(sum(server, 'deltaReceived'), u.datagrams * u.size);
  assert.equal(sum(server, 'packetsSent'), 1);
  assert.equal(sum(server, 'deltaSent'), u.answer);
});

test('listeners: listen and unlisten of each server socket', () => {
  const rs = connRecords();
  for (const port of [...facts.exchanges.map((x) => x.server_port), facts.long.server_port]) {
    const kinds = rs.filter((r) => r.localPort === port && (r.kind === 'listen' || r.kind === 'unlisten')).map((r) => r.kind);
    assert.deepEqual(kinds, ['listen', 'unlisten'], `listener on ${port}`);
  }
});

test('sweep ends carry increasing sequence numbers', () => {
  const seqs = decodeBatch(raw, facts.records).records.flatMap((r) => (r.kind === 'sweep' ? [r.seq] : []));
  assert.ok(seqs.length >= 3, `${seqs.length} sweeps`);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!);
});

test('process records: fork, exec with argv, exit', () => {
  const { records } = decodeBatch(raw, facts.records);
  const mine = records.filter((r) => r.pid === facts.pid);
  assert.ok(mine.some((r) => r.kind === 'fork'));
  assert.ok(mine.some((r) => r.kind === 'exit'));
  const execs = mine.filter((r): r is ExecRecord => r.kind === 'exec');
  const last = execs[execs.length - 1]!;
  assert.match(last.filename, /python3/);
  assert.equal(last.argv[last.argv.length - 1], 'capture-tag');
  assert.match(last.argv[1]!, /scenario\.py$/);
  assert.match(last.comm, /python3/);
});

test('records come in kernel order: each socket connects before it closes', () => {
  const { records } = decodeBatch(raw, facts.records);
  const seen = new Set<number>();
  for (const r of records) {
    if (r.kind === 'connect' || r.kind === 'accept') seen.add(r.connId);
    if (r.kind === 'close') assert.ok(seen.has(r.connId), `close before open of ${r.connId}`);
  }
});

test('a truncated or unknown record is counted as malformed, not thrown', () => {
  const one = Buffer.alloc(RECORD_HEADER + ConnEvent.size);
  one.writeUInt32LE(ConnEvent.size, 0);
  one.writeUInt16LE(99, RECORD_HEADER + Header.type);
  assert.deepEqual(decodeBatch(one, 1), { records: [], malformed: 1 });
  const short = Buffer.alloc(RECORD_HEADER + Header.size);
  short.writeUInt32LE(Header.size, 0);
  short.writeUInt16LE(18, RECORD_HEADER + Header.type); // a close needs 176 bytes
  assert.equal(decodeBatch(short, 1).malformed, 1);
  const lying = Buffer.alloc(16);
  lying.writeUInt32LE(4096, 0); // claims more bytes than the batch holds
  assert.equal(decodeBatch(lying, 1).malformed, 1);
});

test('a batch that is not 8-aligned in its memory decodes the same', () => {
  const shifted = Buffer.alloc(raw.length + 4);
  raw.copy(shifted, 4);
  const odd = shifted.subarray(4);
  assert.notEqual(odd.byteOffset % 8, 0);
  assert.deepEqual(decodeBatch(odd, facts.records), decodeBatch(raw, facts.records));
});

test('command names come out right through the name cache: repeats, slot collisions and names of every length', () => {
  // 3000 records over 1500 names: the 512-slot cache both hits and has names evict each other
  const next = xorshift32(0xbeef);
  const names = Array.from({ length: 1500 }, (_, i) => {
    const len = 1 + (i % 15);
    return Array.from({ length: len }, () => String.fromCharCode(97 + (next() % 26))).join('');
  });
  const stride = RECORD_HEADER + ConnEvent.size;
  const want: string[] = [];
  const batch = Buffer.alloc(3000 * stride);
  for (let i = 0; i < 3000; i++) {
    const name = names[next() % names.length]!;
    want.push(name);
    const o = i * stride;
    batch.writeUInt32LE(ConnEvent.size, o);
    batch.writeUInt16LE(EventType.tcpConnect, o + RECORD_HEADER + Header.type);
    batch.writeUInt16LE(ConnEvent.size, o + RECORD_HEADER + Header.recSize);
    batch.writeUInt16LE(AF_INET, o + RECORD_HEADER + ConnEvent.family);
    batch.write(name, o + RECORD_HEADER + ConnEvent.comm, 'latin1'); // NUL-padded: the buffer is zeroed
  }
  const { records, malformed } = decodeBatch(batch, 3000);
  assert.equal(malformed, 0);
  assert.deepEqual(
    records.map((r) => (r.kind === 'sweep' || r.kind === 'dns' ? '' : r.comm)),
    want,
  );
});

test('addresses come out right through the address caches: repeats, slot collisions, IPv4, IPv6 and IPv4-mapped', () => {
  // 40,000 records over 24,000 IPv4 and 6,000 IPv6 addresses: more than the
  // caches' slots (16,384 and 4,096), so addresses both hit and evict each other
  const next = xorshift32(0x1b4);
  const v4 = Array.from({ length: 24000 }, () => {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(next() % 7 === 0 ? 0 : next(), 0); // 0.0.0.0 too: a key of zero is an address like any other
    return b;
  });
  const v6 = Array.from({ length: 6000 }, (_, i) => {
    const b = Buffer.alloc(16);
    if (i % 5 === 0) {
      b.writeUInt16BE(0xffff, 10); // ::ffff:a.b.c.d, as dual-stack sockets show IPv4 peers
      b.writeUInt32BE(next(), 12);
    } else if (i % 5 === 1) {
      b[15] = i % 3; // ::, ::1, ::2: mostly zero words
    } else if (i % 5 === 2) {
      b.writeUInt32BE(0xfd000000, 0); // one /96, as pods' addresses share a prefix: only the last word tells them apart
      b.writeUInt32BE(next(), 12);
    } else if (i % 5 === 3) {
      // only one of the first three words differs: every word is checked
      b.writeUInt32BE(0x20010db8, 0);
      b.writeUInt32BE(1, 12);
      b.writeUInt32BE(next(), 4 * (i % 3));
    } else {
      for (let k = 0; k < 16; k += 4) b.writeUInt32BE(k === 4 && i % 2 ? 0 : next(), k);
    }
    return b;
  });
  const stride = RECORD_HEADER + ConnEvent.size;
  const n = 40000;
  const batch = Buffer.alloc(n * stride);
  const want: [string, string][] = [];
  for (let i = 0; i < n; i++) {
    const six = next() % 4 === 0;
    const pool = six ? v6 : v4;
    const a = pool[next() % pool.length]!;
    const b = pool[next() % pool.length]!;
    const o = i * stride + RECORD_HEADER;
    batch.writeUInt32LE(ConnEvent.size, i * stride);
    batch.writeUInt16LE(EventType.tcpConnect, o + Header.type);
    batch.writeUInt16LE(six ? AF_INET6 : AF_INET, o + ConnEvent.family);
    a.copy(batch, o + ConnEvent.saddr, 0, six ? 16 : 4);
    b.copy(batch, o + ConnEvent.daddr, 0, six ? 16 : 4);
    want.push(six ? [formatIPv6(a, 0), formatIPv6(b, 0)] : [formatIPv4(a, 0), formatIPv4(b, 0)]);
  }
  const { records, malformed } = decodeBatch(batch, n);
  assert.equal(malformed, 0);
  assert.deepEqual(
    records.map((r) => (r.kind === 'connect' ? [r.localIp, r.remoteIp] : [])),
    want,
  );
  // the pools held what they were made to hold
  assert.ok(want.some(([ip]) => ip === '0.0.0.0'));
  assert.ok(records.some((r) => r.kind === 'connect' && r.family === 6 && !r.localIp.includes(':')), 'an IPv4-mapped address, as IPv4');
  assert.ok(want.some(([ip]) => ip === '::1'));
});

test('record times: whole seconds and nanoseconds exact for every u64, on both sides of 2^53 ns and of each second', () => {
  const next = xorshift32(0x7157);
  const u64 = () => (BigInt(next()) << 32n) | BigInt(next());
  const times: bigint[] = [0n, 1n, 999_999_999n, 1_000_000_000n, 1_000_000_001n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n];
  // each second's edges up to the 2^53 ns limit (about 104 days) and past it
  for (const k of [1n, 86_400n, 9_007_199n, 9_007_200n, 18_446_744_073n]) for (const d of [-1n, 0n, 1n]) if (k * 1_000_000_000n + d < 2n ** 64n) times.push(k * 1_000_000_000n + d);
  for (let i = 0; i < 2000; i++) times.push(u64() >> BigInt(next() % 20)); // below and above 2^53
  const stride = RECORD_HEADER + ConnEvent.size;
  const batch = Buffer.alloc(times.length * stride);
  times.forEach((t, i) => {
    const o = i * stride;
    batch.writeUInt32LE(ConnEvent.size, o);
    batch.writeUInt16LE(EventType.tcpClose, o + RECORD_HEADER + Header.type);
    batch.writeUInt16LE(AF_INET, o + RECORD_HEADER + ConnEvent.family);
    batch.writeBigUInt64LE(t, o + RECORD_HEADER + Header.tsNs);
  });
  const { records, malformed } = decodeBatch(batch, times.length);
  assert.equal(malformed, 0);
  records.forEach((r, i) => {
    const t = times[i]!;
    assert.deepEqual([r.tsSec, r.tsNsec], [Number(t / 1_000_000_000n), Number(t % 1_000_000_000n)], `ts_ns ${t}`);
  });
});

test('decoded in pieces around malformed records and a count the batch does not hold: every piece whole, no gaps', () => {
  // 50 records: every 7th an unknown type, and a count of 80
  const stride = RECORD_HEADER + ConnEvent.size;
  const batch = Buffer.alloc(50 * stride);
  for (let i = 0; i < 50; i++) {
    const o = i * stride;
    batch.writeUInt32LE(ConnEvent.size, o);
    batch.writeUInt16LE(i % 7 === 3 ? 99 : EventType.tcpClose, o + RECORD_HEADER + Header.type);
    batch.writeUInt16LE(AF_INET, o + RECORD_HEADER + ConnEvent.family);
    batch.writeUInt32LE(i, o + RECORD_HEADER + ConnEvent.connId);
  }
  const good = Array.from({ length: 50 }, (_, i) => i).filter((i) => i % 7 !== 3);
  for (const chunk of [1, 4, 7, 43, 256, Infinity]) {
    const pieces: KernelRecord[][] = [];
    const n = decodeBatchInChunks(batch, 80, chunk, (rs) => pieces.push(rs));
    assert.deepEqual(n, { records: good.length, malformed: 50 - good.length }, `pieces of ${chunk}`);
    for (const p of pieces) {
      assert.ok(p.length > 0 && p.length <= chunk, `a piece of ${p.length} for ${chunk}`);
      assert.equal(Object.keys(p).length, p.length, `a piece with gaps for ${chunk}`);
    }
    assert.deepEqual(
      pieces.flat().map((r) => (r.kind === 'close' ? r.connId : -1)),
      good,
      `pieces of ${chunk}`,
    );
  }
});

test('decoded in pieces: the same records in the same order, no piece larger than asked', () => {
  const whole = decodeBatch(raw, facts.records);
  for (const chunk of [1, 7, 256, facts.records]) {
    const pieces: KernelRecord[][] = [];
    const n = decodeBatchInChunks(raw, facts.records, chunk, (rs) => pieces.push(rs));
    assert.deepEqual(n, { records: facts.records, malformed: 0 });
    assert.ok(pieces.every((p) => p.length > 0 && p.length <= chunk));
    assert.deepEqual(pieces.flat(), whole.records, `pieces of ${chunk}`);
  }
});
