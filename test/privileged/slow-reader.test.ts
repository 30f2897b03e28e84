/**
 * One slow sink never stalls the others: a stdout reader that stops reading
 * (as `convis | (sleep 60; cat)` does) makes the stdout sink drop and count,
 * while /metrics and remote write into a real Prometheus keep exact totals
 * and the kernel side loses nothing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Agent, peerExecutable, skipReasonLoudly, sleep } from '../helpers/agent.js';
import { freePort, prometheusSkipReason, startPrometheus, type Prometheus } from '../helpers/prometheus.js';
import { skipLoudly } from '../helpers/skip.js';

const base = skipReasonLoudly();
const skip = base || skipLoudly('slow stdout reader tests', prometheusSkipReason());

const CONNECTIONS = 1000;
const CLIENT_SENDS = 100;
const SERVER_SENDS = 50;

/** CONNECTIONS loopback connections with known bytes each way; prints the server port. */
const WORKLOAD = `
import socket
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(256)
print(srv.getsockname()[1], flush=True)
def full(s, n):
    got = 0
    while got < n:
        got += len(s.recv(n - got))
for i in range(${CONNECTIONS}):
    c = socket.create_connection(('127.0.0.1', srv.getsockname()[1]))
    a, _ = srv.accept()
    c.sendall(b'c' * ${CLIENT_SENDS})
    full(a, ${CLIENT_SENDS})
    a.sendall(b's' * ${SERVER_SENDS})
    full(c, ${SERVER_SENDS})
    a.close()
    c.close()
srv.close()
`;

async function runWorkload(): Promise<number> {
  const child = spawn(peerExecutable(), ['-c', WORKLOAD], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  assert.equal(code, 0);
  return Number(out.trim());
}

const one = (r: { value: [number, string] }[]) => (r.length === 1 ? Number(r[0]!.value[1]) : NaN);

describe('a stdout reader that stops reading', { skip, timeout: 180_000 }, () => {
  let prom: Prometheus;
  let agent: Agent;
  let metricsPort: number;

  before(async () => {
    metricsPort = await freePort();
    prom = await startPrometheus();
    agent = await Agent.start([
      '--sink',
      'stdout,format=json,max_buffer=64KiB',
      '--sink',
      `prometheus,endpoint=${prom.remoteWriteUrl.href},interval=1s`,
      '--sink',
      `metrics,listen=127.0.0.1:${metricsPort}`,
    ]);
  });
  after(async () => {
    await agent?.stop();
    await prom?.stop();
  });

  test('stdout drops and counts; /metrics and remote write stay exact; the kernel side loses nothing', async () => {
    agent.pauseReading();
    const port = await runWorkload();
    const want: [string, number][] = [
      ['convis_tcp_connections_total', CONNECTIONS],
      ['convis_tcp_bytes_sent_total', CONNECTIONS * CLIENT_SENDS],
      ['convis_tcp_bytes_received_total', CONNECTIONS * SERVER_SENDS],
    ];
    const sel = `server_port="${port}",direction="outbound",process="convis-peer"`;
    // remote write, while stdout is still not read
    for (const [name, value] of want) await prom.waitFor(`${name}{${sel}}`, (r) => one(r) === value, 30_000);
    // and /metrics
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const [name, value] of want) {
      const line = metrics.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`server_port="${port}"`) && l.includes('direction="outbound"'));
      assert.equal(Number(line?.split(' ').at(-1)), value, `${name} in /metrics`);
    }
    const dropped = Number(/^convis_sink_dropped_total\{[^}]*sink="stdout"[^}]*\} (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(dropped > 0, `stdout dropped and counted (${dropped})`);
    assert.match(agent.stderr, /stdout: the reader is not keeping up/);

    agent.resumeReading();
    await sleep(500);
    const r = await agent.stop();
    assert.equal(r.code, 0, r.stderr);
    const s = r.summary as { lost: number; events: Record<string, number>; sinks: { stdout: { sent: number; dropped: number } } };
    assert.equal(s.lost, 0, 'the kernel side lost nothing');
    const e = s.events;
    const connEvents = ['connect', 'accept', 'close', 'connect_failed', 'update', 'listen', 'unlisten'].reduce((n, k) => n + (e[k] ?? 0), 0);
    assert.equal(s.sinks.stdout.sent + s.sinks.stdout.dropped, connEvents, 'every event written or counted as dropped');
    assert.equal(agent.events.length, s.sinks.stdout.sent, `the reader got every event stdout says it wrote: ${JSON.stringify(s.sinks)} ${JSON.stringify(s.events)}`);
    assert.ok(s.sinks.stdout.dropped >= dropped);
  });
});
