/**
 * Density: idle hello instances per GB (1024 MB of host PSS) on every backend this host has, and
 * beside each backend that has one, the bare peer's own density measured in the same run, in
 * turns: the identical container bundle under `runc`/`crun`/`runsc run --detach`, a bare `node`
 * running the same agent, a bare QEMU boot of the same guest. Writes
 * packages/bench/results/density.{json,md}.
 *
 *   node packages/bench/launch.js suites/density.ts [--quick] [--backends=isolate,container:runc]
 */

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  barePeerOf,
  densityCounts,
  probeTarget,
  selectTargets,
  startTargetServer,
  type Target,
  TargetRun,
  type WorkloadResult,
} from '../src/harness.js';
import { hostInfo } from '../src/host.js';
import { perGb, round } from '../src/pss.js';
import { summarize } from '../src/stats.js';
import { WORKLOADS, type Workload } from '../src/workloads.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const chosen = process.argv
  .find((a) => a.startsWith('--backends='))
  ?.slice(11)
  .split(',');
const log = (message: string) => process.stderr.write(`${message}\n`);

/** The issue's targets: the isolate at 1,000 per GB; a container at least as dense as its bare runtime. */
const ISOLATE_PER_GB = 1000;
const CONTAINER_RATIO = 1;

interface DensityRow {
  backend: string;
  available: boolean;
  detail: string;
  platformMb?: number;
  platformPerGb?: number | null;
  /** When the row was measured: a run of some backends keeps the others' rows of an earlier run. */
  measuredAt?: string;
  /** Per round, for a backend in the server's own process: the rounds' instances stacked. */
  samplesMb?: number[];
  /** Per round, of that: the growth of the server's JavaScript heap in use, per instance. */
  serverHeapMb?: number[];
  beside?: NonNullable<WorkloadResult['densityBeside']>;
  target?: string;
  met?: boolean;
  error?: string;
}

/** Instances per round for a backend in the server's own process, where each costs little. */
function inProcessCount(instances: number): number {
  return instances * 8;
}

function helloFor(target: Target): Workload {
  const kind = target.isolation === 'wasm' ? 'wasm' : 'nodejs:20';
  return WORKLOADS.find((w) => w.name === 'hello' && w.kind === kind) as Workload;
}

/** The issue's target for a backend, and whether the row meets it. */
function judge(row: DensityRow): void {
  if (row.backend === 'isolate' && row.platformPerGb !== undefined) {
    row.target = `>= ${ISOLATE_PER_GB} idle instances per GB`;
    row.met = (row.platformPerGb ?? 0) >= ISOLATE_PER_GB;
  } else if (['container:runc', 'container:crun', 'gvisor'].includes(row.backend) && row.beside) {
    row.target = `density >= ${CONTAINER_RATIO}x the bare runtime's`;
    row.met = (row.beside.ratio ?? 0) >= CONTAINER_RATIO;
  }
}

async function measure(target: Target, dataDir: string, workDir: string): Promise<DensityRow> {
  const status = await probeTarget(target, dataDir).catch((error: unknown) => ({
    available: false,
    detail: (error as Error).message,
  }));
  const row: DensityRow = { backend: target.id, available: status.available, detail: status.detail };
  if (!status.available) return row;
  const { instances, rounds } = densityCounts(quick, target);
  // Room in the memory budget (which counts each instance at its memory limit) for every stacked
  // instance, so that none is evicted while it is counted.
  const inProcess = barePeerOf(target) === undefined;
  const budget = (inProcessCount(instances) * rounds + 8) * helloFor(target).memoryMb;
  const server = await startTargetServer(target, dataDir, inProcess ? { ISOLA_MEMORY_BUDGET_MB: String(budget) } : {});
  const run = new TargetRun(target, server, { quick, concurrency: 1, memoryBudgetMb: 1024 });
  try {
    await run.init();
    const hello = helloFor(target);
    await run.warmUp([hello.memoryMb]);
    const bare = barePeerOf(target);
    if (bare) {
      log(`${target.id}: ${rounds} turns of ${instances} idle instances, platform and ${bare.name}...`);
      const accelerator = /\bKVM\b/.test(status.detail) ? 'kvm' : 'tcg';
      row.beside = await run.densityBeside(hello, bare, instances, rounds, workDir, accelerator);
      row.platformMb = row.beside.platformMb;
      row.platformPerGb = row.beside.platformPerGb;
    } else {
      // In the server's own process (isolate, wasm): more instances, for a cost near the noise,
      // stacked round on round (see stackedIdleInstanceMb).
      const count = inProcessCount(instances);
      log(`${target.id}: ${rounds} rounds of ${count} idle instances, stacked...`);
      const samples = await run.stackedIdleInstanceMb(hello, count, rounds, 'density');
      row.samplesMb = samples.totalMb.map((mb) => round(mb, 3));
      row.serverHeapMb = samples.serverHeapMb.map((mb) => round(mb, 3));
      const mb = summarize(samples.totalMb).p50;
      row.platformMb = round(mb, 3);
      row.platformPerGb = perGb(mb);
    }
  } catch (error) {
    row.error = (error as Error).message.slice(0, 400);
    log(`${target.id}: ${row.error}`);
  } finally {
    run.close();
    await server.dispose();
  }
  judge(row);
  return row;
}

