/**
 * A real dockerd (Debian's docker.io) for privileged tests, private to the
 * test: its data, exec root, pid file and API socket live under a temp dir,
 * so it never meets a system dockerd or /var/run/docker.sock.
 *
 * Networking: the harness makes its own bridge (cvd<N>, 10.231.<N>.1/24)
 * and hands it to dockerd with --bridge, and dockerd runs with
 * --iptables=false --ip-forward=false --ip-masq=false. Containers reach each
 * other over the bridge and the host at the bridge address (the gateway)
 * without NAT or forwarding, so dockerd changes nothing on the host's
 * network: no docker0, no iptables chains, no net.ipv4.ip_forward. stop()
 * still compares the host with what it recorded at start and undoes what
 * changed (a safety net should the flags ever change), and removes what
 * dockerd leaves outside its roots (/etc/docker/key.json, /run/docker,
 * cgroup directories).
 *
 * The generic host helpers used by the podman harness live here too.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  copyFileSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { isStaticElf, which } from './host.js';
import { DockerClient } from '../../src/metadata/docker.js';

export const TEST_IMAGE = 'convis-test/busybox:local';

/** busybox applets linked in the test image */
const APPLETS = [
  'sh', 'nc', 'sleep', 'ip', 'cat', 'wget', 'echo', 'ls', 'ps', 'kill', 'true', 'false', 'env', 'id',
  'hostname', 'ifconfig', 'grep', 'head', 'tail', 'printf', 'test', 'mkdir', 'rm', 'timeout', 'date', 'seq',
];

export interface RunOptions {
  /** --label key=value for each entry */
  labels?: Record<string, string>;
  /** more `run` flags, before the image */
  flags?: string[];
}

export interface RunningContainer {
  /** the full 64-hex id */
  id: string;
  /** host pid of the container's first process */
  pid: number;
  /** the container's IPv4 address on the test bridge */
  ip: string;
}

export interface TestBridge {
  name: string;
  /** e.g. 10.231.7.0/24 */
  subnet: string;
  /** the host's address on the bridge: containers reach host listeners here */
  gateway: string;
}

export interface Dockerd {
  /** the API socket path */
  socket: string;
  /** process.env plus DOCKER_HOST (and a private DOCKER_CONFIG) for the docker CLI */
  env: NodeJS.ProcessEnv;
  bridge: TestBridge;
  /** the test image, as `docker run` takes it */
  image: string;
  /** docker run -d --name <name> [labels] [flags] <image> <command...> */
  run(name: string, command: string[], options?: RunOptions): Promise<RunningContainer>;
  /** docker rm -f */
  rm(id: string): Promise<void>;
  /** stops everything it started and restores the host; throws listing anything left behind */
  stop(): Promise<void>;
}

/** Why a real dockerd cannot run here, or undefined when it can. */
export function dockerdSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!which('dockerd')) return 'dockerd is not installed (apt-get install docker.io)';
  if (!dockerCli()) return 'the docker CLI is not installed (apt-get install docker.io)';
  return commonSkipReason();
}

