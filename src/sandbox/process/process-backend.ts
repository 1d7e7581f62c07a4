import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Isolation } from '../../core/kinds.js';
import type { Cidr } from '../../core/network-policy.js';
import { AgentSandbox, type AgentTransport, type ExitInfo } from '../agent-sandbox.js';
import type { Backend, BackendStatus, Sandbox, SandboxSpec } from '../backend.js';
import { ensurePrivateDir, killProcessesOf, RUNNING_AS_ROOT, sandboxUids, type UidAllocator } from '../host-ids.js';
import { EgressNetwork, netnsExec, type SandboxNetwork, sweepNetworks } from '../network/egress.js';
import { parentPid, sweepOwnedEntries } from '../sweep.js';
import { ProcessCgroups, type SandboxCgroup } from './cgroup.js';

const PRLIMIT = '/usr/bin/prlimit';
const SETPRIV = '/usr/bin/setpriv';
const UNSHARE = '/usr/bin/unshare';
const MOUNT = ['/usr/bin/mount', '/bin/mount'].find((path) => existsSync(path));
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((path) => existsSync(path));
const HELLO_TIMEOUT_MS = 15_000;
// Threads count against RLIMIT_NPROC: a Node.js process uses about a dozen, so this leaves room
// for a few child processes and stops a fork bomb.
const MAX_PROCESSES = 256;
// RLIMIT_DATA caps private writable memory: the V8 heap, ArrayBuffers and Buffers (which the
// heap limit does not see) and thread stacks. Node.js itself needs about this much beside the heap.
const DATA_OVERHEAD_MB = 64;
/** The agent's name inside a sandbox's private /tmp; it removes the file once loaded. */
const PRIVATE_AGENT = '.isola-agent.cjs';
const PATH = '/usr/local/bin:/usr/bin:/bin';

/**
 * Run as root inside a new mount namespace, before the switch to the sandbox's uid: joins the
 * sandbox's cgroup, brings up the loopback device of its network namespace when asked (a
 * Lambda custom runtime reaches the Runtime API the agent serves there), gives it private
 * /var/tmp, /dev/shm and /tmp (bind mounts of its own directories; /tmp last, since the sandbox
 * directories may live under the host's /tmp), then runs the rest of the command line.
 * Arguments: sandbox dir, cgroup.procs file or '', the ip binary or '', command.
 */
const PRIVATE_MOUNTS = `w=$1; cg=$2; ip=$3; shift 3
if [ -n "$cg" ]; then echo $$ > "$cg" || exit 71; fi
if [ -n "$ip" ]; then "$ip" link set lo up || exit 71; fi
if [ -d /var/tmp ]; then mount --bind "$w/var-tmp" /var/tmp || exit 71; fi
if [ -d /dev/shm ]; then mount --bind "$w/shm" /dev/shm || exit 71; fi
mount --bind "$w/tmp" /tmp && cd /tmp || exit 71
exec "$@"`;

export interface ProcessBackendOptions {
  /** The bundled guest agent. */
  agentPath: string;
  /** Where per-sandbox directories go. */
  sandboxRoot?: string;
  /** The uid allocator (as root); the host-wide one by default. */
  uids?: UidAllocator;
  /** Private ranges functions with `network: egress` may reach (--egress-allow). */
  egressAllow?: readonly Cidr[];
}

let counter = 0;

/**
 * Runs each function in its own Node.js child process under the guest agent. Isolation is that of
 * an operating-system process. As root, each sandbox gets its own unprivileged uid (no
 * capabilities, no_new_privs), private /tmp, /var/tmp and /dev/shm in a mount namespace of its
 * own, a cgroup that finds every process it starts, and limits on tasks and private memory; the
 * V8 heap is capped at the memory limit. The kernel kills the agent if the server dies.
 */
export class ProcessBackend implements Backend {
  readonly isolation: Isolation = 'process';
  readonly minMemoryMb = 64;
  private readonly sandboxRoot: string;
  private readonly uids: UidAllocator | undefined;
  private readonly cgroups: ProcessCgroups | undefined;
  private readonly usePrlimit = existsSync(PRLIMIT) && RUNNING_AS_ROOT;
  private readonly useSetpriv = existsSync(SETPRIV);
  private readonly privateTmp = RUNNING_AS_ROOT && existsSync(UNSHARE) && MOUNT !== undefined;
  private readonly swept: Promise<void>;
  private readonly egress: EgressNetwork;

  constructor(private readonly options: ProcessBackendOptions) {
    this.egress = new EgressNetwork(options.egressAllow);
    this.sandboxRoot = options.sandboxRoot ?? join(tmpdir(), 'isola-sandboxes');
    ensurePrivateDir(this.sandboxRoot, 0o711);
    this.uids = RUNNING_AS_ROOT ? (options.uids ?? sandboxUids()) : undefined;
    this.cgroups = RUNNING_AS_ROOT ? ProcessCgroups.open() : undefined;
    this.swept = this.sweepOrphans();
  }

