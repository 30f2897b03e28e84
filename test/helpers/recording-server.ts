/**
 * An HTTP endpoint on 127.0.0.1 for the delivery tests: records when each
 * request arrived (monotonic ms) and what it carried, and
 * answers as `reply` says: a status (with headers and a body), or a reset
 * (the socket destroyed without an answer). stop() and start() again keep
 * the port, so "the endpoint is down" is a refused connection.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface Arrival {
  /** performance.now() when the request's headers had been read */
  at: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'reset';

export class RecordingServer {
  readonly arrivals: Arrival[] = [];
  /** the answer to the n-th request (1-based); may hold it by returning a promise */
  reply: (a: Arrival, n: number) => Reply | Promise<Reply> = () => ({ status: 200 });
  port = 0;
  private server: Server | undefined;

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      // taken as early as the server can: gaps between arrivals are what the tests measure
      const at = performance.now();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const a: Arrival = { at, headers: req.headers, body: Buffer.concat(chunks) };
        this.arrivals.push(a);
        void Promise.resolve(this.reply(a, this.arrivals.length)).then((r) => {
          if (res.destroyed) return;
          if (r === 'reset') req.socket.destroy();
          else res.writeHead(r.status, r.headers).end(r.body);
        });
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const a = server.address();
    this.port = typeof a === 'object' && a ? a.port : 0;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((r) => {
      s.close(() => r());
      s.closeAllConnections();
    });
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  url(path: string): URL {
    return new URL(`http://127.0.0.1:${this.port}${path}`);
  }

  /** Gaps between successive arrivals, in ms. */
  gaps(from = 0): number[] {
    const at = this.arrivals.slice(from).map((a) => a.at);
    return at.slice(1).map((t, i) => t - (at[i] as number));
  }
}

/** Polls until check() holds; throws naming `what` after timeoutMs. */
export async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Each gap at least `ratio` times the one before it; returns the first that is not, as text, or undefined. */
export function shrinkingGap(gaps: readonly number[], ratio: number): string | undefined {
  for (let i = 1; i < gaps.length; i++) {
    const prev = gaps[i - 1] as number;
    const gap = gaps[i] as number;
    if (gap < ratio * prev) return `gap ${i} is ${gap.toFixed(1)} ms after ${prev.toFixed(1)} ms (gaps: ${gaps.map((g) => g.toFixed(0)).join(', ')})`;
  }
  return undefined;
}
