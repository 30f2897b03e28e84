/**
 * Writes to a file descriptor (stdout) with write(2) on this thread, one
 * chunk at a time and in order, instead of through process.stdout's
 * stream. A pipe or socket is in non-blocking mode, so a write never waits
 * for the reader; a file or /dev/null does not make it wait long. (The
 * thread pool's fs.write, tried first, cost a thread hop per chunk and
 * about 6 MiB of RSS for the pool's threads.)
 *
 * Why: when stdout is a pipe or a socket, Node writes it through a
 * non-blocking libuv stream. Under a burst larger than the reader's buffer
 * (the agent starting on a busy node), that stream was seen to stop for good
 * here (Node 20.20, libuv 1.46): a write in flight, megabytes queued behind
 * it, the descriptor in no epoll set of the process, the socket empty and
 * the reader waiting; the agent then dropped every later event as if the
 * reader had stalled, and could not finish its last writes at exit. A write
 * here either completes, fails, or (a non-blocking descriptor whose reader
 * is behind: EAGAIN) is tried again a little later, so the sink's own
 * bound and counters (max_buffer, dropped) decide what a slow reader costs.
 */
import { fstatSync, writeSync } from 'node:fs';

type Callback = (err?: Error | null) => void;

/** After EAGAIN (the reader is behind), the first retry comes after this many ms, doubling to RETRY_MAX_MS. */
const RETRY_MS = 1;
const RETRY_MAX_MS = 50;

export class FdStream {
  private readonly queue: { chunk: Uint8Array; cb: Callback }[] = [];
  private head = 0;
  private busy = false;
  private failed: NodeJS.ErrnoException | undefined;
  private readonly errorListeners: ((err: NodeJS.ErrnoException) => void)[] = [];
  private retryMs = RETRY_MS;

  constructor(readonly fd: number) {
    // a pipe or socket must not block this thread when its reader is slow:
    // Node's own handle for fd 1 (made on first use of process.stdout) puts
    // it in non-blocking mode; nothing is written through that handle
    if (fd === 1) {
      const st = fstatSync(fd);
      if (st.isFIFO() || st.isSocket()) void process.stdout;
    }
  }

  /** Queues a chunk; `cb` runs once all of it was written, or with the error that ended the stream. The chunk must not change until then. */
  write(chunk: Uint8Array, cb: Callback): boolean {
    if (this.failed) {
      const err = this.failed;
      queueMicrotask(() => cb(err));
      return false;
    }
    this.queue.push({ chunk, cb });
    if (!this.busy) this.next(0);
    return true;
  }

  /** Only 'error' is emitted: once, when a write fails for good (EPIPE: the reader went away). */
  on(event: 'error', listener: (err: NodeJS.ErrnoException) => void): this {
    if (event === 'error') this.errorListeners.push(listener);
    return this;
  }

  /** Chunks queued or being written. */
  get pending(): number {
    return this.queue.length - this.head;
  }

  private next(offset: number): void {
    // every chunk written that can be without waiting, synchronously: the
    // descriptor is non-blocking (a pipe or socket) or never waits long (a
    // file, /dev/null, a terminal)
    for (;;) {
      const item = this.queue[this.head];
      if (item === undefined) {
        this.busy = false;
        this.queue.length = 0;
        this.head = 0;
        return;
      }
      this.busy = true;
      const { chunk } = item;
      let n: number;
      try {
        n = writeSync(this.fd, chunk, offset, chunk.length - offset);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EAGAIN' || err.code === 'EWOULDBLOCK' || err.code === 'EINTR') {
          // the reader is behind: try again shortly, backing off while it stays behind
          const delay = this.retryMs;
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
          const at = offset;
          setTimeout(() => this.next(at), delay);
          return;
        }
        this.fail(err);
        return;
      }
      this.retryMs = RETRY_MS;
      if (offset + n < chunk.length) {
        offset += n;
        continue;
      }
      offset = 0;
      this.queue[this.head++] = undefined as unknown as { chunk: Uint8Array; cb: Callback };
      // a reader that stays behind keeps the queue from emptying: drop what is done now and then
      if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      item.cb();
    }
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.failed = err;
    this.busy = false;
    const rest = this.queue.slice(this.head);
    this.queue.length = 0;
    this.head = 0;
    for (const l of this.errorListeners) l(err);
    for (const r of rest) r.cb(err);
  }
}
