/**
 * newrelic sink: every connection event as one New Relic custom event
 * (eventType ContainerVisibility), sent to the Event API in gzipped JSON
 * batches.
 *
 * What the Event API documents, and what this file relies on (New Relic
 * docs, "Send custom events with our Event API",
 * docs.newrelic.com/docs/data-apis/ingest-apis/event-api/introduction-event-api,
 * and "Data requirements and limits for custom event data",
 * docs.newrelic.com/docs/data-apis/custom-data/custom-events/data-requirements-limits-custom-event-data):
 *
 * - POST https://insights-collector.newrelic.com/v1/accounts/<account>/events;
 *   EU accounts use insights-collector.eu01.nr-data.net. The body is a JSON
 *   array of flat objects, each with an eventType; values are strings or
 *   numbers only (no objects, arrays or nulls: "the database does not
 *   store any data with a null value"). Compressed with gzip or deflate,
 *   Content-Type application/json. "Always use compression with every
 *   payload. This allows you to send more data": the size limit is on the
 *   bytes on the wire, so it is checked after gzip.
 * - Limits: 1 MB (10^6 bytes) per POST; up to 2000 events per POST ("Max
 *   events per API call: 2K", in the limits list of the same page until
 *   2021); at most 255 attributes per event (the data requirements page
 *   says 254; this sink sends at most 43); attribute names at most 255
 *   characters; attribute values at most 4096 characters (longer values
 *   make New Relic drop the whole event, so they are truncated here).
 * - timestamp: Unix epoch in seconds or milliseconds, an integer ("Do not
 *   use a decimal for the timestamp"). Milliseconds here.
 * - Key: the older docs send an Insights insert key as X-Insert-Key; the
 *   current docs send a license key as Api-Key and keep insert keys as an
 *   accepted alternative. This sink sends X-Insert-Key (the key= option
 *   is an insert key); options.keyHeader switches to Api-Key.
 * - Responses: 200 {"success":true,"uuid":...} once the headers and the
 *   size are valid (the payload itself is parsed later; bad events become
 *   NrIntegrationError events in the account). 400 empty or invalid
 *   request, 403 missing or invalid key, 408 request timed out, 413
 *   content too large, 415 invalid content type, 429 rate limited
 *   (100,000 POSTs per minute per account, for the rest of the minute),
 *   503 "service temporarily unavailable: retry request". Calls over 10 s
 *   time out.
 *
 * Delivery: write() converts and queues (bounded; the oldest go first when
 * it is full); a timer and a full batch start sends; one request is in
 * flight at a time, so order is kept. 2xx: sent. 413 or an oversized
 * gzip: the batch is halved until it fits (one event that alone is too
 * big is dropped). 408, 429, 5xx, network errors and timeouts: the same
 * batch is retried with exponential backoff and jitter, or after
 * Retry-After. Any other status (400, 403, 415, ...): the batch is
 * dropped and counted as failed. Failures are logged when they start and
 * when sending works again, never per request; no log line holds the key.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { EnvCredentials } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { readCredentialFile } from '../config/secrets.js';
import type { ConnectionEvent } from '../metadata/event.js';
import type { Logger } from '../util/log.js';
import type { Sink, SinkStats } from './sink.js';

const gzipAsync = promisify(gzip);

/** Documented limits (see the top of this file). */
export const EVENT_API_MAX_EVENTS_PER_POST = 2000;
export const EVENT_API_MAX_BYTES_PER_POST = 1_000_000;
export const EVENT_API_MAX_VALUE_CHARS = 4096;
export const NEW_RELIC_EVENT_TYPE = 'ContainerVisibility';

export type NewRelicRegion = 'US' | 'EU';

const HOSTS: Record<NewRelicRegion, string> = {
  US: 'insights-collector.newrelic.com',
  EU: 'insights-collector.eu01.nr-data.net',
};

