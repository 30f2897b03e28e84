/**
 * Turns kernel records into ConnectionEvents in two steps, so that runtime
 * lookups can be awaited in between without holding up the kernel side:
 * ingest() (synchronous, in kernel order) feeds the process cache and takes
 * each connection's process and container id; finish() (after the lookups)
 * adds container, pod and peer-pod facts and builds the events.
 */
import { constants } from 'node:os';
import type { ConnRecord, KernelRecord } from '../bpf/decode.js';
import type { ContainerRef } from './cgroup.js';
import type { Containers } from './containers.js';
import type { ContainerInfo, PodSandbox } from './container.js';
import type { ConnectionEvent, ContainerDetails, PodDetails, ProcessDetails, RemotePod } from './event.js';
import type { ProcessCache } from './process-cache.js';
import { NS_PER_SEC, type ClockOffset } from '../util/time.js';
import type { DnsNames } from './dns.js';

const ERRNO_NAMES = new Map<number, string>();
// where two names share a number (EAGAIN/EWOULDBLOCK), the first listed is the canonical one
for (const [name, n] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/** errno number to its name (ECONNREFUSED), or "errno N" when unknown. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `errno ${n}`;
}

export interface EnricherOptions {
  processes: ProcessCache;
  containers: Containers;
  node: string;
  /** CLOCK_REALTIME − CLOCK_MONOTONIC: turns record times into epoch times */
  clockOffset: ClockOffset;
  /** names of remote addresses, learnt from DNS answers */
  dns?: DnsNames;
  now?: () => number;
}

interface Details {
  container: ContainerDetails | null;
  pod: PodDetails | null;
}

const NO_DETAILS: Details = { container: null, pod: null };
/** containers whose details are kept at once (the container cache holds 4096) */
const MAX_DETAILS = 8192;

/**
 * A batch between ingest() and finish(): per connection record, its
 * process and container in arrays side by side (no object per record).
 */
export interface IngestedBatch {
  recs: ConnRecord[];
  processes: (ProcessDetails | null)[];
  /** from the process's cgroups; undefined: not known, look at the socket's cgroup */
  containers: (ContainerRef | null | undefined)[];
  /** the remote address's DNS name when the record came, if known */
  names: (string | undefined)[];
  /** container ids the batch mentions */
  refs: Map<string, ContainerRef>;
  /** socket cgroup ids the cgroup index does not know yet */
  unknownCgroups: Set<number>;
  /**
   * cgroups of new processes the index does not know yet: worth finding now,
   * while they exist (a short-lived container's cgroup is gone soon after)
   */
  newCgroups: Set<number>;
}

/**
 * The fields an event kind carries beyond identity (kept out of event() so
 * that stays small enough for V8 to inline).
 */
function addFields(ev: ConnectionEvent, r: ConnRecord): void {
  switch (r.kind) {
    case 'close':
      ev.bytesSent = r.bytesSent;
      ev.bytesReceived = r.bytesReceived;
      ev.durationMs = r.durationMs;
      ev.srttUs = r.srttUs;
      ev.retransmits = r.retransmits;
      // only when part of the totals was reported before (an update, or
      // bytes from before the agent started): else the totals are the delta
      if (r.deltaSent !== r.bytesSent || r.deltaReceived !== r.bytesReceived || r.deltaRetransmits !== r.retransmits) {
        ev.bytesSentDelta = r.deltaSent;
        ev.bytesReceivedDelta = r.deltaReceived;
        ev.retransmitsDelta = r.deltaRetransmits;
      }
      break;
    case 'update':
      ev.bytesSent = r.deltaSent;
      ev.bytesReceived = r.deltaReceived;
      if (r.proto === 'udp') {
        ev.datagramsSent = r.packetsSent;
        ev.datagramsReceived = r.packetsReceived;
      } else {
        ev.durationMs = r.durationMs;
        ev.srttUs = r.srttUs;
        ev.retransmits = r.deltaRetransmits;
      }
      break;
    case 'connect':
    case 'accept':
      // only existing ones come here
      ev.existing = true;
      ev.bytesSent = r.bytesSent;
      ev.bytesReceived = r.bytesReceived;
      break;
    case 'listen':
      if (r.existing) ev.existing = true;
      break;
    case 'connect_failed':
      ev.error = errnoName(r.error);
      break;
  }
}

