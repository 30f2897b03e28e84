/**
 * The newrelic sink: the attributes of each event kind, the spec parser,
 * and delivery to a local server that implements the documented Event API
 * contract (test/helpers/newrelic-server.ts): every event exactly once,
 * in order, across batching, splits, retries and faults; the limits per
 * POST; the insert key; the queue bound; close().
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import {
  CHUNK_BUFFER_BYTES,
  EventChunks,
  NEW_RELIC_ATTRIBUTES,
  NewRelicJson,
  NewRelicSink,
  parseNewRelicOptions,
  toNewRelicEvent,
  type EventChunk,
  type NewRelicOptions,
} from '../../src/sinks/newrelic.js';
import { createLogger, type Logger } from '../../src/util/log.js';
import { repoRoot } from '../helpers/paths.js';
import { FakeNewRelic, MAX_BODY_BYTES, MAX_EVENTS_PER_POST } from '../helpers/newrelic-server.js';
import { sampleEvent, sampleProcess, udpUpdate } from '../helpers/events.js';

const ACCOUNT = '1234567';
const KEY = 'NRII-s3cr3t-Insert-KEY-0123456789ab';
const TIME_MS = 1_700_000_000_123;

const proc = sampleProcess;
const ev = sampleEvent;

/** n connect events with conn ids from `from`, so the server's copy can be checked for order and duplicates. */
function many(n: number, from = 0): ConnectionEvent[] {
  return Array.from({ length: n }, (_, i) => ev('connect', { connId: from + i }));
}

function connIds(events: readonly Record<string, unknown>[]): number[] {
  return events.map((e) => e['conn.id'] as number);
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

/** Polls until cond holds: the server records a request before the sink has read the answer. */
async function until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function captureLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger(false, (l) => lines.push(l)), lines };
}

/** Fast timings for tests; production defaults are 5 s flush, 0.5-30 s backoff. */
function sinkFor(fake: FakeNewRelic, log: Logger, over: Partial<NewRelicOptions> = {}): NewRelicSink {
  return new NewRelicSink(
    { account: ACCOUNT, key: KEY, region: 'US', endpoint: fake.url, flushMs: 20, backoffMs: 10, maxBackoffMs: 40, requestTimeoutMs: 2000, ...over },
    { log },
  );
}

async function withFake(o: { maxBytes?: number; key?: string }, fn: (fake: FakeNewRelic) => Promise<void>): Promise<void> {
  const fake = await FakeNewRelic.start({ account: ACCOUNT, key: o.key ?? KEY, ...(o.maxBytes ? { maxBytes: o.maxBytes } : {}) });
  try {
    await fn(fake);
  } finally {
    await fake.close();
  }
}

describe('NewRelicJson: the request body written straight from the events', () => {
  test('the same bytes as JSON.stringify(toNewRelicEvent(e)) for every kind and every optional part', () => {
    const container = { id: 'c'.repeat(64), name: 'web "1"', image: 'nginx:1.25', runtime: 'containerd' as const };
    const pod = { name: 'web-0', namespace: 'shop', uid: '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c' };
    const long = { ...proc, cmd: `${'x'.repeat(4095)}\u{1F600} tail`, cmdTruncated: true as const, comm: 'ü\n"q"' };
    const events: ConnectionEvent[] = [
      ...(['connect', 'accept', 'close', 'update', 'connect_failed', 'listen', 'unlisten', 'alert'] as const).map((k) => ev(k)),
      ev('close', { direction: 'inbound', bytesSentDelta: undefined, bytesReceivedDelta: undefined }),
      ev('update', udpUpdate),
      ev('listen', { existing: true }),
      ev('accept', { existing: true, bytesSent: 7000, bytesReceived: 8000 }),
      ev('connect', { remote: { ip: 'fd00::2', port: 443, name: 'api.example.com' } }),
      ev('connect', { process: null }),
      ev('connect', { process: long }),
      ev('connect', { container, pod, remotePod: { name: 'db-0', namespace: 'shop' } }),
      ev('connect', { container: { ...container, name: null, image: null }, pod: { name: null, namespace: null, uid: pod.uid } }),
      // the same process object with another container: its part is made again
      ev('connect', { container }),
      ev('connect', { container: null }),
      ev('alert', { error: 'ECONNREFUSED', rule: 'no "egress"', trigger: 'connect_failed' }),
      ev('close', { durationMs: Number.NaN }),
    ];
    const json = new NewRelicJson();
    for (const e of events) assert.equal(json.of(e), JSON.stringify(toNewRelicEvent(e)), `${e.event} ${JSON.stringify(e).slice(0, 200)}`);
    // a long command line is cut at the limit, before a split surrogate pair
    assert.equal((JSON.parse(json.of(ev('connect', { process: long }))) as Record<string, string>)['process.cmd']!.length, 4095);
  });
});

