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
 * Delivery is HttpDelivery's (./delivery.ts), shared with every network
 * sink: write() converts each event to JSON bytes at once and queues them
 * in chunks (EventChunks; bounded, the oldest chunk goes first when it is
 * full); a timer and a full batch start sends; one request is in flight
 * at a time, so order is kept. 2xx: sent. 413 or an oversized gzip: the
 * batch is halved until it fits, a chunk into its events if need be (one
 * event that alone is too big is dropped, its request counted as failed). 408, 429, 5xx, network
 * errors and timeouts: the batch goes back to the head of the queue and
 * is retried with exponential backoff and jitter, or after Retry-After;
 * the wait belongs to the delivery, so events dropped from a full queue
 * meanwhile never shorten it. Any other status (400, 403, 415, ...): the
 * batch is dropped and counted as failed. Failures are logged once per
 * kind when they start and once when sending works again, never per
 * request; no log line holds the key.
 */
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { EnvCredentials } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { readCredentialFile } from '../config/secrets.js';
import type { ConnectionEvent } from '../metadata/event.js';
import { PerProcess } from '../metadata/per-process.js';
import { ByteWriter, utf8 } from '../util/byte-writer.js';
import { Fragments } from './line-parts.js';
import type { Logger } from '../util/log.js';
import { HttpDelivery } from './delivery.js';
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
  /** events waiting to be sent, default 20,000 (10 full requests); beyond it the oldest are dropped */
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

/** A JSON string value, cut to the documented limit. */
const str = (v: string): string => JSON.stringify(clip(v));

/** `,"name":value` when the value is known, as toNewRelicEvent() sets it (strings only here: the cached parts). */
function attr(name: string, v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '';
  return `,"${name}":${typeof v === 'string' ? str(v) : Number.isFinite(v) ? String(v) : 'null'}`;
}

/** The process, container and pod attributes of an event, in toNewRelicEvent()'s order. */
function workloadJson(e: ConnectionEvent): string {
  let out = '';
  const p = e.process;
  if (p) {
    out += attr('process.pid', p.pid) + attr('process.ppid', p.ppid) + attr('process.uid', p.uid) + attr('process.comm', p.comm) + attr('process.cmd', p.cmd);
    if (p.cmdTruncated) out += attr('process.cmdTruncated', 1);
    out += attr('process.exe', p.exe);
  }
  const c = e.container;
  if (c) out += attr('container.id', c.id) + attr('container.name', c.name) + attr('container.image', c.image) + attr('container.runtime', c.runtime);
  const pod = e.pod;
  if (pod) out += attr('k8s.pod', pod.name) + attr('k8s.namespace', pod.namespace) + attr('k8s.pod.uid', pod.uid);
  return out;
}

const HEAD = utf8(`{"eventType":"${NEW_RELIC_EVENT_TYPE}","timestamp":`);
const SOURCE_IP = utf8(',"source.ip":');
const SOURCE_PORT = utf8(',"source.port":');
const DESTINATION_IP = utf8(',"destination.ip":');
const DESTINATION_PORT = utf8(',"destination.port":');
const LOCAL_IP = utf8(',"local.ip":');
const LOCAL_PORT = utf8(',"local.port":');
const REMOTE_IP = utf8(',"remote.ip":');
const REMOTE_PORT = utf8(',"remote.port":');
const REMOTE_NAME = utf8(',"remote.name":');
const CGROUP_ID = utf8(',"cgroup.id":');
const NETNS = utf8(',"netns":');
const CONN_ID = utf8(',"conn.id":');
const EXISTING = utf8(',"existing":1');
/** the optional numbers after conn.id, in order */
const NUMBERS = (
  [
    ['bytes.tx', 'bytesSent'],
    ['bytes.rx', 'bytesReceived'],
    ['bytes.tx.delta', 'bytesSentDelta'],
    ['bytes.rx.delta', 'bytesReceivedDelta'],
    ['datagrams.tx', 'datagramsSent'],
    ['datagrams.rx', 'datagramsReceived'],
    ['duration.ms', 'durationMs'],
    ['srtt.us', 'srttUs'],
    ['retransmits', 'retransmits'],
  ] as const
).map(([name, field]) => ({ name: utf8(`,"${name}":`), field }));

/**
 * The Event API body, written as bytes straight from the events: the same
 * bytes as JSON.stringify of toNewRelicEvent()'s objects (a unit test holds
 * the two together), without an object or a string per attribute. What
 * repeats is made once: the kind, protocol and direction; the process,
 * container and pod part per process object (PerProcess); a peer pod's
 * part per pod object; the node's. At max churn the objects and their
 * JSON had cost several times what the rest of the agent did per event.
 */
