/**
 * Finds and loads the compiled addon (native/build/Release/convis.node).
 * Internal: only src/tracer uses it.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeSizes } from '../bpf/events.js';

export type TracerHandle = { readonly __brand: 'TracerHandle' };

export interface OpenOptions {
  ringBytes: number;
  maxSockets: number;
  maxUdpFlows: number;
  wakeupBytes: number;
  /** sweep period; 0: no live counts */
  sweepMs: number;
  btfPath?: string;
  /** the cgroup v2 root for the UDP peer hooks; absent: unconnected UDP peers stay unknown */
  cgroupPath?: string;
  /** longest the poll thread sleeps between drains, ms (default 50) */
  pollMs?: number;
  /** tests only: fail every Nth batch allocation, so the bridge's loss counters can be checked (0: never) */
  faultAllocEvery?: number;
  /** tests only: fail every Nth hand-over of a batch to JS (0: never) */
  faultHandoffEvery?: number;
}

export interface SnapshotResult {
  /** network namespaces walked */
  namespaces: number;
  /** namespaces that could not be entered or walked */
  failed: number;
  /** the first failure, when there was one */
  error?: string;
}

/** The raw binding; see native/addon.c for each call's contract. */
export interface Binding {
  open(options: OpenOptions): TracerHandle;
  attached(handle: TracerHandle): string[];
  start(handle: TracerHandle, onBatch: (batch: Buffer | null, count: number) => void): void;
  requestStop(handle: TracerHandle): void;
  snapshot(handle: TracerHandle, netnsPaths: string[]): SnapshotResult;
  close(handle: TracerHandle): void;
  stats(handle: TracerHandle): number[];
  clocks(): [bigint, bigint];
  readonly sizes: NativeSizes;
}

let cached: Binding | undefined;

/** Loads the addon once; on failure the error lists every path tried. */
export function loadBinding(): Binding {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/src/native -> repo root is three levels up; src/native (ts-node style) two
  const roots = [resolve(here, '../../..'), resolve(here, '../..')];
  const tried: string[] = [];
  const require = createRequire(import.meta.url);
  for (const root of roots) {
    for (const rel of ['native/build/Release/convis.node', 'native/build/Debug/convis.node']) {
      const path = resolve(root, rel);
      tried.push(path);
      if (!existsSync(path)) continue;
      cached = require(path) as Binding;
      return cached;
    }
  }
  const err = new Error(`the native addon is not built (run npm run build); tried: ${tried.join(', ')}`);
  (err as NodeJS.ErrnoException).code = 'ENOADDON';
  throw err;
}
