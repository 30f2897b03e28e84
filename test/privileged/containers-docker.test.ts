/**
 * Containers on a real dockerd and a real podman: each side of a connection
 * carries its container's id, name and image; with the runtime's API out of
 * reach, the container id is still there.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, type JsonEvent, skipReasonLoudly, startPeer } from '../helpers/agent.js';
import { skipLoudly } from '../helpers/skip.js';
import { dockerdSkipReason, startDockerd, TEST_IMAGE, type Dockerd } from '../helpers/dockerd.js';
import { PODMAN_TEST_IMAGE, podmanSkipReason, startPodman, type Podman } from '../helpers/podman.js';

const base = skipReasonLoudly();
const dockerSkip = base || skipLoudly('dockerd container tests', dockerdSkipReason());
const podmanSkip = base || skipLoudly('podman container tests', podmanSkipReason());

const sides = (es: JsonEvent[], ip: string, port: number) => ({
  out: es.filter((e) => e.direction === 'outbound' && e.event !== 'update' && e.remote?.ip === ip && e.remote?.port === port),
  inb: es.filter((e) => e.direction === 'inbound' && e.remote !== null && e.event !== 'update' && e.local.ip === ip && e.local.port === port),
});

describe('dockerd containers', { skip: dockerSkip }, () => {
  let dockerd: Dockerd;
  let agent: Agent;

  before(async () => {
    dockerd = await startDockerd();
    agent = await Agent.start([], { ...process.env, DOCKER_HOST: `unix://${dockerd.socket}` });
  });
  after(async () => {
    const r = await agent?.stop();
    await dockerd?.stop();
    assert.equal(r?.code, 0, r?.stderr);
  });

  test('a container connecting to a listener on the host: the client side names the container, the host side none', async () => {
    const server = startPeer(['server', dockerd.bridge.gateway, '0', '6']);
    const port = Number(await server.line('port'));
    const c = await dockerd.run('to-host', ['sh', '-c', `echo hello | nc -w 1 ${dockerd.bridge.gateway} ${port}; sleep 30`]);
    await agent.waitFor((es) => { const s = sides(es, dockerd.bridge.gateway, port); return s.out.length === 2 && s.inb.length === 2; }, 'both sides', 20_000);
    const { out, inb } = sides(agent.events, dockerd.bridge.gateway, port);
    for (const e of out) {
      assert.deepEqual(e.container, { id: c.id, name: 'to-host', image: TEST_IMAGE, runtime: 'docker' });
      assert.equal(e.local.ip, c.ip);
      assert.equal(e.pod, null);
    }
    for (const e of inb) {
      assert.equal(e.container, null);
      assert.equal(e.process?.pid, server.pid);
    }
    assert.equal(out.find((e) => e.event === 'close')?.bytes_sent, 6);
    await dockerd.rm(c.id);
  });

  test('a container connecting to another container: both sides name their own container', async () => {
    const srv = await dockerd.run('srv', ['nc', '-l', '-p', '7070', '-e', 'sh', '-c', 'cat >/dev/null']);
    const cli = await dockerd.run('cli', ['sh', '-c', `sleep 1; echo hello | nc -w 1 ${srv.ip} 7070; sleep 30`]);
    await agent.waitFor((es) => { const s = sides(es, srv.ip, 7070); return s.out.some((e) => e.event === 'close') && s.inb.some((e) => e.event === 'accept'); }, 'client close and server accept', 20_000);
    const { out, inb } = sides(agent.events, srv.ip, 7070);
    for (const e of out) assert.deepEqual(e.container, { id: cli.id, name: 'cli', image: TEST_IMAGE, runtime: 'docker' });
    for (const e of inb) {
      assert.deepEqual(e.container, { id: srv.id, name: 'srv', image: TEST_IMAGE, runtime: 'docker' });
      assert.equal(e.remote?.ip, cli.ip);
    }
    await dockerd.rm(cli.id);
    await dockerd.rm(srv.id);
  });

  test('with the Docker API out of reach, a container\'s connection still carries its id; one warning line', async () => {
    const blind = await Agent.start([], { ...process.env, DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    try {
      const server = startPeer(['server', dockerd.bridge.gateway, '0', '6']);
      const port = Number(await server.line('port'));
      const c = await dockerd.run('unnamed', ['sh', '-c', `echo hello | nc -w 1 ${dockerd.bridge.gateway} ${port}; sleep 30`]);
      await blind.waitFor((es) => sides(es, dockerd.bridge.gateway, port).out.length === 2, 'client side', 20_000);
      for (const e of sides(blind.events, dockerd.bridge.gateway, port).out) {
        assert.deepEqual(e.container, { id: c.id, name: null, image: null, runtime: 'docker' });
      }
      await dockerd.rm(c.id);
    } finally {
      const r = await blind.stop();
      assert.equal(r.code, 0, r.stderr);
      const warnings = r.stderr.split('\n').filter((l) => /docker at unix:\/\/\/nonexistent\/docker\.sock is unavailable/.test(l));
      assert.equal(warnings.length, 1, r.stderr);
      const summary = r.summary as { containers: { runtimeErrors: number } };
      assert.ok(summary.containers.runtimeErrors >= 1);
    }
  });
});

describe('podman containers', { skip: podmanSkip }, () => {
  let podman: Podman;
  let agent: Agent;

  before(async () => {
    podman = await startPodman();
    agent = await Agent.start(['--podman-socket', podman.socket]);
  });
  after(async () => {
    const r = await agent?.stop();
    await podman?.stop();
    assert.equal(r?.code, 0, r?.stderr);
  });

  test('a podman container\'s connection carries its container id and name', async () => {
    const server = startPeer(['server', podman.bridge.gateway, '0', '6']);
    const port = Number(await server.line('port'));
    const c = await podman.run('pod-client', ['sh', '-c', `echo hello | nc -w 1 ${podman.bridge.gateway} ${port}; sleep 30`]);
    await agent.waitFor((es) => sides(es, podman.bridge.gateway, port).out.length === 2, 'client side', 20_000);
    for (const e of sides(agent.events, podman.bridge.gateway, port).out) {
      assert.deepEqual(e.container, { id: c.id, name: 'pod-client', image: PODMAN_TEST_IMAGE, runtime: 'podman' });
    }
    await podman.rm(c.id);
  });
});
