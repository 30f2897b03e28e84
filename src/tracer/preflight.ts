/**
 * Checks made before anything is loaded, so that a missing privilege or
 * kernel feature is one sentence instead of a libbpf errno.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpfError } from './errors.js';

/**
 * The capabilities convis needs, each with what needs it. This is the whole
 * list: the README's table, the container tests and deploy/kubernetes use
 * exactly these. CAP_SYS_ADMIN also covers what CAP_BPF, CAP_PERFMON and
 * CAP_NET_ADMIN would give (bpf(), perf_event_open for tracepoints, cgroup
 * socket programs), and container runtimes' default seccomp profiles allow
 * bpf() and perf_event_open only with CAP_SYS_ADMIN, so those three would
 * only lengthen the list.
 */
export const REQUIRED_CAPABILITIES: readonly { name: string; bit: bigint; why: string }[] = [
  {
    name: 'CAP_SYS_ADMIN',
    bit: 21n,
    why: 'load and attach the BPF programs, and enter other network namespaces for the start-up snapshot',
  },
  {
    name: 'CAP_SYS_PTRACE',
    bit: 19n,
    why: "read other processes' /proc entries (executable, namespaces, the host's name through /proc/1/root)",
  },
];

/** Parses the CapEff mask out of /proc/<pid>/status text. */
export function effectiveCaps(statusText: string): bigint {
  const m = /^CapEff:\s*([0-9a-fA-F]+)$/m.exec(statusText);
  return m?.[1] ? BigInt(`0x${m[1]}`) : 0n;
}

/** The required capabilities `caps` lacks, by name. */
export function missingCapabilities(caps: bigint): string[] {
  return REQUIRED_CAPABILITIES.filter((c) => ((caps >> c.bit) & 1n) === 0n).map((c) => c.name);
}

/** Every capability in REQUIRED_CAPABILITIES, or one line naming those missing. */
export function checkPrivileges(statusText: string, uid: number): void {
  const missing = missingCapabilities(effectiveCaps(statusText));
  if (missing.length === 0) return;
  const why = REQUIRED_CAPABILITIES.filter((c) => missing.includes(c.name)).map((c) => `${c.name}: ${c.why}`);
  throw new BpfError(
    'EPERM',
    `missing capabilit${missing.length > 1 ? 'ies' : 'y'} ${missing.join(', ')} (running as uid ${uid}; ${why.join('; ')}): run as root or add ${missing.length > 1 ? 'them' : 'it'}`,
  );
}

/** The kernel's BTF (CO-RE relocations need it), or an explicit --btf file. */
export function checkBtf(sysRoot: string, btfPath?: string): void {
  if (btfPath !== undefined) {
    if (!existsSync(btfPath)) throw new BpfError('ENOENT', `the BTF file given with --btf does not exist: ${btfPath}`);
    return;
  }
  const path = join(sysRoot, 'kernel/btf/vmlinux');
  if (!existsSync(path)) {
    throw new BpfError(
      'ENOTSUP',
      `this kernel has no BTF (${path} is missing): convis needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, or a BTF file for it given with --btf`,
    );
  }
}

export type Mounter = (dir: string) => void;

const mountTracefs: Mounter = (dir) => {
  execFileSync('mount', ['-t', 'tracefs', 'nodev', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
};

/**
 * libbpf finds tracepoint ids in tracefs. When it is not mounted (common in
 * containers and minimal hosts), mount it, as bpftrace and bcc expect too.
 */
export function ensureTracefs(sysRoot: string, mount: Mounter = mountTracefs): void {
  const dirs = [join(sysRoot, 'kernel/tracing'), join(sysRoot, 'kernel/debug/tracing')];
  if (dirs.some((d) => existsSync(join(d, 'events')))) return;
  const target = dirs[0] as string;
  try {
    mount(target);
  } catch (e) {
    // mount(8) adds a second line pointing at dmesg: the first says what failed
    const raw = e instanceof Error && 'stderr' in e ? String((e as { stderr: unknown }).stderr) : String(e);
    const why = raw.trim().split('\n')[0]?.trim();
    throw new BpfError(
      'ENOTRACEFS',
      `tracefs is not mounted and mounting it at ${target} failed (${why || 'unknown error'}); mount it with: mount -t tracefs nodev ${target}`,
    );
  }
  if (!existsSync(join(target, 'events'))) {
    throw new BpfError('ENOTRACEFS', `tracefs mounted at ${target} has no events directory`);
  }
}

/** Runs every check in the order a user would fix them. */
export function preflight(opts: { sysRoot: string; btfPath?: string; procSelfStatus?: string }): void {
  const status = opts.procSelfStatus ?? readFileSync('/proc/self/status', 'utf8');
  checkPrivileges(status, process.getuid?.() ?? -1);
  checkBtf(opts.sysRoot, opts.btfPath);
  ensureTracefs(opts.sysRoot);
}