const fmt = (value: number | null | undefined, digits = 1): string =>
  value === null || value === undefined ? '–' : value.toLocaleString('en-US', { maximumFractionDigits: digits });

/** Which rows come from which run, when they come from more than one. */
function measuredAtNote(rows: DensityRow[]): string[] {
  const dates = new Set(rows.map((r) => r.measuredAt));
  if (dates.size <= 1) return [];
  return [`Rows from more than one run: ${rows.map((r) => `${r.backend} ${r.measuredAt ?? 'undated'}`).join('; ')}.`, ''];
}

function markdown(rows: DensityRow[], results: Record<string, unknown>): string {
  const lines = [
    '# Density: idle hello instances per GB',
    '',
    `Host: ${JSON.stringify(results.host)}. ${quick ? 'Quick run. ' : ''}Took ${results.durationSeconds} s.`,
    '',
    "Host PSS per idle hello instance (the function deployed, called once and left idle): the growth of the PSS of the server and everything it runs (its sandboxes, containers with every process in their cgroups and the runtime processes that name them, VMs). The bare peer is counted the same way, its processes added to the idle server. Per GB = 1024 MB divided by it. Ratio = platform density / bare density. Each figure is the median of the turns, the two sides taken in turns. For a backend in the server's own process (isolate, wasm), each turn adds its instances to those of the turns before, which stay until the last turn is read: memory a removed instance freed stays in the process and the next instances would reuse it, counting them as almost free.",
    '',
    ...measuredAtNote(rows),
    '| backend | PSS MB / instance | per GB | bare peer | bare PSS MB | bare per GB | ratio | target | met |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    if (!r.available) {
      lines.push(`| ${r.backend} | not available: ${r.detail.replaceAll('|', '/')} | | | | | | | |`);
      continue;
    }
    const b = r.beside;
    lines.push(
      `| ${r.backend}${r.error ? ` (error: ${r.error.replaceAll('|', '/')})` : ''} | ${fmt(r.platformMb, 2)} | ${fmt(r.platformPerGb, 0)} | ${b ? b.peer : '–'} | ${fmt(b?.bareMb, 2)} | ${fmt(b?.barePerGb, 0)} | ${b?.ratio != null ? `${fmt(b.ratio, 3)}x` : '–'} | ${r.target ?? '–'} | ${r.met === undefined ? '–' : r.met ? 'yes' : 'no'} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** The rows of an earlier results file, each dated with its own run (undated ones with that file's). */
function earlierRows(file: string): DensityRow[] {
  if (!existsSync(file)) return [];
  const earlier = JSON.parse(readFileSync(file, 'utf8')) as { host?: { date?: string }; rows?: DensityRow[] };
  return (earlier.rows ?? []).map((row) => ({ ...row, measuredAt: row.measuredAt ?? earlier.host?.date ?? 'undated' }));
}

async function main() {
  const started = Date.now();
  const targets = selectTargets(chosen);
  const dataDir = mkdtempSync(join(tmpdir(), 'isola-density-data-'));
  const workDir = mkdtempSync(join(tmpdir(), 'isola-density-'));
  const rows: DensityRow[] = [];
  try {
    for (const target of targets) rows.push(await measure(target, dataDir, workDir));
  } finally {
    rmSync(workDir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
  const host = hostInfo();
  for (const row of rows) row.measuredAt = host.date;
  mkdirSync(outDir, { recursive: true });
  const name = quick ? 'density-quick' : 'density';
  // A run of some backends (--backends) keeps the other backends' rows of the last run, dated.
  const earlier = chosen ? earlierRows(join(outDir, `${name}.json`)) : [];
  const kept = earlier.filter((row) => !rows.some((r) => r.backend === row.backend));
  const results = {
    benchmark: 'density',
    quick,
    host,
    durationSeconds: Math.round((Date.now() - started) / 1000),
    rows: [...kept, ...rows],
  };
  writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(outDir, `${name}.md`), markdown(results.rows, results));
  process.stdout.write(markdown(results.rows, results));
  log(`wrote ${join(outDir, `${name}.json`)} and .md`);
}

await main();
