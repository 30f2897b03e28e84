/**
 * The one normalised connection event every sink receives. Later stages
 * add facts (container, pod) as optional fields; none are removed.
 */
import type { ConnKind } from '../bpf/decode.js';
import type { ProcessInfo } from './proc.js';

export interface Endpoint {
  ip: string;
  port: number;
  /** remote only: the name it was resolved from, when a DNS answer on the node said so */
  name?: string;
}

/** The process behind a connection: what the process cache knows (see proc.ts). */
export type ProcessDetails = ProcessInfo;

export interface ContainerDetails {
  id: string;
  /** null when the runtime could not be asked */
  name: string | null;
  image: string | null;
  /** the runtime that answered, else the one the cgroup path names ('cri': some CRI runtime) */
  runtime: string;
}

export interface PodDetails {
  /** null when only the pod's uid is known (from its cgroup path) */
  name: string | null;
  namespace: string | null;
  uid: string | null;
}

export interface RemotePod {
  name: string;
  namespace: string;
}

/**
 * One connection (TCP) or socket/remote-endpoint pair (UDP) at one moment:
 * connect/accept (existing ones at start too), update (what moved since the
 * previous report), close, connect_failed; listen/unlisten for listeners.
 */
export interface ConnectionEvent {
  /** when the kernel saw it: whole seconds since the Unix epoch */
  timeSec: number;
  /** and nanoseconds within that second */
  timeNsec: number;
  /** alert: the connection of the event before it violates the policy (see src/policy) */
  event: ConnKind | 'alert';
  proto: 'tcp' | 'udp';
  /** listen/unlisten: inbound */
  direction: 'outbound' | 'inbound';
  local: Endpoint;
  /** null on listen and unlisten */
  remote: Endpoint | null;
  /** connect/accept/listen found by the start-up snapshot: older than the agent */
  existing?: true;
  /** null when the kernel could not name the process (e.g. never accepted) */
  process: ProcessDetails | null;
  /** null outside containers */
  container: ContainerDetails | null;
  /** null outside Kubernetes pods */
  pod: PodDetails | null;
  /** the peer, when it is a pod on this node */
  remotePod?: RemotePod;
  node: string;
  cgroupId: number;
  netns: number;
  /** the same for every event of one socket */
  connId: number;
  /**
   * update: since the connection's previous report; close: TCP lifetime
   * totals; existing connect/accept: what moved before the agent started
   */
  bytesSent?: number;
  bytesReceived?: number;
  /**
   * close: what moved since the previous report (what the counters add);
   * present only when some of the totals were reported before (by an
   * update, or before the agent started), else the totals are that
   */
  bytesSentDelta?: number;
  bytesReceivedDelta?: number;
  /** UDP update: datagrams since the previous report */
  datagramsSent?: number;
  datagramsReceived?: number;
  /** close: lifetime; TCP update: age so far */
  durationMs?: number;
  srttUs?: number;
  /** close: lifetime; TCP update: since the previous report */
  retransmits?: number;
  /** close: since the previous report */
  retransmitsDelta?: number;
  /** connect_failed only: an errno name such as ECONNREFUSED */
  error?: string;
  /** alert only: the policy rule violated */
  rule?: string;
  /** alert only: the kind of the event that was judged */
  trigger?: ConnKind;
}

/** The service side's port: the remote one for an outbound connection, the local one for an inbound one. */
export const servicePort = (e: ConnectionEvent): number => (e.direction === 'outbound' ? (e.remote?.port ?? 0) : e.local.port);
