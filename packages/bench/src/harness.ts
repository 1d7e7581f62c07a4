/**
 * The evaluation harness behind `isola bench`: every backend this host supports, the same
 * workloads on each, through the real server over HTTP; the peers measured in the same run; the
 * isolation battery; results written as JSON, Markdown and a self-contained HTML report.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { resolveKernelCacheDir, resolveServerConfig } from '../../../src/config.js';
import { ISOLATIONS, type Isolation } from '../../../src/core/kinds.js';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ensureMicrovmImage } from '../../../src/images/microvm-image.js';
import { ensureNodeRootfs } from '../../../src/images/node-rootfs.js';
import type { BackendStatus } from '../../../src/sandbox/backend.js';
import { findBinary } from '../../../src/sandbox/container/runtime.js';
import { MicrovmBackend } from '../../../src/sandbox/microvm/microvm-backend.js';
import type { Accelerator } from '../../../src/sandbox/microvm/qemu.js';
import { createBackend } from '../../../src/sandbox/registry.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { ATTACKS, type IsolationResult, plantBait, removeBait, runAttacks } from './attacks.js';
import { hostInfo } from './host.js';
import { KeepAliveClient } from './http.js';
import type { LanguagesResults } from './languages-dimension.js';
import {
  type BareIdleKind,
  bareNodeStart,
  bareOciRun,
  bareQemuBoot,
  loadTest,
  type PeerFunction,
  startBareIdle,
  startNodeHttp,
  startWorkerd,
  warmLatencies,
} from './peers.js';
import { perGb, processesMemoryMib, pssMib, round, serverMemoryMib, serverProcesses } from './pss.js';
import type { ResourcesResults } from './resources-run.js';
import { pause, type Summary, summarize, time } from './stats.js';
import { ensureMlBundle, WORKLOAD_NAMES, WORKLOADS, type Workload } from './workloads.js';

/** One backend configuration the harness measures. */
export interface Target {
  id: string;
  isolation: Isolation;
  description: string;
  /** Server settings that select it. */
  env: Record<string, string>;
  /** Runs the isolation battery (the boot variant of microvm shares the snapshot variant's guest). */
  attacks: boolean;
  /** Chosen by `--backends` only by its id, not by its isolation's name (its first use builds a kernel). */
  byIdOnly?: boolean;
}

export const TARGETS: Target[] = [
  { id: 'isolate', isolation: 'isolate', description: 'V8 isolate (isolated-vm) in the server', env: {}, attacks: true },
  { id: 'wasm', isolation: 'wasm', description: 'WebAssembly with WASI preview 1 on worker threads', env: {}, attacks: true },
  { id: 'process', isolation: 'process', description: 'a Node.js child process per instance', env: {}, attacks: true },
  {
    id: 'container:runc',
    isolation: 'container',
    description: 'OCI container under runc',
    env: { ISOLA_CONTAINER_RUNTIME: 'runc' },
    attacks: true,
  },
  {
    id: 'container:crun',
    isolation: 'container',
    description: 'OCI container under crun',
    env: { ISOLA_CONTAINER_RUNTIME: 'crun' },
    attacks: true,
  },
  { id: 'gvisor', isolation: 'gvisor', description: 'gVisor (runsc)', env: {}, attacks: true },
  {
    id: 'microvm',
    isolation: 'microvm',
    description: 'QEMU microvm restored from a memory snapshot',
    env: { ISOLA_MICROVM_START: 'snapshot' },
    attacks: true,
  },
  {
    id: 'microvm:boot',
    isolation: 'microvm',
    description: 'QEMU microvm booted from scratch for every instance',
    env: { ISOLA_MICROVM_START: 'boot' },
    attacks: false,
  },
  {
    id: 'microvm:specialised',
    isolation: 'microvm',
    description:
      'QEMU microvm booting a kernel specialised for functions (built from linux-source: drivers built in, no modules, no initramfs), restored from a memory snapshot',
    env: { ISOLA_MICROVM_START: 'snapshot', ISOLA_MICROVM_GUEST: 'specialised' },
    // The same machine, devices and QEMU boundary as microvm, whose battery runs; the guest's own
    // containment (no host files or network, memory and time limits) is in the microVM suite.
    attacks: false,
    byIdOnly: true,
  },
  {
    id: 'vm',
    isolation: 'vm',
    description: 'QEMU q35 (SeaBIOS, PCI virtio devices) restored from a memory snapshot',
    env: { ISOLA_MICROVM_START: 'snapshot' },
    attacks: true,
  },
];

export interface Percentiles {
  p50: number;
  p99: number;
}

export interface WorkloadResult {
  backend: string;
  workload: string;
  kind: Workload['kind'];
  coldStartMs: Percentiles | null;
  /** The activation's own initTime on those cold starts: the sandbox and the function's load. */
  coldInitMs: Percentiles | null;
  /**
   * Hello only: a cold start with the backend's default pool of blank sandboxes made ahead (what
   * the server does out of the box), and how many of those starts found one ready.
   */
  prewarmedStartMs?: Percentiles | null;
  prewarmedHits?: string;
  /**
   * Hello on a runtime backend: cold starts through the API and bare runs of the runtime CLI on
   * an identical bundle, taken in turns with the same pause before each, for the platform's
   * overhead (a start after an idle moment is slower than one right after another here, so the
   * two must be paced alike).
   */
  sideBySide?: { runtime: string; apiMs: Percentiles; bareMs: Percentiles; samples: number };
  warmMs: Percentiles | null;
  throughputRps: number | null;
  /** Host memory (PSS) per idle instance. */
  pssMb: number | null;
  /** Idle instances that fit in the memory budget. */
  density: number | null;
  /**
   * Hello on a backend with a bare peer (a runtime CLI's container, a `node` process, a QEMU
   * guest): host memory per idle instance on the platform and of the same guest started with no
   * platform, measured in turns in the same run, as idle instances per GB; ratio is the
   * platform's density over the bare one's (1 or more: at least as dense).
   */
  densityBeside?: {
    peer: string;
    instances: number;
    rounds: number;
    platformMb: number;
    bareMb: number;
    platformPerGb: number | null;
    barePerGb: number | null;
    ratio: number | null;
    /** The server process's own growth per instance within the figures (its share of shared pages moves too). */
    serverMb: { platform: number; bare: number };
    /** Per instance, each turn. */
    samples: { platform: number[]; bare: number[] };
  };
  densityBesideError?: string;
  samples: { cold: number; warm: number; throughputSeconds: number };
  skipped?: string;
  error?: string;
}

