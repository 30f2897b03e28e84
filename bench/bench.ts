/**
 * convis benchmark: what the agent costs a loopback connection-churn workload.
 *
 * Two phases, max churn and a paced 5,000 conn/s; each runs alternating pairs
 * of (workload alone, workload with the agent). The workload is bench/churn.c
 * (2 client + 2 server threads, 64-byte exchange). For every run with the
 * agent it records the connections the workload made against the events the
 * agent reported, events lost, the workload's rate relative to the median rate
 * without the agent, the agent's CPU time per 1,000 connections and its peak
 * RSS. A third phase moves 4 GiB over one loopback connection with iperf3
 * (from Debian), alone and with the agent, and checks that the agent reports
 * the connection's bytes exactly. With --compare PATH, every pair also runs
 * another build of the agent (e.g. a checkout of an earlier commit), so two
 * builds are measured in the same run; the two take turns at going first. Results are printed and written to
 * build/bench-results.json.
 *
 * Usage: node dist/bench/bench.js [--pairs N] [--seconds S] [--quick] [--agent PATH] [--compare PATH]
 *        [--phases max,paced,bulk,stages]
 * (or npm run bench -- ...). Must run as root: the agent loads eBPF programs.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { measureStages, type StageCosts } from './pipeline.js';
import { measureQueries, queryReport, type QueryCosts } from './flowlog.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CHURN_SRC = join(ROOT, 'bench', 'churn.c');
const CHURN_BIN = join(ROOT, 'build', 'churn');
const RESULTS = join(ROOT, 'build', 'bench-results.json');

const CLIENTS = 2;
const SERVERS = 2;
const PACED_RATE = 5000;
const READY_TIMEOUT_MS = 30_000;
/** time between the workload's end and SIGTERM, for the agent to drain */
const DRAIN_MS = 1000;
const STOP_TIMEOUT_MS = 15_000;
/** churn stops itself after --seconds plus at most 5 s; this is a backstop */
const CHURN_GRACE_MS = 15_000;
/** pause between runs so one run's softirq backlog does not spill into the next */
const SETTLE_MS = 1000;

/** Ratios of the workload rate kept at max churn by other tracers emitting one
 * record per closed socket, measured on this machine kind (2 vCPUs) with the
 * same workload, paired runs, medians. */
const REFERENCES: ReadonlyArray<{ name: string; ratio: number }> = [
  { name: 'minimal C libbpf ring-buffer consumer', ratio: 0.86 },
  { name: 'bpftrace', ratio: 0.39 },
  { name: 'BCC libbpf-tools tcplife', ratio: 0.37 },
];
const TARGET_MAX_RATIO = 0.75;
/** "1.00" at two decimals */
const TARGET_PACED_RATIO = 0.995;
/** the bulk transfer keeps this share of its throughput with the agent */
const TARGET_BULK_RATIO = 0.97;
/** bytes the bulk transfer moves over one connection */
const BULK_BYTES = 8 * 2 ** 30;
/** iperf3 also sends its 37-byte session cookie on the data connection (iperf.h COOKIE_SIZE) */
const IPERF3_COOKIE_BYTES = 37;
/** the largest drop in the max-churn ratio allowed against a --compare build */
const TARGET_COMPARE_DROP = 0.02;

const PHASES = ['max', 'paced', 'bulk', 'stages', 'query'] as const;
type PhaseName = (typeof PHASES)[number];

interface Options {
  pairs: number;
  seconds: number;
  agent: string;
  phases: Set<PhaseName>;
  /** another agent build, measured in the same pairs */
  compare?: string;
}

interface ChurnResult {
  connections: number;
  failed: number;
  seconds: number;
  rate: number;
}

interface Summary {
  events: { connect: number; accept: number; close: number; connect_failed: number; exec: number; exit: number; fork: number };
  lost: number;
}

interface AgentMeasure {
  summary: Summary;
  cpuMs: number;
  peakRssKiB: number;
  /** TCP connects in this network namespace from agent start to exit that
   * were not the workload's: the agent traces them too */
  otherConnects: number;
}

