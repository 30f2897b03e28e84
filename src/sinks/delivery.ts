/**
 * The delivery every network sink shares (remote write, New Relic, and any
 * later one): a bounded FIFO of items, one sender that POSTs them in order,
 * the retry rules, backoff with Retry-After, and log lines that carry no
 * secret. A sink supplies only what is its own: how queued items become a
 * request body, the headers, how many units (samples, events) an item is.
 *
 * Retry rules (after the remote-write spec and Prometheus' queue manager):
 * - 2xx: sent.
 * - network errors, timeouts, 5xx and 429 (and statuses a sink adds, such
 *   as New Relic's 408) are retried: after Retry-After when the answer has
 *   one (delta-seconds or an HTTP date, at most 5 min), else after a
 *   backoff. A kept-alive socket the server had already closed is retried
 *   at once, once, on a new connection (the request never reached it).
 * - a request too large for the endpoint (413, or a body over the sink's
 *   byte limit) is halved while it holds more than one item; one item that
 *   is too large alone is dropped like the next case.
 * - any other status (other 4xx, 3xx) will not get better by repeating the
 *   same bytes: the request is dropped and counted as failed.
 *
 * Backoff: "equal jitter", each wait between half and all of its step
 * (0.5 s doubling to 30 s by default); and no gap between two attempts is
 * shorter than the one before it (up to the longest step), so the gaps
 * never shrink while the endpoint stays down, even once the steps stop
 * growing (the remote-write compliance suite checks each gap is at least
 * 0.8 times the previous one).
 *
 * The wait belongs to the delivery, not to a request. A request that will
 * be retried goes back to the head of the queue, as the oldest item; the
 * time of the next attempt and the backoff step stay here. So when the
 * queue is full and the oldest item goes, which may be that very request,
 * the wait is neither reset nor cut short: the next attempt, whatever it
 * carries, waits for the same deadline. Only an answer that is not retried
 * (sent, refused) resets the backoff. The one exception is close(), which
 * tries at once: a backoff under way would eat the little time left.
 *
 * Logging: a failure is logged once per kind (a status, a network error
 * code, a timeout) while it lasts, and once when delivery works again;
 * never once per retry. No line carries a secret: the endpoint is shown
 * without user, password or query, and every line (including a response
 * body it quotes) is masked of the sink's credentials, the Authorization
 * header sent, and every credential in the process's secrets registry.
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

import { MASK, secrets } from '../config/secrets.js';
import type { Logger } from '../util/log.js';

export const DEFAULT_INITIAL_BACKOFF_MS = 500;
export const DEFAULT_MAX_BACKOFF_MS = 30_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** a Retry-After longer than this is taken as this */
export const MAX_RETRY_AFTER_MS = 300_000;
/** how much of an error answer's body is read, and how much of it quoted */
const MAX_BODY_READ = 4096;
const MAX_BODY_QUOTED = 200;

