import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sweepOwnedEntries } from '../sweep.js';

const TARGET = 8;
const run = promisify(execFile);
// Per process, not per pool: two pools of one process may share a directory.
let counter = 0;

/**
 * Named pipes made ahead: Node.js has no mkfifo, and running the mkfifo command on the cold-start
 * path costs a process start. A pipe taken from the pool is renamed into place; the pool is
 * refilled in the background, several pipes per command. Pipes are named after this process, so
 * that servers sharing a data dir only ever remove their own and those of servers that are gone.
 */
export class FifoPool {
  private ready: string[] = [];
  private refilling = false;

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    void sweepOwnedEntries(dir).finally(() => this.refill());
  }

  /** Puts a new FIFO (mode 0600) at `path`. */
  async take(path: string): Promise<void> {
    const pooled = this.ready.pop();
    this.refill();
    if (pooled) {
      try {
        await rename(pooled, path);
        return;
      } catch {
        // fall through and make one here
      }
    }
    await run('mkfifo', ['-m', '0600', path]);
  }

  private refill(): void {
    if (this.refilling || this.ready.length >= TARGET / 2) return;
    this.refilling = true;
    const paths = Array.from({ length: TARGET - this.ready.length }, () => join(this.dir, `fifo-${process.pid}-${++counter}`));
    run('mkfifo', ['-m', '0600', ...paths]).then(
      () => {
        this.refilling = false;
        this.ready.push(...paths);
      },
      async () => {
        // Some may have been made before the command failed.
        await Promise.all(paths.map((p) => rm(p, { force: true })));
        this.refilling = false;
      },
    );
  }
}
