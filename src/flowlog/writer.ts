/**
 * The flow log's writer, run on its own thread (worker.ts): folds the
 * packed events the flowlog sink hands it (record.ts) into one row per
 * connection in memory, writes the rows that changed once a second in one
 * transaction (and at close), and enforces retention and size. A long
 * connection costs one row update per second it moves bytes, not one per
 * event, and a kill -9 loses at most the last second. Rows last seen
 * longer ago than `retain` are deleted, and the oldest go first while the
 * file is larger than `max_size`.
 */
import type { Statement } from 'better-sqlite3';
import { addressBytes, openForWriting, type DB } from './db.js';
import { F, F_STRIDE, FLAG_EXISTING, FLAG_INBOUND, FLAG_OWNED, FLAG_UDP, KIND_MASK, KINDS, U, U_STRIDE, type FromWriter, type ToWriter, type WorkloadValues, type WriterOptions } from './record.js';
import { R_CLOSED, R_DIRTY, R_EXISTING, R_INBOUND, R_INSERTED_NOW, R_OWNED, R_RESOLVED_NOW, R_UDP, Rows } from './rows.js';

/** how often changed rows are written */
const FLUSH_MS = 1000;
/** how often retention is enforced (and size, and the planner's statistics refreshed) */
const PRUNE_MS = 60_000;
/**
 * how often the file's size alone is checked (two pragmas): at max churn a
 * minute adds hundreds of MiB, which would then go over max_size by that
 * much and be trimmed in one long delete while events pile up in the queue
 */
const SIZE_CHECK_MS = 5_000;
/** open connections kept in memory; beyond it the oldest is forgotten (its row stays) */
const MAX_OPEN = 524_288;
/** changed rows that make a write happen before the second is up (bounds memory under a burst) */
const MAX_DIRTY = 50_000;
/** how long the rows in memory must have been mostly free before they shrink */
const SHRINK_AFTER_MS = 60_000;

/** An optional number (packed, or a row's): NaN stands for absent. */
const given = <T>(x: number, otherwise: T): number | T => (Number.isNaN(x) ? otherwise : x);

export class FlowLogWriter {
  private readonly db: DB;
  private readonly o: WriterOptions;
  private readonly post: (m: FromWriter, transfer?: ArrayBuffer[]) => void;
  /** the rows in memory (see rows.ts) */
  private readonly rows = new Rows();
  /** slots of connections not closed yet (or closed and not written yet), by conn_id */
  private readonly open = new Map<number, number>();
  /** slots changed since the last write, in the order they changed (a slot once: see R_DIRTY) */
  private dirty = new Int32Array(1024);
  private nDirty = 0;
  /** slots forgotten (MAX_OPEN) while listed in `dirty`: freed after the next write */
  private readonly forgotten: number[] = [];
  private readonly insert: Statement;
  private readonly update: Statement;
  private readonly insertWorkload: Statement;
  /** workloads no connection refers to any more (after deletions) */
  private readonly deleteOrphans: Statement;
  /** the strings the sink gave ids, by id (0: none) */
  private strings: string[] = [''];
  /** remote addresses as 16 bytes, by string id */
  private addresses: (Buffer | undefined)[] = [];
  /** workloads' values by the sink's id; kept until the sink resets its ids */
  private readonly workloadValues = new Map<number, WorkloadValues>();
  /** workloads rows by the sink's id; cleared when a prune may have deleted rows */
  private readonly workloadRows = new Map<number, number>();
  private readonly flushTimer: NodeJS.Timeout;
  private readonly pruneTimer: NodeJS.Timeout;
  /** since the last report */
  private readonly counts = { applied: 0, dropped: 0, failed: 0 };
  private reportedOpen = 0;
  private reportedSlots = 0;
  /** when the rows' peak (see shrinkIfMostlyFree()) was last taken */
  private peakSince = Date.now();
  private closed = false;