export interface NewRelicOptions {
  account: string;
  /** the insert key: sent as a header, never logged */
  key: string;
  region: NewRelicRegion;
  /** the full events URL */
  endpoint: URL;
  /** default 2000 (the documented maximum) */
  maxEventsPerPost?: number;
  /** gzipped bytes per request, default 1,000,000 (the documented maximum) */
  maxBytesPerPost?: number;
  /** events waiting to be sent, default 100,000; beyond it the oldest are dropped */
  maxQueueEvents?: number;
  /** how often queued events are sent, default 5000 ms */
  flushMs?: number;
  /** first retry delay, default 500 ms; doubles per attempt, with jitter */
  backoffMs?: number;
  /** longest retry delay, default 30,000 ms */
  maxBackoffMs?: number;
  /** a request with no answer for this long is abandoned and retried, default 15,000 ms (the API times out at 10 s) */
  requestTimeoutMs?: number;
  /** how long close() waits for queued events to be sent, default 10,000 ms */
  closeTimeoutMs?: number;
  /** the header that carries the key, default X-Insert-Key (an insert key); Api-Key for a license key */
  keyHeader?: 'X-Insert-Key' | 'Api-Key';
}

/** The keys of --sink newrelic,... and what they mean (for errors and --help). */
export const NEW_RELIC_SPEC_KEYS: Readonly<Record<string, string>> = {
  account: 'New Relic account id (digits), required',
  key: 'Insights insert key (never printed); or key_file=, or $CONVIS_NEWRELIC_KEY',
  key_file: 'file holding the insert key, read at start',
  region: 'US (default) or EU',
  endpoint: 'http(s) URL to send to instead; a bare host gets /v1/accounts/<account>/events appended',
};

/** The default events URL of a region. */
export function eventApiUrl(region: NewRelicRegion, account: string): URL {
  return new URL(`https://${HOSTS[region]}/v1/accounts/${account}/events`);
}

/**
 * Parses the options of `--sink newrelic,account=<id>,key=<insert key>[,region=US|EU][,endpoint=<url>]`.
 * endpoint: a URL whose path is empty or "/" is a base, and
 * /v1/accounts/<account>/events is appended; any other path is used as
 * given (a proxy or a test server with its own path). Errors are one
 * ConfigError line each and name keys, never values: a value may be the
 * key, typed into the wrong place.
 */
