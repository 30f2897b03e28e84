import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultNodeName, parseConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/config/errors.js';
import { parseSinkSpec } from '../../src/config/sink-spec.js';
import { parseSinkSpecs } from '../../src/sinks/index.js';
import { tempDir } from '../helpers/tmp.js';

test('good sink specs parse into type and options', () => {
  const cases: [string, string, Record<string, string>][] = [
    ['stdout', 'stdout', {}],
    ['stdout,format=json', 'stdout', { format: 'json' }],
    ['prometheus,endpoint=http://h:9090/api/v1/write,username=u,password=p=q', 'prometheus', {
      endpoint: 'http://h:9090/api/v1/write',
      username: 'u',
      password: 'p=q',
    }],
    ['newrelic,account=1,key=a\\,b', 'newrelic', { account: '1', key: 'a,b' }],
    ['stdout,format=', 'stdout', { format: '' }],
  ];
  for (const [spec, type, options] of cases) {
    const got = parseSinkSpec(spec);
    assert.equal(got.type, type, spec);
    assert.deepEqual({ ...got.options }, options, spec);
  }
});

test('malformed sink specs are one ConfigError that never echoes values', () => {
  const cases: [string, RegExp][] = [
    ['', /needs a type/],
    [',format=json', /needs a type/],
    ['Std Out', /lower-case word/],
    ['stdout,format', /argument 1 must be key=value/],
    ['stdout,=json', /argument 1 must be key=value/],
    ['prometheus,password=hunter2,password=x', /password is given twice/],
  ];
  for (const [spec, re] of cases) {
    assert.throws(() => parseSinkSpec(spec), (e: unknown) => {
      assert.ok(e instanceof ConfigError, spec);
      assert.match(e.message, re);
      assert.doesNotMatch(e.message, /hunter2/);
      assert.equal(e.message.includes('\n'), false);
      return true;
    });
  }
});

