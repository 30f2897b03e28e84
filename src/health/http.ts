/**
 * /healthz and /readyz over HTTP: answered on the metrics listener, or on
 * their own (--health-listen) when no metrics sink is configured.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ConfigError } from '../config/errors.js';
import type { Logger } from '../util/log.js';
import type { Health } from './health.js';

export const HEALTH_PATHS = ['/healthz', '/readyz'];

/** Answers a health path (200 "ok", or 503 with one reason a line); false for any other path. */
export function answerHealth(path: string, req: IncomingMessage, res: ServerResponse, health: Health): boolean {
  if (!HEALTH_PATHS.includes(path)) return false;
  const state = path === '/healthz' ? health.live() : health.ready();
  const body = state.ok ? 'ok\n' : `${state.reasons.join('\n')}\n`;
  res.writeHead(state.ok ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}

/** Its own listener for /healthz and /readyz (--health-listen). */
export class HealthServer {
  private constructor(private readonly server: Server) {}

  static async start(options: { host: string; port: number }, health: Health, log?: Logger): Promise<HealthServer> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0] ?? '';
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (!answerHealth(path, req, res, health)) res.writeHead(404, { 'content-type': 'text/plain' }).end('convis serves /healthz and /readyz here\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new ConfigError(`--health-listen: cannot listen on ${options.host}:${options.port} (${e.code ?? e.message})`)),
      );
      server.listen(options.port, options.host, () => resolve());
    });
    const a = server.address();
    if (typeof a === 'object' && a) log?.info(`health: listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
    return new HealthServer(server);
  }

  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
