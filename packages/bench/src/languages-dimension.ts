/**
 * The languages dimension of `isola bench`: hello and the graph workload in every kind, on every
 * backend that runs the kind here, through a real `isola serve`: cold start without and with a
 * pool of blank sandboxes of the kind, warm latency, host memory of an idle instance; a Java
 * function restored from its microVM snapshot against one that boots the JVM; container cold
 * starts beside `runc run` of the same bundle; and the bare runtimes starting the same function
 * in the same run, so that every figure is also a ratio.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { ISOLATIONS_FOR_KIND, type Isolation } from '../../../src/core/kinds.js';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { actionLoopStart } from './actionloop.js';
import {
  HarnessError,
  type Percentiles,
  type Progress,
  pick,
  probeTarget,
  REFILL_MS,
  runtimeOf,
  SIDE_BY_SIDE_GAP_MS,
  selectTargets,
  startTargetServer,
  stopAndCheck,
  TARGETS,
  type Target,
  TargetRun,
} from './harness.js';
import {
  execFor,
  functionSource,
  LANGUAGE_DESCRIPTIONS,
  LANGUAGE_KINDS,
  LANGUAGE_PARAMS,
  LANGUAGE_PEERS,
  LANGUAGE_WORKLOADS,
  type LanguageKind,
  type LanguageWorkload,
  prewarmToken,
  sameResult,
} from './languages.js';
import { languageSupport, packageForBareRun } from './languages-platform.js';
import { bareOciRun } from './peers.js';
import { round } from './pss.js';
import { pause, summarize, time } from './stats.js';

export const LANGUAGE_MEMORY_MB = 256;
const TIMEOUT_MS = 300_000;

/** The microVM backend's function snapshots in a data dir that are complete. */
export function functionSnapshots(dataDir: string): string[] {
  const root = join(dataDir, 'microvm');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => d.startsWith('snapshots-'))
    .flatMap((d) => readdirSync(join(root, d)).map((e) => join(root, d, e)))
    .filter((dir) => basename(dir).startsWith('fn-') && existsSync(join(dir, '.complete')));
}

/** One kind, one workload, one backend. */
export interface LanguageRow {
  kind: LanguageKind;
  backend: string;
  workload: LanguageWorkload;
  /** Through the API, a deployed function with no instance, no blank sandbox made ahead. */
  coldStartMs: Percentiles | null;
  coldInitMs: Percentiles | null;
  /** The same on a server keeping one blank sandbox of the kind ready (hello only). */
  pooledStartMs?: Percentiles | null;
  pooledHits?: string;
  /** On `process`: the bare runtime's start (spawn to first result), taken in turns with the pooled starts. */
  bareInTurns?: { name: string; startMs: Percentiles; samples: number };
  warmMs: Percentiles | null;
  /** Host memory (PSS) per idle instance. */
  pssMb: number | null;
  /** What the function returned, and whether it is the JavaScript version's result. */
  result?: unknown;
  matchesReference?: boolean;
  samples: { cold: number; warm: number; pooled: number };
  skipped?: string;
  error?: string;
}

/** A function annotated `snapshot: true` on the microVM: restored from its own snapshot. */
export interface SnapshotRow {
  kind: LanguageKind;
  backend: string;
  workload: LanguageWorkload;
  /** Cold starts restored from the function's snapshot (its runtime already loaded). */
  restoreMs: Percentiles | null;
  restored: string;
  /** The same backend's cold start that boots the runtime (the hello row's), for the ratio. */
  bootMs: number | null;
  samples: number;
  error?: string;
}

/** Cold starts through the API and bare `<runtime> run` of the same bundle, taken in turns. */
export interface LanguageSideBySide {
  kind: LanguageKind;
  backend: string;
  runtime: 'runc' | 'crun' | 'runsc';
  apiMs: Percentiles | null;
  bareMs: Percentiles | null;
  samples: number;
  /** Where the bare run's package came from. */
  package: string;
  error?: string;
}

export interface LanguagePeerResult {
  kind: LanguageKind;
  name: string;
  workload: LanguageWorkload;
  description: string;
  /** Spawn to the first result; `ackMs` spawn to the runtime's ack (the function loaded). */
  startMs: Percentiles | null;
  ackMs: Percentiles | null;
  samples: number;
  result?: unknown;
  matchesReference?: boolean;
  error?: string;
}

export interface LanguageTargetCheck {
  name: string;
  target: string;
  measured: number | null;
  met: boolean | null;
  basis: string;
}

