/**
 * procfs parsing against a fixture tree shaped like a real /proc
 * (test/fixtures/proc): numeric pid directories with stat, status, cmdline
 * and an exe symlink, plus the non-process entries a real /proc has.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { listPids, parseCmdline, parseStat, parseStatusUid, readProcess, type ProcessInfo } from '../../src/metadata/proc.js';
import { repoRoot } from '../helpers/paths.js';

const procRoot = join(repoRoot, 'test/fixtures/proc');

// the shape of this machine's /proc/self/stat after the comm field
const STAT_TAIL =
  '34816 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 485294 3133440 383 18446744073709551615 94328163119104 ' +
  '94328163138985 140732394781456 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94328163154992 94328163156608 ' +
  '94328498163712 140732394789594 140732394789614 140732394789614 140732394790891 0\n';

describe('parseStat', () => {
  const cases: { name: string; text: string; want: { comm: string; ppid: number } }[] = [
    { name: 'plain comm', text: `7305 (cat) R 7302 7302 6952 ${STAT_TAIL}`, want: { comm: 'cat', ppid: 7302 } },
    { name: 'comm with spaces', text: `10 (tmux: server) S 1 10 10 ${STAT_TAIL}`, want: { comm: 'tmux: server', ppid: 1 } },
    {
      name: 'comm with spaces and nested parentheses',
      text: `11 (my (weird) name) S 4242 11 11 ${STAT_TAIL}`,
      want: { comm: 'my (weird) name', ppid: 4242 },
    },
    {
      // a comm that imitates the fields after it: only the last ')' ends it
      name: 'comm that looks like "x) R 7 (y"',
      text: `12 (x) R 7 (y) S 99 12 12 ${STAT_TAIL}`,
      want: { comm: 'x) R 7 (y', ppid: 99 },
    },
    { name: 'comm that is only ")"', text: `13 ()) S 5 13 13 ${STAT_TAIL}`, want: { comm: ')', ppid: 5 } },
    { name: 'empty comm', text: `14 () S 6 14 14 ${STAT_TAIL}`, want: { comm: '', ppid: 6 } },
    {
      name: 'kernel thread (ppid 0)',
      text: '2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n',
      want: { comm: 'kthreadd', ppid: 0 },
    },
    { name: 'without trailing newline', text: '15 (sh) S 77 15 15', want: { comm: 'sh', ppid: 77 } },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(parseStat(c.text), c.want);
    });
  }

  const malformed: { name: string; text: string }[] = [
    { name: 'empty', text: '' },
    { name: 'no parentheses', text: '7305 cat R 7302 7302' },
    { name: 'no closing parenthesis', text: '7305 (cat R 7302 7302' },
    { name: 'closing before opening', text: '7305 )cat( R 7302' },
    { name: 'truncated after state', text: '4400 (defunct) Z\n' },
    { name: 'truncated after comm', text: '4400 (defunct)' },
    { name: 'non-numeric ppid', text: '7305 (cat) R abc 7302' },
    { name: 'fractional ppid', text: '7305 (cat) R 1.5 7302' },
  ];
  for (const c of malformed) {
    test(`malformed: ${c.name} -> undefined`, () => {
      assert.equal(parseStat(c.text), undefined);
    });
  }

  test('this machine\'s /proc/self/stat', () => {
    const got = parseStat(readFileSync('/proc/self/stat', 'utf8'));
    assert.ok(got);
    assert.equal(got.ppid, process.ppid);
    assert.equal(got.comm, readFileSync('/proc/self/comm', 'utf8').trimEnd());
  });
});

describe('parseStatusUid', () => {
  const status = (uidLine: string) =>
    `Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t7306\nNgid:\t0\nPid:\t7306\nPPid:\t7302\nTracerPid:\t0\n` +
    `${uidLine}\nGid:\t0\t0\t0\t0\nFDSize:\t256\nGroups:\t \nNStgid:\t7306\n`;
  const cases: { name: string; text: string; want: number | undefined }[] = [
    { name: 'root', text: status('Uid:\t0\t0\t0\t0'), want: 0 },
    { name: 'ordinary user', text: status('Uid:\t1000\t1000\t1000\t1000'), want: 1000 },
    { name: 'setuid: real uid, not effective', text: status('Uid:\t1001\t0\t0\t0'), want: 1001 },
    { name: 'large uid (user namespace range)', text: status('Uid:\t165536\t165536\t165536\t165536'), want: 165536 },
    { name: 'no Uid line', text: 'Name:\tcat\nPid:\t7306\n', want: undefined },
    { name: 'empty', text: '', want: undefined },
    // "Uid" must start a line: another field ending in Uid does not count
    { name: 'only a field that contains Uid', text: 'Name:\tcat\nNotUid:\t5\n', want: undefined },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(parseStatusUid(c.text), c.want);
    });
  }

  test('this machine\'s /proc/self/status', () => {
    assert.equal(parseStatusUid(readFileSync('/proc/self/status', 'utf8')), process.getuid?.());
  });
});

describe('parseCmdline', () => {
  const cases: { name: string; raw: Buffer | string; want: string[] }[] = [
    { name: 'NUL-terminated argv', raw: 'python3\0-c\0print(1)\0', want: ['python3', '-c', 'print(1)'] },
    { name: 'argument with spaces', raw: "python3\0-c\0print('a b')\0", want: ['python3', '-c', "print('a b')"] },
    { name: 'rewritten title without NUL', raw: 'nginx: worker process', want: ['nginx: worker process'] },
    { name: 'empty (kernel thread)', raw: '', want: [] },
    { name: 'empty argument kept', raw: 'prog\0\0last\0', want: ['prog', '', 'last'] },
    { name: 'one empty argv[0]', raw: '\0', want: [''] },
    { name: 'Buffer input', raw: Buffer.from('/bin/sh\0-c\0echo hi\0'), want: ['/bin/sh', '-c', 'echo hi'] },
    { name: 'UTF-8 Buffer input', raw: Buffer.from('echo\0grüße\0'), want: ['echo', 'grüße'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(parseCmdline(c.raw), c.want);
    });
  }
});

describe('readProcess on the fixture tree', () => {
  const cases: { name: string; pid: number; want: ProcessInfo }[] = [
    {
      name: 'init',
      pid: 1,
      want: { pid: 1, ppid: 0, uid: 0, comm: 'systemd', cmd: '/sbin/init splash', exe: '/usr/lib/systemd/systemd' },
    },
    {
      name: 'kernel thread: comm in brackets, no exe',
      pid: 2,
      want: { pid: 2, ppid: 0, uid: 0, comm: 'kthreadd', cmd: '[kthreadd]', exe: '' },
    },
    {
      name: 'comm with spaces and parentheses, argument with spaces',
      pid: 4242,
      want: { pid: 4242, ppid: 1, uid: 1000, comm: 'my (weird) name', cmd: "python3 -c print('a b')", exe: '/usr/bin/python3.12' },
    },
    {
      name: 'comm imitating the stat fields',
      pid: 4243,
      want: { pid: 4243, ppid: 4242, uid: 1000, comm: 'x) R 7 (y', cmd: '/tmp/x) R 7 (y', exe: '/tmp/x) R 7 (y' },
    },
    {
      name: 'exe link missing (another user), real uid of a setuid process',
      pid: 4300,
      want: { pid: 4300, ppid: 1, uid: 1001, comm: 'sleep', cmd: 'sleep infinity', exe: '' },
    },
    {
      name: 'cmdline rewritten without a NUL',
      pid: 4301,
      want: { pid: 4301, ppid: 1, uid: 33, comm: 'nginx', cmd: 'nginx: worker process', exe: '/usr/sbin/nginx' },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(readProcess(procRoot, c.pid), c.want);
    });
  }

  test('long command line is read whole', () => {
    const p = readProcess(procRoot, 5000);
    assert.ok(p);
    const raw = readFileSync(join(procRoot, '5000/cmdline'), 'utf8');
    assert.ok(raw.length > 512);
    assert.equal(p.cmd, raw.slice(0, -1).split('\0').join(' '));
    assert.match(p.cmd, /^java -Xmx512m -cp \/opt\/app\/lib\/dependency-000-1\.2\.3\.jar:.* com\.example\.Main --port 8080$/);
    assert.equal(p.exe, '/usr/lib/jvm/java-17-openjdk-amd64/bin/java');
  });

  test('pid directory that does not exist -> undefined', () => {
    assert.equal(readProcess(procRoot, 999999), undefined);
  });

  test('malformed stat -> undefined', () => {
    assert.equal(readProcess(procRoot, 4400), undefined);
  });

  test('proc root that does not exist -> undefined', () => {
    assert.equal(readProcess(join(procRoot, 'no-such-dir'), 1), undefined);
  });

  test('this process from the real /proc', () => {
    const p = readProcess('/proc', process.pid);
    assert.ok(p);
    assert.equal(p.pid, process.pid);
    assert.equal(p.ppid, process.ppid);
    assert.equal(p.uid, process.getuid?.());
    assert.equal(p.exe, process.execPath);
    assert.equal(p.cmd.split(' ')[0], process.argv0);
  });
});

describe('listPids', () => {
  test('numeric directories only, not self, thread-self, net, sys, uptime', () => {
    assert.deepEqual(
      listPids(procRoot).sort((a, b) => a - b),
      [1, 2, 4242, 4243, 4300, 4301, 4400, 5000],
    );
  });

  test('the real /proc includes this process and no NaN', () => {
    const pids = listPids('/proc');
    assert.ok(pids.includes(process.pid));
    assert.ok(pids.every((p) => Number.isInteger(p) && p > 0));
  });

  test('a proc root that does not exist throws ENOENT', () => {
    assert.throws(() => listPids(join(procRoot, 'no-such-dir')), { code: 'ENOENT' });
  });
});
