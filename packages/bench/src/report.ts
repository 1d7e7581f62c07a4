/**
 * Writes a harness run out: `results.json` (the figures), `summary.md` (tables) and a
 * self-contained `report.html` whose charts are SVG drawn by Vega-Lite at write time, so the
 * report opens anywhere with no network and no scripts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ATTACKS } from './attacks.js';
import type { HarnessResults, Percentiles, WorkloadResult } from './harness.js';
import { languagesHtml, languagesMarkdown } from './languages-report.js';
import { perGb } from './pss.js';
import { resourcesCells, resourcesChart, resourcesTable } from './resources.js';
import { type ResourcesResults, resourcesNotes } from './resources-run.js';

export interface HeadlineRow {
  question: string;
  answer: string;
  /** The figure the answer rests on (a ratio or a percentage), or null if it could not be measured here. */
  value: number | null;
  basis: string;
}

export const fmt = (value: number | null | undefined, digits = 2): string => {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return String(Math.round(value * 10 ** digits) / 10 ** digits);
};

function row(results: HarnessResults, backend: string, workload = 'hello'): WorkloadResult | undefined {
  return results.results.find((r) => r.backend === backend && r.workload === workload && !r.skipped && !r.error);
}

/** The container runtime to compare against: runc (the studies' baseline) if it ran, else crun. */
function containerRow(results: HarnessResults): WorkloadResult | undefined {
  return row(results, 'container:runc') ?? row(results, 'container:crun');
}

const cold = (r: WorkloadResult | undefined) => r?.coldStartMs?.p50;

/** Whether the run measured the backends dimension (runs written before there were dimensions did). */
export const backendsRan = (results: HarnessResults): boolean => results.dimensions?.includes('backends') ?? true;

