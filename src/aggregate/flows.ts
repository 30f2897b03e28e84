/**
 * Flow aggregation: connection events roll up into flows keyed by what a
 * person asks about (who talked to whom on which service port), with
 * monotonically increasing counters. The ephemeral client port is never part
 * of a key. A cap on the number of flows folds the excess into one overflow
 * flow per node and direction, and counts what was folded.
 */
import type { ConnectionEvent } from '../metadata/event.js';

/** The labels of one flow, in the order they are exposed. */
export const FLOW_LABELS = [
  'node',
  'direction',
  'process',
  'container_id',
  'container_name',
  'container_image',
  'pod',
  'namespace',
  'remote_ip',
  'server_port',
  'remote_pod',
  'remote_namespace',
] as const;

export type FlowLabel = (typeof FLOW_LABELS)[number];
export type FlowLabels = Record<FlowLabel, string> & { overflow?: string };

export interface FlowCounters {
  /** established: connect (outbound) or accept (inbound) */
  connections: number;
  connectFailures: number;
  bytesSent: number;
  bytesReceived: number;
  retransmits: number;
}

export interface Flow {
  labels: FlowLabels;
  counters: FlowCounters;
}

/** The label values of an event's flow. */
export function flowLabels(e: ConnectionEvent): FlowLabels {
  return {
    node: e.node,
    direction: e.direction,
    process: e.process?.comm ?? '',
    container_id: e.container?.id ?? '',
    container_name: e.container?.name ?? '',
    container_image: e.container?.image ?? '',
    pod: e.pod?.name ?? '',
    namespace: e.pod?.namespace ?? '',
    remote_ip: e.remote.ip,
    // the service side's port: the remote one when we connected, ours when we accepted
    server_port: String(e.direction === 'outbound' ? e.remote.port : e.local.port),
    remote_pod: e.remotePod?.name ?? '',
    remote_namespace: e.remotePod?.namespace ?? '',
  };
}

/** The same values as flowLabels(e), joined: built per event, so it makes no object. */
function flowKey(e: ConnectionEvent): string {
  const c = e.container;
  const port = e.direction === 'outbound' ? e.remote.port : e.local.port;
  return `${e.node}\0${e.direction}\0${e.process?.comm ?? ''}\0${c?.id ?? ''}\0${c?.name ?? ''}\0${c?.image ?? ''}\0${e.pod?.name ?? ''}\0${e.pod?.namespace ?? ''}\0${e.remote.ip}\0${port}\0${e.remotePod?.name ?? ''}\0${e.remotePod?.namespace ?? ''}`;
}

const zero = (): FlowCounters => ({ connections: 0, connectFailures: 0, bytesSent: 0, bytesReceived: 0, retransmits: 0 });

export class FlowTable {
  private readonly flows = new Map<string, Flow>();
  private readonly overflow = new Map<string, Flow>();
  private readonly maxFlows: number;
  /** events folded into an overflow flow because the cap was reached */
  folded = 0;

  constructor(options: { maxFlows?: number } = {}) {
    this.maxFlows = options.maxFlows ?? 10_000;
    if (!Number.isInteger(this.maxFlows) || this.maxFlows < 1) throw new RangeError(`maxFlows must be a positive integer, got ${this.maxFlows}`);
  }

  add(events: readonly ConnectionEvent[]): void {
    for (const e of events) {
      const c = this.flowOf(e).counters;
      switch (e.event) {
        case 'connect':
        case 'accept':
          c.connections++;
          break;
        case 'connect_failed':
          c.connectFailures++;
          break;
        case 'close':
          c.bytesSent += e.bytesSent ?? 0;
          c.bytesReceived += e.bytesReceived ?? 0;
          c.retransmits += e.retransmits ?? 0;
          break;
      }
    }
  }

  /** Every flow, overflow flows last. Counters are live: read them, do not keep them. */
  *all(): IterableIterator<Flow> {
    yield* this.flows.values();
    yield* this.overflow.values();
  }

  get size(): number {
    return this.flows.size;
  }

  private flowOf(e: ConnectionEvent): Flow {
    const key = flowKey(e);
    let f = this.flows.get(key);
    if (f) return f;
    if (this.flows.size < this.maxFlows) {
      f = { labels: flowLabels(e), counters: zero() };
      this.flows.set(key, f);
      return f;
    }
    this.folded++;
    const okey = `${e.node}\0${e.direction}`;
    f = this.overflow.get(okey);
    if (!f) {
      const blank = Object.fromEntries(FLOW_LABELS.map((n) => [n, ''])) as FlowLabels;
      f = { labels: { ...blank, node: e.node, direction: e.direction, overflow: 'true' }, counters: zero() };
      this.overflow.set(okey, f);
    }
    return f;
  }
}
