/**
 * TypeScript mirror of bpf/events.h. Every offset here must match the C
 * struct; sizes are checked against the addon's sizeof() values when the
 * tracer loads (see assertLayout), and the decoder test replays raw records.
 */

export const COMM_LEN = 16;
export const FILENAME_LEN = 256;
export const ARGS_LEN = 512;

export const EventType = {
  exec: 1,
  exit: 2,
  fork: 3,
  tcpConnect: 16,
  tcpAccept: 17,
  tcpClose: 18,
  tcpConnectFailed: 19,
  tcpUpdate: 20,
  tcpListen: 21,
  tcpUnlisten: 22,
  udpUpdate: 32,
  sweepEnd: 48,
  dns: 64,
} as const;

export const Direction = { unknown: 0, outbound: 1, inbound: 2, listen: 3 } as const;

/** struct convis_conn_event.flags */
export const ConnFlag = { ownerKnown: 1 << 0, startSeen: 1 << 1, existing: 1 << 2 } as const;

/**
 * enum convis_stat: indexes of the kernel's per-CPU drop counters; the
 * addon appends the sweeps run and the sweeps that failed after `max`.
 */
export const KernelStat = { rbDropConn: 0, rbDropProc: 1, socksFull: 2, udpFull: 3, rbDropUpdate: 4, rbDropDns: 5, sweepRaces: 6, max: 8 } as const;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** struct convis_header */
export const Header = { size: 16, type: 0, recSize: 2, pid: 4, tsNs: 8 } as const;

/** struct convis_task_event (exit, fork) */
export const TaskEvent = {
  size: 56,
  ppid: 16,
  uid: 20,
  exitCode: 24,
  cgroupId: 32,
  comm: 40,
} as const;

/** struct convis_exec_event */
export const ExecEvent = {
  size: 824,
  ppid: 16,
  uid: 20,
  cgroupId: 24,
  comm: 32,
  filenameLen: 48,
  argsLen: 50,
  filename: 56,
  args: 56 + FILENAME_LEN,
} as const;

/** struct convis_conn_event (connect, accept, close, connect_failed, update, listen, unlisten) */
export const ConnEvent = {
  size: 176,
  tid: 16,
  uid: 20,
  connId: 24,
  cgroupId: 32,
  netns: 40,
  family: 44,
  proto: 46,
  direction: 47,
  saddr: 48,
  daddr: 64,
  sport: 80,
  dport: 82,
  error: 84,
  bytesSent: 88,
  bytesReceived: 96,
  durationNs: 104,
  srttUs: 112,
  retransmits: 116,
  comm: 120,
  ppid: 136,
  oldState: 140,
  flags: 141,
  deltaSent: 144,
  deltaReceived: 152,
  packetsSent: 160,
  packetsReceived: 164,
  deltaRetransmits: 168,
} as const;

/** struct convis_sweep_event */
export const SweepEvent = { size: 24, seq: 16 } as const;

/** struct convis_dns_event */
export const DnsEvent = { size: 536, netns: 16, len: 20, data: 24, max: 512 } as const;

export interface NativeSizes {
  header: number;
  taskEvent: number;
  execEvent: number;
  connEvent: number;
  sweepEvent: number;
  dnsEvent: number;
}

/** Throws when the compiled addon's struct sizes differ from this mirror. */
export function assertLayout(sizes: NativeSizes): void {
  const want: NativeSizes = {
    header: Header.size,
    taskEvent: TaskEvent.size,
    execEvent: ExecEvent.size,
    connEvent: ConnEvent.size,
    sweepEvent: SweepEvent.size,
    dnsEvent: DnsEvent.size,
  };
  for (const key of Object.keys(want) as (keyof NativeSizes)[]) {
    if (sizes[key] !== want[key]) {
      throw new Error(
        `event layout mismatch: struct ${key} is ${sizes[key]} bytes in the addon but ${want[key]} in src/bpf/events.ts; rebuild with npm run build`,
      );
    }
  }
}
