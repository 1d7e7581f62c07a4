import { type Selectable, sql } from 'kysely';
import type { ActivationRecord, KeyValue } from '../../core/types.js';
import { ActivationWriter, type ActivationWriterOptions } from '../activation-writer.js';
import type { StoreDatabase } from '../database.js';
import type { ActivationQuery, QueuedActivation } from '../records.js';
import type { ActivationRow, ActivationsTable } from '../schema.js';

/**
 * Activation records and the asynchronous queue they double as: a record is `queued` when
 * accepted to run later, `running`, then `done`. Finished records go through the group commit.
 */
export class ActivationRepository {
  readonly writer: ActivationWriter;
  /**
   * Namespaces deleted while this store was open, with when: a record of an activation the old
   * tenant started before that (still running when its namespace went) is not written, or it
   * would show up in a new namespace of the same name.
   */
  private readonly deletedNamespaces = new Map<string, number>();

  constructor(
    private readonly database: StoreDatabase,
    records: ActivationWriterOptions = {},
  ) {
    this.writer = new ActivationWriter(database, records);
  }

  /**
   * Before a read of finished records: the records written ahead of their commit are committed
   * first, so that a caller who had its answer finds its record.
   */
  private async committed(): Promise<void> {
    if (this.writer.busy) await this.writer.flush();
  }

  private get db() {
    return this.database.db;
  }

  /**
   * From now on, drops records of activations `namespace` accepted until now (it is being
   * deleted). Returns how to take that back, for when there was no such namespace.
   */
  dropRecordsOf(namespace: string): () => void {
    const previous = this.deletedNamespaces.get(namespace);
    this.deletedNamespaces.set(namespace, Date.now());
    return () => {
      if (previous === undefined) this.deletedNamespaces.delete(namespace);
      else this.deletedNamespaces.set(namespace, previous);
    };
  }

  /** Whether an activation accepted at `accepted` belongs to a namespace deleted since. */
  private fromDeletedNamespace(namespace: string, accepted: number): boolean {
    const deleted = this.deletedNamespaces.get(namespace);
    return deleted !== undefined && accepted <= deleted;
  }

  /** Commits the finished records written so far. */
  flush(): Promise<void> {
    return this.writer.flush();
  }

