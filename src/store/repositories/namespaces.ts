import { createHash, timingSafeEqual } from 'node:crypto';
import { conflict } from '../../core/errors.js';
import type { StoreDatabase } from '../database.js';
import type { NamespacePurge, NamespaceRow } from '../records.js';

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Namespaces and their credentials; a purge takes everything a namespace holds. */
export class NamespaceRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  async create(name: string, uuid: string, key: string): Promise<NamespaceRow> {
    const row = { name, uuid, key, created: Date.now() };
    // Two creations of one name at once: the one that inserts second is told it exists.
    const inserted = await this.db
      .insertInto('namespaces')
      .values(row)
      .onConflict((oc) => oc.column('name').doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) throw conflict(`The namespace "${name}" already exists.`);
    return { name, uuid, created: row.created };
  }

  /** Replaces a namespace's credentials, creating the namespace if needed. */
  async setCredentials(name: string, uuid: string, key: string): Promise<void> {
    const row = { name, uuid, key, created: Date.now() };
    await this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `namespace:${name}`);
      await trx
        .deleteFrom('namespaces')
        .where((eb) => eb.or([eb('name', '=', name), eb('uuid', '=', uuid)]))
        .execute();
      await trx.insertInto('namespaces').values(row).execute();
    });
  }

  /** The namespace whose credentials these are, or undefined. */
  async authenticate(uuid: string, key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('namespaces').select(['name', 'key']).where('uuid', '=', uuid).executeTakeFirst();
    if (!row) return undefined;
    // Compare digests so that the comparison takes the same time whatever the lengths.
    const expected = Buffer.from(hashKey(row.key), 'hex');
    const given = Buffer.from(hashKey(key), 'hex');
    return timingSafeEqual(expected, given) ? row.name : undefined;
  }

  /** The key of a namespace's credentials, for checking request signatures. */
  async keyOf(uuid: string): Promise<{ namespace: string; key: string } | undefined> {
    const row = await this.db.selectFrom('namespaces').select(['name', 'key']).where('uuid', '=', uuid).executeTakeFirst();
    return row ? { namespace: row.name, key: row.key } : undefined;
  }

  list(): Promise<NamespaceRow[]> {
    return this.db.selectFrom('namespaces').select(['name', 'uuid', 'created']).orderBy('name').execute();
  }

  get(name: string): Promise<NamespaceRow | undefined> {
    return this.db.selectFrom('namespaces').select(['name', 'uuid', 'created']).where('name', '=', name).executeTakeFirst();
  }

  /**
   * Deletes a namespace with everything in it, in one transaction: its credentials, actions,
   * versions, aliases and version counters, activations (queued and running ones too), triggers,
   * rules, packages and API routes. Undefined when there was no such namespace.
   */
  purge(name: string): Promise<NamespacePurge | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const deleted = await trx.deleteFrom('namespaces').where('name', '=', name).executeTakeFirst();
      if (Number(deleted.numDeletedRows) === 0) return undefined;
      const count = (result: { numDeletedRows: bigint }) => Number(result.numDeletedRows);
      const actions = count(await trx.deleteFrom('actions').where('namespace', '=', name).executeTakeFirstOrThrow());
      const versions = count(await trx.deleteFrom('action_versions').where('namespace', '=', name).executeTakeFirstOrThrow());
      await trx.deleteFrom('version_counters').where('namespace', '=', name).execute();
      await trx.deleteFrom('aliases').where('namespace', '=', name).execute();
      const activations = count(await trx.deleteFrom('activations').where('namespace', '=', name).executeTakeFirstOrThrow());
      const triggers = count(await trx.deleteFrom('triggers').where('namespace', '=', name).executeTakeFirstOrThrow());
      const rules = count(await trx.deleteFrom('rules').where('namespace', '=', name).executeTakeFirstOrThrow());
      const packages = count(await trx.deleteFrom('packages').where('namespace', '=', name).executeTakeFirstOrThrow());
      await trx.deleteFrom('api_routes').where('namespace', '=', name).execute();
      return { namespace: name, actions, versions, activations, triggers, rules, packages };
    });
  }
}
