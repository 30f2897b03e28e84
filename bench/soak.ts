/**
 * convis soak: the agent for 10 minutes at max connection churn with every
 * sink on, and whether it stays whole: no event lost, memory that does not
 * grow, and exact counter totals everywhere they are delivered, across a
 * Prometheus outage in the middle.
 *
 * The workload is bench/churn.c at rate 0 (2 client + 2 server threads,
 * 64 bytes each way per connection) on a fixed port P of 127.0.0.1, for the
 * whole run. The agent runs with
 *   --sink stdout,format=json        (to /dev/null)
 *   --sink metrics,listen=127.0.0.1:M
 *   --sink prometheus,endpoint=...    (a real Prometheus, test/helpers/prometheus.ts)
 *   --sink newrelic,endpoint=...      (the local Event API server, test/helpers/newrelic-server.ts)
 *   --sink flowlog,path=...,max_size=256MiB   (in a temp dir; at max churn
 *                                     the file reaches its bound in the
 *                                     first minute, so the run's second
 *                                     half is the steady state: trimmed
 *                                     every few seconds)
 * Its RSS (VmRSS) and CPU time are sampled every 5 s. Prometheus is stopped
 * for the middle fifth of the run (2 minutes of 10) and started again on
 * the same port and data. After the workload it waits until every socket
 * of the port has closed (a FIN lost to a full loopback backlog is sent
 * again only after a timeout, so a close may come seconds late) and the
 * totals in /metrics stop moving, reads them, SIGTERMs the agent (which sends its last
 * remote write and New Relic batch on the way out), and checks:
 *   - 0 events lost (the agent's summary line);
 *   - the highest RSS in the second half of the run is at most 5 MiB above
 *     the highest in the first half;
 *   - for churn's port: connections (outbound and inbound) and TCP bytes
 *     (each direction, both sides) in /metrics and in Prometheus (latest
 *     value) equal what churn made: one connection and 64 bytes each way
 *     per complete exchange;
 *   - every event sink (stdout, New Relic, flow log) accounts for every
 *     event: sent + dropped = the events the agent made (at max churn New
 *     Relic cannot take them all, by design: its queue drops the oldest and
 *     counts them), and the New Relic server received what the sink says
 *     it sent. The New Relic totals for the port are shown, not judged.
 * The flow log's count for the port is shown too, not judged (its max_size
 * may delete the oldest rows in a long run).
 *
 * Usage: node dist/bench/soak.js [--minutes N] [--rate R] [--agent PATH]   (or npm run soak -- ...)
 * --rate paces churn to R connections/s instead (to check the soak itself
 * on a rate the agent keeps up with).
 * Root only. Prints a table and writes build/soak-results.json; exits 1 when
 * a check fails.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeNewRelic, type NrEvent } from '../test/helpers/newrelic-server.js';
import { startPrometheus, type Prometheus, type VectorSample } from '../test/helpers/prometheus.js';
import { Agent, buildChurn, CLIENTS, convisSpec, cpuMs, freePort, metricSum, peakRssKiB, ROOT, rssKiB, runChurn, SERVERS, tcpCounter, type ChurnResult, type Summary } from './lib.js';

const RESULTS = join(ROOT, 'build', 'soak-results.json');
const SAMPLE_MS = 5000;
/** RSS may grow this much from the first half's peak to the second's */
const RSS_GROWTH_KIB = 5 * 1024;
/** each way, per connection (churn.c's MSG_SIZE) */
const MSG_BYTES = 64;
/** the outage: from 40% to 60% of the run */
const OUTAGE_FROM = 0.4;
const OUTAGE_TO = 0.6;
const SETTLE_TIMEOUT_MS = 300_000;
const STOP_TIMEOUT_MS = 180_000;
const NR_ACCOUNT = '4242';
const NR_KEY = 'soak-insert-key';

interface Options {
  minutes: number;
  agent: string;
  /** churn's total connections/s; 0 (the soak's point) = as fast as possible */
  rate: number;
}

