/**
 * HttpDelivery, the delivery every network sink shares, on its own: items
 * are numbers, a request is their JSON array, and a real node:http server
 * on 127.0.0.1 answers (test/helpers/recording-server.ts). The retry rules,
 * Retry-After, the backoff and its deadline across dropped items, the
 * bounded queue, splitting, close(), and log lines without credentials.
 * Timings are real and small (backoff steps of tens of ms).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { secrets } from '../../src/config/secrets.js';
import { endpointForLogs, Fifo, HttpDelivery, MAX_RETRY_AFTER_MS, parseRetryAfter, type DeliveryOptions } from '../../src/sinks/delivery.js';
import type { Logger } from '../../src/util/log.js';
import { RecordingServer, shrinkingGap, sleep, until, type Arrival, type Reply } from '../helpers/recording-server.js';

/** Every line, debug ones too, as the component wrote it (no scrubbing here: the component must mask on its own). */
function rawLog(): Logger & { lines: string[]; warnings(): string[] } {
  const lines: string[] = [];
  return {
    verbose: true,
    lines,
    info: (m) => lines.push(`info: ${m}`),
    warn: (m) => lines.push(`warn: ${m}`),
    debug: (m) => lines.push(`debug: ${m}`),
    warnings: () => lines.filter((l) => l.startsWith('warn: ')).map((l) => l.slice(6)),
  };
}

const ids = (a: Arrival | undefined): number[] => JSON.parse(a?.body.toString('utf8') ?? '[]') as number[];

async function withServer(fn: (server: RecordingServer) => Promise<void>): Promise<void> {
  const server = new RecordingServer();
  await server.start();
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

function delivery(server: RecordingServer, log: Logger, over: Partial<DeliveryOptions<number>> = {}): HttpDelivery<number> {
  return new HttpDelivery<number>({
    name: 'test sink',
    endpoint: server.url('/ingest'),
    log,
    encode: (items) => Buffer.from(JSON.stringify(items)),
    headers: () => ({ 'Content-Type': 'application/json' }),
    unitNoun: 'item',
    itemNoun: 'item',
    maxQueueItems: 100,
    initialBackoffMs: 10,
    maxBackoffMs: 40,
    requestTimeoutMs: 2000,
    closeTimeoutMs: 2000,
    ...over,
  });
}

describe('HttpDelivery: pure parts', () => {
  test('parseRetryAfter: delta-seconds, fractions, HTTP dates, the past, junk, the cap', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter(undefined, now), undefined);
    assert.equal(parseRetryAfter('3', now), 3000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('1.5', now), 1500);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:07 GMT', now), 7000);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:59:00 GMT', now), 0, 'a date in the past: at once');
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter('-5', now), undefined);
    assert.equal(parseRetryAfter('86400', now), MAX_RETRY_AFTER_MS);
  });

  test('endpointForLogs: no user, password, query or fragment', () => {
    assert.equal(endpointForLogs(new URL('https://u:pw-secret@mimir.example:8443/api/v1/push?token=q-secret#x')), 'https://mimir.example:8443/api/v1/push');
  });

  test('Fifo: take, putBack and drop keep the order, across compaction', () => {
    const q = new Fifo<number>();
    for (let i = 0; i < 10_000; i++) q.push(i);
    const a = q.take(6000);
    assert.equal(a[0], 0);
    q.putBack(a.slice(5000));
    assert.equal(q.length, 5000);
    assert.equal(q.peek(), 5000);
    assert.equal(q.drop(2), 2);
    const b = q.take(3);
    assert.deepEqual(b, [5002, 5003, 5004]);
    // taken everything (the array is reset), then put back: still in order
    const rest = q.take(q.length);
    assert.equal(q.length, 0);
    q.putBack(rest);
    q.push(-1);
    assert.deepEqual(q.take(2), [5005, 5006]);
    assert.equal(q.last(), -1);
    assert.equal(q.length, rest.length - 1);
  });

  test('options are checked', () => {
    const base = { name: 'x', endpoint: new URL('http://127.0.0.1:9/'), log: rawLog(), encode: () => Buffer.alloc(0), headers: () => ({}), unitNoun: 'u', itemNoun: 'i' };
    assert.throws(() => new HttpDelivery({ ...base, maxQueueItems: 0 }), RangeError);
    assert.throws(() => new HttpDelivery({ ...base, maxQueueItems: 1.5 }), RangeError);
    assert.throws(() => new HttpDelivery({ ...base, maxQueueItems: 1, initialBackoffMs: -1 }), RangeError);
    assert.throws(() => new HttpDelivery({ ...base, maxQueueItems: 1, endpoint: new URL('ftp://x/') }), TypeError);
  });
});