describe('EventChunks: what waits for the Event API is bytes, in reused buffers', () => {
  const text = (c: EventChunk): string => c.buf.toString('utf8', 0, c.length);
  /** the chunk's events, read back through the ends it records */
  const eventsOf = (c: EventChunk): unknown[] => c.ends.map((end, i) => JSON.parse(text(c).slice(i === 0 ? 0 : (c.ends[i - 1] as number) + 1, end)) as unknown);
  const nr = (e: ConnectionEvent): unknown => JSON.parse(JSON.stringify(toNewRelicEvent(e)));
  const noFailure = (): void => assert.fail('no event should fail');

  test('a chunk holds at most maxEvents events and maxBytes bytes, commas between, and knows where each event ends', () => {
    const one = Buffer.byteLength(new NewRelicJson().of(ev('connect', { connId: 10 })));
    const out: EventChunk[] = [];
    // room for three events and their two commas, not for a fourth
    const chunks = new EventChunks((c) => out.push(c), 4, one * 3 + 2, 10);
    const events = range(10, 10).map((connId) => ev('connect', { connId }));
    for (const e of events) chunks.add(e, noFailure);
    assert.deepEqual(out.map((c) => c.ends.length), [3, 3, 3]);
    assert.equal(chunks.events, 10, 'nine in chunks, one in the open one');
    chunks.flush();
    assert.deepEqual(out.map((c) => c.ends.length), [3, 3, 3, 1]);
    for (const c of out) assert.deepEqual(JSON.parse(`[${text(c)}]`), eventsOf(c), 'the same events either way');
    assert.deepEqual(out.flatMap(eventsOf), events.map(nr));
    // bytes to spare: the event bound
    const byCount: EventChunk[] = [];
    const wide = new EventChunks((c) => byCount.push(c), 4, CHUNK_BUFFER_BYTES, 10);
    for (const e of events) wide.add(e, noFailure);
    wide.flush();
    assert.deepEqual(byCount.map((c) => c.ends.length), [4, 4, 2]);
    assert.deepEqual(byCount.flatMap(eventsOf), events.map(nr));
  });

  test('an event bigger than a chunk goes alone, in a buffer of its own that is not reused', () => {
    const out: EventChunk[] = [];
    const chunks = new EventChunks((c) => out.push(c), 100, 4000, 10);
    // three attributes of 4096 control characters, each written as six bytes: over 64 KiB
    const fat = '\u0001'.repeat(5000);
    const big = ev('connect', { connId: 2, process: { ...proc, cmd: fat, exe: fat, comm: fat } });
    const medium = ev('connect', { connId: 4, process: { ...proc, cmd: 'x'.repeat(5000) } });
    for (const e of [ev('connect', { connId: 1 }), big, ev('connect', { connId: 3 }), medium, ev('connect', { connId: 5 })]) chunks.add(e, noFailure);
    chunks.flush();
    assert.deepEqual(out.map((c) => c.ends.map((_, i) => (eventsOf(c)[i] as Record<string, number>)['conn.id'])), [[1], [2], [3], [4], [5]]);
    const bigChunk = out[1] as EventChunk;
    assert.ok(bigChunk.length > CHUNK_BUFFER_BYTES, `${bigChunk.length} bytes`);
    assert.equal(bigChunk.pooled, false);
    assert.deepEqual(eventsOf(bigChunk), [nr(big)]);
    assert.equal((out[3] as EventChunk).pooled, true, 'over maxBytes, but it fits a usual buffer');
    for (const c of out) chunks.release(c);
    assert.equal(chunks.pooled, 4, 'every buffer but the big one');
    assert.equal(chunks.events, 0);
  });

  test('an event that cannot be written leaves nothing behind, not even its comma, and is counted', () => {
    const out: EventChunk[] = [];
    const chunks = new EventChunks((c) => out.push(c), 100, CHUNK_BUFFER_BYTES, 10);
    const bad = { ...ev('connect'), local: undefined } as unknown as ConnectionEvent;
    let failed = 0;
    for (const e of [ev('connect', { connId: 1 }), bad, ev('close', { connId: 3 }), bad]) chunks.add(e, () => failed++);
    chunks.flush();
    assert.equal(failed, 2);
    assert.equal(out.length, 1);
    assert.equal(`[${text(out[0] as EventChunk)}]`, JSON.stringify([toNewRelicEvent(ev('connect', { connId: 1 })), toNewRelicEvent(ev('close', { connId: 3 }))]));
    // the first event of a chunk failing: nothing at all
    chunks.add(bad, () => failed++);
    chunks.flush();
    assert.equal(out.length, 1);
    assert.equal(chunks.events, 2);
  });

  test('released buffers are reused (at most maxPooled kept); a second release does nothing', () => {
    const out: EventChunk[] = [];
    const chunks = new EventChunks((c) => out.push(c), 1, CHUNK_BUFFER_BYTES, 2);
    for (const connId of [1, 2, 3]) chunks.add(ev('connect', { connId }), noFailure);
    assert.equal(chunks.events, 3);
    for (const c of out) chunks.release(c);
    chunks.release(out[0] as EventChunk);
    assert.equal(chunks.pooled, 2);
    assert.equal(chunks.events, 0, 'each chunk counted out once');
    const kept = new Set(out.map((c) => c.buf));
    chunks.add(ev('close', { connId: 4 }), noFailure);
    const next = out[3] as EventChunk;
    assert.ok(kept.has(next.buf), 'a released buffer');
    assert.equal(chunks.pooled, 1);
    assert.deepEqual(eventsOf(next), [nr(ev('close', { connId: 4 }))], 'only the new bytes count');
  });

  test('halve(): two chunks of their own with half the events each; a chunk of one event is not cut', () => {
    const out: EventChunk[] = [];
    const chunks = new EventChunks((c) => out.push(c), 100, CHUNK_BUFFER_BYTES, 10);
    const events = range(1, 5).map((connId) => ev('connect', { connId }));
    for (const e of events) chunks.add(e, noFailure);
    chunks.flush();
    const whole = out[0] as EventChunk;
    const parts = chunks.halve(whole);
    assert.ok(parts);
    assert.deepEqual(parts.map((c) => c.ends.length), [2, 3]);
    assert.deepEqual(parts.flatMap(eventsOf), events.map(nr));
    assert.ok(parts.every((c) => !c.pooled && c.buf.buffer !== whole.buf.buffer));
    chunks.release(whole);
    assert.equal(chunks.events, 5, 'the halves hold the events now');
    assert.equal(chunks.halve(parts[0] as EventChunk)?.length, 2);
    chunks.add(ev('connect', { connId: 9 }), noFailure);
    chunks.flush();
    assert.equal(chunks.halve(out[1] as EventChunk), undefined);
  });
});

