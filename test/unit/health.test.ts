import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FlowTable } from '../../src/aggregate/flows.js';
import { Registry } from '../../src/aggregate/registry.js';
import { parseConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/config/errors.js';
import { Health, progressWatch } from '../../src/health/health.js';
import { HealthServer } from '../../src/health/http.js';
import { MetricsEndpoint } from '../../src/sinks/metrics-endpoint.js';

function fixture() {
  const state = { kernel: undefined as string | undefined, failingForMs: 0 };
  const health = new Health({ kernel: () => state.kernel, sinks: () => [{ name: 'newrelic', failingForMs: state.failingForMs }], sinkFailingMs: 60_000 });
  return { state, health };
}

test('ready only once attached and the first batch went through; live from the start', () => {
  const { health } = fixture();
  assert.deepEqual(health.live(), { ok: true, reasons: [] });
  assert.deepEqual(health.ready(), { ok: false, reasons: ['BPF programs not attached yet'] });
  health.markAttached();
  assert.deepEqual(health.ready(), { ok: false, reasons: ['no batch from the kernel processed yet'] });
  health.markBatch();
  assert.deepEqual(health.ready(), { ok: true, reasons: [] });
});

test('a stopped kernel side or a stopped sink fails liveness and readiness; a failing network sink only readiness', () => {
  const { state, health } = fixture();
  health.markAttached();
  health.markBatch();
  state.failingForMs = 61_000;
  assert.equal(health.live().ok, true);
  assert.deepEqual(health.ready().reasons, ['sink newrelic: every delivery failed for 61 s']);
  state.failingForMs = 0;
  state.kernel = 'the poll thread stopped';
  assert.deepEqual(health.live().reasons, ['kernel side: the poll thread stopped']);
  assert.equal(health.ready().ok, false);
  state.kernel = undefined;
  health.sinkStopped('stdout', 'write EPIPE');
  assert.deepEqual(health.live().reasons, ['sink stdout stopped: write EPIPE']);
});

test('progressWatch: stale only when the counter has not moved for longer than the limit', () => {
  let v = 0;
  let t = 0;
  const stale = progressWatch(() => v, 1000, () => t);
  t = 900;
  assert.equal(stale(), undefined);
  t = 1500;
  assert.equal(stale(), 1500);
  v = 1;
  assert.equal(stale(), undefined);
  t = 2400;
  assert.equal(stale(), undefined);
  t = 2600;
  assert.equal(stale(), 1100);
});

test('/healthz and /readyz: 200 ok, or 503 with the reasons, on their own listener and on the metrics one', async () => {
  const registry = new Registry({ flows: new FlowTable(), node: 'n', health: () => ({
    events: {},
    lost: { connection: 0, process: 0 },
    untrackedSockets: 0,
    uncountedDatagrams: 0,
    deferredUpdates: 0,
    sinks: [],
    containers: { lookups: 0, unknown: 0, runtimeErrors: 0 },
  }) });
  const servers = {
    own: (h: Health) => HealthServer.start({ host: '127.0.0.1', port: 0 }, h),
    metrics: (h: Health) => MetricsEndpoint.start({ host: '127.0.0.1', port: 0 }, registry, undefined, h),
  };
  for (const [kind, start] of Object.entries(servers)) {
    const { state, health } = fixture();
    const server = await start(health);
    try {
      const get = async (path: string) => {
        const r = await fetch(`http://127.0.0.1:${server.port}${path}`);
        return [r.status, await r.text()] as const;
      };
      assert.deepEqual(await get('/healthz'), [200, 'ok\n'], kind);
      assert.deepEqual(await get('/readyz'), [503, 'BPF programs not attached yet\n'], kind);
      health.markAttached();
      health.markBatch();
      assert.deepEqual(await get('/readyz'), [200, 'ok\n'], kind);
      state.kernel = 'no sweep for 40 s';
      assert.deepEqual(await get('/healthz'), [503, 'kernel side: no sweep for 40 s\n'], kind);
      assert.equal((await get('/nope'))[0], 404, kind);
      assert.equal((await get('/metrics'))[0], kind === 'own' ? 404 : 200, kind);
    } finally {
      await server.close();
    }
  }
});

test('--health-listen: HOST:PORT forms; anything else is a ConfigError naming the flag', () => {
  assert.deepEqual(parseConfig(['--health-listen', ':9401', '--node-name', 'n'], {}).healthListen, { host: '::', port: 9401 });
  assert.deepEqual(parseConfig(['--health-listen', '127.0.0.1:1', '--node-name', 'n'], {}).healthListen, { host: '127.0.0.1', port: 1 });
  assert.throws(() => parseConfig(['--health-listen', '9401', '--node-name', 'n'], {}), (e: unknown) => e instanceof ConfigError && /^--health-listen must be HOST:PORT/.test(e.message));
  assert.equal(parseConfig(['--node-name', 'n'], {}).healthListen, undefined);
});
