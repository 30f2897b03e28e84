/**
 * prometheus sink: Prometheus remote write 1.0. Every interval it takes a
 * snapshot of the metrics registry (not of events: write() is a no-op),
 * encodes it in requests of at most maxSeriesPerRequest series and queues
 * them; one sender POSTs them in order.
 *
 * Delivery policy (after the spec and Prometheus' own queue manager):
 * - network errors, timeouts, 5xx and 429 are retried with exponential
 *   backoff and jitter (0.5 s doubling to 30 s; Retry-After is honoured);
 * - any other status (4xx, 3xx) will not get better by repeating the same
 *   bytes: the request is dropped and counted as failed;
 * - the queue is bounded; when it is full the oldest request goes (the
 *   latest snapshot is kept whole). The snapshots are cumulative counters,
 *   so a newer one carries everything an older one did and totals stay
 *   right: only resolution is lost.
 * - a failure is logged once when it starts (or changes kind) and once when
 *   delivery recovers, never once per retry. No log line carries a secret:
 *   the endpoint is shown without credentials or query, and a response body
 *   quoted in a log has the password, token and header values masked.
 */
import { readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { setImmediate } from 'node:timers/promises';

import type { MetricFamily, MetricsSource } from '../../aggregate/metrics.js';
import type { ConnectionEvent } from '../../metadata/event.js';
import { parseDurationMs } from '../../config/duration.js';
import { ConfigError } from '../../config/errors.js';
import type { EnvCredentials } from '../../config/config.js';
import { readCredentialFile, secrets } from '../../config/secrets.js';
import type { Logger } from '../../util/log.js';
import type { Sink, SinkStats } from '../sink.js';
import { countSamples, DEFAULT_MAX_SERIES_PER_REQUEST, encodeWriteRequest, splitFamilies } from './remote-write.js';

export interface PrometheusSinkOptions {
  /** the remote write URL, e.g. http://prometheus:9090/api/v1/write */
  endpoint: URL;
  /** HTTP basic auth; both or neither */
  username?: string;
  password?: string;
  /** a file holding a bearer token, read (and trimmed) at each request, so rotation needs no restart */
  bearerTokenFile?: string;
  /** extra request headers, e.g. a tenant id (X-Scope-OrgID) */
  headers: Record<string, string>;
  /** how often a snapshot is taken and sent */
  intervalMs: number;
  /** series per request (default 2000) */
  maxSeriesPerRequest?: number;
  /** requests held waiting, besides the one being sent, while the endpoint is slow or down (default 100); the latest snapshot is always kept whole */
  maxQueue?: number;
}

export interface PrometheusSinkDeps {
  source: MetricsSource;
  log: Logger;
  /** wall clock in ms, for sample timestamps (default Date.now) */
  now?: () => number;
  /** backoff before the first retry, doubling up to maxBackoffMs (defaults 500 and 30000) */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** one POST, from connect to the end of the answer (default 10000) */
  requestTimeoutMs?: number;
  /** how long close() waits for the queue to drain (default 10000) */
  closeTimeoutMs?: number;
}

export interface PrometheusSinkStats extends SinkStats {
  /** samples the endpoint accepted */
  sent: number;
  /** samples that will never be delivered: queue overflow, requests that failed for good, the rest at close */
  dropped: number;
  /** requests given up on after a non-retryable answer (their samples are in dropped) */
  failed: number;
  /** requests waiting, including the one being sent */
  queueDepth: number;
}

export const DEFAULT_INTERVAL_MS = 10_000;
export const DEFAULT_MAX_QUEUE = 100;
const MAX_INTERVAL_MS = 3_600_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
const DEFAULT_INITIAL_BACKOFF_MS = 500;
const DEFAULT_MAX_BACKOFF_MS = 30_000;
/** a Retry-After longer than this is taken as this */
const MAX_RETRY_AFTER_MS = 300_000;
/** how much of an error answer's body is read and quoted */
const MAX_BODY_QUOTED = 200;

const KEYS = ['endpoint', 'username', 'password', 'password_file', 'bearer_token_file', 'interval'];
const HEADER_PREFIX = 'header.';
const HEADER_FILE_PREFIX = 'header_file.';
/** headers the protocol needs as convis sets them */
const RESERVED_HEADERS = [
  'content-encoding',
  'content-type',
  'content-length',
  'x-prometheus-remote-write-version',
  'host',
  'transfer-encoding',
  'connection',
];
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** what Node accepts in a header value: no control characters but tab */
const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function configError(message: string): never {
  throw new ConfigError(`--sink prometheus: ${message}`);
}

/** "10s", "500ms", "1m", "1h", or plain seconds ("15"); fractions allowed. */
export function parseInterval(text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined) {
    configError(`interval must be a duration such as 10s, 500ms, 1m or 15 (seconds), not ${JSON.stringify(text)}`);
  }
  if (ms <= 0 || ms > MAX_INTERVAL_MS) configError(`interval must be more than 0 and at most 1h, not ${JSON.stringify(text)}`);
  return ms;
}

