import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Proportional set size of a process in MiB (shared pages split among those sharing them). */
export function pssMib(pid: number): number {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const match = /^Pss:\s+(\d+) kB/m.exec(rollup);
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Every process in a cgroup (v1 memory controller, or v2). */
export function cgroupPids(cgroupsPath: string): number[] {
  for (const file of [
    join('/sys/fs/cgroup/memory', cgroupsPath, 'cgroup.procs'),
    join('/sys/fs/cgroup', cgroupsPath, 'cgroup.procs'),
  ]) {
    if (existsSync(file)) {
      return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
    }
  }
  return [];
}

export function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Idle instances of a cost (MB each) that fit in a GB (1024 MB); null when the cost is not above zero. */
export function perGb(mbPerInstance: number | null | undefined): number | null {
  return mbPerInstance && mbPerInstance > 0 ? Math.floor(1024 / mbPerInstance) : null;
}

/** Parent of every process, from /proc. */
function parents(): Map<number, number> {
  const result = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The command name is in parentheses and may contain spaces: the ppid follows the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      result.set(Number(entry), ppid);
    } catch {
      // exited meanwhile
    }
  }
  return result;
}

/**
 * Every host process that belongs to a server: the server, its descendants (process sandboxes,
 * QEMU), the processes in its containers' cgroups (which runtimes reparent away from it) and its
 * microVMs' QEMU processes.
 */
export function serverProcesses(serverPid: number, dataDir: string): number[] {
  const pids = new Set<number>([serverPid]);
  const tree = parents();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of tree) {
      if (!pids.has(pid) && pids.has(ppid)) {
        pids.add(pid);
        grew = true;
      }
    }
  }
  for (const root of ['/sys/fs/cgroup/memory/isola', '/sys/fs/cgroup/isola']) {
    if (!existsSync(root)) continue;
    for (const entry of readdirSync(root)) {
      if (entry.startsWith(`isola-${serverPid}-`))
        for (const pid of cgroupPids(join(root.replace(/^\/sys\/fs\/cgroup(\/memory)?/, ''), entry))) pids.add(pid);
    }
  }
  // A runtime's own processes outside a container's cgroup (one that stays in the foreground, a
  // helper beside the container) name the container, whose id starts with the server's.
  for (const pid of processesNaming(`isola-${serverPid}-`)) pids.add(pid);
  const vms = join(dataDir, 'microvm', 'vms');
  if (existsSync(vms)) {
    for (const entry of readdirSync(vms)) {
      if (!entry.startsWith(`${serverPid}-`)) continue;
      try {
        pids.add(Number(readFileSync(join(vms, entry, 'qemu.pid'), 'utf8').trim()));
      } catch {
        // not started yet
      }
    }
  }
  return [...pids].filter((pid) => pid > 0);
}

/** Every process whose command line names `marker` (a container id or a bundle path). */
export function processesNaming(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** Host memory (PSS, MiB) of the processes. */
export function processesMemoryMib(pids: Iterable<number>): number {
  let sum = 0;
  for (const pid of new Set(pids)) sum += pssMib(pid);
  return sum;
}

/** Host memory (PSS, MiB) of everything a server runs. */
export function serverMemoryMib(serverPid: number, dataDir: string): number {
  return serverProcesses(serverPid, dataDir).reduce((sum, pid) => sum + pssMib(pid), 0);
}

/** A process's memory (PSS, MiB) by what holds it, from /proc/<pid>/smaps. */
export interface MemoryBreakdown {
  /** WebAssembly linear memories: read-write anonymous mappings followed by their guard region (a reservation of 4 GiB or more). */
  wasmLinear: number;
  /** Anonymous executable mappings: code V8 compiled (JavaScript and WebAssembly). */
  jitCode: number;
  /** Other anonymous memory: the JavaScript heaps, malloc, thread stacks. */
  otherAnonymous: number;
  /** Mapped files: the executable, shared libraries. */
  files: number;
}

export function memoryBreakdownMib(pid: number): MemoryBreakdown {
  const maps: { start: bigint; end: bigint; perms: string; path: string; sizeKb: number; pssKb: number }[] = [];
  let current: (typeof maps)[number] | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      current = {
        start: BigInt(`0x${header[1]}`),
        end: BigInt(`0x${header[2]}`),
        perms: header[3] as string,
        path: header[4] ?? '',
        sizeKb: 0,
        pssKb: 0,
      };
      maps.push(current);
      continue;
    }
    const field = /^(Size|Pss):\s+(\d+) kB/.exec(line);
    if (field && current) {
      if (field[1] === 'Size') current.sizeKb = Number(field[2]);
      else current.pssKb = Number(field[2]);
    }
  }
  const out: MemoryBreakdown = { wasmLinear: 0, jitCode: 0, otherAnonymous: 0, files: 0 };
  maps.forEach((map, i) => {
    const next = maps[i + 1];
    const anonymous = !map.path.startsWith('/');
    let kind: keyof MemoryBreakdown;
    if (!anonymous) kind = 'files';
    else if (map.perms.includes('x')) kind = 'jitCode';
    else if (
      map.perms.startsWith('rw') &&
      next &&
      next.start === map.end &&
      next.perms.startsWith('---') &&
      next.sizeKb >= 4 * 1024 * 1024
    )
      kind = 'wasmLinear';
    else kind = 'otherAnonymous';
    out[kind] += map.pssKb / 1024;
  });
  return out;
}
