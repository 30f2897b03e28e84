/**
 * The one typed Config, parsed and validated once from flags and the
 * environment. Nothing else reads process.argv or process.env.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseSizeBytes } from './size.js';
import { parseDurationMs } from './duration.js';
import { ConfigError } from './errors.js';
import { parseFlags } from './flags.js';
import { parseSinkSpec, type SinkSpec } from './sink-spec.js';
import { secrets } from './secrets.js';
import { parseListenAddress, type ListenAddress } from './listen.js';
import { CMDLINE_MODES, type CmdlineMode } from '../metadata/cmdline.js';

/**
 * Credentials from the environment, for sinks not given them on the command
 * line (which every user of the node can read in /proc) or in a file.
 */
export interface EnvCredentials {
  /** CONVIS_NEWRELIC_KEY: the New Relic insert key */
  newrelicKey?: string;
  /** CONVIS_PROMETHEUS_PASSWORD: the remote-write basic auth password */
  prometheusPassword?: string;
}

/** Sink options whose values are credentials ("header." covers every header.<name>). */
const SECRET_OPTIONS = ['key', 'password', 'header.'];

export interface Config {
  sinks: SinkSpec[];
  verbose: boolean;
  help: boolean;
  version: boolean;
  nodeName: string;
  btfPath?: string;
  procRoot: string;
  sysRoot: string;
  ringBytes: number;
  /** CRI runtime socket; undefined: look for the usual ones */
  criSocket?: string;
  /** podman's API socket; undefined: /run/podman/podman.sock when present */
  podmanSocket?: string;
  /** Docker Engine endpoint from DOCKER_HOST; undefined: /var/run/docker.sock when present */
  dockerHost?: string;
  /** most flows (label sets) the metrics keep; the rest fold into an overflow flow */
  maxFlows: number;
  /** how often open connections and UDP flows report what moved */
  intervalMs: number;
  /** what command lines show in events */
  cmdline: CmdlineMode;
  /** --policy: the rules file to raise alerts from */
  policyFile?: string;
  /** --health-listen: /healthz and /readyz on their own address */
  healthListen?: ListenAddress;
  credentials: EnvCredentials;
}

const MIN_INTERVAL_MS = 1000;
const MAX_INTERVAL_MS = 3_600_000;

const MIB = 1 << 20;

function positiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n <= 0) {
    throw new ConfigError(`${flag} must be a positive whole number, not "${text}"`);
  }
  return n;
}

/**
 * The node's name when neither --node-name nor NODE_NAME gives it: the host
 * name, but the host's, not a container's, when convis runs in a container
 * that shares the host's pid namespace. Pid 1 is then the host's init, in
 * another UTS namespace, and its root holds the host's /etc/hostname; where
 * pid 1 cannot be looked at (an init that is not dumpable), pid 2, kthreadd,
 * which always lives in the host's first namespaces, can.
 */
export function defaultNodeName(procRoot: string, ownHostname: () => string = hostname): string {
  for (const pid of ['1', '2']) {
    try {
      if (readlinkSync(join(procRoot, 'self/ns/uts')) === readlinkSync(join(procRoot, pid, 'ns/uts'))) break;
      const host = readFileSync(join(procRoot, pid, 'root/etc/hostname'), 'utf8').trim();
      if (host) return host;
    } catch {
      // not allowed to look at this pid: try the next
    }
  }
  return ownHostname();
}

