/**
 * DockerClient (src/metadata/docker.ts) against a real dockerd and a real
 * podman API service, each started by its harness under a temp dir; and its
 * failure modes against sockets that are missing, silent or answer badly,
 * which need neither root nor a runtime.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { RuntimeUnavailableError } from '../../src/metadata/container.js';
import { DockerClient, parseDockerEndpoint, type DockerEndpoint } from '../../src/metadata/docker.js';
import { skipReasonLoudly } from '../helpers/agent.js';
import { skipLoudly } from '../helpers/skip.js';
import { dockerdSkipReason, startDockerd, TEST_IMAGE, type RunningContainer, type RunOptions, type TestBridge } from '../helpers/dockerd.js';
import { PODMAN_TEST_IMAGE, podmanSkipReason, startPodman } from '../helpers/podman.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

function runtimeSkip(what: string, why: string | undefined): string | false {
  if (skip) return skip;
  return skipLoudly(`${what} tests`, why);
}

const hex64 = () => randomBytes(32).toString('hex');

/** Asserts a RuntimeUnavailableError naming the endpoint, on one line. */
function isUnavailable(runtime: string, endpoint: string, pattern?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof RuntimeUnavailableError, `not a RuntimeUnavailableError: ${String(e)}`);
    assert.equal(e.code, 'ERUNTIME');
    assert.equal(e.runtime, runtime);
    assert.ok(e.message.includes(endpoint), `message names ${endpoint}: ${e.message}`);
    assert.doesNotMatch(e.message, /\n/);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

describe('Docker endpoints', () => {
  const good: [string, Partial<DockerEndpoint>][] = [
    ['unix:///var/run/docker.sock', { socketPath: '/var/run/docker.sock', display: 'unix:///var/run/docker.sock' }],
    ['/run/podman/podman.sock', { socketPath: '/run/podman/podman.sock', display: 'unix:///run/podman/podman.sock' }],
    ['tcp://127.0.0.1:2375', { host: '127.0.0.1', port: 2375, basePath: '', display: 'tcp://127.0.0.1:2375' }],
    ['tcp://10.0.0.7', { host: '10.0.0.7', port: 2375, display: 'tcp://10.0.0.7:2375' }],
    ['tcp://[::1]:2375', { host: '::1', port: 2375, display: 'tcp://[::1]:2375' }],
    ['http://docker.internal:80', { host: 'docker.internal', port: 80, display: 'http://docker.internal:80' }],
    ['http://localhost:8080/engine/', { host: 'localhost', port: 8080, basePath: '/engine', display: 'http://localhost:8080/engine' }],
    ['tcp://admin:s3cret@10.0.0.7:2375', { host: '10.0.0.7', display: 'tcp://10.0.0.7:2375' }],
  ];
  for (const [input, want] of good) {
    test(`accepts ${input}`, () => {
      const got = parseDockerEndpoint(input);
      for (const [k, v] of Object.entries(want)) assert.equal(got[k as keyof DockerEndpoint], v, k);
    });
  }

  const bad = ['', 'docker.sock', 'unix://var/run/docker.sock', 'ssh://me:pw@host', 'https://host:2376', 'npipe:////./pipe/docker_engine', 'fd://', 'tcp://'];
  for (const input of bad) {
    test(`rejects ${JSON.stringify(input)} with a one-line TypeError`, () => {
      assert.throws(
        () => parseDockerEndpoint(input),
        (e: Error) => e instanceof TypeError && !e.message.includes('\n') && !e.message.includes('pw'),
      );
      assert.throws(() => new DockerClient({ endpoint: input, runtime: 'docker' }), TypeError);
    });
  }

  test('options are validated', () => {
    assert.throws(() => new DockerClient({ endpoint: '/x.sock', runtime: 'rkt' as 'docker' }), TypeError);
    assert.throws(() => new DockerClient({ endpoint: '/x.sock', runtime: 'docker', timeoutMs: 0 }), RangeError);
    assert.throws(() => new DockerClient({ endpoint: '/x.sock', runtime: 'docker', timeoutMs: 1.5 }), RangeError);
  });
});

