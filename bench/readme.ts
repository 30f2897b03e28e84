/**
 * The README's bench figures, made from one bench run: `npm run
 * bench:readme` (after `npm run bench`) keeps what the README shows of
 * build/bench-results.json in bench/last-run.json and writes the README's
 * part between the markers from it. A unit test checks that the README's
 * part is what this makes of bench/last-run.json, so no figure there is
 * typed by hand, and all of them come from the same run.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './lib.js';

export const BEGIN = '<!-- bench:begin (made by npm run bench:readme from bench/last-run.json; do not edit) -->';
export const END = '<!-- bench:end -->';

interface PhaseFigures {
  aloneRate: number;
  agentRate: number;
  ratio: number;
  connectPct: number;
  lowestConnectPct: number;
  lost: number;
  cpuUsPerConn: number;
  bpfUsPerConn: number;
  peakRssMiB: number;
  highestPeakRssMiB: number;
  bpfPrograms?: { name: string; usPerConn: number; runsPerConn: number }[];
}

interface NginxFigures {
  ratio: number;
  acceptPct: number;
  lowestAcceptPct: number;
  lost: number;
  cpuUsPerConn: number;
  bpfUsPerConn: number;
  peakRssMiB: number;
}

/** What the README shows of one run (bench/last-run.json). */
export interface KeptRun {
  date: string;
  kernel: string;
  cpus: number;
  pairs: number;
  seconds: number;
  /** the --compare build's commit, when there was one */
  compareCommit?: string;
  /** the commit of the agent measured */
  agentCommit?: string;
  summary: {
    max: PhaseFigures;
    paced: PhaseFigures;
    baseline: { max: PhaseFigures; paced: PhaseFigures };
    baselineGap: number;
    /** convis with `--sink metrics` only */
    metrics: { max: PhaseFigures; paced: PhaseFigures };
    metricsGap: number;
    compare?: { max: PhaseFigures; paced: PhaseFigures };
    compareDrop: number;
    nginx: { aloneRps: number; byWho: { json?: NginxFigures; metrics?: NginxFigures; baseline?: NginxFigures } };
    bulk: { aloneRate: number; ratio: number; compareRatio: number; exact: number; runs: number; incomplete: number };
  };
  /** max churn: each pair's rate alone, and each run's ratio (its rate over the phase's median rate alone), convis's and the C baseline's */
  maxPairs: { alone: number[]; agentRatios: number[]; baselineRatios: number[]; metricsRatios: number[] };
  /** the agent's resident memory at the end of each max-churn run, KiB: medians */
  memory?: { anonKiB: number; fileKiB: number; ringKiB: number };
  stages?: { records: number; decode: number; enrich: number; json: number; text: number };
  queries?: { rows: number; writeSeconds: number; fileMiB: number; queries: { name: string; ms: number }[] };
  targets: { target: string; met: boolean; value: string }[];
}

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fixed = (n: number, d: number) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const pct = (n: number) => (Number.isFinite(n) ? `${Math.round(n)}%` : '-');
const kilo = (n: number) => `${(n / 1000).toFixed(1)}k`;

