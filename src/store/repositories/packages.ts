import type { Kysely, Selectable } from 'kysely';
import { conflict } from '../../core/errors.js';
import { nextVersion } from '../../core/types.js';
import type { StoreDatabase } from '../database.js';
import type { ListPage, PackageRecord } from '../records.js';
import type { Database, PackagesTable } from '../schema.js';

/** OpenWhisk's packages: named groups of actions with shared parameters, and bindings of them. */
export class PackageRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  /** Stores a package or binding. A package that holds actions cannot become a binding. */
  put(input: Omit<PackageRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<PackageRecord> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `package:${input.namespace}/${input.name}`);
      const row = await trx
        .selectFrom('packages')
        .selectAll()
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      const existing = row ? fromPackageRow(row) : undefined;
      if (existing && !options.overwrite)
        throw conflict(`The package "${input.name}" already exists; pass overwrite=true to update it.`);
      if (existing && input.binding && (await actionsIn(trx, input.namespace, input.name)) > 0)
        throw conflict(`The package "${input.name}" holds actions: it cannot become a binding.`);
      const stored: PackageRecord = { ...input, version: nextVersion(existing?.version), updated: Date.now() };
      if (existing) {
        await trx
          .updateTable('packages')
          .set(toPackageRow(stored))
          .where('namespace', '=', input.namespace)
          .where('name', '=', input.name)
          .execute();
      } else {
        await trx.insertInto('packages').values(toPackageRow(stored)).execute();
      }
      return stored;
    });
  }

  async get(namespace: string, name: string): Promise<PackageRecord | undefined> {
    const row = await this.db
      .selectFrom('packages')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? fromPackageRow(row) : undefined;
  }

  /** A namespace's packages and bindings by name; only the published ones when asked. */
  async list(namespace: string, page: ListPage, options: { publishedOnly?: boolean } = {}): Promise<PackageRecord[]> {
    let query = this.db.selectFrom('packages').selectAll().where('namespace', '=', namespace);
    if (options.publishedOnly) query = query.where('publish', '=', 1);
    const rows = await query.orderBy('name').offset(page.skip).limit(page.limit).execute();
    return rows.map(fromPackageRow);
  }

  /** The bindings of a package, in any namespace. */
  async bindingsOf(namespace: string, name: string): Promise<PackageRecord[]> {
    const rows = await this.db
      .selectFrom('packages')
      .selectAll()
      .where('binding_namespace', '=', namespace)
      .where('binding_name', '=', name)
      .orderBy('namespace')
      .orderBy('name')
      .execute();
    return rows.map(fromPackageRow);
  }

  /** Deletes a package that holds no actions (a conflict otherwise); undefined when there was none. */
  delete(namespace: string, name: string): Promise<PackageRecord | undefined> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `package:${namespace}/${name}`);
      const row = await trx
        .selectFrom('packages')
        .selectAll()
        .where('namespace', '=', namespace)
        .where('name', '=', name)
        .executeTakeFirst();
      if (!row) return undefined;
      const existing = fromPackageRow(row);
      const held = await actionsIn(trx, namespace, name);
      if (held > 0) throw conflict(`The package "${name}" is not empty: it holds ${held} action(s). Delete them first.`);
      await trx.deleteFrom('packages').where('namespace', '=', namespace).where('name', '=', name).execute();
      return existing;
    });
  }
}

/**
 * How many actions a package holds: stored as `package/action`, they sort between `package/` and
 * `package0` (the character after '/'), byte order on both databases.
 */
async function actionsIn(db: Kysely<Database>, namespace: string, name: string): Promise<number> {
  const row = await db
    .selectFrom('actions')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('count'))
    .where('namespace', '=', namespace)
    .where('name', '>', `${name}/`)
    .where('name', '<', `${name}0`)
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

function toPackageRow(record: PackageRecord): PackagesTable {
  return {
    namespace: record.namespace,
    name: record.name,
    binding_namespace: record.binding?.namespace ?? null,
    binding_name: record.binding?.name ?? null,
    parameters: JSON.stringify(record.parameters),
    annotations: JSON.stringify(record.annotations),
    publish: record.publish ? 1 : 0,
    version: record.version,
    updated: record.updated,
  };
}

function fromPackageRow(row: Selectable<PackagesTable>): PackageRecord {
  return {
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    ...(row.binding_namespace !== null && row.binding_name !== null
      ? { binding: { namespace: row.binding_namespace, name: row.binding_name } }
      : {}),
    parameters: JSON.parse(row.parameters),
    annotations: JSON.parse(row.annotations),
    publish: row.publish === 1,
    updated: Number(row.updated),
  };
}
