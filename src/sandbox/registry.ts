import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { badRequest, IsolaError } from '../core/errors.js';
import { ISOLATIONS, ISOLATIONS_FOR_KIND, type Isolation, KINDS, type Kind } from '../core/kinds.js';
import type { Cidr } from '../core/network-policy.js';
import type { ActionVersion } from '../core/types.js';
import { buildAgent, buildBundle } from '../guest/bundle.js';
import { ensureMicrovmImage, type Guest, type MicrovmImage } from '../images/microvm-image.js';
import { ensureNodeRootfs, type NodeRootfs } from '../images/node-rootfs.js';
import { type ImageName, missingForKind } from '../images/runtimes.js';
import { KERNEL_SETUP_FIX, missingForKernelBuild } from '../images/specialised-kernel.js';
import type { Backend, BackendStatus, FunctionCode, KindSupport, Sandbox, SandboxSpec } from './backend.js';
import { ContainerBackend } from './container/container-backend.js';
import { findBinary, hybridCgroups, OciRuntime } from './container/runtime.js';
import { RUNNING_AS_ROOT, sandboxUids } from './host-ids.js';
import { callInChild, sourceUrl } from './in-child.js';
import { IsolateBackend } from './isolate/isolate-backend.js';
import { MicrovmBackend, machineIsolation } from './microvm/microvm-backend.js';
import { type Machine, SEABIOS } from './microvm/qemu.js';
import { QEMU } from './microvm/vm.js';

/** Whether this host can give a function egress (root, ip and nft): the platform and doctor ask here. */
export { egressSupported } from './network/egress.js';

import { ProcessBackend } from './process/process-backend.js';
import { findPyodide } from './wasm/python-sandbox.js';
import { checkWasmModule, WasmBackend } from './wasm/wasm-backend.js';

/** The microVM backend's settings. */
export interface MicrovmSettings {
  /** Forces an accelerator instead of probing for KVM (ISOLA_MICROVM_ACCEL). */
  accelerator?: 'kvm' | 'tcg';
  /** What a prewarmed VM is: restored from the base snapshot (default) or waiting for it (ISOLA_MICROVM_PREWARM). */
  prewarmMode?: 'restored' | 'waiting';
  /** How instances start: from the base snapshot (default) or a full boot (ISOLA_MICROVM_START). */
  start?: 'snapshot' | 'boot';
  /** ms a template VM settles before it is snapshotted (ISOLA_MICROVM_SETTLE_MS, default 2000). */
  settleMs?: number;
  /** Where the specialised kernel is built and kept (XDG_CACHE_HOME); set with guest `specialised`. */
  kernelCacheDir?: string;
  /**
   * The microvm machine's guest kernel (ISOLA_MICROVM_GUEST): Debian's cloud kernel (default) or
   * one specialised for functions, built from linux-source. The vm machine always boots Debian's:
   * the specialised kernel has no PCI.
   */
  guest?: Guest;
}

/** What the backends are made with; read from flags and environment by config.ts. */
export interface BackendSettings {
  /** runc or crun for isolation "container"; the faster one that works when absent. */
  containerRuntime?: 'runc' | 'crun';
  /** What prewarmed containers are: started (the default) or only created. */
  containerPrewarm?: 'started' | 'created';
  /** Worker threads for isolation "wasm" (ISOLA_WASM_WORKERS); the number of cores, at least 2, when absent. */
  wasmWorkers?: number;
  /** Short wasm modules run on the server's thread within a budget (see WasmBackendOptions.fastPath). */
  wasmFastPath?: boolean;
  microvm?: MicrovmSettings;
  /** IPv4 ranges that functions with `network: egress` may reach although private (ISOLA_EGRESS_ALLOW). */
  egressAllow?: readonly Cidr[];
}

export interface BackendContext extends BackendSettings {
  dataDir: string;
  /** Told what a probe is doing when a step takes seconds, so that start-up can say what it waits for. */
  onProgress?: (isolation: Isolation, message: string) => void;
}

