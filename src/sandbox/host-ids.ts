import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** True when this process can switch sandboxes to other user ids. */
export const RUNNING_AS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * The host-wide allocator of sandbox uids, shared by every backend of this server (and, through
 * its lease files, with other servers on the host).
 */
let sharedAllocator: UidAllocator | undefined;
export function sandboxUids(): UidAllocator {
  sharedAllocator ??= new UidAllocator(join(tmpdir(), 'isola-uids'), 200_000, 50_000);
  return sharedAllocator;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** SIGKILLs every process owned by a uid: what a sandbox spawned goes with it, wherever it moved. */
export function killProcessesOf(uid: number): number {
  let killed = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      const match = /^Uid:\s+(\d+)/m.exec(status);
      if (match && Number(match[1]) === uid) {
        process.kill(Number(entry), 'SIGKILL');
        killed++;
      }
    } catch {
      // The process exited while we looked.
    }
  }
  return killed;
}

/**
 * Hands out unprivileged user ids from a range, one per live sandbox, so that sandboxes cannot
 * signal or read each other and per-user limits (RLIMIT_NPROC) apply to one sandbox at a time.
 * Leases are files created exclusively in a host-wide directory and hold the owner's pid, so
 * several servers on one host never share an id and a dead server's ids can be reclaimed.
 */
export class UidAllocator {
  private next: number;

  constructor(
    private readonly leaseDir: string,
    private readonly first: number,
    private readonly count: number,
  ) {
    mkdirSync(leaseDir, { recursive: true, mode: 0o700 });
    this.next = first + Math.floor(Math.random() * count);
  }

  acquire(): number {
    for (let i = 0; i < this.count; i++) {
      const uid = this.first + ((this.next - this.first + i) % this.count);
      const file = join(this.leaseDir, String(uid));
      try {
        const fd = openSync(file, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        this.next = uid + 1;
        return uid;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        if (this.reclaimIfStale(uid)) i--;
      }
    }
    throw new Error(`No free sandbox user id in ${this.first}..${this.first + this.count - 1}`);
  }

  release(uid: number): void {
    rmSync(join(this.leaseDir, String(uid)), { force: true });
  }

  /** Reclaims every id whose owner server is gone, killing what still runs under it. */
  sweep(): number {
    let reclaimed = 0;
    for (const entry of readdirSync(this.leaseDir)) {
      if (/^\d+$/.test(entry) && this.reclaimIfStale(Number(entry))) reclaimed++;
    }
    return reclaimed;
  }

  private reclaimIfStale(uid: number): boolean {
    const file = join(this.leaseDir, String(uid));
    let owner: number;
    try {
      owner = Number(readFileSync(file, 'utf8'));
    } catch {
      return false;
    }
    if (owner && pidAlive(owner)) return false;
    killProcessesOf(uid);
    rmSync(file, { force: true });
    return true;
  }
}