/** The questions the source studies asked, answered from this run. */
export function headline(results: HarnessResults): HeadlineRow[] {
  const rows: HeadlineRow[] = [];
  if (!backendsRan(results)) return rows;
  const container = containerRow(results);
  const vsContainer = (backend: string, label: string) => {
    const r = row(results, backend);
    const a = cold(r);
    const b = cold(container);
    if (a === undefined || b === undefined) {
      rows.push({
        question: `${label} vs container cold start`,
        answer: 'not measured here',
        value: null,
        basis: `needs ${backend} and a container runtime`,
      });
      return;
    }
    const percent = (a / b) * 100;
    rows.push({
      question: `${label} vs container cold start`,
      answer: `${fmt(percent, 1)}% of the container's cold start (${fmt(100 - percent, 1)}% faster)`,
      value: Math.round(percent * 100) / 100,
      basis: `hello p50: ${backend} ${fmt(a)} ms, ${container?.backend} ${fmt(b)} ms`,
    });
  };
  vsContainer('wasm', 'WebAssembly');
  vsContainer('isolate', 'V8 isolate');

  const restore = cold(row(results, 'microvm'));
  const boot = cold(row(results, 'microvm:boot'));
  const qemu = results.peers.find((p) => p.name === 'QEMU boot' && p.startMs)?.startMs?.p50;
  if (restore !== undefined && (boot !== undefined || qemu !== undefined)) {
    const base = boot ?? (qemu as number);
    rows.push({
      question: 'microVM snapshot restore vs boot',
      answer: `a cold start restored from a snapshot is ${fmt(base / restore, 1)}x faster than one that boots`,
      value: Math.round((base / restore) * 100) / 100,
      basis: `hello p50: restore ${fmt(restore)} ms, ${boot !== undefined ? `boot ${fmt(boot)} ms` : `bare QEMU boot ${fmt(qemu)} ms`}${qemu !== undefined && boot !== undefined ? ` (bare QEMU boot to the agent: ${fmt(qemu)} ms)` : ''}; accelerator ${results.host.accelerator ?? '?'}`,
    });
  } else
    rows.push({
      question: 'microVM snapshot restore vs boot',
      answer: 'not measured here',
      value: null,
      basis: 'needs the microvm backend',
    });

  // Lupine's question: a kernel specialised for the function against a distribution's, the same
  // machine and root disk, both restored from their snapshots.
  const specialised = row(results, 'microvm:specialised');
  const debian = row(results, 'microvm');
  if (specialised?.coldStartMs && restore !== undefined) {
    const memory =
      specialised.pssMb !== null && debian?.pssMb != null
        ? `; QEMU PSS per idle instance ${fmt(specialised.pssMb, 1)} vs ${fmt(debian.pssMb, 1)} MB`
        : '';
    rows.push({
      question: 'Specialised guest kernel vs a distribution kernel (microVM restore)',
      answer: `a restored cold start with the specialised kernel is ${fmt(specialised.coldStartMs.p50 / restore, 2)}x the Debian kernel's`,
      value: Math.round((specialised.coldStartMs.p50 / restore) * 1000) / 1000,
      basis: `hello p50: specialised ${fmt(specialised.coldStartMs.p50)} ms, Debian ${fmt(restore)} ms${memory}; boots: npm run bench:guest`,
    });
  } else
    rows.push({
      question: 'Specialised guest kernel vs a distribution kernel (microVM restore)',
      answer: 'not measured here',
      value: null,
      basis: 'needs the microvm backend and a kernel built from linux-source (npx isola setup kernel)',
    });

  // The education job executor study's question: a full VM (firmware, PCI devices) against a
  // microVM, the same guest, both restored from their snapshots.
  const vm = row(results, 'vm');
  if (vm?.coldStartMs && restore !== undefined) {
    const memory =
      vm.pssMb !== null && debian?.pssMb != null
        ? `; PSS per idle instance ${fmt(vm.pssMb, 1)} vs ${fmt(debian.pssMb, 1)} MB`
        : '';
    rows.push({
      question: 'Full VM (q35, firmware, PCI) vs microVM, restored',
      answer: `a full VM's restored cold start is ${fmt(vm.coldStartMs.p50 / restore, 2)}x the microVM's`,
      value: Math.round((vm.coldStartMs.p50 / restore) * 1000) / 1000,
      basis: `hello p50: vm ${fmt(vm.coldStartMs.p50)} ms, microvm ${fmt(restore)} ms${memory}; warm p50 ${fmt(vm.warmMs?.p50)} vs ${fmt(debian?.warmMs?.p50)} ms`,
    });
  } else
    rows.push({
      question: 'Full VM (q35, firmware, PCI) vs microVM, restored',
      answer: 'not measured here',
      value: null,
      basis: 'needs the vm and microvm backends',
    });

  // The DESMET study's axes: what each backend leaves of the host's CPU and memory bandwidth.
  const resources = results.resources?.rows.slice(1) ?? [];
  if (resources.length > 0) {
    const cpu = resources.map((r) => r.overhead.cpu).filter((v): v is number => v !== undefined);
    const signed = (v: number | undefined) => (v === undefined ? '–' : `${v > 0 ? '+' : ''}${v}%`);
    rows.push({
      question: 'CPU / memory bandwidth overhead against bare',
      answer: resources.map((r) => `${r.target} ${signed(r.overhead.cpu)} / ${signed(r.overhead.memory)}`).join(', '),
      value: cpu.length > 0 ? Math.max(...cpu) : null,
      basis: 'the resources dimension: the same kernels under each backend and bare, in turns (files and network: see Resources)',
    });
  }

  const gvisor = cold(row(results, 'gvisor'));
  const runc = cold(row(results, 'container:runc'));
  if (gvisor !== undefined && runc !== undefined) {
    rows.push({
      question: 'gVisor vs runc cold start',
      answer: `gVisor's cold start is ${fmt(gvisor / runc, 2)}x runc's`,
      value: Math.round((gvisor / runc) * 1000) / 1000,
      basis: `hello p50: runsc ${fmt(gvisor)} ms, runc ${fmt(runc)} ms; warm p50 ${fmt(row(results, 'gvisor')?.warmMs?.p50)} vs ${fmt(row(results, 'container:runc')?.warmMs?.p50)} ms`,
    });
  } else
    rows.push({ question: 'gVisor vs runc cold start', answer: 'not measured here', value: null, basis: 'needs runsc and runc' });

  const isolate = row(results, 'isolate');
  if (isolate?.coldStartMs) {
    const pool = isolate.prewarmedStartMs;
    rows.push({
      question: 'V8 isolate cold start through the API',
      answer: `${fmt(pool?.p50 ?? isolate.coldStartMs.p50)} ms p50${pool ? ' with the default pool of blank isolates' : ''} (Cloudflare publishes 5 ms for a Worker)`,
      value: pool?.p50 ?? isolate.coldStartMs.p50,
      basis: `no pool: ${fmt(isolate.coldStartMs.p50)} / ${fmt(isolate.coldStartMs.p99)} ms p50/p99${pool ? `; pool ready: ${fmt(pool.p50)} / ${fmt(pool.p99)} ms (${isolate.prewarmedHits} from the pool)` : ''}`,
    });
  }
  const workerd = results.peers.find((p) => p.name === 'workerd' && p.workload === 'hello' && !p.error);
  if (isolate?.warmMs && workerd?.warmMs) {
    rows.push({
      question: 'Isola isolate vs workerd (warm hello)',
      answer: `warm p50 ${fmt(isolate.warmMs.p50)} ms vs ${fmt(workerd.warmMs.p50)} ms; throughput ${fmt(isolate.throughputRps)} vs ${fmt(workerd.throughputRps)} requests/s (${fmt((isolate.throughputRps ?? 0) / (workerd.throughputRps ?? 1), 2)}x)`,
      value: Math.round(((isolate.throughputRps ?? 0) / (workerd.throughputRps ?? 1)) * 1000) / 1000,
      basis: `workerd starts in ${fmt(workerd.startMs?.p50)} ms (process to first response); Isola's isolate cold start ${fmt(isolate.coldStartMs?.p50)} ms`,
    });
  }
  for (const [backend, peer] of [
    ['container:runc', 'runc run'],
    ['container:crun', 'crun run'],
    ['gvisor', 'runsc run'],
  ] as const) {
    const r = row(results, backend);
    const turns = r?.sideBySide;
    if (turns) {
      rows.push({
        question: `Platform overhead on a ${backend} cold start`,
        answer: `${fmt((turns.apiMs.p50 / turns.bareMs.p50 - 1) * 100, 1)}% over \`${peer}\` of the same bundle`,
        value: Math.round((turns.apiMs.p50 / turns.bareMs.p50 - 1) * 10000) / 100,
        basis: `hello p50, ${turns.samples} of each taken in turns: Isola ${fmt(turns.apiMs.p50)} ms, bare ${fmt(turns.bareMs.p50)} ms`,
      });
      continue;
    }
    const p = results.peers.find((x) => x.name === peer && x.startMs);
    if (r?.coldStartMs && p?.startMs) {
      rows.push({
        question: `Platform overhead on a ${backend} cold start`,
        answer: `${fmt((r.coldStartMs.p50 / p.startMs.p50 - 1) * 100, 1)}% over \`${peer}\` of the same bundle`,
        value: Math.round((r.coldStartMs.p50 / p.startMs.p50 - 1) * 10000) / 100,
        basis: `hello p50: Isola ${fmt(r.coldStartMs.p50)} ms, bare ${fmt(p.startMs.p50)} ms`,
      });
    }
  }
  // What a warm call saves over a cold start, and what an idle instance costs, per backend: the
  // comparisons are the benchmark's to report, with the figures they rest on.
  const hellos = BACKEND_ORDER.flatMap((backend) => {
    const r = row(results, backend);
    return r ? [r] : [];
  });
  const warmCold = hellos.filter((r) => r.warmMs && r.coldStartMs);
  if (warmCold.length > 0) {
    rows.push({
      question: 'Warm call vs cold start (hello p50)',
      answer: warmCold
        .map(
          (r) =>
            `${r.backend}: warm ${fmt(r.warmMs?.p50)} ms, cold ${fmt(r.coldStartMs?.p50)} ms (${fmt((r.coldStartMs?.p50 ?? 0) / (r.warmMs?.p50 ?? 1), 1)}x)`,
        )
        .join('; '),
      value: null,
      basis: 'the same runs as the Results table; wasm makes a fresh instance for every call, warm or not',
    });
  }
  const costs = hellos.filter((r) => r.pssMb !== null);
  if (costs.length > 0) {
    rows.push({
      question: 'Host memory per idle hello instance (PSS)',
      answer: [...costs]
        .sort((a, b) => (a.pssMb ?? 0) - (b.pssMb ?? 0))
        .map((r) => `${r.backend} ${fmt(r.pssMb, 1)} MB`)
        .join(', '),
      value: null,
      basis: 'growth of the PSS of the server and everything it runs, per idle instance, cheapest first',
    });
  }
  rows.push(...densityRows(results, hellos));
  return rows;
}