function parseOptions(argv: string[]): Options {
  const usage = 'usage: soak [--minutes N] [--rate R] [--agent PATH]';
  let minutes = 10;
  let rate = 0;
  let agent = join(ROOT, 'bin', 'convis');
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--minutes') {
      minutes = Number(argv[++i]);
      if (!Number.isFinite(minutes) || minutes <= 0) throw new Error(`bad value for --minutes\n${usage}`);
    } else if (arg === '--rate') {
      rate = Number(argv[++i]);
      if (!Number.isFinite(rate) || rate < 0) throw new Error(`bad value for --rate\n${usage}`);
    } else if (arg === '--agent') {
      const p = argv[++i];
      if (!p) throw new Error(`--agent needs a path\n${usage}`);
      agent = resolve(p);
    } else if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    } else {
      throw new Error(`unknown argument: ${arg}\n${usage}`);
    }
  }
  return { minutes, agent, rate };
}

/** What the counters say about churn's port, from one place. */
interface Totals {
  /** connections established: connected by the client, accepted by the server */
  outConnections: number;
  inConnections: number;
  /** TCP payload bytes: the client's side (outbound) and the server's (inbound) */
  outSent: number;
  outReceived: number;
  inSent: number;
  inReceived: number;
}

const TOTAL_KEYS: (keyof Totals)[] = ['outConnections', 'inConnections', 'outSent', 'outReceived', 'inSent', 'inReceived'];
const zeroTotals = (): Totals => ({ outConnections: 0, inConnections: 0, outSent: 0, outReceived: 0, inSent: 0, inReceived: 0 });

const FAMILIES: [keyof Totals, string, 'outbound' | 'inbound'][] = [
  ['outConnections', 'convis_tcp_connections_total', 'outbound'],
  ['inConnections', 'convis_tcp_connections_total', 'inbound'],
  ['outSent', 'convis_tcp_bytes_sent_total', 'outbound'],
  ['outReceived', 'convis_tcp_bytes_received_total', 'outbound'],
  ['inSent', 'convis_tcp_bytes_sent_total', 'inbound'],
  ['inReceived', 'convis_tcp_bytes_received_total', 'inbound'],
];

/** the flow log's max_size: reached within the first minute at max churn (the default, 1 GiB, only after about 2.5 minutes) */
const FLOWLOG_MAX_MIB = 256;

/** Each sink's queue depth from /metrics, as "sink N, ..." (or why not). */
async function queueDepths(metricsPort: number): Promise<string> {
  try {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
    const text = await res.text();
    const depths = [...text.matchAll(/^convis_sink_queue_depth\{[^}]*sink="([^"]+)"[^}]*\} (\S+)$/gm)].map((m) => `${m[1]} ${int(Number(m[2]))}`);
    return depths.length > 0 ? depths.join(', ') : 'none reported';
  } catch (e) {
    return `unknown (${(e as Error).message})`;
  }
}

/**
 * TCP sockets on the port that have not closed yet, from the kernel's socket
 * diagnostics (ss): every state but TIME_WAIT (whose close was reported when
 * it began) and the listener. A close can come seconds after churn counted
 * its exchange: a FIN lost to a full loopback backlog is sent again only
 * after a retransmission timeout, which backs off.
 */
