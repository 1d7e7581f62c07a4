import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort, waitFor } from './server-process.js';

/** Debian installs it in /usr/sbin, which an unprivileged user's PATH may lack. */
const NATS_SERVER = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((path) =>
  existsSync(path),
);

/**
 * The largest message the private server takes. NATS's default is 1 MB, no more than Isola's own
 * 1 MiB payload limit, which leaves no room for the envelope around a 1 MiB parameter or result;
 * 8 MB is the most NATS recommends (README, "Running on several hosts").
 */
export const NATS_MAX_PAYLOAD = 8 * 1024 * 1024;

/**
 * A private nats-server for tests: JetStream on, its store in a temp dir, on a free port of
 * 127.0.0.1 (or the address given), stopped by its pid. `restart()` starts it again on the same
 * port and store, as an operator restarting NATS would. Needs Debian's `nats-server` package
 * (`scripts/setup-host.sh nats`); never touches a system service.
 */
export class NatsInstance {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private log = '';
  private removed = false;

  private constructor(
    readonly port: number,
    private readonly dir: string,
    /** The one address it listens on (nats-server takes one): 127.0.0.1 unless the test gave another. */
    readonly host: string,
  ) {}

  /**
   * Starts an instance. `host`: the address to listen on instead of 127.0.0.1, for servers that
   * must reach it from elsewhere (a test's network namespace reaches the host end of its veth,
   * which the host's own processes reach as well); nats-server listens on one address only.
   */
  static async start(options: { host?: string } = {}): Promise<NatsInstance> {
    if (!NATS_SERVER) {
      throw new Error(
        'nats-server is not installed: the cluster tests run against a private instance of it. ' +
          'Install it with `scripts/setup-host.sh nats` (Debian: apt-get install nats-server).',
      );
    }
    const dir = mkdtempSync(join(tmpdir(), 'isola-nats-'));
    mkdirSync(join(dir, 'store'));
    // max_payload has no command-line flag: it goes in a configuration file; the rest are flags.
    writeFileSync(join(dir, 'nats.conf'), `max_payload: ${NATS_MAX_PAYLOAD}\n`);
    for (let attempt = 1; ; attempt++) {
      const instance = new NatsInstance(await freePort(options.host), dir, options.host ?? '127.0.0.1');
      try {
        await instance.launch();
        return instance;
      } catch (error) {
        await instance.kill();
        // Another process took the port between the probe and the start: try another one.
        if (attempt < 3 && /address already in use/i.test(instance.log)) continue;
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
    }
  }

  get url(): string {
    return `nats://${this.host}:${this.port}`;
  }

  /** The server's pid while it runs. */
  get pid(): number | undefined {
    return this.running ? this.proc?.pid : undefined;
  }

  /** Stops the server by its pid (SIGTERM: JetStream flushes its store) and keeps its files. */
  async shutdown(): Promise<void> {
    if (this.running) this.proc?.kill('SIGTERM');
    await this.exited;
  }

  /** Kills the server by its pid (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    if (this.running) this.proc?.kill('SIGKILL');
    await this.exited;
  }

  /** Stops the server if it runs and starts it again on the same port and store dir. */
  async restart(): Promise<void> {
    await this.shutdown();
    // The port was just released; if something else grabbed it meanwhile, wait a little for it.
    await waitFor(
      'nats-server to start again on its port',
      async () => {
        try {
          await this.launch();
          return true;
        } catch (error) {
          await this.kill();
          if (/address already in use/i.test(this.log)) return undefined;
          throw error;
        }
      },
      15_000,
    );
  }

  /** Stops the server by its pid and removes its files. */
  async stop(): Promise<void> {
    await this.shutdown();
    if (!this.removed) rmSync(this.dir, { recursive: true, force: true });
    this.removed = true;
  }

  private get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  private async launch(): Promise<void> {
    this.log = '';
    const proc = spawn(
      NATS_SERVER ?? 'nats-server',
      ['-c', join(this.dir, 'nats.conf'), '-a', this.host, '-p', String(this.port), '-js', '-sd', join(this.dir, 'store')],
      { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.proc = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      this.log = (this.log + chunk.toString()).slice(-4000);
    });
    this.exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const killOnExit = () => proc.kill('SIGKILL');
    process.once('exit', killOnExit);
    void this.exited.then(() => process.off('exit', killOnExit));
    await this.waitReady();
  }

  /** Waits until the server accepts a client and its JetStream answers. */
  private async waitReady(): Promise<void> {
    let gone = false;
    void this.exited.then(() => {
      gone = true;
    });
    await waitFor(
      'nats-server to accept connections',
      async () => {
        if (gone) throw new Error(`nats-server exited while starting:\n${this.log}`);
        const nc = await connect({ servers: this.url, reconnect: false, timeout: 1000 }).catch(() => undefined);
        if (!nc) return undefined;
        try {
          await (await jetstreamManager(nc)).getAccountInfo();
          return true;
        } catch {
          return undefined;
        } finally {
          await nc.close().catch(() => {});
        }
      },
      30_000,
    ).catch((error: Error) => {
      throw error.message.startsWith('timed out') ? new Error(`nats-server did not start within 30 s:\n${this.log}`) : error;
    });
  }
}

let shared: Promise<NatsInstance> | undefined;

/** One private instance per test process, started on first use; stop it with stopSharedNats. */
export function sharedNats(): Promise<NatsInstance> {
  shared ??= NatsInstance.start();
  return shared;
}

export async function stopSharedNats(): Promise<void> {
  const instance = shared;
  shared = undefined;
  if (instance) await (await instance).stop();
}
