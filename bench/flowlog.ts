/**
 * How fast `convis query` answers from a large flow log: a log of
 * `rows` connections (default a million) is written through the flowlog
 * sink itself, from events shaped like a busy node's (a few hundred
 * processes and containers, tens of thousands of remote addresses, a day of
 * first-seen times, one connection in a thousand with an alert), then each
 * typical query is run through runQuery (what the CLI runs) several times
 * and its median time kept.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQuery } from '../src/flowlog/query.js';
import { FlowLogSink } from '../src/flowlog/sink.js';
import type { ConnectionEvent } from '../src/metadata/event.js';
import { createLogger } from '../src/util/log.js';

export interface QueryCosts {
  rows: number;
  /** seconds to write the log through the sink */
  writeSeconds: number;
  fileMiB: number;
  /** median ms per query, by what it asks */
  queries: { name: string; args: string[]; ms: number; lines: number }[];
}

/** A deterministic pseudo-random sequence, so every run builds the same log. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

export async function measureQueries(rows = 1_000_000): Promise<QueryCosts> {
  const dir = process.env.KEEP_DIR ?? mkdtempSync(join(tmpdir(), 'convis-bench-flowlog-'));
  const path = join(dir, 'flows.db');
  try {
    const now = Date.now();
    const rnd = xorshift(42);
    const procs = Array.from({ length: 300 }, (_, i) => ({ pid: 1000 + i, ppid: 1, uid: 0, comm: `svc-${i % 60}`, cmd: `/usr/bin/svc-${i % 60} --port ${8000 + i}`, exe: `/usr/bin/svc-${i % 60}` }));
    const containers = Array.from({ length: 200 }, (_, i) => ({ id: i.toString(16).padStart(64, '0'), name: `app-${i}`, image: `registry.local/app-${i % 40}:1`, runtime: 'containerd' }));
    const pods = containers.map((_, i) => ({ name: `app-${i}-0`, namespace: `ns-${i % 12}`, uid: `uid-${i}` }));
    const sink = await FlowLogSink.open({ path, retainMs: 30 * 86_400_000, maxBytes: 64 * 1024 ** 3 }, createLogger(false, () => undefined));
    const t0 = process.hrtime.bigint();
    const batch: ConnectionEvent[] = [];
    for (let i = 0; i < rows; i++) {
      // each process runs in one container
      const proc = Math.floor(rnd() * procs.length);
      const c = proc % containers.length;
      // a day of connections, in the order they came
      const startMs = now - 86_400_000 + Math.floor((i * 86_400_000) / rows);
      const remote = { ip: `10.${Math.floor(rnd() * 4)}.${Math.floor(rnd() * 256)}.${Math.floor(rnd() * 64)}`, port: [443, 5432, 6379, 53, 80][Math.floor(rnd() * 5)] as number };
      const base = {
        timeSec: Math.floor(startMs / 1000),
        timeNsec: (startMs % 1000) * 1e6,
        proto: 'tcp' as const,
        direction: 'outbound' as const,
        local: { ip: '10.9.0.1', port: 30000 + (i % 30000) },
        remote,
        process: procs[proc]!,
        container: containers[c]!,
        pod: pods[c]!,
        node: 'bench',
        cgroupId: 1,
        netns: 1,
        connId: i + 1,
      };
      batch.push({ ...base, event: 'connect' });
      if (i % 1000 === 0) batch.push({ ...base, event: 'alert', rule: 'egress', trigger: 'connect' });
      batch.push({ ...base, event: 'close', timeSec: base.timeSec + 2, bytesSent: Math.floor(rnd() * 100_000), bytesReceived: Math.floor(rnd() * 1_000_000), retransmits: 0, durationMs: 2000, srttUs: 50 });
      if (batch.length >= 10_000) {
        sink.write(batch.splice(0));
        // the writer thread takes them as fast as SQLite writes: wait for it rather than fill its queue
        if ((sink.stats().queueDepth ?? 0) >= 100_000) await sink.taken();
      }
    }
    sink.write(batch.splice(0));
    await sink.close();
    const writeSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const iso = (ms: number) => new Date(ms).toISOString();
    const cases: { name: string; args: string[] }[] = [
      { name: 'one remote address', args: ['--remote', '10.1.2.3'] },
      { name: 'a /16 prefix and a port', args: ['--remote', '10.2.0.0/16', '--port', '5432'] },
      { name: 'a 10-minute window', args: ['--since', iso(now - 3_600_000), '--until', iso(now - 3_000_000)] },
      { name: 'a process glob', args: ['--process', 'svc-4?'] },
      { name: 'alerts only', args: ['--alerts'] },
      { name: 'top remote by bytes', args: ['--top', 'remote'] },
      { name: 'top pod by connections, last hour', args: ['--top', 'pod', '--by', 'connections', '--since', '1h'] },
      // the worst cases: every row is looked at
      { name: 'no match (the whole log walked)', args: ['--remote', '10.3.0.0/16', '--port', '9999'] },
      { name: 'top process, whole log', args: ['--top', 'process'] },
      { name: 'top remote for one port, whole log', args: ['--top', 'remote', '--port', '443'] },
    ];
    const queries = cases.map(({ name, args }) => {
      const times: number[] = [];
      let lines = 0;
      for (let r = 0; r < 5; r++) {
        let text = '';
        const t = process.hrtime.bigint();
        runQuery(['--db', path, '--format', 'json', ...args], (s) => (text += s), now);
        times.push(Number(process.hrtime.bigint() - t) / 1e6);
        lines = text === '' ? 0 : text.trimEnd().split('\n').length;
      }
      times.sort((a, b) => a - b);
      return { name, args, ms: times[2] as number, lines };
    });
    return { rows, writeSeconds, fileMiB: statSync(path).size / 1024 ** 2, queries };
  } finally {
    if (!process.env.KEEP_DIR) rmSync(dir, { recursive: true, force: true });
  }
}

export function queryReport(c: QueryCosts): string {
  const lines = [`convis query over a flow log of ${c.rows.toLocaleString('en-US')} connections (${c.fileMiB.toFixed(0)} MiB, written through the sink in ${c.writeSeconds.toFixed(1)} s), median of 5`];
  for (const q of c.queries) lines.push(`  ${q.name.padEnd(40)} ${q.ms.toFixed(0).padStart(6)} ms  (${q.lines} lines)`);
  return lines.join('\n');
}
