/**
 * The one metrics registry: flow counters and the agent's own health, as
 * Prometheus families. /metrics renders it as text; remote write encodes the
 * same snapshot. Names follow Prometheus conventions: snake_case, units in
 * the name, counters ending in _total.
 */
import type { FlowCounters, FlowTable } from './flows.js';
import type { ListenerTable } from './listeners.js';
import type { MetricFamily, MetricSample, MetricsSource, MetricType } from './metrics.js';

/** The agent's own counters, read at each collect(). */
export interface Health {
  /** kernel records by kind (connect, accept, close, connect_failed, exec, exit, fork) */
  events: Record<string, number>;
  /** events the kernel could not deliver, by what they were */
  lost: { connection: number; process: number; dns?: number };
  /** sockets not tracked because the kernel's socket map was full */
  untrackedSockets: number;
  /** UDP datagrams not counted because the kernel's UDP flow map was full */
  uncountedDatagrams: number;
  /** updates the ring buffer could not take; their bytes went with a later sweep */
  deferredUpdates: number;
  sinks: { name: string; sent: number; dropped: number; failed?: number; queueDepth?: number }[];
  containers: { lookups: number; unknown: number; runtimeErrors: number };
  /** entries each bounded cache forgot to stay within its bound, by cache */
  evictions?: Record<string, number>;
  /** batches sent on before their container lookups finished because the pipeline's backlog was full */
  releasedBatches?: number;
  /** command lines cut to their cap */
  cmdlinesTruncated?: number;
}

const FLOW_FAMILIES: { name: string; help: string; proto: 'tcp' | 'udp'; counter: keyof FlowCounters }[] = [
  { name: 'convis_tcp_connections_total', proto: 'tcp', help: 'TCP connections established while convis ran: connected (outbound) or accepted (inbound).', counter: 'connections' },
  { name: 'convis_tcp_connect_failures_total', proto: 'tcp', help: 'Outbound TCP connects that failed (refused, timed out, reset, unreachable, no route).', counter: 'connectFailures' },
  { name: 'convis_tcp_bytes_sent_total', proto: 'tcp', help: 'TCP payload bytes sent, retransmissions excluded, counted while connections are open (every report interval) and at close.', counter: 'bytesSent' },
  { name: 'convis_tcp_bytes_received_total', proto: 'tcp', help: 'TCP payload bytes received, counted while connections are open (every report interval) and at close.', counter: 'bytesReceived' },
  { name: 'convis_tcp_retransmits_total', proto: 'tcp', help: 'TCP segments retransmitted, counted while connections are open and at close.', counter: 'retransmits' },
  { name: 'convis_udp_bytes_sent_total', proto: 'udp', help: 'UDP payload bytes sent, counted every report interval.', counter: 'bytesSent' },
  { name: 'convis_udp_bytes_received_total', proto: 'udp', help: 'UDP payload bytes received, counted every report interval.', counter: 'bytesReceived' },
  { name: 'convis_udp_datagrams_sent_total', proto: 'udp', help: 'UDP datagrams sent, counted every report interval.', counter: 'datagramsSent' },
  { name: 'convis_udp_datagrams_received_total', proto: 'udp', help: 'UDP datagrams received, counted every report interval.', counter: 'datagramsReceived' },
  { name: 'convis_udp_connect_failures_total', proto: 'udp', help: 'UDP connect() calls that failed (no route, unreachable, permission).', counter: 'connectFailures' },
];

const VIOLATIONS = {
  name: 'convis_policy_violations_total',
  help: 'Connections the policy (--policy) does not permit, by the rule they violate and the workload that made or accepted them.',
};

const LISTEN_INFO = { name: 'convis_tcp_listen_info', help: 'A listening TCP socket (value 1), with its process, container, pod and address.' };

/** Every family name with its help, for the README. */
export function describeMetrics(): { name: string; type: MetricType; help: string }[] {
  return [
    ...FLOW_FAMILIES.map((f) => ({ name: f.name, type: 'counter' as const, help: f.help })),
    { ...LISTEN_INFO, type: 'gauge' as const },
    { ...VIOLATIONS, type: 'counter' as const },
    ...HEALTH_HELP,
  ];
}

const HEALTH_HELP: { name: string; type: MetricType; help: string }[] = [
  { name: 'convis_flows', type: 'gauge', help: 'Flows (label sets) kept for the convis_tcp_* counters.' },
  { name: 'convis_flows_overflow_total', type: 'counter', help: 'Events folded into the overflow flow because the flow cap was reached.' },
  { name: 'convis_events_total', type: 'counter', help: 'Records received from the kernel, by kind.' },
  { name: 'convis_events_lost_total', type: 'counter', help: 'Events lost on the way from the kernel (ring buffer full, or the native bridge could not pass them on), by what they were.' },
  { name: 'convis_untracked_sockets_total', type: 'counter', help: 'Connections not tracked because the kernel socket map was full.' },
  { name: 'convis_udp_uncounted_datagrams_total', type: 'counter', help: 'UDP datagrams not counted because the kernel UDP flow map was full.' },
  { name: 'convis_updates_deferred_total', type: 'counter', help: 'Live updates the ring buffer could not take; their bytes were carried by a later report.' },
  { name: 'convis_listeners_refused_total', type: 'counter', help: 'Listeners left out of convis_tcp_listen_info because it held its maximum.' },
  { name: 'convis_sink_sent_total', type: 'counter', help: 'Events (stdout, newrelic) or samples (prometheus) a sink delivered.' },
  { name: 'convis_sink_failed_total', type: 'counter', help: 'Requests a sink gave up on after a non-retryable error.' },
  { name: 'convis_sink_dropped_total', type: 'counter', help: 'Events or samples a sink dropped (queue full, or never deliverable).' },
  { name: 'convis_sink_queue_depth', type: 'gauge', help: 'Items waiting in a sink queue.' },
  { name: 'convis_container_lookups_total', type: 'counter', help: 'Container runtime API lookups made.' },
  { name: 'convis_container_lookup_errors_total', type: 'counter', help: 'Container runtime lookups that failed because a runtime was unavailable.' },
  { name: 'convis_container_unknown_total', type: 'counter', help: 'Container ids that no runtime knew.' },
  { name: 'convis_cache_evictions_total', type: 'counter', help: 'Entries a bounded cache forgot to stay within its bound, by cache.' },
  {
    name: 'convis_pipeline_released_batches_total',
    type: 'counter',
    help: 'Batches sent on before their container lookups finished because the backlog waiting for lookups was full (their events may lack container names).',
  },
  { name: 'convis_cmdlines_truncated_total', type: 'counter', help: 'Command lines cut to 4096 characters (their events say cmd_truncated).' },
];