  async status(): Promise<BackendStatus> {
    const sandbox = await this.create({ memoryMb: 64 }).catch((error: unknown) => error);
    if (!(sandbox instanceof AgentSandbox)) {
      return {
        isolation: 'process',
        available: false,
        detail: `A Node.js child process did not start: ${String(sandbox)}`,
        fix: 'Check that the node binary can be executed and that /tmp is writable.',
      };
    }
    await sandbox.destroy();
    const features = this.uids
      ? [
          'one unprivileged uid per sandbox',
          ...(this.useSetpriv ? ['no capabilities', 'killed with the server'] : []),
          ...(this.privateTmp ? ['private /tmp'] : ['shared /tmp (unshare or mount is missing)']),
          ...(this.cgroups ? [`stray processes stopped after each run (cgroup ${this.cgroups.path})`] : []),
          ...(this.usePrlimit ? [`at most ${MAX_PROCESSES} tasks, private memory capped`] : []),
        ]
      : ['same user as the server (run as root for per-sandbox uids and a private /tmp)'];
    return {
      isolation: 'process',
      available: true,
      detail: `node ${process.version} child processes, ${features.join(', ')}, heap capped`,
    };
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    await this.swept;
    const id = `process-${process.pid}-${++counter}`;
    const dir = join(this.sandboxRoot, id);
    let uid: number | undefined;
    let cgroup: SandboxCgroup | undefined;
    let transport: ProcessTransport | undefined;
    let network: SandboxNetwork | undefined;
    try {
      mkdirSync(dir, { mode: 0o700 });
      uid = this.uids?.acquire();
      cgroup = uid !== undefined ? this.cgroups?.create(id) : undefined;
      // Egress: the sandbox runs in a network namespace of its own (the host's network otherwise).
      if (spec.network === 'egress') network = await this.egress.namespace();
      const child = this.spawnAgent(dir, uid, cgroup, spec, network);
      transport = new ProcessTransport(child, dir, uid, this.uids, cgroup);
      if (network) transport.onCleanup = network.release;
    } catch (error) {
      // Nothing may outlive a sandbox that failed to start: its process, cgroup, directory, uid.
      if (transport) await transport.cleanup();
      else await discard(dir, uid, this.uids, cgroup);
      await network?.release();
      throw error;
    }
    const sandbox = new AgentSandbox(id, transport);
    if (!(await sandbox.waitForHello(HELLO_TIMEOUT_MS))) {
      const reason = sandbox.describeFailure();
      await sandbox.destroy();
      throw new Error(reason);
    }
    return sandbox;
  }

  async close(): Promise<void> {
    await this.egress.close();
  }

