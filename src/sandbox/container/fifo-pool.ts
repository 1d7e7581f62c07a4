import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const TARGET = 8;

/**
 * Named pipes made ahead: Node.js has no mkfifo, and running the mkfifo command on the cold-start
 * path costs a process start. A pipe taken from the pool is renamed into place; the pool is
 * refilled in the background, several pipes per command.
 */
export class FifoPool {
  private ready: string[] = [];
  private refilling = false;
  private counter = 0;

  constructor(private readonly dir: string) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.refill();
  }

  /** Puts a new FIFO (mode 0600) at `path`. */
  take(path: string): void {
    const pooled = this.ready.pop();
    this.refill();
    if (pooled) {
      try {
        renameSync(pooled, path);
        return;
      } catch {
        // fall through and make one here
      }
    }
    execFileSync('mkfifo', ['-m', '0600', path]);
  }

  private refill(): void {
    if (this.refilling || this.ready.length >= TARGET / 2) return;
    this.refilling = true;
    const paths = Array.from({ length: TARGET - this.ready.length }, () =>
      join(this.dir, `fifo-${process.pid}-${++this.counter}`),
    );
    execFile('mkfifo', ['-m', '0600', ...paths], (error) => {
      this.refilling = false;
      if (!error) this.ready.push(...paths);
      else for (const entry of readdirSync(this.dir)) rmSync(join(this.dir, entry), { force: true });
    });
  }
}