export interface LanguageHeadline {
  kind: LanguageKind;
  /** The backend (and how: `pool ready` or not) with the lowest hello start, p50. */
  fastest: string | null;
  startMs: number | null;
  /** That start over a JavaScript function's start on the isolate backend. */
  vsIsolate: number | null;
  basis: string;
}

export interface LanguageBackend {
  id: string;
  isolation: Isolation;
  available: boolean;
  detail: string;
  /** Per kind: why the backend does not run it here (isola doctor's reason). */
  unsupported: Partial<Record<LanguageKind, string>>;
  /** How long its measurements took. */
  seconds?: number;
}

export interface LanguagesResults {
  quick: boolean;
  kinds: LanguageKind[];
  workloads: { name: LanguageWorkload; description: string; params: Record<string, unknown> }[];
  settings: LanguageCounts;
  backends: LanguageBackend[];
  /** The JavaScript version's result of each workload, computed here. */
  reference: Record<LanguageWorkload, unknown>;
  rows: LanguageRow[];
  snapshots: SnapshotRow[];
  sideBySide: LanguageSideBySide[];
  peers: LanguagePeerResult[];
  targets: LanguageTargetCheck[];
  headline: LanguageHeadline[];
  durationSeconds: number;
  warnings: string[];
}

export interface LanguageCounts {
  cold: number;
  /** Cold starts of the CPU workload (it is the slow one on an emulated CPU). */
  coldGraph: number;
  warm: number;
  warmGraph: number;
  pooled: number;
  snapshotRestores: number;
  peerStarts: number;
  sideBySide: number;
}

/** Small on purpose: the whole dimension runs in minutes on a 2-core host. */
export function languageCounts(quick: boolean): LanguageCounts {
  return quick
    ? { cold: 2, coldGraph: 1, warm: 5, warmGraph: 2, pooled: 2, snapshotRestores: 2, peerStarts: 5, sideBySide: 2 }
    : { cold: 6, coldGraph: 2, warm: 30, warmGraph: 5, pooled: 6, snapshotRestores: 4, peerStarts: 10, sideBySide: 6 };
}

/** Fewer cold starts where each takes seconds (a microVM under an emulated CPU, gVisor). */
function coldCount(counts: LanguageCounts, target: Target, workload: LanguageWorkload): number {
  const base = workload === 'hello' ? counts.cold : counts.coldGraph;
  if (target.isolation === 'microvm' || target.isolation === 'gvisor') return Math.max(1, Math.ceil(base / 2));
  return base;
}

/** The backends measured when none are named: one of each kind of isolation (wasm: Python through Pyodide). */
export const DEFAULT_LANGUAGE_BACKENDS = ['isolate', 'wasm', 'process', 'container:runc', 'gvisor', 'microvm'];

/** The targets a `--backends` list means for this dimension (microvm's boot and specialised-guest variants are left out). */
export function languageTargets(names: readonly string[] | undefined): Target[] {
  const chosen =
    names && names.length > 0 ? selectTargets(names) : TARGETS.filter((t) => DEFAULT_LANGUAGE_BACKENDS.includes(t.id));
  return chosen.filter((t) => t.id !== 'microvm:boot' && t.id !== 'microvm:specialised');
}

export function selectKinds(names: readonly string[] | undefined): LanguageKind[] {
  if (!names || names.length === 0) return [...LANGUAGE_KINDS];
  const chosen = new Set<LanguageKind>();
  for (const name of names) {
    const kind = LANGUAGE_KINDS.find((k) => k === name || prewarmToken(k) === name);
    if (!kind) throw new HarnessError(`Unknown kind "${name}"; choose from ${LANGUAGE_KINDS.join(', ')}.`);
    chosen.add(kind);
  }
  return LANGUAGE_KINDS.filter((k) => chosen.has(k));
}

/** The JavaScript version's result: what every other kind must return. */
export function referenceResult(workload: LanguageWorkload): unknown {
  const main = new Function(`${functionSource('nodejs:20', workload)}\nreturn main;`)() as (
    params: Record<string, unknown>,
  ) => unknown;
  return JSON.parse(JSON.stringify(main(LANGUAGE_PARAMS[workload])));
}

export interface LanguagesOptions {
  quick: boolean;
  backends?: string[];
  kinds?: string[];
  dataDir: string;
  peers?: boolean;
  progress: Progress;
}

const annotation = (record: ActivationRecord | undefined, key: string) => record?.annotations.find((a) => a.key === key)?.value;

/** Deploys, invokes and measures one kind's functions on one server. */
class LanguageRun {
  constructor(
    readonly run: TargetRun,
    private readonly cacheDir: string,
    private readonly quick: boolean,
  ) {}

