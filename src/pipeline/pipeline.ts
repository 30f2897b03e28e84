/**
 * Moves kernel records through enrichment to the sinks, in order. A batch
 * that names a container not yet looked up waits for the lookup (bounded by
 * the Containers' waitMs); later batches queue behind it, so sinks see
 * events in kernel order. The kernel side is never held up: records are
 * ingested synchronously as they arrive. The backlog is bounded: past
 * maxWaiting batches, new ones queue without a wait of their own, and past
 * maxBacklogRecords records the whole backlog goes on at once, without the
 * lookups it waited for (counted as released).
 */
import type { FlowTable } from '../aggregate/flows.js';
import type { ListenerTable } from '../aggregate/listeners.js';
import type { KernelRecord } from '../bpf/decode.js';
import type { Containers } from '../metadata/containers.js';
import type { Enricher, IngestedBatch } from '../metadata/enrich.js';
import type { Sink } from '../sinks/sink.js';
import type { PolicyAlerts } from '../policy/alerts.js';

export interface PipelineOptions {
  enricher: Enricher;
  containers: Containers;
  sinks: readonly Sink[];
  /** flow counters for the metrics sinks, fed before the sinks see the events */
  flows?: FlowTable;
  /** listening sockets for the listen gauge */
  listeners?: ListenerTable;
  /** policy alerts, added after the events they are about */
  policy?: PolicyAlerts;
  /** batches in the backlog allowed to wait for lookups (default 64); later ones queue without waiting */
  maxWaiting?: number;
  /** records held in the backlog at most (default 65536); past it, the backlog goes on at once without its lookups */
  maxBacklogRecords?: number;
}

export interface PipelineStats {
  /** batches that waited for container lookups */
  waited: number;
  /** batches queued without waiting of their own because maxWaiting were waiting */
  hurried: number;
  /** batches sent on before their lookups finished because the backlog reached maxBacklogRecords */
  released: number;
  /** batches in the backlog now */
  queued: number;
  /** records in the backlog now */
  backlogRecords: number;
}

interface Queued {
  batch: IngestedBatch;
  /** whether this batch waits for its lookups when it reaches the head */
  wait: boolean;
}

export class Pipeline {
  private readonly o: PipelineOptions;
  private readonly maxWaiting: number;
  private readonly maxBacklogRecords: number;
  /** batches in kernel order, waiting for lookups or behind one that is */
  private readonly backlog: Queued[] = [];
  private head = 0;
  private backlogRecords = 0;
  private waiting = 0;
  private pumping = false;
  /** ends the head's wait early when the backlog is released */
  private releaseWait: () => void = () => undefined;
  private drained: (() => void)[] = [];
  private readonly counters = { waited: 0, hurried: 0, released: 0 };

  constructor(options: PipelineOptions) {
    this.o = options;
    this.maxWaiting = options.maxWaiting ?? 64;
    this.maxBacklogRecords = options.maxBacklogRecords ?? 65536;
  }

  push(records: readonly KernelRecord[]): void {
    const batch = this.o.enricher.ingest(records);
    // learn new processes' containers ahead of their first connection
    if (batch.newCgroups.size > 0) this.o.containers.prefetch(batch.newCgroups);
    if (batch.recs.length === 0) return;
    const needs = this.o.containers.needs(batch.refs.values(), batch.unknownCgroups);
    const queued = this.backlog.length - this.head;
    if (!needs && queued === 0) {
      this.emit(batch); // the common case: everything is cached, nothing queued
      return;
    }
    // the bound: memory, and how stale events get, must not grow with a slow runtime
    if (queued > 0 && this.backlogRecords + batch.recs.length > this.maxBacklogRecords) this.release();
    const wait = needs && this.waiting < this.maxWaiting;
    if (wait) this.waiting++;
    else if (needs) this.counters.hurried++;
    this.backlog.push({ batch, wait });
    this.backlogRecords += batch.recs.length;
    void this.pump();
  }

  /** Resolves when every batch pushed so far has reached the sinks. */
  drain(): Promise<void> {
    if (this.backlog.length === this.head) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  stats(): PipelineStats {
    return { ...this.counters, queued: this.backlog.length - this.head, backlogRecords: this.backlogRecords };
  }

  /** Sends the whole backlog on now, in order, without the lookups it waits for (they go on, for later events). */
  private release(): void {
    this.counters.released += this.backlog.length - this.head;
    while (this.head < this.backlog.length) this.shift();
    this.releaseWait();
  }

  /** Emits the head of the backlog. */
  private shift(): void {
    const q = this.backlog[this.head++] as Queued;
    if (q.wait) this.waiting--;
    this.backlogRecords -= q.batch.recs.length;
    if (this.head === this.backlog.length) {
      this.backlog.length = 0;
      this.head = 0;
    }
    this.emit(q.batch);
    if (this.head === this.backlog.length) for (const d of this.drained.splice(0)) d();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.head < this.backlog.length) {
        const q = this.backlog[this.head] as Queued;
        if (q.wait) {
          this.counters.waited++;
          const released = new Promise<void>((resolve) => (this.releaseWait = resolve));
          await Promise.race([this.o.containers.resolve(q.batch.refs.values(), q.batch.unknownCgroups), released]);
          // released meanwhile: this batch has gone already
          if (this.backlog[this.head] !== q) continue;
        }
        this.shift();
      }
    } finally {
      this.pumping = false;
    }
  }

  private emit(batch: IngestedBatch): void {
    const enriched = this.o.enricher.finish(batch);
    const events = this.o.policy ? this.o.policy.apply(enriched) : enriched;
    this.o.flows?.add(events);
    this.o.listeners?.add(events);
    for (const sink of this.o.sinks) sink.write(events);
  }
}
