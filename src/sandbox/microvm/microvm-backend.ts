import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Isolation } from '../../core/kinds.js';
import type { Cidr } from '../../core/network-policy.js';
import type { RuntimeStart } from '../../guest/protocol.js';
import type { MicrovmImage } from '../../images/microvm-image.js';
import { type ImageName, imageNameFor, RUNTIME_CHECKS } from '../../images/runtimes.js';
import { AgentSandbox } from '../agent-sandbox.js';
import type {
  Backend,
  BackendStatus,
  FunctionCode,
  InitOutcome,
  LogSink,
  RunOutcome,
  RunRequest,
  Sandbox,
  SandboxSpec,
} from '../backend.js';
import { EgressNetwork, type SandboxNetwork, sweepNetworks } from '../network/egress.js';
import { sweepVms } from '../sweep.js';
import { type Accelerator, type Machine, qemuArguments, type VmConfig } from './qemu.js';
import { QEMU, Vm, VmTransport } from './vm.js';

const BOOT_TIMEOUT_MS = 120_000;
const RESTORE_TIMEOUT_MS = 30_000;
const KVM_PROBE_TIMEOUT_MS = 20_000;
const MAX_FUNCTION_SNAPSHOTS = 16;
/** How long a template VM is left to settle before its snapshot, unless settings say otherwise. */
const DEFAULT_SETTLE_MS = 2000;

export interface MicrovmBackendOptions {
  dataDir: string;
  /** The Node.js guest: JavaScript, Go and native functions run in it. */
  image: MicrovmImage;
  /** The guest of a language runtime (Python, Java, Ruby, PHP), built on first use. */
  imageFor?: (name: Exclude<ImageName, 'nodejs'>) => Promise<MicrovmImage>;
  /**
   * What a VM made ahead of demand is: `restored` (the base snapshot already restored into it
   * and its agent reseeded: a cold start only loads the function) or `waiting` (QEMU started,
   * waiting for the snapshot to restore). Default `restored`.
   */
  prewarmMode?: 'restored' | 'waiting';
  /**
   * How instances start: `snapshot` (restored from the base snapshot, the default) or `boot`
   * (every instance boots the guest from scratch; no snapshots are made). `boot` is there to
   * measure what snapshots save (ISOLA_MICROVM_START).
   */
  start?: 'snapshot' | 'boot';
  /** Forces an accelerator instead of probing (ISOLA_MICROVM_ACCEL). */
  accelerator?: Accelerator;
  /** ms a template VM is left to settle before it is snapshotted (ISOLA_MICROVM_SETTLE_MS, default 2000). */
  settleMs?: number;
  /** Told before a step that takes seconds (probing KVM), so that start-up can say what it waits for. */
  onProgress?: (message: string) => void;
  /** Private ranges functions with `network: egress` may reach (--egress-allow). */
  egressAllow?: readonly Cidr[];
  /** `microvm` (the default; isolation microvm) or `q35`, a full PC with firmware (isolation vm). */
  machine?: Machine;
}

/** The isolation a machine serves: `microvm` for QEMU's microvm machine, `vm` for the q35 PC. */
export function machineIsolation(machine: Machine): 'microvm' | 'vm' {
  return machine === 'q35' ? 'vm' : 'microvm';
}

/** A snapshot: the guest's RAM in a file and its device state, valid only with the root disk of its image. */
interface Snapshot {
  image: MicrovmImage;
  dir: string;
  ram: string;
  state: string;
}

export function heapFor(memoryMb: number): number {
  // The guest kernel and Node.js itself need their share of the VM's memory.
  return Math.max(32, Math.floor(memoryMb * 0.6) - 32);
}

const execFileAsync = promisify(execFile);

async function qemuVersion(): Promise<string> {
  try {
    const { stdout } = await execFileAsync(QEMU, ['--version'], { encoding: 'utf8' });
    return stdout.split('\n')[0]?.trim() || 'unknown';
  } catch {
    return 'unknown';
  }
}

