/**
 * The agent's life cycle as a user meets it: refusing to start without
 * privileges or BTF, and detaching cleanly with everything flushed on
 * SIGINT/SIGTERM.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Agent, convisBin, skipReasonLoudly, startPeer } from '../helpers/agent.js';
import { tempDir } from '../helpers/tmp.js';

const skip = skipReasonLoudly();

/** Ids of the BPF programs loaded in the kernel right now, by name. */
function loadedPrograms(): Map<number, string> {
  const out = execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  return new Map((JSON.parse(out) as { id: number; name?: string }[]).map((p) => [p.id, p.name ?? '']));
}

describe('agent life cycle', { skip }, () => {
  test('without the privileges it needs: one line, exit 1', () => {
    // uid 0 with an empty capability bounding set: no capabilities at all, yet
    // still able to read the checkout wherever it is (a uid switch might not be)
    const r = spawnSync('setpriv', ['--bounding-set=-all', process.execPath, convisBin], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^convis: missing capabilities CAP_SYS_ADMIN, CAP_SYS_PTRACE \(running as uid 0; .*\): run as root or add them\n$/);
  });

  test('a BTF file that does not exist: one line, exit 1', () => {
    const r = spawnSync(process.execPath, [convisBin, '--btf', '/nonexistent/vmlinux'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'convis: the BTF file given with --btf does not exist: /nonexistent/vmlinux\n');
  });

  test('tracefs missing and not mountable: one line naming the fix, exit 1', () => {
    const sys = tempDir('convis-sys-');
    const r = spawnSync(process.execPath, [convisBin, '--sys-root', sys, '--btf', '/sys/kernel/btf/vmlinux'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^convis: tracefs is not mounted and mounting it at ${sys}/kernel/tracing failed \\(.+\\); mount it with: mount -t tracefs nodev ${sys}/kernel/tracing\n$`));
  });

  test('tracefs not mounted: convis mounts it and starts', () => {
    // a private mount namespace, so the host keeps its tracefs
    const script = `umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; test ! -e /sys/kernel/tracing/events || exit 3; ` +
      `timeout -s INT 8 "${process.execPath}" "${convisBin}" --sink stdout,format=json >/dev/null & sleep 5; test -e /sys/kernel/tracing/events && echo mounted; wait`;
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^mounted$/m);
    assert.match(r.stderr, /convis: ready/);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal}: events made just before are flushed, programs detached, exit 0`, async () => {
      const earlier = loadedPrograms();
      const agent = await Agent.start();
      // ours: loaded since the agent started (another convis may be running too)
      const ours = [...loadedPrograms()].filter(([id, name]) => name === 'inet_sock_set_state' && !earlier.has(id)).map(([id]) => id);
      assert.equal(ours.length, 1, 'the agent loaded its programs');
      const server = startPeer(['server', '127.0.0.1', '7', '9']);
      const port = Number(await server.line('port'));
      const client = startPeer(['client', '127.0.0.1', String(port), '9', '7']);
      await client.exited;
      await server.exited;
      // no waiting for the events: the signal must not lose what is in flight
      const r = await agent.stop(signal);
      assert.equal(r.code, 0, r.stderr);
      const mine = agent.events.filter((e) => e.remote !== null && e.event !== 'update' && (e.local.port === port || e.remote.port === port));
      assert.deepEqual(mine.map((e) => e.event).sort(), ['accept', 'close', 'close', 'connect']);
      assert.equal(r.summary?.lost, 0);
      const after = loadedPrograms();
      assert.deepEqual(ours.filter((id) => after.has(id)), [], 'programs are gone after exit');
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    });
  }
});

describe('stdout closed by its reader', { skip }, () => {
  test('convis | head -n 1 ends convis quietly with exit 0', () => {
    // connections keep coming until convis notices on its next write that head has gone
    const connectLoop =
      `for i in $(seq 100); do python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); ` +
      `c=socket.create_connection(s.getsockname()); a,_=s.accept()"; sleep 0.1; done`;
    const r = spawnSync(
      'bash',
      ['-c', `set -o pipefail; ( sleep 1; ${connectLoop} ) & bg=$!; "${process.execPath}" "${convisBin}" | head -n 1; echo "status \${PIPESTATUS[0]}"; kill $bg`],
      { encoding: 'utf8', timeout: 30_000 },
    );
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2, r.stdout + r.stderr);
    assert.match(lines[0]!, /tcp /);
    assert.equal(lines[1], 'status 0');
    assert.doesNotMatch(r.stderr, /error|\n\s+at /);
  });
});
