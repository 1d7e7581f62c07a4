import type { ChildProcess } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import type { Isolation } from '../../core/kinds.js';
import type { Cidr } from '../../core/network-policy.js';
import type { RuntimeStart } from '../../guest/protocol.js';
import type { NodeRootfs } from '../../images/node-rootfs.js';
import { type ImageName, imageNameFor } from '../../images/runtimes.js';
import { AgentSandbox, type AgentTransport, type ExitInfo } from '../agent-sandbox.js';
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
import type { UidAllocator } from '../host-ids.js';
import { EgressNetwork, type SandboxNetwork, sweepNetworks } from '../network/egress.js';
import { removeCgroup, sweepContainers } from '../sweep.js';
import { FifoPool } from './fifo-pool.js';
import { containerSpec } from './oci-spec.js';
import type { ContainerLaunch, OciRuntime } from './runtime.js';

const CGROUP_PARENT = 'isola';
const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * What a container made ahead of demand is: `started` runs its agent, booted and waiting for a
 * function (OpenWhisk's prewarm containers); `created` is set up but not started (`create` ahead,
 * `start` on demand), cheaper to keep but slower to use.
 */
export type ContainerPrewarmMode = 'started' | 'created';

export interface ContainerBackendOptions {
  isolation: 'container' | 'gvisor';
  /** Default `started`. */
  prewarmMode?: ContainerPrewarmMode;
  /** What else was tried, for `doctor` (e.g. the other runtime and why it was not chosen). */
  note?: string;
  runtime: OciRuntime;
  /** The Node.js image: JavaScript, Go and native functions run in it. */
  image: NodeRootfs;
  /** The image of a language runtime (Python, Java, Ruby, PHP), built on first use. */
  imageFor?: (name: Exclude<ImageName, 'nodejs'>) => Promise<NodeRootfs>;
  /** Where per-container bundles (config.json, pid file) go. */
  bundlesDir: string;
  /** Hands out the unprivileged host uid each container runs as. */
  uids: Pick<UidAllocator, 'acquire' | 'release'>;
  /** Private ranges functions with `network: egress` may reach (--egress-allow). */
  egressAllow?: readonly Cidr[];
}

export interface ContainerProfile {
  overheadMb: number;
  pidsLimit: number;
  nprocLimit: number;
  seccomp: boolean;
}

// gVisor's Sentry runs inside the sandbox's cgroup and needs room for itself; with a low pids
// limit the sandbox itself crashes, so the guest is held back by RLIMIT_NPROC instead, which the
// Sentry enforces. Under runc and crun the cgroup's pids limit stops a fork bomb.
export const CONTAINER_PROFILES: Record<ContainerBackendOptions['isolation'], ContainerProfile> = {
  container: { overheadMb: 0, pidsLimit: 128, nprocLimit: 256, seccomp: true },
  gvisor: { overheadMb: 64, pidsLimit: 1024, nprocLimit: 64, seccomp: true },
};

let counter = 0;

/**
 * gVisor's own network stack takes over the namespace's interface only with `--network=sandbox`.
 * runsc 20221219 refuses it when /proc/sys/net/core/rmem_default exists in the namespace, which it
 * takes as the sign of the host's root namespace; on kernels since 6.x every namespace has it, so
 * runsc runs in a mount namespace of its own where /proc/sys/net is hidden (newer runsc no longer
 * makes that check).
 */
const GVISOR_EGRESS: [string[], string[]] = [
  ['--network=sandbox'],
  [
    '/usr/bin/unshare',
    '-m',
    '--propagation',
    'private',
    '/bin/sh',
    '-c',
    'mount -t tmpfs -o size=4k,ro tmpfs /proc/sys/net && exec "$0" "$@"',
  ],
];

/** The V8 heap a container of a memory limit gets: the rest is for Node.js itself. */
export function containerHeapMb(memoryMb: number): number {
  return Math.max(16, Math.floor(memoryMb * 0.75));
}

