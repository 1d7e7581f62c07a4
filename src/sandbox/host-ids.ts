import { closeSync, constants, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** True when this process can switch sandboxes to other user ids. */
export const RUNNING_AS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

/** The range sandbox uids come from; nothing outside it is ever killed or reclaimed. */
export const SANDBOX_UID_FIRST = 200_000;
export const SANDBOX_UID_COUNT = 50_000;

/**
 * Where uid leases live: host-wide (two servers with different data dirs must never share a
 * uid) and root's own, so that no other user can plant or remove a lease.
 */
export const UID_LEASE_DIR = '/run/isola/uids';

/**
 * The host-wide allocator of sandbox uids, shared by every backend of this server (and, through
 * its lease files, with other servers on the host). Throws if the lease directory is not safe.
 */
let sharedAllocator: UidAllocator | undefined;
export function sandboxUids(): UidAllocator {
  sharedAllocator ??= new UidAllocator(UID_LEASE_DIR, SANDBOX_UID_FIRST, SANDBOX_UID_COUNT);
  return sharedAllocator;
}

import { processAlive as pidAlive, processStartTime } from './sweep.js';

export { pidAlive, processStartTime };

export function isSandboxUid(uid: number): boolean {
  return Number.isInteger(uid) && uid >= SANDBOX_UID_FIRST && uid < SANDBOX_UID_FIRST + SANDBOX_UID_COUNT;
}

/**
 * SIGKILLs every process owned by a sandbox uid: what a sandbox spawned goes with it, wherever
 * it moved. Refuses any uid outside the sandbox range.
 */
export function killProcessesOf(uid: number): number {
  if (!isSandboxUid(uid)) throw new Error(`Refusing to kill the processes of uid ${uid}: not a sandbox uid.`);
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
 * Makes sure `path` is a directory only this process's user controls: created if missing (its
 * parent must be safe too), a real directory (not a symbolic link), owned by us, and writable by
 * no one else. Anything else could let another local user plant or swap what is in it.
 */
export function ensurePrivateDir(path: string, mode = 0o700): void {
  const me = process.getuid?.() ?? 0;
  const parent = dirname(path);
  const parentStat = lstatSync(parent);
  // A sticky world-writable parent (/tmp) is fine: no one else can rename or remove what we own in it.
  const parentSafe =
    parentStat.isDirectory() &&
    (parentStat.uid === me || parentStat.uid === 0) &&
    ((parentStat.mode & 0o022) === 0 || (parentStat.mode & 0o1000) !== 0);
  if (!parentSafe)
    throw new Error(`${parent} is not a safe place for ${path}: it must be a directory that only root or uid ${me} can change.`);
  try {
    mkdirSync(path, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const stat = lstatSync(path);
  if (!stat.isDirectory()) throw new Error(`${path} is not a directory (a symbolic link or a file is there); remove it.`);
  if (stat.uid !== me) throw new Error(`${path} is owned by uid ${stat.uid}, not by uid ${me}; remove it.`);
  if ((stat.mode & 0o022) !== 0) {
    throw new Error(`${path} is writable by other users (mode ${(stat.mode & 0o777).toString(8)}); remove it or chmod go-w it.`);
  }
}

/**
 * Hands out unprivileged user ids from a range, one per live sandbox, so that sandboxes cannot
 * signal or read each other and per-user limits (RLIMIT_NPROC) apply to one sandbox at a time.
 * Leases are files created exclusively in a host-wide directory and name the owner server
 * (pid and start time), so several servers on one host never share an id and a dead server's
 * ids can be reclaimed. Only regular files named after an id in the range are ever acted on.
 */
export class UidAllocator {
  private next: number;

  constructor(
    private readonly leaseDir: string,
    private readonly first: number,
    private readonly count: number,
  ) {
    if (first < SANDBOX_UID_FIRST || first + count > SANDBOX_UID_FIRST + SANDBOX_UID_COUNT) {
      throw new Error(`uids ${first}..${first + count - 1} are outside the sandbox range`);
    }
    ensurePrivateDir(dirname(leaseDir));
    ensurePrivateDir(leaseDir);
    this.next = first + Math.floor(Math.random() * count);
  }

  acquire(): number {
    const owner = `${process.pid} ${processStartTime(process.pid) ?? ''}`.trim();
    for (let i = 0; i < this.count; i++) {
      const uid = this.first + ((this.next - this.first + i) % this.count);
      const file = join(this.leaseDir, String(uid));
      try {
        const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        writeSync(fd, owner);
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
    if (!this.inRange(uid)) return;
    rmSync(join(this.leaseDir, String(uid)), { force: true });
  }

  /** Reclaims every id whose owner server is gone, killing what still runs under it. */
  sweep(): number {
    let reclaimed = 0;
    for (const entry of readdirSync(this.leaseDir)) {
      if (!/^[1-9]\d*$/.test(entry)) continue;
      const uid = Number(entry);
      if (this.inRange(uid) && this.reclaimIfStale(uid)) reclaimed++;
    }
    return reclaimed;
  }

  private inRange(uid: number): boolean {
    return Number.isInteger(uid) && uid >= this.first && uid < this.first + this.count && isSandboxUid(uid);
  }

  private reclaimIfStale(uid: number): boolean {
    if (!this.inRange(uid)) return false;
    const file = join(this.leaseDir, String(uid));
    let content: string;
    try {
      const stat = lstatSync(file);
      if (!stat.isFile() || stat.uid !== (process.getuid?.() ?? 0)) return false;
      content = readFileSync(file, 'utf8');
    } catch {
      return false;
    }
    const [pidText, started] = content.trim().split(/\s+/);
    const owner = Number(pidText);
    // Alive and the same process (not a later one that got its pid): the lease stands.
    if (Number.isInteger(owner) && owner > 0 && pidAlive(owner) && (!started || processStartTime(owner) === started)) {
      return false;
    }
    killProcessesOf(uid);
    rmSync(file, { force: true });
    return true;
  }
}
