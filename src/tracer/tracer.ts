import { decodeBatch, type KernelRecord } from '../bpf/decode.js';
import { assertLayout, KernelStat } from '../bpf/events.js';
import { loadBinding, type Binding, type TracerHandle } from '../native/binding.js';
import { BpfError } from './errors.js';
import { preflight } from './preflight.js';
import { clockOffset, type ClockOffset } from '../util/time.js';

export interface TracerOptions {
  /** ring buffer size in bytes: a power of two, at least one page (default 16 MiB) */
  ringBytes?: number;
  /** most TCP sockets tracked at once (default 262144) */
  maxSockets?: number;
  /** pending bytes at which the kernel wakes the consumer (default 256 KiB) */
  wakeupBytes?: number;
  /** BTF file to read CO-RE relocations from (tp_btf programs still need the kernel's own BTF) */
  btfPath?: string;
  /** where sysfs is mounted (default /sys) */
  sysRoot?: string;
}

export interface TracerStats {
  batches: number;
  records: number;
  /** records the decoder could not read */
  malformed: number;
  /** connection events the kernel could not deliver (ring buffer full) */
  lostConnEvents: number;
  /** process events the kernel could not deliver (ring buffer full) */
  lostProcEvents: number;
  /** connections not tracked because the socket map was full */
  untrackedSockets: number;
}

export type RecordsListener = (records: KernelRecord[]) => void;

function validate(o: TracerOptions): Required<Omit<TracerOptions, 'btfPath'>> & { btfPath?: string } {
  const ringBytes = o.ringBytes ?? 16 << 20;
  if (!Number.isInteger(ringBytes) || ringBytes < 4096 || ringBytes > 2 ** 31 || (ringBytes & (ringBytes - 1)) !== 0) {
    throw new RangeError(`ringBytes must be a power of two between 4096 and 2^31, got ${ringBytes}`);
  }
  const maxSockets = o.maxSockets ?? 262144;
  if (!Number.isInteger(maxSockets) || maxSockets < 1 || maxSockets > 1 << 24) {
    throw new RangeError(`maxSockets must be an integer between 1 and 2^24, got ${maxSockets}`);
  }
  const wakeupBytes = o.wakeupBytes ?? 256 << 10;
  if (!Number.isInteger(wakeupBytes) || wakeupBytes < 0 || wakeupBytes > ringBytes) {
    throw new RangeError(`wakeupBytes must be between 0 and ringBytes, got ${wakeupBytes}`);
  }
  if (o.btfPath !== undefined && typeof o.btfPath !== 'string') throw new TypeError('btfPath must be a string');
  return { ringBytes, maxSockets, wakeupBytes, btfPath: o.btfPath, sysRoot: o.sysRoot ?? '/sys' };
}

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
        wakeupBytes: o.wakeupBytes,
        ...(o.btfPath !== undefined ? { btfPath: o.btfPath } : {}),
      });
      return new Tracer(binding, handle);
    } catch (e) {
      const err = e as Error & { code?: string; libbpfLog?: string };
      throw new BpfError(err.code ?? 'EBPF', `could not load the BPF programs: ${err.message}`, err.libbpfLog ?? '');
    }
  }

  /** Starts delivery. The listener runs on the main thread, one call per batch. */
  start(listener: RecordsListener): void {
    const handle = this.handle;
    if (!handle) throw new BpfError('ECLOSED', 'the tracer is closed');
    if (this.stopped) throw new BpfError('EBUSY', 'the tracer is already started');
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    this.binding.start(handle, (batch, count) => {
      if (batch === null) {
        this.resolveStopped?.();
        return;
      }
      const { records, malformed } = decodeBatch(batch, count);
      this.counters.batches++;
      this.counters.records += records.length;
      this.counters.malformed += malformed;
      listener(records);
    });
  }

  /** Drains what the kernel holds, delivers it, then detaches and frees. */
  async stop(): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    if (this.stopped) {
      this.binding.requestStop(handle);
      await this.stopped;
    }
    this.finalKernelStats = this.binding.stats(handle);
    this.binding.close(handle);
    this.handle = undefined;
  }

  stats(): TracerStats {
    const k = this.handle ? this.binding.stats(this.handle) : this.finalKernelStats;
    return {
      ...this.counters,
      lostConnEvents: k[KernelStat.rbDropConn] ?? 0,
      lostProcEvents: k[KernelStat.rbDropProc] ?? 0,
      untrackedSockets: k[KernelStat.socksFull] ?? 0,
    };
  }
}
