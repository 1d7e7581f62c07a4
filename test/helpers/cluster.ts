import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { NatsInstance } from './nats.js';
import { PostgresInstance } from './postgres.js';
import { ServerProcess, waitFor } from './server-process.js';

/** One invoker as `GET /api/v1/invokers` lists it. */
export interface InvokerStatus {
  id: string;
  host: string;
  backends: string[];
  health: string;
  instances: number;
}

/**
 * A cluster for a test: a private PostgreSQL and nats-server, and the `isola serve` processes the
 * test starts on them (controllers, invokers), which share the database, NATS, the operator
 * token and the guest credentials. `dispose` stops every one of them.
 */
export class TestCluster {
  readonly adminToken = randomBytes(16).toString('hex');
  readonly guestAuth = `${randomUUID()}:${randomBytes(32).toString('hex')}`;
  /** Every server started, live or not. */
  readonly servers: ServerProcess[] = [];

  private constructor(
    readonly postgres: PostgresInstance,
    readonly nats: NatsInstance,
    readonly databaseUrl: string,
    /** The isolation backends its servers enable. */
    readonly backends: readonly string[],
  ) {}

  static async start(options: {
    backends: readonly string[];
    postgres?: Parameters<typeof PostgresInstance.start>[0];
    nats?: Parameters<typeof NatsInstance.start>[0];
  }): Promise<TestCluster> {
    const [postgres, nats] = await Promise.all([PostgresInstance.start(options.postgres), NatsInstance.start(options.nats)]);
    try {
      return new TestCluster(postgres, nats, await postgres.createDatabase(), options.backends);
    } catch (error) {
      await Promise.all([postgres.stop(), nats.stop()]);
      throw error;
    }
  }

  /** What every server of the cluster is started with. */
  get env(): Record<string, string> {
    return {
      ISOLA_DATABASE_URL: this.databaseUrl,
      ISOLA_NATS_URL: this.nats.url,
      ISOLA_GUEST_AUTH: this.guestAuth,
      ISOLA_ADMIN_TOKEN: this.adminToken,
      ISOLA_BACKENDS: this.backends.join(','),
      ISOLA_PREWARM: '',
    };
  }

  /**
   * Starts a server of the cluster in `role`. The first controller must be up before the others
   * start: it creates the schema they share.
   */
  async start(
    role: 'controller' | 'invoker',
    options: { env?: Record<string, string>; wrap?: string[] } = {},
  ): Promise<ServerProcess> {
    const server = await ServerProcess.start({
      env: { ...this.env, ISOLA_ROLE: role, ...(options.env ?? {}) },
      ...(options.wrap ? { wrap: options.wrap } : {}),
    });
    this.servers.push(server);
    return server;
  }

  async listInvokers(via: ServerProcess): Promise<InvokerStatus[]> {
    const response = await via.request<{ invokers: InvokerStatus[] }>('GET', '/api/v1/invokers', undefined, {
      auth: null,
      headers: { authorization: `Bearer ${this.adminToken}` },
    });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    return response.body.invokers;
  }

  /**
   * Waits until `via` lists exactly `count` healthy invokers, each with every backend of the
   * cluster ready (an invoker registers before its backends' probes end).
   */
  waitForInvokers(via: ServerProcess, count: number, timeoutMs = 60_000): Promise<InvokerStatus[]> {
    return waitFor(
      `${count} invokers to be listed with their backends`,
      async () => {
        const listed = (await this.listInvokers(via)).filter((invoker) => invoker.health === 'healthy');
        return listed.length === count && listed.every((invoker) => this.backends.every((b) => invoker.backends.includes(b)))
          ? listed
          : undefined;
      },
      timeoutMs,
    );
  }

  /** The id of the invoker `server` (its host name and pid, as the server builds it), if listed. */
  invokerIdOf(listed: readonly InvokerStatus[], server: ServerProcess): string | undefined {
    return listed.find((invoker) => server.pid !== undefined && invoker.id.endsWith(`-${server.pid}`))?.id;
  }

  /** The server process of the invoker `id`. */
  invokerProcess(id: string): ServerProcess | undefined {
    return this.servers.find((server) => server.pid !== undefined && id.endsWith(`-${server.pid}`));
  }

  async dispose(): Promise<void> {
    await Promise.all(this.servers.map((server) => server.dispose()));
    await Promise.all([this.nats.stop(), this.postgres.stop()]);
  }
}
