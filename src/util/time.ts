/**
 * Times as whole seconds plus nanoseconds (0..999,999,999), both plain
 * numbers: exact where one number of nanoseconds is not (past 2^53 ns, about
 * 104 days of uptime) and without a BigInt per event.
 */
export const NS_PER_SEC = 1_000_000_000;

// 2^32 = 4·10^9 + 294,967,296 and 2^48 = 281,474·10^9 + 976,710,656
const REM_2_32 = 294_967_296;
const REM_2_48 = 976_710_656;

/**
 * The nanoseconds-within-the-second part of a u64 nanosecond count, given as
 * its high and low u32 halves. With hi = hh·2^16 + hl, the remainder term
 * 976,710,656·hh + 294,967,296·hl + lo stays below 2^53, so all is exact.
 */
function remainderTerm(hi: number, lo: number): number {
  return REM_2_48 * (hi >>> 16) + REM_2_32 * (hi & 0xffff) + lo;
}

/** Whole seconds of a u64 nanosecond count given as its u32 halves. */
export function u64NsSeconds(hi: number, lo: number): number {
  const r = remainderTerm(hi, lo);
  return 281_474 * (hi >>> 16) + 4 * (hi & 0xffff) + (r - (r % NS_PER_SEC)) / NS_PER_SEC;
}

/** Nanoseconds within the second of a u64 nanosecond count given as its u32 halves. */
export function u64NsNanos(hi: number, lo: number): number {
  return remainderTerm(hi, lo) % NS_PER_SEC;
}

/** A clock's offset from CLOCK_MONOTONIC, as seconds and nanoseconds (0..999,999,999). */
export interface ClockOffset {
  sec: number;
  nsec: number;
}

/** The offset real − mono of two readings in nanoseconds. */
export function clockOffset(realNs: bigint, monoNs: bigint): ClockOffset {
  const d = realNs - monoNs;
  const ns = BigInt(NS_PER_SEC);
  let sec = d / ns;
  let nsec = d % ns;
  if (nsec < 0n) {
    nsec += ns;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

let cachedSec = -1;
let cachedPrefix = '';

/** "2026-11-26T10:45:01" for a second since the epoch; the last one is cached. */
export function secondPrefix(sec: number): string {
  if (sec !== cachedSec) {
    cachedSec = sec;
    // "2026-11-26T10:45:01.000Z" -> "2026-11-26T10:45:01"
    cachedPrefix = new Date(sec * 1000).toISOString().slice(0, 19);
  }
  return cachedPrefix;
}

/** RFC 3339 UTC with nanoseconds, e.g. 2026-11-26T10:45:01.123456789Z. */
export function rfc3339(sec: number, nsec: number): string {
  return `${secondPrefix(sec)}.${String(nsec).padStart(9, '0')}Z`;
}
