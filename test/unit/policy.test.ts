/**
 * Policy rules: the file format and its one-line errors (with the line),
 * which workloads a rule selects, what an allow entry permits, and the
 * alerts: one per connection, with the counter, in every output format.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry, renderText, type Health } from '../../src/aggregate/registry.js';
import { FlowTable } from '../../src/aggregate/flows.js';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import { MAX_VIOLATION_SERIES, OVERFLOW, PolicyAlerts } from '../../src/policy/alerts.js';
import { Policy, PolicyError } from '../../src/policy/policy.js';
import { toNewRelicEvent } from '../../src/sinks/newrelic.js';
import { toJsonLine, toJsonObject, toTextLine } from '../../src/sinks/stdout.js';
import { sampleEvent, udpUpdate } from '../helpers/events.js';

const WEB = `
rules:
  - name: web-egress
    select: { image: "*nginx*" }
    allow:
      - { cidr: 10.0.0.0/8 }
      - { cidr: 0.0.0.0/0, ports: [443, "8000-8099"], direction: outbound }
      - { cidr: "fd00::/8", direction: inbound }
  - name: everything-else
    allow:
      - { cidr: 127.0.0.0/8 }
`;

const nginx = { id: 'n'.repeat(64), name: 'web', image: 'docker.io/library/nginx:1.25', runtime: 'docker' };
const out = (ip: string, port: number, over: Partial<ConnectionEvent> = {}) =>
  sampleEvent('connect', { container: nginx, remote: { ip, port }, ...over });
const inbound = (ip: string, localPort: number, over: Partial<ConnectionEvent> = {}) =>
  sampleEvent('accept', { container: nginx, local: { ip: '10.0.0.1', port: localPort }, remote: { ip, port: 40000 }, ...over });

describe('Policy.parse', () => {
  const bad: [string, string, RegExp][] = [
    ['not YAML', 'rules: [\n  - { name: x\n', /^policy p\.yaml:\d+: /],
    ['no rules list', 'rules: 3\n', /^policy p\.yaml:1: "rules" must be a list of rules$/],
    ['unknown top key', 'rules: []\nrulez: []\n', /^policy p\.yaml:2: unknown key "rulez"/],
    ['a rule without a name', 'rules:\n  - allow: []\n', /^policy p\.yaml:2: rule 1 needs a name$/],
    ['a bad CIDR', 'rules:\n  - name: a\n    allow:\n      - { cidr: 10.0.0.0/33 }\n', /^policy p\.yaml:4: rule "a": cidr must be an IPv4 or IPv6 prefix/],
    ['a shorthand CIDR', 'rules:\n  - name: a\n    allow:\n      - { cidr: 10.1/16 }\n', /^policy p\.yaml:4: rule "a": cidr must be an IPv4 or IPv6 prefix/],
    ['a bad port', 'rules:\n  - name: a\n    allow:\n      - cidr: 10.0.0.0/8\n        ports: [70000]\n', /^policy p\.yaml:5: rule "a": ports must be port numbers/],
    ['a bad range', 'rules:\n  - name: a\n    allow: [{ cidr: ::/0, ports: ["9-1"] }]\n', /^policy p\.yaml:3: rule "a": ports must be/],
    ['a bad direction', 'rules:\n  - name: a\n    allow: [{ cidr: ::/0, direction: up }]\n', /^policy p\.yaml:3: rule "a": direction must be outbound or inbound/],
    ['an unknown select key', 'rules:\n  - name: a\n    select:\n      user: root\n    allow: []\n', /^policy p\.yaml:4: rule "a": unknown select key "user"/],
    ['no allow list', 'rules:\n  - name: a\n', /^policy p\.yaml:2: rule "a": allow must be a list/],
    ['a name twice', 'rules:\n  - { name: a, allow: [] }\n  - { name: a, allow: [] }\n', /^policy p\.yaml:3: rule name "a" is used twice$/],
    ['neither cidr nor domain', 'rules:\n  - name: a\n    allow:\n      - { ports: [80] }\n', /^policy p\.yaml:4: rule "a": allow entry 1 needs a cidr or a domain$/],
    ['an empty domain', 'rules:\n  - name: a\n    allow:\n      - { domain: "" }\n', /^policy p\.yaml:4: rule "a": domain must be a name glob/],
  ];
  for (const [name, text, want] of bad) {
    test(`${name}: one line naming the file and the line`, () => {
      assert.throws(
        () => Policy.parse(text, 'p.yaml'),
        (e: Error) => e instanceof PolicyError && want.test(e.message) && !e.message.includes('\n'),
      );
    });
  }

  test('a missing file is one line too', () => {
    assert.throws(() => Policy.load('/nonexistent/p.yaml'), (e: Error) => e instanceof PolicyError && e.message === 'policy /nonexistent/p.yaml: cannot be read (ENOENT)');
  });
});

describe('Policy.violated', () => {
  const p = Policy.parse(WEB, 'p.yaml');
  const verdict = (e: ConnectionEvent) => p.violated(e)?.name ?? 'permitted';

  test('allow entries: CIDR, ports and ranges, direction', () => {
    assert.equal(verdict(out('10.1.2.3', 5432)), 'permitted');
    assert.equal(verdict(out('203.0.113.7', 443)), 'permitted');
    assert.equal(verdict(out('203.0.113.7', 8050)), 'permitted');
    assert.equal(verdict(out('203.0.113.7', 22)), 'web-egress');
    // an inbound connection's port is the local (service) port
    assert.equal(verdict(inbound('203.0.113.7', 443)), 'web-egress');
    assert.equal(verdict(inbound('10.9.9.9', 22)), 'permitted');
  });

  test('IPv6, and IPv4-mapped addresses judged as IPv4', () => {
    assert.equal(verdict(inbound('fd12::1', 22)), 'permitted');
    assert.equal(verdict(out('fd12::1', 22)), 'web-egress');
    assert.equal(verdict(out('2001:db8::1', 443)), 'web-egress', 'the 0.0.0.0/0 entry is IPv4 only');
    assert.equal(verdict(out('::ffff:10.1.2.3', 22)), 'permitted');
  });

  test('a workload no rule selects is never a violation; an empty select selects all', () => {
    const p2 = Policy.parse('rules:\n  - name: only-redis\n    select: { process: "redis-*", namespace: shop }\n    allow: []\n', 'p.yaml');
    const redis = (comm: string, namespace: string | null) =>
      sampleEvent('connect', { process: { pid: 1, ppid: 0, uid: 0, comm, cmd: '', exe: '' }, pod: namespace ? { name: 'r', namespace, uid: 'u' } : null });
    assert.equal(p2.violated(redis('redis-server', 'shop'))?.name, 'only-redis');
    assert.equal(p2.violated(redis('redis-server', 'other')), undefined);
    assert.equal(p2.violated(redis('redis-server', null)), undefined, 'not in a pod: the namespace glob cannot match');
    assert.equal(p2.violated(redis('nginx', 'shop')), undefined);
    // the second rule of WEB selects everything; a connection it permits is fine even if the first selects it
    assert.equal(verdict(out('127.0.0.1', 22)), 'permitted');
    assert.equal(verdict(sampleEvent('connect', { remote: { ip: '10.0.0.2', port: 80 } })), 'everything-else');
  });
});

describe('PolicyAlerts', () => {
  test('an alert after each violating connection, once per UDP flow, counted by rule and workload', () => {
    const alerts = new PolicyAlerts(Policy.parse(WEB, 'p.yaml'), 'n1');
    const bad = out('203.0.113.7', 22, { connId: 5 });
    const udp = sampleEvent('update', { ...udpUpdate, container: nginx, remote: { ip: '198.51.100.1', port: 53 }, connId: 9 });
    const got = alerts.apply([out('10.0.0.5', 80), bad, sampleEvent('close', { container: nginx, remote: { ip: '203.0.113.7', port: 22 }, connId: 5 }), udp, udp]);
    assert.deepEqual(got.map((e) => e.event), ['connect', 'connect', 'alert', 'close', 'update', 'alert', 'update']);
    const alert = got[2]!;
    assert.deepEqual([alert.rule, alert.trigger, alert.connId, alert.remote, alert.bytesSent], ['web-egress', 'connect', 5, bad.remote, undefined]);
    assert.equal(alerts.alerts, 2);
    const failed = alerts.apply([out('203.0.113.8', 22, { event: 'connect_failed', error: 'ECONNREFUSED' })]);
    assert.deepEqual([failed[1]!.event, failed[1]!.trigger, failed[1]!.error], ['alert', 'connect_failed', 'ECONNREFUSED']);
    const samples = [...alerts.violations()];
    assert.deepEqual(samples, [
      { labels: { node: 'n1', rule: 'web-egress', direction: 'outbound', process: 'curl', container_name: 'web', namespace: '', pod: '' }, value: 3 },
    ]);
    const health: Health = { events: {}, lost: { connection: 0, process: 0 }, untrackedSockets: 0, uncountedDatagrams: 0, deferredUpdates: 0, sinks: [], containers: { lookups: 0, unknown: 0, runtimeErrors: 0 } };
    const text = renderText(new Registry({ flows: new FlowTable(), health: () => health, node: 'n1', violations: () => alerts.violations() }).collect());
    assert.match(text, /^convis_policy_violations_total\{node="n1",rule="web-egress",direction="outbound",process="curl",container_name="web"\} 3$/m);
  });

  test('the violations family is bounded: past MAX_VIOLATION_SERIES label sets, new workloads count in one overflow series', () => {
    const alerts = new PolicyAlerts(Policy.parse('rules:\n  - { name: none, allow: [] }\n', 'p.yaml'), 'n1');
    const proc = (comm: string) => ({ pid: 1, ppid: 0, uid: 0, comm, cmd: comm, exe: '' });
    const events = Array.from({ length: MAX_VIOLATION_SERIES + 5 }, (_, i) => out('10.0.0.5', 80, { process: proc(`p${i}`), container: null }));
    alerts.apply(events);
    const samples = [...alerts.violations()];
    assert.equal(samples.length, MAX_VIOLATION_SERIES + 1);
    const overflow = samples.find((v) => v.labels.process === OVERFLOW);
    assert.deepEqual(overflow, { labels: { node: 'n1', rule: 'none', direction: 'outbound', process: OVERFLOW, container_name: '', namespace: '', pod: '' }, value: 5 });
    assert.equal(alerts.folded, 5);
    assert.equal(alerts.alerts, MAX_VIOLATION_SERIES + 5, 'every violation still alerts and counts');
  });

  test('a replaced policy judges the connections after it', () => {
    const alerts = new PolicyAlerts(Policy.parse('rules:\n  - { name: none, allow: [] }\n', 'p.yaml'), 'n1');
    assert.equal(alerts.apply([out('10.0.0.5', 80)]).length, 2);
    alerts.replace(Policy.parse('rules:\n  - { name: all, allow: [{ cidr: 0.0.0.0/0 }] }\n', 'p.yaml'));
    assert.equal(alerts.apply([out('10.0.0.5', 80)]).length, 1);
  });

  test('the alert in JSON, text and New Relic form', () => {
    const alerts = new PolicyAlerts(Policy.parse(WEB, 'p.yaml'), 'n1');
    const alert = alerts.apply([out('203.0.113.7', 22)])[1]!;
    const json = toJsonObject(alert);
    assert.equal(json.event, 'alert');
    assert.equal(json.rule, 'web-egress');
    assert.equal(json.trigger, 'connect');
    assert.equal('bytes_sent' in json, false);
    assert.deepEqual(JSON.parse(toJsonLine(alert)), json);
    assert.match(toTextLine(alert), / alert +tcp 10\.0\.0\.1:51000 -> 203\.0\.113\.7:22 .* rule=web-egress trigger=connect/);
    const nr = toNewRelicEvent(alert);
    assert.deepEqual([nr.event, nr['policy.rule'], nr['policy.trigger'], 'bytes.tx' in nr], ['alert', 'web-egress', 'connect', false]);
  });
});