describe('HttpDelivery against a local server', { timeout: 60_000 }, () => {
  test('in order, one request at a time, at most maxItemsPerRequest each; flush() sends a partial one', async () => {
    await withServer(async (server) => {
      let active = 0;
      let most = 0;
      server.reply = async () => {
        most = Math.max(most, ++active);
        await sleep(5);
        active--;
        return { status: 200 };
      };
      const d = delivery(server, rawLog(), { maxItemsPerRequest: 3 });
      d.pushAll([1, 2]);
      await sleep(50);
      assert.equal(server.arrivals.length, 0, 'less than a full request waits');
      d.pushAll([3, 4, 5, 6, 7]);
      await until('two full requests', () => d.stats().sent === 6);
      assert.equal(d.stats().queueDepth, 1);
      d.flush();
      await until('the partial one', () => d.stats().sent === 7);
      assert.deepEqual(server.arrivals.map(ids), [[1, 2, 3], [4, 5, 6], [7]]);
      assert.equal(most, 1);
      assert.equal(server.arrivals[0]?.headers['content-length'], String(Buffer.byteLength('[1,2,3]')));
      await d.close();
      assert.deepEqual(d.stats(), { sent: 7, dropped: 0, failed: 0, queueDepth: 0, retries: 0 });
    });
  });

  // [status, retried?]; each answered once, then 200
  const rules: [number, boolean, Partial<DeliveryOptions<number>>?][] = [
    [200, false],
    [204, false],
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [429, true],
    [408, true, { retryStatuses: [408] }],
    [408, false],
    [301, false],
    [400, false],
    [401, false],
    [403, false],
    [404, false],
    [405, false],
    [409, false],
    [413, false],
  ];
  for (const [status, retried, extra] of rules) {
    const sent = status < 300;
    test(`${status}${extra ? ' (a sink that adds it)' : ''}: ${sent ? 'sent' : retried ? 'retried' : 'dropped as failed, not retried'}`, async () => {
      await withServer(async (server) => {
        server.reply = (_a, n) => (n === 1 ? { status, ...(status === 301 ? { headers: { Location: '/elsewhere' } } : {}) } : { status: 200 });
        const log = rawLog();
        const d = delivery(server, log, extra);
        d.push(1);
        await until('an outcome', () => d.stats().queueDepth === 0 && (d.stats().sent === 1 || d.stats().failed === 1));
        await sleep(100); // time for a retry, were there one
        if (sent) assert.deepEqual(d.stats(), { sent: 1, dropped: 0, failed: 0, queueDepth: 0, retries: 0 });
        else if (retried) assert.deepEqual(d.stats(), { sent: 1, dropped: 0, failed: 0, queueDepth: 0, retries: 1 });
        else assert.deepEqual(d.stats(), { sent: 0, dropped: 1, failed: 1, queueDepth: 0, retries: 0 });
        assert.equal(server.arrivals.length, retried ? 2 : 1);
        const warnings = log.warnings();
        assert.equal(warnings.length, sent ? 0 : 1, log.lines.join('\n'));
        if (!sent) assert.match(warnings[0] ?? '', new RegExp(`^test sink to ${server.url('/ingest').href}: ${status} `));
        if (!sent) assert.match(warnings[0] ?? '', retried ? /; retrying with backoff$/ : /; request dropped, not retried$/);
        await d.close();
      });
    });
  }

  test('network errors are retried: refused, reset, no answer', async () => {
    await withServer(async (server) => {
      server.reply = (_a, n) => (n === 1 ? 'reset' : n === 2 ? new Promise<Reply>(() => {}) : { status: 200 });
      const log = rawLog();
      const d = delivery(server, log, { requestTimeoutMs: 200 });
      d.push(1);
      await until('delivered after a reset and a timeout', () => d.stats().sent === 1);
      assert.equal(server.arrivals.length, 3);
      await server.stop();
      d.push(2);
      await until('refused twice', () => d.stats().retries >= 4);
      await server.start();
      await until('delivered after the endpoint came back', () => d.stats().sent === 2);
      await d.close();
      const w = log.warnings();
      assert.match(w[0] ?? '', /: (connection reset \(ECONNRESET\)|socket hang up \(ECONNRESET\)); retrying with backoff$/);
      assert.match(w[1] ?? '', /: no answer within 0\.2 s; retrying with backoff$/);
      assert.match(w[2] ?? '', /: connection refused \(ECONNREFUSED\); retrying with backoff$/);
      assert.equal(w.length, 3, log.lines.join('\n'));
    });
  });

  for (const form of ['delta-seconds', 'HTTP date'] as const) {
    test(`Retry-After as ${form} is waited for, however short the backoff`, async () => {
      await withServer(async (server) => {
        // an HTTP date has whole seconds: 2 s ahead is 1 to 2 s from now
        const retryAfter = () => (form === 'delta-seconds' ? '1' : new Date(Date.now() + 2000).toUTCString());
        server.reply = (_a, n) => (n === 1 ? { status: 503, headers: { 'Retry-After': retryAfter() } } : { status: 200 });
        const log = rawLog();
        const d = delivery(server, log);
        d.push(1);
        await until('delivered', () => d.stats().sent === 1, 5000);
        const [gap] = server.gaps();
        assert.ok((gap as number) >= 950 && (gap as number) < 2500, `retried after ${gap} ms`);
        assert.match(log.warnings()[0] ?? '', /503 Service Unavailable; retrying when Retry-After says$/);
        await d.close();
      });
    });
  }

  test('the gaps between attempts grow and never shrink, also once the step is at its longest', async () => {
    await withServer(async (server) => {
      server.reply = () => ({ status: 503 });
      const d = delivery(server, rawLog(), { initialBackoffMs: 40, maxBackoffMs: 320, closeTimeoutMs: 100 });
      d.push(1);
      // 20-40, 40-80, 80-160, 160-320, then at least the gap before: about 2.5 s for 11 attempts
      await until('11 attempts', () => server.arrivals.length >= 11, 8000);
      const gaps = server.gaps();
      const problem = shrinkingGap(gaps, 0.8);
      assert.equal(problem, undefined, problem);
      // at the longest step a wait is between half and all of it, and no shorter than the gap before
      assert.ok((gaps.at(-1) as number) >= 150, `the last gap is ${gaps.at(-1)} ms: at least half the longest step`);
      assert.ok((gaps.at(-1) as number) < 700, `the last gap is ${gaps.at(-1)} ms: about the longest step`);
      server.reply = () => ({ status: 200 });
      await d.close();
    });
  });

  test('the backoff deadline survives the item that earned it: the next item waits it out', async () => {
    await withServer(async (server) => {
      server.reply = (_a, n) => (n === 1 ? { status: 503 } : { status: 200 });
      const log = rawLog();
      // the first retry waits 0.5 to 1 s
      const d = delivery(server, log, { maxQueueItems: 1, initialBackoffMs: 1000, maxBackoffMs: 1000 });
      d.push(1);
      await until('the 503 read', () => d.stats().retries === 1);
      // 1 waits at the head of the queue; 2 pushes it out, 3 pushes out 2
      d.push(2);
      d.push(3);
      assert.deepEqual(d.stats(), { sent: 0, dropped: 2, failed: 0, queueDepth: 1, retries: 1 });
      await until('delivered', () => d.stats().sent === 1, 3000);
      assert.deepEqual(server.arrivals.map(ids), [[1], [3]]);
      const [gap] = server.gaps();
      assert.ok((gap as number) >= 480, `the next attempt came ${gap} ms after the 503, before the deadline`);
      assert.equal(log.warnings().filter((l) => l.includes('queue full (1 item)')).length, 1, log.lines.join('\n'));
      await d.close();
    });
  });

  test('a long Retry-After is not cut short when the queue drops the item that got it', async () => {
    await withServer(async (server) => {
      server.reply = (_a, n) => (n === 1 ? { status: 429, headers: { 'Retry-After': '3' } } : { status: 200 });
      const d = delivery(server, rawLog(), { maxQueueItems: 2 });
      d.push(1);
      await until('the 429 read', () => d.stats().retries === 1);
      for (let i = 2; i <= 6; i++) {
        d.push(i);
        await sleep(100);
      }
      await until('delivered', () => d.stats().queueDepth === 0, 5000);
      assert.deepEqual(server.arrivals.map(ids), [[1], [5], [6]]);
      const [gap] = server.gaps();
      assert.ok((gap as number) >= 2950, `the next attempt came ${gap} ms after Retry-After: 3`);
      assert.deepEqual(d.stats(), { sent: 2, dropped: 4, failed: 0, queueDepth: 0, retries: 1 });
      await d.close();
    });
  });

  test('the backoff starts over after a success and after a request that is not retried', async () => {
    await withServer(async (server) => {
      const answers = [503, 503, 503, 503, 503, 200, 503, 200, 503, 503, 503, 503, 400, 503, 200];
      server.reply = (_a, n) => ({ status: answers[n - 1] ?? 200 });
      const d = delivery(server, rawLog(), { initialBackoffMs: 25, maxBackoffMs: 5000 });
      d.push(1); // 5 × 503 (steps 25 .. 400), then 200
      await until('1 sent', () => d.stats().sent === 1, 5000);
      d.push(2); // 503 then 200: the first step again
      await until('2 sent', () => d.stats().sent === 2, 5000);
      d.push(3); // 4 × 503, then 400: refused
      await until('3 refused', () => d.stats().failed === 1, 5000);
      d.push(4); // 503 then 200: the first step again
      await until('4 sent', () => d.stats().sent === 3, 5000);
      // without a reset, the 6th step would wait 400 ms or more
      const gaps = server.gaps();
      assert.ok((gaps[4] as number) >= 190, `the 5th retry waited ${gaps[4]} ms (step 400)`);
      assert.ok((gaps[6] as number) < 150, `after a success the retry waited ${gaps[6]} ms (step 25)`);
      assert.ok((gaps[13] as number) < 150, `after a refused request the retry waited ${gaps[13]} ms (step 25)`);
      await d.close();
    });
  });

  test('queue full: the oldest waiting items go and are counted; those in flight stay; mayDrop can keep a group whole', async () => {
    await withServer(async (server) => {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      server.reply = async (_a, n) => {
        if (n === 1) await held;
        return { status: 200 };
      };
      const log = rawLog();
      // items 1x are one group, 2x another: a group is kept whole, as remote write keeps its latest snapshot
      const d = delivery(server, log, { maxQueueItems: 2, mayDrop: (oldest, newest) => Math.floor(oldest / 10) < Math.floor(newest / 10) });
      d.push(10); // in flight, held
      await until('in flight', () => server.arrivals.length === 1);
      d.pushAll([11, 12, 13]); // over the bound, but one group: kept
      assert.deepEqual(d.stats(), { sent: 0, dropped: 0, failed: 0, queueDepth: 4, retries: 0 });
      d.push(20); // down to the bound: 11 and 12 of the older group go; 10, in flight, stays
      assert.deepEqual(d.stats(), { sent: 0, dropped: 2, failed: 0, queueDepth: 3, retries: 0 });
      release();
      await until('drained', () => d.stats().queueDepth === 0);
      assert.deepEqual(server.arrivals.map(ids), [[10], [13], [20]]);
      assert.equal(log.warnings().filter((l) => l.includes('queue full (2 items); dropping the oldest')).length, 1);
      await d.close();
    });
  });

  test('too large: halved on 413 and over maxBodyBytes, in order; one item alone is dropped as failed', async () => {
    await withServer(async (server) => {
      // the endpoint takes at most 3 items, and item 9999 never; 14 items make 72 bytes, 7 make 36
      server.reply = (a) => {
        const got = ids(a);
        return got.length > 3 || got.includes(9999) ? { status: 413 } : { status: 200 };
      };
      const log = rawLog();
      const d = delivery(server, log, { maxItemsPerRequest: 16, maxBodyBytes: 40 });
      const items = [...Array.from({ length: 12 }, (_, i) => 1001 + i), 9999, 1013];
      d.pushAll(items);
      d.flush();
      await until('all answered', () => d.stats().queueDepth === 0);
      const accepted = server.arrivals.filter((a) => ids(a).length <= 3 && !ids(a).includes(9999)).flatMap(ids);
      assert.deepEqual(accepted, items.filter((i) => i !== 9999));
      assert.equal(ids(server.arrivals[0]).length, 7, 'halved before sending: 14 items were over maxBodyBytes');
      for (const a of server.arrivals) assert.ok(a.body.length <= 40, `${a.body.length} bytes sent`);
      assert.deepEqual(d.stats(), { sent: 13, dropped: 1, failed: 1, queueDepth: 0, retries: 0 });
      assert.deepEqual(log.warnings().length, 1, log.lines.join('\n'));
      assert.match(log.warnings()[0] ?? '', /413 Payload Too Large \(request too large for the endpoint\); request dropped, not retried$/);
      await d.close();
    });
  });

  test('release(): once for every item, whether sent, dropped by overflow, refused, given up at close or pushed after close', async () => {
    await withServer(async (server) => {
      let letGo!: () => void;
      const held = new Promise<void>((r) => (letGo = r));
      server.reply = async (a, n) => {
        if (n === 1) await held;
        return ids(a).includes(400) ? { status: 400 } : { status: 200 };
      };
      const released: number[] = [];
      const d = delivery(server, rawLog(), { maxQueueItems: 2, release: (item) => released.push(item) });
      d.push(1); // in flight, held
      await until('in flight', () => server.arrivals.length === 1);
      d.pushAll([2, 3, 4]); // 2 goes
      d.push(400); // 3 goes
      assert.deepEqual(released, [2, 3]);
      letGo();
      await until('drained', () => d.stats().queueDepth === 0);
      await d.close();
      d.push(5);
      assert.deepEqual(d.stats(), { sent: 2, dropped: 4, failed: 1, queueDepth: 0, retries: 0 });
      assert.deepEqual([...released].sort((x, y) => x - y), [1, 2, 3, 4, 5, 400]);

      server.reply = () => ({ status: 503 });
      const gone: number[] = [];
      const b = delivery(server, rawLog(), { closeTimeoutMs: 200, release: (item) => gone.push(item) });
      b.pushAll([6, 7]);
      await b.close();
      assert.deepEqual(gone, [6, 7]);
      assert.equal(b.stats().dropped, 2);
    });
  });

  test('splitItem(): one item too large alone is cut by the sink, its parts sent in order; without it the item is refused', async () => {
    await withServer(async (server) => {
      // 1200 stands for the pair 12, 13 (two units); the endpoint refuses any value of 1000 or more as too large
      server.reply = (a) => (ids(a).some((x) => x >= 1000) ? { status: 413 } : { status: 200 });
      const released: number[] = [];
      const opts = {
        maxItemsPerRequest: 3,
        units: (x: number) => (x >= 1000 ? 2 : 1),
        release: (x: number) => released.push(x),
        splitItem: (x: number) => (x >= 1000 ? [Math.floor(x / 100), Math.floor(x / 100) + 1] : undefined),
      };
      const d = delivery(server, rawLog(), opts);
      d.pushAll([11, 1200, 14]);
      await until('all answered', () => d.stats().queueDepth === 0);
      const accepted = server.arrivals.filter((a) => !ids(a).some((x) => x >= 1000)).flatMap(ids);
      assert.deepEqual(accepted, [11, 12, 13, 14]);
      assert.deepEqual(d.stats(), { sent: 4, dropped: 0, failed: 0, queueDepth: 0, retries: 0 });
      assert.deepEqual([...released].sort((x, y) => x - y), [11, 12, 13, 14, 1200], 'the cut item once, and its parts');
      await d.close();

      // over maxBodyBytes before sending: the same cut, without asking the endpoint
      const arrivedBefore = server.arrivals.length;
      const e = delivery(server, rawLog(), { ...opts, maxBodyBytes: 5 });
      e.push(1200);
      e.flush();
      await until('answered', () => e.stats().queueDepth === 0);
      assert.deepEqual(server.arrivals.slice(arrivedBefore).map(ids), [[12], [13]]);
      await e.close();

      const log = rawLog();
      const f = delivery(server, log, { units: opts.units });
      f.push(1200);
      f.flush();
      await until('answered', () => f.stats().queueDepth === 0);
      assert.deepEqual(f.stats(), { sent: 0, dropped: 2, failed: 1, queueDepth: 0, retries: 0 });
      await f.close();
    });
  });

  test('close(): tries at once during a backoff, gives up at its deadline, counts the rest; later items count as dropped', async () => {
    await withServer(async (server) => {
      server.reply = (_a, n) => (n === 1 ? { status: 503 } : { status: 200 });
      const a = delivery(server, rawLog(), { initialBackoffMs: 60_000, maxBackoffMs: 60_000 });
      a.push(1);
      await until('the 503 read', () => a.stats().retries === 1);
      const t0 = Date.now();
      await a.close();
      assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`);
      assert.equal(a.stats().sent, 1);
      a.push(2);
      assert.equal(a.stats().dropped, 1);

      server.reply = () => ({ status: 503 });
      const log = rawLog();
      const b = delivery(server, log, { closeTimeoutMs: 300 });
      b.pushAll([1, 2, 3]);
      const t1 = Date.now();
      await b.close();
      const took = Date.now() - t1;
      assert.ok(took >= 280 && took < 1500, `close took ${took} ms`);
      assert.deepEqual(b.stats(), { sent: 0, dropped: 3, failed: 0, queueDepth: 0, retries: b.stats().retries });
      assert.match(log.warnings().at(-1) ?? '', /: gave up at exit after 0\.3 s; 3 items not delivered$/);
    });
  });

  test('logs: once per kind of failure, once at recovery, and never a credential', async () => {
    await withServer(async (server) => {
      const token = 'bearer-tok-31c9e';
      const sinkSecret = 'sink-secret-a7d0';
      const known = 'registry-secret-5b6e';
      secrets.add(known);
      // a reset first, on a new connection (on a kept-alive one it would be retried at once, unseen)
      const answers: Reply[] = [
        'reset',
        { status: 503, body: 'x' },
        { status: 500, body: 'y' },
        { status: 503, body: 'x' },
        { status: 500, body: 'y' },
        { status: 200 },
        { status: 401, body: '' },
      ];
      // every answer echoes what it was sent: the Authorization header, the sink's header, and a known secret
      server.reply = (a, n) => {
        const r = answers[n - 1] ?? { status: 200 };
        if (r === 'reset') return r;
        return { ...r, body: `${r.body} ${a.headers.authorization} ${a.headers['x-tenant']} ${known}` };
      };
      const log = rawLog();
      const d = delivery(server, log, {
        endpoint: server.url('/ingest?api_key=query-secret-88f1'),
        headers: () => ({ Authorization: `Bearer ${token}`, 'X-Tenant': sinkSecret }),
        secrets: [sinkSecret],
      });
      d.push(1);
      await until('sent', () => d.stats().sent === 1);
      d.push(2);
      await until('refused', () => d.stats().failed === 1);
      await d.close();
      const w = log.warnings();
      assert.equal(w.length, 4, log.lines.join('\n'));
      assert.match(w[0] ?? '', /^test sink to http:\/\/127\.0\.0\.1:\d+\/ingest: .*ECONNRESET\); retrying with backoff$/);
      assert.match(w[1] ?? '', /: 503 Service Unavailable: x \*\*\* \*\*\* \*\*\*; retrying with backoff$/);
      assert.match(w[2] ?? '', /: 500 Internal Server Error: y \*\*\* \*\*\* \*\*\*; retrying with backoff$/);
      assert.match(w[3] ?? '', /: 401 Unauthorized: \*\*\* \*\*\* \*\*\*; request dropped, not retried$/);
      assert.ok(log.lines.some((l) => /^info: .*: delivering again after 5 failed attempts$/.test(l)), log.lines.join('\n'));
      for (const l of log.lines) {
        for (const s of [token, sinkSecret, known, 'query-secret-88f1', 'api_key']) assert.ok(!l.includes(s), `${s} in "${l}"`);
      }
    });
  });

  test('headers the sink cannot make (say, an unreadable token file) are a failure that is retried', async () => {
    await withServer(async (server) => {
      let broken = 3;
      const log = rawLog();
      const d = delivery(server, log, {
        headers: () => {
          if (broken-- > 0) throw new Error('cannot read token file /run/token (ENOENT)');
          return {};
        },
      });
      d.push(1);
      await until('sent', () => d.stats().sent === 1);
      assert.equal(server.arrivals.length, 1);
      assert.deepEqual(log.warnings(), [`test sink to ${server.url('/ingest').href}: cannot read token file /run/token (ENOENT); retrying with backoff`]);
      await d.close();
    });
  });
});