let vmCounter = 0;

/**
 * Runs each function in a QEMU `microvm` machine. Instances start by restoring a copy-on-write
 * clone of a snapshot (a template VM booted once per memory size, its RAM in a file) into a QEMU
 * that was started ahead and waits for the incoming state; the agent inside is then reseeded and
 * loads the function. Functions annotated `snapshot: true` also get a snapshot of their own, taken
 * after their initialisation. KVM is used where a probe shows it boots the guest, TCG otherwise.
 */
export class MicrovmBackend implements Backend {
  readonly isolation: Isolation;
  readonly machine: Machine;
  readonly minMemoryMb = 128;
  private readonly root: string;
  private readonly vmsDir: string;
  /** The Node.js image's snapshots, and every function snapshot (their keys name their image). */
  private readonly snapshotsDir: string;
  /** Base snapshots by image and memory size. */
  private readonly templates = new Map<string, Promise<Snapshot>>();
  private readonly functionSnapshots = new Map<string, Promise<Snapshot | undefined>>();
  private closed = false;
  private readonly egress: EgressNetwork;

  private constructor(
    private readonly options: MicrovmBackendOptions,
    readonly accelerator: Accelerator,
    readonly acceleratorReason: string,
    private readonly qemu: string,
  ) {
    this.machine = options.machine ?? 'microvm';
    this.isolation = machineIsolation(this.machine);
    this.root = join(options.dataDir, this.isolation);
    this.egress = new EgressNetwork(options.egressAllow);
    this.vmsDir = join(this.root, 'vms');
    this.snapshotsDir = this.snapshotsDirOf(options.image);
    mkdirSync(this.vmsDir, { recursive: true, mode: 0o700 });
  }