/** The ring buffer's size from --ring-buffer SIZE (4KiB to 1GiB) or --ring-buffer-mib N, a power of two (default 8 MiB: at the highest rates measured here, 0.4 s of events). */
function ringBufferBytes(size: string | undefined, mib: string | undefined): number {
  if (size !== undefined && mib !== undefined) throw new ConfigError('give --ring-buffer or --ring-buffer-mib, not both');
  if (mib !== undefined) {
    const n = positiveInt('--ring-buffer-mib', mib);
    if ((n & (n - 1)) !== 0 || n > 1024) throw new ConfigError(`--ring-buffer-mib must be a power of two up to 1024, not ${n}`);
    return n * MIB;
  }
  if (size === undefined) return 8 * MIB;
  const bytes = parseSizeBytes(size) ?? NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 4096 || bytes > 1024 * MIB || (bytes & (bytes - 1)) !== 0) {
    throw new ConfigError(`--ring-buffer must be a power of two from 4KiB to 1GiB (e.g. 64KiB, 16MiB), not ${JSON.stringify(size)}`);
  }
  return bytes;
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const values = parseFlags(argv, {
    sink: { type: 'string', multiple: true },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'V' },
    'node-name': { type: 'string' },
    btf: { type: 'string' },
    'proc-root': { type: 'string' },
    'sys-root': { type: 'string' },
    'ring-buffer-mib': { type: 'string' },
    'ring-buffer': { type: 'string' },
    'cri-socket': { type: 'string' },
    'podman-socket': { type: 'string' },
    'max-flows': { type: 'string' },
    interval: { type: 'string' },
    cmdline: { type: 'string' },
    policy: { type: 'string' },
    'health-listen': { type: 'string' },
  });
  // credentials first, so that no message from here on can show one
  const credentials: EnvCredentials = {};
  if (env.CONVIS_NEWRELIC_KEY) credentials.newrelicKey = env.CONVIS_NEWRELIC_KEY;
  if (env.CONVIS_PROMETHEUS_PASSWORD) credentials.prometheusPassword = env.CONVIS_PROMETHEUS_PASSWORD;
  secrets.add(credentials.newrelicKey);
  secrets.add(credentials.prometheusPassword);
  const sinks = (values.sink ?? ['stdout']).map(parseSinkSpec);
  for (const { options } of sinks) {
    for (const [key, value] of Object.entries(options)) {
      if (SECRET_OPTIONS.some((k) => (k.endsWith('.') ? key.startsWith(k) : key === k))) secrets.add(value);
    }
  }
  const cmdline = (values.cmdline ?? 'redacted') as CmdlineMode;
  if (!CMDLINE_MODES.includes(cmdline)) throw new ConfigError(`--cmdline must be full, redacted or none, not ${JSON.stringify(values.cmdline)}`);
  const ringBytes = ringBufferBytes(values['ring-buffer'], values['ring-buffer-mib']);
  let intervalMs = 10_000;
  if (values.interval !== undefined) {
    const ms = parseDurationMs(values.interval);
    if (ms === undefined) throw new ConfigError(`--interval must be a duration such as 10s, 1m or 30 (seconds), not ${JSON.stringify(values.interval)}`);
    if (ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) throw new ConfigError(`--interval must be between 1s and 1h, not ${values.interval}`);
    intervalMs = ms;
  }
  const procRoot = values['proc-root'] ?? '/proc';
  const nodeName = values['node-name'] ?? env.NODE_NAME ?? defaultNodeName(procRoot);
  if (nodeName.trim() === '') throw new ConfigError('--node-name must not be empty');
  return {
    sinks,
    verbose: values.verbose ?? false,
    help: values.help ?? false,
    version: values.version ?? false,
    nodeName,
    ...(values.btf !== undefined ? { btfPath: values.btf } : {}),
    procRoot,
    sysRoot: values['sys-root'] ?? '/sys',
    ringBytes,
    ...(values['cri-socket'] !== undefined ? { criSocket: values['cri-socket'] } : {}),
    ...(values['podman-socket'] !== undefined ? { podmanSocket: values['podman-socket'] } : {}),
    ...(env.DOCKER_HOST ? { dockerHost: env.DOCKER_HOST } : {}),
    maxFlows: values['max-flows'] === undefined ? 10_000 : positiveInt('--max-flows', values['max-flows']),
    intervalMs,
    cmdline,
    credentials,
    ...(values.policy !== undefined ? { policyFile: values.policy } : {}),
    ...(values['health-listen'] !== undefined ? { healthListen: parseListenAddress(values['health-listen'], '--health-listen') } : {}),
  };
}