/** Makes the backend for an isolation, or says why this build or host cannot. */
export async function createBackend(isolation: Isolation, context: BackendContext): Promise<Backend | BackendStatus> {
  switch (isolation) {
    case 'isolate':
      return new IsolateBackend();
    case 'process':
      return new ProcessBackend({
        agentPath: buildAgent(join(context.dataDir, 'runtime')),
        ...(context.egressAllow ? { egressAllow: context.egressAllow } : {}),
      });
    case 'wasm': {
      const pyodideDir = findPyodide();
      return new WasmBackend({
        workerScript: buildBundle('wasm-worker', join(context.dataDir, 'runtime')),
        meterScript: buildBundle('wasm-meter', join(context.dataDir, 'runtime')),
        ...(pyodideDir
          ? {
              python: {
                workerScript: buildBundle('python-worker', join(context.dataDir, 'runtime')),
                pyodideDir,
                snapshotDir: join(context.dataDir, 'runtime'),
              },
            }
          : {}),
        ...(context.wasmWorkers !== undefined ? { workers: context.wasmWorkers } : {}),
        ...(context.wasmFastPath === false ? { fastPath: false } : {}),
      });
    }
    case 'container':
      return openContainerBackend(context);
    case 'gvisor':
      return openGvisorBackend(context);
    case 'microvm':
      return openMicrovmBackend(context, 'microvm');
    case 'vm':
      return openMicrovmBackend(context, 'q35');
  }
}

const SETUP_FIX = 'Install the runtimes with `npx isola setup` (Debian packages runc, crun, runsc) and run the server as root.';

/**
 * The runtime CLI as every backend drives it: runsc with no network and the ptrace platform
 * (systrap and KVM do not work here), crun outside the cgroup2 mount on a hybrid host.
 */
export function ociRuntime(name: 'runc' | 'crun' | 'runsc', stateRoot: string): OciRuntime {
  const binary = findBinary(name);
  if (!binary) throw new Error(`${name} is not installed`);
  return new OciRuntime(
    name,
    binary,
    stateRoot,
    name === 'crun' && hybridCgroups(),
    name === 'runsc' ? ['--network=none', '--platform=ptrace'] : [],
  );
}

function containerPaths(context: BackendContext, runtime: string) {
  return {
    stateRoot: resolve(context.dataDir, 'run', runtime),
    bundlesDir: resolve(context.dataDir, 'containers', runtime),
  };
}

function nodeImage(context: BackendContext) {
  return ensureNodeRootfs(resolve(context.dataDir, 'images'), resolve(context.dataDir, 'runtime'));
}

/** Image builds under way or done in this process, by images dir and image: each is made once. */
const imageBuilds = new Map<string, Promise<unknown>>();

function once<T>(key: string, make: () => Promise<T>): Promise<T> {
  let build = imageBuilds.get(key) as Promise<T> | undefined;
  if (!build) {
    build = make();
    imageBuilds.set(key, build);
    // A failed build (a runtime not installed yet) is tried again next time.
    build.catch(() => imageBuilds.delete(key));
  }
  return build;
}

/**
 * A language's root file system (node, the agent and the runtime's files), built on first use
 * in a child process: linking a runtime's thousands of files must not hold the server's thread.
 */
function languageImage(context: BackendContext, name: Exclude<ImageName, 'nodejs'>): Promise<NodeRootfs> {
  const imagesDir = resolve(context.dataDir, 'images');
  return once(`rootfs ${imagesDir} ${name}`, () =>
    callInChild<NodeRootfs>(sourceUrl('../images/node-rootfs', import.meta.url), 'ensureRootfs', [
      imagesDir,
      resolve(context.dataDir, 'runtime'),
      name,
    ]),
  );
}