/** which agent a run had: none, this build, or the --compare one */
type Who = 'alone' | 'agent' | 'compare';

interface Run {
  pair: number;
  who: Who;
  churn: ChurnResult;
  /** only for runs with the agent */
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
  cpuMsPer1k: number;
  peakRssMiB: number;
}

// ---- children: every process started here is killed on any way out ----

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Tracked {
  child: ChildProcess;
  /** settles once the process has exited and its stdio is closed */
  closed: Promise<Exit>;
  /** set when closed settles */
  exit?: Exit;
}

const children = new Set<ChildProcess>();

function start(command: string, args: string[], options: SpawnOptions): Tracked {
  const child = spawn(command, args, options);
  children.add(child);
  const tracked: Tracked = {
    child,
    closed: new Promise((resolveClosed, rejectClosed) => {
      child.once('error', rejectClosed);
      child.once('close', (code, signal) => {
        children.delete(child);
        tracked.exit = { code, signal };
        resolveClosed(tracked.exit);
      });
    }),
  };
  return tracked;
}

function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

process.on('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping\n`);
    killChildren();
    process.exit(1);
  });
}

/** The promise's value, or undefined after timeoutMs. */
async function within<T>(promise: Promise<T>, timeoutMs: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolveTimeout) => (timer = setTimeout(() => resolveTimeout(undefined), timeoutMs)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- options ----

function parseOptions(argv: string[]): Options {
  const usage =
    'usage: bench [--pairs N] [--seconds S] [--quick] [--agent PATH] [--compare PATH] [--phases max,paced,bulk,stages,query]  (env: BENCH_PAIRS, BENCH_SECONDS)';
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
  return { pairs: Math.floor(pairs ?? (quick ? 2 : 3)), seconds: seconds ?? (quick ? 5 : 20), agent, phases, ...(compare ? { compare } : {}) };
}

// ---- the workload ----

function buildChurn(): void {
  mkdirSync(join(ROOT, 'build'), { recursive: true });
  try {
    execFileSync('gcc', ['-O2', '-Wall', '-pthread', '-o', CHURN_BIN, CHURN_SRC], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    throw new Error(`could not compile ${CHURN_SRC}: ${(err as Error).message}`);
  }
}

async function runChurn(rate: number, seconds: number): Promise<ChurnResult> {
  const args = ['--clients', String(CLIENTS), '--servers', String(SERVERS), '--seconds', String(seconds), '--rate', String(rate)];
  const { child, closed } = start(CHURN_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exit = await within(closed, seconds * 1000 + CHURN_GRACE_MS);
  if (!exit) {
    child.kill('SIGKILL');
    throw new Error(`churn did not finish within ${seconds} s + ${CHURN_GRACE_MS / 1000} s`);
  }
  if (exit.code !== 0) throw new Error(`churn failed (${exit.signal ?? `exit ${exit.code}`}): ${err.trim()}`);
  let result: ChurnResult | undefined;
  try {
    result = JSON.parse(out.trim().split('\n').pop() ?? '') as ChurnResult;
  } catch {
    // reported below
  }
  if (!result || ![result.connections, result.failed, result.seconds, result.rate].every(Number.isFinite)) {
    throw new Error(`unexpected churn output: ${out.trim() || '(none)'}`);
  }
  if (err.trim()) process.stderr.write(`${err.trim()}\n`);
  return result;
}

// ---- the agent ----

const clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process, in ms */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // fields after "pid (comm) ": the comm may hold spaces and parentheses
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line; fields[0] is field 3
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
}

/** TCP ActiveOpens (connect() calls that sent a SYN) in this network namespace */
function activeOpens(): number {
  const [names, values] = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Tcp:'))
    .map((l) => l.trim().split(/\s+/));
  const value = Number(values?.[names?.indexOf('ActiveOpens') ?? -1]);
  if (!Number.isFinite(value)) throw new Error('no Tcp ActiveOpens in /proc/net/snmp');
  return value;
}

function peakRssKiB(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match?.[1]) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(match[1]);
}

class Agent {
  private readonly proc: Tracked;
  /** the last lines of the agent's stderr, to explain a failure */
  private readonly tail: string[] = [];
  private summary: Summary | undefined;
  private readonly ready: Promise<void>;

  /** `out`: where its JSON lines go (default /dev/null) */
  constructor(entry: string, out = '/dev/null') {
    const fd = openSync(out, 'w');
    try {
      this.proc = start(process.execPath, [entry, '--sink', 'stdout,format=json'], { cwd: ROOT, stdio: ['ignore', fd, 'pipe'] });
    } finally {
      closeSync(fd);
    }
    let resolveReady: () => void = () => undefined;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    createInterface({ input: this.proc.child.stderr! }).on('line', (line) => {
      this.tail.push(line);
      if (this.tail.length > 20) this.tail.shift();
      if (line.includes('convis: ready')) resolveReady();
      const match = /convis: summary (\{.*\})\s*$/.exec(line);
      if (match?.[1]) {
        try {
          this.summary = JSON.parse(match[1]) as Summary;
        } catch {
          // stop() reports the missing summary, with this line in the tail
        }
      }
    });
  }

  private failure(what: string): Error {
    const tail = this.tail.length ? `; its stderr ended with:\n  ${this.tail.join('\n  ')}` : '';
    return new Error(`agent ${what}${tail}`);
  }

  private exitText(exit: Exit): string {
    return exit.signal ?? `code ${exit.code}`;
  }

  async waitReady(): Promise<void> {
    const first = await within(Promise.race([this.ready.then(() => 'ready' as const), this.proc.closed]), READY_TIMEOUT_MS);
    if (first === undefined) throw this.failure(`not ready within ${READY_TIMEOUT_MS / 1000} s`);
    if (first !== 'ready') throw this.failure(`exited (${this.exitText(first)}) before it was ready`);
  }

  /** The pid of the running agent; throws if it has died. */
  livePid(): number {
    const { child, exit } = this.proc;
    if (exit) throw this.failure(`exited (${this.exitText(exit)}) during the run`);
    if (child.pid === undefined) throw new Error('agent has no pid');
    return child.pid;
  }

  /** SIGTERM, then the summary the agent prints on its way out. */
  async stop(): Promise<Summary> {
    this.proc.child.kill('SIGTERM');
    const exit = await within(this.proc.closed, STOP_TIMEOUT_MS);
    if (!exit) {
      this.proc.child.kill('SIGKILL');
      throw this.failure(`did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM`);
    }
    const s = this.summary;
    if (!s) throw this.failure(`exited (${this.exitText(exit)}) without a "convis: summary" line`);
    if (![s.events?.connect, s.events?.accept, s.events?.close, s.lost].every(Number.isFinite)) {
      throw this.failure(`printed an unexpected summary: ${JSON.stringify(s)}`);
    }
    return s;
  }
}

async function runWithAgent(entry: string, opts: Options, rate: number): Promise<{ churn: ChurnResult; measure: AgentMeasure }> {
  const opensBefore = activeOpens();
  const agent = new Agent(entry);
  await agent.waitReady();
  const cpuAtReady = cpuMs(agent.livePid());
  const churn = await runChurn(rate, opts.seconds);
  await sleep(DRAIN_MS);
  const pid = agent.livePid();
  const cpu = cpuMs(pid) - cpuAtReady;
  const peak = peakRssKiB(pid);
  const summary = await agent.stop();
  const otherConnects = Math.max(0, activeOpens() - opensBefore - churn.connections - churn.failed);
  return { churn, measure: { summary, cpuMs: cpu, peakRssKiB: peak, otherConnects } };
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
  const agent = new Agent(entry, out);
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
  const ratio = (who: Who) => median(runs.filter((r) => r.who === who).map((r) => r.bulk.rate / alone));
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
    cpuMsPer1k: made > 0 ? m.cpuMs / (made / 1000) : NaN,
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
  const rows = [['run', 'made', 'failed', 'other', 'conn/s', 'ratio', 'connect', 'accept', 'close/2', 'lost', 'CPU ms/1k conn', 'peak RSS MiB']];
  for (const run of phase.runs) {
    const s = stats(run, baseline);
    rows.push([
      `pair ${run.pair} ${run.who === 'alone' ? 'alone' : run.who === 'agent' ? 'with agent' : 'with --compare agent'}`,
      int(run.churn.connections),
      int(run.churn.failed),
      s ? int(s.otherConnects) : '',
      int(run.churn.rate),
      s ? fixed(s.ratio, 2) : '',
      s ? percent(s.connectPct) : '',
      s ? percent(s.acceptPct) : '',
      s ? percent(s.closePct) : '',
      s ? int(s.lost) : '',
      s ? fixed(s.cpuMsPer1k, 1) : '',
      s ? fixed(s.peakRssMiB, 1) : '',
    ]);
  }
  const legend =
    `${phase.name}: ratio = rate with the agent / median rate alone (${int(baseline)} conn/s); ` +
    'connect, accept and close/2 are agent events per connection made; ' +
    'other = connects on the host not made by the workload (the agent counts them too, inflating connect, accept and close)';
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
  cpuMsPer1k: number;
  peakRssMiB: number;
}

function summarize(phase: Phase, who: Who = 'agent'): PhaseSummary {
  const baseline = aloneMedian(phase);
  const all = phase.runs
    .filter((r) => r.who === who)
    .map((r) => stats(r, baseline))
    .filter((s): s is RunStats => s !== undefined);
  const med = (pick: (s: RunStats) => number): number => median(all.map(pick));
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
    lost: all.reduce((sum, s) => sum + s.lost, 0),
    cpuMsPer1k: med((s) => s.cpuMsPer1k),
    peakRssMiB: med((s) => s.peakRssMiB),
  };
}

