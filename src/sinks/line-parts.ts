/**
 * Caches the line writers of the stdout sink share: the bytes of what
 * repeats from one event to the next are made once and copied after that.
 */
import type { ConnectionEvent, ProcessDetails } from '../metadata/event.js';
import { secondPrefix } from '../util/time.js';

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

/**
 * Bytes per combination of a few short keys (kind, protocol, direction),
 * found through nested maps: no key string is built per event.
 */
export class Fragments {
  private readonly root = new Map<string, Map<string, Map<string, Uint8Array>>>();

  constructor(private readonly make: (a: string, b: string, c: string) => string) {}

  get(a: string, b: string, c = ''): Uint8Array {
    let byB = this.root.get(a);
    if (!byB) this.root.set(a, (byB = new Map()));
    let byC = byB.get(b);
    if (!byC) byB.set(b, (byC = new Map()));
    let bytes = byC.get(c);
    if (!bytes) byC.set(c, (bytes = Buffer.from(this.make(a, b, c), 'utf8')));
    return bytes;
  }
}

/** `before` + "2026-11-26T10:45:01." as bytes, for the last second asked about. */
export class SecondHead {
  private sec = -1;
  private bytes: Uint8Array = new Uint8Array(0);

  constructor(private readonly before: string) {}

  get(sec: number): Uint8Array {
    if (sec !== this.sec) {
      this.sec = sec;
      this.bytes = Buffer.from(`${this.before}${secondPrefix(sec)}.`, 'utf8');
    }
    return this.bytes;
  }
}
