/**
 * A value derived from an event's process and what goes with it
 * (container, pod, node), kept per process object: the process cache and
 * the enricher hand out the same objects while nothing changed, so what
 * is derived once serves every later event of that process without a key
 * string built per event. Sinks and the aggregates keep their line parts,
 * flow indexes and row ids this way.
 */
import type { ConnectionEvent, ProcessDetails } from './event.js';

/**
 * One value per process object (the process cache hands out the same object
 * while nothing changed), and one for events without a process; made again
 * when `fits` says the kept one no longer matches the event.
 */
export class PerProcess<T> {
  private readonly byProcess = new WeakMap<ProcessDetails, T>();
  private orphan: T | undefined;

  constructor(
    private readonly fits: (kept: T, e: ConnectionEvent) => boolean,
    private readonly make: (e: ConnectionEvent) => T,
  ) {}

  get(e: ConnectionEvent): T {
    let t = e.process ? this.byProcess.get(e.process) : this.orphan;
    if (t === undefined || !this.fits(t, e)) {
      t = this.make(e);
      if (e.process) this.byProcess.set(e.process, t);
      else this.orphan = t;
    }
    return t;
  }
}