/**
 * How much lower this build's rate ratio is than the --compare build's,
 * judged within each pair (the two agents and the workload alone run back
 * to back, so a VM that drifts over minutes moves all three): the median
 * over pairs of (compare rate - agent rate) / that pair's rate alone.
 */
function pairedDrop(phase: Phase): number {
  const diffs: number[] = [];
  const pairs = new Set(phase.runs.map((r) => r.pair));
  for (const pair of pairs) {
    const rate = (who: Who) => phase.runs.find((r) => r.pair === pair && r.who === who)?.churn.rate;
    const alone = rate('alone');
    const agent = rate('agent');
    const compare = rate('compare');
    if (alone && agent !== undefined && compare !== undefined) diffs.push((compare - agent) / alone);
  }
  return median(diffs);
}

interface Target {
  target: string;
  met: boolean;
  value: string;
}

/** The targets of the phases that ran. */
function targets(
  ran: Set<PhaseName>,
  max: PhaseSummary,
  paced: PhaseSummary,
  bulk: BulkSummary,
  compareMax: PhaseSummary | undefined,
  drop: number,
): Target[] {
  const churnRan = [ran.has('max') ? max : undefined, ran.has('paced') ? paced : undefined].filter((x): x is PhaseSummary => x !== undefined);
  const lowest = Math.min(...churnRan.map((s) => s.lowestConnectPct));
  const lost = churnRan.reduce((a, s) => a + s.lost, 0);
  const all: (Target & { needs: PhaseName[] })[] = [
    ...(compareMax
      ? [
          {
            needs: ['max' as const],
            target: `max-churn ratio at most ${TARGET_COMPARE_DROP.toFixed(2)} below the --compare build's (median of per-pair differences)`,
            met: drop <= TARGET_COMPARE_DROP,
            value: `${drop > 0 ? '-' : '+'}${fixed(Math.abs(drop), 3)} (phase medians ${fixed(max.ratio, 3)} vs ${fixed(compareMax.ratio, 3)})`,
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
    { needs: ['max'], target: `rate ratio >= ${TARGET_MAX_RATIO.toFixed(2)} at max churn`, met: max.ratio >= TARGET_MAX_RATIO, value: `median ${fixed(max.ratio, 2)}` },
    { needs: ['paced'], target: `rate ratio 1.00 at paced ${int(PACED_RATE)}/s`, met: paced.ratio >= TARGET_PACED_RATIO, value: `median ${fixed(paced.ratio, 2)}` },
  ];
  return all.filter((t) => t.needs.every((p) => ran.has(p))).map(({ needs: _needs, ...t }) => t);
}

function report(pairs: number, max: PhaseSummary, paced: PhaseSummary, bulk: BulkSummary, compare: { max: PhaseSummary; paced: PhaseSummary } | undefined, goals: Target[]): string {
  const line = (label: string, f: (s: PhaseSummary) => string): string[] => [label, f(max), f(paced)];
  const compareLines = compare
    ? [
        ['rate ratio, --compare build', fixed(compare.max.ratio, 2), fixed(compare.paced.ratio, 2)],
        ['--compare build CPU per 1,000 connections, ms', fixed(compare.max.cpuMsPer1k, 1), fixed(compare.paced.cpuMsPer1k, 1)],
        ['--compare build peak RSS, MiB', fixed(compare.max.peakRssMiB, 1), fixed(compare.paced.peakRssMiB, 1)],
      ]
    : [];
  const bulkTable = table([
    [`bulk transfer: ${int(BULK_BYTES / 2 ** 30)} GiB over one loopback connection (iperf3), medians`, ''],
    ['  alone, MB/s', int(bulk.aloneRate / 1e6)],
    ['  rate ratio with the agent', fixed(bulk.ratio, 3)],
    ...(compare ? [['  rate ratio with the --compare build', fixed(bulk.compareRatio, 3)]] : []),
    [`  runs whose close event had the exact bytes (iperf3's + its ${IPERF3_COOKIE_BYTES}-byte cookie)`, `${bulk.exact} of ${bulk.runs}`],
    ...(bulk.incomplete ? [['  runs in which iperf3 ended before moving all of it (not judged)', int(bulk.incomplete)]] : []),
  ]);
  const summary = table([
    [`medians over ${plural(pairs, 'pair')}`, 'max churn', `paced ${int(PACED_RATE)}/s`],
    line('workload alone, conn/s', (s) => int(s.aloneRate)),
    line('workload with the agent, conn/s', (s) => int(s.agentRate)),
    line('rate ratio (with / alone)', (s) => fixed(s.ratio, 2)),
    line('connections reported (connect / made)', (s) => percent(s.connectPct)),
    line('accept / made', (s) => percent(s.acceptPct)),
    line('close / 2 / made', (s) => percent(s.closePct)),
    line('events lost (sum of runs)', (s) => int(s.lost)),
    line('agent CPU per 1,000 connections, ms', (s) => fixed(s.cpuMsPer1k, 1)),
    line('agent peak RSS, MiB', (s) => fixed(s.peakRssMiB, 1)),
    ...compareLines,
  ]);
  const refs = table([
    ['rate ratio at max churn (paired runs, medians)', ''],
    ...REFERENCES.map((r) => [`  ${r.name}`, r.ratio.toFixed(2)]),
    ['  convis (this run)', fixed(max.ratio, 2)],
  ]);
  const goalLines = goals.map((g) => `  ${g.met ? '[met]   ' : '[missed]'} ${g.target}: ${g.value}`).join('\n');
  return `${summary}\n\n${bulkTable}\n\n${refs}\n\ntargets:\n${goalLines}`;
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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (the agent loads eBPF programs)\n');
    process.exit(1);
  }
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(opts.agent)) throw new Error(`no agent at ${opts.agent} (build convis first, or pass --agent PATH)`);
  if (opts.compare && !existsSync(opts.compare)) throw new Error(`no agent at ${opts.compare} (--compare)`);
  buildChurn();
  const agents: [Who, string][] = [['agent', opts.agent], ...(opts.compare ? [['compare', opts.compare] as [Who, string]] : [])];
  const churnPhases = ['max', 'paced'].filter((p) => opts.phases.has(p as PhaseName)).length;
  const runsTotal = opts.pairs * churnPhases * (1 + agents.length);
  process.stdout.write(
    `convis bench: kernel ${release()}, ${cpus().length} CPUs; churn ${CLIENTS} clients + ${SERVERS} servers, ` +
      `${plural(opts.pairs, 'pair')} of ${opts.seconds} s per phase (${runsTotal} runs, about ${Math.ceil((runsTotal * (opts.seconds + 3)) / 60) + 1} min); ` +
      `agent ${opts.agent}${opts.compare ? `, compared with ${opts.compare}` : ''}\n\n`,
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

      // the two agents swap places every other pair, so whatever the VM
      // does to the second run of a pair falls on each build alike
      for (const [who, entry] of pair % 2 === 0 ? [...agents].reverse() : agents) {
        const { churn, measure } = await runWithAgent(entry, opts, phase.rate);
        phase.runs.push({ pair, who, churn, measure });
        const e = measure.summary.events;
        process.stdout.write(
          `${phase.name}, pair ${pair}, with ${who === 'agent' ? 'agent' : '--compare agent'}: ${int(churn.rate)} conn/s, ${int(churn.failed)} failed; ` +
            `made ${int(churn.connections)}, connect ${int(e.connect)}, accept ${int(e.accept)}, close ${int(e.close)}, lost ${int(measure.summary.lost)}` +
            `${measure.otherConnects ? `; ${int(measure.otherConnects)} other connects on the host` : ''}\n`,
        );
        await sleep(SETTLE_MS);
      }
    }
    process.stdout.write(`\n${phaseTable(phase)}\n\n`);
  }

  const bulkRuns: BulkRun[] = [];
  for (let pair = 1; opts.phases.has('bulk') && pair <= opts.pairs; pair++) {
    const alone = await runBulk();
    bulkRuns.push({ pair, who: 'alone', bulk: alone });
    process.stdout.write(`bulk, pair ${pair}, alone: ${int(alone.rate / 1e6)} MB/s\n`);
    await sleep(SETTLE_MS);
    for (const [who, entry] of pair % 2 === 0 ? [...agents].reverse() : agents) {
      const r = await runBulkWithAgent(entry);
      bulkRuns.push({ pair, who, ...r });
      process.stdout.write(
        `bulk, pair ${pair}, with ${who === 'agent' ? 'agent' : '--compare agent'}: ${int(r.bulk.rate / 1e6)} MB/s; ` +
          `iperf3 moved ${int(r.bulk.bytes)} bytes, the agent's close says ${r.reported === undefined ? 'nothing' : int(r.reported)}\n`,
      );
      await sleep(SETTLE_MS);
    }
  }
  const bulk = summarizeBulk(bulkRuns);

  const [max, paced] = phases.map((p) => summarize(p)) as [PhaseSummary, PhaseSummary];
  const compare = opts.compare ? { max: summarize(phases[0]!, 'compare'), paced: summarize(phases[1]!, 'compare') } : undefined;
  const drop = opts.compare ? pairedDrop(phases[0]!) : NaN;
  const goals = targets(opts.phases, max, paced, bulk, compare?.max, drop);
  process.stdout.write(`${report(opts.pairs, max, paced, bulk, compare, goals)}\n`);

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

  writeFileSync(
    RESULTS,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        kernel: release(),
        cpus: cpus().length,
        options: { ...opts, phases: [...opts.phases], clients: CLIENTS, servers: SERVERS, pacedRate: PACED_RATE, drainMs: DRAIN_MS },
        clockTicks,
        phases: phases.map((p) => {
          const baseline = aloneMedian(p);
          return { ...p, aloneMedianRate: baseline, runs: p.runs.map((r) => ({ ...r, stats: stats(r, baseline) })) };
        }),
        summary: { max, paced, bulk, ...(compare ? { compare, pairedDrop: drop } : {}) },
        bulkRuns,
        stages,
        queries,
        references: REFERENCES,
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
    killChildren();
    process.exit(1);
  },
);