function openOnPort(port: number): number {
  const states = ['established', 'syn-sent', 'syn-recv', 'fin-wait-1', 'fin-wait-2', 'close-wait', 'last-ack', 'closing'].flatMap((st) => ['state', st]);
  const out = execFileSync('ss', ['-tnH', ...states, `( sport = :${port} or dport = :${port} )`], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

async function metricsTotals(metricsPort: number, port: number): Promise<Totals> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  const t = zeroTotals();
  for (const [key, family, direction] of FAMILIES) t[key] = metricSum(text, family, { direction, server_port: String(port) });
  return t;
}

async function prometheusTotals(prom: Prometheus, port: number): Promise<Totals> {
  const t = zeroTotals();
  const value = (r: VectorSample[]) => (r.length === 1 ? Number(r[0]!.value[1]) : r.length === 0 ? 0 : NaN);
  for (const [key, family, direction] of FAMILIES) t[key] = value(await prom.query(`sum(${family}{server_port="${port}",direction="${direction}"})`));
  return t;
}

/** New Relic events about churn's port, added up as they arrive (they are not kept: millions). */
class NrTotals {
  readonly totals = zeroTotals();
  events = 0;
  constructor(private readonly port: number) {}

  add(e: NrEvent): void {
    this.events++;
    if (e['proto'] !== 'tcp') return;
    const dir = e['direction'];
    const ours = dir === 'outbound' ? e['remote.port'] === this.port : dir === 'inbound' && e['local.port'] === this.port;
    if (!ours) return;
    const num = (k: string) => (typeof e[k] === 'number' ? (e[k] as number) : 0);
    const t = this.totals;
    switch (e['event']) {
      case 'connect':
        if (dir === 'outbound') t.outConnections++;
        break;
      case 'accept':
        if (dir === 'inbound') t.inConnections++;
        break;
      case 'update':
      case 'close': {
        // an update carries what moved since the previous report; a close
        // the rest (its .delta when part was reported before, else its total)
        const sent = e['event'] === 'close' && 'bytes.tx.delta' in e ? num('bytes.tx.delta') : num('bytes.tx');
        const received = e['event'] === 'close' && 'bytes.rx.delta' in e ? num('bytes.rx.delta') : num('bytes.rx');
        if (dir === 'outbound') {
          t.outSent += sent;
          t.outReceived += received;
        } else {
          t.inSent += sent;
          t.inReceived += received;
        }
        break;
      }
    }
  }
}

interface Sample {
  /** seconds since the workload started */
  t: number;
  rssKiB: number;
  cpuMs: number;
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fixed = (n: number, d: number): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
const mmss = (s: number): string => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? '').length)));
  return rows
    .map((row) => row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join('  ').trimEnd())
    .join('\n');
}

