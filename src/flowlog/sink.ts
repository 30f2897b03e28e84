/**
 * flowlog sink: `flowlog,path=FILE[,retain=7d][,max_size=1GiB]`. Keeps
 * every connection and UDP flow in an SQLite database (see db.ts), one row
 * each with its totals, for `convis query`.
 *
 * Events are folded into rows in memory and the rows that changed are
 * written once a second in one transaction (and at close): a long
 * connection costs one row update per second it moves bytes, not one per
 * event, and a kill -9 loses at most the last second. Rows last seen longer
 * ago than `retain` are deleted, and the oldest go first while the file is
 * larger than `max_size`.
 */
import type { Statement } from 'better-sqlite3';
import { parseSizeBytes } from '../config/size.js';
import { parseDurationMs } from '../config/duration.js';
import { ConfigError } from '../config/errors.js';
import type { ConnectionEvent } from '../metadata/event.js';
import { servicePort } from '../policy/policy.js';
import type { Sink, SinkStats } from '../sinks/sink.js';
import type { Logger } from '../util/log.js';
import { addressBytes, openForWriting, type DB } from './db.js';
import { PerProcess } from '../metadata/per-process.js';

export interface FlowLogOptions {
  path: string;
  retainMs: number;
  maxBytes: number;
}

const DEFAULT_RETAIN_MS = 7 * 86_400_000;
const DEFAULT_MAX_BYTES = 1024 ** 3;
/** how often changed rows are written */
const FLUSH_MS = 1000;
/** how often retention and size are enforced */
const PRUNE_MS = 60_000;
/** open connections kept in memory; beyond it the oldest is forgotten (its row stays) */
const MAX_OPEN = 524_288;
/** changed rows that make a write happen before the second is up (bounds memory under a burst) */
const MAX_DIRTY = 50_000;


export function parseFlowLogOptions(o: Record<string, string>): FlowLogOptions {
  const where = '--sink flowlog';
  for (const k of Object.keys(o)) {
    if (!['path', 'retain', 'max_size'].includes(k)) throw new ConfigError(`${where}: unknown option "${k}" (known: path, retain, max_size)`);
  }
  const path = (o.path ?? '').trim();
  if (path === '') throw new ConfigError(`${where}: path= is required (the SQLite file to keep connections in)`);
  let retainMs = DEFAULT_RETAIN_MS;
  if (o.retain !== undefined) {
    const ms = parseDurationMs(o.retain);
    if (ms === undefined || ms < 60_000) throw new ConfigError(`${where}: retain must be a duration of at least 1m, such as 7d or 12h, not ${JSON.stringify(o.retain)}`);
    retainMs = ms;
  }
  let maxBytes = DEFAULT_MAX_BYTES;
  if (o.max_size !== undefined) {
    const bytes = parseSizeBytes(o.max_size);
    if (bytes === undefined || bytes < 1024 ** 2) {
      throw new ConfigError(`${where}: max_size must be a size of at least 1MiB, such as 500MiB or 1GiB, not ${JSON.stringify(o.max_size)}`);
    }
    maxBytes = bytes;
  }
  return { path, retainMs, maxBytes };
}

/** One connection's row as it stands. */
interface Row {
  id: number | undefined;
  connId: number;
  workload: number;
  /** the workload names a process (an io_uring accept may name it later) */
  owned: boolean;
  proto: string;
  direction: string;
  first: number;
  last: number;
  closed: boolean;
  existing: boolean;
  localIp: string;
  localPort: number;
  remote: Buffer;
  remotePort: number;
  remoteName: string | null;
  servicePort: number;
  remotePod: string | null;
  remoteNamespace: string | null;
  bytesSent: number;
  bytesReceived: number;
  datagramsSent: number;
  datagramsReceived: number;
  retransmits: number;
  durationMs: number | null;
  error: string | null;
  alertRule: string | null;
  alertTime: number | null;
}

/** workloads remembered with their row id; past it the cache starts over (a workload may then get a second row) */
const MAX_WORKLOADS = 65_536;

