/**
 * The flow log writer's rows in memory (writer.ts): one slot per connection
 * not closed yet or not written yet, its fields in columns (typed arrays
 * for numbers, arrays of shared strings), not one object per connection.
 *
 * Why columns: at max churn the writer folds tens of thousands of
 * connections a second, each kept until the next write (up to a second).
 * As objects they outlived the young generation's collections, were
 * promoted, and were swept by a major collection every few seconds: a
 * sawtooth of 50 to 80 MiB in the agent's RSS. Slots are reused, so the
 * columns grow with the most connections held at once (bounded by the
 * writer's MAX_OPEN) and nothing is allocated per connection; once most of
 * them have gone, compact() moves the rest into smaller columns.
 */

/** flags of a slot */
export const R_OWNED = 1;
export const R_UDP = 2;
export const R_INBOUND = 4;
export const R_CLOSED = 8;
export const R_EXISTING = 16;
/** changed since its last write */
export const R_DIRTY = 32;
/** inserted, or its workload row resolved, by the write under way (taken back if it fails) */
export const R_INSERTED_NOW = 64;
export const R_RESOLVED_NOW = 128;

const INITIAL = 1024;

const NO_ADDRESS = Buffer.alloc(16);

export class Rows {
  private cap = 0;
  /** the connections row's id; NaN until written */
  id = new Float64Array(0);
  connId = new Float64Array(0);
  /** the sink's id of its workload */
  workload = new Uint32Array(0);
  /** its workloads row; NaN until known */
  workloadRow = new Float64Array(0);
  flags = new Uint8Array(0);
  first = new Float64Array(0);
  last = new Float64Array(0);
  localPort = new Uint16Array(0);
  remotePort = new Uint16Array(0);
  servicePort = new Uint16Array(0);
  bytesSent = new Float64Array(0);
  bytesReceived = new Float64Array(0);
  datagramsSent = new Float64Array(0);
  datagramsReceived = new Float64Array(0);
  retransmits = new Float64Array(0);
  /** NaN: none */
  durationMs = new Float64Array(0);
  /** NaN: none */
  alertTime = new Float64Array(0);
  localIp: string[] = [];
  remote: Buffer[] = [];
  remoteName: (string | null)[] = [];
  remotePod: (string | null)[] = [];
  remoteNamespace: (string | null)[] = [];
  error: (string | null)[] = [];
  alertRule: (string | null)[] = [];
  /** slots free for reuse */
  private readonly free: number[] = [];
  /** the most slots in use at once since the last takePeak() */
  private peak = 0;

  constructor() {
    this.grow(INITIAL);
  }

  /** A free slot with its fields cleared. */
  take(): number {
    if (this.free.length === 0) this.grow(this.cap * 2);
    const s = this.free.pop() as number;
    const used = this.cap - this.free.length;
    if (used > this.peak) this.peak = used;
    this.id[s] = NaN;
    this.workloadRow[s] = NaN;
    this.flags[s] = 0;
    this.bytesSent[s] = 0;
    this.bytesReceived[s] = 0;
    this.datagramsSent[s] = 0;
    this.datagramsReceived[s] = 0;
    this.retransmits[s] = 0;
    this.durationMs[s] = NaN;
    this.alertTime[s] = NaN;
    this.error[s] = null;
    this.alertRule[s] = null;
    return s;
  }

  /** Gives a slot back; it keeps no string or address alive. */
  release(s: number): void {
    this.localIp[s] = '';
    this.remote[s] = NO_ADDRESS;
    this.remoteName[s] = null;
    this.remotePod[s] = null;
    this.remoteNamespace[s] = null;
    this.error[s] = null;
    this.alertRule[s] = null;
    this.flags[s] = 0;
    this.free.push(s);
  }

  /** slots the columns hold */
  get capacity(): number {
    return this.cap;
  }

  /** The most slots in use at once since the last call (or since the start); counting starts again from those in use now. */
  takePeak(): number {
    const peak = this.peak;
    this.peak = this.cap - this.free.length;
    return peak;
  }

  /**
   * The capacity compact() would move `used` slots into (room for four
   * times as many, so that they do not grow again at once), or 0 when that
   * would not at least halve the columns.
   */
  compactedCapacity(used: number): number {
    let cap = INITIAL;
    while (cap < used * 4) cap *= 2;
    return cap * 2 <= this.cap ? cap : 0;
  }

  /**
   * Moves the slots in use, `live`, into the lowest slots of new columns of
   * `cap` slots (see compactedCapacity()): live[i] becomes slot i. Every
   * other slot is free afterwards; the caller renames the slots it keeps.
   */
  compact(live: readonly number[], cap: number): void {
    if (live.length > cap) throw new RangeError(`compact: ${live.length} slots into ${cap}`);
    this.remake(cap, live);
    this.free.length = 0;
    for (let s = cap - 1; s >= live.length; s--) this.free.push(s);
  }

  private grow(cap: number): void {
    const old = this.cap;
    this.remake(cap);
    // the lowest slots first
    for (let s = cap - 1; s >= old; s--) this.free.push(s);
  }

  /**
   * Every column made again with `cap` slots: slot i holds what slot from[i]
   * held, or, without `from`, every slot keeps its place (growing); the
   * rest are empty.
   */
  private remake(cap: number, from?: readonly number[]): void {
    const n = from === undefined ? this.cap : from.length;
    const numbers = <A extends Float64Array | Uint32Array | Uint16Array | Uint8Array>(a: A, fresh: A): A => {
      if (from === undefined) fresh.set(a);
      else for (let i = 0; i < n; i++) fresh[i] = a[from[i] as number] as number;
      return fresh;
    };
    const values = <T>(a: T[], empty: T): T[] => {
      const out = new Array<T>(cap).fill(empty);
      for (let i = 0; i < n; i++) out[i] = a[from === undefined ? i : (from[i] as number)] as T;
      return out;
    };
    this.id = numbers(this.id, new Float64Array(cap));
    this.connId = numbers(this.connId, new Float64Array(cap));
    this.workload = numbers(this.workload, new Uint32Array(cap));
    this.workloadRow = numbers(this.workloadRow, new Float64Array(cap));
    this.flags = numbers(this.flags, new Uint8Array(cap));
    this.first = numbers(this.first, new Float64Array(cap));
    this.last = numbers(this.last, new Float64Array(cap));
    this.localPort = numbers(this.localPort, new Uint16Array(cap));
    this.remotePort = numbers(this.remotePort, new Uint16Array(cap));
    this.servicePort = numbers(this.servicePort, new Uint16Array(cap));
    this.bytesSent = numbers(this.bytesSent, new Float64Array(cap));
    this.bytesReceived = numbers(this.bytesReceived, new Float64Array(cap));
    this.datagramsSent = numbers(this.datagramsSent, new Float64Array(cap));
    this.datagramsReceived = numbers(this.datagramsReceived, new Float64Array(cap));
    this.retransmits = numbers(this.retransmits, new Float64Array(cap));
    this.durationMs = numbers(this.durationMs, new Float64Array(cap));
    this.alertTime = numbers(this.alertTime, new Float64Array(cap));
    this.localIp = values(this.localIp, '');
    this.remote = values(this.remote, NO_ADDRESS);
    this.remoteName = values(this.remoteName, null);
    this.remotePod = values(this.remotePod, null);
    this.remoteNamespace = values(this.remoteNamespace, null);
    this.error = values(this.error, null);
    this.alertRule = values(this.alertRule, null);
    this.cap = cap;
  }
}