/** The memory cgroup file that counts OOM kills, for cgroup v1 or v2. */
function oomKills(cgroupsPath: string): number {
  for (const file of [
    join(CGROUP_ROOT, 'memory', cgroupsPath, 'memory.oom_control'),
    join(CGROUP_ROOT, cgroupsPath, 'memory.events'),
  ]) {
    try {
      const match = /oom_kill (\d+)/.exec(readFileSync(file, 'utf8'));
      if (match) return Number(match[1]);
    } catch {
      // not this cgroup version
    }
  }
  return 0;
}

/** True while `pid` is a process in the cgroup: what proves a pid read earlier is still the container's. */
function inCgroup(pid: number, cgroupsPath: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .some((line) => line.endsWith(`:${cgroupsPath}`));
  } catch {
    return false;
  }
}

/**
 * Runs each function in an OCI container under runc, crun or runsc (gVisor), without a container
 * engine: the platform writes the bundle and drives the runtime's CLI. Containers are created
 * ahead (`create`) and started when needed (`start`); the guest agent inside speaks the framed
 * protocol over the container's stdio.
 */
export class ContainerBackend implements Backend {
  readonly isolation: Isolation;
  readonly minMemoryMb = 64;
  private readonly profile: ContainerProfile;
  private checked: Promise<BackendStatus> | undefined;
  private readonly fifos: FifoPool;
  private readonly egress: EgressNetwork;

  private constructor(private readonly options: ContainerBackendOptions) {
    this.isolation = options.isolation;
    this.egress = new EgressNetwork(options.egressAllow);
    this.profile = CONTAINER_PROFILES[options.isolation];
    mkdirSync(options.bundlesDir, { recursive: true, mode: 0o700 });
    this.fifos = new FifoPool(join(options.bundlesDir, '..', `fifos-${options.runtime.name}`));
  }

  /** Opens the backend after sweeping away what a killed server left: containers, bundles, cgroups. */
  static async open(options: ContainerBackendOptions): Promise<ContainerBackend> {
    const backend = new ContainerBackend(options);
    await backend.sweepOrphans();
    return backend;
  }

  get runtimeName(): string {
    return this.options.runtime.name;
  }

  /** Runs a real container once, and remembers the answer. */
  status(): Promise<BackendStatus> {
    this.checked ??= this.probe();
    return this.checked;
  }

  private async probe(): Promise<BackendStatus> {
    const started = performance.now();
    try {
      const sandbox = await this.create({ memoryMb: 128 });
      try {
        const init = await sandbox.init(
          {
            key: 'probe',
            kind: 'nodejs:20',
            code: 'function main() { return { ok: true }; }',
            binary: false,
            main: 'main',
            filename: 'index.js',
            env: {},
            logLimitBytes: 65536,
          },
          Date.now() + 30_000,
          () => {},
        );
        if (!init.ok) throw new Error(init.error);
        const outcome = await sandbox.run({
          activationId: 'probe',
          params: {},
          deadline: Date.now() + 30_000,
          env: {},
          onLog: () => {},
        });
        if (outcome.kind !== 'result') throw new Error(`the probe function did not answer: ${JSON.stringify(outcome)}`);
      } finally {
        await sandbox.destroy();
      }
      const version = await this.options.runtime.version();
      return {
        isolation: this.isolation,
        available: true,
        detail: `${version} (probe container ran in ${Math.round(performance.now() - started)} ms)${this.options.note ? `; ${this.options.note}` : ''}`,
      };
    } catch (error) {
      return {
        isolation: this.isolation,
        available: false,
        detail: `${this.options.runtime.name} could not run a container: ${(error as Error).message}`,
        fix: 'Run the server as root on a host with cgroups (see `isola doctor`), and install the runtime with `isola setup`.',
      };
    }
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    // Made for a request waiting now, or for a `started` prewarm pool: create and start in one command.
    const startNow = !spec.ahead || (this.options.prewarmMode ?? 'started') === 'started';
    return this.launch(spec, startNow ? { kind: 'run' } : { kind: 'create' });
  }

