import { randomUUID } from 'node:crypto';
import { type Kysely, type Migration, type MigrationProvider, type RawBuilder, sql } from 'kysely';
import { compareVersions } from '../core/types.js';
import type { DialectName } from './database.js';

/**
 * Migrations are code, kept in order; names sort in the order they apply. Each one is written
 * with Kysely's schema builder and runs on SQLite and PostgreSQL alike; where the two differ
 * (text collation, the activation sequence) it asks which one it is on.
 */
function migrations(dialect: DialectName): Record<string, Migration> {
  // PostgreSQL compares text by the database's locale unless told otherwise: byte order, as in
  // SQLite, keeps listings and the retention's walk over namespaces the same on both.
  const text: 'text' | RawBuilder<unknown> = dialect === 'postgres' ? sql`text collate "C"` : 'text';
  return {
    '0001_initial': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('namespaces')
          .addColumn('name', text, (c) => c.primaryKey())
          .addColumn('uuid', text, (c) => c.notNull().unique())
          .addColumn('key', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('actions')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('latest_version', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .addColumn('updated', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('actions_pk', ['namespace', 'name'])
          .execute();
        await db.schema
          .createTable('action_versions')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('version', text, (c) => c.notNull())
          .addColumn('kind', text, (c) => c.notNull())
          .addColumn('code', text, (c) => c.notNull())
          .addColumn('binary', 'integer', (c) => c.notNull())
          .addColumn('main', text)
          .addColumn('limits', text, (c) => c.notNull())
          .addColumn('parameters', text, (c) => c.notNull())
          .addColumn('annotations', text, (c) => c.notNull())
          .addColumn('isolation', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('action_versions_pk', ['namespace', 'name', 'version'])
          .execute();
        await db.schema
          .createTable('activations')
          // The row id in SQLite (an alias of rowid, no AUTOINCREMENT bookkeeping), an identity
          // column in PostgreSQL; it orders activations that started in the same millisecond.
          .addColumn('seq', dialect === 'postgres' ? 'bigint' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey().generatedByDefaultAsIdentity() : c.primaryKey(),
          )
          .addColumn('activation_id', text, (c) => c.notNull().unique())
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('version', text, (c) => c.notNull())
          .addColumn('subject', text, (c) => c.notNull())
          .addColumn('state', text, (c) => c.notNull())
          .addColumn('accepted', 'bigint', (c) => c.notNull())
          .addColumn('start', 'bigint', (c) => c.notNull())
          .addColumn('end', 'bigint', (c) => c.notNull())
          .addColumn('duration', 'bigint', (c) => c.notNull())
          .addColumn('status', text, (c) => c.notNull())
          .addColumn('success', 'integer', (c) => c.notNull())
          .addColumn('result', text, (c) => c.notNull())
          .addColumn('logs', text, (c) => c.notNull())
          .addColumn('annotations', text, (c) => c.notNull())
          .addColumn('params', text)
          .execute();
        await db.schema.createIndex('activations_by_namespace').on('activations').columns(['namespace', 'start']).execute();
        await db.schema.createIndex('activations_by_name').on('activations').columns(['namespace', 'name', 'start']).execute();
        // Partial: only queued and running activations are in it, so finished ones cost nothing here.
        await db.schema
          .createIndex('activations_pending')
          .on('activations')
          .columns(['state', 'accepted'])
          .where(sql.ref('state'), '<>', 'done')
          .execute();
      },
    },
    '0002_retries_triggers_rules': {
      async up(db: Kysely<unknown>) {
        // Asynchronous invocations are retried: how many times so far, and not before when.
        await db.schema
          .alterTable('activations')
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema
          .alterTable('activations')
          .addColumn('not_before', 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema
          .createTable('triggers')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('parameters', text, (c) => c.notNull())
          .addColumn('annotations', text, (c) => c.notNull())
          .addColumn('version', text, (c) => c.notNull())
          .addColumn('updated', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('triggers_pk', ['namespace', 'name'])
          .execute();
        await db.schema
          .createTable('rules')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('trigger', text, (c) => c.notNull())
          .addColumn('action', text, (c) => c.notNull())
          .addColumn('status', text, (c) => c.notNull())
          .addColumn('version', text, (c) => c.notNull())
          .addColumn('updated', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('rules_pk', ['namespace', 'name'])
          .execute();
        await db.schema.createIndex('rules_by_trigger').on('rules').columns(['namespace', 'trigger']).execute();
      },
    },
    '0003_revisions_and_version_counters': {
      async up(db: Kysely<unknown>) {
        // Every stored version gets a random revision: version numbers alone repeated after an
        // action was deleted and created again, and instance pools keyed by them served old code.
        await db.schema
          .alterTable('action_versions')
          .addColumn('revision', text, (c) => c.notNull().defaultTo(''))
          .execute();
        const versions = db as unknown as Kysely<{
          action_versions: { namespace: string; name: string; version: string; revision: string };
        }>;
        const rows = await versions.selectFrom('action_versions').select(['namespace', 'name', 'version']).execute();
        for (const row of rows) {
          await versions
            .updateTable('action_versions')
            .set({ revision: newRevision() })
            .where('namespace', '=', row.namespace)
            .where('name', '=', row.name)
            .where('version', '=', row.version)
            .execute();
        }
        // The highest version ever given to an action name: kept when the action is deleted, so a
        // re-created action continues after it and old activation records stay unambiguous.
        await db.schema
          .createTable('version_counters')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('last_version', text, (c) => c.notNull())
          .addPrimaryKeyConstraint('version_counters_pk', ['namespace', 'name'])
          .execute();
        const highest = new Map<string, { namespace: string; name: string; last_version: string }>();
        for (const row of rows) {
          const key = `${row.namespace}/${row.name}`;
          const seen = highest.get(key);
          if (!seen || compareVersions(row.version, seen.last_version) > 0)
            highest.set(key, { namespace: row.namespace, name: row.name, last_version: row.version });
        }
        const counters = db as unknown as Kysely<{ version_counters: { namespace: string; name: string; last_version: string } }>;
        for (const counter of highest.values()) await counters.insertInto('version_counters').values(counter).execute();
      },
    },
    '0004_packages': {
      async up(db: Kysely<unknown>) {
        // OpenWhisk's packages and bindings. Actions in a package are stored as `package/action`.
        await db.schema
          .createTable('packages')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('binding_namespace', text)
          .addColumn('binding_name', text)
          .addColumn('parameters', text, (c) => c.notNull())
          .addColumn('annotations', text, (c) => c.notNull())
          .addColumn('publish', 'integer', (c) => c.notNull())
          .addColumn('version', text, (c) => c.notNull())
          .addColumn('updated', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('packages_pk', ['namespace', 'name'])
          .execute();
        await db.schema
          .createIndex('packages_by_binding')
          .on('packages')
          .columns(['binding_namespace', 'binding_name'])
          .execute();
      },
    },
    '0005_lambda_aliases': {
      async up(db: Kysely<unknown>) {
        // A named pointer at one version of a function (or at its latest), optionally routing a
        // share of the invocations to a second version: Lambda's aliases.
        await db.schema
          .createTable('aliases')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('function', text, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('function_version', text, (c) => c.notNull())
          // JSON: { "<version>": weight } for the additional version, {} when there is none.
          .addColumn('routing', text, (c) => c.notNull())
          .addColumn('description', text, (c) => c.notNull())
          .addColumn('revision_id', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .addColumn('updated', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('aliases_pk', ['namespace', 'function', 'name'])
          .execute();
      },
    },
    '0006_api_routes': {
      async up(db: Kysely<unknown>) {
        // OpenWhisk's API gateway routes: one row per operation (verb) of a path under a base path.
        await db.schema
          .createTable('api_routes')
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('base_path', text, (c) => c.notNull())
          .addColumn('rel_path', text, (c) => c.notNull())
          .addColumn('verb', text, (c) => c.notNull())
          .addColumn('action', text, (c) => c.notNull())
          .addColumn('response_type', text, (c) => c.notNull())
          .addColumn('api_name', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('api_routes_pk', ['namespace', 'base_path', 'rel_path', 'verb'])
          .execute();
      },
    },
    '0007_provisioned_instances': {
      async up(db: Kysely<unknown>) {
        // How many instances a function keeps provisioned, set by scaling it (OpenFaaS's
        // scale-function): a setting of the function, not of a version, so scaling stores no new
        // version and retires no instances. Null: its minInstances annotation decides.
        await db.schema.alterTable('actions').addColumn('provisioned_instances', 'integer').execute();
      },
    },
    '0008_ui_sessions': {
      async up(db: Kysely<unknown>) {
        // The dashboard's sign-ins: the session token's hash (never the token), its namespace and
        // CSRF token, until it expires or is signed out. In the database, so that any server of a
        // cluster knows a session another one opened.
        await db.schema
          .createTable('ui_sessions')
          .addColumn('token_hash', text, (c) => c.primaryKey())
          .addColumn('namespace', text, (c) => c.notNull())
          .addColumn('csrf_token', text, (c) => c.notNull())
          .addColumn('created', 'bigint', (c) => c.notNull())
          .addColumn('expires', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('ui_sessions_by_expiry').on('ui_sessions').column('expires').execute();
      },
    },
  };
}

/** A new action revision: 64 random bits as hex. */
export function newRevision(): string {
  return randomUUID().replaceAll('-', '').slice(0, 16);
}

export function migrationProvider(dialect: DialectName): MigrationProvider {
  return {
    async getMigrations() {
      return migrations(dialect);
    },
  };
}
