/**
 * convis benchmark: what the agent costs a loopback connection-churn
 * workload and a real web server, measured against a minimal C tracer of
 * the same hooks in the same run.
 *
 * Two churn phases, max churn and a paced 5,000 conn/s; each runs
 * alternating pairs of (workload alone, workload with convis writing JSON to
 * /dev/null, with convis serving /metrics only, with the C baseline
 * bench/mintrace, built here at run time). The workload is
 * bench/churn.c (2 client + 2 server threads, 64-byte exchange). For every
 * run with a tracer it records the connections the workload made against
 * the events reported, events lost, the workload's rate relative to the
 * median rate without a tracer, the tracer's CPU time and its BPF programs'
 * run time (kernel.bpf_stats_enabled is on for the run) per connection,
 * and its peak RSS. The nginx phase serves a 1 KiB file without keep-alive
 * to `ab` (both from Debian), alone, with convis's JSON to /dev/null, with
 * convis's metrics endpoint only, and with the C baseline. The bulk phase
 * moves 8 GiB over one loopback connection with iperf3, alone and with the
 * agent, and checks that the agent reports the connection's bytes exactly.
 * With --compare PATH, every churn and bulk pair also runs another build of
 * the agent (e.g. a checkout of an earlier commit). The tracers of a pair
 * take turns at going first. Results are printed and written to
 * build/bench-results.json.
 *
 * Usage: node dist/bench/bench.js [--pairs N] [--seconds S] [--quick] [--agent PATH] [--compare PATH]
 *        [--phases max,paced,nginx,bulk,stages,query] [--no-bpf-stats]
 * (or npm run bench -- ...). Must run as root: the tracers load eBPF programs.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { measureStages, type StageCosts } from './pipeline.js';
import { measureQueries, queryReport, type QueryCosts } from './flowlog.js';
import {
  Agent,
  baselineSpec,
  bpfProgDeltas,
  bpfProgTimes,
  buildChurn,
  buildMintrace,
  CHURN_BIN,
  CLIENTS,
  clockTicks,
  convisSpec,
  cpuMs,
  enableBpfStats,
  withBpfStats,
  freePort,
  metricSum,
  peakRssKiB,
  rssParts,
  ROOT,
  runChurn,
  SERVERS,
  start,
  tcpCounter,
  within,
  type ChurnResult,
  type ProgDelta,
  type Summary,
  type TracerSpec,
} from './lib.js';

const RESULTS = join(ROOT, 'build', 'bench-results.json');

const PACED_RATE = 5000;
/** time between the workload's end and SIGTERM, for the agent to drain */
const DRAIN_MS = 1000;
/** pause between runs so one run's softirq backlog does not spill into the next */
const SETTLE_MS = 1000;

/** issue 10: the churn rate kept at max churn */
const TARGET_MAX_RATIO = 0.88;
/** issue 10: at most this far below the C baseline's max-churn ratio, same run */
const TARGET_BASELINE_GAP = 0.07;
/** "1.00" at two decimals */
const TARGET_PACED_RATIO = 0.995;
/** agent CPU (user + system) per connection at max churn, µs */
const TARGET_CPU_US = 3;
/** run time of the agent's BPF programs per connection at max churn, µs */
const TARGET_BPF_US = 2.5;
/** the agent's peak RSS in any run, MiB */
const TARGET_RSS_MIB = 100;
/** nginx requests/s kept with the agent, in each of its modes */
const TARGET_NGINX_RATIO = 0.93;
/** the bulk transfer keeps this share of its throughput with the agent */
const TARGET_BULK_RATIO = 0.97;
/** bytes the bulk transfer moves over one connection */
const BULK_BYTES = 8 * 2 ** 30;
/** iperf3 also sends its 37-byte session cookie on the data connection (iperf.h COOKIE_SIZE) */
const IPERF3_COOKIE_BYTES = 37;
/** the largest drop in the max-churn ratio allowed against a --compare build */
const TARGET_COMPARE_DROP = 0.02;

/** ab's concurrency in the nginx phase */
const AB_CONCURRENCY = 4;
/** the file nginx serves */
const NGINX_FILE_BYTES = 1024;

const PHASES = ['max', 'paced', 'nginx', 'bulk', 'stages', 'query'] as const;
type PhaseName = (typeof PHASES)[number];

interface Options {
  pairs: number;
  seconds: number;
  agent: string;
  phases: Set<PhaseName>;
  /** another agent build, measured in the same pairs */
  compare?: string;
  /** turn kernel.bpf_stats_enabled on for the run (default) */
  bpfStats: boolean;
}

interface AgentMeasure {
  summary: Summary;
  cpuMs: number;
  peakRssKiB: number;
  /** resident memory by kind at the end of the workload (see rssParts) */
  memory?: { anonKiB: number; fileKiB: number; ringKiB: number };
  /** TCP connects in this network namespace from agent start to exit that
   * were not the workload's: the agent traces them too */
  otherConnects: number;
  /** run time of the tracer's BPF programs during the workload (0 without bpf stats) */
  bpfNs: number;
  /** the same by program, largest first */
  bpfPrograms: ProgDelta[];
}

/**
 * which tracer a run had: none, this build with JSON to /dev/null, this build
 * with the metrics endpoint only, the --compare one, or the C baseline
 */
type Who = 'alone' | 'agent' | 'metrics' | 'compare' | 'baseline';

const WHO_TEXT: Record<Who, string> = {
  alone: 'alone',
  agent: 'with agent',
  metrics: 'with agent, metrics only',
  compare: 'with --compare agent',
  baseline: 'with C baseline',
};

interface Run {
  pair: number;
  who: Who;
  churn: ChurnResult;
  /** only for runs with a tracer */
  measure?: AgentMeasure;
}

interface Phase {
  key: PhaseName;
  name: string;
  /** connections/s asked of churn; 0 = as fast as possible */
  rate: number;
  runs: Run[];
}

interface RunStats {
  otherConnects: number;
  rate: number;
  ratio: number;
  connectPct: number;
  acceptPct: number;
  closePct: number;
  lost: number;
  /** tracer CPU per connection made, µs (= ms per 1,000 connections) */
  cpuUsPerConn: number;
  /** BPF program run time per connection made, µs */
  bpfUsPerConn: number;
  peakRssMiB: number;
}

// ---- options ----

