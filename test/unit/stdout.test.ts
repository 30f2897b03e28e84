/**
 * The stdout sink: the documented JSON object per event kind, the text
 * line, and the sink's writes, counters and EPIPE handling on a real
 * Writable that collects what it is given.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, test } from 'node:test';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import { StdoutSink, toJsonLine, toJsonObject, toTextLine, writeTextLine } from '../../src/sinks/stdout.js';
import { ByteWriter } from '../../src/util/byte-writer.js';
import { sampleEvent, sampleProcess, udpUpdate } from '../helpers/events.js';

const TIME = '2023-11-14T22:13:20.123456789Z';

const proc = sampleProcess;
const ev = sampleEvent;

const BASE_KEYS = ['time', 'event', 'proto', 'direction', 'local', 'remote', 'process', 'container', 'pod', 'node', 'cgroup_id', 'netns', 'conn_id'];
const CLOSE_KEYS = ['bytes_sent', 'bytes_received', 'duration_ms', 'srtt_us', 'retransmits', 'bytes_sent_delta', 'bytes_received_delta', 'retransmits_delta'];
const TCP_UPDATE_KEYS = ['bytes_sent', 'bytes_received', 'duration_ms', 'srtt_us', 'retransmits'];
const UDP_UPDATE_KEYS = ['bytes_sent', 'bytes_received', 'datagrams_sent', 'datagrams_received'];

describe('toJsonObject', () => {
  const keyCases: { name: string; e: ConnectionEvent; keys: string[] }[] = [
    { name: 'connect', e: ev('connect'), keys: BASE_KEYS },
    { name: 'accept', e: ev('accept'), keys: BASE_KEYS },
    { name: 'close', e: ev('close'), keys: [...BASE_KEYS, ...CLOSE_KEYS] },
    { name: 'connect_failed', e: ev('connect_failed'), keys: [...BASE_KEYS, 'error'] },
    { name: 'update (tcp)', e: ev('update'), keys: [...BASE_KEYS, ...TCP_UPDATE_KEYS] },
    { name: 'update (udp)', e: ev('update', udpUpdate), keys: [...BASE_KEYS, ...UDP_UPDATE_KEYS] },
    { name: 'listen', e: ev('listen'), keys: BASE_KEYS },
    { name: 'unlisten', e: ev('unlisten'), keys: BASE_KEYS },
    { name: 'existing accept', e: ev('accept', { existing: true, bytesSent: 5, bytesReceived: 6 }), keys: [...BASE_KEYS, 'existing', 'bytes_sent', 'bytes_received'] },
    { name: 'existing listen', e: ev('listen', { existing: true }), keys: [...BASE_KEYS, 'existing'] },
  ];
  for (const c of keyCases) {
    test(`${c.name}: exactly the documented keys, in order`, () => {
      assert.deepEqual(Object.keys(toJsonObject(c.e)), c.keys);
    });
  }

  test('close without delta fields (nothing reported before): the reference and the fast path leave them out alike', () => {
    const e = ev('close', { bytesSentDelta: undefined, bytesReceivedDelta: undefined, retransmitsDelta: undefined });
    assert.deepEqual(Object.keys(toJsonObject(e)), [...BASE_KEYS, ...CLOSE_KEYS.slice(0, 5)]);
    assert.equal(toJsonLine(e), JSON.stringify(toJsonObject(e)));
  });

  test('listen: the remote is null, the direction inbound', () => {
    const o = JSON.parse(JSON.stringify(toJsonObject(ev('listen'))));
    assert.equal(o.remote, null);
    assert.equal(o.direction, 'inbound');
  });

  test('update: what moved since the previous report; UDP with datagrams', () => {
    const t = toJsonObject(ev('update'));
    assert.deepEqual([t.bytes_sent, t.bytes_received, t.retransmits], [100, 4000, 1]);
    const u = toJsonObject(ev('update', udpUpdate));
    assert.deepEqual([u.proto, u.bytes_sent, u.bytes_received, u.datagrams_sent, u.datagrams_received], ['udp', 40, 120, 1, 1]);
  });

  test('connect: values, through JSON', () => {
    const got = JSON.parse(JSON.stringify(toJsonObject(ev('connect'))));
    assert.deepEqual(got, {
      time: TIME,
      event: 'connect',
      proto: 'tcp',
      direction: 'outbound',
      local: { ip: '10.0.0.1', port: 51000 },
      remote: { ip: '10.0.0.2', port: 80 },
      process: { pid: 4242, ppid: 1, uid: 1000, comm: 'curl', cmd: 'curl -s http://10.0.0.2/', exe: '/usr/bin/curl' },
      container: null,
      pod: null,
      node: 'node-a',
      cgroup_id: 12345,
      netns: 4026531840,
      conn_id: 77,
    });
  });

  test('close: the close fields', () => {
    const o = toJsonObject(ev('close', { direction: 'inbound' }));
    assert.equal(o.direction, 'inbound');
    assert.equal(o.bytes_sent, 120);
    assert.equal(o.bytes_received, 4096);
    assert.equal(o.duration_ms, 12.5);
    assert.equal(o.srtt_us, 250);
    assert.equal(o.retransmits, 2);
    assert.equal(o.bytes_sent_delta, 20);
    assert.equal(o.bytes_received_delta, 96);
    assert.equal(o.retransmits_delta, 1);
  });

  test('connect_failed: the error name', () => {
    assert.equal(toJsonObject(ev('connect_failed', { error: 'ETIMEDOUT' })).error, 'ETIMEDOUT');
  });

  test('unknown process is null, not missing', () => {
    const o = JSON.parse(JSON.stringify(toJsonObject(ev('accept', { process: null }))));
    assert.ok('process' in o);
    assert.equal(o.process, null);
  });

  test('fields of another kind are not emitted', () => {
    const stray = {
      bytesSent: 1,
      bytesReceived: 2,
      durationMs: 3,
      srttUs: 4,
      retransmits: 5,
      error: 'EPIPE',
      bytesSentDelta: 6,
      datagramsSent: 7,
    };
    assert.deepEqual(Object.keys(toJsonObject(ev('connect', stray))), BASE_KEYS);
    assert.deepEqual(Object.keys(toJsonObject(ev('close', { error: 'EPIPE' }))), [...BASE_KEYS, ...CLOSE_KEYS]);
    assert.deepEqual(Object.keys(toJsonObject(ev('connect_failed', { bytesSent: 1 }))), [...BASE_KEYS, 'error']);
  });
});

describe('toTextLine', () => {
  const cases: { name: string; e: ConnectionEvent; want: string }[] = [
    {
      name: 'outbound connect',
      e: ev('connect'),
      want: `${TIME} connect        tcp 10.0.0.1:51000 -> 10.0.0.2:80 pid=4242 comm="curl" cmd="curl -s http://10.0.0.2/"`,
    },
    {
      name: 'inbound accept over IPv6',
      e: ev('accept', {
        direction: 'inbound',
        local: { ip: 'fe80::1', port: 8080 },
        remote: { ip: '2001:db8::2', port: 40000 },
        process: { ...proc, comm: 'nginx', cmd: 'nginx: worker process' },
      }),
      want: `${TIME} accept         tcp [fe80::1]:8080 <- [2001:db8::2]:40000 pid=4242 comm="nginx" cmd="nginx: worker process"`,
    },
    {
      name: 'close with counters',
      e: ev('close'),
      want:
        `${TIME} close          tcp 10.0.0.1:51000 -> 10.0.0.2:80 pid=4242 comm="curl" ` +
        `sent=120 received=4096 duration=12.500ms srtt=250us retrans=2 cmd="curl -s http://10.0.0.2/"`,
    },
    {
      name: 'connect_failed with the error',
      e: ev('connect_failed'),
      want: `${TIME} connect_failed tcp 10.0.0.1:51000 -> 10.0.0.2:80 pid=4242 comm="curl" error=ECONNREFUSED cmd="curl -s http://10.0.0.2/"`,
    },
    {
      name: 'update: what moved since the previous line',
      e: ev('update'),
      want: `${TIME} update         tcp 10.0.0.1:51000 -> 10.0.0.2:80 pid=4242 comm="curl" sent=100 received=4000 cmd="curl -s http://10.0.0.2/"`,
    },
    {
      name: 'UDP update with datagrams',
      e: ev('update', { ...udpUpdate, process: null }),
      want: `${TIME} update         udp 10.0.0.1:51000 -> 10.0.0.53:53 pid=? comm=? sent=40 received=120 datagrams_sent=1 datagrams_received=1`,
    },
    {
      name: 'listen: no arrow, no remote',
      e: ev('listen', { process: null, local: { ip: '::', port: 8080 } }),
      want: `${TIME} listen         tcp [::]:8080 pid=? comm=?`,
    },
    {
      name: 'an accept older than the agent',
      e: ev('accept', { existing: true, process: null, bytesSent: 1, bytesReceived: 2 }),
      want: `${TIME} accept         tcp 10.0.0.1:51000 <- 10.0.0.2:80 pid=? comm=? existing`,
    },
    {
      name: 'unknown process',
      e: ev('accept', { direction: 'inbound', process: null }),
      want: `${TIME} accept         tcp 10.0.0.1:51000 <- 10.0.0.2:80 pid=? comm=?`,
    },
    {
      name: 'no cmd (kernel hint only): no cmd field; comm quoted and escaped',
      e: ev('connect', { process: { ...proc, comm: 'a "b"', cmd: '' } }),
      want: `${TIME} connect        tcp 10.0.0.1:51000 -> 10.0.0.2:80 pid=4242 comm="a \\"b\\""`,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(toTextLine(c.e), c.want);
      assert.equal(textBytes(c.e), `${c.want}\n`, 'the sink\'s fast path writes the same line');
    });
  }

  test('the fast path agrees with toTextLine on containers, pods, long commands, and as they change', () => {
    const c = { id: 'd'.repeat(64), name: null, image: null, runtime: 'docker' };
    const named = { ...c, name: 'api' };
    const pod = { name: null, namespace: null, uid: '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c' };
    const p = { ...proc, cmd: `java ${'-Dx=1 '.repeat(40)}Main` };
    const events = [
      ev('connect', { process: p, container: c, pod }),
      ev('close', { process: p, container: named, pod, remotePod: { name: 'db-0', namespace: 'shop' } }),
      ev('close', { process: p, container: named, pod, durationMs: 0.0015, bytesSent: 2 ** 40 }),
      ev('connect_failed', { process: null, container: named }),
      ev('accept', { direction: 'inbound', process: null }),
      ev('update', { process: p, container: named, pod }),
      ev('update', { ...udpUpdate, process: p }),
      ev('listen', { process: p, container: named, existing: true }),
      ev('unlisten', { process: null }),
    ];
    for (const e of events) assert.equal(textBytes(e), `${toTextLine(e)}\n`);
  });
});

function textBytes(e: ConnectionEvent): string {
  const w = new ByteWriter(16);
  writeTextLine(w, e);
  return w.take().toString('utf8');
}

/** A real Writable that keeps every chunk; fails each write with `failWith` once set. */
class Collector extends Writable {
  readonly chunks: string[] = [];
  failWith: NodeJS.ErrnoException | undefined;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.failWith) return cb(this.failWith);
    this.chunks.push(chunk.toString('utf8'));
    cb();
  }
}

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`write ${code}`), { code, errno: -32, syscall: 'write' });