test('sink validation: unknown type, unknown key, bad format value', () => {
  const cases: [string, RegExp][] = [
    ['kafka,brokers=x', /unknown sink type "kafka" \(available: stdout, metrics/],
    ['stdout,colour=red', /unknown option "colour" \(known: format, max_buffer\)/],
    ['stdout,format=yaml', /format must be text or json/],
  ];
  for (const [spec, re] of cases) {
    assert.throws(() => parseSinkSpecs([parseSinkSpec(spec)]), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  }
  assert.doesNotThrow(() => parseSinkSpecs([parseSinkSpec('stdout,format=json'), parseSinkSpec('stdout')]));
});

test('config: defaults, repeated --sink, node name precedence', () => {
  const c = parseConfig([], {});
  assert.deepEqual(c.sinks.map((s) => s.type), ['stdout']);
  assert.equal(c.ringBytes, 8 << 20);
  assert.equal(c.procRoot, '/proc');
  assert.equal(parseConfig([], { NODE_NAME: 'n1' }).nodeName, 'n1');
  assert.equal(parseConfig(['--node-name', 'n2'], { NODE_NAME: 'n1' }).nodeName, 'n2');
  const two = parseConfig(['--sink', 'stdout', '--sink', 'stdout,format=json', '-v'], {});
  assert.deepEqual(two.sinks.map((s) => s.options.format ?? 'text'), ['text', 'json']);
  assert.equal(two.verbose, true);
  assert.equal(parseConfig(['--ring-buffer-mib', '64'], {}).ringBytes, 64 << 20);
  assert.equal(parseConfig(['--ring-buffer', '16KiB'], {}).ringBytes, 16 << 10);
  assert.equal(parseConfig(['--ring-buffer', '1GiB'], {}).ringBytes, 1 << 30);
  assert.equal(c.intervalMs, 10_000, 'updates every 10 s by default');
  for (const [text, ms] of [['1s', 1000], ['30', 30_000], ['1.5m', 90_000], ['2500ms', 2500], ['1h', 3_600_000]] as const) {
    assert.equal(parseConfig(['--interval', text], {}).intervalMs, ms, text);
  }
});

test('config: bad flags are one ConfigError', () => {
  const cases: [string[], RegExp][] = [
    [['--bogus'], /Unknown option '--bogus'/],
    [['extra'], /positional argument/],
    [['--ring-buffer-mib', '3'], /power of two/],
    [['--ring-buffer', '3KiB'], /power of two from 4KiB to 1GiB/],
    [['--ring-buffer', '2GiB'], /power of two from 4KiB to 1GiB/],
    [['--ring-buffer', 'lots'], /power of two from 4KiB to 1GiB/],
    [['--ring-buffer', '64KiB', '--ring-buffer-mib', '1'], /not both/],
    [['--ring-buffer-mib', 'lots'], /positive whole number/],
    [['--node-name', ' '], /must not be empty/],
    [['--sink'], /argument missing/],
    [['--interval', '500ms'], /between 1s and 1h/],
    [['--interval', '2h'], /between 1s and 1h/],
    [['--interval', 'often'], /duration such as 10s/],
    [['--interval=-5s'], /duration such as 10s/],
  ];
  for (const [argv, re] of cases) {
    assert.throws(() => parseConfig(argv, {}), (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n'), argv.join(' '));
  }
});

test('default node name: the host\'s /etc/hostname when pid 1 (else pid 2) is in another UTS namespace, else our own', () => {
  const proc = tempDir('convis-proc-');
  mkdirSync(join(proc, 'self/ns'), { recursive: true });
  mkdirSync(join(proc, '1/ns'), { recursive: true });
  mkdirSync(join(proc, '1/root/etc'), { recursive: true });
  writeFileSync(join(proc, '1/root/etc/hostname'), 'node-7\n');
  symlinkSync('uts:[4026532001]', join(proc, 'self/ns/uts'));
  symlinkSync('uts:[4026531838]', join(proc, '1/ns/uts'));
  assert.equal(defaultNodeName(proc, () => 'container-abc'), 'node-7');
  // same namespace: our own host name is the node's
  const same = tempDir('convis-proc-');
  mkdirSync(join(same, 'self/ns'), { recursive: true });
  mkdirSync(join(same, '1/ns'), { recursive: true });
  symlinkSync('uts:[4026531838]', join(same, 'self/ns/uts'));
  symlinkSync('uts:[4026531838]', join(same, '1/ns/uts'));
  assert.equal(defaultNodeName(same, () => 'host-1'), 'host-1');
  // pid 1 not visible (no host pid namespace, or not allowed)
  assert.equal(defaultNodeName(join(same, 'nope'), () => 'host-2'), 'host-2');
  assert.equal(parseConfig(['--proc-root', proc], {}).nodeName, 'node-7');
  // pid 1 cannot be looked at (its links unreadable): pid 2, kthreadd, names the host
  const init = tempDir('convis-proc-');
  mkdirSync(join(init, 'self/ns'), { recursive: true });
  mkdirSync(join(init, '1'), { recursive: true });
  mkdirSync(join(init, '2/ns'), { recursive: true });
  mkdirSync(join(init, '2/root/etc'), { recursive: true });
  writeFileSync(join(init, '2/root/etc/hostname'), 'node-8\n');
  symlinkSync('uts:[4026532001]', join(init, 'self/ns/uts'));
  symlinkSync('uts:[4026531838]', join(init, '2/ns/uts'));
  assert.equal(defaultNodeName(init, () => 'container-abc'), 'node-8');
});

test('sinks say whether they read the metrics and whether they show events (metrics-only agents skip per-event work such as DNS names)', () => {
  const kinds = parseSinkSpecs(
    ['stdout', 'metrics,listen=:9400', 'prometheus,endpoint=http://127.0.0.1:9090/api/v1/write', 'newrelic,account=1,key=k', 'flowlog,path=/tmp/x.db'].map(parseSinkSpec),
  ).map((p) => [p.type, p.metrics, p.events]);
  assert.deepEqual(kinds, [
    ['stdout', false, true],
    ['metrics', true, false],
    ['prometheus', true, false],
    ['newrelic', false, true],
    ['flowlog', false, true],
  ]);
});