  /** Where an image's base snapshots go: a directory per image, accelerator, QEMU and command line. */
  private snapshotsDirOf(image: MicrovmImage): string {
    const key = createHash('sha256')
      .update(
        JSON.stringify({
          image: image.hash,
          accelerator: this.accelerator,
          qemu: this.qemu,
          args: qemuArguments(this.vmConfig('/vm', { path: '/ram', shared: true }, 256, false, image)),
        }),
      )
      .digest('hex')
      .slice(0, 16);
    const dir = join(this.root, `snapshots-${key}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** The guest a sandbox of this spec's kind boots: the Node.js one unless its language needs its runtime. */
  private async imageOf(spec: SandboxSpec): Promise<MicrovmImage> {
    const name = imageNameFor(spec.kind);
    if (name === 'nodejs') return this.options.image;
    if (!this.options.imageFor) throw new Error(`This backend has no guest image for kind ${spec.kind}.`);
    return this.options.imageFor(name);
  }

  static async open(options: MicrovmBackendOptions): Promise<MicrovmBackend> {
    const qemu = await qemuVersion();
    const root = join(options.dataDir, machineIsolation(options.machine ?? 'microvm'));
    mkdirSync(root, { recursive: true, mode: 0o700 });
    await sweepOrphans(root);
    const { accelerator, reason } = options.accelerator
      ? { accelerator: options.accelerator, reason: 'chosen by ISOLA_MICROVM_ACCEL' }
      : await chooseAccelerator(options, root, qemu);
    return new MicrovmBackend(options, accelerator, reason, qemu);
  }

  async status(): Promise<BackendStatus> {
    return {
      isolation: this.isolation,
      available: true,
      accelerator: this.accelerator,
      detail: `${this.qemu} ${this.machine === 'q35' ? 'q35 with SeaBIOS and PCI devices' : 'microvm'}, ${this.accelerator.toUpperCase()} (${this.acceleratorReason}), ${this.options.image.guest === 'specialised' ? 'specialised guest kernel' : 'kernel'} ${this.options.image.kernelVersion}${this.options.start === 'boot' ? ', every instance boots (no snapshots)' : ''}`,
    };
  }

  /**
   * A VM for the base snapshot of its memory size: QEMU started and waiting for the incoming
   * state; made ahead of demand, also restored (see prewarmMode).
   */
  async create(spec: SandboxSpec): Promise<Sandbox> {
    // Egress: a VM of its own with a virtio-net device, booted (a snapshot's devices are fixed,
    // and the base snapshot has no network device).
    if (spec.network === 'egress') {
      const egressImage = await this.imageOf(spec);
      const network = await this.egress.tap();
      try {
        return new MicrovmSandbox(this.startVm('private', spec.memoryMb, false, egressImage, network), undefined, false);
      } catch (error) {
        await network.release();
        throw error;
      }
    }
    let sandbox: MicrovmSandbox;
    const image = await this.imageOf(spec);
    if (this.options.start === 'boot') {
      sandbox = new MicrovmSandbox(this.startVm('private', spec.memoryMb, false, image), undefined, false);
    } else {
      const template = await this.baseSnapshot(spec.memoryMb, image);
      sandbox = new MicrovmSandbox(
        this.startVm({ path: template.ram, shared: false }, spec.memoryMb, true, template.image),
        template,
        false,
      );
    }
    if (spec.ahead && (this.options.prewarmMode ?? 'restored') === 'restored') {
      const resumed = await sandbox.resume(Date.now() + RESTORE_TIMEOUT_MS);
      if (!resumed.ok) {
        await sandbox.destroy();
        throw new Error(resumed.error);
      }
    }
    return sandbox;
  }

  /** A clone of the function's own snapshot, taken after its initialisation, if there is one. */
  async restore(code: FunctionCode, spec: SandboxSpec): Promise<Sandbox | undefined> {
    if (this.options.start === 'boot' || spec.network === 'egress') return undefined;
    const snapshot = await this.functionSnapshots.get(snapshotKey(code, spec));
    if (!snapshot) return undefined;
    const vm = this.startVm({ path: snapshot.ram, shared: false }, spec.memoryMb, true, snapshot.image);
    const sandbox = new MicrovmSandbox(vm, snapshot, true);
    const outcome = await sandbox.resume(Date.now() + RESTORE_TIMEOUT_MS);
    if (!outcome.ok) {
      // The VM goes with the failed attempt, and the snapshot it failed on is taken again.
      await sandbox.destroy();
      const key = snapshotKey(code, spec);
      if ((await this.functionSnapshots.get(key)) === snapshot) {
        this.functionSnapshots.delete(key);
        await rm(snapshot.dir, { recursive: true, force: true });
      }
      throw new Error(`Restoring the function's snapshot failed: ${outcome.error}`);
    }
    return sandbox;
  }

