import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BpfError } from '../../src/tracer/errors.js';
import { checkBtf, checkPrivileges, effectiveCaps, ensureTracefs, missingCapabilities, REQUIRED_CAPABILITIES } from '../../src/tracer/preflight.js';
import { tempDir } from '../helpers/tmp.js';

const status = (capEff: string) => `Name:\tconvis\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t${capEff}\n`;

test('effective capabilities come from CapEff', () => {
  assert.equal(effectiveCaps(status('000001ffffffffff')), 0x1ffffffffffn);
  assert.equal(effectiveCaps('Name:\tx\n'), 0n);
});

test('privileges: CAP_SYS_ADMIN and CAP_SYS_PTRACE pass; each one missing is named in one line', () => {
  const hex = (n: bigint) => n.toString(16).padStart(16, '0');
  assert.doesNotThrow(() => checkPrivileges(status('000001ffffffffff'), 0));
  assert.doesNotThrow(() => checkPrivileges(status(hex((1n << 21n) | (1n << 19n))), 1000));
  const cases: [bigint, string][] = [
    [0n, 'missing capabilities CAP_SYS_ADMIN, CAP_SYS_PTRACE'],
    [1n << 21n, 'missing capability CAP_SYS_PTRACE'],
    [1n << 19n, 'missing capability CAP_SYS_ADMIN'],
    // CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN do not stand in for CAP_SYS_ADMIN (setns needs it)
    [(1n << 39n) | (1n << 38n) | (1n << 12n) | (1n << 19n), 'missing capability CAP_SYS_ADMIN'],
  ];
  for (const [caps, text] of cases) {
    assert.throws(
      () => checkPrivileges(status(hex(caps)), 1000),
      (e: unknown) => e instanceof BpfError && e.code === 'EPERM' && e.message.startsWith(`${text} (running as uid 1000;`) && !e.message.includes('\n'),
    );
  }
  assert.deepEqual(missingCapabilities(1n << 19n), ['CAP_SYS_ADMIN']);
  assert.deepEqual(REQUIRED_CAPABILITIES.map((c) => c.name), ['CAP_SYS_ADMIN', 'CAP_SYS_PTRACE']);
});

test('BTF: missing vmlinux BTF is ENOTSUP with the reason; --btf must exist', () => {
  const sys = tempDir('convis-sys-');
  assert.throws(() => checkBtf(sys), (e: unknown) => e instanceof BpfError && e.code === 'ENOTSUP' && /CONFIG_DEBUG_INFO_BTF/.test(e.message));
  mkdirSync(join(sys, 'kernel/btf'), { recursive: true });
  writeFileSync(join(sys, 'kernel/btf/vmlinux'), 'btf');
  assert.doesNotThrow(() => checkBtf(sys));
  assert.throws(() => checkBtf(sys, join(sys, 'nope')), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
  assert.doesNotThrow(() => checkBtf('/nonexistent', join(sys, 'kernel/btf/vmlinux')));
});

test('tracefs: present is left alone, missing is mounted, a failed mount is ENOTRACEFS', () => {
  const sys = tempDir('convis-sys-');
  const mounted: string[] = [];
  // a mounter that does what mount(8) would: the events directory appears
  const fakeMount = (dir: string) => {
    mounted.push(dir);
    mkdirSync(join(dir, 'events'), { recursive: true });
  };
  ensureTracefs(sys, fakeMount);
  assert.deepEqual(mounted, [join(sys, 'kernel/tracing')]);
  ensureTracefs(sys, fakeMount);
  assert.equal(mounted.length, 1, 'mounted once only');

  const debugOnly = tempDir('convis-sys-');
  mkdirSync(join(debugOnly, 'kernel/debug/tracing/events'), { recursive: true });
  assert.doesNotThrow(() => ensureTracefs(debugOnly, () => assert.fail('must not mount')));

  const broken = tempDir('convis-sys-');
  const failing = () => {
    throw Object.assign(new Error('mount failed'), { stderr: 'mount: permission denied\n       dmesg(1) may have more information after failed mount system call.\n' });
  };
  assert.throws(
    () => ensureTracefs(broken, failing),
    (e: unknown) => e instanceof BpfError && e.code === 'ENOTRACEFS' && /permission denied\); mount it with/.test(e.message) && !e.message.includes('\n'),
  );
  assert.throws(() => ensureTracefs(broken, () => undefined), (e: unknown) => e instanceof BpfError && /no events directory/.test(e.message));
});
