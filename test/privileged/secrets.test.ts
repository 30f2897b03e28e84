/**
 * Credentials never leave convis: with them on the command line, in files
 * and in the environment, none appears in stdout, stderr, /metrics, the
 * remote-write bodies or the New Relic bodies, although convis reports its
 * own connections to those receivers (with its own command line). And the
 * secret-bearing arguments of another process are masked unless
 * --cmdline full is asked for.
 *
 * The receivers are local: New Relic's servers cannot be reached from here,
 * so FakeNewRelic implements the documented Event API contract; the
 * remote-write receiver records what it is sent (the body is checked after
 * snappy decompression, where label strings sit as plain bytes).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import snappy from 'snappyjs';
import { Agent, peerExecutable, skipReasonLoudly } from '../helpers/agent.js';
import { FakeNewRelic } from '../helpers/newrelic-server.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A remote-write receiver that keeps every request, decompressed. */
async function remoteWriteReceiver(): Promise<{ server: Server; url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.from(snappy.uncompress(Buffer.concat(chunks))) });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/api/v1/write`, received };
}

const KEY = 'NRII-secret-insert-key-7f3a9c';
const PASSWORD = 'rw-secret-password-41d2';
const TENANT = 'tenant-secret-header-93be';

interface Given {
  /** extra --sink options for newrelic and prometheus */
  nr: string;
  rw: string;
  env: NodeJS.ProcessEnv;
}

/** Runs the agent with every sink, makes it talk to its receivers, and checks that no credential got out. */
async function noneLeaks(how: string, given: (dir: string) => Given): Promise<void> {
  const dir = tempDir('convis-secrets-');
  const g = given(dir);
  const nr = await FakeNewRelic.start({ account: '4242', key: KEY });
  const rw = await remoteWriteReceiver();
  const agent = await Agent.start(
    [
      '--sink', `newrelic,account=4242,endpoint=${nr.base.href}${g.nr}`,
      '--sink', `prometheus,endpoint=${rw.url},username=convis,interval=300ms${g.rw}`,
      '--sink', 'metrics,listen=127.0.0.1:0',
    ],
    { ...process.env, ...g.env },
  );
  let scraped = '';
  try {
    const m = /metrics: listening on 127\.0\.0\.1:(\d+)/.exec(agent.stderr);
    assert.ok(m, agent.stderr);
    // convis's own connections to the receivers are events like any other
    await agent.waitFor((es) => es.some((e) => e.process?.pid === agent.pid && e.remote?.port === Number(new URL(rw.url).port)), `${how}: the agent's own remote-write connection`);
    scraped = await (await fetch(`http://127.0.0.1:${m[1]}/metrics`)).text();
  } finally {
    const r = await agent.stop();
    await nr.close();
    await new Promise((res) => rw.server.close(res));
    assert.equal(r.code, 0, r.stderr);
    const own = agent.events.filter((e) => e.process?.pid === agent.pid);
    assert.ok(own.length > 0, `${how}: the agent reported its own connections`);
    for (const e of own) assert.match(e.process!.cmd, /--sink newrelic,account=4242/, `${how}: its own command line is reported`);
    // the credentials were used...
    assert.ok(nr.requests.length > 0 && nr.requests.every((q) => q.headers['x-insert-key'] === KEY), `${how}: New Relic got the key`);
    assert.ok(rw.received.length > 0, `${how}: remote write got requests`);
    for (const q of rw.received) {
      assert.equal(q.headers.authorization, `Basic ${Buffer.from(`convis:${PASSWORD}`).toString('base64')}`, how);
      assert.equal(q.headers['x-scope-orgid'], TENANT, how);
    }
    // ...and appear nowhere else
    const places: [string, string][] = [
      ['stdout', agent.stdout],
      ['stderr', r.stderr],
      ['/metrics', scraped],
      ['New Relic bodies', JSON.stringify(nr.events)],
      ['remote-write bodies', Buffer.concat(rw.received.map((q) => q.body)).toString('latin1')],
    ];
    for (const [where, text] of places) {
      assert.ok(text.length > 0, `${how}: ${where} is not empty`);
      for (const secret of [KEY, PASSWORD, TENANT]) assert.equal(text.includes(secret), false, `${how}: ${secret} appears in ${where}`);
    }
    // every New Relic event of the agent's own connections carries the masked command line
    const nrOwn = nr.events.filter((e) => e['process.pid'] === agent.pid);
    assert.ok(nrOwn.length > 0, `${how}: New Relic got the agent's own connections`);
  }
}