function parseOptions(argv: string[]): Options {
  const usage =
    `usage: bench [--pairs N] [--seconds S] [--quick] [--agent PATH] [--compare PATH] [--phases ${PHASES.join(',')}] [--no-bpf-stats]  (env: BENCH_PAIRS, BENCH_SECONDS)`;
  const positive = (name: string, value: string | undefined): number => {
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n <= 0) throw new Error(`bad value for ${name}: ${value ?? '(none)'}\n${usage}`);
    return n;
  };
  let pairs: number | undefined = process.env.BENCH_PAIRS ? positive('BENCH_PAIRS', process.env.BENCH_PAIRS) : undefined;
  let seconds: number | undefined = process.env.BENCH_SECONDS ? positive('BENCH_SECONDS', process.env.BENCH_SECONDS) : undefined;
  let quick = false;
  let agent = join(ROOT, 'bin', 'convis');
  let compare: string | undefined;
  let phases = new Set<PhaseName>(PHASES);
  let bpfStats = true;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case '--pairs':
        pairs = positive(arg, argv[++i]);
        break;
      case '--seconds':
        seconds = positive(arg, argv[++i]);
        break;
      case '--quick':
        quick = true;
        break;
      case '--agent': {
        const path = argv[++i];
        if (!path) throw new Error(`--agent needs a path\n${usage}`);
        agent = resolve(path);
        break;
      }
      case '--phases': {
        const list = (argv[++i] ?? '').split(',').filter(Boolean);
        const bad = list.find((x) => !(PHASES as readonly string[]).includes(x));
        if (list.length === 0 || bad !== undefined) throw new Error(`--phases takes some of ${PHASES.join(',')}\n${usage}`);
        phases = new Set(list as PhaseName[]);
        break;
      }
      case '--compare': {
        const path = argv[++i];
        if (!path) throw new Error(`--compare needs a path\n${usage}`);
        compare = resolve(path);
        break;
      }
      case '--no-bpf-stats':
        bpfStats = false;
        break;
      case '-h':
      case '--help':
        process.stdout.write(`${usage}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument: ${arg}\n${usage}`);
    }
  }
  // explicit values win over --quick
  return {
    pairs: Math.floor(pairs ?? (quick ? 2 : 3)),
    seconds: seconds ?? (quick ? 5 : 20),
    agent,
    phases,
    ...(compare ? { compare } : {}),
    bpfStats,
  };
}

// ---- a run with a tracer ----

/** Starts the tracer, runs `workload` once it is ready, and measures the tracer over it. */
async function measured<T>(
  spec: TracerSpec,
  workload: () => Promise<T>,
  made: (result: T) => number,
  beforeStop?: (agent: Agent) => Promise<void>,
  out?: string,
): Promise<{ result: T; measure: AgentMeasure }> {
  const opensBefore = tcpCounter('ActiveOpens');
  const agent = new Agent(spec, out);
  await agent.waitReady();
  const pid0 = agent.livePid();
  const cpuAtReady = cpuMs(pid0);
  const bpfBefore = bpfProgTimes(pid0);
  const result = await workload();
  await sleep(DRAIN_MS);
  const pid = agent.livePid();
  const cpu = cpuMs(pid) - cpuAtReady;
  const bpfAfter = bpfProgTimes(pid);
  const peak = peakRssKiB(pid);
  const memory = rssParts(pid);
  const bpfPrograms = bpfProgDeltas(bpfBefore, bpfAfter);
  await beforeStop?.(agent);
  const summary = await agent.stop();
  const otherConnects = Math.max(0, tcpCounter('ActiveOpens') - opensBefore - made(result));
  return {
    result,
    measure: { summary, cpuMs: cpu, peakRssKiB: peak, memory, otherConnects, bpfNs: bpfPrograms.reduce((a, p) => a + p.ns, 0), bpfPrograms },
  };
}

async function runWithTracer(spec: TracerSpec, opts: Options, rate: number): Promise<{ churn: ChurnResult; measure: AgentMeasure }> {
  const { result, measure } = await measured(spec, () => runChurn(rate, opts.seconds), (c) => c.connections + c.failed);
  return { churn: result, measure };
}

/** The tracers of a pair in turn order: each takes every position in turn over the pairs. */
function rotate<T>(list: readonly T[], pair: number): T[] {
  const k = (pair - 1) % Math.max(list.length, 1);
  return [...list.slice(k), ...list.slice(0, k)];
}

// ---- nginx and ab ----

interface Nginx {
  port: number;
  /** nginx's own count of accepted connections (stub_status) */
  accepts(): Promise<number>;
  stop(): Promise<void>;
}

/** Fails with one line when a Debian package the bench needs is missing. */
function requireTool(path: string, pkg: string): void {
  if (!existsSync(path)) throw new Error(`${path} not found: install ${pkg} (bash scripts/setup.sh installs it)`);
}

/**
 * nginx with a config of its own in a temp dir: master process in the
 * foreground as a child of the bench, 1 worker, 127.0.0.1 on a free port,
 * no keep-alive, no access log, pid, logs and temp paths in the temp dir,
 * a 1 KiB file and stub_status (nginx's own accept counter).
 */
async function startNginx(): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'convis-bench-nginx-'));
  const www = join(dir, 'www');
  mkdirSync(www);
  mkdirSync(join(dir, 'tmp'));
  writeFileSync(join(www, '1k.bin'), Buffer.alloc(NGINX_FILE_BYTES, 'x'));
  // the worker runs as nobody: it must be able to read the file
  for (const p of [dir, www]) chmodSync(p, 0o755);
  chmodSync(join(www, '1k.bin'), 0o644);
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    [
      'daemon off;',
      'master_process on;',
      'worker_processes 1;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  keepalive_timeout 0;',
      '  default_type application/octet-stream;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/tmp/${t};`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    root ${www};`,
      '    location = /nginx_status { stub_status; }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const proc = start('/usr/sbin/nginx', ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const accepts = async (): Promise<number> => {
    const res = await fetch(`http://127.0.0.1:${port}/nginx_status`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    // "server accepts handled requests\n N N N"
    const m = /accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)/.exec(text);
    if (!m?.[1]) throw new Error(`unexpected nginx stub_status: ${text.slice(0, 200)}`);
    return Number(m[1]);
  };
  const stop = async (): Promise<void> => {
    proc.child.kill('SIGQUIT');
    if (!(await within(proc.closed, 5000))) {
      proc.child.kill('SIGKILL');
      await within(proc.closed, 5000);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exit) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx exited at start: ${err.trim() || readFileSync(join(dir, 'error.log'), 'utf8').trim()}`);
    }
    try {
      await accepts();
      return { port, accepts, stop };
    } catch (e) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`nginx did not answer within 10 s: ${(e as Error).message}`);
      }
      await sleep(100);
    }
  }
}

interface AbResult {
  complete: number;
  failed: number;
  non2xx: number;
  seconds: number;
  /** requests per second, as ab reports it (complete / seconds) */
  rps: number;
}

/** ab -c 4 for `seconds`, no keep-alive, against nginx's 1 KiB file. */
async function runAb(port: number, seconds: number): Promise<AbResult> {
  // -t alone caps the requests at 50,000 (ab sizes its table by -n): -n after -t raises the cap
  const args = ['-q', '-r', '-c', String(AB_CONCURRENCY), '-t', String(seconds), '-n', String(Math.max(50_000, Math.ceil(seconds * 100_000))), `http://127.0.0.1:${port}/1k.bin`];
  const ab = start('/usr/bin/ab', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  ab.child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  ab.child.stderr?.setEncoding('utf8').on('data', (s: string) => (out += s));
  const exit = await within(ab.closed, seconds * 1000 + 60_000);
  if (!exit) {
    ab.child.kill('SIGKILL');
    throw new Error(`ab did not finish within ${seconds} s + 60 s`);
  }
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN);
  const r: AbResult = {
    complete: num(/^Complete requests:\s+(\d+)/m),
    failed: num(/^Failed requests:\s+(\d+)/m),
    non2xx: Number(/^Non-2xx responses:\s+(\d+)/m.exec(out)?.[1] ?? 0),
    seconds: num(/^Time taken for tests:\s+([\d.]+) seconds/m),
    rps: num(/^Requests per second:\s+([\d.]+)/m),
  };
  if (exit.code !== 0 || ![r.complete, r.failed, r.seconds, r.rps].every(Number.isFinite)) {
    throw new Error(`ab failed (${exit.signal ?? `exit ${exit.code}`}): ${out.trim().split('\n').slice(-5).join(' / ')}`);
  }
  return r;
}