/** The flow log's connections and bytes for the port (informational), or undefined. */
function flowlogTotals(agentEntry: string, db: string, port: number): { connections: number; bytes: number } | undefined {
  try {
    const out = execFileSync(process.execPath, [agentEntry, 'query', '--db', db, '--port', String(port), '--top', 'process', '--by', 'connections', '--format', 'json'], {
      encoding: 'utf8',
      timeout: 300_000,
      maxBuffer: 16 << 20,
    });
    let connections = 0;
    let bytes = 0;
    for (const line of out.split('\n').filter(Boolean)) {
      const row = JSON.parse(line) as Record<string, unknown>;
      connections += Number(row.connections ?? 0);
      bytes += Number(row.bytes ?? (Number(row.bytes_sent ?? 0) + Number(row.bytes_received ?? 0)));
    }
    return { connections, bytes };
  } catch (e) {
    process.stderr.write(`soak: convis query on the flow log failed: ${(e as Error).message.split('\n')[0]}\n`);
    return undefined;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('soak: must run as root (the agent loads eBPF programs)\n');
    process.exit(1);
  }
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(opts.agent)) throw new Error(`no agent at ${opts.agent} (build convis first, or pass --agent PATH)`);
  buildChurn();
  const seconds = opts.minutes * 60;
  const outageFrom = seconds * OUTAGE_FROM;
  const outageTo = seconds * OUTAGE_TO;

  const dir = mkdtempSync(join(tmpdir(), 'convis-soak-'));
  const flowDb = join(dir, 'flows.db');
  const port = await freePort();
  const metricsPort = await freePort();
  const prom = await startPrometheus();
  const nr = new NrTotals(port);
  const nrServer = await FakeNewRelic.start({ account: NR_ACCOUNT, key: NR_KEY, keepEvents: false, onEvent: (e) => nr.add(e) });
  const sinks = [
    'stdout,format=json',
    `metrics,listen=127.0.0.1:${metricsPort}`,
    `prometheus,endpoint=${prom.remoteWriteUrl.href}`,
    `newrelic,account=${NR_ACCOUNT},endpoint=${nrServer.base.href}`,
    `flowlog,path=${flowDb},max_size=${FLOWLOG_MAX_MIB}MiB`,
  ];
  process.stdout.write(
    `convis soak: kernel ${release()}, ${cpus().length} CPUs; ${fixed(opts.minutes, 1)} min at ${opts.rate ? `${int(opts.rate)} conn/s` : 'max churn'} ` +
      `(${CLIENTS} clients + ${SERVERS} servers on 127.0.0.1:${port}); agent ${opts.agent} with every sink:\n` +
      sinks.map((s) => `  --sink ${s}`).join('\n') +
      `\nPrometheus (${prom.url}) down from ${mmss(outageFrom)} to ${mmss(outageTo)}\n\n`,
  );

  let agent: Agent | undefined;
  let failure: Error | undefined;
  const samples: Sample[] = [];
  let churn: ChurnResult | undefined;
  let summary: Summary | undefined;
  let metrics: Totals | undefined;
  let promTotals: Totals | undefined;
  let flowlog: { connections: number; bytes: number } | undefined;
  let cpuChurnMs = NaN;
  let peakKiB = NaN;
  const outage = { down: NaN, up: NaN };
  let settleSeconds = NaN;
  let retransmitted = NaN;
  let openAtEnd = NaN;
  try {
    agent = new Agent(convisSpec(opts.agent, sinks), '/dev/null', { ...process.env, CONVIS_NEWRELIC_KEY: NR_KEY });
    await agent.waitReady();
    const pid = agent.livePid();
    const cpu0 = cpuMs(pid);
    const t0 = Date.now();
    const elapsed = () => (Date.now() - t0) / 1000;
    const retrans0 = tcpCounter('RetransSegs');
    const churnDone = runChurn(opts.rate, seconds, port);
    let churnEnded = false;
    void churnDone.finally(() => (churnEnded = true)).catch(() => undefined);

    // samples, the outage and progress lines, until churn ends
    let nextProgress = 30;
    let promDown = false;
    while (!churnEnded) {
      await Promise.race([sleep(SAMPLE_MS), churnDone.catch(() => undefined)]);
      if (churnEnded) break;
      const t = elapsed();
      const p = agent.livePid();
      samples.push({ t, rssKiB: rssKiB(p), cpuMs: cpuMs(p) - cpu0 });
      if (!promDown && Number.isNaN(outage.down) && t >= outageFrom) {
        await prom.kill();
        promDown = true;
        outage.down = elapsed();
        process.stdout.write(`${mmss(outage.down)} Prometheus stopped\n`);
      } else if (promDown && t >= outageTo) {
        await prom.restart();
        promDown = false;
        outage.up = elapsed();
        process.stdout.write(`${mmss(outage.up)} Prometheus started again on the same port and data\n`);
      }
      if (t >= nextProgress) {
        nextProgress += 30;
        const s = samples[samples.length - 1]!;
        // the bounded queues, which hold memory while a sink is behind, and the flow log's file (trimmed at max_size)
        const queues = await queueDepths(metricsPort);
        let dbMiB = NaN;
        try {
          dbMiB = statSync(flowDb).size / 2 ** 20;
        } catch {
          // not made yet
        }
        process.stdout.write(
          `${mmss(t)} agent RSS ${fixed(s.rssKiB / 1024, 1)} MiB, CPU ${fixed((s.cpuMs / 1000 / t) * 100, 0)}% of one CPU; New Relic events received ${int(nr.events)}; ` +
            `queued: ${queues}; flow log ${fixed(dbMiB, 0)} MiB\n`,
        );
      }
    }
    churn = await churnDone;
    cpuChurnMs = cpuMs(agent.livePid()) - cpu0;
    if (promDown) {
      // a run too short to reach the end of the outage
      await prom.restart();
      outage.up = elapsed();
    }
    process.stdout.write(`${mmss(elapsed())} churn done: ${int(churn.connections)} connections (${int(churn.rate)}/s), ${int(churn.failed)} failed; waiting for the port's sockets to close and the totals in /metrics to settle\n`);

    retransmitted = tcpCounter('RetransSegs') - retrans0;
    openAtEnd = openOnPort(port);

    // delivery: every socket of the port has closed, and then the totals for the port stop moving
    const settleStart = Date.now();
    let last = await metricsTotals(metricsPort, port);
    let stableSince = Date.now();
    while (Date.now() - settleStart < SETTLE_TIMEOUT_MS) {
      await sleep(1000);
      const p = agent.livePid();
      samples.push({ t: elapsed(), rssKiB: rssKiB(p), cpuMs: cpuMs(p) - cpu0 });
      const now = await metricsTotals(metricsPort, port);
      if (TOTAL_KEYS.every((k) => now[k] === last[k])) {
        if (Date.now() - stableSince >= 3000 && openOnPort(port) === 0) break;
      } else {
        last = now;
        stableSince = Date.now();
      }
    }
    settleSeconds = (Date.now() - settleStart) / 1000;
    metrics = last;
    peakKiB = peakRssKiB(agent.livePid());
    process.stdout.write(`${mmss(elapsed())} /metrics settled after ${fixed(settleSeconds, 0)} s; stopping the agent\n`);
    summary = await agent.stop(STOP_TIMEOUT_MS);
    // the last remote write went out on the way out; give Prometheus a moment to have it queryable
    promTotals = await prometheusTotals(prom, port);
    for (let i = 0; i < 30 && metrics && TOTAL_KEYS.some((k) => promTotals![k] !== metrics![k]); i++) {
      await sleep(1000);
      promTotals = await prometheusTotals(prom, port);
    }
    flowlog = flowlogTotals(opts.agent, flowDb, port);
  } catch (e) {
    failure = e as Error;
  } finally {
    await prom.stop().catch(() => undefined);
    await nrServer.close().catch(() => undefined);
  }
  let flowDbBytes = NaN;
  try {
    flowDbBytes = statSync(flowDb).size;
  } catch {
    // not there
  }
  rmSync(dir, { recursive: true, force: true });
  if (failure) throw failure;

  // ---- figures and checks ----
  const made = churn!.connections;
  const failed = churn!.failed;
  const expected: Totals = {
    outConnections: made,
    inConnections: made,
    outSent: MSG_BYTES * made,
    outReceived: MSG_BYTES * made,
    inSent: MSG_BYTES * made,
    inReceived: MSG_BYTES * made,
  };
  // a failed attempt may have been established and moved part of its bytes: exact only without failures
  const matches = (t: Totals | undefined): boolean =>
    !!t && TOTAL_KEYS.every((k) => t[k] >= expected[k] && t[k] <= expected[k] + (k.endsWith('Connections') ? failed : MSG_BYTES * failed));
  const during = samples.filter((s) => s.t <= seconds);
  const firstHalf = Math.max(...during.filter((s) => s.t < seconds / 2).map((s) => s.rssKiB));
  const secondHalf = Math.max(...during.filter((s) => s.t >= seconds / 2).map((s) => s.rssKiB));
  const afterChurn = Math.max(...samples.filter((s) => s.t > seconds).map((s) => s.rssKiB));
  const sinkStats = (summary!.sinks ?? {}) as Record<string, { sent?: number; dropped?: number; failed?: number }>;
  // connection events the pipeline handed every sink (the kernel records that become events)
  const kinds = (summary!.events ?? {}) as Record<string, number>;
  const eventsMade = ['connect', 'accept', 'close', 'connect_failed', 'update', 'listen', 'unlisten'].reduce((n, k) => n + (kinds[k] ?? 0), 0);

  const checks = [
    { check: '0 events lost (summary)', met: summary!.lost === 0, value: int(summary!.lost) },
    {
      check: 'peak RSS of the second half <= peak of the first half + 5 MiB',
      met: Number.isFinite(firstHalf) && Number.isFinite(secondHalf) && secondHalf <= firstHalf + RSS_GROWTH_KIB,
      value: `${fixed(firstHalf / 1024, 1)} -> ${fixed(secondHalf / 1024, 1)} MiB (${secondHalf >= firstHalf ? '+' : ''}${fixed((secondHalf - firstHalf) / 1024, 1)})`,
    },
    { check: `/metrics totals for port ${port} = what churn made`, met: matches(metrics), value: matches(metrics) ? 'exact' : 'differ (table)' },
    { check: 'Prometheus totals (latest, after the outage) = what churn made', met: matches(promTotals), value: matches(promTotals) ? 'exact' : 'differ (table)' },
    // a sink may drop under load (counted); none may lose an event without counting it
    ...['stdout', 'newrelic', 'flowlog'].map((name) => {
      const st = sinkStats[name];
      const accounted = (st?.sent ?? NaN) + (st?.dropped ?? NaN);
      // the flow log keeps connections: listen and unlisten make no row
      const made = name === 'flowlog' ? eventsMade - (kinds.listen ?? 0) - (kinds.unlisten ?? 0) : eventsMade;
      return { check: `sink ${name}: sent + dropped = events made${name === 'flowlog' ? ' (listeners make no row)' : ''}`, met: accounted === made, value: `${int(accounted)} of ${int(made)}` };
    }),
    { check: 'New Relic events received = what the sink counts as sent', met: nr.events === sinkStats.newrelic?.sent, value: `${int(nr.events)} vs ${int(sinkStats.newrelic?.sent ?? NaN)}` },
  ];

  const totalsTable = table([
    [`totals for port ${port}`, 'expected', '/metrics', 'Prometheus', 'New Relic'],
    ...TOTAL_KEYS.map((k) => [k, int(expected[k]), int(metrics?.[k] ?? NaN), int(promTotals?.[k] ?? NaN), int(nr.totals[k])]),
  ]);
  const figures = table([
    [`soak, ${fixed(opts.minutes, 1)} min`, ''],
    ['churn connections made', int(made)],
    ['churn failed attempts', int(failed)],
    ['churn rate, conn/s', int(churn!.rate)],
    ['agent CPU per connection, µs', fixed((cpuChurnMs * 1000) / made, 2)],
    ['agent RSS, highest sample in the first half, MiB', fixed(firstHalf / 1024, 1)],
    ['agent RSS, highest sample in the second half, MiB', fixed(secondHalf / 1024, 1)],
    ['agent RSS, highest sample after the workload, MiB', fixed(afterChurn / 1024, 1)],
    ['agent peak RSS (VmHWM), MiB', fixed(peakKiB / 1024, 1)],
    ['events lost', int(summary!.lost)],
    ['TCP segments retransmitted on the machine during the workload', int(retransmitted)],
    ['sockets of the port not closed yet when the workload ended', int(openAtEnd)],
    ['seconds for them to close and /metrics to settle', fixed(settleSeconds, 0)],
    ['Prometheus down (from - to)', `${mmss(outage.down)} - ${mmss(outage.up)}`],
    ['New Relic events received (all)', int(nr.events)],
    ...Object.entries(sinkStats).map(([name, s]) => [`sink ${name}: sent / dropped / failed`, `${int(s.sent ?? NaN)} / ${int(s.dropped ?? NaN)} / ${int(s.failed ?? 0)}`]),
    ['flow log: rows for the port (both ends: 2 per connection; not judged)', `${int(flowlog?.connections ?? NaN)} of ${int(2 * made)}`],
    ['flow log: file size, MiB', fixed(flowDbBytes / 2 ** 20, 0)],
  ]);
  const checkLines = checks.map((c) => `  ${c.met ? '[met]   ' : '[missed]'} ${c.check}: ${c.value}`).join('\n');
  process.stdout.write(`\n${figures}\n\n${totalsTable}\n\nchecks:\n${checkLines}\n`);

  writeFileSync(
    RESULTS,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        kernel: release(),
        cpus: cpus().length,
        options: { ...opts, port, sinks, outageFrom, outageTo },
        churn,
        cpuChurnMs,
        peakRssKiB: peakKiB,
        rss: { firstHalfMaxKiB: firstHalf, secondHalfMaxKiB: secondHalf, afterChurnMaxKiB: afterChurn },
        samples,
        outage,
        settleSeconds,
        retransmitted,
        openAtEnd,
        expected,
        metrics,
        prometheus: promTotals,
        newrelic: { ...nr.totals, events: nr.events },
        flowlog,
        flowDbBytes,
        summary,
        checks,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`\nresults written to ${RESULTS}\n`);
  if (!checks.every((c) => c.met)) process.exitCode = 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
