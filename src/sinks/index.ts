/**
 * The sink registry: which --sink types exist, their keys, validation at
 * start-up (before anything is loaded) and construction. A type is listed
 * here only when it is implemented. Sinks with heavy dependencies are
 * imported when one is made, so an agent pays in memory only for the sinks
 * it runs.
 */
import type { MetricsSource } from '../aggregate/metrics.js';
import { ConfigError } from '../config/errors.js';
import type { SinkSpec } from '../config/sink-spec.js';
import type { EnvCredentials } from '../config/config.js';
import type { Logger } from '../util/log.js';
import type { Health } from '../health/health.js';
import { MetricsEndpoint, parseListen } from './metrics-endpoint.js';
import { NEW_RELIC_SPEC_KEYS, NewRelicSink, parseNewRelicOptions, type NewRelicOptions } from './newrelic.js';
import { parsePrometheusOptions, type PrometheusSinkOptions } from './prometheus/options.js';
import type { Sink } from './sink.js';
import { DEFAULT_STDOUT_BUFFER_BYTES, StdoutSink, type StdoutFormat } from './stdout.js';
import { parseSizeBytes } from '../config/size.js';
import { DEFAULT_FLOWLOG_MAX_QUEUE, FlowLogSink, parseFlowLogOptions, type FlowLogOptions } from '../flowlog/sink.js';

export interface SinkContext {
  log: Logger;
  /** the metrics registry (flows and health), for sinks that export metrics */
  metrics: MetricsSource;
  /** called when a sink's output is gone for good (e.g. stdout closed by its reader) */
  onClosed: (sink: string, err: Error) => void;
  /** the agent's health, served on the metrics listener as /healthz and /readyz */
  health?: Health;
}

interface SinkType<T> {
  /** key -> description, for --help ("header.<name>" style keys included as written) */
  keys: Record<string, string>;
  /** whether it reads the metrics registry (so flows must be aggregated) */
  metrics: boolean;
  /** whether it shows events themselves (so they need what only events carry: remote DNS names) */
  events: boolean;
  /** validates and converts; throws ConfigError with one line that names no secret */
  parse(options: Record<string, string>, env: EnvCredentials): T;
  create(parsed: T, ctx: SinkContext): Sink | Promise<Sink>;
}

/** Rejects keys the type does not have (prefix keys such as "header." end in a dot). */
export function checkKeys(type: string, options: Record<string, string>, keys: readonly string[]): void {
  for (const key of Object.keys(options)) {
    const known = keys.some((k) => (k.endsWith('.') ? key.startsWith(k) && key.length > k.length : key === k));
    if (!known) throw new ConfigError(`--sink ${type}: unknown option "${key}" (known: ${keys.map((k) => (k.endsWith('.') ? `${k}<name>` : k)).join(', ')})`);
  }
}

const stdout: SinkType<{ format: StdoutFormat; maxBufferBytes: number }> = {
  keys: {
    format: 'text (default) or json',
    max_buffer: `output held for a reader that is not reading (default 16MiB); past it, events are dropped and counted`,
  },
  metrics: false,
  events: true,
  parse(o) {
    checkKeys('stdout', o, ['format', 'max_buffer']);
    const format = o.format ?? 'text';
    if (format !== 'text' && format !== 'json') throw new ConfigError(`--sink stdout: format must be text or json, not "${format}"`);
    const maxBufferBytes = o.max_buffer === undefined ? DEFAULT_STDOUT_BUFFER_BYTES : parseSizeBytes(o.max_buffer);
    if (maxBufferBytes === undefined || maxBufferBytes < 64 * 1024) {
      throw new ConfigError(`--sink stdout: max_buffer must be a size of at least 64KiB, such as 16MiB, not ${JSON.stringify(o.max_buffer)}`);
    }
    return { format, maxBufferBytes };
  },
  create: (p, ctx) => new StdoutSink({ format: p.format, maxBufferBytes: p.maxBufferBytes, log: ctx.log, onClosed: (err) => ctx.onClosed('stdout', err) }),
};