describe('credentials never leave convis', { skip }, () => {
  test('given on the command line: its own command line is reported with them masked', async () => {
    await noneLeaks('command line', () => ({ nr: `,key=${KEY}`, rw: `,password=${PASSWORD},header.X-Scope-OrgID=${TENANT}`, env: {} }));
  });

  test('given in files', async () => {
    await noneLeaks('files', (dir) => {
      const file = (name: string, text: string) => {
        const p = join(dir, name);
        writeFileSync(p, text, { mode: 0o600 });
        return p;
      };
      return {
        nr: `,key_file=${file('key', `${KEY}\n`)}`,
        rw: `,password_file=${file('pw', `${PASSWORD}\n`)},header_file.X-Scope-OrgID=${file('tenant', TENANT)}`,
        env: {},
      };
    });
  });

  test('given in the environment', async () => {
    await noneLeaks('environment', (dir) => {
      const tenant = join(dir, 'tenant');
      writeFileSync(tenant, TENANT);
      return { nr: '', rw: `,header_file.X-Scope-OrgID=${tenant}`, env: { CONVIS_NEWRELIC_KEY: KEY, CONVIS_PROMETHEUS_PASSWORD: PASSWORD } };
    });
  });
});

describe('command lines of other processes', { skip }, () => {
  /** A process with secret-bearing arguments that makes one connection to a local listener. */
  async function connectWithSecrets(agent: Agent): Promise<string> {
    const server = createServer((_q, s) => s.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      const code = `import socket,sys; s=socket.create_connection(("127.0.0.1",${port})); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(100); s.close()`;
      const child = spawn(peerExecutable(), ['-c', code, '--password=hunter2-pw', 'https://bob:url-pw-55@example.com/', 'API_TOKEN=tok-8812'], { stdio: 'ignore' });
      const pid = child.pid!;
      assert.equal(await new Promise((r) => child.once('exit', r)), 0);
      await agent.waitFor((es) => es.some((e) => e.event === 'connect' && e.process?.pid === pid), 'the connect of the process with secrets');
      return agent.events.find((e) => e.event === 'connect' && e.process?.pid === pid)!.process!.cmd;
    } finally {
      server.close();
    }
  }

  test('masked by default; --cmdline full shows them; --cmdline none shows nothing', async () => {
    for (const [mode, check] of [
      ['redacted', (cmd: string) => {
        assert.match(cmd, /--password=\*\*\* https:\/\/bob:\*\*\*@example\.com\/ API_TOKEN=\*\*\*$/);
        for (const s of ['hunter2-pw', 'url-pw-55', 'tok-8812']) assert.equal(cmd.includes(s), false, cmd);
      }],
      ['full', (cmd: string) => assert.match(cmd, /--password=hunter2-pw https:\/\/bob:url-pw-55@example\.com\/ API_TOKEN=tok-8812$/)],
      ['none', (cmd: string) => assert.equal(cmd, '')],
    ] as const) {
      const agent = await Agent.start(mode === 'redacted' ? [] : ['--cmdline', mode]);
      try {
        check(await connectWithSecrets(agent));
      } finally {
        const r = await agent.stop();
        assert.equal(r.code, 0, r.stderr);
      }
    }
  });
});