/**
 * A ConnectionEvent as the enricher makes them. A class, not a literal,
 * because V8 keeps room inside instances of a class for the fields set
 * after construction (close counters, remote pod): a literal would move
 * them to a separately allocated store, per event. The optional fields are
 * declared, not defined: an event has only the ones its kind carries.
 */
class Event implements ConnectionEvent {
  declare existing?: true;
  declare remotePod?: RemotePod;
  declare bytesSent?: number;
  declare bytesReceived?: number;
  declare bytesSentDelta?: number;
  declare bytesReceivedDelta?: number;
  declare datagramsSent?: number;
  declare datagramsReceived?: number;
  declare durationMs?: number;
  declare srttUs?: number;
  declare retransmits?: number;
  declare retransmitsDelta?: number;
  declare error?: string;

  constructor(
    public timeSec: number,
    public timeNsec: number,
    public event: ConnectionEvent['event'],
    public proto: ConnectionEvent['proto'],
    public direction: ConnectionEvent['direction'],
    public local: ConnectionEvent['local'],
    public remote: ConnectionEvent['remote'],
    public process: ProcessDetails | null,
    public container: ContainerDetails | null,
    public pod: PodDetails | null,
    public node: string,
    public cgroupId: number,
    public netns: number,
    public connId: number,
  ) {}
}

export class Enricher {
  private readonly o: EnricherOptions;
  private readonly now: () => number;

  /**
   * Container and pod objects per container id, made again only when the
   * runtime's answer (or what the cgroup path says) changes: events share
   * them, and sinks can cache what they make of them by object. Refs are
   * not stable objects (the cgroup index makes one per lookup), ids are.
   */
  private readonly details = new Map<string, Details & { info: ContainerInfo | undefined; runtime: string; podUid: string | undefined }>();
  private readonly remotePods = new WeakMap<PodSandbox, RemotePod>();