/** The issue's density targets: the isolate at 1,000 idle instances per GB; a container at least as dense as its bare runtime. */
export const ISOLATE_PER_GB_TARGET = 1000;
export const CONTAINER_DENSITY_RATIO_TARGET = 1;

/** Idle hello instances per GB of a row: from the turns beside its bare peer where there were, else from its cold starts' instances. */
export function helloPerGb(r: WorkloadResult): number | null {
  return r.densityBeside?.platformPerGb ?? perGb(r.pssMb);
}

/**
 * Idle hello instances per GB (1024 MB) for every backend, the bare peer's beside the backends
 * that have one (measured in turns in the same run), and the issue's targets judged.
 */
export function densityRows(results: HarnessResults, hellos: WorkloadResult[]): HeadlineRow[] {
  const rows: HeadlineRow[] = [];
  const dense = hellos
    .map((r) => ({ r, perGb: helloPerGb(r) }))
    .filter((d) => d.perGb !== null)
    .sort((a, b) => (b.perGb ?? 0) - (a.perGb ?? 0));
  if (dense.length === 0) return rows;
  rows.push({
    question: 'Idle hello instances per GB (1024 MB)',
    answer: dense
      .map(({ r, perGb: figure }) => {
        const beside = r.densityBeside;
        return beside
          ? `${r.backend} ${fmt(figure)} (${beside.peer} ${fmt(beside.barePerGb)}: ${fmt(beside.ratio, 2)}x)`
          : `${r.backend} ${fmt(figure)}`;
      })
      .join(', '),
    value: null,
    basis:
      'host PSS per idle instance (the server, its sandboxes, containers with their runtime processes, VMs); beside a backend, its bare peer (the identical bundle under the runtime CLI, a bare `node` of the same agent, a bare QEMU boot of the same guest) counted the same way, in turns in the same run; ratio = platform density / bare density',
  });
  const isolate = hellos.find((r) => r.backend === 'isolate');
  const isolatePerGb = isolate ? helloPerGb(isolate) : null;
  if (isolate) {
    rows.push({
      question: 'V8 isolate density',
      answer:
        isolatePerGb === null
          ? 'an idle isolate cost less than the noise in the server’s memory here'
          : `${fmt(isolatePerGb)} idle hello isolates per GB: target at least ${fmt(ISOLATE_PER_GB_TARGET)}, ${isolatePerGb >= ISOLATE_PER_GB_TARGET ? 'met' : 'not met'}`,
      value: isolatePerGb,
      basis: `${fmt(isolate.pssMb, 2)} MB of host PSS per idle isolate`,
    });
  }
  for (const r of hellos) {
    const beside = r.densityBeside;
    if (!beside) continue;
    const container = ['container', 'gvisor'].includes(results.backends.find((b) => b.id === r.backend)?.isolation ?? '');
    const verdict =
      container && beside.ratio !== null
        ? `: target at least ${fmt(CONTAINER_DENSITY_RATIO_TARGET, 1)}x, ${beside.ratio >= CONTAINER_DENSITY_RATIO_TARGET ? 'met' : 'not met'}`
        : '';
    rows.push({
      question: `Density of ${r.backend} vs its bare peer`,
      // Three digits: a ratio that rounds to 1.00 may still fall short of it.
      answer: `${fmt(beside.ratio, 3)}x the density of ${beside.peer}${verdict}`,
      value: beside.ratio,
      basis: `median of ${beside.rounds} turns of ${beside.instances} idle hello instances each side: Isola ${fmt(beside.platformMb, 2)} MB (${fmt(beside.platformPerGb)} per GB), bare ${fmt(beside.bareMb, 2)} MB (${fmt(beside.barePerGb)} per GB); of which the server process's own share ${fmt(beside.serverMb.platform, 2)} vs ${fmt(beside.serverMb.bare, 2)} MB`,
    });
  }
  for (const r of results.results) {
    if (r.workload === 'hello' && r.densityBesideError)
      rows.push({
        question: `Density of ${r.backend} vs its bare peer`,
        answer: 'not measured: the bare peer failed',
        value: null,
        basis: r.densityBesideError,
      });
  }
  return rows;
}

