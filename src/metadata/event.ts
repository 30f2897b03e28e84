/**
 * The one normalised connection event every sink receives. Later stages
 * add facts (container, pod) as optional fields; none are removed.
 */
import type { ConnKind } from '../bpf/decode.js';
import type { ProcessInfo } from './proc.js';

export interface Endpoint {
  ip: string;
  port: number;
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

export interface ConnectionEvent {
  /** when the kernel saw it: whole seconds since the Unix epoch */
  timeSec: number;
  /** and nanoseconds within that second */
  timeNsec: number;
  event: ConnKind;
  proto: 'tcp';
  direction: 'outbound' | 'inbound';
  local: Endpoint;
  remote: Endpoint;
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
  /** close only */
  bytesSent?: number;
  bytesReceived?: number;
  durationMs?: number;
  srttUs?: number;
  retransmits?: number;
  /** connect_failed only: an errno name such as ECONNREFUSED */
  error?: string;
}
