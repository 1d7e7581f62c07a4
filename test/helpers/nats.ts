import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort } from './server-process.js';
import { ServiceProcess, sharedService } from './service-process.js';

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
export class NatsInstance extends ServiceProcess {
  private constructor(
    port: number,
    dir: string,
    /** The one address it listens on (nats-server takes one): 127.0.0.1 unless the test gave another. */
    readonly host: string,
  ) {
    super(port, dir, { name: 'nats-server', stopSignal: 'SIGTERM', portTaken: /address already in use/i });
  }

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
    const host = options.host ?? '127.0.0.1';
    return ServiceProcess.startOnFreePort(dir, async () => new NatsInstance(await freePort(options.host), dir, host));
  }

  get url(): string {
    return `nats://${this.host}:${this.port}`;
  }

  protected spawnServer(): ChildProcess {
    // SIGTERM stops it with JetStream's store flushed.
    return spawn(
      NATS_SERVER ?? 'nats-server',
      ['-c', join(this.dir, 'nats.conf'), '-a', this.host, '-p', String(this.port), '-js', '-sd', join(this.dir, 'store')],
      { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
  }

  /** A client connects and JetStream answers. */
  protected async accepts(): Promise<boolean> {
    const nc = await connect({ servers: this.url, reconnect: false, timeout: 1000 }).catch(() => undefined);
    if (!nc) return false;
    try {
      await (await jetstreamManager(nc)).getAccountInfo();
      return true;
    } catch {
      return false;
    } finally {
      await nc.close().catch(() => {});
    }
  }
}

const shared = sharedService(() => NatsInstance.start());

/** One private instance per test process, started on first use; stop it with stopSharedNats. */
export const sharedNats = shared.get;
export const stopSharedNats = shared.stop;
