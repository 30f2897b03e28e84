import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BpfError } from '../../src/tracer/errors.js';
import { checkBtf, checkPrivileges, effectiveCaps, ensureTracefs } from '../../src/tracer/preflight.js';
import { tempDir } from '../helpers/tmp.js';

const status = (capEff: string) => `Name:\tconvis\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t${capEff}\n`;

test('effective capabilities come from CapEff', () => {
  assert.equal(effectiveCaps(status('000001ffffffffff')), 0x1ffffffffffn);
  assert.equal(effectiveCaps('Name:\tx\n'), 0n);
});

test('privileges: root-like, CAP_BPF+CAP_PERFMON, or CAP_SYS_ADMIN pass; none fails with EPERM', () => {
  assert.doesNotThrow(() => checkPrivileges(status('000001ffffffffff'), 0));
  assert.doesNotThrow(() => checkPrivileges(status((1n << 39n | 1n << 38n).toString(16).padStart(16, '0')), 1000));
  assert.doesNotThrow(() => checkPrivileges(status((1n << 21n).toString(16).padStart(16, '0')), 1000));
  for (const caps of ['0000000000000000', (1n << 39n).toString(16).padStart(16, '0')]) {
    assert.throws(
      () => checkPrivileges(status(caps), 1000),
      (e: unknown) => e instanceof BpfError && e.code === 'EPERM' && /must run as root/.test(e.message) && /uid 1000/.test(e.message),
    );
  }
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
