/**
 * Which container runtimes to ask, from flags, the environment and the
 * sockets present on the node. Filled in as runtime clients land.
 */
import type { Logger } from '../util/log.js';
import type { PodRuntimeClient, RuntimeClient } from './container.js';

export interface RuntimeConfig {
  criSocket?: string;
  podmanSocket?: string;
  dockerHost?: string;
}

export interface Runtimes {
  runtimes: RuntimeClient[];
  pods?: PodRuntimeClient;
}

export async function openRuntimes(_config: RuntimeConfig, _log: Logger): Promise<Runtimes> {
  return { runtimes: [] };
}
