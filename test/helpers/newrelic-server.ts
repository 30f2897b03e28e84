/**
 * A local stand-in for New Relic's Event API, on 127.0.0.1 and a random
 * port. New Relic's servers cannot be reached from where the tests run, so
 * this implements the contract as New Relic documents it ("Send custom
 * events with our Event API", docs.newrelic.com/docs/data-apis/ingest-apis/
 * event-api/introduction-event-api, and "Data requirements and limits for
 * custom event data"):
 *
 * - POST /v1/accounts/<account>/events only; anything else 404.
 * - The key in X-Insert-Key (insert key, older docs) or Api-Key (current
 *   docs); missing or wrong: 403.
 * - Content-Type application/json, else 415. An empty body: 400.
 * - More than 1 MB (10^6 bytes) on the wire: 413. More than 2000 events
 *   (the documented "Max events per API call: 2K"): 413 too.
 * - Success: 200 {"success":true,"uuid":"<uuid>"}.
 * - Per-event limits (at most 255 attributes, names at most 255
 *   characters, string values at most 4096, values strings or numbers
 *   only, eventType of letters, digits, "_" and ":", timestamp an
 *   integer): New Relic accepts the request and drops only the offending
 *   events, reporting them as NrIntegrationError events later; here they
 *   go to integrationErrors and are not recorded as accepted.
 *
 * Two points are stricter than the real API, on purpose, so that a sink
 * bug fails loudly instead of vanishing into NrIntegrationError: the body
 * must be gzip (Content-Encoding: gzip; New Relic also takes deflate or
 * no compression), and a body that is not a JSON array of objects that
 * each have an eventType is answered 400 (New Relic answers 200 and
 * reports the parse error later).
 *
 * Programmable faults for the next requests: answer with a status (and
 * headers, e.g. 429 with Retry-After), close the socket without an
 * answer, or never answer (a timeout). A request that meets a fault is
 * read in full but nothing of it is accepted.
 */
import { randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export const MAX_BODY_BYTES = 1_000_000;
export const MAX_EVENTS_PER_POST = 2000;

export interface FakeNewRelicOptions {
  account: string;
  key: string;
  /** compressed bytes accepted per POST (default 1,000,000, the documented limit) */
  maxBytes?: number;
  /**
   * Called with every event accepted. With keepEvents false the events are
   * only counted (accepted) and passed here, not kept: for long runs (the
   * soak) that would otherwise hold millions of them.
   */
  onEvent?: (e: NrEvent) => void;
  /** default true */
  keepEvents?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** body bytes as received (compressed) */
  bytes: number;
  /** events in the body, when it could be parsed */
  events: number;
  status: number;
  /** set when a programmed fault answered this request */
  fault?: string;
}

export type Fault =
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  | { kind: 'drop' }
  | { kind: 'stall' };

export type NrEvent = Record<string, unknown>;

const EVENT_TYPE = /^[A-Za-z0-9_:]+$/;

/** The per-event checks New Relic applies after accepting a request; null when the event is stored. */
function eventProblem(e: NrEvent): string | null {
  const names = Object.keys(e);
  if (names.length > 255) return 'event exceeded maximum number of attributes';
  for (const name of names) {
    const v = e[name];
    if (name.length === 0) return 'attribute is missing attribute name';
    if (name.length > 255) return 'attribute name exceeded maximum length';
    if (typeof v === 'string') {
      if (v.length > 4096) return 'attribute value exceeded maximum length';
    } else if (typeof v !== 'number') {
      return `attribute ${name} is not a string or a number`;
    }
  }
  if (typeof e.eventType !== 'string' || !EVENT_TYPE.test(e.eventType)) return 'eventType cannot contain the characters used';
  if ('timestamp' in e && !Number.isInteger(e.timestamp)) return 'timestamp is not an integer';
  return null;
}

export class FakeNewRelic {
  /** events accepted, in the order they arrived */
  readonly events: NrEvent[] = [];
  /** events accepted, kept or not */
  accepted = 0;
  readonly requests: RecordedRequest[] = [];
  /** events New Relic would drop after accepting them (NrIntegrationError) */
  readonly integrationErrors: string[] = [];
  /** the most requests ever in progress at once */
  maxConcurrent = 0;
  private active = 0;
  private readonly faults: Fault[] = [];
  private readonly waiters: { until: () => boolean; resolve: () => void }[] = [];
  readonly maxBytes: number;

  private constructor(
    private readonly server: http.Server,
    readonly account: string,
    readonly key: string,
    maxBytes: number | undefined,
  ) {
    this.maxBytes = maxBytes ?? MAX_BODY_BYTES;
  }

  private onEvent: ((e: NrEvent) => void) | undefined;
  private keepEvents = true;

  static async start(o: FakeNewRelicOptions): Promise<FakeNewRelic> {
    const server = http.createServer();
    const fake = new FakeNewRelic(server, o.account, o.key, o.maxBytes);
    fake.onEvent = o.onEvent;
    fake.keepEvents = o.keepEvents ?? true;
    server.on('request', (req, res) => fake.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return fake;
  }

  /** http://127.0.0.1:<port> */
  get base(): URL {
    const a = this.server.address() as AddressInfo;
    return new URL(`http://127.0.0.1:${a.port}`);
  }

  /** The events URL of this account. */
  get url(): URL {
    return new URL(`/v1/accounts/${this.account}/events`, this.base);
  }

  /** The next n requests are answered with this status (and headers). */
  failNext(n: number, status: number, headers?: Record<string, string>): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: 'status', status, ...(headers ? { headers } : {}) });
  }

  /** The next n requests have their connection closed without an answer. */
  dropNext(n: number): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: 'drop' });
  }

  /** The next n requests are never answered (the client has to time out). */
  stallNext(n: number): void {
    for (let i = 0; i < n; i++) this.faults.push({ kind: 'stall' });
  }

  /** Resolves once the server has accepted at least n events (rejects after timeoutMs). */
  waitForEvents(n: number, timeoutMs = 5000): Promise<void> {
    return this.waitFor(() => this.events.length >= n, timeoutMs, `${n} events`);
  }

  /** Resolves once at least n requests have been answered or dropped. */
  waitForRequests(n: number, timeoutMs = 5000): Promise<void> {
    return this.waitFor(() => this.requests.length >= n, timeoutMs, `${n} requests`);
  }

  private waitFor(until: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (until()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new Error(`fake New Relic: no ${what} within ${timeoutMs} ms (events ${this.events.length}, requests ${this.requests.length})`));
      }, timeoutMs);
      this.waiters.push({
        until,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }

  private notify(): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i];
      if (w && w.until()) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.active++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.active);
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      // keep reading past the limit (so the client sees the 413, not a reset), but stop storing
      if (bytes <= this.maxBytes) chunks.push(c);
    });
    req.on('end', () => {
      const rec: RecordedRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, bytes, events: 0, status: 0 };
      const fault = this.faults.shift();
      if (fault?.kind === 'drop') {
        rec.fault = 'drop';
        this.finish(rec);
        req.socket.destroy();
        return;
      }
      if (fault?.kind === 'stall') {
        rec.fault = 'stall';
        this.finish(rec);
        // hold the request; the client gives up and closes the socket
        return;
      }
      if (fault?.kind === 'status') {
        rec.fault = `status ${fault.status}`;
        this.answer(res, rec, fault.status, { error: http.STATUS_CODES[fault.status] ?? 'fault' }, fault.headers);
        return;
      }
      this.validate(req, Buffer.concat(chunks), res, rec);
    });
    req.on('error', () => undefined);
  }

  private validate(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse, rec: RecordedRequest): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'POST' || path !== `/v1/accounts/${this.account}/events`) {
      this.answer(res, rec, 404, { error: 'not found' });
      return;
    }
    const insertKey = req.headers['x-insert-key'];
    const apiKey = req.headers['api-key'];
    if (insertKey !== this.key && apiKey !== this.key) {
      this.answer(res, rec, 403, { error: 'invalid key' });
      return;
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') {
      this.answer(res, rec, 415, { error: 'content type must be application/json' });
      return;
    }
    if (rec.bytes === 0) {
      this.answer(res, rec, 400, { error: 'unable to process empty request' });
      return;
    }
    if (rec.bytes > this.maxBytes) {
      this.answer(res, rec, 413, { error: 'content too large' });
      return;
    }
    if ((req.headers['content-encoding'] ?? '').toLowerCase() !== 'gzip') {
      this.answer(res, rec, 400, { error: 'this test server takes gzip bodies only' });
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(gunzipSync(body).toString('utf8'));
    } catch {
      this.answer(res, rec, 400, { error: 'error parsing JSON payload' });
      return;
    }
    if (!Array.isArray(parsed) || !parsed.every((e) => typeof e === 'object' && e !== null && !Array.isArray(e) && 'eventType' in e)) {
      this.answer(res, rec, 400, { error: 'body must be a JSON array of objects with eventType' });
      return;
    }
    rec.events = parsed.length;
    if (parsed.length > MAX_EVENTS_PER_POST) {
      this.answer(res, rec, 413, { error: `more than ${MAX_EVENTS_PER_POST} events` });
      return;
    }
    for (const e of parsed as NrEvent[]) {
      const problem = eventProblem(e);
      if (problem) this.integrationErrors.push(problem);
      else {
        this.accepted++;
        this.onEvent?.(e);
        if (this.keepEvents) this.events.push(e);
      }
    }
    this.answer(res, rec, 200, { success: true, uuid: randomUUID() });
  }

  private answer(res: http.ServerResponse, rec: RecordedRequest, status: number, body: unknown, headers: Record<string, string> = {}): void {
    rec.status = status;
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
    this.finish(rec);
  }

  private finish(rec: RecordedRequest): void {
    this.active--;
    this.requests.push(rec);
    this.notify();
  }
}
