import { createHash, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, type Selectable, SqliteDialect } from 'kysely';
import { conflict } from '../core/errors.js';
import type { Isolation, Kind } from '../core/kinds.js';
import type { Limits } from '../core/limits.js';
import { type ActionVersion, type ActivationRecord, compareVersions, type KeyValue, nextVersion } from '../core/types.js';
import { ActivationWriter } from './activation-writer.js';
import { migrationProvider, newRevision } from './migrations.js';
import type { ActionVersionsTable, ActivationsTable, Database, TriggersTable } from './schema.js';

export interface StoreOptions {
  dataDir: string;
  /** `postgres://...` for cluster mode; the SQLite file in the data dir when absent. */
  databaseUrl?: string;
}

export interface NamespaceRow {
  name: string;
  uuid: string;
  created: number;
}

export interface ListPage {
  limit: number;
  skip: number;
}

export interface ActivationQuery extends ListPage {
  name?: string;
  since?: number;
  upto?: number;
}

export interface QueuedActivation {
  activationId: string;
  namespace: string;
  name: string;
  version: string;
  subject: string;
  accepted: number;
  /** The invocation's parameters; undefined for one that may not be run again (a blocking call). */
  params: Record<string, unknown> | undefined;
  annotations: KeyValue[];
  /** Attempts made so far. */
  attempts: number;
  /** Not to run before this time (a retry's backoff). */
  notBefore: number;
}

export interface TriggerRecord {
  namespace: string;
  name: string;
  version: string;
  parameters: KeyValue[];
  annotations: KeyValue[];
  updated: number;
}

export interface RuleRecord {
  namespace: string;
  name: string;
  version: string;
  trigger: string;
  action: string;
  status: 'active' | 'inactive';
  updated: number;
}

export const SQLITE_FILE = 'isola.db';

/** What deleting a namespace removed. */
export interface NamespacePurge {
  namespace: string;
  actions: number;
  versions: number;
  activations: number;
  triggers: number;
  rules: number;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Persistence for namespaces, action versions and activations behind one Kysely query layer. */
export class Store {
  readonly activationWriter: ActivationWriter;
  /**
   * Namespaces deleted while this store was open, with when: a record of an activation the old
   * tenant started before that (still running when its namespace went) is not written, or it
   * would show up in a new namespace of the same name.
   */
  private readonly deletedNamespaces = new Map<string, number>();

  private constructor(
    readonly db: Kysely<Database>,
    sqlite: SqliteDatabase.Database,
  ) {
    this.activationWriter = new ActivationWriter(sqlite);
  }

  static async open(options: StoreOptions): Promise<Store> {
    if (options.databaseUrl && !options.databaseUrl.startsWith('sqlite:')) {
      throw new Error(
        `Unsupported database URL "${options.databaseUrl.replace(/\/\/[^@]*@/, '//***@')}": this build stores data in SQLite; ` +
          'leave --database unset to use the SQLite file in the data directory.',
      );
    }
    mkdirSync(options.dataDir, { recursive: true });
    const file = options.databaseUrl?.replace(/^sqlite:(\/\/)?/, '') || join(options.dataDir, SQLITE_FILE);
    const sqlite = new SqliteDatabase(file);
    // WAL with synchronous=NORMAL: a committed transaction survives the process being killed
    // (it is in the OS page cache); only a power loss can drop the last few.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
    const { error, results } = await new Migrator({ db, provider: migrationProvider }).migrateToLatest();
    const failed = results?.find((r) => r.status === 'Error');
    if (error || failed) {
      await db.destroy();
      throw new Error(`Database migration ${failed?.migrationName ?? ''} failed: ${String(error)}`);
    }
    return new Store(db, sqlite);
  }

  async close(): Promise<void> {
    await this.activationWriter.flush();
    await this.db.destroy();
  }

  // ---- namespaces -------------------------------------------------------------------------

  async createNamespace(name: string, uuid: string, key: string): Promise<NamespaceRow> {
    const existing = await this.db.selectFrom('namespaces').select('name').where('name', '=', name).executeTakeFirst();
    if (existing) throw conflict(`The namespace "${name}" already exists.`);
    const row = { name, uuid, key, created: Date.now() };
    await this.db.insertInto('namespaces').values(row).execute();
    return { name, uuid, created: row.created };
  }

