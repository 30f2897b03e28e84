/**
 * Appends text to a growing Buffer without building JS strings first: the
 * hot path of line-oriented sinks, where making, flattening and encoding one
 * string per event cost more than the rest of the pipeline.
 */
/** "00", "01", ... "99" as ASCII bytes */
const PAIRS = new Uint8Array(200);
for (let i = 0; i < 100; i++) {
  PAIRS[i * 2] = 48 + Math.floor(i / 10);
  PAIRS[i * 2 + 1] = 48 + (i % 10);
}

export class ByteWriter {
  private buf: Buffer;
  private pos = 0;
  /** buffers the stream has finished with, for writeTo() */
  private readonly spare: Buffer[] = [];
  /** memory handed to a stream by writeTo() that it has not finished with */
  private held = 0;

  constructor(initialBytes = 1 << 16) {
    this.buf = Buffer.allocUnsafe(Math.max(64, initialBytes));
  }

  /** Bytes written since the last take(). */
  get length(): number {
    return this.pos;
  }

  /** Makes room for n more bytes. */
  ensure(n: number): void {
    if (this.pos + n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(bigger, 0, 0, this.pos);
      this.buf = bigger;
    }
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
   * Writes what was written so far to the stream, in one write, and starts
   * over. The buffer goes back into use once the stream says it is done with
   * it: no fresh (page-faulting) memory per batch.
   */
  writeTo(stream: { write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean }, done?: (err?: Error | null) => void): void {
    const used = this.buf;
    const n = this.pos;
    this.pos = 0;
    // a little in a big buffer: a copy, so that a stream that holds writes
    // holds what they are, not a whole buffer each
    if (n < used.length >> 3) {
      this.held += n;
      stream.write(Buffer.from(used.subarray(0, n)), (err) => {
        this.held -= n;
        done?.(err);
      });
      return;
    }
    this.buf = this.spare.pop() ?? Buffer.allocUnsafe(used.length);
    this.held += used.length;
    stream.write(used.subarray(0, n), (err) => {
      this.held -= used.length;
      if (this.spare.length < 4) this.spare.push(used);
      done?.(err);
    });
  }

  /** Bytes of memory written to streams by writeTo() that they have not finished with (a slow reader's backlog). */
  get heldBytes(): number {
    return this.held;
  }

  /**
   * A copy of the bytes written so far, which the caller may keep (a stream
   * may still queue it); the writer starts over on its own buffer.
   */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    return out;
  }
}