  private async launch(spec: SandboxSpec, how: ContainerLaunch): Promise<ContainerSandbox> {
    const runtime = this.options.runtime;
    const id = `isola-${process.pid}-${++counter}`;
    const bundle = join(this.options.bundlesDir, id);
    const cgroupsPath = `/${CGROUP_PARENT}/${id}`;
    // Until the transport exists, this is what has to be undone if anything fails.
    let uid: number | undefined;
    let network: SandboxNetwork | undefined;
    const fds: number[] = [];
    let transport: ContainerTransport;
    let child: ChildProcess;
    const image = await this.imageOf(spec);
    try {
      await mkdir(bundle, { mode: 0o700 });
      uid = this.options.uids.acquire();
      if (spec.network === 'egress') network = await this.egress.namespace();
      const heapMb = containerHeapMb(spec.memoryMb);
      const config = containerSpec({
        rootfs: image.path,
        args: [image.nodePath, `--max-old-space-size=${heapMb}`, image.agentPath, '--channel=stdio'],
        memoryMb: spec.memoryMb,
        cgroupsPath,
        uid,
        ...this.profile,
        ...(network?.netnsPath ? { networkNamespace: network.netnsPath } : {}),
      });
      await writeFile(join(bundle, 'config.json'), JSON.stringify(config));
      // Node.js closes a child's stdin pipe when the child exits, and `create` exits long before
      // the container does: the container reads its stdin from a FIFO instead. The container gets
      // the read end and this process the only write end, so the agent reads end-of-file, and
      // exits, when this process closes it or dies: a container does not outlive its server.
      // Opening the read end without waiting for a writer, then the write end, never blocks.
      const fifo = join(bundle, 'stdin');
      await this.fifos.take(fifo);
      const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      fds.push(readFd);
      const writeFd = openSync(fifo, constants.O_WRONLY);
      fds.push(writeFd);
      const launcher = network && runtime.name === 'runsc' ? runtime.withGlobalArgs(...GVISOR_EGRESS) : runtime;
      child = launcher.spawnContainer(how, id, bundle, join(bundle, 'container.pid'), readFd);
      // Listen on the container's output from the first moment: when the command exits, Node.js
      // resumes stdio streams nobody reads, and whatever the agent had already said would be lost.
      const leased = uid;
      const leasedNetwork = network;
      transport = new ContainerTransport(
        runtime,
        id,
        bundle,
        cgroupsPath,
        child,
        // A socket, not an fs stream: the agent's Node.js makes the FIFO non-blocking (the open
        // file description is shared), and only libuv's pipe handling waits out a full FIFO
        // instead of failing a large frame (a big function's code) with a partial write.
        new Socket({ fd: writeFd, readable: false, writable: true }),
        async () => {
          this.options.uids.release(leased);
          await leasedNetwork?.release();
        },
      );
      fds.pop();
      // The runtime command has its own copy of the read end now.
      closeSync(readFd);
      fds.pop();
    } catch (error) {
      for (const fd of fds) closeSync(fd);
      if (uid !== undefined) this.options.uids.release(uid);
      await network?.release();
      await rm(bundle, { recursive: true, force: true });
      throw error;
    }
    const agent = new AgentSandbox(id, transport);
    let commandErrors = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (commandErrors.length < 4096) commandErrors += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (exitCode) => resolve(exitCode));
      child.once('error', () => resolve(-1));
    });
    if (code !== 0) {
      await agent.destroy();
      throw new Error(`${runtime.name} ${how.kind} failed: ${commandErrors.trim().slice(-500) || `exit code ${code}`}`);
    }
    const pid = Number((await readFile(join(bundle, 'container.pid'), 'utf8').catch(() => '')).trim());
    if (pid > 0) transport.pid = pid;
    return new ContainerSandbox(runtime, id, agent, how.kind !== 'create');
  }

  /** The root file system a sandbox of this spec's kind boots: the Node.js image unless its language needs its runtime. */
  private async imageOf(spec: SandboxSpec): Promise<NodeRootfs> {
    const name = imageNameFor(spec.kind);
    if (name === 'nodejs') return this.options.image;
    if (!this.options.imageFor) throw new Error(`This backend has no image for kind ${spec.kind}.`);
    return this.options.imageFor(name);
  }

  async close(): Promise<void> {
    await this.egress.close();
  }

  /**
   * Deletes what servers that are gone left with this runtime: their containers, bundles,
   * cgroups and sandbox networks. A live server's (another server on the same data dir, or the one `isola doctor`
   * is pointed at) are left alone.
   */
  private async sweepOrphans(): Promise<void> {
    await sweepContainers(this.options.runtime, this.options.bundlesDir, CGROUP_PARENT);
    await sweepNetworks();
  }
}