/** A language's microVM guest: its root file system as a root disk, built on first use in a child process. */
function languageMicrovmImage(
  context: BackendContext,
  name: Exclude<ImageName, 'nodejs'>,
  guest: Guest,
  kernelCacheDir: string | undefined,
): Promise<MicrovmImage> {
  const imagesDir = resolve(context.dataDir, 'images');
  return once(`microvm ${imagesDir} ${guest} ${name}`, async () => {
    const rootfs = await languageImage(context, name);
    return callInChild<MicrovmImage>(sourceUrl('../images/microvm-image', import.meta.url), 'ensureMicrovmImage', [
      imagesDir,
      rootfs,
      guest,
      kernelCacheDir,
    ]);
  });
}

/**
 * isolation "container": crun when it works (it starts containers faster), else runc; or the
 * one the settings name. The status says what was tried and why.
 */
async function openContainerBackend(context: BackendContext): Promise<Backend | BackendStatus> {
  if (!RUNNING_AS_ROOT) {
    return { isolation: 'container', available: false, detail: 'runc and crun need root on this host.', fix: SETUP_FIX };
  }
  const candidates: ('crun' | 'runc')[] = context.containerRuntime ? [context.containerRuntime] : ['crun', 'runc'];
  const failures: string[] = [];
  for (const name of candidates) {
    const binary = findBinary(name);
    if (!binary) {
      failures.push(`${name}: not installed`);
      continue;
    }
    context.onProgress?.('container', `probing ${name} with a test container`);
    const paths = containerPaths(context, name);
    const runtime = ociRuntime(name, paths.stateRoot);
    const backend = await ContainerBackend.open({
      isolation: 'container',
      runtime,
      image: nodeImage(context),
      imageFor: (name) => languageImage(context, name),
      bundlesDir: paths.bundlesDir,
      uids: sandboxUids(),
      ...(context.egressAllow ? { egressAllow: context.egressAllow } : {}),
      ...(context.containerPrewarm ? { prewarmMode: context.containerPrewarm } : {}),
      ...(failures.length > 0 ? { note: `not chosen: ${failures.join('; ')}` } : {}),
    });
    const status = await backend.status();
    if (status.available) return backend;
    failures.push(`${name}: ${status.detail}`);
  }
  return { isolation: 'container', available: false, detail: failures.join('; '), fix: SETUP_FIX };
}

/** isolation "gvisor": runsc (see ociRuntime). */
async function openGvisorBackend(context: BackendContext): Promise<Backend | BackendStatus> {
  const binary = findBinary('runsc');
  if (!RUNNING_AS_ROOT || !binary) {
    return {
      isolation: 'gvisor',
      available: false,
      detail: binary ? 'runsc needs root on this host.' : 'runsc is not installed.',
      fix: SETUP_FIX,
    };
  }
  context.onProgress?.('gvisor', 'probing runsc with a test container');
  const paths = containerPaths(context, 'runsc');
  const runtime = ociRuntime('runsc', paths.stateRoot);
  return ContainerBackend.open({
    isolation: 'gvisor',
    runtime,
    image: nodeImage(context),
    imageFor: (name) => languageImage(context, name),
    bundlesDir: paths.bundlesDir,
    uids: sandboxUids(),
    ...(context.egressAllow ? { egressAllow: context.egressAllow } : {}),
  });
}

/**
 * isolation "microvm": QEMU's microvm machine with the guest image built on first use; isolation
 * "vm": the same guest in a q35 machine with firmware and PCI devices.
 */