describe('DockerClient failures', { timeout: 30_000 }, () => {
  let dir: string;
  const servers: (net.Server | http.Server)[] = [];
  before(() => {
    dir = tempDir('convis-docker-client-');
  });
  after(async () => {
    for (const s of servers) {
      if (s instanceof http.Server) s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** An HTTP server on a unix socket in `dir`, answering every request with `handler`. */
  async function fakeDaemon(name: string, handler: http.RequestListener): Promise<string> {
    const path = join(dir, name);
    const server = http.createServer(handler);
    servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    return path;
  }

  test('a socket that does not exist: RuntimeUnavailableError naming it, well within the timeout', async () => {
    const endpoint = `unix://${dir}/absent.sock`;
    const client = new DockerClient({ endpoint, runtime: 'docker', timeoutMs: 500 });
    const t0 = Date.now();
    await assert.rejects(client.inspect(hex64()), isUnavailable('docker', endpoint, /ENOENT/));
    await assert.rejects(client.ping(), isUnavailable('docker', endpoint));
    assert.ok(Date.now() - t0 < 500, `took ${Date.now() - t0} ms`);
    client.close();
  });

  test('a socket file nobody listens on (a crashed daemon): ECONNREFUSED', async () => {
    const path = join(dir, 'stale.sock');
    // bound and never listened on, by a process that is gone
    const r = spawnSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`]);
    assert.equal(r.status, 0, String(r.stderr));
    const client = new DockerClient({ endpoint: path, runtime: 'podman', timeoutMs: 500 });
    await assert.rejects(client.inspect(hex64()), isUnavailable('podman', `unix://${path}`, /ECONNREFUSED/));
    client.close();
  });

  test('a daemon that never answers: rejected at the timeout', async () => {
    const path = join(dir, 'silent.sock');
    // reads and drops what comes in, answers nothing
    const server = net.createServer((s) => s.resume());
    servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    const client = new DockerClient({ endpoint: path, runtime: 'docker', timeoutMs: 300 });
    const t0 = Date.now();
    await assert.rejects(client.inspect(hex64()), isUnavailable('docker', `unix://${path}`, /within 300 ms/));
    const took = Date.now() - t0;
    assert.ok(took >= 290 && took < 1500, `took ${took} ms`);
    client.close();
  });

  test('5xx, garbage and answers without an Id are RuntimeUnavailableError; 404 is null', async () => {
    const id = hex64();
    const path = await fakeDaemon('bad.sock', (req, res) => {
      if (req.url === '/containers/e500/json') res.writeHead(500).end('{"message":"boom\\nsecond line"}');
      else if (req.url === '/containers/garbage/json') res.writeHead(200).end('<html>');
      else if (req.url === '/containers/noid/json') res.writeHead(200).end('{"Name":"/x","Config":{}}');
      else if (req.url === `/containers/${id}/json`) res.writeHead(404).end('{"message":"No such container"}');
      else res.writeHead(400).end('{"message":"client version 1.41 is too old"}');
    });
    const client = new DockerClient({ endpoint: path, runtime: 'docker' });
    const endpoint = `unix://${path}`;
    await assert.rejects(client.inspect('e500'), isUnavailable('docker', endpoint, /500 \(boom second line\)/));
    await assert.rejects(client.inspect('garbage'), isUnavailable('docker', endpoint, /unparseable/));
    await assert.rejects(client.inspect('noid'), isUnavailable('docker', endpoint, /unparseable/));
    await assert.rejects(client.ping(), isUnavailable('docker', endpoint, /400/));
    assert.equal(await client.inspect(id), null);
    client.close();
    await assert.rejects(client.inspect(id), isUnavailable('docker', endpoint, /closed/));
  });

  test('tcp:// with a base path; requests reuse one kept-alive connection', async () => {
    const id = hex64();
    let connections = 0;
    const server = http.createServer((req, res) => {
      assert.equal(req.url, `/engine/containers/${id}/json`);
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ Id: id, Name: '/web', Config: { Image: 'nginx:1.27', Labels: null } }));
    });
    server.on('connection', () => connections++);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as net.AddressInfo;
    const client = new DockerClient({ endpoint: `tcp://127.0.0.1:${port}/engine`, runtime: 'docker' });
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await client.inspect(id), { id, name: 'web', image: 'nginx:1.27', runtime: 'docker', labels: {} });
    }
    assert.equal(connections, 1);
    client.close();
  });
});

interface Harness {
  socket: string;
  bridge: TestBridge;
  run(name: string, command: string[], options?: RunOptions): Promise<RunningContainer>;
  rm(id: string): Promise<void>;
  stop(): Promise<void>;
}

const runtimes = [
  { runtime: 'docker', skip: runtimeSkip('dockerd', dockerdSkipReason()), start: startDockerd as () => Promise<Harness>, image: TEST_IMAGE },
  // podman reports the reference the image was stored under: localhost/…
  { runtime: 'podman', skip: runtimeSkip('podman', podmanSkipReason()), start: startPodman as () => Promise<Harness>, image: PODMAN_TEST_IMAGE },
] as const;