  /** Replaces a namespace's credentials, creating the namespace if needed. */
  async setNamespaceCredentials(name: string, uuid: string, key: string): Promise<void> {
    const row = { name, uuid, key, created: Date.now() };
    await this.db.transaction().execute(async (trx) => {
      await trx
        .deleteFrom('namespaces')
        .where((eb) => eb.or([eb('name', '=', name), eb('uuid', '=', uuid)]))
        .execute();
      await trx.insertInto('namespaces').values(row).execute();
    });
  }

  /** The namespace whose credentials these are, or undefined. */
  async authenticate(uuid: string, key: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('namespaces').selectAll().where('uuid', '=', uuid).executeTakeFirst();
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

  async listNamespaces(): Promise<NamespaceRow[]> {
    return this.db.selectFrom('namespaces').select(['name', 'uuid', 'created']).orderBy('name').execute();
  }

  async getNamespace(name: string): Promise<NamespaceRow | undefined> {
    return this.db.selectFrom('namespaces').select(['name', 'uuid', 'created']).where('name', '=', name).executeTakeFirst();
  }

  /**
   * Deletes a namespace with everything in it: its credentials, actions, versions and version
   * counters, activations (queued and running ones too), triggers and rules. A namespace created
   * again under the same name starts empty. Undefined when there was no such namespace.
   */
  async purgeNamespace(name: string): Promise<NamespacePurge | undefined> {
    // Marked first: from here records of its activations are dropped, and those already waiting
    // for the group commit are committed now so that the purge below takes them too.
    const previous = this.deletedNamespaces.get(name);
    this.deletedNamespaces.set(name, Date.now());
    await this.activationWriter.flush();
    const purge = await this.db.transaction().execute(async (trx) => {
      const deleted = await trx.deleteFrom('namespaces').where('name', '=', name).executeTakeFirst();
      if (Number(deleted.numDeletedRows) === 0) return undefined;
      const count = (result: { numDeletedRows: bigint }) => Number(result.numDeletedRows);
      const actions = count(await trx.deleteFrom('actions').where('namespace', '=', name).executeTakeFirstOrThrow());
      const versions = count(await trx.deleteFrom('action_versions').where('namespace', '=', name).executeTakeFirstOrThrow());
      await trx.deleteFrom('version_counters').where('namespace', '=', name).execute();
      const activations = count(await trx.deleteFrom('activations').where('namespace', '=', name).executeTakeFirstOrThrow());
      const triggers = count(await trx.deleteFrom('triggers').where('namespace', '=', name).executeTakeFirstOrThrow());
      const rules = count(await trx.deleteFrom('rules').where('namespace', '=', name).executeTakeFirstOrThrow());
      return { namespace: name, actions, versions, activations, triggers, rules };
    });
    if (!purge) {
      if (previous === undefined) this.deletedNamespaces.delete(name);
      else this.deletedNamespaces.set(name, previous);
    }
    return purge;
  }

  /** Whether an activation accepted at `accepted` belongs to a namespace deleted since. */
  private fromDeletedNamespace(namespace: string, accepted: number): boolean {
    const deleted = this.deletedNamespaces.get(namespace);
    return deleted !== undefined && accepted <= deleted;
  }

  /** The names of a namespace's actions. */
  async actionNames(namespace: string): Promise<string[]> {
    const rows = await this.db.selectFrom('actions').select('name').where('namespace', '=', namespace).execute();
    return rows.map((r) => r.name);
  }

  // ---- actions ----------------------------------------------------------------------------

  /** Stores a new immutable version of an action. Without overwrite, an existing action is a conflict. */
  async putAction(
    input: Omit<ActionVersion, 'version' | 'revision' | 'updated'>,
    options: { overwrite: boolean },
  ): Promise<ActionVersion> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('actions')
        .selectAll()
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
  getAction(namespace: string, name: string, version?: string): Promise<ActionVersion | undefined> {
    return findAction(this.db, namespace, name, version);
  }

  async listActions(namespace: string, page: ListPage): Promise<ActionVersion[]> {
    const rows = await this.db
      .selectFrom('action_versions as v')
      .innerJoin('actions as a', (join) =>
        join.onRef('a.namespace', '=', 'v.namespace').onRef('a.name', '=', 'v.name').onRef('a.latest_version', '=', 'v.version'),
      )
      .selectAll('v')
      .where('v.namespace', '=', namespace)
      .orderBy('a.updated', 'desc')
      .limit(page.limit)
      .offset(page.skip)
      .execute();
    return rows.map(fromVersionRow);
  }

  async listVersions(namespace: string, name: string): Promise<ActionVersion[]> {
    const rows = await this.db
      .selectFrom('action_versions')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .execute();
    return rows.map(fromVersionRow).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** Deletes an action and its versions; returns the latest version that was deleted. */
  async deleteAction(namespace: string, name: string): Promise<ActionVersion | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const latest = await findAction(trx, namespace, name);
      if (!latest) return undefined;
      await trx.deleteFrom('actions').where('namespace', '=', namespace).where('name', '=', name).execute();
      await trx.deleteFrom('action_versions').where('namespace', '=', namespace).where('name', '=', name).execute();
      return latest;
    });
  }