// ---- Charts ----

async function svg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const BACKEND_ORDER = [
  'isolate',
  'wasm',
  'process',
  'container:runc',
  'container:crun',
  'gvisor',
  'microvm',
  'microvm:boot',
  'microvm:specialised',
  'vm',
];

type GroupedValue = { workload: string; backend: string; value: number; high?: number };

const WORKLOAD_ORDER = ['hello', 'json', 'compression', 'graph', 'thumbnail', 'fib', 'ml'];

function groupedEncoding(backends: string[]) {
  return {
    x: { field: 'workload', type: 'nominal' as const, title: null, axis: { labelAngle: 0 }, sort: WORKLOAD_ORDER },
    xOffset: { field: 'backend', type: 'nominal' as const, sort: backends },
    color: { field: 'backend', type: 'nominal' as const, sort: backends, title: 'backend', scale: { scheme: 'tableau10' } },
  };
}

/** Bars per workload, one per backend (a linear scale from zero). */
function groupedBars(title: string, values: GroupedValue[], axis: string): TopLevelSpec {
  const backends = BACKEND_ORDER.filter((b) => values.some((v) => v.backend === b));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    // With xOffset the step is per bar of a group.
    width: { step: 13 },
    height: 260,
    data: { values },
    mark: { type: 'bar' },
    encoding: { ...groupedEncoding(backends), y: { field: 'value', type: 'quantitative', title: axis } },
  } as TopLevelSpec;
}

/**
 * Latencies span four orders of magnitude (a wasm call to a microVM boot): a dot at p50 and a
 * line up to p99 per backend, on a log scale, where bars (which start at zero) cannot be drawn.
 */
function groupedDots(title: string, values: GroupedValue[], axis: string): TopLevelSpec {
  const backends = BACKEND_ORDER.filter((b) => values.some((v) => v.backend === b));
  const y = { field: 'value', type: 'quantitative' as const, title: axis, scale: { type: 'log' as const } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: { step: 13 },
    height: 280,
    data: { values },
    layer: [
      ...(values.some((v) => v.high !== undefined)
        ? [
            {
              mark: { type: 'rule' as const, strokeWidth: 2 },
              encoding: { ...groupedEncoding(backends), y, y2: { field: 'high' } },
            },
          ]
        : []),
      { mark: { type: 'point' as const, filled: true, size: 45, opacity: 1 }, encoding: { ...groupedEncoding(backends), y } },
    ],
  } as TopLevelSpec;
}