describe('StdoutSink', () => {
  test('one write per batch, one line per event, counted as sent', async () => {
    const stream = new Collector();
    const sink = new StdoutSink({ format: 'text', stream });
    const batch = [ev('connect'), ev('close'), ev('connect_failed')];
    sink.write(batch);
    sink.write([]);
    sink.write([ev('accept', { direction: 'inbound' })]);
    await tick();
    assert.equal(stream.chunks.length, 2);
    assert.equal(stream.chunks[0], batch.map((e) => `${toTextLine(e)}\n`).join(''));
    assert.equal(stream.chunks[1], `${toTextLine(ev('accept', { direction: 'inbound' }))}\n`);
    assert.deepEqual(sink.stats(), { sent: 4, dropped: 0, queueDepth: 0 });
    assert.equal(sink.name, 'stdout');
  });

  test('json format: each line is the documented object', async () => {
    const stream = new Collector();
    const sink = new StdoutSink({ format: 'json', stream });
    const batch = [ev('connect'), ev('close', { process: null })];
    sink.write(batch);
    await tick();
    assert.equal(stream.chunks.length, 1);
    const lines = stream.chunks[0]!.split('\n');
    assert.equal(lines.pop(), ''); // newline-terminated
    assert.deepEqual(
      lines.map((l) => JSON.parse(l)),
      batch.map((e) => JSON.parse(JSON.stringify(toJsonObject(e)))),
    );
    assert.equal(JSON.parse(lines[1]!).process, null);
  });

  test('EPIPE: onClosed once, later batches are dropped and not written', async () => {
    const stream = new Collector();
    let closed = 0;
    const sink = new StdoutSink({ format: 'text', stream, onClosed: () => closed++ });
    sink.write([ev('connect')]);
    await tick();
    assert.equal(stream.chunks.length, 1);

    stream.failWith = errno('EPIPE');
    sink.write([ev('close'), ev('close')]); // handed to the stream before the reader was known gone: the write fails
    await tick();
    await tick();
    assert.equal(closed, 1);
    assert.deepEqual(sink.stats(), { sent: 1, dropped: 2, queueDepth: 0 });

    sink.write([ev('connect'), ev('accept'), ev('close')]);
    sink.write([ev('connect')]);
    assert.deepEqual(sink.stats(), { sent: 1, dropped: 6, queueDepth: 0 });
    assert.equal(stream.chunks.length, 1);

    // a second error on the broken stream does not call onClosed again, nor throw
    stream.emit('error', errno('EPIPE'));
    assert.equal(closed, 1);

    // close() on a broken stream returns without waiting for it
    await sink.close();
  });

  test('EPIPE without onClosed is still handled', async () => {
    const stream = new Collector();
    stream.failWith = errno('EPIPE');
    const sink = new StdoutSink({ format: 'json', stream });
    sink.write([ev('connect')]);
    await tick();
    await tick();
    sink.write([ev('connect')]);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 2, queueDepth: 0 }, 'the failed write is dropped, not sent');
  });

  test('any other stream error is reported once with the error, and later events are counted as dropped', () => {
    const stream = new Collector();
    const seen: string[] = [];
    const sink = new StdoutSink({ format: 'text', stream, onClosed: (e) => seen.push(e.code ?? '') });
    stream.emit('error', errno('EIO'));
    stream.emit('error', errno('EIO'));
    assert.deepEqual(seen, ['EIO']);
    sink.write([ev('connect')]);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 1, queueDepth: 0 });
  });

  test('close() ends the stream after what was written', async () => {
    const stream = new Collector();
    const sink = new StdoutSink({ format: 'text', stream });
    sink.write([ev('connect')]);
    await sink.close();
    assert.equal(stream.writableFinished, true);
    assert.equal(stream.chunks.length, 1);
  });
});