/** Starts dockerd, waits until its API answers and imports the test image. */
export async function startDockerd(): Promise<Dockerd> {
  const why = dockerdSkipReason();
  if (why) throw new Error(`cannot start dockerd: ${why}`);
  const host = HostState.record(['/etc/docker/key.json', '/run/docker', '/run/docker/plugins', '/run/containerd', '/run/containerd/s', ...cgroupDirs('docker')]);
  const dir = makeTempDir('convis-dockerd-');
  const socket = join(dir, 'docker.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: join(dir, 'cli') };
  const cli = dockerCli()!;
  const ids = new Set<string>();
  let bridge: TestBridge | undefined;
  let child: ChildProcess | undefined;
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];
    if (child && child.exitCode === null && child.signalCode === null) {
      // rm -f kills at once; dockerd's own shutdown would wait for each container
      const all = await tryRun(cli, ['ps', '-aq', '--no-trunc'], { env, timeoutMs: 10_000 });
      for (const id of all?.split('\n').filter(Boolean) ?? []) ids.add(id);
      if (ids.size) await tryRun(cli, ['rm', '-f', ...ids], { env, timeoutMs: 20_000 });
    }
    const containerdPid = readPid(join(dir, 'exec/containerd/containerd.pid'));
    if (child) await stopChild(child, 10_000);
    if (containerdPid) await killPid(containerdPid, 5_000);
    // shims, and what runs in containers whose shim is gone
    for (const pid of pidsMentioning(dir)) await killPid(pid, 0);
    for (const id of ids) for (const pid of pidsInCgroup(`docker/${id}`)) await killPid(pid, 0);
    // a shim that was killed leaves its socket, named as containerd 1.6 names it
    const containerdSocket = join(dir, 'exec/containerd/containerd.sock');
    for (const id of ids) rmSync(join('/run/containerd/s', createHash('sha256').update(join(containerdSocket, 'moby', id)).digest('hex')), { force: true });
    problems.push(...removeTree(dir));
    for (const id of ids) removeCgroupDirs(`docker/${id}`);
    host.removeIfNew(['/etc/docker/key.json']);
    host.rmdirIfNew([...cgroupDirs('docker'), '/run/docker/plugins', '/run/docker', '/run/containerd/s', '/run/containerd']);
    if (bridge) problems.push(...deleteBridge(bridge.name));
    problems.push(...host.restoreNetwork(bridge ? [bridge.name, bridge.subnet] : [], /^DOCKER/));
    if (problems.length) throw new Error(`dockerd harness left the host changed: ${problems.join('; ')}`);
  };

  try {
    bridge = createBridge('cvd', 231);
    writeFileSync(join(dir, 'daemon.json'), '{}\n');
    const log = openSync(join(dir, 'dockerd.log'), 'a');
    child = spawn(
      which('dockerd')!,
      [
        '--config-file', join(dir, 'daemon.json'),
        '--data-root', join(dir, 'data'),
        '--exec-root', join(dir, 'exec'),
        '--pidfile', join(dir, 'dockerd.pid'),
        '-H', `unix://${socket}`,
        '--bridge', bridge.name,
        '--iptables=false',
        '--ip6tables=false',
        '--ip-forward=false',
        '--ip-masq=false',
        '--userland-proxy=false',
        '--shutdown-timeout=2',
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    child.on('error', () => {});
    await waitForApi(socket, 'docker', child, join(dir, 'dockerd.log'));
    const tar = buildRootfsTar(join(dir, 'image'));
    await runCommand(cli, ['import', tar, TEST_IMAGE], { env, timeoutMs: 30_000 });
  } catch (e) {
    await stop().catch((cleanup: Error) => process.stderr.write(`${cleanup.message}\n`));
    throw e;
  }

  const testBridge = bridge;
  return {
    socket,
    env,
    bridge: testBridge,
    image: TEST_IMAGE,
    async run(name, command, options = {}) {
      const args = ['run', '-d', '--pull', 'never', '--name', name, ...labelFlags(options.labels), ...(options.flags ?? []), TEST_IMAGE, ...command];
      const id = (await runCommand(cli, args, { env, timeoutMs: 30_000 })).trim().split('\n').pop()!;
      ids.add(id);
      return inspectRunning(cli, id, env);
    },
    async rm(id) {
      await runCommand(cli, ['rm', '-f', id], { env, timeoutMs: 20_000 });
    },
    stop,
  };
}

// ---------------------------------------------------------------------------
// shared with the podman harness

/** What both harnesses need besides their runtime. */
export function commonSkipReason(): string | undefined {
  if (!which('ip')) return 'ip is not installed (apt-get install iproute2)';
  const busybox = busyboxPath();
  if (!busybox) return 'busybox is not installed (apt-get install busybox-static)';
  if (!isStaticElf(busybox)) return `${busybox} is dynamically linked (apt-get install busybox-static)`;
  return undefined;
}

/** Debian's docker CLI, which matches its dockerd, else whatever is on PATH. */
export function dockerCli(): string | undefined {
  return existsSync('/usr/bin/docker') ? '/usr/bin/docker' : which('docker');
}

function busyboxPath(): string | undefined {
  return ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p)) ?? which('busybox');
}

export { which };

/** A temp dir short enough for the unix sockets that daemons make under it. */
export function makeTempDir(prefix: string): string {
  const base = tmpdir().length <= 40 ? tmpdir() : '/tmp';
  return mkdtempSync(join(base, prefix));
}

