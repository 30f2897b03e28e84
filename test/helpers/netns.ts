/**
 * Two test hosts in network namespaces joined by a veth pair, with IPv4
 * and IPv6 addresses. Traffic stays inside namespaces this test made.
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';

export interface NetnsPair {
  a: string;
  b: string;
  a4: string;
  b4: string;
  a6: string;
  b6: string;
  /** network namespace inodes, as the kernel reports them */
  inodeA: number;
  inodeB: number;
  destroy(): void;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

export function createNetnsPair(tag: string): NetnsPair {
  const n = 100 + (process.pid % 100);
  const a = `convis-${tag}-a-${process.pid}`;
  const b = `convis-${tag}-b-${process.pid}`;
  const va = `cva${process.pid % 100000}`;
  const vb = `cvb${process.pid % 100000}`;
  const pair: NetnsPair = {
    a,
    b,
    a4: `10.${n}.77.1`,
    b4: `10.${n}.77.2`,
    a6: `fd00:c0:${n}::1`,
    b6: `fd00:c0:${n}::2`,
    inodeA: 0,
    inodeB: 0,
    destroy() {
      for (const ns of [a, b]) {
        try {
          ip('netns', 'del', ns);
        } catch {
          // already gone
        }
      }
    },
  };
  try {
    ip('netns', 'add', a);
    ip('netns', 'add', b);
    ip('link', 'add', va, 'type', 'veth', 'peer', 'name', vb);
    ip('link', 'set', va, 'netns', a);
    ip('link', 'set', vb, 'netns', b);
    for (const [ns, dev, v4, v6] of [
      [a, va, pair.a4, pair.a6],
      [b, vb, pair.b4, pair.b6],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      ip('-n', ns, '-6', 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    pair.inodeA = statSync(`/run/netns/${a}`).ino;
    pair.inodeB = statSync(`/run/netns/${b}`).ino;
  } catch (e) {
    pair.destroy();
    throw e;
  }
  return pair;
}
