import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { ServerConfig } from '../config.js';
import { badRequest, notFound } from '../core/errors.js';
import { type Isolation, resolveIsolation } from '../core/kinds.js';
import { DEFAULT_LIMITS } from '../core/limits.js';
import { assertActionName, ownerRef, packageOf, SYSTEM_NAMESPACE } from '../core/names.js';
import { checkNetworkAnnotation } from '../core/network-policy.js';
import { type ActionVersion, annotationValue, type KeyValue } from '../core/types.js';
import type { Backend, BackendStatus } from '../sandbox/backend.js';
import { BackendSet, BackendUnavailableError, egressSupported, validateWithoutBackend } from '../sandbox/registry.js';
import { functionSettings, SETTING_LIMITS, storedFunctionSettings } from '../scheduler/function-settings.js';
import { parsePolicy } from '../scheduler/policy.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { ActivationRetention } from '../store/retention.js';
import { type NamespacePurge, Store } from '../store/store.js';
import { FunctionAliases } from './aliases.js';
import { ApiGateway } from './api-gateway.js';
import { CATALOGUE, FEED_ANNOTATION } from './catalogue/catalogue.js';
import { type CacheChange, ClusterMembership } from './cluster/membership.js';
import {
  type Credentials,
  ensureDataDir,
  formatAuth,
  GUEST_AUTH_FILE,
  GUEST_NAMESPACE,
  loadOrCreateGuestAuth,
  parseAuth,
} from './credentials.js';
import { localExecutor } from './executor.js';
import { FunctionPackages } from './function-packages.js';
import { type FunctionRef, type InvokeCommand, type InvokeOutcome, InvokePath } from './invoke.js';
import { Invoker } from './invoker.js';
import { Metrics } from './metrics.js';
import { Packages } from './openwhisk-packages.js';
import { Actions, Activations, Namespaces, Rules } from './read-models.js';
import { checkSequence } from './sequences.js';
import { SignedLinks } from './signed-links.js';
import { Triggers } from './triggers.js';
import { UiSessions } from './ui-sessions.js';

export type ActionDraft = Omit<ActionVersion, 'version' | 'revision' | 'updated'>;

/** One invoker as `GET /api/v1/invokers` and `isola cluster status` show it. */
export interface InvokerStatus {
  id: string;
  host: string;
  backends: string[];
  memoryBudgetMb: number;
  memoryInUseMb: number;
  /** Of the memory in use, what idle instances hold. */
  memoryIdleMb: number;
  instances: number;
  /** `healthy`: heartbeating and taking work; `draining`: stopping, its calls under way end first. */
  health: 'healthy' | 'draining';
  /** ms since its last heartbeat (0 for this server itself when it runs alone). */
  heartbeatAgeMs: number;
}

const AUTH_CACHE_MS = 10_000;

export interface PlatformEvents {
  warn?: (message: string) => void;
  /** A line about a backend being probed in the background: what it does, then ready or why not. */
  backend?: (isolation: Isolation, message: string) => void;
}

/**
 * Everything behind the doors: store, backends, scheduler and the invoker, wired together. The
 * doors invoke through `invoke` and read through the read models (`actions`, `activations`,
 * `namespaces`, `triggers`, `rules`, `apis`); only the platform talks to the store.
 */
export class Platform {
  private readonly authCache = new Map<string, { namespace: string | undefined; expires: number }>();
  readonly actions: Actions;
  readonly activations: Activations;
  readonly namespaces: Namespaces;
  readonly triggers: Triggers;
  readonly rules: Rules;
  /** The dashboard's sign-ins. */
  readonly uiSessions: UiSessions;
  /** OpenWhisk's packages and bindings; also how every reference to an action is resolved. */
  readonly packages: Packages;
  readonly aliases: FunctionAliases;
  /** Signs links that work without credentials for a while (see SignedLinks). */
  readonly links: SignedLinks;
  /** OpenWhisk's API gateway routes. */
  readonly apis: ApiGateway;
  private readonly invocations: InvokePath;
  private readonly retention: ActivationRetention;