/** A rootfs with static busybox and its applets, as a tar file; returns the tar's path. */
export function buildRootfsTar(dir: string): string {
  const root = join(dir, 'rootfs');
  for (const d of ['bin', 'tmp', 'etc', 'proc', 'sys', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(busyboxPath()!, join(root, 'bin/busybox'));
  for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
  const tar = join(dir, 'rootfs.tar');
  execFileChecked('tar', ['-C', root, '--owner=0', '--group=0', '-cf', tar, '.']);
  return tar;
}

export interface CommandOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
}

/** Runs a command with a time limit; resolves with stdout, rejects with one line naming it and its stderr. */
export function runCommand(cmd: string, args: string[], options: CommandOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: options.env ?? process.env, timeout: options.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const why = err.killed ? `killed after ${options.timeoutMs} ms` : `exit ${String(err.code)}`;
        reject(new Error(`${cmd} ${args.join(' ')}: ${why}: ${stderr.trim().replace(/\s+/g, ' ').slice(0, 500)}`));
      },
    );
  });
}

/** runCommand, or undefined when it fails. */
export async function tryRun(cmd: string, args: string[], options: CommandOptions): Promise<string | undefined> {
  try {
    return await runCommand(cmd, args, options);
  } catch {
    return undefined;
  }
}

function execFileChecked(cmd: string, args: string[]): void {
  const r = spawnSyncQuiet(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${String(r.status)}: ${r.stderr.trim()}`);
}

export function labelFlags(labels: Record<string, string> = {}): string[] {
  return Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
}

/** Id, pid and IP of a started container, from the runtime's CLI (docker and podman take the same template). */
export async function inspectRunning(cli: string, id: string, env: NodeJS.ProcessEnv, extra: string[] = []): Promise<RunningContainer> {
  const out = await runCommand(cli, [...extra, 'inspect', '--format', '{{.Id}} {{.State.Pid}} {{.NetworkSettings.IPAddress}}', id], { env, timeoutMs: 10_000 });
  const [fullId = '', pid = '', ip = ''] = out.trim().split(/\s+/);
  if (!/^[0-9a-f]{64}$/.test(fullId) || !(Number(pid) > 0)) throw new Error(`container ${id} is not running: ${out.trim()}`);
  return { id: fullId, pid: Number(pid), ip };
}

/** Polls GET /_ping until it answers; fails early if the daemon exits. */
export async function waitForApi(socket: string, runtime: 'docker' | 'podman', child: ChildProcess, logFile: string, timeoutMs = 20_000): Promise<void> {
  const client = new DockerClient({ endpoint: socket, runtime, timeoutMs: 1000 });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${runtime} exited (${String(child.exitCode ?? child.signalCode)}) before its API answered: ${logTail(logFile)}`);
      }
      try {
        await client.ping();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`${runtime} API at ${socket} did not answer within ${timeoutMs} ms: ${logTail(logFile)}`);
      }
      await sleep(20);
    }
  } finally {
    client.close();
  }
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '(no log)';
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** SIGTERM to a child we spawned, SIGKILL after graceMs. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A process that exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM (SIGKILL when graceMs is 0), SIGKILL after graceMs; waits up to 5 s more for it to go. */
export async function killPid(pid: number, graceMs: number): Promise<void> {
  if (!alive(pid)) return;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      // gone meanwhile
    }
  };
  signal(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await sleep(20);
  if (!alive(pid)) return;
  signal('SIGKILL');
  const hard = Date.now() + 5_000;
  while (alive(pid) && Date.now() < hard) await sleep(20);
}

export function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Pids of live processes whose command line mentions `s` (the harness's unique temp dir). */
export function pidsMentioning(s: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(s) && alive(Number(name))) pids.push(Number(name));
    } catch {
      // exited
    }
  }
  return pids;
}

/** cgroup v1 hierarchies and the v2 tree, as mounted on this host. */
function cgroupRoots(): string[] {
  const roots: string[] = [];
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (mnt && (type === 'cgroup' || type === 'cgroup2')) roots.push(mnt);
  }
  return roots;
}

/** `rel` (e.g. "docker") in every cgroup hierarchy. */
export function cgroupDirs(rel: string): string[] {
  return cgroupRoots().map((r) => join(r, rel));
}

export function pidsInCgroup(rel: string): number[] {
  const pids = new Set<number>();
  for (const d of cgroupDirs(rel)) {
    try {
      for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (p) pids.add(Number(p));
    } catch {
      // not in this hierarchy
    }
  }
  return [...pids];
}

