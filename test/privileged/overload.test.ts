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
import { freePort } from '../helpers/prometheus.js';

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

/** The workload's connection and process records (with `all`, every record of those kinds). */
function ofWorkload(records: readonly KernelRecord[], w: Workload, all = false): { conn: number; proc: number } {
  let conn = 0;
  let proc = 0;
  for (const r of records) {
    switch (r.kind) {
      case 'exec':
      case 'exit':
      case 'fork':
        if (all || r.pid === w.pid || r.ppid === w.pid) proc++;
        break;
      case 'connect':
      case 'accept':
      case 'close':
      case 'listen':
      case 'unlisten':
      case 'connect_failed':
      case 'update':
        if (all || (r.proto === 'tcp' && (r.localPort === w.port || r.remotePort === w.port))) conn++;
        break;
      default:
        break;
    }
  }
  return { conn, proc };
}

/** Kernel time (CLOCK_MONOTONIC, as bpf_ktime_get_ns), in ns as a number (exact below 2^53). */
const monoNs = (): number => Number(process.hrtime.bigint());
const recNs = (r: KernelRecord): number => r.tsSec * 1e9 + r.tsNsec;

/**
 * A second tracer with a ring buffer large enough to lose nothing: what else
 * the machine did while the workload ran. The kernel counts every lost
 * record, the workload's and anyone else's alike, so on a busy machine the
 * losses can exceed what the workload lost by at most what others made in
 * that time (on a quiet one, CI, that is nothing, and the check is exact).
 */
class Observer {
  private readonly tracer = Tracer.open({ ringBytes: 64 << 20, sweepMs: 0 });
  private records: KernelRecord[] = [];
  async start(): Promise<void> {
    this.records = await collect(this.tracer);
  }
  /** Records of others (not the workload's) from `fromNs` to `toNs`, after the observer has drained; it must have lost nothing. */
  async others(w: Workload, fromNs: number, toNs: number): Promise<{ conn: number; proc: number }> {
    await this.tracer.stop();
    const s = this.tracer.stats();
    assert.equal(s.lostConnEvents + s.lostProcEvents, 0, 'the observer lost nothing');
    const inWindow = this.records.filter((r) => recNs(r) >= fromNs && recNs(r) <= toNs);
    const all = ofWorkload(inWindow, { pid: -1, port: -1 }, true);
    const mine = ofWorkload(inWindow, w);
    return { conn: all.conn - mine.conn, proc: all.proc - mine.proc };
  }
}

/** delivered + lost is what the workload made, plus at most what others made meanwhile (exact on a quiet machine). */
function assertAccounted(what: string, delivered: number, lost: number, made: number, others: number): void {
  const sum = delivered + lost;
  assert.ok(
    sum >= made && sum <= made + others,
    `${what}: ${delivered} delivered + ${lost} lost = ${sum}, made ${made}${others > 0 ? ` (+ up to ${others} made by others meanwhile)` : ''}`,
  );
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
    const observer = new Observer();
    await observer.start();
    // the window is the tracer's whole life: a record others made before the
    // workload started can be lost too
    const from = monoNs();
    const tracer = Tracer.open({ ringBytes: 16 << 10, sweepMs: 0 });
    const records = await collect(tracer);
    const w = runWorkloadBlocking(python);
    await tracer.stop();
    const others = await observer.others(w, from, monoNs());
    const got = ofWorkload(records, w);
    const s = tracer.stats();
    assert.ok(s.lostConnEvents > 0, 'the overload made the kernel drop connection records');
    assert.ok(s.lostProcEvents > 0, 'and process records');
    assert.ok(got.conn > 0 && got.proc > 0, `and some got through: ${JSON.stringify(got)} of ${records.length} records (${JSON.stringify(s)})`);
    assertAccounted('connection records', got.conn, s.lostConnEvents, MADE_CONN, others.conn);
    assertAccounted('process records', got.proc, s.lostProcEvents, MADE_PROC, others.proc);
    assert.deepEqual(s.bridgeLost, { connection: 0, process: 0, dns: 0, other: 0 }, 'the kernel lost these, not the bridge');
  });

  test('the native bridge: batches it could not allocate or hand over are counted, exactly', async () => {
    const observer = new Observer();
    await observer.start();
    // the tracer's whole life (see above): a failed batch may hold records others made before the workload
    const from = monoNs();
    const tracer = Tracer.open({ sweepMs: 0, faultAllocEvery: 3, faultHandoffEvery: 2 });
    const records = await collect(tracer);
    const w = runWorkloadBlocking(python);
    await tracer.stop();
    const others = await observer.others(w, from, monoNs());
    const got = ofWorkload(records, w);
    const s = tracer.stats();
    assert.ok(s.bridgeLost.connection > 0 && s.bridgeLost.process > 0, `the bridge lost records: ${JSON.stringify(s.bridgeLost)}`);
    assert.equal(s.lostConnEvents, s.bridgeLost.connection, 'the ring buffer lost nothing');
    assertAccounted('connection records', got.conn, s.lostConnEvents, MADE_CONN, others.conn);
    assertAccounted('process records', got.proc, s.lostProcEvents, MADE_PROC, others.proc);
  });

  describe('the agent shows the loss: events, convis_events_lost_total, the warning line and the summary', () => {
    let agent: Agent;
    let metricsPort: number;
    before(async () => {
      metricsPort = await freePort();
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
      const observer = new Observer();
      await observer.start();
      // SIGSTOP holds every thread of the agent: the kernel fills the ring and counts the rest
      const from = monoNs();
      agent.signal('SIGSTOP');
      let w: Workload;
      try {
        w = runWorkloadBlocking(python);
      } finally {
        agent.signal('SIGCONT');
      }
      await sleep(300);
      const others = await observer.others(w, from, monoNs());
      await sleep(1200);
      const metrics = await scrape();
      const result = await agent.stop();
      assert.equal(result.code, 0, result.stderr);
      const summary = result.summary as { lost_conn_events: number; lost_proc_events: number; lost: number };
      const seen = agent.events.filter((e) => e.local.port === w.port || e.remote?.port === w.port).length;
      const lost = summary.lost_conn_events - lostBefore;
      assert.ok(lost > 0, 'records were lost');
      assertAccounted('connection events', seen, lost, MADE_CONN, others.conn);
      assert.equal(summary.lost, summary.lost_conn_events + summary.lost_proc_events);
      // the metric as served after the workload: the same counts
      assert.equal(lostMetric(metrics, 'connection'), summary.lost_conn_events);
      assert.equal(lostMetric(metrics, 'process'), summary.lost_proc_events);
      assert.match(result.stderr, new RegExp(`lost \\d+ events \\(${summary.lost} since start: ${summary.lost_conn_events} connection, ${summary.lost_proc_events} process\\)`));
    });
  });
});
