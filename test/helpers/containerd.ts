/**
 * A real containerd with its CRI plugin, started for a test and removed
 * afterwards: Kubernetes-style pods without a kubelet. Everything lives
 * under one temp dir (root, state, runc state, socket, CNI config and IPAM
 * state); pods join a bridge this harness creates on a private test range
 * (10.87.<n>.0/24) and get cgroups under /kubepods/besteffort/pod<uid>, the
 * shape a kubelet with the cgroupfs driver makes. Images are built here from
 * busybox-static as an OCI layout and imported with ctr: no registry.
 *
 * stop() removes what start() and the pods made: pods and containers, the
 * containerd process and its shims (by pid), mounts, the bridge, CNI cache
 * entries, cgroup directories and the temp dir.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, rmdir, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { isStaticElf, which } from './host.js';
import { criCall, criGrpcClient, type CriContainerStatusResponse, type CriPodSandboxStatusResponse } from '../../src/metadata/cri.js';

export const PAUSE_IMAGE = 'docker.io/convis-test/pause:local';
export const BUSYBOX_IMAGE = 'docker.io/convis-test/busybox:local';

const BUSYBOX = '/bin/busybox';
const CNI_BIN_DIR = '/usr/lib/cni';
const APPLETS = ['sh', 'sleep', 'cat', 'echo', 'ls', 'nc', 'wget', 'ip'];
const CALL_TIMEOUT_MS = 30_000;
const CNI_CACHE = '/var/lib/cni/results';
const SHIM_SOCKET_DIR = '/run/containerd/s';

export interface PodSpec {
  name: string;
  namespace: string;
  uid: string;
}

export interface RunningPod {
  sandboxId: string;
  /** the pod's IPv4 address on the harness bridge */
  ip: string;
}

export interface ContainerSpec {
  name: string;
  command: string[];
  /** default: BUSYBOX_IMAGE */
  image?: string;
}

export interface RunningContainer {
  containerId: string;
  /** host pid of the container's first process */
  pid: number;
}

export interface Containerd {
  /** the CRI (and containerd) gRPC socket */
  socket: string;
  /** the temp dir everything lives in */
  dir: string;
  /** the bridge pods join, its subnet and the host's address on it */
  bridge: string;
  subnet: string;
  gateway: string;
  snapshotter: 'overlayfs' | 'native';
  runPod(spec: PodSpec): Promise<RunningPod>;
  runContainer(sandboxId: string, spec: ContainerSpec): Promise<RunningContainer>;
  /** stops and removes a pod and its containers */
  stopPod(sandboxId: string): Promise<void>;
  /** removes everything; throws listing what could not be cleaned up */
  stop(): Promise<void>;
}

