/**
 * Moves kernel records through enrichment to the sinks, in order. A batch
 * that names a container not yet looked up waits for the lookup (bounded by
 * the Containers' waitMs); later batches queue behind it, so sinks see
 * events in kernel order. The kernel side is never held up: records are
 * ingested synchronously as they arrive, and when too many batches are
 * waiting, new ones go out without waiting for lookups.
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
  /** batches allowed to wait for lookups at once (default 64) */
  maxWaiting?: number;
}

export interface PipelineStats {
  /** batches that waited for container lookups */
  waited: number;
  /** batches sent on without waiting because too many were queued */
  hurried: number;
  queued: number;
}

export class Pipeline {
  private readonly o: PipelineOptions;
  private readonly maxWaiting: number;
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private readonly counters = { waited: 0, hurried: 0 };

  constructor(options: PipelineOptions) {
    this.o = options;
    this.maxWaiting = options.maxWaiting ?? 64;
  }

  push(records: readonly KernelRecord[]): void {
    const batch = this.o.enricher.ingest(records);
    // learn new processes' containers ahead of their first connection
    if (batch.newCgroups.size > 0) this.o.containers.prefetch(batch.newCgroups);
    if (batch.recs.length === 0) return;
    const needs = this.o.containers.needs(batch.refs.values(), batch.unknownCgroups);
    if (!needs && this.queued === 0) {
      this.emit(batch); // the common case: everything is cached, nothing queued
      return;
    }
    if (needs && this.queued >= this.maxWaiting) this.counters.hurried++;
    const wait = needs && this.queued < this.maxWaiting;
    this.queued++;
    this.tail = this.tail.then(async () => {
      if (wait) {
        this.counters.waited++;
        await this.o.containers.resolve(batch.refs.values(), batch.unknownCgroups);
      }
      this.queued--;
      this.emit(batch);
    });
  }

  /** Resolves when every batch pushed so far has reached the sinks. */
  drain(): Promise<void> {
    return this.tail;
  }

  stats(): PipelineStats {
    return { ...this.counters, queued: this.queued };
  }

  private emit(batch: IngestedBatch): void {
    const enriched = this.o.enricher.finish(batch);
    const events = this.o.policy ? this.o.policy.apply(enriched) : enriched;
    this.o.flows?.add(events);
    this.o.listeners?.add(events);
    for (const sink of this.o.sinks) sink.write(events);
  }
}
