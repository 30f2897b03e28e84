/**
 * ProcessCache fed with plain exec/fork/exit records and the fixture /proc
 * tree (test/fixtures/proc). Pids from 700000 up are not in the tree, so
 * they behave like processes that are already gone from procfs.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ExecRecord, TaskRecord } from '../../src/bpf/decode.js';
import { ARGS_LEN } from '../../src/bpf/events.js';
import { ProcessCache, type ProcessHint } from '../../src/metadata/process-cache.js';
import { readProcess } from '../../src/metadata/proc.js';
import { repoRoot } from '../helpers/paths.js';

const procRoot = join(repoRoot, 'test/fixtures/proc');
const GONE = 700000;

function exec(pid: number, argv: string[], over: Partial<ExecRecord> = {}): ExecRecord {
  return {
    kind: 'exec',
    pid,
    tsSec: 0,
    tsNsec: 1_000,
    ppid: 1,
    uid: 1000,
    cgroupId: 4242,
    comm: 'prog',
    filename: '/usr/bin/prog',
    argv,
    // as the decoder sets it: the kernel filled its whole argv buffer
    argsTruncated: Buffer.byteLength(argv.join('\0')) + 1 >= ARGS_LEN,
    ...over,
  };
}

function task(kind: 'fork' | 'exit', pid: number, over: Partial<TaskRecord> = {}): TaskRecord {
  return { kind, pid, tsSec: 0, tsNsec: 2_000, ppid: 1, uid: 1000, exitCode: 0, cgroupId: 4242, comm: 'prog', ...over };
}

const hint: ProcessHint = { comm: 'hinted', ppid: 77, uid: 1234 };

/** What the kernel's exec record holds for a command line: its first ARGS_LEN bytes, split as the decoder does. */
function kernelArgv(cmdline: Buffer): string[] {
  const argv = cmdline.subarray(0, Math.min(cmdline.length, ARGS_LEN)).toString('utf8').split('\0');
  if (argv[argv.length - 1] === '') argv.pop();
  return argv;
}

describe('scan', () => {
  test('loads every readable process of the tree, skips the malformed one', () => {
    const c = new ProcessCache({ procRoot });
    c.scan();
    assert.equal(c.stats().size, 7); // 1 2 4242 4243 4300 4301 5000; not 4400
    for (const pid of [1, 2, 4242, 4243, 4300, 4301, 5000]) {
      assert.deepEqual(c.get(pid, hint), readProcess(procRoot, pid));
    }
    assert.deepEqual(c.stats(), { size: 7, hits: 7, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 });
  });

  test('keeps what exec already told it', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(4242, ['python3', 'server.py'], { filename: '/usr/bin/python3', comm: 'python3' }));
    c.scan();
    const p = c.get(4242, hint);
    assert.equal(p.cmd, 'python3 server.py');
    assert.equal(p.comm, 'python3');
  });
});

