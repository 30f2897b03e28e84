/**
 * The capture core against the real kernel with real TCP traffic: every
 * connection is reported exactly once per side, with the right process,
 * addresses, ports and exact payload byte counts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Agent, type JsonEvent, skipReasonLoudly, startPeer } from '../helpers/agent.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';

const skip = skipReasonLoudly();

interface Exchange {
  serverPid: number;
  clientPid: number;
  port: number;
  localPort: number;
  serverNetns: number;
  clientNetns: number;
  outbound: JsonEvent[];
  inbound: JsonEvent[];
}

/** The network namespace inode of a live process; 0 if it has exited already. */
function netnsInode(pid: number): number {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return 0;
  }
}

/**
 * A server and a client process exchange known byte counts; returns each
 * side's events once all four (connect, accept, two closes) have arrived.
 */
async function exchange(
  agent: Agent,
  o: { bind: string; connect: string; clientSends: number; serverSends: number; serverNs?: string; clientNs?: string },
): Promise<Exchange> {
  const server = startPeer(['server', o.bind, String(o.serverSends), String(o.clientSends)], o.serverNs);
  const port = Number(await server.line('port'));
  const serverNetns = netnsInode(server.pid);
  assert.ok(serverNetns > 0, 'the server waits for its client');
  const client = startPeer(['client', o.connect, String(port), String(o.clientSends), String(o.serverSends)], o.clientNs);
  const localPort = Number(await client.line('local'));
  const clientNetns = netnsInode(client.pid);
  assert.equal(await client.exited, 0, 'client failed');
  assert.equal(await server.exited, 0, 'server failed');
  // the connection's life events; a big transfer may also get updates, checked apart
  const outbound = (es: JsonEvent[]) =>
    es.filter((e) => e.direction === 'outbound' && e.event !== 'update' && e.remote?.port === port && e.local.port === localPort);
  const inbound = (es: JsonEvent[]) =>
    es.filter((e) => e.direction === 'inbound' && e.event !== 'update' && e.local.port === port && e.remote?.port === localPort);
  await agent.waitFor(
    (es) => outbound(es).some((e) => e.event === 'close') && inbound(es).some((e) => e.event === 'close'),
    `both closes of port ${port}`,
  );
  // give a duplicate, if the agent would make one, time to show up
  await new Promise((r) => setTimeout(r, 300));
  return {
    serverPid: server.pid,
    clientPid: client.pid,
    port,
    localPort,
    serverNetns,
    clientNetns,
    outbound: outbound(agent.events),
    inbound: inbound(agent.events),
  };
}

function assertExchange(x: Exchange, o: { clientIp: string; serverIp: string; clientSends: number; serverSends: number }) {
  const kinds = (es: JsonEvent[]) => es.map((e) => e.event).sort();
  assert.deepEqual(kinds(x.outbound), ['close', 'connect'], 'client side: one connect and one close');
  assert.deepEqual(kinds(x.inbound), ['accept', 'close'], 'server side: one accept and one close');
  for (const e of x.outbound) {
    assert.equal(e.process?.pid, x.clientPid, `${e.event}: client pid`);
    assert.equal(e.process?.comm, 'convis-peer', `${e.event}: client comm`);
    assert.match(e.process?.cmd ?? '', /peers\.py client/);
    assert.equal(e.local.ip, o.clientIp);
    assert.equal(e.remote?.ip, o.serverIp);
    assert.equal(e.proto, 'tcp');
    if (x.clientNetns) assert.equal(e.netns, x.clientNetns, 'client netns');
  }
  for (const e of x.inbound) {
    assert.equal(e.process?.pid, x.serverPid, `${e.event}: server pid`);
    assert.equal(e.process?.comm, 'convis-peer');
    assert.match(e.process?.cmd ?? '', /peers\.py server/);
    assert.equal(e.local.ip, o.serverIp);
    assert.equal(e.remote?.ip, o.clientIp);
    assert.equal(e.netns, x.serverNetns, 'server netns');
  }
  const cclose = x.outbound.find((e) => e.event === 'close')!;
  const sclose = x.inbound.find((e) => e.event === 'close')!;
  assert.equal(cclose.bytes_sent, o.clientSends, 'client bytes_sent');
  assert.equal(cclose.bytes_received, o.serverSends, 'client bytes_received');
  assert.equal(sclose.bytes_sent, o.serverSends, 'server bytes_sent');
  assert.equal(sclose.bytes_received, o.clientSends, 'server bytes_received');
  for (const e of [cclose, sclose]) {
    assert.ok(e.duration_ms! > 0 && e.duration_ms! < 60_000, `duration ${e.duration_ms}`);
    assert.equal(typeof e.srtt_us, 'number');
    // a busy 2-vCPU host can fire a tail-loss probe even on loopback, so a
    // clean exchange may still count a retransmission; bytes stay exact
    assert.ok(Number.isInteger(e.retransmits) && e.retransmits! >= 0, `retransmits ${e.retransmits}`);
  }
  // the connect and close of one socket share its conn_id; the sides differ
  assert.equal(x.outbound[0]!.conn_id, x.outbound[1]!.conn_id);
  assert.equal(x.inbound[0]!.conn_id, x.inbound[1]!.conn_id);
  assert.notEqual(x.outbound[0]!.conn_id, x.inbound[0]!.conn_id);
}