  // ---- activations ------------------------------------------------------------------------

  /**
   * Records an accepted invocation before the caller is told it was accepted: `queued` to run
   * later, or `running` for one already under way. A record that already exists wins.
   */
  async enqueueActivation(
    queued: Omit<QueuedActivation, 'attempts' | 'notBefore'>,
    state: 'queued' | 'running' = 'queued',
  ): Promise<void> {
    if (this.fromDeletedNamespace(queued.namespace, queued.accepted)) return;
    await this.db
      .insertInto('activations')
      .values({
        activation_id: queued.activationId,
        namespace: queued.namespace,
        name: queued.name,
        version: queued.version,
        subject: queued.subject,
        state,
        accepted: queued.accepted,
        start: queued.accepted,
        end: 0,
        duration: 0,
        status: '',
        success: 0,
        result: 'null',
        logs: '[]',
        annotations: JSON.stringify(queued.annotations),
        params: queued.params === undefined ? null : JSON.stringify(queued.params),
      })
      .onConflict((oc) => oc.column('activation_id').doNothing())
      .execute();
  }

  /** Puts an activation back in the queue for another attempt, not before `notBefore`. */
  async requeueActivation(activationId: string, attempts: number, notBefore: number): Promise<void> {
    await this.db
      .updateTable('activations')
      .set({ state: 'queued', attempts, not_before: notBefore })
      .where('activation_id', '=', activationId)
      .execute();
  }