const metrics: SinkType<{ host: string; port: number }> = {
  keys: { listen: 'HOST:PORT to serve /metrics on (Prometheus text format), and /healthz and /readyz, e.g. 127.0.0.1:9400 or :9400' },
  metrics: true,
  events: false,
  parse(o) {
    checkKeys('metrics', o, ['listen']);
    if (o.listen === undefined) throw new ConfigError('--sink metrics needs listen=HOST:PORT');
    return parseListen(o.listen);
  },
  create: (p, ctx) => MetricsEndpoint.start(p, ctx.metrics, ctx.log, ctx.health),
};

const prometheus: SinkType<PrometheusSinkOptions> = {
  keys: {
    endpoint: 'remote-write URL, required (e.g. http://prometheus:9090/api/v1/write)',
    username: 'HTTP basic auth user (with password)',
    password: 'HTTP basic auth password (never printed); or password_file=, or $CONVIS_PROMETHEUS_PASSWORD',
    password_file: 'file holding the password, read at start',
    bearer_token_file: 'file holding a bearer token, read at each send',
    'header.': 'an extra header, e.g. header.X-Scope-OrgID=tenant (values never printed)',
    'header_file.': 'an extra header whose value is in a file, read at start',
    interval: 'how often counters are sent, e.g. 10s (default), 500ms, 1m',
  },
  metrics: true,
  events: false,
  parse: parsePrometheusOptions,
  // loaded only when used: protobufjs and snappy cost memory every agent would pay
  create: async (p, ctx) => new (await import('./prometheus/sink.js')).PrometheusSink(p, { source: ctx.metrics, log: ctx.log }),
};

const newrelic: SinkType<NewRelicOptions> = {
  keys: { ...NEW_RELIC_SPEC_KEYS },
  metrics: false,
  events: true,
  parse: parseNewRelicOptions,
  create: (p, ctx) => new NewRelicSink(p, { log: ctx.log }),
};

const flowlog: SinkType<FlowLogOptions> = {
  keys: {
    path: 'SQLite file to keep every connection in, for convis query, required',
    retain: 'how long rows are kept after a connection was last seen (default 7d)',
    max_size: 'the most the file may take, oldest rows deleted first (default 1GiB)',
    max_queue: `events waiting for the writer thread, at most (default ${DEFAULT_FLOWLOG_MAX_QUEUE}); past it, events are dropped and counted`,
  },
  metrics: false,
  events: true,
  parse: (o) => parseFlowLogOptions(o),
  create: async (p, ctx) => {
    try {
      return await FlowLogSink.open(p, ctx.log);
    } catch (e) {
      throw new ConfigError(`--sink flowlog: cannot use ${JSON.stringify(p.path)} (${(e as Error).message.split('\n')[0]})`);
    }
  },
};

// each entry's parse and create agree on its own option type
const TYPES: Record<string, SinkType<never>> = {
  stdout: stdout as SinkType<never>,
  metrics: metrics as SinkType<never>,
  prometheus: prometheus as SinkType<never>,
  newrelic: newrelic as SinkType<never>,
  flowlog: flowlog as SinkType<never>,
};

export const sinkTypes = (): string[] => Object.keys(TYPES);

export interface ParsedSink {
  type: string;
  parsed: unknown;
  metrics: boolean;
  events: boolean;
}

/** Checks every spec; throws ConfigError with one sentence. */
export function parseSinkSpecs(specs: readonly SinkSpec[], env: EnvCredentials = {}): ParsedSink[] {
  return specs.map((spec) => {
    const t = TYPES[spec.type];
    if (!t) throw new ConfigError(`unknown sink type "${spec.type}" (available: ${sinkTypes().join(', ')})`);
    return { type: spec.type, parsed: t.parse(spec.options, env), metrics: t.metrics, events: t.events };
  });
}

export async function createSinks(parsed: readonly ParsedSink[], ctx: SinkContext): Promise<Sink[]> {
  const sinks: Sink[] = [];
  try {
    for (const p of parsed) sinks.push(await (TYPES[p.type] as SinkType<unknown>).create(p.parsed, ctx));
  } catch (e) {
    await Promise.all(sinks.map((s) => s.close()));
    throw e;
  }
  return sinks;
}

/** "--sink" help text: each type and its keys. */
export function sinkHelp(): string {
  return Object.entries(TYPES)
    .map(([name, t]) => `  ${name}${Object.entries(t.keys).map(([k, d]) => `\n      ${k.endsWith('.') ? `${k}<name>` : k}=  ${d}`).join('')}`)
    .join('\n');
}
