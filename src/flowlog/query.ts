/**
 * `convis query --db FILE [filters] [--top WHAT --by bytes|connections]
 * [--format table|json] [--limit N]`: answers from a flow log without the
 * agent running. Every filter becomes a WHERE condition on an indexed or
 * scanned column, so SQLite does the work; nothing is filtered in JS.
 */
import { parseDurationMs } from '../config/duration.js';
import { ConfigError } from '../config/errors.js';
import { parseFlags } from '../config/flags.js';
import { textWord } from '../sinks/stdout.js';
import { addressRange, addressText, openForReading } from './db.js';

export const QUERY_HELP = `Usage: convis query --db FILE [filters] [--top WHAT --by bytes|connections] [--format table|json] [--limit N]

Answers from a flow log (--sink flowlog,path=FILE) without the agent running.

Filters (all given must hold):
  --remote IP|CIDR     remote address, or any in a prefix (IPv4 or IPv6)
  --port N             either end's port
  --process COMM       process name (a glob: * and ?)
  --container NAME     container name (a glob)
  --pod NAME           pod name (a glob)
  --namespace NS       pod namespace (a glob)
  --domain GLOB        the remote's DNS name
  --since TIME         seen at or after TIME: RFC 3339 (2026-12-01T10:00:00Z) or an age (1h, 30m, 7d)
  --until TIME         seen at or before TIME
  --alerts             only connections that raised a policy alert

  --top WHAT           rank process, container, pod, remote or domain instead of listing connections
  --by bytes|connections   what --top ranks by (default bytes: sent + received)
  --format table|json  aligned columns (default) or one JSON object per line
  --limit N            at most N lines (default 100; 10 with --top)
`;

/** What --top groups by: a workloads column, or a connections one. */
const TOP: Record<string, { workload: boolean; key: string }> = {
  process: { workload: true, key: 'w.comm' },
  container: { workload: true, key: 'w.container_name' },
  pod: { workload: true, key: "CASE WHEN w.pod IS NULL THEN NULL ELSE coalesce(w.namespace, '') || '/' || w.pod END" },
  remote: { workload: false, key: 'remote' },
  domain: { workload: false, key: 'remote_name' },
};

/** An RFC 3339 time or an age before `now`, as ms since the epoch. */
function parseTime(flag: string, text: string, now: number): number {
  const age = parseDurationMs(text);
  if (age !== undefined) return now - age;
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/i.test(text)) {
    const t = Date.parse(text);
    if (!Number.isNaN(t)) return t;
  }
  throw new ConfigError(`${flag} must be an RFC 3339 time (2026-12-01T10:00:00Z) or an age (1h, 30m, 7d), not ${JSON.stringify(text)}`);
}

interface Where {
  sql: string[];
  params: unknown[];
  /** what the conditions look at: each index covers some of these */
  uses: Set<'remote' | 'port' | 'workload' | 'domain' | 'time' | 'alerts'>;
  /** --remote is one address, not a prefix */
  exactRemote: boolean;
}

function filters(v: Record<string, string | boolean | undefined>, now: number): Where {
  const w: Where = { sql: [], params: [], uses: new Set(), exactRemote: false };
  const add = (sql: string, ...params: unknown[]) => {
    w.sql.push(sql);
    w.params.push(...params);
  };
  if (typeof v.remote === 'string') {
    const range = addressRange(v.remote.trim());
    if (!range) throw new ConfigError(`--remote must be an IP address or a prefix such as 10.0.0.0/8 or fd00::/8, not ${JSON.stringify(v.remote)}`);
    add('remote BETWEEN ? AND ?', range[0], range[1]);
    w.uses.add('remote');
    w.exactRemote = range[0].equals(range[1]);
  }
  if (typeof v.port === 'string') {
    const n = Number(v.port);
    if (!/^\d+$/.test(v.port) || n > 65535) throw new ConfigError(`--port must be a port number, not ${JSON.stringify(v.port)}`);
    add('(local_port = ? OR remote_port = ?)', n, n);
    w.uses.add('port');
  }
  // workload filters pick workloads rows first (a small table), then their connections
  const workloadGlobs: [string, string][] = [
    ['process', 'comm'],
    ['container', 'container_name'],
    ['pod', 'pod'],
    ['namespace', 'namespace'],
  ];
  const picked = workloadGlobs.filter(([flag]) => typeof v[flag] === 'string');
  if (picked.length > 0) {
    add(`workload IN (SELECT id FROM workloads WHERE ${picked.map(([, column]) => `${column} GLOB ?`).join(' AND ')})`, ...picked.map(([flag]) => v[flag]));
    w.uses.add('workload');
  }
  if (typeof v.domain === 'string') {
    add('remote_name GLOB ?', v.domain);
    w.uses.add('domain');
  }
  if (typeof v.since === 'string') {
    add('last_seen >= ?', parseTime('--since', v.since, now));
    w.uses.add('time');
  }
  if (typeof v.until === 'string') {
    add('first_seen <= ?', parseTime('--until', v.until, now));
    w.uses.add('time');
  }
  if (v.alerts === true) {
    add('alert_rule IS NOT NULL');
    w.uses.add('alerts');
  }
  return w;
}

