import { decodeBatchInChunks, type KernelRecord } from '../bpf/decode.js';
import { assertLayout, KernelStat } from '../bpf/events.js';
import { loadBinding, type Binding, type SnapshotResult, type TracerHandle } from '../native/binding.js';
import { BpfError } from './errors.js';
import { preflight } from './preflight.js';
import { clockOffset, type ClockOffset } from '../util/time.js';

export interface TracerOptions {
  /** ring buffer size in bytes: a power of two, at least one page (default 8 MiB) */
  ringBytes?: number;
  /** most TCP sockets tracked at once (default 262144) */
  maxSockets?: number;
  /** most UDP socket/remote pairs counted at once (default 65536) */
  maxUdpFlows?: number;
  /** how often open connections and UDP flows report what moved, in ms; 0: only at close (default 10000) */
  sweepMs?: number;
  /** the cgroup v2 root, for the hooks that name unconnected UDP peers */
  cgroupPath?: string;
  /** pending bytes at which the kernel wakes the consumer (default 256 KiB) */
  wakeupBytes?: number;
  /** BTF file to read CO-RE relocations from (tp_btf programs still need the kernel's own BTF) */
  btfPath?: string;
  /** where sysfs is mounted (default /sys) */
  sysRoot?: string;
  /** longest the poll thread sleeps between drains, ms (default 50); records past wakeupBytes wake it at once */
  pollMs?: number;
  /** tests only: make the native bridge fail every Nth batch allocation (its loss counters must count) */
  faultAllocEvery?: number;
  /** tests only: make the native bridge fail every Nth hand-over of a batch */
  faultHandoffEvery?: number;
}

export interface TracerStats {
  batches: number;
  records: number;
  /** records the decoder could not read */
  malformed: number;
  /** connection events lost: the kernel's ring buffer was full, or the native bridge could not pass them on */
  lostConnEvents: number;
  /** process events lost, the same ways */
  lostProcEvents: number;
  /** of the lost records, those the native bridge lost (no memory for a batch, a batch not handed to JS) */
  bridgeLost: { connection: number; process: number; dns: number; other: number };
  /** connections not tracked because the socket map was full */
  untrackedSockets: number;
  /** UDP datagrams not counted because the UDP flow map was full */
  uncountedDatagrams: number;
  /** updates the ring buffer could not take (their bytes go with the next sweep's) */
  deferredUpdates: number;
  /** DNS answers the ring buffer could not take or the bridge lost (their names stay unknown) */
  lostDnsAnswers: number;
  sweeps: number;
  sweepErrors: number;
  /** sweep reports abandoned because the socket closed and its map entry was reused during the sweep (nothing lost: the close carried the rest) */
  sweepRaces: number;
}

export type RecordsListener = (records: KernelRecord[]) => void;

type Validated = Required<Omit<TracerOptions, 'btfPath' | 'cgroupPath' | 'faultAllocEvery' | 'faultHandoffEvery' | 'pollMs'>> &
  Pick<TracerOptions, 'btfPath' | 'cgroupPath' | 'faultAllocEvery' | 'faultHandoffEvery' | 'pollMs'>;

function validate(o: TracerOptions): Validated {
  const ringBytes = o.ringBytes ?? 8 << 20;
  if (!Number.isInteger(ringBytes) || ringBytes < 4096 || ringBytes > 2 ** 31 || (ringBytes & (ringBytes - 1)) !== 0) {
    throw new RangeError(`ringBytes must be a power of two between 4096 and 2^31, got ${ringBytes}`);
  }
  const maxSockets = o.maxSockets ?? 262144;
  if (!Number.isInteger(maxSockets) || maxSockets < 1 || maxSockets > 1 << 24) {
    throw new RangeError(`maxSockets must be an integer between 1 and 2^24, got ${maxSockets}`);
  }
  // a small ring wakes its consumer a quarter full, so it is read before it fills
  const wakeupBytes = o.wakeupBytes ?? Math.min(256 << 10, ringBytes / 4);
  if (!Number.isInteger(wakeupBytes) || wakeupBytes < 0 || wakeupBytes > ringBytes) {
    throw new RangeError(`wakeupBytes must be between 0 and ringBytes, got ${wakeupBytes}`);
  }
  const maxUdpFlows = o.maxUdpFlows ?? 65536;
  if (!Number.isInteger(maxUdpFlows) || maxUdpFlows < 1 || maxUdpFlows > 1 << 24) {
    throw new RangeError(`maxUdpFlows must be an integer between 1 and 2^24, got ${maxUdpFlows}`);
  }
  const sweepMs = o.sweepMs ?? 10_000;
  if (!Number.isInteger(sweepMs) || sweepMs < 0 || sweepMs > 2 ** 31) throw new RangeError(`sweepMs must be a whole number of ms, got ${sweepMs}`);
  if (o.btfPath !== undefined && typeof o.btfPath !== 'string') throw new TypeError('btfPath must be a string');
  if (o.cgroupPath !== undefined && typeof o.cgroupPath !== 'string') throw new TypeError('cgroupPath must be a string');
  for (const k of ['faultAllocEvery', 'faultHandoffEvery'] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 2 ** 32 - 1)) throw new RangeError(`${k} must be a whole number, got ${v}`);
  }
  return {
    ringBytes,
    maxSockets,
    maxUdpFlows,
    wakeupBytes,
    sweepMs,
    btfPath: o.btfPath,
    cgroupPath: o.cgroupPath,
    sysRoot: o.sysRoot ?? '/sys',
    faultAllocEvery: o.faultAllocEvery,
    faultHandoffEvery: o.faultHandoffEvery,
    pollMs: o.pollMs,
  };
}