  /** Which database holds the platform's records, for the start-up lines (password hidden). */
  get database(): { readonly dialect: Store['dialect']; readonly location: string } {
    return { dialect: this.store.dialect, location: this.store.location };
  }

  private constructor(
    readonly config: ServerConfig,
    private readonly store: Store,
    readonly backends: ReadonlyMap<Isolation, Backend>,
    readonly backendStatuses: readonly BackendStatus[],
    /** Resolves once every backend's background probe has ended (`backends` then holds the real ones). */
    readonly backendsProbed: Promise<void>,
    readonly scheduler: Scheduler,
    readonly metrics: Metrics,
    readonly invoker: Invoker,
    readonly guest: Credentials,
    private readonly functionPackages: FunctionPackages,
    events: PlatformEvents,
    /** This server's part in a cluster (`--nats`), or undefined when it runs on its own. */
    readonly cluster: ClusterMembership | undefined,
  ) {
    this.actions = new Actions(store);
    this.activations = new Activations(store);
    this.namespaces = new Namespaces(store, (name) => this.deleteNamespace(name));
    this.rules = new Rules(store);
    this.uiSessions = new UiSessions(store, (uuid, key) => this.authenticate(uuid, key));
    this.packages = new Packages(
      store,
      (namespace, name, version) => this.actions.get(namespace, name, version),
      new Set([SYSTEM_NAMESPACE]),
      (namespace, name) => cluster?.announce({ kind: 'package', namespace, name }),
    );
    this.aliases = new FunctionAliases(store);
    // A cluster's controllers verify each other's links: keyed by the operator token they share.
    this.links =
      cluster && config.adminToken ? SignedLinks.fromSharedSecret(config.adminToken) : SignedLinks.forDataDir(config.dataDir);
    this.apis = new ApiGateway(store, (ref) => this.findAction(ref));
    this.invocations = new InvokePath({
      store,
      executor: cluster?.executor ?? localExecutor(scheduler, invoker),
      resolve: (ref) => this.packages.resolve(ref),
      authenticate: (credentials) => this.authenticate(credentials.uuid, credentials.key),
      blockingWaitMs: config.blockingWaitMs,
      retryBaseMs: config.retryBaseMs,
      warn: (message) => events.warn?.(message),
    });
    this.triggers = new Triggers({
      store,
      invoke: (command) => this.invoke(command),
      warn: (message) => events.warn?.(message),
      ...(cluster
        ? {
            claimTick: (key: string) => cluster.claimTick(key),
            changed: (namespace: string, name: string) => cluster.announce({ kind: 'trigger', namespace, name }),
          }
        : {}),
    });
    const failed = (what: string) => (error: unknown) =>
      events.warn?.(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    cluster?.followChanges(
      (change) => void this.evict(change).catch(failed(`following a change of ${change.namespace}`)),
      () => void this.evictAll().catch(failed('reloading after missed change notices')),
    );
    this.retention = new ActivationRetention(
      store,
      {
        maxAgeMs: config.activationRetentionMs,
        perNamespace: config.activationsPerNamespace,
        intervalMs: config.retentionIntervalMs,
      },
      (message) => events.warn?.(message),
    );
    // Pruning is a controller's chore: invokers only add records.
    if (!cluster || cluster.servesDoors) this.retention.start();
  }

  static async start(config: ServerConfig, events: PlatformEvents = {}): Promise<Platform> {
    ensureDataDir(config.dataDir);
    const store = await Store.open({
      dataDir: config.dataDir,
      ...(config.databaseUrl ? { databaseUrl: config.databaseUrl } : {}),
      records: {
        windowMs: config.recordWindowMs,
        onError: (error, rows) =>
          events.warn?.(
            `${rows} activation records could not be stored: ${error instanceof Error ? error.message : String(error)}`,
          ),
      },
    });
    let cluster: ClusterMembership | undefined;
    try {
      cluster = config.natsUrl
        ? await ClusterMembership.join({
            natsUrl: config.natsUrl,
            role: config.role,
            store,
            warn: (message) => events.warn?.(message),
          })
        : undefined;
    } catch (error) {
      await store.close();
      throw error;
    }
    const guest = config.guestAuth
      ? parseAuth(config.guestAuth)
      : ((config.natsUrl ? await storedGuestAuth(store, config.dataDir) : undefined) ?? loadOrCreateGuestAuth(config.dataDir));
    await store.setNamespaceCredentials(GUEST_NAMESPACE, guest.uuid, guest.key);
    // Probed in the background: `backends` and `statuses` are live (see BackendSet).
    let metrics: Metrics | undefined;
    const packages = new FunctionPackages({ dataDir: config.dataDir });
    const { backends, statuses, settled } = new BackendSet(
      { dataDir: config.dataDir, ...config.backendSettings },
      // A controller runs no function: it places calls on the invokers.
      config.role === 'controller' ? [] : config.backends,
      config.queueTimeoutMs,
      {
        ready: (backend) => metrics?.addBackend(backend),
        progress: (isolation, message) => events.backend?.(isolation, message),
      },
    );
    const scheduler = new Scheduler({
      backends,
      memoryBudgetMb: config.memoryBudgetMb,
      policy: parsePolicy(config.keepAlive),
      queueTimeoutMs: config.queueTimeoutMs,
      stemCells: await Promise.all(
        config.prewarm
          .filter(({ isolation, count }) => backends.has(isolation) && count > 0)
          .map(async ({ isolation, kind, count }) => {
            // Interpreted kinds' blank sandboxes start the interpreter too, as OpenWhisk's prewarmed runtimes do.
            const runtime = kind ? await packages.runtimeStart(kind) : undefined;
            return { isolation, kind, memoryMb: 256, count, ...(runtime ? { runtime } : {}) };
          }),
      ),
      onBackgroundError: (message, error) => {
        // A backend that is not ready, or does not work here, has said so once already.
        if (error instanceof BackendUnavailableError) return;
        events.warn?.(`${message}: ${error instanceof Error ? error.message : String(error)}`);
      },
      prepare: (action) => packages.prepare(action),
    });
    metrics = new Metrics(scheduler, { functions: config.metricsFunctions });
    const view = cluster?.view;
    if (view) metrics.addClusterInvokers(() => view.current());
    const invoker = new Invoker(store, scheduler, metrics, {
      // In a cluster another server may read the record as soon as the caller has the answer.
      answerBeforeCommit: !cluster && config.recordWindowMs > 0,
    });
    const platform = new Platform(
      config,
      store,
      backends,
      statuses,
      settled,
      scheduler,
      metrics,
      invoker,
      guest,
      packages,
      events,
      cluster,
    );
    if (!cluster || cluster.servesDoors) await platform.installCatalogue();
    if (cluster?.runsFunctions) {
      await cluster.serveAsInvoker({
        store,
        scheduler,
        invoker,
        backends,
        statuses,
        retryBaseMs: config.retryBaseMs,
        // Deployed through a controller: instances provisioned here show under the function's own name.
        provisioned: (action) => metrics.noteDeployed(action.namespace, action.name),
        warn: (message) => events.warn?.(message),
      });
    }
    return platform;
  }

  /** The namespace a `uuid:key` belongs to, or undefined. Cached briefly: this is on every request. */
  async authenticate(uuid: string, key: string): Promise<string | undefined> {
    const cacheKey = `${uuid}:${key}`;
    const cached = this.authCache.get(cacheKey);
    const now = Date.now();
    if (cached && cached.expires > now) return cached.namespace;
    const namespace = await this.store.authenticate(uuid, key);
    if (this.authCache.size > 10_000) this.authCache.clear();
    this.authCache.set(cacheKey, { namespace, expires: now + AUTH_CACHE_MS });
    return namespace;
  }

  /** The invokers: the cluster's live ones, or this server itself when it runs alone. */
  async invokers(): Promise<InvokerStatus[]> {
    if (!this.cluster) {
      const snapshot = this.scheduler.placementSnapshot();
      return [
        {
          id: 'local',
          host: hostname(),
          backends: this.backendStatuses.filter((s) => s.available).map((s) => s.isolation),
          memoryBudgetMb: snapshot.memoryBudgetMb,
          memoryInUseMb: snapshot.memoryUsedMb,
          memoryIdleMb: snapshot.memoryIdleMb,
          instances: snapshot.instances,
          health: 'healthy',
          heartbeatAgeMs: 0,
        },
      ];
    }
    const now = Date.now();
    return (await this.cluster.invokers()).map((invoker) => ({
      id: invoker.id,
      host: invoker.host,
      backends: invoker.backends,
      memoryBudgetMb: invoker.memoryBudgetMb,
      memoryInUseMb: invoker.memoryInUseMb,
      memoryIdleMb: invoker.memoryIdleMb,
      instances: invoker.instances,
      health: invoker.draining ? 'draining' : 'healthy',
      heartbeatAgeMs: Math.max(0, now - invoker.heartbeatAt),
    }));
  }

  // ---- a cluster's caches ------------------------------------------------------------------

  /** Another server of the cluster changed something: what this one cached of it goes. */
  private async evict(change: CacheChange): Promise<void> {
    switch (change.kind) {
      case 'action':
        this.actions.forget(change.namespace, change.name);
        this.scheduler.retireVersions(change.namespace, change.name);
        this.cluster?.functionChanged(change.namespace, change.name);
        return;
      case 'scale':
        this.cluster?.functionChanged(change.namespace, change.name);
        return;
      case 'package':
        this.packages.forget(change.namespace, change.name);
        return;
      case 'trigger':
        if (this.cluster?.servesDoors) await this.triggers.reload(change.namespace, change.name);
        return;
      case 'namespace':
        for (const [key, entry] of this.authCache) if (entry.namespace === change.namespace) this.authCache.delete(key);
        for (const trigger of this.triggers.scheduled(change.namespace)) this.triggers.unschedule(change.namespace, trigger);
        this.actions.forget(change.namespace);
        this.packages.forget(change.namespace);
        for (const fn of this.scheduler.stats().functions.filter((f) => f.namespace === change.namespace))
          this.scheduler.retireVersions(change.namespace, fn.action);
        return;
    }
  }

  /** Change notices may have been missed (NATS was unreachable): everything cached goes. */
  private async evictAll(): Promise<void> {
    this.authCache.clear();
    this.actions.forgetAll();
    this.packages.forgetAll();
    this.cluster?.reprovision();
    if (this.cluster?.servesDoors) {
      this.triggers.stop();
      await this.triggers.start();
    }
  }

  // ---- namespaces -------------------------------------------------------------------------

  /**
   * Deletes a namespace and everything in it, and forgets what the platform holds for it: its
   * key stops working at once, its cron triggers stop, its instances are retired (busy ones when
   * their run ends), and records of its runs still under way are not stored. Undefined when there
   * is no such namespace.
   */
  async deleteNamespace(name: string): Promise<NamespacePurge | undefined> {
    const actions = await this.store.actionNames(name);
    const triggers = await this.store.listTriggers(name);
    const purge = await this.store.purgeNamespace(name);
    if (!purge) return undefined;
    // Its dashboard sessions end with it.
    await this.store.uiSessions.prune(Date.now(), name);
    // After the purge: whatever was cached before it, or while it ran, goes.
    for (const [key, entry] of this.authCache) if (entry.namespace === name) this.authCache.delete(key);
    for (const trigger of triggers) this.triggers.unschedule(name, trigger.name);
    this.actions.forget(name);
    this.packages.forget(name);
    const live = this.scheduler
      .stats()
      .functions.filter((fn) => fn.namespace === name)
      .map((fn) => fn.action);
    for (const action of new Set([...actions, ...live])) this.scheduler.retireVersions(name, action);
    this.metrics.forgetNamespace(name);
    this.cluster?.announce({ kind: 'namespace', namespace: name });
    return purge;
  }

  // ---- actions ----------------------------------------------------------------------------

  async deploy(draft: ActionDraft, overwrite: boolean): Promise<ActionVersion> {
    assertActionName(draft.name);
    const pkg = packageOf(draft.name);
    if (pkg !== undefined) await this.packages.assertCanHold(draft.namespace, pkg);
    if (draft.sequence) return this.deploySequence(draft, draft.sequence, overwrite);
    const target = this.deployTarget(draft.isolation);
    if (draft.limits.memory < target.minMemoryMb) {
      throw badRequest(`limits.memory must be at least ${target.minMemoryMb} MB under isolation "${draft.isolation}".`);
    }
    if (draft.limits.memory > target.memoryBudgetMb) {
      throw badRequest(
        `limits.memory of ${draft.limits.memory} MB exceeds ${target.where} memory budget of ${target.memoryBudgetMb} MB ` +
          '(ISOLA_MEMORY_BUDGET_MB): no instance of it could ever run here.',
      );
    }
    const backend = this.backends.get(draft.isolation);
    try {
      // Everything the scheduler will build from the annotations is built once here, so that a
      // setting that only fails when used (a policy with no bins, say) is refused, not stored.
      functionSettings(draft).policy?.forFunction();
    } catch (error) {
      throw badRequest((error as Error).message);
    }
    checkNetworkAnnotation(draft, egressSupported());
    // Empty code is taken, as OpenWhisk takes it, and fails at initialisation (see Invoker).
    const empty = draft.exec.code === '';
    // Zips are checked and sources compiled before anything is stored: a refusal stores nothing.
    if (!empty) {
      await this.functionPackages.prepare(draft);
      if (backend) await backend.validate?.(draft);
      // A controller has no backends: it makes the checks that need none, an invoker the rest when it first starts the function.
      else if (this.cluster) await validateWithoutBackend(draft.isolation, draft);
    }
    const stored = await this.store.putAction(draft, { overwrite });
    this.actions.remember(stored);
    this.cluster?.announce({ kind: 'action', namespace: stored.namespace, name: stored.name });
    this.scheduler.retireVersions(stored.namespace, stored.name, stored.revision);
    this.metrics.noteDeployed(stored.namespace, stored.name);
    if (this.cluster) this.cluster.functionChanged(stored.namespace, stored.name);
    else if (!empty) this.scheduler.provision(stored);
    return stored;
  }

  /**
   * What a function under `isolation` is checked against when it is deployed: this server's
   * backend and budget, or in a cluster the invokers' (the strictest minimum among those that
   * have the backend, the largest budget). A 400 when none has the backend.
   */
  private deployTarget(isolation: Isolation): { minMemoryMb: number; memoryBudgetMb: number; where: string } {
    const view = this.cluster?.view;
    if (view) {
      const backend = view.backend(isolation);
      if (!backend)
        throw badRequest(`The isolation backend "${isolation}" is not available in this cluster: no invoker has it now.`);
      return { ...backend, where: "the largest invoker's" };
    }
    const backend = this.backends.get(isolation);
    if (!backend) {
      const status = this.backendStatuses.find((s) => s.isolation === isolation);
      throw badRequest(
        `The isolation backend "${isolation}" is not available on this server: ${status?.detail ?? 'not enabled'}`,
      );
    }
    return { minMemoryMb: backend.minMemoryMb, memoryBudgetMb: this.config.memoryBudgetMb, where: "this server's" };
  }

  /** A sequence runs no code of its own: its components are checked (see checkSequence) and stored fully qualified. */
  private async deploySequence(draft: ActionDraft, components: readonly string[], overwrite: boolean): Promise<ActionVersion> {
    const sequence = await checkSequence(draft, components, (ref) => this.packages.resolve(ref));
    const stored = await this.store.putAction({ ...draft, sequence }, { overwrite });
    this.actions.remember(stored);
    this.cluster?.announce({ kind: 'action', namespace: stored.namespace, name: stored.name });
    // An action that was code before keeps no instances, nor a provisioned count set by scaling.
    await this.store.setProvisionedInstances(stored.namespace, stored.name, null);
    this.scheduler.retireVersions(stored.namespace, stored.name);
    this.cluster?.functionChanged(stored.namespace, stored.name);
    this.metrics.noteDeployed(stored.namespace, stored.name);
    return stored;
  }

  /**
   * The action a reference names as its namespace sees it: in the namespace, in one of its
   * packages or bindings, or (`owner/package/action`) in another namespace's shared package.
   */
  findAction(ref: FunctionRef): Promise<ActionVersion | undefined> {
    return this.packages.resolve(ref);
  }

  async deleteAction(namespace: string, name: string): Promise<ActionVersion> {
    const deleted = await this.store.deleteAction(namespace, name);
    this.actions.forget(namespace, name);
    if (deleted) this.cluster?.announce({ kind: 'action', namespace, name });
    if (!deleted) throw notFound(`The action "${name}" does not exist in namespace "${namespace}".`);
    this.scheduler.retireVersions(namespace, name);
    this.cluster?.functionChanged(namespace, name);
    return deleted;
  }

  /**
   * Sets how many instances a function keeps provisioned (OpenFaaS's scale-function), in place of
   * its minInstances annotation. It is a setting of the function, not of a version: nothing new is
   * stored as a version and no instance is retired. Missing instances start now, idle ones beyond
   * the count go now; the count holds across new versions and restarts.
   */
  async scaleFunction(namespace: string, name: string, count: number): Promise<void> {
    const action = await this.actions.get(namespace, name);
    if (!action) throw notFound(`The action "${name}" does not exist in namespace "${namespace}".`);
    if (action.sequence)
      throw badRequest(`"${name}" is a sequence: it runs no code of its own, so it has no instances to scale.`);
    const most = Math.min(SETTING_LIMITS.minInstances.max, storedFunctionSettings(action).maxInstances);
    if (!Number.isInteger(count) || count < 0 || count > most) {
      throw badRequest(`The provisioned instances must be an integer from 0 to ${most}; got ${count}.`);
    }
    if (!(await this.store.setProvisionedInstances(namespace, name, count))) {
      throw notFound(`The action "${name}" does not exist in namespace "${namespace}".`);
    }
    if (this.cluster) {
      // Each invoker works out its share of the count (see ClusterProvisioning).
      this.cluster.announce({ kind: 'scale', namespace, name });
      this.cluster.functionChanged(namespace, name);
      return;
    }
    // Read again: a version deployed meanwhile is the one to provision.
    const latest = (await this.actions.get(namespace, name)) ?? action;
    if (latest.sequence || latest.exec.code === '' || !this.backends.has(latest.isolation)) {
      this.scheduler.setScale(namespace, name, count);
    } else {
      this.scheduler.scale(latest, count);
    }
  }

  /**
   * A namespace's instances on every invoker of the cluster, by function, version and invoker, as
   * the invokers said in their last heartbeats (starting or running, and of those started). Empty
   * when the server runs alone.
   */
  clusterInstances(namespace: string): { name: string; version: string; invoker: string; live: number; ready: number }[] {
    if (!this.cluster) return [];
    const prefix = `${namespace}/`;
    const rows: { name: string; version: string; invoker: string; live: number; ready: number }[] = [];
    for (const invoker of this.cluster.view.current()) {
      for (const [pool, live] of Object.entries(invoker.live)) {
        if (!pool.startsWith(prefix)) continue;
        // A pool key is namespace/name@version#revision; names hold no '@'.
        const rest = pool.slice(prefix.length);
        const at = rest.lastIndexOf('@');
        const hash = rest.indexOf('#', at);
        if (at <= 0 || hash < 0) continue;
        rows.push({
          name: rest.slice(0, at),
          version: rest.slice(at + 1, hash),
          invoker: invoker.id,
          live,
          ready: invoker.ready[pool] ?? 0,
        });
      }
    }
    return rows.sort((a, b) => (a.name === b.name ? (a.invoker < b.invoker ? -1 : 1) : a.name < b.name ? -1 : 1));
  }

  /**
   * A function's instances, every version: starting or running, of those the started ones, how
   * many it keeps provisioned, and its finished activations. This server's (activations since it
   * started), or in a cluster the invokers' as of their last heartbeats, the count in the
   * database, and the records stored there (every invoker's; retention removes old ones).
   */
  async functionCounts(
    action: ActionVersion,
  ): Promise<{ live: number; ready: number; provisioned: number; invocations: number }> {
    if (this.cluster) {
      const settings = storedFunctionSettings(action);
      const [scaled, invocations] = await Promise.all([
        this.store.provisionedInstances(),
        this.store.countFinishedActivations(action.namespace, action.name),
      ]);
      const count = scaled.find((entry) => entry.namespace === action.namespace && entry.name === action.name)?.count;
      return {
        ...this.cluster.view.replicasOf(action.namespace, action.name),
        provisioned: Math.min(count ?? settings.minInstances, settings.maxInstances),
        invocations,
      };
    }
    const own = this.scheduler.stats().functions.find((fn) => fn.namespace === action.namespace && fn.action === action.name);
    const count = (states: readonly string[]) =>
      (own?.instances ?? []).filter((i) => states.includes(i.state)).reduce((sum, i) => sum + i.count, 0);
    return {
      live: count(['starting', 'idle', 'busy']),
      ready: count(['idle', 'busy']),
      provisioned: this.scheduler.settingsOf(action).minInstances,
      invocations: this.metrics.activations.total(action.namespace, action.name),
    };
  }

  /**
   * Sets annotations on a finished activation (those of the same keys are replaced), for what is
   * learnt after it ended, such as the delivery of its result to a callback. Waits up to `waitMs`
   * for the record to be stored; false when it never was (or the namespace has no such activation).
   */
  annotateActivation(namespace: string, activationId: string, entries: readonly KeyValue[], waitMs?: number): Promise<boolean> {
    return this.store.annotateActivation(namespace, activationId, entries, waitMs);
  }

  /** The URL the server answers on, which functions see as `__OW_API_HOST`. */
  setApiHost(url: string): void {
    this.invoker.apiHost = url;
  }

  // ---- invocations ------------------------------------------------------------------------

  /**
   * The one way in for every invocation: each door and trigger builds a command, and formats the
   * outcome. Throws only when the platform itself fails (the store, say).
   */
  async invoke(command: InvokeCommand): Promise<InvokeOutcome> {
    if (command.mode === 'dry-run' || !this.inSystemNamespace(command.function) || !(await this.isSystemFeed(command.function)))
      return this.invocations.invoke(command);
    // A system feed's event takes effect on the caller's trigger as the run ends, so it always
    // runs to completion, blocking or not (OpenWhisk's tools invoke feeds blocking anyway).
    const caller = command.caller;
    if (caller.kind !== 'namespace') return { kind: 'not-found', message: 'The requested resource does not exist.' };
    return this.invocations.invoke({
      ...command,
      mode: 'sync',
      applyResult: (result) => this.triggers.applyFeed(caller.namespace, result),
    });
  }

  /** Checked before isSystemFeed without a turn of the event loop: every invocation asks. */
  private inSystemNamespace(ref: FunctionRef): boolean {
    return ownerRef(ref.namespace, ref.name).namespace === SYSTEM_NAMESPACE;
  }

  /** The catalogue's feed actions (alarms): the platform applies their answers to triggers. */
  private async isSystemFeed(ref: FunctionRef): Promise<boolean> {
    if (!this.inSystemNamespace(ref)) return false;
    const fn = await this.packages.resolve(ref);
    return fn !== undefined && annotationValue(fn.annotations, FEED_ANNOTATION) === 'alarms';
  }

  /**
   * Installs the system catalogue (`whisk.system`: its packages, shared with every namespace,
   * and their actions), or brings it up to date: a version is stored only for what changed.
   */
  private async installCatalogue(): Promise<void> {
    for (const pkg of CATALOGUE) {
      const stored = await this.store.packages.get(SYSTEM_NAMESPACE, pkg.name);
      const wanted = {
        namespace: SYSTEM_NAMESPACE,
        name: pkg.name,
        parameters: pkg.parameters,
        annotations: pkg.annotations,
        publish: true,
      };
      if (
        !stored ||
        !sameJson([stored.parameters, stored.annotations, stored.publish], [wanted.parameters, wanted.annotations, true])
      )
        await this.store.packages.put(wanted, { overwrite: true });
      for (const action of pkg.actions) {
        const name = `${pkg.name}/${action.name}`;
        const requested = annotationValue(action.annotations, 'isolation');
        const draft: ActionDraft = {
          namespace: SYSTEM_NAMESPACE,
          name,
          exec: { kind: action.kind, code: action.code, binary: false, main: action.main },
          limits: DEFAULT_LIMITS,
          parameters: action.parameters,
          annotations: action.annotations,
          isolation: resolveIsolation(action.kind, requested),
        };
        const current = await this.actions.get(SYSTEM_NAMESPACE, name);
        if (
          current &&
          sameJson(
            [current.exec, current.limits, current.parameters, current.annotations, current.isolation],
            [draft.exec, draft.limits, draft.parameters, draft.annotations, draft.isolation],
          )
        )
          continue;
        // Trusted, plain CommonJS: nothing to build, and stored whichever backends are up yet.
        const saved = await this.store.putAction(draft, { overwrite: true });
        this.actions.remember(saved);
        this.scheduler.retireVersions(saved.namespace, saved.name, saved.revision);
      }
    }
  }

  /**
   * After a restart: queued and interrupted activations (see `InvokePath.recover`), cron triggers,
   * and the instances of functions that keep some provisioned.
   */
  async recover(): Promise<{ failed: number; resumed: number; retried: number }> {
    if (this.cluster) {
      // In a cluster accepted work waits in the work stream, which redelivers what a dead invoker
      // held; a controller's restart has nothing of its own to recover.
      if (this.cluster.servesDoors) await this.triggers.start();
      return { failed: 0, resumed: 0, retried: 0 };
    }
    const recovered = await this.invocations.recover();
    await this.triggers.start();
    for (const scaled of await this.store.provisionedInstances())
      this.scheduler.setScale(scaled.namespace, scaled.name, scaled.count);
    for (const action of await this.store.allActions()) {
      if (
        !action.sequence &&
        action.exec.code !== '' &&
        this.scheduler.settingsOf(action).minInstances > 0 &&
        this.backends.has(action.isolation)
      )
        this.scheduler.provision(action);
    }
    return recovered;
  }

  async close(): Promise<void> {
    await this.cluster?.leave();
    this.triggers.stop();
    await this.retention.stop();
    this.invocations.stopRetries();
    await this.scheduler.close();
    await this.invocations.settled();
    await Promise.all([...this.backends.values()].map((b) => b.close()));
    await this.cluster?.close();
    await this.store.close();
  }
}

/**
 * In a cluster the guest namespace is shared: a server without ISOLA_GUEST_AUTH takes the stored
 * credentials (and keeps a copy in its data dir for the CLI there) rather than replacing them.
 */
async function storedGuestAuth(store: Store, dataDir: string): Promise<Credentials | undefined> {
  const row = await store.getNamespace(GUEST_NAMESPACE);
  const stored = row && (await store.keyOf(row.uuid));
  if (!row || !stored) return undefined;
  const credentials = { uuid: row.uuid, key: stored.key };
  writeFileSync(join(dataDir, GUEST_AUTH_FILE), `${formatAuth(credentials)}\n`, { mode: 0o600 });
  return credentials;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
