import { hostname } from 'node:os';
import type { Bus, InvokerRegistration, WorkConsumer, WorkDelivery } from '../../cluster/bus.js';
import type { ActionVersion, ActivationRecord } from '../../core/types.js';
import { storedFunctionSettings } from '../../scheduler/function-settings.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import type { Store } from '../../store/store.js';
import type { Invocation, Invoker } from '../invoker.js';
import {
  decodeInvokeMessage,
  decodeWorkMessage,
  type InvokeAnswer,
  type InvokeMessage,
  viewOf,
  type WorkMessage,
} from './messages.js';

/** Stored versions an invoker keeps read. */
const VERSION_CACHE_SIZE = 1000;

export interface InvokerRoleOptions {
  bus: Bus;
  store: Store;
  scheduler: Scheduler;
  invoker: Invoker;
  /** Subject token naming this invoker in the cluster. */
  id: string;
  /** The backends ready here now (the set grows while slow ones finish their probes). */
  backends: () => string[];
  /** The least memory each backend gives an instance. */
  minMemoryMb: () => Record<string, number>;
  retryBaseMs: number;
  warn: (message: string) => void;
}

/** An invoker id from the host name and process: a subject token, unique while the process lives. */
export function defaultInvokerId(): string {
  const host = hostname()
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .slice(0, 40);
  return `${host || 'invoker'}-${process.pid}`;
}

/**
 * The invoker's part of a cluster: runs the calls controllers send it (blocking ones by
 * request/reply, asynchronous ones from the shared work stream of each backend it has), stores
 * their records, and says in the registry what it has and holds so that controllers can place
 * calls with warm affinity.
 */
export class InvokerRole {
  private draining = false;
  private registration: InvokerRegistration | undefined;
  private serving: { stop(): void } | undefined;
  private readonly consumers = new Map<string, WorkConsumer>();
  private readonly blocking = new Set<Promise<unknown>>();
  private poolTimer: NodeJS.Timeout | undefined;
  /** Stored versions by pool key, oldest first. */
  private readonly versions = new Map<string, ActionVersion>();

  private constructor(private readonly options: InvokerRoleOptions) {}

  static async start(options: InvokerRoleOptions): Promise<InvokerRole> {
    const role = new InvokerRole(options);
    options.invoker.recordAnnotations = [{ key: 'invoker', value: options.id }];
    role.serving = await options.bus.serveInvocations(options.id, decodeInvokeMessage, (message) =>
      role.track(role.invoke(message)),
    );
    await role.consumePools();
    // Slow backends become ready after the start: their pools are joined as they do.
    role.poolTimer = setInterval(() => {
      void role.consumePools().catch((error) => options.warn(`joining work pools: ${errorMessage(error)}`));
    }, 2000);
    role.poolTimer.unref();
    // Registered last: a controller that finds it can reach it.
    role.registration = await options.bus.registerInvoker(() => role.describe());
    return role;
  }

  get id(): string {
    return this.options.id;
  }

  private describe() {
    const snapshot = this.options.scheduler.placementSnapshot();
    return {
      id: this.options.id,
      host: hostname(),
      backends: this.options.backends(),
      minMemoryMb: this.options.minMemoryMb(),
      memoryBudgetMb: snapshot.memoryBudgetMb,
      memoryInUseMb: snapshot.memoryUsedMb,
      memoryIdleMb: snapshot.memoryIdleMb,
      warm: snapshot.warm,
      live: snapshot.live,
      ready: snapshot.ready,
      instances: snapshot.instances,
      draining: this.draining,
    };
  }

  /** Joins the work pool of every backend ready here that it has not joined yet. */
  private async consumePools(): Promise<void> {
    if (this.draining) return;
    // Fetch only what can start: the scheduler queues the rest, so a few per budget's worth of small instances.
    const concurrency = Math.max(2, Math.min(64, Math.floor(this.options.scheduler.placementSnapshot().memoryBudgetMb / 128)));
    let joined = false;
    for (const backend of this.options.backends()) {
      if (this.consumers.has(backend)) continue;
      const consumer = await this.options.bus.consumeWork(backend, { concurrency, decode: decodeWorkMessage }, (delivery) =>
        this.runWork(delivery),
      );
      if (this.draining) await consumer.stop();
      else this.consumers.set(backend, consumer);
      joined = true;
    }
    // Controllers learn of the new backend now, not at the next heartbeat.
    if (joined) await this.registration?.heartbeat();
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    this.blocking.add(promise);
    void promise.finally(() => this.blocking.delete(promise)).catch(() => {});
    return promise;
  }

