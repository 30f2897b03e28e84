/**
 * Nothing lost silently: when the kernel side overflows or the native bridge
 * fails, every record the workload made is either delivered or counted as
 * lost, exactly, for connection and process records alike; and the agent
 * shows the loss in convis_events_lost_total, its warning line and its exit
 * summary. These are what make the "0 lost" assertions elsewhere mean
 * something: here the counters are shown to count.
 *
 * The workload (a python3 child) makes a known number of connections on a
 * port of its own and starts a known number of processes, so what it made
 * can be told apart from anything else on the machine. The kernel counters
 * count every lost record; on a quiet machine (CI) only the workload's can be
 * lost in the short window in which the consumer is held up.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { KernelRecord } from '../../src/bpf/decode.js';
import { Tracer } from '../../src/tracer/tracer.js';
import { Agent, peerExecutable, skipReasonLoudly, sleep } from '../helpers/agent.js';
import { createServer, type Server } from 'node:http';

const skip = skipReasonLoudly();

const CONNECTIONS = 1500;
const PROCESSES = 120;

/**
 * Makes CONNECTIONS loopback connections to a listener of its own (1 byte
 * each way) and starts PROCESSES /bin/true children, then prints its pid and
 * port. Records it makes: listen + unlisten, and per connection connect,
 * accept and two closes; fork, exec and exit of itself and of each child.
 */
const WORKLOAD = `
import json, os, socket, subprocess
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(256)
port = srv.getsockname()[1]
for i in range(${CONNECTIONS}):
    c = socket.create_connection(('127.0.0.1', port))
    a, _ = srv.accept()
    c.sendall(b'x')
    a.recv(1)
    a.sendall(b'y')
    c.recv(1)
    a.close()
    c.close()
for i in range(${PROCESSES}):
    subprocess.run(['/bin/true'])
srv.close()
print(json.dumps({'pid': os.getpid(), 'port': port}))
`;

const MADE_CONN = 2 + 4 * CONNECTIONS;
/** fork, exec and exit of the workload itself and of each child */
const MADE_PROC = 3 * (1 + PROCESSES);

interface Workload {
  pid: number;
  port: number;
}

