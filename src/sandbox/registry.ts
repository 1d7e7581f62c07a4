import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ISOLATIONS, type Isolation } from '../core/kinds.js';
import { buildAgent, buildBundle } from '../guest/bundle.js';
import { ensureMicrovmImage, type MicrovmImage } from '../images/microvm-image.js';
import { ensureNodeRootfs } from '../images/node-rootfs.js';
import type { Backend, BackendStatus } from './backend.js';
import { ContainerBackend } from './container/container-backend.js';
import { findBinary, hybridCgroups, OciRuntime } from './container/runtime.js';
import { RUNNING_AS_ROOT, sandboxUids } from './host-ids.js';
import { IsolateBackend } from './isolate/isolate-backend.js';
import { MicrovmBackend } from './microvm/microvm-backend.js';
import { QEMU } from './microvm/vm.js';
import { ProcessBackend } from './process/process-backend.js';
import { WasmBackend } from './wasm/wasm-backend.js';

export interface BackendContext {
  dataDir: string;
  /** runc or crun for isolation "container"; the faster one that works when absent. */
  containerRuntime?: 'runc' | 'crun';
  /** What prewarmed containers are: started (the default) or only created. */
  containerPrewarm?: 'started' | 'created';
}

/** Makes the backend for an isolation, or says why this build or host cannot. */
export async function createBackend(isolation: Isolation, context: BackendContext): Promise<Backend | BackendStatus> {
  switch (isolation) {
    case 'isolate':
      return new IsolateBackend();
    case 'process':
      return new ProcessBackend({ agentPath: buildAgent(join(context.dataDir, 'runtime')) });
    case 'wasm':
      return new WasmBackend({
        workerScript: buildBundle('wasm-worker', join(context.dataDir, 'runtime')),
        ...(process.env.ISOLA_WASM_WORKERS ? { workers: Number(process.env.ISOLA_WASM_WORKERS) } : {}),
      });
    case 'container':
      return openContainerBackend(context);
    case 'gvisor':
      return openGvisorBackend(context);
    case 'microvm':
      return openMicrovmBackend(context);
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
    const paths = containerPaths(context, name);
    const runtime = ociRuntime(name, paths.stateRoot);
    const backend = await ContainerBackend.open({
      isolation: 'container',
      runtime,
      image: nodeImage(context),
      bundlesDir: paths.bundlesDir,
      uids: sandboxUids(),
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
  const paths = containerPaths(context, 'runsc');
  const runtime = ociRuntime('runsc', paths.stateRoot);
  return ContainerBackend.open({
    isolation: 'gvisor',
    runtime,
    image: nodeImage(context),
    bundlesDir: paths.bundlesDir,
    uids: sandboxUids(),
  });
}

/** isolation "microvm": QEMU's microvm machine with the guest image built on first use. */
async function openMicrovmBackend(context: BackendContext): Promise<Backend | BackendStatus> {
  const fix =
    'Install QEMU and the image tools with `npx isola setup microvm` (qemu-system-x86 busybox-static e2fsprogs cpio lz4).';
  if (!existsSync(QEMU)) return { isolation: 'microvm', available: false, detail: `${QEMU} is not installed.`, fix };
  let image: MicrovmImage;
  try {
    image = ensureMicrovmImage(resolve(context.dataDir, 'images'), nodeImage(context));
  } catch (error) {
    return {
      isolation: 'microvm',
      available: false,
      detail: `The guest image could not be built: ${(error as Error).message}`,
      fix,
    };
  }
  const forced = process.env.ISOLA_MICROVM_ACCEL;
  const prewarm = process.env.ISOLA_MICROVM_PREWARM;
  const start = process.env.ISOLA_MICROVM_START;
  return MicrovmBackend.open({
    dataDir: context.dataDir,
    image,
    ...(forced === 'kvm' || forced === 'tcg' ? { accelerator: forced } : {}),
    ...(prewarm === 'restored' || prewarm === 'waiting' ? { prewarmMode: prewarm } : {}),
    ...(start === 'boot' || start === 'snapshot' ? { start } : {}),
  });
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

/** Creates and checks every backend; keeps those that work (and, if given, only those wanted). */
export async function probeBackends(context: BackendContext, wanted?: readonly Isolation[]): Promise<ProbedBackends> {
  const backends = new Map<Isolation, Backend>();
  const statuses: BackendStatus[] = [];
  for (const isolation of ISOLATIONS) {
    if (wanted && !wanted.includes(isolation)) {
      statuses.push({ isolation, available: false, detail: 'Not enabled by the backends setting.' });
      continue;
    }
    let status: BackendStatus;
    let backend: Backend | undefined;
    try {
      const made = await createBackend(isolation, context);
      if ('create' in made) {
        backend = made;
        status = await made.status();
      } else {
        status = made;
      }
    } catch (error) {
      status = { isolation, available: false, detail: error instanceof Error ? error.message : String(error) };
    }
    statuses.push(status);
    if (backend && status.available) backends.set(isolation, backend);
    else await backend?.close();
  }
  return { backends, statuses };
}
