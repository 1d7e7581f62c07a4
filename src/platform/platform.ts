import type { ServerConfig } from '../config.js';
import { badRequest, notFound, tooManyRequests, unavailable } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import type { Isolation } from '../core/kinds.js';
import type { ActionVersion, ActivationRecord, KeyValue } from '../core/types.js';
import type { Backend, BackendStatus } from '../sandbox/backend.js';
import { BackendSet, BackendUnavailableError } from '../sandbox/registry.js';
import { functionSettings, storedFunctionSettings } from '../scheduler/function-settings.js';
import { parsePolicy } from '../scheduler/policy.js';
import { QueueFullError, Scheduler, TooBigError } from '../scheduler/scheduler.js';
import { ActivationRetention } from '../store/retention.js';
import { type NamespacePurge, type QueuedActivation, Store } from '../store/store.js';
import { type Credentials, ensureDataDir, GUEST_NAMESPACE, loadOrCreateGuestAuth, parseAuth } from './credentials.js';
import { type Invocation, Invoker } from './invoker.js';
import { Metrics } from './metrics.js';
import { Triggers } from './triggers.js';

export type ActionDraft = Omit<ActionVersion, 'version' | 'revision' | 'updated'>;

export type BlockingOutcome = { done: true; record: ActivationRecord } | { done: false; activationId: string };

const AUTH_CACHE_MS = 10_000;

export interface PlatformEvents {
  warn?: (message: string) => void;
  /** A line about a backend being probed in the background: what it does, then ready or why not. */
  backend?: (isolation: Isolation, message: string) => void;
}

/** Everything behind the doors: store, backends, scheduler and the invoker, wired together. */
export class Platform {
  private readonly latest = new Map<string, ActionVersion>();
  private readonly authCache = new Map<string, { namespace: string | undefined; expires: number }>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  readonly triggers: Triggers;
  private readonly retention: ActivationRetention;

  private constructor(
    readonly config: ServerConfig,
    readonly store: Store,
    readonly backends: ReadonlyMap<Isolation, Backend>,
    readonly backendStatuses: readonly BackendStatus[],
    readonly scheduler: Scheduler,
    readonly metrics: Metrics,
    readonly invoker: Invoker,
    readonly guest: Credentials,
    private readonly events: PlatformEvents,
  ) {
    this.triggers = new Triggers({
      store,
      getAction: (namespace, name) => this.getAction(namespace, name),
      invokeAsync: (action, params, subject, annotations) => this.invokeAsync(action, params, subject, annotations),
      warn: (message) => events.warn?.(message),
    });
    this.retention = new ActivationRetention(
      store,
      {
        maxAgeMs: config.activationRetentionMs,
        perNamespace: config.activationsPerNamespace,
        intervalMs: config.retentionIntervalMs,
      },
      (message) => events.warn?.(message),
    );
    this.retention.start();
  }

