/**
 * Flow aggregation: connection events roll up into flows keyed by what a
 * person asks about (who talked to whom on which service port), with
 * monotonically increasing counters. The ephemeral client port is never part
 * of a key. A cap on the number of flows folds the excess into one overflow
 * flow per node, protocol and direction, and counts what was folded.
 *
 * Every byte is counted once: an update adds what moved since the
 * connection's previous report, a close adds the rest (its delta fields,
 * not its lifetime totals), and connections found by the start-up snapshot
 * add nothing for what moved before the agent started (the agent that ran
 * then counted it).
 */
import type { ConnectionEvent } from '../metadata/event.js';
import { PerProcess } from '../metadata/per-process.js';

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
  /** UDP only */
  datagramsSent: number;
  datagramsReceived: number;
}

export interface Flow {
  proto: 'tcp' | 'udp';
  labels: FlowLabels;
  counters: FlowCounters;
}

/**
 * The port of the service side: for TCP the remote one when we connected,
 * ours when we accepted; for UDP the remote one when this socket sent
 * first, else ours.
 */
const serverPort = (e: ConnectionEvent): number => (e.direction === 'outbound' ? (e.remote?.port ?? 0) : e.local.port);

/** The labels that name this node's side of an event: process, container and pod. */
export function localLabels(e: ConnectionEvent): {
  process: string;
  container_id: string;
  container_name: string;
  container_image: string;
  pod: string;
  namespace: string;
} {
  return {
    process: e.process?.comm ?? '',
    container_id: e.container?.id ?? '',
    container_name: e.container?.name ?? '',
    container_image: e.container?.image ?? '',
    pod: e.pod?.name ?? '',
    namespace: e.pod?.namespace ?? '',
  };
}

/** The label values of an event's flow. */
export function flowLabels(e: ConnectionEvent): FlowLabels {
  return {
    node: e.node,
    direction: e.direction,
    ...localLabels(e),
    remote_ip: e.remote?.ip ?? '',
    server_port: String(serverPort(e)),
    remote_pod: e.remotePod?.name ?? '',
    remote_namespace: e.remotePod?.namespace ?? '',
  };
}

/** The same values as flowLabels(e), joined. */
function flowKey(e: ConnectionEvent): string {
  return `${e.proto}\0${e.direction}\0${localKey(e)}\0${e.remote?.ip ?? ''}\0${serverPort(e)}\0${e.remotePod?.name ?? ''}\0${e.remotePod?.namespace ?? ''}`;
}

/** node, direction and the local labels, joined. */
function localKey(e: ConnectionEvent): string {
  const c = e.container;
  return `${e.node}\0${e.process?.comm ?? ''}\0${c?.id ?? ''}\0${c?.name ?? ''}\0${c?.image ?? ''}\0${e.pod?.name ?? ''}\0${e.pod?.namespace ?? ''}`;
}

/**
 * The flows of one node-side identity (node, process name, container, pod),
 * by remote IP, then by server port, direction and protocol in one number.
 */
type LocalFlows = Map<string, Map<number, Flow>>;

/** What a process object maps to, valid while its container, pod and node stay the same objects. */
interface ProcessLocal {
  container: ConnectionEvent['container'];
  pod: ConnectionEvent['pod'];
  node: string;
  flows: LocalFlows;
}

const portKey = (e: ConnectionEvent): number => serverPort(e) * 4 + (e.direction === 'outbound' ? 2 : 0) + (e.proto === 'udp' ? 1 : 0);

const zero = (): FlowCounters => ({
  connections: 0,
  connectFailures: 0,
  bytesSent: 0,
  bytesReceived: 0,
  retransmits: 0,
  datagramsSent: 0,
  datagramsReceived: 0,
});

export class FlowTable {
  /** every flow but the overflow ones, in the order they were made */
  private readonly list: Flow[] = [];
  /**
   * The index, without building a key string per event: the node-side
   * identity by process object (then by its labels joined, which several
   * processes share), then remote IP, then server port, direction and
   * protocol. A flow found there whose remote pod differs (a pod IP that
   * moved to another pod) is looked up by its full key in \`others\`.
   */
  private readonly locals = new Map<string, LocalFlows>();
  private readonly byProcess = new PerProcess<ProcessLocal>(
    (kept, e) => kept.container === e.container && kept.pod === e.pod && kept.node === e.node,
    (e) => {
      const key = localKey(e);
      let flows = this.locals.get(key);
      if (flows === undefined) {
        flows = new Map();
        this.locals.set(key, flows);
      }
      return { container: e.container, pod: e.pod, node: e.node, flows };
    },
  );
  private readonly others = new Map<string, Flow>();
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
      switch (e.event) {
        case 'connect':
        case 'accept':
          // older than the agent: not a connection made while it watched
          if (!e.existing) this.flowOf(e).counters.connections++;
          break;
        case 'connect_failed':
          this.flowOf(e).counters.connectFailures++;
          break;
        case 'update': {
          const c = this.flowOf(e).counters;
          c.bytesSent += e.bytesSent ?? 0;
          c.bytesReceived += e.bytesReceived ?? 0;
          c.retransmits += e.retransmits ?? 0;
          c.datagramsSent += e.datagramsSent ?? 0;
          c.datagramsReceived += e.datagramsReceived ?? 0;
          break;
        }
        case 'close': {
          // no delta fields: nothing was reported before, the totals are new
          const c = this.flowOf(e).counters;
          c.bytesSent += e.bytesSentDelta ?? e.bytesSent ?? 0;
          c.bytesReceived += e.bytesReceivedDelta ?? e.bytesReceived ?? 0;
          c.retransmits += e.retransmitsDelta ?? e.retransmits ?? 0;
          break;
        }
        // listeners are not flows (see ListenerTable)
      }
    }
  }

  /** Every flow, overflow flows last. Counters are live: read them, do not keep them. */
  *all(): IterableIterator<Flow> {
    yield* this.list;
    yield* this.overflow.values();
  }

  get size(): number {
    return this.list.length;
  }

  private flowOf(e: ConnectionEvent): Flow {
    const local = this.byProcess.get(e).flows;
    const ip = e.remote?.ip ?? '';
    let byPort = local.get(ip);
    if (byPort === undefined) {
      byPort = new Map();
      local.set(ip, byPort);
    }
    const pk = portKey(e);
    const f = byPort.get(pk);
    if (f !== undefined) {
      const l = f.labels;
      if (l.remote_pod === (e.remotePod?.name ?? '') && l.remote_namespace === (e.remotePod?.namespace ?? '')) return f;
      const key = flowKey(e);
      return this.others.get(key) ?? this.make(e, (n) => this.others.set(key, n));
    }
    return this.make(e, (n) => byPort.set(pk, n));
  }

  /** A new flow, or the overflow flow once the cap is reached. */
  private make(e: ConnectionEvent, index: (f: Flow) => void): Flow {
    if (this.list.length < this.maxFlows) {
      const f: Flow = { proto: e.proto, labels: flowLabels(e), counters: zero() };
      this.list.push(f);
      index(f);
      return f;
    }
    this.folded++;
    const okey = `${e.proto}\0${e.node}\0${e.direction}`;
    let f = this.overflow.get(okey);
    if (!f) {
      const blank = Object.fromEntries(FLOW_LABELS.map((n) => [n, ''])) as FlowLabels;
      f = { proto: e.proto, labels: { ...blank, node: e.node, direction: e.direction, overflow: 'true' }, counters: zero() };
      this.overflow.set(okey, f);
    }
    return f;
  }
}