describe('onExec', () => {
  test('argv joined into cmd, exe from /proc/<pid>/exe while the process lives', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(4242, ['python3', '-c', "print('a b')"], { filename: '/usr/bin/python3', comm: 'python3', ppid: 9, uid: 1000 }));
    assert.deepEqual(c.get(4242, hint), {
      pid: 4242,
      ppid: 9,
      uid: 1000,
      comm: 'python3',
      cmd: "python3 -c print('a b')",
      exe: '/usr/bin/python3.12', // the link target, not the exec filename
    });
    assert.deepEqual(c.stats(), { size: 1, hits: 1, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 });
  });

  test('exe falls back to the exec filename when the process is gone', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, ['curl', '-s', 'http://example.com'], { filename: '/usr/bin/curl', comm: 'curl' }));
    assert.deepEqual(c.get(GONE, hint), {
      pid: GONE,
      ppid: 1,
      uid: 1000,
      comm: 'curl',
      cmd: 'curl -s http://example.com',
      exe: '/usr/bin/curl',
    });
  });

  test('empty argv: cmd is the filename', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, [], { filename: '/usr/sbin/weird' }));
    assert.equal(c.get(GONE, hint).cmd, '/usr/sbin/weird');
  });

  const full = readFileSync(join(procRoot, '5000/cmdline'));
  const fullCmd = full.toString('utf8').slice(0, -1).split('\0').join(' ');
  const truncated = kernelArgv(full);

  test('fixture precondition: the java command line is longer than the kernel copies', () => {
    assert.ok(full.length > ARGS_LEN);
    assert.notEqual(truncated.join(' '), fullCmd);
    assert.ok(fullCmd.startsWith(truncated.join(' ')));
  });

  test('argv truncated at ARGS_LEN bytes is re-read from the live process', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(5000, truncated, { filename: '/usr/bin/java', comm: 'java' }));
    const p = c.get(5000, hint);
    assert.equal(p.cmd, fullCmd);
    assert.match(p.cmd, /com\.example\.Main --port 8080$/);
    assert.equal(p.exe, '/usr/lib/jvm/java-17-openjdk-amd64/bin/java');
  });

  test('argv truncated at ARGS_LEN bytes stays truncated when the process is gone', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, truncated, { filename: '/usr/bin/java', comm: 'java' }));
    const p = c.get(GONE, hint);
    assert.equal(p.cmd, truncated.join(' '));
    assert.equal(p.exe, '/usr/bin/java');
  });

  test('argv that was not truncated is not replaced by procfs', () => {
    // 510 bytes of arguments + the NUL terminator: fits in ARGS_LEN
    const argv = ['sh', '-c', 'x'.repeat(510 - 'sh\0-c\0'.length)];
    assert.equal(argv.join('\0').length + 1, ARGS_LEN - 1);
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(5000, argv, { filename: '/bin/sh', comm: 'sh' }));
    assert.equal(c.get(5000, hint).cmd, argv.join(' '));
  });

  test('a second exec of the same pid replaces the first', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, ['bash'], { filename: '/bin/bash', comm: 'bash' }));
    c.onExec(exec(GONE, ['ls', '-l'], { filename: '/bin/ls', comm: 'ls' }));
    const p = c.get(GONE, hint);
    assert.equal(p.cmd, 'ls -l');
    assert.equal(p.comm, 'ls');
    assert.equal(p.exe, '/bin/ls');
    assert.equal(c.stats().size, 1);
  });
});

describe('onFork', () => {
  test('the child inherits cmd and exe, with its own pid, ppid, uid and comm', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, ['gunicorn', 'app:wsgi'], { filename: '/usr/bin/gunicorn', comm: 'gunicorn', ppid: 1, uid: 33 }));
    c.onFork(task('fork', GONE + 1, { ppid: GONE, uid: 34, comm: 'gunicorn-w' }));
    assert.deepEqual(c.get(GONE + 1, hint), {
      pid: GONE + 1,
      ppid: GONE,
      uid: 34,
      comm: 'gunicorn-w',
      cmd: 'gunicorn app:wsgi',
      exe: '/usr/bin/gunicorn',
    });
    assert.deepEqual(c.stats(), { size: 2, hits: 1, procfsReads: 0, unresolved: 0, evicted: 0, cmdTruncated: 0 });
  });

  test('a parent known from the scan', () => {
    const c = new ProcessCache({ procRoot });
    c.scan();
    c.onFork(task('fork', GONE, { ppid: 4301, uid: 33, comm: 'nginx' }));
    const p = c.get(GONE, hint);
    assert.equal(p.cmd, 'nginx: worker process');
    assert.equal(p.exe, '/usr/sbin/nginx');
    assert.equal(p.ppid, 4301);
  });

  test('unknown parent: cmd is the comm, exe empty', () => {
    const c = new ProcessCache({ procRoot });
    c.onFork(task('fork', GONE, { ppid: GONE + 50, comm: 'orphan' }));
    assert.deepEqual(c.get(GONE, hint), { pid: GONE, ppid: GONE + 50, uid: 1000, comm: 'orphan', cmd: 'orphan', exe: '' });
  });
});

