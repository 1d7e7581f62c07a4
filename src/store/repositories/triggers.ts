import type { Selectable } from 'kysely';
import { conflict } from '../../core/errors.js';
import { type KeyValue, nextVersion } from '../../core/types.js';
import type { StoreDatabase } from '../database.js';
import type { RuleRecord, TriggerRecord } from '../records.js';
import type { RulesTable, TriggersTable } from '../schema.js';

/** Triggers: named event sources with default parameters, fired through the rules that name them. */
export class TriggerRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  put(input: Omit<TriggerRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<TriggerRecord> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `trigger:${input.namespace}/${input.name}`);
      const existing = await trx
        .selectFrom('triggers')
        .select('version')
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

  async get(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const row = await this.db
      .selectFrom('triggers')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? fromTriggerRow(row) : undefined;
  }

  /** A namespace's triggers, or every namespace's, by name. */
  async list(namespace?: string): Promise<TriggerRecord[]> {
    let query = this.db.selectFrom('triggers').selectAll();
    if (namespace !== undefined) query = query.where('namespace', '=', namespace);
    return (await query.orderBy('name').orderBy('namespace').execute()).map(fromTriggerRow);
  }

  async delete(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const row = await this.db
      .deleteFrom('triggers')
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    return row ? fromTriggerRow(row) : undefined;
  }
}

/** Rules: a trigger fires an action while its rule is active. */
export class RuleRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  put(input: Omit<RuleRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<RuleRecord> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `rule:${input.namespace}/${input.name}`);
      const existing = await trx
        .selectFrom('rules')
        .select('version')
        .where('namespace', '=', input.namespace)
        .where('name', '=', input.name)
        .executeTakeFirst();
      if (existing && !options.overwrite)
        throw conflict(`The rule "${input.name}" already exists; pass overwrite=true to update it.`);
      const stored: RuleRecord = { ...input, version: nextVersion(existing?.version), updated: Date.now() };
      if (existing) {
        await trx
          .updateTable('rules')
          .set(toRuleRow(stored))
          .where('namespace', '=', input.namespace)
          .where('name', '=', input.name)
          .execute();
      } else {
        await trx.insertInto('rules').values(toRuleRow(stored)).execute();
      }
      return stored;
    });
  }

  async get(namespace: string, name: string): Promise<RuleRecord | undefined> {
    const row = await this.db
      .selectFrom('rules')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return row ? fromRuleRow(row) : undefined;
  }

  async list(namespace: string): Promise<RuleRecord[]> {
    const rows = await this.db.selectFrom('rules').selectAll().where('namespace', '=', namespace).orderBy('name').execute();
    return rows.map(fromRuleRow);
  }

  /** The rules of a trigger, active or not. */
  async forTrigger(namespace: string, trigger: string): Promise<RuleRecord[]> {
    const rows = await this.db
      .selectFrom('rules')
      .selectAll()
      .where('namespace', '=', namespace)
      .where('trigger', '=', trigger)
      .orderBy('name')
      .execute();
    return rows.map(fromRuleRow);
  }

  async setStatus(namespace: string, name: string, status: 'active' | 'inactive'): Promise<void> {
    await this.db
      .updateTable('rules')
      .set({ status, updated: Date.now() })
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .execute();
  }

  async delete(namespace: string, name: string): Promise<RuleRecord | undefined> {
    const row = await this.db
      .deleteFrom('rules')
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .returningAll()
      .executeTakeFirst();
    return row ? fromRuleRow(row) : undefined;
  }
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

function toRuleRow(rule: RuleRecord): RulesTable {
  return {
    namespace: rule.namespace,
    name: rule.name,
    trigger: rule.trigger,
    action: rule.action,
    status: rule.status,
    version: rule.version,
    updated: rule.updated,
  };
}

function fromRuleRow(row: Selectable<RulesTable>): RuleRecord {
  return {
    namespace: row.namespace,
    name: row.name,
    version: row.version,
    trigger: row.trigger,
    action: row.action,
    status: row.status,
    updated: Number(row.updated),
  };
}