export interface PeerResult {
  name: string;
  workload: string;
  /** The backend (target id) it is the peer of. */
  peerOf: string;
  description: string;
  startMs?: Percentiles;
  warmMs?: Percentiles;
  throughputRps?: number;
  error?: string;
}

export interface BackendReport {
  id: string;
  isolation: Isolation;
  description: string;
  available: boolean;
  detail: string;
}

export interface HarnessResults {
  version: 1;
  quick: boolean;
  host: ReturnType<typeof hostInfo> & { accelerator?: string };
  settings: {
    concurrency: number;
    memoryBudgetMb: number;
    coldSamples: number;
    warmSamples: number;
    throughputSeconds: number;
  };
  durationSeconds: number;
  backends: BackendReport[];
  workloads: { name: string; kind: Workload['kind']; description: string }[];
  results: WorkloadResult[];
  peers: PeerResult[];
  isolation: IsolationResult[];
  /** Anything that went wrong around the measurements, e.g. processes a server left behind. */
  warnings: string[];
  /** The dimensions this run measured. */
  dimensions: Dimension[];
  languages?: LanguagesResults;
  resources?: ResourcesResults;
}

/** What `isola bench` can measure, each a part of the report of its own. */
export const DIMENSIONS = {
  backends: 'every backend with the same JavaScript and WebAssembly workloads, their peers and the escape battery',
  resources:
    'CPU, memory bandwidth, file I/O in the scratch space and the network to a test host under every backend, each against the same measurement run bare on the host',
  languages:
    'hello and the graph workload in every kind (Node.js, Python, Java, Go, Ruby, PHP, native) on every backend that runs it, against the bare runtimes',
} as const;
export type Dimension = keyof typeof DIMENSIONS;

/** Resolves `--dimension` names; unknown names are an error. Backends and resources when none is named. */
export function selectDimensions(names: readonly string[] | undefined): Dimension[] {
  if (!names || names.length === 0) return ['backends', 'resources'];
  for (const name of names) {
    if (!(name in DIMENSIONS))
      throw new HarnessError(`Unknown dimension "${name}"; choose from ${Object.keys(DIMENSIONS).join(', ')}.`);
  }
  return (Object.keys(DIMENSIONS) as Dimension[]).filter((d) => names.includes(d));
}

export interface Progress {
  /** The number of steps the run will take, once known. */
  total(steps: number): void;
  /** A step is starting. */
  step(label: string): void;
  /** A step finished. */
  done(): void;
  /** A line worth showing (e.g. a backend that is not available). */
  note(message: string): void;
}

export interface HarnessOptions {
  quick: boolean;
  /** Target ids (`container:runc`) or isolations (`container` means runc and crun). */
  backends?: string[];
  workloads?: string[];
  /** Where images and snapshots are cached; a scratch directory when absent. */
  dataDir?: string;
  concurrency?: number;
  memoryBudgetMb?: number;
  attacks?: boolean;
  peers?: boolean;
  progress?: Progress;
  /** What to measure (see DIMENSIONS); the backends dimension when absent. */
  dimensions?: string[];
  /** The languages dimension's kinds; all of them when absent. */
  kinds?: string[];
}

const SILENT: Progress = { total: () => {}, step: () => {}, done: () => {}, note: () => {} };

export class HarnessError extends Error {}

/** Resolves `--backends` names to targets; unknown names are an error. */
export function selectTargets(names: readonly string[] | undefined): Target[] {
  if (!names || names.length === 0) return TARGETS;
  const chosen = new Set<Target>();
  for (const name of names) {
    const matches = TARGETS.filter((t) => t.id === name || (t.isolation === name && !t.byIdOnly));
    if (matches.length === 0) {
      throw new HarnessError(
        `Unknown backend "${name}"; choose from ${TARGETS.map((t) => t.id).join(', ')} (or ${ISOLATIONS.join(', ')}).`,
      );
    }
    for (const match of matches) chosen.add(match);
  }
  return TARGETS.filter((t) => chosen.has(t));
}

export function selectWorkloads(names: readonly string[] | undefined): string[] {
  if (!names || names.length === 0) return WORKLOAD_NAMES;
  for (const name of names) {
    if (!WORKLOAD_NAMES.includes(name))
      throw new HarnessError(`Unknown workload "${name}"; choose from ${WORKLOAD_NAMES.join(', ')}.`);
  }
  return WORKLOAD_NAMES.filter((n) => names.includes(n));
}

export const pick = (s: Summary): Percentiles => ({ p50: round(s.p50, 3), p99: round(s.p99, 3) });

interface Counts {
  cold: number;
  warm: number;
  seconds: number;
}

function countsFor(quick: boolean, target: Target, workload: Workload): Counts {
  const slow = target.id === 'microvm:boot' || workload.name === 'ml';
  // An inference takes 100 ms natively and seconds under an emulated CPU: fewer warm samples.
  const warm = workload.name === 'ml' ? (quick ? 10 : 50) : quick ? 20 : 200;
  if (quick) return { cold: slow ? 2 : 3, warm, seconds: 1 };
  return { cold: slow ? 5 : target.isolation === 'gvisor' ? 10 : 20, warm, seconds: 5 };
}

/**
 * The throughput window: at least the configured one, and long enough for each connection to
 * finish a few calls when the calls are slow (an emulated CPU shared by every connection), so
 * that a slow workload's figure is counted calls, not the few that happened to end in the window.
 */
export function throughputWindow(seconds: number, warmP50Ms: number, concurrency: number): number {
  return Math.min(60, Math.max(seconds, Math.ceil((warmP50Ms * concurrency * 4) / 1000)));
}

/** A wasm module with a custom section appended, so that its content (and compiled module) is its own. */
function distinctWasm(base64: string, tag: string): string {
  const name = Buffer.from('isola-bench');
  const payload = Buffer.from(tag);
  const body = Buffer.concat([Buffer.from([name.length]), name, payload]);
  if (body.length > 127) throw new Error('tag too long');
  return Buffer.concat([Buffer.from(base64, 'base64'), Buffer.from([0, body.length]), body]).toString('base64');
}

export class TargetRun {
  readonly client: KeepAliveClient;
  serverPid = 0;

  constructor(
    readonly target: Target,
    readonly server: ServerProcess,
    private readonly options: Required<Pick<HarnessOptions, 'quick' | 'concurrency' | 'memoryBudgetMb'>>,
  ) {
    this.client = new KeepAliveClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
  }

  async init(): Promise<void> {
    this.serverPid = Number((await this.server.request<{ pid: number }>('GET', '/healthz', undefined, { auth: null })).body.pid);
  }

  private code(workload: Workload, tag: string): string {
    const code = workload.code();
    return workload.kind === 'wasm' ? distinctWasm(code, tag) : `${code}\n// ${tag}\n`;
  }