/** what ran beside nginx: nothing, convis with JSON to /dev/null, convis with its metrics endpoint only, the C baseline */
type NginxWho = 'alone' | 'json' | 'metrics' | 'baseline';
const NGINX_WHO_TEXT: Record<NginxWho, string> = {
  alone: 'alone',
  json: 'with agent, --sink stdout,format=json',
  metrics: 'with agent, --sink metrics',
  baseline: 'with C baseline',
};

interface NginxRun {
  pair: number;
  who: NginxWho;
  ab: AbResult;
  /** connections nginx accepted from ab during the run (stub_status) */
  accepted: number;
  measure?: AgentMeasure;
  /** metrics mode: convis_tcp_connections_total inbound on nginx's port, from /metrics */
  portAccepts?: number;
}

async function runNginxWith(who: Exclude<NginxWho, 'alone'>, opts: Options, nginx: Nginx): Promise<NginxRun & { measure: AgentMeasure }> {
  const metricsPort = who === 'metrics' ? await freePort() : 0;
  const spec =
    who === 'baseline'
      ? baselineSpec
      : convisSpec(opts.agent, [who === 'json' ? 'stdout,format=json' : `metrics,listen=127.0.0.1:${metricsPort}`]);
  // before the tracer starts, so that this request is not one it sees
  const accepts0 = await nginx.accepts();
  let portAccepts: number | undefined;
  const { result: ab, measure } = await measured(
    spec,
    () => runAb(nginx.port, opts.seconds),
    (r) => r.complete + r.failed,
    async () => {
      if (who !== 'metrics') return;
      const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
      portAccepts = metricSum(await res.text(), 'convis_tcp_connections_total', { direction: 'inbound', server_port: String(nginx.port) });
    },
  );
  // after the tracer stopped: this request is not one it saw either
  const accepted = (await nginx.accepts()) - accepts0 - 1;
  return { pair: 0, who, ab, accepted, measure, ...(portAccepts !== undefined ? { portAccepts } : {}) };
}

interface NginxStats {
  rps: number;
  ratio: number;
  /** accept events per connection nginx accepted: on its port (metrics mode) or host-wide (summary) */
  acceptPct: number;
  lost: number;
  cpuUsPerConn: number;
  bpfUsPerConn: number;
  peakRssMiB: number;
}

function nginxStats(run: NginxRun, baseline: number): NginxStats | undefined {
  const m = run.measure;
  if (!m) return undefined;
  const n = run.accepted;
  const per = (x: number) => (n > 0 ? x / n : NaN);
  return {
    rps: run.ab.rps,
    ratio: run.ab.rps / baseline,
    acceptPct: 100 * per(run.portAccepts ?? m.summary.events.accept),
    lost: m.summary.lost,
    cpuUsPerConn: per(m.cpuMs * 1000),
    bpfUsPerConn: per(m.bpfNs / 1000),
    peakRssMiB: m.peakRssKiB / 1024,
  };
}

interface NginxSummary {
  aloneRps: number;
  byWho: Partial<Record<Exclude<NginxWho, 'alone'>, { ratio: number; acceptPct: number; lowestAcceptPct: number; highestAcceptPct: number; lost: number; cpuUsPerConn: number; bpfUsPerConn: number; peakRssMiB: number; highestPeakRssMiB: number }>>;
}

function summarizeNginx(runs: NginxRun[]): NginxSummary {
  const aloneRps = median(runs.filter((r) => r.who === 'alone').map((r) => r.ab.rps));
  const byWho: NginxSummary['byWho'] = {};
  for (const who of ['json', 'metrics', 'baseline'] as const) {
    const all = runs.filter((r) => r.who === who).map((r) => nginxStats(r, aloneRps)).filter((s): s is NginxStats => s !== undefined);
    if (all.length === 0) continue;
    const med = (f: (s: NginxStats) => number) => median(all.map(f));
    byWho[who] = {
      ratio: med((s) => s.ratio),
      acceptPct: med((s) => s.acceptPct),
      lowestAcceptPct: Math.min(...all.map((s) => s.acceptPct)),
      highestAcceptPct: Math.max(...all.map((s) => s.acceptPct)),
      lost: all.reduce((a, s) => a + s.lost, 0),
      cpuUsPerConn: med((s) => s.cpuUsPerConn),
      bpfUsPerConn: med((s) => s.bpfUsPerConn),
      peakRssMiB: med((s) => s.peakRssMiB),
      highestPeakRssMiB: Math.max(...all.map((s) => s.peakRssMiB)),
    };
  }
  return { aloneRps, byWho };
}

function nginxTable(runs: NginxRun[]): string {
  const aloneRps = median(runs.filter((r) => r.who === 'alone').map((r) => r.ab.rps));
  const rows = [['run', 'requests', 'failed', 'accepted', 'req/s', 'ratio', 'accept', 'lost', 'CPU µs/conn', 'BPF µs/conn', 'peak RSS MiB']];
  for (const run of runs) {
    const s = nginxStats(run, aloneRps);
    rows.push([
      `pair ${run.pair} ${NGINX_WHO_TEXT[run.who]}`,
      int(run.ab.complete),
      int(run.ab.failed + run.ab.non2xx),
      run.who === 'alone' ? '' : int(run.accepted),
      int(run.ab.rps),
      s ? fixed(s.ratio, 2) : '',
      s ? percent(s.acceptPct) : '',
      s ? int(s.lost) : '',
      s ? fixed(s.cpuUsPerConn, 2) : '',
      s ? fixed(s.bpfUsPerConn, 2) : '',
      s ? fixed(s.peakRssMiB, 1) : '',
    ]);
  }
  const legend =
    `nginx (1 worker, ${NGINX_FILE_BYTES}-byte file, no keep-alive) loaded by ab -c ${AB_CONCURRENCY}: ratio = req/s with the tracer / median alone (${int(aloneRps)} req/s); ` +
    'accepted = connections nginx counted (stub_status); accept = accept events per connection accepted: on nginx\'s port from /metrics ' +
    '(metrics mode), host-wide from the summary otherwise (other traffic on the host counts too)';
  return `${legend}\n${table(rows)}`;
}

