// The OpenWhisk resources suite again, with every server it starts on PostgreSQL: sequences'
// components, rules and empty actions stored and read back there as on SQLite.
import { after } from 'node:test';
import { stopSharedPostgres } from './helpers/postgres.js';
import { useDatabaseForTestServers } from './helpers/server.js';

useDatabaseForTestServers('postgres');
after(() => stopSharedPostgres());
await import('./openwhisk-resources.test.js');