describe('toNewRelicEvent', () => {
  test('connect (outbound): every attribute, flat, local side is the source', () => {
    assert.deepEqual(toNewRelicEvent(ev('connect')), {
      eventType: 'ContainerVisibility',
      timestamp: TIME_MS,
      event: 'connect',
      proto: 'tcp',
      direction: 'outbound',
      'source.ip': '10.0.0.1',
      'source.port': 51000,
      'destination.ip': '10.0.0.2',
      'destination.port': 80,
      'local.ip': '10.0.0.1',
      'local.port': 51000,
      'remote.ip': '10.0.0.2',
      'remote.port': 80,
      'process.pid': 4242,
      'process.ppid': 1,
      'process.uid': 1000,
      'process.comm': 'curl',
      'process.cmd': 'curl -s http://10.0.0.2/',
      'process.exe': '/usr/bin/curl',
      node: 'node-a',
      'cgroup.id': 12345,
      netns: 4026531840,
      'conn.id': 77,
    });
  });

  test('accept (inbound): the remote side is the source', () => {
    const o = toNewRelicEvent(ev('accept', { local: { ip: '10.0.0.1', port: 80 }, remote: { ip: '10.0.0.9', port: 40000 } }));
    assert.equal(o.direction, 'inbound');
    assert.deepEqual(
      [o['source.ip'], o['source.port'], o['destination.ip'], o['destination.port']],
      ['10.0.0.9', 40000, '10.0.0.1', 80],
    );
    assert.deepEqual([o['local.ip'], o['local.port'], o['remote.ip'], o['remote.port']], ['10.0.0.1', 80, '10.0.0.9', 40000]);
  });

  test('close: the byte counts and timings; inbound close keeps source = remote', () => {
    const o = toNewRelicEvent(ev('close', { direction: 'inbound' }));
    assert.equal(o.event, 'close');
    assert.equal(o['bytes.tx'], 120);
    assert.equal(o['bytes.rx'], 4096);
    assert.equal(o['duration.ms'], 12.5);
    assert.equal(o['srtt.us'], 250);
    assert.equal(o.retransmits, 2);
    assert.equal(o['source.ip'], '10.0.0.2');
    assert.equal(o['destination.ip'], '10.0.0.1');
    assert.equal('error' in o, false);
  });

  test('close: what was not reported before, for exact sums of update and close', () => {
    const o = toNewRelicEvent(ev('close'));
    assert.equal(o['bytes.tx.delta'], 20);
    assert.equal(o['bytes.rx.delta'], 96);
  });

  test('update: what moved since the previous report; UDP with datagrams, TCP with srtt', () => {
    const t = toNewRelicEvent(ev('update'));
    assert.deepEqual([t.event, t.proto, t['bytes.tx'], t['bytes.rx'], t['srtt.us'], t.retransmits], ['update', 'tcp', 100, 4000, 250, 1]);
    const u = toNewRelicEvent(ev('update', udpUpdate));
    assert.deepEqual([u.proto, u['bytes.tx'], u['bytes.rx'], u['datagrams.tx'], u['datagrams.rx']], ['udp', 40, 120, 1, 1]);
    for (const k of ['srtt.us', 'retransmits', 'duration.ms', 'bytes.tx.delta']) assert.equal(k in u, false, k);
  });

  test('listen: no remote, and the listener is the destination', () => {
    const o = toNewRelicEvent(ev('listen', { existing: true }));
    assert.equal(o.existing, 1);
    assert.equal(o['destination.ip'], '10.0.0.1');
    for (const k of ['remote.ip', 'remote.port', 'source.ip', 'source.port']) assert.equal(k in o, false, k);
  });

  test('connect_failed: the errno name, no close fields', () => {
    const o = toNewRelicEvent(ev('connect_failed', { error: 'ETIMEDOUT' }));
    assert.equal(o.error, 'ETIMEDOUT');
    for (const k of ['bytes.tx', 'bytes.rx', 'duration.ms', 'srtt.us', 'retransmits']) assert.equal(k in o, false, k);
  });

  test('connect and accept carry neither close fields nor error', () => {
    for (const kind of ['connect', 'accept'] as const) {
      const o = toNewRelicEvent(ev(kind));
      for (const k of ['bytes.tx', 'bytes.rx', 'duration.ms', 'srtt.us', 'retransmits', 'error']) assert.equal(k in o, false, `${kind} ${k}`);
    }
  });

  test('container, pod and peer pod present', () => {
    const o = toNewRelicEvent(
      ev('connect', {
        container: { id: 'a'.repeat(64), name: 'client', image: 'curl:8', runtime: 'containerd' },
        pod: { name: 'client-7d4f9', namespace: 'shop', uid: '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c' },
        remotePod: { name: 'api-0', namespace: 'shop' },
      }),
    );
    assert.equal(o['container.id'], 'a'.repeat(64));
    assert.equal(o['container.name'], 'client');
    assert.equal(o['container.image'], 'curl:8');
    assert.equal(o['container.runtime'], 'containerd');
    assert.equal(o['k8s.pod'], 'client-7d4f9');
    assert.equal(o['k8s.namespace'], 'shop');
    assert.equal(o['k8s.pod.uid'], '5c1e3b0a-7d2f-4e8a-9b6c-0d1e2f3a4b5c');
    assert.equal(o['remote.k8s.pod'], 'api-0');
    assert.equal(o['remote.k8s.namespace'], 'shop');
  });

  test('absent: no container, pod, peer pod or process attributes at all (never null)', () => {
    const o = toNewRelicEvent(ev('close', { process: null, direction: 'inbound' }));
    for (const k of Object.keys(o)) {
      assert.ok(!/^(container|k8s|remote\.k8s|process)\./.test(k), k);
    }
    for (const v of Object.values(o)) assert.ok(v !== null && v !== undefined);
  });

  test('unknown parts are left out: a container the runtime could not name, a pod known only by uid', () => {
    const o = toNewRelicEvent(
      ev('connect', {
        container: { id: 'b'.repeat(64), name: null, image: null, runtime: 'cri' },
        pod: { name: null, namespace: null, uid: 'u-1' },
      }),
    );
    assert.equal(o['container.id'], 'b'.repeat(64));
    assert.equal(o['container.runtime'], 'cri');
    assert.equal('container.name' in o, false);
    assert.equal('container.image' in o, false);
    assert.equal(o['k8s.pod.uid'], 'u-1');
    assert.equal('k8s.pod' in o, false);
    assert.equal('k8s.namespace' in o, false);
  });

  test('timestamp: integer milliseconds, truncated, exact for current dates', () => {
    assert.equal(toNewRelicEvent(ev('connect', { timeSec: 1_799_999_999, timeNsec: 999_999_999 })).timestamp, 1_799_999_999_999);
    assert.ok(Number.isInteger(toNewRelicEvent(ev('connect')).timestamp));
  });

  test('strings are cut to 4096 characters, never inside a surrogate pair', () => {
    const long = toNewRelicEvent(ev('connect', { process: { ...proc, cmd: 'x'.repeat(10_000) } }));
    assert.equal(long['process.cmd'], 'x'.repeat(4096));
    // an emoji (two UTF-16 units) straddling the limit is dropped whole
    const cmd = 'y'.repeat(4095) + '\u{1F600}' + 'z';
    const cut = toNewRelicEvent(ev('connect', { process: { ...proc, cmd } }))['process.cmd'] as string;
    assert.equal(cut, 'y'.repeat(4095));
    assert.equal(toNewRelicEvent(ev('connect', { process: { ...proc, cmd: 'x'.repeat(4096) } }))['process.cmd'], 'x'.repeat(4096));
  });

  test('the documented attribute table and the code agree (no drift either way)', () => {
    const full = [
      ev('close', {
        container: { id: 'c'.repeat(64), name: 'n', image: 'i', runtime: 'docker' },
        pod: { name: 'p', namespace: 'ns', uid: 'u' },
        remotePod: { name: 'q', namespace: 'ns' },
      }),
      ev('connect_failed'),
      ev('update', udpUpdate),
      ev('accept', { existing: true, bytesSent: 1, bytesReceived: 2 }),
      ev('alert', { rule: 'web-egress', trigger: 'connect' }),
      ev('connect', { remote: { ip: '203.0.113.7', port: 443, name: 'api.example.com' } }),
      ev('connect', { process: { pid: 7, ppid: 1, uid: 0, comm: 'java', cmd: 'java -jar x', cmdTruncated: true, exe: '/usr/bin/java' } }),
    ];
    const emitted = new Set(full.flatMap((e) => Object.keys(toNewRelicEvent(e))));
    assert.deepEqual([...emitted].sort(), Object.keys(NEW_RELIC_ATTRIBUTES).sort());
    for (const e of full) {
      const o = toNewRelicEvent(e);
      for (const [k, v] of Object.entries(o)) {
        const doc = NEW_RELIC_ATTRIBUTES[k as keyof typeof NEW_RELIC_ATTRIBUTES];
        assert.equal(typeof v, doc.type, `${k} is documented as ${doc.type}`);
        assert.ok(k.length <= 255);
      }
      assert.ok(Object.keys(o).length <= 254, 'within the documented attribute count');
    }
  });
});

