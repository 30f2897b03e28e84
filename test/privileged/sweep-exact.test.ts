/**
 * Live counts stay exact when sweeps race the connections they read: at
 * max connection churn (bench/churn.c, 64 bytes each way per connection)
 * with a sweep every millisecond, so that sweeps keep reading sockets that
 * are taking in their peer's FIN or closing on another CPU, every socket's
 * reports (its updates' deltas and its close's rest) add up to its
 * lifetime totals at close, and those are the 64 bytes churn moved.
 *
 * What this guards: a sweep reads a socket without its lock. The kernel
 * counts a FIN in bytes_received before it marks the socket done, so a
 * sweep that looked in between reported 65 bytes received, and the close
 * could not take the extra byte back (before the fix, about one socket a
 * minute at the bench's rate). A sweep that moved a mark for a socket whose map
 * entry was reused meanwhile would show here too.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { buildChurn, runChurn } from '../../bench/lib.js';
import type { ConnRecord, KernelRecord } from '../../src/bpf/decode.js';
import { Tracer } from '../../src/tracer/tracer.js';
import { skipReasonLoudly, sleep } from '../helpers/agent.js';
import { createNetnsPair } from '../helpers/netns.js';
import { freePort } from '../helpers/prometheus.js';

const skip = skipReasonLoudly();

const SECONDS = 30;
/**
 * More connections in flight than the bench's 2 + 2 threads: more sockets
 * between a FIN's two steps when a sweep looks. On the build before the
 * fix, 2 of 4 runs of 20 s with these found a bad socket (1 of 4 with 2 + 2).
 */
const THREADS = { clients: 8, servers: 4 };
/** churn.c's MSG_SIZE */
const MSG_BYTES = 64;

interface Reports {
  sent: number;
  received: number;
  updates: number;
  close: ConnRecord | undefined;
}

/** Starts the tracer; each socket's reports (by conn id) among the records `ours` picks, as they come. */
function collectReports(tracer: Tracer, ours: (r: KernelRecord) => r is ConnRecord): Map<number, Reports> {
  const sockets = new Map<number, Reports>();
  tracer.start((batch) => {
    for (const r of batch) {
      if (!ours(r)) continue;
      let s = sockets.get(r.connId);
      if (s === undefined) {
        s = { sent: 0, received: 0, updates: 0, close: undefined };
        sockets.set(r.connId, s);
      }
      s.sent += r.deltaSent;
      s.received += r.deltaReceived;
      if (r.kind === 'update') s.updates++;
      else s.close = r;
    }
  });
  return sockets;
}

