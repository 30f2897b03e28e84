/**
 * Flow aggregation, the registry and the text exposition, plus the /metrics
 * endpoint over real HTTP.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FlowTable, FLOW_LABELS } from '../../src/aggregate/flows.js';
import { ListenerTable } from '../../src/aggregate/listeners.js';
import { describeMetrics, Registry, renderText, type Health } from '../../src/aggregate/registry.js';
import type { ConnKind } from '../../src/bpf/decode.js';
import type { ConnectionEvent } from '../../src/metadata/event.js';
import { MetricsEndpoint, parseListen } from '../../src/sinks/metrics-endpoint.js';
import { ConfigError } from '../../src/config/errors.js';

const proc = { pid: 10, ppid: 1, uid: 0, comm: 'curl', cmd: 'curl x', exe: '/usr/bin/curl' };

function ev(event: ConnKind, over: Partial<ConnectionEvent> = {}): ConnectionEvent {
  return {
    timeSec: 1,
    timeNsec: 0,
    event,
    proto: 'tcp',
    direction: 'outbound',
    local: { ip: '10.0.0.1', port: 40000 + Math.floor(Math.random() * 20000) },
    remote: { ip: '10.0.0.2', port: 443 },
    process: proc,
    container: { id: 'a'.repeat(64), name: 'web', image: 'nginx:1', runtime: 'docker' },
    pod: { name: 'web-0', namespace: 'shop', uid: 'u' },
    node: 'n1',
    cgroupId: 1,
    netns: 1,
    connId: 1,
    // a close tracked from its start carries its lifetime totals, all of them not reported before
    ...(event === 'close'
      ? { bytesSent: 100, bytesReceived: 7, retransmits: 1, bytesSentDelta: 100, bytesReceivedDelta: 7, retransmitsDelta: 1, durationMs: 1, srttUs: 1 }
      : {}),
    ...(event === 'connect_failed' ? { error: 'ECONNREFUSED' } : {}),
    ...over,
  };
}

const health = (): Health => ({
  events: { connect: 3 },
  lost: { connection: 0, process: 0 },
  untrackedSockets: 0,
  uncountedDatagrams: 0,
  deferredUpdates: 0,
  sinks: [{ name: 'stdout', sent: 5, dropped: 1 }],
  containers: { lookups: 2, unknown: 0, runtimeErrors: 0 },
});

describe('FlowTable', () => {
  test('events roll up by flow, never by the ephemeral client port; counters add up', () => {
    const t = new FlowTable();
    t.add([ev('connect'), ev('close'), ev('connect'), ev('close'), ev('connect_failed')]);
    assert.equal(t.size, 1);
    const [f] = [...t.all()];
    assert.deepEqual(f!.counters, {
      connections: 2,
      connectFailures: 1,
      bytesSent: 200,
      bytesReceived: 14,
      retransmits: 2,
      datagramsSent: 0,
      datagramsReceived: 0,
    });
    assert.equal(f!.labels.server_port, '443');
    assert.equal(f!.labels.process, 'curl');
    assert.equal(f!.labels.container_name, 'web');
    assert.deepEqual(Object.keys(f!.labels), [...FLOW_LABELS]);
  });

  test('a long-lived connection: updates add what moved, the close adds only the rest, never its lifetime totals', () => {
    const t = new FlowTable();
    const id = { connId: 77, local: { ip: '10.0.0.1', port: 50000 } };
    t.add([
      ev('connect', id),
      ev('update', { ...id, bytesSent: 1000, bytesReceived: 10, retransmits: 1, durationMs: 10_000, srttUs: 5 }),
      ev('update', { ...id, bytesSent: 500, bytesReceived: 0, retransmits: 0, durationMs: 20_000, srttUs: 5 }),
      ev('close', { ...id, bytesSent: 1600, bytesReceived: 15, retransmits: 2, bytesSentDelta: 100, bytesReceivedDelta: 5, retransmitsDelta: 1 }),
    ]);
    const [f] = [...t.all()];
    assert.equal(f!.counters.bytesSent, 1600);
    assert.equal(f!.counters.bytesReceived, 15);
    assert.equal(f!.counters.retransmits, 2);
    assert.equal(f!.counters.connections, 1);
  });

  test('a connection older than the agent: not a new connection, and what moved before the agent started is not counted', () => {
    const t = new FlowTable();
    t.add([
      ev('connect', { existing: true, bytesSent: 5_000_000, bytesReceived: 3 }),
      ev('update', { bytesSent: 10, bytesReceived: 20 }),
      ev('close', { bytesSent: 5_000_030, bytesReceived: 23, bytesSentDelta: 20, bytesReceivedDelta: 0, retransmitsDelta: 0 }),
    ]);
    const [f] = [...t.all()];
    assert.equal(f!.counters.connections, 0);
    assert.equal(f!.counters.bytesSent, 30);
    assert.equal(f!.counters.bytesReceived, 20);
  });

  test('UDP flows are kept apart from TCP ones with the same labels and count datagrams', () => {
    const t = new FlowTable();
    const udp = { proto: 'udp' as const, remote: { ip: '10.0.0.2', port: 53 } };
    t.add([
      ev('update', { ...udp, bytesSent: 40, bytesReceived: 120, datagramsSent: 1, datagramsReceived: 1 }),
      ev('update', { ...udp, bytesSent: 80, bytesReceived: 0, datagramsSent: 2, datagramsReceived: 0 }),
      ev('update', { remote: { ip: '10.0.0.2', port: 53 }, bytesSent: 7, bytesReceived: 0 }),
    ]);
    assert.equal(t.size, 2);
    const u = [...t.all()].find((f) => f.proto === 'udp')!;
    assert.deepEqual(
      { s: u.counters.bytesSent, r: u.counters.bytesReceived, ds: u.counters.datagramsSent, dr: u.counters.datagramsReceived },
      { s: 120, r: 120, ds: 3, dr: 1 },
    );
    assert.equal(u.labels.server_port, '53');
    const families = new Registry({ flows: t, health, node: 'n1' }).collect();
    const value = (name: string) => families.find((f) => f.name === name)!.samples.map((s) => s.value);
    assert.deepEqual(value('convis_udp_datagrams_sent_total'), [3]);
    assert.deepEqual(value('convis_udp_bytes_received_total'), [120]);
    assert.deepEqual(value('convis_tcp_bytes_sent_total'), [7], 'the TCP family has the TCP flow only');
  });

  test('listen and unlisten events make and remove convis_tcp_listen_info; listeners are not flows', () => {
    const flows = new FlowTable();
    const listeners = new ListenerTable({ maxListeners: 2 });
    const l = (connId: number, port: number, event: 'listen' | 'unlisten' = 'listen') =>
      ev(event, { connId, direction: 'inbound', remote: null, local: { ip: '0.0.0.0', port } });
    const all = [l(1, 80), l(2, 443, 'listen'), l(3, 8080)];
    flows.add(all);
    listeners.add(all);
    assert.equal(flows.size, 0);
    assert.equal(listeners.size, 2);
    assert.equal(listeners.refused, 1, 'the third is over the cap: counted, not kept');
    const info = () =>
      new Registry({ flows, listeners, health, node: 'n1' }).collect().find((f) => f.name === 'convis_tcp_listen_info')!.samples;
    assert.deepEqual(
      info().map((s) => [s.labels.listen_ip, s.labels.listen_port, s.labels.process, s.value]),
      [
        ['0.0.0.0', '80', 'curl', 1],
        ['0.0.0.0', '443', 'curl', 1],
      ],
    );
    listeners.add([l(1, 80, 'unlisten')]);
    assert.deepEqual(info().map((s) => s.labels.listen_port), ['443']);
  });

  test('inbound flows are keyed by the local (server) port and the remote client IP', () => {
    const t = new FlowTable();
    t.add([
      ev('accept', { direction: 'inbound', local: { ip: '10.0.0.1', port: 8080 }, remote: { ip: '10.0.0.9', port: 51111 } }),
      ev('accept', { direction: 'inbound', local: { ip: '10.0.0.1', port: 8080 }, remote: { ip: '10.0.0.9', port: 52222 } }),
    ]);
    const flows = [...t.all()];
    assert.equal(flows.length, 1);
    assert.equal(flows[0]!.labels.server_port, '8080');
    assert.equal(flows[0]!.labels.remote_ip, '10.0.0.9');
    assert.equal(flows[0]!.counters.connections, 2);
  });

  test('a flow is found again by every label: the process object, its container, the peer pod behind one IP', () => {
    const t = new FlowTable();
    const web = { id: 'b'.repeat(64), name: 'web', image: 'nginx:1', runtime: 'docker' };
    const renamed = { ...web, name: 'web-renamed' };
    const pod = { name: 'web-0', namespace: 'shop', uid: 'u' };
    const db = { name: 'db-0', namespace: 'shop' };
    const cache = { name: 'cache-0', namespace: 'shop' };
    const same = { container: web, pod };
    t.add([
      ev('connect', { ...same, remotePod: db }),
      ev('connect', { ...same, remotePod: db }),
      // the same process object, now in a container with other details
      ev('connect', { container: renamed, pod, remotePod: db }),
      // the peer IP now belongs to another pod, then to the first again
      ev('connect', { ...same, remotePod: cache }),
      ev('connect', { ...same, remotePod: cache }),
      ev('connect', { ...same, remotePod: db }),
      // another process object with the same name shares the flow
      ev('connect', { ...same, process: { ...proc, pid: 11 }, remotePod: db }),
      // other direction, protocol or port: other flows
      ev('accept', { ...same, direction: 'inbound', local: { ip: '10.0.0.1', port: 443 }, remotePod: db }),
      ev('update', { ...same, proto: 'udp', remotePod: db, bytesSent: 5, bytesReceived: 0 }),
      ev('connect', { ...same, remote: { ip: '10.0.0.2', port: 444 }, remotePod: db }),
    ]);
    const got = [...t.all()].map((f) => [f.proto, f.labels.direction, f.labels.container_name, f.labels.server_port, f.labels.remote_pod, f.counters.connections]);
    assert.deepEqual(got.sort(), [
      ['tcp', 'inbound', 'web', '443', 'db-0', 1],
      ['tcp', 'outbound', 'web', '443', 'cache-0', 2],
      ['tcp', 'outbound', 'web', '443', 'db-0', 4],
      ['tcp', 'outbound', 'web', '444', 'db-0', 1],
      ['tcp', 'outbound', 'web-renamed', '443', 'db-0', 1],
      ['udp', 'outbound', 'web', '443', 'db-0', 0],
    ]);
  });

  test('the cap folds new flows into one overflow flow per node and direction, and counts them', () => {
    const t = new FlowTable({ maxFlows: 2 });
    for (let i = 0; i < 5; i++) t.add([ev('connect', { remote: { ip: `10.0.1.${i}`, port: 443 } })]);
    t.add([ev('connect', { remote: { ip: '10.0.1.0', port: 443 } })]); // an existing flow still counts on its own
    assert.equal(t.size, 2);
    assert.equal(t.folded, 3);
    const flows = [...t.all()];
    assert.equal(flows.length, 3);
    assert.equal(flows[0]!.counters.connections, 2);
    const overflow = flows[2]!;
    assert.equal(overflow.labels.overflow, 'true');
    assert.equal(overflow.labels.remote_ip, '');
    assert.equal(overflow.labels.node, 'n1');
    assert.equal(overflow.counters.connections, 3);
  });

  test('events outside containers have empty container and pod labels', () => {
    const t = new FlowTable();
    t.add([ev('connect', { container: null, pod: null, process: null })]);
    const [f] = [...t.all()];
    assert.equal(f!.labels.container_id, '');
    assert.equal(f!.labels.pod, '');
    assert.equal(f!.labels.process, '');
  });
});

describe('Registry and text exposition', () => {
  test('every family is documented, named by convention, and collected', () => {
    const t = new FlowTable();
    t.add([ev('connect'), ev('close')]);
    const families = new Registry({ flows: t, health, node: 'n1' }).collect();
    const documented = describeMetrics().map((d) => d.name);
    assert.deepEqual(families.map((f) => f.name), documented);
    for (const f of families) {
      assert.match(f.name, /^convis_[a-z0-9_]+$/);
      if (f.type === 'counter') assert.match(f.name, /_total$/);
    }
    const bytes = families.find((f) => f.name === 'convis_tcp_bytes_sent_total')!;
    assert.equal(bytes.samples[0]!.value, 100);
    const sink = families.find((f) => f.name === 'convis_sink_dropped_total')!;
    assert.deepEqual(sink.samples, [{ labels: { node: 'n1', sink: 'stdout' }, value: 1 }]);
  });

  test('text format: HELP/TYPE lines, escaped label values, empty labels left out', () => {
    const text = renderText([
      {
        name: 'convis_x_total',
        help: 'line one\nback\\slash',
        type: 'counter',
        samples: [
          { labels: { a: 'q"uote', b: 'back\\slash', c: 'new\nline', d: '' }, value: 3 },
          { labels: {}, value: 1.5 },
        ],
      },
    ]);
    assert.equal(
      text,
      '# HELP convis_x_total line one\\nback\\\\slash\n# TYPE convis_x_total counter\n' +
        'convis_x_total{a="q\\"uote",b="back\\\\slash",c="new\\nline"} 3\nconvis_x_total 1.5\n',
    );
  });
});

describe('metrics endpoint', () => {
  test('serves /metrics from the registry over HTTP; other paths 404', async () => {
    const t = new FlowTable();
    t.add([ev('connect')]);
    const registry = new Registry({ flows: t, health, node: 'n1' });
    const endpoint = await MetricsEndpoint.start({ host: '127.0.0.1', port: 0 }, registry);
    try {
      const res = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const body = await res.text();
      assert.equal(body, renderText(registry.collect()));
      assert.match(body, /convis_tcp_connections_total\{node="n1",direction="outbound",process="curl",.*server_port="443"\} 1\n/);
      assert.equal((await fetch(`http://127.0.0.1:${endpoint.port}/`)).status, 404);
      assert.ok(endpoint.stats().sent > 0);
    } finally {
      await endpoint.close();
    }
  });

  test('a port already taken is a ConfigError at start-up', async () => {
    const a = await MetricsEndpoint.start({ host: '127.0.0.1', port: 0 }, new Registry({ flows: new FlowTable(), health, node: 'n' }));
    try {
      await assert.rejects(MetricsEndpoint.start({ host: '127.0.0.1', port: a.port }, new Registry({ flows: new FlowTable(), health, node: 'n' })), (e: unknown) => e instanceof ConfigError && /EADDRINUSE/.test(e.message));
    } finally {
      await a.close();
    }
  });

  test('listen= forms', () => {
    assert.deepEqual(parseListen('127.0.0.1:9400'), { host: '127.0.0.1', port: 9400 });
    assert.deepEqual(parseListen('[::1]:9400'), { host: '::1', port: 9400 });
    assert.deepEqual(parseListen(':9400'), { host: '::', port: 9400 });
    assert.deepEqual(parseListen('localhost:1'), { host: 'localhost', port: 1 });
    for (const bad of ['9400', 'host:', 'host:70000', '::1:9400', '']) assert.throws(() => parseListen(bad), ConfigError, bad);
  });
});