async function openMicrovmBackend(context: BackendContext, machine: Machine): Promise<Backend | BackendStatus> {
  const isolation = machineIsolation(machine);
  const fix =
    'Install QEMU and the image tools with `npx isola setup microvm` (qemu-system-x86 busybox-static e2fsprogs cpio lz4 seabios).';
  if (!existsSync(QEMU)) return { isolation, available: false, detail: `${QEMU} is not installed.`, fix };
  if (machine === 'q35' && !existsSync(SEABIOS)) {
    return { isolation, available: false, detail: `${SEABIOS} (Debian's SeaBIOS) is not installed.`, fix };
  }
  const settings = context.microvm ?? {};
  // The specialised kernel has no PCI: the q35 machine always boots Debian's.
  const guest: Guest = machine === 'microvm' ? (settings.guest ?? 'debian') : 'debian';
  if (guest === 'specialised') {
    const missing = missingForKernelBuild();
    if (missing) {
      return {
        isolation,
        available: false,
        detail: `ISOLA_MICROVM_GUEST=specialised, but its kernel cannot be built: ${missing}.`,
        fix: KERNEL_SETUP_FIX,
      };
    }
  }
  let image: MicrovmImage;
  try {
    const imagesDir = resolve(context.dataDir, 'images');
    // One build for both machines (microvm and vm open at once, on the same images).
    image = await once(`microvm ${imagesDir} ${guest} nodejs`, async () => {
      const rootfs = nodeImage(context);
      // (The specialised guest always asks a child: its kernel may have left the cache.)
      if (guest === 'debian' && hasMicrovmImage(imagesDir)) return ensureMicrovmImage(imagesDir, rootfs);
      // A first build takes seconds of synchronous work (a specialised kernel, minutes, once per
      // host): it runs in a child process so that the server keeps answering meanwhile.
      context.onProgress?.(
        isolation,
        guest === 'debian'
          ? 'building the guest image (once per data dir: a kernel, an initramfs and a root disk)'
          : 'building the specialised guest (its kernel once per host, minutes; its root disk once per data dir)',
      );
      return callInChild<MicrovmImage>(sourceUrl('../images/microvm-image', import.meta.url), 'ensureMicrovmImage', [
        imagesDir,
        rootfs,
        guest,
        settings.kernelCacheDir,
      ]);
    });
  } catch (error) {
    return {
      isolation,
      available: false,
      detail: `The guest image could not be built: ${(error as Error).message}`,
      fix: guest === 'debian' ? fix : KERNEL_SETUP_FIX,
    };
  }
  return MicrovmBackend.open({
    dataDir: context.dataDir,
    image,
    imageFor: (name) => languageMicrovmImage(context, name, guest, settings.kernelCacheDir),
    ...(settings.accelerator ? { accelerator: settings.accelerator } : {}),
    ...(settings.prewarmMode ? { prewarmMode: settings.prewarmMode } : {}),
    ...(settings.start ? { start: settings.start } : {}),
    ...(settings.settleMs !== undefined ? { settleMs: settings.settleMs } : {}),
    onProgress: (message) => context.onProgress?.(isolation, message),
    ...(context.egressAllow ? { egressAllow: context.egressAllow } : {}),
    machine,
  });
}

/**
 * Builds the base snapshot of a memory size now rather than on first use (`isola images build
 * microvm`), probing the accelerator as the backend does.
 */
export async function prepareMicrovmSnapshot(
  dataDir: string,
  image: MicrovmImage,
  memoryMb: number,
  settings: MicrovmSettings = {},
): Promise<{ accelerator: string; acceleratorReason: string; snapshotDir: string }> {
  const backend = await MicrovmBackend.open({
    dataDir,
    image,
    ...(settings.accelerator ? { accelerator: settings.accelerator } : {}),
    ...(settings.settleMs !== undefined ? { settleMs: settings.settleMs } : {}),
  });
  try {
    const snapshot = await backend.baseSnapshot(memoryMb);
    return { accelerator: backend.accelerator, acceleratorReason: backend.acceleratorReason, snapshotDir: snapshot.dir };
  } finally {
    await backend.close();
  }
}

/** Whether a guest image was built in this images dir: checking it again is then a matter of milliseconds. */
function hasMicrovmImage(imagesDir: string): boolean {
  try {
    return readdirSync(imagesDir).some(
      (entry) => /^microvm-[0-9a-f]+$/.test(entry) && existsSync(join(imagesDir, entry, '.complete')),
    );
  } catch {
    return false;
  }
}

export interface RuntimeStatus {
  runtime: 'runc' | 'crun' | 'runsc';
  works: boolean;
  detail: string;
}