/** Why a containerd harness cannot run here (besides root), or undefined. */
export function containerdSkipReason(): string | undefined {
  const missing = ['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'ip', 'tar', 'mount', 'umount'].filter((c) => !!!which(c));
  for (const plugin of ['bridge', 'host-local', 'loopback']) {
    if (!existsSync(join(CNI_BIN_DIR, plugin))) missing.push(join(CNI_BIN_DIR, plugin));
  }
  if (!existsSync(BUSYBOX) || !isStaticElf(BUSYBOX)) missing.push(`a static ${BUSYBOX}`);
  if (missing.length === 0) return undefined;
  return (
    `containerd with CRI is not installed (missing ${missing.join(', ')}; ` +
    'apt-get install containerd runc containernetworking-plugins busybox-static iproute2)'
  );
}

function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${error.message.trim()} ${stderr.trim()}`));
      else resolve(stdout);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/** Pids of the shims serving this containerd (their argv names its socket). */
function shimPids(socket: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const i = argv.indexOf('-address');
    if (i >= 0 && argv[i + 1] === socket && /containerd-shim/.test(argv[0] ?? '')) pids.push(Number(entry));
  }
  return pids;
}

/** Mount points at or under `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => unescape(line.split(' ')[4] ?? ''))
    .filter((mp) => mp === dir || mp.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** cgroup hierarchies to clean: the unified root on a pure v2 host, else every mounted v1/v2 hierarchy. */
function cgroupHierarchies(): string[] {
  const root = '/sys/fs/cgroup';
  if (existsSync(join(root, 'cgroup.procs'))) return [root];
  try {
    return readdirSync(root)
      .map((d) => join(root, d))
      .filter((d) => existsSync(join(d, 'cgroup.procs')));
  } catch {
    return [];
  }
}

/** rmdir a cgroup and its children, bottom-up (cgroupfs dirs go with rmdir only). */
function rmdirCgroupTree(path: string): void {
  let entries: string[];
  try {
    entries = readdirSync(path);
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(path, e);
    try {
      if (statSync(p).isDirectory()) rmdirCgroupTree(p);
    } catch {
      // raced away
    }
  }
  rmdirSync(path);
}

interface OciBlob {
  digest: string;
  size: number;
}

async function writeBlob(dir: string, data: Buffer): Promise<OciBlob> {
  const hex = createHash('sha256').update(data).digest('hex');
  await writeFile(join(dir, 'blobs/sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/**
 * An OCI image layout tar holding PAUSE_IMAGE and BUSYBOX_IMAGE: one layer
 * (busybox-static and applet links), two configs whose default commands
 * differ, so the two are distinct images for containerd.
 */
async function buildImages(work: string): Promise<string> {
  const rootfs = join(work, 'rootfs');
  const oci = join(work, 'oci');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await mkdir(join(rootfs, 'tmp'));
  await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
  for (const a of APPLETS) await symlink('busybox', join(rootfs, 'bin', a));
  await mkdir(join(oci, 'blobs/sha256'), { recursive: true });
  const layerTar = join(work, 'layer.tar');
  await run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-cf', layerTar, '.']);
  const layerData = await readFile(layerTar);
  const layer = await writeBlob(oci, layerData);
  const arch = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;
  const manifests = [];
  for (const [name, cmd] of [
    [PAUSE_IMAGE, ['sleep', '2147483647']],
    [BUSYBOX_IMAGE, ['sh']],
  ] as const) {
    const config = await writeBlob(
      oci,
      Buffer.from(
        JSON.stringify({
          architecture: arch,
          os: 'linux',
          config: { Env: ['PATH=/bin'], Cmd: cmd },
          rootfs: { type: 'layers', diff_ids: [layer.digest] },
        }),
      ),
    );
    const manifest = await writeBlob(
      oci,
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
        }),
      ),
    );
    manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...manifest,
      // ctr import names the image after this annotation
      annotations: { 'io.containerd.image.name': name },
    });
  }
  await writeFile(join(oci, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(oci, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  const tarball = join(work, 'images.tar');
  await run('tar', ['-C', oci, '-cf', tarball, '.']);
  await rm(rootfs, { recursive: true, force: true });
  await rm(oci, { recursive: true, force: true });
  await rm(layerTar, { force: true });
  return tarball;
}

/** overlayfs when the temp dir's filesystem takes it, else the native (copying) snapshotter. */
async function pickSnapshotter(work: string): Promise<'overlayfs' | 'native'> {
  const p = join(work, 'overlay-probe');
  for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(p, d), { recursive: true });
  let snapshotter: 'overlayfs' | 'native' = 'native';
  try {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${p}/lower,upperdir=${p}/upper,workdir=${p}/work`, `${p}/merged`], 5000);
    snapshotter = 'overlayfs';
    await run('umount', [`${p}/merged`], 5000);
  } catch {
    // stays native
  }
  await rm(p, { recursive: true, force: true });
  return snapshotter;
}

const NET_BASE = '10.87';

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/**
 * A 10.87.<n>.0/24 range that no route on this host overlaps, and a
 * bridge name nobody uses. (Not 10.88: podman's default network is 10.88.0.0/16.)
 */
function pickNetwork(): { n: number; bridge: string } {
  const routes = execFileSync('ip', ['-o', '-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8', timeout: 5000 });
  const nets = [...routes.matchAll(/(?:^|\s)(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?\s/gm)].map((m) => {
    const bits = Number(m[2] ?? 32);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return { net: (ipv4ToInt(m[1]!) & mask) >>> 0, mask };
  });
  const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8', timeout: 5000 });
  for (let tries = 0; tries < 50; tries++) {
    const n = 100 + Math.floor(Math.random() * 150);
    const bridge = `convis-cri${n}`;
    const ours = ipv4ToInt(`${NET_BASE}.${n}.0`);
    // two prefixes overlap when they agree under the shorter mask
    const overlaps = nets.some(({ net, mask }) => {
      const m = (mask & 0xffffff00) >>> 0;
      return ((ours & m) >>> 0) === ((net & m) >>> 0) && net !== 0;
    });
    if (!overlaps && !links.includes(`${bridge}:`)) return { n, bridge };
  }
  throw new Error(`no free ${NET_BASE}.<n>.0/24 test range`);
}

function configToml(dir: string, snapshotter: string): string {
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
# storage drivers that cannot work here; only log noise
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "${dir}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this RunPodSandbox fails
  # with "can't get final child's PID from pipe: EOF"
  restrict_oom_score_adj = true
  # pod netns bind mounts under our state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  systemd_cgroup = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "${snapshotter}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state under our dir, not /run/containerd/runc
        Root = "${dir}/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${dir}/cni/net.d"
    max_conf_num = 1
`;
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

/** What a harness made, in <dir>/harness.json, so a later run can clean up after one that was killed. */
interface HarnessState {
  dir: string;
  socket: string;
  bridge: string;
  netName: string;
  /** the test process that owns this harness */
  ownerPid: number;
  /** containerd's pid, once started */
  pid?: number;
  podUids: string[];
  sandboxIds: string[];
  /** global dirs that did not exist before (removed at the end if empty) */
  createdGlobals: string[];
  /** cgroup hierarchies without a kubepods dir before */
  kubepodsCreatedIn: string[];
}

function saveState(state: HarnessState): void {
  writeFileSync(join(state.dir, 'harness.json'), JSON.stringify(state));
}

/** True while `pid` is a containerd started with this dir's config. */
function containerdRunning(state: HarnessState): boolean {
  if (!state.pid || !alive(state.pid)) return false;
  try {
    return readFileSync(`/proc/${state.pid}/cmdline`, 'utf8').includes(`${state.dir}/config.toml`);
  } catch {
    return false;
  }
}

/**
 * Everything after containerd has stopped: containers runc still runs (only
 * after a failed removal), shims, mounts, the bridge, CNI cache entries,
 * cgroups, global dirs we created, the temp dir. Returns what failed.
 */
async function cleanUp(state: HarnessState): Promise<string[]> {
  const { dir, socket, bridge, netName } = state;
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => unknown) => {
    try {
      await fn();
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`);
    }
  };

  const runcRoot = join(dir, 'runc', 'k8s.io');
  if (existsSync(runcRoot)) {
    await attempt('runc leftovers', async () => {
      const ids = (await run('runc', ['--root', runcRoot, 'list', '-q'], 10_000)).split('\n').filter(Boolean);
      for (const id of ids) await run('runc', ['--root', runcRoot, 'delete', '--force', id], 10_000);
    });
  }
  // shims exit by themselves once their containers are gone
  for (let i = 0; i < 40 && shimPids(socket).length > 0; i++) await sleep(50);
  for (const pid of shimPids(socket)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }

  // a killed shim leaves its socket: /run/containerd/s/sha256(<address>/<namespace>/<pod sandbox id>)
  for (const id of state.sandboxIds) {
    const hex = createHash('sha256').update(`${socket}/k8s.io/${id}`).digest('hex');
    await unlink(join(SHIM_SOCKET_DIR, hex)).catch(() => undefined);
  }

  // rootfs, shm and netns mounts left under the dir
  for (const mp of mountsUnder(dir)) await attempt(`umount ${mp}`, () => run('umount', ['-l', mp], 10_000));

  await attempt(`delete bridge ${bridge}`, async () => {
    if (execFileSync('ip', ['-o', 'link'], { encoding: 'utf8', timeout: 5000 }).includes(`${bridge}:`)) {
      await run('ip', ['link', 'del', bridge], 10_000);
    }
  });
  await attempt('CNI cache', async () => {
    if (!existsSync(CNI_CACHE)) return;
    for (const f of await readdir(CNI_CACHE)) {
      const ours = f.startsWith(`${netName}-`) || state.sandboxIds.some((id) => f === `cni-loopback-${id}-lo`);
      if (ours) await unlink(join(CNI_CACHE, f));
    }
  });

  // containerd leaves the pod-level cgroups (a kubelet removes them)
  for (const h of cgroupHierarchies()) {
    for (const uid of state.podUids) {
      const p = join(h, 'kubepods/besteffort', `pod${uid}`);
      if (existsSync(p)) await attempt(`rmdir ${p}`, () => rmdirCgroupTree(p));
    }
    if (state.kubepodsCreatedIn.includes(h)) {
      for (const p of [join(h, 'kubepods/besteffort'), join(h, 'kubepods')]) {
        try {
          rmdirSync(p);
        } catch {
          // still in use by another harness
        }
      }
    }
  }

  for (const p of state.createdGlobals) await rmdir(p).catch(() => undefined);
  const leftMounts = mountsUnder(dir);
  if (leftMounts.length > 0) problems.push(`still mounted, ${dir} kept: ${leftMounts.join(', ')}`);
  else await attempt(`rm ${dir}`, () => rm(dir, { recursive: true, force: true, maxRetries: 3 }));
  return problems;
}

/** Cleans up after harnesses whose test process died without stop(). */
async function sweepStale(): Promise<void> {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith('convis-containerd-')) continue;
    let state: HarnessState;
    try {
      state = JSON.parse(readFileSync(join(tmpdir(), name, 'harness.json'), 'utf8')) as HarnessState;
    } catch {
      continue;
    }
    // the owner is alive: its stop() (or exit handler) cleans up
    if (state.dir !== join(tmpdir(), name) || alive(state.ownerPid)) continue;
    if (containerdRunning(state)) {
      process.kill(state.pid!, 'SIGKILL');
      for (let i = 0; i < 40 && alive(state.pid!); i++) await sleep(50);
    }
    const problems = await cleanUp(state);
    if (problems.length > 0) process.stderr.write(`containerd harness: stale ${state.dir}: ${problems.join('; ')}\n`);
  }
}

/** Starts containerd with CRI; resolves once pods can be run. */
export async function startContainerd(): Promise<Containerd> {
  const why = containerdSkipReason();
  if (why) throw new Error(why);
  await sweepStale();
  const dir = await mkdtemp(join(tmpdir(), 'convis-containerd-'));
  const socket = join(dir, 'containerd.sock');
  const logFile = join(dir, 'containerd.log');
  const { n, bridge } = pickNetwork();
  const subnet = `${NET_BASE}.${n}.0/24`;
  const gateway = `${NET_BASE}.${n}.1`;
  const state: HarnessState = {
    dir,
    socket,
    bridge,
    netName: `convis-test-${n}`,
    ownerPid: process.pid,
    podUids: [],
    sandboxIds: [],
    // global places containerd, CNI and the shims write to
    createdGlobals: [CNI_CACHE, '/var/lib/cni', SHIM_SOCKET_DIR, '/run/containerd'].filter((p) => !existsSync(p)),
    kubepodsCreatedIn: cgroupHierarchies().filter((h) => !existsSync(join(h, 'kubepods'))),
  };
  saveState(state);
  const sandboxConfigs = new Map<string, object>();
  let child: ChildProcess | undefined;
  let runtime: grpc.Client | undefined;
  let images: grpc.Client | undefined;
  let stopped = false;

  // last resort if the test process exits without stop(): no process
  // outlives it (the next start() sweeps mounts, bridge and dirs)
  const onExit = () => {
    const runcRoot = join(dir, 'runc', 'k8s.io');
    try {
      const ids = execFileSync('runc', ['--root', runcRoot, 'list', '-q'], { encoding: 'utf8', timeout: 5000 }).split('\n');
      for (const id of ids.filter(Boolean)) execFileSync('runc', ['--root', runcRoot, 'delete', '--force', id], { timeout: 5000 });
    } catch {
      // nothing to delete
    }
    for (const pid of [...(child?.pid ? [child.pid] : []), ...shimPids(socket)]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  process.on('exit', onExit);

  const call = <T>(client: grpc.Client, method: string, req: object, timeoutMs = CALL_TIMEOUT_MS) =>
    criCall<T>(client, method, req, Date.now() + timeoutMs);

  async function removePod(id: string): Promise<void> {
    await call(runtime!, 'StopPodSandbox', { podSandboxId: id });
    await call(runtime!, 'RemovePodSandbox', { podSandboxId: id });
    sandboxConfigs.delete(id);
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];

    // pods and containers, through CRI, while containerd runs
    if (runtime && child && child.exitCode === null) {
      try {
        const { items } = await call<{ items: { id: string }[] }>(runtime, 'ListPodSandbox', {});
        for (const p of items) await removePod(p.id);
        const { containers } = await call<{ containers: { id: string }[] }>(runtime, 'ListContainers', {});
        for (const c of containers) await call(runtime, 'RemoveContainer', { containerId: c.id });
      } catch (e) {
        problems.push(`remove pods: ${(e as Error).message}`);
      }
    }
    runtime?.close();
    images?.close();

    if (child?.pid && child.exitCode === null) {
      const pid = child.pid;
      child.kill('SIGTERM');
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
      if (alive(pid)) {
        child.kill('SIGKILL');
        for (let i = 0; i < 40 && alive(pid); i++) await sleep(50);
      }
    }
    problems.push(...(await cleanUp(state)));
    process.removeListener('exit', onExit);
    if (problems.length > 0) throw new Error(`containerd harness cleanup: ${problems.join('; ')}`);
  }

  try {
    const snapshotter = await pickSnapshotter(dir);
    const tarball = await buildImages(join(dir, 'image'));
    await mkdir(join(dir, 'cni/net.d'), { recursive: true });
    await mkdir(join(dir, 'cni/ipam'), { recursive: true });
    // the bridge is ours, with the host's address on it: the CNI bridge plugin
    // then only attaches pods (isGateway false), so it changes no sysctl
    await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
    await run('ip', ['addr', 'add', `${gateway}/24`, 'dev', bridge]);
    await run('ip', ['link', 'set', bridge, 'up']);
    await writeFile(
      join(dir, 'cni/net.d/10-convis-test.conflist'),
      JSON.stringify({
        cniVersion: '0.4.0',
        name: state.netName,
        plugins: [
          {
            type: 'bridge',
            bridge,
            isGateway: false,
            ipMasq: false,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet, rangeStart: `${NET_BASE}.${n}.2`, gateway }]],
              dataDir: join(dir, 'cni/ipam'),
            },
          },
        ],
      }),
    );
    await writeFile(join(dir, 'config.toml'), configToml(dir, snapshotter));

    const log = openSync(logFile, 'a');
    // with setpriv, containerd dies with the test process even when that is killed
    const argv = ['containerd', '--config', join(dir, 'config.toml')];
    if (!!which('setpriv')) argv.unshift('setpriv', '--pdeathsig', 'SIGKILL');
    child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    state.pid = child.pid;
    saveState(state);

    runtime = criGrpcClient(socket, 'RuntimeService');
    images = criGrpcClient(socket, 'ImageService');
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`containerd exited (${child.exitCode}):\n${logTail(logFile)}`);
      try {
        if (existsSync(socket)) {
          await call(runtime, 'Version', {}, 1000);
          break;
        }
      } catch (e) {
        // UNIMPLEMENTED: containerd is up but its CRI plugin failed to load
        if ((e as { code?: number }).code === grpc.status.UNIMPLEMENTED) {
          throw new Error(`containerd's CRI plugin did not load:\n${logTail(logFile)}`);
        }
      }
      if (Date.now() > deadline) throw new Error(`containerd not answering after 15 s:\n${logTail(logFile)}`);
      await sleep(50);
    }

    await run('ctr', ['--address', socket, '--namespace', 'k8s.io', 'images', 'import', '--snapshotter', snapshotter, tarball], 60_000);
    await rm(tarball);
    // CRI learns about imported images from events; a sandbox image it does
    // not know yet would make it try a registry pull
    for (const image of [PAUSE_IMAGE, BUSYBOX_IMAGE]) {
      for (let i = 0; ; i++) {
        const r = await call<{ image: { id: string } | null }>(images, 'ImageStatus', { image: { image } }, 5000);
        if (r.image) break;
        if (i >= 100) throw new Error(`CRI does not see the imported ${image}`);
        await sleep(50);
      }
    }

    return {
      socket,
      dir,
      bridge,
      subnet,
      gateway,
      snapshotter,

      async runPod(spec: PodSpec): Promise<RunningPod> {
        if (!state.podUids.includes(spec.uid)) state.podUids.push(spec.uid);
        saveState(state);
        const logDirectory = join(dir, 'pods', spec.uid);
        await mkdir(logDirectory, { recursive: true });
        const config = {
          metadata: { name: spec.name, namespace: spec.namespace, uid: spec.uid, attempt: 0 },
          hostname: spec.name,
          logDirectory,
          labels: {
            'io.kubernetes.pod.name': spec.name,
            'io.kubernetes.pod.namespace': spec.namespace,
            'io.kubernetes.pod.uid': spec.uid,
          },
          annotations: {},
          linux: { cgroupParent: `/kubepods/besteffort/pod${spec.uid}` },
        };
        const { podSandboxId } = await call<{ podSandboxId: string }>(runtime!, 'RunPodSandbox', { config });
        state.sandboxIds.push(podSandboxId);
        saveState(state);
        sandboxConfigs.set(podSandboxId, config);
        const st = await call<CriPodSandboxStatusResponse>(runtime!, 'PodSandboxStatus', { podSandboxId });
        return { sandboxId: podSandboxId, ip: st.status?.network?.ip ?? '' };
      },

      async runContainer(sandboxId: string, spec: ContainerSpec): Promise<RunningContainer> {
        const sandboxConfig = sandboxConfigs.get(sandboxId);
        if (!sandboxConfig) throw new Error(`no pod ${sandboxId} from this harness`);
        const podLabels = (sandboxConfig as { labels: Record<string, string> }).labels;
        const { containerId } = await call<{ containerId: string }>(runtime!, 'CreateContainer', {
          podSandboxId: sandboxId,
          sandboxConfig,
          config: {
            metadata: { name: spec.name, attempt: 0 },
            image: { image: spec.image ?? BUSYBOX_IMAGE },
            command: spec.command,
            logPath: `${spec.name}.log`,
            // the labels a kubelet puts on every container
            labels: { ...podLabels, 'io.kubernetes.container.name': spec.name },
            annotations: {},
          },
        });
        await call(runtime!, 'StartContainer', { containerId });
        const st = await call<CriContainerStatusResponse>(runtime!, 'ContainerStatus', { containerId, verbose: true });
        const pid = Number((JSON.parse(st.info.info ?? '{}') as { pid?: number }).pid);
        if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid for container ${containerId}: ${st.info.info}`);
        return { containerId, pid };
      },

      async stopPod(sandboxId: string): Promise<void> {
        await removePod(sandboxId);
      },

      stop,
    };
  } catch (error) {
    try {
      await stop();
    } catch (cleanup) {
      (error as Error).message += `\n(and ${(cleanup as Error).message})`;
    }
    throw error;
  }
}

export { startContainerd as start };
