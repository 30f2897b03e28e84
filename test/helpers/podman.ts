/**
 * A real podman 4.3 (Debian's podman + containernetworking-plugins) for
 * privileged tests, with its Docker-compatible API served on a socket under
 * a temp dir (`podman system service`).
 *
 * Everything podman keeps lives under the temp dir: --root, --runroot,
 * --tmpdir, the network config dir, and a containers.conf of its own
 * (CONTAINERS_CONF, so the host's is not read), with cgroupfs and the file
 * events backend as ../shared/RUNTIMES.md prescribes. Images are imported
 * locally and every run has --pull=never and explicit ulimits.
 *
 * Networking: one CNI network, written by the harness, with only the bridge
 * plugin on a bridge the harness made (cvp<N>, 10.232.<N>.1/24) and
 * isGateway/ipMasq off, and host-local IPAM keeping its leases under the
 * temp dir. So no firewall/portmap chains, no masquerading and no
 * ip_forward change; containers reach each other over the bridge and the
 * host at the bridge address. The CNI defaults (cni-podman0, 10.88.0.0/16,
 * with MASQUERADE and CNI-FORWARD rules that nothing removes) are never used.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  buildRootfsTar,
  cgroupDirs,
  commonSkipReason,
  createBridge,
  deleteBridge,
  HostState,
  killPid,
  labelFlags,
  makeTempDir,
  pidsInCgroup,
  pidsMentioning,
  removeCgroupDirs,
  removeTree,
  runCommand,
  stopChild,
  TEST_IMAGE,
  tryRun,
  waitForApi,
  which,
  type RunningContainer,
  type RunOptions,
  type TestBridge,
} from './dockerd.js';

/** podman names a locally imported image under localhost/ */
export const PODMAN_TEST_IMAGE = `localhost/${TEST_IMAGE}`;

const CNI_PLUGIN_DIR = '/usr/lib/cni';
const ULIMITS = ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=1024:1024'];

export interface Podman {
  /** the Docker-compatible API socket path */
  socket: string;
  /** the podman command line with the harness's global flags, and its environment */
  argv: string[];
  env: NodeJS.ProcessEnv;
  bridge: TestBridge;
  /** the CNI network every container joins */
  network: string;
  image: string;
  /** podman run -d --pull=never <ulimits> --network <net> --name <name> [labels] [flags] <image> <command...> */
  run(name: string, command: string[], options?: RunOptions): Promise<RunningContainer>;
  /** podman rm -f -t 0 */
  rm(id: string): Promise<void>;
  /** stops everything it started and restores the host; throws listing anything left behind */
  stop(): Promise<void>;
}

/** Why a real podman cannot run here, or undefined when it can. */
export function podmanSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!which('podman')) return 'podman is not installed (apt-get install podman)';
  for (const plugin of ['bridge', 'host-local']) {
    if (!existsSync(join(CNI_PLUGIN_DIR, plugin))) return `the CNI ${plugin} plugin is missing (apt-get install containernetworking-plugins)`;
  }
  return commonSkipReason();
}

