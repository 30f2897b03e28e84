import { formatIPv4, formatIPv6 } from '../util/ip.js';
import { u64NsNanos, u64NsSeconds } from '../util/time.js';
import { AF_INET, ARGS_LEN, COMM_LEN, ConnEvent, ConnFlag, Direction, DnsEvent, EventType, ExecEvent, FILENAME_LEN, Header, IPPROTO_UDP, SweepEvent, TaskEvent } from './events.js';

export type ConnKind = 'connect' | 'accept' | 'close' | 'connect_failed' | 'update' | 'listen' | 'unlisten';
export type DirectionName = 'outbound' | 'inbound' | 'listen' | 'unknown';

interface RecordBase {
  /** tgid in the host pid namespace; 0 when unknown */
  pid: number;
  /** CLOCK_MONOTONIC: whole seconds */
  tsSec: number;
  /** CLOCK_MONOTONIC: nanoseconds within the second */
  tsNsec: number;
}

export interface ExecRecord extends RecordBase {
  kind: 'exec';
  ppid: number;
  uid: number;
  cgroupId: number;
  comm: string;
  filename: string;
  argv: string[];
  /** the kernel copied only the first ARGS_LEN bytes of argv */
  argsTruncated: boolean;
}

export interface TaskRecord extends RecordBase {
  kind: 'exit' | 'fork';
  ppid: number;
  uid: number;
  exitCode: number;
  cgroupId: number;
  comm: string;
}

export interface ConnRecord extends RecordBase {
  kind: ConnKind;
  proto: 'tcp' | 'udp';
  tid: number;
  uid: number;
  ppid: number;
  comm: string;
  /** false when the kernel could not name the owning process (pid is 0) */
  ownerKnown: boolean;
  /** false when tracking began after the connection started (duration is partial) */
  startSeen: boolean;
  /** found by the start-up snapshot: the connection or listener is older than the agent */
  existing: boolean;
  connId: number;
  /** the socket's cgroup v2 id */
  cgroupId: number;
  netns: number;
  family: 4 | 6;
  direction: DirectionName;
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
  /** connect_failed: positive errno */
  error: number;
  /** TCP: lifetime totals at the event; UDP update: since the previous report */
  bytesSent: number;
  bytesReceived: number;
  /** since the connection's previous report: what counters add */
  deltaSent: number;
  deltaReceived: number;
  /** UDP update: datagrams since the previous report */
  packetsSent: number;
  packetsReceived: number;
  durationMs: number;
  srttUs: number;
  /** TCP: lifetime retransmitted segments at the event */
  retransmits: number;
  /** TCP: retransmitted segments since the previous report */
  deltaRetransmits: number;
  oldState: number;
}

/** A DNS answer a process received: the UDP payload (at most 512 bytes). */
export interface DnsRecord extends RecordBase {
  kind: 'dns';
  /** the receiving task's network namespace */
  netns: number;
  payload: Buffer;
}

/** The end of one sweep: every update of it came before. */
export interface SweepRecord extends RecordBase {
  kind: 'sweep';
  seq: number;
}

export type KernelRecord = ExecRecord | TaskRecord | ConnRecord | SweepRecord | DnsRecord;

const CONN_KINDS: Record<number, ConnKind> = {
  [EventType.tcpConnect]: 'connect',
  [EventType.tcpAccept]: 'accept',
  [EventType.tcpClose]: 'close',
  [EventType.tcpConnectFailed]: 'connect_failed',
  [EventType.tcpUpdate]: 'update',
  [EventType.tcpListen]: 'listen',
  [EventType.tcpUnlisten]: 'unlisten',
  [EventType.udpUpdate]: 'update',
};

const DIRECTIONS: Record<number, DirectionName> = {
  [Direction.outbound]: 'outbound',
  [Direction.inbound]: 'inbound',
  [Direction.listen]: 'listen',
  [Direction.unknown]: 'unknown',
};

/** Typed-array views over one batch; records start 8-aligned in it. */
interface Views {
  buf: Buffer;
  u16: Uint16Array;
  u32: Uint32Array;
  i32: Int32Array;
}

/** A u64 as a JS number: exact below 2^53, which counters and ids stay under. */
function u64(v: Views, off: number): number {
  const i = off >>> 2;
  return (v.u32[i] as number) + (v.u32[i + 1] as number) * 4294967296;
}

/** The record header's CLOCK_MONOTONIC time: whole seconds (exact, no BigInt). */
function headerSec(v: Views, o: number): number {
  const i = (o + Header.tsNs) >>> 2;
  return u64NsSeconds(v.u32[i + 1] as number, v.u32[i] as number);
}