/** Runs the workload to its end; spawnSync holds this thread (and so the tracer's consumer) until then. */
function runWorkloadBlocking(python: string): Workload {
  const r = spawnSync(python, ['-c', WORKLOAD], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Workload;
}

function ofWorkload(records: readonly KernelRecord[], w: Workload): { conn: number; proc: number } {
  let conn = 0;
  let proc = 0;
  for (const r of records) {
    switch (r.kind) {
      case 'exec':
      case 'exit':
      case 'fork':
        if (r.pid === w.pid || r.ppid === w.pid) proc++;
        break;
      case 'connect':
      case 'accept':
      case 'close':
      case 'listen':
      case 'unlisten':
      case 'connect_failed':
      case 'update':
        if (r.proto === 'tcp' && (r.localPort === w.port || r.remotePort === w.port)) conn++;
        break;
      default:
        break;
    }
  }
  return { conn, proc };
}

async function collect(tracer: Tracer): Promise<KernelRecord[]> {
  const records: KernelRecord[] = [];
  tracer.start((batch) => {
    for (const r of batch) records.push(r);
  });
  // the consumer runs before the workload starts
  await sleep(200);
  return records;
}

describe('every record is delivered or counted as lost', { skip, timeout: 180_000 }, () => {
  // the interpreter itself, found before any tracing starts: a wrapper such as
  // a pyenv shim would start processes of its own while the consumer is held up
  let python: string;
  before(() => {
    python = peerExecutable();
  });

  test('a tiny ring buffer and a stalled consumer: delivered + lost == made, for connection and process records', async () => {
    const tracer = Tracer.open({ ringBytes: 16 << 10, sweepMs: 0 });
    const records = await collect(tracer);
    const w = runWorkloadBlocking(python);
    await tracer.stop();
    const got = ofWorkload(records, w);
    const s = tracer.stats();
    assert.ok(s.lostConnEvents > 0, 'the overload made the kernel drop connection records');
    assert.ok(s.lostProcEvents > 0, 'and process records');
    assert.ok(got.conn > 0 && got.proc > 0, `and some got through: ${JSON.stringify(got)} of ${records.length} records (${JSON.stringify(s)})`);
    assert.equal(got.conn + s.lostConnEvents, MADE_CONN, `connection records: ${got.conn} delivered + ${s.lostConnEvents} lost`);
    assert.equal(got.proc + s.lostProcEvents, MADE_PROC, `process records: ${got.proc} delivered + ${s.lostProcEvents} lost`);
    assert.deepEqual(s.bridgeLost, { connection: 0, process: 0, dns: 0, other: 0 }, 'the kernel lost these, not the bridge');
  });

  test('the native bridge: batches it could not allocate or hand over are counted, exactly', async () => {
    const tracer = Tracer.open({ sweepMs: 0, faultAllocEvery: 3, faultHandoffEvery: 2 });
    const records = await collect(tracer);
    const w = runWorkloadBlocking(python);
    await tracer.stop();
    const got = ofWorkload(records, w);
    const s = tracer.stats();
    assert.ok(s.bridgeLost.connection > 0 && s.bridgeLost.process > 0, `the bridge lost records: ${JSON.stringify(s.bridgeLost)}`);
    assert.equal(s.lostConnEvents, s.bridgeLost.connection, 'the 16 MiB ring lost nothing');
    assert.equal(got.conn + s.lostConnEvents, MADE_CONN, `connection records: ${got.conn} delivered + ${s.lostConnEvents} lost`);
    assert.equal(got.proc + s.lostProcEvents, MADE_PROC, `process records: ${got.proc} delivered + ${s.lostProcEvents} lost`);
  });

  describe('the agent shows the loss: events, convis_events_lost_total, the warning line and the summary', () => {
    let agent: Agent;
    let metricsPort: number;
    let blocker: Server;
    before(async () => {
      // a free port for /metrics
      blocker = createServer();
      await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
      metricsPort = (blocker.address() as { port: number }).port;
      await new Promise<void>((r) => blocker.close(() => r()));
      agent = await Agent.start(['--ring-buffer', '16KiB', '--sink', `metrics,listen=127.0.0.1:${metricsPort}`]);
    });
    after(async () => {
      await agent?.stop();
    });

    test('stopped while the workload runs, it counts exactly what it could not see', async () => {
      const lostMetric = (text: string, kind: string) => Number(new RegExp(`^convis_events_lost_total\\{[^}]*kind="${kind}"[^}]*\\} (\\d+)$`, 'm').exec(text)?.[1]);
      const scrape = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      // what the start-up snapshot may have lost through the tiny ring is not the workload's
      const lostBefore = lostMetric(await scrape(), 'connection');
      assert.ok(Number.isInteger(lostBefore));
      // SIGSTOP holds every thread of the agent: the kernel fills the ring and counts the rest
      agent.signal('SIGSTOP');
      let w: Workload;
      try {
        w = runWorkloadBlocking(python);
      } finally {
        agent.signal('SIGCONT');
      }
      await sleep(1500);
      const metrics = await scrape();
      const result = await agent.stop();
      assert.equal(result.code, 0, result.stderr);
      const summary = result.summary as { lost_conn_events: number; lost_proc_events: number; lost: number };
      const seen = agent.events.filter((e) => e.local.port === w.port || e.remote?.port === w.port).length;
      const lost = summary.lost_conn_events - lostBefore;
      assert.ok(lost > 0, 'records were lost');
      assert.equal(seen + lost, MADE_CONN, `${seen} events + ${lost} lost`);
      assert.equal(summary.lost, summary.lost_conn_events + summary.lost_proc_events);
      // the metric as served after the workload: the same counts
      assert.equal(lostMetric(metrics, 'connection'), summary.lost_conn_events);
      assert.equal(lostMetric(metrics, 'process'), summary.lost_proc_events);
      assert.match(result.stderr, new RegExp(`lost \\d+ events \\(${summary.lost} since start: ${summary.lost_conn_events} connection, ${summary.lost_proc_events} process\\)`));
    });
  });
});
