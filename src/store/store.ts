import type { Kysely } from 'kysely';
import type { ActionVersion, ActivationRecord, KeyValue } from '../core/types.js';
import type { ActivationWriter, ActivationWriterOptions } from './activation-writer.js';
import { type DatabaseSetting, type DialectName, openDatabase, type StoreDatabase } from './database.js';
import type {
  ActivationQuery,
  ApiRouteFilter,
  ApiRouteRecord,
  ListPage,
  NamespacePurge,
  NamespaceRow,
  QueuedActivation,
  RuleRecord,
  TriggerRecord,
} from './records.js';
import { ActionRepository } from './repositories/actions.js';
import { ActivationRepository } from './repositories/activations.js';
import { AliasRepository } from './repositories/aliases.js';
import { type ApiOperationInput, ApiRouteRepository } from './repositories/api-routes.js';
import { NamespaceRepository } from './repositories/namespaces.js';
import { PackageRepository } from './repositories/packages.js';
import { RuleRepository, TriggerRepository } from './repositories/triggers.js';
import { UiSessionRepository } from './repositories/ui-sessions.js';
import type { Database } from './schema.js';

export { SQLITE_FILE } from './database.js';
export type {
  ActivationQuery,
  AliasRecord,
  AliasTarget,
  ApiRouteFilter,
  ApiRouteRecord,
  ListPage,
  NamespacePurge,
  NamespaceRow,
  PackageRecord,
  QueuedActivation,
  RuleRecord,
  TriggerRecord,
} from './records.js';
export { LATEST_VERSION } from './records.js';
export type { ApiOperationInput } from './repositories/api-routes.js';
export { hashKey } from './repositories/namespaces.js';
export type { ActivationRow } from './schema.js';

/** Where the data lives: the data dir, and `databaseUrl` (`postgres://...`) unless it is SQLite there. */
export type StoreOptions = DatabaseSetting & {
  /** How records written with `recordActivation` are grouped: see ActivationWriterOptions. */
  records?: ActivationWriterOptions;
};

/**
 * Persistence: namespaces, actions and their versions, activations (and the asynchronous queue),
 * triggers and rules, API gateway routes, each a repository over one query layer on SQLite or PostgreSQL. The
 * methods here are the store's interface as callers use it; each hands over to its repository.
 */
export class Store {
  readonly namespaces: NamespaceRepository;
  readonly actions: ActionRepository;
  readonly activations: ActivationRepository;
  readonly triggers: TriggerRepository;
  readonly rules: RuleRepository;
  readonly packages: PackageRepository;
  readonly aliases: AliasRepository;
  readonly apiRoutes: ApiRouteRepository;
  /** The dashboard's sign-ins. */
  readonly uiSessions: UiSessionRepository;

  private constructor(
    private readonly database: StoreDatabase,
    records: ActivationWriterOptions = {},
  ) {
    this.namespaces = new NamespaceRepository(database);
    this.actions = new ActionRepository(database);
    this.activations = new ActivationRepository(database, records);
    this.triggers = new TriggerRepository(database);
    this.rules = new RuleRepository(database);
    this.packages = new PackageRepository(database);
    this.aliases = new AliasRepository(database);
    this.apiRoutes = new ApiRouteRepository(database);
    this.uiSessions = new UiSessionRepository(database);
  }

  /** Opens the SQLite file in the data dir, or the PostgreSQL database `databaseUrl` names, and migrates it. */
  static async open(options: StoreOptions): Promise<Store> {
    return new Store(await openDatabase(options), options.records);
  }

  get db(): Kysely<Database> {
    return this.database.db;
  }

  get dialect(): DialectName {
    return this.database.dialect;
  }

  /** The database, for messages: the SQLite file or the URL without its password. */
  get location(): string {
    return this.database.location;
  }

  get activationWriter(): ActivationWriter {
    return this.activations.writer;
  }

  async close(): Promise<void> {
    await this.activations.flush();
    await this.database.close();
  }

  // ---- namespaces -------------------------------------------------------------------------

  createNamespace(name: string, uuid: string, key: string): Promise<NamespaceRow> {
    return this.namespaces.create(name, uuid, key);
  }

  /** Replaces a namespace's credentials, creating the namespace if needed. */
  setNamespaceCredentials(name: string, uuid: string, key: string): Promise<void> {
    return this.namespaces.setCredentials(name, uuid, key);
  }

  /** The namespace whose credentials these are, or undefined. */
  authenticate(uuid: string, key: string): Promise<string | undefined> {
    return this.namespaces.authenticate(uuid, key);
  }

