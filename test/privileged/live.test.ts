/**
 * Continuous visibility on the real kernel: live byte counts of open
 * connections (events and counters, interval by interval), connections and
 * listeners older than the agent, listen/unlisten and the listen gauge, UDP
 * between network namespaces, connects that fail before any SYN, io_uring
 * accepts, and counters that equal the events' bytes after a mixed run.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, type JsonEvent, type Peer, skipReasonLoudly, sleep, startPeer } from '../helpers/agent.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { repoRoot } from '../helpers/paths.js';
import { freePort } from '../helpers/prometheus.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a /metrics page. */
async function scrape(port: number): Promise<Sample[]> {
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const samples: Sample[] = [];
  for (const line of body.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of a counter over the samples whose labels include `match`. */
function counter(samples: Sample[], name: string, match: Record<string, string>): number {
  return samples
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** The port of the service side of an event's flow, as the metrics label it. */
const serverPort = (e: JsonEvent): number => (e.direction === 'outbound' ? (e.remote?.port ?? 0) : e.local.port);

/**
 * What an event adds to the byte counters: an update's bytes, a close's
 * rest (its delta fields, or its totals when it has none: nothing of it was
 * reported before).
 */
function added(e: JsonEvent): { sent: number; received: number } {
  if (e.event === 'update') return { sent: e.bytes_sent!, received: e.bytes_received! };
  if (e.event === 'close') return { sent: e.bytes_sent_delta ?? e.bytes_sent!, received: e.bytes_received_delta ?? e.bytes_received! };
  return { sent: 0, received: 0 };
}

/** One side of a TCP connection by its ports. */
const side = (es: JsonEvent[], local: number, remote: number) => es.filter((e) => e.local.port === local && e.remote?.port === remote);

async function ports(peer: Peer): Promise<{ server: number; client: number }> {
  const [server, client] = (await peer.line('ports')).split(' ').map(Number);
  return { server: server!, client: client! };
}

describe('continuous visibility on the real kernel', { skip }, () => {
  let agent: Agent;
  let metricsPort: number;
  let ns: NetnsPair;
  // made before the agent starts
  let pre: Peer;
  let prePorts: { server: number; client: number };
  let backlog: Peer;
  let backlogPort: number;
  let orphanPort: number;
  let orphanQueued: number;
  /** server ports of this suite's TCP connections, for the counter check at the end */
  const suitePorts = new Set<number>();
  /** bytes moved while the agent watched, one way (each is both sent and received once) */
  let movedWhileWatched = 0;

  before(async () => {
    ns = createNetnsPair('live');
    // a connection with 1500 + 300 bytes behind it, and its listener
    pre = startPeer(['pair', '127.0.0.1']);
    prePorts = await ports(pre);
    await pre.command('c2s 1500', 'ok');
    await pre.command('s2c 300', 'ok');
    suitePorts.add(prePorts.server);
    // owners gone: a connection nobody has accepted, whose client queued more
    // than the server takes in, closed and exited: its socket stays in
    // FIN_WAIT1 with data to deliver, owned by no process
    backlog = startPeer(['backlog', '127.0.0.1']);
    backlogPort = Number(await backlog.line('port'));
    const orphan = startPeer(['orphan', '127.0.0.1', String(backlogPort), String(16 << 20)]);
    orphanPort = Number(await orphan.line('local'));
    orphanQueued = Number(await orphan.line('queued'));
    assert.equal(await orphan.exited, 0);
    suitePorts.add(backlogPort);

    metricsPort = await freePort();
    agent = await Agent.start(['--interval', '1s', '--sink', `metrics,listen=127.0.0.1:${metricsPort}`]);
  });

  after(async () => {
    pre?.child.kill();
    backlog?.child.kill();
    const r = await agent?.stop();
    ns?.destroy();
    assert.equal(r?.code, 0, `agent exit: ${r?.stderr}`);
    assert.equal(r?.summary?.lost, 0, 'no events lost');
  });

  test('a connection and a listener older than the agent: reported at start with their pid, then updated and closed with lifetime totals', async () => {
    const { server, client } = prePorts;
    await agent.waitFor(
      (es) => side(es, client, server).some((e) => e.existing) && side(es, server, client).some((e) => e.existing),
      'the existing connection',
    );
    const out = side(agent.events, client, server).find((e) => e.existing)!;
    const inb = side(agent.events, server, client).find((e) => e.existing)!;
    assert.equal(out.event, 'connect');
    assert.equal(out.direction, 'outbound');
    assert.equal(inb.event, 'accept', 'the side on the listening port is the accepted one');
    assert.equal(inb.direction, 'inbound');
    for (const e of [out, inb]) {
      assert.equal(e.process?.pid, pre.pid);
      assert.equal(e.process?.comm, 'convis-peer');
      assert.match(e.process?.cmd ?? '', /peers\.py pair/);
    }
    // what moved before the agent started, on the events only
    assert.deepEqual([out.bytes_sent, out.bytes_received], [1500, 300]);
    assert.deepEqual([inb.bytes_sent, inb.bytes_received], [300, 1500]);
    const listen = agent.events.find((e) => e.event === 'listen' && e.local.port === server);
    assert.ok(listen, 'the existing listener');
    assert.equal(listen.existing, true);
    assert.equal(listen.process?.pid, pre.pid);
    assert.equal(listen.remote, null);

    await pre.command('c2s 700', 'ok');
    movedWhileWatched += 700;
    await agent.waitFor((es) => side(es, client, server).some((e) => e.event === 'update'), 'an update of the existing connection');
    const upd = side(agent.events, client, server).find((e) => e.event === 'update')!;
    assert.deepEqual([upd.bytes_sent, upd.bytes_received], [700, 0], 'only what moved since the agent started');
    assert.equal(upd.conn_id, out.conn_id);
    assert.equal(upd.process?.pid, pre.pid);

    await pre.command('close', 'closed');
    await agent.waitFor(
      (es) => side(es, client, server).some((e) => e.event === 'close') && side(es, server, client).some((e) => e.event === 'close'),
      'both closes',
    );
    const cclose = side(agent.events, client, server).find((e) => e.event === 'close')!;
    const sclose = side(agent.events, server, client).find((e) => e.event === 'close')!;
    assert.deepEqual([cclose.bytes_sent, cclose.bytes_received], [2200, 300], 'lifetime totals, from before the agent too');
    assert.deepEqual([sclose.bytes_sent, sclose.bytes_received], [300, 2200]);
    assert.equal(cclose.process?.pid, pre.pid);
    assert.equal(sclose.process?.pid, pre.pid);
    assert.equal(cclose.conn_id, out.conn_id);
    // everything the agent saw moving is in exactly one report
    const sum = (es: JsonEvent[]) => es.reduce((a, e) => ({ s: a.s + added(e).sent, r: a.r + added(e).received }), { s: 0, r: 0 });
    assert.deepEqual(sum(side(agent.events, client, server)), { s: 700, r: 0 });
    assert.deepEqual(sum(side(agent.events, server, client)), { s: 0, r: 700 });
    await agent.waitFor((es) => es.some((e) => e.event === 'unlisten' && e.local.port === server), 'unlisten of the old listener');
  });

  test('connections whose owner has gone are reported at start with process null, and named when a process takes them', async () => {
    await agent.waitFor(
      (es) => side(es, backlogPort, orphanPort).some((e) => e.existing) && side(es, orphanPort, backlogPort).some((e) => e.existing),
      'the ownerless connection',
    );
    const unaccepted = side(agent.events, backlogPort, orphanPort).find((e) => e.existing)!;
    const orphaned = side(agent.events, orphanPort, backlogPort).find((e) => e.existing)!;
    assert.equal(unaccepted.event, 'accept');
    assert.equal(unaccepted.process, null, 'not accepted by anyone yet');
    assert.ok(unaccepted.bytes_received! > 0);
    assert.equal(orphaned.event, 'connect');
    assert.equal(orphaned.process, null, 'its process exited');
    assert.equal(orphaned.bytes_sent, unaccepted.bytes_received, 'what one sent the other has');
    assert.ok(orphaned.bytes_sent! < orphanQueued, 'more is still to be delivered');

    backlog.child.stdin!.write('accept\n');
    const drained = Number(await backlog.line('drained', 20_000));
    assert.equal(drained, orphanQueued, 'the server got all of it');
    movedWhileWatched += orphanQueued - orphaned.bytes_sent!;
    await agent.waitFor((es) => side(es, backlogPort, orphanPort).some((e) => e.event === 'accept' && !e.existing), 'the accept');
    const accept = side(agent.events, backlogPort, orphanPort).find((e) => e.event === 'accept' && !e.existing)!;
    assert.equal(accept.process?.pid, backlog.pid);
    assert.equal(accept.conn_id, unaccepted.conn_id);

    await backlog.command('close', 'closed');
    await agent.waitFor(
      (es) => side(es, backlogPort, orphanPort).some((e) => e.event === 'close') && side(es, orphanPort, backlogPort).some((e) => e.event === 'close'),
      'both closes',
    );
    const sclose = side(agent.events, backlogPort, orphanPort).find((e) => e.event === 'close')!;
    const oclose = side(agent.events, orphanPort, backlogPort).find((e) => e.event === 'close')!;
    assert.equal(sclose.process?.pid, backlog.pid);
    assert.equal(sclose.bytes_received, orphanQueued, 'lifetime total');
    assert.equal(oclose.process, null);
    assert.equal(oclose.bytes_sent, orphanQueued, 'lifetime total of the orphan');
    assert.equal(oclose.conn_id, orphaned.conn_id);
    // what moved after the start, and only that, is in the reports
    const moved = (es: JsonEvent[], k: 'sent' | 'received') => es.reduce((a, e) => a + added(e)[k], 0);
    assert.equal(moved(side(agent.events, orphanPort, backlogPort), 'sent'), orphanQueued - orphaned.bytes_sent!);
    assert.equal(moved(side(agent.events, backlogPort, orphanPort), 'received'), orphanQueued - unaccepted.bytes_received!);
  });

  test('a connection open across three intervals: each interval\'s bytes in its update and in the counters, then the lifetime totals at close', async () => {
    const p = startPeer(['pair', '127.0.0.1']);
    const { server, client } = await ports(p);
    suitePorts.add(server);
    const amounts = [1000, 2000, 3000];
    let total = 0;
    for (const [i, n] of amounts.entries()) {
      await p.command(`c2s ${n}`, 'ok');
      total += n;
      // one report per side for this interval's bytes (a send this small is one segment)
      await agent.waitFor(
        (es) =>
          side(es, client, server).filter((e) => e.event === 'update').length === i + 1 &&
          side(es, server, client).filter((e) => e.event === 'update').length === i + 1,
        `the updates of interval ${i + 1}`,
      );
      const out = side(agent.events, client, server).filter((e) => e.event === 'update');
      const inb = side(agent.events, server, client).filter((e) => e.event === 'update');
      assert.deepEqual([out[i]!.bytes_sent, out[i]!.bytes_received], [n, 0], `client update ${i + 1}`);
      assert.deepEqual([inb[i]!.bytes_sent, inb[i]!.bytes_received], [0, n], `server update ${i + 1}`);
      assert.equal(out[i]!.process?.pid, p.pid);
      assert.equal(inb[i]!.direction, 'inbound');
      // the counters grow while the connection lives
      const m = await scrape(metricsPort);
      const port = String(server);
      assert.equal(counter(m, 'convis_tcp_bytes_sent_total', { direction: 'outbound', server_port: port, process: 'convis-peer' }), total);
      assert.equal(counter(m, 'convis_tcp_bytes_received_total', { direction: 'inbound', server_port: port, process: 'convis-peer' }), total);
      assert.equal(counter(m, 'convis_tcp_bytes_received_total', { direction: 'outbound', server_port: port }), 0);
    }
    movedWhileWatched += total;
    await p.command('close', 'closed');
    await agent.waitFor((es) => side(es, client, server).some((e) => e.event === 'close'), 'the close');
    const close = side(agent.events, client, server).find((e) => e.event === 'close')!;
    assert.deepEqual([close.bytes_sent, close.bytes_received], [6000, 0]);
    assert.equal(close.bytes_sent_delta, 0, 'every byte was reported live already');
    const m = await scrape(metricsPort);
    assert.equal(counter(m, 'convis_tcp_bytes_sent_total', { direction: 'outbound', server_port: String(server) }), 6000, 'not counted again at close');
  });

  test('an idle connection sends nothing between its connect and its close', async () => {
    const p = startPeer(['pair', '127.0.0.1']);
    const { server, client } = await ports(p);
    suitePorts.add(server);
    await p.command('c2s 10', 'ok');
    movedWhileWatched += 10;
    await agent.waitFor((es) => side(es, client, server).some((e) => e.event === 'update'), 'the first update');
    await sleep(2500); // two more intervals, with nothing moving
    assert.equal(side(agent.events, client, server).filter((e) => e.event === 'update').length, 1);
    await p.command('close', 'closed');
  });

  test('a listener opened and closed: listen and unlisten, and the gauge comes and goes', async () => {
    const l = startPeer(['listen', '::1']);
    const port = Number(await l.line('port'));
    await agent.waitFor((es) => es.some((e) => e.event === 'listen' && e.local.port === port), 'listen');
    const listen = agent.events.find((e) => e.event === 'listen' && e.local.port === port)!;
    assert.equal(listen.process?.pid, l.pid);
    assert.equal(listen.local.ip, '::1');
    assert.equal(listen.existing, undefined);
    const gauge = (m: Sample[]) => m.filter((s) => s.name === 'convis_tcp_listen_info' && s.labels.listen_port === String(port));
    const g = gauge(await scrape(metricsPort));
    assert.equal(g.length, 1);
    assert.deepEqual([g[0]!.value, g[0]!.labels.listen_ip, g[0]!.labels.process], [1, '::1', 'convis-peer']);

    await l.command('close', 'closed');
    await agent.waitFor((es) => es.some((e) => e.event === 'unlisten' && e.local.port === port), 'unlisten');
    const unlisten = agent.events.find((e) => e.event === 'unlisten' && e.local.port === port)!;
    assert.equal(unlisten.conn_id, listen.conn_id);
    assert.equal(unlisten.process?.pid, l.pid);
    assert.equal(gauge(await scrape(metricsPort)).length, 0);
  });

  for (const family of ['IPv4', 'IPv6'] as const) {
    for (const mode of ['connected', 'unconnected'] as const) {
      test(`UDP over ${family} between network namespaces, ${mode} client: datagrams and bytes each way, with each side's process`, async () => {
        const host = family === 'IPv4' ? ns.b4 : ns.b6;
        const clientIp = family === 'IPv4' ? ns.a4 : ns.a6;
        const count = 5;
        const size = 100;
        const reply = 33;
        const server = startPeer(['udp-server', host, String(count), String(reply)], ns.b);
        const port = Number(await server.line('port'));
        const client = startPeer(['udp-client', host, String(port), String(count), String(size), mode], ns.a);
        const local = Number(await client.line('local'));
        assert.equal(await client.exited, 0);
        assert.equal(await server.exited, 0);
        const cside = (es: JsonEvent[]) => es.filter((e) => e.proto === 'udp' && e.local.port === local && e.remote?.port === port);
        const sside = (es: JsonEvent[]) => es.filter((e) => e.proto === 'udp' && e.local.port === port && e.remote?.port === local);
        const sum = (es: JsonEvent[], k: 'bytes_sent' | 'bytes_received' | 'datagrams_sent' | 'datagrams_received') =>
          es.reduce((a, e) => a + (e[k] ?? 0), 0);
        await agent.waitFor(
          (es) => sum(cside(es), 'datagrams_received') === count && sum(sside(es), 'datagrams_received') === count,
          'both sides\' datagrams',
        );
        await sleep(1200); // a report too many would show up by now
        const c = cside(agent.events);
        const s = sside(agent.events);
        assert.deepEqual(
          [sum(c, 'datagrams_sent'), sum(c, 'bytes_sent'), sum(c, 'datagrams_received'), sum(c, 'bytes_received')],
          [count, count * size, count, count * reply],
          'client side',
        );
        assert.deepEqual(
          [sum(s, 'datagrams_sent'), sum(s, 'bytes_sent'), sum(s, 'datagrams_received'), sum(s, 'bytes_received')],
          [count, count * reply, count, count * size],
          'server side',
        );
        for (const e of c) {
          assert.equal(e.event, 'update');
          assert.equal(e.process?.pid, client.pid);
          assert.equal(e.direction, 'outbound', 'the client sent first');
          assert.equal(e.remote?.ip, host);
          assert.equal(e.netns, ns.inodeA);
        }
        for (const e of s) {
          assert.equal(e.process?.pid, server.pid);
          assert.equal(e.direction, 'inbound', 'the server received first');
          assert.equal(e.remote?.ip, clientIp);
          assert.equal(e.netns, ns.inodeB);
        }
        const m = await scrape(metricsPort);
        assert.equal(counter(m, 'convis_udp_datagrams_sent_total', { direction: 'outbound', server_port: String(port), remote_ip: host }), count);
        assert.equal(counter(m, 'convis_udp_bytes_received_total', { direction: 'inbound', server_port: String(port), remote_ip: clientIp }), count * size);
      });
    }
  }

  test('connects that fail before any SYN: one connect_failed each, with the errno name, the process and the destination', async () => {
    // a fresh network namespace with these routes and nothing else: no packet leaves it
    const fresh = `convis-nosyn-${process.pid}`;
    const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });
    ip('netns', 'add', fresh);
    try {
      ip('-n', fresh, 'link', 'set', 'lo', 'up');
      ip('-n', fresh, 'route', 'add', 'unreachable', '198.51.100.0/24');
      ip('-n', fresh, 'route', 'add', 'prohibit', '203.0.113.0/24');
      const cases = [
        { role: 'refused', host: '198.51.100.7', errno: 113, name: 'EHOSTUNREACH', proto: 'tcp' },
        { role: 'refused', host: '203.0.113.7', errno: 13, name: 'EACCES', proto: 'tcp' },
        { role: 'refused', host: '192.0.2.7', errno: 101, name: 'ENETUNREACH', proto: 'tcp' },
        { role: 'udp-connect', host: '198.51.100.8', errno: 113, name: 'EHOSTUNREACH', proto: 'udp' },
      ];
      for (const c of cases) {
        const peer = startPeer([c.role, c.host, '8080'], fresh);
        assert.equal(await peer.line('errno'), String(c.errno), `${c.role} ${c.host}`);
        const mine = (es: JsonEvent[]) => es.filter((e) => e.remote?.ip === c.host && e.process?.pid === peer.pid);
        await agent.waitFor((es) => mine(es).length > 0, `connect_failed to ${c.host}`);
        await sleep(200);
        const evs = mine(agent.events);
        assert.equal(evs.length, 1, JSON.stringify(evs));
        assert.equal(evs[0]!.event, 'connect_failed');
        assert.equal(evs[0]!.error, c.name);
        assert.equal(evs[0]!.proto, c.proto);
        assert.equal(evs[0]!.remote?.port, 8080);
        assert.equal(evs[0]!.direction, 'outbound');
        assert.equal(evs[0]!.process?.comm, 'convis-peer');
      }
    } finally {
      ip('netns', 'del', fresh);
    }
  });

  test('a connection accepted through io_uring is named after the process that uses it', async () => {
    const bin = join(tempDir('convis-uring-'), 'uring-server');
    execFileSync('cc', ['-O2', '-o', bin, join(repoRoot, 'test/helpers/uring-server.c'), '-luring'], { stdio: 'pipe' });
    const { spawn } = await import('node:child_process');
    const server = spawn(bin, ['4000', '900'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
      server.stdout!.once('data', (d: Buffer) => resolve(Number(/port (\d+)/.exec(d.toString())?.[1])));
      server.once('exit', (code) => reject(new Error(`uring-server exited ${code}`)));
    });
    suitePorts.add(port);
    const client = startPeer(['client', '127.0.0.1', String(port), '4000', '900']);
    assert.equal(await client.exited, 0);
    movedWhileWatched += 4900;
    const inb = (es: JsonEvent[]) => es.filter((e) => e.direction === 'inbound' && e.local.port === port && e.remote !== null);
    await agent.waitFor((es) => inb(es).some((e) => e.event === 'close'), 'the server side\'s close');
    const accept = inb(agent.events).find((e) => e.event === 'accept');
    const close = inb(agent.events).find((e) => e.event === 'close')!;
    assert.ok(accept, 'an accept, made at the first receive');
    assert.equal(accept.process?.pid, server.pid);
    assert.equal(close.process?.pid, server.pid);
    assert.deepEqual([close.bytes_sent, close.bytes_received], [900, 4000]);
  });

  test('short, long-lived and pre-existing connections: the counters equal the bytes of the events, each counted once', async () => {
    // a few short connections too
    for (let i = 0; i < 3; i++) {
      const server = startPeer(['server', '127.0.0.1', String(100 * (i + 1)), String(50 * (i + 1))]);
      const port = Number(await server.line('port'));
      suitePorts.add(port);
      const client = startPeer(['client', '127.0.0.1', String(port), String(50 * (i + 1)), String(100 * (i + 1))]);
      assert.equal(await client.exited, 0);
      assert.equal(await server.exited, 0);
      movedWhileWatched += 150 * (i + 1);
    }
    const ours = (es: JsonEvent[]) => es.filter((e) => e.proto === 'tcp' && e.remote !== null && suitePorts.has(serverPort(e)));
    // every connection of the suite has closed: wait for both closes on each
    // port (at least: a count of all closes never matched again if one port
    // saw more), then a sweep
    const closes = (es: JsonEvent[]) => {
      const byPort = new Map<number, number>([...suitePorts].map((p) => [p, 0]));
      for (const e of ours(es)) if (e.event === 'close') byPort.set(serverPort(e), (byPort.get(serverPort(e)) ?? 0) + 1);
      return byPort;
    };
    try {
      await agent.waitFor((es) => [...closes(es).values()].every((n) => n >= 2), 'both closes of every connection', 30_000);
    } catch (e) {
      throw new Error(`closes per server port: ${JSON.stringify([...closes(agent.events)])}; ${(e as Error).message}`);
    }
    for (const [port, n] of closes(agent.events)) assert.equal(n, 2, `closes on port ${port}`);
    await sleep(1200);
    const events = ours(agent.events);
    const fromEvents = events.reduce((a, e) => ({ sent: a.sent + added(e).sent, received: a.received + added(e).received }), { sent: 0, received: 0 });
    const m = await scrape(metricsPort);
    let sent = 0;
    let received = 0;
    for (const port of suitePorts) {
      sent += counter(m, 'convis_tcp_bytes_sent_total', { server_port: String(port) });
      received += counter(m, 'convis_tcp_bytes_received_total', { server_port: String(port) });
    }
    assert.deepEqual({ sent, received }, fromEvents, 'counters and events agree');
    assert.deepEqual({ sent, received }, { sent: movedWhileWatched, received: movedWhileWatched }, 'and both are what moved while the agent watched');
  });
});