  get target(): Target {
    return this.run.target;
  }

  async deploy(
    name: string,
    kind: LanguageKind,
    workload: LanguageWorkload,
    tag: string,
    annotations: { key: string; value: unknown }[] = [],
  ): Promise<void> {
    await this.run.put(name, {
      exec: execFor(kind, workload, tag, this.cacheDir),
      limits: { memory: LANGUAGE_MEMORY_MB, timeout: TIMEOUT_MS },
      annotations: [{ key: 'isolation', value: this.target.isolation }, ...annotations],
    });
  }

  /** A first function of the kind, so that what a first instance needs (an image, a base snapshot) is made before timing. */
  async warmUp(kind: LanguageKind): Promise<void> {
    const name = `lang-warm-up-${prewarmToken(kind)}`;
    await this.deploy(name, kind, 'hello', `${this.target.id}-warm-up-${Date.now()}`);
    await this.run.invoke(name, LANGUAGE_PARAMS.hello);
    await this.run.remove(name);
  }

  /** Instances of one function, from the server's gauge. */
  async instancesOf(name: string): Promise<number> {
    const metrics = await this.run.server.metrics();
    let total = 0;
    for (const match of metrics.matchAll(new RegExp(`^isola_function_instances\\{[^}]*action="${name}"[^}]*\\} (\\d+)`, 'gm')))
      total += Number(match[1]);
    return total;
  }

  async measure(
    kind: LanguageKind,
    workload: LanguageWorkload,
    counts: LanguageCounts,
    reference: unknown,
  ): Promise<LanguageRow> {
    const cold = coldCount(counts, this.target, workload);
    const warmCount = workload === 'hello' ? counts.warm : counts.warmGraph;
    const row: LanguageRow = {
      kind,
      backend: this.target.id,
      workload,
      coldStartMs: null,
      coldInitMs: null,
      warmMs: null,
      pssMb: null,
      samples: { cold, warm: warmCount, pooled: 0 },
    };
    const token = prewarmToken(kind);
    const names: string[] = [];
    try {
      // An idle instance's memory is the same whatever it last ran: quick runs take it from hello only.
      const withMemory = workload === 'hello' || !this.quick;
      if (withMemory) await this.run.settle();
      const before = withMemory ? this.run.memory() : 0;
      const starts: number[] = [];
      const inits: number[] = [];
      for (let i = 0; i < cold; i++) {
        const name = `lang-cold-${token}-${workload}-${i}`;
        await this.deploy(name, kind, workload, `${this.target.id}-${Date.now()}-${i}`);
        names.push(name);
        let record: ActivationRecord | undefined;
        starts.push(
          await time(async () => {
            record = await this.run.invoke(name, LANGUAGE_PARAMS[workload]);
          }),
        );
        if (annotation(record, 'coldStart') !== true) throw new Error(`${name} was not a cold start`);
        inits.push(Number(annotation(record, 'initTime') ?? 0));
        row.result = record?.response.result;
      }
      row.matchesReference = sameResult(row.result, reference);
      row.coldStartMs = pick(summarize(starts));
      row.coldInitMs = pick(summarize(inits));
      if (withMemory) {
        await pause(1000);
        row.pssMb = round((this.run.memory() - before) / cold, 2);
      }
      for (const name of names.splice(0)) await this.run.remove(name);

      const warmName = `lang-warm-${token}-${workload}`;
      names.push(warmName);
      await this.deploy(warmName, kind, workload, `${this.target.id}-warm`);
      await this.run.invoke(warmName, LANGUAGE_PARAMS[workload]);
      const path = `/api/v1/namespaces/_/actions/${warmName}?blocking=true&result=true`;
      for (let i = 0; i < Math.max(2, warmCount / 10); i++) await this.run.timedCall(path, LANGUAGE_PARAMS[workload]);
      const warm: number[] = [];
      for (let i = 0; i < warmCount; i++) warm.push(await this.run.timedCall(path, LANGUAGE_PARAMS[workload]));
      row.warmMs = pick(summarize(warm));
    } catch (error) {
      row.error = (error as Error).message.slice(0, 600);
    } finally {
      for (const name of names) await this.run.remove(name).catch(() => {});
    }
    return row;
  }