for (const rt of runtimes) {
  describe(`DockerClient against a real ${rt.runtime}`, { skip: rt.skip, timeout: 180_000 }, () => {
    let harness: Harness | undefined;
    let client: DockerClient;
    let forwarding = '';

    before(async () => {
      forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
      harness = await rt.start();
      client = new DockerClient({ endpoint: `unix://${harness.socket}`, runtime: rt.runtime });
    });

    after(async () => {
      client?.close();
      if (!harness) return;
      await harness.stop();
      assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8'), forwarding, 'ip_forward as before');
      assert.doesNotMatch(readFileSync('/proc/net/dev', 'utf8'), new RegExp(`\\b${harness.bridge.name}:`), 'bridge removed');
    });

    test('ping', async () => {
      await client.ping();
    });

    test('inspect a running container: id, name, image, runtime, labels and pod', async () => {
      const labels = {
        'io.kubernetes.pod.name': 'web-7d4b9',
        'io.kubernetes.pod.namespace': 'shop',
        'io.kubernetes.pod.uid': '3f2a8c1e-0b5d-4c1a-9e7f-2d6b8a4c0e11',
        team: 'payments',
      };
      const c = await harness!.run(`convis-inspect-${process.pid}`, ['sleep', '600'], { labels });
      assert.match(c.id, /^[0-9a-f]{64}$/);
      const info = await client.inspect(c.id);
      assert.ok(info);
      assert.equal(info.id, c.id);
      assert.equal(info.name, `convis-inspect-${process.pid}`);
      assert.equal(info.image, rt.image);
      assert.equal(info.runtime, rt.runtime);
      for (const [k, v] of Object.entries(labels)) assert.equal(info.labels[k], v, k);
      assert.deepEqual(info.pod, { name: 'web-7d4b9', namespace: 'shop', uid: '3f2a8c1e-0b5d-4c1a-9e7f-2d6b8a4c0e11' });
    });

    test('without pod labels there is no pod; io.kubernetes.container.name names the container', async () => {
      const plain = await harness!.run(`convis-plain-${process.pid}`, ['sleep', '600']);
      const info = await client.inspect(plain.id);
      assert.equal(info?.name, `convis-plain-${process.pid}`);
      assert.equal(info?.pod, undefined);
      const named = await harness!.run(`convis-k8s_app_x-${process.pid}`, ['sleep', '600'], { labels: { 'io.kubernetes.container.name': 'app' } });
      assert.equal((await client.inspect(named.id))?.name, 'app');
    });

    test('an unknown id, and a removed container, are null', async () => {
      assert.equal(await client.inspect(hex64()), null);
      const c = await harness!.run(`convis-gone-${process.pid}`, ['sleep', '600']);
      await harness!.rm(c.id);
      assert.equal(await client.inspect(c.id), null);
    });

    test('64 inspects at once all answer (queued on the client\'s few sockets)', async () => {
      const c = await harness!.run(`convis-many-${process.pid}`, ['sleep', '600']);
      const all = await Promise.all(Array.from({ length: 64 }, (_, i) => (i % 2 ? client.inspect(c.id) : client.inspect(hex64()))));
      assert.equal(all.filter((x) => x?.id === c.id).length, 32);
      assert.equal(all.filter((x) => x === null).length, 32);
    });

    test('harness: containers reach a listener on the host and each other', async () => {
      const got: { from: string; data: string }[] = [];
      const sockets = new Set<net.Socket>();
      const server = net.createServer((s) => {
        sockets.add(s);
        let data = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => (data += d));
        s.on('end', () => {
          got.push({ from: s.remoteAddress ?? '', data: data.trim() });
          s.end();
        });
        s.on('close', () => sockets.delete(s));
      });
      await new Promise<void>((r) => server.listen(0, harness!.bridge.gateway, r));
      const { port } = server.address() as net.AddressInfo;
      // send FILE to HOST PORT, retried while the peer is not listening yet
      const send = 'send() { for i in $(seq 100); do nc -w 2 "$1" "$2" < "$3" && return 0; sleep 0.1; done; return 1; }';
      const gw = harness!.bridge.gateway;
      try {
        // a relay: what reaches it from the other container goes on to the host. The
        // listener's stdin is /dev/null, so a plain `nc -l` half-closes at once and
        // races the sender's data; with -e, cat reads the connection to its end.
        const relay = await harness!.run(`convis-relay-${process.pid}`, [
          'sh',
          '-c',
          `${send}; nc -l -p 8080 -e sh -c 'cat > /tmp/m' && send ${gw} ${port} /tmp/m; sleep 600`,
        ]);
        const sender = await harness!.run(`convis-sender-${process.pid}`, [
          'sh',
          '-c',
          `${send}; echo via-relay > /tmp/a; echo direct > /tmp/b; send ${relay.ip} 8080 /tmp/a; send ${gw} ${port} /tmp/b; sleep 600`,
        ]);
        const want = [
          { from: sender.ip, data: 'direct' },
          { from: relay.ip, data: 'via-relay' },
        ];
        const has = (w: { from: string; data: string }) => got.some((g) => g.from === w.from && g.data === w.data);
        const deadline = Date.now() + 20_000;
        while (!want.every(has) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        assert.ok(want.every(has), `want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
      } finally {
        // a container's end of a connection dies with its namespace, unannounced
        for (const s of sockets) s.destroy();
        server.close();
      }
    });
  });
}