export function removeCgroupDirs(rel: string): void {
  for (const d of cgroupDirs(rel)) rmdirQuiet(d);
}

function rmdirQuiet(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // absent, or not empty: in use by someone else
  }
}

/** Unmounts everything under `dir` (deepest first) and removes it; returns problems. */
export function removeTree(dir: string): string[] {
  const mounts = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
      .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)));
  for (const m of mounts().sort((a, b) => b.length - a.length)) {
    if (spawnSyncQuiet('umount', [m]).status !== 0) spawnSyncQuiet('umount', ['-l', m]);
  }
  const left = mounts();
  if (left.length) return [`mounts left under ${dir}: ${left.join(', ')}`];
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch (e) {
    return [`cannot remove ${dir}: ${(e as Error).message}`];
  }
  return [];
}

function spawnSyncQuiet(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000, ...(input !== undefined ? { input } : {}) });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const ip = (...args: string[]) => spawnSyncQuiet('ip', args);

/**
 * A bridge for one harness: <prefix><N> with 10.<octet>.<N>.1/24, N the
 * first number whose name and subnet are both free (two harnesses, or a
 * concurrent test, never share one).
 */
export function createBridge(prefix: string, octet: number): TestBridge {
  const used = ip('-4', '-o', 'addr').stdout + ip('-4', 'route').stdout;
  const start = process.pid % 250;
  for (let i = 0; i < 250; i++) {
    const n = ((start + i) % 250) + 1;
    const subnet = `10.${octet}.${n}.0/24`;
    if (used.includes(`10.${octet}.${n}.`)) continue;
    const name = `${prefix}${n}`;
    if (ip('link', 'add', name, 'type', 'bridge').status !== 0) continue;
    const gateway = `10.${octet}.${n}.1`;
    const steps = [ip('addr', 'add', `${gateway}/24`, 'dev', name), ip('link', 'set', name, 'up')];
    const failed = steps.find((r) => r.status !== 0);
    if (failed) {
      ip('link', 'del', name);
      throw new Error(`cannot set up bridge ${name}: ${failed.stderr.trim()}`);
    }
    return { name, subnet, gateway };
  }
  throw new Error(`no free bridge name or subnet in 10.${octet}.0.0/16`);
}

export function deleteBridge(name: string): string[] {
  if (ip('link', 'show', name).status !== 0) return [];
  const r = ip('link', 'del', name);
  return r.status === 0 ? [] : [`cannot delete bridge ${name}: ${r.stderr.trim()}`];
}

const FORWARD_SYSCTLS = ['/proc/sys/net/ipv4/ip_forward', '/proc/sys/net/ipv6/conf/all/forwarding'];

/** The host state a harness must leave as it found it, recorded at start. */
export class HostState {
  private constructor(
    private readonly existed: Set<string>,
    private readonly forwarding: Map<string, string>,
    private readonly rules: Map<string, string>,
  ) {}

  /** Records forwarding sysctls, iptables rules and which of `paths` exist. */
  static record(paths: string[]): HostState {
    const forwarding = new Map<string, string>();
    for (const f of FORWARD_SYSCTLS) {
      try {
        forwarding.set(f, readFileSync(f, 'utf8').trim());
      } catch {
        // no IPv6
      }
    }
    const rules = new Map<string, string>();
    for (const save of ['iptables-save', 'ip6tables-save']) {
      if (which(save)) rules.set(save, spawnSyncQuiet(save, []).stdout);
    }
    return new HostState(new Set(paths.filter((p) => existsSync(p))), forwarding, rules);
  }

  /** Removes files that did not exist at start. */
  removeIfNew(paths: string[]): void {
    for (const p of paths) if (!this.existed.has(p)) rmSync(p, { force: true, recursive: true });
  }

  /** Removes directories that did not exist at start, when they are empty again. */
  rmdirIfNew(paths: string[]): void {
    for (const p of paths) if (!this.existed.has(p)) rmdirQuiet(p);
  }

