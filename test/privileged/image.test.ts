/**
 * The OCI image as users run it: built once with the documented command
 * (scripts/image.sh, from the repository and the npm and Debian registries
 * only), then run in a real podman and a real dockerd with --cap-drop=ALL
 * plus the documented capabilities, the host's pid namespace and the
 * documented read-only mounts (never --privileged). A host process's
 * connection, a Docker container's and a podman container's are reported
 * (in /metrics) with process, container name and image and the host's node
 * name; /metrics, /healthz and /readyz
 * answer from outside the container; without one capability the image
 * exits with one line naming it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { skipReasonLoudly, sleep, startPeer } from '../helpers/agent.js';
import { CAPABILITIES, IMAGE, IMAGE_LATEST, LIVENESS_PATH, METRICS_PORT, MOUNTS, READINESS_PATH } from '../helpers/deploy.js';
import { dockerCli, dockerdSkipReason, makeTempDir, removeTree, runCommand, startDockerd, TEST_IMAGE, type Dockerd } from '../helpers/dockerd.js';
import { repoRoot } from '../helpers/paths.js';
import { podmanSkipReason, startPodman, type Podman } from '../helpers/podman.js';
import { skipLoudly } from '../helpers/skip.js';

const skip = skipReasonLoudly() || skipLoudly('image tests (podman)', podmanSkipReason()) || skipLoudly('image tests (dockerd)', dockerdSkipReason());

interface Engine {
  name: 'podman' | 'docker';
  run(args: string[], timeoutMs?: number): Promise<string>;
  /** a container's output, stdout then stderr */
  logs(name: string): Promise<{ stdout: string; stderr: string }>;
  /** flags every `run` needs on this engine (network, ulimits) */
  runFlags: string[];
}

/** The documented run flags: no capability but the listed ones, host pid, a read-only root filesystem, the mounts read-only. */
function agentFlags(sockets: { docker: string; podman: string }): string[] {
  const host = (m: (typeof MOUNTS)[number]) =>
    m.path === '/var/run/docker.sock' ? sockets.docker : m.path === '/run/podman/podman.sock' ? sockets.podman : m.host;
  // the tests start no containerd with CRI here: the CRI socket is the one mount they leave out
  const mounts = MOUNTS.filter((m) => !m.path.includes('containerd'));
  return [
    '--cap-drop=ALL',
    ...CAPABILITIES.map((c) => `--cap-add=${c}`),
    '--pid=host',
    '--read-only',
    ...mounts.flatMap((m) => ['-v', `${host(m)}:${m.path}${m.readOnly ? ':ro' : ''}`]),
  ];
}

/** `logs NAME` with stdout and stderr apart (the events can be many: other work on the host shows too). */
function logsOf(cmd: string, pre: string[], env: NodeJS.ProcessEnv, name: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(cmd, [...pre, 'logs', name], { env, maxBuffer: 512 * 1024 * 1024, timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) =>
      err ? reject(err) : resolve({ stdout, stderr }),
    ),
  );
}