describe('parseNewRelicOptions', () => {
  test('US by default, with the documented collector URL', () => {
    const o = parseNewRelicOptions({ account: ACCOUNT, key: KEY });
    assert.equal(o.region, 'US');
    assert.equal(o.account, ACCOUNT);
    assert.equal(o.key, KEY);
    assert.equal(o.endpoint.href, `https://insights-collector.newrelic.com/v1/accounts/${ACCOUNT}/events`);
  });

  const good: { name: string; spec: Record<string, string>; url: string; region: 'US' | 'EU' }[] = [
    { name: 'region=EU', spec: { region: 'EU' }, url: `https://insights-collector.eu01.nr-data.net/v1/accounts/${ACCOUNT}/events`, region: 'EU' },
    { name: 'region=eu (any case)', spec: { region: 'eu' }, url: `https://insights-collector.eu01.nr-data.net/v1/accounts/${ACCOUNT}/events`, region: 'EU' },
    { name: 'region=us', spec: { region: 'us' }, url: `https://insights-collector.newrelic.com/v1/accounts/${ACCOUNT}/events`, region: 'US' },
    { name: 'endpoint, bare host: path appended', spec: { endpoint: 'http://127.0.0.1:8080' }, url: `http://127.0.0.1:8080/v1/accounts/${ACCOUNT}/events`, region: 'US' },
    { name: 'endpoint, "/": path appended', spec: { endpoint: 'https://proxy.example/' }, url: `https://proxy.example/v1/accounts/${ACCOUNT}/events`, region: 'US' },
    { name: 'endpoint with a path: used as given', spec: { endpoint: 'https://proxy.example/nr/events' }, url: 'https://proxy.example/nr/events', region: 'US' },
    { name: 'endpoint wins over region', spec: { region: 'EU', endpoint: 'http://localhost:9' }, url: `http://localhost:9/v1/accounts/${ACCOUNT}/events`, region: 'EU' },
  ];
  for (const c of good) {
    test(`good: ${c.name}`, () => {
      const o = parseNewRelicOptions({ account: ACCOUNT, key: KEY, ...c.spec });
      assert.equal(o.endpoint.href, c.url);
      assert.equal(o.region, c.region);
    });
  }

  // the secret also appears in the wrong places, to prove no value is ever echoed
  const bad: { name: string; spec: Record<string, string>; mentions: string }[] = [
    { name: 'no account', spec: { key: KEY }, mentions: 'account' },
    { name: 'empty account', spec: { account: '', key: KEY }, mentions: 'account' },
    { name: 'account not digits (the key pasted there)', spec: { account: KEY, key: KEY }, mentions: 'account' },
    { name: 'no key', spec: { account: ACCOUNT }, mentions: 'key' },
    { name: 'empty key', spec: { account: ACCOUNT, key: '  ' }, mentions: 'key' },
    { name: 'key with a space', spec: { account: ACCOUNT, key: `${KEY} x` }, mentions: 'key' },
    { name: 'bad region', spec: { account: ACCOUNT, key: KEY, region: KEY }, mentions: 'region' },
    { name: 'endpoint not a URL', spec: { account: ACCOUNT, key: KEY, endpoint: `not a url ${KEY}` }, mentions: 'endpoint' },
    { name: 'endpoint not http(s)', spec: { account: ACCOUNT, key: KEY, endpoint: `ftp://${KEY}.example/` }, mentions: 'endpoint' },
    { name: 'endpoint with credentials', spec: { account: ACCOUNT, key: KEY, endpoint: `https://u:${KEY}@proxy.example/` }, mentions: 'endpoint' },
    { name: 'unknown key', spec: { account: ACCOUNT, key: KEY, insertkey: KEY }, mentions: 'insertkey' },
  ];
  for (const c of bad) {
    test(`bad: ${c.name}`, () => {
      assert.throws(
        () => parseNewRelicOptions(c.spec),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.code, 'ECONFIG');
          assert.ok(err.message.startsWith('--sink newrelic: '), err.message);
          assert.ok(err.message.includes(c.mentions), err.message);
          assert.ok(!err.message.includes('\n'), 'one line');
          assert.ok(!err.message.includes(KEY) && !err.message.includes('s3cr3t'), `no key in: ${err.message}`);
          return true;
        },
      );
    });
  }
});

