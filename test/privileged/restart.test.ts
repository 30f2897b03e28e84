/**
 * kill -9 of the agent under load, then a restart: the connections that
 * were open are picked up again from the start-up snapshot, with their
 * owner, and their totals at close are the connection's lifetime totals
 * (what moved before the first agent, under it, between the two, and under
 * the second).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { Agent, type JsonEvent, type Peer, peerExecutable, skipReasonLoudly, sleep, startPeer } from '../helpers/agent.js';

const skip = skipReasonLoudly();

/** Loopback connections in a loop until killed: the load the agent is killed under. */
const LOAD = `
import socket
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(256)
while True:
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b'x' * 64)
    a.recv(64)
    a.close()
    c.close()
`;

const side = (es: JsonEvent[], local: number, remote: number) => es.filter((e) => e.local.port === local && e.remote?.port === remote);

describe('kill -9 under load, then a restart', { skip, timeout: 120_000 }, () => {
  let pair: Peer | undefined;
  let load: ChildProcess | undefined;
  let second: Agent | undefined;
  after(async () => {
    pair?.child.kill();
    load?.kill();
    await second?.stop();
  });

  test('open connections are picked up again from the snapshot, and their totals at close are right', async () => {
    pair = startPeer(['pair', '127.0.0.1']);
    const [server, client] = (await pair.line('ports')).split(' ').map(Number) as [number, number];
    await pair.command('c2s 1000', 'ok');
    await pair.command('s2c 200', 'ok');

    const first = await Agent.start(['--interval', '1s']);
    await first.waitFor((es) => side(es, client, server).some((e) => e.existing), 'the first agent finds the connection');
    await pair.command('c2s 500', 'ok');
    await first.waitFor((es) => side(es, client, server).some((e) => e.event === 'update'), 'an update under the first agent');

    load = spawn(peerExecutable(), ['-c', LOAD], { stdio: 'ignore' });
    await first.waitFor((es) => es.filter((e) => e.event === 'accept').length > 200, 'the load under the first agent');
    const killed = await first.stop('SIGKILL');
    assert.equal(killed.code, null, 'killed, not exited');
    assert.equal(killed.summary, undefined, 'no summary: it had no chance to say anything');

    // moved while no agent runs
    await pair.command('c2s 300', 'ok');
    second = await Agent.start(['--interval', '1s']);
    await second.waitFor(
      (es) => side(es, client, server).some((e) => e.existing) && side(es, server, client).some((e) => e.existing),
      'the second agent finds the connection again',
    );
    const out = side(second.events, client, server).find((e) => e.existing)!;
    const inb = side(second.events, server, client).find((e) => e.existing)!;
    assert.equal(out.event, 'connect');
    assert.equal(inb.event, 'accept');
    assert.equal(out.process?.pid, pair.pid);
    assert.equal(inb.process?.pid, pair.pid);
    assert.deepEqual([out.bytes_sent, out.bytes_received], [1800, 200], 'everything before the second agent, the first agent\'s time included');

    await pair.command('c2s 400', 'ok');
    await sleep(200);
    load.kill();
    await pair.command('close', 'closed');
    await second.waitFor(
      (es) => side(es, client, server).some((e) => e.event === 'close') && side(es, server, client).some((e) => e.event === 'close'),
      `both closes (of the pair: ${JSON.stringify(second.events.filter((e) => e.local.port === client || e.local.port === server).map((e) => [e.event, e.local.port, e.remote?.port, e.bytes_sent, e.bytes_received]))})`,
      30_000,
    );
    const cclose = side(second.events, client, server).find((e) => e.event === 'close')!;
    const sclose = side(second.events, server, client).find((e) => e.event === 'close')!;
    assert.deepEqual([cclose.bytes_sent, cclose.bytes_received], [2200, 200], 'lifetime totals');
    assert.deepEqual([sclose.bytes_sent, sclose.bytes_received], [200, 2200]);
    assert.equal(cclose.conn_id, out.conn_id);
    assert.equal(cclose.process?.pid, pair.pid);
    const r = await second.stop();
    second = undefined;
    assert.equal(r.code, 0, r.stderr);
    assert.equal((r.summary as { lost: number }).lost, 0, 'the restarted agent lost nothing under the load');
  });
});
