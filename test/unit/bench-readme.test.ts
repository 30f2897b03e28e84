/**
 * The README's bench figures come from one bench run: its part between the
 * bench markers must be exactly what bench/readme.ts makes of
 * bench/last-run.json (kept by `npm run bench:readme` from that run's
 * build/bench-results.json), so none of them is typed by hand.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { benchPart, keep, renderBench, replaceBench, type KeptRun } from '../../bench/readme.js';
import { repoRoot } from '../helpers/paths.js';
import { readme } from '../helpers/readme.js';

const kept = JSON.parse(readFileSync(join(repoRoot, 'bench/last-run.json'), 'utf8')) as KeptRun;

test('the README bench figures are what bench/last-run.json makes, untouched', () => {
  assert.equal(benchPart(readme), renderBench(kept));
});

test('the kept run is a whole one: every phase, the C baseline and the targets', () => {
  for (const f of [kept.summary.max, kept.summary.paced, kept.summary.metrics.max, kept.summary.metrics.paced, kept.summary.baseline.max]) assert.ok(Number.isFinite(f.ratio) && f.ratio > 0);
  assert.ok(kept.summary.nginx.byWho.json && kept.summary.nginx.byWho.metrics && kept.summary.nginx.byWho.baseline);
  assert.ok(kept.summary.bulk.runs > 0);
  assert.ok(kept.stages && kept.queries);
  assert.ok(kept.targets.length >= 10);
  assert.equal(kept.maxPairs.alone.length, kept.pairs);
});

test('keep() takes the figures from a results file; replaceBench() swaps only the part between the markers', () => {
  const run = (pair: number, who: string, rate: number, ratio?: number) => ({ pair, who, churn: { rate }, ...(ratio ? { stats: { ratio } } : {}), ...(who === 'agent' ? { measure: { memory: { anonKiB: 40000 + pair, fileKiB: 60000, ringKiB: 16384 } } } : {}) });
  const phase = { max: 1 } as unknown as KeptRun['summary']['max'];
  const results = {
    date: '2026-12-02T05:00:00.000Z',
    kernel: '6.18.44',
    cpus: 2,
    options: { pairs: 3, seconds: 10 },
    phases: [{ key: 'max', runs: [1, 2, 3].flatMap((p) => [run(p, 'alone', 20000 + p), run(p, 'agent', 16000, [0.81, 0.82, 0.83][p - 1]), run(p, 'metrics', 18000, [0.96, 0.97, 0.98][p - 1]), run(p, 'baseline', 19000, [0.91, 0.92, 0.93][p - 1])]) }],
    summary: { max: phase, paced: phase, metrics: { max: phase, paced: phase }, baseline: { max: phase, paced: phase }, nginx: { byWho: {} }, bulk: {} },
    targets: [],
  };
  const k = keep(results);
  assert.deepEqual(k.maxPairs, { alone: [20001, 20002, 20003], agentRatios: [0.81, 0.82, 0.83], baselineRatios: [0.91, 0.92, 0.93], metricsRatios: [0.96, 0.97, 0.98] });
  assert.deepEqual(k.memory, { anonKiB: 40002, fileKiB: 60000, ringKiB: 16384 });
  const doc = `before\n<!-- bench:begin (made by npm run bench:readme from bench/last-run.json; do not edit) -->\nold\n<!-- bench:end -->\nafter\n`;
  const next = replaceBench(doc, 'new\nlines');
  assert.equal(next, `before\n<!-- bench:begin (made by npm run bench:readme from bench/last-run.json; do not edit) -->\nnew\nlines\n<!-- bench:end -->\nafter\n`);
  assert.equal(benchPart(next), 'new\nlines');
});