  /** The key of a namespace's credentials, for checking request signatures. */
  keyOf(uuid: string): Promise<{ namespace: string; key: string } | undefined> {
    return this.namespaces.keyOf(uuid);
  }

  listNamespaces(): Promise<NamespaceRow[]> {
    return this.namespaces.list();
  }

  getNamespace(name: string): Promise<NamespaceRow | undefined> {
    return this.namespaces.get(name);
  }

  /**
   * Deletes a namespace with everything in it: its credentials, actions, versions and version
   * counters, activations (queued and running ones too), triggers, rules and API routes. A namespace created
   * again under the same name starts empty. Undefined when there was no such namespace.
   */
  async purgeNamespace(name: string): Promise<NamespacePurge | undefined> {
    // Marked first: from here records of its activations are dropped, and those already waiting
    // for the group commit are committed now so that the purge below takes them too.
    const undo = this.activations.dropRecordsOf(name);
    await this.activations.flush();
    const purge = await this.namespaces.purge(name);
    if (!purge) undo();
    return purge;
  }

  /** The names of a namespace's actions. */
  actionNames(namespace: string): Promise<string[]> {
    return this.actions.names(namespace);
  }

  // ---- actions ----------------------------------------------------------------------------

  /** Stores a new immutable version of an action. Without overwrite, an existing action is a conflict. */
  putAction(
    input: Omit<ActionVersion, 'version' | 'revision' | 'updated'>,
    options: { overwrite: boolean },
  ): Promise<ActionVersion> {
    return this.actions.put(input, options);
  }

  /** The latest version of an action, or a named one. */
  getAction(namespace: string, name: string, version?: string): Promise<ActionVersion | undefined> {
    return this.actions.get(namespace, name, version);
  }

  listActions(namespace: string, page: ListPage): Promise<ActionVersion[]> {
    return this.actions.list(namespace, page);
  }

  listVersions(namespace: string, name: string): Promise<ActionVersion[]> {
    return this.actions.versions(namespace, name);
  }

  /** Deletes an action and its versions; returns the latest version that was deleted. */
  deleteAction(namespace: string, name: string): Promise<ActionVersion | undefined> {
    return this.actions.delete(namespace, name);
  }

  /** Sets how many instances a function keeps provisioned (null: its annotation decides); false when there is no such action. */
  setProvisionedInstances(namespace: string, name: string, count: number | null): Promise<boolean> {
    return this.actions.setProvisioned(namespace, name, count);
  }

  /** The functions whose provisioned instances were set by scaling, with the count. */
  provisionedInstances(): Promise<{ namespace: string; name: string; count: number }[]> {
    return this.actions.provisioned();
  }

  /** The latest version of every action, in every namespace. */
  allActions(): Promise<ActionVersion[]> {
    return this.actions.all();
  }

  // ---- activations ------------------------------------------------------------------------

  /**
   * Records an accepted invocation before the caller is told it was accepted: `queued` to run
   * later, or `running` for one already under way. A record that already exists wins.
   */
  enqueueActivation(
    queued: Omit<QueuedActivation, 'attempts' | 'notBefore'>,
    state: 'queued' | 'running' = 'queued',
  ): Promise<void> {
    return this.activations.enqueue(queued, state);
  }

  /** Puts an activation back in the queue for another attempt, not before `notBefore`. */
  requeueActivation(activationId: string, attempts: number, notBefore: number): Promise<void> {
    return this.activations.requeue(activationId, attempts, notBefore);
  }

  /** Activations of an action accepted and not finished yet. */
  countPending(namespace: string, name: string): Promise<number> {
    return this.activations.countPending(namespace, name);
  }

  /** Finished activations of an action still stored (retention removes old ones). */
  countFinishedActivations(namespace: string, name: string): Promise<number> {
    return this.activations.countFinished(namespace, name);
  }

  markActivationRunning(activationId: string): Promise<void> {
    return this.activations.markRunning(activationId);
  }

  /** Stores a finished activation (never over one stored before); resolves once it is committed. Writes are grouped per tick. */
  completeActivation(record: ActivationRecord, accepted: number, attempts = 1): Promise<void> {
    return this.activations.complete(record, accepted, attempts);
  }

  /**
   * Stores a finished activation whose caller has been answered already: it commits with others
   * within the record window, and nobody waits for it (reads of activations wait for it).
   */
  recordActivation(record: ActivationRecord, accepted: number): void {
    this.activations.record(record, accepted);
  }

  /** An activation by id: `done`, or still pending with what it needs to run (see ActivationRepository.pending). */
  pendingActivation(activationId: string) {
    return this.activations.pending(activationId);
  }

