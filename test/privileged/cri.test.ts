/**
 * The CRI client against a real containerd with its CRI plugin (pods made
 * through CRI the way a kubelet makes them), and against in-process gRPC
 * servers for what a real runtime here cannot show: the v1alpha2 fallback,
 * a socket that does not serve CRI, a runtime that never answers.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { RuntimeUnavailableError } from '../../src/metadata/container.js';
import { CriClient, criServiceDefinition, detectCriSocket } from '../../src/metadata/cri.js';
import { skipReasonLoudly } from '../helpers/agent.js';
import { skipLoudly } from '../helpers/skip.js';
import { BUSYBOX_IMAGE, containerdSkipReason, startContainerd, type Containerd } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';

function containerdSkip(): string | false {
  const root = skipReasonLoudly();
  if (root) return root;
  return skipLoudly('CRI tests against containerd', containerdSkipReason());
}

const skip = containerdSkip();

describe('CRI client against a real containerd', { skip, timeout: 120_000 }, () => {
  let cd: Containerd;
  let client: CriClient;
  const web = { name: 'web', namespace: 'shop', uid: randomUUID() };
  const db = { name: 'db', namespace: 'store', uid: randomUUID() };
  let webPod: { sandboxId: string; ip: string };
  let dbPod: { sandboxId: string; ip: string };
  let app: { containerId: string; pid: number };

  before(async () => {
    cd = await startContainerd();
    webPod = await cd.runPod(web);
    dbPod = await cd.runPod(db);
    app = await cd.runContainer(webPod.sandboxId, { name: 'app', command: ['sleep', '600'] });
    client = await CriClient.connect(cd.socket);
  });

  after(async () => {
    client?.close();
    await cd?.stop();
  });

  test('connect: containerd over CRI v1', () => {
    assert.equal(client.runtime, 'containerd');
    assert.equal(client.apiVersion, 'v1');
    assert.equal(client.endpoint, cd.socket);
    assert.equal(client.versionInfo?.runtimeName, 'containerd');
  });

  test('the container runs in the kubelet-shaped cgroup', (t) => {
    const cgroup = readFileSync(`/proc/${app.pid}/cgroup`, 'utf8').trim().split('\n');
    t.diagnostic(`/proc/${app.pid}/cgroup:`);
    for (const line of cgroup) t.diagnostic(`  ${line}`);
    const path = `/kubepods/besteffort/pod${web.uid}/${app.containerId}`;
    for (const line of cgroup) assert.ok(line.endsWith(`:${path}`), line);
    // the cgroup v2 (unified) entry, whose inode is the cgroup id BPF sees
    assert.ok(cgroup.includes(`0::${path}`), 'in the unified hierarchy');
  });

  test('inspect: name, image, labels and pod of a running container', async () => {
    const info = await client.inspect(app.containerId);
    assert.ok(info);
    assert.equal(info.id, app.containerId);
    assert.equal(info.name, 'app');
    assert.equal(info.image, BUSYBOX_IMAGE);
    assert.equal(info.runtime, 'containerd');
    assert.deepEqual(info.pod, web);
    assert.equal(info.labels['io.kubernetes.container.name'], 'app');
    assert.equal(info.labels['io.kubernetes.pod.name'], 'web');
    assert.equal(info.labels['io.kubernetes.pod.namespace'], 'shop');
    assert.equal(info.labels['io.kubernetes.pod.uid'], web.uid);
  });

  test('inspect: an unknown id is null', async () => {
    assert.equal(await client.inspect('0123456789abcdef'.repeat(4)), null);
  });

  test('inspect: a pod sandbox id (the pause process cgroup) is not a container', async () => {
    assert.equal(await client.inspect(webPod.sandboxId), null);
  });

  test('listPodSandboxes: every ready pod with its IP', async () => {
    assert.ok(webPod.ip.startsWith(cd.subnet.replace(/0\/24$/, '')), webPod.ip);
    assert.ok(dbPod.ip.startsWith(cd.subnet.replace(/0\/24$/, '')), dbPod.ip);
    assert.notEqual(webPod.ip, dbPod.ip);
    const pods = await client.listPodSandboxes();
    const byId = new Map(pods.map((p) => [p.id, p]));
    assert.deepEqual(byId.get(webPod.sandboxId), { id: webPod.sandboxId, ...web, ips: [webPod.ip] });
    assert.deepEqual(byId.get(dbPod.sandboxId), { id: dbPod.sandboxId, ...db, ips: [dbPod.ip] });
  });

  test('listPodSandboxes: a stopped pod is gone', async () => {
    await cd.stopPod(dbPod.sandboxId);
    const ids = (await client.listPodSandboxes()).map((p) => p.id);
    assert.ok(ids.includes(webPod.sandboxId));
    assert.ok(!ids.includes(dbPod.sandboxId));
  });

  test('detectCriSocket: the first candidate that answers CRI', async () => {
    const dir = tempDir('convis-cri-detect-');
    try {
      const plainFile = join(dir, 'not-a-socket.sock');
      writeFileSync(plainFile, '');
      assert.equal(await detectCriSocket([join(dir, 'missing.sock'), plainFile, cd.socket]), cd.socket);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** An in-process gRPC server on a unix socket with the given services. */