export class NewRelicJson {
  private readonly kinds = new Fragments((event, proto, direction) => `,"event":${JSON.stringify(event)},"proto":${JSON.stringify(proto)},"direction":${JSON.stringify(direction)}`);
  private readonly workloads = new PerProcess<{ container: unknown; pod: unknown; bytes: Uint8Array }>(
    (kept, e) => kept.container === e.container && kept.pod === e.pod,
    (e) => ({ container: e.container, pod: e.pod, bytes: utf8(workloadJson(e)) }),
  );
  private readonly peers = new WeakMap<object, Uint8Array>();
  private nodeName = '';
  private nodeBytes: Uint8Array = utf8(attr('node', ''));

  /** One event's JSON object (tests). */
  of(e: ConnectionEvent): string {
    const w = new ByteWriter(1024);
    this.write(w, e);
    return w.take().toString('utf8');
  }

  /** Writes one event's JSON object to w; throws, part written, on an event it cannot write. */
  write(w: ByteWriter, e: ConnectionEvent): void {
    w.bytes(HEAD);
    w.number(e.timeSec * 1000 + Math.floor(e.timeNsec / 1_000_000));
    w.bytes(this.kinds.get(e.event, e.proto, e.direction));
    const [src, dst] = e.direction === 'outbound' ? [e.local, e.remote] : [e.remote, e.local];
    if (src) endpoint(w, SOURCE_IP, SOURCE_PORT, src);
    if (dst) endpoint(w, DESTINATION_IP, DESTINATION_PORT, dst);
    endpoint(w, LOCAL_IP, LOCAL_PORT, e.local);
    const r = e.remote;
    if (r) {
      endpoint(w, REMOTE_IP, REMOTE_PORT, r);
      if (r.name !== undefined && r.name !== null) {
        w.bytes(REMOTE_NAME);
        w.utf8(str(r.name));
      }
    }
    w.bytes(this.workloads.get(e).bytes);
    const peer = e.remotePod;
    if (peer) {
      let bytes = this.peers.get(peer);
      if (bytes === undefined) {
        bytes = utf8(attr('remote.k8s.pod', peer.name) + attr('remote.k8s.namespace', peer.namespace));
        this.peers.set(peer, bytes);
      }
      w.bytes(bytes);
    }
    if (e.node !== this.nodeName) {
      this.nodeName = e.node;
      this.nodeBytes = utf8(attr('node', e.node));
    }
    w.bytes(this.nodeBytes);
    w.bytes(CGROUP_ID);
    w.number(e.cgroupId);
    w.bytes(NETNS);
    w.number(e.netns);
    w.bytes(CONN_ID);
    w.number(e.connId);
    if (e.existing) w.bytes(EXISTING);
    for (const n of NUMBERS) {
      const v = e[n.field];
      if (v === undefined || v === null) continue;
      w.bytes(n.name);
      w.number(v);
    }
    if (e.event === 'connect_failed' || e.event === 'alert') w.utf8(attr('error', e.error));
    if (e.event === 'alert') w.utf8(attr('policy.rule', e.rule) + attr('policy.trigger', e.trigger));
    w.byte(0x7d); // }
  }
}

/** `,"x.ip":"...","x.port":N` */
function endpoint(w: ByteWriter, ipName: Uint8Array, portName: Uint8Array, at: { ip: string; port: number }): void {
  w.bytes(ipName);
  w.jsonString(at.ip);
  w.bytes(portName);
  w.number(at.port);
}

/**
 * Events queued for the Event API, as their JSON bytes: a chunk holds the
 * comma-separated objects of up to `events` events in a buffer of its own.
 * Chunk buffers of the usual size are reused once delivered or dropped.
 */
export interface EventChunk {
  buf: Buffer;
  /** bytes of buf used */
  length: number;
  /** where each event's object ends in buf (the next, if any, starts after a comma) */
  ends: number[];
  /** whether buf goes back to the pool when the chunk is released */
  pooled: boolean;
  released: boolean;
}

/** A chunk buffer's usual size; a chunk is bigger only when one event is. */
export const CHUNK_BUFFER_BYTES = 64 * 1024;
/** The most events one chunk holds. */
export const CHUNK_MAX_EVENTS = 100;

/**
 * Turns events into chunks as they arrive, so that what waits for the
 * Event API is bytes, not event objects. At a rate the account cannot
 * take, the queue stays full: its events waited long enough to be moved
 * to V8's old generation, whose garbage came back only with full
 * collections, and the agent's memory rose and fell by tens of MiB. Bytes
 * in reused buffers cost a fixed amount and nothing to collect. Encoding
 * before the queue also pays for events the queue then drops, a few
 * percent under overload (the encoding is about 1.5 µs an event).
 */
