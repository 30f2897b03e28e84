/**
 * Which container runtimes to ask, from flags, the environment and the
 * sockets present on the node:
 *  - Docker: $DOCKER_HOST, else /var/run/docker.sock when it exists;
 *  - podman: --podman-socket, else /run/podman/podman.sock when it exists;
 *  - CRI (containerd, CRI-O): --cri-socket, else the first usual socket that
 *    answers CRI.
 * A runtime named explicitly is kept even when it does not answer yet; one
 * found by looking is kept only when its socket exists. None of this is
 * fatal: without runtimes, events still carry container ids.
 */
import { existsSync } from 'node:fs';
import type { Logger } from '../util/log.js';
import { RuntimeUnavailableError, type ContainerInfo, type PodRuntimeClient, type PodSandbox, type RuntimeClient, type RuntimeName } from './container.js';
import type { CriClient } from './cri.js';
import { DEFAULT_CRI_SOCKETS } from './container.js';

/** The CRI client, loaded only on a node with a CRI socket: gRPC costs every other agent about 13 MiB. */
const criModule = () => import('./cri.js');
import { DOCKER_DEFAULT_ENDPOINT, DockerClient, PODMAN_DEFAULT_ENDPOINT, parseDockerEndpoint } from './docker.js';

export interface RuntimeConfig {
  criSocket?: string;
  podmanSocket?: string;
  dockerHost?: string;
}

export interface Runtimes {
  runtimes: RuntimeClient[];
  pods?: PodRuntimeClient;
}

/**
 * A CRI client that negotiates (v1 or v1alpha2) on first use and again after
 * a failure, so a runtime that starts after convis is picked up.
 */
class LazyCriClient implements PodRuntimeClient {
  readonly endpoint: string;
  private client: CriClient | undefined;
  private connecting: Promise<CriClient> | undefined;

  constructor(socket: string) {
    this.endpoint = socket;
  }

  get runtime(): RuntimeName {
    return this.client?.runtime ?? 'cri';
  }

  async connect(): Promise<CriClient> {
    if (this.client) return this.client;
    this.connecting ??= criModule()
      .then(({ CriClient }) => CriClient.connect(this.endpoint))
      .then((c) => (this.client = c))
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  async inspect(id: string): Promise<ContainerInfo | null> {
    return this.retrying((c) => c.inspect(id));
  }

  async listPodSandboxes(): Promise<PodSandbox[]> {
    return this.retrying((c) => c.listPodSandboxes());
  }

  close(): void {
    this.client?.close();
  }

  /** A failed call drops the channel: the next one negotiates again. */
  private async retrying<T>(call: (c: CriClient) => Promise<T>): Promise<T> {
    const c = await this.connect();
    try {
      return await call(c);
    } catch (e) {
      if (e instanceof RuntimeUnavailableError && this.client === c) {
        c.close();
        this.client = undefined;
      }
      throw e;
    }
  }
}

async function announce(log: Logger, name: string, endpoint: string, check: () => Promise<unknown>): Promise<void> {
  try {
    await check();
    log.info(`${name}: ${endpoint}`);
  } catch (e) {
    log.warn(`${name} at ${endpoint} does not answer (${(e as Error).message}); will keep trying`);
  }
}

const socketPath = (endpoint: string) => parseDockerEndpoint(endpoint).socketPath;

export async function openRuntimes(config: RuntimeConfig, log: Logger): Promise<Runtimes> {
  const runtimes: RuntimeClient[] = [];
  let pods: PodRuntimeClient | undefined;

  const dockerEndpoint = config.dockerHost ?? DOCKER_DEFAULT_ENDPOINT;
  if (config.dockerHost !== undefined || existsSync(socketPath(dockerEndpoint) ?? '')) {
    const docker = new DockerClient({ endpoint: dockerEndpoint, runtime: 'docker' });
    runtimes.push(docker);
    await announce(log, 'docker', docker.endpoint, () => docker.ping());
  }

  const podmanEndpoint = config.podmanSocket ?? PODMAN_DEFAULT_ENDPOINT;
  if (config.podmanSocket !== undefined || existsSync(socketPath(podmanEndpoint) ?? '')) {
    const podman = new DockerClient({ endpoint: podmanEndpoint, runtime: 'podman' });
    runtimes.push(podman);
    await announce(log, 'podman', podman.endpoint, () => podman.ping());
  }

  const criSocket =
    config.criSocket ?? (DEFAULT_CRI_SOCKETS.some((p) => existsSync(p)) ? await (await criModule()).detectCriSocket() : undefined);
  if (criSocket !== undefined) {
    const cri = new LazyCriClient(criSocket);
    runtimes.push(cri);
    pods = cri;
    await announce(log, 'CRI', criSocket, async () => {
      const c = await cri.connect();
      return `${c.runtime} ${c.apiVersion}`;
    });
  }

  if (runtimes.length === 0) log.debug('no container runtime found: events carry container ids only');
  return { runtimes, ...(pods ? { pods } : {}) };
}