// ---- the bulk transfer ----

interface BulkResult {
  /** payload bytes per second, as the receiving iperf3 counted them */
  rate: number;
  bytes: number;
}

interface BulkRun {
  pair: number;
  who: Who;
  bulk: BulkResult;
  /** bytes_sent of the agent's close event of the data connection (undefined: no such event) */
  reported?: number;
}

/**
 * One iperf3 client moving BULK_BYTES to a one-off iperf3 server over
 * loopback, client and server pinned to CPUs 0 and 1: left to the scheduler,
 * the throughput alone swings by a third from run to run on 2 vCPUs.
 */
async function runBulk(): Promise<BulkResult> {
  const port = String(20000 + Math.floor(Math.random() * 20000));
  const server = start('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', port], { stdio: 'ignore' });
  await sleep(300);
  const pin = cpus().length >= 2 ? ['-A', '0,1'] : [];
  const client = start('iperf3', ['-c', '127.0.0.1', '-p', port, '-n', String(BULK_BYTES), ...pin, '-J'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  client.child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exit = await within(client.closed, 300_000);
  await within(server.closed, 5_000);
  server.child.kill('SIGKILL');
  if (!exit || exit.code !== 0) throw new Error(`iperf3 failed: ${out.slice(-500)}`);
  const end = (JSON.parse(out) as { end: { sum_received: { bytes: number; seconds: number } } }).end.sum_received;
  return { rate: end.bytes / end.seconds, bytes: end.bytes };
}

/** The bulk transfer with an agent running; the agent's close event of the data connection. */
async function runBulkWithAgent(entry: string): Promise<{ bulk: BulkResult; reported?: number }> {
  const out = join(ROOT, 'build', 'bench-bulk-events.json');
  const agent = new Agent(convisSpec(entry, ['stdout,format=json']), out);
  await agent.waitReady();
  const bulk = await runBulk();
  await sleep(DRAIN_MS);
  await agent.stop();
  // the data connection is the one close whose bytes are in the GiB
  let reported: number | undefined;
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    if (!line.includes('"event":"close"')) continue;
    const e = JSON.parse(line) as { direction: string; bytes_sent: number };
    if (e.direction === 'outbound' && e.bytes_sent >= 2 ** 30) reported = e.bytes_sent;
  }
  return { bulk, ...(reported !== undefined ? { reported } : {}) };
}

/** The bulk pairs: alone, then each agent in turn (the order rotates per pair). */
async function bulkPhase(opts: Options, bulkAgents: [Who, string][], bulkRuns: BulkRun[]): Promise<void> {
  for (let pair = 1; pair <= opts.pairs; pair++) {
    const alone = await runBulk();
    bulkRuns.push({ pair, who: 'alone', bulk: alone });
    process.stdout.write(`bulk, pair ${pair}, alone: ${int(alone.rate / 1e6)} MB/s\n`);
    await sleep(SETTLE_MS);
    for (const [who, entry] of rotate(bulkAgents, pair)) {
      const r = await runBulkWithAgent(entry);
      bulkRuns.push({ pair, who, ...r });
      process.stdout.write(
        `bulk, pair ${pair}, ${WHO_TEXT[who]}: ${int(r.bulk.rate / 1e6)} MB/s; ` +
          `iperf3 moved ${int(r.bulk.bytes)} bytes, the agent's close says ${r.reported === undefined ? 'nothing' : int(r.reported)}\n`,
      );
      await sleep(SETTLE_MS);
    }
  }
}

interface BulkSummary {
  aloneRate: number;
  ratio: number;
  compareRatio: number;
  /** complete runs whose close event had the exact bytes iperf3 moved */
  exact: number;
  /** runs with an agent in which iperf3 moved all BULK_BYTES (the others ended early: nothing to check against) */
  runs: number;
  /** runs with an agent in which iperf3 ended before moving all of it */
  incomplete: number;
}

function summarizeBulk(runs: BulkRun[]): BulkSummary {
  const alone = median(runs.filter((r) => r.who === 'alone').map((r) => r.bulk.rate));
  // pair by pair: the rate alone drifts by a quarter between pairs here (1.94
  // to 1.48 GB/s in three consecutive pairs), which a ratio of medians takes
  // for the agent's cost; each run is compared with the run alone of its pair
  const aloneOf = new Map(runs.filter((r) => r.who === 'alone').map((r) => [r.pair, r.bulk.rate]));
  const ratio = (who: Who) => median(runs.filter((r) => r.who === who && aloneOf.has(r.pair)).map((r) => r.bulk.rate / (aloneOf.get(r.pair) as number)));
  const withAgent = runs.filter((r) => r.who !== 'alone');
  const complete = withAgent.filter((r) => r.bulk.bytes === BULK_BYTES);
  return {
    aloneRate: alone,
    ratio: ratio('agent'),
    compareRatio: ratio('compare'),
    exact: complete.filter((r) => r.reported === r.bulk.bytes + IPERF3_COOKIE_BYTES).length,
    runs: complete.length,
    incomplete: withAgent.length - complete.length,
  };
}

// ---- figures ----

function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function aloneMedian(phase: Phase): number {
  return median(phase.runs.filter((r) => r.who === 'alone').map((r) => r.churn.rate));
}