export class EventChunks {
  private readonly json = new NewRelicJson();
  /** the open chunk's bytes */
  private readonly w = new ByteWriter(1 << 16);
  /** ends of the events in the open chunk (in w) */
  private ends: number[] = [];
  private readonly pool: Buffer[] = [];
  /** events in chunks sealed and not released yet */
  private held = 0;

  constructor(
    /** takes each chunk once it is full (or flushed) */
    private readonly sealed: (c: EventChunk) => void,
    /** events per chunk */
    readonly maxEvents: number,
    /** bytes per chunk, unless one event alone is more */
    private readonly maxBytes: number,
    /** most buffers kept for reuse */
    private readonly maxPooled: number,
  ) {}

  /** Events encoded and not released: in the open chunk, queued or in flight. */
  get events(): number {
    return this.held + this.ends.length;
  }

  /** Buffers waiting for reuse (tests). */
  get pooled(): number {
    return this.pool.length;
  }

  /**
   * Adds an event to the open chunk, and hands over each chunk that is
   * then full. `failed` is called (and nothing kept) for an event that
   * cannot be written.
   */
  add(e: ConnectionEvent, failed: () => void): void {
    const w = this.w;
    const n = this.ends.length;
    const before = n > 0 ? (this.ends[n - 1] as number) : 0;
    try {
      if (n > 0) w.byte(0x2c); // ,
      this.json.write(w, e);
    } catch {
      w.truncate(before);
      failed();
      return;
    }
    const end = w.length;
    if (n > 0 && end > this.maxBytes) {
      // too big with this event: the chunk ends before it, and it opens the next
      this.seal(before);
      this.ends.push(end - before - 1);
    } else {
      this.ends.push(end);
      if (this.ends.length >= this.maxEvents || end >= this.maxBytes) this.seal(end);
    }
  }

  /** Hands over the open chunk, if it holds any event. */
  flush(): void {
    const n = this.ends.length;
    if (n > 0) this.seal(this.ends[n - 1] as number);
  }

  /**
   * Hands over the open chunk's events, whose bytes end at `length`; what
   * follows them (a comma and one more event) stays as the next chunk's start.
   */
  private seal(length: number): void {
    const ends = this.ends;
    this.ends = [];
    const pooled = length <= CHUNK_BUFFER_BYTES;
    const buf = pooled ? (this.pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BUFFER_BYTES)) : Buffer.allocUnsafeSlow(length);
    const open = this.w.view();
    open.copy(buf, 0, 0, length);
    if (open.length > length) open.copyWithin(0, length + 1);
    this.w.truncate(Math.max(0, open.length - length - 1));
    this.held += ends.length;
    this.sealed({ buf, length, ends, pooled, released: false });
  }

  /** A chunk that was delivered or dropped: its buffer may be reused. Once per chunk; later calls do nothing. */
  release(c: EventChunk): void {
    if (c.released) return;
    c.released = true;
    this.held -= c.ends.length;
    if (c.pooled && this.pool.length < this.maxPooled) this.pool.push(c.buf);
  }

  /** A chunk of two or more events cut in two halves, in buffers of their own (the chunk is still to be released). */
  halve(c: EventChunk): EventChunk[] | undefined {
    const n = c.ends.length;
    if (n < 2 || c.released) return undefined;
    const mid = n >> 1;
    const cut = c.ends[mid - 1] as number;
    const part = (from: number, to: number, ends: number[]): EventChunk => ({
      buf: Buffer.from(c.buf.subarray(from, to)),
      length: to - from,
      ends: ends.map((x) => x - from),
      pooled: false,
      released: false,
    });
    const parts = [part(0, cut, c.ends.slice(0, mid)), part(cut + 1, c.length, c.ends.slice(mid))];
    this.held += n;
    return parts;
  }
}

/** One JSON array of the chunks' events, in a buffer reused from request to request. */
class BodyBuilder {
  private buf = Buffer.allocUnsafeSlow(0);

  /** Valid until the next call. */
  of(chunks: readonly EventChunk[]): Buffer {
    let size = 2;
    for (const c of chunks) size += c.length + 1;
    if (this.buf.length < size) this.buf = Buffer.allocUnsafeSlow(Math.max(size, this.buf.length * 2));
    const b = this.buf;
    let p = 0;
    b[p++] = 0x5b; // [
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i] as EventChunk;
      if (i > 0) b[p++] = 0x2c; // ,
      p += c.buf.copy(b, p, 0, c.length);
    }
    b[p++] = 0x5d; // ]
    return b.subarray(0, p);
  }
}

export interface NewRelicSinkStats extends SinkStats {
  /** requests New Relic refused (400, 403, ...) and that are not retried; their events are in dropped */
  failed: number;
  /** events waiting or in flight */
  queueDepth: number;
}

export interface NewRelicSinkDeps {
  log: Logger;
  /** clock for Retry-After dates (ms since the epoch) */
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

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`NewRelicSink: ${name} must be a positive number`);
  return v;
}

