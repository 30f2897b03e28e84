/** Formats 4 bytes at `off` as dotted IPv4. */
export function formatIPv4(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/**
 * Formats 16 bytes at `off` as IPv6 text (RFC 5952: lower case, longest run
 * of two or more zero groups as "::"). IPv4-mapped addresses
 * (::ffff:a.b.c.d), which dual-stack sockets show for IPv4 peers, come out
 * as plain IPv4.
 */
export function formatIPv6(buf: Uint8Array, off: number): string {
  let mapped = true;
  for (let i = 0; i < 10; i++) if (buf[off + i] !== 0) mapped = false;
  if (mapped && buf[off + 10] === 0xff && buf[off + 11] === 0xff) return formatIPv4(buf, off + 12);

  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((buf[off + i] ?? 0) << 8) | (buf[off + i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(':');
  if (bestLen < 2) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}
