/**
 * Policy alerts: after each event that opens a connection of a selected
 * workload the policy does not permit (connect, accept, connect_failed, and
 * a UDP flow's first update), an `alert` event for every sink, and a count
 * in convis_policy_violations_total. One alert per connection: TCP
 * connections are judged at their connect or accept (existing ones at
 * start too), UDP flows at their first report.
 */
import type { ConnectionEvent } from '../metadata/event.js';
import type { Policy } from './policy.js';

/** UDP flows remembered as judged already; the oldest are forgotten first. */
const MAX_UDP_JUDGED = 65_536;

/** label sets convis_policy_violations_total holds at most; the rest fold into one per rule and direction */
export const MAX_VIOLATION_SERIES = 10_000;
/** the process label of that overflow series */
export const OVERFLOW = '(overflow)';

export interface Violations {
  labels: Record<string, string>;
  value: number;
}

export class PolicyAlerts {
  private current: Policy;
  private readonly udpJudged = new Set<number>();
  private readonly counts = new Map<string, Violations>();
  private readonly node: string;
  /** alert events made */
  alerts = 0;
  /** violations counted in an overflow series because MAX_VIOLATION_SERIES label sets were held */
  folded = 0;

  constructor(policy: Policy, node: string) {
    this.current = policy;
    this.node = node;
  }

  get policy(): Policy {
    return this.current;
  }

  /** Judges connections from now on by another policy (a reload). */
  replace(policy: Policy): void {
    this.current = policy;
  }

  /** The events, each violating one followed by its alert. */
  apply(events: ConnectionEvent[]): ConnectionEvent[] {
    let out: ConnectionEvent[] | undefined;
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as ConnectionEvent;
      const alert = this.judge(e);
      if (alert === undefined) {
        out?.push(e);
        continue;
      }
      out ??= events.slice(0, i);
      out.push(e, alert);
    }
    return out ?? events;
  }

  /** convis_policy_violations_total's samples. */
  violations(): Iterable<Violations> {
    return this.counts.values();
  }

  private judge(e: ConnectionEvent): ConnectionEvent | undefined {
    switch (e.event) {
      case 'connect':
      case 'accept':
      case 'connect_failed':
        break;
      case 'update':
        if (e.proto !== 'udp' || this.udpJudged.has(e.connId)) return undefined;
        if (this.udpJudged.size >= MAX_UDP_JUDGED) this.udpJudged.delete(this.udpJudged.values().next().value as number);
        this.udpJudged.add(e.connId);
        break;
      default:
        return undefined;
    }
    const rule = this.current.violated(e);
    if (rule === undefined) return undefined;
    this.alerts++;
    const labels = {
      node: this.node,
      rule: rule.name,
      direction: e.direction,
      process: e.process?.comm ?? '',
      container_name: e.container?.name ?? '',
      namespace: e.pod?.namespace ?? '',
      pod: e.pod?.name ?? '',
    };
    let key = Object.values(labels).join('\0');
    if (!this.counts.has(key) && this.counts.size >= MAX_VIOLATION_SERIES) {
      // a bounded family: past the cap, new workloads count in one series per rule and direction
      labels.process = OVERFLOW;
      labels.container_name = labels.namespace = labels.pod = '';
      key = Object.values(labels).join('\0');
      this.folded++;
    }
    const c = this.counts.get(key);
    if (c) c.value++;
    else this.counts.set(key, { labels, value: 1 });
    // the connection's identity, not its counters: an alert moves no bytes
    const alert: ConnectionEvent = {
      timeSec: e.timeSec,
      timeNsec: e.timeNsec,
      event: 'alert',
      proto: e.proto,
      direction: e.direction,
      local: e.local,
      remote: e.remote,
      process: e.process,
      container: e.container,
      pod: e.pod,
      node: e.node,
      cgroupId: e.cgroupId,
      netns: e.netns,
      connId: e.connId,
      rule: rule.name,
      trigger: e.event,
    };
    if (e.remotePod) alert.remotePod = e.remotePod;
    if (e.existing) alert.existing = true;
    if (e.error !== undefined) alert.error = e.error;
    return alert;
  }
}
