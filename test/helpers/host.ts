/** Small facts about the host that several test harnesses need. */
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The path of a command on PATH (or the sbin dirs), or undefined. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

/** True for an ELF executable without a program interpreter (PT_INTERP), i.e. static. */
export function isStaticElf(path: string): boolean {
  const b = readFileSync(path);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 <= b.length && b.readUInt32LE(off) === 3) return false;
  }
  return true;
}