describe('NewRelicSink delivery', () => {
  test('events arrive once, gzipped, with the insert key, JSON type, user agent and account path', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log);
      sink.write([ev('connect', { connId: 1 }), ev('close', { connId: 1 }), ev('connect_failed', { connId: 2 })]);
      await sink.close();
      assert.deepEqual(fake.events.map((e) => e.event), ['connect', 'close', 'connect_failed']);
      assert.deepEqual(fake.integrationErrors, []);
      const r = fake.requests[0];
      assert.ok(r);
      assert.equal(r.status, 200);
      assert.equal(r.path, `/v1/accounts/${ACCOUNT}/events`);
      assert.equal(r.headers['x-insert-key'], KEY);
      assert.equal(r.headers['content-encoding'], 'gzip');
      assert.equal(r.headers['content-type'], 'application/json');
      const pkg = JSON.parse(readFileSync(`${repoRoot}/package.json`, 'utf8')) as { version: string };
      assert.equal(r.headers['user-agent'], `convis/${pkg.version}`);
      assert.deepEqual(sink.stats(), { sent: 3, dropped: 0, failed: 0, queueDepth: 0 });
      assert.deepEqual(lines, []);
    });
  });

  test('the timer sends a partial batch without close()', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { flushMs: 30 });
      sink.write(many(5));
      await fake.waitForEvents(5, 2000);
      await until(() => sink.stats().sent === 5, 'the sink to count 5 sent');
      await sink.close();
    });
  });

  test('a full batch is sent at once, before the timer', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { flushMs: 60_000 });
      sink.write(many(MAX_EVENTS_PER_POST + 10));
      await fake.waitForEvents(MAX_EVENTS_PER_POST, 3000);
      await until(() => sink.stats().sent === MAX_EVENTS_PER_POST, 'the sink to count the batch sent');
      assert.equal(fake.requests.length, 1);
      assert.equal(sink.stats().queueDepth, 10);
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(0, MAX_EVENTS_PER_POST + 10));
    });
  });

  test('4500 events: several POSTs, each at most 2000 events and 1 MB gzipped, in order, none twice', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log);
      for (let i = 0; i < 4500; i += 300) sink.write(many(300, i));
      await sink.close();
      assert.ok(fake.requests.length >= 3, `${fake.requests.length} requests`);
      for (const r of fake.requests) {
        assert.equal(r.status, 200);
        assert.ok(r.events <= MAX_EVENTS_PER_POST, `${r.events} events in one POST`);
        assert.ok(r.bytes <= MAX_BODY_BYTES, `${r.bytes} bytes in one POST`);
      }
      assert.deepEqual(connIds(fake.events), range(0, 4500));
      assert.equal(fake.maxConcurrent, 1, 'one request in flight at a time');
      assert.deepEqual(sink.stats(), { sent: 4500, dropped: 0, failed: 0, queueDepth: 0 });
    });
  });

  test('gzipped batch over maxBytesPerPost is halved before sending', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { maxBytesPerPost: 2500 });
      // command lines that do not compress, so 200 events are far over 2500 bytes
      sink.write(many(200).map((e) => ({ ...e, process: { ...proc, cmd: randomBytes(32).toString('hex') } })));
      await sink.close();
      assert.ok(fake.requests.length > 2);
      for (const r of fake.requests) {
        assert.equal(r.status, 200);
        assert.ok(r.bytes <= 2500, `${r.bytes} bytes`);
      }
      assert.deepEqual(connIds(fake.events), range(0, 200));
      assert.equal(sink.stats().sent, 200);
    });
  });

  test('413 from the server: halves until accepted, every event exactly once, in order', async () => {
    await withFake({ maxBytes: 3000 }, async (fake) => {
      const sink = sinkFor(fake, captureLog().log);
      sink.write(many(300).map((e) => ({ ...e, process: { ...proc, cmd: randomBytes(12).toString('hex') } })));
      await sink.close();
      assert.ok(fake.requests.some((r) => r.status === 413), 'the server refused something');
      for (const r of fake.requests.filter((x) => x.status === 200)) assert.ok(r.bytes <= 3000);
      assert.deepEqual(connIds(fake.events), range(0, 300));
      assert.deepEqual(sink.stats(), { sent: 300, dropped: 0, failed: 0, queueDepth: 0 });
    });
  });

  test('one event too big even alone is dropped and counted; the rest arrive', async () => {
    await withFake({ maxBytes: 1500 }, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log);
      const big = ev('connect', { connId: 1, process: { ...proc, cmd: randomBytes(4000).toString('latin1') } });
      sink.write([ev('connect', { connId: 0 }), big, ev('connect', { connId: 2 })]);
      await sink.close();
      assert.deepEqual(connIds(fake.events), [0, 2]);
      // its request was refused (413) and is not retried: counted as failed, as every such request
      assert.deepEqual(sink.stats(), { sent: 2, dropped: 1, failed: 1, queueDepth: 0 });
      assert.equal(lines.filter((l) => l.includes('too large')).length, 1);
    });
  });
});