function table(rows: string[][]): string {
  const [head, ...body] = rows;
  return [`| ${head!.join(' | ')} |`, `|${head!.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** The README's part, from a kept run. */
export function renderBench(k: KeptRun): string {
  const s = k.summary;
  const { max, paced } = s;
  const bmax = s.baseline.max;
  const cmp = s.compare;
  const met = s.metrics;
  const date = k.date.slice(0, 10);
  const kernel = k.kernel.split('.').slice(0, 2).join('.');
  const out: string[] = [];
  out.push(
    `The last run here (${date}, ${k.cpus} vCPUs, kernel ${kernel}, \`npm run bench -- --pairs ${k.pairs} --seconds ${k.seconds}${cmp ? ' --compare ...' : ''}\`, medians${
      cmp && k.compareCommit ? `; \`--compare\` was commit ${k.compareCommit}` : ''
    }${k.agentCommit ? `; the agent measured was commit ${k.agentCommit}` : ''}):`,
  );
  out.push('');
  out.push(
    table([
      ['', 'max churn', `paced 5,000/s`],
      ['workload alone', `${int(max.aloneRate)} conn/s`, `${int(paced.aloneRate)} conn/s`],
      ['rate kept with convis, JSON to /dev/null', fixed(max.ratio, 2), fixed(paced.ratio, 2)],
      ['rate kept with convis, metrics only', fixed(met.max.ratio, 2), fixed(met.paced.ratio, 2)],
      ['rate kept with the minimal C tracer, same pairs', fixed(bmax.ratio, 2), fixed(s.baseline.paced.ratio, 2)],
      ...(cmp ? [['rate kept with the earlier build, same pairs', fixed(cmp.max.ratio, 2), fixed(cmp.paced.ratio, 2)]] : []),
      ['connections reported', pct(Math.min(max.lowestConnectPct, met.max.lowestConnectPct)), pct(Math.min(paced.lowestConnectPct, met.paced.lowestConnectPct))],
      ['events lost', int(max.lost + met.max.lost), int(paced.lost + met.paced.lost)],
      [
        'agent CPU per connection, JSON',
        `${fixed(max.cpuUsPerConn, 1)} µs (C tracer ${fixed(bmax.cpuUsPerConn, 2)}${cmp ? `, earlier build ${fixed(cmp.max.cpuUsPerConn, 1)}` : ''})`,
        `${fixed(paced.cpuUsPerConn, 1)} µs (C tracer ${fixed(s.baseline.paced.cpuUsPerConn, 2)}${cmp ? `, earlier build ${fixed(cmp.paced.cpuUsPerConn, 1)}` : ''})`,
      ],
      ['agent CPU per connection, metrics only', `${fixed(met.max.cpuUsPerConn, 1)} µs`, `${fixed(met.paced.cpuUsPerConn, 1)} µs`],
      [
        'BPF time per connection, JSON',
        `${fixed(max.bpfUsPerConn, 1)} µs (C tracer ${fixed(bmax.bpfUsPerConn, 1)}${cmp ? `, earlier build ${fixed(cmp.max.bpfUsPerConn, 1)}` : ''})`,
        `${fixed(paced.bpfUsPerConn, 1)} µs`,
      ],
      ['BPF time per connection, metrics only', `${fixed(met.max.bpfUsPerConn, 1)} µs`, `${fixed(met.paced.bpfUsPerConn, 1)} µs`],
      [
        'agent peak RSS, JSON',
        `${fixed(max.peakRssMiB, 1)} MiB (highest ${fixed(max.highestPeakRssMiB, 1)}; C tracer ${fixed(bmax.peakRssMiB, 1)}${cmp ? `, earlier build ${fixed(cmp.max.peakRssMiB, 1)}` : ''})`,
        `${fixed(paced.peakRssMiB, 1)} MiB`,
      ],
      ['agent peak RSS, metrics only', `${fixed(met.max.peakRssMiB, 1)} MiB (highest ${fixed(met.max.highestPeakRssMiB, 1)})`, `${fixed(met.paced.peakRssMiB, 1)} MiB`],
    ]),
  );
  const n = s.nginx;
  if (n.byWho.json || n.byWho.metrics) {
    const col = (f: (x: NginxFigures) => string) => (['json', 'metrics', 'baseline'] as const).map((w) => (n.byWho[w] ? f(n.byWho[w]!) : '-'));
    out.push('');
    out.push(
      table([
        [`nginx + ab (alone: ${int(n.aloneRps)} requests/s)`, 'convis, JSON', 'convis, metrics only', 'minimal C tracer'],
        ['requests/s kept', ...col((x) => fixed(x.ratio, 3))],
        ['accepts reported / accepted by nginx (lowest)', ...col((x) => pct(x.lowestAcceptPct))],
        ['events lost', ...col((x) => int(x.lost))],
        ['agent CPU per connection', ...col((x) => `${fixed(x.cpuUsPerConn, 1)} µs`)],
        ['BPF time per connection', ...col((x) => `${fixed(x.bpfUsPerConn, 1)} µs`)],
        ['peak RSS', ...col((x) => `${fixed(x.peakRssMiB, 1)} MiB`)],
      ]),
    );
  }
  const b = s.bulk;
  if (b.runs + b.incomplete > 0) {
    out.push('');
    out.push(
      table([
        ['bulk: 8 GiB over one loopback connection (iperf3)', ''],
        ['alone', `${int(b.aloneRate / 1e6)} MB/s`],
        ['rate kept with convis', fixed(b.ratio, 3)],
        ...(cmp ? [['rate kept with the earlier build', fixed(b.compareRatio, 3)]] : []),
        ['close events with the exact bytes', `${b.exact} of ${b.runs} runs`],
      ]),
    );
  }
  if (k.stages) {
    const st = k.stages;
    out.push('');
    out.push(
      table([
        ['userspace per record, replayed in-process (each row includes the ones above)', 'ns'],
        ['decode', int(st.decode)],
        ['+ process cache and enrichment', int(st.enrich)],
        ['+ stdout JSON line', int(st.json)],
        ['+ stdout text line instead of JSON', int(st.text)],
      ]),
    );
  }
  if (k.queries) {
    const q = k.queries;
    out.push('');
    out.push(
      table([
        [`\`convis query\` over a flow log of ${int(q.rows)} connections (${int(q.fileMiB)} MiB, written through the sink in ${fixed(q.writeSeconds, 1)} s), median of 5`, 'ms'],
        ...q.queries.map((x) => [x.name, int(x.ms)]),
      ]),
    );
  }
  out.push('');
  out.push('Its targets (those of the issues the bench measures), as the bench judged them:');
  out.push('');
  for (const t of k.targets) out.push(`- ${t.met ? 'met' : '**missed**'}: ${t.target}: ${t.value}`);
  out.push('');
  const mp = k.maxPairs;
  const range = (xs: number[], f: (x: number) => string) => (xs.length ? `${f(Math.min(...xs))} to ${f(Math.max(...xs))}` : '-');
  out.push(
    `**Read the churn figures with the noise in mind.** On this VM the workload alone ran at ${range(mp.alone, kilo)} conn/s in this run's ${k.pairs} pairs, ` +
      `and against the median rate alone convis's runs with JSON kept ${range(mp.agentRatios, (x) => fixed(x, 2))} ` +
      `(${range(mp.metricsRatios, (x) => fixed(x, 2))} with metrics only) and the C tracer's ${range(mp.baselineRatios, (x) => fixed(x, 2))}: ` +
      `a few pairs do not settle a difference of a few hundredths. Compare builds with many alternating pairs ` +
      '(`--phases max --pairs 12 --seconds 12 --compare ...`, see `bench/README.md`). The userspace replay settles at one of two speeds per ' +
      'process (as V8 compiles it), so compare it over several runs.' +
      (k.memory
        ? ` At the end of a max-churn run, ${fixed(k.memory.fileKiB / 1024, 1)} MiB of the agent's resident memory was file-backed or kernel-mapped ` +
          `(the Node binary; the ring buffer, ${fixed(k.memory.ringKiB / 1024, 1)} MiB of it, counted twice because the consumer maps its pages twice) ` +
          `and ${fixed(k.memory.anonKiB / 1024, 1)} MiB anonymous (the JavaScript heap and native allocations).`
        : ''),
  );
  return out.join('\n');
}