const ms = (e: ConnectionEvent) => e.timeSec * 1000 + Math.floor(e.timeNsec / 1e6);

export class FlowLogSink implements Sink {
  readonly name = 'flowlog';
  private readonly db: DB;
  private readonly o: FlowLogOptions;
  private readonly log: Logger;
  private readonly run = Date.now();
  /** rows of connections not closed yet, by conn_id */
  private readonly open = new Map<number, Row>();
  private readonly dirty = new Set<Row>();
  private readonly insert: Statement;
  private readonly update: Statement;
  private readonly insertWorkload: Statement;
  /** workloads rows by their values joined; cleared when it is full or a prune may have deleted rows */
  private readonly workloads = new Map<string, number>();
  /** bumped at each clear of `workloads`: ids kept per process from before are stale */
  private workloadsGeneration = 0;
  private readonly byProcess = new PerProcess<{ container: unknown; pod: unknown; node: string; generation: number; id: number }>(
    (kept, e) => kept.container === e.container && kept.pod === e.pod && kept.node === e.node && kept.generation === this.workloadsGeneration,
    (e) => ({ container: e.container, pod: e.pod, node: e.node, generation: this.workloadsGeneration, id: this.workloadRow(e) }),
  );
  private readonly addresses = new Map<string, Buffer>();
  private readonly flushTimer: NodeJS.Timeout;
  private readonly pruneTimer: NodeJS.Timeout;
  private readonly counters = { sent: 0, dropped: 0, failed: 0 };
  private closed = false;

  constructor(o: FlowLogOptions, log: Logger) {
    this.o = o;
    this.log = log;
    this.db = openForWriting(o.path);
    this.insert = this.db.prepare(`INSERT INTO connections (run, conn_id, workload, proto, direction, first_seen, last_seen, closed,
      existing, local_ip, local_port, remote, remote_port, remote_name, service_port, remote_pod, remote_namespace, bytes_sent,
      bytes_received, datagrams_sent, datagrams_received, retransmits, duration_ms, error, alert_rule, alert_time)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.update = this.db.prepare(`UPDATE connections SET last_seen = ?, closed = ?, bytes_sent = ?, bytes_received = ?,
      datagrams_sent = ?, datagrams_received = ?, retransmits = ?, duration_ms = ?, error = ?, alert_rule = ?, alert_time = ?,
      workload = ?, remote_name = ? WHERE id = ?`);
    this.insertWorkload = this.db.prepare(`INSERT INTO workloads (node, pid, comm, cmd, container_id, container_name, image, pod, namespace)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.flushTimer = setInterval(() => this.flush(), FLUSH_MS);
    this.flushTimer.unref();
    this.prune();
    this.pruneTimer = setInterval(() => this.prune(), PRUNE_MS);
    this.pruneTimer.unref();
  }

  write(events: readonly ConnectionEvent[]): void {
    if (this.closed) {
      this.counters.dropped += events.length;
      return;
    }
    for (const e of events) {
      if (e.event === 'listen' || e.event === 'unlisten') continue;
      this.fold(e);
      this.counters.sent++;
    }
    if (this.dirty.size >= MAX_DIRTY) this.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.flushTimer);
    clearInterval(this.pruneTimer);
    this.flush();
    this.analyze();
    this.db.close();
  }

  stats(): SinkStats {
    return { ...this.counters, queueDepth: this.dirty.size };
  }

  /** Rows kept in memory for connections still open (for tests). */
  get openRows(): number {
    return this.open.size;
  }