export function parseNewRelicOptions(o: Record<string, string>, env: EnvCredentials = {}): NewRelicOptions {
  const where = '--sink newrelic';
  for (const k of Object.keys(o)) {
    if (!Object.hasOwn(NEW_RELIC_SPEC_KEYS, k)) {
      throw new ConfigError(`${where}: unknown option "${k}" (known: ${Object.keys(NEW_RELIC_SPEC_KEYS).join(', ')})`);
    }
  }
  const account = (o.account ?? '').trim();
  if (account === '') throw new ConfigError(`${where}: account= is required (the New Relic account id)`);
  if (!/^[0-9]{1,20}$/.test(account)) throw new ConfigError(`${where}: account must be the numeric New Relic account id`);
  const fail = (message: string): never => {
    throw new ConfigError(`${where}: ${message}`);
  };
  if (o.key !== undefined && o.key_file !== undefined) fail('key and key_file exclude each other: give one');
  // on the command line, else in a file, else in the environment
  const given = o.key_file !== undefined ? readCredentialFile('key_file', o.key_file, fail, (p) => readFileSync(p, 'utf8')) : (o.key ?? env.newrelicKey ?? '');
  const key = given.trim();
  if (key === '') fail('key= is required (an Insights insert key; or key_file=, or $CONVIS_NEWRELIC_KEY)');
  // a header value: printable ASCII, no spaces (anything else is a paste error)
  if (!/^[\x21-\x7e]+$/.test(key)) throw new ConfigError(`${where}: key has characters no insert key has (spaces or non-ASCII)`);
  const regionText = (o.region ?? 'US').trim().toUpperCase();
  if (regionText !== 'US' && regionText !== 'EU') throw new ConfigError(`${where}: region must be US or EU`);
  const region: NewRelicRegion = regionText;
  let endpoint = eventApiUrl(region, account);
  if (o.endpoint !== undefined) {
    let u: URL;
    try {
      u = new URL(o.endpoint.trim());
    } catch {
      throw new ConfigError(`${where}: endpoint is not a URL (expected http://host[:port][/path] or https://...)`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`${where}: endpoint must be an http:// or https:// URL`);
    if (u.username !== '' || u.password !== '') throw new ConfigError(`${where}: endpoint must not carry a user or password (the key goes in key=)`);
    endpoint = u.pathname === '' || u.pathname === '/' ? new URL(`/v1/accounts/${account}/events`, u) : u;
  }
  return { account, key, region, endpoint };
}

/**
 * Every attribute a ContainerVisibility event can carry: name, type and
 * meaning. toNewRelicEvent() can only set names listed here, so the README
 * table rendered from this cannot drift from the code. "source" is the
 * side that opened the connection: for outbound events (connect,
 * connect_failed, close of an outbound socket) the local side, for inbound
 * ones (accept, close of an accepted socket) the remote side.
 */
export const NEW_RELIC_ATTRIBUTES = {
  eventType: { type: 'string', description: '`ContainerVisibility`' },
  timestamp: { type: 'number', description: 'when the kernel saw the event, milliseconds since the Unix epoch' },
  event: { type: 'string', description: '`connect`, `accept`, `update`, `close`, `connect_failed`, `listen`, `unlisten` or `alert`' },
  proto: { type: 'string', description: '`tcp` or `udp`' },
  direction: { type: 'string', description: '`outbound` (this side connected) or `inbound` (this side accepted)' },
  'source.ip': { type: 'string', description: 'the side that initiated the connection: local for outbound, remote for inbound' },
  'source.port': { type: 'number', description: 'its port' },
  'destination.ip': { type: 'string', description: 'the side that was connected to: remote for outbound, local for inbound' },
  'destination.port': { type: 'number', description: 'its port' },
  'local.ip': { type: 'string', description: 'this node\'s side of the socket (IPv4-mapped IPv6 shown as IPv4)' },
  'local.port': { type: 'number', description: 'its port' },
  'remote.ip': { type: 'string', description: 'the peer (absent on listen and unlisten)' },
  'remote.port': { type: 'number', description: 'its port' },
  'remote.name': { type: 'string', description: 'the name the remote address was resolved from, when a DNS answer on the node said so' },
  'process.pid': { type: 'number', description: 'host pid of the process behind the socket; process.* absent when no process ever owned it' },
  'process.ppid': { type: 'number', description: 'its parent\'s pid' },
  'process.uid': { type: 'number', description: 'its user id' },
  'process.comm': { type: 'string', description: 'kernel task name' },
  'process.cmd': { type: 'string', description: 'command line as `--cmdline` says (redacted by default; at most 4096 characters)' },
  'process.cmdTruncated': { type: 'number', description: '1 when process.cmd was cut (longer than 4096 characters, or only its first 512 bytes could be read)' },
  'process.exe': { type: 'string', description: 'executable path' },
  'container.id': { type: 'string', description: 'container id (64 hex); container.* absent outside containers' },
  'container.name': { type: 'string', description: 'container name, absent when the runtime could not be asked' },
  'container.image': { type: 'string', description: 'image, absent when the runtime could not be asked' },
  'container.runtime': { type: 'string', description: '`docker`, `podman`, `containerd`, `cri-o`, or `cri`' },
  'k8s.pod': { type: 'string', description: 'pod name; k8s.* absent outside pods' },
  'k8s.namespace': { type: 'string', description: 'pod namespace' },
  'k8s.pod.uid': { type: 'string', description: 'pod uid (present also when the runtime could not be asked)' },
  'remote.k8s.pod': { type: 'string', description: 'the peer\'s pod, when the remote address is a pod on this node' },
  'remote.k8s.namespace': { type: 'string', description: 'the peer pod\'s namespace' },
  node: { type: 'string', description: 'node name' },
  'cgroup.id': { type: 'number', description: 'the socket\'s cgroup v2 id' },
  netns: { type: 'number', description: 'the socket\'s network namespace inode' },
  'conn.id': { type: 'number', description: 'the same on every event of one socket (UDP: of one socket and remote endpoint)' },
  existing: { type: 'number', description: '1 on `connect`, `accept` and `listen` events of sockets older than the agent (found at start)' },
  'bytes.tx': { type: 'number', description: '`update`: payload bytes sent since the previous report; `close`: lifetime total, retransmissions excluded; existing `connect`/`accept`: sent before the agent started' },
  'bytes.rx': { type: 'number', description: '`update`: payload bytes received since the previous report; `close`: lifetime total' },
  'bytes.tx.delta': { type: 'number', description: '`close` of a connection part of whose bytes was reported before: bytes sent since the previous report (sum `update` bytes.tx and this, else the close\'s bytes.tx, for exact totals)' },
  'bytes.rx.delta': { type: 'number', description: '`close`, likewise: bytes received since the previous report' },
  'datagrams.tx': { type: 'number', description: 'UDP `update`: datagrams sent since the previous report' },
  'datagrams.rx': { type: 'number', description: 'UDP `update`: datagrams received since the previous report' },
  'duration.ms': { type: 'number', description: '`close`: from the first SYN (or the accept) to the close; TCP `update`: so far' },
  'srtt.us': { type: 'number', description: '`close`, TCP `update`: smoothed round-trip time, microseconds' },
  retransmits: { type: 'number', description: '`close`: lifetime segments retransmitted; TCP `update`: since the previous report' },
  error: { type: 'string', description: '`connect_failed`, and an `alert` about one: errno name, e.g. `ECONNREFUSED`' },
  'policy.rule': { type: 'string', description: '`alert`: the policy rule the connection violates' },
  'policy.trigger': { type: 'string', description: '`alert`: the event that was judged (`connect`, `accept`, `connect_failed`, or a UDP flow\'s first `update`)' },
} as const satisfies Record<string, { type: 'string' | 'number'; description: string }>;

export type NewRelicAttribute = keyof typeof NEW_RELIC_ATTRIBUTES;
export type NewRelicEvent = Record<string, string | number | boolean>;

/** A string cut to the documented 4096-character limit, never inside a surrogate pair. */
function clip(s: string): string {
  if (s.length <= EVENT_API_MAX_VALUE_CHARS) return s;
  let end = EVENT_API_MAX_VALUE_CHARS;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return s.slice(0, end);
}

/**
 * One ConnectionEvent as a flat New Relic event: the facts of the JSON
 * stdout event under dotted names. Attributes whose value is unknown
 * (null or undefined) are left out, as New Relic stores no nulls.
 */
export function toNewRelicEvent(e: ConnectionEvent): NewRelicEvent {
  const o: NewRelicEvent = {};
  const set = (name: NewRelicAttribute, v: string | number | null | undefined): void => {
    if (v === null || v === undefined) return;
    o[name] = typeof v === 'string' ? clip(v) : v;
  };
  set('eventType', NEW_RELIC_EVENT_TYPE);
  // integer milliseconds: bigint division keeps it exact
  set('timestamp', e.timeSec * 1000 + Math.floor(e.timeNsec / 1_000_000));
  set('event', e.event);
  set('proto', e.proto);
  set('direction', e.direction);
  // source = the initiator: outbound, this side connected; inbound, the peer did
  const [src, dst] = e.direction === 'outbound' ? [e.local, e.remote] : [e.remote, e.local];
  set('source.ip', src?.ip);
  set('source.port', src?.port);
  set('destination.ip', dst?.ip);
  set('destination.port', dst?.port);
  set('local.ip', e.local.ip);
  set('local.port', e.local.port);
  set('remote.ip', e.remote?.ip);
  set('remote.port', e.remote?.port);
  set('remote.name', e.remote?.name);
  const p = e.process;
  if (p) {
    set('process.pid', p.pid);
    set('process.ppid', p.ppid);
    set('process.uid', p.uid);
    set('process.comm', p.comm);
    set('process.cmd', p.cmd);
    if (p.cmdTruncated) set('process.cmdTruncated', 1);
    set('process.exe', p.exe);
  }
  const c = e.container;
  if (c) {
    set('container.id', c.id);
    set('container.name', c.name);
    set('container.image', c.image);
    set('container.runtime', c.runtime);
  }
  const pod = e.pod;
  if (pod) {
    set('k8s.pod', pod.name);
    set('k8s.namespace', pod.namespace);
    set('k8s.pod.uid', pod.uid);
  }
  if (e.remotePod) {
    set('remote.k8s.pod', e.remotePod.name);
    set('remote.k8s.namespace', e.remotePod.namespace);
  }
  set('node', e.node);
  set('cgroup.id', e.cgroupId);
  set('netns', e.netns);
  set('conn.id', e.connId);
  if (e.existing) set('existing', 1);
  // each is set only where the event kind has it (see the JSON event)
  set('bytes.tx', e.bytesSent);
  set('bytes.rx', e.bytesReceived);
  set('bytes.tx.delta', e.bytesSentDelta);
  set('bytes.rx.delta', e.bytesReceivedDelta);
  set('datagrams.tx', e.datagramsSent);
  set('datagrams.rx', e.datagramsReceived);
  set('duration.ms', e.durationMs);
  set('srtt.us', e.srttUs);
  set('retransmits', e.retransmits);
  if (e.event === 'connect_failed' || e.event === 'alert') set('error', e.error);
  if (e.event === 'alert') {
    set('policy.rule', e.rule);
    set('policy.trigger', e.trigger);
  }
  return o;
}

export interface NewRelicSinkStats extends SinkStats {
  /** of dropped: events New Relic refused (400, 403, ...) and that are not retried */
  failed: number;
  /** events waiting or in flight */
  queueDepth: number;
}

export interface NewRelicSinkDeps {
  log: Logger;
  /** clock for Retry-After dates and the close deadline (ms since the epoch) */
  now?: () => number;
}

let cachedVersion: string | undefined;

/** convis's version, from package.json (dist/src/sinks -> the repository root). */
function version(): string {
  if (cachedVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
      cachedVersion = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      cachedVersion = 'unknown';
    }
  }
  return cachedVersion;
}

