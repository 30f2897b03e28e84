/**
 * /healthz and /readyz of the real agent: on --health-listen and on the
 * metrics listener, ready once the programs are attached and a first batch
 * went through; and a missing capability on the host is one line naming it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Agent, convisBin, skipReasonLoudly } from '../helpers/agent.js';

const skip = skipReasonLoudly();

describe('health endpoints of the real agent', { skip }, () => {
  test('--health-listen and the metrics listener both answer /healthz and /readyz with 200 ok once ready', async () => {
    const agent = await Agent.start(['--health-listen', '127.0.0.1:0', '--sink', 'metrics,listen=127.0.0.1:0', '--interval', '1s']);
    try {
      const health = /health: listening on 127\.0\.0\.1:(\d+)/.exec(agent.stderr)?.[1];
      const metrics = /metrics: listening on 127\.0\.0\.1:(\d+)/.exec(agent.stderr)?.[1];
      assert.ok(health && metrics, agent.stderr);
      for (const port of [health, metrics]) {
        const deadline = Date.now() + 10_000;
        let ready: Response;
        while ((ready = await fetch(`http://127.0.0.1:${port}/readyz`)).status !== 200) {
          if (Date.now() > deadline) assert.fail(`not ready: ${await ready.text()}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(await ready.text(), 'ok\n');
        const live = await fetch(`http://127.0.0.1:${port}/healthz`);
        assert.deepEqual([live.status, await live.text()], [200, 'ok\n']);
      }
      // sweeps keep coming: still live after several intervals
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal((await fetch(`http://127.0.0.1:${health}/healthz`)).status, 200);
    } finally {
      const r = await agent.stop();
      assert.equal(r.code, 0, r.stderr);
    }
  });

  for (const cap of ['sys_admin', 'sys_ptrace']) {
    test(`without CAP_${cap.toUpperCase()} only: one line naming it, exit 1`, () => {
      const r = spawnSync('setpriv', [`--bounding-set=-${cap}`, process.execPath, convisBin, '--sink', 'metrics,listen=127.0.0.1:0'], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^convis: missing capability CAP_${cap.toUpperCase()} \\(running as uid 0; [^\\n]*\\): run as root or add it\\n$`));
    });
  }
});