  /** Opens the file (throws when it cannot be used) and enforces retention and size once. */
  constructor(o: WriterOptions, post: (m: FromWriter, transfer?: ArrayBuffer[]) => void) {
    this.o = o;
    this.post = post;
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
    // one probe of the workload index per workload; NOT IN (SELECT workload FROM connections) built a
    // temporary table of every row's workload first, tens of MiB at each trim of a large file
    this.deleteOrphans = this.db.prepare('DELETE FROM workloads WHERE NOT EXISTS (SELECT 1 FROM connections WHERE connections.workload = workloads.id)');
    this.prune();
    let flushes = 0;
    this.flushTimer = setInterval(() => {
      this.flush();
      this.shrinkIfMostlyFree();
      if (++flushes % Math.round(SIZE_CHECK_MS / FLUSH_MS) === 0) this.trimIfOver();
      this.report();
    }, FLUSH_MS);
    this.pruneTimer = setInterval(() => {
      this.prune();
      this.report();
    }, PRUNE_MS);
  }

  /** Takes one message from the sink. */
  receive(m: ToWriter): void {
    if (m.type === 'close') {
      if (this.closed) this.post({ type: 'closed' });
      else this.close();
      return;
    }
    if (this.closed) return;
    if (this.o.hold) {
      const gate = new Int32Array(this.o.hold);
      while (Atomics.load(gate, 0) !== 0) Atomics.wait(gate, 0, Atomics.load(gate, 0), 1000);
    }
    if (m.resetStrings) {
      this.strings = [''];
      this.addresses = [];
    }
    if (m.resetWorkloads) {
      // the rows waiting for a write name their workloads by the ids about to be forgotten
      this.flush();
      this.workloadValues.clear();
      this.workloadRows.clear();
    }
    for (const s of m.strings) this.strings.push(s);
    for (const w of m.workloads) this.workloadValues.set(w.id, w.values);
    for (let i = 0; i < m.n; i++) this.fold(m.f64, i * F_STRIDE, m.u32, i * U_STRIDE);
    this.counts.applied += m.n;
    if (this.nDirty >= MAX_DIRTY) this.flush();
    if (m.giveBack) this.report(m.f64, m.u32);
    else this.report();
  }

  /** Writes what is left, refreshes the statistics and closes the file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.flushTimer);
    clearInterval(this.pruneTimer);
    this.flush();
    this.analyze();
    this.db.close();
    this.report();
    this.post({ type: 'closed' });
  }

  /** Stops after an unexpected error: takes nothing more and closes the file as it is (what was committed stays). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.flushTimer);
    clearInterval(this.pruneTimer);
    try {
      this.db.close();
    } catch {
      // closing is all that is left to try
    }
  }

  /** Tells the sink what changed since the last report, and gives back its packing buffers. */
  private report(f64?: Float64Array<ArrayBuffer>, u32?: Uint32Array<ArrayBuffer>): void {
    const c = this.counts;
    const slots = this.rows.capacity;
    if (c.applied === 0 && c.dropped === 0 && c.failed === 0 && this.open.size === this.reportedOpen && slots === this.reportedSlots && f64 === undefined) return;
    this.post({ type: 'counts', ...c, openRows: this.open.size, rowSlots: slots, ...(f64 && u32 ? { f64, u32 } : {}) }, f64 && u32 ? [f64.buffer, u32.buffer] : []);
    c.applied = c.dropped = c.failed = 0;
    this.reportedOpen = this.open.size;
    this.reportedSlots = slots;
  }

  private string(id: number): string | null {
    return id === 0 ? null : (this.strings[id] ?? null);
  }

  /** A remote address's 16 bytes, made once per string id. */
  private addressOf(id: number): Buffer {
    let b = this.addresses[id];
    if (b === undefined) {
      b = addressBytes(this.strings[id] ?? '');
      this.addresses[id] = b;
    }
    return b;
  }

  /**
   * The workloads row of a workload the sink named, written the first time
   * (in the flush's transaction, before the connections rows that refer to
   * it); undefined when its values are gone (see receive()).
   */
  private workloadRow(id: number): number | undefined {
    let row = this.workloadRows.get(id);
    if (row === undefined) {
      const values = this.workloadValues.get(id);
      if (values === undefined) return undefined;
      row = Number(this.insertWorkload.run(...values).lastInsertRowid);
      this.workloadRows.set(id, row);
    }
    return row;
  }