const hostPort = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
const iso = (ms: number) => new Date(ms).toISOString();

/** Columns of text, each as wide as its widest cell. */
function table(header: string[], rows: string[][], numeric: Set<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (numeric.has(i) ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** A value from outside (names, command lines) that cannot forge a line or a column. */
const cell = (v: unknown): string => (v === null || v === undefined || v === '' ? '-' : textWord(String(v)));

interface ConnRow {
  remote: Buffer;
  first_seen: number;
  last_seen: number;
  node: string;
  proto: string;
  direction: string;
  closed: number;
  existing: number;
  local_ip: string;
  local_port: number;
  remote_port: number;
  remote_name: string | null;
  pid: number | null;
  comm: string | null;
  cmd: string | null;
  container_id: string | null;
  container_name: string | null;
  image: string | null;
  pod: string | null;
  namespace: string | null;
  remote_pod: string | null;
  remote_namespace: string | null;
  bytes_sent: number;
  bytes_received: number;
  datagrams_sent: number;
  datagrams_received: number;
  retransmits: number;
  duration_ms: number | null;
  error: string | null;
  alert_rule: string | null;
  alert_time: number | null;
  conn_id: number;
}

const COLUMNS = `c.first_seen, c.last_seen, w.node, c.proto, c.direction, c.closed, c.existing, c.local_ip, c.local_port, c.remote,
  c.remote_port, c.remote_name, w.pid, w.comm, w.cmd, w.container_id, w.container_name, w.image, w.pod, w.namespace, c.remote_pod,
  c.remote_namespace, c.bytes_sent, c.bytes_received, c.datagrams_sent, c.datagrams_received, c.retransmits, c.duration_ms, c.error,
  c.alert_rule, c.alert_time, c.conn_id`;

/** Whether the conditions look only at what `covered` names. */
const onlyUses = (w: Where, ...covered: string[]) => [...w.uses].every((u) => covered.includes(u));

/**
 * The index a listing walks. The planner, left to itself, picks a prefix's
 * index and sorts a quarter of a big log; walking the time index newest
 * first, with every filtered column in it, stops after --limit matches.
 */
function listingIndex(w: Where): { index: string; order: string } {
  if (w.uses.has('alerts')) return { index: 'connections_alerts', order: 'first_seen DESC' };
  if (w.exactRemote) return { index: 'connections_remote', order: 'first_seen DESC' };
  return { index: 'connections_time', order: 'first_seen DESC' };
}

/** Runs `convis query`; returns the exit status. Throws ConfigError for usage errors. */
export function runQuery(argv: string[], out: (text: string) => void, now = Date.now()): number {
  const values = parseFlags(
    argv,
    {
      db: { type: 'string' },
      remote: { type: 'string' },
      port: { type: 'string' },
      process: { type: 'string' },
      container: { type: 'string' },
      pod: { type: 'string' },
      namespace: { type: 'string' },
      domain: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      alerts: { type: 'boolean' },
      top: { type: 'string' },
      by: { type: 'string' },
      format: { type: 'string' },
      limit: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    'query: ',
  );
  if (values.help) {
    out(QUERY_HELP);
    return 0;
  }
  if (!values.db) throw new ConfigError('query needs --db FILE (the flow log a flowlog sink writes)');
  const format = values.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new ConfigError(`--format must be table or json, not ${JSON.stringify(format)}`);
  if (values.top !== undefined && !(values.top in TOP)) throw new ConfigError(`--top must be one of ${Object.keys(TOP).join(', ')}, not ${JSON.stringify(values.top)}`);
  const by = values.by ?? 'bytes';
  if (by !== 'bytes' && by !== 'connections') throw new ConfigError(`--by must be bytes or connections, not ${JSON.stringify(by)}`);
  if (values.by !== undefined && values.top === undefined) throw new ConfigError('--by goes with --top');
  let limit = values.top !== undefined ? 10 : 100;
  if (values.limit !== undefined) {
    if (!/^\d+$/.test(values.limit) || Number(values.limit) < 1) throw new ConfigError(`--limit must be a positive whole number, not ${JSON.stringify(values.limit)}`);
    limit = Number(values.limit);
  }
  const w = filters(values, now);
  const where = w.sql.length > 0 ? `WHERE ${w.sql.join(' AND ')}` : '';

  const db = openForReading(values.db);
  try {
    if (values.top !== undefined) {
      const top = TOP[values.top] as { workload: boolean; key: string };
      const metric = by === 'bytes' ? 'bytes' : 'connections';
      // connections are summed per workload (or remote) first, on an index that covers the sums; names are joined after
      // an index that holds every column the conditions and the sums need: a scan of it, never of the rows;
      // unfiltered by anything else, the narrow one of the key reads the groups in order
      const index = top.workload
        ? onlyUses(w, 'workload') ? 'connections_workload' : 'connections_time'
        : values.top === 'remote' && onlyUses(w, 'remote') ? 'connections_remote' : 'connections_time';
      const sql = top.workload
        ? `SELECT ${top.key} AS key, sum(c.n) AS connections, sum(c.s) AS bytes_sent, sum(c.r) AS bytes_received, sum(c.s) + sum(c.r) AS bytes
           FROM (SELECT workload, count(*) AS n, sum(bytes_sent) AS s, sum(bytes_received) AS r FROM connections INDEXED BY ${index} ${where} GROUP BY workload) c
           JOIN workloads w ON w.id = c.workload GROUP BY key ORDER BY ${metric} DESC, key LIMIT ?`
        : `SELECT ${top.key} AS key, count(*) AS connections, sum(bytes_sent) AS bytes_sent, sum(bytes_received) AS bytes_received,
             sum(bytes_sent) + sum(bytes_received) AS bytes FROM connections INDEXED BY ${index} ${where} GROUP BY key ORDER BY ${metric} DESC, key LIMIT ?`;
      const rows = (db.prepare(sql).all(...w.params, limit) as { key: string | Buffer | null; connections: number; bytes_sent: number; bytes_received: number; bytes: number }[]).map((r) => ({
        ...r,
        key: Buffer.isBuffer(r.key) ? addressText(r.key) : r.key,
      }));
      if (format === 'json') {
        for (const r of rows) out(`${JSON.stringify({ [values.top]: r.key, connections: r.connections, bytes_sent: r.bytes_sent, bytes_received: r.bytes_received, bytes: r.bytes })}\n`);
      } else {
        out(table([values.top.toUpperCase(), 'CONNECTIONS', 'SENT', 'RECEIVED', 'BYTES'], rows.map((r) => [cell(r.key), String(r.connections), String(r.bytes_sent), String(r.bytes_received), String(r.bytes)]), new Set([1, 2, 3, 4])));
      }
      return 0;
    }
    const pick = listingIndex(w);
    const rows = db
      .prepare(
        `SELECT ${COLUMNS} FROM connections c JOIN workloads w ON w.id = c.workload
         WHERE c.id IN (SELECT id FROM connections INDEXED BY ${pick.index} ${where} ORDER BY ${pick.order} LIMIT ?) ORDER BY c.first_seen DESC, c.id DESC`,
      )
      .all(...w.params, limit) as ConnRow[];
    if (format === 'json') {
      for (const r of rows) {
        const { remote, ...rest } = r;
        out(`${JSON.stringify({ ...rest, remote_ip: addressText(remote), first_seen: iso(r.first_seen), last_seen: iso(r.last_seen), alert_time: r.alert_time === null ? null : iso(r.alert_time), closed: r.closed === 1, existing: r.existing === 1 })}\n`);
      }
      return 0;
    }
    out(
      table(
        ['FIRST SEEN', 'LAST SEEN', 'PROTO', 'DIR', 'LOCAL', 'REMOTE', 'NAME', 'PID', 'PROCESS', 'CONTAINER', 'POD', 'SENT', 'RECEIVED', 'STATE', 'ALERT'],
        rows.map((r) => [
          iso(r.first_seen),
          iso(r.last_seen),
          r.proto,
          r.direction === 'outbound' ? 'out' : 'in',
          hostPort(r.local_ip, r.local_port),
          hostPort(addressText(r.remote), r.remote_port),
          cell(r.remote_name),
          r.pid === null ? '-' : String(r.pid),
          cell(r.comm),
          cell(r.container_name),
          cell(r.pod === null ? null : `${r.namespace ?? ''}/${r.pod}`),
          String(r.bytes_sent),
          String(r.bytes_received),
          r.error ?? (r.closed ? 'closed' : 'open'),
          cell(r.alert_rule),
        ]),
        new Set([7, 11, 12]),
      ),
    );
    return 0;
  } finally {
    db.close();
  }
}
