/**
 * Credentials: the secret set and its scrubbing, command-line masking in
 * each --cmdline mode, credentials from files and the environment for every
 * sink that takes one, the logger, and text lines that no workload can forge.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/config/errors.js';
import { secrets, Secrets } from '../../src/config/secrets.js';
import { commandLine, formatCmdline, MAX_CMD_CHARS, maskArgs } from '../../src/metadata/cmdline.js';
import { ProcessCache } from '../../src/metadata/process-cache.js';
import { parseSinkSpecs } from '../../src/sinks/index.js';
import type { NewRelicOptions } from '../../src/sinks/newrelic.js';
import type { PrometheusSinkOptions } from '../../src/sinks/prometheus/sink.js';
import { quoteText, textWord, toTextLine } from '../../src/sinks/stdout.js';
import { createLogger } from '../../src/util/log.js';
import { sampleEvent } from '../helpers/events.js';
import { tempDir } from '../helpers/tmp.js';

const parse = (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const config = parseConfig([...args, '--node-name', 'n1'], env);
  return { config, sinks: parseSinkSpecs(config.sinks, config.credentials) };
};

describe('Secrets', () => {
  test('scrubs every form a credential takes, the longest first', () => {
    const s = new Secrets();
    s.add('abc');
    s.add('abc,def');
    s.add('');
    s.add(undefined);
    assert.equal(s.scrub('x abc y abc,def z abc\\,def'), 'x *** y *** z ***');
    assert.equal(s.size, 3);
  });
});

describe('command lines', () => {
  const cases: [string, string[], string][] = [
    ['--opt=value', ['app', '--password=hunter2', '--db-password=x', '--api-key=k1', '--user=bob'], 'app --password=*** --db-password=*** --api-key=*** --user=bob'],
    ['--opt value', ['app', '--token', 't0k', '--auth-token', 't1', '--verbose', '--secret', '--next'], 'app --token *** --auth-token *** --verbose --secret --next'],
    ['files are not secrets', ['app', '--password-file', '/run/pw', '--token-file=/run/t'], 'app --password-file /run/pw --token-file=/run/t'],
    ['mysql -p', ['/usr/bin/mysql', '-uroot', '-psekrit', '-P', '3306', '-h', 'db'], '/usr/bin/mysql -uroot -p*** -P 3306 -h db'],
    ['mysql -p prompts', ['mysql', '-p', 'shop'], 'mysql -p shop'],
    ['-p is not a password elsewhere', ['ssh', '-p2222', 'host'], 'ssh -p2222 host'],
    ['sshpass', ['sshpass', '-p', 'pw', 'ssh', 'host'], 'sshpass -p *** ssh host'],
    ['URL user:password@', ['curl', 'https://bob:pa55@example.com/x', 'redis://:only@127.0.0.1:6379'], 'curl https://bob:***@example.com/x redis://:***@127.0.0.1:6379'],
    ['assignments', ['env', 'AWS_SECRET_ACCESS_KEY=abc', 'GITHUB_TOKEN=ghp_x', 'PASSWORD=p', 'MONKEY=banana', 'HOME=/root', 'app'], 'env AWS_SECRET_ACCESS_KEY=*** GITHUB_TOKEN=*** PASSWORD=*** MONKEY=banana HOME=/root app'],
    ['docker -e', ['docker', 'run', '-e', 'DB_PASSWORD=x', '--env=API_TOKEN=y', 'img'], 'docker run -e DB_PASSWORD=*** --env=API_TOKEN=*** img'],
    ['headers', ['curl', '-H', 'Authorization: Bearer abc', '-H', 'X-Api-Key: k', '-H', 'Accept: */*'], 'curl -H Authorization: *** -H X-Api-Key: *** -H Accept: */*'],
  ];
  for (const [name, argv, want] of cases) {
    test(`redacted: ${name}`, () => assert.equal(maskArgs(argv).join(' '), want));
  }

  test('full shows them, none shows nothing, and convis\'s own credentials go in every mode', () => {
    secrets.add('own-insert-key-123');
    const argv = ['convis', '--sink', 'newrelic,account=1,key=own-insert-key-123', '--password=hunter2'];
    assert.equal(formatCmdline(argv, 'full'), 'convis --sink newrelic,account=1,key=*** --password=hunter2');
    assert.equal(formatCmdline(argv, 'redacted'), 'convis --sink newrelic,account=1,key=*** --password=***');
    assert.equal(formatCmdline(argv, 'none'), '');
  });

  test('the process cache reports command lines as --cmdline says', () => {
    const root = tempDir('convis-proc-');
    const dir = join(root, '4242');
    writeFileSync(join(root, 'placeholder'), '');
    for (const [mode, want] of [
      ['redacted', 'app --token ***'],
      ['full', 'app --token t0k'],
      ['none', ''],
    ] as const) {
      const cache = new ProcessCache({ procRoot: root, cmdline: mode });
      cache.onExec({ kind: 'exec', pid: 4242, tsSec: 0, tsNsec: 0, ppid: 1, uid: 0, cgroupId: 0, comm: 'app', filename: '/bin/app', argv: ['app', '--token', 't0k'], argsTruncated: false });
      assert.equal(cache.get(4242, { comm: 'app', ppid: 1, uid: 0 }).cmd, want, `${mode} (${dir})`);
    }
  });

  test('a command line is cut at 4096 characters after masking (no half secret escapes), and the event says it was cut', () => {
    const argv = ['java', ...Array.from({ length: 800 }, (_, i) => `-Dp${i}=v`), '--password=hunter2-is-long'];
    const whole = commandLine(['java', '--password=hunter2'], 'redacted');
    assert.deepEqual(whole, { cmd: 'java --password=***', truncated: false });
    const cut = commandLine(argv, 'redacted');
    assert.equal(cut.truncated, true);
    assert.equal(cut.cmd.length, MAX_CMD_CHARS);
    assert.equal(cut.cmd, formatCmdline(argv, 'redacted').slice(0, MAX_CMD_CHARS));
    // a secret that straddles the cut: masked before cutting, so no prefix of it is left
    const straddle = ['app', 'x'.repeat(MAX_CMD_CHARS - 16), '--password=abcdefghijklmnop'];
    assert.doesNotMatch(commandLine(straddle, 'redacted').cmd, /abc/);
    // the process cache: from the kernel's record, and from procfs
    const root = tempDir('convis-proc-');
    const cache = new ProcessCache({ procRoot: root, cmdline: 'full' });
    cache.onExec({ kind: 'exec', pid: 4242, tsSec: 0, tsNsec: 0, ppid: 1, uid: 0, cgroupId: 0, comm: 'java', filename: '/bin/java', argv, argsTruncated: false });
    const info = cache.get(4242, { comm: 'java', ppid: 1, uid: 0 });
    assert.equal(info.cmd.length, MAX_CMD_CHARS);
    assert.equal(info.cmdTruncated, true);
    // argv the kernel cut at 512 bytes, of a process already gone: cut too
    cache.onExec({ kind: 'exec', pid: 4243, tsSec: 0, tsNsec: 0, ppid: 1, uid: 0, cgroupId: 0, comm: 'sh', filename: '/bin/sh', argv: ['sh', '-c', 'x'], argsTruncated: true });
    assert.equal(cache.get(4243, { comm: 'sh', ppid: 1, uid: 0 }).cmdTruncated, true);
    mkdirSync(join(root, '4244'));
    writeFileSync(join(root, '4244', 'stat'), '4244 (java) S 1 4244 4244 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0');
    writeFileSync(join(root, '4244', 'cmdline'), `${argv.join('\0')}\0`);
    const read = cache.get(4244, { comm: 'java', ppid: 1, uid: 0 });
    assert.equal(read.cmd.length, MAX_CMD_CHARS);
    assert.equal(read.cmdTruncated, true);
    assert.equal(cache.stats().cmdTruncated, 3);
    // a short one is not marked
    cache.onExec({ kind: 'exec', pid: 4245, tsSec: 0, tsNsec: 0, ppid: 1, uid: 0, cgroupId: 0, comm: 'ls', filename: '/bin/ls', argv: ['ls'], argsTruncated: false });
    assert.equal('cmdTruncated' in cache.get(4245, { comm: 'ls', ppid: 1, uid: 0 }), false);
  });

  test('--cmdline takes full, redacted or none; redacted by default', () => {
    assert.equal(parse([]).config.cmdline, 'redacted');
    assert.equal(parse(['--cmdline', 'none']).config.cmdline, 'none');
    assert.throws(() => parse(['--cmdline', 'some']), (e: Error) => e instanceof ConfigError && /--cmdline must be full, redacted or none/.test(e.message));
  });
});

describe('credentials from files and the environment', () => {
  const dir = tempDir('convis-cred-');
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  test('newrelic: key=, key_file= or $CONVIS_NEWRELIC_KEY, and never two at once', () => {
    const fromFile = parse(['--sink', `newrelic,account=1,key_file=${file('nr', 'nr-file-key-1\n')}`]).sinks[0]!.parsed as NewRelicOptions;
    assert.equal(fromFile.key, 'nr-file-key-1');
    const fromEnv = parse(['--sink', 'newrelic,account=1'], { CONVIS_NEWRELIC_KEY: 'nr-env-key-2' }).sinks[0]!.parsed as NewRelicOptions;
    assert.equal(fromEnv.key, 'nr-env-key-2');
    const given = parse(['--sink', 'newrelic,account=1,key=nr-arg-key-3'], { CONVIS_NEWRELIC_KEY: 'nr-env-key-2' }).sinks[0]!.parsed as NewRelicOptions;
    assert.equal(given.key, 'nr-arg-key-3');
    assert.throws(() => parse(['--sink', `newrelic,account=1,key=nr-excl-key-a,key_file=${file('nr2', 'nr-excl-key-b')}`]), /key and key_file exclude each other/);
    assert.throws(() => parse(['--sink', 'newrelic,account=1']), /key= is required/);
    assert.throws(() => parse(['--sink', `newrelic,account=1,key_file=${join(dir, 'missing')}`]), /key_file ".*missing" cannot be read \(ENOENT\)/);
    assert.throws(() => parse(['--sink', `newrelic,account=1,key_file=${file('empty', '\n')}`]), /key_file ".*empty" is empty/);
    for (const v of ['nr-file-key-1', 'nr-env-key-2', 'nr-arg-key-3']) assert.equal(secrets.scrub(`x${v}x`), 'x***x', v);
  });

  test('prometheus: password_file=, $CONVIS_PROMETHEUS_PASSWORD and header_file.<name>=', () => {
    const endpoint = 'endpoint=http://127.0.0.1:9090/api/v1/write';
    const p1 = parse(['--sink', `prometheus,${endpoint},username=u,password_file=${file('pw', 'pw-file-1\n')},header_file.X-Scope-OrgID=${file('h', 'tenant-hdr-1\n')}`]).sinks[0]!.parsed as PrometheusSinkOptions;
    assert.equal(p1.password, 'pw-file-1');
    assert.deepEqual(p1.headers, { 'X-Scope-OrgID': 'tenant-hdr-1' });
    const p2 = parse(['--sink', `prometheus,${endpoint},username=u`], { CONVIS_PROMETHEUS_PASSWORD: 'pw-env-2' }).sinks[0]!.parsed as PrometheusSinkOptions;
    assert.equal(p2.password, 'pw-env-2');
    // the environment's password goes only with a username
    const p3 = parse(['--sink', `prometheus,${endpoint}`], { CONVIS_PROMETHEUS_PASSWORD: 'pw-env-2' }).sinks[0]!.parsed as PrometheusSinkOptions;
    assert.equal(p3.password, undefined);
    assert.throws(() => parse(['--sink', `prometheus,${endpoint},username=u,password=pw-excl-a,password_file=${file('pw2', 'pw-excl-b')}`]), /password and password_file exclude each other/);
    assert.throws(() => parse(['--sink', `prometheus,${endpoint},header.X-A=hdr-dup-value-1,header_file.x-a=${file('h2', 'hdr-dup-value-2')}`]), /header x-a is given twice/);
    for (const v of ['pw-file-1', 'tenant-hdr-1', 'pw-env-2']) assert.equal(secrets.scrub(`x${v}x`), 'x***x', v);
  });

  test('an error about a sink names no credential, and the logger scrubs whatever it is given', () => {
    let message = '';
    try {
      parse(['--sink', 'newrelic,account=abc,key=err-key-4']);
    } catch (e) {
      message = (e as Error).message;
    }
    assert.match(message, /account must be the numeric/);
    assert.doesNotMatch(message, /err-key-4/);
    const lines: string[] = [];
    createLogger(true, (l) => lines.push(l)).info('request failed: key err-key-4 rejected');
    assert.deepEqual(lines, ['convis: request failed: key *** rejected\n']);
  });
});

describe('text lines from outside strings', () => {
  test('control characters, C1 escapes, separators and bidi overrides are escaped', () => {
    assert.equal(quoteText('a\nb\u001b[31m\u009b\u2028\u202e'), '"a\\nb\\u001b[31m\\u009b\\u2028\\u202e"');
    assert.equal(textWord('web-0'), 'web-0');
    assert.equal(textWord('shop/web-0'), 'shop/web-0');
    assert.equal(textWord('x pid=1'), '"x pid=1"');
  });

  test('a container, pod or command line cannot forge a line or a field', () => {
    const e = sampleEvent('connect', {
      container: { id: 'c'.repeat(64), name: 'evil\n2026-01-01T00:00:00Z connect', image: 'i', runtime: 'docker' },
      pod: { name: 'p pid=1', namespace: 'ns', uid: 'u' },
      remotePod: { name: 'r\u001b]0;x\u0007', namespace: 'ns' },
    });
    const line = toTextLine(e);
    assert.doesNotMatch(line, /[\n\u0000-\u001f\u007f-\u009f]/);
    assert.match(line, / container="evil\\n2026-01-01T00:00:00Z connect" /);
    assert.match(line, / pod="ns\/p pid=1" /);
    assert.match(line, / remote_pod="ns\/r\\u001b\]0;x\\u0007"/);
  });
});
