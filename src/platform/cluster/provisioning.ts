import type { ActionVersion } from '../../core/types.js';
import { storedFunctionSettings } from '../../scheduler/function-settings.js';
import { functionKey } from '../../scheduler/keep-alive.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import type { Store } from '../../store/store.js';
import type { ClusterView } from './controller.js';

/**
 * How many of `total` provisioned instances the invoker `self` keeps, given the invokers that can
 * run the function in ring order from its home: shared out evenly, the remainder to the first in
 * that order (so one instance lives on the function's home invoker). 0 when `self` is not among them.
 */
export function provisionedShare(total: number, order: readonly string[], self: string): number {
  const index = order.indexOf(self);
  if (index < 0 || total <= 0) return 0;
  return Math.floor(total / order.length) + (index < total % order.length ? 1 : 0);
}

export interface ClusterProvisioningOptions {
  store: Store;
  scheduler: Scheduler;
  view: ClusterView;
  /** This invoker's id (what the registry lists it as). */
  self: string;
  /** This invoker keeps instances of `action` from now on. */
  provisioned: (action: ActionVersion) => void;
  warn: (message: string) => void;
}

/**
 * An invoker's part of a cluster's provisioned instances (a function's minInstances annotation,
 * or its count set by scaling): every invoker works out the same split from the registry and the
 * database and starts its own share, so nothing coordinates but the membership all of them see.
 * The split is worked out again when membership changes (an invoker joins, drains or dies: the
 * others take over its share) and when a function changes.
 */
export class ClusterProvisioning {
  /** The share this invoker applied, by function: so that a function no longer provisioned gives its instances up. */
  private readonly applied = new Map<string, number>();
  private membership = '';
  private stopWatching: (() => void) | undefined;
  private pending: { all: boolean; functions: Map<string, { namespace: string; name: string }> } = {
    all: false,
    functions: new Map(),
  };
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: ClusterProvisioningOptions) {}

  /** Provisions this invoker's shares now and follows membership from here on. */
  start(): void {
    this.membership = this.options.view.membershipKey();
    this.stopWatching = this.options.view.onChange(() => {
      const key = this.options.view.membershipKey();
      if (key === this.membership) return;
      this.membership = key;
      this.reconcileAll();
    });
    this.reconcileAll();
  }

  /** Every function's share is worked out again (at start, after membership changed or notices were missed). */
  reconcileAll(): void {
    this.pending.all = true;
    this.schedule();
  }

  /** One function changed (deployed, scaled, deleted): its share is worked out again. */
  functionChanged(namespace: string, name: string): void {
    this.pending.functions.set(functionKey({ namespace, name }), { namespace, name });
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.stopWatching?.();
  }

  private schedule(): void {
    if (this.stopped || this.timer || this.running) return;
    // A burst of notices (a heartbeat round, a deploy seen twice) is handled once.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.reconcile()
        .catch((error: unknown) => this.options.warn(`provisioning: ${error instanceof Error ? error.message : String(error)}`))
        .finally(() => {
          this.running = undefined;
          if (this.pending.all || this.pending.functions.size > 0) this.schedule();
        });
    }, 100);
  }

  private async reconcile(): Promise<void> {
    const { all, functions } = this.pending;
    this.pending = { all: false, functions: new Map() };
    const scaled = new Map(
      (await this.options.store.provisionedInstances()).map((entry) => [functionKey(entry), entry.count] as const),
    );
    const actions = all
      ? await this.options.store.allActions()
      : (
          await Promise.all(
            [...functions].map(async ([key, { namespace, name }]) => {
              const action = await this.options.store.getAction(namespace, name);
              // Deleted: its instances were retired with it (see Platform.evict).
              if (!action) this.applied.delete(key);
              return action;
            }),
          )
        ).filter((action): action is ActionVersion => action !== undefined);
    const seen = new Set<string>();
    for (const action of actions) {
      if (this.stopped) return;
      const key = functionKey(action);
      seen.add(key);
      this.apply(action, scaled.get(key));
    }
    // After a full pass, functions gone from the database since have nothing left to keep.
    if (all) for (const key of this.applied.keys()) if (!seen.has(key)) this.applied.delete(key);
  }

  private apply(action: ActionVersion, scaledCount: number | undefined): void {
    const key = functionKey(action);
    if (action.sequence || action.exec.code === '') {
      // Nothing of it runs here any more (its instances were retired with the change).
      this.applied.delete(key);
      return;
    }
    const settings = storedFunctionSettings(action);
    const total = Math.min(scaledCount ?? settings.minInstances, settings.maxInstances);
    const share = provisionedShare(total, this.options.view.provisionOrder(action), this.options.self);
    if (share > 0) this.options.provisioned(action);
    if (share > 0 || this.applied.has(key)) {
      // Starts what is missing, or gives up idle instances beyond the share.
      this.options.scheduler.scale(action, share);
    } else if (total > 0) {
      // Not this invoker's to keep: instances calls start here expire as usual, the annotation notwithstanding.
      this.options.scheduler.setScale(action.namespace, action.name, 0);
    }
    if (share > 0) this.applied.set(key, share);
    else this.applied.delete(key);
  }
}