/** The README with its part between the markers replaced. */
export function replaceBench(readme: string, part: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('the README has no bench markers');
  return `${readme.slice(0, a + BEGIN.length)}\n${part}\n${readme.slice(b)}`;
}

/** The README's part between the markers. */
export function benchPart(readme: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('the README has no bench markers');
  return readme.slice(a + BEGIN.length + 1, b - 1);
}

/* eslint-disable @typescript-eslint/no-explicit-any */
/** What the README shows of a full results file (build/bench-results.json). */
export function keep(results: any): KeptRun {
  const maxPhase = (results.phases as any[]).find((p) => p.key === 'max');
  const pairs = [...new Set<number>((maxPhase?.runs ?? []).map((r: any) => r.pair))];
  const ratioOf = (pair: number, who: string) => maxPhase.runs.find((r: any) => r.pair === pair && r.who === who)?.stats?.ratio as number | undefined;
  const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  const agentMax = (maxPhase?.runs ?? []).filter((r: any) => r.who === 'agent' && r.measure?.memory);
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN;
  const strip = (p: any) => (p ? { ...p, bpfPrograms: undefined } : p);
  const s = results.summary;
  return {
    date: results.date,
    kernel: results.kernel,
    cpus: results.cpus,
    pairs: results.options.pairs,
    seconds: results.options.seconds,
    ...(results.compareCommit ? { compareCommit: results.compareCommit } : {}),
    ...(results.agentCommit ? { agentCommit: results.agentCommit } : {}),
    summary: {
      ...s,
      max: strip(s.max),
      paced: strip(s.paced),
      baseline: { max: strip(s.baseline.max), paced: strip(s.baseline.paced) },
      metrics: { max: strip(s.metrics.max), paced: strip(s.metrics.paced) },
      ...(s.compare ? { compare: { max: strip(s.compare.max), paced: strip(s.compare.paced) } } : {}),
    },
    maxPairs: {
      alone: defined(pairs.map((p) => maxPhase.runs.find((r: any) => r.pair === p && r.who === 'alone')?.churn?.rate)),
      agentRatios: defined(pairs.map((p) => ratioOf(p, 'agent'))),
      baselineRatios: defined(pairs.map((p) => ratioOf(p, 'baseline'))),
      metricsRatios: defined(pairs.map((p) => ratioOf(p, 'metrics'))),
    },
    ...(agentMax.length
      ? {
          memory: {
            anonKiB: med(agentMax.map((r: any) => r.measure.memory.anonKiB)),
            fileKiB: med(agentMax.map((r: any) => r.measure.memory.fileKiB)),
            ringKiB: med(agentMax.map((r: any) => r.measure.memory.ringKiB)),
          },
        }
      : {}),
    ...(results.stages ? { stages: results.stages } : {}),
    ...(results.queries ? { queries: { rows: results.queries.rows, writeSeconds: results.queries.writeSeconds, fileMiB: results.queries.fileMiB, queries: results.queries.queries.map((q: any) => ({ name: q.name, ms: q.ms })) } } : {}),
    targets: results.targets,
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/** npm run bench:readme [results.json] */
async function main(): Promise<void> {
  const root = ROOT;
  const from = process.argv[2] ?? join(root, 'build/bench-results.json');
  const kept = keep(JSON.parse(readFileSync(from, 'utf8')));
  writeFileSync(join(root, 'bench/last-run.json'), `${JSON.stringify(kept, null, 2)}\n`);
  const readmePath = join(root, 'README.md');
  writeFileSync(readmePath, replaceBench(readFileSync(readmePath, 'utf8'), renderBench(kept)));
  process.stdout.write(`README.md: bench figures from ${from} (${kept.date}); kept in bench/last-run.json\n`);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:readme: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
