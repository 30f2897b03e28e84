/**
 * FdStream (what the stdout sink writes fd 1 with): against real pipes to a
 * real reader, a slow one (the descriptor is non-blocking: EAGAIN, retried)
 * and one that goes away (EPIPE: one error, every pending write told).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { FdStream } from '../../src/sinks/fd-stream.js';

/** The parent's end of a child's stdin pipe: non-blocking, as libuv leaves it. */
function pipeTo(script: string) {
  const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd;
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<string>((resolve) => child.on('close', () => resolve(out)));
  return { child, fd, exited };
}

test('a slow reader gets every byte, in order; each callback comes after its chunk and in order', async () => {
  // reads in small pieces with pauses: the 64 KiB pipe fills, writes get EAGAIN
  const { child, fd, exited } = pipeTo(
    'import sys, time, hashlib\nh = hashlib.sha256(); n = 0\nwhile True:\n    b = sys.stdin.buffer.read1(4096)\n    if not b: break\n    h.update(b); n += len(b)\n    if n % 65536 < 4096: time.sleep(0.002)\nprint(n, h.hexdigest())',
  );
  const s = new FdStream(fd);
  const want = createHash('sha256');
  let total = 0;
  const done: number[] = [];
  const all: Promise<void>[] = [];
  for (let i = 0; i < 200; i++) {
    const chunk = Buffer.alloc(1000 + ((i * 7919) % 30000), i % 251);
    want.update(chunk);
    total += chunk.length;
    all.push(new Promise((resolve, reject) => s.write(chunk, (err) => (err ? reject(err) : (done.push(i), resolve())))));
  }
  assert.ok(s.pending > 1, 'writes queue behind a slow reader');
  await Promise.all(all);
  assert.deepEqual(done, [...done].sort((a, b) => a - b), 'callbacks in order');
  child.stdin!.end();
  const [n, digest] = (await exited).trim().split(' ');
  assert.equal(Number(n), total);
  assert.equal(digest, want.digest('hex'));
});

test('a reader that goes away: one error (EPIPE), and every write still queued is told', async () => {
  // the reader closes its end and says so (still running: Node would close this end if it exited)
  const { child, fd } = pipeTo('import os, sys, time\nos.close(0)\nprint("closed", flush=True)\ntime.sleep(30)');
  await new Promise<void>((resolve) => child.stdout!.on('data', (d: string) => d.includes('closed') && resolve()));
  const s = new FdStream(fd);
  const errors: string[] = [];
  s.on('error', (e) => errors.push(e.code ?? '?'));
  const results = await Promise.all(
    Array.from({ length: 5 }, () => new Promise<string>((resolve) => s.write(Buffer.alloc(100_000), (err) => resolve(err ? ((err as NodeJS.ErrnoException).code ?? '?') : 'ok')))),
  );
  assert.deepEqual(errors, ['EPIPE']);
  assert.deepEqual(results, ['EPIPE', 'EPIPE', 'EPIPE', 'EPIPE', 'EPIPE']);
  // and later writes fail at once
  const late = await new Promise<string>((resolve) => s.write(Buffer.from('x'), (err) => resolve((err as NodeJS.ErrnoException | undefined)?.code ?? 'ok')));
  assert.equal(late, 'EPIPE');
  child.kill();
});
