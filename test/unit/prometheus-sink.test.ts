/**
 * The Prometheus remote-write sink: the wire format (checked with a decoder
 * written separately from the encoder, and by a real Prometheus that stores
 * and answers it back), the sink spec's options, and the delivery policy
 * (retries, backoff, Retry-After, auth, headers, the bounded queue, close)
 * against node:http test servers on 127.0.0.1.
 *
 * Needs no root. The real-Prometheus part skips loudly when Debian's
 * `prometheus` package is not installed.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import snappy from 'snappyjs';

import type { MetricFamily, MetricsSource } from '../../src/aggregate/metrics.js';
import { ConfigError } from '../../src/config/errors.js';
import type { Logger } from '../../src/util/log.js';
import { encodeWriteRequest, encodeWriteRequestProto, splitFamilies } from '../../src/sinks/prometheus/remote-write.js';
import { parsePrometheusOptions, PrometheusSink, type PrometheusSinkDeps, type PrometheusSinkOptions } from '../../src/sinks/prometheus/sink.js';
import { repoRoot } from '../helpers/paths.js';
import { decodeWriteRequest, prometheusSkipLoudly, startPrometheus, type Prometheus, type VectorSample } from '../helpers/prometheus.js';
import { tempDir } from '../helpers/tmp.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls until check() holds; fails with `what` after timeoutMs. */
async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface LogLine {
  level: 'info' | 'warn' | 'debug';
  msg: string;
}

function captureLog(): Logger & { lines: LogLine[]; text(): string } {
  const lines: LogLine[] = [];
  return {
    verbose: true,
    lines,
    info: (msg) => lines.push({ level: 'info', msg }),
    warn: (msg) => lines.push({ level: 'warn', msg }),
    debug: (msg) => lines.push({ level: 'debug', msg }),
    text: () => lines.map((l) => `${l.level}: ${l.msg}`).join('\n'),
  };
}

/** Non-debug lines: what a user sees without -v. */
const visible = (log: { lines: LogLine[] }) => log.lines.filter((l) => l.level !== 'debug');

/** A source of two counters whose values are `base` and 2*base, base going up by one per collect. */
function countingSource(): MetricsSource & { collects: number } {
  const s = {
    collects: 0,
    collect(): MetricFamily[] {
      s.collects++;
      return [
        {
          name: 'convis_test_total',
          help: 'test counter',
          type: 'counter',
          samples: [
            { labels: { side: 'a' }, value: s.collects },
            { labels: { side: 'b' }, value: 2 * s.collects },
          ],
        },
      ];
    },
  };
  return s;
}

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
  at: number;
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

/**
 * A remote-write endpoint on 127.0.0.1: records every request and answers
 * with what `answer` says (204 by default); answer may return a promise to
 * hold the request. stop() and start() again keep the port.
 */
class TestServer {
  readonly received: Received[] = [];
  answer: (r: Received, n: number) => Answer | Promise<Answer> = () => ({ status: 204 });
  port = 0;
  private server: Server | undefined;

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = { headers: req.headers, body: Buffer.concat(chunks), at: Date.now() };
        this.received.push(r);
        void Promise.resolve(this.answer(r, this.received.length)).then((a) => {
          if (res.destroyed) return;
          res.writeHead(a.status, a.headers).end(a.body);
        });
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const a = server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((r) => {
      s.close(() => r());
      s.closeAllConnections();
    });
  }

  get url(): URL {
    return new URL(`http://127.0.0.1:${this.port}/api/v1/write`);
  }

  /** Series of request i as "name{labels} value" strings. */
  series(i: number): string[] {
    const r = this.received[i];
    assert.ok(r, `request ${i} arrived`);
    return decodeWriteRequest(r.body).map(
      (s) => `${s.labels.map((l) => `${l.name}=${l.value}`).join(',')} ${s.samples.map((x) => x.value).join(',')}`,
    );
  }

  /** The value of side "a" in request i (the snapshot number with countingSource). */
  snapshotOf(i: number): number {
    const r = this.received[i] as Received;
    const s = decodeWriteRequest(r.body).find((t) => t.labels.some((l) => l.name === 'side' && l.value === 'a'));
    return s?.samples[0]?.value ?? NaN;
  }
}

function sinkOptions(server: TestServer, over: Partial<PrometheusSinkOptions> = {}): PrometheusSinkOptions {
  return { endpoint: server.url, headers: {}, intervalMs: 3_600_000, ...over };
}

/** Fast retries for tests: 20 ms doubling to 200 ms. */
const FAST: Partial<PrometheusSinkDeps> = { initialBackoffMs: 20, maxBackoffMs: 200 };