describe('NewRelicSink faults', () => {
  test('429 with Retry-After is retried after the time asked; nothing lost or doubled', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log, { backoffMs: 5 });
      fake.failNext(1, 429, { 'Retry-After': '1' });
      sink.write(many(50));
      await fake.waitForRequests(1);
      const refusedAt = Date.now();
      await fake.waitForEvents(50, 5000);
      assert.ok(Date.now() - refusedAt >= 900, 'waited about the second asked for');
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(0, 50));
      assert.deepEqual(fake.requests.map((r) => r.status), [429, 200]);
      assert.equal(lines.length, 2, lines.join(''));
      assert.match(lines[0] ?? '', /warning: newrelic to http:\/\/127\.0\.0\.1:\d+\/v1\/accounts\/1234567\/events: 429 Too Many Requests.*; retrying when Retry-After says$/m);
      assert.match(lines[1] ?? '', /newrelic to http:\/\/127\.0\.0\.1:\d+\/v1\/accounts\/1234567\/events: delivering again after 1 failed attempt$/m);
    });
  });

  test('500, 503, a dropped connection and a timeout in a row: retried, each event exactly once', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log, { requestTimeoutMs: 400 });
      fake.failNext(1, 500);
      fake.failNext(1, 503);
      fake.dropNext(1);
      fake.stallNext(1);
      sink.write(many(120));
      sink.write(many(80, 120));
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(0, 200));
      assert.deepEqual(
        fake.requests.map((r) => r.fault ?? String(r.status)),
        ['status 500', 'status 503', 'drop', 'stall', '200'],
      );
      assert.deepEqual(sink.stats(), { sent: 200, dropped: 0, failed: 0, queueDepth: 0 });
      // one line per kind of failure (the dropped connection may be retried at once, unseen, as a
      // kept-alive socket the server closed), one when they end; never the key
      const warnings = lines.filter((l) => l.includes('warning:'));
      assert.ok(warnings.length >= 3 && warnings.length <= 4, lines.join(''));
      assert.equal(new Set(warnings).size, warnings.length, lines.join(''));
      assert.match(warnings[0] ?? '', /500 Internal Server Error/);
      assert.match(warnings[1] ?? '', /503 Service Unavailable/);
      assert.match(warnings.at(-1) ?? '', /no answer within 0\.4 s; retrying with backoff$/m);
      assert.match(lines.at(-1) ?? '', /delivering again after \d+ failed attempts$/m);
      assert.equal(lines.length, warnings.length + 1, lines.join(''));
      assert.ok(lines.every((l) => !l.includes(KEY)));
    });
  });

  test('everything at once: 413 splits, 429, 500 and a dropped connection over 5000 events; each exactly once, in order', async () => {
    await withFake({ maxBytes: 40_000 }, async (fake) => {
      const sink = sinkFor(fake, captureLog().log);
      fake.failNext(1, 429, { 'Retry-After': '0' });
      fake.failNext(1, 500);
      fake.dropNext(1);
      for (let i = 0; i < 5000; i += 500) {
        sink.write(many(500, i).map((e) => ({ ...e, process: { ...proc, cmd: randomBytes(16).toString('hex') } })));
      }
      await sink.close();
      const statuses = new Set(fake.requests.map((r) => r.fault ?? String(r.status)));
      for (const s of ['status 429', 'status 500', 'drop', '413', '200']) assert.ok(statuses.has(s), `saw ${s}`);
      assert.deepEqual(connIds(fake.events), range(0, 5000));
      assert.deepEqual(fake.integrationErrors, []);
      assert.deepEqual(sink.stats(), { sent: 5000, dropped: 0, failed: 0, queueDepth: 0 });
      assert.equal(fake.maxConcurrent, 1);
    });
  });

  test('a retry keeps later events behind it (order across batches)', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { maxEventsPerPost: 10, flushMs: 60_000 });
      fake.failNext(2, 503);
      sink.write(many(35));
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(0, 35));
      for (const r of fake.requests) assert.ok(r.events <= 10);
      assert.equal(fake.maxConcurrent, 1);
    });
  });

  test('403 (wrong key): one log line naming the status and the key to check, without the key; no retry', async () => {
    await withFake({ key: 'the-right-key' }, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log, { maxEventsPerPost: 10, flushMs: 60_000 });
      sink.write(many(25));
      await sink.close();
      assert.deepEqual(fake.requests.map((r) => r.status), [403, 403, 403], 'each batch tried once');
      assert.deepEqual(fake.events, []);
      // failed counts requests (three batches), as convis_sink_failed_total says; the events are in dropped
      assert.deepEqual(sink.stats(), { sent: 0, dropped: 25, failed: 3, queueDepth: 0 });
      assert.equal(lines.length, 1, lines.join(''));
      assert.match(lines[0] ?? '', /^convis: warning: newrelic to http:\/\/127\.0\.0\.1:\d+\/v1\/accounts\/1234567\/events: 403 Forbidden.* \(check the insert key/);
      assert.ok(!lines[0]?.includes(KEY) && !lines[0]?.includes('s3cr3t'));
    });
  });

  test('Api-Key header when asked (license keys)', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { keyHeader: 'Api-Key' });
      sink.write(many(2));
      await sink.close();
      assert.equal(fake.requests[0]?.headers['api-key'], KEY);
      assert.equal(fake.requests[0]?.headers['x-insert-key'], undefined);
      assert.equal(fake.events.length, 2);
    });
  });
});