function stats(run: Run, baseline: number): RunStats | undefined {
  const m = run.measure;
  if (!m) return undefined;
  const made = run.churn.connections;
  const pct = (n: number): number => (made > 0 ? (100 * n) / made : NaN);
  return {
    otherConnects: m.otherConnects,
    rate: run.churn.rate,
    ratio: run.churn.rate / baseline,
    connectPct: pct(m.summary.events.connect),
    acceptPct: pct(m.summary.events.accept),
    closePct: pct(m.summary.events.close / 2),
    lost: m.summary.lost,
    cpuUsPerConn: made > 0 ? (m.cpuMs * 1000) / made : NaN,
    bpfUsPerConn: made > 0 ? m.bpfNs / 1000 / made : NaN,
    peakRssMiB: m.peakRssKiB / 1024,
  };
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fixed = (n: number, digits: number): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');
const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;
const percent = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(1)}%` : '-');

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
  return rows
    .map((row) => row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join('  ').trimEnd())
    .join('\n');
}

function phaseTable(phase: Phase): string {
  const baseline = aloneMedian(phase);
  const rows = [['run', 'made', 'failed', 'other', 'conn/s', 'ratio', 'connect', 'accept', 'close/2', 'lost', 'CPU µs/conn', 'BPF µs/conn', 'peak RSS MiB']];
  for (const run of phase.runs) {
    const s = stats(run, baseline);
    rows.push([
      `pair ${run.pair} ${WHO_TEXT[run.who]}`,
      int(run.churn.connections),
      int(run.churn.failed),
      s ? int(s.otherConnects) : '',
      int(run.churn.rate),
      s ? fixed(s.ratio, 2) : '',
      s ? percent(s.connectPct) : '',
      s ? percent(s.acceptPct) : '',
      s ? percent(s.closePct) : '',
      s ? int(s.lost) : '',
      s ? fixed(s.cpuUsPerConn, 2) : '',
      s ? fixed(s.bpfUsPerConn, 2) : '',
      s ? fixed(s.peakRssMiB, 1) : '',
    ]);
  }
  const legend =
    `${phase.name}: ratio = rate with the tracer / median rate alone (${int(baseline)} conn/s); ` +
    'connect, accept and close/2 are tracer events per connection made; ' +
    'other = connects on the host not made by the workload (the tracers count them too, inflating connect, accept and close); ' +
    'CPU = the tracer process\'s user + system time, BPF = run time of its BPF programs, both per connection made';
  return `${legend}\n${table(rows)}`;
}

interface PhaseSummary {
  name: string;
  rate: number;
  aloneRate: number;
  agentRate: number;
  ratio: number;
  connectPct: number;
  lowestConnectPct: number;
  acceptPct: number;
  closePct: number;
  lost: number;
  cpuUsPerConn: number;
  bpfUsPerConn: number;
  peakRssMiB: number;
  highestPeakRssMiB: number;
  /** medians over runs of each BPF program's run time per connection, µs, largest first */
  bpfPrograms: { name: string; usPerConn: number; runsPerConn: number }[];
}

function summarize(phase: Phase, who: Who = 'agent'): PhaseSummary {
  const baseline = aloneMedian(phase);
  const runs = phase.runs.filter((r) => r.who === who && r.measure);
  const all = runs.map((r) => stats(r, baseline)).filter((s): s is RunStats => s !== undefined);
  const med = (pick: (s: RunStats) => number): number => median(all.map(pick));
  const names = [...new Set(runs.flatMap((r) => r.measure!.bpfPrograms.map((p) => p.name)))];
  const perProgram = (name: string, pick: (p: ProgDelta) => number) =>
    median(runs.map((r) => r.measure!.bpfPrograms.filter((p) => p.name === name).reduce((a, p) => a + pick(p), 0) / Math.max(r.churn.connections, 1)));
  return {
    name: phase.name,
    rate: phase.rate,
    aloneRate: baseline,
    agentRate: med((s) => s.rate),
    ratio: med((s) => s.ratio),
    connectPct: med((s) => s.connectPct),
    lowestConnectPct: Math.min(...all.map((s) => s.connectPct)),
    acceptPct: med((s) => s.acceptPct),
    closePct: med((s) => s.closePct),
    lost: all.length ? all.reduce((sum, s) => sum + s.lost, 0) : NaN,
    cpuUsPerConn: med((s) => s.cpuUsPerConn),
    bpfUsPerConn: med((s) => s.bpfUsPerConn),
    peakRssMiB: med((s) => s.peakRssMiB),
    highestPeakRssMiB: Math.max(...all.map((s) => s.peakRssMiB)),
    bpfPrograms: names
      .map((name) => ({ name, usPerConn: perProgram(name, (p) => p.ns) / 1000, runsPerConn: perProgram(name, (p) => p.runs) }))
      .sort((a, b) => b.usPerConn - a.usPerConn),
  };
}

/**
 * How much lower tracer a's rate ratio is than tracer b's, judged within
 * each pair (both and the workload alone run back to back, so a VM that
 * drifts over minutes moves all three): the median over pairs of
 * (b's rate - a's rate) / that pair's rate alone.
 */
function pairedGap(phase: Phase, a: Who, b: Who): number {
  const diffs: number[] = [];
  const pairs = new Set(phase.runs.map((r) => r.pair));
  for (const pair of pairs) {
    const rate = (who: Who) => phase.runs.find((r) => r.pair === pair && r.who === who)?.churn.rate;
    const alone = rate('alone');
    const ra = rate(a);
    const rb = rate(b);
    if (alone && ra !== undefined && rb !== undefined) diffs.push((rb - ra) / alone);
  }
  return median(diffs);
}

interface Target {
  target: string;
  met: boolean;
  value: string;
}

interface Results {
  max: PhaseSummary;
  paced: PhaseSummary;
  baseline: { max: PhaseSummary; paced: PhaseSummary };
  /** median over max-churn pairs of (baseline rate - agent rate) / rate alone */
  baselineGap: number;
  /** the same over the paced pairs */
  baselineGapPaced: number;
  /** the same agent with `--sink metrics` only (what a fleet runs): no per-event output */
  metrics: { max: PhaseSummary; paced: PhaseSummary };
  /** median over max-churn pairs of (baseline rate - metrics-only agent rate) / rate alone */
  metricsGap: number;
  metricsGapPaced: number;
  compare?: { max: PhaseSummary; paced: PhaseSummary };
  /** median over max-churn pairs of (compare rate - agent rate) / rate alone */
  compareDrop: number;
  nginx: NginxSummary;
  bulk: BulkSummary;
}

/** The targets of the phases that ran. */
function targets(ran: Set<PhaseName>, r: Results, bpfStats: boolean): Target[] {
  const { max, paced, nginx, bulk } = r;
  const mmax = r.metrics.max;
  // both of this build's sink sets: each run must report every connection and lose nothing
  const churnRan = [
    ...(ran.has('max') ? [max, mmax] : []),
    ...(ran.has('paced') ? [paced, r.metrics.paced] : []),
  ];
  const lowest = Math.min(...churnRan.map((s) => s.lowestConnectPct));
  const lost = churnRan.reduce((a, s) => a + (Number.isFinite(s.lost) ? s.lost : 0), 0);
  const rssPeaks = [
    ...churnRan.map((s) => s.highestPeakRssMiB),
    ...(ran.has('nginx') ? [nginx.byWho.json?.highestPeakRssMiB ?? NaN, nginx.byWho.metrics?.highestPeakRssMiB ?? NaN] : []),
  ];
  const nj = nginx.byWho.json;
  const nm = nginx.byWho.metrics;
  const all: (Target & { needs: PhaseName[] })[] = [
    ...(r.compare
      ? [
          {
            needs: ['max' as const],
            target: `max-churn ratio at most ${TARGET_COMPARE_DROP.toFixed(2)} below the --compare build's (median of per-pair differences)`,
            met: r.compareDrop <= TARGET_COMPARE_DROP,
            value: `${r.compareDrop > 0 ? '-' : '+'}${fixed(Math.abs(r.compareDrop), 3)} (phase medians ${fixed(max.ratio, 3)} vs ${fixed(r.compare.max.ratio, 3)})`,
          },
        ]
      : []),
    { needs: ['bulk'], target: `bulk transfer rate ratio >= ${TARGET_BULK_RATIO.toFixed(2)}`, met: bulk.ratio >= TARGET_BULK_RATIO, value: `median ${fixed(bulk.ratio, 3)}` },
    {
      needs: ['bulk'],
      target: 'bulk transfer bytes reported exactly at close',
      met: bulk.runs > 0 && bulk.exact === bulk.runs,
      value: `${bulk.exact} of ${bulk.runs} complete runs${bulk.incomplete ? ` (${bulk.incomplete} where iperf3 ended early)` : ''}`,
    },
    ...(churnRan.length
      ? [
          { needs: [], target: '100% of connections reported (connect events), every churn run', met: lowest >= 100, value: `lowest ${percent(lowest)}` },
          { needs: [], target: '0 events lost in the churn phases', met: lost === 0, value: int(lost) },
        ]
      : []),
    // the max-churn cost targets, judged for each sink set apart
    ...([
      ['with --sink stdout,format=json', max, r.baselineGap],
      ['with --sink metrics only', mmax, r.metricsGap],
    ] as const).flatMap(([sinks, s, gap]) => [
      { needs: ['max' as const], target: `rate ratio >= ${TARGET_MAX_RATIO.toFixed(2)} at max churn, ${sinks}`, met: s.ratio >= TARGET_MAX_RATIO, value: `median ${fixed(s.ratio, 2)}` },
      {
        needs: ['max' as const],
        target: `max-churn ratio within ${TARGET_BASELINE_GAP.toFixed(2)} of the C baseline's (same run, median of per-pair differences), ${sinks}`,
        met: gap <= TARGET_BASELINE_GAP,
        value: `${fixed(Math.abs(gap), 3)} ${gap >= 0 ? 'below' : 'above'} it (phase medians ${fixed(s.ratio, 3)} vs ${fixed(r.baseline.max.ratio, 3)})`,
      },
      { needs: ['max' as const], target: `agent CPU <= ${TARGET_CPU_US} µs per connection at max churn, ${sinks}`, met: s.cpuUsPerConn <= TARGET_CPU_US, value: `median ${fixed(s.cpuUsPerConn, 2)} µs` },
      {
        needs: ['max' as const],
        target: `agent BPF time <= ${TARGET_BPF_US} µs per connection at max churn, ${sinks}`,
        met: bpfStats && s.bpfUsPerConn <= TARGET_BPF_US,
        value: bpfStats ? `median ${fixed(s.bpfUsPerConn, 2)} µs` : 'not measured (--no-bpf-stats)',
      },
    ]),
    ...(rssPeaks.length
      ? [{ needs: [], target: `agent peak RSS <= ${TARGET_RSS_MIB} MiB`, met: Math.max(...rssPeaks) <= TARGET_RSS_MIB, value: `highest ${fixed(Math.max(...rssPeaks), 1)} MiB` }]
      : []),
    { needs: ['paced'], target: `rate ratio 1.00 at paced ${int(PACED_RATE)}/s`, met: paced.ratio >= TARGET_PACED_RATIO, value: `median ${fixed(paced.ratio, 2)}` },
    { needs: ['nginx'], target: `nginx requests/s ratio >= ${TARGET_NGINX_RATIO.toFixed(2)} with --sink stdout,format=json`, met: (nj?.ratio ?? 0) >= TARGET_NGINX_RATIO, value: `median ${fixed(nj?.ratio ?? NaN, 3)}` },
    { needs: ['nginx'], target: `nginx requests/s ratio >= ${TARGET_NGINX_RATIO.toFixed(2)} with --sink metrics only`, met: (nm?.ratio ?? 0) >= TARGET_NGINX_RATIO, value: `median ${fixed(nm?.ratio ?? NaN, 3)}` },
    {
      needs: ['nginx'],
      target: 'nginx: accepts on its port in /metrics = connections nginx accepted, every metrics run; JSON runs report at least as many (host-wide)',
      met: nm?.lowestAcceptPct === 100 && nm.highestAcceptPct === 100 && (nj?.lowestAcceptPct ?? 0) >= 100,
      value: `metrics ${percent(nm?.lowestAcceptPct ?? NaN)}..${percent(nm?.highestAcceptPct ?? NaN)}, JSON lowest ${percent(nj?.lowestAcceptPct ?? NaN)}`,
    },
    ...(ran.has('nginx') ? [{ needs: [], target: '0 events lost in the nginx phase', met: (nj?.lost ?? 0) + (nm?.lost ?? 0) === 0, value: int((nj?.lost ?? 0) + (nm?.lost ?? 0)) }] : []),
  ];
  return all.filter((t) => t.needs.every((p) => ran.has(p))).map(({ needs: _needs, ...t }) => t);
}