describe('remote write encoding', () => {
  const families: MetricFamily[] = [
    {
      name: 'convis_tcp_bytes_sent_total',
      help: 'bytes',
      type: 'counter',
      samples: [
        { labels: { pod: 'web-0', namespace: 'shop', Zone: 'eu', container: '' }, value: 1234 },
        { labels: {}, value: 0 },
      ],
    },
    { name: 'convis_flows', help: 'flows', type: 'gauge', samples: [{ labels: { node: 'n1' }, value: 2 ** 53 - 1 }] },
    { name: 'convis_empty', help: 'no samples', type: 'gauge', samples: [] },
  ];

  test('one series per sample: __name__ and the labels sorted by name, empty ones left out, one sample each', () => {
    const series = decodeWriteRequest(encodeWriteRequest(families, 1_700_000_000_123));
    assert.deepEqual(series, [
      {
        // byte order, as Prometheus compares: upper case sorts before "_", "_" before lower case
        labels: [
          { name: 'Zone', value: 'eu' },
          { name: '__name__', value: 'convis_tcp_bytes_sent_total' },
          { name: 'namespace', value: 'shop' },
          { name: 'pod', value: 'web-0' },
        ],
        samples: [{ value: 1234, timestamp: 1_700_000_000_123 }],
      },
      { labels: [{ name: '__name__', value: 'convis_tcp_bytes_sent_total' }], samples: [{ value: 0, timestamp: 1_700_000_000_123 }] },
      {
        labels: [
          { name: '__name__', value: 'convis_flows' },
          { name: 'node', value: 'n1' },
        ],
        samples: [{ value: 2 ** 53 - 1, timestamp: 1_700_000_000_123 }],
      },
    ]);
  });

  test('the body is Snappy block format (not framed) of the protobuf', () => {
    const body = encodeWriteRequest(families, 1);
    const proto = encodeWriteRequestProto(families, 1);
    // a framed stream would start with the stream identifier chunk ff 06 00 00 "sNaPpY"
    assert.notEqual(body[0], 0xff);
    // block format starts with the uncompressed length as a varint
    let len = 0;
    for (let i = 0, shift = 0; ; i++, shift += 7) {
      const b = body[i] as number;
      len |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    assert.equal(len, proto.length);
    assert.deepEqual(new Uint8Array(snappy.uncompress(body)), new Uint8Array(proto));
  });

  test('an empty snapshot encodes to an empty WriteRequest', () => {
    assert.deepEqual(decodeWriteRequest(encodeWriteRequest([], 5)), []);
  });

  test('splitFamilies: batches of at most N series, in order, large families cut, empty ones left out', () => {
    const fam = (name: string, n: number): MetricFamily => ({
      name,
      help: `help ${name}`,
      type: 'counter',
      samples: Array.from({ length: n }, (_, i) => ({ labels: { i: String(i) }, value: i })),
    });
    const input = [fam('a', 3), fam('b', 0), fam('c', 5), fam('d', 1), fam('e', 2)];
    const batches = splitFamilies(input, 4);
    assert.deepEqual(
      batches.map((b) => b.map((f) => `${f.name}:${f.samples.length}`)),
      [['a:3', 'c:1'], ['c:4'], ['d:1', 'e:2']],
    );
    // every sample exactly once, in order, with its family's name, help and type
    const flat = batches.flat().flatMap((f) => f.samples.map((s) => `${f.name}/${f.help}/${f.type}/${s.labels.i}`));
    const want = input.flatMap((f) => f.samples.map((s) => `${f.name}/${f.help}/${f.type}/${s.labels.i}`));
    assert.deepEqual(flat, want);
    assert.deepEqual(splitFamilies([], 4), []);
    assert.deepEqual(splitFamilies([fam('x', 0)], 4), []);
    assert.deepEqual(
      splitFamilies([fam('big', 4500)]).map((b) => b[0]?.samples.length),
      [2000, 2000, 500],
    );
    assert.throws(() => splitFamilies(input, 0), RangeError);
  });
});

describe('parsePrometheusOptions', () => {
  let dir: string;
  let tokenFile: string;
  before(() => {
    dir = tempDir('convis-prom-opts-');
    tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'tok-SECRET-123\n');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('good specs', () => {
    const o = parsePrometheusOptions({ endpoint: 'http://prom:9090/api/v1/write' });
    assert.equal(o.endpoint.href, 'http://prom:9090/api/v1/write');
    assert.equal(o.intervalMs, 10_000);
    assert.deepEqual(o.headers, {});
    assert.equal(o.username, undefined);
    assert.equal(o.bearerTokenFile, undefined);

    const b = parsePrometheusOptions({
      endpoint: 'https://mimir.example/api/v1/push?x=1',
      username: 'agent',
      password: 'p,a:ss',
      interval: '30s',
      'header.X-Scope-OrgID': 'tenant-1',
      'header.User-Agent': 'custom/1',
    });
    assert.equal(b.endpoint.href, 'https://mimir.example/api/v1/push?x=1');
    assert.equal(b.username, 'agent');
    assert.equal(b.password, 'p,a:ss');
    assert.equal(b.intervalMs, 30_000);
    assert.deepEqual(b.headers, { 'X-Scope-OrgID': 'tenant-1', 'User-Agent': 'custom/1' });

    const t = parsePrometheusOptions({ endpoint: 'http://127.0.0.1:9090/api/v1/write', bearer_token_file: tokenFile });
    assert.equal(t.bearerTokenFile, tokenFile);

    for (const [text, ms] of [
      ['10s', 10_000],
      ['500ms', 500],
      ['1m', 60_000],
      ['15', 15_000],
      ['1.5s', 1500],
      ['1h', 3_600_000],
    ] as const) {
      assert.equal(parsePrometheusOptions({ endpoint: 'http://h/', interval: text }).intervalMs, ms, text);
    }
  });

  const SECRETS = ['hunter2', 'tok-SECRET-123', 'tenant-token-XYZ'];
  const bad: [string, () => Record<string, string>, RegExp][] = [
    ['missing endpoint', () => ({ username: 'u', password: 'hunter2' }), /needs endpoint=URL/],
    ['empty endpoint', () => ({ endpoint: '' }), /needs endpoint=URL/],
    ['bad URL', () => ({ endpoint: 'http//u:hunter2@prom:9090' }), /endpoint is not a valid URL/],
    ['non-http scheme', () => ({ endpoint: 'ftp://prom/api/v1/write' }), /http:\/\/ or https:\/\/ URL, not ftp:/],
    ['credentials in the URL', () => ({ endpoint: 'http://u:hunter2@prom/api/v1/write' }), /must not hold credentials/],
    ['username without password', () => ({ endpoint: 'http://h/', username: 'u' }), /username and password go together/],
    ['password without username', () => ({ endpoint: 'http://h/', password: 'hunter2' }), /username and password go together/],
    ['non-numeric interval', () => ({ endpoint: 'http://h/', interval: 'soon' }), /interval must be a duration/],
    ['zero interval', () => ({ endpoint: 'http://h/', interval: '0s' }), /more than 0 and at most 1h/],
    ['interval over 1h', () => ({ endpoint: 'http://h/', interval: '2h' }), /more than 0 and at most 1h/],
    ['interval with a line break', () => ({ endpoint: 'http://h/', interval: '5s\nmore' }), /interval must be a duration/],
    ['negative interval', () => ({ endpoint: 'http://h/', interval: '-5s' }), /interval must be a duration/],
    ['unknown key', () => ({ endpoint: 'http://h/', passwd: 'hunter2' }), /unknown option "passwd"/],
    ['unknown key with a line break', () => ({ endpoint: 'http://h/', 'a\nb': 'x' }), /unknown option "a\\nb"/],
    ['bearer with basic', () => ({ endpoint: 'http://h/', username: 'u', password: 'hunter2', bearer_token_file: tokenFile }), /exclude each other/],
    ['bearer file missing', () => ({ endpoint: 'http://h/', bearer_token_file: join(dir, 'nope') }), /cannot be read \(ENOENT\)/],
    ['bearer file is a directory', () => ({ endpoint: 'http://h/', bearer_token_file: dir }), /is not a file/],
    ['header without a name', () => ({ endpoint: 'http://h/', 'header.': 'tenant-token-XYZ' }), /needs a header name/],
    ['bad header name', () => ({ endpoint: 'http://h/', 'header.X Tenant': 'tenant-token-XYZ' }), /header name is letters/],
    ['header value with a newline', () => ({ endpoint: 'http://h/', 'header.X-Token': 'tenant-token-XYZ\r\nEvil: 1' }), /not allowed in HTTP headers/],
    ['empty header value', () => ({ endpoint: 'http://h/', 'header.X-Token': '' }), /empty value/],
    ['reserved header', () => ({ endpoint: 'http://h/', 'header.Content-Encoding': 'gzip' }), /set by convis/],
    ['header twice', () => ({ endpoint: 'http://h/', 'header.X-A': 'tenant-token-XYZ', 'header.x-a': 'tenant-token-XYZ' }), /given twice/],
    [
      'Authorization header with basic auth',
      () => ({ endpoint: 'http://h/', username: 'u', password: 'hunter2', 'header.Authorization': 'Bearer tenant-token-XYZ' }),
      /exclude each other/,
    ],
  ];
  for (const [name, options, re] of bad) {
    test(`bad: ${name} is one ConfigError line without secrets`, () => {
      let err: unknown;
      try {
        parsePrometheusOptions(options());
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof ConfigError, `throws ConfigError, got ${String(err)}`);
      assert.equal(err.code, 'ECONFIG');
      assert.match(err.message, /^--sink prometheus: /);
      assert.match(err.message, re);
      assert.ok(!err.message.includes('\n'), 'one line');
      for (const s of SECRETS) assert.ok(!err.message.includes(s), `"${err.message}" names a secret`);
    });
  }
});

describe('PrometheusSink delivery against a test server', { timeout: 60_000 }, () => {
  let server: TestServer;
  let dir: string;
  before(async () => {
    dir = tempDir('convis-prom-sink-');
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const fresh = async () => {
    await server?.stop();
    server = new TestServer();
    await server.start();
  };

  test('a request carries the protocol headers, basic auth, custom headers and the snapshot', async () => {
    await fresh();
    const log = captureLog();
    const source = countingSource();
    const sink = new PrometheusSink(
      sinkOptions(server, { username: 'agent', password: 'pä:ss', headers: { 'X-Scope-OrgID': 'tenant-1', 'X-Extra': 'v' } }),
      { source, log, now: () => 1_700_000_000_000 },
    );
    sink.snapshotNow();
    await until('one request', () => sink.stats().sent === 2);
    await sink.close();
    const version = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    // close() took a final snapshot: two requests
    assert.equal(server.received.length, 2);
    const h = server.received[0]?.headers as IncomingHttpHeaders;
    assert.equal(h['content-encoding'], 'snappy');
    assert.equal(h['content-type'], 'application/x-protobuf');
    assert.equal(h['x-prometheus-remote-write-version'], '0.1.0');
    assert.equal(h['user-agent'], `convis/${version}`);
    assert.equal(h.authorization, `Basic ${Buffer.from('agent:pä:ss').toString('base64')}`);
    assert.equal(h['x-scope-orgid'], 'tenant-1');
    assert.equal(h['x-extra'], 'v');
    assert.deepEqual(server.series(0), ['__name__=convis_test_total,side=a 1', '__name__=convis_test_total,side=b 2']);
    assert.deepEqual(server.series(1), ['__name__=convis_test_total,side=a 2', '__name__=convis_test_total,side=b 4']);
    // a frozen clock still gives strictly increasing timestamps (a repeat would be a duplicate to Prometheus)
    assert.deepEqual(
      [0, 1].map((i) => decodeWriteRequest(server.received[i]?.body as Buffer)[0]?.samples[0]?.timestamp),
      [1_700_000_000_000, 1_700_000_000_001],
    );
    assert.deepEqual(sink.stats(), { sent: 4, dropped: 0, failed: 0, queueDepth: 0 });
    assert.deepEqual(visible(log), []);
  });

  test('bearer token: read from its file at each request, trimmed', async () => {
    await fresh();
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, '  tok-one\n');
    const sink = new PrometheusSink(sinkOptions(server, { bearerTokenFile: tokenFile, headers: { 'User-Agent': 'mine/2' } }), {
      source: countingSource(),
      log: captureLog(),
    });
    sink.snapshotNow();
    await until('first request', () => server.received.length === 1);
    writeFileSync(tokenFile, 'tok-two');
    sink.snapshotNow();
    await until('second request', () => server.received.length === 2);
    await sink.close();
    assert.deepEqual(
      server.received.map((r) => r.headers.authorization),
      ['Bearer tok-one', 'Bearer tok-two', 'Bearer tok-two'],
    );
    // a User-Agent given as a header replaces convis'
    assert.equal(server.received[0]?.headers['user-agent'], 'mine/2');
  });

  test('a 500 is retried with backoff and the snapshot delivered once', async () => {
    await fresh();
    server.answer = (_r, n) => (n === 1 ? { status: 500, body: 'tsdb busy' } : { status: 204 });
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST });
    sink.snapshotNow();
    await until('delivered', () => sink.stats().sent === 2);
    assert.equal(server.received.length, 2);
    assert.deepEqual(server.series(0), server.series(1));
    assert.deepEqual(sink.stats(), { sent: 2, dropped: 0, failed: 0, queueDepth: 0 });
    const lines = visible(log);
    assert.equal(lines.length, 2, log.text());
    assert.equal(lines[0]?.level, 'warn');
    assert.match(lines[0]?.msg ?? '', new RegExp(`^prometheus remote write to ${server.url.href}: 500 Internal Server Error: tsdb busy; retrying`));
    assert.match(lines[1]?.msg ?? '', /delivering again after 1 failed attempt$/);
    await sink.close();
  });

  test('a 429 waits as long as Retry-After says', async () => {
    await fresh();
    server.answer = (_r, n) => (n === 1 ? { status: 429, headers: { 'Retry-After': '1' } } : { status: 204 });
    const log = captureLog();
    // the backoff alone would retry within 20 ms
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST });
    sink.snapshotNow();
    await until('delivered', () => sink.stats().sent === 2, 5000);
    const gap = (server.received[1]?.at as number) - (server.received[0]?.at as number);
    assert.ok(gap >= 950 && gap < 3000, `retried after ${gap} ms`);
    assert.match(visible(log)[0]?.msg ?? '', /429 Too Many Requests; retrying when Retry-After says$/);
    await sink.close();
  });

  test('a 400 is not retried: counted as failed, logged once while it lasts', async () => {
    await fresh();
    server.answer = () => ({ status: 400, body: 'out of order sample\n' });
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST });
    sink.snapshotNow();
    await until('answered', () => sink.stats().failed === 1);
    sink.snapshotNow();
    await until('answered', () => sink.stats().failed === 2);
    await sleep(300); // time for retries, were there any
    assert.equal(server.received.length, 2);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 4, failed: 2, queueDepth: 0 });
    const lines = visible(log);
    assert.equal(lines.length, 1, log.text());
    assert.equal(
      lines[0]?.msg,
      `prometheus remote write to ${server.url.href}: 400 Bad Request: out of order sample; request dropped, not retried`,
    );
    server.answer = () => ({ status: 204 });
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: 2, dropped: 4, failed: 2, queueDepth: 0 });
    assert.match(visible(log)[1]?.msg ?? '', /delivering again after 2 failed attempts \(4 samples dropped meanwhile\)/);
  });

  test('a wrong password: one clear line, the password nowhere, even when the server echoes it', async () => {
    await fresh();
    const password = 'hunter2-wrong';
    server.answer = (r) => ({
      status: 401,
      body: `bad credentials: ${r.headers.authorization} (${Buffer.from((r.headers.authorization ?? '').slice(6), 'base64').toString()})`,
    });
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server, { username: 'agent', password }), { source: countingSource(), log, ...FAST });
    sink.snapshotNow();
    sink.snapshotNow();
    await until('answered', () => sink.stats().failed === 2);
    await sink.close();
    const lines = visible(log);
    assert.equal(lines.filter((l) => l.msg.includes('401')).length, 1, log.text());
    assert.match(lines[0]?.msg ?? '', new RegExp(`^prometheus remote write to ${server.url.href}: 401 Unauthorized: .*\\(check username and password\\)`));
    const basic = Buffer.from(`agent:${password}`).toString('base64');
    for (const l of log.lines) {
      assert.ok(!l.msg.includes(password), `password in "${l.msg}"`);
      assert.ok(!l.msg.includes(basic), `credentials in "${l.msg}"`);
    }
  });

  test('connection refused while the server is down: retried until it is back, totals right', async () => {
    await fresh();
    await server.stop();
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST });
    sink.snapshotNow();
    sink.snapshotNow();
    await sleep(600); // several refused attempts (20, 40, 80, 160, 200 ms ...)
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 0, failed: 0, queueDepth: 2 });
    await server.start();
    await until('delivered', () => sink.stats().sent === 4, 5000);
    assert.deepEqual(server.received.map((_, i) => server.snapshotOf(i)), [1, 2]);
    const lines = visible(log);
    assert.equal(lines.length, 2, log.text());
    assert.match(lines[0]?.msg ?? '', /: connection refused \(ECONNREFUSED\); retrying with backoff$/);
    assert.match(lines[1]?.msg ?? '', /delivering again after \d+ failed attempts$/);
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: 6, dropped: 0, failed: 0, queueDepth: 0 });
  });

  test('queue full while a request waits to retry: that oldest one goes, and is counted; its wait stays', async () => {
    await fresh();
    server.answer = (_r, n) => (n === 1 ? { status: 503 } : { status: 204 });
    const log = captureLog();
    // the first retry waits 0.5 to 1 s
    const sink = new PrometheusSink(sinkOptions(server, { maxQueue: 2 }), { source: countingSource(), log, initialBackoffMs: 1000 });
    sink.snapshotNow(); // 1: sent, 503, back at the head of the queue to wait
    await until('the 503 read', () => log.lines.some((l) => l.msg.includes('503')));
    for (let i = 2; i <= 5; i++) sink.snapshotNow(); // 2 queues; 3 pushes out 1, 4 pushes out 2, 5 pushes out 3
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 6, failed: 0, queueDepth: 2 });
    await until('drained', () => sink.stats().queueDepth === 0);
    assert.deepEqual(server.received.map((_, i) => server.snapshotOf(i)), [1, 4, 5]);
    // dropping the request that earned the wait did not end it: the next request waited it out
    const gap = (server.received[1]?.at as number) - (server.received[0]?.at as number);
    assert.ok(gap >= 450, `the next attempt came ${gap} ms after the 503`);
    assert.deepEqual(sink.stats(), { sent: 4, dropped: 6, failed: 0, queueDepth: 0 });
    const full = visible(log).filter((l) => l.msg.includes('queue full'));
    assert.equal(full.length, 1, log.text());
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: 6, dropped: 6, failed: 0, queueDepth: 0 });
  });

  test('queue full while a request is being sent: the oldest waiting one goes', async () => {
    await fresh();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    server.answer = async (_r, n) => {
      if (n === 1) await held;
      return { status: 204 };
    };
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server, { maxQueue: 2 }), { source: countingSource(), log });
    sink.snapshotNow(); // 1: in flight, held by the server
    await until('first request', () => server.received.length === 1);
    for (let i = 2; i <= 4; i++) sink.snapshotNow(); // 2, 3 queue; 4 pushes out 2
    assert.equal(sink.stats().queueDepth, 3);
    assert.equal(sink.stats().dropped, 2);
    release();
    await until('drained', () => sink.stats().queueDepth === 0);
    assert.deepEqual(server.received.map((_, i) => server.snapshotOf(i)), [1, 3, 4]);
    assert.deepEqual(sink.stats(), { sent: 6, dropped: 2, failed: 0, queueDepth: 0 });
    await sink.close();
  });

  test('a large snapshot is encoded a request per loop turn, in order, and kept whole when the queue is full', async () => {
    await fresh();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    server.answer = async (_r, n) => {
      if (n === 1) await held;
      return { status: 204 };
    };
    let round = 0;
    const source: MetricsSource = {
      collect: () => {
        round++;
        return [{ name: 'convis_test_total', help: '', type: 'counter', samples: [1, 2, 3, 4, 5].map((i) => ({ labels: { i: `${round}.${i}` }, value: i })) }];
      },
    };
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server, { maxQueue: 2, maxSeriesPerRequest: 1 }), { source, log });
    // count loop turns with setImmediate, the same queue the sink yields to
    // (a 1 ms interval timer would depend on how fast encoding is)
    let turns = 0;
    let counting = true;
    const tick = () => {
      turns++;
      if (counting) setImmediate(tick);
    };
    setImmediate(tick);
    const a = sink.snapshotNow();
    assert.ok(sink.stats().queueDepth < 5, 'returns before the whole snapshot is encoded');
    await a;
    await until('first request held', () => server.received.length === 1);
    // snapshot 1 is 5 requests against a queue of 2, and still kept whole: 1 in flight, 4 waiting
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 0, failed: 0, queueDepth: 5 });
    // snapshot 2 pushes out the waiting requests of snapshot 1, and is kept whole too
    await sink.snapshotNow();
    counting = false;
    assert.ok(turns >= 2, `the loop turned while encoding (${turns})`);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 4, failed: 0, queueDepth: 6 });
    release();
    await until('drained', () => sink.stats().queueDepth === 0);
    const labels = server.received.map((_, i) => server.series(i).join(' '));
    assert.deepEqual(labels, ['1.1', '2.1', '2.2', '2.3', '2.4', '2.5'].map((i) => `__name__=convis_test_total,i=${i} ${i.slice(2)}`));
    assert.equal(visible(log).filter((l) => l.msg.includes('queue full')).length, 1, log.text());
    await sink.close();
  });

  test('a request with no answer times out and is retried', async () => {
    await fresh();
    server.answer = (_r, n) => (n === 1 ? new Promise<Answer>(() => {}) : { status: 204 });
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST, requestTimeoutMs: 200 });
    void sink.snapshotNow();
    await until('delivered', () => sink.stats().sent === 2);
    assert.equal(server.received.length, 2);
    assert.match(visible(log)[0]?.msg ?? '', /: no answer within 0.2 s; retrying with backoff$/);
    await sink.close();
  });

  test('close() flushes a final snapshot and waits for it', async () => {
    await fresh();
    const source = countingSource();
    const sink = new PrometheusSink(sinkOptions(server), { source, log: captureLog() });
    sink.write([]);
    assert.equal(source.collects, 0, 'write() does not read the registry');
    await sink.close();
    assert.equal(server.received.length, 1);
    assert.deepEqual(sink.stats(), { sent: 2, dropped: 0, failed: 0, queueDepth: 0 });
    await sink.close(); // idempotent
    sink.snapshotNow(); // ignored after close
    assert.equal(source.collects, 1);
  });

  test('close() does not wait out a backoff: it tries again at once', async () => {
    await fresh();
    server.answer = (_r, n) => (n === 1 ? { status: 503 } : { status: 204 });
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log: captureLog(), initialBackoffMs: 60_000 });
    sink.snapshotNow();
    await until('first attempt', () => server.received.length === 1);
    const t0 = Date.now();
    await sink.close();
    assert.ok(Date.now() - t0 < 2000, `close took ${Date.now() - t0} ms`);
    assert.deepEqual(sink.stats(), { sent: 4, dropped: 0, failed: 0, queueDepth: 0 });
  });

  test('close() gives up after its timeout when the endpoint is down and counts the rest', async () => {
    await fresh();
    await server.stop();
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server), { source: countingSource(), log, ...FAST, closeTimeoutMs: 300 });
    sink.snapshotNow();
    const t0 = Date.now();
    await sink.close();
    const took = Date.now() - t0;
    assert.ok(took >= 280 && took < 2000, `close took ${took} ms`);
    assert.deepEqual(sink.stats(), { sent: 0, dropped: 4, failed: 0, queueDepth: 0 });
    assert.match(visible(log).at(-1)?.msg ?? '', /gave up at exit after 0.3 s; 4 samples not delivered$/);
  });

  test('the timer takes a snapshot every interval; a failing source is logged once and skipped', async () => {
    await fresh();
    let broken = false;
    const inner = countingSource();
    const source: MetricsSource = {
      collect: () => {
        if (broken) throw new Error('registry exploded');
        return inner.collect();
      },
    };
    const log = captureLog();
    const sink = new PrometheusSink(sinkOptions(server, { intervalMs: 50 }), { source, log });
    await until('three snapshots', () => server.received.length >= 3, 3000);
    broken = true;
    await sleep(200);
    const during = server.received.length;
    broken = false;
    await until('more snapshots', () => server.received.length >= during + 2, 3000);
    await sink.close();
    const stamps = server.received.map((r) => decodeWriteRequest(r.body)[0]?.samples[0]?.timestamp as number);
    assert.ok(stamps.every((t, i) => i === 0 || t > (stamps[i - 1] as number)), 'timestamps increase');
    const lines = visible(log);
    assert.equal(lines.filter((l) => l.msg.includes('registry exploded')).length, 1, log.text());
    assert.match(lines.at(-1)?.msg ?? '', /taking metrics snapshots works again/);
  });
});

