/**
 * convis entry point: wiring only. config -> tracer -> enrich -> sinks.
 */
import { readFileSync } from 'node:fs';
import { parseConfig, type Config } from '../config/config.js';
import { ConfigError } from '../config/errors.js';
import { FlowTable } from '../aggregate/flows.js';
import { ListenerTable } from '../aggregate/listeners.js';
import { Registry } from '../aggregate/registry.js';
import { CgroupIndex, findCgroup2Root } from '../metadata/cgroup-index.js';
import { Containers } from '../metadata/containers.js';
import { Enricher } from '../metadata/enrich.js';
import { DnsNames } from '../metadata/dns.js';
import { netnsPaths } from '../metadata/netns.js';
import { openRuntimes } from '../metadata/runtimes.js';
import { KindCounts } from '../pipeline/kind-counts.js';
import { Pipeline } from '../pipeline/pipeline.js';
import { ProcessCache } from '../metadata/process-cache.js';
import { createSinks, parseSinkSpecs, sinkHelp } from '../sinks/index.js';
import type { Sink } from '../sinks/sink.js';
import { BpfError } from '../tracer/errors.js';
import { Tracer } from '../tracer/tracer.js';
import { checkPrivileges } from '../tracer/preflight.js';
import { createLogger, type Logger } from '../util/log.js';
import { secrets } from '../config/secrets.js';
import { PolicyAlerts } from '../policy/alerts.js';
import type { Policy } from '../policy/policy.js';
import { Health, progressWatch } from '../health/health.js';
import { HealthServer } from '../health/http.js';

// the policy (YAML, globs) and the flow log (SQLite) are loaded only when
// used: every agent would otherwise pay for them in memory

/** The policy at start: a file that does not load stops convis (exit 2). */
async function loadPolicy(file: string): Promise<Policy> {
  const { Policy, PolicyError } = await import('../policy/policy.js');
  try {
    return Policy.load(file);
  } catch (e) {
    throw e instanceof PolicyError ? new ConfigError(e.message) : e;
  }
}

/** `text` without any credential convis was given (for the last-resort error line of bin/convis). */
export const scrubSecrets = (text: string): string => secrets.scrub(text);

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const HELP = `convis: every TCP connection and UDP flow on this node, with the process, container and pod behind it

Usage: convis [--sink SPEC]... [options]
       convis query --db FILE [filters]     search a flow log (convis query --help)

Options:
  --sink TYPE[,key=value]...  where events go; may be repeated (default: stdout)
  --node-name NAME            node name on every event (default: $NODE_NAME, else the host name)
  --btf FILE                  BTF to read CO-RE relocations from (the kernel still needs its own BTF)
  --proc-root DIR             procfs to read processes from (default: /proc)
  --sys-root DIR              sysfs root (default: /sys)
  --ring-buffer SIZE          kernel-to-agent ring buffer size, a power of two from 4KiB to 1GiB (default: 8MiB)
  --ring-buffer-mib N         the same in MiB
  --cri-socket PATH           CRI runtime socket (default: containerd's or CRI-O's usual one, if present)
  --podman-socket PATH        podman API socket (default: /run/podman/podman.sock, if present)
  --max-flows N               most flows the metrics keep; more fold into an overflow flow (default: 10000)
  --interval DURATION         how often open connections and UDP flows report the bytes they moved (default: 10s, at least 1s)
  --cmdline MODE              command lines in events: redacted (default: secret-bearing arguments masked), full or none
  --policy FILE               rules (YAML) of what workloads may talk to; an alert event for every connection they do not permit
                              (reloaded on SIGHUP)
  --health-listen HOST:PORT   serve /healthz and /readyz here (a metrics sink serves them on its listener too)
  -v, --verbose               log what the agent does
  -h, --help                  this text
  -V, --version               the version

Sinks:
${sinkHelp()}

Credentials never appear in what convis writes or sends (its own command line is reported with them
masked). They can come from files (key_file=, password_file=, header_file.<name>=, bearer_token_file=)
or from $CONVIS_NEWRELIC_KEY and $CONVIS_PROMETHEUS_PASSWORD instead of the command line.

Docker is found through $DOCKER_HOST, else /var/run/docker.sock.

Needs Linux with BTF, run as root (or with CAP_SYS_ADMIN and CAP_SYS_PTRACE).
`;