  /** The slot of an event's connection, taken when it is new. */
  private rowOf(f64: Float64Array, fi: number, u32: Uint32Array, ui: number): number {
    const connId = f64[fi + F.connId] as number;
    const known = this.open.get(connId);
    if (known !== undefined) return known;
    const rows = this.rows;
    if (this.open.size >= (this.o.maxOpen ?? MAX_OPEN)) {
      // the oldest open connection: its row stays as last written
      const oldId = this.open.keys().next().value as number;
      const old = this.open.get(oldId) as number;
      this.open.delete(oldId);
      if (rows.flags[old]! & R_DIRTY) {
        rows.flags[old]! &= ~R_DIRTY;
        this.counts.dropped++;
        this.forgotten.push(old);
      } else {
        rows.release(old);
      }
    }
    const s = rows.take();
    const flags = u32[ui + U.kind] as number;
    const t = f64[fi + F.timeMs] as number;
    rows.connId[s] = connId;
    rows.workload[s] = u32[ui + U.workload] as number;
    rows.flags[s] = (flags & FLAG_OWNED ? R_OWNED : 0) | (flags & FLAG_UDP ? R_UDP : 0) | (flags & FLAG_INBOUND ? R_INBOUND : 0) | (flags & FLAG_EXISTING ? R_EXISTING : 0);
    rows.first[s] = t;
    rows.last[s] = t;
    rows.localIp[s] = this.string(u32[ui + U.localIp] as number) ?? '';
    rows.localPort[s] = u32[ui + U.localPort] as number;
    rows.remote[s] = this.addressOf(u32[ui + U.remoteIp] as number);
    rows.remotePort[s] = u32[ui + U.remotePort] as number;
    rows.remoteName[s] = this.string(u32[ui + U.remoteName] as number);
    rows.servicePort[s] = u32[ui + U.servicePort] as number;
    rows.remotePod[s] = this.string(u32[ui + U.remotePod] as number);
    rows.remoteNamespace[s] = this.string(u32[ui + U.remoteNamespace] as number);
    this.open.set(connId, s);
    return s;
  }

  /** Folds one packed event into its connection's row. */
  private fold(f64: Float64Array, fi: number, u32: Uint32Array, ui: number): void {
    const s = this.rowOf(f64, fi, u32, ui);
    const rows = this.rows;
    const flags = u32[ui + U.kind] as number;
    const t = f64[fi + F.timeMs] as number;
    if (t > rows.last[s]!) rows.last[s] = t;
    const name = u32[ui + U.remoteName] as number;
    if (rows.remoteName[s] === null && name !== 0) rows.remoteName[s] = this.string(name);
    // an owner named later (an io_uring accept) fills in the process
    if (!(rows.flags[s]! & R_OWNED) && flags & FLAG_OWNED) {
      rows.workload[s] = u32[ui + U.workload] as number;
      rows.workloadRow[s] = NaN;
      rows.flags[s]! |= R_OWNED;
    }
    const bytesSent = f64[fi + F.bytesSent] as number;
    const bytesReceived = f64[fi + F.bytesReceived] as number;
    const retransmits = f64[fi + F.retransmits] as number;
    const durationMs = f64[fi + F.durationMs] as number;
    switch (KINDS[flags & KIND_MASK]) {
      case 'connect':
      case 'accept':
        // existing ones: what moved before the agent started
        if (flags & FLAG_EXISTING) {
          rows.bytesSent[s] = given(bytesSent, 0);
          rows.bytesReceived[s] = given(bytesReceived, 0);
        }
        break;
      case 'update':
        rows.bytesSent[s]! += given(bytesSent, 0);
        rows.bytesReceived[s]! += given(bytesReceived, 0);
        rows.datagramsSent[s]! += given(f64[fi + F.datagramsSent] as number, 0);
        rows.datagramsReceived[s]! += given(f64[fi + F.datagramsReceived] as number, 0);
        rows.retransmits[s]! += given(retransmits, 0);
        if (!Number.isNaN(durationMs)) rows.durationMs[s] = durationMs;
        break;
      case 'close':
        // lifetime totals
        rows.bytesSent[s] = given(bytesSent, rows.bytesSent[s]!);
        rows.bytesReceived[s] = given(bytesReceived, rows.bytesReceived[s]!);
        rows.retransmits[s] = given(retransmits, rows.retransmits[s]!);
        if (!Number.isNaN(durationMs)) rows.durationMs[s] = durationMs;
        rows.flags[s]! |= R_CLOSED;
        break;
      case 'connect_failed':
        rows.error[s] = this.string(u32[ui + U.error] as number);
        rows.flags[s]! |= R_CLOSED;
        break;
      case 'alert':
        rows.alertRule[s] = this.string(u32[ui + U.rule] as number);
        rows.alertTime[s] = t;
        break;
    }
    if (!(rows.flags[s]! & R_DIRTY)) {
      rows.flags[s]! |= R_DIRTY;
      if (this.nDirty === this.dirty.length) {
        const more = new Int32Array(this.dirty.length * 2);
        more.set(this.dirty);
        this.dirty = more;
      }
      this.dirty[this.nDirty++] = s;
    }
  }

