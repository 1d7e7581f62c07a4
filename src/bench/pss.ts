import { existsSync, readFileSync } from 'node:fs';
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