export interface DeliveryOptions<T> {
  /** names the sink in log lines, e.g. "prometheus remote write" */
  name: string;
  endpoint: URL;
  log: Logger;
  /** the body of one request, made of items from the head of the queue, in order */
  encode: (items: readonly T[]) => Buffer | Promise<Buffer>;
  /**
   * The sink's headers for one attempt (Content-Length is added here).
   * Asked at every attempt, so a token file may be rotated; a throw is a
   * failure that is retried, its message logged.
   */
  headers: () => Record<string, string> | Promise<Record<string, string>>;
  /** credentials the sink holds (password, key, header values), masked in every log line */
  secrets?: readonly (string | undefined)[];
  /** what one item counts for in sent and dropped (default 1) */
  units?: (item: T) => number;
  /**
   * Called once for every item when it leaves for good: sent, dropped
   * (overflow, refused, given up at close) or split. A sink that keeps its
   * items in reused memory takes it back here.
   */
  release?: (item: T) => void;
  /**
   * One item too large alone (over maxBodyBytes, or a 413): the sink may
   * cut it into smaller items, in order, that together hold what it held
   * (the item itself is then released). Without it, or when it returns
   * fewer than two, the item is dropped as refused.
   */
  splitItem?: (item: T) => T[] | undefined;
  /** singular nouns for log lines: of a unit ("sample", "event") and of a queued item ("request", "event") */
  unitNoun: string;
  itemNoun: string;
  /** items held waiting while the endpoint is slow or down (those of the request being sent are extra) */
  maxQueueItems: number;
  /** items in one request (default 1); a request is sent once this many are queued, or at flush() */
  maxItemsPerRequest?: number;
  /** a body over this many bytes is not sent but halved */
  maxBodyBytes?: number;
  /**
   * Whether the oldest queued item may go to make room for the newest
   * (default: always). Remote write keeps the latest snapshot whole.
   */
  mayDrop?: (oldest: T, newest: T) => boolean;
  /** statuses retried besides 429 and 5xx (New Relic documents 408) */
  retryStatuses?: readonly number[];
  /** what to check, for a status that is not retried (e.g. 401: the password) */
  hint?: (status: number) => string | undefined;
  /** said once when the queue overflows, after what is dropped */
  overflowNote?: string;
  /** backoff before the first retry, doubling up to maxBackoffMs (defaults 500 and 30000) */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** one POST, from connect to the end of the answer (default 10000) */
  requestTimeoutMs?: number;
  /** how long close() waits for the queue to drain (default 10000) */
  closeTimeoutMs?: number;
  /** wall clock in ms, for Retry-After dates (default Date.now) */
  now?: () => number;
}

export interface DeliveryStats {
  /** units the endpoint accepted */
  sent: number;
  /** units that will never be delivered: queue overflow, refused requests, the rest at close */
  dropped: number;
  /** requests given up on after an answer that is not retried (their units are in dropped) */
  failed: number;
  /** items waiting, including those of the request being sent */
  queueDepth: number;
  /** attempts that failed and were retried */
  retries: number;
}