  private rowOf(e: ConnectionEvent): Row {
    let r = this.open.get(e.connId);
    if (r !== undefined) return r;
    r = {
      id: undefined,
      connId: e.connId,
      workload: this.workloadOf(e),
      owned: e.process !== null,
      proto: e.proto,
      direction: e.direction,
      first: ms(e),
      last: ms(e),
      closed: false,
      existing: e.existing === true,
      localIp: e.local.ip,
      localPort: e.local.port,
      remote: this.addressOf(e.remote?.ip ?? ''),
      remotePort: e.remote?.port ?? 0,
      remoteName: e.remote?.name ?? null,
      servicePort: servicePort(e),
      remotePod: e.remotePod?.name ?? null,
      remoteNamespace: e.remotePod?.namespace ?? null,
      bytesSent: 0,
      bytesReceived: 0,
      datagramsSent: 0,
      datagramsReceived: 0,
      retransmits: 0,
      durationMs: null,
      error: null,
      alertRule: null,
      alertTime: null,
    };
    if (this.open.size >= MAX_OPEN) {
      // the oldest open connection: its row stays as last written
      const [oldId, old] = this.open.entries().next().value as [number, Row];
      this.open.delete(oldId);
      if (this.dirty.delete(old)) this.counters.dropped++;
    }
    this.open.set(e.connId, r);
    return r;
  }

  /** An address's 16 bytes; a node talks to a bounded set of peers, so they are kept. */
  private addressOf(ip: string): Buffer {
    let b = this.addresses.get(ip);
    if (b === undefined) {
      if (this.addresses.size >= 65_536) this.addresses.clear();
      b = addressBytes(ip);
      this.addresses.set(ip, b);
    }
    return b;
  }

  /** The workloads row of an event's process, container and pod. */
  private workloadOf(e: ConnectionEvent): number {
    return this.byProcess.get(e).id;
  }

  /** Finds or writes (at once: connections rows refer to it) the workloads row of an event's process, container and pod. */
  private workloadRow(e: ConnectionEvent): number {
    const p = e.process;
    const c = e.container;
    const values = [e.node, p?.pid ?? null, p?.comm ?? null, p?.cmd ?? null, c?.id ?? null, c?.name ?? null, c?.image ?? null, e.pod?.name ?? null, e.pod?.namespace ?? null];
    const key = values.join('\0');
    let id = this.workloads.get(key);
    if (id === undefined) {
      if (this.workloads.size >= MAX_WORKLOADS) this.clearWorkloads();
      id = Number(this.insertWorkload.run(...values).lastInsertRowid);
      this.workloads.set(key, id);
    }
    return id;
  }

  private clearWorkloads(): void {
    this.workloads.clear();
    this.workloadsGeneration++;
  }

  /** Folds one event into its connection's row. */
  private fold(e: ConnectionEvent): void {
    const r = this.rowOf(e);
    r.last = Math.max(r.last, ms(e));
    if (r.remoteName === null && e.remote?.name !== undefined) r.remoteName = e.remote.name;
    // an owner named later (an io_uring accept) fills in the process
    if (!r.owned && e.process) {
      r.workload = this.workloadOf(e);
      r.owned = true;
    }
    switch (e.event) {
      case 'connect':
      case 'accept':
        // existing ones: what moved before the agent started
        if (e.existing) {
          r.bytesSent = e.bytesSent ?? 0;
          r.bytesReceived = e.bytesReceived ?? 0;
        }
        break;
      case 'update':
        r.bytesSent += e.bytesSent ?? 0;
        r.bytesReceived += e.bytesReceived ?? 0;
        r.datagramsSent += e.datagramsSent ?? 0;
        r.datagramsReceived += e.datagramsReceived ?? 0;
        r.retransmits += e.retransmits ?? 0;
        if (e.durationMs !== undefined) r.durationMs = e.durationMs;
        break;
      case 'close':
        // lifetime totals
        r.bytesSent = e.bytesSent ?? r.bytesSent;
        r.bytesReceived = e.bytesReceived ?? r.bytesReceived;
        r.retransmits = e.retransmits ?? r.retransmits;
        r.durationMs = e.durationMs ?? r.durationMs;
        r.closed = true;
        break;
      case 'connect_failed':
        r.error = e.error ?? null;
        r.closed = true;
        break;
      case 'alert':
        r.alertRule = e.rule ?? null;
        r.alertTime = ms(e);
        break;
    }
    this.dirty.add(r);
  }

