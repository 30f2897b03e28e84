/**
 * flowlog sink: `flowlog,path=FILE[,retain=7d][,max_size=1GiB][,max_queue=262144]`.
 * Keeps every connection and UDP flow in an SQLite database (see db.ts),
 * one row each with its totals, for `convis query`.
 *
 * The SQLite work (folding events into rows, writing them once a second,
 * retention) happens on a writer thread (worker.ts, writer.ts). Here, on
 * the agent's main thread, each event is only packed into numbers
 * (record.ts): its workload, addresses and names become small ids, each
 * sent once, and the events go over in batches whose buffers are
 * transferred, not copied. At most `max_queue` events wait for the writer:
 * past it, batches are dropped and counted, so a slow disk holds up
 * neither the kernel side nor the other sinks.
 */
import { Worker } from 'node:worker_threads';
import { parseSizeBytes } from '../config/size.js';
import { parseDurationMs } from '../config/duration.js';
import { ConfigError } from '../config/errors.js';
import type { ConnectionEvent } from '../metadata/event.js';
import { PerProcess } from '../metadata/per-process.js';
import { servicePort } from '../metadata/event.js';
import type { Sink, SinkStats } from '../sinks/sink.js';
import type { Logger } from '../util/log.js';
import {
  F, F_STRIDE, FLAG_EXISTING, FLAG_INBOUND, FLAG_OWNED, FLAG_UDP, KINDS, U, U_STRIDE,
  type FromWriter, type ToWriter, type WorkloadDef, type WorkloadValues, type WriterOptions,
} from './record.js';

export interface FlowLogOptions {
  path: string;
  retainMs: number;
  maxBytes: number;
  /** events handed to the writer thread and not yet taken by it, at most (default DEFAULT_FLOWLOG_MAX_QUEUE); past it, batches are dropped and counted */
  maxQueue?: number;
  /** how long close() waits for the writer to write what it has and close the file (default 10 s); what it did not take is counted as dropped */
  closeTimeoutMs?: number;
  /** tests only: while its first Int32 is not 0, the writer waits before it takes each batch (a stalled disk) */
  hold?: SharedArrayBuffer;
  /** tests only: open connections the writer keeps in memory (default its MAX_OPEN) */
  maxOpen?: number;
  /** tests only: how long the writer's rows in memory must have been mostly free before they shrink (default its SHRINK_AFTER_MS) */
  shrinkAfterMs?: number;
}

const DEFAULT_RETAIN_MS = 7 * 86_400_000;
const DEFAULT_MAX_BYTES = 1024 ** 3;
/** 112 bytes an event: 28 to 56 MiB of packed events; at 20,000 events/s, 13 s of a stalled disk */
export const DEFAULT_FLOWLOG_MAX_QUEUE = 262_144;
/** events per message to the writer, at most */
const BATCH_EVENTS = 2048;
/** packing buffers kept for reuse */
const POOL_BUFFERS = 4;
/** how long packed events wait for more before they are handed over: one message per turn of a busy loop, not per kernel batch */
const BATCH_MS = 50;
/** string ids (addresses, names) kept; past it both sides start over */
const MAX_STRINGS = 65_536;
/** workload ids kept; past it both sides start over (a workload may then get a second row) */
const MAX_WORKLOADS = 65_536;