/** The record header's CLOCK_MONOTONIC time: nanoseconds within the second. */
function headerNsec(v: Views, o: number): number {
  const i = (o + Header.tsNs) >>> 2;
  return u64NsNanos(v.u32[i + 1] as number, v.u32[i] as number);
}

/** A NUL-terminated string of at most `max` bytes. */
function cstr(buf: Buffer, off: number, max: number): string {
  let end = buf.indexOf(0, off);
  if (end < 0 || end > off + max) end = off + max;
  return buf.toString('utf8', off, end);
}

/**
 * Strings made from 16 bytes of a record (command names, IPv6 addresses),
 * kept by those bytes: a node has few of them, and making one string per
 * record cost more than the rest of the record. Direct-mapped: a slot holds
 * the last string whose bytes hashed to it, checked word by word, so the
 * cache is bounded with nothing to clear, and values that collide are made
 * again.
 */
class WordCache {
  private readonly words: Uint32Array;
  private readonly strings: (string | undefined)[];
  private readonly shift: number;

  constructor(
    bits: number,
    private readonly make: (buf: Buffer, off: number) => string,
  ) {
    this.words = new Uint32Array(4 << bits);
    this.strings = new Array<string | undefined>(1 << bits);
    this.shift = 32 - bits;
  }

  get(v: Views, off: number): string {
    const i = off >>> 2;
    const u32 = v.u32;
    const a = u32[i] as number;
    const b = u32[i + 1] as number;
    const c = u32[i + 2] as number;
    const d = u32[i + 3] as number;
    const slot = Math.imul(a ^ Math.imul(b, 0x85ebca6b) ^ Math.imul(c, 0xc2b2ae35) ^ Math.imul(d, 0x27d4eb2f), 0x9e3779b1) >>> this.shift;
    const w = slot * 4;
    const words = this.words;
    const hit = this.strings[slot];
    if (hit !== undefined && words[w] === a && words[w + 1] === b && words[w + 2] === c && words[w + 3] === d) return hit;
    const s = this.make(v.buf, off);
    words[w] = a;
    words[w + 1] = b;
    words[w + 2] = c;
    words[w + 3] = d;
    this.strings[slot] = s;
    return s;
  }
}

/** Command names: 512 slots. */
const comms = new WordCache(9, (buf, off) => cstr(buf, off, COMM_LEN));

/** IPv6 addresses (an IPv4-mapped one as IPv4): 4,096 slots. */
const ipv6s = new WordCache(12, formatIPv6);

/**
 * IPv4 addresses, by their one word and for the same reason: a node talks
 * to a bounded set of peers. Direct-mapped too, 16,384 slots.
 */
const V4_BITS = 14;
const v4Words = new Uint32Array(1 << V4_BITS);
const v4Strings: (string | undefined)[] = new Array<string | undefined>(1 << V4_BITS);

function ipv4(v: Views, off: number): string {
  const a = v.u32[off >>> 2] as number;
  const slot = Math.imul(a, 0x9e3779b1) >>> (32 - V4_BITS);
  const hit = v4Strings[slot];
  if (hit !== undefined && v4Words[slot] === a) return hit;
  const s = formatIPv4(v.buf, off);
  v4Words[slot] = a;
  v4Strings[slot] = s;
  return s;
}

/** 2^53 ns: below it, a u64 of nanoseconds is exact as one number (about 104 days) */
const EXACT_NS_HI = 1 << 21;