/** One horizontal bar per label, or on a log scale a dot (bars cannot start at zero there). */
function bars(
  title: string,
  values: { label: string; value: number; group: string }[],
  axis: string,
  log: boolean,
): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 420,
    height: { step: 22 },
    data: { values },
    layer: [
      {
        mark: log ? { type: 'point', filled: true, size: 70, opacity: 1 } : 'bar',
        encoding: {
          y: { field: 'label', type: 'nominal', title: null, sort: null, axis: { labelLimit: 260 } },
          x: { field: 'value', type: 'quantitative', title: axis, scale: log ? { type: 'log' } : { zero: true } },
          color: { field: 'group', type: 'nominal', title: null, scale: { scheme: 'set2' }, legend: { labelLimit: 300 } },
        },
      },
      {
        mark: { type: 'text', align: 'left', dx: log ? 7 : 3, fontSize: 10 },
        encoding: {
          y: { field: 'label', type: 'nominal', sort: null },
          x: { field: 'value', type: 'quantitative' },
          text: { field: 'value', type: 'quantitative', format: ',.3~r' },
        },
      },
    ],
  } as TopLevelSpec;
}

function isolationMatrix(results: HarnessResults): TopLevelSpec {
  const values = results.isolation.map((r) => ({
    backend: r.backend,
    attack: r.attack,
    outcome: !r.attempted && r.contained ? 'no API to try' : r.contained ? 'contained' : 'not contained',
  }));
  const backends = BACKEND_ORDER.filter((b) => values.some((v) => v.backend === b));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Isolation: escape attempts by backend',
    data: { values },
    width: { step: 82 },
    height: { step: 24 },
    layer: [
      {
        mark: { type: 'rect', stroke: 'white' },
        encoding: {
          x: { field: 'backend', type: 'nominal', sort: backends, title: null, axis: { labelAngle: -30 } },
          y: { field: 'attack', type: 'nominal', sort: ATTACKS.map((a) => a.name), title: null },
          color: {
            field: 'outcome',
            type: 'nominal',
            title: null,
            scale: { domain: ['contained', 'no API to try', 'not contained'], range: ['#59a14f', '#bab0ac', '#e15759'] },
          },
        },
      },
      {
        mark: { type: 'text', fontSize: 10, color: 'white' },
        encoding: {
          x: { field: 'backend', type: 'nominal', sort: backends },
          y: { field: 'attack', type: 'nominal', sort: ATTACKS.map((a) => a.name) },
          text: { field: 'outcome', type: 'nominal' },
        },
      },
    ],
  } as TopLevelSpec;
}

