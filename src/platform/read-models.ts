import { conflict } from '../core/errors.js';
import { SYSTEM_NAMESPACE } from '../core/names.js';
import type { ActionVersion, ActivationRecord } from '../core/types.js';
import type {
  ActivationQuery,
  ListPage,
  NamespacePurge,
  NamespaceRow,
  RuleRecord,
  Store,
  TriggerRecord,
} from '../store/store.js';
import type { Credentials } from './credentials.js';

// The doors see these shapes through the platform; only src/platform talks to the store.
export type { ActivationQuery, ListPage, NamespacePurge, NamespaceRow, RuleRecord, TriggerRecord };

/**
 * Actions as the doors read them. The latest version of each is cached: it is read on every
 * invocation, and only the platform changes it (deploy and delete update the cache).
 */
export class Actions {
  private readonly latest = new Map<string, ActionVersion>();

  constructor(private readonly store: Store) {}

  /** The latest version, or the stored version named. */
  async get(namespace: string, name: string, version?: string): Promise<ActionVersion | undefined> {
    if (version !== undefined) return this.store.getAction(namespace, name, version);
    const key = actionKey(namespace, name);
    const cached = this.latest.get(key);
    if (cached) return cached;
    const action = await this.store.getAction(namespace, name);
    if (action) this.latest.set(key, action);
    return action;
  }

  list(namespace: string, page: ListPage): Promise<ActionVersion[]> {
    return this.store.listActions(namespace, page);
  }

  versions(namespace: string, name: string): Promise<ActionVersion[]> {
    return this.store.listVersions(namespace, name);
  }

  /** @internal The platform stored a new latest version. */
  remember(action: ActionVersion): void {
    this.latest.set(actionKey(action.namespace, action.name), action);
  }

  /** @internal Everything cached goes (a cluster's server may have missed change notices). */
  forgetAll(): void {
    this.latest.clear();
  }

  /** @internal The platform deleted an action, or (without a name) a whole namespace. */
  forget(namespace: string, name?: string): void {
    if (name !== undefined) {
      this.latest.delete(actionKey(namespace, name));
      return;
    }
    for (const key of this.latest.keys()) if (key.startsWith(`${namespace}/`)) this.latest.delete(key);
  }
}

/** Activation records, finished ones only (a run under way has no record yet). */
export class Activations {
  constructor(private readonly store: Store) {}

  get(namespace: string, activationId: string): Promise<ActivationRecord | undefined> {
    return this.store.getActivation(namespace, activationId);
  }

  list(namespace: string, query: ActivationQuery): Promise<ActivationRecord[]> {
    return this.store.listActivations(namespace, query);
  }

  /** Calls and failures per function and per `bucketMs` since `since`. */
  activity(namespace: string, since: number, bucketMs: number) {
    return this.store.activationActivity(namespace, since, bucketMs);
  }

  /** Start, duration, status and annotations of finished activations since `since`, newest first. */
  timings(namespace: string, since: number, name: string | undefined, limit: number) {
    return this.store.activationTimings(namespace, since, name, limit);
  }

  /** When each function of the namespace last ran. */
  lastCalls(namespace: string): Promise<Map<string, number>> {
    return this.store.lastActivations(namespace);
  }
}

/** Namespaces and their keys, for the operator's door and for signature checks. */
export class Namespaces {
  constructor(
    private readonly store: Store,
    private readonly purge: (name: string) => Promise<NamespacePurge | undefined>,
  ) {}

  list(): Promise<NamespaceRow[]> {
    return this.store.listNamespaces();
  }

  create(name: string, credentials: Credentials): Promise<NamespaceRow> {
    if (name === SYSTEM_NAMESPACE) throw conflict(`The namespace "${name}" is the system catalogue's: it cannot be created.`);
    return this.store.createNamespace(name, credentials.uuid, credentials.key);
  }

  /** Deletes a namespace and everything in it (see `Platform.deleteNamespace`); undefined when there is none. */
  delete(name: string): Promise<NamespacePurge | undefined> {
    return this.purge(name);
  }

  /** The namespace and key an access key id (a namespace uuid) stands for: what a signature is checked against. */
  keyOf(uuid: string): Promise<{ namespace: string; key: string } | undefined> {
    return this.store.keyOf(uuid);
  }
}

/** OpenWhisk's rules: which trigger starts which action. */
export class Rules {
  constructor(private readonly store: Store) {}

  get(namespace: string, name: string): Promise<RuleRecord | undefined> {
    return this.store.getRule(namespace, name);
  }

  async list(namespace: string, page: ListPage): Promise<RuleRecord[]> {
    return (await this.store.listRules(namespace)).slice(page.skip, page.skip + page.limit);
  }

  forTrigger(namespace: string, trigger: string): Promise<RuleRecord[]> {
    return this.store.rulesFor(namespace, trigger);
  }

  put(input: Omit<RuleRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<RuleRecord> {
    return this.store.putRule(input, options);
  }

  setStatus(namespace: string, name: string, status: RuleRecord['status']): Promise<void> {
    return this.store.setRuleStatus(namespace, name, status);
  }

  delete(namespace: string, name: string): Promise<RuleRecord | undefined> {
    return this.store.deleteRule(namespace, name);
  }
}

function actionKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}