/** A FIFO with O(1) push and shift-from-front (a plain array's shift() is O(n)). */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(v: T): void {
    this.items.push(v);
  }
  /** Removes up to n items from the front. */
  take(n: number): T[] {
    const out = this.items.slice(this.head, this.head + n);
    this.head += out.length;
    this.compact();
    return out;
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

type PostResult =
  | { status: number; retryAfter: string | undefined }
  /** stale: a kept-alive socket the server had already closed (retried at once, as Node's docs advise) */
  | { error: NodeJS.ErrnoException; stale: boolean };
type Outcome = 'sent' | 'too-large' | 'rejected' | 'abandoned';

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`NewRelicSink: ${name} must be a positive number`);
  return v;
}

/** Retry-After as milliseconds from now: delta-seconds or an HTTP date. */
function retryAfterMs(v: string | undefined, now: number): number | undefined {
  if (v === undefined) return undefined;
  const t = v.trim();
  if (/^[0-9]+$/.test(t)) return Number(t) * 1000;
  const at = Date.parse(t);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The longest Retry-After obeyed: a server asking for more is retried after this. */
const MAX_RETRY_AFTER_MS = 5 * 60_000;

export class NewRelicSink implements Sink {
  readonly name = 'newrelic';
  private readonly o: NewRelicOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxEvents: number;
  private readonly maxBytes: number;
  private readonly maxQueue: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly host: string;
  private readonly headers: Record<string, string>;
  private readonly agent: http.Agent;
  private readonly timer: NodeJS.Timeout;

  private readonly queue = new Fifo<NewRelicEvent>();
  private readonly counters = { sent: 0, dropped: 0, failed: 0 };
  private inFlight = 0;
  private flushDue = false;
  private pumping: Promise<void> | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** set at the close deadline: stop retrying, count what is left as dropped */
  private abandoned = false;
  /** events of an in-flight batch given up at the close deadline (already in dropped) */
  private inFlightLost = 0;
  private request: http.ClientRequest | null = null;
  private wake: (() => void) | null = null;

  /** the failure being reported, so that it is logged once, not per request */
  private failing = false;
  private overflowing = false;
  private reportedTooLarge = false;

  constructor(options: NewRelicOptions, deps: NewRelicSinkDeps) {
    this.o = options;
    this.log = deps.log;
    this.now = deps.now ?? Date.now;
    this.maxEvents = Math.floor(positive('maxEventsPerPost', options.maxEventsPerPost, EVENT_API_MAX_EVENTS_PER_POST));
    this.maxBytes = positive('maxBytesPerPost', options.maxBytesPerPost, EVENT_API_MAX_BYTES_PER_POST);
    this.maxQueue = Math.floor(positive('maxQueueEvents', options.maxQueueEvents, 100_000));
    const flushMs = positive('flushMs', options.flushMs, 5000);
    this.backoffMs = positive('backoffMs', options.backoffMs, 500);
    this.maxBackoffMs = positive('maxBackoffMs', options.maxBackoffMs, 30_000);
    this.requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs, 15_000);
    this.closeTimeoutMs = positive('closeTimeoutMs', options.closeTimeoutMs, 10_000);
    const u = options.endpoint;
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError('NewRelicSink: endpoint must be http or https');
    // only the host is ever logged: a path or query could hold anything
    this.host = u.host;
    if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)) {
      this.log.warn(`newrelic: endpoint ${this.host} is plain http: the insert key crosses the network unencrypted`);
    }
    this.headers = {
      'Content-Type': 'application/json',
      'Content-Encoding': 'gzip',
      [options.keyHeader ?? 'X-Insert-Key']: options.key,
      'User-Agent': `convis/${version()}`,
    };
    // the API supports HTTP/1.1 persistent connections; one socket, one request at a time
    const agentOptions = { keepAlive: true, maxSockets: 1 };
    this.agent = u.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.timer = setInterval(() => this.kick(true), flushMs);
    this.timer.unref();
  }

  write(events: readonly ConnectionEvent[]): void {
    if (events.length === 0) return;
    if (this.closed) {
      this.counters.dropped += events.length;
      return;
    }
    for (const e of events) {
      let ev: NewRelicEvent;
      try {
        ev = toNewRelicEvent(e);
      } catch {
        // a malformed event must not take the capture path down
        this.counters.dropped++;
        continue;
      }
      this.queue.push(ev);
    }
    const over = this.queue.length - this.maxQueue;
    if (over > 0) {
      this.counters.dropped += this.queue.drop(over);
      if (!this.overflowing) {
        this.overflowing = true;
        this.log.warn(`newrelic: queue full (${this.maxQueue} events); dropping the oldest until ${this.host} takes events again`);
      }
    }
    if (this.queue.length >= this.maxEvents) this.kick(false);
  }

  /** Sends everything queued; waits at most closeTimeoutMs, then counts what is left as dropped. */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.kick(true);
    const deadline = this.now() + this.closeTimeoutMs;
    let gaveUp: NodeJS.Timeout | undefined;
    await Promise.race([
      (async () => {
        // a pump that ends while events remain (it never should) is started again
        while (this.pumping) {
          await this.pumping;
          if (this.queue.length > 0 && !this.abandoned) this.kick(true);
        }
      })(),
      new Promise<void>((resolve) => {
        gaveUp = setTimeout(resolve, Math.max(0, deadline - this.now()));
      }),
    ]);
    clearTimeout(gaveUp);
    if (this.pumping) {
      this.abandoned = true;
      this.request?.destroy();
      this.wake?.();
      await this.pumping;
    }
    const left = this.queue.drop(this.queue.length);
    const lost = left + this.inFlightLost;
    this.counters.dropped += left;
    if (lost > 0) this.log.warn(`newrelic: ${lost} events not sent to ${this.host} before shutdown`);
    this.agent.destroy();
  }

  stats(): NewRelicSinkStats {
    return { ...this.counters, queueDepth: this.queue.length + this.inFlight };
  }

  /** Starts the send loop unless it runs; force also sends a partial batch. */
  private kick(force: boolean): void {
    if (force) this.flushDue = true;
    if (this.pumping || this.abandoned) return;
    if (this.queue.length === 0 || (!this.flushDue && this.queue.length < this.maxEvents)) {
      if (this.queue.length === 0) this.flushDue = false;
      return;
    }
    this.pumping = this.pump()
      .catch((err: unknown) => {
        // a bug, not a network failure: say so once and keep the agent running
        this.log.warn(`newrelic: send loop failed: ${err instanceof Error ? err.message : String(err)}`);
      })
      .finally(() => {
        this.pumping = null;
      });
  }

  /** Sends full batches, and partial ones while a flush is due, one request at a time. */
  private async pump(): Promise<void> {
    while (!this.abandoned) {
      const n = this.queue.length;
      if (n === 0) {
        this.flushDue = false;
        return;
      }
      if (n < this.maxEvents && !this.flushDue) return;
      const batch = this.queue.take(this.maxEvents);
      this.inFlight = batch.length;
      try {
        await this.deliver(batch);
      } finally {
        this.inFlight = 0;
      }
    }
  }

  /**
   * Sends one batch: halves it while it is too big (before sending, or on
   * 413), retries it while the failure is temporary. Halves go in order,
   * so events reach New Relic in the order they were written.
   */
  private async deliver(batch: NewRelicEvent[]): Promise<void> {
    const work: NewRelicEvent[][] = [batch];
    while (work.length > 0) {
      const part = work.shift() as NewRelicEvent[];
      if (this.abandoned) {
        this.giveUp(part.length + work.reduce((s, w) => s + w.length, 0));
        return;
      }
      const body = await gzipAsync(JSON.stringify(part));
      let outcome: Outcome = body.length > this.maxBytes ? 'too-large' : await this.send(body);
      if (outcome === 'too-large') {
        if (part.length > 1) {
          const half = Math.ceil(part.length / 2);
          work.unshift(part.slice(0, half), part.slice(half));
          continue;
        }
        this.counters.dropped++;
        this.inFlight--;
        if (!this.reportedTooLarge) {
          this.reportedTooLarge = true;
          this.log.warn(`newrelic: dropped an event that is too large for ${this.host} even alone (counted as dropped)`);
        }
        continue;
      }
      if (outcome === 'sent') {
        this.counters.sent += part.length;
        if (this.queue.length === 0) this.overflowing = false;
      } else if (outcome === 'rejected') {
        this.counters.failed += part.length;
        this.counters.dropped += part.length;
      } else {
        this.giveUp(part.length + work.reduce((s, w) => s + w.length, 0));
        return;
      }
      this.inFlight -= part.length;
    }
  }

  private giveUp(n: number): void {
    this.counters.dropped += n;
    this.inFlightLost += n;
    this.inFlight = 0;
  }

  /** POSTs one gzipped body until it is accepted, refused, too large, or the sink gives up. */
  private async send(body: Buffer): Promise<Outcome> {
    let staleRetried = false;
    for (let attempt = 0; ; attempt++) {
      if (this.abandoned) return 'abandoned';
      const r = await this.post(body);
      let wait: number;
      if ('error' in r) {
        if (this.abandoned) return 'abandoned';
        if (r.stale && !staleRetried) {
          staleRetried = true;
          attempt--;
          continue;
        }
        this.failed(`cannot send to ${this.host} (${r.error.code ?? r.error.message}); retrying`);
        wait = this.backoff(attempt);
      } else {
        const s = r.status;
        if (s >= 200 && s < 300) {
          this.recovered();
          return 'sent';
        }
        if (s === 413) return 'too-large';
        const what = `${s} ${http.STATUS_CODES[s] ?? ''}`.trim();
        if (s === 408 || s === 429 || s >= 500) {
          this.failed(`${what} from ${this.host}; retrying with backoff, events queue meanwhile`);
          const asked = retryAfterMs(r.retryAfter, this.now());
          wait = asked !== undefined ? Math.min(asked, MAX_RETRY_AFTER_MS) : this.backoff(attempt);
        } else {
          const hint = s === 403 || s === 401 ? ' (check the insert key and the account id)' : s === 404 ? ' (check the endpoint)' : '';
          this.failed(`${what} from ${this.host}${hint}; events are dropped, not retried`);
          return 'rejected';
        }
      }
      await this.sleep(wait);
    }
  }

  /** Exponential backoff with "equal jitter": half fixed, half random. */
  private backoff(attempt: number): number {
    const d = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** Math.min(attempt, 30));
    return d / 2 + Math.random() * (d / 2);
  }

  private failed(msg: string): void {
    if (this.failing) return;
    this.failing = true;
    this.log.warn(`newrelic: ${msg}`);
  }

  private recovered(): void {
    if (!this.failing) return;
    this.failing = false;
    this.log.info(`newrelic: sending to ${this.host} again`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake = done;
    });
  }

  private post(body: Buffer): Promise<PostResult> {
    return new Promise((resolve) => {
      const mod = this.o.endpoint.protocol === 'https:' ? https : http;
      let req: http.ClientRequest;
      try {
        req = mod.request(this.o.endpoint, {
          method: 'POST',
          agent: this.agent,
          headers: { ...this.headers, 'Content-Length': String(body.length) },
          timeout: this.requestTimeoutMs,
        });
      } catch (err) {
        resolve({ error: err as NodeJS.ErrnoException, stale: false });
        return;
      }
      this.request = req;
      const finish = (r: PostResult): void => {
        if (this.request === req) this.request = null;
        resolve(r);
      };
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const ra = res.headers['retry-after'];
        const retryAfter = Array.isArray(ra) ? ra[0] : ra;
        // the body is not needed, but must be read for the socket to be reused
        res.resume();
        res.on('end', () => finish({ status, retryAfter }));
        res.on('close', () => finish({ status, retryAfter }));
        res.on('error', () => finish({ status, retryAfter }));
      });
      req.on('timeout', () => {
        const err: NodeJS.ErrnoException = new Error(`no answer within ${this.requestTimeoutMs} ms`);
        err.code = 'ETIMEDOUT';
        req.destroy(err);
      });
      req.on('error', (err: NodeJS.ErrnoException) => finish({ error: err, stale: req.reusedSocket && err.code === 'ECONNRESET' }));
      req.end(body);
    });
  }
}
