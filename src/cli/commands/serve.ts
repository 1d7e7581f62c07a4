import type { Command } from 'commander';
import { globals } from './common.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('start the platform: the API server, scheduler and every backend this host supports')
    .option(
      '--role <role>',
      'all (the whole platform, the default), controller (the doors; places calls on invokers) or invoker (runs them here) (env ISOLA_ROLE)',
    )
    .option('--nats <url>', 'nats://host:port: join the cluster that shares this NATS server (env ISOLA_NATS_URL)')
    .option('--port <port>', 'port to listen on (env ISOLA_PORT, default 3233; 0 picks a free port)')
    .option('--host <address>', 'address to bind (env ISOLA_HOST, default 127.0.0.1)')
    .option('--backends <list>', 'comma-separated backends to enable (env ISOLA_BACKENDS, default: all that work)')
    .option(
      '--database <url>',
      'postgres://user@host:port/database to store everything in PostgreSQL (env ISOLA_DATABASE, default: SQLite in the data dir)',
    )
    .option('--memory-budget <MB>', 'memory for instances, summed over their limits (env ISOLA_MEMORY_BUDGET_MB)')
    .option(
      '--keep-alive <policy>',
      'default keep-alive policy: a duration (fixed), fixed:<duration> or hybrid (env ISOLA_KEEP_ALIVE, default 10m)',
    )
    .option('--prewarm <list>', 'blank sandboxes kept ready, e.g. isolate:2,process:1 (env ISOLA_PREWARM)')
    .option(
      '--container-runtime <runc|crun>',
      'runtime for isolation container (env ISOLA_CONTAINER_RUNTIME, default: the faster that works)',
    )
    .option(
      '--egress-allow <ranges>',
      'private IPv4 ranges functions with network=egress may reach, e.g. 10.1.0.0/16,192.168.5.10 (env ISOLA_EGRESS_ALLOW)',
    )
    .option(
      '--activation-retention <duration>',
      'prune finished activations older than this, e.g. 7d or 12h; off keeps them (env ISOLA_ACTIVATION_RETENTION, default 7d)',
    )
    .option(
      '--activations-per-namespace <n>',
      'keep at most this many finished activations per namespace; off for no limit (env ISOLA_ACTIVATIONS_PER_NAMESPACE, default 10000)',
    )
    .action(async (options: Record<string, string | undefined>, command: Command) => {
      process.stdout.write('Starting Isola ...\n');
      // Loaded here so that other commands do not pay for the server's modules.
      const { buildServer } = await import('../../api/server.js');
      const { resolveServerConfig } = await import('../../config.js');
      const {
        ADMIN_TOKEN_FILE,
        GUEST_AUTH_FILE,
        ensureDataDir,
        formatAuth,
        loadOrCreateAdminToken,
        removeServerInfo,
        writeServerInfo,
      } = await import('../../platform/credentials.js');
      const { DataDirLock, processStartTime } = await import('../../platform/data-dir-lock.js');
      const { Platform } = await import('../../platform/platform.js');
      const { NOT_ENABLED } = await import('../../sandbox/registry.js');
      const { dataDir } = globals(command);
      const config = resolveServerConfig({ ...options, ...(dataDir ? { dataDir } : {}) });
      // One server per data dir, locked before anything in it is touched (store, backends'
      // sweeps): a second one would share the database and fire every cron trigger again. Waits a
      // little for a command that holds it for a moment (`isola namespace` without a server).
      ensureDataDir(config.dataDir);
      const lock = DataDirLock.acquire(config.dataDir, 3000);
      const startTime = processStartTime(process.pid);
      writeServerInfo(config.dataDir, { pid: process.pid, ...(startTime ? { startTime } : {}) });
      const adminTokenFromEnv = config.adminToken !== undefined;
      config.adminToken ??= loadOrCreateAdminToken(config.dataDir);
      // Backends are probed in the background once the server listens; their lines are held
      // until the server has said where it listens.
      let held: string[] | undefined = [];
      const backendLine = (isolation: string, message: string) => {
        const line = `  ${isolation}: ${message}\n`;
        if (held) held.push(line);
        else process.stdout.write(line);
      };
      let platform: Awaited<ReturnType<typeof Platform.start>>;
      try {
        platform = await Platform.start(config, {
          warn: (message) => process.stderr.write(`warning: ${message}\n`),
          backend: backendLine,
        });
      } catch (error) {
        removeServerInfo(config.dataDir);
        lock.release();
        throw error;
      }
      const app = buildServer(platform);
      try {
        await app.listen({ port: config.port, host: config.host });
      } catch (error) {
        // e.g. the port is taken: stop everything started, or the process would linger.
        await platform.close();
        removeServerInfo(config.dataDir);
        lock.release();
        throw error;
      }
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : config.port;
      const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
      platform.setApiHost(config.apiHost ?? url);
      writeServerInfo(config.dataDir, { url, pid: process.pid, ...(startTime ? { startTime } : {}) });
      const lines = [
        `Isola is listening on ${url}`,
        `Data directory: ${config.dataDir}`,
        ...(platform.cluster
          ? [
              `Cluster: ${config.role === 'all' ? 'controller and invoker' : config.role}${platform.cluster.invokerId ? ` (invoker ${platform.cluster.invokerId})` : ''}, over NATS at ${config.natsUrl}`,
            ]
          : []),
        `Database: ${platform.database.dialect === 'postgres' ? `PostgreSQL at ${platform.database.location}` : `SQLite in ${platform.database.location}`}`,
        `Guest credentials: ${formatAuth(platform.guest)}${config.guestAuth ? ' (from ISOLA_GUEST_AUTH)' : ` (saved in ${config.dataDir}/${GUEST_AUTH_FILE})`}`,
        `Operator token (for /metrics and the admin API): ${adminTokenFromEnv ? 'from ISOLA_ADMIN_TOKEN' : `in ${config.dataDir}/${ADMIN_TOKEN_FILE}`}`,
        'Backends (probed in the background; each is listed once ready, and calls of one still being probed wait for it):',
      ];
      for (const status of platform.backendStatuses) {
        if (status.detail === NOT_ENABLED) lines.push(`  ${status.isolation}: not enabled by the backends setting`);
      }
      process.stdout.write(`${lines.join('\n')}\n${held.join('')}`);
      held = undefined;
      const recovered = await platform.recover();
      if (recovered.failed + recovered.resumed + recovered.retried > 0) {
        process.stdout.write(
          `Recovered after restart: ${recovered.resumed} queued activation(s) resumed, ${recovered.retried} interrupted one(s) run again, ${recovered.failed} recorded as failed.\n`,
        );
      }
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stdout.write(`Stopping (${signal})...\n`);
        await app.close();
        await platform.close();
        removeServerInfo(config.dataDir);
        lock.release();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop('SIGINT'));
      process.on('SIGTERM', () => void stop('SIGTERM'));
    });
}