  /** Activations of an action accepted and not finished yet. */
  async countPending(namespace: string, name: string): Promise<number> {
    const row = await this.db
      .selectFrom('activations')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('state', '<>', 'done')
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async markActivationRunning(activationId: string): Promise<void> {
    await this.db
      .updateTable('activations')
      .set({ state: 'running' })
      .where('activation_id', '=', activationId)
      .where('state', '=', 'queued')
      .execute();
  }

  /** Stores a finished activation; resolves once it is committed. Writes are grouped per tick. */
  completeActivation(record: ActivationRecord, accepted: number, attempts = 1): Promise<void> {
    if (this.fromDeletedNamespace(record.namespace, accepted)) return Promise.resolve();
    return this.activationWriter.write(toActivationRow(record, accepted, attempts));
  }

  async getActivation(namespace: string, activationId: string): Promise<ActivationRecord | undefined> {
    const row = await this.db
      .selectFrom('activations')
      .selectAll()
      .where('activation_id', '=', activationId)
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .executeTakeFirst();
    return row ? fromActivationRow(row) : undefined;
  }

  /** Finished activations, newest first. */
  async listActivations(namespace: string, query: ActivationQuery): Promise<ActivationRecord[]> {
    let q = this.db.selectFrom('activations').selectAll().where('namespace', '=', namespace).where('state', '=', 'done');
    if (query.name) q = q.where('name', '=', query.name);
    if (query.since !== undefined) q = q.where('start', '>=', query.since);
    if (query.upto !== undefined) q = q.where('start', '<=', query.upto);
    const rows = await q.orderBy('start', 'desc').orderBy('seq', 'desc').limit(query.limit).offset(query.skip).execute();
    return rows.map(fromActivationRow);
  }

  // ---- retention --------------------------------------------------------------------------

  /** The namespace after `after` (in name order) that has activations: walks the index, not the table. */
  async nextNamespaceWithActivations(after: string | undefined): Promise<string | undefined> {
    let query = this.db.selectFrom('activations').select('namespace');
    if (after !== undefined) query = query.where('namespace', '>', after);
    const row = await query.orderBy('namespace').limit(1).executeTakeFirst();
    return row?.namespace;
  }

  /**
   * Where a namespace's newest `keep` activations end: the newest one older than them, or
   * undefined when it has no more than `keep`. Queued and running ones count too (the few there
   * are), so that this reads the index alone rather than `keep` rows.
   */
  async activationCountBoundary(namespace: string, keep: number): Promise<{ start: number; seq: number } | undefined> {
    const row = await this.db
      .selectFrom('activations')
      .select(['start', 'seq'])
      .where('namespace', '=', namespace)
      .orderBy('start', 'desc')
      .orderBy('seq', 'desc')
      .limit(1)
      .offset(keep)
      .executeTakeFirst();
    return row ? { start: Number(row.start), seq: Number(row.seq) } : undefined;
  }

  /**
   * Deletes up to `batch` of a namespace's finished activations that started before `before`, or
   * (with `through`) are at or older than that boundary. Queued and running ones are never touched.
   * Returns how many went.
   */
  async pruneActivations(
    namespace: string,
    cut: { before: number } | { through: { start: number; seq: number } },
    batch: number,
  ): Promise<number> {
    const victims = this.db
      .selectFrom('activations')
      .select('seq')
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .where((eb) =>
        'before' in cut
          ? eb('start', '<', cut.before)
          : eb.or([
              eb('start', '<', cut.through.start),
              eb.and([eb('start', '=', cut.through.start), eb('seq', '<=', cut.through.seq)]),
            ]),
      )
      .orderBy('start')
      .limit(batch);
    const result = await this.db.deleteFrom('activations').where('seq', 'in', victims).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** Activations that were accepted but had not started when the server stopped, oldest first. */
  async queuedActivations(): Promise<QueuedActivation[]> {
    const rows = await this.db
      .selectFrom('activations')
      .selectAll()
      .where('state', '=', 'queued')
      .orderBy('accepted')
      .orderBy('seq')
      .execute();
    return rows.map(fromPendingRow);
  }

  /** Activations that were running when the server stopped. */
  async interruptedActivations(): Promise<QueuedActivation[]> {
    const rows = await this.db.selectFrom('activations').selectAll().where('state', '=', 'running').execute();
    return rows.map(fromPendingRow);
  }

  /** The latest version of every action, in every namespace. */
  async allActions(): Promise<ActionVersion[]> {
    const rows = await this.db
      .selectFrom('action_versions as v')
      .innerJoin('actions as a', (join) =>
        join.onRef('a.namespace', '=', 'v.namespace').onRef('a.name', '=', 'v.name').onRef('a.latest_version', '=', 'v.version'),
      )
      .selectAll('v')
      .execute();
    return rows.map(fromVersionRow);
  }

  // ---- triggers and rules -----------------------------------------------------------------

  async putTrigger(input: Omit<TriggerRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<TriggerRecord> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('triggers')
        .selectAll()
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      if (existing && !options.overwrite)
        throw conflict(`The trigger "${input.name}" already exists; pass overwrite=true to update it.`);
      const stored: TriggerRecord = { ...input, version: nextVersion(existing?.version), updated: Date.now() };
      const row = {
        namespace: stored.namespace,
        name: stored.name,
        parameters: JSON.stringify(stored.parameters),
        annotations: JSON.stringify(stored.annotations),
        version: stored.version,
        updated: stored.updated,
      };
      if (existing) {
        await trx
          .updateTable('triggers')
          .set(row)
          .where('namespace', '=', input.namespace)
          .where('name', '=', input.name)
          .execute();
      } else {
        await trx.insertInto('triggers').values(row).execute();
      }
      return stored;
    });
  }

  async getTrigger(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const row = await this.db
      .selectFrom('triggers')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? fromTriggerRow(row) : undefined;
  }

  async listTriggers(namespace?: string): Promise<TriggerRecord[]> {
    let query = this.db.selectFrom('triggers').selectAll();
    if (namespace !== undefined) query = query.where('namespace', '=', namespace);
    return (await query.orderBy('name').execute()).map(fromTriggerRow);
  }

  async deleteTrigger(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const trigger = await this.getTrigger(namespace, name);
    if (trigger) await this.db.deleteFrom('triggers').where('namespace', '=', namespace).where('name', '=', name).execute();
    return trigger;
  }

