/**
 * prometheus sink: Prometheus remote write 1.0. Every interval it takes a
 * snapshot of the metrics registry (not of events: write() is a no-op),
 * encodes it in requests of at most maxSeriesPerRequest series and queues
 * them; the shared delivery (../delivery.ts) POSTs them in order, one at a
 * time.
 *
 * Delivery policy (after the spec and Prometheus' own queue manager; the
 * rules are HttpDelivery's, shared with every network sink):
 * - network errors, timeouts, 5xx and 429 are retried with exponential
 *   backoff and jitter (0.5 s doubling to 30 s; Retry-After is honoured),
 *   and the gaps between attempts never shrink while the endpoint is down;
 * - any other status (4xx, 3xx) will not get better by repeating the same
 *   bytes: the request is dropped and counted as failed;
 * - the queue is bounded; when it is full the oldest request goes (the
 *   latest snapshot is kept whole), and that may be the one waiting to be
 *   retried: the wait stays, and the next request waits it out. The
 *   snapshots are cumulative counters, so a newer one carries everything
 *   an older one did and totals stay right: only resolution is lost.
 * - a failure is logged once when it starts (or changes kind) and once when
 *   delivery recovers, never once per retry. No log line carries a secret:
 *   the endpoint is shown without credentials or query, and every line,
 *   with any response body it quotes, has the password, token and header
 *   values masked.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';

import type { MetricFamily, MetricsSource } from '../../aggregate/metrics.js';
import type { ConnectionEvent } from '../../metadata/event.js';
import { secrets } from '../../config/secrets.js';
import type { Logger } from '../../util/log.js';
import { HttpDelivery } from '../delivery.js';
import type { Sink, SinkStats } from '../sink.js';
import { BAD_HEADER_VALUE, DEFAULT_MAX_QUEUE, type PrometheusSinkOptions } from './options.js';
export { DEFAULT_INTERVAL_MS, DEFAULT_MAX_QUEUE, parseInterval, parsePrometheusOptions, type PrometheusSinkOptions } from './options.js';
import { countSamples, DEFAULT_MAX_SERIES_PER_REQUEST, encodeWriteRequest, splitFamilies } from './remote-write.js';

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

export class PrometheusSink implements Sink {
  readonly name = 'prometheus';
  private readonly options: PrometheusSinkOptions;
  private readonly source: MetricsSource;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxSeries: number;
  private readonly userAgent: string;
  private readonly timer: NodeJS.Timeout;
  private readonly delivery: HttpDelivery<QueuedRequest>;
  private closing: Promise<void> | undefined;
  private stopped = false;

  private lastTimestampMs = 0;
  private snapshots = 0;
  /** encoding of large snapshots, chained so that requests queue in order */
  private encoding: Promise<void> = Promise.resolve();
  private encodesPending = 0;
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
    const maxQueue = positiveInt(options.maxQueue ?? DEFAULT_MAX_QUEUE, 'maxQueue');
    if (!(options.intervalMs > 0)) throw new RangeError(`PrometheusSink: intervalMs must be positive, not ${options.intervalMs}`);
    this.userAgent = `convis/${packageVersion()}`;
    this.delivery = new HttpDelivery<QueuedRequest>({
      name: 'prometheus remote write',
      endpoint: options.endpoint,
      log: deps.log,
      // a request is encoded whole when its snapshot is taken
      encode: (requests) => (requests[0] as QueuedRequest).body,
      headers: () => this.headers(),
      secrets: [options.password, ...Object.values(options.headers)],
      units: (r) => r.samples,
      unitNoun: 'sample',
      itemNoun: 'request',
      maxQueueItems: maxQueue,
      // the latest snapshot is kept whole: its requests only push out older snapshots'
      mayDrop: (oldest, newest) => oldest.snapshot < newest.snapshot,
      hint: (status) => this.authHint(status),
      overflowNote: 'counters stay right, resolution is lost',
      ...(deps.initialBackoffMs !== undefined ? { initialBackoffMs: deps.initialBackoffMs } : {}),
      ...(deps.maxBackoffMs !== undefined ? { maxBackoffMs: deps.maxBackoffMs } : {}),
      ...(deps.requestTimeoutMs !== undefined ? { requestTimeoutMs: deps.requestTimeoutMs } : {}),
      ...(deps.closeTimeoutMs !== undefined ? { closeTimeoutMs: deps.closeTimeoutMs } : {}),
      now: this.now,
    });
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
    let body: Buffer;
    try {
      body = encodeWriteRequest(batch, timestampMs);
    } catch (e) {
      this.delivery.drop(samples);
      this.encodeFailed(e, 'encoding');
      return;
    }
    this.snapshotWorked();
    this.delivery.push({ body, samples, snapshot });
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

  failingForMs(): number {
    return this.delivery.failingForMs();
  }

  stats(): PrometheusSinkStats {
    const { sent, dropped, failed, queueDepth } = this.delivery.stats();
    return { sent, dropped, failed, queueDepth };
  }

  private async finish(): Promise<void> {
    clearInterval(this.timer);
    await this.snapshotNow();
    this.stopped = true;
    await this.delivery.close();
  }

  /** The headers of one request; the bearer token is read from its file each time, so it may be rotated. */
  private async headers(): Promise<Record<string, string>> {
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
        throw new Error(`cannot read bearer_token_file ${bearerTokenFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      if (token === '' || BAD_HEADER_VALUE.test(token)) throw new Error(`bearer_token_file ${bearerTokenFile} holds no usable token`);
      h.Authorization = `Bearer ${token}`;
    }
    return h;
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
    return undefined;
  }
}
