import { formatIPv4, formatIPv6 } from '../util/ip.js';
import { AF_INET, ARGS_LEN, COMM_LEN, ConnEvent, ConnFlag, Direction, EventType, ExecEvent, FILENAME_LEN, Header, TaskEvent } from './events.js';

export type ConnKind = 'connect' | 'accept' | 'close' | 'connect_failed';
export type DirectionName = 'outbound' | 'inbound' | 'unknown';

interface RecordBase {
  /** tgid in the host pid namespace; 0 when unknown */
  pid: number;
  /** CLOCK_MONOTONIC nanoseconds */
  tsNs: bigint;
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
  tid: number;
  uid: number;
  ppid: number;
  comm: string;
  /** false when the kernel could not name the owning process (pid is 0) */
  ownerKnown: boolean;
  /** false when tracking began after the connection started (duration is partial) */
  startSeen: boolean;
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
  bytesSent: number;
  bytesReceived: number;
  durationMs: number;
  srttUs: number;
  retransmits: number;
  oldState: number;
}

export type KernelRecord = ExecRecord | TaskRecord | ConnRecord;

const CONN_KINDS: Record<number, ConnKind> = {
  [EventType.tcpConnect]: 'connect',
  [EventType.tcpAccept]: 'accept',
  [EventType.tcpClose]: 'close',
  [EventType.tcpConnectFailed]: 'connect_failed',
};

const DIRECTIONS: Record<number, DirectionName> = {
  [Direction.outbound]: 'outbound',
  [Direction.inbound]: 'inbound',
  [Direction.unknown]: 'unknown',
};

/** A u64 as a JS number: exact below 2^53, which counters and ids stay under. */
function u64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 4294967296;
}

/** A NUL-terminated string of at most `max` bytes. */
function cstr(buf: Buffer, off: number, max: number): string {
  let end = buf.indexOf(0, off);
  if (end < 0 || end > off + max) end = off + max;
  return buf.toString('utf8', off, end);
}

function decodeConn(buf: Buffer, o: number, kind: ConnKind): ConnRecord {
  const family = buf.readUInt16LE(o + ConnEvent.family) === AF_INET ? 4 : 6;
  const fmt = family === 4 ? formatIPv4 : formatIPv6;
  const flags = buf[o + ConnEvent.flags] ?? 0;
  return {
    kind,
    pid: buf.readUInt32LE(o + Header.pid),
    tsNs: buf.readBigUInt64LE(o + Header.tsNs),
    tid: buf.readUInt32LE(o + ConnEvent.tid),
    uid: buf.readUInt32LE(o + ConnEvent.uid),
    ppid: buf.readUInt32LE(o + ConnEvent.ppid),
    comm: cstr(buf, o + ConnEvent.comm, COMM_LEN),
    ownerKnown: (flags & ConnFlag.ownerKnown) !== 0,
    startSeen: (flags & ConnFlag.startSeen) !== 0,
    connId: u64(buf, o + ConnEvent.connId),
    cgroupId: u64(buf, o + ConnEvent.cgroupId),
    netns: buf.readUInt32LE(o + ConnEvent.netns),
    family,
    direction: DIRECTIONS[buf[o + ConnEvent.direction] ?? 0] ?? 'unknown',
    localIp: fmt(buf, o + ConnEvent.saddr),
    localPort: buf.readUInt16LE(o + ConnEvent.sport),
    remoteIp: fmt(buf, o + ConnEvent.daddr),
    remotePort: buf.readUInt16LE(o + ConnEvent.dport),
    error: buf.readInt32LE(o + ConnEvent.error),
    bytesSent: u64(buf, o + ConnEvent.bytesSent),
    bytesReceived: u64(buf, o + ConnEvent.bytesReceived),
    durationMs: u64(buf, o + ConnEvent.durationNs) / 1e6,
    srttUs: buf.readUInt32LE(o + ConnEvent.srttUs),
    retransmits: buf.readUInt32LE(o + ConnEvent.retransmits),
    oldState: buf[o + ConnEvent.oldState] ?? 0,
  };
}

function decodeExec(buf: Buffer, o: number): ExecRecord {
  const filenameLen = Math.min(buf.readUInt16LE(o + ExecEvent.filenameLen), FILENAME_LEN - 1);
  const argsLen = Math.min(buf.readUInt16LE(o + ExecEvent.argsLen), ARGS_LEN);
  const args = buf.toString('utf8', o + ExecEvent.args, o + ExecEvent.args + argsLen);
  const argv = args.split('\0');
  // argv is NUL-terminated; a trailing empty string is that terminator
  if (argv.length > 0 && argv[argv.length - 1] === '') argv.pop();
  return {
    kind: 'exec',
    pid: buf.readUInt32LE(o + Header.pid),
    tsNs: buf.readBigUInt64LE(o + Header.tsNs),
    ppid: buf.readUInt32LE(o + ExecEvent.ppid),
    uid: buf.readUInt32LE(o + ExecEvent.uid),
    cgroupId: u64(buf, o + ExecEvent.cgroupId),
    comm: cstr(buf, o + ExecEvent.comm, COMM_LEN),
    filename: buf.toString('utf8', o + ExecEvent.filename, o + ExecEvent.filename + filenameLen),
    argv,
    argsTruncated: argsLen === ARGS_LEN,
  };
}

function decodeTask(buf: Buffer, o: number, kind: 'exit' | 'fork'): TaskRecord {
  return {
    kind,
    pid: buf.readUInt32LE(o + Header.pid),
    tsNs: buf.readBigUInt64LE(o + Header.tsNs),
    ppid: buf.readUInt32LE(o + TaskEvent.ppid),
    uid: buf.readUInt32LE(o + TaskEvent.uid),
    exitCode: buf.readInt32LE(o + TaskEvent.exitCode),
    cgroupId: u64(buf, o + TaskEvent.cgroupId),
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
};

/**
 * Decodes one batch from the addon: `count` records, each laid out as
 * [u32 size][record bytes][zero padding to 8].
 */
export function decodeBatch(buf: Buffer, count: number): DecodeResult {
  const records: KernelRecord[] = [];
  let malformed = 0;
  let off = 0;
  for (let i = 0; i < count && off + 4 <= buf.length; i++) {
    const size = buf.readUInt32LE(off);
    const o = off + 4;
    off = (o + size + 7) & ~7;
    if (size < Header.size || o + size > buf.length) {
      malformed++;
      continue;
    }
    const type = buf.readUInt16LE(o + Header.type);
    const min = MIN_SIZE[type];
    if (min === undefined || size < min) {
      malformed++;
      continue;
    }
    const conn = CONN_KINDS[type];
    if (conn) records.push(decodeConn(buf, o, conn));
    else if (type === EventType.exec) records.push(decodeExec(buf, o));
    else records.push(decodeTask(buf, o, type === EventType.exit ? 'exit' : 'fork'));
  }
  return { records, malformed };
}
