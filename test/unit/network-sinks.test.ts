/**
 * The delivery rules, checked through each network sink (remote write and
 * New Relic), one table of cases over both: retried on 500, 503, 429 and
 * network errors, with Retry-After honoured in both its forms; not retried
 * on 400, 401, 403, 404, 413; a full queue drops the oldest and counts
 * them; during an outage long enough to overflow the queue the gaps between
 * attempts never shrink below 0.8 times the one before (what the
 * remote-write compliance suite asks of senders); a long Retry-After is not
 * cut short when the queue drops the request that got it; and no
 * credential in any log line, with an endpoint that echoes every header it
 * was sent.
 *
 * Each sink is fed one request's worth at a time (remote write: a
 * snapshot; New Relic: one event, with one event per request), against a
 * node:http server on 127.0.0.1 that records when each request arrived.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';

import type { MetricFamily } from '../../src/aggregate/metrics.js';
import { NewRelicSink } from '../../src/sinks/newrelic.js';
import { PrometheusSink } from '../../src/sinks/prometheus/sink.js';
import type { SinkStats } from '../../src/sinks/sink.js';
import type { Logger } from '../../src/util/log.js';
import { sampleEvent } from '../helpers/events.js';
import { decodeWriteRequest } from '../helpers/prometheus.js';
import { RecordingServer, shrinkingGap, sleep, until, type Arrival, type Reply } from '../helpers/recording-server.js';

const PASSWORD = 'rw-password-9f3c1a';
const TENANT = 'tenant-token-77ab02';
const KEY = 'NRII-unit-insert-key-5e2d90';
const ACCOUNT = '1234567';

interface Tuning {
  maxQueue: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  closeTimeoutMs?: number;
}

interface UnderTest {
  /** queues one request's worth */
  feed(): void;
  stats(): SinkStats;
  close(): Promise<void>;
}

interface Harness {
  name: string;
  path: string;
  /** the answer of a healthy endpoint */
  ok: Reply;
  /** what one request's worth counts for in sent and dropped */
  units: number;
  /** none of these may appear in a log line */
  secrets: string[];
  make(url: URL, log: Logger, t: Tuning): UnderTest;
  /** ids of what a request carried, in the order fed (1, 2, ...) */
  ids(a: Arrival): number[];
}

const remoteWrite: Harness = {
  name: 'remote write',
  path: '/api/v1/write',
  ok: { status: 204 },
  units: 2,
  secrets: [PASSWORD, TENANT, Buffer.from(`agent:${PASSWORD}`).toString('base64')],
  make(url, log, t) {
    let snapshot = 0;
    // two counters whose value is the snapshot's number, so a request says which snapshot it is
    const collect = (): MetricFamily[] => {
      snapshot++;
      return [{ name: 'convis_test_total', help: '', type: 'counter', samples: ['a', 'b'].map((side) => ({ labels: { side }, value: snapshot })) }];
    };
    const sink = new PrometheusSink(
      { endpoint: url, username: 'agent', password: PASSWORD, headers: { 'X-Scope-OrgID': TENANT }, intervalMs: 3_600_000, maxQueue: t.maxQueue },
      { source: { collect }, log, initialBackoffMs: t.initialBackoffMs, maxBackoffMs: t.maxBackoffMs, requestTimeoutMs: 1000, closeTimeoutMs: t.closeTimeoutMs ?? 1000 },
    );
    return { feed: () => void sink.snapshotNow(), stats: () => sink.stats(), close: () => sink.close() };
  },
  ids: (a) => decodeWriteRequest(a.body).filter((s) => s.labels.some((l) => l.value === 'a')).map((s) => s.samples[0]?.value ?? NaN),
};

const newRelic: Harness = {
  name: 'New Relic',
  path: `/v1/accounts/${ACCOUNT}/events`,
  ok: { status: 200, headers: { 'Content-Type': 'application/json' }, body: '{"success":true}' },
  units: 1,
  secrets: [KEY],
  make(url, log, t) {
    let connId = 0;
    const sink = new NewRelicSink(
      {
        account: ACCOUNT,
        key: KEY,
        region: 'US',
        endpoint: url,
        // one event per request, as remote write sends one snapshot per request here
        maxEventsPerPost: 1,
        maxQueueEvents: t.maxQueue,
        flushMs: 3_600_000,
        backoffMs: t.initialBackoffMs,
        maxBackoffMs: t.maxBackoffMs,
        requestTimeoutMs: 1000,
        closeTimeoutMs: t.closeTimeoutMs ?? 1000,
      },
      { log },
    );
    return { feed: () => sink.write([sampleEvent('connect', { connId: ++connId })]), stats: () => sink.stats(), close: () => sink.close() };
  },
  ids: (a) => (JSON.parse(gunzipSync(a.body).toString('utf8')) as Record<string, unknown>[]).map((e) => e['conn.id'] as number),
};

