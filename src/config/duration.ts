/**
 * Durations as users write them: "10s", "500ms", "1m", "1h", "7d", or plain
 * seconds ("15"); fractions allowed. One grammar for every flag and key.
 */
export function parseDurationMs(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Math.round(Number(m[1]) * unit);
  return Number.isFinite(ms) ? ms : undefined;
}
