import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, waitFor } from './server-process.js';

/**
 * A private PostgreSQL for tests: its own cluster made with initdb in a temp dir, on a free port
 * of 127.0.0.1, run by the unprivileged `postgres` user when the tests run as root (PostgreSQL
 * refuses root), stopped by its pid. Needs Debian's `postgresql` package
 * (`scripts/setup-host.sh postgres`); never touches a system service.
 */
export class PostgresInstance {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly proc: ChildProcess,
    private readonly exited: Promise<void>,
  ) {}

  static async start(): Promise<PostgresInstance> {
    const bin = postgresBinDir();
    const owner = unprivilegedOwner();
    // As root, under /tmp: the postgres user must be able to reach it, which root's TMPDIR may not let it.
    const dir = mkdtempSync(join(owner ? '/tmp' : tmpdir(), 'isola-pg-'));
    if (owner) chownSync(dir, owner.uid, owner.gid);
    const data = join(dir, 'data');
    // The C locale: names sort by bytes, as in SQLite.
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, LANG: 'C', LC_ALL: 'C' };
    execFileSync(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--locale=C', '--encoding=UTF8', '--no-instructions'],
      { cwd: dir, env, stdio: 'pipe', ...(owner ?? {}) },
    );
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      // Durability is not what these tests are about: no fsync, no full-page writes.
      const proc = spawn(
        join(bin, 'postgres'),
        ['-D', data, '-p', String(port), '-k', dir, '-h', '127.0.0.1', '-c', 'fsync=off', '-c', 'full_page_writes=off'],
        { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'], ...(owner ?? {}) },
      );
      let log = '';
      proc.stderr?.on('data', (chunk: Buffer) => {
        log = (log + chunk.toString()).slice(-4000);
      });
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      const instance = new PostgresInstance(port, dir, proc, exited);
      const killOnExit = () => proc.kill('SIGKILL');
      process.once('exit', killOnExit);
      void exited.then(() => process.off('exit', killOnExit));
      try {
        await instance.waitReady(exited, () => log);
        return instance;
      } catch (error) {
        proc.kill('SIGKILL');
        await exited;
        // Another process took the port between the probe and the start: try another one.
        if (attempt < 3 && /could not bind|Address already in use/.test(log)) continue;
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
    }
  }

  /** A URL for a database of this instance. */
  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** Creates an empty database and returns its URL. */
  async createDatabase(prefix = 'isola'): Promise<string> {
    const name = `${prefix}_${randomBytes(6).toString('hex')}`;
    await this.query(`create database "${name}"`);
    return this.url(name);
  }

  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values: unknown[] = [],
    database = 'postgres',
  ): Promise<R[]> {
    const client = new pg.Client({ connectionString: this.url(database) });
    await client.connect();
    try {
      return (await client.query<R>(text, values)).rows;
    } finally {
      await client.end();
    }
  }

  /** Stops the server by its pid (a fast shutdown) and removes its files. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGINT');
      await this.exited;
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.stopping;
  }

  private async waitReady(exited: Promise<void>, log: () => string): Promise<void> {
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    await waitFor(
      'PostgreSQL to accept connections',
      async () => {
        if (gone) throw new Error(`PostgreSQL exited while starting:\n${log()}`);
        const client = new pg.Client({ connectionString: this.url() });
        try {
          await client.connect();
          return true;
        } catch {
          return undefined;
        } finally {
          await client.end().catch(() => {});
        }
      },
      30_000,
    ).catch((error: Error) => {
      throw error.message.startsWith('timed out') ? new Error(`PostgreSQL did not start within 30 s:\n${log()}`) : error;
    });
  }
}

let shared: Promise<PostgresInstance> | undefined;

/** One private instance per test process, started on first use; stop it with stopSharedPostgres. */
export function sharedPostgres(): Promise<PostgresInstance> {
  shared ??= PostgresInstance.start();
  return shared;
}

export async function stopSharedPostgres(): Promise<void> {
  const instance = shared;
  shared = undefined;
  if (instance) await (await instance).stop();
}

/** The newest PostgreSQL's binaries (Debian installs them in /usr/lib/postgresql/<major>/bin). */
function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((name) => existsSync(join(root, name, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (majors.length === 0) {
    throw new Error(
      'PostgreSQL is not installed: the store tests run against a private instance of it. ' +
        'Install it with `scripts/setup-host.sh postgres` (Debian: apt-get install postgresql).',
    );
  }
  return join(root, majors[0] as string, 'bin');
}

/** The `postgres` user's ids when running as root, for PostgreSQL will not run as root. */
function unprivilegedOwner(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error(
      'Running as root, and there is no `postgres` user to run PostgreSQL as (apt-get install postgresql makes one).',
    );
  }
}