  /**
   * Cold starts of distinct functions of a kind on a server that keeps a blank sandbox of the
   * kind ready, pausing between them so that the pool refills.
   */
  async pooled(
    kind: LanguageKind,
    count: number,
    gapMs: number,
    /** Started before each sample, while the pool refills: a bare peer's start, taken in turns with the platform's. */
    beside?: () => Promise<unknown>,
  ): Promise<{ start: Percentiles; hits: string }> {
    const token = prewarmToken(kind);
    const samples: number[] = [];
    const names: string[] = [];
    try {
      await pause(gapMs);
      for (let i = 0; i < count; i++) {
        const name = `lang-pooled-${token}-${i}`;
        await this.deploy(name, kind, 'hello', `${this.target.id}-pooled-${Date.now()}-${i}`);
        names.push(name);
        await beside?.();
        await pause(gapMs);
        samples.push(await time(() => this.run.invoke(name, LANGUAGE_PARAMS.hello)));
      }
      const metrics = await this.run.server.metrics();
      const hits = names.filter((name) =>
        new RegExp(`isola_starts_total\\{[^}]*action="${name}"[^}]*start="stemcell"\\} [1-9]`).test(metrics),
      ).length;
      return { start: pick(summarize(samples)), hits: `${hits} of ${count}` };
    } finally {
      for (const name of names) await this.run.remove(name).catch(() => {});
    }
  }

  /**
   * A function annotated `snapshot: true`: its first cold start loads the runtime and the server
   * snapshots the VM after it; with a keep-alive of a moment, every later call finds no instance
   * and restores a clone of that snapshot.
   */
  async snapshotRestores(kind: LanguageKind, count: number): Promise<Pick<SnapshotRow, 'restoreMs' | 'restored'>> {
    const name = `lang-snapshot-${prewarmToken(kind)}`;
    const dataDir = this.run.server.dataDir;
    const before = functionSnapshots(dataDir).length;
    await this.deploy(name, kind, 'hello', `${this.target.id}-snapshot-${Date.now()}`, [
      { key: 'snapshot', value: true },
      { key: 'keepAlive', value: 'fixed:500ms' },
    ]);
    try {
      await this.run.invoke(name, LANGUAGE_PARAMS.hello);
      // The snapshot is taken in the background after that first initialisation.
      const deadline = Date.now() + 10 * 60_000;
      while (functionSnapshots(dataDir).length <= before) {
        if (Date.now() > deadline) throw new Error("the function's snapshot was not taken within 10 minutes");
        await pause(500);
      }
      const samples: number[] = [];
      for (let attempt = 0; attempt < count; attempt++) {
        // A keep-alive of a moment: once the instance is gone, the next call is a cold start.
        while ((await this.instancesOf(name)) > 0) {
          if (Date.now() > deadline) throw new Error('the instance was not reclaimed');
          await pause(100);
        }
        let record: ActivationRecord | undefined;
        const ms = await time(async () => {
          record = await this.run.invoke(name, LANGUAGE_PARAMS.hello);
        });
        if (annotation(record, 'coldStart') === true && annotation(record, 'restoredFromSnapshot') === true) samples.push(ms);
      }
      if (samples.length === 0) throw new Error(`none of ${count} cold starts restored the function's snapshot`);
      return { restoreMs: pick(summarize(samples)), restored: `${samples.length} of ${count}` };
    } finally {
      await this.run.remove(name).catch(() => {});
    }
  }