  /** Writes the rows that changed, in one transaction. */
  private flush(): void {
    const n = this.nDirty;
    if (n === 0) return;
    const rows = this.rows;
    const list = this.dirty;
    this.nDirty = 0;
    let written = 0;
    let lost = 0;
    for (let i = 0; i < n; i++) {
      const s = list[i] as number;
      if (rows.flags[s]! & R_DIRTY) {
        rows.flags[s]! &= ~R_DIRTY;
        written++;
      } else {
        // forgotten since it changed (MAX_OPEN): counted as dropped then
        list[i] = -1;
      }
    }
    // ids given inside the transaction: a rollback takes them back (SQLite gives them out again)
    const newWorkloads: number[] = [];
    try {
      this.db.transaction(() => {
        for (let i = 0; i < n; i++) {
          const s = list[i] as number;
          if (s < 0) continue;
          if (Number.isNaN(rows.workloadRow[s])) {
            const w = rows.workload[s] as number;
            const known = this.workloadRows.has(w);
            const row = this.workloadRow(w);
            if (row === undefined) {
              // only after a failed write and then a reset of the sink's ids: its workload is unknown now
              lost++;
              continue;
            }
            rows.workloadRow[s] = row;
            rows.flags[s]! |= R_RESOLVED_NOW;
            if (!known) newWorkloads.push(w);
          }
          const f = rows.flags[s] as number;
          const duration = rows.durationMs[s] as number;
          const alertTime = rows.alertTime[s] as number;
          if (Number.isNaN(rows.id[s])) {
            rows.id[s] = Number(
              this.insert.run(
                this.o.run, rows.connId[s], rows.workloadRow[s], f & R_UDP ? 'udp' : 'tcp', f & R_INBOUND ? 'inbound' : 'outbound',
                rows.first[s], rows.last[s], f & R_CLOSED ? 1 : 0, f & R_EXISTING ? 1 : 0, rows.localIp[s], rows.localPort[s], rows.remote[s],
                rows.remotePort[s], rows.remoteName[s], rows.servicePort[s], rows.remotePod[s], rows.remoteNamespace[s], rows.bytesSent[s],
                rows.bytesReceived[s], rows.datagramsSent[s], rows.datagramsReceived[s], rows.retransmits[s], given(duration, null),
                rows.error[s], rows.alertRule[s], given(alertTime, null),
              ).lastInsertRowid,
            );
            rows.flags[s]! |= R_INSERTED_NOW;
          } else {
            this.update.run(
              rows.last[s], f & R_CLOSED ? 1 : 0, rows.bytesSent[s], rows.bytesReceived[s], rows.datagramsSent[s], rows.datagramsReceived[s],
              rows.retransmits[s], given(duration, null), rows.error[s], rows.alertRule[s], given(alertTime, null),
              rows.workloadRow[s], rows.remoteName[s], rows.id[s],
            );
          }
        }
      })();
    } catch (e) {
      for (let i = 0; i < n; i++) {
        const s = list[i] as number;
        if (s < 0) continue;
        if (rows.flags[s]! & R_INSERTED_NOW) rows.id[s] = NaN;
        if (rows.flags[s]! & R_RESOLVED_NOW) rows.workloadRow[s] = NaN;
      }
      for (const id of newWorkloads) this.workloadRows.delete(id);
      this.counts.failed++;
      this.counts.dropped += written;
      this.post({ type: 'warn', line: `flowlog ${this.o.path}: write failed (${(e as Error).message}); ${written} rows not written` });
      lost = 0;
    }
    this.counts.dropped += lost;
    for (let i = 0; i < n; i++) {
      const s = list[i] as number;
      if (s < 0) continue;
      const f = rows.flags[s] as number;
      rows.flags[s] = f & ~(R_INSERTED_NOW | R_RESOLVED_NOW);
      // a closed connection's row is final (or, after a failed write, dropped and counted)
      if (f & R_CLOSED && !(f & R_DIRTY) && this.open.get(rows.connId[s] as number) === s) {
        this.open.delete(rows.connId[s] as number);
        rows.release(s);
      }
    }
    for (const s of this.forgotten) rows.release(s);
    this.forgotten.length = 0;
  }

