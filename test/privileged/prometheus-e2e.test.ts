/**
 * The agent against a real Prometheus: remote write and a scrape of
 * /metrics give the exact byte and connection counts of known traffic, and
 * remote write ends at the right totals across a Prometheus outage.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, skipReasonLoudly, startPeer } from '../helpers/agent.js';
import { skipLoudly } from '../helpers/skip.js';
import { freePort, prometheusSkipReason, startPrometheus, type Prometheus } from '../helpers/prometheus.js';

const base = skipReasonLoudly();
const skip = base || skipLoudly('Prometheus end-to-end tests', prometheusSkipReason());

/** One client/server exchange on a fresh listener; returns its server port. */
async function exchange(clientSends: number, serverSends: number): Promise<number> {
  const server = startPeer(['server', '127.0.0.1', String(serverSends), String(clientSends)]);
  const port = Number(await server.line('port'));
  const client = startPeer(['client', '127.0.0.1', String(port), String(clientSends), String(serverSends)]);
  assert.equal(await client.exited, 0);
  assert.equal(await server.exited, 0);
  return port;
}

/** The value of the one series a query returns, or NaN. */
const one = (r: { value: [number, string] }[]) => (r.length === 1 ? Number(r[0]!.value[1]) : NaN);

describe('Prometheus end to end', { skip }, () => {
  let prom: Prometheus;
  let agent: Agent;
  let metricsPort: number;

  before(async () => {
    metricsPort = await freePort();
    prom = await startPrometheus({ scrape: { target: `127.0.0.1:${metricsPort}`, intervalMs: 1000, job: 'convis' } });
    agent = await Agent.start([
      '--sink',
      `prometheus,endpoint=${prom.remoteWriteUrl.href},interval=1s,header.X-Scope-OrgID=test`,
      '--sink',
      `metrics,listen=127.0.0.1:${metricsPort}`,
    ]);
  });
  after(async () => {
    const r = await agent?.stop();
    await prom?.stop();
    assert.equal(r?.code, 0, r?.stderr);
  });

  test('remote write and the scrape agree on exact counters per label set', async () => {
    // two connections to one server port, one to another
    const portA = await exchange(1000, 555);
    const portB = await exchange(70_000, 3);
    for (const [port, sent, received, conns] of [
      [portA, 1000, 555, 1],
      [portB, 70_000, 3, 1],
    ] as const) {
      for (const job of ['', 'convis']) {
        // remote-written series carry no job label; scraped ones carry job="convis"
        const sel = `server_port="${port}",direction="outbound",process="convis-peer",job="${job}"`;
        await prom.waitFor(`convis_tcp_bytes_sent_total{${sel}}`, (r) => one(r) === sent, 30_000);
        assert.equal(one(await prom.query(`convis_tcp_bytes_received_total{${sel}}`)), received);
        assert.equal(one(await prom.query(`convis_tcp_connections_total{${sel}}`)), conns);
        const inbound = `server_port="${port}",direction="inbound",job="${job}"`;
        await prom.waitFor(`convis_tcp_bytes_received_total{${inbound}}`, (r) => one(r) === sent, 30_000);
        assert.equal(one(await prom.query(`convis_tcp_bytes_sent_total{${inbound}}`)), received);
      }
    }
    // the agent's own health arrives too
    const lost = await prom.query('convis_events_lost_total{kind="connection",job=""}');
    assert.equal(one(lost), 0);
  });

  test('across a Prometheus outage, remote write ends at the right totals', async () => {
    const before = await exchange(100, 10);
    const sel = `server_port="${before}",direction="outbound",job=""`;
    await prom.waitFor(`convis_tcp_bytes_sent_total{${sel}}`, (r) => one(r) === 100, 30_000);
    await prom.kill();
    // traffic while Prometheus is down: a new flow and more bytes on the old flow's server
    const during = await exchange(4321, 1234);
    await new Promise((r) => setTimeout(r, 3000)); // several failed sends
    await prom.restart();
    const selDuring = `server_port="${during}",direction="outbound",job=""`;
    await prom.waitFor(`convis_tcp_bytes_sent_total{${selDuring}}`, (r) => one(r) === 4321, 30_000);
    assert.equal(one(await prom.query(`convis_tcp_bytes_received_total{${selDuring}}`)), 1234);
    assert.equal(one(await prom.query(`convis_tcp_bytes_sent_total{${sel}}`)), 100);
    assert.match(agent.stderr, /prometheus remote write.*(refused|ECONNREFUSED|unavailable|failing)/i);
  });
});