/** Every OCI runtime on its own, for `doctor`: which work here, and why the others do not. */
export async function probeContainerRuntimes(context: BackendContext): Promise<RuntimeStatus[]> {
  const result: RuntimeStatus[] = [];
  for (const name of ['runc', 'crun', 'runsc'] as const) {
    const binary = findBinary(name);
    if (!binary) {
      result.push({ runtime: name, works: false, detail: 'not installed (npx isola setup containers)' });
      continue;
    }
    if (!RUNNING_AS_ROOT) {
      result.push({ runtime: name, works: false, detail: 'needs root on this host' });
      continue;
    }
    const paths = containerPaths(context, name);
    const runtime = ociRuntime(name, paths.stateRoot);
    try {
      const backend = await ContainerBackend.open({
        isolation: name === 'runsc' ? 'gvisor' : 'container',
        runtime,
        image: nodeImage(context),
        bundlesDir: paths.bundlesDir,
        uids: sandboxUids(),
      });
      const status = await backend.status();
      const hybrid =
        name === 'crun' && hybridCgroups()
          ? "; run in a mount namespace of its own without the cgroup2 mount, as crun 1.8 needs on this host's hybrid cgroups"
          : '';
      result.push({ runtime: name, works: status.available, detail: status.detail + (status.available ? hybrid : '') });
    } catch (error) {
      result.push({ runtime: name, works: false, detail: (error as Error).message });
    }
  }
  return result;
}

export interface ProbedBackends {
  backends: Map<Isolation, Backend>;
  statuses: BackendStatus[];
}

export const NOT_ENABLED = 'Not enabled by the backends setting.';

/** Creates and checks every backend, one after the other; keeps those that work (and, if given, only those wanted). */
export async function probeBackends(context: BackendContext, wanted?: readonly Isolation[]): Promise<ProbedBackends> {
  const backends = new Map<Isolation, Backend>();
  const statuses: BackendStatus[] = [];
  for (const isolation of ISOLATIONS) {
    if (wanted && !wanted.includes(isolation)) {
      statuses.push({ isolation, available: false, detail: NOT_ENABLED });
      continue;
    }
    const probed = await probeBackend(isolation, context);
    statuses.push(probed.status);
    if (probed.backend) backends.set(isolation, probed.backend);
  }
  return { backends, statuses };
}

export interface Probed {
  /** Set when the backend works here. */
  backend?: Backend;
  status: BackendStatus;
}

/**
 * Which kinds a working backend runs here, and why not the others: the backend's own bounds
 * (JavaScript only in V8 isolates, WebAssembly only in the wasm workers), then whether the host
 * has the language's runtime (the process backend runs it, the images are made of it) and, for
 * compiled languages, its compiler.
 */
export function kindSupport(isolation: Isolation, exists: (path: string) => boolean = existsSync): KindSupport[] {
  return KINDS.map((kind: Kind): KindSupport => {
    if (!ISOLATIONS_FOR_KIND[kind].includes(isolation)) {
      const why =
        isolation === 'isolate'
          ? 'V8 isolates run JavaScript only'
          : isolation === 'wasm'
            ? 'the wasm backend runs WebAssembly modules and python:3 (through Pyodide) only'
            : `runs under ${ISOLATIONS_FOR_KIND[kind].join(', ')} only`;
      return { kind, available: false, why };
    }
    // Python under wasm is Pyodide's CPython, not the host's.
    if (isolation === 'wasm' && kind === 'python:3') {
      return findPyodide() ? { kind, available: true } : { kind, available: false, why: 'npm package pyodide is not installed' };
    }
    const missing = missingForKind(kind, exists);
    return missing ? { kind, available: false, why: missing } : { kind, available: true };
  });
}