describe('TCP capture on the real kernel', { skip }, () => {
  let agent: Agent;
  let ns: NetnsPair;

  before(async () => {
    ns = createNetnsPair('tcp');
    agent = await Agent.start();
  });
  after(async () => {
    const r = await agent?.stop();
    ns?.destroy();
    assert.equal(r?.code, 0, `agent exit: ${r?.stderr}`);
    assert.equal(r?.summary?.lost, 0, 'no events lost');
  });

  test('IPv4 loopback, 1000 bytes out and 555 back', async () => {
    const x = await exchange(agent, { bind: '127.0.0.1', connect: '127.0.0.1', clientSends: 1000, serverSends: 555 });
    assertExchange(x, { clientIp: '127.0.0.1', serverIp: '127.0.0.1', clientSends: 1000, serverSends: 555 });
  });

  test('IPv6 loopback, 3 MiB out and 70000 back', async () => {
    const big = 3 << 20;
    const x = await exchange(agent, { bind: '::1', connect: '::1', clientSends: big, serverSends: 70000 });
    assertExchange(x, { clientIp: '::1', serverIp: '::1', clientSends: big, serverSends: 70000 });
  });

  test('dual-stack listener sees an IPv4 peer as IPv4, not ::ffff:', async () => {
    const x = await exchange(agent, { bind: '::', connect: '127.0.0.1', clientSends: 10, serverSends: 20 });
    assertExchange(x, { clientIp: '127.0.0.1', serverIp: '127.0.0.1', clientSends: 10, serverSends: 20 });
  });

  test('IPv4 between two network namespaces', async () => {
    const x = await exchange(agent, {
      bind: ns.b4,
      connect: ns.b4,
      serverNs: ns.b,
      clientNs: ns.a,
      clientSends: 4321,
      serverSends: 1234,
    });
    assertExchange(x, { clientIp: ns.a4, serverIp: ns.b4, clientSends: 4321, serverSends: 1234 });
    assert.equal(x.inbound[0]!.netns, ns.inodeB);
    assert.equal(x.outbound[0]!.netns, ns.inodeA);
  });

  test('IPv6 between two network namespaces', async () => {
    const x = await exchange(agent, {
      bind: ns.b6,
      connect: ns.b6,
      serverNs: ns.b,
      clientNs: ns.a,
      clientSends: 99999,
      serverSends: 1,
    });
    assertExchange(x, { clientIp: ns.a6, serverIp: ns.b6, clientSends: 99999, serverSends: 1 });
    assert.equal(x.inbound[0]!.netns, ns.inodeB);
    assert.equal(x.outbound[0]!.netns, ns.inodeA);
  });

  test('retransmitted bytes are counted as retransmits, not as bytes sent', async () => {
    // the server's side drops every 5th packet from the client, so some
    // segments must go twice. (Not a drop on the client's own OUTPUT: a send
    // that fails locally is counted in bytes_sent and then sent again as new
    // data, which no real network loss does.)
    const rule = ['INPUT', '-p', 'tcp', '-s', ns.a4, '-m', 'statistic', '--mode', 'nth', '--every', '5', '--packet', '4', '-j', 'DROP'];
    const iptables = (op: string) => execFileSync('ip', ['netns', 'exec', ns.b, 'iptables', op, ...rule], { stdio: 'pipe' });
    iptables('-I');
    let x: Exchange;
    try {
      x = await exchange(agent, { bind: ns.b4, connect: ns.b4, serverNs: ns.b, clientNs: ns.a, clientSends: 400_000, serverSends: 300 });
    } finally {
      iptables('-D');
    }
    assertExchange(x, { clientIp: ns.a4, serverIp: ns.b4, clientSends: 400_000, serverSends: 300 });
    const cclose = x.outbound.find((e) => e.event === 'close')!;
    assert.ok(cclose.retransmits! > 0, `client retransmits ${cclose.retransmits}`);
  });

  test('a client that exits right after connecting is still named, with its command line', async () => {
    const server = startPeer(['server', '127.0.0.1', '0', '0']);
    const port = Number(await server.line('port'));
    const client = startPeer(['connect-exit', '127.0.0.1', String(port), 'tag-short-lived']);
    const localPort = Number(await client.line('local'));
    await client.exited;
    await server.exited;
    const mine = (es: JsonEvent[]) => es.filter((e) => e.direction === 'outbound' && e.local.port === localPort && e.remote?.port === port);
    await agent.waitFor((es) => mine(es).some((e) => e.event === 'close'), 'close of the short-lived client');
    await new Promise((r) => setTimeout(r, 300));
    const evs = mine(agent.events);
    assert.deepEqual(evs.map((e) => e.event).sort(), ['close', 'connect']);
    for (const e of evs) {
      assert.equal(e.process?.pid, client.pid);
      assert.equal(e.process?.comm, 'convis-peer');
      assert.match(e.process?.cmd ?? '', /peers\.py connect-exit 127\.0\.0\.1 \d+ tag-short-lived/);
      // resolved by procfs if still alive, else the path given to execve
      assert.match(e.process?.exe ?? '', /python|\/convis-peer$/);
    }
    const close = evs.find((e) => e.event === 'close')!;
    assert.equal(close.bytes_sent, 0);
    assert.equal(close.bytes_received, 0);
  });

  test('a refused connect is reported once as connect_failed ECONNREFUSED', async () => {
    // a port that was just free: bind, read it, close
    const probe = startPeer(['server', '127.0.0.1', '0', '0']);
    const port = Number(await probe.line('port'));
    probe.child.kill();
    await probe.exited;
    const client = startPeer(['refused', '127.0.0.1', String(port)]);
    assert.equal(await client.line('errno'), '111');
    const mine = (es: JsonEvent[]) => es.filter((e) => e.remote?.port === port && e.process?.pid === client.pid);
    await agent.waitFor((es) => mine(es).length > 0, 'connect_failed');
    await new Promise((r) => setTimeout(r, 300));
    const evs = mine(agent.events);
    assert.equal(evs.length, 1, JSON.stringify(evs));
    assert.equal(evs[0]!.event, 'connect_failed');
    assert.equal(evs[0]!.error, 'ECONNREFUSED');
    assert.equal(evs[0]!.direction, 'outbound');
    assert.equal(evs[0]!.process?.comm, 'convis-peer');
  });

  test('a connect to an unreachable test host fails with a timeout-class error', async () => {
    // one SYN retry in the client namespace: the connect gives up within seconds
    execFileSync('ip', ['netns', 'exec', ns.a, 'sysctl', '-qw', 'net.ipv4.tcp_syn_retries=1']);
    const missing = ns.a4.replace(/\.1$/, '.9'); // on the link, but nobody answers ARP
    const client = startPeer(['refused', missing, '9'], ns.a);
    const errno = Number(await client.line('errno', 20_000));
    assert.ok([110, 113].includes(errno), `errno ${errno}`);
    const mine = (es: JsonEvent[]) => es.filter((e) => e.remote?.ip === missing && e.process?.pid === client.pid);
    await agent.waitFor((es) => mine(es).length > 0, 'connect_failed for the unreachable host', 20_000);
    const evs = mine(agent.events);
    assert.equal(evs.length, 1);
    assert.equal(evs[0]!.event, 'connect_failed');
    assert.equal(evs[0]!.error, errno === 110 ? 'ETIMEDOUT' : 'EHOSTUNREACH');
    assert.equal(evs[0]!.netns, ns.inodeA);
  });
});