const helpOf = (name: string) => HEALTH_HELP.find((h) => h.name === name) as { name: string; type: MetricType; help: string };

export class Registry implements MetricsSource {
  private readonly flows: FlowTable;
  private readonly listeners: ListenerTable | undefined;
  private readonly health: () => Health;
  private readonly node: string;
  private readonly violations: (() => Iterable<MetricSample>) | undefined;

  constructor(options: { flows: FlowTable; listeners?: ListenerTable; health: () => Health; node: string; violations?: () => Iterable<MetricSample> }) {
    this.violations = options.violations;
    this.flows = options.flows;
    this.listeners = options.listeners;
    this.health = options.health;
    this.node = options.node;
  }

  collect(): MetricFamily[] {
    const flowFamilies = FLOW_FAMILIES.map((f): MetricFamily => ({ name: f.name, help: f.help, type: 'counter', samples: [] }));
    for (const flow of this.flows.all()) {
      FLOW_FAMILIES.forEach((f, i) => {
        if (f.proto === flow.proto) flowFamilies[i]!.samples.push({ labels: flow.labels, value: flow.counters[f.counter] });
      });
    }
    const listenInfo: MetricFamily = { ...LISTEN_INFO, type: 'gauge', samples: [] };
    for (const labels of this.listeners?.all() ?? []) listenInfo.samples.push({ labels, value: 1 });
    const h = this.health();
    const node = { node: this.node };
    const fam = (name: string, samples: MetricSample[]): MetricFamily => {
      const d = helpOf(name);
      return { name, help: d.help, type: d.type, samples };
    };
    const violations: MetricFamily = { ...VIOLATIONS, type: 'counter', samples: [...(this.violations?.() ?? [])].map((v) => ({ labels: v.labels, value: v.value })) };
    return [
      ...flowFamilies,
      listenInfo,
      violations,
      fam('convis_flows', [{ labels: node, value: this.flows.size }]),
      fam('convis_flows_overflow_total', [{ labels: node, value: this.flows.folded }]),
      fam('convis_events_total', Object.entries(h.events).map(([kind, value]) => ({ labels: { ...node, kind }, value }))),
      fam('convis_events_lost_total', [
        { labels: { ...node, kind: 'connection' }, value: h.lost.connection },
        { labels: { ...node, kind: 'process' }, value: h.lost.process },
        { labels: { ...node, kind: 'dns' }, value: h.lost.dns ?? 0 },
      ]),
      fam('convis_untracked_sockets_total', [{ labels: node, value: h.untrackedSockets }]),
      fam('convis_udp_uncounted_datagrams_total', [{ labels: node, value: h.uncountedDatagrams }]),
      fam('convis_updates_deferred_total', [{ labels: node, value: h.deferredUpdates }]),
      fam('convis_listeners_refused_total', [{ labels: node, value: this.listeners?.refused ?? 0 }]),
      fam('convis_sink_sent_total', h.sinks.map((s) => ({ labels: { ...node, sink: s.name }, value: s.sent }))),
      fam('convis_sink_failed_total', h.sinks.map((s) => ({ labels: { ...node, sink: s.name }, value: s.failed ?? 0 }))),
      fam('convis_sink_dropped_total', h.sinks.map((s) => ({ labels: { ...node, sink: s.name }, value: s.dropped }))),
      fam('convis_sink_queue_depth', h.sinks.map((s) => ({ labels: { ...node, sink: s.name }, value: s.queueDepth ?? 0 }))),
      fam('convis_container_lookups_total', [{ labels: node, value: h.containers.lookups }]),
      fam('convis_container_lookup_errors_total', [{ labels: node, value: h.containers.runtimeErrors }]),
      fam('convis_container_unknown_total', [{ labels: node, value: h.containers.unknown }]),
      fam('convis_cache_evictions_total', Object.entries(h.evictions ?? {}).map(([cache, value]) => ({ labels: { ...node, cache }, value }))),
      fam('convis_pipeline_released_batches_total', [{ labels: node, value: h.releasedBatches ?? 0 }]),
      fam('convis_cmdlines_truncated_total', [{ labels: node, value: h.cmdlinesTruncated ?? 0 }]),
    ];
  }
}

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/**
 * The Prometheus text exposition format (version 0.0.4). Empty label values
 * are left out, as Prometheus treats them as absent (remote write does the same).
 */
export function renderText(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels)
        .filter(([, v]) => v !== '')
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',');
      out.push(`${f.name}${labels ? `{${labels}}` : ''} ${formatValue(s.value)}`);
    }
  }
  return `${out.join('\n')}\n`;
}