/** Expected samples as "metric-json value", for comparing with a query's answer. */
function keyed(samples: VectorSample[]): string[] {
  return samples
    .map((s) => {
      const m = Object.fromEntries(Object.entries(s.metric).sort(([a], [b]) => (a < b ? -1 : 1)));
      return `${JSON.stringify(m)} ${Number(s.value[1])}`;
    })
    .sort();
}

const skipProm = prometheusSkipLoudly('remote write into a real Prometheus');

describe('PrometheusSink into a real Prometheus', { skip: skipProm, timeout: 120_000 }, () => {
  let prom: Prometheus;
  before(async () => {
    prom = await startPrometheus();
  });
  after(async () => {
    await prom?.stop();
  });

  const odd: MetricFamily[] = [
    {
      name: 'convis_rt_bytes_total',
      help: 'bytes',
      type: 'counter',
      samples: [
        { labels: { pod: 'web-0', namespace: 'shop', container: '' }, value: 123456789 },
        { labels: { pod: 'say "hi"', namespace: 'back\\slash', cmd: 'a\nb' }, value: 1.5 },
        { labels: { pod: 'café-☃-日本-🚀', namespace: 'ünï' }, value: 2 ** 53 },
        { labels: {}, value: 0 },
      ],
    },
    { name: 'convis_rt_flows', help: 'flows', type: 'gauge', samples: [{ labels: { node: 'n1' }, value: 7.25 }] },
  ];

  test('what the sink sends is stored exactly: values and label sets, odd characters, empty labels absent', async () => {
    const log = captureLog();
    const sink = new PrometheusSink({ endpoint: prom.remoteWriteUrl, headers: {}, intervalMs: 3_600_000 }, { source: { collect: () => odd }, log });
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: 5, dropped: 0, failed: 0, queueDepth: 0 }, log.text());
    const got = await prom.query('{__name__=~"convis_rt_.*"}');
    const want = odd.flatMap((f) =>
      f.samples.map((s) => ({
        metric: { __name__: f.name, ...Object.fromEntries(Object.entries(s.labels).filter(([, v]) => v !== '')) },
        value: [0, String(s.value)] as [number, string],
      })),
    );
    assert.deepEqual(keyed(got), keyed(want));
    // the empty label is absent, not empty
    assert.equal((await prom.query('convis_rt_bytes_total{pod="web-0", container=""}')).length, 1);
    assert.equal((await prom.query('count(convis_rt_bytes_total{container!=""})')).length, 0);
    assert.deepEqual(visible(log), []);
  });

  test('a snapshot split over several requests arrives whole', async () => {
    const many: MetricFamily[] = [
      {
        name: 'convis_rt_many_total',
        help: 'many',
        type: 'counter',
        samples: Array.from({ length: 25 }, (_, i) => ({ labels: { i: String(i) }, value: i + 1 })),
      },
    ];
    const sink = new PrometheusSink(
      { endpoint: prom.remoteWriteUrl, headers: {}, intervalMs: 3_600_000, maxSeriesPerRequest: 10 },
      { source: { collect: () => many }, log: captureLog() },
    );
    await sink.close();
    assert.deepEqual(sink.stats(), { sent: 25, dropped: 0, failed: 0, queueDepth: 0 });
    const [count] = await prom.query('count(convis_rt_many_total)');
    const [sum] = await prom.query('sum(convis_rt_many_total)');
    assert.equal(count?.value[1], '25');
    assert.equal(sum?.value[1], String((25 * 26) / 2));
  });

  test('Prometheus down and restarted: the sink retries, delivers, and earlier data survives', async () => {
    const source = countingSource();
    const log = captureLog();
    const sink = new PrometheusSink({ endpoint: prom.remoteWriteUrl, headers: {}, intervalMs: 3_600_000 }, { source, log, ...FAST });
    sink.snapshotNow();
    await until('first snapshot stored', () => sink.stats().sent === 2, 10_000);
    const firstAt = Date.now();
    await prom.kill();
    await sleep(50);
    sink.snapshotNow();
    await until('a refused attempt', () => log.lines.some((l) => l.msg.includes('ECONNREFUSED')), 5000);
    await prom.restart();
    await until('second snapshot stored', () => sink.stats().sent === 4, 15_000);
    await sink.close();
    const now = await prom.query('convis_test_total');
    assert.deepEqual(keyed(now), keyed([
      { metric: { __name__: 'convis_test_total', side: 'a' }, value: [0, '3'] },
      { metric: { __name__: 'convis_test_total', side: 'b' }, value: [0, '6'] },
    ]));
    // the first snapshot, written before the restart, is still there (replayed from the WAL)
    const before = await prom.query('convis_test_total{side="a"}', firstAt);
    assert.equal(before[0]?.value[1], '1');
    assert.deepEqual(sink.stats(), { sent: 6, dropped: 0, failed: 0, queueDepth: 0 });
    // each kind of failure once (refused; perhaps 503 while the TSDB opens), not once per retry
    const warns = visible(log).filter((l) => l.level === 'warn').map((l) => l.msg);
    assert.ok(warns.some((m) => m.includes('ECONNREFUSED')), log.text());
    assert.equal(new Set(warns).size, warns.length, log.text());
  });

  test('the helper scrapes a target when asked (for the /metrics endpoint tests)', async () => {
    const target = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end('# TYPE convis_scraped_total counter\nconvis_scraped_total{k="v"} 42\n');
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    const a = target.address();
    const port = typeof a === 'object' && a ? a.port : 0;
    const scraper = await startPrometheus({ scrape: { target: `127.0.0.1:${port}`, intervalMs: 200 } });
    try {
      const r = await scraper.waitFor('convis_scraped_total', (v) => v.length === 1, 15_000);
      assert.deepEqual(r[0]?.metric, { __name__: 'convis_scraped_total', instance: `127.0.0.1:${port}`, job: 'convis', k: 'v' });
      assert.equal(r[0]?.value[1], '42');
    } finally {
      await scraper.stop();
      await new Promise<void>((r) => {
        target.close(() => r());
        target.closeAllConnections();
      });
    }
  });
});