class ContainerTransport implements AgentTransport {
  readonly input;
  readonly output;
  readonly stderr;
  readonly exited: Promise<ExitInfo>;
  private killed = false;
  /** The container's processes have all closed its output: it exited. */
  private gone = false;
  private cleaned: Promise<void> | undefined;
  /** The container process on the host, once the runtime has written it down. */
  pid: number | undefined;

  constructor(
    private readonly runtime: OciRuntime,
    private readonly id: string,
    private readonly bundle: string,
    private readonly cgroupsPath: string,
    createProcess: ChildProcess,
    input: Socket,
    private readonly releaseLeases: () => Promise<void>,
  ) {
    const { stdout, stderr } = createProcess;
    if (!stdout || !stderr) throw new Error('the create command has no stdio pipes');
    this.input = input;
    this.output = stdout;
    this.stderr = stderr;
    const oomBefore = oomKills(cgroupsPath);
    // The container's process holds the other ends of these pipes: they close when it is gone.
    this.exited = new Promise((resolve) => {
      stdout.once('close', () => {
        this.gone = true;
        resolve({ code: null, signal: this.killed ? 'SIGKILL' : null, oom: oomKills(this.cgroupsPath) > oomBefore });
      });
    });
  }

  kill(): void {
    if (this.gone) return;
    this.killed = true;
    // Signalling the pid directly is the fast way, but only while the pid is provably still the
    // container's (a process in its cgroup): a pid read from the pid file may have been reused.
    if (this.pid !== undefined && inCgroup(this.pid, this.cgroupsPath)) {
      try {
        process.kill(this.pid, 'SIGKILL');
        return;
      } catch {
        // gone meanwhile: ask the runtime
      }
    }
    void this.runtime.kill(this.id);
  }

  /** After the container exited: `delete --force` stops whatever is left of it. */
  cleanup(): Promise<void> {
    this.cleaned ??= (async () => {
      this.input.destroy();
      this.output.destroy();
      this.stderr.destroy();
      await this.runtime.delete(this.id);
      await rm(this.bundle, { recursive: true, force: true });
      await removeCgroup(this.cgroupsPath);
      await this.releaseLeases();
    })();
    return this.cleaned;
  }
}

/** A container: `init` starts it if it is only created, then loads the function through the agent. */
class ContainerSandbox implements Sandbox {
  constructor(
    private readonly runtime: OciRuntime,
    readonly id: string,
    private readonly agent: AgentSandbox,
    private started: boolean,
  ) {}

  get alive(): boolean {
    return this.agent.alive;
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    if (!this.started) {
      const started = await this.runtime.start(this.id);
      if (started.code !== 0) {
        await this.agent.destroy();
        return { ok: false, kind: 'crash', error: `${this.runtime.name} start failed: ${started.stderr.trim().slice(-500)}` };
      }
      this.started = true;
    }
    // No need to wait for the agent's hello: the pipe holds the init frame until the agent reads
    // it, and an agent that dies or never answers fails the init anyway.
    return this.agent.init(code, deadline, onLog);
  }

  prestart(runtime: RuntimeStart, memoryMb: number): void {
    // A container not started yet holds the frame in its pipe until it is.
    this.agent.prestart(runtime, memoryMb);
  }

  run(request: RunRequest): Promise<RunOutcome> {
    return this.agent.run(request);
  }

  onDeath(listener: (reason: string) => void): void {
    this.agent.onDeath(listener);
  }

  destroy(): Promise<void> {
    return this.agent.destroy();
  }
}
