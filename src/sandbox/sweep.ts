/**
 * Removing what a server that died left behind: sandbox directories, containers, cgroups, VMs.
 * Everything a server makes is named after its pid (`isola-<pid>-<n>`, `<pid>-<n>`,
 * `process-<pid>-<n>`), so that any server, or `isola doctor`, pointed at the same data dir (or
 * sharing the host's cgroups and temporary directory) can tell what is still in use: only what
 * belongs to a process that is gone is removed, and names that carry no owner are not ours.
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

/** The pid of the server that named a thing, or undefined when the name is not one of ours. */
export function ownerPid(name: string): number | undefined {
  const match = /^(?:isola-|process-|fifo-)?(\d+)-\d+$/.exec(name);
  const pid = match ? Number(match[1]) : 0;
  return pid > 0 ? pid : undefined;
}

/**
 * True while the process is alive. A pid reused by another process keeps a dead server's things
 * until that process goes too: the sweep errs on the side of leaving things alone.
 */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses,
 * so they are counted from the last ')'): the state first, then the parent's pid, and so on.
 * Undefined when no such process runs.
 */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * When a process started, as /proc/<pid>/stat's field 22 (clock ticks since boot): with the pid
 * it names one process, even after the pid is reused. Undefined when no such process runs.
 */
export function processStartTime(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

/** A process's parent, or undefined when it is gone. */
export function parentPid(pid: number): number | undefined {
  const parent = Number(statFields(pid)?.[1]);
  return Number.isInteger(parent) ? parent : undefined;
}

/** Names that belong to a server that is gone. */
export function orphaned(names: readonly string[]): string[] {
  return names.filter((name) => {
    const owner = ownerPid(name);
    return owner !== undefined && !processAlive(owner);
  });
}

async function entries(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/**
 * Removes the entries of `dir` (directories or files) that dead servers left; returns their
 * names. The process backend's sandbox root, container bundles and FIFO pools are swept this way.
 */
export async function sweepOwnedEntries(dir: string): Promise<string[]> {
  const gone = orphaned(await entries(dir));
  await Promise.all(gone.map((name) => rm(join(dir, name), { recursive: true, force: true })));
  return gone;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Every directory a cgroup path has: one per v1 controller, and the v2 (or unified) one. */
export async function cgroupDirs(cgroupsPath: string): Promise<string[]> {
  const controllers = await entries(CGROUP_ROOT);
  return [CGROUP_ROOT, ...controllers.map((c) => join(CGROUP_ROOT, c))].map((base) => join(base, cgroupsPath));
}

/**
 * Removes a cgroup's directories. One that still has processes (a killed container's are still
 * exiting) is tried again as removeCgroupDir does, then left to the next sweep.
 */
export async function removeCgroup(cgroupsPath: string): Promise<void> {
  await Promise.all(
    (await cgroupDirs(cgroupsPath)).map((dir) =>
      removeCgroupDir(dir).catch(() => {
        // not ours to remove
      }),
    ),
  );
}

/** Attempts at removing a cgroup directory that still has processes, 10 ms apart. */
const CGROUP_BUSY_ATTEMPTS = 200;

/**
 * Removes a cgroup directory once its last processes have left it (killed ones take a moment):
 * while it is busy (EBUSY), `onBusy` runs (to kill what is left, say) and it is tried again, up
 * to CGROUP_BUSY_ATTEMPTS times; then it is left. Absent is done; other errors are thrown.
 */
export async function removeCgroupDir(dir: string, onBusy?: () => void): Promise<void> {
  for (let attempt = 0; attempt < CGROUP_BUSY_ATTEMPTS; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw error;
    }
    onBusy?.();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Removes the cgroups under `/<parent>/` (in every hierarchy) that dead servers left. */
export async function sweepCgroups(parent: string): Promise<string[]> {
  const names = new Set<string>();
  for (const dir of await cgroupDirs(`/${parent}`)) for (const name of orphaned(await entries(dir))) names.add(name);
  for (const name of names) await removeCgroup(`/${parent}/${name}`);
  return [...names];
}

/** True when `pid` is alive and its command line mentions `marker` (e.g. the VM's directory). */
export async function processMentions(pid: number, marker: string): Promise<boolean> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).includes(marker);
  } catch {
    return false;
  }
}

/**
 * Removes the VM directories (`<pid>-<n>`) that dead servers left, killing their QEMU first:
 * only a process whose command line still names that VM's directory is signalled, never
 * whatever now has the pid the file recorded.
 */
export async function sweepVms(vmsDir: string): Promise<string[]> {
  const gone = orphaned(await entries(vmsDir));
  for (const name of gone) {
    const dir = join(vmsDir, name);
    const pid = Number((await readFile(join(dir, 'qemu.pid'), 'utf8').catch(() => '')).trim());
    if (pid > 0 && (await processMentions(pid, `${dir}/`))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
  return gone;
}

/** What a container sweep needs of an OCI runtime. */
export interface RuntimeForSweep {
  list(): Promise<string[]>;
  kill(id: string): Promise<unknown>;
  delete(id: string): Promise<unknown>;
}

/**
 * Deletes the containers (`isola-<pid>-<n>`) of dead servers from a runtime's state, with their
 * bundles and cgroups; then the bundles and cgroups of theirs that have no container any more.
 */
export async function sweepContainers(runtime: RuntimeForSweep, bundlesDir: string, cgroupParent: string): Promise<string[]> {
  const gone = orphaned(await runtime.list());
  for (const id of gone) {
    await runtime.kill(id);
    await runtime.delete(id);
    await rm(join(bundlesDir, id), { recursive: true, force: true });
    await removeCgroup(`/${cgroupParent}/${id}`);
  }
  await sweepOwnedEntries(bundlesDir);
  await sweepCgroups(cgroupParent);
  return gone;
}
