/**
 * The agent's userspace cost per event, stage by stage, measured without a
 * workload competing for the CPU: real record batches are captured from the
 * kernel during a short connection churn, then replayed in-process through
 * decode, enrichment and each stdout format. Stages are timed in
 * alternating rounds and the medians kept, so a noisy VM moves them all
 * alike.
 */
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { decodeBatch } from '../src/bpf/decode.js';
import { Containers } from '../src/metadata/containers.js';
import { Enricher } from '../src/metadata/enrich.js';
import { ProcessCache } from '../src/metadata/process-cache.js';
import { loadBinding } from '../src/native/binding.js';
import { StdoutSink } from '../src/sinks/stdout.js';
import { clockOffset } from '../src/util/time.js';
import { createLogger } from '../src/util/log.js';

export interface StageCosts {
  /** connection and process records replayed per round */
  records: number;
  /** median ns per record of each stage, cumulative (each includes the ones before) */
  decode: number;
  enrich: number;
  json: number;
  text: number;
}

interface Batch {
  buf: Buffer;
  count: number;
}

/** Runs `churn` at `rate` for `seconds` with the BPF programs attached; returns the raw batches. */
export async function capture(churnPath: string, seconds: number, rate: number): Promise<{ batches: Batch[]; offset: ReturnType<typeof clockOffset> }> {
  const binding = loadBinding();
  const handle = binding.open({ ringBytes: 16 << 20, maxSockets: 262144, maxUdpFlows: 65536, wakeupBytes: 256 << 10, sweepMs: 0 });
  const [real, mono] = binding.clocks();
  const batches: Batch[] = [];
  let resolveStopped: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  binding.start(handle, (buf, count) => {
    if (buf === null) resolveStopped();
    else batches.push({ buf: Buffer.from(buf), count });
  });
  const churn = spawn(churnPath, ['--clients', '2', '--servers', '2', '--seconds', String(seconds), '--rate', String(rate)], {
    stdio: 'ignore',
  });
  await new Promise((r) => churn.once('close', r));
  binding.requestStop(handle);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), 10_000)));
  const how = await Promise.race([stopped, late]);
  clearTimeout(timer);
  if (how === 'late') throw new Error('the capture did not stop within 10 s');
  binding.close(handle);
  return { batches, offset: clockOffset(real, mono) };
}

/**
 * Discards what it is given, as /dev/null would, and says so at once. Not a
 * Writable: a Writable's write callback always comes on a later tick, and
 * the replay runs in one tick, so the stdout writer would never get its
 * buffer back and would write every batch into fresh memory (which the live
 * agent, called back between batches, does not).
 */
class NullStream {
  bytes = 0;
  write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean {
    this.bytes += chunk.length;
    cb();
    return true;
  }
  on(): this {
    return this;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

export async function measureStages(churnPath: string, rounds = 9): Promise<StageCosts> {
  const { batches, offset } = await capture(churnPath, 1, 20000);
  const records = batches.reduce((n, b) => n + b.count, 0);
  const log = createLogger(false, () => undefined);
  const enricherFor = () =>
    new Enricher({
      processes: new ProcessCache({ procRoot: '/proc' }),
      containers: new Containers({ runtimes: [], log }),
      node: 'bench',
      clockOffset: offset,
    });

  const stages: Record<keyof Omit<StageCosts, 'records'>, () => void> = {
    decode: () => {
      for (const b of batches) decodeBatch(b.buf, b.count);
    },
    enrich: () => {
      const e = enricherFor();
      for (const b of batches) e.finish(e.ingest(decodeBatch(b.buf, b.count).records));
    },
    json: () => {
      const e = enricherFor();
      const sink = new StdoutSink({ format: 'json', stream: new NullStream() as unknown as Writable });
      for (const b of batches) sink.write(e.finish(e.ingest(decodeBatch(b.buf, b.count).records)));
    },
    text: () => {
      const e = enricherFor();
      const sink = new StdoutSink({ format: 'text', stream: new NullStream() as unknown as Writable });
      for (const b of batches) sink.write(e.finish(e.ingest(decodeBatch(b.buf, b.count).records)));
    },
  };
  const times: Record<string, number[]> = {};
  for (let r = 0; r < rounds + 1; r++) {
    for (const [name, run] of Object.entries(stages)) {
      const t0 = process.hrtime.bigint();
      run();
      const ns = Number(process.hrtime.bigint() - t0);
      if (r > 0) (times[name] ??= []).push(ns / records); // round 0 warms up the JIT
    }
  }
  return {
    records,
    decode: median(times.decode ?? []),
    enrich: median(times.enrich ?? []),
    json: median(times.json ?? []),
    text: median(times.text ?? []),
  };
}
