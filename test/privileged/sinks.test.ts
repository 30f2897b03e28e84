/**
 * The agent's sinks end to end, with real TCP traffic: New Relic (against a
 * local server implementing the documented Event API contract, since New
 * Relic's servers cannot be reached from here) and the /metrics endpoint.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Agent, skipReasonLoudly, startPeer } from '../helpers/agent.js';
import { FakeNewRelic } from '../helpers/newrelic-server.js';

const skip = skipReasonLoudly();

/** One client/server exchange with known byte counts; returns the server port and pids. */
async function exchange(clientSends: number, serverSends: number) {
  const server = startPeer(['server', '127.0.0.1', String(serverSends), String(clientSends)]);
  const port = Number(await server.line('port'));
  const client = startPeer(['client', '127.0.0.1', String(port), String(clientSends), String(serverSends)]);
  const localPort = Number(await client.line('local'));
  assert.equal(await client.exited, 0);
  assert.equal(await server.exited, 0);
  return { port, localPort, serverPid: server.pid, clientPid: client.pid };
}

describe('sinks end to end', { skip }, () => {
  test('newrelic: every connection event arrives once as a ContainerVisibility event with flat attributes', async () => {
    const key = 'NRII-test-insert-key-0123456789';
    const nr = await FakeNewRelic.start({ account: '4242', key });
    try {
      const agent = await Agent.start(['--sink', `newrelic,account=4242,key=${key},endpoint=${nr.base.href}`]);
      const x = await exchange(1234, 99);
      const r = await agent.stop(); // close() flushes what is queued
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, new RegExp(key), 'the insert key never appears in logs');
      const mine = nr.events.filter((e) => e['local.port'] === x.port || e['remote.port'] === x.port);
      // the server's listener comes and goes too
      assert.deepEqual(mine.map((e) => e.event).sort(), ['accept', 'close', 'close', 'connect', 'listen', 'unlisten']);
      for (const e of mine) assert.equal(e.eventType, 'ContainerVisibility');
      const listen = mine.find((e) => e.event === 'listen')!;
      assert.equal(listen['process.pid'], x.serverPid);
      assert.equal(listen['destination.port'], x.port);
      assert.equal('remote.ip' in listen, false);
      const clientClose = mine.find((e) => e.event === 'close' && e.direction === 'outbound')!;
      assert.equal(clientClose['bytes.tx'], 1234);
      assert.equal(clientClose['bytes.rx'], 99);
      assert.equal(clientClose['process.pid'], x.clientPid);
      assert.equal(clientClose['process.comm'], 'convis-peer');
      assert.equal(clientClose['source.ip'], '127.0.0.1');
      assert.equal(clientClose['source.port'], x.localPort);
      assert.equal(clientClose['destination.port'], x.port);
      const accept = mine.find((e) => e.event === 'accept')!;
      assert.equal(accept['process.pid'], x.serverPid);
      // inbound: the remote side started it, so it is the source
      assert.equal(accept['source.port'], x.localPort);
      assert.equal(accept['destination.port'], x.port);
      assert.ok(nr.requests.every((q) => q.headers['x-insert-key'] === key));
      // no event twice
      const ids = nr.events.map((e) => `${e['conn.id']}/${e.event}`);
      assert.equal(new Set(ids).size, ids.length);
    } finally {
      await nr.close();
    }
  });

  test('metrics: /metrics shows the flow with exact byte counters and the agent\'s health', async () => {
    const agent = await Agent.start(['--sink', 'metrics,listen=127.0.0.1:0']);
    try {
      // the port is chosen by the kernel: ask the agent's log
      const m = /metrics: listening on 127\.0\.0\.1:(\d+)/.exec(agent.stderr);
      assert.ok(m, agent.stderr);
      const x = await exchange(5000, 777);
      await agent.waitFor((es) => es.filter((e) => e.event === 'close' && (e.local.port === x.port || e.remote?.port === x.port)).length === 2, 'closes');
      const body = await (await fetch(`http://127.0.0.1:${m[1]}/metrics`)).text();
      const line = (name: string, direction: string) =>
        body.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`direction="${direction}"`) && l.includes(`server_port="${x.port}"`));
      assert.match(line('convis_tcp_bytes_sent_total', 'outbound') ?? '', / 5000$/);
      assert.match(line('convis_tcp_bytes_received_total', 'outbound') ?? '', / 777$/);
      assert.match(line('convis_tcp_bytes_sent_total', 'inbound') ?? '', / 777$/);
      assert.match(line('convis_tcp_connections_total', 'inbound') ?? '', / 1$/);
      assert.match(line('convis_tcp_connections_total', 'outbound') ?? '', /process="convis-peer"/);
      assert.match(body, /^convis_events_lost_total\{node="[^"]+",kind="connection"\} 0$/m);
      assert.match(body, /^convis_sink_sent_total\{node="[^"]+",sink="stdout"\} \d+$/m);
    } finally {
      const r = await agent.stop();
      assert.equal(r.code, 0, r.stderr);
    }
  });
});