  async putRule(input: Omit<RuleRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<RuleRecord> {
    return this.db.transaction().execute(async (trx) => {
      const existing = await trx
        .selectFrom('rules')
        .selectAll()
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      if (existing && !options.overwrite)
        throw conflict(`The rule "${input.name}" already exists; pass overwrite=true to update it.`);
      const stored: RuleRecord = { ...input, version: nextVersion(existing?.version), updated: Date.now() };
      if (existing) {
        await trx
          .updateTable('rules')
          .set(stored)
          .where('namespace', '=', input.namespace)
          .where('name', '=', input.name)
          .execute();
      } else {
        await trx.insertInto('rules').values(stored).execute();
      }
      return stored;
    });
  }

  async getRule(namespace: string, name: string): Promise<RuleRecord | undefined> {
    return (await this.db
      .selectFrom('rules')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst()) as RuleRecord | undefined;
  }

  async listRules(namespace: string): Promise<RuleRecord[]> {
    return (await this.db
      .selectFrom('rules')
      .selectAll()
      .where('namespace', '=', namespace)
      .orderBy('name')
      .execute()) as RuleRecord[];
  }

  async rulesFor(namespace: string, trigger: string): Promise<RuleRecord[]> {
    return (await this.db
      .selectFrom('rules')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('trigger', '=', trigger)
      .execute()) as RuleRecord[];
  }

  async setRuleStatus(namespace: string, name: string, status: 'active' | 'inactive'): Promise<void> {
    await this.db
      .updateTable('rules')
      .set({ status, updated: Date.now() })
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .execute();
  }

  async deleteRule(namespace: string, name: string): Promise<RuleRecord | undefined> {
    const rule = await this.getRule(namespace, name);
    if (rule) await this.db.deleteFrom('rules').where('namespace', '=', namespace).where('name', '=', name).execute();
    return rule;
  }
}

function toVersionRow(v: ActionVersion): ActionVersionsTable {
  return {
    namespace: v.namespace,
    name: v.name,
    version: v.version,
    revision: v.revision,
    kind: v.exec.kind,
    code: v.exec.code,
    binary: v.exec.binary ? 1 : 0,
    main: v.exec.main ?? null,
    limits: JSON.stringify(v.limits),
    parameters: JSON.stringify(v.parameters),
    annotations: JSON.stringify(v.annotations),
    isolation: v.isolation,
    created: v.updated,
  };
}

function fromVersionRow(row: Selectable<ActionVersionsTable>): ActionVersion {
  return {
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    revision: row.revision,
    exec: {
      kind: row.kind as Kind,
      code: row.code,
      binary: row.binary === 1,
      ...(row.main ? { main: row.main } : {}),
    },
    limits: JSON.parse(row.limits) as Limits,
    parameters: JSON.parse(row.parameters) as KeyValue[],
    annotations: JSON.parse(row.annotations) as KeyValue[],
    isolation: row.isolation as Isolation,
    updated: Number(row.created),
  };
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

const STATEMENT_CACHE_SIZE = 256;

/**
 * Kysely prepares every query it runs; preparing costs more than running a small statement.
 * Handing it a database whose prepare() reuses statements by SQL text makes repeated queries
 * (every invocation's insert, every action lookup) cheap.
 */
function withStatementCache(sqlite: SqliteDatabase.Database) {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string) {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql);
      } else {
        statement = sqlite.prepare(sql);
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}

export type ActivationRow = Omit<ActivationsTable, 'seq' | 'attempts' | 'not_before'> & { attempts: number };

function fromPendingRow(row: Selectable<ActivationsTable>): QueuedActivation {
  return {
    activationId: row.activation_id,
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    subject: row.subject,
    accepted: Number(row.accepted),
    params: row.params === null ? undefined : (JSON.parse(row.params) as Record<string, unknown>),
    annotations: JSON.parse(row.annotations) as KeyValue[],
    attempts: Number(row.attempts),
    notBefore: Number(row.not_before),
  };
}

function fromTriggerRow(row: Selectable<TriggersTable>): TriggerRecord {
  return {
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    parameters: JSON.parse(row.parameters) as KeyValue[],
    annotations: JSON.parse(row.annotations) as KeyValue[],
    updated: Number(row.updated),
  };
}

function toActivationRow(record: ActivationRecord, accepted: number, attempts: number): ActivationRow {
  return {
    activation_id: record.activationId,
    namespace: record.namespace,
    name: record.name,
    version: record.version,
    subject: record.subject,
    state: 'done',
    accepted,
    start: record.start,
    end: record.end,
    duration: record.duration,
    status: record.response.status,
    success: record.response.success ? 1 : 0,
    result: JSON.stringify(record.response.result ?? null),
    logs: JSON.stringify(record.logs),
    annotations: JSON.stringify(record.annotations),
    params: null,
    attempts,
  };
}

function fromActivationRow(row: Selectable<ActivationsTable>): ActivationRecord {
  return {
    activationId: row.activation_id,
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    subject: row.subject,
    start: Number(row.start),
    end: Number(row.end),
    duration: Number(row.duration),
    response: {
      status: row.status as ActivationRecord['response']['status'],
      success: row.success === 1,
      result: JSON.parse(row.result) as unknown,
    },
    logs: JSON.parse(row.logs) as string[],
    annotations: JSON.parse(row.annotations) as KeyValue[],
    publish: false,
  };
}