  constructor(options: EnricherOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /** Feeds process records to the cache and takes each connection's owner, in kernel order. */
  ingest(records: readonly KernelRecord[]): IngestedBatch {
    // made at their full size, not grown record by record; cut to size at the end
    const most = records.length;
    const batch: IngestedBatch = {
      recs: new Array<ConnRecord>(most),
      processes: new Array<ProcessDetails | null>(most),
      containers: new Array<ContainerRef | null | undefined>(most),
      names: new Array<string | undefined>(most),
      refs: new Map(),
      unknownCgroups: new Set(),
      newCgroups: new Set(),
    };
    let n = 0;
    const dns = this.o.dns;
    const now = this.now();
    const { processes, containers } = this.o;
    for (const r of records) {
      switch (r.kind) {
        case 'exec':
          processes.onExec(r);
          if (containers.mayFindCgroup(r.cgroupId)) batch.newCgroups.add(r.cgroupId);
          break;
        case 'fork':
          processes.onFork(r);
          break;
        case 'exit':
          processes.onExit(r, now);
          break;
        case 'sweep':
          break;
        case 'dns':
          dns?.learn(r.netns, r.payload, now);
          break;
        default: {
          const owned = r.ownerKnown && r.pid !== 0;
          const process = owned ? processes.get(r.pid, r) : null;
          let container = owned ? processes.containerOf(r.pid) : undefined;
          if (container === undefined) {
            container = containers.refOfCgroup(r.cgroupId);
            if (container === undefined && containers.mayFindCgroup(r.cgroupId)) batch.unknownCgroups.add(r.cgroupId);
          }
          if (container) batch.refs.set(container.id, container);
          batch.recs[n] = r;
          batch.processes[n] = process;
          batch.containers[n] = container;
          // looked up now: the answer that named it came before it, in kernel order
          batch.names[n] = dns && r.kind !== 'listen' && r.kind !== 'unlisten' ? dns.nameOf(r.netns, r.remoteIp, now) : undefined;
          n++;
        }
      }
    }
    if (n < most) {
      batch.recs.length = n;
      batch.processes.length = n;
      batch.containers.length = n;
      batch.names.length = n;
    }
    return batch;
  }

  /** Builds the events with whatever the container cache knows now. */
  finish(batch: IngestedBatch): ConnectionEvent[] {
    const { recs, processes, containers, names } = batch;
    const n = recs.length;
    const out = new Array<ConnectionEvent>(n);
    for (let i = 0; i < n; i++) out[i] = this.event(recs[i] as ConnRecord, processes[i] ?? null, containers[i], names[i]);
    return out;
  }

  private detailsOf(ref: ContainerRef): Details {
    const info = this.o.containers.get(ref.id);
    let d = this.details.get(ref.id);
    if (d === undefined || d.info !== info || d.runtime !== ref.runtime || d.podUid !== ref.podUid) {
      const container = { id: ref.id, name: info?.name ?? null, image: info?.image ?? null, runtime: info?.runtime ?? ref.runtime };
      let pod: PodDetails | null = null;
      if (info?.pod) pod = { name: info.pod.name, namespace: info.pod.namespace, uid: info.pod.uid || ref.podUid || null };
      else if (ref.podUid) pod = { name: null, namespace: null, uid: ref.podUid };
      if (this.details.size >= MAX_DETAILS) this.details.delete(this.details.keys().next().value as string);
      d = { info, runtime: ref.runtime, podUid: ref.podUid, container, pod };
      this.details.set(ref.id, d);
    }
    return d;
  }

  private remotePodOf(peer: PodSandbox): RemotePod {
    let p = this.remotePods.get(peer);
    if (p === undefined) {
      p = { name: peer.name, namespace: peer.namespace };
      this.remotePods.set(peer, p);
    }
    return p;
  }

  private event(r: ConnRecord, process: ProcessDetails | null, container: ContainerRef | null | undefined, name: string | undefined): ConnectionEvent {
    const { containers } = this.o;
    // the index may have learnt the socket's cgroup since ingest()
    const ref = container === undefined ? containers.refOfCgroup(r.cgroupId) : container;
    const d = ref ? this.detailsOf(ref) : NO_DETAILS;
    const off = this.o.clockOffset;
    let sec = r.tsSec + off.sec;
    let nsec = r.tsNsec + off.nsec;
    if (nsec >= NS_PER_SEC) {
      nsec -= NS_PER_SEC;
      sec++;
    }
    const listener = r.kind === 'listen' || r.kind === 'unlisten';
    const ev = new Event(
      sec,
      nsec,
      r.kind,
      r.proto,
      r.direction === 'inbound' || r.direction === 'listen' ? 'inbound' : 'outbound',
      { ip: r.localIp, port: r.localPort },
      listener ? null : name === undefined ? { ip: r.remoteIp, port: r.remotePort } : { ip: r.remoteIp, port: r.remotePort, name },
      // shared with the cache, not copied: sinks treat events as read-only
      process,
      d.container,
      d.pod,
      this.o.node,
      r.cgroupId,
      r.netns,
      r.connId,
    );
    if (!listener) {
      const peer = containers.podByIp(r.remoteIp);
      if (peer) ev.remotePod = this.remotePodOf(peer);
    }
    // a connect or accept has nothing more, unless it is an existing one
    if ((r.kind !== 'connect' && r.kind !== 'accept') || r.existing) addFields(ev, r);
    return ev;
  }
}
