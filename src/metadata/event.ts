/**
 * The one normalised connection event every sink receives. Later stages
 * add facts (container, pod) as optional fields; none are removed.
 */
import type { ConnKind } from '../bpf/decode.js';

export interface Endpoint {
  ip: string;
  port: number;
}

export interface ProcessDetails {
  pid: number;
  ppid: number;
  uid: number;
  comm: string;
  cmd: string;
  exe: string;
}

export interface ConnectionEvent {
  /** nanoseconds since the Unix epoch */
  timeNs: bigint;
  event: ConnKind;
  proto: 'tcp';
  direction: 'outbound' | 'inbound';
  local: Endpoint;
  remote: Endpoint;
  /** null when the kernel could not name the process (e.g. never accepted) */
  process: ProcessDetails | null;
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