describe('toJsonLine (the fast path)', () => {
  test('is the same JSON as JSON.stringify(toJsonObject(e)) for every kind and odd strings', () => {
    const odd = { pid: 7, ppid: 1, uid: 0, comm: 'we"ird\\name', cmd: 'sh -c "echo \u00e9\n\t"', exe: '/bin/\u2028sh' };
    const kinds: [string, ConnectionEvent][] = [
      ...(['connect', 'accept', 'close', 'connect_failed', 'update', 'listen', 'unlisten'] as const).map((k): [string, ConnectionEvent] => [k, ev(k)]),
      ['udp update', ev('update', udpUpdate)],
      ['existing connect', ev('connect', { existing: true, bytesSent: 3, bytesReceived: 2 ** 40 })],
      ['existing listen', ev('listen', { existing: true })],
    ];
    for (const [kind, base] of kinds) {
      for (const process of [odd, null]) {
        const e = { ...base, process, node: 'n"ode\u0001' };
        assert.equal(toJsonLine(e), JSON.stringify(toJsonObject(e)), `${kind} ${process ? 'with' : 'without'} process`);
        assert.deepEqual(JSON.parse(toJsonLine(e)), JSON.parse(JSON.stringify(toJsonObject(e))));
      }
    }
  });

  test('a second event of the same process reuses its JSON and stays right when the node changes', () => {
    const p = { pid: 9, ppid: 1, uid: 0, comm: 'a', cmd: 'a', exe: '/a' };
    const a = { ...ev('connect'), process: p, node: 'one' };
    const b = { ...ev('close'), process: p, node: 'two' };
    assert.equal(toJsonLine(a), JSON.stringify(toJsonObject(a)));
    assert.equal(toJsonLine(b), JSON.stringify(toJsonObject(b)));
  });
});