  /**
   * Once every SHRINK_AFTER_MS, right after a write: if the most rows held
   * at once in that time would fit in columns at most half as large, moves
   * the rows still open into such columns. The memory a burst of open
   * connections took goes back once it is over, while a steady churn (whose
   * rows come and go every second) keeps its columns.
   */
  private shrinkIfMostlyFree(): void {
    const now = Date.now();
    if (now - this.peakSince < (this.o.shrinkAfterMs ?? SHRINK_AFTER_MS)) return;
    this.peakSince = now;
    const cap = this.rows.compactedCapacity(this.rows.takePeak());
    if (cap === 0 || this.nDirty !== 0 || this.forgotten.length !== 0) return;
    this.rows.compact([...this.open.values()], cap);
    let i = 0;
    for (const connId of this.open.keys()) this.open.set(connId, i++);
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
      // first_seen <= last_seen: the time index finds them (a row seen last before the cutoff also began before it)
      const cutoff = Date.now() - this.o.retainMs;
      let deleted = this.db.prepare('DELETE FROM connections WHERE first_seen < ? AND last_seen < ?').run(cutoff, cutoff).changes;
      deleted += this.trimToSize();
      if (deleted > 0) {
        this.deleteOrphans.run();
        // their ids may be gone: workloads are written again as they come
        this.workloadRows.clear();
      }
      this.db.pragma('incremental_vacuum');
      this.analyze();
    } catch (e) {
      this.post({ type: 'warn', line: `flowlog ${this.o.path}: pruning failed (${(e as Error).message})` });
    }
  }

  /** The file's size in bytes, free pages included (incremental_vacuum returns those). */
  private size(): number {
    return (this.db.pragma('page_count', { simple: true }) as number) * (this.db.pragma('page_size', { simple: true }) as number);
  }

  /** Deletes the oldest rows while the file is over max_size; returns how many. */
  private trimToSize(): number {
    let deleted = 0;
    for (let i = 0, now = this.size(); i < 50 && now > this.o.maxBytes; i++, now = this.size()) {
      const n = (this.db.prepare('SELECT count(*) AS n FROM connections').get() as { n: number }).n;
      if (n === 0) break;
      // the oldest rows, as many as the excess is of the file, and a hundredth more
      const excess = Math.ceil(n * (1 - this.o.maxBytes / now) + n / 100);
      // the oldest by when they began, up to the time of the last of them (from the time index; a
      // list of their ids would be a temporary table as large as the excess)
      const until = this.db.prepare('SELECT first_seen AS t FROM connections ORDER BY first_seen LIMIT 1 OFFSET ?').get(Math.min(excess, n) - 1) as { t: number } | undefined;
      if (until === undefined) break;
      deleted += this.db.prepare('DELETE FROM connections WHERE first_seen <= ?').run(until.t).changes;
      this.deleteOrphans.run();
      this.db.pragma('incremental_vacuum');
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    }
    return deleted;
  }

  /** Between prunes (every SIZE_CHECK_MS): trims the file once it is over max_size. */
  private trimIfOver(): void {
    try {
      if (this.size() <= this.o.maxBytes) return;
      // rows waiting for a write first: a workload they name is then in use
      this.flush();
      if (this.trimToSize() > 0) this.workloadRows.clear();
    } catch (e) {
      this.post({ type: 'warn', line: `flowlog ${this.o.path}: pruning failed (${(e as Error).message})` });
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