/** Creates and checks one backend; closes it again when it does not work. */
async function probeBackend(isolation: Isolation, context: BackendContext): Promise<Probed> {
  let backend: Backend | undefined;
  try {
    const made = await createBackend(isolation, context);
    if (!('create' in made)) return { status: made };
    backend = made;
    const probed = await made.status();
    const status = probed.available ? { ...probed, kinds: kindSupport(isolation) } : probed;
    if (status.available) return { backend, status };
    await backend.close();
    return { status };
  } catch (error) {
    await backend?.close().catch(() => {});
    return { status: { isolation, available: false, detail: error instanceof Error ? error.message : String(error) } };
  }
}

// ---- start-up: probes in the background ---------------------------------------------------

/** Probes that need no more than a moment: the in-process backends and the process backend. */
const QUICK: readonly Isolation[] = ['isolate', 'wasm', 'process'];

export interface BackendEvents {
  /** A line about a backend: what its probe is doing, then that it is ready or why it is not. */
  progress?(isolation: Isolation, message: string): void;
  /** A backend's probe ended and it works: it now serves (and may register its metrics). */
  ready?(backend: Backend): void;
}

/**
 * The backends of a running server, live. Each backend's probe runs in the background; until it
 * ends, `backends` holds a stand-in for it that makes callers wait for the probe (a deploy or a
 * call up to `waitMs`, then a 503 saying the backend is still being prepared; a sandbox made
 * ahead of demand for as long as the probe takes). When the probe ends the stand-in is replaced
 * by the backend, or removed if the backend does not work here, and `statuses` says so.
 */
export class BackendSet {
  /** Live: the backends that work or are being probed, by isolation. */
  readonly backends = new Map<Isolation, Backend>();
  /** Live: one status per isolation, replaced as probes end. */
  readonly statuses: BackendStatus[];
  /** Resolves when every probe has ended. */
  readonly settled: Promise<void>;

  constructor(
    context: BackendContext,
    wanted: readonly Isolation[] | undefined,
    waitMs: number,
    events: BackendEvents = {},
    /** How one backend is made and checked (tests give their own). */
    probe: (isolation: Isolation, context: BackendContext) => Promise<Probed> = probeBackend,
  ) {
    this.statuses = ISOLATIONS.map((isolation) =>
      wanted && !wanted.includes(isolation)
        ? { isolation, available: false, detail: NOT_ENABLED }
        : { isolation, available: false, detail: 'Being probed in the background.', probing: true },
    );
    const enabled = ISOLATIONS.filter((isolation) => !wanted || wanted.includes(isolation));
    const withProgress: BackendContext = {
      ...context,
      onProgress: (isolation, message) => {
        this.setStatus({ isolation, available: false, detail: `Being probed: ${message}.`, probing: true });
        events.progress?.(isolation, `${message} ...`);
      },
    };
    const probes: Promise<Probed>[] = [];
    const begin = (isolation: Isolation, after: Promise<unknown>): Promise<Probed> => {
      const probed = after.then(() => probe(isolation, withProgress));
      probes.push(probed);
      const standIn = new PendingBackend(isolation, probed, waitMs);
      this.backends.set(isolation, standIn);
      void probed.then(({ backend, status }) => {
        this.setStatus(status);
        if (standIn.closed) return;
        standIn.handedOver = true;
        if (backend) {
          this.backends.set(isolation, backend);
          events.ready?.(backend);
          events.progress?.(isolation, `ready (${status.detail})`);
        } else {
          this.backends.delete(isolation);
          const asked = wanted?.includes(isolation) ? ', although the backends setting asks for it' : '';
          const fix = status.fix ? ` Fix: ${status.fix}` : '';
          events.progress?.(isolation, `not available${asked}: ${status.detail}${fix}`);
        }
      });
      return probed;
    };
    // Not before the caller has finished starting (the server listens first). The quick probes
    // go one at a time, so that the backends most calls use are ready first; the slow ones
    // (containers, gVisor, microVMs) then run side by side.
    let quick: Promise<unknown> = new Promise((resolve) => setImmediate(resolve));
    for (const isolation of enabled.filter((i) => QUICK.includes(i))) quick = begin(isolation, quick);
    for (const isolation of enabled.filter((i) => !QUICK.includes(i))) begin(isolation, quick);
    this.settled = Promise.all(probes).then(() => {});
  }

