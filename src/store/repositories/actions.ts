import type { Kysely, Selectable } from 'kysely';
import { conflict } from '../../core/errors.js';
import type { Isolation, Kind } from '../../core/kinds.js';
import type { Limits } from '../../core/limits.js';
import { type ActionVersion, compareVersions, type KeyValue, nextVersion, SEQUENCE_EXEC } from '../../core/types.js';
import type { StoreDatabase } from '../database.js';
import { newRevision } from '../migrations.js';
import type { ListPage } from '../records.js';
import type { ActionVersionsTable, Database } from '../schema.js';

/** Actions and their immutable versions, numbered by a counter that outlives the action. */
export class ActionRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  /** Stores a new immutable version of an action. Without overwrite, an existing action is a conflict. */
  put(input: Omit<ActionVersion, 'version' | 'revision' | 'updated'>, options: { overwrite: boolean }): Promise<ActionVersion> {
    return this.db.transaction().execute(async (trx) => {
      // Concurrent updates of one action take turns here, so each gets the next number.
      await this.database.lock(trx, `action:${input.namespace}/${input.name}`);
      const existing = await trx
        .selectFrom('actions')
        .select('name')
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      if (existing && !options.overwrite) {
        throw conflict(`The action "${input.name}" already exists; pass overwrite=true to update it.`);
      }
      // Versions of a deleted action stay gone; a re-created action continues after the highest
      // version ever given to its name, so that old activation records keep pointing at what ran.
      const counter = await trx
        .selectFrom('version_counters')
        .select('last_version')
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      const now = Date.now();
      const stored: ActionVersion = {
        ...input,
        version: nextVersion(counter?.last_version),
        revision: newRevision(),
        updated: now,
      };
      await trx
        .insertInto('version_counters')
        .values({ namespace: input.namespace, name: input.name, last_version: stored.version })
        .onConflict((oc) => oc.columns(['namespace', 'name']).doUpdateSet({ last_version: stored.version }))
        .execute();
      await trx.insertInto('action_versions').values(toVersionRow(stored)).execute();
      if (existing) {
        await trx
          .updateTable('actions')
          .set({ latest_version: stored.version, updated: now })
          .where('namespace', '=', input.namespace)
          .where('name', '=', input.name)
          .execute();
      } else {
        await trx
          .insertInto('actions')
          .values({ namespace: input.namespace, name: input.name, latest_version: stored.version, created: now, updated: now })
          .execute();
      }
      return stored;
    });
  }

  /** The latest version of an action, or a named one. */
  get(namespace: string, name: string, version?: string): Promise<ActionVersion | undefined> {
    return findAction(this.db, namespace, name, version);
  }

  /** The latest versions of a namespace's actions, the most recently updated first. */
  async list(namespace: string, page: ListPage): Promise<ActionVersion[]> {
    const rows = await latestVersions(this.db)
      .where('v.namespace', '=', namespace)
      .orderBy('a.updated', 'desc')
      .orderBy('a.name')
      .limit(page.limit)
      .offset(page.skip)
      .execute();
    return rows.map(fromVersionRow);
  }

  /** The latest version of each action a package holds (stored as `package/action`), by name. */
  async inPackage(namespace: string, pkg: string): Promise<ActionVersion[]> {
    const rows = await latestVersions(this.db)
      .where('v.namespace', '=', namespace)
      // Between `package/` and `package0` (the character after '/'): byte order on both databases.
      .where('v.name', '>', `${pkg}/`)
      .where('v.name', '<', `${pkg}0`)
      .orderBy('v.name')
      .execute();
    return rows.map(fromVersionRow);
  }

  /** Every stored version of an action, newest first. */
  async versions(namespace: string, name: string): Promise<ActionVersion[]> {
    const rows = await this.db
      .selectFrom('action_versions')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .execute();
    return rows.map(fromVersionRow).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** Deletes an action, its versions and its aliases; returns the latest version that was deleted. */
  delete(namespace: string, name: string): Promise<ActionVersion | undefined> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `action:${namespace}/${name}`);
      const latest = await findAction(trx, namespace, name);
      if (!latest) return undefined;
      await trx.deleteFrom('actions').where('namespace', '=', namespace).where('name', '=', name).execute();
      await trx.deleteFrom('action_versions').where('namespace', '=', namespace).where('name', '=', name).execute();
      // Its aliases name versions that are gone now.
      await trx.deleteFrom('aliases').where('namespace', '=', namespace).where('function', '=', name).execute();
      return latest;
    });
  }

  /** The names of a namespace's actions. */
  async names(namespace: string): Promise<string[]> {
    const rows = await this.db.selectFrom('actions').select('name').where('namespace', '=', namespace).orderBy('name').execute();
    return rows.map((r) => r.name);
  }

  /**
   * Sets how many instances a function keeps provisioned (null: its minInstances annotation
   * decides), a setting of the function that stores no version. False when there is no such action.
   */
  async setProvisioned(namespace: string, name: string, count: number | null): Promise<boolean> {
    const result = await this.db
      .updateTable('actions')
      .set({ provisioned_instances: count })
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** The functions whose provisioned instances were set by scaling, with the count. */
  async provisioned(): Promise<{ namespace: string; name: string; count: number }[]> {
    const rows = await this.db
      .selectFrom('actions')
      .select(['namespace', 'name', 'provisioned_instances'])
      .where('provisioned_instances', 'is not', null)
      .execute();
    return rows.map((row) => ({ namespace: row.namespace, name: row.name, count: Number(row.provisioned_instances) }));
  }

  /** The latest version of every action, in every namespace. */
  async all(): Promise<ActionVersion[]> {
    const rows = await latestVersions(this.db).execute();
    return rows.map(fromVersionRow);
  }
}