describe('onExit and gc', () => {
  test('an exited process stays for exitedTtlMs, then goes', () => {
    const c = new ProcessCache({ procRoot, exitedTtlMs: 1000 });
    c.onExec(exec(GONE, ['wget', 'x'], { comm: 'wget' }));
    c.onExec(exec(GONE + 1, ['sleep', '1000'], { comm: 'sleep' }));
    c.onExit(task('exit', GONE), 5000);
    for (const now of [5000, 5999, 6000]) {
      c.gc(now);
      assert.equal(c.stats().size, 2, `at ${now}`);
    }
    c.gc(6001);
    assert.equal(c.stats().size, 1);
    // still attributed while it lingered; after gc only the hint is left
    const p = c.get(GONE, hint);
    assert.deepEqual(p, { pid: GONE, ppid: 77, uid: 1234, comm: 'hinted', cmd: '', exe: '' });
    // a running process is never collected
    c.gc(Number.MAX_SAFE_INTEGER);
    assert.equal(c.get(GONE + 1, hint).cmd, 'sleep 1000');
  });

  test('the exited entry still answers lookups before gc', () => {
    const c = new ProcessCache({ procRoot, exitedTtlMs: 1000 });
    c.onExec(exec(GONE, ['wget', 'x'], { comm: 'wget' }));
    c.onExit(task('exit', GONE), 5000);
    c.gc(5500);
    assert.equal(c.get(GONE, hint).cmd, 'wget x');
  });

  test('default TTL is 120 s', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, ['a']));
    c.onExit(task('exit', GONE), 0);
    c.gc(120_000);
    assert.equal(c.stats().size, 1);
    c.gc(120_001);
    assert.equal(c.stats().size, 0);
  });

  test('exit of a pid never seen adds nothing', () => {
    const c = new ProcessCache({ procRoot });
    c.onExit(task('exit', GONE), 1);
    assert.equal(c.stats().size, 0);
  });

  test('a pid reused after exit is live again', () => {
    const c = new ProcessCache({ procRoot, exitedTtlMs: 10 });
    c.onExec(exec(GONE, ['old']));
    c.onExit(task('exit', GONE), 0);
    c.onFork(task('fork', GONE, { comm: 'new' }));
    c.gc(1000);
    assert.equal(c.get(GONE, hint).comm, 'new');
  });
});

describe('get', () => {
  test('hit vs procfs read vs unresolved, with the counters', () => {
    const c = new ProcessCache({ procRoot });
    // miss: read from procfs and kept
    assert.deepEqual(c.get(4300, hint), { pid: 4300, ppid: 1, uid: 1001, comm: 'sleep', cmd: 'sleep infinity', exe: '' });
    assert.deepEqual(c.stats(), { size: 1, hits: 0, procfsReads: 1, unresolved: 0, evicted: 0, cmdTruncated: 0 });
    // now a hit
    assert.equal(c.get(4300, hint).cmd, 'sleep infinity');
    assert.deepEqual(c.stats(), { size: 1, hits: 1, procfsReads: 1, unresolved: 0, evicted: 0, cmdTruncated: 0 });
    // gone from procfs too: the kernel's hint, not kept
    assert.deepEqual(c.get(GONE, hint), { pid: GONE, ppid: 77, uid: 1234, comm: 'hinted', cmd: '', exe: '' });
    assert.deepEqual(c.stats(), { size: 1, hits: 1, procfsReads: 2, unresolved: 1, evicted: 0, cmdTruncated: 0 });
    // procfs is not asked about it again
    c.get(GONE, { comm: 'other', ppid: 1, uid: 0 });
    assert.deepEqual(c.stats(), { size: 1, hits: 1, procfsReads: 2, unresolved: 2, evicted: 0, cmdTruncated: 0 });
  });

  test('a pid procfs did not have is asked about again after the TTL, or at once when an exec names it', () => {
    let now = 1000;
    const c = new ProcessCache({ procRoot, exitedTtlMs: 100, now: () => now });
    c.get(GONE, hint);
    c.get(GONE, hint);
    assert.equal(c.stats().procfsReads, 1);
    now = 1050;
    c.gc(now);
    c.get(GONE, hint);
    assert.equal(c.stats().procfsReads, 1, 'within the TTL');
    now = 1101;
    c.gc(now);
    c.get(GONE, hint);
    assert.equal(c.stats().procfsReads, 2, 'after the TTL');
    c.onExec(exec(GONE, ['reborn']));
    assert.equal(c.get(GONE, hint).cmd, 'reborn');
    assert.equal(c.stats().procfsReads, 2);
  });

  test('a process that exited before its cgroups were read: no container from procfs, exec details kept', () => {
    const c = new ProcessCache({ procRoot });
    c.onExec(exec(GONE, ['quick']));
    assert.equal(c.containerOf(GONE), undefined);
    assert.equal(c.containerOf(GONE), undefined);
    assert.equal(c.get(GONE, hint).cmd, 'quick');
  });

  test('a pid whose stat is malformed is unresolved', () => {
    const c = new ProcessCache({ procRoot });
    assert.equal(c.get(4400, hint).comm, 'hinted');
    assert.equal(c.stats().unresolved, 1);
  });

  test('an unresolved answer takes the hint each time (not cached)', () => {
    const c = new ProcessCache({ procRoot });
    assert.equal(c.get(GONE, { comm: 'a', ppid: 1, uid: 1 }).comm, 'a');
    assert.equal(c.get(GONE, { comm: 'b', ppid: 2, uid: 2 }).comm, 'b');
  });
});

