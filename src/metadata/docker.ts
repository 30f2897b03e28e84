/**
 * A Docker Engine API client: container metadata from dockerd, or from
 * podman's Docker-compatible API service, over a unix socket or plain TCP.
 *
 * Paths are unversioned, so the daemon answers in its own API version:
 * dockerd 20.10 (1.41) and podman 4.3 accept both forms, but Docker 29
 * rejects anything older than 1.44, and the few fields read here (Id, Name,
 * Config.Image, Config.Labels) have not changed across versions.
 */
import http from 'node:http';

import {
  containerName,
  podFromLabels,
  RuntimeUnavailableError,
  type ContainerInfo,
  type RuntimeClient,
} from './container.js';

export type DockerRuntimeName = 'docker' | 'podman';

export interface DockerClientOptions {
  /** unix:///path, /path, tcp://host:port or http://host:port */
  endpoint: string;
  runtime: DockerRuntimeName;
  /** bound on each request, from queueing for a socket to the last body byte (default 2000) */
  timeoutMs?: number;
}

/** Where a Docker endpoint string points. */
export interface DockerEndpoint {
  socketPath?: string;
  host?: string;
  port?: number;
  /** a path prefix for tcp/http endpoints ('' for none) */
  basePath: string;
  /** the endpoint for logs and errors, without credentials */
  display: string;
}

export const DOCKER_DEFAULT_ENDPOINT = 'unix:///var/run/docker.sock';
export const PODMAN_DEFAULT_ENDPOINT = 'unix:///run/podman/podman.sock';

const DEFAULT_TIMEOUT_MS = 2000;
const MAX_SOCKETS = 4;
/** idle keep-alive sockets are closed after this */
const IDLE_SOCKET_MS = 15_000;
/** an inspect answer is tens of KiB; anything this large is not one */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const DOCKER_TCP_PORT = 2375;

/**
 * Parses a Docker endpoint string. Throws a one-line TypeError for anything
 * else (ssh://, https://, npipe://, relative paths, empty strings).
 */
export function parseDockerEndpoint(endpoint: string): DockerEndpoint {
  if (typeof endpoint !== 'string' || endpoint.trim() === '') {
    throw new TypeError('Docker endpoint is empty (expected unix:///path, tcp://host:port or http://host:port)');
  }
  const s = endpoint.trim();
  if (s.startsWith('/')) return { socketPath: s, basePath: '', display: `unix://${s}` };
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(s)?.[1]?.toLowerCase();
  if (scheme === 'unix') {
    const path = s.slice('unix://'.length);
    if (!path.startsWith('/')) throw new TypeError(`Docker endpoint ${JSON.stringify(s)}: a unix socket needs an absolute path (unix:///path)`);
    return { socketPath: path, basePath: '', display: `unix://${path}` };
  }
  if (scheme === 'tcp' || scheme === 'http') {
    const rest = s.slice(scheme.length + 3);
    let url: URL;
    try {
      url = new URL(`http://${rest}`);
    } catch {
      throw new TypeError(`Docker endpoint ${JSON.stringify(redact(s))} is not a valid URL`);
    }
    if (!url.hostname) throw new TypeError(`Docker endpoint ${JSON.stringify(redact(s))} has no host`);
    if (url.search || url.hash) throw new TypeError(`Docker endpoint ${JSON.stringify(redact(s))} has a query or fragment`);
    // URL drops an explicit :80, http's default port; Docker's default is 2375
    const authority = rest.split('/')[0] ?? '';
    const port = url.port ? Number(url.port) : /:0*80$/.test(authority) ? 80 : DOCKER_TCP_PORT;
    // URL keeps the brackets of an IPv6 literal; node:http wants them off
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const basePath = url.pathname.replace(/\/+$/, '');
    return { host, port, basePath, display: `${scheme}://${url.hostname}:${port}${basePath}` };
  }
  const shown = scheme ? `${scheme}://` : JSON.stringify(redact(s));
  throw new TypeError(`Docker endpoint scheme ${shown} is not supported (use unix:///path, tcp://host:port or http://host:port)`);
}

interface Answer {
  status: number;
  body: Buffer;
}

/** The Docker Engine API (dockerd, or podman's compatible service) as a RuntimeClient. */
export class DockerClient implements RuntimeClient {
  readonly runtime: DockerRuntimeName;
  readonly endpoint: string;
  private readonly target: DockerEndpoint;
  private readonly timeoutMs: number;
  private readonly agent: http.Agent;
  private closed = false;

