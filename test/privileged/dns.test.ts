/**
 * DNS names end to end: a real DNS server from Debian (dnsmasq) answers in
 * a network namespace made for the test; a client there resolves names
 * through glibc (ip netns exec puts /etc/netns/<ns>/resolv.conf in place)
 * and connects. The events carry remote.name (the name asked, through a
 * CNAME), a domain: rule permits the named connections and alerts on one
 * to an address no answer named, and convis query --domain finds them.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, convisBin, peerExecutable, skipReasonLoudly, sleep } from '../helpers/agent.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();
const NS = `convis-dns-${process.pid}`;

/** In the namespace: listen on each address, resolve each name (or take the literal) and connect; print each client's local port. */
const CLIENT = `
import socket, sys
for target, listen in zip(sys.argv[1::2], sys.argv[2::2]):
    fam = socket.AF_INET6 if ":" in listen else socket.AF_INET
    srv = socket.socket(fam); srv.bind((listen, 0)); srv.listen()
    c = socket.create_connection((target, srv.getsockname()[1]))
    print(target, srv.getsockname()[1], c.getsockname()[1], flush=True)
    c.close(); srv.close()
`;

describe('DNS names on remote addresses', { skip }, () => {
  let dnsmasq: ChildProcess | undefined;
  before(async () => {
    if (skip) return;
    spawnSync('ip', ['netns', 'del', NS]);
    assert.equal(spawnSync('ip', ['netns', 'add', NS]).status, 0);
    assert.equal(spawnSync('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']).status, 0);
    mkdirSync(`/etc/netns/${NS}`, { recursive: true });
    writeFileSync(`/etc/netns/${NS}/resolv.conf`, 'nameserver 127.0.0.1\n');
    dnsmasq = spawn('ip', ['netns', 'exec', NS, 'dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--listen-address=127.0.0.1', '--bind-interfaces',
      '--port=53', '--local-ttl=300', '--pid-file=', '--host-record=web.convis.test,127.0.0.7', '--cname=alias.convis.test,web.convis.test',
      '--host-record=web6.convis.test,::1'], { stdio: 'ignore' });
    await sleep(500);
  });
  after(() => {
    if (skip) return;
    dnsmasq?.kill();
    spawnSync('ip', ['netns', 'del', NS]);
    rmSync(`/etc/netns/${NS}`, { recursive: true, force: true });
  });

  test('named connections carry the name asked for; a domain rule judges them; convis query --domain finds them', async () => {
    const dir = tempDir('convis-dns-');
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, 'rules:\n  - name: named-only\n    select: { process: convis-peer }\n    allow:\n      - { domain: "*.convis.test", direction: outbound }\n      - { cidr: 0.0.0.0/0, direction: inbound }\n      - { cidr: "::/0", direction: inbound }\n');
    const db = join(dir, 'flows.db');
    const agent = await Agent.start(['--policy', policy, '--sink', `flowlog,path=${db}`]);
    let lines: string[];
    try {
      const r = spawnSync('ip', ['netns', 'exec', NS, peerExecutable(), '-c', CLIENT, 'alias.convis.test', '127.0.0.7', 'web6.convis.test', '::1', '127.0.0.8', '127.0.0.8'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      lines = r.stdout.trim().split('\n');
      const ports = lines.map((l) => Number(l.split(' ')[1]));
      await agent.waitFor((es) => ports.every((p) => es.some((e) => e.event === 'close' && e.direction === 'outbound' && e.remote?.port === p)), 'the three clients\' closes');
      await sleep(300);
      const connect = (port: number) => agent.events.find((e) => e.event === 'connect' && e.remote?.port === port)!;
      assert.equal((connect(ports[0]!).remote as { name?: string }).name, 'alias.convis.test', 'the name asked, not the CNAME target');
      assert.equal(connect(ports[0]!).remote!.ip, '127.0.0.7');
      assert.equal((connect(ports[1]!).remote as { name?: string }).name, 'web6.convis.test');
      assert.equal(connect(ports[1]!).remote!.ip, '::1');
      assert.equal('name' in connect(ports[2]!).remote!, false, 'an address no answer named');
      // the close carries the name too
      assert.ok(agent.events.some((e) => e.event === 'close' && e.remote?.port === ports[0] && (e.remote as { name?: string }).name === 'alias.convis.test'));
      const alerts = agent.events.filter((e) => e.event === 'alert');
      assert.deepEqual(alerts.map((e) => [e.remote?.port, e.rule]), [[ports[2], 'named-only']]);
    } finally {
      const r = await agent.stop();
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /"dns":\{"answers":[1-9]/);
    }
    const q = spawnSync(process.execPath, [convisBin, 'query', '--db', db, '--domain', '*.convis.test', '--format', 'json'], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    // outbound: the IPv6 server's accepted socket has ::1 as its remote too, which the answer named
    const rows = q.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((x) => x.direction === 'outbound');
    assert.deepEqual(rows.map((x) => [x.remote_name, x.remote_ip, x.remote_port]).sort(), [
      ['alias.convis.test', '127.0.0.7', Number(lines[0]!.split(' ')[1])],
      ['web6.convis.test', '::1', Number(lines[1]!.split(' ')[1])],
    ].sort());
    const top = spawnSync(process.execPath, [convisBin, 'query', '--db', db, '--top', 'domain', '--by', 'connections', '--domain', '*.convis.test', '--format', 'json'], { encoding: 'utf8' });
    assert.deepEqual(top.stdout.trim().split('\n').map((l) => [JSON.parse(l).domain, JSON.parse(l).connections]), [['web6.convis.test', 2], ['alias.convis.test', 1]]);
  });
});