function report(pairs: number, ran: Set<PhaseName>, r: Results, goals: Target[]): string {
  const { max, paced, bulk, nginx } = r;
  const sections: string[] = [];
  if (ran.has('max') || ran.has('paced')) {
    // a column per churn phase that ran; phase 0 is max churn, 1 paced
    const cols = ([['max', 0, 'max churn'], ['paced', 1, `paced ${int(PACED_RATE)}/s`]] as const).filter(([k]) => ran.has(k));
    const pick = <T,>(both: readonly [T, T]) => cols.map(([, i]) => both[i]);
    const line = (label: string, f: (s: PhaseSummary) => string, both: readonly [PhaseSummary, PhaseSummary] = [max, paced]): string[] => [label, ...pick(both).map(f)];
    const tracerLines = (who: string, both: readonly [PhaseSummary, PhaseSummary]) => [
      line(`${who}: rate ratio (with / alone)`, (s) => fixed(s.ratio, 2), both),
      line(`${who}: CPU per connection, µs`, (s) => fixed(s.cpuUsPerConn, 2), both),
      line(`${who}: BPF time per connection, µs`, (s) => fixed(s.bpfUsPerConn, 2), both),
      line(`${who}: peak RSS, MiB`, (s) => fixed(s.peakRssMiB, 1), both),
      line(`${who}: events lost (sum of runs)`, (s) => int(s.lost), both),
    ];
    sections.push(
      table([
        [`medians over ${plural(pairs, 'pair')}`, ...cols.map(([, , title]) => title)],
        line('workload alone, conn/s', (s) => int(s.aloneRate)),
        line('workload with the agent, conn/s', (s) => int(s.agentRate)),
        line('connections reported (connect / made)', (s) => percent(s.connectPct)),
        line('accept / made', (s) => percent(s.acceptPct)),
        line('close / 2 / made', (s) => percent(s.closePct)),
        ...tracerLines('agent', [max, paced]),
        ...tracerLines('agent, metrics only', [r.metrics.max, r.metrics.paced]),
        ...tracerLines('C baseline', [r.baseline.max, r.baseline.paced]),
        ['agent ratio below the C baseline\'s (median of per-pair differences)', ...pick([r.baselineGap, r.baselineGapPaced] as const).map((g) => fixed(g, 3))],
        ['the same, metrics only', ...pick([r.metricsGap, r.metricsGapPaced] as const).map((g) => fixed(g, 3))],
        ...(r.compare ? tracerLines('--compare build', [r.compare.max, r.compare.paced]) : []),
      ]),
    );
    if (ran.has('max') && max.bpfPrograms.length) {
      // programs that did not run during the workload (UDP, snapshot, ...) are left out
      const active = (p: { runsPerConn: number; usPerConn: number }) => p.runsPerConn >= 0.005 || p.usPerConn >= 0.0005;
      sections.push(
        table([
          ['max churn, BPF time per connection by program (medians), µs', 'runs/conn', 'µs/conn'],
          ...max.bpfPrograms.filter(active).map((p) => [`  agent ${p.name}`, fixed(p.runsPerConn, 2), fixed(p.usPerConn, 3)]),
          ...r.baseline.max.bpfPrograms.filter(active).map((p) => [`  C baseline ${p.name}`, fixed(p.runsPerConn, 2), fixed(p.usPerConn, 3)]),
        ]),
      );
    }
  }
  if (ran.has('nginx')) {
    const row = (label: string, f: (s: NonNullable<NginxSummary['byWho']['json']>) => string) => [
      label,
      ...(['json', 'metrics', 'baseline'] as const).map((w) => (nginx.byWho[w] ? f(nginx.byWho[w]!) : '-')),
    ];
    sections.push(
      table([
        [`nginx + ab, medians over ${plural(pairs, 'pair')} (alone: ${int(nginx.aloneRps)} req/s)`, 'agent JSON', 'agent metrics', 'C baseline'],
        row('requests/s ratio (with / alone)', (s) => fixed(s.ratio, 3)),
        row('accept events / connections accepted', (s) => percent(s.acceptPct)),
        row('events lost (sum of runs)', (s) => int(s.lost)),
        row('CPU per connection, µs', (s) => fixed(s.cpuUsPerConn, 2)),
        row('BPF time per connection, µs', (s) => fixed(s.bpfUsPerConn, 2)),
        row('peak RSS, MiB', (s) => fixed(s.peakRssMiB, 1)),
      ]),
    );
  }
  if (ran.has('bulk')) {
    sections.push(
      table([
        [`bulk transfer: ${int(BULK_BYTES / 2 ** 30)} GiB over one loopback connection (iperf3), medians`, ''],
        ['  alone, MB/s', int(bulk.aloneRate / 1e6)],
        ['  rate ratio with the agent', fixed(bulk.ratio, 3)],
        ...(r.compare ? [['  rate ratio with the --compare build', fixed(bulk.compareRatio, 3)]] : []),
        [`  runs whose close event had the exact bytes (iperf3's + its ${IPERF3_COOKIE_BYTES}-byte cookie)`, `${bulk.exact} of ${bulk.runs}`],
        ...(bulk.incomplete ? [['  runs in which iperf3 ended before moving all of it (not judged)', int(bulk.incomplete)]] : []),
      ]),
    );
  }
  const goalLines = goals.map((g) => `  ${g.met ? '[met]   ' : '[missed]'} ${g.target}: ${g.value}`).join('\n');
  sections.push(`targets:\n${goalLines}`);
  return sections.join('\n\n');
}

