/**
 * Pods on a real containerd with its CRI plugin, kubelet-style cgroups and
 * pod metadata: connections between two pods carry each side's container,
 * pod and the peer pod.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Agent, type JsonEvent, skipReasonLoudly } from '../helpers/agent.js';
import { skipLoudly } from '../helpers/skip.js';
import { BUSYBOX_IMAGE, containerdSkipReason, startContainerd, type Containerd } from '../helpers/containerd.js';

const skip = skipReasonLoudly() || skipLoudly('containerd CRI pod tests', containerdSkipReason());

describe('containerd CRI pods', { skip }, () => {
  let cd: Containerd;
  let agent: Agent;

  before(async () => {
    cd = await startContainerd();
    agent = await Agent.start(['--cri-socket', cd.socket]);
  });
  after(async () => {
    const r = await agent?.stop();
    await cd?.stop();
    assert.equal(r?.code, 0, r?.stderr);
  });

  test('a connection between two pods names both containers, both pods and each side\'s peer pod', async () => {
    const ns = 'convis-test';
    const serverUid = randomUUID();
    const clientUid = randomUUID();
    const serverPod = await cd.runPod({ name: 'server-pod', namespace: ns, uid: serverUid });
    const clientPod = await cd.runPod({ name: 'client-pod', namespace: ns, uid: clientUid });
    const port = 18080;
    const server = await cd.runContainer(serverPod.sandboxId, { name: 'server', command: ['nc', '-l', '-p', String(port)] });
    const client = await cd.runContainer(clientPod.sandboxId, {
      name: 'client',
      // give the listener a moment, then send 6 bytes and close
      command: ['sh', '-c', `sleep 1; echo hello | nc ${serverPod.ip} ${port}`],
    });

    const out = (es: JsonEvent[]) =>
      es.filter((e) => e.direction === 'outbound' && e.event !== 'update' && e.remote?.ip === serverPod.ip && e.remote?.port === port);
    const inb = (es: JsonEvent[]) =>
      es.filter((e) => e.direction === 'inbound' && e.remote !== null && e.event !== 'update' && e.local.ip === serverPod.ip && e.local.port === port);
    await agent.waitFor((es) => out(es).some((e) => e.event === 'close') && inb(es).some((e) => e.event === 'close'), 'both sides closed', 20_000);

    const clientEvents = out(agent.events);
    const serverEvents = inb(agent.events);
    assert.deepEqual(clientEvents.map((e) => e.event).sort(), ['close', 'connect']);
    assert.deepEqual(serverEvents.map((e) => e.event).sort(), ['accept', 'close']);
    for (const e of clientEvents) {
      assert.equal(e.local.ip, clientPod.ip);
      assert.deepEqual(e.container, { id: client.containerId, name: 'client', image: BUSYBOX_IMAGE, runtime: 'containerd' }, JSON.stringify(e));
      assert.deepEqual(e.pod, { name: 'client-pod', namespace: ns, uid: clientUid });
      assert.deepEqual(e.remote_pod, { name: 'server-pod', namespace: ns });
      // busybox runs its applets by exec'ing /proc/self/exe, so the kernel's comm is "exe"
      assert.match(e.process?.cmd ?? '', /^nc \d+\.\d+\.\d+\.\d+ 18080$/, JSON.stringify(e.process));
    }
    for (const e of serverEvents) {
      assert.equal(e.remote?.ip, clientPod.ip);
      assert.deepEqual(e.container, { id: server.containerId, name: 'server', image: BUSYBOX_IMAGE, runtime: 'containerd' });
      assert.deepEqual(e.pod, { name: 'server-pod', namespace: ns, uid: serverUid });
      assert.deepEqual(e.remote_pod, { name: 'client-pod', namespace: ns });
      assert.equal(e.process?.pid, server.pid);
    }
    const close = clientEvents.find((e) => e.event === 'close')!;
    assert.equal(close.bytes_sent, 6);
  });
});