async function run(config: Config, log: Logger): Promise<number> {
  // a missing capability is the first and only line, before sinks and runtimes say anything
  checkPrivileges(readFileSync('/proc/self/status', 'utf8'), process.getuid?.() ?? -1);
  const parsedSinks = parseSinkSpecs(config.sinks, config.credentials);
  const counts = new KindCounts();
  // filled in below; the registry reads them only when it is collected
  let tracer: Tracer | undefined;
  let containers: Containers | undefined;
  let processes: ProcessCache | undefined;
  let dns: DnsNames | undefined;
  let pipeline: Pipeline | undefined;
  let cgroups: CgroupIndex | undefined;
  let sinks: Sink[] = [];

  // a bad policy is a usage error, found before anything is loaded
  const policy = config.policyFile !== undefined ? new PolicyAlerts(await loadPolicy(config.policyFile), config.nodeName) : undefined;
  const wantsMetrics = parsedSinks.some((p) => p.metrics);
  const flows = wantsMetrics ? new FlowTable({ maxFlows: config.maxFlows }) : undefined;
  const listeners = wantsMetrics ? new ListenerTable() : undefined;
  const registry = new Registry({
    flows: flows ?? new FlowTable(),
    ...(listeners ? { listeners } : {}),
    node: config.nodeName,
    ...(policy ? { violations: () => policy.violations() } : {}),
    health: () => {
      const t = tracer?.stats();
      const c = containers?.stats();
      return {
        events: counts.get(),
        lost: { connection: t?.lostConnEvents ?? 0, process: t?.lostProcEvents ?? 0, dns: t?.lostDnsAnswers ?? 0 },
        untrackedSockets: t?.untrackedSockets ?? 0,
        uncountedDatagrams: t?.uncountedDatagrams ?? 0,
        deferredUpdates: t?.deferredUpdates ?? 0,
        sinks: sinks.map((s) => ({ name: s.name, ...s.stats() })),
        containers: { lookups: c?.lookups ?? 0, unknown: c?.unknown ?? 0, runtimeErrors: c?.runtimeErrors ?? 0 },
        evictions: {
          processes: processes?.stats().evicted ?? 0,
          containers: c?.evicted ?? 0,
          unknown_containers: c?.unknownEvicted ?? 0,
          cgroups: cgroups?.evicted ?? 0,
          dns_names: dns?.stats().evicted ?? 0,
        },
        releasedBatches: pipeline?.stats().released ?? 0,
        cmdlinesTruncated: processes?.stats().cmdTruncated ?? 0,
      };
    },
  });

  // read at probe time: the poll thread must live and its sweeps keep coming
  let sweepsStale: (() => number | undefined) | undefined;
  const health = new Health({
    kernel: () => {
      if (!tracer) return undefined;
      if (tracer.failed) return 'the poll thread stopped';
      const t = tracer;
      sweepsStale ??= progressWatch(() => t.stats().sweeps, 3 * config.intervalMs + 10_000);
      const ms = sweepsStale();
      return ms === undefined ? undefined : `no sweep for ${Math.round(ms / 1000)} s (every ${config.intervalMs / 1000} s expected)`;
    },
    sinks: () => sinks.filter((s) => s.failingForMs).map((s) => ({ name: s.name, failingForMs: s.failingForMs?.() ?? 0 })),
  });

  let stopping: Promise<void> | undefined;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  sinks = await createSinks(parsedSinks, {
    log,
    metrics: registry,
    health,
    onClosed: (name, err) => {
      health.sinkStopped(name, err.message);
      // a reader that went away (convis | head) is a normal end; anything else is worth a line
      if ((err as NodeJS.ErrnoException).code === 'EPIPE') log.debug(`sink ${name}: reader closed; stopping`);
      else log.info(`sink ${name} failed (${err.message}); stopping`);
      void shutdown();
    },
  });
  // the cgroup v2 tree: the UDP peer hooks attach to its root, the container index walks it
  const cgroupPath = findCgroup2Root(config.procRoot);
  // runtimes before the kernel side: a bad DOCKER_HOST is a usage error, found first
  let runtimes: Awaited<ReturnType<typeof openRuntimes>>;
  let healthServer: HealthServer | undefined;
  try {
    if (config.healthListen) healthServer = await HealthServer.start(config.healthListen, health, log);
    runtimes = await openRuntimes(config, log);
    tracer = Tracer.open({
      ringBytes: config.ringBytes,
      sysRoot: config.sysRoot,
      sweepMs: config.intervalMs,
      ...(cgroupPath ? { cgroupPath } : {}),
      ...(config.btfPath ? { btfPath: config.btfPath } : {}),
    });
    if (!cgroupPath) log.info('no cgroup v2 hierarchy: the peers of unconnected UDP sockets will be unknown');
  } catch (e) {
    await Promise.all([...sinks.map((s) => s.close()), healthServer?.close()]);
    throw e;
  }
  const t = tracer;

  processes = new ProcessCache({ procRoot: config.procRoot, cmdline: config.cmdline });
  if (cgroupPath) cgroups = new CgroupIndex({ root: cgroupPath });
  containers = new Containers({ ...runtimes, log, ...(cgroups ? { cgroups } : {}) });
  dns = new DnsNames();
  // remote names are shown only by sinks of events and used by policy domains: metrics-only agents do not look them up per event
  const wantsNames = parsedSinks.some((p) => p.events) || policy !== undefined;
  const enricher = new Enricher({ processes, containers, node: config.nodeName, clockOffset: t.clockOffset, ...(wantsNames ? { dns } : {}) });
  const pipe = new Pipeline({ enricher, containers, sinks, ...(flows ? { flows } : {}), ...(listeners ? { listeners } : {}), ...(policy ? { policy } : {}) });
  pipeline = pipe;
  // SIGHUP reloads the policy; one that does not load leaves the old one in force
  const reload = async () => {
    if (!policy) {
      log.info('SIGHUP: no --policy to reload');
      return;
    }
    const { Policy } = await import('../policy/policy.js');
    try {
      policy.replace(Policy.load(policy.policy.file));
      log.info(`policy ${policy.policy.file} reloaded: ${policy.policy.rules.length} rules`);
    } catch (e) {
      log.info(`${(e as Error).message}; kept the policy in force`);
    }
  };
  const onHup = () => void reload();
  process.on('SIGHUP', onHup);

  let firstBatch = true;
  t.start((records) => {
    counts.add(records);
    pipe.push(records);
    if (firstBatch) {
      firstBatch = false;
      // ready once the first batch has reached the sinks
      void pipe.drain().then(() => health.markBatch());
    }
  });
  health.markAttached();
  // after attach, so no process can slip between the scan and the exec events
  processes.scan();
  // after the scan, so the owners of existing sockets are known processes
  const snapshot = t.snapshot(netnsPaths(config.procRoot));
  if (snapshot.failed > 0) log.debug(`snapshot: ${snapshot.failed} network namespaces not walked (first: ${snapshot.error})`);
  const gcTimer = setInterval(() => processes.gc(Date.now()), 30_000);
  gcTimer.unref();

  log.info(`ready: ${t.programs.length} programs attached, node ${config.nodeName}, sinks ${config.sinks.map((s) => s.type).join(', ')}`);
  log.debug(`programs: ${t.programs.join(', ')}`);

  let lostReported = 0;
  const warnLost = () => {
    const s = t.stats();
    const lost = s.lostConnEvents + s.lostProcEvents;
    if (lost > lostReported) {
      const b = s.bridgeLost;
      const bridge = b.connection + b.process;
      log.warn(
        `lost ${lost - lostReported} events (${lost} since start: ${s.lostConnEvents} connection, ${s.lostProcEvents} process` +
          `${bridge > 0 ? `; ${bridge} of them in the native bridge` : ''}); the agent fell behind: raise --ring-buffer`,
      );
      lostReported = lost;
    }
  };
  const healthTimer = setInterval(warnLost, 5_000);
  healthTimer.unref();

  function shutdown(): Promise<void> {
    stopping ??= (async () => {
      clearInterval(gcTimer);
      clearInterval(healthTimer);
      process.off('SIGHUP', onHup);
      await t.stop();
      warnLost();
      await pipe.drain();
      // metrics sinks take their final snapshot here
      await Promise.all([...sinks.map((s) => s.close()), healthServer?.close()]);
      for (const r of runtimes.runtimes) r.close();
      resolveDone();
    })();
    return stopping;
  }
  // a second signal gets the default action: immediate exit
  process.once('SIGINT', () => void shutdown());
  process.once('SIGTERM', () => void shutdown());
  await done;

  const s = t.stats();
  const summary = {
    events: counts.get(),
    lost: s.lostConnEvents + s.lostProcEvents,
    lost_conn_events: s.lostConnEvents,
    lost_proc_events: s.lostProcEvents,
    lost_in_bridge: s.bridgeLost,
    untracked_sockets: s.untrackedSockets,
    uncounted_datagrams: s.uncountedDatagrams,
    deferred_updates: s.deferredUpdates,
    sweeps: s.sweeps,
    sweep_races: s.sweepRaces,
    snapshot_namespaces: snapshot.namespaces,
    malformed: s.malformed,
    processes: processes.stats(),
    containers: containers.stats(),
    dns: dns.stats(),
    lost_dns_answers: s.lostDnsAnswers,
    pipeline: pipe.stats(),
    ...(flows ? { flows: flows.size, flows_folded: flows.folded } : {}),
    ...(policy ? { alerts: policy.alerts } : {}),
    sinks: Object.fromEntries(sinks.map((k) => [k.name, k.stats()])),
  };
  log.info(`summary ${JSON.stringify(summary)}`);
  return 0;
}

