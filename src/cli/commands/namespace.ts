import { resolve } from 'node:path';
import type { Command } from 'commander';
import { adminTokenFromEnvironment } from '../../config.js';
import { newCredentials } from '../../core/ids.js';
import { assertEntityName } from '../../core/names.js';
import { ensureDataDir, formatAuth, readAdminToken } from '../../platform/credentials.js';
import type { NamespacePurge, Store } from '../../store/store.js';
import { AdminClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { globals } from './common.js';

/** How long to wait for a data dir held by another short command, or by a server still starting. */
const BUSY_WAIT_MS = 15_000;

interface NamespaceView {
  name: string;
  uuid: string;
  created: number;
}

/**
 * Runs a namespace operation on a data dir: through the admin API of the server that runs on it,
 * so that the server forgets what it holds for a deleted namespace (its instances, cron triggers
 * and cached credentials); or, with no server there, on the store directly, holding the data
 * dir's lock meanwhile so that no server starts halfway through.
 */
async function onDataDir<T>(
  command: Command,
  viaServer: (admin: AdminClient) => Promise<T>,
  direct: (store: Store) => Promise<T>,
): Promise<T> {
  const dir = resolve(globals(command).dataDir ?? './.isola');
  ensureDataDir(dir);
  const { DataDirBusyError, DataDirLock, liveServer } = await import('../../platform/data-dir-lock.js');
  const deadline = Date.now() + BUSY_WAIT_MS;
  for (;;) {
    const lock = DataDirLock.tryAcquire(dir);
    if (lock) {
      const { Store } = await import('../../store/store.js');
      try {
        const store = await Store.open({ dataDir: dir });
        try {
          return await direct(store);
        } finally {
          await store.close();
        }
      } finally {
        lock.release();
      }
    }
    const server = liveServer(dir);
    if (server?.url) {
      const token = adminTokenFromEnvironment() || readAdminToken(dir);
      if (!token) {
        throw new Error(
          `A server (pid ${server.pid}) runs on ${dir} with its operator token from ISOLA_ADMIN_TOKEN: set the same ISOLA_ADMIN_TOKEN here.`,
        );
      }
      return viaServer(new AdminClient(server.url, token));
    }
    if (Date.now() > deadline) throw new DataDirBusyError(dir, server);
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** Administration of namespaces, like `wskadmin user`. */
export function registerNamespaceCommands(program: Command): void {
  const namespace = program
    .command('namespace')
    .description("create, list and delete namespaces (on this host's data dir, through its server when one runs)");

  namespace
    .command('create <name>')
    .description('create a namespace and print its credentials (uuid:key)')
    .action(async (name: string, _options: unknown, command: Command) => {
      assertEntityName('namespace', name);
      if (name === '_') throw new Error('The namespace name "_" is reserved: it means "my namespace" in API paths.');
      const auth = await onDataDir(
        command,
        async (admin) =>
          (await admin.request<{ auth: string }>('PUT', `/admin/v1/namespaces/${encodeURIComponent(name)}`)).data.auth,
        async (store) => {
          const credentials = newCredentials();
          await store.createNamespace(name, credentials.uuid, credentials.key);
          return formatAuth(credentials);
        },
      );
      if (globals(command).json) printJson({ namespace: name, auth });
      else process.stdout.write(`${auth}\n`);
    });

  namespace
    .command('list')
    .description('list namespaces')
    .action(async (_options: unknown, command: Command) => {
      const rows = await onDataDir<NamespaceView[]>(
        command,
        async (admin) => (await admin.request<NamespaceView[]>('GET', '/admin/v1/namespaces')).data,
        async (store) => (await store.listNamespaces()).map((r) => ({ ...r, created: Number(r.created) })),
      );
      if (globals(command).json) printJson(rows);
      else
        printTable(
          ['namespace', 'uuid', 'created'],
          rows.map((r) => [r.name, r.uuid, formatTime(r.created)]),
        );
    });

  namespace
    .command('delete <name>')
    .description('delete a namespace with everything in it: actions, versions, activations, triggers and rules')
    .action(async (name: string, _options: unknown, command: Command) => {
      const purge = await onDataDir<NamespacePurge | undefined>(
        command,
        async (admin) => {
          try {
            return (
              await admin.request<{ removed: NamespacePurge }>('DELETE', `/admin/v1/namespaces/${encodeURIComponent(name)}`)
            ).data.removed;
          } catch (error) {
            if ((error as { status?: number }).status === 404) return undefined;
            throw error;
          }
        },
        (store) => store.purgeNamespace(name),
      );
      if (!purge) throw new Error(`The namespace "${name}" does not exist.`);
      if (globals(command).json) printJson({ deleted: name, removed: purge });
      else
        process.stdout.write(
          `ok: deleted namespace ${name} (${purge.actions} action(s), ${purge.activations} activation(s), ${purge.triggers} trigger(s), ${purge.rules} rule(s))\n`,
        );
    });
}