  constructor(options: DockerClientOptions) {
    if (options.runtime !== 'docker' && options.runtime !== 'podman') {
      throw new TypeError(`DockerClient runtime must be 'docker' or 'podman', not ${JSON.stringify(options.runtime)}`);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`DockerClient timeoutMs must be a positive integer, not ${String(timeoutMs)}`);
    }
    this.runtime = options.runtime;
    this.target = parseDockerEndpoint(options.endpoint);
    this.endpoint = this.target.display;
    this.timeoutMs = timeoutMs;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS, maxFreeSockets: MAX_SOCKETS, timeout: IDLE_SOCKET_MS });
  }

  /** Resolves when the daemon answers GET /_ping; throws RuntimeUnavailableError otherwise. */
  async ping(): Promise<void> {
    const answer = await this.get('/_ping');
    if (answer.status !== 200) throw this.unavailable(`answered ${describeStatus(answer)} to GET /_ping`);
  }

  async inspect(id: string): Promise<ContainerInfo | null> {
    if (typeof id !== 'string' || id === '') throw new TypeError('DockerClient.inspect needs a container id');
    const path = `/containers/${encodeURIComponent(id)}/json`;
    const answer = await this.get(path);
    if (answer.status === 404) return null;
    if (answer.status !== 200) throw this.unavailable(`answered ${describeStatus(answer)} to GET ${path}`);
    let doc: unknown;
    try {
      doc = JSON.parse(answer.body.toString('utf8'));
    } catch (e) {
      throw this.unavailable(`unparseable answer to GET ${path}: ${(e as Error).message}`);
    }
    const info = this.toContainerInfo(doc);
    if (!info) throw this.unavailable(`unparseable answer to GET ${path}: no Id, Name or Config`);
    return info;
  }

  close(): void {
    this.closed = true;
    this.agent.destroy();
  }

  private toContainerInfo(doc: unknown): ContainerInfo | null {
    if (!isObject(doc) || typeof doc.Id !== 'string' || doc.Id === '' || !isObject(doc.Config)) return null;
    const config = doc.Config;
    const labels: Record<string, string> = {};
    if (isObject(config.Labels)) {
      for (const [k, v] of Object.entries(config.Labels)) if (typeof v === 'string') labels[k] = v;
    }
    const pod = podFromLabels(labels);
    return {
      id: doc.Id,
      name: containerName(typeof doc.Name === 'string' ? doc.Name : '', labels),
      image: typeof config.Image === 'string' ? config.Image : '',
      runtime: this.runtime,
      labels,
      ...(pod ? { pod } : {}),
    };
  }

  private async get(path: string): Promise<Answer> {
    if (this.closed) throw this.unavailable('client is closed');
    const deadline = Date.now() + this.timeoutMs;
    try {
      return await this.request(path, deadline);
    } catch (e) {
      if (!(e instanceof StaleSocketError)) throw e;
    }
    // a kept-alive socket the daemon had closed while idle: GET is safe to send again, once
    try {
      return await this.request(path, deadline);
    } catch (e) {
      if (e instanceof StaleSocketError) throw this.unavailable(`cannot GET ${path}: ${e.message}`);
      throw e;
    }
  }

  private request(path: string, deadline: number): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const t = this.target;
      const req = http.request({
        agent: this.agent,
        method: 'GET',
        path: t.basePath + path,
        headers: { 'User-Agent': 'convis', Accept: 'application/json' },
        ...(t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: t.host, port: t.port }),
      });
      let settled = false;
      const finish = (err: Error | undefined, answer?: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(answer!);
      };
      const timer = setTimeout(
        () => {
          finish(this.unavailable(`no answer to GET ${path} within ${this.timeoutMs} ms`));
          req.destroy();
        },
        Math.max(0, deadline - Date.now()),
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (req.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) finish(new StaleSocketError(e.code));
        else finish(this.unavailable(`cannot GET ${path}: ${e.code ?? e.message}`));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) {
            finish(this.unavailable(`answer to GET ${path} is larger than ${MAX_BODY_BYTES} bytes`));
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', (e: NodeJS.ErrnoException) => finish(this.unavailable(`answer to GET ${path} broke off: ${e.code ?? e.message}`)));
      });
      req.end();
    });
  }

  private unavailable(what: string): RuntimeUnavailableError {
    return new RuntimeUnavailableError(this.runtime, oneLine(`${this.runtime} at ${this.endpoint}: ${what}`));
  }
}

/** A request on a reused keep-alive socket that the daemon had already closed. */
class StaleSocketError extends Error {}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** "500 (message from the daemon)", for errors. */
function describeStatus(answer: Answer): string {
  let message = '';
  try {
    const doc: unknown = JSON.parse(answer.body.toString('utf8'));
    if (isObject(doc) && typeof doc.message === 'string') message = doc.message;
  } catch {
    message = answer.body.toString('utf8', 0, 200);
  }
  return message ? `${answer.status} (${message})` : String(answer.status);
}

function oneLine(s: string): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > 300 ? `${flat.slice(0, 297)}...` : flat;
}

/** The endpoint with any user:password@ removed, for messages. */
function redact(s: string): string {
  return s.replace(/\/\/[^/@]*@/, '//');
}
