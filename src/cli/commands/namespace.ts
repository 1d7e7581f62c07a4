import { resolve } from 'node:path';
import type { Command } from 'commander';
import { newCredentials } from '../../core/ids.js';
import { assertEntityName } from '../../core/names.js';
import { ensureDataDir, formatAuth } from '../../platform/credentials.js';
import type { Store } from '../../store/store.js';
import { formatTime, printJson, printTable } from '../output.js';
import { globals } from './common.js';

/** Administration of namespaces, like `wskadmin user`: works on the store in the data dir directly. */
export function registerNamespaceCommands(program: Command): void {
  const namespace = program.command('namespace').description("create, list and delete namespaces (on this host's data dir)");
  const withStore = async <T>(command: Command, fn: (store: Store) => Promise<T>): Promise<T> => {
    const { dataDir } = globals(command);
    const dir = resolve(dataDir ?? './.isola');
    ensureDataDir(dir);
    const { Store } = await import('../../store/store.js');
    const store = await Store.open({ dataDir: dir });
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  };

  namespace
    .command('create <name>')
    .description('create a namespace and print its credentials (uuid:key)')
    .action(async (name: string, _options: unknown, command: Command) => {
      assertEntityName('namespace', name);
      const credentials = newCredentials();
      await withStore(command, (store) => store.createNamespace(name, credentials.uuid, credentials.key));
      if (globals(command).json) printJson({ namespace: name, auth: formatAuth(credentials) });
      else process.stdout.write(`${formatAuth(credentials)}\n`);
    });

  namespace
    .command('list')
    .description('list namespaces')
    .action(async (_options: unknown, command: Command) => {
      const rows = await withStore(command, (store) => store.listNamespaces());
      if (globals(command).json) printJson(rows);
      else
        printTable(
          ['namespace', 'uuid', 'created'],
          rows.map((r) => [r.name, r.uuid, formatTime(Number(r.created))]),
        );
    });

  namespace
    .command('delete <name>')
    .description("delete a namespace's credentials (its actions and activations stay)")
    .action(async (name: string, _options: unknown, command: Command) => {
      const deleted = await withStore(command, (store) => store.deleteNamespace(name));
      if (!deleted) throw new Error(`The namespace "${name}" does not exist.`);
      if (globals(command).json) printJson({ deleted: name });
      else process.stdout.write(`ok: deleted namespace ${name}\n`);
    });
}