/** Every line as the sink wrote it, debug ones too; not scrubbed here, so the masking under test is the sinks' own. */
function rawLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    verbose: true,
    lines,
    info: (m) => lines.push(`info: ${m}`),
    warn: (m) => lines.push(`warn: ${m}`),
    debug: (m) => lines.push(`debug: ${m}`),
  };
}

/** An error answer that quotes every credential the request carried, as a careless proxy might. */
function echo(a: Arrival, status: number, headers: Record<string, string> = {}): Reply {
  const auth = a.headers.authorization ?? '';
  const basic = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString('utf8') : '';
  const body = `refused ${auth} ${basic} ${a.headers['x-scope-orgid'] ?? ''} ${a.headers['x-insert-key'] ?? ''}`;
  return { status, headers, body };
}

/**
 * Runs one case against a fresh server with a fresh sink, closes both, and
 * checks that no log line of the whole case holds a credential.
 */
async function scenario(
  h: Harness,
  t: Tuning,
  fn: (c: { server: RecordingServer; sink: UnderTest; log: ReturnType<typeof rawLog> }) => Promise<void>,
): Promise<void> {
  const server = new RecordingServer();
  server.reply = () => h.ok;
  await server.start();
  const log = rawLog();
  const sink = h.make(server.url(h.path), log, t);
  try {
    await fn({ server, sink, log });
  } finally {
    server.reply = () => h.ok;
    if (!server.running) await server.start();
    await sink.close();
    await server.stop();
  }
  for (const line of log.lines) {
    for (const s of h.secrets) assert.ok(!line.includes(s), `${h.name}: a credential in the log line "${line}"`);
  }
}

const FAST: Tuning = { maxQueue: 10, initialBackoffMs: 20, maxBackoffMs: 100 };

