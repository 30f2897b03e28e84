/**
 * Policy alerts end to end, with real TCP connections on loopback: a
 * policy that lets the test's peers reach only one port over IPv4 and one
 * over IPv6; a connection elsewhere gives exactly one alert event and one
 * counter increment; SIGHUP reloads the rules (and a bad reload keeps the
 * old ones); a bad file stops convis with one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Agent, convisBin, skipReasonLoudly, sleep, startPeer, type JsonEvent } from '../helpers/agent.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

/** A server peer that takes one connection; resolves with its port once it listens. */
async function server(host: string) {
  const peer = startPeer(['server', host, '10', '10']);
  return { port: Number(await peer.line('port')), peer };
}

/** Connects to a server peer and exchanges its bytes; returns the client's pid. */
async function connect(host: string, s: Awaited<ReturnType<typeof server>>): Promise<number> {
  const client = startPeer(['client', host, String(s.port), '10', '10']);
  assert.equal(await client.exited, 0);
  assert.equal(await s.peer.exited, 0);
  return client.pid;
}

const policyText = (v4Port: number, v6Port: number) => `
# the test's peers may reach one port over each family, and accept from loopback
rules:
  - name: peers-only-${v4Port}
    select: { process: "convis-peer" }
    allow:
      - { cidr: 127.0.0.0/8, ports: [${v4Port}], direction: outbound }
      - { cidr: "::1/128", ports: ["${v6Port}-${v6Port}"], direction: outbound }
      - { cidr: 127.0.0.0/8, direction: inbound }
      - { cidr: "::1/128", direction: inbound }
`;

describe('policy alerts', { skip }, () => {
  test('one alert and one count per connection the policy does not permit; IPv6; SIGHUP reloads', async () => {
    const dir = tempDir('convis-policy-');
    const file = join(dir, 'policy.yaml');
    const [a4, b4, a6, b6] = [await server('127.0.0.1'), await server('127.0.0.1'), await server('::1'), await server('::1')];
    writeFileSync(file, policyText(a4.port, a6.port));
    const agent = await Agent.start(['--policy', file, '--sink', 'metrics,listen=127.0.0.1:0']);
    const metricsPort = /metrics: listening on 127\.0\.0\.1:(\d+)/.exec(agent.stderr)?.[1];
    assert.ok(metricsPort, agent.stderr);
    const violations = async () =>
      (await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).split('\n').filter((l) => l.startsWith('convis_policy_violations_total{'));
    const alertsTo = (port: number) => (es: JsonEvent[]) => es.filter((e) => e.event === 'alert' && e.remote?.port === port);
    try {
      const okV4 = await connect('127.0.0.1', a4);
      const badV4 = await connect('127.0.0.1', b4);
      const okV6 = await connect('::1', a6);
      const badV6 = await connect('::1', b6);
      await agent.waitFor((es) => alertsTo(b4.port)(es).length === 1 && alertsTo(b6.port)(es).length === 1, 'the two alerts');
      // the closes come after the connects: once they are in, every alert would be too
      await agent.waitFor((es) => [okV4, okV6, badV4, badV6].every((pid) => es.some((e) => e.event === 'close' && e.process?.pid === pid)), 'the clients\' closes');
      await sleep(300);
      const alerts = agent.events.filter((e) => e.event === 'alert');
      assert.deepEqual(
        alerts.map((e) => [e.process?.pid, e.remote?.port, e.rule, e.trigger, e.direction]).sort(),
        [
          [badV4, b4.port, `peers-only-${a4.port}`, 'connect', 'outbound'],
          [badV6, b6.port, `peers-only-${a4.port}`, 'connect', 'outbound'],
        ].sort(),
      );
      // each alert comes right after the event it judged
      for (const alert of alerts) {
        const i = agent.events.indexOf(alert);
        assert.deepEqual([agent.events[i - 1]?.event, agent.events[i - 1]?.conn_id], ['connect', alert.conn_id]);
      }
      assert.deepEqual(await violations(), [`convis_policy_violations_total{node="${alerts[0]!.node}",rule="peers-only-${a4.port}",direction="outbound",process="convis-peer"} 2`]);

      // a reload that allows every port: the same kind of connection is fine now
      writeFileSync(file, policyText(a4.port, a6.port).replace(`ports: [${a4.port}], `, ''));
      agent.signal('SIGHUP');
      await agent.waitFor(() => agent.stderr.includes('reloaded: 1 rules'), 'the reload line');
      const c4 = await server('127.0.0.1');
      const nowOk = await connect('127.0.0.1', c4);
      await agent.waitFor((es) => es.some((e) => e.event === 'close' && e.process?.pid === nowOk), 'the close after the reload');

      // a bad reload keeps the rules in force, with one line
      writeFileSync(file, 'rules:\n  - name: broken\n    allow:\n      - { cidr: 300.0.0.0/8 }\n');
      agent.signal('SIGHUP');
      await agent.waitFor(() => agent.stderr.includes('kept the policy in force'), 'the bad-reload line');
      assert.match(agent.stderr, new RegExp(`^convis: policy ${file.replaceAll('/', '\\/')}:4: rule "broken": cidr must be .*; kept the policy in force$`, 'm'));
      const d4 = await server('127.0.0.1');
      const stillOk = await connect('127.0.0.1', d4);
      const e6 = await server('::1');
      const stillBad = await connect('::1', e6);
      await agent.waitFor((es) => alertsTo(e6.port)(es).length === 1, 'the alert under the kept policy');
      await agent.waitFor((es) => [stillOk, stillBad].every((pid) => es.some((e) => e.event === 'close' && e.process?.pid === pid)), 'the closes');
      await sleep(300);
      assert.equal(alertsTo(c4.port)(agent.events).length + alertsTo(d4.port)(agent.events).length, 0, 'no alert for what the reloaded policy permits');
      assert.match((await violations())[0] ?? '', / 3$/);
    } finally {
      const r = await agent.stop();
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /"alerts":3/);
    }
  });

  test('a bad policy file: one line naming the file and the line, exit 2', () => {
    const file = join(tempDir('convis-policy-'), 'bad.yaml');
    writeFileSync(file, 'rules:\n  - name: web\n    select: { image: "*nginx*" }\n    allow:\n      - { cidr: 10.0.0.0/8, ports: [http] }\n');
    const r = spawnSync(process.execPath, [convisBin, '--policy', file], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, `convis: policy ${file}:5: rule "web": ports must be port numbers (0-65535) or "low-high" ranges, not "http" (see convis --help)\n`);
    assert.equal(r.stdout, '');
  });
});