  async deploy(name: string, workload: Workload, tag = name): Promise<void> {
    const exec =
      workload.kind === 'wasm'
        ? { kind: 'wasm', code: this.code(workload, tag), binary: true }
        : { kind: 'nodejs:20', code: this.code(workload, tag) };
    await this.put(name, {
      exec,
      limits: { memory: workload.memoryMb, timeout: workload.timeoutMs },
      annotations: [{ key: 'isolation', value: this.target.isolation }],
    });
  }

  /** Creates or replaces an action from a whole request body; a refusal is an error that quotes it. */
  async put(name: string, body: Record<string, unknown>): Promise<void> {
    const response = await this.server.request('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, body);
    if (response.status !== 200)
      throw new Error(`deploying ${name} failed (${response.status}): ${JSON.stringify(response.body).slice(0, 600)}`);
  }

  async remove(name: string): Promise<void> {
    await this.server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  }

  async invoke(name: string, params: unknown): Promise<ActivationRecord> {
    const response = await this.client.send('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, params);
    const record = JSON.parse(response.body) as ActivationRecord;
    if (!record.response?.success) {
      throw new Error(`${name} failed: ${JSON.stringify(record.response ?? response.body).slice(0, 400)}`);
    }
    return record;
  }

  /** Host memory of the server and everything it runs; throws when the server cannot be found. */
  memory(): number {
    return this.memoryParts().total;
  }

  /** The same, and the server process's own share of it. */
  memoryParts(): { total: number; server: number } {
    const server = pssMib(this.serverPid);
    if (server <= 0) throw new Error(`the memory of the server (pid ${this.serverPid}) could not be read`);
    return { total: serverMemoryMib(this.serverPid, this.server.dataDir), server };
  }

  /** A warm call's latency; a call that fails is an error, not a sample. */
  async timedCall(path: string, params: unknown): Promise<number> {
    let status = 0;
    let body = '';
    const ms = await time(async () => {
      ({ status, body } = await this.client.send('POST', path, params));
    });
    if (status !== 200) throw new Error(`a warm call failed (${status}): ${body.slice(0, 300)}`);
    return ms;
  }

  /** Live instances of every function, from the server's own gauge. */
  async instances(): Promise<number> {
    const metrics = await this.server.metrics();
    let total = 0;
    for (const match of metrics.matchAll(/^isola_instances\{[^}]*\} (\d+)/gm)) total += Number(match[1]);
    return total;
  }

  /** The server's JavaScript heap in use (MB), from its process metrics. */
  async serverHeapUsedMb(): Promise<number> {
    const metrics = await this.server.metrics();
    const match = /^isola_process_nodejs_heap_size_used_bytes (\S+)/m.exec(metrics);
    if (!match) throw new Error("the server's metrics give no heap size in use");
    return Number(match[1]) / 2 ** 20;
  }

  /**
   * Waits until the instances of functions removed before are gone (a microVM or container takes
   * a moment to go), so that a memory baseline does not count them.
   */
  async settle(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while ((await this.instances()) > 0 && Date.now() < deadline) await pause(100);
    await pause(500);
  }

  /** Makes what a first instance of a memory size needs (a microVM's base snapshot, say) before timing. */
  async warmUp(memorySizes: number[]): Promise<void> {
    const hello = WORKLOADS.find(
      (w) => w.name === 'hello' && w.kind === (this.target.isolation === 'wasm' ? 'wasm' : 'nodejs:20'),
    ) as Workload;
    for (const memoryMb of memorySizes) {
      const name = `bench-warm-up-${memoryMb}`;
      await this.deploy(name, { ...hello, memoryMb });
      await this.invoke(name, hello.params);
      await this.remove(name);
    }
  }

  async measure(workload: Workload, counts: Counts, step: (label: string) => void, done: () => void): Promise<WorkloadResult> {
    const row: WorkloadResult = {
      backend: this.target.id,
      workload: workload.name,
      kind: workload.kind,
      coldStartMs: null,
      coldInitMs: null,
      warmMs: null,
      throughputRps: null,
      pssMb: null,
      density: null,
      samples: { cold: counts.cold, warm: counts.warm, throughputSeconds: counts.seconds },
    };
    const label = `${this.target.id} ${workload.name}`;
    const coldNames: string[] = [];
    try {
      // Cold starts, each a function of its own; their instances stay idle for the memory figure.
      step(`${label}: cold starts`);
      await this.settle();
      const before = this.memory();
      const cold: number[] = [];
      const init: number[] = [];
      for (let i = 0; i < counts.cold; i++) {
        const name = `bench-cold-${workload.name}-${i}`;
        await this.deploy(name, workload, `${this.target.id}-${Date.now()}-${i}`);
        coldNames.push(name);
        let record: ActivationRecord | undefined;
        cold.push(
          await time(async () => {
            record = await this.invoke(name, workload.params);
          }),
        );
        if (record?.annotations.find((a) => a.key === 'coldStart')?.value !== true)
          throw new Error(`${name} was not a cold start`);
        init.push(Number(record.annotations.find((a) => a.key === 'initTime')?.value ?? 0));
      }
      row.coldStartMs = pick(summarize(cold));
      row.coldInitMs = pick(summarize(init));
      await pause(1000);
      // As measured: an instance that costs less than the noise in the server's own memory may
      // come out at zero or below, and is reported so rather than rounded up to a cost.
      const perInstance = (this.memory() - before) / counts.cold;
      row.pssMb = round(perInstance, 2);
      row.density = perInstance > 0 ? Math.floor(this.options.memoryBudgetMb / perInstance) : null;
      for (const name of coldNames.splice(0)) await this.remove(name);
      done();

      step(`${label}: warm invocations`);
      const warmName = `bench-warm-${workload.name}`;
      await this.deploy(warmName, workload);
      await this.invoke(warmName, workload.params);
      const path = `/api/v1/namespaces/_/actions/${warmName}?blocking=true&result=true`;
      for (let i = 0; i < Math.max(5, counts.warm / 10); i++) await this.timedCall(path, workload.params);
      const warm: number[] = [];
      for (let i = 0; i < counts.warm; i++) warm.push(await this.timedCall(path, workload.params));
      row.warmMs = pick(summarize(warm));
      done();

      step(`${label}: throughput at concurrency ${this.options.concurrency}`);
      // One warm instance per connection first, so that the load measures warm invocations.
      await Promise.all(Array.from({ length: this.options.concurrency }, () => this.invoke(warmName, workload.params)));
      const seconds = throughputWindow(counts.seconds, row.warmMs.p50, this.options.concurrency);
      row.samples.throughputSeconds = seconds;
      const load = await loadTest(
        `${this.server.url}${path}`,
        { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(this.server.auth).toString('base64')}` },
        JSON.stringify(workload.params),
        seconds,
        this.options.concurrency,
      );
      row.throughputRps = load.requestsPerSecond;
      if (load.errors > 0) row.error = `${load.errors} requests failed under load`;
      await this.remove(warmName);
      done();
    } catch (error) {
      row.error = (error as Error).message.slice(0, 500);
      for (const name of coldNames) await this.remove(name).catch(() => {});
      await this.remove(`bench-warm-${workload.name}`).catch(() => {});
    }
    return row;
  }

  /**
   * Cold starts of distinct functions on a server that keeps blank sandboxes ready, pausing
   * between them so that the pool refills as it would between requests that are not back to back.
   */
  async prewarmed(workload: Workload, count: number, gapMs: number): Promise<{ start: Percentiles; hits: string }> {
    const samples: number[] = [];
    const names: string[] = [];
    // A first call warms the server's own code paths up; its blank sandbox is then made again.
    await this.warmUp([workload.memoryMb]);
    await pause(gapMs);
    for (let i = 0; i < count; i++) {
      const name = `bench-prewarmed-${i}`;
      await this.deploy(name, workload, `${this.target.id}-prewarmed-${Date.now()}-${i}`);
      names.push(name);
      await pause(gapMs);
      samples.push(await time(() => this.invoke(name, workload.params)));
    }
    const metrics = await this.server.metrics();
    const hits = names.filter((name) =>
      new RegExp(`isola_starts_total\\{[^}]*action="${name}"[^}]*start="stemcell"\\} [1-9]`).test(metrics),
    ).length;
    for (const name of names) await this.remove(name);
    return { start: pick(summarize(samples)), hits: `${hits} of ${count}` };
  }

  /** See WorkloadResult.sideBySide. */
  async coldSideBySide(
    workload: Workload,
    runtime: 'runc' | 'crun' | 'runsc',
    count: number,
    workDir: string,
  ): Promise<NonNullable<WorkloadResult['sideBySide']>> {
    const image = ensureNodeRootfs(join(this.server.dataDir, 'images'), join(this.server.dataDir, 'runtime'));
    const fn = { code: workload.code(), params: workload.params };
    const api: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < count; i++) {
      await pause(SIDE_BY_SIDE_GAP_MS);
      bare.push(...(await bareOciRun(runtime, image, workDir, fn, 1, workload.memoryMb, i)));
      const name = `bench-side-by-side-${i}`;
      await this.deploy(name, workload, `${this.target.id}-side-by-side-${Date.now()}-${i}`);
      await pause(SIDE_BY_SIDE_GAP_MS);
      api.push(await time(() => this.invoke(name, workload.params)));
      await this.remove(name);
    }
    return { runtime, apiMs: pick(summarize(api)), bareMs: pick(summarize(bare)), samples: count };
  }

  /**
   * Host memory (PSS, MB) per idle instance: `count` functions of their own, each called once and
   * left idle, as the growth of the server and everything it runs; removed after.
   */
  async idleInstanceMb(workload: Workload, count: number, label: string): Promise<number> {
    return (await this.idleInstanceParts(workload, count, label)).total;
  }

  /** idleInstanceMb, and the server process's own growth per instance within it. */
  async idleInstanceParts(workload: Workload, count: number, label: string): Promise<{ total: number; server: number }> {
    await this.settle();
    const before = this.memoryParts();
    const names: string[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const name = `bench-${label}-${i}`;
        await this.deploy(name, workload, `${this.target.id}-${label}-${Date.now()}-${i}`);
        names.push(name);
        await this.invoke(name, workload.params);
      }
      await pause(IDLE_SETTLE_MS);
      const after = this.memoryParts();
      return { total: (after.total - before.total) / count, server: (after.server - before.server) / count };
    } finally {
      for (const name of names) await this.remove(name);
    }
  }

  /**
   * Host memory (PSS, MB) per idle instance of a backend that runs in the server's own process
   * (isolate, wasm), one sample per round of `count` instances. The instances of every round stay
   * until the last round is read: memory a removed instance freed stays in the process (the C
   * allocator keeps it), and the next instances reuse it, which would count them as almost free.
   * Each round checks that exactly its instances were added (none evicted or expired). Beside
   * each round's PSS, the growth of the server's JavaScript heap in use: its bookkeeping of the
   * functions and their instances, and garbage not yet collected.
   */
  async stackedIdleInstanceMb(
    workload: Workload,
    count: number,
    rounds: number,
    label: string,
  ): Promise<{ totalMb: number[]; serverHeapMb: number[] }> {
    await this.settle();
    const names: string[] = [];
    const samples = { totalMb: [] as number[], serverHeapMb: [] as number[] };
    try {
      let instances = await this.instances();
      let before = this.memoryParts().total;
      let heapBefore = await this.serverHeapUsedMb();
      for (let round = 0; round < rounds; round++) {
        for (let i = 0; i < count; i++) {
          const name = `bench-${label}-${round}-${i}`;
          await this.deploy(name, workload, `${this.target.id}-${label}-${Date.now()}-${round}-${i}`);
          names.push(name);
          await this.invoke(name, workload.params);
        }
        await pause(IDLE_SETTLE_MS);
        const after = this.memoryParts().total;
        const heapAfter = await this.serverHeapUsedMb();
        const now = await this.instances();
        if (now - instances !== count) throw new Error(`expected ${count} more idle instances, found ${now - instances}`);
        samples.totalMb.push((after - before) / count);
        samples.serverHeapMb.push((heapAfter - heapBefore) / count);
        instances = now;
        before = after;
        heapBefore = heapAfter;
      }
      return samples;
    } finally {
      for (const name of names) await this.remove(name);
    }
  }

  /**
   * Host memory per idle hello instance on the platform and of the bare peer (see
   * WorkloadResult.densityBeside), taken in turns, `rounds` of `count` instances each side. Both
   * sides are counted alike: the growth of the PSS of the server and everything it runs, for the
   * bare side with the bare instances' processes added (the idle server shares pages with them).
   */
  async densityBeside(
    workload: Workload,
    bare: BarePeer,
    count: number,
    rounds: number,
    workDir: string,
    /** A bare QEMU guest's: the one the microvm backend chose (its status line says). */
    accelerator: Accelerator = 'tcg',
  ): Promise<NonNullable<WorkloadResult['densityBeside']>> {
    const platform: number[] = [];
    const bareSamples: number[] = [];
    const platformServer: number[] = [];
    const bareServer: number[] = [];
    const image = ensureNodeRootfs(join(this.server.dataDir, 'images'), join(this.server.dataDir, 'runtime'));
    const microvm =
      bare.kind === 'qemu' ? { image: ensureMicrovmImage(join(this.server.dataDir, 'images'), image), accelerator } : undefined;
    const fn = { code: workload.code(), params: workload.params };
    const measurePlatform = async (turn: number) => {
      const parts = await this.idleInstanceParts(workload, count, `density-${turn}`);
      platform.push(parts.total);
      platformServer.push(parts.server);
    };
    const measureBare = async () => {
      await this.settle();
      const before = this.memoryParts();
      const group = await startBareIdle(bare.kind, {
        image,
        workDir,
        fn,
        count,
        memoryMb: workload.memoryMb,
        ...(microvm ? { microvm } : {}),
      });
      try {
        await pause(IDLE_SETTLE_MS);
        const after = this.memoryParts();
        bareSamples.push((after.total - before.total + processesMemoryMib(group.pids())) / count);
        bareServer.push((after.server - before.server) / count);
      } finally {
        await group.stop();
      }
    };
    // Alternate which side goes first, so that neither always follows the other's clean-up.
    for (let turn = 0; turn < rounds; turn++) {
      if (turn % 2 === 0) {
        await measurePlatform(turn);
        await measureBare();
      } else {
        await measureBare();
        await measurePlatform(turn);
      }
    }
    const platformMb = median(platform);
    const bareMb = median(bareSamples);
    return {
      peer: bare.name,
      instances: count,
      rounds,
      platformMb: round(platformMb, 2),
      bareMb: round(bareMb, 2),
      platformPerGb: perGb(platformMb),
      barePerGb: perGb(bareMb),
      ratio: platformMb > 0 && bareMb > 0 ? round(bareMb / platformMb, 3) : null,
      serverMb: { platform: round(median(platformServer), 2), bare: round(median(bareServer), 2) },
      samples: { platform: platform.map((v) => round(v, 2)), bare: bareSamples.map((v) => round(v, 2)) },
    };
  }

  close(): void {
    this.client.close();
  }
}

/** Whether a target runs functions in QEMU guests (microvm or vm), slow to boot and run under TCG. */
function runsVms(target: Target): boolean {
  return target.isolation === 'microvm' || target.isolation === 'vm';
}

/** Idle instances per side and turns of the density comparison: a microVM boot is slow under TCG. */
export function densityCounts(quick: boolean, target: Target): { instances: number; rounds: number } {
  if (runsVms(target)) return { instances: quick ? 2 : 3, rounds: 2 };
  // A server's own memory moves by a few MB as its heap collects: enough instances and turns that
  // this is small beside what an instance costs.
  return { instances: quick ? 3 : 6, rounds: quick ? 2 : 4 };
}

/** Time idle instances are left before their memory is read (a runtime finishes setting up). */
const IDLE_SETTLE_MS = 1000;

const median = (values: number[]): number => summarize(values).p50;

/** The bare peer of a backend's idle instance: the same guest, started with no platform. */
export interface BarePeer {
  kind: BareIdleKind;
  name: string;
}

/** The bare peer of a target's idle instances, for the backends that have one. */
export function barePeerOf(target: Target): BarePeer | undefined {
  if (target.isolation === 'process') return { kind: 'node', name: 'bare `node` running the agent' };
  const runtime = runtimeOf(target);
  if (runtime) return { kind: runtime, name: `bare \`${runtime} run --detach\`` };
  // The bare QEMU boot is of the Debian guest: no peer for the specialised one.
  if (target.isolation === 'microvm' && !target.env.ISOLA_MICROVM_GUEST)
    return { kind: 'qemu', name: 'bare QEMU boot of the guest' };
  return undefined;
}

export const SIDE_BY_SIDE_GAP_MS = 100;

/** The runtime CLI behind a target, for the ones that have one. */
export function runtimeOf(target: Target): 'runc' | 'crun' | 'runsc' | undefined {
  if (target.isolation === 'gvisor') return 'runsc';
  if (target.isolation === 'container') return target.env.ISOLA_CONTAINER_RUNTIME as 'runc' | 'crun';
  return undefined;
}

/** How long a backend's pool takes to make a blank sandbox again. */
export const REFILL_MS: Record<string, number> = {
  isolate: 100,
  process: 300,
  'container:runc': 800,
  'container:crun': 800,
  gvisor: 2000,
  microvm: 2000,
  'microvm:boot': 10_000,
  'microvm:specialised': 2000,
  vm: 3000,
};

/**
 * A server for one target: its backend only, no blank sandboxes made ahead (cold starts are what is
 * measured), and a blocking wait long enough for a heavy workload's cold starts on a slow backend
 * (ML on a TCG microVM, several at once for the throughput figure), which outlast the default
 * minute. `env` adds to that; the target's own settings come last.
 */
export function startTargetServer(target: Target, dataDir: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  return startTargetsServer([target], dataDir, env);
}

/** The same for several targets of different isolations whose settings agree (see resourceGroups). */
export function startTargetsServer(
  targets: readonly Target[],
  dataDir: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const isolations = targets.map((t) => t.isolation);
  return ServerProcess.start({
    dataDir,
    env: {
      ISOLA_BACKENDS: isolations.join(','),
      ISOLA_PREWARM: isolations.map((i) => `${i}:0`).join(','),
      ISOLA_BLOCKING_WAIT: '10m',
      ...env,
      ...Object.assign({}, ...targets.map((t) => t.env)),
    },
  });
}

/**
 * Stops a server and checks that it took everything it ran with it (sandbox processes,
 * containers, VMs); kills and reports whatever is left, which would be a platform bug.
 */
export async function stopAndCheck(server: ServerProcess, serverPid: number, label: string, warnings: string[]): Promise<void> {
  const before = serverPid ? serverProcesses(serverPid, server.dataDir).filter((pid) => pid !== serverPid) : [];
  await server.stop();
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
    } catch {
      return false;
    }
  };
  let left: number[] = [];
  for (let i = 0; i < 50; i++) {
    left = [...new Set([...before, ...(serverPid ? serverProcesses(serverPid, server.dataDir) : [])])].filter(
      (pid) => pid !== serverPid && alive(pid),
    );
    if (left.length === 0) return;
    await pause(100);
  }
  warnings.push(`${label}: the server left ${left.length} process(es) running after it stopped (killed now)`);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** Whether a target works here, and what it is (the backend's own status line). */
export async function probeTarget(target: Target, dataDir: string): Promise<BackendStatus> {
  if (target.isolation === 'container') {
    const runtime = target.env.ISOLA_CONTAINER_RUNTIME as 'runc' | 'crun';
    if (!findBinary(runtime))
      return { isolation: 'container', available: false, detail: `${runtime} is not installed (npx isola setup containers)` };
    const made = await createBackend('container', { dataDir, containerRuntime: runtime });
    if (!('create' in made)) return made;
    const status = await made.status();
    await made.close();
    return status;
  }
  // The server resolves the kernel cache from its settings; the probe makes the backend itself.
  const specialised = target.env.ISOLA_MICROVM_GUEST === 'specialised';
  const made = await createBackend(target.isolation, {
    dataDir,
    ...(specialised ? { microvm: { guest: 'specialised' as const, kernelCacheDir: resolveKernelCacheDir() } } : {}),
  });
  if (!('create' in made)) return made;
  const status = await made.status();
  await made.close();
  if (target.id === 'microvm:boot' && status.available) return { ...status, detail: `${status.detail}; every instance boots` };
  return status;
}

/**
 * Why a target does not run a workload, if it does not. `emulated`: microVMs run under TCG here,
 * where what takes seconds under KVM takes minutes, so quick runs leave those out.
 */
function applicable(target: Target, workload: Workload, quick: boolean, emulated: boolean): string | undefined {
  const unsupported = workload.unsupported?.[target.isolation];
  if (unsupported) return unsupported;
  if (!quick || (runsVms(target) && !emulated)) return undefined;
  const fullOnly = workload.fullOnly?.[target.isolation];
  if (fullOnly) return `full runs only: ${fullOnly}`;
  if (target.id === 'microvm:boot' && workload.name !== 'hello')
    return 'full runs only: every instance boots under an emulated CPU';
  return undefined;
}

/** The rows a target has for a workload name: its own kind, or a skipped row saying why not. */
export function plan(target: Target, names: string[], quick: boolean, emulated = true): { workload: Workload; skip?: string }[] {
  const rows: { workload: Workload; skip?: string }[] = [];
  const kind = target.isolation === 'wasm' ? 'wasm' : 'nodejs:20';
  for (const name of names) {
    const workload = WORKLOADS.find((w) => w.name === name && w.kind === kind);
    if (!workload) {
      const other = WORKLOADS.find((w) => w.name === name) as Workload;
      rows.push({
        workload: other,
        skip: kind === 'wasm' ? 'no WebAssembly build of this workload' : 'a WebAssembly-only workload',
      });
      continue;
    }
    const skip = applicable(target, workload, quick, emulated);
    rows.push(skip ? { workload, skip } : { workload });
  }
  return rows;
}

function skippedRow(target: Target, workload: Workload, reason: string): WorkloadResult {
  return {
    backend: target.id,
    workload: workload.name,
    kind: target.isolation === 'wasm' ? 'wasm' : 'nodejs:20',
    coldStartMs: null,
    coldInitMs: null,
    warmMs: null,
    throughputRps: null,
    pssMb: null,
    density: null,
    samples: { cold: 0, warm: 0, throughputSeconds: 0 },
    skipped: reason,
  };
}

/** How many steps measurePeers takes for these targets. */
function peerSteps(available: Target[], names: string[]): number {
  const ids = new Set(available.map((t) => t.id));
  const workerd = ids.has('isolate')
    ? WORKLOADS.filter((w) => w.kind === 'nodejs:20' && names.includes(w.name) && !w.unsupported?.isolate).length
    : 0;
  const runtimes = ['container:runc', 'container:crun', 'gvisor'].filter((id) => ids.has(id)).length;
  return 1 + workerd + (ids.has('process') ? 1 : 0) + runtimes + (ids.has('microvm') || ids.has('microvm:boot') ? 1 : 0);
}

const HELLO = WORKLOADS.find((w) => w.name === 'hello' && w.kind === 'nodejs:20') as Workload;
const helloFunction = (): PeerFunction => ({ code: HELLO.code(), params: HELLO.params });

/** The peers, for the targets that are available. */
async function measurePeers(
  available: Target[],
  names: string[],
  dataDir: string,
  quick: boolean,
  concurrency: number,
  progress: Progress,
): Promise<PeerResult[]> {
  const peers: PeerResult[] = [];
  const ids = new Set(available.map((t) => t.id));
  const n = quick ? 3 : 10;
  const warmN = quick ? 20 : 200;
  const seconds = quick ? 1 : 5;
  const attempt = async (label: string, fn: () => Promise<PeerResult | PeerResult[]>) => {
    progress.step(`peer: ${label}`);
    try {
      const result = await fn();
      peers.push(...(Array.isArray(result) ? result : [result]));
    } catch (error) {
      peers.push({ name: label, workload: 'hello', peerOf: '', description: '', error: (error as Error).message.slice(0, 300) });
    }
    progress.done();
  };
  const serverPeer = async (
    name: string,
    peerOf: string,
    description: string,
    start: () => Promise<{ url: string; startMs: number; stop: () => Promise<void> }>,
    workload: Workload,
  ): Promise<PeerResult> => {
    const server = await start();
    try {
      const warm = await warmLatencies(server.url, workload.params, warmN);
      const load = await loadTest(
        server.url,
        { 'content-type': 'application/json' },
        JSON.stringify(workload.params),
        seconds,
        concurrency,
      );
      return {
        name,
        workload: workload.name,
        peerOf,
        description,
        startMs: { p50: round(server.startMs, 3), p99: round(server.startMs, 3) },
        warmMs: pick(summarize(warm)),
        throughputRps: load.requestsPerSecond,
      };
    } finally {
      await server.stop();
    }
  };

  await attempt('node:http', () =>
    serverPeer(
      'node:http',
      'all',
      'a bare node:http server calling the function in-process: no platform, no isolation',
      () => startNodeHttp(helloFunction()),
      HELLO,
    ),
  );
  if (ids.has('isolate')) {
    const scratch = mkdtempSync(join(tmpdir(), 'isola-workerd-'));
    try {
      for (const name of names) {
        const workload = WORKLOADS.find((w) => w.name === name && w.kind === 'nodejs:20');
        if (!workload || workload.unsupported?.isolate) continue;
        await attempt(`workerd ${name}`, async () => {
          // Started afresh per sample: the start time is spawn to first response.
          const starts: number[] = [];
          for (let i = 0; i < (quick ? 1 : 3) - 1; i++) {
            const server = await startWorkerd({ code: workload.code(), params: workload.params }, scratch);
            starts.push(server.startMs);
            await server.stop();
          }
          const result = await serverPeer(
            'workerd',
            'isolate',
            "Cloudflare's workerd serving the function as a Worker",
            async () => {
              const server = await startWorkerd({ code: workload.code(), params: workload.params }, scratch);
              starts.push(server.startMs);
              return server;
            },
            workload,
          );
          return { ...result, startMs: pick(summarize(starts)) };
        });
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  const needsImage = available.some((t) => ['process', 'container', 'gvisor', 'microvm', 'vm'].includes(t.isolation));
  if (!needsImage) return peers;
  const image = ensureNodeRootfs(join(dataDir, 'images'), join(dataDir, 'runtime'));
  const work = mkdtempSync(join(tmpdir(), 'isola-peers-'));
  try {
    if (ids.has('process')) {
      await attempt('bare node start', async () => ({
        name: 'bare node start',
        workload: 'hello',
        peerOf: 'process',
        description: 'spawning node with the guest agent and calling the function once, no platform',
        startMs: pick(summarize(await bareNodeStart(image, helloFunction(), n))),
      }));
    }
    for (const [runtime, peerOf] of [
      ['runc', 'container:runc'],
      ['crun', 'container:crun'],
      ['runsc', 'gvisor'],
    ] as const) {
      if (!ids.has(peerOf)) continue;
      await attempt(`${runtime} run`, async () => ({
        name: `${runtime} run`,
        workload: 'hello',
        peerOf,
        description: `\`${runtime} run\` of the same bundle (rootfs, limits, seccomp) and calling the function once, no platform`,
        startMs: pick(
          summarize(await bareOciRun(runtime, image, work, helloFunction(), runtime === 'runsc' ? Math.min(n, 5) : n)),
        ),
      }));
    }
    if (ids.has('microvm') || ids.has('microvm:boot')) {
      await attempt('QEMU boot', async () => {
        const microvmImage = ensureMicrovmImage(join(dataDir, 'images'), image);
        const backend = await MicrovmBackend.open({ dataDir, image: microvmImage });
        await backend.close();
        return {
          name: 'QEMU boot',
          workload: 'hello',
          peerOf: 'microvm',
          description: `a bare QEMU boot of the same guest image (${backend.accelerator.toUpperCase()}) until its agent answers, no platform`,
          startMs: pick(summarize(await bareQemuBoot(microvmImage, backend.accelerator, work, quick ? 2 : 5))),
        };
      });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return peers;
}

/**
 * The resources dimension's servers: targets whose settings agree share one (one target per
 * isolation in each), so that runc and crun, or the two microVM guests, get a server each.
 * microvm:boot is left out: once booted it is microvm's guest on microvm's machine.
 */
export function resourceGroups(targets: readonly Target[]): Target[][] {
  const groups: Target[][] = [];
  const agrees = (a: Record<string, string>, b: Record<string, string>) =>
    Object.entries(a).every(([key, value]) => b[key] === undefined || b[key] === value);
  for (const target of targets) {
    if (target.id === 'microvm:boot') continue;
    const group = groups.find((g) =>
      g.every((t) => t.isolation !== target.isolation && agrees(t.env, target.env) && agrees(target.env, t.env)),
    );
    if (group) group.push(target);
    else groups.push([target]);
  }
  return groups;
}

/** Runs the harness and returns its results (written out by report.ts). */
export async function runHarness(options: HarnessOptions): Promise<HarnessResults> {
  const started = Date.now();
  const progress = options.progress ?? SILENT;
  const quick = options.quick;
  const dimensions = selectDimensions(options.dimensions);
  // The languages dimension chooses its own backends (wasm runs no language).
  const targets = dimensions.includes('backends') ? selectTargets(options.backends) : [];
  const names = selectWorkloads(options.workloads);
  const concurrency = options.concurrency ?? 4;
  const memoryBudgetMb = options.memoryBudgetMb ?? 1024;
  const ownsDataDir = !options.dataDir;
  const dataDir = options.dataDir ? resolve(options.dataDir) : mkdtempSync(join(tmpdir(), 'isola-bench-'));
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const results: HarnessResults = {
    version: 1,
    quick,
    host: hostInfo(),
    settings: {
      concurrency,
      memoryBudgetMb,
      coldSamples: quick ? 3 : 20,
      warmSamples: quick ? 20 : 200,
      throughputSeconds: quick ? 1 : 5,
    },
    durationSeconds: 0,
    backends: [],
    workloads: WORKLOADS.filter((w) => dimensions.includes('backends') && names.includes(w.name)).map((w) => ({
      name: w.name,
      kind: w.kind,
      description: w.description,
    })),
    results: [],
    peers: [],
    isolation: [],
    warnings: [],
    dimensions,
  };
  let backendSteps = 0;
  /** The backends dimension: every backend, the workloads, the peers and the escape battery. */
  const measureBackends = async (): Promise<void> => {
    // Which targets work here; probing also builds the images they need, outside the timings.
    progress.total(targets.length);
    const available: Target[] = [];
    for (const target of targets) {
      progress.step(`checking ${target.id}`);
      const status = await probeTarget(target, dataDir).catch(
        (error: unknown): BackendStatus => ({
          isolation: target.isolation,
          available: false,
          detail: (error as Error).message,
        }),
      );
      results.backends.push({
        id: target.id,
        isolation: target.isolation,
        description: target.description,
        available: status.available,
        detail: status.detail,
      });
      if (status.available) available.push(target);
      else progress.note(`${target.id} is not available here: ${status.detail}`);
      if (status.available && status.accelerator) results.host.accelerator = status.accelerator.toUpperCase();
      progress.done();
    }
    if (names.includes('ml') && available.some((t) => t.isolation !== 'isolate' && t.isolation !== 'wasm')) {
      try {
        await ensureMlBundle();
      } catch (error) {
        for (const w of WORKLOADS)
          if (w.name === 'ml')
            w.unsupported = Object.fromEntries(
              ISOLATIONS.map((i) => [i, `the model could not be bundled: ${(error as Error).message}`]),
            );
      }
    }

    const emulated = results.host.accelerator !== 'KVM';
    const plans = available.map((target) => ({ target, rows: plan(target, names, quick, emulated) }));
    const measured = plans.reduce(
      (sum, p) =>
        sum +
        1 +
        p.rows.filter((r) => !r.skip).length * 3 +
        (p.target.isolation !== 'wasm' && p.rows.some((r) => r.workload.name === 'hello' && !r.skip) ? 1 : 0) +
        (runtimeOf(p.target) && p.rows.some((r) => r.workload.name === 'hello' && !r.skip) ? 1 : 0) +
        (barePeerOf(p.target) && p.rows.some((r) => r.workload.name === 'hello' && !r.skip) ? 1 : 0) +
        (options.attacks !== false && p.target.attacks ? ATTACKS.length : 0),
      0,
    );
    backendSteps = targets.length + measured + (options.peers !== false ? peerSteps(available, names) : 0);
    progress.total(backendSteps);

    if (options.peers !== false) results.peers = await measurePeers(available, names, dataDir, quick, concurrency, progress);

    const bait = options.attacks !== false ? await plantBait(dataDir) : undefined;
    try {
      for (const { target, rows } of plans) {
        const server = await startTargetServer(target, dataDir, bait ? { ISOLA_BENCH_SECRET: bait.secret } : {});
        const run = new TargetRun(target, server, { quick, concurrency, memoryBudgetMb });
        try {
          await run.init();
          const sizes = [...new Set(rows.filter((r) => !r.skip).map((r) => r.workload.memoryMb))];
          progress.step(`${target.id}: first instances`);
          await run.warmUp(sizes);
          progress.done();
          for (const row of rows) {
            if (row.skip) results.results.push(skippedRow(target, row.workload, row.skip));
            else {
              const result = await run.measure(
                row.workload,
                countsFor(quick, target, row.workload),
                progress.step,
                progress.done,
              );
              results.results.push(result);
              if (result.error) progress.note(`${target.id} ${row.workload.name}: ${result.error}`);
              const runtime = runtimeOf(target);
              if (runtime && row.workload.name === 'hello' && !result.error) {
                progress.step(`${target.id}: cold starts beside bare \`${runtime} run\`, in turns`);
                const workDir = mkdtempSync(join(tmpdir(), 'isola-side-by-side-'));
                try {
                  const cold = countsFor(quick, target, row.workload).cold;
                  result.sideBySide = await run.coldSideBySide(
                    row.workload,
                    runtime,
                    runtime === 'runsc' ? Math.min(cold, 10) : cold,
                    workDir,
                  );
                } catch (error) {
                  progress.note(`${target.id}: side by side with ${runtime} failed: ${(error as Error).message.slice(0, 200)}`);
                } finally {
                  rmSync(workDir, { recursive: true, force: true });
                }
                progress.done();
              }
              const bare = barePeerOf(target);
              if (bare && row.workload.name === 'hello' && !result.error) {
                progress.step(`${target.id}: idle instances beside ${bare.name}, in turns`);
                const workDir = mkdtempSync(join(tmpdir(), 'isola-density-'));
                try {
                  const { instances, rounds } = densityCounts(quick, target);
                  result.densityBeside = await run.densityBeside(
                    row.workload,
                    bare,
                    instances,
                    rounds,
                    workDir,
                    results.host.accelerator === 'KVM' ? 'kvm' : 'tcg',
                  );
                } catch (error) {
                  result.densityBesideError = (error as Error).message.slice(0, 300);
                  progress.note(`${target.id}: idle instances beside ${bare.name} failed: ${result.densityBesideError}`);
                } finally {
                  rmSync(workDir, { recursive: true, force: true });
                }
                progress.done();
              }
            }
          }
          if (bait && target.attacks && options.attacks !== false) {
            const isolation = await runAttacks(
              { backend: target.id, isolation: target.isolation, server, client: run.client, serverPid: run.serverPid, quick },
              bait,
              { before: (attack) => progress.step(`${target.id}: attack ${attack}`), after: () => progress.done() },
            );
            results.isolation.push(...isolation);
          }
        } finally {
          run.close();
          await stopAndCheck(server, run.serverPid, target.id, results.warnings);
        }
        const hello = results.results.find((r) => r.backend === target.id && r.workload === 'hello' && !r.skipped);
        if (hello && target.isolation !== 'wasm') {
          progress.step(`${target.id}: cold starts with blank sandboxes made ahead`);
          // The server's default prewarm pool for this backend.
          const pool = resolveServerConfig({}, {}).prewarm.find((p) => p.isolation === target.isolation)?.count ?? 1;
          const pooled = await ServerProcess.start({
            dataDir,
            env: { ISOLA_BACKENDS: target.isolation, ISOLA_PREWARM: `${target.isolation}:${pool}`, ...target.env },
          });
          const pooledRun = new TargetRun(target, pooled, { quick, concurrency, memoryBudgetMb });
          try {
            await pooledRun.init();
            const workload = plan(target, ['hello'], quick)[0]?.workload as Workload;
            const figures = await pooledRun.prewarmed(
              workload,
              countsFor(quick, target, workload).cold,
              REFILL_MS[target.id] ?? 1000,
            );
            hello.prewarmedStartMs = figures.start;
            hello.prewarmedHits = figures.hits;
          } catch (error) {
            hello.prewarmedStartMs = null;
            hello.prewarmedHits = `failed: ${(error as Error).message.slice(0, 200)}`;
          } finally {
            pooledRun.close();
            await stopAndCheck(pooled, pooledRun.serverPid, `${target.id} (pool)`, results.warnings);
          }
          progress.done();
        }
      }
    } finally {
      if (bait) await removeBait(bait);
    }
  };
  /** The resources dimension: a server per group of targets, each target against bare in turns. */
  const measureResourcesDimension = async (): Promise<void> => {
    const { measureResources } = await import('./resources-run.js');
    const unavailable = new Set(results.backends.filter((b) => !b.available).map((b) => b.id));
    const groups = resourceGroups(selectTargets(options.backends).filter((t) => !unavailable.has(t.id)));
    const rounds = quick ? 1 : 3;
    const runs = groups.reduce((sum, g) => sum + rounds * (1 + g.length + (g.some((t) => t.isolation === 'wasm') ? 1 : 0)), 0);
    progress.total(backendSteps + runs);
    backendSteps += runs;
    results.resources = await measureResources({
      quick,
      groups: groups.map((group) => ({
        targets: group.map((t) => ({ name: t.id, isolation: t.isolation })),
        start: () => startTargetsServer(group, dataDir),
        stop: (server) => server.stop(),
      })),
      log: (message) => {
        if (message.includes('not here') || message.includes('failed')) progress.note(`resources: ${message}`);
      },
      ran: (label) => {
        progress.step(`resources: ${label}`);
        progress.done();
      },
    });
  };
  try {
    if (dimensions.includes('backends')) await measureBackends();
    if (dimensions.includes('resources')) await measureResourcesDimension();
    if (dimensions.includes('languages')) {
      const { runLanguages } = await import('./languages-dimension.js');
      results.languages = await runLanguages({
        quick,
        ...(options.backends ? { backends: options.backends } : {}),
        ...(options.kinds ? { kinds: options.kinds } : {}),
        dataDir,
        peers: options.peers !== false,
        progress: { ...progress, total: (steps) => progress.total(backendSteps + steps) },
      });
    }
    results.durationSeconds = Math.round((Date.now() - started) / 1000);
    return results;
  } finally {
    if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}