  static async start(config: ServerConfig, events: PlatformEvents = {}): Promise<Platform> {
    ensureDataDir(config.dataDir);
    const store = await Store.open({
      dataDir: config.dataDir,
      ...(config.databaseUrl ? { databaseUrl: config.databaseUrl } : {}),
    });
    const guest = config.guestAuth ? parseAuth(config.guestAuth) : loadOrCreateGuestAuth(config.dataDir);
    await store.setNamespaceCredentials(GUEST_NAMESPACE, guest.uuid, guest.key);
    // Probed in the background: `backends` and `statuses` are live (see BackendSet).
    let metrics: Metrics | undefined;
    const { backends, statuses } = new BackendSet(
      { dataDir: config.dataDir, ...config.backendSettings },
      config.backends,
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
      stemCells: Object.entries(config.prewarm)
        .filter(([isolation, count]) => backends.has(isolation as Isolation) && (count ?? 0) > 0)
        .map(([isolation, count]) => ({ isolation: isolation as Isolation, memoryMb: 256, count: count ?? 0 })),
      onBackgroundError: (message, error) => {
        // A backend that is not ready, or does not work here, has said so once already.
        if (error instanceof BackendUnavailableError) return;
        events.warn?.(`${message}: ${error instanceof Error ? error.message : String(error)}`);
      },
    });
    metrics = new Metrics(scheduler, { functions: config.metricsFunctions });
    const invoker = new Invoker(store, scheduler, metrics);
    return new Platform(config, store, backends, statuses, scheduler, metrics, invoker, guest, events);
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
    // After the purge: whatever was cached before it, or while it ran, goes.
    for (const [key, entry] of this.authCache) if (entry.namespace === name) this.authCache.delete(key);
    for (const trigger of triggers) this.triggers.unschedule(name, trigger.name);
    for (const key of this.latest.keys()) if (key.startsWith(`${name}/`)) this.latest.delete(key);
    const live = this.scheduler
      .stats()
      .functions.filter((fn) => fn.namespace === name)
      .map((fn) => fn.action);
    for (const action of new Set([...actions, ...live])) this.scheduler.retireVersions(name, action);
    this.metrics.forgetNamespace(name);
    return purge;
  }

  // ---- actions ----------------------------------------------------------------------------

  async deploy(draft: ActionDraft, overwrite: boolean): Promise<ActionVersion> {
    const backend = this.backends.get(draft.isolation);
    if (!backend) {
      const status = this.backendStatuses.find((s) => s.isolation === draft.isolation);
      throw badRequest(
        `The isolation backend "${draft.isolation}" is not available on this server: ${status?.detail ?? 'not enabled'}`,
      );
    }
    if (draft.limits.memory < backend.minMemoryMb) {
      throw badRequest(`limits.memory must be at least ${backend.minMemoryMb} MB under isolation "${draft.isolation}".`);
    }
    if (draft.limits.memory > this.config.memoryBudgetMb) {
      throw badRequest(
        `limits.memory of ${draft.limits.memory} MB exceeds this server's memory budget of ${this.config.memoryBudgetMb} MB ` +
          '(ISOLA_MEMORY_BUDGET_MB): no instance of it could ever run here.',
      );
    }
    try {
      // Everything the scheduler will build from the annotations is built once here, so that a
      // setting that only fails when used (a policy with no bins, say) is refused, not stored.
      functionSettings(draft).policy?.forFunction();
    } catch (error) {
      throw badRequest((error as Error).message);
    }
    await backend.validate?.(draft);
    const stored = await this.store.putAction(draft, { overwrite });
    this.latest.set(actionKey(stored.namespace, stored.name), stored);
    this.scheduler.retireVersions(stored.namespace, stored.name, stored.revision);
    this.metrics.noteDeployed(stored.namespace, stored.name);
    this.scheduler.provision(stored);
    return stored;
  }

  async getAction(namespace: string, name: string): Promise<ActionVersion | undefined> {
    const key = actionKey(namespace, name);
    const cached = this.latest.get(key);
    if (cached) return cached;
    const action = await this.store.getAction(namespace, name);
    if (action) this.latest.set(key, action);
    return action;
  }

  async requireAction(namespace: string, name: string): Promise<ActionVersion> {
    const action = await this.getAction(namespace, name);
    if (!action) throw notFound(`The action "${name}" does not exist in namespace "${namespace}".`);
    return action;
  }

  async deleteAction(namespace: string, name: string): Promise<ActionVersion> {
    const deleted = await this.store.deleteAction(namespace, name);
    this.latest.delete(actionKey(namespace, name));
    if (!deleted) throw notFound(`The action "${name}" does not exist in namespace "${namespace}".`);
    this.scheduler.retireVersions(namespace, name);
    return deleted;
  }

  // ---- invocations ------------------------------------------------------------------------

  /**
   * Runs an action and waits for it, up to the blocking wait (or `waitMs`, the caller's own
   * shorter bound); past that the caller gets the activation id and the record is stored when the
   * run ends.
   */
  async invokeBlocking(
    action: ActionVersion,
    params: Record<string, unknown>,
    subject: string,
    annotations: KeyValue[] = [],
    options: Pick<Invocation, 'checkResult'> & { waitMs?: number } = {},
  ): Promise<BlockingOutcome> {
    this.admit(action);
    const activationId = newActivationId();
    const accepted = Date.now();
    const { waitMs = this.config.blockingWaitMs, ...invocationOptions } = options;
    const run = this.invoker.invoke({ action, params, subject, activationId, accepted, annotations, ...invocationOptions });
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), Math.min(waitMs, this.config.blockingWaitMs));
    });
    let first: ActivationRecord | 'late';
    try {
      first = await Promise.race([run, waited]);
    } finally {
      // Also when the run rejects: a pending timer would keep its closure (and the process) alive.
      clearTimeout(timer);
    }
    if (first !== 'late') return { done: true, record: first };
    // The caller stops waiting; mark the activation as running so that a restart records it.
    this.track(
      this.store.enqueueActivation(
        {
          activationId,
          namespace: action.namespace,
          name: action.name,
          version: action.version,
          subject,
          accepted,
          // A blocking invocation is not run again after a restart: its parameters are not kept.
          params: undefined,
          annotations,
        },
        'running',
      ),
    );
    this.track(run);
    return { done: false, activationId };
  }

  /**
   * Before anything is recorded: 429 when the function's queue is full, 503 when it needs more
   * memory than this server's whole budget (it was stored before the budget was lowered).
   */
  private admit(action: ActionVersion): void {
    try {
      this.scheduler.admit(action);
    } catch (error) {
      if (error instanceof QueueFullError) throw tooManyRequests(error.message);
      if (error instanceof TooBigError) throw unavailable(error.message);
      throw error;
    }
  }

  /**
   * Accepts an invocation for later: stored durably before this resolves, then run in the
   * background, with retries (at least once: see `recover`).
   */
  async invokeAsync(
    action: ActionVersion,
    params: Record<string, unknown>,
    subject: string,
    annotations: KeyValue[] = [],
  ): Promise<string> {
    try {
      this.scheduler.assertFits(action);
    } catch (error) {
      if (error instanceof TooBigError) throw unavailable(error.message);
      throw error;
    }
    const { maxQueued } = storedFunctionSettings(action);
    if ((await this.store.countPending(action.namespace, action.name)) >= maxQueued) {
      throw tooManyRequests(
        `Too many invocations of ${action.namespace}/${action.name} are queued (at most ${maxQueued}); try again later.`,
      );
    }
    const queued: QueuedActivation = {
      activationId: newActivationId(),
      namespace: action.namespace,
      name: action.name,
      version: action.version,
      subject,
      accepted: Date.now(),
      params,
      annotations,
      attempts: 0,
      notBefore: 0,
    };
    await this.store.enqueueActivation(queued);
    this.dispatch(queued, action);
    return queued.activationId;
  }

  /** Runs a queued activation now, or when its retry is due. */
  private dispatch(queued: QueuedActivation, known?: ActionVersion): void {
    const delay = queued.notBefore - Date.now();
    if (delay > 0) {
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer);
        this.dispatch({ ...queued, notBefore: 0 }, known);
      }, delay);
      this.retryTimers.add(timer);
      return;
    }
    this.track(
      (async () => {
        const action = known ?? (await this.store.getAction(queued.namespace, queued.name, queued.version));
        const maxRetries = action ? storedFunctionSettings(action).retries : 0;
        await this.invoker.runQueued(queued, action, {
          maxRetries,
          baseDelayMs: this.config.retryBaseMs,
          requeued: (again) => this.dispatch(again, action),
        });
      })(),
    );
  }

  /**
   * After a restart, asynchronous invocations are delivered at least once: those still queued run,
   * and those that were running when the server stopped run again while they have retries left
   * (they may have had effects: functions that must not run twice set `retries: 0`). Blocking
   * invocations that were running are recorded as failed.
   */
  async recover(): Promise<{ failed: number; resumed: number; retried: number }> {
    let failed = 0;
    let retried = 0;
    // Read before the interrupted ones are put back in the queue.
    const queued = await this.store.queuedActivations();
    for (const pending of await this.store.interruptedActivations()) {
      const action = await this.store.getAction(pending.namespace, pending.name, pending.version);
      const attempt = pending.attempts + 1;
      if (pending.params !== undefined && action && attempt <= storedFunctionSettings(action).retries) {
        await this.store.requeueActivation(pending.activationId, attempt, 0);
        this.dispatch({ ...pending, attempts: attempt, notBefore: 0 }, action);
        retried++;
      } else {
        await this.invoker.fail(
          { ...pending, attempts: attempt },
          pending.params === undefined
            ? 'The server stopped while this blocking activation was running; blocking invocations are not run again.'
            : 'The server stopped while this activation was running, and it has no retries left.',
        );
        failed++;
      }
    }
    for (const activation of queued) this.dispatch(activation);
    await this.triggers.start();
    // Functions that keep instances provisioned get them back.
    for (const action of await this.store.allActions()) {
      if (storedFunctionSettings(action).minInstances > 0 && this.backends.has(action.isolation))
        this.scheduler.provision(action);
    }
    return { failed, resumed: queued.length, retried };
  }

  async close(): Promise<void> {
    this.triggers.stop();
    await this.retention.stop();
    for (const timer of this.retryTimers) clearTimeout(timer);
    await this.scheduler.close();
    await Promise.allSettled([...this.background]);
    await Promise.all([...this.backends.values()].map((b) => b.close()));
    await this.store.close();
  }

  private track(promise: Promise<unknown>): void {
    const tracked = promise.catch((error: unknown) =>
      this.events.warn?.(`background activation failed: ${error instanceof Error ? error.message : String(error)}`),
    );
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}

function actionKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