/**
 * The sink spec: prometheus,endpoint=URL[,username=U,password=P]
 * [,bearer_token_file=F][,interval=10s][,header.NAME=VALUE]...
 * Errors are ConfigError, one line, and never quote a password, token or
 * header value (a header may carry a tenant's token).
 */
export function parsePrometheusOptions(o: Record<string, string>, env: EnvCredentials = {}): PrometheusSinkOptions {
  const headers: Record<string, string> = {};
  const headerNames = new Set<string>();
  const readText = (path: string) => readFileSync(path, 'utf8');
  for (const key of Object.keys(o)) {
    const fromFile = key.startsWith(HEADER_FILE_PREFIX);
    if (key.startsWith(HEADER_PREFIX) || fromFile) {
      const name = key.slice(fromFile ? HEADER_FILE_PREFIX.length : HEADER_PREFIX.length);
      if (name === '') configError(`${fromFile ? HEADER_FILE_PREFIX : HEADER_PREFIX} needs a header name, as in header.X-Scope-OrgID=tenant`);
      if (!TOKEN.test(name)) configError(`${JSON.stringify(key)}: a header name is letters, digits and -_.!#$%&'*+^\`|~ only`);
      const lower = name.toLowerCase();
      if (RESERVED_HEADERS.includes(lower)) configError(`header ${name} is set by convis and cannot be given`);
      if (headerNames.has(lower)) configError(`header ${name} is given twice`);
      headerNames.add(lower);
      // a header_file.<name> holds the value, read once at start
      const value = fromFile ? readCredentialFile(key, o[key] as string, configError, readText).trim() : (o[key] as string);
      if (value === '') configError(`header ${name} has an empty value`);
      if (BAD_HEADER_VALUE.test(value)) configError(`header ${name} has a value with a character not allowed in HTTP headers`);
      headers[name] = value;
    } else if (!KEYS.includes(key)) {
      configError(`unknown option ${JSON.stringify(key)} (known: ${KEYS.join(', ')}, ${HEADER_PREFIX}<name>, ${HEADER_FILE_PREFIX}<name>)`);
    }
  }

  const text = o.endpoint;
  if (text === undefined || text.trim() === '') configError('needs endpoint=URL, e.g. endpoint=http://prometheus:9090/api/v1/write');
  let endpoint: URL;
  try {
    endpoint = new URL(text.trim());
  } catch {
    // not quoted: a mistyped URL may still hold credentials
    configError('endpoint is not a valid URL (expected e.g. http://prometheus:9090/api/v1/write)');
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    configError(`endpoint must be an http:// or https:// URL, not ${endpoint.protocol}//`);
  }
  if (endpoint.username !== '' || endpoint.password !== '') {
    configError('endpoint must not hold credentials; give username= and password= instead');
  }
  endpoint.hash = '';

  const { username } = o;
  if (o.password !== undefined && o.password_file !== undefined) configError('password and password_file exclude each other: give one');
  // on the command line, else in a file, else in the environment (for a sink with a username)
  let password = o.password;
  if (o.password_file !== undefined) password = readCredentialFile('password_file', o.password_file, configError, readText);
  else if (password === undefined && username !== undefined && env.prometheusPassword !== undefined) password = env.prometheusPassword;
  const bearerTokenFile = o.bearer_token_file;
  if ((username === undefined) !== (password === undefined)) {
    configError('username and password go together: give both or neither (the password as password=, password_file= or $CONVIS_PROMETHEUS_PASSWORD)');
  }
  if (bearerTokenFile !== undefined && username !== undefined) {
    configError('bearer_token_file and username/password exclude each other: use one way to authenticate');
  }
  if (username === '') configError('username is empty');
  if (username?.includes(':')) configError('username must not contain ":" (basic auth cannot carry it)');
  const hasAuthHeader = headerNames.has('authorization');
  if (hasAuthHeader && (username !== undefined || bearerTokenFile !== undefined)) {
    configError('header Authorization and username/password or bearer_token_file exclude each other');
  }
  if (bearerTokenFile !== undefined) {
    if (bearerTokenFile === '') configError('bearer_token_file is empty');
    try {
      if (!statSync(bearerTokenFile).isFile()) configError(`bearer_token_file ${JSON.stringify(bearerTokenFile)} is not a file`);
      // readable now; it is read again at each request, so it may be rotated
      secrets.add(readFileSync(bearerTokenFile, 'utf8').trim());
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      configError(`bearer_token_file ${JSON.stringify(bearerTokenFile)} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }

  const options: PrometheusSinkOptions = {
    endpoint,
    headers,
    intervalMs: o.interval === undefined ? DEFAULT_INTERVAL_MS : parseInterval(o.interval),
  };
  if (username !== undefined) {
    options.username = username;
    options.password = password;
  }
  if (bearerTokenFile !== undefined) options.bearerTokenFile = bearerTokenFile;
  return options;
}

/** The endpoint as logs show it: no credentials, no query (either may hold a secret). */
export function endpointForLogs(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

interface QueuedRequest {
  body: Buffer;
  samples: number;
  /** which snapshot it belongs to (they count up) */
  snapshot: number;
}

type Outcome =
  | { kind: 'ok' }
  | { kind: 'fatal'; key: string; message: string }
  | { kind: 'retry'; key: string; message: string; retryAfterMs?: number; quiet?: boolean }
  | { kind: 'aborted' };

/** Seconds or an HTTP date, as milliseconds from now; undefined when absent or unreadable. */
function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(v)) ms = Number(v) * 1000;
  else {
    const at = Date.parse(v);
    if (!Number.isFinite(at)) return undefined;
    ms = at - nowMs;
  }
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

function errorText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const byCode: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host name lookup failed',
    ETIMEDOUT: 'connect timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    EPIPE: 'connection closed while sending',
  };
  if (err?.code && byCode[err.code]) return `${byCode[err.code]} (${err.code})`;
  if (err?.code) return `${err.message} (${err.code})`;
  return err?.message ?? String(e);
}

export class PrometheusSink implements Sink {
  readonly name = 'prometheus';
  private readonly options: PrometheusSinkOptions;
  private readonly source: MetricsSource;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxSeries: number;
  private readonly maxQueue: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly target: string;
  private readonly prefix: string;
  private readonly agent: http.Agent;
  private readonly userAgent: string;
  private readonly timer: NodeJS.Timeout;
  /** aborts the request in flight and any backoff when close() gives up */
  private readonly shutdown = new AbortController();

  private readonly queue: QueuedRequest[] = [];
  private inflight: QueuedRequest | undefined;
  /** set when overflow dropped the request in flight while it waited to retry */
  private inflightDropped = false;
  /** ends the current backoff wait early */
  private wake: (() => void) | undefined;
  private pumping: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private stopped = false;

  private sent = 0;
  private dropped = 0;
  private failed = 0;
  private lastTimestampMs = 0;
  private snapshots = 0;
  /** encoding of large snapshots, chained so that requests queue in order */
  private encoding: Promise<void> = Promise.resolve();
  private encodesPending = 0;
  /** consecutive retryable failures, for the backoff; reset by any answer that is not retried */
  private attempt = 0;
  /** the failure kinds logged since delivery last worked (each is logged once) */
  private readonly failures = new Set<string>();
  private failuresSinceLog = 0;
  private droppedAtFailure = 0;
  private overflowing = false;
  /** the snapshot failure last logged (collect or encode), until one works again */
  private snapshotError: string | undefined;

  constructor(options: PrometheusSinkOptions, deps: PrometheusSinkDeps) {
    const positiveInt = (v: number, what: string) => {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`PrometheusSink: ${what} must be a positive integer, not ${v}`);
      return v;
    };
    this.options = options;
    this.source = deps.source;
    this.log = deps.log;
    this.now = deps.now ?? Date.now;
    this.maxSeries = positiveInt(options.maxSeriesPerRequest ?? DEFAULT_MAX_SERIES_PER_REQUEST, 'maxSeriesPerRequest');
    this.maxQueue = positiveInt(options.maxQueue ?? DEFAULT_MAX_QUEUE, 'maxQueue');
    if (!(options.intervalMs > 0)) throw new RangeError(`PrometheusSink: intervalMs must be positive, not ${options.intervalMs}`);
    this.initialBackoffMs = deps.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.maxBackoffMs = deps.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.requestTimeoutMs = deps.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.closeTimeoutMs = deps.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.target = endpointForLogs(options.endpoint);
    this.prefix = `prometheus remote write to ${this.target}`;
    const agentOptions = { keepAlive: true, maxSockets: 1 };
    this.agent = options.endpoint.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.userAgent = `convis/${packageVersion()}`;
    // unref: the sink never keeps the process alive on its own
    this.timer = setInterval(() => void this.snapshotNow(), options.intervalMs).unref();
  }

  write(_events: readonly ConnectionEvent[]): void {
    // remote write reads the registry each interval; events reach it through the flow table
  }

  /**
   * Takes a snapshot now (the timer calls this each interval) and queues
   * its requests. A snapshot of one request is encoded at once; a larger
   * one a request per event-loop turn, so encoding never holds the loop
   * (and the capture path on it) for more than one request's worth. The
   * promise resolves when all of it is queued; it never rejects: a failing
   * source is logged once and the snapshot skipped.
   */
  snapshotNow(): Promise<void> {
    if (this.stopped) return this.encoding;
    let batches: MetricFamily[][];
    try {
      batches = splitFamilies(this.source.collect(), this.maxSeries);
    } catch (e) {
      this.encodeFailed(e, 'collecting');
      return this.encoding;
    }
    // strictly increasing, or Prometheus rejects a second value at the same time as a duplicate
    const timestampMs = Math.max(Math.trunc(this.now()), this.lastTimestampMs + 1);
    this.lastTimestampMs = timestampMs;
    const snapshot = ++this.snapshots;
    if (batches.length === 0) this.snapshotWorked();
    if (this.encodesPending === 0 && batches.length <= 1) {
      if (batches[0]) this.encodeBatch(batches[0], timestampMs, snapshot);
      return this.encoding;
    }
    this.encodesPending++;
    this.encoding = this.encoding
      .then(async () => {
        for (let i = 0; i < batches.length; i++) {
          if (i > 0) await setImmediate();
          this.encodeBatch(batches[i] as MetricFamily[], timestampMs, snapshot);
        }
      })
      .catch((e: unknown) => this.encodeFailed(e, 'encoding'))
      .finally(() => this.encodesPending--);
    return this.encoding;
  }

  private encodeBatch(batch: MetricFamily[], timestampMs: number, snapshot: number): void {
    const samples = countSamples(batch);
    try {
      this.enqueue({ body: encodeWriteRequest(batch, timestampMs), samples, snapshot });
      this.snapshotWorked();
    } catch (e) {
      this.dropped += samples;
      this.encodeFailed(e, 'encoding');
    }
    this.kick();
  }

  private encodeFailed(e: unknown, what: string): void {
    const message = `${what} metrics failed (${(e as Error)?.message ?? String(e)})`;
    if (message === this.snapshotError) return;
    this.snapshotError = message;
    this.log.warn(`prometheus remote write: ${message}; skipping this snapshot`);
  }

  private snapshotWorked(): void {
    if (this.snapshotError === undefined) return;
    this.snapshotError = undefined;
    this.log.info('prometheus remote write: taking metrics snapshots works again');
  }

  /**
   * Takes a final snapshot and waits (closeTimeoutMs at most) until
   * everything queued is delivered or given up on; what is still queued
   * then counts as dropped.
   */
  close(): Promise<void> {
    this.closing ??= this.finish();
    return this.closing;
  }

  stats(): PrometheusSinkStats {
    return {
      sent: this.sent,
      dropped: this.dropped,
      failed: this.failed,
      queueDepth: this.queue.length + (this.inflight ? 1 : 0),
    };
  }

  private async finish(): Promise<void> {
    clearInterval(this.timer);
    await this.snapshotNow();
    this.stopped = true;
    // a backoff under way would eat into the time left: try at once
    this.wake?.();
    const droppedBefore = this.dropped;
    const deadline = setTimeout(() => this.shutdown.abort(), this.closeTimeoutMs);
    try {
      while (this.pumping) await this.pumping;
    } finally {
      clearTimeout(deadline);
    }
    let left = 0;
    for (const r of this.queue.splice(0)) left += r.samples;
    this.dropped += left;
    if (this.shutdown.signal.aborted) {
      this.log.warn(`${this.prefix}: gave up at exit after ${this.closeTimeoutMs / 1000} s; ${this.dropped - droppedBefore} samples not delivered`);
    }
    this.agent.destroy();
  }

  /**
   * Queues a request; when the queue is full the oldest request of an
   * older snapshot goes. The latest snapshot is always kept whole, even
   * when it alone is more than maxQueue requests.
   */
  private enqueue(request: QueuedRequest): void {
    if (this.queue.length >= this.maxQueue) {
      const inflight = this.inflight;
      const oldest = this.queue[0];
      // the request in flight is the oldest; while it only waits to retry, it is the one to go
      if (inflight && inflight.snapshot < request.snapshot && this.wake && !this.inflightDropped) {
        this.inflightDropped = true;
        this.wake();
      } else if (oldest && oldest.snapshot < request.snapshot) {
        this.queue.shift();
        this.dropped += oldest.samples;
      } else {
        this.queue.push(request);
        return;
      }
      if (!this.overflowing) {
        this.overflowing = true;
        this.log.warn(
          `${this.prefix}: queue full (${this.maxQueue} requests); dropping the oldest ` +
            `(counted in convis_sink_dropped_total; counters stay right, resolution is lost)`,
        );
      }
    }
    this.queue.push(request);
  }

  private kick(): void {
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = undefined;
      // something queued while the loop was ending
      if (!this.shutdown.signal.aborted) this.kick();
    });
  }

  /** The one sender: requests strictly in order. Never rejects. */
  private async pump(): Promise<void> {
    while (this.queue.length > 0 && !this.shutdown.signal.aborted) {
      const request = this.queue.shift() as QueuedRequest;
      this.inflight = request;
      this.inflightDropped = false;
      try {
        await this.deliver(request);
      } catch (e) {
        // a bug, not a delivery failure: count it and go on
        this.dropped += request.samples;
        this.log.warn(`${this.prefix}: internal error (${(e as Error)?.message ?? e}); request dropped`);
      }
      this.inflight = undefined;
      if (this.queue.length === 0) this.overflowing = false;
    }
  }

  private async deliver(request: QueuedRequest): Promise<void> {
    let quietRetried = false;
    for (;;) {
      if (this.shutdown.signal.aborted || this.inflightDropped) {
        this.dropped += request.samples;
        return;
      }
      const outcome = await this.post(request.body);
      switch (outcome.kind) {
        case 'ok':
          this.sent += request.samples;
          this.attempt = 0;
          this.recovered();
          return;
        case 'aborted':
          this.dropped += request.samples;
          return;
        case 'fatal':
          this.failed++;
          this.attempt = 0;
          this.failing(outcome.key, `${outcome.message}; request dropped, not retried`);
          this.dropped += request.samples;
          return;
        case 'retry': {
          if (outcome.quiet && !quietRetried) {
            // a kept-alive connection the server had already closed: try once more at once, on a new one
            quietRetried = true;
            continue;
          }
          const base = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** Math.min(this.attempt, 30));
          // "equal jitter": between half and all of the step
          const delay = outcome.retryAfterMs ?? base / 2 + (Math.random() * base) / 2;
          this.attempt++;
          this.failing(outcome.key, `${outcome.message}; retrying ${outcome.retryAfterMs === undefined ? 'with backoff' : 'when Retry-After says'}`);
          this.log.debug(`${this.prefix}: retry in ${Math.round(delay)} ms`);
          await this.sleep(delay);
        }
      }
    }
  }

  private failing(key: string, message: string): void {
    this.failuresSinceLog++;
    if (this.failures.has(key)) return;
    if (this.failures.size === 0) this.droppedAtFailure = this.dropped;
    this.failures.add(key);
    this.log.warn(message);
  }

  private recovered(): void {
    if (this.failures.size === 0) return;
    const lost = this.dropped - this.droppedAtFailure;
    this.log.info(
      `${this.prefix}: delivering again after ${this.failuresSinceLog} failed ` +
        `attempt${this.failuresSinceLog === 1 ? '' : 's'}${lost > 0 ? ` (${lost} samples dropped meanwhile)` : ''}`,
    );
    this.failures.clear();
    this.failuresSinceLog = 0;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.shutdown.signal;
      const done = () => {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      // unref: a backoff alone never holds the process; close() holds it while it waits
      const t = setTimeout(done, ms).unref();
      signal.addEventListener('abort', done);
      this.wake = done;
    });
  }

  private async headers(body: Buffer): Promise<{ headers: Record<string, string> } | { outcome: Outcome }> {
    const h: Record<string, string> = {};
    let hasUserAgent = false;
    for (const [name, value] of Object.entries(this.options.headers)) {
      h[name] = value;
      if (name.toLowerCase() === 'user-agent') hasUserAgent = true;
    }
    if (!hasUserAgent) h['User-Agent'] = this.userAgent;
    h['Content-Encoding'] = 'snappy';
    h['Content-Type'] = 'application/x-protobuf';
    h['X-Prometheus-Remote-Write-Version'] = '0.1.0';
    h['Content-Length'] = String(body.length);
    const { username, password, bearerTokenFile } = this.options;
    if (username !== undefined) {
      h.Authorization = `Basic ${Buffer.from(`${username}:${password ?? ''}`, 'utf8').toString('base64')}`;
    } else if (bearerTokenFile !== undefined) {
      let token: string;
      try {
        token = (await readFile(bearerTokenFile, 'utf8')).trim();
        // a rotated token is a credential too
        secrets.add(token);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? 'error';
        return { outcome: { kind: 'retry', key: `token:${code}`, message: `${this.prefix}: cannot read bearer_token_file ${bearerTokenFile} (${code})` } };
      }
      if (token === '' || BAD_HEADER_VALUE.test(token)) {
        return { outcome: { kind: 'retry', key: 'token:bad', message: `${this.prefix}: bearer_token_file ${bearerTokenFile} holds no usable token` } };
      }
      h.Authorization = `Bearer ${token}`;
    }
    return { headers: h };
  }

  /** Masks what the options hold secret, should an answer echo it. */
  private redact(text: string, headers: Record<string, string>): string {
    const secrets = [this.options.password, ...Object.values(this.options.headers), headers.Authorization, headers.Authorization?.replace(/^\S+ /, '')]
      .filter((s): s is string => s !== undefined && s.length >= 3);
    let out = text;
    for (const s of secrets) out = out.split(s).join('***');
    return out;
  }

  private authHint(status: number): string | undefined {
    const { username, bearerTokenFile } = this.options;
    if (status === 401) {
      if (username !== undefined) return 'check username and password';
      if (bearerTokenFile !== undefined) return `check the token in ${bearerTokenFile}`;
      return 'the endpoint needs credentials: username= and password=, or bearer_token_file=';
    }
    if (status === 403) return 'the credentials are not allowed to write here; check them and any tenant header';
    if (status === 404 || status === 405) return 'check the endpoint path, e.g. /api/v1/write; Prometheus needs --web.enable-remote-write-receiver';
    if (status === 413) return 'request too large for the endpoint';
    if (status >= 300 && status < 400) return 'redirects are not followed; give the final URL as endpoint';
    return undefined;
  }

  private async post(body: Buffer): Promise<Outcome> {
    const built = await this.headers(body);
    if ('outcome' in built) return built.outcome;
    const headers = built.headers;
    const signal = this.shutdown.signal;
    if (signal.aborted) return { kind: 'aborted' };
    const prefix = this.prefix;
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const settle = (o: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const req = (this.options.endpoint.protocol === 'https:' ? https : http).request(this.options.endpoint, {
        method: 'POST',
        headers,
        agent: this.agent,
      });
      const timer = setTimeout(() => {
        req.destroy();
        settle({ kind: 'retry', key: 'net:timeout', message: `${prefix}: no answer within ${this.requestTimeoutMs / 1000} s` });
      }, this.requestTimeoutMs);
      const onAbort = () => {
        req.destroy();
        settle({ kind: 'aborted' });
      };
      signal.addEventListener('abort', onAbort);
      req.on('error', (e) => {
        const code = (e as NodeJS.ErrnoException).code ?? 'error';
        const quiet = req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
        settle({ kind: 'retry', key: `net:${code}`, message: `${prefix}: ${errorText(e)}`, ...(quiet ? { quiet } : {}) });
      });
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on('data', (c: Buffer) => {
          if (kept < 4096) {
            chunks.push(c);
            kept += c.length;
          }
        });
        res.on('error', (e) => settle({ kind: 'retry', key: 'net:response', message: `${prefix}: answer cut off (${errorText(e)})` }));
        res.on('end', () => {
          if (status >= 200 && status < 300) {
            settle({ kind: 'ok' });
            return;
          }
          const reason = res.statusMessage || http.STATUS_CODES[status] || '';
          let quoted = Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim();
          if (quoted.length > MAX_BODY_QUOTED) quoted = `${quoted.slice(0, MAX_BODY_QUOTED)}…`;
          quoted = this.redact(quoted, headers);
          if (quoted.toLowerCase() === reason.toLowerCase()) quoted = '';
          const hint = this.authHint(status);
          const message = `${prefix}: ${status} ${reason}${quoted ? `: ${quoted}` : ''}${hint ? ` (${hint})` : ''}`;
          if (status === 429 || status >= 500) {
            const retryAfter = res.headers['retry-after'];
            const retryAfterMs = parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter, this.now());
            settle({ kind: 'retry', key: `status:${status}`, message, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
          } else {
            settle({ kind: 'fatal', key: `status:${status}`, message });
          }
        });
      });
      req.end(body);
    });
  }
}
