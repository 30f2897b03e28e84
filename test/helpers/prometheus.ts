/**
 * A real Prometheus (Debian's `prometheus` package, 2.42) for tests: on
 * 127.0.0.1 only, on a free port, with a temp TSDB, the remote-write
 * receiver on (POST /api/v1/write), and optionally one scrape job. query()
 * asks it back over the HTTP API.
 *
 * stop() kills it by pid and removes the temp dir; restart() stops and
 * starts it on the same port and data dir (the WAL is replayed, so what
 * was written stays). Every wait is bounded. A process exit hook kills a
 * Prometheus a failed test left behind.
 *
 * Also here: decodeWriteRequest, a remote-write decoder written from the
 * prompb definitions independently of the sink's encoder, for test servers.
 */
import { skipLoudly } from './skip.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import protobuf from 'protobufjs';
import snappy from 'snappyjs';

export const PROMETHEUS_BIN = process.env.CONVIS_PROMETHEUS ?? '/usr/bin/prometheus';
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 10_000;

/** Why a real Prometheus cannot run here, or undefined. */
export function prometheusSkipReason(): string | undefined {
  if (!existsSync(PROMETHEUS_BIN)) {
    return `prometheus is not installed (no ${PROMETHEUS_BIN}; apt-get install --no-install-recommends prometheus)`;
  }
  return undefined;
}

/** Skips loudly: the reason goes to stderr as well as into the test report. */
export function prometheusSkipLoudly(what: string): string | false {
  return skipLoudly(what, prometheusSkipReason());
}

/**
 * One scrape job. Prometheus 2.42 hands new targets to its scrape manager
 * at most every 5 s, so the first scrape lands ~5 s after start whatever
 * the interval: wait with waitFor(), not a fixed sleep.
 */
export interface ScrapeTarget {
  /** host:port serving /metrics, e.g. 127.0.0.1:9400 */
  target: string;
  /** default 1000 */
  intervalMs?: number;
  /** default "convis" */
  job?: string;
  /** default /metrics */
  path?: string;
}

export interface PrometheusOptions {
  scrape?: ScrapeTarget;
}