/** The report's charts as SVG strings, each with a caption. */
export async function charts(results: HarnessResults): Promise<{ id: string; caption: string; svg: string }[]> {
  const measured = results.results.filter((r) => !r.skipped && !r.error);
  const metric = (get: (r: WorkloadResult) => Percentiles | null) =>
    measured.flatMap((r) => {
      const p = get(r);
      return p ? [{ workload: r.workload, backend: r.backend, value: Math.max(p.p50, 0.001), high: Math.max(p.p99, 0.001) }] : [];
    });
  const out: { id: string; caption: string; svg: string }[] = [];
  const cold = metric((r) => r.coldStartMs);
  if (cold.length > 0) {
    out.push({
      id: 'cold-start',
      caption: 'Cold start through the API, no sandbox made ahead: p50 (dot) to p99 (end of the line), log scale.',
      svg: await svg(groupedDots('Cold start (ms)', cold, 'ms (log scale)')),
    });
  }
  const warm = metric((r) => r.warmMs);
  if (warm.length > 0) {
    out.push({
      id: 'warm',
      caption: 'Warm invocation through the API: p50 (dot) to p99 (end of the line), log scale.',
      svg: await svg(groupedDots('Warm latency (ms)', warm, 'ms (log scale)')),
    });
  }
  const throughput = measured.flatMap((r) =>
    r.throughputRps ? [{ workload: r.workload, backend: r.backend, value: r.throughputRps }] : [],
  );
  if (throughput.length > 0) {
    out.push({
      id: 'throughput',
      caption: `Throughput of warm invocations at concurrency ${results.settings.concurrency} (requests per second).`,
      svg: await svg(groupedBars('Throughput (requests/s)', throughput, 'requests/s')),
    });
  }
  // A log scale: figures at or below zero (an instance cheaper than the noise) are in the tables only.
  const memory = measured.flatMap((r) =>
    r.pssMb !== null && r.pssMb > 0 ? [{ workload: r.workload, backend: r.backend, value: r.pssMb }] : [],
  );
  if (memory.length > 0) {
    out.push({
      id: 'memory',
      caption: `Host memory (PSS) per idle instance, MB; density is ${results.settings.memoryBudgetMb} MB divided by it (see the tables).`,
      svg: await svg(groupedDots('Memory per idle instance (MB PSS)', memory, 'MB (log scale)')),
    });
  }
  const starts: { label: string; value: number; group: string }[] = [];
  for (const r of measured.filter((x) => x.workload === 'hello' && x.coldStartMs)) {
    starts.push({ label: `Isola ${r.backend}`, value: r.coldStartMs?.p50 ?? 0, group: 'Isola cold start' });
    if (r.prewarmedStartMs)
      starts.push({
        label: `Isola ${r.backend}, pool ready`,
        value: r.prewarmedStartMs.p50,
        group: 'Isola cold start, pool ready',
      });
  }
  for (const p of results.peers.filter((x) => x.startMs && x.workload === 'hello')) {
    starts.push({ label: p.name, value: p.startMs?.p50 ?? 0, group: 'peer, no platform' });
  }
  if (starts.length > 0) {
    out.push({
      id: 'peers',
      caption: 'Hello cold start through Isola against its peers in the same run (p50, log scale).',
      svg: await svg(bars('Start to first result (ms)', starts, 'ms (log scale)', true)),
    });
  }
  const rps: { label: string; value: number; group: string }[] = [];
  for (const r of measured.filter((x) => x.workload === 'hello' && x.throughputRps)) {
    rps.push({ label: `Isola ${r.backend}`, value: r.throughputRps ?? 0, group: 'Isola' });
  }
  for (const p of results.peers.filter((x) => x.throughputRps && x.workload === 'hello')) {
    rps.push({ label: p.name, value: p.throughputRps ?? 0, group: 'peer' });
  }
  if (rps.length > 0) {
    out.push({
      id: 'peer-throughput',
      caption: `Hello throughput at concurrency ${results.settings.concurrency} against workerd and a bare node:http server.`,
      svg: await svg(bars('Hello throughput (requests/s)', rps, 'requests/s', false)),
    });
  }
  const languages = (results.languages?.rows ?? []).flatMap((r) =>
    r.workload === 'hello' && r.coldStartMs
      ? [
          {
            workload: r.kind,
            backend: r.backend,
            value: Math.max(r.coldStartMs.p50, 0.001),
            high: Math.max(r.coldStartMs.p99, 0.001),
          },
        ]
      : [],
  );
  if (languages.length > 0) {
    out.push({
      id: 'languages-cold-start',
      caption:
        'Hello cold start per language and backend through the API, no blank sandbox made ahead: p50 (dot) to p99 (end of the line), log scale.',
      svg: await svg(groupedDots('Cold start by language (ms)', languages, 'ms (log scale)')),
    });
  }
  if (results.isolation.length > 0) {
    out.push({
      id: 'isolation',
      caption: 'The escape battery: green contained, red not contained, grey where the backend has no call to even try.',
      svg: await svg(isolationMatrix(results)),
    });
  }
  return out;
}

// ---- Tables ----

const p = (x: Percentiles | null) => (x ? `${fmt(x.p50)} / ${fmt(x.p99)}` : '–');
const pooled = (r: WorkloadResult) =>
  r.prewarmedStartMs ? `${p(r.prewarmedStartMs)} (${r.prewarmedHits} from the pool)` : r.prewarmedHits ? r.prewarmedHits : '–';

function hostLine(results: HarnessResults): string {
  const h = results.host;
  return `${h.cpu}, ${h.cores} cores, ${h.memoryGiB} GiB, Linux ${h.kernel}${h.debian ? `, Debian ${h.debian}` : ''}, Node ${h.node}${h.accelerator ? `, microVMs under ${h.accelerator}` : ''}; ${h.date}`;
}