/** `convis query ...`: one line and status 2 for a usage error, 1 for a flow log that cannot be read. */
async function query(argv: string[], log: Logger): Promise<number> {
  const { runQuery } = await import('../flowlog/query.js');
  const { FlowLogError } = await import('../flowlog/db.js');
  try {
    return runQuery(argv, (text) => process.stdout.write(text));
  } catch (e) {
    if (e instanceof ConfigError) {
      log.info(`${e.message} (see convis query --help)`);
      return 2;
    }
    if (e instanceof FlowLogError || (e as { code?: string }).code?.startsWith('SQLITE_')) {
      log.info(`query: ${(e as Error).message.split('\n')[0]}`);
      return 1;
    }
    throw e;
  }
}

export async function main(argv: string[]): Promise<number> {
  let log = createLogger(false);
  if (argv[0] === 'query') return query(argv.slice(1), log);
  try {
    const config = parseConfig(argv, process.env);
    log = createLogger(config.verbose);
    if (config.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (config.version) {
      process.stdout.write(`convis ${version()}\n`);
      return 0;
    }
    return await run(config, log);
  } catch (e) {
    if (e instanceof ConfigError) {
      log.info(`${e.message} (see convis --help)`);
      return 2;
    }
    if (e instanceof BpfError) {
      log.info(e.message);
      if (e.detail) log.debug(`libbpf said:\n${e.detail.trimEnd()}`);
      return 1;
    }
    if (e instanceof RangeError || e instanceof TypeError) {
      log.info(e.message);
      return 2;
    }
    throw e;
  }
}
