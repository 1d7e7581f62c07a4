import type { Command } from 'commander';
import { adminTokenFromEnvironment } from '../../config.js';
import { readAdminToken } from '../../platform/credentials.js';
import type { InvokerStatus } from '../../platform/platform.js';
import { AdminClient } from '../client.js';
import { configPath, resolveConnection } from '../config-file.js';
import { printJson, printTable } from '../output.js';
import { commandLineGlobals, globals } from './common.js';

/** The cluster as a controller sees it: `isola cluster status`. */
export function registerClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description("the cluster's invokers (needs the operator token)");

  cluster
    .command('status')
    .description('list the invokers: their backends, memory in use, instances and health')
    .action(async (_options: unknown, command: Command) => {
      const { apihost, dataDir } = resolveConnection({ flags: commandLineGlobals(command), configFile: configPath() });
      const token = adminTokenFromEnvironment() || readAdminToken(dataDir);
      if (!token) {
        throw new Error(
          `This needs the operator token: set ISOLA_ADMIN_TOKEN (as the servers have it), or run where ${dataDir} holds the server's admin.token.`,
        );
      }
      const { data } = await new AdminClient(apihost.value, token).request<{ invokers: InvokerStatus[] }>(
        'GET',
        '/api/v1/invokers',
      );
      if (globals(command).json) {
        printJson(data.invokers);
        return;
      }
      if (data.invokers.length === 0) {
        process.stdout.write('No invoker is registered: start one with `isola serve --role invoker`.\n');
        return;
      }
      printTable(
        ['invoker', 'host', 'backends', 'memory (MB)', 'idle (MB)', 'instances', 'health', 'heartbeat'],
        data.invokers.map((invoker) => [
          invoker.id,
          invoker.host,
          invoker.backends.join(','),
          `${invoker.memoryInUseMb}/${invoker.memoryBudgetMb}`,
          invoker.memoryIdleMb,
          invoker.instances,
          invoker.health,
          invoker.id === 'local' ? 'this server' : `${(invoker.heartbeatAgeMs / 1000).toFixed(1)} s ago`,
        ]),
      );
    });
}