describe('NewRelicSink queue and close', () => {
  test('at the default chunk size the queue drops whole chunks of the oldest events, counted exactly', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      // 1000 events: ten chunks of 100; a request would take twenty, so nothing goes before close
      const sink = sinkFor(fake, log, { maxQueueEvents: 1000, flushMs: 60_000 });
      sink.write(many(1550));
      // fifteen chunks made, the five oldest dropped; 50 events wait in the open chunk
      assert.deepEqual(sink.stats(), { sent: 0, dropped: 500, failed: 0, queueDepth: 1050 });
      // at close the open chunk joins the full queue, and the oldest chunk makes room for it
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(600, 950));
      assert.deepEqual(sink.stats(), { sent: 950, dropped: 600, failed: 0, queueDepth: 0 });
      assert.equal(lines.filter((l) => l.includes('queue full (10 chunks); dropping the oldest') && l.includes('a chunk holds up to 100 events')).length, 1, lines.join(''));
    });
  });

  test('queue overflow drops the oldest and counts them; write never throws', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log, { maxQueueEvents: 10, maxEventsPerPost: 1000, flushMs: 60_000 });
      sink.write(many(7));
      sink.write(many(18, 7));
      assert.deepEqual(sink.stats(), { sent: 0, dropped: 15, failed: 0, queueDepth: 10 });
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(15, 10));
      assert.deepEqual(sink.stats(), { sent: 10, dropped: 15, failed: 0, queueDepth: 0 });
      assert.equal(lines.filter((l) => l.includes('queue full')).length, 1);
    });
  });

  test('close() sends what is queued and resolves after it arrived', async () => {
    await withFake({}, async (fake) => {
      const sink = sinkFor(fake, captureLog().log, { flushMs: 60_000 });
      sink.write(many(7));
      assert.equal(fake.requests.length, 0);
      await sink.close();
      assert.deepEqual(connIds(fake.events), range(0, 7));
      sink.write(many(2, 7));
      assert.equal(sink.stats().dropped, 2, 'events after close are counted, not sent');
      await sink.close();
    });
  });

  test('close() gives up at its deadline when the server keeps failing, and counts the loss', async () => {
    await withFake({}, async (fake) => {
      const { log, lines } = captureLog();
      const sink = sinkFor(fake, log, { closeTimeoutMs: 300, maxEventsPerPost: 10, flushMs: 60_000 });
      fake.failNext(1000, 503);
      sink.write(many(25));
      const t0 = Date.now();
      await sink.close();
      assert.ok(Date.now() - t0 < 2000, 'bounded');
      assert.deepEqual(sink.stats(), { sent: 0, dropped: 25, failed: 0, queueDepth: 0 });
      assert.ok(lines.some((l) => l.includes('gave up at exit after 0.3 s; 25 events not delivered')), lines.join(''));
    });
  });

  test('options are checked', () => {
    const base = { account: ACCOUNT, key: KEY, region: 'US' as const, endpoint: new URL('http://127.0.0.1:9/') };
    assert.throws(() => new NewRelicSink({ ...base, maxEventsPerPost: 0 }, { log: captureLog().log }), RangeError);
    assert.throws(() => new NewRelicSink({ ...base, endpoint: new URL('ftp://x/') }, { log: captureLog().log }), TypeError);
  });
});