describe('container, pod and remote_pod', () => {
  const c = { id: 'a'.repeat(64), name: 'web', image: 'nginx:1.27', runtime: 'containerd' };
  const pod = { name: 'web-0', namespace: 'shop', uid: '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c' };

  test('JSON carries them (remote_pod only when known) and the fast path agrees', () => {
    const e = ev('close', { container: c, pod, remotePod: { name: 'db-0', namespace: 'shop' } });
    const o = JSON.parse(toJsonLine(e)) as Record<string, unknown>;
    assert.deepEqual(o.container, c);
    assert.deepEqual(o.pod, pod);
    assert.deepEqual(o.remote_pod, { name: 'db-0', namespace: 'shop' });
    assert.equal(toJsonLine(e), JSON.stringify(toJsonObject(e)));
    const bare = JSON.parse(toJsonLine(ev('connect'))) as Record<string, unknown>;
    assert.equal(bare.container, null);
    assert.equal(bare.pod, null);
    assert.equal('remote_pod' in bare, false);
  });

  test('a container whose runtime could not be asked: id and runtime, name and image null', () => {
    const partial = { id: 'b'.repeat(64), name: null, image: null, runtime: 'docker' };
    const e = ev('connect', { container: partial, pod: { name: null, namespace: null, uid: pod.uid } });
    assert.equal(toJsonLine(e), JSON.stringify(toJsonObject(e)));
    assert.match(toTextLine(e), / container=bbbbbbbbbbbb pod=uid:5c1e3b0a/);
  });

  test('the fast path notices when a container\'s details change (name learnt later)', () => {
    const id = 'c'.repeat(64);
    const first = ev('connect', { container: { id, name: null, image: null, runtime: 'docker' } });
    const later = ev('close', { container: { id, name: 'api', image: 'api:2', runtime: 'docker' } });
    assert.equal(toJsonLine(first), JSON.stringify(toJsonObject(first)));
    assert.equal(toJsonLine(later), JSON.stringify(toJsonObject(later)));
  });

  test('text shows container name, pod and remote pod', () => {
    const line = toTextLine(ev('connect', { container: c, pod, remotePod: { name: 'db-0', namespace: 'shop' } }));
    assert.match(line, / container=web pod=shop\/web-0 remote_pod=shop\/db-0/);
  });
});