describe('the OCI image in podman and dockerd', { skip }, () => {
  let podman: Podman;
  let dockerd: Dockerd;
  let engines: Engine[] = [];
  let buildOutput = '';
  let buildSeconds = 0;
  let dir = '';

  before(async () => {
    [podman, dockerd] = await Promise.all([startPodman(), startDockerd()]);
    dir = makeTempDir('convis-image-test-');
    const t0 = Date.now();
    // the documented command, into the test's private podman
    buildOutput = await runCommand('bash', [join(repoRoot, 'scripts/image.sh')], {
      env: { ...podman.env, CONVIS_IMAGE_ENGINE: podman.argv.join(' ') },
      timeoutMs: 600_000,
    });
    buildSeconds = (Date.now() - t0) / 1000;
    const pm = (args: string[], timeoutMs = 60_000) => runCommand(podman.argv[0]!, [...podman.argv.slice(1), ...args], { env: podman.env, timeoutMs });
    const dk = (args: string[], timeoutMs = 60_000) => runCommand(dockerCli()!, args, { env: dockerd.env, timeoutMs });
    // the same image into dockerd
    await pm(['save', '-o', join(dir, 'convis.tar'), IMAGE]);
    await dk(['load', '-i', join(dir, 'convis.tar')], 120_000);
    engines = [
      { name: 'podman', run: pm, logs: (n) => logsOf(podman.argv[0]!, podman.argv.slice(1), podman.env, n), runFlags: ['--pull=never', '--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=1024:1024', '--network', podman.network] },
      { name: 'docker', run: dk, logs: (n) => logsOf(dockerCli()!, [], dockerd.env, n), runFlags: [] },
    ];
  });

  after(async () => {
    await Promise.all([podman?.stop(), dockerd?.stop()]);
    if (dir) removeTree(dir);
  });

  test('built by scripts/image.sh: both tags, Node.js 20+, no compilers, dev dependencies or tests; the README states its size', async () => {
    process.stderr.write(`image build took ${buildSeconds.toFixed(0)} s: ${buildOutput.trim().split('\n').pop()}\n`);
    const m = /image: localhost\/convis:\S+ \(localhost\/convis:latest\), (\d+) MB/.exec(buildOutput);
    assert.ok(m, buildOutput);
    const mb = Number(m[1]);
    assert.ok(mb < 200, `the image is ${mb} MB`);
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const stated = /The image is about (\d+) MB/.exec(readme);
    assert.ok(stated, 'the README states the image size as "The image is about N MB"');
    assert.ok(Math.abs(Number(stated[1]) - mb) <= 5, `README says ${stated[1]} MB, the build made ${mb} MB`);
    const pm = engines[0]!;
    const ids = (await pm.run(['images', '--format', '{{.Repository}}:{{.Tag}}'])).split('\n');
    assert.ok(ids.includes(IMAGE) && ids.includes(IMAGE_LATEST), ids.join(' '));
    const probe = `const fs = require('fs');
      const absent = ['/opt/convis/dist/test', '/opt/convis/test', '/opt/convis/node_modules/typescript', '/opt/convis/node_modules/@types/picomatch',
        '/opt/convis/bpf', '/usr/bin/gcc', '/usr/bin/cc', '/usr/bin/clang', '/usr/bin/make', '/usr/bin/python3', '/bin/sh'].filter((p) => fs.existsSync(p));
      console.log(JSON.stringify({ node: process.versions.node, absent }));`;
    const version = IMAGE.split(':')[1];
    for (const e of engines) {
      // the settings image.sh gives (and deploy/image/Dockerfile, by the unit test), as each engine reads them
      const config = JSON.parse(await e.run(['image', 'inspect', '--format', '{{json .Config}}', IMAGE])) as { Env: string[]; Labels: Record<string, string>; Entrypoint: string[]; User: string };
      assert.deepEqual(config.Entrypoint, ['/usr/local/bin/node', '--v8-pool-size=1', '/opt/convis/bin/convis'], e.name);
      for (const env of ['PATH=/usr/local/bin:/usr/bin', 'NODE_ENV=production', 'MALLOC_ARENA_MAX=2']) assert.ok(config.Env.includes(env), `${e.name}: ${JSON.stringify(config.Env)}`);
      assert.equal(config.Labels['org.opencontainers.image.version'], version, e.name);
      assert.equal(config.Labels['org.opencontainers.image.title'], 'convis', e.name);
      assert.equal(config.User, '0:0', e.name);
      const out = JSON.parse(await e.run(['run', '--rm', ...e.runFlags, '--entrypoint', '/usr/local/bin/node', IMAGE, '-e', probe])) as { node: string; absent: string[] };
      assert.ok(Number(out.node.split('.')[0]) >= 20, out.node);
      assert.deepEqual(out.absent, [], `${e.name}: the image holds ${out.absent.join(', ')}`);
    }
  });

  for (const engineName of ['podman', 'docker'] as const) {
    test(`${engineName}: --cap-drop=ALL plus ${CAPABILITIES.join(', ')}, host pid, read-only mounts: host and Docker container connections named; /metrics, /healthz, /readyz from outside`, async () => {
      const e = engines.find((x) => x.name === engineName)!;
      const name = `convis-agent-${engineName}`;
      await e.run([
        'run', '-d', '--name', name, ...e.runFlags,
        ...agentFlags({ docker: dockerd.socket, podman: podman.socket }),
        IMAGE, '--sink', `metrics,listen=:${METRICS_PORT}`, '--interval', '2s',
      ]);
      try {
        const ip = (await e.run(['inspect', '--format', '{{.NetworkSettings.IPAddress}}', name])).trim();
        assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/, `${name} has no address`);
        const url = (path: string) => `http://${ip}:${METRICS_PORT}${path}`;
        const logs = () => e.logs(name);
        // ready: programs attached and a first batch through, as the readiness probe sees it
        const deadline = Date.now() + 60_000;
        for (;;) {
          const r = await fetch(url(READINESS_PATH)).catch(() => undefined);
          if (r?.status === 200) break;
          const running = (await e.run(['inspect', '--format', '{{.State.Running}}', name])).trim();
          if (running !== 'true') assert.fail(`${name} exited: ${(await logs()).stderr}`);
          if (Date.now() > deadline) assert.fail(`${name} not ready after 60 s: ${r?.status} ${await r?.text()}\n${(await logs()).stderr}`);
          await sleep(250);
        }
        const live = await fetch(url(LIVENESS_PATH));
        assert.deepEqual([live.status, await live.text()], [200, 'ok\n']);

        // a host process: loopback on the host, seen from the container
        const server = startPeer(['server', '127.0.0.1', '0', '6']);
        const port = Number(await server.line('port'));
        const client = startPeer(['client', '127.0.0.1', String(port), '6', '0']);
        await client.line('done');
        // a Docker container connecting to the host
        const cserver = startPeer(['server', dockerd.bridge.gateway, '0', '6']);
        const cport = Number(await cserver.line('port'));
        const c = await dockerd.run(`client-of-${engineName}`, ['sh', '-c', `echo hello | nc -w 1 ${dockerd.bridge.gateway} ${cport}; sleep 30`]);
        // and a podman container, named through podman's socket
        const pserver = startPeer(['server', podman.bridge.gateway, '0', '6']);
        const pport = Number(await pserver.line('port'));
        const pc = await podman.run(`podman-client-of-${engineName}`, ['sh', '-c', `echo hello | nc -w 1 ${podman.bridge.gateway} ${pport}; sleep 30`]);

        // the flows, as /metrics reports them from outside the container: bounded whatever else the host
        // runs (a stdout sink under another workload's churn would hand the test gigabytes of logs)
        const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
        const node = esc(hostname());
        const want = {
          'the host process': new RegExp(`^convis_tcp_connections_total\\{node="${node}",direction="outbound",process="convis-peer",remote_ip="127\\.0\\.0\\.1",server_port="${port}"\\} 1$`, 'm'),
          'the Docker container': new RegExp(
            `^convis_tcp_connections_total\\{node="${node}",direction="outbound",process="[^"]+",container_id="${c.id}",container_name="client-of-${engineName}",` +
              `container_image="${esc(TEST_IMAGE)}",remote_ip="${esc(dockerd.bridge.gateway)}",server_port="${cport}"\\} 1$`, 'm'),
          'the podman container': new RegExp(
            `^convis_tcp_connections_total\\{node="${node}",direction="outbound",process="[^"]+",container_id="${pc.id}",container_name="podman-client-of-${engineName}",` +
              `container_image="${esc(podman.image)}",remote_ip="${esc(podman.bridge.gateway)}",server_port="${pport}"\\} 1$`, 'm'),
          // bytes are counted at close: the host client sent 6
          'the host process\'s bytes': new RegExp(`^convis_tcp_bytes_sent_total\\{node="${node}",direction="outbound",process="convis-peer",remote_ip="127\\.0\\.0\\.1",server_port="${port}"\\} 6$`, 'm'),
        };
        let text = '';
        const until = Date.now() + 30_000;
        for (;;) {
          const metrics = await fetch(url('/metrics'));
          assert.equal(metrics.status, 200);
          text = await metrics.text();
          const missing = Object.entries(want).filter(([, re]) => !re.test(text)).map(([what]) => what);
          if (missing.length === 0) break;
          if (Date.now() > until) assert.fail(`${name}: /metrics lacks ${missing.join(', ')}:\n${text.split('\n').filter((l) => l.startsWith('convis_tcp_connections_total')).slice(0, 30).join('\n')}`);
          await sleep(500);
        }
        await dockerd.rm(c.id);
        await podman.rm(pc.id);

        // SIGTERM: a clean stop, exit 0 and the summary line
        await e.run(['stop', '-t', '20', name], 60_000);
        const code = (await e.run(['inspect', '--format', '{{.State.ExitCode}}', name])).trim();
        const { stderr } = await logs();
        assert.equal(code, '0', stderr.slice(-2000));
        assert.match(stderr, /^convis: summary \{/m);
      } finally {
        await e.run(['rm', '-f', name]).catch(() => undefined);
      }
    });

    test(`${engineName}: without one required capability, one line naming it and a non-zero exit`, async () => {
      const e = engines.find((x) => x.name === engineName)!;
      for (const missing of CAPABILITIES) {
        const flags = agentFlags({ docker: dockerd.socket, podman: podman.socket }).filter((f) => f !== `--cap-add=${missing}`);
        const name = `convis-nocap-${engineName}-${missing.toLowerCase()}`;
        await e.run(['run', '-d', '--name', name, ...e.runFlags, ...flags, IMAGE]);
        try {
          await e.run(['wait', name], 60_000);
          const code = (await e.run(['inspect', '--format', '{{.State.ExitCode}}', name])).trim();
          const out = await e.logs(name);
          assert.equal(code, '1', out.stderr);
          assert.equal(out.stdout, '');
          assert.match(out.stderr, new RegExp(`^convis: missing capability CAP_${missing} \\(running as uid 0; [^\\n]*\\): run as root or add it\\n$`));
        } finally {
          await e.run(['rm', '-f', name]).catch(() => undefined);
        }
      }
    });
  }
});