/** "1 event", "2 events" */
function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** The endpoint as logs show it: no credentials, no query (either may hold a secret). */
export function endpointForLogs(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** Retry-After (delta-seconds or an HTTP date) as ms from nowMs, at most MAX_RETRY_AFTER_MS; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(v)) ms = Number(v) * 1000;
  else {
    // every HTTP date names its month; Date.parse alone takes "-5" for a day in 2001
    if (!/[A-Za-z]{3}/.test(v)) return undefined;
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

/** A FIFO with O(1) push, take from the front and put back at the front (a plain array's shift() is O(n)). */
export class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(v: T): void {
    this.items.push(v);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  last(): T | undefined {
    return this.length > 0 ? this.items[this.items.length - 1] : undefined;
  }

  /** Removes up to n items from the front. */
  take(n: number): T[] {
    const out = this.items.slice(this.head, this.head + n);
    this.head += out.length;
    this.compact();
    return out;
  }

  /** Puts items back at the front, in their order (cheap when they were just taken). */
  putBack(items: readonly T[]): void {
    if (items.length === 0) return;
    if (this.head >= items.length) {
      this.head -= items.length;
      for (let i = 0; i < items.length; i++) this.items[this.head + i] = items[i] as T;
    } else {
      this.items = [...items, ...this.items.slice(this.head)];
      this.head = 0;
    }
  }

  /** Drops n items from the front; returns how many. */
  drop(n: number): number {
    const k = Math.min(n, this.length);
    this.head += k;
    this.compact();
    return k;
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

/** What one POST came to, before the retry rules judge it. */
type Answer =
  | { kind: 'status'; status: number; reason: string; body: string; retryAfter: string | undefined }
  | { kind: 'error'; error: unknown; stale: boolean }
  | { kind: 'cut'; error: unknown }
  /** Node refused to make the request (a header value it does not take, say): repeating it cannot help */
  | { kind: 'invalid'; error: unknown }
  | { kind: 'timeout' }
  | { kind: 'aborted' };

export class HttpDelivery<T> {
  private readonly o: DeliveryOptions<T>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly units: (item: T) => number;
  private readonly maxQueueItems: number;
  private readonly maxItemsPerRequest: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly retryStatuses: ReadonlySet<number>;
  /** how every line starts: the sink and the endpoint without credentials or query */
  private readonly prefix: string;
  private readonly agent: http.Agent;
  /** aborts the request in flight and any wait when close() gives up */
  private readonly shutdown = new AbortController();

  private readonly queue = new Fifo<T>();
  /** items of the request being sent (not in the queue meanwhile: overflow cannot drop them) */
  private inFlight: readonly T[] = [];
  /** send what is queued even when it is less than a full request (flush(), a retry, a split, close) */
  private flushDue = false;
  private sending: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private closed = false;
  /** ends a wait early (close) */
  private wake: (() => void) | undefined;

  // The backoff: the delivery's, not a request's (see the top of this file).
  /** performance.now() before which no attempt starts */
  private nextAttemptAtMs = 0;
  /** consecutive retried failures */
  private backoffStep = 0;
  /** when the last attempt of the current failure started, and the gap before it (0: none) */
  private lastAttemptAtMs = 0;
  private lastGapMs = 0;

  /** after a too-large request: requests hold at most this many items until splitLeftItems have gone */
  private splitLimit = Infinity;
  private splitLeftItems = 0;

  private sent = 0;
  private dropped = 0;
  private failed = 0;
  private retries = 0;

  /** the failure kinds logged since delivery last worked (each logged once) */
  private readonly failures = new Set<string>();
  private failuresSinceLog = 0;
  /** performance.now() of the first failed attempt since delivery last worked; undefined while it works */
  private failingSinceMs: number | undefined;
  private droppedAtFailure = 0;
  private overflowing = false;
  /** credentials of the last request's Authorization header, masked too */
  private sentCredentials: string[] = [];
  private bugLogged = false;

  constructor(options: DeliveryOptions<T>) {
    const positive = (v: number | undefined, dflt: number, what: string): number => {
      if (v === undefined) return dflt;
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${options.name}: ${what} must be a positive number, not ${v}`);
      return v;
    };
    const positiveInt = (v: number | undefined, dflt: number, what: string): number => {
      const n = positive(v, dflt, what);
      if (!Number.isInteger(n)) throw new RangeError(`${options.name}: ${what} must be a positive integer, not ${v}`);
      return n;
    };
    const { protocol } = options.endpoint;
    if (protocol !== 'http:' && protocol !== 'https:') throw new TypeError(`${options.name}: endpoint must be http or https`);
    this.o = options;
    this.log = options.log;
    this.now = options.now ?? Date.now;
    this.units = options.units ?? (() => 1);
    this.maxQueueItems = positiveInt(options.maxQueueItems, 1, 'maxQueueItems');
    this.maxItemsPerRequest = positiveInt(options.maxItemsPerRequest, 1, 'maxItemsPerRequest');
    positive(options.maxBodyBytes, 1, 'maxBodyBytes');
    this.initialBackoffMs = positive(options.initialBackoffMs, DEFAULT_INITIAL_BACKOFF_MS, 'initialBackoffMs');
    this.maxBackoffMs = positive(options.maxBackoffMs, DEFAULT_MAX_BACKOFF_MS, 'maxBackoffMs');
    this.requestTimeoutMs = positive(options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
    this.closeTimeoutMs = positive(options.closeTimeoutMs, DEFAULT_CLOSE_TIMEOUT_MS, 'closeTimeoutMs');
    this.retryStatuses = new Set(options.retryStatuses ?? []);
    this.prefix = `${options.name} to ${endpointForLogs(options.endpoint)}`;
    // one socket, kept alive: one request at a time keeps order
    const agentOptions = { keepAlive: true, maxSockets: 1 };
    this.agent = protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  }

  /** Queues one item; see pushAll(). */
  push(item: T): void {
    this.pushAll([item]);
  }

  /**
   * Queues items; when the queue is then over its bound, the oldest go
   * (counted in dropped). Sends once a full request is queued. After
   * close() the items are counted as dropped.
   */
  pushAll(items: readonly T[]): void {
    if (items.length === 0) return;
    if (this.closed) {
      for (const item of items) this.gone(item);
      return;
    }
    for (const item of items) this.queue.push(item);
    this.trim();
    this.kick();
  }

  /** Sends what is queued, a partial request too (a sink's flush timer). */
  flush(): void {
    this.flushDue = true;
    this.kick();
  }

  /** Counts units a sink lost before they reached the queue (one it could not encode, events after close). */
  drop(units: number): void {
    this.dropped += units;
  }

  /** How long every attempt has failed (ms): 0 while delivery works or nothing was tried. */
  failingForMs(): number {
    return this.failingSinceMs === undefined ? 0 : performance.now() - this.failingSinceMs;
  }

  stats(): DeliveryStats {
    return {
      sent: this.sent,
      dropped: this.dropped,
      failed: this.failed,
      queueDepth: this.queue.length + this.inFlight.length,
      retries: this.retries,
    };
  }

  /**
   * Sends what is queued, trying at once even during a backoff, and waits
   * (closeTimeoutMs at most) until it is delivered or given up on; what is
   * left then counts as dropped. Later pushes are counted as dropped.
   */
  close(): Promise<void> {
    this.closing ??= this.finish();
    return this.closing;
  }

  private async finish(): Promise<void> {
    this.closed = true;
    this.flushDue = true;
    // a backoff under way would eat into the time left: try at once
    this.nextAttemptAtMs = 0;
    this.wake?.();
    const droppedBefore = this.dropped;
    this.kick();
    // not unref'd: the process waits for this flush, up to the deadline
    const deadline = setTimeout(() => this.shutdown.abort(), this.closeTimeoutMs);
    try {
      while (this.sending) await this.sending;
    } finally {
      clearTimeout(deadline);
    }
    for (const item of this.queue.take(this.queue.length)) this.gone(item);
    if (this.shutdown.signal.aborted) {
      this.warn(`gave up at exit after ${this.closeTimeoutMs / 1000} s; ${count(this.dropped - droppedBefore, this.o.unitNoun)} not delivered`);
    }
    this.agent.destroy();
  }

  /** An item that will never be delivered: counted as dropped, and released. */
  private gone(item: T): void {
    this.dropped += this.units(item);
    this.o.release?.(item);
  }

  /** Drops the oldest items while the queue is over its bound and they may go. */
  private trim(): void {
    let over = this.queue.length - this.maxQueueItems;
    if (over <= 0) return;
    const newest = this.queue.last() as T;
    let gone = 0;
    while (over > 0) {
      const oldest = this.queue.peek() as T;
      if (this.o.mayDrop && !this.o.mayDrop(oldest, newest)) break;
      this.queue.drop(1);
      this.gone(oldest);
      over--;
      gone++;
    }
    if (gone > 0 && !this.overflowing) {
      this.overflowing = true;
      const note = this.o.overflowNote ? `; ${this.o.overflowNote}` : '';
      this.warn(`queue full (${count(this.maxQueueItems, this.o.itemNoun)}); dropping the oldest (counted in convis_sink_dropped_total${note})`);
    }
  }

  /** Whether there is a request to send now. */
  private ready(): boolean {
    const n = this.queue.length;
    if (n === 0) {
      this.flushDue = false;
      return false;
    }
    return this.flushDue || n >= this.maxItemsPerRequest;
  }

  private kick(): void {
    if (this.sending || this.shutdown.signal.aborted || !this.ready()) return;
    this.sending = this.sendLoop().finally(() => {
      this.sending = undefined;
      // something queued while the loop was ending
      this.kick();
    });
  }

  /** The one sender: requests strictly in order, each after the backoff deadline. Never rejects. */
  private async sendLoop(): Promise<void> {
    while (!this.shutdown.signal.aborted && this.ready()) {
      await this.untilDeadline();
      if (this.shutdown.signal.aborted || this.queue.length === 0) continue;
      // taken at the deadline, not before: whatever is oldest then goes first
      const items = this.queue.take(Math.min(this.maxItemsPerRequest, this.splitLimit));
      this.inFlight = items;
      try {
        await this.attempt(items);
      } catch (e) {
        // a bug, not a delivery failure: count it and go on
        for (const item of items) this.gone(item);
        if (!this.bugLogged) {
          this.bugLogged = true;
          this.warn(`internal error (${(e as Error)?.message ?? String(e)}); request dropped`);
        }
      } finally {
        this.inFlight = [];
      }
      if (this.queue.length === 0) this.overflowing = false;
    }
  }

  /** Waits until the backoff deadline; close() and the close deadline end it early. */
  private async untilDeadline(): Promise<void> {
    for (;;) {
      const ms = this.nextAttemptAtMs - performance.now();
      if (ms <= 0 || this.shutdown.signal.aborted) return;
      await this.sleep(ms);
    }
  }

  /** One request of these items, judged by the retry rules; items to retry go back to the head of the queue. */
  private async attempt(items: T[]): Promise<void> {
    const body = await this.o.encode(items);
    if (this.o.maxBodyBytes !== undefined && body.length > this.o.maxBodyBytes) {
      if (this.split(items)) return;
      this.refused(items, 'too-large', `one ${this.o.itemNoun} is too large even alone (${body.length} bytes, over the limit of ${this.o.maxBodyBytes})`);
      return;
    }
    let headers: Record<string, string>;
    try {
      headers = await this.o.headers();
    } catch (e) {
      // the sink could not make its headers (e.g. an unreadable token file): may work later
      const message = (e as Error)?.message ?? String(e);
      this.retry(items, `headers:${message}`, message, undefined);
      return;
    }
    // the gap before this attempt, while attempts fail one after another (the backoff's floor)
    const startMs = performance.now();
    this.lastGapMs = this.lastAttemptAtMs > 0 ? startMs - this.lastAttemptAtMs : 0;
    this.lastAttemptAtMs = startMs;
    let answer = await this.post(body, headers);
    if (answer.kind === 'error' && answer.stale) {
      // a kept-alive connection the server had already closed: the request never reached it; once more at once, on a new one
      answer = await this.post(body, headers);
    }
    switch (answer.kind) {
      case 'aborted':
        for (const item of items) this.gone(item);
        return;
      case 'timeout':
        this.retry(items, 'net:timeout', `no answer within ${this.requestTimeoutMs / 1000} s`, undefined);
        return;
      case 'cut':
        this.retry(items, 'net:cut', `answer cut off (${errorText(answer.error)})`, undefined);
        return;
      case 'invalid':
        this.refused(items, 'invalid', `cannot make the request (${errorText(answer.error)})`);
        return;
      case 'error': {
        const code = (answer.error as NodeJS.ErrnoException)?.code ?? 'error';
        this.retry(items, `net:${code}`, errorText(answer.error), undefined);
        return;
      }
      case 'status': {
        const { status } = answer;
        if (status >= 200 && status < 300) {
          this.delivered(items);
          return;
        }
        if (status === 413 && this.split(items)) {
          // an answer, so the endpoint is up: no backoff for the halves
          this.resetBackoff();
          return;
        }
        let quoted = answer.body.replace(/\s+/g, ' ').trim();
        if (quoted.length > MAX_BODY_QUOTED) quoted = `${quoted.slice(0, MAX_BODY_QUOTED)}…`;
        if (quoted.toLowerCase() === answer.reason.toLowerCase()) quoted = '';
        const hint = this.o.hint?.(status) ?? defaultHint(status);
        const what = `${status} ${answer.reason}${quoted ? `: ${quoted}` : ''}${hint ? ` (${hint})` : ''}`;
        if (status === 429 || status >= 500 || this.retryStatuses.has(status)) {
          this.retry(items, `status:${status}`, what, parseRetryAfter(answer.retryAfter, this.now()));
        } else {
          this.refused(items, `status:${status}`, what);
        }
      }
    }
  }

  private delivered(items: readonly T[]): void {
    this.failingSinceMs = undefined;
    for (const item of items) {
      this.sent += this.units(item);
      this.o.release?.(item);
    }
    this.resetBackoff();
    this.splitDone(items.length);
    if (this.failures.size === 0) return;
    const lost = this.dropped - this.droppedAtFailure;
    this.info(
      `delivering again after ${count(this.failuresSinceLog, 'failed attempt')}${lost > 0 ? ` (${count(lost, this.o.unitNoun)} dropped meanwhile)` : ''}`,
    );
    this.failures.clear();
    this.failuresSinceLog = 0;
  }

  /** An answer that will not get better by repeating the request: it goes, counted as failed. */
  private refused(items: readonly T[], key: string, what: string): void {
    this.failed++;
    this.resetBackoff();
    this.splitDone(items.length);
    this.failing(key, `${what}; request dropped, not retried`);
    for (const item of items) this.gone(item);
  }

  /** A failure that may pass: the items go back to the head of the queue, and the delivery waits. */
  private retry(items: readonly T[], key: string, what: string, retryAfterMs: number | undefined): void {
    this.retries++;
    this.queue.putBack(items);
    // they were due; and put back, they may push the queue over its bound
    this.flushDue = true;
    this.trim();
    const waitMs = this.backOff(retryAfterMs);
    this.failing(key, `${what}; retrying ${retryAfterMs === undefined ? 'with backoff' : 'when Retry-After says'}`);
    this.log.debug(`${this.prefix}: next attempt in ${Math.round(waitMs)} ms`);
  }

  /**
   * Sets the deadline of the next attempt and returns the wait. Equal
   * jitter on a doubling step, or what Retry-After asks; and never a
   * shorter gap between attempts than the one before (up to the longest
   * step), which a random half-step at the cap would otherwise give.
   */
  private backOff(retryAfterMs: number | undefined): number {
    const nowMs = performance.now();
    let waitMs: number;
    if (retryAfterMs !== undefined) {
      waitMs = retryAfterMs;
    } else {
      const stepMs = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** Math.min(this.backoffStep, 30));
      const sinceAttemptMs = nowMs - this.lastAttemptAtMs;
      const floorMs = Math.min(this.lastGapMs, this.maxBackoffMs) - sinceAttemptMs;
      waitMs = Math.max(stepMs / 2 + (Math.random() * stepMs) / 2, floorMs);
    }
    this.backoffStep++;
    this.nextAttemptAtMs = nowMs + waitMs;
    return waitMs;
  }

  private resetBackoff(): void {
    this.backoffStep = 0;
    this.nextAttemptAtMs = 0;
    this.lastAttemptAtMs = 0;
    this.lastGapMs = 0;
  }

  /** Halves a request that is too large; false when it is one item the sink cannot cut. */
  private split(items: readonly T[]): boolean {
    if (items.length === 1) {
      const item = items[0] as T;
      const parts = this.o.splitItem?.(item);
      if (parts === undefined || parts.length < 2) return false;
      this.o.release?.(item);
      items = parts;
    }
    if (items.length <= 1) return false;
    this.queue.putBack(items);
    this.splitLimit = Math.ceil(items.length / 2);
    this.splitLeftItems = Math.max(this.splitLeftItems, items.length);
    // the halves were due: send the second without waiting for a flush
    this.flushDue = true;
    this.log.debug(`${this.prefix}: request of ${count(items.length, this.o.itemNoun)} too large, halved`);
    return true;
  }

  private splitDone(n: number): void {
    if (this.splitLeftItems === 0) return;
    this.splitLeftItems -= n;
    if (this.splitLeftItems <= 0) {
      this.splitLeftItems = 0;
      this.splitLimit = Infinity;
    }
  }

  private failing(key: string, message: string): void {
    this.failingSinceMs ??= performance.now();
    this.failuresSinceLog++;
    if (this.failures.has(key)) return;
    if (this.failures.size === 0) this.droppedAtFailure = this.dropped;
    this.failures.add(key);
    this.warn(message);
  }

  /** `text` without any credential the sink holds, sent, or the process knows. */
  private mask(text: string): string {
    let out = text;
    for (const s of [...(this.o.secrets ?? []), ...this.sentCredentials]) {
      // a very short value (a one-letter header) would mask half the line and hide nothing
      if (s !== undefined && s.length >= 3) out = out.split(s).join(MASK);
    }
    return secrets.scrub(out);
  }

  private warn(message: string): void {
    this.log.warn(this.mask(`${this.prefix}: ${message}`));
  }

  private info(message: string): void {
    this.log.info(this.mask(`${this.prefix}: ${message}`));
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

  /** One POST; resolves with what came of it, never rejects. */
  private post(body: Buffer, sinkHeaders: Record<string, string>): Promise<Answer> {
    const signal = this.shutdown.signal;
    if (signal.aborted) return Promise.resolve({ kind: 'aborted' });
    const headers = { ...sinkHeaders, 'Content-Length': String(body.length) };
    const auth = Object.entries(headers).find(([name]) => name.toLowerCase() === 'authorization')?.[1];
    this.sentCredentials = auth === undefined ? [] : [auth, auth.replace(/^\S+ /, '')];
    const endpoint = this.o.endpoint;
    return new Promise<Answer>((resolve) => {
      let settled = false;
      const settle = (a: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(a);
      };
      let req: http.ClientRequest;
      try {
        req = (endpoint.protocol === 'https:' ? https : http).request(endpoint, { method: 'POST', headers, agent: this.agent });
      } catch (e) {
        resolve({ kind: 'invalid', error: e });
        return;
      }
      const timer = setTimeout(() => {
        req.destroy();
        settle({ kind: 'timeout' });
      }, this.requestTimeoutMs);
      const onAbort = () => {
        req.destroy();
        settle({ kind: 'aborted' });
      };
      signal.addEventListener('abort', onAbort);
      req.on('error', (e) => {
        const code = (e as NodeJS.ErrnoException).code;
        settle({ kind: 'error', error: e, stale: req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE') });
      });
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let kept = 0;
        // read to the end even when it is not kept, so the socket can be reused
        res.on('data', (c: Buffer) => {
          if (kept < MAX_BODY_READ) {
            chunks.push(c);
            kept += c.length;
          }
        });
        res.on('error', (e) => settle({ kind: 'cut', error: e }));
        res.on('close', () => {
          if (!res.complete) settle({ kind: 'cut', error: new Error('connection closed') });
        });
        res.on('end', () => {
          const ra = res.headers['retry-after'];
          settle({
            kind: 'status',
            status,
            reason: res.statusMessage || http.STATUS_CODES[status] || '',
            body: Buffer.concat(chunks).toString('utf8'),
            retryAfter: Array.isArray(ra) ? ra[0] : ra,
          });
        });
      });
      req.end(body);
    });
  }
}

function defaultHint(status: number): string | undefined {
  if (status === 413) return 'request too large for the endpoint';
  if (status >= 300 && status < 400) return 'redirects are not followed; give the final URL as endpoint';
  return undefined;
}
