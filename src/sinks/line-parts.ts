/**
 * Caches the line writers of the stdout sink share: the bytes of what
 * repeats from one event to the next are made once and copied after that.
 */
import { secondPrefix } from '../util/time.js';

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