  /**
   * Puts changed forwarding sysctls back and deletes iptables rules added
   * since start that mention one of `ours` (bridge names, subnets) or jump to
   * a chain matching `chains`, then those chains. Returns what it restored
   * or could not, as problems: with the flags the harnesses use, nothing.
   */
  restoreNetwork(ours: string[], chains: RegExp): string[] {
    const problems: string[] = [];
    for (const [f, before] of this.forwarding) {
      const now = readFileSync(f, 'utf8').trim();
      if (now !== before) {
        writeFileSync(f, `${before}\n`);
        problems.push(`${f} was ${now}, restored to ${before}`);
      }
    }
    for (const [save, before] of this.rules) {
      const restore = save.replace('-save', '-restore');
      const script = undoRules(before, spawnSyncQuiet(save, []).stdout, ours, chains);
      if (!script) continue;
      const r = spawnSyncQuiet(restore, ['--noflush'], script);
      const undone = script.split('\n').filter((l) => l && !l.startsWith('*') && l !== 'COMMIT');
      problems.push(r.status === 0 ? `${save}: undid what the runtime changed: ${undone.join(', ')}` : `${restore} failed: ${r.stderr.trim()}`);
      // iptables-nft made these nft tables for the runtime's rules; drop them once empty again
      const family = save === 'iptables-save' ? 'ip' : 'ip6';
      for (const table of emptyNewTables(before, spawnSyncQuiet(save, []).stdout)) {
        if (which('nft')) spawnSyncQuiet('nft', ['delete', 'table', family, table]);
      }
    }
    return problems;
  }
}

/** Tables in `after` but not in `before` that hold no rules, no user chains and only ACCEPT policies. */
function emptyNewTables(before: string, after: string): string[] {
  const had = new Set(before.split('\n').filter((l) => l.startsWith('*')).map((l) => l.slice(1)));
  const empty: string[] = [];
  for (const section of after.split(/^\*/m).slice(1)) {
    const [table = '', ...lines] = section.split('\n');
    if (had.has(table)) continue;
    if (lines.every((l) => !l.startsWith('-A ') && !(l.startsWith(':') && !/^:\S+ ACCEPT /.test(l)))) empty.push(table);
  }
  return empty;
}

/**
 * An iptables-restore --noflush script undoing what `after` added to `before`
 * that is ours: rules mentioning one of `ours` or living in or jumping to a
 * new chain matching `chains`, those chains, and built-in chain policies that
 * changed (dockerd sets FORWARD to DROP when it turns on forwarding). '' when
 * there is nothing to undo. Tables that did not exist before stay, empty.
 */
export function undoRules(before: string, after: string, ours: string[], chains: RegExp): string {
  const byTable = (text: string) => {
    const tables = new Map<string, string[]>();
    let table = '';
    for (const line of text.split('\n')) {
      if (line.startsWith('*')) tables.set((table = line.slice(1)), []);
      else if (table && (line.startsWith('-A ') || line.startsWith(':'))) tables.get(table)!.push(line);
    }
    return tables;
  };
  // ":NAME POLICY [packets:bytes]"; POLICY is '-' for user chains
  const chainLine = (l: string) => {
    const [name = '', policy = ''] = l.slice(1).split(' ');
    return { name, policy };
  };
  const was = byTable(before);
  let script = '';
  for (const [table, lines] of byTable(after)) {
    const old = new Set(was.get(table) ?? []);
    const oldPolicy = new Map([...old].filter((l) => l.startsWith(':')).map((l) => [chainLine(l).name, chainLine(l).policy]));
    const chainsNow = lines.filter((l) => l.startsWith(':')).map(chainLine);
    const newChains = chainsNow.filter((c) => !oldPolicy.has(c.name) && chains.test(c.name)).map((c) => c.name);
    const touchesNewChain = (l: string) => {
      const t = l.split(' ');
      return newChains.some((c) => t[1] === c || t.some((x, i) => (x === '-j' || x === '-g') && t[i + 1] === c));
    };
    const rules = lines.filter((l) => l.startsWith('-A ') && !old.has(l) && (ours.some((o) => l.includes(o)) || touchesNewChain(l)));
    // a table that did not exist had ACCEPT everywhere
    const policies = chainsNow.filter((c) => c.policy !== '-' && c.policy !== (oldPolicy.get(c.name) ?? 'ACCEPT'));
    if (!rules.length && !newChains.length && !policies.length) continue;
    script += `*${table}\n`;
    for (const c of policies) script += `:${c.name} ${oldPolicy.get(c.name) ?? 'ACCEPT'} [0:0]\n`;
    for (const r of rules) script += `-D ${r.slice(3)}\n`;
    for (const c of newChains) script += `-X ${c}\n`;
    script += 'COMMIT\n';
  }
  return script;
}