async function fakeServer(services: [grpc.ServiceDefinition, grpc.UntypedServiceImplementation][]) {
  const dir = tempDir('convis-cri-fake-');
  const socket = join(dir, 'cri.sock');
  const server = new grpc.Server();
  for (const [def, impl] of services) server.addService(def, impl);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  return {
    socket,
    close() {
      server.forceShutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Callback = (error: grpc.ServiceError | null, response?: object) => void;

describe('CRI client without a real runtime', { timeout: 30_000 }, () => {
  test('a socket that does not exist: RuntimeUnavailableError within the timeout', async () => {
    const socket = join(tmpdir(), `convis-no-such-${process.pid}.sock`);
    const t0 = Date.now();
    await assert.rejects(CriClient.connect(socket, { timeoutMs: 500 }), (e: unknown) => {
      assert.ok(e instanceof RuntimeUnavailableError);
      assert.equal(e.code, 'ERUNTIME');
      assert.match(e.message, /UNAVAILABLE/);
      return true;
    });
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    const client = new CriClient({ socket, timeoutMs: 500 });
    try {
      await assert.rejects(client.inspect('ab'.repeat(32)), RuntimeUnavailableError);
      await assert.rejects(client.listPodSandboxes(), RuntimeUnavailableError);
    } finally {
      client.close();
    }
  });

  test('detectCriSocket: undefined when no candidate answers', async () => {
    const dir = tempDir('convis-cri-detect-');
    const silent = await fakeServer([]);
    try {
      writeFileSync(join(dir, 'file.sock'), '');
      assert.equal(await detectCriSocket([join(dir, 'missing.sock'), join(dir, 'file.sock'), silent.socket], { timeoutMs: 500 }), undefined);
      assert.equal(await detectCriSocket([]), undefined);
    } finally {
      silent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a gRPC server without CRI (a containerd with CRI disabled): RuntimeUnavailableError', async () => {
    const server = await fakeServer([]);
    try {
      await assert.rejects(CriClient.connect(server.socket, { timeoutMs: 1000 }), (e: unknown) => {
        assert.ok(e instanceof RuntimeUnavailableError);
        assert.match(e.message, /does not serve the CRI/);
        return true;
      });
    } finally {
      server.close();
    }
  });

  test('a v1alpha2-only runtime: connect falls back and inspect works', async () => {
    const uid = randomUUID();
    const id = 'cd'.repeat(32);
    const requests: string[] = [];
    const server = await fakeServer([
      [
        criServiceDefinition('RuntimeService', 'v1alpha2'),
        {
          Version: (call: grpc.ServerUnaryCall<{ version: string }, object>, cb: Callback) => {
            requests.push(`Version ${call.request.version}`);
            cb(null, { version: '0.1.0', runtimeName: 'cri-o', runtimeVersion: '1.19.0', runtimeApiVersion: 'v1alpha2' });
          },
          ContainerStatus: (call: grpc.ServerUnaryCall<{ containerId: string }, object>, cb: Callback) => {
            requests.push(`ContainerStatus ${call.request.containerId}`);
            if (call.request.containerId !== id) {
              cb({ code: grpc.status.NOT_FOUND, details: 'not found' } as grpc.ServiceError);
              return;
            }
            cb(null, {
              status: {
                id,
                metadata: { name: 'raw-name', attempt: 0 },
                state: 'CONTAINER_RUNNING',
                image: { image: 'registry.example/app:1.2' },
                imageRef: 'registry.example/app@sha256:' + '0'.repeat(64),
                labels: {
                  'io.kubernetes.container.name': 'app',
                  'io.kubernetes.pod.name': 'api-7d9f',
                  'io.kubernetes.pod.namespace': 'prod',
                  'io.kubernetes.pod.uid': uid,
                },
              },
            });
          },
        },
      ],
    ]);
    const client = await CriClient.connect(server.socket, { timeoutMs: 1000 });
    try {
      assert.equal(client.apiVersion, 'v1alpha2');
      assert.equal(client.runtime, 'cri-o');
      assert.deepEqual(await client.inspect(id), {
        id,
        name: 'app',
        image: 'registry.example/app:1.2',
        runtime: 'cri-o',
        labels: {
          'io.kubernetes.container.name': 'app',
          'io.kubernetes.pod.name': 'api-7d9f',
          'io.kubernetes.pod.namespace': 'prod',
          'io.kubernetes.pod.uid': uid,
        },
        pod: { name: 'api-7d9f', namespace: 'prod', uid },
      });
      assert.equal(await client.inspect('ef'.repeat(32)), null);
      assert.deepEqual(requests, ['Version v1alpha2', `ContainerStatus ${id}`, `ContainerStatus ${'ef'.repeat(32)}`]);
    } finally {
      client.close();
      server.close();
    }
  });

  test('a runtime that never answers: inspect rejects at the deadline', async () => {
    const server = await fakeServer([
      [
        criServiceDefinition('RuntimeService', 'v1'),
        {
          Version: (_call: unknown, cb: Callback) => cb(null, { runtimeName: 'containerd' }),
          ContainerStatus: () => {
            // never answers
          },
        },
      ],
    ]);
    const client = await CriClient.connect(server.socket, { timeoutMs: 300 });
    try {
      const t0 = Date.now();
      await assert.rejects(client.inspect('12'.repeat(32)), (e: unknown) => {
        assert.ok(e instanceof RuntimeUnavailableError);
        assert.equal(e.runtime, 'containerd');
        assert.match(e.message, /DEADLINE_EXCEEDED/);
        return true;
      });
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 1500, `took ${took} ms`);
    } finally {
      client.close();
      server.close();
    }
  });
});