  /** Writes the rows that changed, in one transaction. */
  private flush(): void {
    if (this.dirty.size === 0) return;
    const rows = [...this.dirty];
    this.dirty.clear();
    try {
      this.db.transaction(() => {
        for (const r of rows) {
          if (r.id === undefined) {
            r.id = Number(
              this.insert.run(
                this.run, r.connId, r.workload, r.proto, r.direction, r.first, r.last, r.closed ? 1 : 0, r.existing ? 1 : 0, r.localIp,
                r.localPort, r.remote, r.remotePort, r.remoteName, r.servicePort, r.remotePod, r.remoteNamespace, r.bytesSent, r.bytesReceived,
                r.datagramsSent, r.datagramsReceived, r.retransmits, r.durationMs, r.error, r.alertRule, r.alertTime,
              ).lastInsertRowid,
            );
          } else {
            this.update.run(
              r.last, r.closed ? 1 : 0, r.bytesSent, r.bytesReceived, r.datagramsSent, r.datagramsReceived, r.retransmits, r.durationMs,
              r.error, r.alertRule, r.alertTime, r.workload, r.remoteName, r.id,
            );
          }
        }
      })();
    } catch (e) {
      this.counters.failed++;
      this.counters.dropped += rows.length;
      this.log.warn(`flowlog ${this.o.path}: write failed (${(e as Error).message}); ${rows.length} rows not written`);
      return;
    }
    for (const r of rows) {
      // a closed connection's row is final
      if (r.closed && this.open.get(r.connId) === r && !this.dirty.has(r)) this.open.delete(r.connId);
    }
  }

  /**
   * Deletes rows past the retention age, then the oldest while the file is
   * over its size, and the workloads no row refers to any more; then
   * refreshes the statistics convis query's planner chooses indexes by.
   */
  private prune(): void {
    // every row in memory first, so that a workload no row refers to is truly unused
    this.flush();
    try {
      const orphans = this.db.prepare('DELETE FROM workloads WHERE id NOT IN (SELECT workload FROM connections)');
      // first_seen <= last_seen: the time index finds them (a row seen last before the cutoff also began before it)
      const cutoff = Date.now() - this.o.retainMs;
      let deleted = this.db.prepare('DELETE FROM connections WHERE first_seen < ? AND last_seen < ?').run(cutoff, cutoff).changes;
      const size = () => (this.db.pragma('page_count', { simple: true }) as number) * (this.db.pragma('page_size', { simple: true }) as number);
      for (let i = 0, now = size(); i < 50 && now > this.o.maxBytes; i++, now = size()) {
        const n = (this.db.prepare('SELECT count(*) AS n FROM connections').get() as { n: number }).n;
        if (n === 0) break;
        // the oldest rows, as many as the excess is of the file, and a hundredth more
        const excess = Math.ceil(n * (1 - this.o.maxBytes / now) + n / 100);
        // the oldest by when they began (the order of the time index)
        deleted += this.db.prepare('DELETE FROM connections WHERE id IN (SELECT id FROM connections ORDER BY first_seen LIMIT ?)').run(excess).changes;
        orphans.run();
        this.db.pragma('incremental_vacuum');
        this.db.pragma('wal_checkpoint(TRUNCATE)');
      }
      if (deleted > 0) {
        orphans.run();
        // their ids may be gone: workloads are written again as they come
        this.clearWorkloads();
      }
      this.db.pragma('incremental_vacuum');
      this.analyze();
    } catch (e) {
      this.log.warn(`flowlog ${this.o.path}: pruning failed (${(e as Error).message})`);
    }
  }

  /** Sampled statistics (fast on any size): convis query then picks the right index for each filter. */
  private analyze(): void {
    try {
      this.db.pragma('analysis_limit = 2000');
      this.db.exec('ANALYZE');
    } catch {
      // statistics are an optimisation only
    }
  }
}