  /** See LanguageSideBySide. */
  async sideBySide(kind: LanguageKind, runtime: 'runc' | 'crun' | 'runsc', count: number): Promise<LanguageSideBySide> {
    const bare = await packageForBareRun(kind, 'hello', this.run.server.dataDir, this.cacheDir, LANGUAGE_MEMORY_MB);
    const workDir = mkdtempSync(join(tmpdir(), 'isola-lang-side-by-side-'));
    const api: number[] = [];
    const runs: number[] = [];
    try {
      for (let i = 0; i < count; i++) {
        await pause(SIDE_BY_SIDE_GAP_MS);
        runs.push(
          ...(await bareOciRun(
            runtime,
            bare.image,
            workDir,
            { ...bare.fn, params: LANGUAGE_PARAMS.hello },
            1,
            LANGUAGE_MEMORY_MB,
            i,
          )),
        );
        const name = `lang-side-by-side-${prewarmToken(kind)}-${i}`;
        await this.deploy(name, kind, 'hello', `${this.target.id}-side-by-side-${Date.now()}-${i}`);
        await pause(SIDE_BY_SIDE_GAP_MS);
        api.push(await time(() => this.run.invoke(name, LANGUAGE_PARAMS.hello)));
        await this.run.remove(name);
      }
      return {
        kind,
        backend: this.target.id,
        runtime,
        apiMs: pick(summarize(api)),
        bareMs: pick(summarize(runs)),
        samples: count,
        package: bare.source,
      };
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  }
}

/** How long a microVM of the pool takes to start Python, Ruby, PHP or a JVM under TCG after its restore. */
const EMULATED_RUNTIME_REFILL_MS = 10_000;

/** Every bare runtime starting the same functions, no platform. */
async function measureLanguagePeers(
  kinds: LanguageKind[],
  counts: LanguageCounts,
  cacheDir: string,
  reference: Record<LanguageWorkload, unknown>,
  progress: Progress,
): Promise<LanguagePeerResult[]> {
  const results: LanguagePeerResult[] = [];
  for (const peer of LANGUAGE_PEERS.filter((p) => kinds.includes(p.kind))) {
    for (const workload of LANGUAGE_WORKLOADS) {
      progress.step(`languages: ${peer.name} ${workload}`);
      const samples = workload === 'hello' ? counts.peerStarts : Math.max(1, Math.ceil(counts.peerStarts / 3));
      const row: LanguagePeerResult = {
        kind: peer.kind,
        name: peer.name,
        workload,
        description: peer.description,
        startMs: null,
        ackMs: null,
        samples,
      };
      try {
        const command = peer.prepare(workload, cacheDir, LANGUAGE_MEMORY_MB);
        const starts: number[] = [];
        const acks: number[] = [];
        for (let i = 0; i < samples; i++) {
          const start = await actionLoopStart(command, LANGUAGE_PARAMS[workload]);
          starts.push(start.resultMs);
          acks.push(start.ackMs);
          row.result = start.result;
        }
        row.startMs = pick(summarize(starts));
        row.ackMs = pick(summarize(acks));
        row.matchesReference = sameResult(row.result, reference[workload]);
      } catch (error) {
        row.error = (error as Error).message.slice(0, 600);
      }
      results.push(row);
      progress.done();
    }
  }
  return results;
}

const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;

/** The targets the issue sets, checked against this run's figures. */
export function languageTargetChecks(results: Omit<LanguagesResults, 'targets' | 'headline'>): LanguageTargetCheck[] {
  const checks: LanguageTargetCheck[] = [];
  const hello = (kind: LanguageKind, backend: string) =>
    results.rows.find((r) => r.kind === kind && r.backend === backend && r.workload === 'hello' && !r.skipped && !r.error);
  const python = hello('python:3', 'process');
  // Preferably the bare starts taken in turns with the pooled ones; else the peers' own.
  const peer = results.peers.find((p) => p.name === 'bare python3' && p.workload === 'hello' && p.startMs);
  const bare = python?.bareInTurns?.startMs ?? peer?.startMs;
  if (python?.coldStartMs && bare) {
    // The server as it runs out of the box keeps a blank sandbox ready; without one the agent's own start is in the figure.
    const pooled = python.pooledStartMs?.p50;
    const measured = ratio(pooled ?? python.coldStartMs.p50, bare.p50);
    checks.push({
      name: 'Python cold start on process vs bare python3',
      target: '<= 1.3x',
      measured,
      met: measured <= 1.3,
      basis: `hello p50: Isola ${pooled !== undefined ? `with a blank sandbox of the kind ready ${pooled} ms (${python.pooledHits} from the pool); without one ${python.coldStartMs.p50} ms = ${ratio(python.coldStartMs.p50, bare.p50)}x` : `${python.coldStartMs.p50} ms (no pool figure)`}; bare python3 ${bare.p50} ms (spawn to first result${python.bareInTurns ? `, ${python.bareInTurns.samples} taken in turns with the pooled starts` : ''})`,
    });
  } else
    checks.push({
      name: 'Python cold start on process vs bare python3',
      target: '<= 1.3x',
      measured: null,
      met: null,
      basis:
        python?.error ??
        python?.skipped ??
        results.peers.find((p) => p.name === 'bare python3' && p.workload === 'hello')?.error ??
        'needs python:3 on process and the bare python3 peer',
    });
  const snapshot = results.snapshots.find((s) => s.kind === 'java:17' && s.restoreMs && s.bootMs);
  if (snapshot?.restoreMs && snapshot.bootMs) {
    const measured = ratio(snapshot.bootMs, snapshot.restoreMs.p50);
    checks.push({
      name: 'Java cold start on microvm: restored from its snapshot vs booting the JVM',
      target: '>= 10x faster',
      measured,
      met: measured >= 10,
      basis: `hello p50: booting the JVM in a fresh clone ${snapshot.bootMs} ms, restored from the function's snapshot ${snapshot.restoreMs.p50} ms (${snapshot.restored} restored)`,
    });
  } else {
    const failed = results.snapshots.find((s) => s.kind === 'java:17');
    checks.push({
      name: 'Java cold start on microvm: restored from its snapshot vs booting the JVM',
      target: '>= 10x faster',
      measured: null,
      met: null,
      basis: failed?.error ?? hello('java:17', 'microvm')?.error ?? 'needs java:17 on microvm',
    });
  }
  for (const turns of results.sideBySide) {
    const name = `Platform overhead on a ${turns.backend} cold start, ${turns.kind}`;
    if (turns.apiMs && turns.bareMs) {
      const measured = Math.round((turns.apiMs.p50 / turns.bareMs.p50 - 1) * 10000) / 100;
      checks.push({
        name,
        target: '<= 10%',
        measured,
        met: measured <= 10,
        basis: `hello p50, ${turns.samples} of each in turns: Isola ${turns.apiMs.p50} ms, bare \`${turns.runtime} run\` of the same bundle ${turns.bareMs.p50} ms (${turns.package})`,
      });
    } else checks.push({ name, target: '<= 10%', measured: null, met: null, basis: turns.error ?? 'not measured' });
  }
  return checks;
}

/** Per kind: the fastest start anywhere (with or without a pool) and how far it is from a JavaScript isolate's. */
export function languageHeadline(results: Pick<LanguagesResults, 'rows' | 'kinds'>): LanguageHeadline[] {
  const starts = (r: LanguageRow) => [
    ...(r.coldStartMs ? [{ how: r.backend, ms: r.coldStartMs.p50 }] : []),
    ...(r.pooledStartMs ? [{ how: `${r.backend}, pool ready`, ms: r.pooledStartMs.p50 }] : []),
  ];
  const best = (rows: LanguageRow[]) =>
    rows.flatMap(starts).reduce<{ how: string; ms: number } | undefined>((a, b) => (!a || b.ms < a.ms ? b : a), undefined);
  const hellos = results.rows.filter((r) => r.workload === 'hello' && !r.skipped && !r.error);
  const isolate = best(hellos.filter((r) => r.kind === 'nodejs:20' && r.backend === 'isolate'));
  return results.kinds.map((kind) => {
    const fastest = best(hellos.filter((r) => r.kind === kind));
    if (!fastest) return { kind, fastest: null, startMs: null, vsIsolate: null, basis: 'no backend ran it here' };
    return {
      kind,
      fastest: fastest.how,
      startMs: fastest.ms,
      vsIsolate: isolate ? ratio(fastest.ms, isolate.ms) : null,
      basis: isolate
        ? `hello p50 ${fastest.ms} ms vs a JavaScript function on the isolate backend (${isolate.how}) ${isolate.ms} ms`
        : `hello p50 ${fastest.ms} ms; the isolate backend was not measured`,
    };
  });
}

/** How many progress steps the dimension takes on these targets (after checking them). */
function steps(targets: Target[], kinds: LanguageKind[], peers: boolean, quick: boolean): number {
  const perTarget = targets.map((t) => {
    const runs = kinds.filter((k) => ISOLATIONS_FOR_KIND[k].includes(t.isolation)).length;
    return runs * 3 + (t.isolation === 'container' ? runs : 0) + (t.isolation === 'microvm' ? (quick ? 1 : runs) : 0) + 1;
  });
  return perTarget.reduce((a, b) => a + b, 0) + (peers ? LANGUAGE_PEERS.filter((p) => kinds.includes(p.kind)).length * 2 : 0);
}

/** Runs the dimension. */
export async function runLanguages(options: LanguagesOptions): Promise<LanguagesResults> {
  const started = Date.now();
  const { progress, quick } = options;
  const targets = languageTargets(options.backends);
  const kinds = selectKinds(options.kinds);
  const counts = languageCounts(quick);
  const cacheDir = join(options.dataDir, 'languages');
  mkdirSync(cacheDir, { recursive: true });
  const reference = { hello: referenceResult('hello'), graph: referenceResult('graph') };
  const results: Omit<LanguagesResults, 'targets' | 'headline'> = {
    quick,
    kinds,
    workloads: LANGUAGE_WORKLOADS.map((name) => ({
      name,
      description: LANGUAGE_DESCRIPTIONS[name],
      params: LANGUAGE_PARAMS[name],
    })),
    settings: counts,
    backends: [],
    reference,
    rows: [],
    snapshots: [],
    sideBySide: [],
    peers: [],
    durationSeconds: 0,
    warnings: [],
  };
  progress.total(targets.length + steps(targets, kinds, options.peers !== false, quick));

  // Which backends work here, and which kinds each runs.
  const available: { target: Target; kinds: LanguageKind[]; emulated: boolean }[] = [];
  for (const target of targets) {
    progress.step(`languages: checking ${target.id}`);
    const status = await probeTarget(target, options.dataDir).catch((error: unknown) => ({
      available: false,
      detail: (error as Error).message,
    }));
    const unsupported: Partial<Record<LanguageKind, string>> = {};
    if (status.available) {
      for (const kind of kinds) {
        if (!ISOLATIONS_FOR_KIND[kind].includes(target.isolation)) continue;
        const reason = languageSupport(target.isolation, kind);
        if (reason) unsupported[kind] = reason;
      }
    }
    results.backends.push({
      id: target.id,
      isolation: target.isolation,
      available: status.available,
      detail: status.detail,
      unsupported,
    });
    if (status.available)
      available.push({
        target,
        kinds: kinds.filter((k) => ISOLATIONS_FOR_KIND[k].includes(target.isolation) && !unsupported[k]),
        emulated: target.isolation === 'microvm' && /\bTCG\b/.test(status.detail),
      });
    else progress.note(`languages: ${target.id} is not available here: ${status.detail}`);
    progress.done();
  }

  progress.total(
    targets.length +
      steps(
        available.map((a) => a.target),
        kinds,
        options.peers !== false,
        quick,
      ),
  );
  if (options.peers !== false) results.peers = await measureLanguagePeers(kinds, counts, cacheDir, reference, progress);

  for (const { target, kinds: runnable, emulated } of available) {
    const backendStarted = Date.now();
    for (const kind of kinds.filter((k) => !runnable.includes(k) && ISOLATIONS_FOR_KIND[k].includes(target.isolation))) {
      for (const workload of LANGUAGE_WORKLOADS)
        results.rows.push(skipped(kind, target, workload, results.backends.find((b) => b.id === target.id)?.unsupported[kind]));
    }
    if (runnable.length === 0) continue;
    const server = await startTargetServer(target, options.dataDir);
    const run = new TargetRun(target, server, { quick, concurrency: 1, memoryBudgetMb: 1024 });
    const language = new LanguageRun(run, cacheDir, quick);
    try {
      await run.init();
      for (const kind of runnable) {
        progress.step(`languages: ${target.id} ${kind}: first instance`);
        try {
          await language.warmUp(kind);
        } catch (error) {
          const reason = `the first ${kind} function failed: ${(error as Error).message.slice(0, 400)}`;
          progress.note(`languages: ${target.id}: ${reason}`);
          for (const workload of LANGUAGE_WORKLOADS)
            results.rows.push({ ...skipped(kind, target, workload, undefined), error: reason });
          progress.done();
          continue;
        }
        progress.done();
        for (const workload of LANGUAGE_WORKLOADS) {
          progress.step(`languages: ${target.id} ${kind} ${workload}`);
          if (quick && emulated && workload !== 'hello') {
            results.rows.push(skipped(kind, target, workload, 'full runs only: every start runs under an emulated CPU (TCG)'));
            progress.done();
            continue;
          }
          const row = await language.measure(kind, workload, counts, reference[workload]);
          results.rows.push(row);
          if (row.error) progress.note(`languages: ${target.id} ${kind} ${workload}: ${row.error}`);
          progress.done();
        }
        const runtime = runtimeOf(target);
        if (runtime && target.isolation === 'container') {
          progress.step(`languages: ${target.id} ${kind}: cold starts beside bare \`${runtime} run\``);
          results.sideBySide.push(
            await language.sideBySide(kind, runtime, counts.sideBySide).catch((error: unknown) => ({
              kind,
              backend: target.id,
              runtime,
              apiMs: null,
              bareMs: null,
              samples: 0,
              package: '',
              error: (error as Error).message.slice(0, 600),
            })),
          );
          progress.done();
        }
      }
      // Java is the case snapshots are for (the target); full runs snapshot every kind.
      const snapshotted = target.isolation === 'microvm' ? runnable.filter((k) => !quick || k === 'java:17') : [];
      for (const kind of snapshotted) {
        const boot =
          results.rows.find((r) => r.kind === kind && r.backend === target.id && r.workload === 'hello')?.coldStartMs?.p50 ??
          null;
        // Only where the runtime started at all: a snapshot of a function that cannot load measures nothing.
        if (boot === null) continue;
        progress.step(`languages: ${target.id} ${kind} restored from its snapshot`);
        const row: SnapshotRow = {
          kind,
          backend: target.id,
          workload: 'hello',
          restoreMs: null,
          restored: '',
          bootMs: boot,
          samples: counts.snapshotRestores,
        };
        try {
          Object.assign(row, await language.snapshotRestores(kind, counts.snapshotRestores));
        } catch (error) {
          row.error = (error as Error).message.slice(0, 600);
        }
        results.snapshots.push(row);
        progress.done();
      }
    } finally {
      run.close();
      await stopAndCheck(server, run.serverPid, `languages ${target.id}`, results.warnings);
    }

    // The same server with one blank sandbox of each kind made ahead.
    progress.step(`languages: ${target.id}: cold starts with a blank sandbox of the kind ready`);
    const measured = runnable.filter((k) =>
      results.rows.some((r) => r.kind === k && r.backend === target.id && r.workload === 'hello' && r.coldStartMs),
    );
    if (measured.length > 0) {
      const pooledPrewarm =
        target.isolation === 'isolate' ? 'isolate:2' : measured.map((k) => `${target.isolation}:${prewarmToken(k)}:1`).join(',');
      let pooledServer: ServerProcess | undefined;
      let pooledRun: TargetRun | undefined;
      try {
        pooledServer = await ServerProcess.start({
          dataDir: options.dataDir,
          env: { ISOLA_BACKENDS: target.isolation, ISOLA_PREWARM: pooledPrewarm, ISOLA_BLOCKING_WAIT: '10m', ...target.env },
        });
        pooledRun = new TargetRun(target, pooledServer, { quick, concurrency: 1, memoryBudgetMb: 1024 });
        await pooledRun.init();
        const pooled = new LanguageRun(pooledRun, cacheDir, quick);
        // Each start takes seconds under an emulated CPU.
        const pooledCount = quick && emulated ? 1 : counts.pooled;
        for (const kind of measured) {
          const row = results.rows.find(
            (r) => r.kind === kind && r.backend === target.id && r.workload === 'hello',
          ) as LanguageRow;
          // On the process backend the bare runtime is the same process without the platform:
          // its starts are taken in turns with the pooled ones, so that both see the same load.
          const peer = target.isolation === 'process' ? LANGUAGE_PEERS.find((p) => p.kind === kind) : undefined;
          const bare: number[] = [];
          try {
            const command = peer?.prepare('hello', cacheDir, LANGUAGE_MEMORY_MB);
            const figures = await pooled.pooled(
              kind,
              pooledCount,
              // A blank sandbox of an interpreted kind or Java also starts its runtime ahead,
              // which under an emulated CPU takes seconds more than the sandbox itself.
              emulated && !['nodejs:20', 'go:1.19', 'native'].includes(kind)
                ? EMULATED_RUNTIME_REFILL_MS
                : (REFILL_MS[target.id] ?? 1000),
              command ? async () => bare.push((await actionLoopStart(command, LANGUAGE_PARAMS.hello)).resultMs) : undefined,
            );
            row.pooledStartMs = figures.start;
            row.pooledHits = figures.hits;
            row.samples.pooled = pooledCount;
            if (peer && bare.length > 0)
              row.bareInTurns = { name: peer.name, startMs: pick(summarize(bare)), samples: bare.length };
          } catch (error) {
            row.pooledStartMs = null;
            row.pooledHits = `failed: ${(error as Error).message.slice(0, 300)}`;
          }
        }
      } catch (error) {
        for (const row of results.rows.filter((r) => r.backend === target.id && r.workload === 'hello' && r.coldStartMs)) {
          row.pooledStartMs = null;
          row.pooledHits = `failed: ${(error as Error).message.slice(0, 300)}`;
        }
      } finally {
        pooledRun?.close();
        if (pooledServer)
          await stopAndCheck(pooledServer, pooledRun?.serverPid ?? 0, `languages ${target.id} (pool)`, results.warnings);
      }
    }
    progress.done();
    const report = results.backends.find((b) => b.id === target.id);
    if (report) report.seconds = Math.round((Date.now() - backendStarted) / 1000);
  }
  results.durationSeconds = Math.round((Date.now() - started) / 1000);
  return { ...results, targets: languageTargetChecks(results), headline: languageHeadline(results) };
}

function skipped(kind: LanguageKind, target: Target, workload: LanguageWorkload, reason: string | undefined): LanguageRow {
  return {
    kind,
    backend: target.id,
    workload,
    coldStartMs: null,
    coldInitMs: null,
    warmMs: null,
    pssMb: null,
    samples: { cold: 0, warm: 0, pooled: 0 },
    ...(reason ? { skipped: reason } : {}),
  };
}
