/**
 * Appends text to a growing Buffer without building JS strings first: the
 * hot path of line-oriented sinks, where making, flattening and encoding one
 * string per event cost more than the rest of the pipeline.
 */
/** A string's UTF-8 bytes: the fixed fragments line writers copy with bytes(). */
export const utf8 = (s: string): Uint8Array => Buffer.from(s, 'utf8');

/** "00", "01", ... "99" as ASCII bytes */
const PAIRS = new Uint8Array(200);
for (let i = 0; i < 100; i++) {
  PAIRS[i * 2] = 48 + Math.floor(i / 10);
  PAIRS[i * 2 + 1] = 48 + (i % 10);
}

/** A buffer the writer fills, and how many of its slices streams still hold. */
interface Arena {
  buf: Buffer;
  out: number;
}

export class ByteWriter {
  private arena: Arena;
  /** the current arena's buffer (kept apart: read on every write) */
  private buf: Buffer;
  /** where the bytes not yet handed to a stream begin */
  private start = 0;
  private pos = 0;
  /** arenas no stream holds any more, for reuse: no fresh (page-faulting) memory per batch */
  private readonly spare: Arena[] = [];
  /** bytes handed to a stream by writeTo() that it has not finished with */
  private held = 0;

  constructor(initialBytes = 1 << 16) {
    this.arena = { buf: Buffer.allocUnsafe(Math.max(64, initialBytes)), out: 0 };
    this.buf = this.arena.buf;
  }

  /** Bytes written since the last take() or writeTo(). */
  get length(): number {
    return this.pos - this.start;
  }

