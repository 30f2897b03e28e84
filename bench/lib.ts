/**
 * What the benchmark (bench.ts) and the soak (soak.ts) share: the child
 * processes they start (all killed on any way out), the churn workload, the
 * tracers under test (convis with some sinks, or the C baseline
 * bench/mintrace), compiling the C pieces at run time, and reading a
 * process's CPU time, memory and BPF run time from /proc.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BUILD = join(ROOT, 'build');
const CHURN_SRC = join(ROOT, 'bench', 'churn.c');
export const CHURN_BIN = join(BUILD, 'churn');
const MINTRACE_BPF_SRC = join(ROOT, 'bench', 'mintrace.bpf.c');
const MINTRACE_SRC = join(ROOT, 'bench', 'mintrace.c');
export const MINTRACE_BIN = join(BUILD, 'mintrace');

export const CLIENTS = 2;
export const SERVERS = 2;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
/** churn stops itself after --seconds plus at most 5 s; this is a backstop */
const CHURN_GRACE_MS = 15_000;

// ---- children: every process started here is killed on any way out ----

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Tracked {
  child: ChildProcess;
  /** settles once the process has exited and its stdio is closed */
  closed: Promise<Exit>;
  /** set when closed settles */
  exit?: Exit;
}

const children = new Set<ChildProcess>();
/** run at exit, after the children are killed (e.g. restoring a sysctl) */
const exitHooks: (() => void)[] = [];

