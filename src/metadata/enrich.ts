/**
 * Turns kernel records into ConnectionEvents: process details from the
 * process cache, wall-clock time, errno names.
 */
import { constants } from 'node:os';
import type { ConnRecord, KernelRecord } from '../bpf/decode.js';
import type { ConnectionEvent } from './event.js';
import type { ProcessCache } from './process-cache.js';

const ERRNO_NAMES = new Map<number, string>();
// where two names share a number (EAGAIN/EWOULDBLOCK), the first listed is the canonical one
for (const [name, n] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/** errno number to its name (ECONNREFUSED), or "errno N" when unknown. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `errno ${n}`;
}

export interface EnricherOptions {
  processes: ProcessCache;
  node: string;
  /** CLOCK_MONOTONIC ns to epoch ns */
  toEpochNs: (monotonicNs: bigint) => bigint;
  now?: () => number;
}

export class Enricher {
  private readonly o: EnricherOptions;
  private readonly now: () => number;

  constructor(options: EnricherOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /**
   * Feeds process records to the cache and returns the connection events
   * of one batch, in kernel order.
   */
  batch(records: readonly KernelRecord[]): ConnectionEvent[] {
    const out: ConnectionEvent[] = [];
    const procs = this.o.processes;
    for (const r of records) {
      switch (r.kind) {
        case 'exec':
          procs.onExec(r);
          break;
        case 'fork':
          procs.onFork(r);
          break;
        case 'exit':
          procs.onExit(r, this.now());
          break;
        default:
          out.push(this.connection(r));
      }
    }
    return out;
  }

  connection(r: ConnRecord): ConnectionEvent {
    const process = r.ownerKnown && r.pid !== 0 ? this.o.processes.get(r.pid, r) : null;
    const ev: ConnectionEvent = {
      timeNs: this.o.toEpochNs(r.tsNs),
      event: r.kind,
      proto: 'tcp',
      direction: r.direction === 'inbound' ? 'inbound' : 'outbound',
      local: { ip: r.localIp, port: r.localPort },
      remote: { ip: r.remoteIp, port: r.remotePort },
      // shared with the cache, not copied: sinks treat events as read-only
      process,
      node: this.o.node,
      cgroupId: r.cgroupId,
      netns: r.netns,
      connId: r.connId,
    };
    if (r.kind === 'close') {
      ev.bytesSent = r.bytesSent;
      ev.bytesReceived = r.bytesReceived;
      ev.durationMs = r.durationMs;
      ev.srttUs = r.srttUs;
      ev.retransmits = r.retransmits;
    } else if (r.kind === 'connect_failed') {
      ev.error = errnoName(r.error);
    }
    return ev;
  }
}