function decodeConn(v: Views, o: number, kind: ConnKind): ConnRecord {
  const { buf, u16, u32, i32 } = v;
  const w = o >>> 2; // u32 index of the record
  const family = u16[(o + ConnEvent.family) >>> 1] === AF_INET ? 4 : 6;
  const flags = buf[o + ConnEvent.flags] as number;
  // the time: one division while the count is exact as a number (the
  // record's whole-seconds and remainder then by integer arithmetic)
  const ti = w + (Header.tsNs >>> 2);
  const hi = u32[ti + 1] as number;
  let tsSec: number;
  let tsNsec: number;
  if (hi < EXACT_NS_HI) {
    const ns = hi * 4294967296 + (u32[ti] as number);
    tsSec = Math.floor(ns / 1e9);
    tsNsec = ns - tsSec * 1e9;
    if (tsNsec < 0) {
      tsSec--;
      tsNsec += 1e9;
    } else if (tsNsec >= 1e9) {
      tsSec++;
      tsNsec -= 1e9;
    }
  } else {
    tsSec = headerSec(v, o);
    tsNsec = headerNsec(v, o);
  }
  return {
    kind,
    proto: buf[o + ConnEvent.proto] === IPPROTO_UDP ? 'udp' : 'tcp',
    pid: u32[w + (Header.pid >>> 2)] as number,
    tsSec,
    tsNsec,
    tid: u32[w + (ConnEvent.tid >>> 2)] as number,
    uid: u32[w + (ConnEvent.uid >>> 2)] as number,
    ppid: u32[w + (ConnEvent.ppid >>> 2)] as number,
    comm: comms.get(v, o + ConnEvent.comm),
    ownerKnown: (flags & ConnFlag.ownerKnown) !== 0,
    startSeen: (flags & ConnFlag.startSeen) !== 0,
    existing: (flags & ConnFlag.existing) !== 0,
    connId: u64(v, o + ConnEvent.connId),
    cgroupId: u64(v, o + ConnEvent.cgroupId),
    netns: u32[w + (ConnEvent.netns >>> 2)] as number,
    family,
    direction: DIRECTIONS[buf[o + ConnEvent.direction] as number] ?? 'unknown',
    localIp: family === 4 ? ipv4(v, o + ConnEvent.saddr) : ipv6s.get(v, o + ConnEvent.saddr),
    localPort: u16[(o + ConnEvent.sport) >>> 1] as number,
    remoteIp: family === 4 ? ipv4(v, o + ConnEvent.daddr) : ipv6s.get(v, o + ConnEvent.daddr),
    remotePort: u16[(o + ConnEvent.dport) >>> 1] as number,
    error: i32[w + (ConnEvent.error >>> 2)] as number,
    bytesSent: u64(v, o + ConnEvent.bytesSent),
    bytesReceived: u64(v, o + ConnEvent.bytesReceived),
    deltaSent: u64(v, o + ConnEvent.deltaSent),
    deltaReceived: u64(v, o + ConnEvent.deltaReceived),
    packetsSent: u32[w + (ConnEvent.packetsSent >>> 2)] as number,
    packetsReceived: u32[w + (ConnEvent.packetsReceived >>> 2)] as number,
    durationMs: u64(v, o + ConnEvent.durationNs) / 1e6,
    srttUs: u32[w + (ConnEvent.srttUs >>> 2)] as number,
    retransmits: u32[w + (ConnEvent.retransmits >>> 2)] as number,
    deltaRetransmits: u32[w + (ConnEvent.deltaRetransmits >>> 2)] as number,
    oldState: buf[o + ConnEvent.oldState] as number,
  };
}

function decodeExec(v: Views, o: number): ExecRecord {
  const buf = v.buf;
  const filenameLen = Math.min(buf.readUInt16LE(o + ExecEvent.filenameLen), FILENAME_LEN - 1);
  const argsLen = Math.min(buf.readUInt16LE(o + ExecEvent.argsLen), ARGS_LEN);
  const args = buf.toString('utf8', o + ExecEvent.args, o + ExecEvent.args + argsLen);
  const argv = args.split('\0');
  // argv is NUL-terminated; a trailing empty string is that terminator
  if (argv.length > 0 && argv[argv.length - 1] === '') argv.pop();
  return {
    kind: 'exec',
    pid: buf.readUInt32LE(o + Header.pid),
    tsSec: headerSec(v, o),
    tsNsec: headerNsec(v, o),
    ppid: buf.readUInt32LE(o + ExecEvent.ppid),
    uid: buf.readUInt32LE(o + ExecEvent.uid),
    cgroupId: u64(v, o + ExecEvent.cgroupId),
    comm: cstr(buf, o + ExecEvent.comm, COMM_LEN),
    filename: buf.toString('utf8', o + ExecEvent.filename, o + ExecEvent.filename + filenameLen),
    argv,
    argsTruncated: argsLen === ARGS_LEN,
  };
}

function decodeTask(v: Views, o: number, kind: 'exit' | 'fork'): TaskRecord {
  const buf = v.buf;
  return {
    kind,
    pid: buf.readUInt32LE(o + Header.pid),
    tsSec: headerSec(v, o),
    tsNsec: headerNsec(v, o),
    ppid: buf.readUInt32LE(o + TaskEvent.ppid),
    uid: buf.readUInt32LE(o + TaskEvent.uid),
    exitCode: buf.readInt32LE(o + TaskEvent.exitCode),
    cgroupId: u64(v, o + TaskEvent.cgroupId),
    comm: cstr(buf, o + TaskEvent.comm, COMM_LEN),
  };
}

export interface DecodeResult {
  records: KernelRecord[];
  /** records of an unknown type or shorter than their type needs */
  malformed: number;
}

