/**
 * ByteWriter: numbers come out as JSON.stringify writes them, strings as
 * UTF-8, and the buffer grows without losing what was written.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ByteWriter } from '../../src/util/byte-writer.js';
import { xorshift32 } from '../helpers/random.js';

const text = (w: ByteWriter) => w.take().toString('utf8');

test('uint: every digit count up to 2^53 - 1, as String(n)', () => {
  const w = new ByteWriter(64);
  const values = [0, 1, 9, 10, 99, 100, 65535, 4294967295, 4294967296, 999_999_999_999, Number.MAX_SAFE_INTEGER];
  for (let p = 1; p < 2 ** 53; p *= 10) values.push(p, p - 1, p + 1);
  for (const n of values) {
    w.uint(n);
    assert.equal(text(w), String(n));
  }
});

test('uint agrees with String(n) on random safe integers', () => {
  const w = new ByteWriter(64);
  const next = xorshift32(0xc0ffee);
  for (let i = 0; i < 5000; i++) {
    const n = (next() % 2 ** 21) * 2 ** 32 + next();
    w.uint(n);
    assert.equal(text(w), String(n));
  }
});

test('nineDigits pads with zeros', () => {
  const w = new ByteWriter(64);
  for (const n of [0, 5, 123, 100_000_000, 999_999_999]) {
    w.nineDigits(n);
    assert.equal(text(w), String(n).padStart(9, '0'));
  }
});

test('number: fractions and the odd cases as JSON.stringify', () => {
  const w = new ByteWriter(64);
  for (const n of [12.5, 0.000001, 0.532627, 1e21, -3, 1.7976931348623157e308, NaN, Infinity]) {
    w.number(n);
    assert.equal(text(w), JSON.stringify(n));
  }
});

test('ascii, utf8 and bytes; growing from a tiny buffer keeps everything', () => {
  const w = new ByteWriter(1);
  const want: string[] = [];
  for (let i = 0; i < 500; i++) {
    w.ascii('10.0.0.1:');
    w.utf8('é€😀');
    w.bytes(Buffer.from('[x]'));
    w.byte(0x0a);
    want.push('10.0.0.1:é€😀[x]\n');
  }
  assert.equal(w.length, Buffer.byteLength(want.join('')));
  assert.equal(text(w), want.join(''));
  assert.equal(w.length, 0, 'take() starts over');
});

test('jsonString as JSON.stringify, plain and escaped; truncate forgets what came after a mark, across growth', () => {
  const w = new ByteWriter(1);
  const strings = ['10.0.0.1', 'fd00::2', '', 'a "quoted" name', 'back\\slash', 'tab\there', 'é€😀', '\u0001', '~'];
  for (const s of strings) w.jsonString(s);
  assert.equal(text(w), strings.map((s) => JSON.stringify(s)).join(''));
  w.ascii('keep');
  const mark = w.length;
  for (let i = 0; i < 1000; i++) w.ascii('drop ');
  w.truncate(mark);
  w.ascii('!');
  assert.equal(text(w), 'keep!');
});

test('take() hands out a copy: writing on does not change it', () => {
  const w = new ByteWriter(64);
  w.ascii('first');
  const a = w.take();
  w.ascii('second');
  assert.equal(a.toString(), 'first');
  assert.equal(text(w), 'second');
});

test('writeTo hands out slices without copying; what a stream still holds is never written over, whatever order it finishes in', () => {
  const next = xorshift32(0x5eed);
  const w = new ByteWriter(256);
  const held: { chunk: Uint8Array; copy: string; cb: (err?: Error | null) => void }[] = [];
  const received: string[] = [];
  const stream = {
    write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean {
      held.push({ chunk, copy: Buffer.from(chunk).toString('latin1'), cb });
      return true;
    },
  };
  const finishSome = (all: boolean) => {
    while (held.length > 0 && (all || next() % 3 !== 0)) {
      const h = held.splice(next() % held.length, 1)[0]!;
      // the bytes are still the ones handed over, however long the stream kept them
      assert.equal(Buffer.from(h.chunk).toString('latin1'), h.copy);
      received.push(h.copy);
      h.cb();
    }
  };
  const want: string[] = [];
  let sentChars = 0;
  for (let round = 0; round < 2000; round++) {
    const parts = 1 + (next() % 40);
    let s = '';
    for (let i = 0; i < parts; i++) {
      const piece = `${round}:${i}:${'x'.repeat(next() % 50)};`;
      w.ascii(piece);
      s += piece;
    }
    want.push(s);
    sentChars += s.length;
    w.writeTo(stream);
    assert.equal(w.heldBytes, held.reduce((n, h) => n + h.chunk.length, 0));
    if (next() % 4 === 0) finishSome(false);
  }
  finishSome(true);
  assert.equal(w.heldBytes, 0);
  assert.equal(received.map((r) => r.length).reduce((a, b) => a + b, 0), sentChars);
  assert.deepEqual(received.sort(), want.sort());
});

test('writeTo on a stream that finishes at once reuses one buffer: no growth, no copies', () => {
  const w = new ByteWriter(1024);
  // the same memory every time: one backing store, one offset
  const seen = new Set<string>();
  const stores: ArrayBufferLike[] = [];
  const stream = {
    write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean {
      if (!stores.includes(chunk.buffer)) stores.push(chunk.buffer);
      seen.add(`${stores.indexOf(chunk.buffer)}@${chunk.byteOffset}`);
      cb();
      return true;
    },
  };
  for (let i = 0; i < 1000; i++) {
    w.ascii('y'.repeat(100));
    w.writeTo(stream);
  }
  assert.equal(seen.size, 1);
});