/** The Markdown summary. */
export function summaryMarkdown(results: HarnessResults, rows: HeadlineRow[]): string {
  const lines: string[] = [];
  lines.push(`# Isola benchmark${results.quick ? ' (quick)' : ''}`, '', `Host: ${hostLine(results)}.`, '');
  if (!backendsRan(results)) {
    if (results.resources) lines.push(...resourcesMarkdown(results.resources));
    if (results.languages) lines.push(...languagesMarkdown(results.languages));
    return `${lines.join('\n')}\n`;
  }
  lines.push(
    `Settings: ${results.settings.coldSamples} cold starts and ${results.settings.warmSamples} warm calls per figure (fewer for the slowest), throughput for ${results.settings.throughputSeconds} s at concurrency ${results.settings.concurrency}, density in ${results.settings.memoryBudgetMb} MB. Run took ${results.durationSeconds} s.`,
    '',
  );
  lines.push('## Headline', '', '| question | answer | from |', '| --- | --- | --- |');
  for (const r of rows) lines.push(`| ${r.question} | ${r.answer} | ${r.basis} |`);
  lines.push('', '## Backends', '', '| backend | available | detail |', '| --- | --- | --- |');
  for (const b of results.backends)
    lines.push(`| ${b.id} | ${b.available ? 'yes' : 'no'} | ${b.detail.replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`);
  if (results.warnings.length > 0) {
    lines.push('', '## Warnings', '');
    for (const warning of results.warnings) lines.push(`- ${warning}`);
  }
  lines.push(
    '',
    '## Results',
    '',
    'Latencies in ms as p50 / p99; cold start is through the API from a deployed function with no instance to its result, with no sandbox made ahead; "cold, pool ready" is the same with the server\'s default pool of blank sandboxes (hello only).',
    '',
    '| backend | workload | cold start | cold init | cold, pool ready | warm | requests/s | PSS MB | density |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of results.results) {
    if (r.skipped) {
      lines.push(`| ${r.backend} | ${r.workload} | skipped: ${r.skipped} | | | | | | |`);
      continue;
    }
    const error = r.error ? ` (${r.error.replace(/\|/g, '\\|').slice(0, 120)})` : '';
    lines.push(
      `| ${r.backend} | ${r.workload}${error} | ${p(r.coldStartMs)} | ${p(r.coldInitMs)} | ${pooled(r)} | ${p(r.warmMs)} | ${fmt(r.throughputRps)} | ${fmt(r.pssMb, 1)} | ${fmt(r.density)} |`,
    );
  }
  lines.push(
    '',
    '## Peers',
    '',
    '| peer | of | workload | start | warm | requests/s | what |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const x of results.peers) {
    lines.push(
      `| ${x.name} | ${x.peerOf} | ${x.workload} | ${x.startMs ? p(x.startMs) : '–'} | ${x.warmMs ? p(x.warmMs) : '–'} | ${fmt(x.throughputRps)} | ${x.error ? `failed: ${x.error}` : x.description} |`,
    );
  }
  if (results.isolation.length > 0) {
    const backends = [...new Set(results.isolation.map((r) => r.backend))];
    lines.push(
      '',
      '## Isolation',
      '',
      `| attack | ${backends.join(' | ')} |`,
      `| --- | ${backends.map(() => '---').join(' | ')} |`,
    );
    for (const attack of ATTACKS) {
      const cells = backends.map((b) => {
        const r = results.isolation.find((x) => x.backend === b && x.attack === attack.name);
        return !r ? '' : !r.attempted && r.contained ? 'n/a' : r.contained ? 'contained' : '**NOT contained**';
      });
      lines.push(`| ${attack.name} | ${cells.join(' | ')} |`);
    }
    lines.push('', 'Notes:', '');
    for (const r of results.isolation) lines.push(`- ${r.backend}, ${r.attack}: ${r.note}`);
  }
  if (results.resources) lines.push('', ...resourcesMarkdown(results.resources));
  if (results.languages) lines.push('', ...languagesMarkdown(results.languages));
  return `${lines.join('\n')}\n`;
}

const unmeasured = (r: ResourcesResults) => r.unavailable.map((u) => `${u.target}: ${u.why}`);

/** The resources dimension's section: the overhead of each backend against bare. */
export function resourcesMarkdown(r: ResourcesResults): string[] {
  const [how, what, wasm] = resourcesNotes(r);
  const missing = unmeasured(r);
  return [
    '## Resources against bare',
    '',
    `${how} ${what}`,
    '',
    resourcesTable(r.rows),
    '',
    wasm as string,
    ...(missing.length > 0 ? ['', 'Not measured:', ...missing.map((m) => `- ${m}`)] : []),
    '',
  ];
}

