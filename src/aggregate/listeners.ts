/**
 * The listening TCP sockets of the node, for the convis_tcp_listen_info
 * gauge: added on listen (live or found at start), removed on unlisten.
 * Bounded: past the cap, new listeners are counted, not kept.
 */
import type { ConnectionEvent } from '../metadata/event.js';
import { localLabels } from './flows.js';

export const LISTEN_LABELS = [
  'node',
  'process',
  'container_id',
  'container_name',
  'container_image',
  'pod',
  'namespace',
  'listen_ip',
  'listen_port',
] as const;

export type ListenLabels = Record<(typeof LISTEN_LABELS)[number], string>;

export class ListenerTable {
  private readonly byConn = new Map<number, ListenLabels>();
  private readonly max: number;
  /** listeners not kept because the table was full */
  refused = 0;

  constructor(options: { maxListeners?: number } = {}) {
    this.max = options.maxListeners ?? 10_000;
    if (!Number.isInteger(this.max) || this.max < 1) throw new RangeError(`maxListeners must be a positive integer, got ${this.max}`);
  }

  add(events: readonly ConnectionEvent[]): void {
    for (const e of events) {
      if (e.event === 'listen') {
        if (this.byConn.size >= this.max && !this.byConn.has(e.connId)) {
          this.refused++;
          continue;
        }
        this.byConn.set(e.connId, {
          node: e.node,
          ...localLabels(e),
          listen_ip: e.local.ip,
          listen_port: String(e.local.port),
        });
      } else if (e.event === 'unlisten') {
        this.byConn.delete(e.connId);
      }
    }
  }

  /** One label set per listener (two sockets on one address and port give two, as SO_REUSEPORT does). */
  all(): IterableIterator<ListenLabels> {
    return this.byConn.values();
  }

  get size(): number {
    return this.byConn.size;
  }
}