/**
 * Records per listener call: a large batch from the addon (up to 4,096
 * records) goes on in pieces of this many, each through the whole pipeline
 * before the next is decoded (see decodeBatchInChunks).
 */
const CHUNK_RECORDS = 256;

/**
 * The kernel side: loads and attaches the BPF programs, then delivers
 * decoded records in batches. One Tracer per process.
 */
export class Tracer {
  readonly programs: string[];
  private readonly binding: Binding;
  private handle: TracerHandle | undefined;
  /** CLOCK_REALTIME − CLOCK_MONOTONIC, read once at open */
  readonly clockOffset: ClockOffset;
  private counters = { batches: 0, records: 0, malformed: 0 };
  /** the kernel counters as last read before close */
  private finalKernelStats: number[] = [];
  private stopped: Promise<void> | undefined;
  /** the poll thread has ended (asked to, or not) */
  private ended = false;
  private stopRequested = false;
  private resolveStopped: (() => void) | undefined;

  private constructor(binding: Binding, handle: TracerHandle) {
    this.binding = binding;
    this.handle = handle;
    this.programs = binding.attached(handle);
    const [real, mono] = binding.clocks();
    this.clockOffset = clockOffset(real, mono);
  }

  /** Checks privileges and kernel features, loads and attaches. Throws BpfError. */
  static open(options: TracerOptions = {}): Tracer {
    const o = validate(options);
    preflight({ sysRoot: o.sysRoot, btfPath: o.btfPath });
    let binding: Binding;
    try {
      binding = loadBinding();
      assertLayout(binding.sizes);
    } catch (e) {
      throw new BpfError('ENOADDON', (e as Error).message);
    }
    try {
      const handle = binding.open({
        ringBytes: o.ringBytes,
        maxSockets: o.maxSockets,
        maxUdpFlows: o.maxUdpFlows,
        wakeupBytes: o.wakeupBytes,
        sweepMs: o.sweepMs,
        ...(o.btfPath !== undefined ? { btfPath: o.btfPath } : {}),
        ...(o.cgroupPath !== undefined ? { cgroupPath: o.cgroupPath } : {}),
        ...(o.faultAllocEvery ? { faultAllocEvery: o.faultAllocEvery } : {}),
        ...(o.faultHandoffEvery ? { faultHandoffEvery: o.faultHandoffEvery } : {}),
        ...(o.pollMs ? { pollMs: o.pollMs } : {}),
      });
      return new Tracer(binding, handle);
    } catch (e) {
      const err = e as Error & { code?: string; libbpfLog?: string };
      throw new BpfError(err.code ?? 'EBPF', `could not load the BPF programs: ${err.message}`, err.libbpfLog ?? '');
    }
  }

  /** Starts delivery. The listener runs on the main thread, one call per piece of a batch (at most CHUNK_RECORDS records), in kernel order. */
  start(listener: RecordsListener): void {
    const handle = this.handle;
    if (!handle) throw new BpfError('ECLOSED', 'the tracer is closed');
    if (this.stopped) throw new BpfError('EBUSY', 'the tracer is already started');
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    this.binding.start(handle, (batch, count) => {
      if (batch === null) {
        this.ended = true;
        this.resolveStopped?.();
        return;
      }
      // in pieces: see decodeBatchInChunks
      const { records, malformed } = decodeBatchInChunks(batch, count, CHUNK_RECORDS, listener);
      this.counters.batches++;
      this.counters.records += records;
      this.counters.malformed += malformed;
    });
  }

  /**
   * Reports every TCP listener and connection that exists now, with its
   * owner, and tracks it from here on: in the agent's own network
   * namespace and in each one `netnsPaths` names (/proc/PID/ns/net, bind
   * mounts under /run/netns). Call after start(), so the records flow.
   */
  snapshot(netnsPaths: string[]): SnapshotResult {
    if (!this.handle) throw new BpfError('ECLOSED', 'the tracer is closed');
    return this.binding.snapshot(this.handle, netnsPaths);
  }

  /** Drains what the kernel holds (after a last sweep), delivers it, then detaches and frees. */
  async stop(): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    this.stopRequested = true;
    if (this.stopped) {
      this.binding.requestStop(handle);
      await this.stopped;
    }
    this.finalKernelStats = this.binding.stats(handle);
    this.binding.close(handle);
    this.handle = undefined;
  }

  /** Started, and its poll thread ended without stop() asking: the kernel side no longer delivers. */
  get failed(): boolean {
    return this.ended && !this.stopRequested;
  }

  stats(): TracerStats {
    const k = this.handle ? this.binding.stats(this.handle) : this.finalKernelStats;
    const b = (i: number) => k[KernelStat.max + 2 + i] ?? 0;
    const bridgeLost = { connection: b(0), process: b(1), dns: b(2), other: b(3) };
    return {
      ...this.counters,
      lostConnEvents: (k[KernelStat.rbDropConn] ?? 0) + bridgeLost.connection,
      lostProcEvents: (k[KernelStat.rbDropProc] ?? 0) + bridgeLost.process,
      bridgeLost,
      untrackedSockets: k[KernelStat.socksFull] ?? 0,
      uncountedDatagrams: k[KernelStat.udpFull] ?? 0,
      deferredUpdates: k[KernelStat.rbDropUpdate] ?? 0,
      lostDnsAnswers: (k[KernelStat.rbDropDns] ?? 0) + bridgeLost.dns,
      sweeps: k[KernelStat.max] ?? 0,
      sweepErrors: k[KernelStat.max + 1] ?? 0,
      sweepRaces: k[KernelStat.sweepRaces] ?? 0,
    };
  }
}