function resourcesHtml(r: ResourcesResults): string {
  const [how, what, wasm] = resourcesNotes(r).map((line) => escapeHtml(line));
  const { head, body, notes } = resourcesCells(r.rows);
  const missing = unmeasured(r);
  return `<h2>Resources against bare</h2>
<p>${how} ${what}</p>
<figure id="chart-resources">${resourcesChart(r.rows)}<figcaption>Overhead per backend against bare, in % (0: as bare; right: worse).</figcaption></figure>
<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${body
    .map((cells) => `<tr>${cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>
<p>${wasm}</p>
${notes.length > 0 ? `<p class="muted">n/a: ${notes.map((n) => escapeHtml(n)).join('; ')}.</p>` : ''}
${missing.length > 0 ? `<p>Not measured: ${missing.map((m) => escapeHtml(m)).join('; ')}.</p>` : ''}`;
}

const escapeHtml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The HTML report: the summary's tables and the charts, in one file. */
export function reportHtml(
  results: HarnessResults,
  rows: HeadlineRow[],
  figures: { id: string; caption: string; svg: string }[],
): string {
  const table = (head: string[], body: string[][]) =>
    `<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${body
      .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`)
      .join('')}</tbody></table>`;
  const results_ = results.results.map((r) => [
    escapeHtml(r.backend),
    escapeHtml(r.workload),
    r.skipped
      ? `<span class="muted">skipped: ${escapeHtml(r.skipped)}</span>`
      : r.error
        ? `<span class="bad">${escapeHtml(r.error)}</span>`
        : p(r.coldStartMs),
    p(r.coldInitMs),
    pooled(r),
    p(r.warmMs),
    fmt(r.throughputRps),
    fmt(r.pssMb, 1),
    fmt(r.density),
  ]);
  const isolationRows = ATTACKS.map((a) => [
    escapeHtml(a.name),
    ...[...new Set(results.isolation.map((r) => r.backend))].map((b) => {
      const r = results.isolation.find((x) => x.backend === b && x.attack === a.name);
      if (!r) return '';
      const cls = !r.attempted && r.contained ? 'muted' : r.contained ? 'good' : 'bad';
      const text = !r.attempted && r.contained ? 'n/a' : r.contained ? 'contained' : 'not contained';
      return `<span class="${cls}" title="${escapeHtml(r.note)}">${text}</span>`;
    }),
  ]);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Isola benchmark</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
figure { margin: 1rem 0 2rem; } figcaption { color: #555; font-size: 13px; }
.good { color: #2e7d32; } .bad { color: #c62828; font-weight: 600; } .muted { color: #777; }
</style></head><body>
<h1>Isola benchmark${results.quick ? ' (quick)' : ''}</h1>
<p>Host: ${escapeHtml(hostLine(results))}. Run took ${results.durationSeconds} s.</p>
${
  backendsRan(results)
    ? `<h2>Headline</h2>
${table(
  ['question', 'answer', 'from'],
  rows.map((r) => [escapeHtml(r.question), escapeHtml(r.answer), escapeHtml(r.basis)]),
)}
<h2>Charts</h2>
${figures.map((f) => `<figure id="chart-${f.id}">${f.svg}<figcaption>${escapeHtml(f.caption)}</figcaption></figure>`).join('\n')}
<h2>Backends</h2>
${table(
  ['backend', 'available', 'detail'],
  results.backends.map((b) => [escapeHtml(b.id), b.available ? 'yes' : '<span class="bad">no</span>', escapeHtml(b.detail)]),
)}
${results.warnings.length > 0 ? `<h2>Warnings</h2><ul>${results.warnings.map((w) => `<li class="bad">${escapeHtml(w)}</li>`).join('')}</ul>` : ''}
<h2>Results</h2>
<p>Latencies in ms as p50 / p99. Cold start: through the API, a deployed function with no instance, to its result, with no sandbox made ahead; "cold, pool ready": the same with the server's default pool of blank sandboxes (hello only). PSS: host memory per idle instance. Density: idle instances in ${results.settings.memoryBudgetMb} MB.</p>
${table(['backend', 'workload', 'cold start', 'cold init', 'cold, pool ready', 'warm', 'requests/s', 'PSS MB', 'density'], results_)}
<h2>Peers</h2>
${table(
  ['peer', 'of', 'workload', 'start', 'warm', 'requests/s', 'what'],
  results.peers.map((x) => [
    escapeHtml(x.name),
    escapeHtml(x.peerOf),
    escapeHtml(x.workload),
    x.startMs ? p(x.startMs) : '–',
    x.warmMs ? p(x.warmMs) : '–',
    fmt(x.throughputRps),
    x.error ? `<span class="bad">${escapeHtml(x.error)}</span>` : escapeHtml(x.description),
  ]),
)}
<h2>Isolation</h2>
${results.isolation.length > 0 ? table(['attack', ...new Set(results.isolation.map((r) => r.backend))], isolationRows) : '<p>Not run.</p>'}
<ul>${results.isolation.map((r) => `<li>${escapeHtml(r.backend)}, ${escapeHtml(r.attack)}: ${escapeHtml(r.note)}</li>`).join('')}</ul>
<h2>Workloads</h2>
${table(
  ['workload', 'kind', 'what it does'],
  results.workloads.map((w) => [escapeHtml(w.name), escapeHtml(w.kind), escapeHtml(w.description)]),
)}`
    : `${figures.map((f) => `<figure id="chart-${f.id}">${f.svg}<figcaption>${escapeHtml(f.caption)}</figcaption></figure>`).join('\n')}`
}
${results.resources ? resourcesHtml(results.resources) : ''}
${results.languages ? languagesHtml(results.languages, escapeHtml) : ''}
</body></html>
`;
}

/** Writes results.json, summary.md and report.html into `outDir`; returns their paths. */
export async function writeReport(
  results: HarnessResults,
  outDir: string,
): Promise<{ json: string; markdown: string; html: string }> {
  mkdirSync(outDir, { recursive: true });
  const rows = headline(results);
  const figures = await charts(results);
  const paths = { json: join(outDir, 'results.json'), markdown: join(outDir, 'summary.md'), html: join(outDir, 'report.html') };
  writeFileSync(paths.json, `${JSON.stringify({ ...results, headline: rows }, null, 2)}\n`);
  writeFileSync(paths.markdown, summaryMarkdown(results, rows));
  writeFileSync(paths.html, reportHtml(results, rows, figures));
  return paths;
}