export class NewRelicSink implements Sink {
  readonly name = 'newrelic';
  private readonly timer: NodeJS.Timeout;
  /** Queues chunks of encoded events (see EventChunks for why not the events). */
  private readonly delivery: HttpDelivery<EventChunk>;
  private readonly chunks: EventChunks;
  private readonly body = new BodyBuilder();
  private closing: Promise<void> | null = null;
  private closed = false;

  constructor(options: NewRelicOptions, deps: NewRelicSinkDeps) {
    const maxEvents = Math.floor(positive('maxEventsPerPost', options.maxEventsPerPost, EVENT_API_MAX_EVENTS_PER_POST));
    const maxBytes = positive('maxBytesPerPost', options.maxBytesPerPost, EVENT_API_MAX_BYTES_PER_POST);
    const maxQueue = Math.floor(positive('maxQueueEvents', options.maxQueueEvents, 20_000));
    const flushMs = positive('flushMs', options.flushMs, 5000);
    const u = options.endpoint;
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError('NewRelicSink: endpoint must be http or https');
    if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)) {
      deps.log.warn(`newrelic: endpoint ${u.host} is plain http: the insert key crosses the network unencrypted`);
    }
    const headers = {
      'Content-Type': 'application/json',
      'Content-Encoding': 'gzip',
      [options.keyHeader ?? 'X-Insert-Key']: options.key,
      'User-Agent': `convis/${version()}`,
    };
    // Chunks of at most 100 events, so that the queue holds few objects;
    // fewer when a request or the queue holds fewer, so that both bounds
    // stay exact; and bytes enough to keep a chunk well inside a request.
    const chunkEvents = Math.max(1, Math.min(CHUNK_MAX_EVENTS, maxEvents, Math.floor(maxQueue / 10)));
    const queueChunks = Math.ceil(maxQueue / chunkEvents);
    const requestChunks = Math.max(1, Math.floor(maxEvents / chunkEvents));
    this.chunks = new EventChunks(
      (c) => this.delivery.push(c),
      chunkEvents,
      Math.max(1, Math.min(CHUNK_BUFFER_BYTES, Math.floor(maxBytes / 2))),
      queueChunks + requestChunks,
    );
    this.delivery = new HttpDelivery<EventChunk>({
      name: 'newrelic',
      endpoint: u,
      log: deps.log,
      encode: (chunks) => gzipAsync(this.body.of(chunks)),
      units: (c) => c.ends.length,
      release: (c) => this.chunks.release(c),
      splitItem: (c) => this.chunks.halve(c),
      headers: () => headers,
      secrets: [options.key],
      unitNoun: 'event',
      itemNoun: chunkEvents === 1 ? 'event' : 'chunk',
      ...(chunkEvents > 1 ? { overflowNote: `a chunk holds up to ${chunkEvents} events` } : {}),
      maxQueueItems: queueChunks,
      maxItemsPerRequest: requestChunks,
      // the limit is on the bytes on the wire, so it is checked after gzip
      maxBodyBytes: maxBytes,
      // "408 request timed out": documented, and worth another try
      retryStatuses: [408],
      hint: (s) => (s === 401 || s === 403 ? 'check the insert key and the account id' : s === 404 ? 'check the endpoint' : undefined),
      ...(options.backoffMs !== undefined ? { initialBackoffMs: positive('backoffMs', options.backoffMs, 500) } : {}),
      ...(options.maxBackoffMs !== undefined ? { maxBackoffMs: positive('maxBackoffMs', options.maxBackoffMs, 30_000) } : {}),
      requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs, 15_000),
      ...(options.closeTimeoutMs !== undefined ? { closeTimeoutMs: positive('closeTimeoutMs', options.closeTimeoutMs, 10_000) } : {}),
      ...(deps.now ? { now: deps.now } : {}),
    });
    this.timer = setInterval(() => {
      this.chunks.flush();
      this.delivery.flush();
    }, flushMs);
    this.timer.unref();
  }

  write(events: readonly ConnectionEvent[]): void {
    if (events.length === 0) return;
    if (this.closed) {
      this.delivery.drop(events.length);
      return;
    }
    // a malformed event must not take the sink down: it is left out and counted
    const failed = () => this.delivery.drop(1);
    for (const e of events) this.chunks.add(e, failed);
  }

  /** Sends everything queued; waits at most closeTimeoutMs, then counts what is left as dropped. */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.chunks.flush();
    await this.delivery.close();
  }

  failingForMs(): number {
    return this.delivery.failingForMs();
  }

  stats(): NewRelicSinkStats {
    const { sent, dropped, failed } = this.delivery.stats();
    return { sent, dropped, failed, queueDepth: this.chunks.events };
  }
}
