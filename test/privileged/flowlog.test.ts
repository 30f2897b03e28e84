/**
 * The flow log end to end: the agent writes real connections to SQLite,
 * `convis query` (the real CLI, agent stopped) finds them by remote address
 * and time window and ranks the top talkers; a `kill -9` of the agent
 * leaves a log that opens, with what it had written.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Agent, convisBin, skipReasonLoudly, sleep, startPeer } from '../helpers/agent.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

/** One exchange with known byte counts over `host`; returns the ports and the client's pid. */
async function exchange(host: string, clientSends: number, serverSends: number) {
  const server = startPeer(['server', host, String(serverSends), String(clientSends)]);
  const port = Number(await server.line('port'));
  const client = startPeer(['client', host, String(port), String(clientSends), String(serverSends)]);
  const localPort = Number(await client.line('local'));
  assert.equal(await client.exited, 0);
  assert.equal(await server.exited, 0);
  return { port, localPort, clientPid: client.pid, serverPid: server.pid };
}

function query(db: string, ...args: string[]): Record<string, unknown>[] {
  const r = spawnSync(process.execPath, [convisBin, 'query', '--db', db, '--format', 'json', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('flow log', { skip }, () => {
  test('convis query finds the agent\'s connections by remote address and time window, and ranks top talkers', async () => {
    const db = join(tempDir('convis-flowlog-'), 'flows.db');
    const agent = await Agent.start(['--sink', `flowlog,path=${db}`]);
    const before = new Date().toISOString();
    const big = await exchange('127.0.0.1', 300_000, 1000);
    const small = await exchange('::1', 2000, 10);
    await agent.waitFor((es) => es.filter((e) => e.event === 'close' && [big.port, small.port].includes(e.local.port)).length === 2, 'the servers\' closes');
    await sleep(200);
    const after = new Date().toISOString();
    const r = await agent.stop();
    assert.equal(r.code, 0, r.stderr);

    // by remote address: the client's row of the IPv4 exchange, with its totals and owner
    const out = query(db, '--remote', '127.0.0.1', '--port', String(big.port)).filter((x) => x.direction === 'outbound');
    assert.equal(out.length, 1, JSON.stringify(out));
    assert.deepEqual([out[0]!.pid, out[0]!.comm, out[0]!.bytes_sent, out[0]!.bytes_received, out[0]!.closed, out[0]!.local_port], [big.clientPid, 'convis-peer', 300_000, 1000, true, big.localPort]);
    // an IPv6 prefix
    const v6 = query(db, '--remote', '::1/128', '--process', 'convis-peer');
    assert.deepEqual(v6.map((x) => x.direction).sort(), ['inbound', 'outbound']);
    // the time window holds both; one that ended before them holds neither
    const mine = (rows: Record<string, unknown>[]) => rows.filter((x) => [big.port, small.port].includes(x.local_port as number) || [big.port, small.port].includes(x.remote_port as number));
    assert.equal(mine(query(db, '--since', before, '--until', after, '--limit', '100000')).length, 4);
    assert.equal(mine(query(db, '--until', new Date(Date.parse(before) - 60_000).toISOString())).length, 0);
    // the top talker by bytes among the peers' connections is the IPv4 exchange's process
    const top = query(db, '--top', 'remote', '--process', 'convis-peer');
    assert.deepEqual(top.map((x) => [x.remote, x.bytes]), [['127.0.0.1', 2 * 301_000], ['::1', 2 * 2010]]);
    const byConn = query(db, '--top', 'process', '--by', 'connections', '--process', 'convis-peer');
    assert.deepEqual(byConn.map((x) => [x.process, x.connections]), [['convis-peer', 4]]);
  });

  test('convis query on a missing or damaged log: one line, exit 1; a bad flag: one line, exit 2', () => {
    const dir = tempDir('convis-flowlog-');
    const junk = join(dir, 'junk.db');
    writeFileSync(junk, 'not a database '.repeat(200));
    for (const [db, status, line] of [
      [join(dir, 'none.db'), 1, /^convis: query: .*none\.db: no such flow log\n$/],
      [junk, 1, /^convis: query: .*junk\.db: not a flow log \(not an SQLite database, or damaged\)\n$/],
    ] as const) {
      const r = spawnSync(process.execPath, [convisBin, 'query', '--db', db], { encoding: 'utf8' });
      assert.equal(r.status, status, r.stderr);
      assert.match(r.stderr, line);
      assert.equal(r.stdout, '');
    }
    const bad = spawnSync(process.execPath, [convisBin, 'query', '--db', junk, '--top', 'users'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^convis: --top must be one of process, container, pod, remote, domain, not "users" \(see convis query --help\)\n$/);
  });

  test('after kill -9 the log opens and holds what was written up to the last second', async () => {
    const db = join(tempDir('convis-flowlog-'), 'flows.db');
    const agent = await Agent.start(['--sink', `flowlog,path=${db}`]);
    const x = await exchange('127.0.0.1', 4321, 1234);
    await agent.waitFor((es) => es.some((e) => e.event === 'close' && e.process?.pid === x.clientPid), 'the client\'s close');
    await sleep(1500); // one flush
    const r = await agent.stop('SIGKILL');
    assert.equal(r.code, null);
    const rows = query(db, '--port', String(x.port)).filter((e) => e.pid === x.clientPid);
    assert.deepEqual(rows.map((e) => [e.bytes_sent, e.bytes_received, e.closed]), [[4321, 1234, true]]);
    const check = spawnSync('python3', ['-c', `import sqlite3; print(sqlite3.connect("${db}").execute("pragma integrity_check").fetchone()[0])`], { encoding: 'utf8' });
    assert.equal(check.stdout.trim(), 'ok', check.stderr);
  });
});
