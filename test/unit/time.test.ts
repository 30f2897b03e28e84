/**
 * rfc3339: exact strings (expected values from `date -u -d @SECONDS`), the
 * cached second prefix across consecutive calls, the exact split of u64
 * nanosecond counts, and clock offsets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { clockOffset, rfc3339, u64NsNanos, u64NsSeconds } from '../../src/util/time.js';
import { xorshift32 } from '../helpers/random.js';

/** The cases below are written as one BigInt of nanoseconds since the epoch. */
function rfc3339Nano(ns: bigint): string {
  return rfc3339(Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n));
}

const NS = 1_000_000_000n;

describe('rfc3339Nano exact strings', () => {
  const cases: { name: string; ns: bigint; want: string }[] = [
    { name: 'epoch', ns: 0n, want: '1970-01-01T00:00:00.000000000Z' },
    { name: '5 ns: padded to nine digits', ns: 5n, want: '1970-01-01T00:00:00.000000005Z' },
    { name: 'last ns of the first second', ns: 999_999_999n, want: '1970-01-01T00:00:00.999999999Z' },
    { name: 'first ns of the next second', ns: NS, want: '1970-01-01T00:00:01.000000000Z' },
    { name: '1 ms', ns: 1_000_000n, want: '1970-01-01T00:00:00.001000000Z' },
    { name: '1 us', ns: 1_000n, want: '1970-01-01T00:00:00.000001000Z' },
    { name: 'a full timestamp', ns: 1_700_000_000_123_456_789n, want: '2023-11-14T22:13:20.123456789Z' },
    { name: 'exactly on a second boundary', ns: 1_000_000_000n * NS, want: '2001-09-09T01:46:40.000000000Z' },
    { name: 'leap day', ns: 951_782_400n * NS + 42n, want: '2000-02-29T00:00:00.000000042Z' },
    { name: 'the last ns of a year', ns: 1_767_225_599n * NS + 999_999_999n, want: '2025-12-31T23:59:59.999999999Z' },
    { name: '2^31 - 1 s (32-bit time_t limit)', ns: 2_147_483_647n * NS + 999_999_999n, want: '2038-01-19T03:14:07.999999999Z' },
    { name: '2^31 s (past 2038)', ns: 2_147_483_648n * NS, want: '2038-01-19T03:14:08.000000000Z' },
    { name: 'year 2100', ns: 4_102_444_800n * NS + 123n, want: '2100-01-01T00:00:00.000000123Z' },
    { name: '2^32 s', ns: 4_294_967_296n * NS + 500_000_000n, want: '2106-02-07T06:28:16.500000000Z' },
    { name: 'end of year 9999', ns: 253_402_300_799n * NS + 1n, want: '9999-12-31T23:59:59.000000001Z' },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.want}`, () => {
      assert.equal(rfc3339Nano(c.ns), c.want);
    });
  }
});

describe('rfc3339Nano consecutive calls (cached second prefix)', () => {
  const base = 1_700_000_000n * NS; // 2023-11-14T22:13:20

  test('same second: the prefix stays, the fraction changes', () => {
    assert.equal(rfc3339Nano(base + 1n), '2023-11-14T22:13:20.000000001Z');
    assert.equal(rfc3339Nano(base + 2n), '2023-11-14T22:13:20.000000002Z');
    assert.equal(rfc3339Nano(base + 999_999_999n), '2023-11-14T22:13:20.999999999Z');
  });

  test('crossing into the next second and back', () => {
    assert.equal(rfc3339Nano(base + 999_999_999n), '2023-11-14T22:13:20.999999999Z');
    assert.equal(rfc3339Nano(base + NS), '2023-11-14T22:13:21.000000000Z');
    assert.equal(rfc3339Nano(base + 999_999_998n), '2023-11-14T22:13:20.999999998Z');
    assert.equal(rfc3339Nano(base + NS + 7n), '2023-11-14T22:13:21.000000007Z');
  });

  test('far apart seconds alternating', () => {
    for (let i = 0; i < 3; i++) {
      assert.equal(rfc3339Nano(0n), '1970-01-01T00:00:00.000000000Z');
      assert.equal(rfc3339Nano(2_147_483_648n * NS + 1n), '2038-01-19T03:14:08.000000001Z');
      assert.equal(rfc3339Nano(2_147_483_648n * NS + 2n), '2038-01-19T03:14:08.000000002Z');
    }
  });

  test('agrees with Date over random times in random order', () => {
    // xorshift32, seeded: deterministic
    const next = xorshift32(0x2038);
    const maxSec = 253_402_300_799n; // the last second of year 9999
    let previousSec = -1n;
    let sameSecond = 0;
    for (let i = 0; i < 2000; i++) {
      // every other value falls in the same second as the one before
      const sec = i % 2 === 1 ? previousSec : (BigInt(next()) * BigInt(next())) % maxSec;
      const frac = BigInt(next()) % NS;
      const ns = sec * NS + frac;
      const iso = new Date(Number(ns / 1_000_000n)).toISOString(); // ms precision
      const want = `${iso.slice(0, 19)}.${frac.toString().padStart(9, '0')}Z`;
      assert.equal(rfc3339Nano(ns), want, `ns ${ns}`);
      assert.equal(want.slice(20, 23), iso.slice(20, 23)); // Date's milliseconds are our first three digits
      if (sec === previousSec) sameSecond++;
      previousSec = sec;
    }
    assert.equal(sameSecond, 1000);
  });
});

describe('u64 nanosecond counts split into seconds and nanoseconds, exactly', () => {
  const split = (ns: bigint) => {
    const hi = Number(ns >> 32n);
    const lo = Number(ns & 0xffffffffn);
    return [u64NsSeconds(hi, lo), u64NsNanos(hi, lo)];
  };
  const want = (ns: bigint) => [Number(ns / NS), Number(ns % NS)];

  test('edges: 0, 2^32 ± 1, 2^48, 2^53 ± 1 (where one double stops being exact), 2^63, 2^64 − 1', () => {
    const edges = [0n, 1n, 999_999_999n, NS, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 1n, 2n ** 48n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];
    for (const ns of edges) assert.deepEqual(split(ns), want(ns), `ns ${ns}`);
  });

  test('random counts over the whole u64 range agree with BigInt arithmetic', () => {
    const u32 = xorshift32(0x5eed);
    const next = () => BigInt(u32());
    for (let i = 0; i < 5000; i++) {
      const ns = (next() << 32n) | next();
      assert.deepEqual(split(ns), want(ns), `ns ${ns}`);
    }
  });
});

describe('clockOffset', () => {
  test('realtime − monotonic as seconds and nanoseconds', () => {
    assert.deepEqual(clockOffset(1_700_000_000_250_000_000n, 5_000_000_000n), { sec: 1_699_999_995, nsec: 250_000_000 });
    assert.deepEqual(clockOffset(10n * NS + 1n, 3n * NS + 2n), { sec: 6, nsec: 999_999_999 });
  });

  test('a negative offset keeps nsec in 0..999,999,999', () => {
    assert.deepEqual(clockOffset(1n * NS, 2n * NS + 1n), { sec: -2, nsec: 999_999_999 });
  });
});