describe('sweeps racing closes at max churn', { skip, timeout: 150_000 }, () => {
  test('every socket\'s updates and close add up to its lifetime totals, which are what churn moved', async () => {
    buildChurn();
    const port = await freePort();
    const tracer = Tracer.open({ ringBytes: 64 << 20, sweepMs: 1 });
    const ours = (r: KernelRecord): r is ConnRecord =>
      'proto' in r && r.proto === 'tcp' && (r.localPort === port || r.remotePort === port) && (r.kind === 'update' || r.kind === 'close');
    const sockets = collectReports(tracer, ours);
    let churn;
    try {
      await sleep(200);
      churn = await runChurn(0, SECONDS, port, THREADS);
      await sleep(1000);
    } finally {
      await tracer.stop();
    }
    const stats = tracer.stats();
    assert.equal(stats.lostConnEvents, 0, 'nothing lost');
    assert.equal(churn.failed, 0, 'every exchange completed');
    const all = [...sockets.values()];
    assert.equal(all.filter((s) => s.close !== undefined).length, 2 * churn.connections, 'a close for both sockets of every connection');
    const updates = all.reduce((a, s) => a + s.updates, 0);
    // the race needs sweeps that find sockets with bytes not yet reported
    assert.ok(updates >= 1000, `sweeps reported open sockets ${updates} times (at least 1000)`);
    const wrong = all
      .filter((s) => s.close && (s.sent !== s.close.bytesSent || s.received !== s.close.bytesReceived || s.close.bytesSent !== MSG_BYTES || s.close.bytesReceived !== MSG_BYTES))
      .map((s) => `${s.close!.direction} ${s.close!.localPort}->${s.close!.remotePort}: reported ${s.sent}/${s.received} in ${s.updates} updates and the close, lifetime ${s.close!.bytesSent}/${s.close!.bytesReceived}`);
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of ${all.length} sockets whose reports do not add up (sent/received)`);
  });
});

/**
 * The same for senders that keep retransmitting: a sweep reads bytes_sent
 * and bytes_retrans without the socket's lock, and reports sent bytes as
 * the one less the other. Every socket's reports must still add up to its
 * lifetime totals at close (taken under the lock), so a retransmission is
 * never reported as sent (the check fails for a build whose sweeps report
 * bytes_sent alone). The order the two are read in (see counts_tp()) is
 * beyond a test: the other order goes wrong only when a whole
 * retransmission fits between two adjacent loads. Eight iperf3
 * streams from one namespace to another, with one in fifty of the
 * client's packets dropped on arrival (hundreds of thousands of segments
 * retransmitted), and sweeps as often as the tracer allows.
 */
describe('sweeps racing retransmissions', { skip, timeout: 120_000 }, () => {
  test("every retransmitting socket's updates and close add up to its lifetime totals", async () => {
    const ns = createNetnsPair('rtx');
    const port = 5201;
    const rule = ['INPUT', '-p', 'tcp', '-s', ns.a4, '--dport', String(port), '-m', 'statistic', '--mode', 'nth', '--every', '50', '--packet', '49', '-j', 'DROP'];
    const iptables = (op: string) => execFileSync('ip', ['netns', 'exec', ns.b, 'iptables', op, ...rule], { stdio: 'pipe' });
    const tracer = Tracer.open({ ringBytes: 64 << 20, sweepMs: 1, pollMs: 1 });
    const ours = (r: KernelRecord): r is ConnRecord =>
      'proto' in r && r.proto === 'tcp' && r.direction === 'outbound' && r.remotePort === port && (r.kind === 'update' || r.kind === 'close');
    const sockets = collectReports(tracer, ours);
    try {
      iptables('-I');
      const server = spawn('ip', ['netns', 'exec', ns.b, 'iperf3', '-s', '-1', '-B', ns.b4, '-p', String(port)], { stdio: 'ignore' });
      const serverExit = once(server, 'exit');
      await sleep(500);
      const client = spawn('ip', ['netns', 'exec', ns.a, 'iperf3', '-c', ns.b4, '-p', String(port), '-P', '8', '-t', '15'], { stdio: 'ignore' });
      const [code] = (await once(client, 'exit')) as [number | null];
      assert.equal(code, 0, 'iperf3 client finished');
      await serverExit;
      await sleep(1000);
    } finally {
      await tracer.stop();
      try {
        iptables('-D');
      } finally {
        ns.destroy();
      }
    }
    assert.equal(tracer.stats().lostConnEvents, 0, 'nothing lost');
    const all = [...sockets.values()].filter((s) => s.close !== undefined);
    // the control connection and the 8 streams
    assert.equal(all.length, 9, 'a close for every client socket');
    const retransmits = all.reduce((a, s) => a + s.close!.retransmits, 0);
    const updates = all.reduce((a, s) => a + s.updates, 0);
    assert.ok(retransmits >= 1000, `segments retransmitted ${retransmits} (at least 1000)`);
    assert.ok(updates >= 1000, `sweeps reported the streams ${updates} times (at least 1000)`);
    const wrong = all
      .filter((s) => s.sent !== s.close!.bytesSent || s.received !== s.close!.bytesReceived)
      .map((s) => `${s.close!.localPort}->${s.close!.remotePort}: reported ${s.sent}/${s.received} in ${s.updates} updates and the close, lifetime ${s.close!.bytesSent}/${s.close!.bytesReceived}, ${s.close!.retransmits} retransmits`);
    assert.deepEqual(wrong, [], `${wrong.length} of ${all.length} sockets whose reports do not add up (sent/received)`);
  });
});