  private setStatus(status: BackendStatus): void {
    const index = this.statuses.findIndex((s) => s.isolation === status.isolation);
    if (index >= 0) this.statuses[index] = status;
  }
}

/** A stand-in for a backend whose probe has not ended: see BackendSet. */
class PendingBackend implements Backend {
  /** The real bound is checked in validate, once the probe has ended. */
  readonly minMemoryMb = 0;
  closed = false;
  /** The probe's backend went into the set (or was dropped there): it is no longer this stand-in's to close. */
  handedOver = false;
  private outcome: Probed | undefined;

  constructor(
    readonly isolation: Isolation,
    private readonly probe: Promise<Probed>,
    private readonly waitMs: number,
  ) {
    void probe.then((probed) => {
      this.outcome = probed;
    });
  }

  async status(): Promise<BackendStatus> {
    return (
      this.outcome?.status ?? {
        isolation: this.isolation,
        available: false,
        detail: 'Being probed in the background.',
        probing: true,
      }
    );
  }

  /**
   * The backend once its probe has ended; with `bounded`, a 503 if that takes longer than the
   * wait. A 400 if the backend does not work here, worded as the platform words it.
   */
  private async backend(bounded: boolean): Promise<Backend> {
    let timer: NodeJS.Timeout | undefined;
    const outcome = bounded
      ? await Promise.race([
          this.probe,
          new Promise<'late'>((resolve) => {
            timer = setTimeout(() => resolve('late'), this.waitMs);
          }),
        ]).finally(() => clearTimeout(timer))
      : await this.probe;
    if (this.closed) throw new BackendUnavailableError(503, 'The server is stopping.');
    if (outcome === 'late') {
      throw new BackendUnavailableError(
        503,
        `The isolation backend "${this.isolation}" is still being prepared (its start-up probe has not ended); try again shortly.`,
      );
    }
    if (!outcome.backend) {
      throw new BackendUnavailableError(
        400,
        `The isolation backend "${this.isolation}" is not available on this server: ${outcome.status.detail}`,
      );
    }
    return outcome.backend;
  }

  async validate(action: Omit<ActionVersion, 'version' | 'revision' | 'updated'>): Promise<void> {
    const backend = await this.backend(true);
    if (action.limits.memory < backend.minMemoryMb) {
      throw badRequest(`limits.memory must be at least ${backend.minMemoryMb} MB under isolation "${this.isolation}".`);
    }
    await backend.validate?.(action);
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    // A sandbox made ahead of demand may wait for the probe however long it takes.
    return (await this.backend(!spec.ahead)).create(spec);
  }

  async restore(code: FunctionCode, spec: SandboxSpec): Promise<Sandbox | undefined> {
    return (await this.backend(true)).restore?.(code, spec);
  }

  snapshot(code: FunctionCode, spec: SandboxSpec): void {
    void this.probe.then((probed) => probed.backend?.snapshot?.(code, spec));
  }

  /** Waits for the probe, and closes the backend it made unless that was handed over already. */
  async close(): Promise<void> {
    this.closed = true;
    const probed = await this.probe;
    if (!this.handedOver) await probed.backend?.close();
  }
}

/**
 * What a stand-in answers while its backend is being probed (503) or once it turned out not to
 * work here (400, as a deploy to a backend that does not work has always been answered).
 */
export class BackendUnavailableError extends IsolaError {
  constructor(status: 400 | 503, message: string) {
    super(status, message);
    this.name = 'BackendUnavailableError';
  }
}

/**
 * The deploy-time checks of `isolation` that need no running backend (a wasm module's imports and
 * memory): a cluster's controller, which runs none, makes these; the rest wait for an invoker.
 */
export async function validateWithoutBackend(
  isolation: Isolation,
  action: Pick<ActionVersion, 'exec' | 'limits'>,
): Promise<void> {
  if (isolation === 'wasm') await checkWasmModule(action);
}