/** Each action's latest version (the version row joined with its action's `latest_version`). */
function latestVersions(db: Kysely<Database>) {
  return db
    .selectFrom('action_versions as v')
    .innerJoin('actions as a', (join) =>
      join.onRef('a.namespace', '=', 'v.namespace').onRef('a.name', '=', 'v.name').onRef('a.latest_version', '=', 'v.version'),
    )
    .selectAll('v');
}

async function findAction(
  db: Kysely<Database>,
  namespace: string,
  name: string,
  version?: string,
): Promise<ActionVersion | undefined> {
  let query = db
    .selectFrom('action_versions as v')
    .innerJoin('actions as a', (join) => join.onRef('a.namespace', '=', 'v.namespace').onRef('a.name', '=', 'v.name'))
    .selectAll('v')
    .where('v.namespace', '=', namespace)
    .where('v.name', '=', name);
  query = version ? query.where('v.version', '=', version) : query.whereRef('v.version', '=', 'a.latest_version');
  const row = await query.executeTakeFirst();
  return row ? fromVersionRow(row) : undefined;
}

function toVersionRow(v: ActionVersion): ActionVersionsTable {
  return {
    namespace: v.namespace,
    name: v.name,
    version: v.version,
    revision: v.revision,
    // A sequence keeps its components where code would be, as JSON: no column is added for it.
    kind: v.sequence ? SEQUENCE_KIND : v.exec.kind,
    code: v.sequence ? JSON.stringify(v.sequence) : v.exec.code,
    binary: v.exec.binary ? 1 : 0,
    main: v.exec.main ?? null,
    limits: JSON.stringify(v.limits),
    parameters: JSON.stringify(v.parameters),
    annotations: JSON.stringify(v.annotations),
    isolation: v.isolation,
    created: v.updated,
  };
}

const SEQUENCE_KIND = 'sequence';

function fromVersionRow(row: Selectable<ActionVersionsTable>): ActionVersion {
  const sequence = row.kind === SEQUENCE_KIND ? (JSON.parse(row.code) as string[]) : undefined;
  return {
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    revision: row.revision,
    exec: sequence
      ? SEQUENCE_EXEC
      : {
          kind: row.kind as Kind,
          code: row.code,
          binary: row.binary === 1,
          ...(row.main ? { main: row.main } : {}),
        },
    ...(sequence ? { sequence } : {}),
    limits: JSON.parse(row.limits) as Limits,
    parameters: JSON.parse(row.parameters) as KeyValue[],
    annotations: JSON.parse(row.annotations) as KeyValue[],
    isolation: row.isolation as Isolation,
    updated: Number(row.created),
  };
}
