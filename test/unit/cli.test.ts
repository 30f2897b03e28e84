/**
 * The CLI's contract with a person at a terminal: bad input is one clear
 * line and a non-zero exit, never a stack trace. None of these need root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/paths.js';

const bin = join(repoRoot, 'bin/convis');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 });

function assertOneLineError(r: ReturnType<typeof run>, code: number, re: RegExp) {
  assert.equal(r.status, code, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0]!, /^convis: /);
  assert.match(lines[0]!, re);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(r.stdout, '');
}

test('--help lists the flags and the sinks with their keys', () => {
  const r = run('--help');
  assert.equal(r.status, 0);
  for (const s of ['--sink TYPE[,key=value]', '--node-name', '--btf', 'stdout', 'format=']) assert.ok(r.stdout.includes(s), s);
});

test('--version prints the package version', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const r = run('--version');
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), `convis ${pkg.version}`);
});

test('bad input: one line, exit 2', () => {
  const cases: [string[], RegExp][] = [
    [['--sink', 'kafka'], /unknown sink type "kafka"/],
    [['--sink', 'stdout,format'], /argument 1 must be key=value/],
    [['--sink', 'stdout,format=xml'], /format must be text or json/],
    [['--sink', 'stdout,format=json,format=text'], /format is given twice/],
    [['--frobnicate'], /Unknown option '--frobnicate'/],
    [['--sink', 'prometheus'], /endpoint/],
    [['--sink', 'prometheus,endpoint=not a url'], /endpoint/],
    [['--sink', 'prometheus,endpoint=ftp://h/x'], /http/],
    [['--sink', 'prometheus,endpoint=http://h:9090/api/v1/write,interval=soon'], /interval/],
    [['--sink', 'newrelic,account=1,key=k,region=MARS'], /region/],
    [['--sink', 'newrelic,account=1'], /key/],
    [['--sink', 'metrics'], /listen/],
    [['--ring-buffer-mib', '0'], /positive whole number/],
  ];
  for (const [args, re] of cases) assertOneLineError(run(...args), 2, re);
});

test('secrets in a bad sink spec never reach the error line or --help', () => {
  const secret = 'Sup3rS3cretV@lue';
  for (const spec of [
    `prometheus,endpoint=http://h:9090/api/v1/write,password=${secret}`, // password without username
    `prometheus,endpoint=http://h:9090/api/v1/write,username=u,password=${secret},interval=x`,
    `newrelic,account=12,key=${secret},region=nowhere`,
    `newrelic,account=notdigits,key=${secret}`,
    `prometheus,endpoint=http://h/,header.X-Scope-OrgID=${secret},bogus=1`,
  ]) {
    const r = run('--sink', spec);
    assert.equal(r.status, 2, r.stderr);
    assert.doesNotMatch(r.stderr, new RegExp(secret), spec);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1);
  }
  assert.doesNotMatch(run('--help').stdout, new RegExp(secret));
});

test('a DOCKER_HOST convis cannot use is one line, exit 2, with its password hidden', () => {
  const r = spawnSync(process.execPath, [bin], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, DOCKER_HOST: 'ssh://me:hunter2@build-host' } });
  assertOneLineError(r, 2, /Docker endpoint scheme ssh:\/\/ is not supported/);
  assert.doesNotMatch(r.stderr, /hunter2/);
});
