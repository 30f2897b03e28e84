let cachedSec = -1n;
let cachedPrefix = '';

/** RFC 3339 UTC with nanoseconds, e.g. 2026-11-26T10:45:01.123456789Z. */
export function rfc3339Nano(epochNs: bigint): string {
  const sec = epochNs / 1_000_000_000n;
  if (sec !== cachedSec) {
    cachedSec = sec;
    // "2026-11-26T10:45:01.000Z" -> "2026-11-26T10:45:01"
    cachedPrefix = new Date(Number(sec) * 1000).toISOString().slice(0, 19);
  }
  const frac = String(epochNs - sec * 1_000_000_000n).padStart(9, '0');
  return `${cachedPrefix}.${frac}Z`;
}