  /** The version a message names, as its caller saw it. */
  private async versionOf(message: Pick<InvokeMessage, 'stored' | 'view'>): Promise<ActionVersion | undefined> {
    const { namespace, name, version, revision } = message.stored;
    // A stored version never changes (a new one has another revision): read once, kept a while.
    const key = `${namespace}/${name}@${version}#${revision}`;
    let stored = this.versions.get(key);
    if (!stored) {
      stored = await this.options.store.getAction(namespace, name, version);
      if (stored?.revision === revision) {
        if (this.versions.size >= VERSION_CACHE_SIZE) this.versions.delete(this.versions.keys().next().value as string);
        this.versions.set(key, stored);
      }
    }
    return viewOf(stored, message);
  }

  /** A blocking call: runs it and answers with its record (stored first unless the controller stores it). */
  private async invoke(message: InvokeMessage): Promise<InvokeAnswer> {
    // Taken even while draining: it came before the subscription ended, and the drain waits for it.
    const action = await this.versionOf(message);
    if (!action) throw new Error(`The action version ${message.stored.name}@${message.stored.version} no longer exists.`);
    const invocation: Invocation = {
      action,
      params: message.params,
      subject: message.subject,
      activationId: message.activationId,
      accepted: message.accepted,
      annotations: message.annotations,
      ...(message.clientContext !== undefined ? { clientContext: message.clientContext } : {}),
    };
    const record: ActivationRecord = message.storeRecord
      ? await this.options.invoker.invoke(invocation)
      : (await this.options.invoker.execute(invocation)).record;
    return { record };
  }

  /**
   * An asynchronous activation from the work stream. Its state in the database says what to do:
   * done (a second delivery after a commit whose acknowledgement was lost) is acknowledged;
   * running means the invoker that held it died mid-run, which counts as a failed attempt, as a
   * restart does on one host; queued runs. Acknowledged only once the record is committed.
   */
  private async runWork(delivery: WorkDelivery<WorkMessage>): Promise<void> {
    const { work } = delivery;
    const pending = await this.options.store.pendingActivation(work.activationId);
    if (!pending || pending.state === 'done') {
      // None: its caller was told it failed (the publish's acknowledgement was lost), or it was pruned.
      await delivery.ack();
      return;
    }
    const action = await this.versionOf(work);
    let queued = pending.queued;
    if (pending.state === 'running') {
      const attempt = queued.attempts + 1;
      if (queued.params === undefined || !action || attempt > storedFunctionSettings(action).retries) {
        await this.options.invoker.fail(
          { ...queued, attempts: attempt },
          'The invoker running this activation stopped before it ended, and it has no retries left.',
        );
        await delivery.ack();
        return;
      }
      await this.options.store.requeueActivation(queued.activationId, attempt, 0);
      queued = { ...queued, attempts: attempt, notBefore: 0 };
    }
    const record = await this.options.invoker.runQueued(queued, action, {
      maxRetries: action ? storedFunctionSettings(action).retries : 0,
      baseDelayMs: this.options.retryBaseMs,
      requeued: (again) => delivery.retry(Math.max(1, again.notBefore - Date.now())),
    });
    if (record) await delivery.ack();
  }

  /**
   * Stops taking work and drains: says so in the registry (controllers stop placing calls here),
   * lets the calls under way end, then leaves the registry.
   */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    clearInterval(this.poolTimer);
    await this.registration?.heartbeat().catch((error) => this.options.warn(`announcing the drain: ${errorMessage(error)}`));
    // Unsubscribed: a request sent before the drain was seen finds no one and goes elsewhere.
    this.serving?.stop();
    await Promise.all([...this.consumers.values()].map((consumer) => consumer.stop()));
    this.consumers.clear();
    await Promise.allSettled([...this.blocking]);
    await this.registration?.deregister().catch((error) => this.options.warn(`leaving the registry: ${errorMessage(error)}`));
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