  /**
   * Records an accepted invocation before the caller is told it was accepted: `queued` to run
   * later, or `running` for one already under way. A record that already exists wins.
   */
  async enqueue(queued: Omit<QueuedActivation, 'attempts' | 'notBefore'>, state: 'queued' | 'running' = 'queued'): Promise<void> {
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
  async requeue(activationId: string, attempts: number, notBefore: number): Promise<void> {
    await this.db
      .updateTable('activations')
      .set({ state: 'queued', attempts, not_before: notBefore })
      .where('activation_id', '=', activationId)
      .execute();
  }

  /** Activations of an action accepted and not finished yet. */
  countPending(namespace: string, name: string): Promise<number> {
    return this.countOf(namespace, name, false);
  }

  countFinished(namespace: string, name: string): Promise<number> {
    return this.countOf(namespace, name, true);
  }

  private async countOf(namespace: string, name: string, done: boolean): Promise<number> {
    if (done) await this.committed();
    const row = await this.db
      .selectFrom('activations')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('state', done ? '=' : '<>', 'done')
      .where('namespace', '=', namespace)
      .where('name', '=', name)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async markRunning(activationId: string): Promise<void> {
    await this.db
      .updateTable('activations')
      .set({ state: 'running' })
      .where('activation_id', '=', activationId)
      .where('state', '=', 'queued')
      .execute();
  }

  /**
   * An activation by id in whatever state it is: `done`, or still `queued`/`running` with what
   * it needs to run. For a cluster's invoker, which gets only the id from the work stream.
   */
  async pending(
    activationId: string,
  ): Promise<{ state: 'done' } | { state: 'queued' | 'running'; queued: QueuedActivation } | undefined> {
    const row = await this.db.selectFrom('activations').selectAll().where('activation_id', '=', activationId).executeTakeFirst();
    if (!row) return undefined;
    if (row.state === 'done') return { state: 'done' };
    return { state: row.state === 'running' ? 'running' : 'queued', queued: fromPendingRow(row) };
  }

  /** Removes an accepted activation that was never handed on (its caller was told it failed). */
  async discard(activationId: string): Promise<void> {
    await this.db.deleteFrom('activations').where('activation_id', '=', activationId).where('state', '<>', 'done').execute();
  }

  /** Stores a finished activation; resolves once it is committed. Writes are grouped per tick. */
  complete(record: ActivationRecord, accepted: number, attempts = 1): Promise<void> {
    if (this.fromDeletedNamespace(record.namespace, accepted)) return Promise.resolve();
    return this.writer.write(toActivationRow(record, accepted, attempts));
  }

  /** Stores a finished activation within the record window, with nobody waiting for its commit. */
  record(record: ActivationRecord, accepted: number): void {
    if (this.fromDeletedNamespace(record.namespace, accepted)) return;
    this.writer.record(toActivationRow(record, accepted, 1));
  }

  /** A finished activation of a namespace. */
  async get(namespace: string, activationId: string): Promise<ActivationRecord | undefined> {
    await this.committed();
    const row = await this.db
      .selectFrom('activations')
      .selectAll()
      .where('activation_id', '=', activationId)
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .executeTakeFirst();
    return row ? fromActivationRow(row) : undefined;
  }

  /**
   * Sets annotations on a finished activation (replacing those of the same keys), for what is
   * learnt after it ended. Its record may still be waiting in the group commit, or the activation
   * may still be running: the writer is flushed and the row looked for again until `waitMs` has
   * passed. The update holds only if the annotations did not change meanwhile (else it reads them
   * again), so concurrent amendments all land. False when no finished record turned up in time.
   */
  async annotate(namespace: string, activationId: string, entries: readonly KeyValue[], waitMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    const keys = new Set(entries.map((entry) => entry.key));
    let interval = 10;
    for (;;) {
      const row = await this.db
        .selectFrom('activations')
        .select('annotations')
        .where('activation_id', '=', activationId)
        .where('namespace', '=', namespace)
        .where('state', '=', 'done')
        .executeTakeFirst();
      if (row) {
        const annotations = (JSON.parse(row.annotations) as KeyValue[]).filter((a) => !keys.has(a.key));
        const result = await this.db
          .updateTable('activations')
          .set({ annotations: JSON.stringify([...annotations, ...entries]) })
          .where('activation_id', '=', activationId)
          .where('state', '=', 'done')
          .where('annotations', '=', row.annotations)
          .executeTakeFirst();
        if (Number(result.numUpdatedRows) > 0) return true;
        continue;
      }
      if (Date.now() >= deadline) return false;
      await this.flush();
      await new Promise((resolve) => setTimeout(resolve, Math.min(interval, Math.max(0, deadline - Date.now()))));
      interval = Math.min(interval * 2, 500);
    }
  }

  /** Finished activations, newest first. */
  async list(namespace: string, query: ActivationQuery): Promise<ActivationRecord[]> {
    await this.committed();
    let q = this.db.selectFrom('activations').selectAll().where('namespace', '=', namespace).where('state', '=', 'done');
    if (query.name) q = q.where('name', '=', query.name);
    if (query.outcome) q = q.where('status', query.outcome === 'success' ? '=' : '<>', 'success');
    if (query.since !== undefined) q = q.where('start', '>=', query.since);
    if (query.upto !== undefined) q = q.where('start', '<=', query.upto);
    const rows = await q.orderBy('start', 'desc').orderBy('seq', 'desc').limit(query.limit).offset(query.skip).execute();
    return rows.map(fromActivationRow);
  }

  /** Finished activations since `since` per function and per `bucketMs` of their start: calls and failures. */
  async activity(
    namespace: string,
    since: number,
    bucketMs: number,
  ): Promise<{ name: string; bucket: number; calls: number; errors: number }[]> {
    await this.committed();
    const rows = await this.db
      .selectFrom('activations')
      .select((eb) => [
        'name',
        sql<number>`start / ${sql.lit(Math.floor(bucketMs))}`.as('bucket'),
        eb.fn.countAll<number>().as('calls'),
        eb.fn.sum<number>(eb.case().when('status', '<>', 'success').then(1).else(0).end()).as('errors'),
      ])
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .where('start', '>=', since)
      .groupBy(['name', 'bucket'])
      .execute();
    return rows.map((r) => ({ name: r.name, bucket: Number(r.bucket), calls: Number(r.calls), errors: Number(r.errors) }));
  }

  /**
   * What charts are drawn from: each finished activation since `since` (of `name`, when given),
   * newest first, at most `limit`: its start, duration, status and annotations, not its result or logs.
   */
  async timings(
    namespace: string,
    since: number,
    name: string | undefined,
    limit: number,
  ): Promise<{ name: string; start: number; duration: number; status: string; annotations: KeyValue[] }[]> {
    await this.committed();
    let query = this.db
      .selectFrom('activations')
      .select(['name', 'start', 'duration', 'status', 'annotations'])
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .where('start', '>=', since);
    if (name !== undefined) query = query.where('name', '=', name);
    const rows = await query.orderBy('start', 'desc').limit(limit).execute();
    return rows.map((r) => ({
      name: r.name,
      start: Number(r.start),
      duration: Number(r.duration ?? 0),
      status: String(r.status ?? ''),
      annotations: parseAnnotations(r.annotations),
    }));
  }

  /** The start of each function's latest finished activation. */
  async lastCalls(namespace: string): Promise<Map<string, number>> {
    await this.committed();
    const rows = await this.db
      .selectFrom('activations')
      .select((eb) => ['name', eb.fn.max('start').as('last')])
      .where('namespace', '=', namespace)
      .where('state', '=', 'done')
      .groupBy('name')
      .execute();
    return new Map(rows.map((r) => [r.name, Number(r.last)]));
  }

  /** Activations that were accepted but had not started when the server stopped, oldest first. */
  async queued(): Promise<QueuedActivation[]> {
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
  async interrupted(): Promise<QueuedActivation[]> {
    const rows = await this.db.selectFrom('activations').selectAll().where('state', '=', 'running').orderBy('seq').execute();
    return rows.map(fromPendingRow);
  }

  // ---- retention ----------------------------------------------------------------------------

  /** The namespace after `after` (in name order) that has activations: walks the index, not the table. */
  async nextNamespaceWith(after: string | undefined): Promise<string | undefined> {
    await this.committed();
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
  async countBoundary(namespace: string, keep: number): Promise<{ start: number; seq: number } | undefined> {
    await this.committed();
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
  async prune(
    namespace: string,
    cut: { before: number } | { through: { start: number; seq: number } },
    batch: number,
  ): Promise<number> {
    await this.committed();
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

function parseAnnotations(text: string | null): KeyValue[] {
  try {
    const value = JSON.parse(text ?? '[]') as unknown;
    return Array.isArray(value) ? (value as KeyValue[]) : [];
  } catch {
    return [];
  }
}
