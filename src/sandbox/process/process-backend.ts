import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Isolation } from '../../core/kinds.js';
import { AgentSandbox, type AgentTransport, type ExitInfo } from '../agent-sandbox.js';
import type { Backend, BackendStatus, Sandbox, SandboxSpec } from '../backend.js';
import { killProcessesOf, pidAlive, RUNNING_AS_ROOT, sandboxUids, type UidAllocator } from '../host-ids.js';

const PRLIMIT = '/usr/bin/prlimit';
const HELLO_TIMEOUT_MS = 15_000;
// Threads count against RLIMIT_NPROC: a Node.js process uses about a dozen, so this leaves room
// for a few child processes and stops a fork bomb.
const MAX_PROCESSES = 256;
// RLIMIT_DATA caps private writable memory: the V8 heap, ArrayBuffers and Buffers (which the
// heap limit does not see) and thread stacks. Node.js itself needs about this much beside the heap.
const DATA_OVERHEAD_MB = 64;

export interface ProcessBackendOptions {
  /** The bundled guest agent. */
  agentPath: string;
  /** Where per-sandbox working directories go. */
  sandboxRoot?: string;
}

let counter = 0;

/**
 * Runs each function in its own Node.js child process under the guest agent. Isolation is that of
 * an operating-system process: when the server runs as root each sandbox gets its own unprivileged
 * uid and a private working directory; the V8 heap is capped at the memory limit and, as root,
 * all private memory (Buffers included) at the limit plus Node.js's own overhead.
 */
export class ProcessBackend implements Backend {
  readonly isolation: Isolation = 'process';
  readonly minMemoryMb = 64;
  private readonly sandboxRoot: string;
  private readonly uids: UidAllocator | undefined;
  private readonly usePrlimit = existsSync(PRLIMIT) && RUNNING_AS_ROOT;

  constructor(private readonly options: ProcessBackendOptions) {
    this.sandboxRoot = options.sandboxRoot ?? join(tmpdir(), 'isola-sandboxes');
    mkdirSync(this.sandboxRoot, { recursive: true, mode: 0o711 });
    this.uids = RUNNING_AS_ROOT ? sandboxUids() : undefined;
    this.sweepOrphans();
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
    const how = this.uids
      ? `one unprivileged uid per sandbox${this.usePrlimit ? `, at most ${MAX_PROCESSES} tasks, private memory capped` : ''}`
      : 'same user as the server (run as root for per-sandbox uids)';
    return { isolation: 'process', available: true, detail: `node ${process.version} child processes, ${how}, heap capped` };
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    const id = `process-${process.pid}-${++counter}`;
    const workdir = join(this.sandboxRoot, id);
    mkdirSync(workdir, { mode: 0o700 });
    const uid = this.uids?.acquire();
    const agent = join(workdir, 'agent.cjs');
    copyFileSync(this.options.agentPath, agent);
    if (uid !== undefined) {
      chownSync(workdir, uid, uid);
      chownSync(agent, uid, uid);
    }
    const nodeArgs = [`--max-old-space-size=${spec.memoryMb}`, agent, '--channel=stdio'];
    const [command, args] = this.usePrlimit
      ? [
          PRLIMIT,
          [
            `--nproc=${MAX_PROCESSES}`,
            `--data=${(spec.memoryMb + DATA_OVERHEAD_MB) * 2 ** 20}`,
            '--core=0',
            '--nofile=1024',
            '--',
            process.execPath,
            ...nodeArgs,
          ],
        ]
      : [process.execPath, nodeArgs];
    const child = spawn(command, args, {
      cwd: workdir,
      // A clean environment: nothing of the server's (credentials, NODE_OPTIONS, NODE_EXTRA_CA_CERTS) leaks in.
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: workdir, TMPDIR: workdir, LANG: 'C.UTF-8' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      ...(uid !== undefined ? { uid, gid: uid } : {}),
    });
    const transport = new ProcessTransport(child, workdir, uid, this.uids);
    const sandbox = new AgentSandbox(id, transport);
    if (!(await sandbox.waitForHello(HELLO_TIMEOUT_MS))) {
      const reason = sandbox.describeFailure();
      await sandbox.destroy();
      throw new Error(reason);
    }
    return sandbox;
  }

  async close(): Promise<void> {}

  /** Removes working directories left by servers that died without cleaning up. */
  private sweepOrphans(): void {
    this.uids?.sweep();
    for (const entry of readdirSync(this.sandboxRoot)) {
      const owner = /^process-(\d+)-/.exec(entry);
      if (owner && !pidAlive(Number(owner[1]))) rmSync(join(this.sandboxRoot, entry), { recursive: true, force: true });
    }
  }
}

class ProcessTransport implements AgentTransport {
  readonly input;
  readonly output;
  readonly stderr;
  readonly exited: Promise<ExitInfo>;
  private cleaned = false;

  constructor(
    private readonly child: ChildProcess,
    private readonly workdir: string,
    private readonly uid: number | undefined,
    private readonly uids: UidAllocator | undefined,
  ) {
    if (!child.stdin || !child.stdout || !child.stderr) throw new Error('child process has no stdio pipes');
    this.input = child.stdin;
    this.output = child.stdout;
    this.stderr = child.stderr;
    // 'exit', not 'close': a grandchild holding the pipes open must not keep the sandbox alive.
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal, oom: false }));
      child.once('error', () => resolve({ code: null, signal: null, oom: false }));
    });
  }

  kill(): void {
    if (this.child.pid !== undefined) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    if (this.uid !== undefined) killProcessesOf(this.uid);
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    this.kill();
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
    this.child.stdin?.destroy();
    rmSync(this.workdir, { recursive: true, force: true });
    if (this.uid !== undefined) this.uids?.release(this.uid);
  }
}