  /** Removes an accepted activation that was never handed on: its caller was told it failed. */
  discardActivation(activationId: string): Promise<void> {
    return this.activations.discard(activationId);
  }

  getActivation(namespace: string, activationId: string): Promise<ActivationRecord | undefined> {
    return this.activations.get(namespace, activationId);
  }

  /** Sets annotations on a finished activation, waiting up to `waitMs` for its record; false when none turned up. */
  annotateActivation(namespace: string, activationId: string, entries: readonly KeyValue[], waitMs?: number): Promise<boolean> {
    return this.activations.annotate(namespace, activationId, entries, waitMs);
  }

  /** Finished activations, newest first. */
  /** Finished activations since `since` per function and per `bucketMs`: calls and failures. */
  activationActivity(namespace: string, since: number, bucketMs: number) {
    return this.activations.activity(namespace, since, bucketMs);
  }

  /** Start, duration, status and annotations of finished activations since `since`, newest first: for charts. */
  activationTimings(namespace: string, since: number, name: string | undefined, limit: number) {
    return this.activations.timings(namespace, since, name, limit);
  }

  /** The start of each function's latest finished activation. */
  lastActivations(namespace: string): Promise<Map<string, number>> {
    return this.activations.lastCalls(namespace);
  }

  listActivations(namespace: string, query: ActivationQuery): Promise<ActivationRecord[]> {
    return this.activations.list(namespace, query);
  }

  /** Activations that were accepted but had not started when the server stopped, oldest first. */
  queuedActivations(): Promise<QueuedActivation[]> {
    return this.activations.queued();
  }

  /** Activations that were running when the server stopped. */
  interruptedActivations(): Promise<QueuedActivation[]> {
    return this.activations.interrupted();
  }

  // ---- retention --------------------------------------------------------------------------

  /** The namespace after `after` (in name order) that has activations: walks the index, not the table. */
  nextNamespaceWithActivations(after: string | undefined): Promise<string | undefined> {
    return this.activations.nextNamespaceWith(after);
  }

  /** Where a namespace's newest `keep` activations end; undefined when it has no more than `keep`. */
  activationCountBoundary(namespace: string, keep: number): Promise<{ start: number; seq: number } | undefined> {
    return this.activations.countBoundary(namespace, keep);
  }

  /** Deletes up to `batch` of a namespace's finished activations older than the cut; returns how many went. */
  pruneActivations(
    namespace: string,
    cut: { before: number } | { through: { start: number; seq: number } },
    batch: number,
  ): Promise<number> {
    return this.activations.prune(namespace, cut, batch);
  }

  // ---- triggers and rules -----------------------------------------------------------------

  putTrigger(input: Omit<TriggerRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<TriggerRecord> {
    return this.triggers.put(input, options);
  }

  getTrigger(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    return this.triggers.get(namespace, name);
  }

  listTriggers(namespace?: string): Promise<TriggerRecord[]> {
    return this.triggers.list(namespace);
  }

  deleteTrigger(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    return this.triggers.delete(namespace, name);
  }

  putRule(input: Omit<RuleRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<RuleRecord> {
    return this.rules.put(input, options);
  }

  getRule(namespace: string, name: string): Promise<RuleRecord | undefined> {
    return this.rules.get(namespace, name);
  }

  listRules(namespace: string): Promise<RuleRecord[]> {
    return this.rules.list(namespace);
  }

  rulesFor(namespace: string, trigger: string): Promise<RuleRecord[]> {
    return this.rules.forTrigger(namespace, trigger);
  }

  setRuleStatus(namespace: string, name: string, status: 'active' | 'inactive'): Promise<void> {
    return this.rules.setStatus(namespace, name, status);
  }

  deleteRule(namespace: string, name: string): Promise<RuleRecord | undefined> {
    return this.rules.delete(namespace, name);
  }

  // ---- API gateway routes -----------------------------------------------------------------

  /** Stores operations under one API (replacing the API's others with `replace`); returns the API's operations. */
  putApiRoutes(
    namespace: string,
    basePath: string,
    apiName: string | undefined,
    operations: readonly ApiOperationInput[],
    options: { replace: boolean },
  ): Promise<ApiRouteRecord[]> {
    return this.apiRoutes.put(namespace, basePath, apiName, operations, options);
  }

  listApiRoutes(namespace: string, filter?: ApiRouteFilter): Promise<ApiRouteRecord[]> {
    return this.apiRoutes.list(namespace, filter);
  }

  deleteApiRoutes(namespace: string, filter: ApiRouteFilter): Promise<ApiRouteRecord[]> {
    return this.apiRoutes.delete(namespace, filter);
  }
}
