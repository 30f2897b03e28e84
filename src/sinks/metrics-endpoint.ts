/**
 * metrics sink: serves /metrics in the Prometheus text format from the one
 * registry (the same numbers remote write sends), for Prometheus to scrape,
 * and the agent's /healthz and /readyz.
 */
import { createServer, type Server } from 'node:http';
import { renderText } from '../aggregate/registry.js';
import type { MetricsSource } from '../aggregate/metrics.js';
import type { Logger } from '../util/log.js';
import type { Sink, SinkStats } from './sink.js';
import { parseListenAddress, type ListenAddress } from '../config/listen.js';
import { ConfigError } from '../config/errors.js';
import { answerHealth } from '../health/http.js';
import type { Health } from '../health/health.js';

export type MetricsEndpointOptions = ListenAddress;

/** listen=HOST:PORT, [V6]:PORT, or :PORT for every address. */
export const parseListen = (text: string): MetricsEndpointOptions => parseListenAddress(text, '--sink metrics: listen');

export class MetricsEndpoint implements Sink {
  readonly name = 'metrics';
  private readonly server: Server;
  private readonly counters: SinkStats = { sent: 0, dropped: 0 };
  private scrapes = 0;

  private constructor(server: Server) {
    this.server = server;
  }

  /** Listens before it returns, so a taken port is an error at start-up. */
  static async start(options: MetricsEndpointOptions, source: MetricsSource, log?: Logger, health?: Health): Promise<MetricsEndpoint> {
    let endpoint: MetricsEndpoint | undefined;
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (health && answerHealth(path ?? '', req, res, health)) return;
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`convis serves /metrics${health ? ', /healthz and /readyz' : ''}\n`);
        return;
      }
      const families = source.collect();
      const body = renderText(families);
      if (endpoint) {
        endpoint.scrapes++;
        endpoint.counters.sent += families.reduce((n, f) => n + f.samples.length, 0);
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new ConfigError(`--sink metrics: cannot listen on ${options.host}:${options.port} (${e.code ?? e.message})`)),
      );
      server.listen(options.port, options.host, () => resolve());
    });
    endpoint = new MetricsEndpoint(server);
    const a = server.address();
    if (typeof a === 'object' && a) log?.info(`metrics: listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
    return endpoint;
  }

  /** The port it listens on (useful with :0). */
  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  write(): void {
    // reads the registry when scraped; events reach it through the flow table
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  stats(): SinkStats {
    return { ...this.counters };
  }
}