for (const h of [remoteWrite, newRelic]) {
  describe(`${h.name}: delivery`, { timeout: 60_000 }, () => {
    for (const status of [500, 503, 429]) {
      test(`${status} is retried, and the request delivered once`, async () => {
        await scenario(h, FAST, async ({ server, sink, log }) => {
          server.reply = (a, n) => (n === 1 ? echo(a, status) : h.ok);
          sink.feed();
          await until('delivered', () => sink.stats().sent === h.units);
          assert.deepEqual(server.arrivals.map(h.ids), [[1], [1]]);
          assert.deepEqual(sink.stats(), { sent: h.units, dropped: 0, failed: 0, queueDepth: 0 });
          assert.equal(log.lines.filter((l) => l.startsWith('warn: ') && l.includes(` ${status} `)).length, 1, log.lines.join('\n'));
        });
      });
    }

    for (const [status, form] of [
      [503, 'delta-seconds'],
      [429, 'HTTP date'],
    ] as const) {
      test(`${status} with Retry-After as ${form}: the retry waits as long as it says`, async () => {
        await scenario(h, FAST, async ({ server, sink, log }) => {
          // an HTTP date has whole seconds: 2 s ahead is 1 to 2 s from now
          const retryAfter = () => (form === 'delta-seconds' ? '1' : new Date(Date.now() + 2000).toUTCString());
          server.reply = (a, n) => (n === 1 ? echo(a, status, { 'Retry-After': retryAfter() }) : h.ok);
          sink.feed();
          await until('delivered', () => sink.stats().sent === h.units, 5000);
          const [gap] = server.gaps();
          // the backoff alone would retry within 20 ms
          assert.ok((gap as number) >= 950 && (gap as number) < 2500, `retried after ${gap} ms`);
          assert.ok(log.lines.some((l) => l.endsWith('; retrying when Retry-After says')), log.lines.join('\n'));
        });
      });
    }

    test('a connection reset is retried', async () => {
      await scenario(h, FAST, async ({ server, sink, log }) => {
        server.reply = (_a, n) => (n === 1 ? 'reset' : h.ok);
        sink.feed();
        await until('delivered', () => sink.stats().sent === h.units);
        assert.deepEqual(server.arrivals.map(h.ids), [[1], [1]]);
        assert.ok(log.lines.some((l) => l.includes('(ECONNRESET); retrying with backoff')), log.lines.join('\n'));
      });
    });

    test('a refused connection is retried until the endpoint is back', async () => {
      await scenario(h, FAST, async ({ server, sink, log }) => {
        await server.stop();
        sink.feed();
        await until('refused a few times', () => log.lines.filter((l) => l.includes('next attempt in')).length >= 3);
        assert.deepEqual(sink.stats(), { sent: 0, dropped: 0, failed: 0, queueDepth: 1 });
        await server.start();
        await until('delivered', () => sink.stats().sent === h.units);
        assert.ok(log.lines.some((l) => l.includes('connection refused (ECONNREFUSED); retrying with backoff')), log.lines.join('\n'));
        assert.ok(log.lines.some((l) => /delivering again after \d+ failed attempts$/.test(l)), log.lines.join('\n'));
      });
    });

    for (const status of [400, 401, 403, 404, 413]) {
      test(`${status} is not retried: the request is dropped and counted as failed`, async () => {
        await scenario(h, FAST, async ({ server, sink, log }) => {
          server.reply = (a) => echo(a, status);
          sink.feed();
          await until('refused', () => sink.stats().failed === 1);
          await sleep(250); // several backoff steps: time for retries, were there any
          assert.equal(server.arrivals.length, 1);
          assert.deepEqual(sink.stats(), { sent: 0, dropped: h.units, failed: 1, queueDepth: 0 });
          const warnings = log.lines.filter((l) => l.startsWith('warn: '));
          assert.equal(warnings.length, 1, log.lines.join('\n'));
          assert.match(warnings[0] ?? '', new RegExp(` ${status} .*; request dropped, not retried$`));
        });
      });
    }

    test('a full queue drops the oldest waiting request and counts it', async () => {
      await scenario(h, { ...FAST, maxQueue: 2 }, async ({ server, sink, log }) => {
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        server.reply = async (_a, n) => {
          if (n === 1) await held;
          return h.ok;
        };
        sink.feed(); // 1: in flight, held by the server
        await until('the first request', () => server.arrivals.length === 1);
        sink.feed(); // 2, 3 wait; 4 pushes out 2
        sink.feed();
        sink.feed();
        assert.deepEqual(sink.stats(), { sent: 0, dropped: h.units, failed: 0, queueDepth: 3 });
        release();
        await until('drained', () => sink.stats().queueDepth === 0);
        assert.deepEqual(server.arrivals.map(h.ids), [[1], [3], [4]]);
        assert.deepEqual(sink.stats(), { sent: 3 * h.units, dropped: h.units, failed: 0, queueDepth: 0 });
        assert.equal(log.lines.filter((l) => l.includes('queue full')).length, 1, log.lines.join('\n'));
      });
    });

    test('an outage that overflows the queue: the gaps between attempts never shrink', async () => {
      await scenario(h, { maxQueue: 2, initialBackoffMs: 50, maxBackoffMs: 800, closeTimeoutMs: 2000 }, async ({ server, sink, log }) => {
        server.reply = (a) => echo(a, 503);
        // a new request every 100 ms, as a short remote-write interval would make
        sink.feed();
        const feeding = setInterval(() => sink.feed(), 100);
        try {
          // 25-50, 50-100, 100-200, 200-400, 400-800 ms, then 800 ms or the gap before: 9 attempts in about 3.5 s
          await until('9 attempts', () => server.arrivals.length >= 9, 10_000);
        } finally {
          clearInterval(feeding);
        }
        const gaps = server.gaps();
        const problem = shrinkingGap(gaps, 0.8);
        assert.equal(problem, undefined, problem);
        const s = sink.stats();
        assert.ok(s.dropped >= 20 * h.units, `the queue overflowed: ${JSON.stringify(s)}`);
        // the sink did not fall back to posting once per new request (every 100 ms): the steps reached the longest one
        assert.ok((gaps.at(-1) as number) >= 350, `the last gap was ${gaps.at(-1)} ms (gaps: ${gaps.map(Math.round).join(', ')})`);
        server.reply = () => h.ok;
        await until('delivering again', () => sink.stats().queueDepth === 0, 5000);
        assert.equal(sink.stats().failed, 0);
        assert.equal(log.lines.filter((l) => l.includes('queue full')).length, 1, log.lines.join('\n'));
      });
    });

    test('a long Retry-After is not cut short when the full queue drops the request that got it', async () => {
      await scenario(h, { ...FAST, maxQueue: 2 }, async ({ server, sink, log }) => {
        server.reply = (a, n) => (n === 1 ? echo(a, 503, { 'Retry-After': '3' }) : h.ok);
        sink.feed(); // 1: 503, Retry-After 3 s, back at the head of the queue
        await until('the 503 read', () => log.lines.some((l) => l.endsWith('; retrying when Retry-After says')));
        for (let i = 2; i <= 5; i++) {
          sink.feed(); // 2 waits; 3 pushes out 1; 4 pushes out 2; 5 pushes out 3
          await sleep(50);
        }
        assert.deepEqual(sink.stats(), { sent: 0, dropped: 3 * h.units, failed: 0, queueDepth: 2 });
        await until('delivered', () => sink.stats().queueDepth === 0, 6000);
        assert.deepEqual(server.arrivals.map(h.ids), [[1], [4], [5]]);
        const [gap] = server.gaps();
        assert.ok((gap as number) >= 2950, `the next attempt came ${gap} ms after Retry-After: 3`);
      });
    });
  });
}
