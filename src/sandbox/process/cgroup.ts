import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { orphaned, removeCgroupDir } from '../sweep.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
const PARENT = 'isola-process';
// A fork bomb keeps forking while it is killed; each round kills what the last one missed.
const KILL_ROUNDS = 100;

/**
 * One cgroup per process sandbox, used to know every process of the sandbox (no limits are set
 * through it): a process cannot leave its cgroup without root, so reading `cgroup.procs` finds
 * whatever the function started, however it detached, in one small read.
 */
export class ProcessCgroups {
  private constructor(private readonly base: string) {}

  /**
   * A hierarchy where this server may make cgroups: cgroup v2 (the unified hierarchy of a hybrid
   * host, or the only one), else v1's pids controller. Undefined without root or cgroups.
   */
  static open(): ProcessCgroups | undefined {
    const candidates = [join(CGROUP_ROOT, 'unified'), CGROUP_ROOT, join(CGROUP_ROOT, 'pids')];
    for (const dir of candidates) {
      const v2 = existsSync(join(dir, 'cgroup.controllers'));
      if (!existsSync(join(dir, 'cgroup.procs')) || (dir !== join(CGROUP_ROOT, 'pids') && !v2)) continue;
      try {
        mkdirSync(join(dir, PARENT), { recursive: true });
        return new ProcessCgroups(join(dir, PARENT));
      } catch {
        // Read-only or not ours: try the next one.
      }
    }
    return undefined;
  }

  get path(): string {
    return this.base;
  }

  create(id: string): SandboxCgroup {
    const dir = join(this.base, id);
    mkdirSync(dir);
    return new SandboxCgroup(dir);
  }

  /** Kills and removes the cgroups of sandboxes whose server (`process-<pid>-<n>`) is gone. */
  async sweep(): Promise<void> {
    let entries: string[];
    try {
      entries = readdirSync(this.base);
    } catch {
      return;
    }
    for (const entry of orphaned(entries)) {
      const cgroup = new SandboxCgroup(join(this.base, entry));
      cgroup.killAll();
      await cgroup.remove();
    }
  }
}

export class SandboxCgroup {
  readonly procsFile: string;
  /** Kept open: reading it again from offset 0 costs a few microseconds, opening it ten times that. */
  private procsFd: number | undefined;
  private readonly buffer = Buffer.alloc(16 * 1024);

  constructor(readonly dir: string) {
    this.procsFile = join(dir, 'cgroup.procs');
  }

  pids(): number[] {
    let text: string;
    try {
      this.procsFd ??= openSync(this.procsFile, 'r');
      const length = readSync(this.procsFd, this.buffer, 0, this.buffer.length, 0);
      text = length < this.buffer.length ? this.buffer.toString('latin1', 0, length) : readFileSync(this.procsFile, 'latin1');
    } catch {
      return [];
    }
    if (text.length === 0) return [];
    return text.trim().split('\n').map(Number);
  }

  /** SIGKILLs every process in the cgroup that `spare` does not keep; the number killed. */
  killAllBut(spare: (pid: number) => boolean): number {
    let killed = 0;
    for (let round = 0; round < KILL_ROUNDS; round++) {
      const others = this.pids().filter((pid) => !spare(pid));
      if (others.length === 0) break;
      for (const pid of others) {
        try {
          process.kill(pid, 'SIGKILL');
          killed++;
        } catch {
          // Already gone.
        }
      }
    }
    return killed;
  }

  killAll(): void {
    // cgroup v2 kills the whole cgroup at once, forks in flight included.
    try {
      writeFileSync(join(this.dir, 'cgroup.kill'), '1');
    } catch {
      // v1, or a kernel before 5.14
    }
    this.killAllBut(() => false);
  }

  /** Removes the cgroup once its last process has exited (killed processes take a moment). */
  async remove(): Promise<void> {
    if (this.procsFd !== undefined) {
      closeSync(this.procsFd);
      this.procsFd = undefined;
    }
    await removeCgroupDir(this.dir, () => this.killAllBut(() => false));
  }
}