/** Imports the test image, starts the API service and waits until it answers. */
export async function startPodman(): Promise<Podman> {
  const why = podmanSkipReason();
  if (why) throw new Error(`cannot start podman: ${why}`);
  const host = HostState.record([
    '/var/lib/containers',
    '/var/lib/cni',
    '/var/lib/cni/results',
    '/run/runc',
    '/run/crun',
    '/dev/shm/libpod_lock',
    ...cgroupDirs('libpod_parent'),
    ...cgroupDirs('libpod_parent/conmon'),
  ]);
  const dir = makeTempDir('convis-podman-');
  const socket = join(dir, 'podman.sock');
  const env: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf') };
  const argv = [
    which('podman')!,
    '--root', join(dir, 'root'),
    '--runroot', join(dir, 'run'),
    '--tmpdir', join(dir, 'tmp'),
    '--network-config-dir', join(dir, 'net.d'),
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
  const podman = (args: string[], timeoutMs = 30_000) => runCommand(argv[0]!, [...argv.slice(1), ...args], { env, timeoutMs });
  const ids = new Set<string>();
  const netnsPaths = new Set<string>();
  let bridge: TestBridge | undefined;
  let network = '';
  let service: ChildProcess | undefined;
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];
    const all = await tryRun(argv[0]!, [...argv.slice(1), 'ps', '-aq', '--no-trunc'], { env, timeoutMs: 10_000 });
    for (const id of all?.split('\n').filter(Boolean) ?? []) ids.add(id);
    // rm runs CNI DEL (veth, lease, cache) and unmounts; -t 0: no grace for sleepers
    if (ids.size) await tryRun(argv[0]!, [...argv.slice(1), 'rm', '-f', '-t', '0', ...ids], { env, timeoutMs: 30_000 });
    if (service) await stopChild(service, 5_000);
    // conmon, and what runs in containers whose conmon is gone
    for (const pid of pidsMentioning(dir)) await killPid(pid, 0);
    for (const id of ids) for (const pid of pidsInCgroup(`libpod_parent/libpod-${id}`)) await killPid(pid, 0);
    for (const ns of netnsPaths) problems.push(...removeTree(ns));
    for (const id of ids) {
      rmSync(`/var/lib/cni/results/${network}-${id}-eth0`, { force: true });
      for (const state of ['/run/runc', '/run/crun']) rmSync(join(state, id), { force: true, recursive: true });
    }
    problems.push(...removeTree(dir));
    for (const id of ids) removeCgroupDirs(`libpod_parent/libpod-${id}`);
    host.rmdirIfNew([...cgroupDirs('libpod_parent/conmon'), ...cgroupDirs('libpod_parent'), '/var/lib/cni/results', '/var/lib/cni', '/run/runc', '/run/crun']);
    // the blob-info cache that `podman import` writes outside --root
    host.removeIfNew(['/var/lib/containers', '/dev/shm/libpod_lock']);
    if (bridge) problems.push(...deleteBridge(bridge.name));
    problems.push(...host.restoreNetwork(bridge ? [bridge.name, bridge.subnet] : [], /^(CNI-|NETAVARK)/));
    if (problems.length) throw new Error(`podman harness left the host changed: ${problems.join('; ')}`);
  };

  try {
    bridge = createBridge('cvp', 232);
    network = `convis-${bridge.name}`;
    for (const d of ['net.d', 'tmp']) mkdirSync(join(dir, d));
    writeFileSync(
      join(dir, 'containers.conf'),
      [
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `tmp_dir = "${join(dir, 'tmp')}"`,
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ["${CNI_PLUGIN_DIR}"]`,
        `network_config_dir = "${join(dir, 'net.d')}"`,
        `default_network = "${network}"`,
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'net.d', `${network}.conflist`), `${JSON.stringify(cniConfig(network, bridge, join(dir, 'ipam')), null, 2)}\n`);
    await podman(['import', buildRootfsTar(join(dir, 'image')), TEST_IMAGE]);
    const log = openSync(join(dir, 'service.log'), 'a');
    service = spawn(argv[0]!, [...argv.slice(1), 'system', 'service', '--time=0', `unix://${socket}`], { env, stdio: ['ignore', log, log] });
    closeSync(log);
    service.on('error', () => {});
    await waitForApi(socket, 'podman', service, join(dir, 'service.log'));
  } catch (e) {
    await stop().catch((cleanup: Error) => process.stderr.write(`${cleanup.message}\n`));
    throw e;
  }

  const testBridge = bridge;
  return {
    socket,
    argv,
    env,
    bridge: testBridge,
    network,
    image: PODMAN_TEST_IMAGE,
    async run(name, command, options = {}) {
      const args = ['run', '-d', '--pull=never', ...ULIMITS, '--network', network, '--name', name, ...labelFlags(options.labels), ...(options.flags ?? [])];
      const id = (await podman([...args, PODMAN_TEST_IMAGE, ...command])).trim().split('\n').pop()!;
      ids.add(id);
      const out = await podman(['inspect', '--format', '{{.Id}} {{.State.Pid}} {{.NetworkSettings.IPAddress}} {{.NetworkSettings.SandboxKey}}', id], 10_000);
      const [fullId = '', pid = '', ip = '', netns = ''] = out.trim().split(/\s+/);
      if (netns) netnsPaths.add(netns);
      if (!/^[0-9a-f]{64}$/.test(fullId) || !(Number(pid) > 0)) throw new Error(`container ${name} is not running: ${out.trim()}`);
      return { id: fullId, pid: Number(pid), ip };
    },
    async rm(id) {
      await podman(['rm', '-f', '-t', '0', id]);
    },
    stop,
  };
}

/** A CNI network of one bridge plugin on an existing bridge: no gateway setup, no NAT, no firewall chains. */
function cniConfig(name: string, bridge: TestBridge, ipamDir: string): unknown {
  return {
    cniVersion: '0.4.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge: bridge.name,
        // the harness gave the bridge its address; isGateway would also set ip_forward=1
        isGateway: false,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          dataDir: ipamDir,
          routes: [{ dst: '0.0.0.0/0' }],
          ranges: [[{ subnet: bridge.subnet, gateway: bridge.gateway }]],
        },
      },
    ],
  };
}