export function parseFlowLogOptions(o: Record<string, string>): FlowLogOptions {
  const where = '--sink flowlog';
  for (const k of Object.keys(o)) {
    if (!['path', 'retain', 'max_size', 'max_queue'].includes(k)) throw new ConfigError(`${where}: unknown option "${k}" (known: path, retain, max_size, max_queue)`);
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
  let maxQueue = DEFAULT_FLOWLOG_MAX_QUEUE;
  if (o.max_queue !== undefined) {
    const n = /^[0-9]{1,9}$/.test(o.max_queue.trim()) ? Number(o.max_queue.trim()) : NaN;
    if (!(n >= 1000)) throw new ConfigError(`${where}: max_queue must be a number of events of at least 1000, such as 262144, not ${JSON.stringify(o.max_queue)}`);
    maxQueue = n;
  }
  return { path, retainMs, maxBytes, maxQueue };
}

const KIND_CODES: Readonly<Record<string, number>> = Object.fromEntries(KINDS.map((k, i) => [k, i]));

/** What a process's events share: its workload's id, while its container, pod and node stay the same. */
interface WorkloadOf {
  container: unknown;
  pod: unknown;
  node: string;
  generation: number;
  id: number;
}

export class FlowLogSink implements Sink {
  readonly name = 'flowlog';
  private readonly o: FlowLogOptions;
  private readonly log: Logger;
  private readonly maxQueue: number;
  private readonly worker: Worker;
  private readonly counters = { sent: 0, dropped: 0, failed: 0 };
  /** events posted to the writer that it has not taken yet */
  private inFlight = 0;
  /** the batch being packed: its events, and the strings and workloads new in it */
  private f64: Float64Array<ArrayBuffer> = new Float64Array(BATCH_EVENTS * F_STRIDE);
  private u32: Uint32Array<ArrayBuffer> = new Uint32Array(BATCH_EVENTS * U_STRIDE);
  /**
   * packing buffers the writer gave back: fresh ones of this size cost page
   * faults and garbage collections (3 ms a batch), reused ones nothing
   */
  private readonly pool: [Float64Array<ArrayBuffer>, Uint32Array<ArrayBuffer>][] = [];
  private n = 0;
  private strings: string[] = [];
  private workloads: WorkloadDef[] = [];
  private resetStrings = false;
  private resetWorkloads = false;
  private batchTimer: NodeJS.Timeout | undefined;
  /** string ids given so far (0: none) */
  private readonly stringIds = new Map<string, number>();
  private nextString = 1;
  /** workload ids by their values joined */
  private readonly workloadIds = new Map<string, number>();
  private nextWorkload = 1;
  /** bumped at each reset of `workloadIds`: ids kept per process from before are stale */
  private workloadsGeneration = 0;
  private readonly byProcess = new PerProcess<WorkloadOf>(
    (kept, e) => kept.container === e.container && kept.pod === e.pod && kept.node === e.node && kept.generation === this.workloadsGeneration,
    (e) => ({ container: e.container, pod: e.pod, node: e.node, generation: this.workloadsGeneration, id: this.workloadId(e) }),
  );
  /** `dropped` when the writer fell behind; undefined while it keeps up */
  private droppingSince: number | undefined;
  private openRowsReported = 0;
  private rowSlotsReported = 0;
  /** the writer thread is gone (it failed, or close() ended it) */
  private gone = false;
  private closed = false;
  /** the writer opened the file */
  private started = false;
  /** close() is ending the thread */
  private ending = false;
  private readonly ready: Promise<void>;
  private whenClosed: (() => void) | undefined;
  private readonly idle: (() => void)[] = [];

  /** Starts the writer thread and waits until it has opened the file; throws with one line when the file cannot be used. */
  static async open(o: FlowLogOptions, log: Logger): Promise<FlowLogSink> {
    const sink = new FlowLogSink(o, log);
    try {
      await sink.ready;
    } catch (e) {
      sink.ending = true;
      await sink.worker.terminate();
      throw e;
    }
    return sink;
  }

  private constructor(o: FlowLogOptions, log: Logger) {
    this.o = o;
    this.log = log;
    this.maxQueue = o.maxQueue ?? DEFAULT_FLOWLOG_MAX_QUEUE;
    const data: WriterOptions = { path: o.path, retainMs: o.retainMs, maxBytes: o.maxBytes, run: Date.now(), ...(o.hold ? { hold: o.hold } : {}), ...(o.maxOpen ? { maxOpen: o.maxOpen } : {}), ...(o.shrinkAfterMs ? { shrinkAfterMs: o.shrinkAfterMs } : {}) };
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
    // the agent's exit does not wait for it: close() does
    this.worker.unref();
    let opened: () => void = () => undefined;
    let failed: (e: Error) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      opened = resolve;
      failed = reject;
    });
    this.worker.on('message', (m: FromWriter) => {
      switch (m.type) {
        case 'ready':
          this.started = true;
          opened();
          break;
        case 'error':
          // the file cannot be used: open() says so, and the thread ends
          this.gone = true;
          failed(new Error(m.message));
          break;
        case 'counts':
          if (this.gone) break;
          this.inFlight -= m.applied;
          this.counters.sent += m.applied;
          this.counters.dropped += m.dropped;
          this.counters.failed += m.failed;
          this.openRowsReported = m.openRows;
          this.rowSlotsReported = m.rowSlots;
          if (m.f64 && m.u32 && this.pool.length < POOL_BUFFERS) this.pool.push([m.f64, m.u32]);
          if (this.inFlight === 0 && this.n === 0) for (const f of this.idle.splice(0)) f();
          break;
        case 'warn':
          this.log.warn(m.line);
          break;
        case 'failed':
          this.lost(`the writer failed (${m.message})`);
          break;
        case 'closed':
          this.whenClosed?.();
          break;
      }
    });
    // a bug or a crash in the writer: one line, and the flow log stops (the agent does not)
    this.worker.on('error', (e: unknown) => {
      if (!this.started) {
        this.gone = true;
        failed(new Error(errorLine(e)));
      } else this.lost(`the writer failed (${errorLine(e)})`);
    });
    this.worker.on('exit', () => {
      if (!this.started) {
        this.gone = true;
        failed(new Error('the writer thread ended before it opened the file'));
      } else if (!this.ending) this.lost('the writer thread ended');
      this.whenClosed?.();
    });
  }

  write(events: readonly ConnectionEvent[]): void {
    if (events.length === 0) return;
    if (this.closed || this.gone) {
      this.counters.dropped += rowEvents(events);
      return;
    }
    // a writer that falls behind (a slow or full disk) must not make memory
    // grow or hold up the other sinks: past the bound, drop and count
    if (this.inFlight + this.n + events.length > this.maxQueue) {
      if (this.droppingSince === undefined) {
        this.droppingSince = this.counters.dropped;
        this.log.warn(`flowlog ${this.o.path}: the writer is not keeping up (${this.inFlight + this.n} events waiting); dropping events until it does`);
      }
      this.counters.dropped += rowEvents(events);
      return;
    }
    if (this.droppingSince !== undefined) {
      this.log.warn(`flowlog ${this.o.path}: the writer caught up; ${this.counters.dropped - this.droppingSince} events were dropped`);
      this.droppingSince = undefined;
    }
    if (this.stringIds.size >= MAX_STRINGS || this.workloadIds.size >= MAX_WORKLOADS) this.restartIds();
    for (const e of events) {
      if (e.event === 'listen' || e.event === 'unlisten') continue;
      if (this.n === BATCH_EVENTS) this.post();
      this.pack(e);
    }
    if (this.n >= BATCH_EVENTS / 2) this.post();
    else if (this.n > 0 && this.batchTimer === undefined) {
      this.batchTimer = setTimeout(() => this.post(), BATCH_MS);
      this.batchTimer.unref();
    }
  }

  /**
   * Hands over what is packed, waits (at most closeTimeoutMs) for the
   * writer to write it and close the file, and ends the thread. Events it
   * did not take are counted as dropped.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.gone) {
      this.post();
      const timeoutMs = this.o.closeTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      const done = await new Promise<boolean>((resolve) => {
        this.whenClosed = () => resolve(true);
        timer = setTimeout(() => resolve(false), timeoutMs);
        this.worker.postMessage({ type: 'close' } satisfies ToWriter);
      });
      clearTimeout(timer);
      if (!done) this.log.warn(`flowlog ${this.o.path}: the writer did not finish within ${timeoutMs / 1000} s; ${this.inFlight} events not written are counted as dropped`);
    }
    this.ending = true;
    this.gone = true;
    this.counters.dropped += this.inFlight;
    this.inFlight = 0;
    await this.worker.terminate();
    for (const f of this.idle.splice(0)) f();
  }

  /**
   * queueDepth: events packed or handed to the writer that it has not taken yet;
   * openRows: rows the writer keeps in memory for connections still open, as it last said
   */
  stats(): SinkStats & { openRows: number } {
    return { ...this.counters, queueDepth: this.inFlight + this.n, openRows: this.openRowsReported };
  }

  /** Slots the writer's rows in memory hold (they grow with the most connections open at once, and shrink once most have closed), as it last said. */
  rowSlots(): number {
    return this.rowSlotsReported;
  }

  /** Hands over what is packed and resolves once the writer has taken every event (for the bench, which writes faster than any disk). */
  async taken(): Promise<void> {
    this.post();
    if (this.inFlight === 0 || this.gone) return;
    await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  /** The writer is gone: one line, and what it had not taken is dropped. */
  private lost(why: string): void {
    if (this.gone) return;
    this.gone = true;
    this.counters.failed++;
    this.counters.dropped += this.inFlight + this.n;
    this.log.warn(`flowlog ${this.o.path}: ${why}; ${this.inFlight + this.n} events not written, and the flow log stops here`);
    this.inFlight = 0;
    this.n = 0;
    for (const f of this.idle.splice(0)) f();
  }

  /** Posts the packed batch, its buffers transferred. */
  private post(): void {
    if (this.batchTimer !== undefined) {
      clearTimeout(this.batchTimer);
      this.batchTimer = undefined;
    }
    const n = this.n;
    if (n === 0 || this.gone) return;
    let m: ToWriter;
    const common = { type: 'batch', n, resetStrings: this.resetStrings, resetWorkloads: this.resetWorkloads, strings: this.strings, workloads: this.workloads } as const;
    if (n >= BATCH_EVENTS / 2) {
      // the packing buffers themselves go; the writer sends them back to be packed again
      m = { ...common, f64: this.f64, u32: this.u32, giveBack: true };
      this.worker.postMessage(m, [this.f64.buffer, this.u32.buffer]);
      [this.f64, this.u32] = this.pool.pop() ?? [new Float64Array(BATCH_EVENTS * F_STRIDE), new Uint32Array(BATCH_EVENTS * U_STRIDE)];
    } else {
      // a few events (a quiet node, the 50 ms timer): small copies, so that held batches never hold big buffers
      const f64 = this.f64.slice(0, n * F_STRIDE);
      const u32 = this.u32.slice(0, n * U_STRIDE);
      m = { ...common, f64, u32, giveBack: false };
      this.worker.postMessage(m, [f64.buffer, u32.buffer]);
    }
    this.inFlight += n;
    this.n = 0;
    this.strings = [];
    this.workloads = [];
    this.resetStrings = this.resetWorkloads = false;
  }

  /** The id tables are full: both sides forget them, from the next batch on. */
  private restartIds(): void {
    this.post();
    if (this.stringIds.size >= MAX_STRINGS) {
      this.stringIds.clear();
      this.nextString = 1;
      this.resetStrings = true;
    }
    if (this.workloadIds.size >= MAX_WORKLOADS) {
      this.workloadIds.clear();
      this.workloadsGeneration++;
      this.resetWorkloads = true;
    }
  }

  /** A string's id, given (and sent with this batch) the first time. */
  private stringId(s: string | null | undefined): number {
    if (s === undefined || s === null) return 0;
    let id = this.stringIds.get(s);
    if (id === undefined) {
      id = this.nextString++;
      this.stringIds.set(s, id);
      this.strings.push(s);
    }
    return id;
  }

  /** The id of an event's process, container and pod; their values go to the writer with this batch the first time. */
  private workloadId(e: ConnectionEvent): number {
    const p = e.process;
    const c = e.container;
    const values: WorkloadValues = [e.node, p?.pid ?? null, p?.comm ?? null, p?.cmd ?? null, c?.id ?? null, c?.name ?? null, c?.image ?? null, e.pod?.name ?? null, e.pod?.namespace ?? null];
    const key = values.join('\0');
    let id = this.workloadIds.get(key);
    if (id === undefined) {
      id = this.nextWorkload++;
      this.workloadIds.set(key, id);
      this.workloads.push({ id, values });
    }
    return id;
  }

  /** One event into the batch's arrays. */
  private pack(e: ConnectionEvent): void {
    const f = this.f64;
    const u = this.u32;
    const fi = this.n * F_STRIDE;
    const ui = this.n * U_STRIDE;
    this.n++;
    f[fi + F.connId] = e.connId;
    f[fi + F.timeMs] = e.timeSec * 1000 + Math.floor(e.timeNsec / 1e6);
    f[fi + F.bytesSent] = e.bytesSent ?? NaN;
    f[fi + F.bytesReceived] = e.bytesReceived ?? NaN;
    f[fi + F.datagramsSent] = e.datagramsSent ?? NaN;
    f[fi + F.datagramsReceived] = e.datagramsReceived ?? NaN;
    f[fi + F.retransmits] = e.retransmits ?? NaN;
    f[fi + F.durationMs] = e.durationMs ?? NaN;
    u[ui + U.kind] =
      (KIND_CODES[e.event] as number) |
      (e.proto === 'udp' ? FLAG_UDP : 0) |
      (e.direction === 'inbound' ? FLAG_INBOUND : 0) |
      (e.existing === true ? FLAG_EXISTING : 0) |
      (e.process !== null ? FLAG_OWNED : 0);
    u[ui + U.workload] = this.byProcess.get(e).id;
    u[ui + U.localIp] = this.stringId(e.local.ip);
    u[ui + U.localPort] = e.local.port;
    u[ui + U.remoteIp] = this.stringId(e.remote?.ip ?? '');
    u[ui + U.remotePort] = e.remote?.port ?? 0;
    u[ui + U.remoteName] = this.stringId(e.remote?.name);
    u[ui + U.servicePort] = servicePort(e);
    u[ui + U.remotePod] = this.stringId(e.remotePod?.name);
    u[ui + U.remoteNamespace] = this.stringId(e.remotePod?.namespace);
    u[ui + U.error] = this.stringId(e.error);
    u[ui + U.rule] = this.stringId(e.rule);
  }
}

/** The events of a batch that make rows (listeners do not). */
function rowEvents(events: readonly ConnectionEvent[]): number {
  let n = 0;
  for (const e of events) if (e.event !== 'listen' && e.event !== 'unlisten') n++;
  return n;
}

/** The first line of what a thread threw (an Error, or any value). */
function errorLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0] ?? '';
}