  /** Takes, in the background, a snapshot of the function after its initialisation. */
  snapshot(code: FunctionCode, spec: SandboxSpec): void {
    const key = snapshotKey(code, spec);
    if (this.options.start === 'boot' || spec.network === 'egress' || this.functionSnapshots.has(key)) return;
    const taking = this.takeFunctionSnapshot(key, code, spec).catch(() => undefined);
    this.functionSnapshots.set(key, taking);
    void taking.then(async (snapshot) => {
      if (!snapshot) this.functionSnapshots.delete(key);
      await this.pruneFunctionSnapshots().catch(() => {});
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.egress.close();
  }

  /** Boots a template VM of an image with its RAM in a shared file and snapshots it once its agent answers. */
  baseSnapshot(memoryMb: number, image: MicrovmImage = this.options.image): Promise<Snapshot> {
    const key = `${image.hash}:${memoryMb}`;
    let template = this.templates.get(key);
    if (!template) {
      template = this.makeBaseSnapshot(memoryMb, image);
      this.templates.set(key, template);
      template.catch(() => this.templates.delete(key));
    }
    return template;
  }

  private async makeBaseSnapshot(memoryMb: number, image: MicrovmImage): Promise<Snapshot> {
    const dir = join(image === this.options.image ? this.snapshotsDir : this.snapshotsDirOf(image), `base-${memoryMb}`);
    const snapshot = { image, dir, ram: join(dir, 'ram'), state: join(dir, 'state') };
    if (existsSync(join(dir, '.complete'))) return snapshot;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const vm = this.startVm({ path: snapshot.ram, shared: true }, memoryMb, false, image);
    try {
      const socket = await vm.connectAgent(BOOT_TIMEOUT_MS);
      const agent = new AgentSandbox(vm.id, new VmTransport(vm, socket));
      if (!(await agent.waitForHello(BOOT_TIMEOUT_MS))) {
        throw new Error(`the template VM did not boot: ${agent.describeFailure()} ${vm.consoleTail().slice(-500)}`);
      }
      // Exercise the paths every clone takes (the channel, reseeding, loading and running a
      // function) so that V8 has compiled them into the snapshot, then let the guest settle so
      // that clones resume an idle machine, not one with work queued on its only CPU.
      await warmUp(agent, image.name, memoryMb);
      await new Promise((resolve) => setTimeout(resolve, this.options.settleMs ?? DEFAULT_SETTLE_MS));
      await vm.snapshot(snapshot.state, RESTORE_TIMEOUT_MS);
      await writeFile(join(dir, '.complete'), `${new Date().toISOString()}\n`);
      return snapshot;
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    } finally {
      await vm.remove();
    }
  }

  /**
   * A function snapshot: a copy of the base snapshot's RAM file becomes the shared memory of a
   * VM restored from the base, the function is loaded, and the VM is snapshotted again.
   */
  private async takeFunctionSnapshot(key: string, code: FunctionCode, spec: SandboxSpec): Promise<Snapshot | undefined> {
    const base = await this.baseSnapshot(spec.memoryMb, await this.imageOf(spec));
    const dir = join(this.snapshotsDir, `fn-${key}`);
    const snapshot = { image: base.image, dir, ram: join(dir, 'ram'), state: join(dir, 'state') };
    if (existsSync(join(dir, '.complete'))) return snapshot;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // A RAM file is the VM's memory size: copied by a child process, never on the server's thread.
    try {
      await execFileAsync('cp', ['--sparse=always', base.ram, snapshot.ram]);
    } catch {
      await rm(dir, { recursive: true, force: true });
      return undefined;
    }
    const vm = this.startVm({ path: snapshot.ram, shared: true }, spec.memoryMb, true, base.image);
    try {
      const template = new MicrovmSandbox(vm, base, false);
      const init = await template.init(code, Date.now() + 120_000, () => {});
      if (!init.ok || this.closed) {
        await rm(dir, { recursive: true, force: true });
        return undefined;
      }
      await vm.snapshot(snapshot.state, RESTORE_TIMEOUT_MS);
      await writeFile(join(dir, '.complete'), `${code.key}\n`);
      return snapshot;
    } catch {
      await rm(dir, { recursive: true, force: true });
      return undefined;
    } finally {
      await vm.remove();
    }
  }

  private async pruneFunctionSnapshots(): Promise<void> {
    const names = (await readdir(this.snapshotsDir)).filter((e) => e.startsWith('fn-'));
    const entries = await Promise.all(
      names.map(async (e) => ({
        path: join(this.snapshotsDir, e),
        mtime: (await stat(join(this.snapshotsDir, e)).catch(() => undefined))?.mtimeMs ?? 0,
      })),
    );
    entries.sort((a, b) => b.mtime - a.mtime);
    for (const stale of entries.slice(MAX_FUNCTION_SNAPSHOTS)) {
      for (const [key] of this.functionSnapshots) if (stale.path.endsWith(`fn-${key}`)) this.functionSnapshots.delete(key);
      await rm(stale.path, { recursive: true, force: true });
    }
  }

  private vmConfig(dir: string, ram: VmConfig['ram'], memoryMb: number, incoming: boolean, image: MicrovmImage): VmConfig {
    return {
      image,
      machine: this.machine,
      accelerator: this.accelerator,
      memoryMb,
      heapMb: heapFor(memoryMb),
      dir,
      ram,
      incoming,
    };
  }

  /** A QEMU process for a VM of an image; `private` RAM is a file in the VM's own directory. */
  startVm(
    ram: VmConfig['ram'] | 'private',
    memoryMb: number,
    incoming: boolean,
    image: MicrovmImage = this.options.image,
    network?: SandboxNetwork,
  ): Vm {
    const id = `${process.pid}-${++vmCounter}`;
    const dir = join(this.vmsDir, id);
    const config = this.vmConfig(
      dir,
      ram === 'private' ? { path: join(dir, 'ram'), shared: false } : ram,
      memoryMb,
      incoming,
      image,
    );
    return new Vm(id, network ? { ...config, network } : config);
  }
}

/**
 * What the template runs before its snapshot. In a language's image the first call also starts
 * that runtime once, so that its files are in the guest's page cache in the snapshot and clones
 * do not read them from the disk again (a failure there is left to show when a function runs).
 */
function warmUpCode(image: ImageName, memoryMb: number): string {
  const main = 'function main(params) { return { ok: true, n: params.n, at: Date.now(), r: Math.random() }; }';
  if (image === 'nodejs') return main;
  const [command, ...args] = RUNTIME_CHECKS[image](Math.max(32, Math.floor(memoryMb / 2)));
  return `const { execFileSync } = require('child_process');
function runtime() { try { execFileSync(${JSON.stringify(command)}, ${JSON.stringify(args)}, { stdio: 'ignore', timeout: 60000 }); } catch {} }
${main.replace('{ return', '{ if (params.n === 0) runtime(); return')}`;
}

async function warmUp(agent: AgentSandbox, image: ImageName, memoryMb: number): Promise<void> {
  for (let i = 0; i < 3; i++) await agent.reseed(RESTORE_TIMEOUT_MS);
  const init = await agent.init(
    {
      key: 'warm-up',
      kind: 'nodejs:20',
      code: warmUpCode(image, memoryMb),
      binary: false,
      main: 'main',
      filename: 'index.js',
      env: {},
      logLimitBytes: 65536,
    },
    Date.now() + BOOT_TIMEOUT_MS,
    () => {},
  );
  if (!init.ok) throw new Error(`warming the template up failed: ${init.error}`);
  for (let i = 0; i < 20; i++) {
    await agent.run({
      activationId: `warm-up-${i}`,
      params: { n: i },
      deadline: Date.now() + BOOT_TIMEOUT_MS,
      env: {},
      onLog: () => {},
    });
  }
}

function snapshotKey(code: FunctionCode, spec: SandboxSpec): string {
  // The image is part of it: a snapshot only resumes with the root disk it was taken with.
  return createHash('sha256')
    .update(`${code.key}\n${code.code}\n${spec.memoryMb}\n${imageNameFor(spec.kind ?? code.kind)}`)
    .digest('hex')
    .slice(0, 24);
}

/** Kills the QEMU processes of VMs (KVM probes included) whose server is gone and removes their directories. */
async function sweepOrphans(root: string): Promise<void> {
  await sweepVms(join(root, 'vms'));
  await sweepNetworks();
}

/**
 * KVM when /dev/kvm opens and a guest really boots under it (some hosts offer a /dev/kvm that
 * cannot run a stock kernel); TCG otherwise. The answer is kept for this image, QEMU and host
 * kernel, since a probe costs a boot.
 */
async function chooseAccelerator(
  options: MicrovmBackendOptions,
  root: string,
  qemu: string,
): Promise<{ accelerator: Accelerator; reason: string }> {
  try {
    closeSync(openSync('/dev/kvm', 'r+'));
  } catch (error) {
    return {
      accelerator: 'tcg',
      reason: `/dev/kvm is not usable: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    };
  }
  // Host-wide: the answer depends on the host, not on a data dir, and a probe costs a boot.
  const cacheFile = join(tmpdir(), 'isola-microvm-accelerator.json');
  const cacheKey = `${options.image.kernelVersion} ${qemu} ${release()}`;
  try {
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key: string; accelerator: Accelerator; reason: string };
    if (cached.key === cacheKey) return cached;
  } catch {
    // no probe yet
  }
  options.onProgress?.(`probing KVM (a guest boot, up to ${KVM_PROBE_TIMEOUT_MS / 1000} s once per host)`);
  // Named as this server's VMs are (`<pid>-<n>`; instances count from 1), so that the one sweep
  // of VMs also removes a probe left by a server that died while probing, QEMU included.
  const probeDir = join(root, 'vms', `${process.pid}-0`);
  await rm(probeDir, { recursive: true, force: true });
  mkdirSync(join(root, 'vms'), { recursive: true, mode: 0o700 });
  mkdirSync(probeDir, { recursive: true, mode: 0o700 });
  const vm = new Vm('kvm-probe', {
    image: options.image,
    // Whether KVM runs a guest does not depend on the machine: the lighter one answers sooner.
    machine: 'microvm',
    accelerator: 'kvm',
    memoryMb: 256,
    heapMb: heapFor(256),
    dir: probeDir,
    ram: { path: join(probeDir, 'ram'), shared: false },
    incoming: false,
  });
  let result: { accelerator: Accelerator; reason: string };
  try {
    const socket = await vm.connectAgent(5000);
    const agent = new AgentSandbox('kvm-probe', new VmTransport(vm, socket));
    const started = Date.now();
    const booted = await agent.waitForHello(KVM_PROBE_TIMEOUT_MS);
    const tookMs = Date.now() - started;
    result = booted
      ? { accelerator: 'kvm', reason: `a guest booted under KVM in ${tookMs} ms` }
      : {
          accelerator: 'tcg',
          // Either the boot hung (the probe waited it out) or the VM stopped at once.
          reason:
            tookMs >= KVM_PROBE_TIMEOUT_MS
              ? `/dev/kvm opens, but the guest kernel did not boot under it within ${KVM_PROBE_TIMEOUT_MS / 1000} s`
              : `/dev/kvm opens, but a guest under it stopped before booting: ${agent.describeFailure()}`,
        };
  } catch (error) {
    result = { accelerator: 'tcg', reason: `KVM could not start a guest: ${(error as Error).message}` };
  } finally {
    await vm.remove();
  }
  writeFileSync(cacheFile, JSON.stringify({ key: cacheKey, ...result }));
  return result;
}

/**
 * What one restore's steps took, for a benchmark's breakdown: performance.now() when each step
 * ended, what the agent said its reseed took, and a switch for the previous way of reseeding
 * the kernel (a helper started per restore), measured in the same run as a baseline.
 */
export interface RestoreTrace {
  started?: number;
  /** The agent's channel connected. */
  connected?: number;
  /** QEMU said the migration completed: the device state is loaded and the guest started. */
  stateLoaded?: number;
  /** The agent's answer to the reseed: the restore's first response. */
  answered?: number;
  guestMs?: { kernel: number; total: number };
  startKernelHelper?: boolean;
}

/** An instance: a VM that resumes from a snapshot, then loads (or already has) the function. */
export class MicrovmSandbox implements Sandbox {
  readonly id: string;
  /** The snapshot's device state (tens of KB), read while the VM waits rather than during the restore. */
  private readonly state: Promise<Buffer> | undefined;
  private agent: AgentSandbox | undefined;
  private resumed: Promise<InitOutcome> | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroyed = false;
  private removal: Promise<void> | undefined;

  constructor(
    private readonly vm: Vm,
    /** Absent: the VM boots the guest instead of restoring a snapshot. */
    private readonly snapshot: Snapshot | undefined,
    /** The snapshot already has the function loaded. */
    private readonly hasFunction: boolean,
  ) {
    this.id = `microvm-${vm.id}`;
    if (snapshot) {
      this.state = readFile(snapshot.state);
      this.state.catch(() => {});
    }
  }

  get alive(): boolean {
    return !this.destroyed && this.vm.alive && (this.agent?.alive ?? true);
  }

  /**
   * Restores the snapshot into the waiting VM and gives the agent fresh entropy and the time; or,
   * without a snapshot, waits for the booting guest's agent to say hello.
   */
  resume(deadline: number, trace: RestoreTrace = {}): Promise<InitOutcome> {
    this.resumed ??= (async (): Promise<InitOutcome> => {
      if (!this.snapshot || !this.state) return this.boot(deadline);
      const remaining = () => Math.max(1, deadline - Date.now());
      try {
        trace.started = performance.now();
        // Connect before the guest runs again, so that it finds its port connected.
        const socket = await this.vm.connectAgent(remaining());
        const agent = new AgentSandbox(this.id, new VmTransport(this.vm, socket));
        this.agent = agent;
        trace.connected = performance.now();
        const { running } = await this.vm.restore(await this.state, remaining());
        trace.stateLoaded = performance.now();
        if (this.deathListener) agent.onDeath(this.deathListener);
        // The guest already runs: the reseed goes at once, while QEMU's run state is confirmed.
        const [, reseeded] = await Promise.all([
          running,
          agent.reseed(remaining(), { startKernelHelper: trace.startKernelHelper === true }),
        ]);
        trace.answered = performance.now();
        if (agent.lastReseedGuestMs) trace.guestMs = agent.lastReseedGuestMs;
        if (!reseeded) {
          return { ok: false, kind: 'crash', error: `The restored VM did not answer: ${agent.describeFailure()}` };
        }
        return { ok: true };
      } catch (error) {
        return { ok: false, kind: 'crash', error: `The VM could not be restored: ${(error as Error).message}` };
      }
    })();
    return this.resumed;
  }

  private async boot(deadline: number): Promise<InitOutcome> {
    try {
      const socket = await this.vm.connectAgent(Math.max(1, deadline - Date.now()));
      this.agent = new AgentSandbox(this.id, new VmTransport(this.vm, socket));
      if (this.deathListener) this.agent.onDeath(this.deathListener);
      if (!(await this.agent.waitForHello(Math.max(1, deadline - Date.now())))) {
        return { ok: false, kind: 'crash', error: `The VM did not boot: ${this.agent.describeFailure()}` };
      }
      return { ok: true };
    } catch (error) {
      return { ok: false, kind: 'crash', error: `The VM could not be booted: ${(error as Error).message}` };
    }
  }

  prestart(runtime: RuntimeStart, memoryMb: number): void {
    if (this.hasFunction) return;
    // Once restored: a VM left waiting for its restore starts nothing ahead.
    void this.resumed?.then((outcome) => {
      if (outcome.ok) this.agent?.prestart(runtime, memoryMb);
    });
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    const resumed = await this.resume(deadline);
    if (!resumed.ok || !this.agent) {
      await this.destroy();
      return resumed;
    }
    if (this.hasFunction) return { ok: true };
    return this.agent.init(code, deadline, onLog);
  }

  run(request: RunRequest): Promise<RunOutcome> {
    if (!this.agent) return Promise.resolve({ kind: 'crash', reason: 'The VM has not been restored.' });
    return this.agent.run(request);
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListener = listener;
    this.agent?.onDeath(listener);
  }

  destroy(): Promise<void> {
    this.removal ??= (async () => {
      this.destroyed = true;
      if (this.agent) await this.agent.destroy();
      else await this.vm.remove();
    })();
    return this.removal;
  }
}
