import { sharedPostgres } from './postgres.js';
import { ServerProcess } from './server-process.js';

export type { RequestOptions, Response } from './server-process.js';
export { annotation, postDeclaredBody, waitFor } from './server-process.js';

export type TestDatabase = 'sqlite' | 'postgres';

export interface TestServerOptions {
  dataDir?: string;
  env?: Record<string, string>;
  args?: string[];
  /**
   * `postgres`: `isola serve --database` on a new database of this test process's private
   * PostgreSQL (test/helpers/postgres.ts; the file stops it with stopSharedPostgres). Default:
   * what useDatabaseForTestServers set, else SQLite in the data dir.
   */
  database?: TestDatabase;
}

/** A real `isola serve` in a child process (see ServerProcess). */
export type TestServer = ServerProcess;

let defaultDatabase: TestDatabase = 'sqlite';
const databases = new WeakMap<ServerProcess, string>();

/** Every server started after this without a `database` option uses this one: how a whole suite runs again on PostgreSQL. */
export function useDatabaseForTestServers(database: TestDatabase): void {
  defaultDatabase = database;
}

/** The PostgreSQL URL a server runs on; undefined for one on SQLite. */
export function databaseOf(server: ServerProcess): string | undefined {
  return databases.get(server);
}

export const TestServer = {
  async start(options: TestServerOptions = {}): Promise<TestServer> {
    const { database = defaultDatabase, ...rest } = options;
    const url = database === 'postgres' ? await (await sharedPostgres()).createDatabase('server') : undefined;
    const server = await ServerProcess.start({ ...rest, args: [...(rest.args ?? []), ...(url ? ['--database', url] : [])] });
    if (url) databases.set(server, url);
    return server;
  },
};