test('text lines cut a long command line at 120 characters; JSON keeps it whole', () => {
  const long = `java ${'-Dx=1 '.repeat(60)}Main`;
  const e = ev('connect', { process: { ...proc, cmd: long } });
  const m = / cmd="(.*)"$/.exec(toTextLine(e));
  assert.equal(m?.[1]?.length, 120);
  assert.ok(m?.[1]?.endsWith('…'));
  assert.equal((JSON.parse(toJsonLine(e)) as { process: { cmd: string } }).process.cmd, long);
});

test('a cut command line says so in JSON (cmd_truncated), and only then', () => {
  const cut = JSON.parse(toJsonLine(ev('connect', { process: { ...proc, cmd: 'x', cmdTruncated: true } }))) as { process: Record<string, unknown> };
  assert.equal(cut.process.cmd_truncated, true);
  const whole = JSON.parse(toJsonLine(ev('connect'))) as { process: Record<string, unknown> };
  assert.equal('cmd_truncated' in whole.process, false);
});

/** A Writable whose writes stay pending until release(): a reader that stopped reading. */
class StalledReader extends Writable {
  private pending: (() => void)[] = [];
  received = 0;
  constructor() {
    super({ highWaterMark: 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.received += chunk.length;
    this.pending.push(cb);
  }
  release(): void {
    for (const cb of this.pending.splice(0)) cb();
  }
}

test('a reader that stops reading: output held up to max_buffer, then batches dropped and counted; it resumes when the reader catches up', async () => {
  const stream = new StalledReader();
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), debug: () => undefined, verbose: false };
  const sink = new StdoutSink({ format: 'json', stream, maxBufferBytes: 64 * 1024, log });
  const batch = Array.from({ length: 100 }, () => ev('close'));
  let written = 0;
  for (let i = 0; i < 200; i++) {
    sink.write(batch);
    written += batch.length;
  }
  await tick();
  const held = sink.stats();
  assert.ok(held.dropped > 0, 'dropped past the bound');
  assert.equal(held.sent + held.dropped + (held.queueDepth ?? 0), written, 'every event written, waiting to be, or counted as dropped');
  // only about max_buffer is held for the stalled reader, not everything
  assert.ok(stream.writableLength < 64 * 1024 + 200 * 1024, `held ${stream.writableLength} bytes`);
  assert.equal(lines.filter((l) => /not keeping up/.test(l)).length, 1, 'one line when dropping starts');
  stream.release();
  await tick();
  stream.release();
  await tick();
  sink.write(batch);
  written += batch.length;
  stream.release();
  await tick();
  const after = sink.stats();
  assert.equal(after.queueDepth, 0);
  assert.ok(after.sent > held.sent, 'writes again once the reader caught up');
  assert.equal(after.sent + after.dropped, written);
  assert.match(lines.at(-1) ?? '', new RegExp(`caught up; ${held.dropped} events were dropped`));
});

test('close() with a reader that never reads: waits closeTimeoutMs, then counts what it did not take as dropped', async () => {
  const stream = new StalledReader();
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), debug: () => undefined, verbose: false };
  const sink = new StdoutSink({ format: 'text', stream, log, closeTimeoutMs: 100 });
  sink.write([ev('connect'), ev('close')]);
  const t0 = Date.now();
  await sink.close();
  assert.ok(Date.now() - t0 >= 90);
  assert.deepEqual(sink.stats(), { sent: 0, dropped: 2, queueDepth: 0 });
  assert.match(lines.join('\n'), /did not take the last 2 events within 0.1 s; counted as dropped/);
  // a late completion does not count them again
  stream.release();
  await tick();
  assert.deepEqual(sink.stats(), { sent: 0, dropped: 2, queueDepth: 0 });
});
