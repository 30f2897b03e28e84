/**
 * Runs the real agent (bin/convis) for privileged tests and collects the
 * JSON events it prints.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { repoRoot } from './paths.js';
import { tempDir } from './tmp.js';
import { skipLoudly } from './skip.js';
export { repoRoot };
export const convisBin = join(repoRoot, 'bin/convis');
export const peersScript = join(repoRoot, 'test/helpers/peers.py');

/** Why privileged tests cannot run here, or undefined when they can. */
export function privilegedSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (run the suite as root: sudo npm test)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'the kernel has no BTF (/sys/kernel/btf/vmlinux)';
  return undefined;
}

/** Skips loudly: the reason goes to stderr as well as into the test report. */
export function skipReasonLoudly(): string | false {
  return skipLoudly('privileged tests', privilegedSkipReason());
}

export interface JsonEvent {
  time: string;
  event: 'connect' | 'accept' | 'close' | 'connect_failed' | 'update' | 'listen' | 'unlisten' | 'alert';
  proto: string;
  direction: 'outbound' | 'inbound';
  local: { ip: string; port: number };
  /** null on listen and unlisten */
  remote: { ip: string; port: number } | null;
  process: { pid: number; ppid: number; uid: number; comm: string; cmd: string; exe: string } | null;
  container: { id: string; name: string | null; image: string | null; runtime: string } | null;
  pod: { name: string | null; namespace: string | null; uid: string | null } | null;
  remote_pod?: { name: string; namespace: string };
  node: string;
  cgroup_id: number;
  netns: number;
  conn_id: number;
  bytes_sent?: number;
  bytes_received?: number;
  duration_ms?: number;
  srtt_us?: number;
  retransmits?: number;
  error?: string;
  existing?: true;
  bytes_sent_delta?: number;
  bytes_received_delta?: number;
  retransmits_delta?: number;
  datagrams_sent?: number;
  datagrams_received?: number;
  rule?: string;
  trigger?: string;
}

export interface AgentResult {
  code: number | null;
  stderr: string;
  summary: Record<string, unknown> | undefined;
}

export class Agent {
  readonly events: JsonEvent[] = [];
  /** lines that are not JSON (a SIGKILL can cut the last one) */
  readonly unfinished: string[] = [];
  /** every line printed, as printed */
  stdout = '';
  stderr = '';
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.exited = new Promise((res) => child.once('exit', (code) => res(code)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.stdout += `${line}\n`;
      try {
        this.events.push(JSON.parse(line) as JsonEvent);
      } catch {
        // only an agent killed in the middle of a line leaves one unfinished
        this.unfinished.push(line);
      }
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (this.stderr += d));
  }

  /** The agent's pid (its own connections carry it). */
  get pid(): number {
    return this.child.pid!;
  }

  /** Starts bin/convis with a JSON stdout sink (unless extraArgs has a stdout sink of its own) and waits until it is tracing. */
  static async start(extraArgs: string[] = [], env: NodeJS.ProcessEnv = process.env): Promise<Agent> {
    const ownStdout = extraArgs.some((a, i) => extraArgs[i - 1] === '--sink' && a.startsWith('stdout'));
    const child = spawn(process.execPath, [convisBin, ...(ownStdout ? [] : ['--sink', 'stdout,format=json']), ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    const agent = new Agent(child);
    const deadline = Date.now() + 30_000;
    while (!agent.stderr.includes('convis: ready')) {
      if (child.exitCode !== null) throw new Error(`agent exited early (${child.exitCode}): ${agent.stderr}`);
      if (Date.now() > deadline) throw new Error(`agent not ready after 30 s: ${agent.stderr}`);
      await sleep(20);
    }
    return agent;
  }

  /** Waits until `pred` holds for the events seen so far. */
  async waitFor(pred: (events: JsonEvent[]) => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; have ${JSON.stringify(this.events.slice(-10))}`);
      await sleep(20);
    }
  }

  /** Stops reading the agent's stdout (a reader that stalls: the pipe fills); resumeReading() reads on. */
  pauseReading(): void {
    this.child.stdout!.pause();
  }

  resumeReading(): void {
    this.child.stdout!.resume();
  }

  /** Sends the agent a signal (SIGHUP: reload). */
  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** SIGTERM, then the exit code and the summary line. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<AgentResult> {
    if (this.child.exitCode === null) this.child.kill(signal);
    const code = await this.exited;
    const m = /convis: summary (.*)$/m.exec(this.stderr);
    return { code, stderr: this.stderr, summary: m?.[1] ? (JSON.parse(m[1]) as Record<string, unknown>) : undefined };
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

let peerExe: string | undefined;

/**
 * A python3 binary reachable under the name "convis-peer", so the peers'
 * comm is unmistakable in events (comm is the basename execve was given).
 */
export function peerExecutable(): string {
  if (peerExe) return peerExe;
  const real = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
  if (!real) throw new Error('python3 is needed for the privileged tests');
  const dir = tempDir('convis-peer-');
  peerExe = join(dir, 'convis-peer');
  symlinkSync(real, peerExe);
  return peerExe;
}

export interface Peer {
  child: ChildProcess;
  pid: number;
  /** lines printed so far */
  lines: string[];
  /** resolves with the first line starting with `prefix` */
  line(prefix: string, timeoutMs?: number): Promise<string>;
  /** writes one line to the peer's stdin, then waits for its `reply` line (the nth of that text) */
  command(line: string, reply: string, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

/** Starts peers.py with a role, optionally inside a network namespace. */
export function startPeer(args: string[], netns?: string): Peer {
  const argv = [peerExecutable(), peersScript, ...args];
  const child = netns
    ? spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  // a peer that never reads its stdin may exit before we close it
  child.stdin!.on('error', () => undefined);
  return {
    child,
    pid: child.pid!,
    lines,
    exited,
    async command(line, reply, timeoutMs = 10_000) {
      const before = lines.filter((l) => l === reply).length;
      child.stdin!.write(`${line}\n`);
      const deadline = Date.now() + timeoutMs;
      while (lines.filter((l) => l === reply).length <= before) {
        if (child.exitCode !== null) throw new Error(`peer ${args.join(' ')} exited (${child.exitCode}) before "${reply}"`);
        if (Date.now() > deadline) throw new Error(`peer ${args.join(' ')}: no "${reply}" after "${line}"`);
        await sleep(10);
      }
    },
    async line(prefix, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const l = lines.find((x) => x.startsWith(prefix));
        if (l !== undefined) return l.slice(prefix.length).trim();
        if (child.exitCode !== null && !lines.some((x) => x.startsWith(prefix))) {
          throw new Error(`peer ${args.join(' ')} exited (${child.exitCode}) without "${prefix}"`);
        }
        if (Date.now() > deadline) throw new Error(`peer ${args.join(' ')}: no "${prefix}" line`);
        await sleep(10);
      }
    },
  };
}