function stageReport(s: StageCosts): string {
  const ns = (x: number) => `${int(x)} ns`;
  return table([
    [`userspace ns per record (${int(s.records)} records, medians; each stage includes the ones above)`, ''],
    ['  decode', ns(s.decode)],
    ['  + process cache and enrichment', ns(s.enrich)],
    ['  + stdout JSON line', ns(s.json)],
    ['  + stdout text line (instead of JSON)', ns(s.text)],
  ]);
}

// ---- main ----

/** The short commit of the checkout an entry script is in (with "+changes" when its tree differs), or undefined. */
function commitOf(entry: string): string | undefined {
  try {
    const dir = dirname(entry);
    const commit = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${commit}+changes` : commit;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (the tracers load eBPF programs)\n');
    process.exit(1);
  }
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(opts.agent)) throw new Error(`no agent at ${opts.agent} (build convis first, or pass --agent PATH)`);
  if (opts.compare && !existsSync(opts.compare)) throw new Error(`no agent at ${opts.compare} (--compare)`);
  const churnPhases = (['max', 'paced'] as const).filter((p) => opts.phases.has(p)).length;
  if (opts.phases.has('nginx')) {
    requireTool('/usr/sbin/nginx', 'nginx');
    requireTool('/usr/bin/ab', 'apache2-utils');
  }
  if (opts.phases.has('bulk')) requireTool('/usr/bin/iperf3', 'iperf3');
  buildChurn();
  if (churnPhases || opts.phases.has('nginx')) buildMintrace();
  const bpfStats = opts.bpfStats && enableBpfStats();
  if (opts.bpfStats && !bpfStats) process.stderr.write('bench: could not turn kernel.bpf_stats_enabled on: BPF times will read 0\n');

  const agentSpec = convisSpec(opts.agent, ['stdout,format=json']);
  // port 0: the kernel picks a free one (nothing reads it in the churn phases)
  const metricsSpec = convisSpec(opts.agent, ['metrics,listen=127.0.0.1:0'], 'agent, metrics only');
  const churnTracers: [Who, TracerSpec][] = [
    ['agent', agentSpec],
    ['metrics', metricsSpec],
    ['baseline', baselineSpec],
    ...(opts.compare ? [['compare', convisSpec(opts.compare, ['stdout,format=json'], '--compare agent')] as [Who, TracerSpec]] : []),
  ];
  const runsTotal = opts.pairs * (churnPhases * (1 + churnTracers.length) + (opts.phases.has('nginx') ? 4 : 0));
  process.stdout.write(
    `convis bench: kernel ${release()}, ${cpus().length} CPUs; churn ${CLIENTS} clients + ${SERVERS} servers, ` +
      `${plural(opts.pairs, 'pair')} of ${opts.seconds} s per phase (${runsTotal} timed runs, about ${Math.ceil((runsTotal * (opts.seconds + 4)) / 60) + 1} min` +
      `${opts.phases.has('bulk') ? ' + bulk' : ''}${opts.phases.has('stages') ? ' + stages' : ''}${opts.phases.has('query') ? ' + query' : ''}); ` +
      `agent ${opts.agent}${opts.compare ? `, compared with ${opts.compare}` : ''}; C baseline ${baselineSpec.command}; ` +
      `BPF run time ${bpfStats ? 'measured (kernel.bpf_stats_enabled=1 for this run)' : 'not measured'}\n\n`,
  );

  const phases: Phase[] = [
    { key: 'max', name: 'max churn', rate: 0, runs: [] },
    { key: 'paced', name: `paced ${int(PACED_RATE)}/s`, rate: PACED_RATE, runs: [] },
  ];
  for (const phase of phases) {
    if (!opts.phases.has(phase.key)) continue;
    for (let pair = 1; pair <= opts.pairs; pair++) {
      const alone = await runChurn(phase.rate, opts.seconds);
      phase.runs.push({ pair, who: 'alone', churn: alone });
      process.stdout.write(`${phase.name}, pair ${pair}, alone: ${int(alone.rate)} conn/s, ${int(alone.failed)} failed\n`);
      await sleep(SETTLE_MS);

      // the tracers take turns at each place in a pair, so whatever the VM
      // does to the later runs of a pair falls on each alike
      for (const [who, spec] of rotate(churnTracers, pair)) {
        const { churn, measure } = await runWithTracer(spec, opts, phase.rate);
        phase.runs.push({ pair, who, churn, measure });
        const e = measure.summary.events;
        process.stdout.write(
          `${phase.name}, pair ${pair}, ${WHO_TEXT[who]}: ${int(churn.rate)} conn/s, ${int(churn.failed)} failed; ` +
            `made ${int(churn.connections)}, connect ${int(e.connect)}, accept ${int(e.accept)}, close ${int(e.close)}, lost ${int(measure.summary.lost)}` +
            `${measure.otherConnects ? `; ${int(measure.otherConnects)} other connects on the host` : ''}\n`,
        );
        await sleep(SETTLE_MS);
      }
    }
    process.stdout.write(`\n${phaseTable(phase)}\n\n`);
  }

  const nginxRuns: NginxRun[] = [];
  if (opts.phases.has('nginx')) {
    const nginx = await startNginx();
    try {
      const withTracer: Exclude<NginxWho, 'alone'>[] = ['json', 'metrics', 'baseline'];
      for (let pair = 1; pair <= opts.pairs; pair++) {
        const ab = await runAb(nginx.port, opts.seconds);
        nginxRuns.push({ pair, who: 'alone', ab, accepted: NaN });
        process.stdout.write(`nginx, pair ${pair}, alone: ${int(ab.rps)} req/s, ${int(ab.failed)} failed\n`);
        await sleep(SETTLE_MS);
        for (const who of rotate(withTracer, pair)) {
          const run = await runNginxWith(who, opts, nginx);
          run.pair = pair;
          nginxRuns.push(run);
          const e = run.measure.summary.events;
          process.stdout.write(
            `nginx, pair ${pair}, ${NGINX_WHO_TEXT[who]}: ${int(run.ab.rps)} req/s, ${int(run.ab.failed)} failed; nginx accepted ${int(run.accepted)}, ` +
              `${run.portAccepts !== undefined ? `accepts on its port in /metrics ${int(run.portAccepts)}, ` : ''}accept events ${int(e.accept)}, lost ${int(run.measure.summary.lost)}\n`,
          );
          await sleep(SETTLE_MS);
        }
      }
    } finally {
      await nginx.stop();
    }
    process.stdout.write(`\n${nginxTable(nginxRuns)}\n\n`);
  }

  const bulkRuns: BulkRun[] = [];
  const bulkAgents: [Who, string][] = [['agent', opts.agent], ...(opts.compare ? [['compare', opts.compare] as [Who, string]] : [])];
  // without kernel.bpf_stats_enabled: see withBpfStats()
  if (opts.phases.has('bulk')) await withBpfStats(false, () => bulkPhase(opts, bulkAgents, bulkRuns));

  const [maxPhase, pacedPhase] = phases as [Phase, Phase];
  const both = (who: Who) => ({ max: summarize(maxPhase, who), paced: summarize(pacedPhase, who) });
  const results: Results = {
    ...both('agent'),
    baseline: both('baseline'),
    baselineGap: pairedGap(maxPhase, 'agent', 'baseline'),
    baselineGapPaced: pairedGap(pacedPhase, 'agent', 'baseline'),
    metrics: both('metrics'),
    metricsGap: pairedGap(maxPhase, 'metrics', 'baseline'),
    metricsGapPaced: pairedGap(pacedPhase, 'metrics', 'baseline'),
    ...(opts.compare ? { compare: both('compare') } : {}),
    compareDrop: opts.compare ? pairedGap(maxPhase, 'agent', 'compare') : NaN,
    nginx: summarizeNginx(nginxRuns),
    bulk: summarizeBulk(bulkRuns),
  };
  const goals = targets(opts.phases, results, bpfStats);
  process.stdout.write(`${report(opts.pairs, opts.phases, results, goals)}\n`);

  let stages: StageCosts | undefined;
  if (opts.phases.has('stages')) {
    process.stdout.write('\nuserspace stages: capturing 1 s of records at 20,000 conn/s, replaying them in-process...\n');
    stages = await measureStages(CHURN_BIN);
    process.stdout.write(`${stageReport(stages)}\n`);
  }

  let queries: QueryCosts | undefined;
  if (opts.phases.has('query')) {
    process.stdout.write('\nflow log: writing a million connections, then timing convis query over them...\n');
    queries = await measureQueries();
    process.stdout.write(`${queryReport(queries)}\n`);
  }

  let bpftool = '';
  try {
    bpftool = execFileSync('bpftool', ['version'], { encoding: 'utf8' }).split('\n')[0] ?? '';
  } catch {
    // informational
  }
  writeFileSync(
    RESULTS,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        kernel: release(),
        cpus: cpus().length,
        options: { ...opts, phases: [...opts.phases], clients: CLIENTS, servers: SERVERS, pacedRate: PACED_RATE, drainMs: DRAIN_MS, abConcurrency: AB_CONCURRENCY },
        clockTicks,
        bpfStats,
        bpftool,
        agentCommit: commitOf(opts.agent),
        ...(opts.compare ? { compareCommit: commitOf(opts.compare) } : {}),
        phases: phases.map((p) => {
          const baseline = aloneMedian(p);
          return { ...p, aloneMedianRate: baseline, runs: p.runs.map((r) => ({ ...r, stats: stats(r, baseline) })) };
        }),
        nginxRuns: nginxRuns.map((r) => ({ ...r, stats: nginxStats(r, results.nginx.aloneRps) })),
        summary: results,
        bulkRuns,
        stages,
        queries,
        targets: goals,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`\nresults written to ${RESULTS}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