const MIN_SIZE: Record<number, number> = {
  [EventType.exec]: ExecEvent.size,
  [EventType.exit]: TaskEvent.size,
  [EventType.fork]: TaskEvent.size,
  [EventType.tcpConnect]: ConnEvent.size,
  [EventType.tcpAccept]: ConnEvent.size,
  [EventType.tcpClose]: ConnEvent.size,
  [EventType.tcpConnectFailed]: ConnEvent.size,
  [EventType.tcpUpdate]: ConnEvent.size,
  [EventType.tcpListen]: ConnEvent.size,
  [EventType.tcpUnlisten]: ConnEvent.size,
  [EventType.udpUpdate]: ConnEvent.size,
  [EventType.sweepEnd]: SweepEvent.size,
  [EventType.dns]: DnsEvent.size,
};

/** Bytes before each record in a batch: [u32 size][u32 0] (native/addon.c REC_HDR). */
export const RECORD_HEADER = 8;

/** Views over `buf`, copying it first if it is not 8-aligned in its ArrayBuffer. */
function views(buf: Buffer): Views {
  const b = buf.byteOffset % 8 === 0 ? buf : Buffer.from(buf);
  const ab = b.buffer;
  return {
    buf: b,
    u16: new Uint16Array(ab, b.byteOffset, b.length >>> 1),
    u32: new Uint32Array(ab, b.byteOffset, b.length >>> 2),
    i32: new Int32Array(ab, b.byteOffset, b.length >>> 2),
  };
}

/**
 * Decodes one batch from the addon: `count` records, each laid out as
 * [u32 size][u32 0][record bytes][zero padding to 8].
 */
export function decodeBatch(buf: Buffer, count: number): DecodeResult {
  // one piece: chunk is unbounded
  let records: KernelRecord[] = [];
  const { malformed } = decodeBatchInChunks(buf, count, Infinity, (rs) => {
    records = rs;
  });
  return { records, malformed };
}

/**
 * The same, handed on in pieces of at most `chunk` records, each before the
 * next is decoded: a piece's records are garbage by the time the next one
 * is made, so a garbage collection in the middle of a large batch finds
 * (and copies) only one piece alive, and the young generation can stay small.
 */
export function decodeBatchInChunks(buf: Buffer, count: number, chunk: number, onRecords: (records: KernelRecord[]) => void): { records: number; malformed: number } {
  const v = views(buf);
  // each piece made at its full size, not grown record by record; no more
  // records than the batch has bytes for, whatever count says
  const most = Math.min(count, Math.floor(v.buf.length / (RECORD_HEADER + Header.size)));
  let records = new Array<KernelRecord>(Math.min(chunk, most));
  let n = 0;
  let malformed = 0;
  let total = 0;
  let off = 0;
  let i = 0;
  for (; i < count && off + RECORD_HEADER <= v.buf.length; i++) {
    const size = v.u32[off >>> 2] as number;
    const o = off + RECORD_HEADER;
    off = (o + size + 7) & ~7;
    if (size < Header.size || o + size > v.buf.length) {
      malformed++;
      continue;
    }
    const type = v.u16[(o + Header.type) >>> 1] as number;
    const min = MIN_SIZE[type];
    if (min === undefined || size < min) {
      malformed++;
      continue;
    }
    const conn = CONN_KINDS[type];
    if (conn) records[n++] = decodeConn(v, o, conn);
    else if (type === EventType.exec) records[n++] = decodeExec(v, o);
    else if (type === EventType.dns) {
      const len = Math.min(v.u16[(o + DnsEvent.len) >>> 1] as number, DnsEvent.max);
      // a copy: the batch's memory is not kept
      const payload = Buffer.from(v.buf.subarray(o + DnsEvent.data, o + DnsEvent.data + len));
      records[n++] = { kind: 'dns', pid: v.u32[(o + Header.pid) >>> 2] as number, tsSec: headerSec(v, o), tsNsec: headerNsec(v, o), netns: v.u32[(o + DnsEvent.netns) >>> 2] as number, payload };
    } else if (type === EventType.sweepEnd)
      records[n++] = { kind: 'sweep', pid: 0, tsSec: headerSec(v, o), tsNsec: headerNsec(v, o), seq: u64(v, o + SweepEvent.seq) };
    else records[n++] = decodeTask(v, o, type === EventType.exit ? 'exit' : 'fork');
    if (n >= chunk) {
      total += n;
      onRecords(records);
      records = new Array<KernelRecord>(Math.max(0, Math.min(chunk, most - i - 1)));
      n = 0;
    }
  }
  if (n > 0) {
    // fewer than made room for when some were malformed
    records.length = n;
    total += n;
    onRecords(records);
  }
  return { records: total, malformed };
}
