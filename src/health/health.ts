/**
 * The agent's health, as /healthz (liveness) and /readyz (readiness) report
 * it. Checks are read when a probe asks, never on the event path.
 *
 * - live: the kernel side runs (its poll thread has not stopped, and its
 *   sweeps keep coming) and no sink has stopped for good.
 * - ready: live, the programs are attached, the first batch of records has
 *   reached the sinks, and no network sink has failed every delivery for
 *   longer than `sinkFailingMs` (a remote endpoint that is down is not
 *   fixed by a restart, so it costs readiness, not liveness).
 */
export interface HealthState {
  ok: boolean;
  /** one short sentence per failing check */
  reasons: string[];
}

export interface HealthOptions {
  /** why the kernel side is not working, or undefined when it is */
  kernel: () => string | undefined;
  /** each network sink's name and how long all its deliveries have failed (ms) */
  sinks: () => { name: string; failingForMs: number }[];
  /** how long a sink may fail every delivery before the agent is not ready (default 60 s) */
  sinkFailingMs?: number;
}

export class Health {
  private attached = false;
  private firstBatch = false;
  private readonly stopped: string[] = [];
  private readonly o: HealthOptions;

  constructor(options: HealthOptions) {
    this.o = options;
  }

  /** The programs are loaded and attached. */
  markAttached(): void {
    this.attached = true;
  }

  /** A batch of records went through the pipeline to the sinks. */
  markBatch(): void {
    this.firstBatch = true;
  }

  /** A sink stopped for good (its output closed or failed). */
  sinkStopped(name: string, why: string): void {
    this.stopped.push(`sink ${name} stopped: ${why}`);
  }

  live(): HealthState {
    const reasons = [...this.stopped];
    const kernel = this.attached ? this.o.kernel() : undefined;
    if (kernel) reasons.push(`kernel side: ${kernel}`);
    return { ok: reasons.length === 0, reasons };
  }

  ready(): HealthState {
    const reasons = this.live().reasons;
    if (!this.attached) reasons.push('BPF programs not attached yet');
    else if (!this.firstBatch) reasons.push('no batch from the kernel processed yet');
    const limit = this.o.sinkFailingMs ?? 60_000;
    for (const s of this.o.sinks()) {
      if (s.failingForMs > limit) reasons.push(`sink ${s.name}: every delivery failed for ${Math.round(s.failingForMs / 1000)} s`);
    }
    return { ok: reasons.length === 0, reasons };
  }
}

/**
 * Watches a counter that must keep growing (the kernel side's sweeps): stale
 * once it has not moved for `staleMs`. Read lazily, at probe time.
 */
export function progressWatch(read: () => number, staleMs: number, now: () => number = Date.now): () => number | undefined {
  let last = read();
  let since = now();
  return () => {
    const v = read();
    const t = now();
    if (v !== last) {
      last = v;
      since = t;
      return undefined;
    }
    return t - since > staleMs ? t - since : undefined;
  };
}