export function start(command: string, args: string[], options: SpawnOptions): Tracked {
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

export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

/** fn runs once when the process exits, whichever way (errors in it are ignored). */
export function onExit(fn: () => void): void {
  exitHooks.push(fn);
}

process.on('exit', () => {
  killChildren();
  for (const fn of exitHooks.splice(0)) {
    try {
      fn();
    } catch {
      // best effort on the way out
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`${signal}, stopping\n`);
    process.exit(1);
  });
}

/** The promise's value, or undefined after timeoutMs. */
export async function within<T>(promise: Promise<T>, timeoutMs: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolveTimeout) => (timer = setTimeout(() => resolveTimeout(undefined), timeoutMs)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port that was free a moment ago on 127.0.0.1 (the tests' helper; the bench already uses their servers). */
export { freePort } from '../test/helpers/prometheus.js';

// ---- compiled at run time ----

function compile(what: string, command: string, args: string[]): void {
  try {
    execFileSync(command, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    throw new Error(`could not build ${what} (${command}): ${(err as Error).message}`);
  }
}

export function buildChurn(): void {
  mkdirSync(BUILD, { recursive: true });
  compile(CHURN_SRC, 'gcc', ['-O2', '-Wall', '-pthread', '-o', CHURN_BIN, CHURN_SRC]);
}

/**
 * The C baseline tracer, built as convis's own object is (scripts/build.sh):
 * the same clang flags against the same build/vmlinux.h, a bpftool
 * skeleton, linked with the system libbpf.
 */
export function buildMintrace(): void {
  if (!existsSync(join(BUILD, 'vmlinux.h'))) throw new Error('no build/vmlinux.h: build convis first (npm run build)');
  const obj = join(BUILD, 'mintrace.bpf.o');
  compile(MINTRACE_BPF_SRC, 'clang', [
    '-g', '-O2', '-target', 'bpf', '-mcpu=v3', '-D__TARGET_ARCH_x86',
    '-Wall', '-Werror', '-Wno-unused-function',
    `-I${BUILD}`, '-c', MINTRACE_BPF_SRC, '-o', obj,
  ]);
  compile(obj, 'llvm-strip', ['-g', obj]);
  let skel: string;
  try {
    skel = execFileSync('bpftool', ['gen', 'skeleton', obj, 'name', 'mintrace_bpf'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    throw new Error(`could not generate the skeleton of ${obj}: ${(err as Error).message}`);
  }
  writeFileSync(join(BUILD, 'mintrace.skel.h'), skel);
  compile(MINTRACE_SRC, 'gcc', ['-O2', '-Wall', `-I${BUILD}`, '-o', MINTRACE_BIN, MINTRACE_SRC, '-lbpf']);
}

// ---- the workload ----

export interface ChurnResult {
  connections: number;
  failed: number;
  seconds: number;
  rate: number;
}

export async function runChurn(rate: number, seconds: number, port = 0, threads = { clients: CLIENTS, servers: SERVERS }): Promise<ChurnResult> {
  const args = ['--clients', String(threads.clients), '--servers', String(threads.servers), '--seconds', String(seconds), '--rate', String(rate), '--port', String(port)];
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

// ---- /proc ----

export const clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process, in ms */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // fields after "pid (comm) ": the comm may hold spaces and parentheses
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line; fields[0] is field 3
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
}

function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS' | 'RssAnon' | 'RssFile'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match?.[1]) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]);
}

/** peak resident set size so far (VmHWM) */
export const peakRssKiB = (pid: number): number => statusKiB(pid, 'VmHWM');
/** resident set size now (VmRSS) */
export const rssKiB = (pid: number): number => statusKiB(pid, 'VmRSS');

/**
 * Resident memory now by kind: anonymous (heaps), file-backed or
 * kernel-mapped (binaries, libraries, BPF maps), and of that the BPF maps
 * the process has mapped (the ring buffer; the consumer maps its data pages
 * twice, and each mapping counts).
 */
export function rssParts(pid: number): { anonKiB: number; fileKiB: number; ringKiB: number } {
  let ringKiB = 0;
  let inMap = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inMap = line.includes('anon_inode:bpf-map');
    else if (inMap && line.startsWith('Rss:')) ringKiB += Number(line.split(/\s+/)[1]);
  }
  return { anonKiB: statusKiB(pid, 'RssAnon'), fileKiB: statusKiB(pid, 'RssFile'), ringKiB };
}

/** A counter of the Tcp: lines of /proc/net/snmp (this network namespace). */
export function tcpCounter(name: 'ActiveOpens' | 'PassiveOpens' | 'RetransSegs'): number {
  const [names, values] = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Tcp:'))
    .map((l) => l.trim().split(/\s+/));
  const value = Number(values?.[names?.indexOf(name) ?? -1]);
  if (!Number.isFinite(value)) throw new Error(`no Tcp ${name} in /proc/net/snmp`);
  return value;
}

/** The sum of the samples of one family in a /metrics text whose labels include all of `labels`. */
export function metricSum(text: string, family: string, labels: Record<string, string>): number {
  let sum = 0;
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${family}{`)) continue;
    const close = line.lastIndexOf('}');
    const labelText = line.slice(family.length + 1, close);
    if (want.every((w) => labelText.split(/,(?=[a-z_]+=")/).includes(w))) sum += Number(line.slice(close + 1).trim());
  }
  return sum;
}

// ---- BPF run time ----

const BPF_STATS = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Turns kernel.bpf_stats_enabled on (the kernel then keeps run_time_ns and
 * run_cnt per program) and puts the old value back when this process exits,
 * whichever way. The kernel then reads the clock twice per program run, a
 * cost every traced run pays alike. Returns false when it cannot.
 */
export function enableBpfStats(): boolean {
  let old: string;
  try {
    old = readFileSync(BPF_STATS, 'utf8').trim();
    if (old !== '1') writeFileSync(BPF_STATS, '1\n');
  } catch {
    return false;
  }
  if (old !== '1') onExit(() => writeFileSync(BPF_STATS, `${old}\n`));
  return true;
}

/**
 * Sets kernel.bpf_stats_enabled to `on` for the duration of `fn` and puts
 * back what it was. The bulk phase turns it off: it reports no BPF time, and
 * the two clock reads the kernel adds to every program run are then a cost
 * of the instrument, not of the agent, paid per sendmsg and recvmsg by a
 * build with hooks there and not by one without.
 */
export async function withBpfStats<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
  let old: string;
  try {
    old = readFileSync(BPF_STATS, 'utf8').trim();
  } catch {
    return fn();
  }
  const want = on ? '1' : '0';
  if (old === want) return fn();
  writeFileSync(BPF_STATS, `${want}\n`);
  try {
    return await fn();
  } finally {
    writeFileSync(BPF_STATS, `${old}\n`);
  }
}

export interface ProgTime {
  /** run_time_ns: time spent running the program, all CPUs */
  ns: number;
  /** run_cnt */
  runs: number;
}

/**
 * run_time_ns and run_cnt of every BPF program a process holds a file
 * descriptor of (libbpf keeps one per loaded program), by program id, from
 * /proc/<pid>/fdinfo. All zeros unless kernel.bpf_stats_enabled is on.
 */
export function bpfProgTimes(pid: number): Map<number, ProgTime> {
  const out = new Map<number, ProgTime>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf-prog') continue;
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const id = /^prog_id:\s+(\d+)$/m.exec(info)?.[1];
      const ns = /^run_time_ns:\s+(\d+)$/m.exec(info)?.[1];
      const runs = /^run_cnt:\s+(\d+)$/m.exec(info)?.[1];
      if (id && ns) out.set(Number(id), { ns: Number(ns), runs: Number(runs ?? 0) });
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

export interface ProgDelta extends ProgTime {
  id: number;
  name: string;
}

/** What each program ran between two bpfProgTimes() readings, with its name (from bpftool), largest first. */
export function bpfProgDeltas(before: Map<number, ProgTime>, after: Map<number, ProgTime>): ProgDelta[] {
  const names = new Map<number, string>();
  try {
    const list = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { id: number; name?: string }[];
    for (const p of list) names.set(p.id, p.name ?? `id ${p.id}`);
  } catch {
    // names are a convenience
  }
  const out: ProgDelta[] = [];
  for (const [id, a] of after) {
    const b = before.get(id) ?? { ns: 0, runs: 0 };
    out.push({ id, name: names.get(id) ?? `id ${id}`, ns: a.ns - b.ns, runs: a.runs - b.runs });
  }
  return out.sort((x, y) => y.ns - x.ns);
}

// ---- the tracers under test ----

/** What the tracer reported when it stopped: convis's summary line, or the C baseline's JSON. */
export interface Summary {
  events: { connect: number; accept: number; close: number; connect_failed?: number; exec: number; exit: number; fork: number };
  lost: number;
  [key: string]: unknown;
}

export interface TracerSpec {
  /** for messages, e.g. "agent" or "C baseline" */
  label: string;
  kind: 'convis' | 'mintrace';
  command: string;
  args: string[];
  /** environment variables set for it (on top of the bench's own) */
  env?: Record<string, string>;
}

const firstLine = (file: string): string => readFileSync(file, 'utf8').split('\n', 1)[0] ?? '';

/**
 * The Node flags an entry script's own first line gives it
 * (`#!/usr/bin/env -S node --flag ...`): each agent is measured as it runs
 * when started as `bin/convis`, even when built from another commit.
 */
export function shebangNodeFlags(entry: string): string[] {
  const m = /^#!.*\bnode((?:\s+--[\w-]+(?:=\S+)?)*)\s*$/.exec(firstLine(entry));
  return m?.[1]?.trim() ? m[1].trim().split(/\s+/) : [];
}

/** The variables an entry script's first line sets before node (`#!/usr/bin/env -S NAME=VALUE node ...`). */
export function shebangEnv(entry: string): Record<string, string> {
  const m = /^#!\S*\benv\s+-S\s+((?:[A-Za-z_]\w*=\S*\s+)*)node\b/.exec(firstLine(entry));
  const env: Record<string, string> = {};
  for (const pair of m?.[1]?.trim().split(/\s+/).filter(Boolean) ?? []) {
    const eq = pair.indexOf('=');
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** convis from an entry script, with these --sink specs */
export function convisSpec(entry: string, sinks: string[], label = 'agent'): TracerSpec {
  return { label, kind: 'convis', command: process.execPath, args: [...shebangNodeFlags(entry), entry, ...sinks.flatMap((s) => ['--sink', s])], env: shebangEnv(entry) };
}

export const baselineSpec: TracerSpec = { label: 'C baseline', kind: 'mintrace', command: MINTRACE_BIN, args: [] };

/**
 * A running tracer. convis writes its events to `out` (default /dev/null)
 * and says "convis: ready" and "convis: summary {...}" on stderr; the C
 * baseline says "mintrace: ready" on stderr and prints its summary as one
 * JSON line on stdout.
 */
export class Agent {
  readonly spec: TracerSpec;
  private readonly proc: Tracked;
  /** the last lines of the tracer's stderr, to explain a failure */
  private readonly tail: string[] = [];
  private summary: Summary | undefined;
  private stdout = '';
  private readonly ready: Promise<void>;

  constructor(spec: TracerSpec, out = '/dev/null', env?: NodeJS.ProcessEnv) {
    this.spec = spec;
    if (spec.kind === 'convis') {
      const fd = openSync(out, 'w');
      try {
        this.proc = start(spec.command, spec.args, { cwd: ROOT, stdio: ['ignore', fd, 'pipe'], env: { ...(env ?? process.env), ...spec.env } });
      } finally {
        closeSync(fd);
      }
    } else {
      this.proc = start(spec.command, spec.args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      this.proc.child.stdout?.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    }
    const readyText = spec.kind === 'convis' ? 'convis: ready' : 'mintrace: ready';
    let resolveReady: () => void = () => undefined;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    createInterface({ input: this.proc.child.stderr! }).on('line', (line) => {
      this.tail.push(line);
      if (this.tail.length > 20) this.tail.shift();
      if (line.includes(readyText)) resolveReady();
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

  /** the last lines of its stderr */
  stderrTail(): string[] {
    return [...this.tail];
  }

  private failure(what: string): Error {
    const tail = this.tail.length ? `; its stderr ended with:\n  ${this.tail.join('\n  ')}` : '';
    return new Error(`${this.spec.label} ${what}${tail}`);
  }

  private exitText(exit: Exit): string {
    return exit.signal ?? `code ${exit.code}`;
  }

  async waitReady(): Promise<void> {
    const first = await within(Promise.race([this.ready.then(() => 'ready' as const), this.proc.closed]), READY_TIMEOUT_MS);
    if (first === undefined) throw this.failure(`not ready within ${READY_TIMEOUT_MS / 1000} s`);
    if (first !== 'ready') throw this.failure(`exited (${this.exitText(first)}) before it was ready`);
  }

  /** The pid of the running tracer; throws if it has died. */
  livePid(): number {
    const { child, exit } = this.proc;
    if (exit) throw this.failure(`exited (${this.exitText(exit)}) during the run`);
    if (child.pid === undefined) throw new Error(`${this.spec.label} has no pid`);
    return child.pid;
  }

  /** SIGTERM, then the summary it prints on its way out. */
  async stop(timeoutMs = STOP_TIMEOUT_MS): Promise<Summary> {
    this.proc.child.kill('SIGTERM');
    const exit = await within(this.proc.closed, timeoutMs);
    if (!exit) {
      this.proc.child.kill('SIGKILL');
      throw this.failure(`did not exit within ${timeoutMs / 1000} s of SIGTERM`);
    }
    if (this.spec.kind === 'mintrace') {
      try {
        this.summary = JSON.parse(this.stdout.trim().split('\n').pop() ?? '') as Summary;
      } catch {
        // reported below
      }
    }
    const s = this.summary;
    if (!s) throw this.failure(`exited (${this.exitText(exit)}) without a summary`);
    if (![s.events?.connect, s.events?.accept, s.events?.close, s.lost].every(Number.isFinite)) {
      throw this.failure(`printed an unexpected summary: ${JSON.stringify(s)}`);
    }
    return s;
  }
}