  private spawnAgent(
    dir: string,
    uid: number | undefined,
    cgroup: SandboxCgroup | undefined,
    spec: SandboxSpec,
    network?: SandboxNetwork,
  ): ChildProcess {
    const privateTmp = uid !== undefined && this.privateTmp;
    let agent: string;
    if (privateTmp) {
      // The sandbox sees its own directories as /tmp, /var/tmp and /dev/shm; the agent starts
      // from its /tmp and removes itself from there.
      for (const sub of ['tmp', 'var-tmp', 'shm']) {
        mkdirSync(join(dir, sub), { mode: 0o700 });
        chownSync(join(dir, sub), uid, uid);
      }
      copyFileSync(this.options.agentPath, join(dir, 'tmp', PRIVATE_AGENT));
      chmodSync(join(dir, 'tmp', PRIVATE_AGENT), 0o444);
      agent = `/tmp/${PRIVATE_AGENT}`;
    } else {
      agent = join(dir, 'agent.cjs');
      copyFileSync(this.options.agentPath, agent);
      if (uid !== undefined) {
        chownSync(dir, uid, uid);
        chownSync(agent, uid, uid);
      }
    }
    const home = privateTmp ? '/tmp' : dir;
    let command = [
      process.execPath,
      `--max-old-space-size=${spec.memoryMb}`,
      agent,
      '--channel=stdio',
      ...(privateTmp ? ['--unlink-self'] : []),
    ];
    if (this.usePrlimit) {
      command = [
        PRLIMIT,
        `--nproc=${MAX_PROCESSES}`,
        `--data=${(spec.memoryMb + DATA_OVERHEAD_MB) * 2 ** 20}`,
        '--core=0',
        '--nofile=1024',
        '--',
        ...command,
      ];
    }
    // setpriv sets the parent-death signal after switching uid (a uid change clears it), so the
    // kernel kills the agent when the server dies, however it dies.
    const switchUid = uid !== undefined && this.useSetpriv;
    if (this.useSetpriv) {
      command = [
        SETPRIV,
        ...(switchUid
          ? [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs']
          : []),
        '--pdeathsig=KILL',
        '--',
        ...command,
      ];
    }
    if (privateTmp) {
      command = [
        UNSHARE,
        '--mount',
        // Without egress, a network namespace of its own with nothing in it: no host listener
        // (127.0.0.1 included) and no outside address is reachable.
        ...(network ? [] : ['--net']),
        '--propagation',
        'private',
        '/bin/sh',
        '-c',
        PRIVATE_MOUNTS,
        'isola-sandbox',
        dir,
        cgroup?.procsFile ?? '',
        // Native functions only: a bootstrap talks to the agent over the namespace's loopback,
        // which only the sandbox has (the egress namespace has it up already).
        !network && spec.kind === 'native' ? (IP ?? '') : '',
        ...command,
      ];
    }
    if (network) command = netnsExec(network, command);
    const [file, ...args] = command as [string, ...string[]];
    const child = spawn(file, args, {
      cwd: privateTmp ? '/' : dir,
      // A clean environment: nothing of the server's (credentials, NODE_OPTIONS, NODE_EXTRA_CA_CERTS) leaks in.
      env: { PATH, HOME: home, TMPDIR: home, LANG: 'C.UTF-8' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      // Without setpriv, Node.js switches the uid itself (and the parent-death signal is lost).
      ...(uid !== undefined && !switchUid ? { uid, gid: uid } : {}),
    });
    // Without the mount namespace's prelude to join the cgroup first, join it now, before the
    // agent has loaded (let alone run) any function code.
    if (cgroup && !privateTmp && child.pid !== undefined) writeFileSync(cgroup.procsFile, String(child.pid));
    return child;
  }

  /** Removes what servers that died without cleaning up left: directories, cgroups, uid leases. */
  private async sweepOrphans(): Promise<void> {
    try {
      this.uids?.sweep();
      await this.cgroups?.sweep();
      await sweepOwnedEntries(this.sandboxRoot);
      await sweepNetworks();
    } catch {
      // What is left stays for the next start to sweep; it does not stop this server.
    }
  }
}

async function discard(dir: string, uid: number | undefined, uids: UidAllocator | undefined, cgroup: SandboxCgroup | undefined) {
  if (cgroup) {
    cgroup.killAll();
    await cgroup.remove();
  }
  if (uid !== undefined) killProcessesOf(uid);
  rmSync(dir, { recursive: true, force: true });
  if (uid !== undefined) uids?.release(uid);
}

class ProcessTransport implements AgentTransport {
  readonly input;
  readonly output;
  readonly stderr;
  readonly exited: Promise<ExitInfo>;
  private cleaned: Promise<void> | undefined;
  /** Processes the function started while loading: they stay, with their children, between runs. */
  private readonly adopted = new Set<number>();
  /** The agent's launchers: they stay between runs, what they start does not. */
  private spared: ReadonlySet<number> = new Set();
  /** Those of them whose children stay too (Lambda bootstraps). */
  private trees: ReadonlySet<number> = new Set();
  /** Releases what else the sandbox held (its network). */
  onCleanup: (() => Promise<void>) | undefined;

  constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    private readonly uid: number | undefined,
    private readonly uids: UidAllocator | undefined,
    private readonly cgroup: SandboxCgroup | undefined,
  ) {
    // 'exit', not 'close': a grandchild holding the pipes open must not keep the sandbox alive.
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal, oom: false }));
      child.once('error', () => resolve({ code: null, signal: null, oom: false }));
    });
    if (!child.stdin || !child.stdout || !child.stderr) throw new Error('child process has no stdio pipes');
    this.input = child.stdin;
    this.output = child.stdout;
    this.stderr = child.stderr;
  }

  reapStrays(): void {
    const agent = this.child.pid;
    const cgroup = this.cgroup;
    if (agent === undefined || !cgroup) return;
    if (this.adopted.size > 0) {
      // Forget adopted processes that are gone, so that a later process given the same pid is not spared.
      const alive = new Set(cgroup.pids());
      for (const pid of this.adopted) if (!alive.has(pid)) this.adopted.delete(pid);
    }
    const kept = this.adopted.size > 0 || this.trees.size > 0;
    cgroup.killAllBut((pid) => pid === agent || this.spared.has(pid) || (kept && this.descendsFromKept(pid, agent)));
  }

  adoptProcesses(): void {
    for (const pid of this.cgroup?.pids() ?? []) if (pid !== this.child.pid && !this.spared.has(pid)) this.adopted.add(pid);
  }

  spareProcesses(pids: readonly number[], trees: readonly number[]): void {
    this.spared = new Set(pids);
    this.trees = new Set(trees);
  }

  /** Whether a process descends from one adopted at load, or from a spared process whose children stay. */
  private descendsFromKept(pid: number, agent: number): boolean {
    let current: number | undefined = pid;
    for (let depth = 0; depth < 64 && current !== undefined; depth++) {
      if (this.adopted.has(current) || this.trees.has(current)) return true;
      if (current === agent || current <= 1 || this.spared.has(current)) return false;
      current = parentPid(current);
    }
    return false;
  }

  kill(): void {
    if (this.child.pid !== undefined) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    this.cgroup?.killAll();
    if (this.uid !== undefined) killProcessesOf(this.uid);
  }

  cleanup(): Promise<void> {
    this.cleaned ??= (async () => {
      this.kill();
      this.child.stdout?.destroy();
      this.child.stderr?.destroy();
      this.child.stdin?.destroy();
      await discard(this.dir, this.uid, this.uids, this.cgroup);
      await this.onCleanup?.();
    })();
    return this.cleaned;
  }
}
