import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { conflict, IsolaError, notFound } from '../../core/errors.js';
import type { StoreDatabase } from '../database.js';
import { type AliasRecord, type AliasTarget, LATEST_VERSION, type ListPage } from '../records.js';
import type { AliasesTable, Database } from '../schema.js';

/**
 * Aliases of functions. Each change runs under the lock of the function it names (the one its
 * versions are stored under), so that an alias never points at a version that a concurrent
 * delete of the function removed: the delete takes the function's aliases with it.
 */
export class AliasRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  /** Stores a new alias; 409 when the function has one of that name, 404 when a version is not stored. */
  create(namespace: string, fn: string, name: string, target: AliasTarget): Promise<AliasRecord> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `action:${namespace}/${fn}`);
      await assertVersions(trx, namespace, fn, target);
      const now = Date.now();
      const record: AliasRecord = {
        namespace,
        function: fn,
        name,
        ...target,
        revisionId: randomUUID(),
        created: now,
        updated: now,
      };
      const inserted = await trx
        .insertInto('aliases')
        .values(toRow(record))
        .onConflict((oc) => oc.columns(['namespace', 'function', 'name']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0)
        throw conflict(`The function "${fn}" already has an alias "${name}".`);
      return record;
    });
  }

  async get(namespace: string, fn: string, name: string): Promise<AliasRecord | undefined> {
    const row = await aliasRow(this.db, namespace, fn, name);
    return row ? fromRow(row) : undefined;
  }

  /** A function's aliases by name, a page at a time; with `functionVersion`, those that route to it. */
  async list(namespace: string, fn: string, page: ListPage & { functionVersion?: string }): Promise<AliasRecord[]> {
    const rows = await this.db
      .selectFrom('aliases')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('function', '=', fn)
      .orderBy('name')
      .execute();
    const version = page.functionVersion;
    return rows
      .map(fromRow)
      .filter((a) => version === undefined || a.functionVersion === version || Object.hasOwn(a.routing, version))
      .slice(page.skip, page.skip + page.limit);
  }

  /**
   * Changes an alias to what `change` makes of it (which may refuse by throwing). 404 when there
   * is no such alias or a version is not stored, 412 when `revisionId` is given and is not the
   * alias's current one. Every change gets a new revision id.
   */
  update(
    namespace: string,
    fn: string,
    name: string,
    revisionId: string | undefined,
    change: (current: AliasRecord) => AliasTarget,
  ): Promise<AliasRecord> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `action:${namespace}/${fn}`);
      const row = await aliasRow(trx, namespace, fn, name);
      if (!row) throw notFound(`The function "${fn}" has no alias "${name}".`);
      const current = fromRow(row);
      if (revisionId !== undefined && revisionId !== current.revisionId)
        throw new IsolaError(412, 'The RevisionId provided does not match the latest RevisionId for the alias.');
      const target = change(current);
      await assertVersions(trx, namespace, fn, target);
      const updated: AliasRecord = { ...current, ...target, revisionId: randomUUID(), updated: Date.now() };
      await trx
        .updateTable('aliases')
        .set({
          function_version: updated.functionVersion,
          routing: JSON.stringify(updated.routing),
          description: updated.description,
          revision_id: updated.revisionId,
          updated: updated.updated,
        })
        .where('namespace', '=', namespace)
        .where('function', '=', fn)
        .where('name', '=', name)
        .execute();
      return updated;
    });
  }

  async delete(namespace: string, fn: string, name: string): Promise<AliasRecord | undefined> {
    const row = await this.db
      .deleteFrom('aliases')
      .where('namespace', '=', namespace)
      .where('function', '=', fn)
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }
}

/** 404 unless the function exists and stores every version the target names ($LATEST always is). */
async function assertVersions(trx: Kysely<Database>, namespace: string, fn: string, target: AliasTarget): Promise<void> {
  const exists = await trx
    .selectFrom('actions')
    .select('name')
    .where('namespace', '=', namespace)
    .where('name', '=', fn)
    .executeTakeFirst();
  if (!exists) throw notFound(`The function "${fn}" does not exist in namespace "${namespace}".`);
  const versions = [target.functionVersion, ...Object.keys(target.routing)].filter((v) => v !== LATEST_VERSION);
  if (versions.length === 0) return;
  const stored = await trx
    .selectFrom('action_versions')
    .select('version')
    .where('namespace', '=', namespace)
    .where('name', '=', fn)
    .where('version', 'in', versions)
    .execute();
  const found = new Set(stored.map((r) => r.version));
  const missing = versions.find((v) => !found.has(v));
  if (missing !== undefined) throw notFound(`The function "${fn}" has no version ${missing}.`);
}

function toRow(record: AliasRecord): AliasesTable {
  return {
    namespace: record.namespace,
    function: record.function,
    name: record.name,
    function_version: record.functionVersion,
    routing: JSON.stringify(record.routing),
    description: record.description,
    revision_id: record.revisionId,
    created: record.created,
    updated: record.updated,
  };
}

function aliasRow(db: Kysely<Database>, namespace: string, fn: string, name: string) {
  return db
    .selectFrom('aliases')
    .selectAll()
    .where('namespace', '=', namespace)
    .where('function', '=', fn)
    .where('name', '=', name)
    .executeTakeFirst();
}

function fromRow(row: Selectable<AliasesTable>): AliasRecord {
  return {
    namespace: row.namespace,
    function: row.function,
    name: row.name,
    functionVersion: row.function_version,
    routing: JSON.parse(row.routing) as Record<string, number>,
    description: row.description,
    revisionId: row.revision_id,
    created: Number(row.created),
    updated: Number(row.updated),
  };
}
