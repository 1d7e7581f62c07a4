import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './server-process.js';
import { ServiceProcess, sharedService } from './service-process.js';

/**
 * A private PostgreSQL for tests: its own cluster made with initdb in a temp dir, on a free port
 * of 127.0.0.1, run by the unprivileged `postgres` user when the tests run as root (PostgreSQL
 * refuses root), stopped by its pid. `restart()` starts it again on the same port and data, as an
 * operator restarting PostgreSQL would. Needs Debian's `postgresql` package
 * (`scripts/setup-host.sh postgres`); never touches a system service.
 */
export class PostgresInstance extends ServiceProcess {
  private constructor(
    port: number,
    dir: string,
    /** What `-h` gets: 127.0.0.1 and any further addresses the instance was started with. */
    private readonly listenAddresses: readonly string[],
  ) {
    // SIGINT: a fast shutdown (sessions are ended).
    super(port, dir, { name: 'PostgreSQL', stopSignal: 'SIGINT', portTaken: /could not bind|Address already in use/ });
  }

  /**
   * Starts an instance. `listenAddresses`: further addresses to listen on besides 127.0.0.1 (the
   * host end of a test's veth, say); `trustedNetworks`: networks (CIDR) whose clients may connect
   * without a password, as 127.0.0.1's may (initdb's --auth=trust covers only the loopback).
   */
  static async start(options: { listenAddresses?: string[]; trustedNetworks?: string[] } = {}): Promise<PostgresInstance> {
    const bin = postgresBinDir();
    const owner = unprivilegedOwner();
    // As root, under /tmp: the postgres user must be able to reach it, which root's TMPDIR may not let it.
    const dir = mkdtempSync(join(owner ? '/tmp' : tmpdir(), 'isola-pg-'));
    if (owner) chownSync(dir, owner.uid, owner.gid);
    const data = join(dir, 'data');
    execFileSync(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--locale=C', '--encoding=UTF8', '--no-instructions'],
      { cwd: dir, env: postgresEnv(dir), stdio: 'pipe', ...(owner ?? {}) },
    );
    const trusted = options.trustedNetworks ?? [];
    if (trusted.length > 0)
      appendFileSync(join(data, 'pg_hba.conf'), trusted.map((cidr) => `host all all ${cidr} trust\n`).join(''));
    const listenAddresses = ['127.0.0.1', ...(options.listenAddresses ?? [])];
    return ServiceProcess.startOnFreePort(dir, async () => new PostgresInstance(await freePort(), dir, listenAddresses));
  }

  /** A URL for a database of this instance, reached at `host` (one of its listen addresses). */
  url(database = 'postgres', host = '127.0.0.1'): string {
    return `postgres://postgres@${host}:${this.port}/${database}`;
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

  protected spawnServer(): ChildProcess {
    // Durability is not what these tests are about: no fsync, no full-page writes.
    return spawn(
      join(postgresBinDir(), 'postgres'),
      [
        ...['-D', join(this.dir, 'data'), '-p', String(this.port), '-k', this.dir, '-h', this.listenAddresses.join(',')],
        ...['-c', 'fsync=off', '-c', 'full_page_writes=off'],
      ],
      { cwd: this.dir, env: postgresEnv(this.dir), stdio: ['ignore', 'ignore', 'pipe'], ...(unprivilegedOwner() ?? {}) },
    );
  }

  protected async accepts(): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url() });
    try {
      await client.connect();
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }
}

const shared = sharedService(() => PostgresInstance.start());

/** One private instance per test process, started on first use; stop it with stopSharedPostgres. */
export const sharedPostgres = shared.get;
export const stopSharedPostgres = shared.stop;

/** The C locale: names sort by bytes, as in SQLite. */
function postgresEnv(dir: string): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, LANG: 'C', LC_ALL: 'C' };
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
