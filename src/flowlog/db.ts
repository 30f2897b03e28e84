/**
 * The flow log's SQLite database: one row per connection (TCP) or socket
 * and remote endpoint (UDP), with its totals kept up to date, and the
 * policy alert it raised, if any. Written by the flowlog sink, read by
 * `convis query`. WAL journal: a reader never blocks the writer, and a
 * killed writer leaves a database that opens with every committed row.
 */
import Database from 'better-sqlite3';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

export type DB = Database.Database;

/** A flow log that cannot be read: one line naming the file. */
export class FlowLogError extends Error {}

export const SCHEMA_VERSION = 1;

const SCHEMA = `
-- who made or accepted connections: a process in a container and pod, on a node
-- (stored once, however many connections it has)
CREATE TABLE IF NOT EXISTS workloads (
  id INTEGER PRIMARY KEY,
  node TEXT NOT NULL,
  pid INTEGER,
  comm TEXT,
  cmd TEXT,
  container_id TEXT,
  container_name TEXT,
  image TEXT,
  pod TEXT,
  namespace TEXT
);
CREATE TABLE IF NOT EXISTS connections (
  id INTEGER PRIMARY KEY,
  run INTEGER NOT NULL,            -- when the agent that wrote it started (ms): conn_id is unique per run
  conn_id INTEGER NOT NULL,
  workload INTEGER NOT NULL,       -- workloads.id
  proto TEXT NOT NULL,             -- tcp or udp
  direction TEXT NOT NULL,         -- outbound or inbound
  first_seen INTEGER NOT NULL,     -- ms since the Unix epoch
  last_seen INTEGER NOT NULL,
  closed INTEGER NOT NULL DEFAULT 0,
  existing INTEGER NOT NULL DEFAULT 0,
  local_ip TEXT NOT NULL,
  local_port INTEGER NOT NULL,
  remote BLOB NOT NULL,            -- the remote address as 16 ordered bytes (IPv4 mapped): prefixes are ranges
  remote_port INTEGER NOT NULL,
  remote_name TEXT,                -- its DNS name, when known
  service_port INTEGER NOT NULL,   -- remote port when outbound, local port when inbound
  remote_pod TEXT,
  remote_namespace TEXT,
  bytes_sent INTEGER NOT NULL DEFAULT 0,
  bytes_received INTEGER NOT NULL DEFAULT 0,
  datagrams_sent INTEGER NOT NULL DEFAULT 0,
  datagrams_received INTEGER NOT NULL DEFAULT 0,
  retransmits INTEGER NOT NULL DEFAULT 0,
  duration_ms REAL,
  error TEXT,
  alert_rule TEXT,
  alert_time INTEGER
);
-- convis query picks its index itself (see query.ts). Writes pay for every
-- index, so each is as narrow as its queries allow: one carries every
-- column the filters and sums need, newest first, which listings walk until
-- --limit matches and filtered rankings scan without touching the rows; two
-- narrow ones let rankings of the whole log (by remote, by workload) read
-- their groups in order.
CREATE INDEX IF NOT EXISTS connections_time ON connections
  (first_seen, last_seen, remote, local_port, remote_port, workload, alert_rule, bytes_sent, bytes_received, remote_name);
CREATE INDEX IF NOT EXISTS connections_remote ON connections (remote, bytes_sent, bytes_received);
CREATE INDEX IF NOT EXISTS connections_workload ON connections (workload, bytes_sent, bytes_received);
CREATE INDEX IF NOT EXISTS connections_alerts ON connections (alert_rule, first_seen) WHERE alert_rule IS NOT NULL;
`;

/** the writer's SQLite page cache, KiB */
export const WRITER_CACHE_KIB = 2048;

/** Opens (creating if needed) the flow log for writing. */
export function openForWriting(path: string): DB {
  const db = new Database(path);
  // before the first table: lets deletes give space back (incremental_vacuum)
  db.pragma('auto_vacuum = INCREMENTAL');
  db.pragma('journal_mode = WAL');
  // WAL + NORMAL: a committed transaction survives the process being killed
  db.pragma('synchronous = NORMAL');
  // SQLite's own default page cache, not better-sqlite3's 16 MiB: the writer
  // touches the tail of each index and, when trimming, their head; a larger
  // cache only filled, over minutes, with pages it did not need again (a
  // slow rise of the agent's RSS), and wrote no faster
  db.pragma(`cache_size = -${WRITER_CACHE_KIB}`);
  db.exec(SCHEMA);
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version === 0) db.pragma(`user_version = ${SCHEMA_VERSION}`);
  else if (version !== SCHEMA_VERSION) throw new Error(`written by another convis (schema ${version}, this one reads ${SCHEMA_VERSION})`);
  return db;
}

/** Opens an existing flow log read-only; throws with one line when it is missing or not a flow log. */
export function openForReading(path: string): DB {
  let db: DB;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new FlowLogError(code === 'SQLITE_CANTOPEN' ? `${path}: no such flow log` : `${path}: ${(e as Error).message}`);
  }
  try {
    const t = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'connections'").get();
    if (t === undefined) throw new Error('not a convis flow log (no connections table)');
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version !== SCHEMA_VERSION) throw new Error(`written by another convis (schema ${version}, this one reads ${SCHEMA_VERSION})`);
  } catch (e) {
    db.close();
    const m = (e as Error).message;
    throw new FlowLogError(`${path}: ${/file is not a database|malformed/.test(m) ? 'not a flow log (not an SQLite database, or damaged)' : m}`);
  }
  return db;
}

/** An address as 16 bytes (IPv4 as IPv4-mapped IPv6), ordered as addresses are: prefixes become ranges. */
export function addressBytes(ip: string): Buffer {
  if (isIP(ip) === 0) return Buffer.alloc(16);
  const a = ipaddr.parse(ip);
  const v6 = a.kind() === 'ipv4' ? (a as ipaddr.IPv4).toIPv4MappedAddress() : (a as ipaddr.IPv6);
  return Buffer.from(v6.toByteArray());
}

/** The address 16 bytes stand for, as written elsewhere (IPv4 dotted, IPv6 compressed). */
export function addressText(bytes: Uint8Array): string {
  const v6 = ipaddr.fromByteArray(Array.from(bytes)) as ipaddr.IPv6;
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address().toString() : v6.toString();
}

/** The lowest and highest 16-byte addresses of an address or prefix, or undefined when it is neither. */
export function addressRange(text: string): [Buffer, Buffer] | undefined {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  let bits: number;
  if (text.includes('/')) {
    // ipaddr also takes "10.1/8"-style shorthands; only the usual forms are accepted
    if (isIP(text.slice(0, text.indexOf('/'))) === 0 || !ipaddr.isValidCIDR(text)) return undefined;
    [addr, bits] = ipaddr.parseCIDR(text);
  } else {
    if (isIP(text) === 0) return undefined;
    addr = ipaddr.parse(text);
    bits = addr.kind() === 'ipv4' ? 32 : 128;
  }
  if (addr.kind() === 'ipv4') {
    addr = (addr as ipaddr.IPv4).toIPv4MappedAddress();
    bits += 96;
  }
  const lo = Buffer.from(addr.toByteArray());
  const hi = Buffer.from(lo);
  for (let bit = bits; bit < 128; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    lo[byte] = (lo[byte] as number) & ~mask;
    hi[byte] = (hi[byte] as number) | mask;
  }
  return [lo, hi];
}