/** One element of an instant vector, as /api/v1/query returns it. */
export interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface Prometheus {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  /** the remote write endpoint, url + /api/v1/write */
  remoteWriteUrl: URL;
  /** temp dir: config, data (tsdb) and log */
  dir: string;
  pid(): number | undefined;
  /** an instant query, evaluated now (or at timeMs); throws on a query error */
  query(promql: string, timeMs?: number): Promise<VectorSample[]>;
  /** queries until check passes or timeoutMs (default 15 s) runs out; returns the last result */
  waitFor(promql: string, check: (r: VectorSample[]) => boolean, timeoutMs?: number): Promise<VectorSample[]>;
  /** the last lines of its log */
  logTail(lines?: number): string;
  /** stops the process and starts it again on the same port and data dir */
  restart(): Promise<void>;
  /** stops the process only (the data dir stays, for restart or inspection) */
  kill(): Promise<void>;
  /** stops it and removes the temp dir */
  stop(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether `p` settles within ms; the timer never outlives the wait (it would hold the process). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function configYaml(scrape: ScrapeTarget | undefined): string {
  if (!scrape) return 'global:\n  evaluation_interval: 1m\nscrape_configs: []\n';
  // Prometheus durations take no fractions: whole milliseconds
  const every = `${Math.max(Math.round(scrape.intervalMs ?? 1000), 100)}ms`;
  // scrape_timeout must not exceed the interval; its default (10s) would with a short one
  return [
    'global:',
    `  scrape_interval: ${every}`,
    `  scrape_timeout: ${every}`,
    '  evaluation_interval: 1m',
    'scrape_configs:',
    `  - job_name: ${JSON.stringify(scrape.job ?? 'convis')}`,
    `    metrics_path: ${JSON.stringify(scrape.path ?? '/metrics')}`,
    '    static_configs:',
    `      - targets: [${JSON.stringify(scrape.target)}]`,
    '',
  ].join('\n');
}

const live = new Set<ChildProcess>();
let exitHook = false;

function killLeftovers(): void {
  for (const p of live) {
    try {
      if (p.pid) process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function httpGet(url: string, timeoutMs: number): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

/** Starts Prometheus and waits until /-/ready answers 200. */
export async function startPrometheus(options: PrometheusOptions = {}): Promise<Prometheus> {
  const why = prometheusSkipReason();
  if (why) throw new Error(why);
  const dir = await mkdtemp(join(tmpdir(), 'convis-prom-'));
  const configFile = join(dir, 'prometheus.yml');
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'prometheus.log');
  await writeFile(configFile, configYaml(options.scrape));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', killLeftovers);
  }

  let port = 0;
  let child: ChildProcess | undefined;

  const logTail = (lines = 20) => {
    try {
      return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  };

  const kill = async () => {
    const p = child;
    child = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) {
      if (p) live.delete(p);
      return;
    }
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    if (!(await within(exited, STOP_TIMEOUT_MS))) {
      p.kill('SIGKILL');
      await within(exited, 5000);
    }
    live.delete(p);
  };

  const launch = async (): Promise<void> => {
    const fd = openSync(logFile, 'a');
    let p: ChildProcess;
    try {
      p = spawn(
        PROMETHEUS_BIN,
        [
          `--config.file=${configFile}`,
          `--storage.tsdb.path=${dataDir}`,
          `--web.listen-address=127.0.0.1:${port}`,
          '--web.enable-remote-write-receiver',
          '--log.level=info',
        ],
        { stdio: ['ignore', fd, fd], cwd: dir },
      );
    } finally {
      closeSync(fd);
    }
    child = p;
    live.add(p);
    let exited = false;
    p.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited) {
        live.delete(p);
        child = undefined;
        throw new Error(`prometheus exited during start-up (code ${p.exitCode}):\n${logTail()}`);
      }
      try {
        if ((await httpGet(`http://127.0.0.1:${port}/-/ready`, 1000)).status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    await kill();
    throw new Error(`prometheus was not ready within ${START_TIMEOUT_MS / 1000} s:\n${logTail()}`);
  };

  // the free port can be taken between the probe and Prometheus' bind: try a few
  for (let i = 0; ; i++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (e) {
      if (i < 2 && /address already in use/.test(String(e))) continue;
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  const url = `http://127.0.0.1:${port}`;
  const query = async (promql: string, timeMs?: number): Promise<VectorSample[]> => {
    const params = new URLSearchParams({ query: promql });
    if (timeMs !== undefined) params.set('time', String(timeMs / 1000));
    const { status, text } = await httpGet(`${url}/api/v1/query?${params}`, QUERY_TIMEOUT_MS);
    const body = JSON.parse(text) as { status: string; error?: string; data?: { resultType: string; result: VectorSample[] } };
    if (status !== 200 || body.status !== 'success' || !body.data) throw new Error(`query ${promql}: ${status} ${body.error ?? text}`);
    if (body.data.resultType !== 'vector') throw new Error(`query ${promql}: a ${body.data.resultType}, not a vector`);
    return body.data.result;
  };

  return {
    url,
    port,
    remoteWriteUrl: new URL('/api/v1/write', url),
    dir,
    pid: () => child?.pid,
    query,
    async waitFor(promql, check, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      let last: VectorSample[] = [];
      for (;;) {
        last = await query(promql);
        if (check(last) || Date.now() > deadline) return last;
        await sleep(200);
      }
    },
    logTail,
    async restart() {
      await kill();
      await launch();
    },
    kill,
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const PROMPB = `
syntax = "proto3";
package prompb;
message WriteRequest { repeated TimeSeries timeseries = 1; }
message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }
message Label { string name = 1; string value = 2; }
message Sample { double value = 1; int64 timestamp = 2; }
`;
const WriteRequestType = protobuf.parse(PROMPB).root.lookupType('prompb.WriteRequest');

export interface DecodedSeries {
  labels: { name: string; value: string }[];
  samples: { value: number; timestamp: number }[];
}

/** A remote-write body (snappy block format, protobuf) back to plain objects. */
export function decodeWriteRequest(body: Buffer): DecodedSeries[] {
  const proto = snappy.uncompress(body, 64 << 20);
  const msg = WriteRequestType.toObject(WriteRequestType.decode(proto), { longs: Number, defaults: true, arrays: true }) as {
    timeseries: DecodedSeries[];
  };
  return msg.timeseries;
}