  /** Makes room for n more bytes. */
  ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.moveOn(n);
  }

  /**
   * The current arena is full: the bytes not handed off yet go to the start
   * of this arena if no stream holds any of it, else to another one (the
   * full one goes back to the spares once its slices are done).
   */
  private moveOn(n: number): void {
    const a = this.arena;
    const keep = this.pos - this.start;
    if (a.out === 0 && keep + n <= a.buf.length) {
      a.buf.copyWithin(0, this.start, this.pos);
    } else {
      const size = Math.max(a.buf.length, (keep + n) * 2);
      let next = this.spare.pop();
      while (next !== undefined && next.buf.length < keep + n) next = this.spare.pop();
      next ??= { buf: Buffer.allocUnsafe(size), out: 0 };
      a.buf.copy(next.buf, 0, this.start, this.pos);
      if (a.out === 0 && this.spare.length < 4) this.spare.push(a);
      this.arena = next;
      this.buf = next.buf;
    }
    this.start = 0;
    this.pos = keep;
  }

  byte(c: number): void {
    this.ensure(1);
    this.buf[this.pos++] = c;
  }

  bytes(b: Uint8Array): void {
    const n = b.length;
    this.ensure(n);
    if (n > 12) {
      this.buf.set(b, this.pos);
      this.pos += n;
      return;
    }
    // TypedArray.prototype.set has a fixed cost that a short loop beats
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = b[i] as number;
    this.pos = p;
  }

  /** A string known to be ASCII (IP addresses, numbers, fixed names). */
  ascii(s: string): void {
    const n = s.length;
    this.ensure(n);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = s.charCodeAt(i);
    this.pos = p;
  }

  /** The bytes written since the last take() or writeTo(), in place: valid until the next write. */
  view(): Buffer {
    return this.buf.subarray(this.start, this.pos);
  }

  /** Forgets what was written after the first `length` bytes since the last take() or writeTo(). */
  truncate(length: number): void {
    this.pos = this.start + length;
  }

  /**
   * A string as JSON.stringify writes it: quoted, and for a string of
   * printable ASCII without quote or backslash (addresses, names) copied
   * byte by byte, else through JSON.stringify.
   */
  jsonString(s: string): void {
    const n = s.length;
    this.ensure(n + 2);
    const b = this.buf;
    let p = this.pos;
    b[p++] = 0x22;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        this.utf8(JSON.stringify(s));
        return;
      }
      b[p++] = c;
    }
    b[p++] = 0x22;
    this.pos = p;
  }

  /** Any string, UTF-8 encoded. */
  utf8(s: string): void {
    this.ensure(s.length * 3);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** A non-negative safe integer in decimal. */
  uint(n: number): void {
    if (n >= 1_000_000_000) {
      // 32-bit integer arithmetic below; split off the last nine digits
      const hi = Math.floor(n / 1_000_000_000);
      this.uint(hi);
      this.nineDigits(n - hi * 1_000_000_000);
      return;
    }
    this.ensure(9);
    const b = this.buf;
    const digits = n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : n < 1000000 ? 6 : n < 10000000 ? 7 : n < 100000000 ? 8 : 9;
    let p = this.pos + digits;
    this.pos = p;
    // two digits at a time from the table
    while (n >= 100) {
      const q = (n / 100) | 0;
      const r = (n - q * 100) << 1;
      b[--p] = PAIRS[r + 1] as number;
      b[--p] = PAIRS[r] as number;
      n = q;
    }
    if (n >= 10) {
      b[--p] = PAIRS[(n << 1) + 1] as number;
      b[--p] = PAIRS[n << 1] as number;
    } else {
      b[--p] = 48 + n;
    }
  }

  /** 0 <= n < 10^9 as exactly nine digits, zero-padded. */
  nineDigits(n: number): void {
    this.ensure(9);
    const b = this.buf;
    let p = this.pos + 9;
    this.pos = p;
    for (let i = 0; i < 4; i++) {
      const q = (n / 100) | 0;
      const r = (n - q * 100) << 1;
      b[--p] = PAIRS[r + 1] as number;
      b[--p] = PAIRS[r] as number;
      n = q;
    }
    b[--p] = 48 + n;
  }

  /** A finite number as JSON.stringify writes it. */
  number(n: number): void {
    if (Number.isSafeInteger(n) && n >= 0) this.uint(n);
    else this.ascii(Number.isFinite(n) ? String(n) : 'null');
  }

  /**
   * A number of milliseconds that came from whole nanoseconds (ns / 1e6), as
   * JSON.stringify writes it, without the cost of a float-to-string: below
   * 10^9 ms the exact decimal has at most 15 digits, so it is also the
   * shortest one that reads back as the same double.
   */
  millisFromNanos(ms: number): void {
    const ns = Math.round(ms * 1e6);
    if (!(ms >= 0 && ms < 1e9 && ns / 1e6 === ms)) {
      this.number(ms);
      return;
    }
    const whole = Math.floor(ns / 1e6);
    this.uint(whole);
    let frac = ns - whole * 1e6;
    if (frac === 0) return;
    let digits = 6;
    while (frac % 10 === 0) {
      frac /= 10;
      digits--;
    }
    this.ensure(digits + 1);
    const b = this.buf;
    b[this.pos] = 0x2e; // .
    let p = this.pos + 1 + digits;
    this.pos = p;
    for (let i = 0; i < digits; i++) {
      const q = (frac / 10) | 0;
      b[--p] = 48 + (frac - q * 10);
      frac = q;
    }
  }

  /**
   * Hands what was written since the last call to the stream, in one write,
   * without copying it: a slice of the arena, after which writing goes on
   * in the same arena. An arena returns to use once the stream has finished
   * with every slice of it.
   */
  writeTo(stream: { write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean }, done?: (err?: Error | null) => void): void {
    const a = this.arena;
    const n = this.pos - this.start;
    const slice = a.buf.subarray(this.start, this.pos);
    this.start = this.pos;
    a.out++;
    this.held += n;
    stream.write(slice, (err) => {
      this.held -= n;
      a.out--;
      if (a.out === 0) {
        // all of it done: start over at its beginning, or keep it for later
        if (a === this.arena) {
          if (this.start === this.pos) this.start = this.pos = 0;
        } else if (this.spare.length < 4) this.spare.push(a);
      }
      done?.(err);
    });
  }

  /** Bytes of memory written to streams by writeTo() that they have not finished with (a slow reader's backlog). */
  get heldBytes(): number {
    return this.held;
  }

  /**
   * A copy of the bytes written since the last take() or writeTo(), which
   * the caller may keep (a stream may still queue it); the writer goes on
   * in its own buffer.
   */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos - this.start);
    this.buf.copy(out, 0, this.start, this.pos);
    this.pos = this.start;
    return out;
  }
}
