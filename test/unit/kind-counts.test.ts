/**
 * Kernel records counted by kind, for the summary and convis_events_total.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KernelRecord } from '../../src/bpf/decode.js';
import { KindCounts } from '../../src/pipeline/kind-counts.js';

test('every kind is counted under its own name, across batches', () => {
  const kinds: KernelRecord['kind'][] = ['connect', 'accept', 'update', 'close', 'connect_failed', 'listen', 'unlisten', 'exec', 'exit', 'fork', 'sweep', 'dns'];
  const c = new KindCounts();
  // kind i appears i + 1 times, over two batches
  const records = kinds.flatMap((kind, i) => Array.from({ length: i + 1 }, () => ({ kind }) as KernelRecord));
  c.add(records.slice(0, 20));
  c.add(records.slice(20));
  c.add([]);
  assert.deepEqual(c.get(), Object.fromEntries(kinds.map((k, i) => [k, i + 1])));
});