describe('maxEntries', () => {
  test('evicts the longest-exited entry before older live ones', () => {
    const c = new ProcessCache({ procRoot, maxEntries: 3 });
    c.onExec(exec(GONE + 10, ['ten']));
    c.onExec(exec(GONE + 11, ['eleven']));
    c.onExec(exec(GONE + 12, ['twelve']));
    c.onExit(task('exit', GONE + 12), 1);
    c.onExit(task('exit', GONE + 11), 2);
    c.onExec(exec(GONE + 13, ['thirteen']));
    assert.deepEqual(c.stats(), { size: 3, hits: 0, procfsReads: 0, unresolved: 0, evicted: 1, cmdTruncated: 0 });
    assert.equal(c.get(GONE + 10, hint).cmd, 'ten'); // older, but live
    assert.equal(c.get(GONE + 12, hint).cmd, ''); // the longest exited went
    assert.equal(c.get(GONE + 11, hint).cmd, 'eleven');
    assert.equal(c.get(GONE + 13, hint).cmd, 'thirteen');
  });

  test('with no exited entry, the oldest goes', () => {
    const c = new ProcessCache({ procRoot, maxEntries: 2 });
    c.onExec(exec(GONE + 1, ['one']));
    c.onExec(exec(GONE + 2, ['two']));
    c.onFork(task('fork', GONE + 3, { ppid: GONE + 2, comm: 'three' }));
    assert.deepEqual(c.stats(), { size: 2, hits: 0, procfsReads: 0, unresolved: 0, evicted: 1, cmdTruncated: 0 });
    assert.equal(c.get(GONE + 1, hint).cmd, '');
    assert.equal(c.get(GONE + 2, hint).cmd, 'two');
    assert.equal(c.get(GONE + 3, hint).cmd, 'two');
  });

  test('re-setting a known pid does not evict, and makes it the newest', () => {
    const c = new ProcessCache({ procRoot, maxEntries: 2 });
    c.onExec(exec(GONE + 1, ['one']));
    c.onExec(exec(GONE + 2, ['two']));
    c.onExec(exec(GONE + 1, ['one-again']));
    assert.equal(c.stats().evicted, 0);
    c.onExec(exec(GONE + 3, ['three']));
    assert.equal(c.stats().evicted, 1);
    assert.equal(c.get(GONE + 2, hint).cmd, ''); // now the oldest
    assert.equal(c.get(GONE + 1, hint).cmd, 'one-again');
  });

  test('a procfs read on a miss counts against the cap too', () => {
    const c = new ProcessCache({ procRoot, maxEntries: 1 });
    c.get(4300, hint);
    c.get(4301, hint);
    assert.deepEqual(c.stats(), { size: 1, hits: 0, procfsReads: 2, unresolved: 0, evicted: 1, cmdTruncated: 0 });
  });
});
