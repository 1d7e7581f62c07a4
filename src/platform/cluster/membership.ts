import { randomBytes } from 'node:crypto';
import { Bus, type LiveInvoker, leaseKey } from '../../cluster/bus.js';
import type { Role } from '../../config.js';
import type { ActionVersion } from '../../core/types.js';
import type { Backend, BackendStatus } from '../../sandbox/backend.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import type { Store } from '../../store/store.js';
import type { Invoker } from '../invoker.js';
import { ClusterExecutor, ClusterView } from './controller.js';
import { defaultInvokerId, InvokerRole } from './invoker-role.js';
import { ClusterProvisioning } from './provisioning.js';

/** What one process tells the others to drop from their caches. */
export type CacheChange =
  | { kind: 'action' | 'package' | 'trigger' | 'scale'; namespace: string; name: string }
  | { kind: 'namespace'; namespace: string };

interface ChangeNotice {
  origin: string;
  change: CacheChange;
}

export interface ClusterOptions {
  natsUrl: string;
  role: Role;
  store: Store;
  warn: (message: string) => void;
}

/**
 * This process's part in a cluster: the connection to NATS, and as a controller the view of the
 * invokers and the executor that places calls on them; as an invoker (joined once the platform
 * is built, see `serveAsInvoker`) the role that runs what controllers send.
 */
export class ClusterMembership {
  /** Names this process in change notices and leases. */
  readonly processId = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private invokerRole: InvokerRole | undefined;
  private provisioning: ClusterProvisioning | undefined;
  private following: { stop(): void } | undefined;

  private constructor(
    readonly bus: Bus,
    readonly role: Role,
    /** The invokers as last heard of. */
    readonly view: ClusterView,
    readonly executor: ClusterExecutor | undefined,
  ) {}

  static async join(options: ClusterOptions): Promise<ClusterMembership> {
    const bus = await Bus.connect({ url: options.natsUrl, name: `isola-${options.role}-${process.pid}`, log: options.warn });
    try {
      const view = await ClusterView.follow(bus);
      if (options.role === 'invoker') return new ClusterMembership(bus, options.role, view, undefined);
      const executor = new ClusterExecutor({ bus, store: options.store, view, warn: options.warn });
      return new ClusterMembership(bus, options.role, view, executor);
    } catch (error) {
      await bus.close();
      throw error;
    }
  }

  /** Whether this process runs functions (an invoker, or an all-in-one server in a cluster). */
  get runsFunctions(): boolean {
    return this.role !== 'controller';
  }

  /** Whether this process serves the doors (a controller, or an all-in-one server). */
  get servesDoors(): boolean {
    return this.role !== 'invoker';
  }

  /** Starts running what controllers send this process. */
  async serveAsInvoker(parts: {
    store: Store;
    scheduler: Scheduler;
    invoker: Invoker;
    backends: ReadonlyMap<string, Backend>;
    statuses: readonly BackendStatus[];
    retryBaseMs: number;
    provisioned: (action: ActionVersion) => void;
    warn: (message: string) => void;
  }): Promise<void> {
    const ready = () => parts.statuses.filter((status) => status.available).map((status) => status.isolation);
    this.invokerRole = await InvokerRole.start({
      bus: this.bus,
      store: parts.store,
      scheduler: parts.scheduler,
      invoker: parts.invoker,
      id: defaultInvokerId(),
      backends: ready,
      minMemoryMb: () =>
        Object.fromEntries(
          ready().flatMap((isolation) => {
            const backend = parts.backends.get(isolation);
            return backend ? [[isolation, backend.minMemoryMb]] : [];
          }),
        ),
      retryBaseMs: parts.retryBaseMs,
      warn: parts.warn,
    });
    this.provisioning = new ClusterProvisioning({
      store: parts.store,
      scheduler: parts.scheduler,
      view: this.view,
      self: this.invokerRole.id,
      provisioned: parts.provisioned,
      warn: parts.warn,
    });
    this.provisioning.start();
  }

  /** A function was deployed, scaled or deleted: this invoker's share of its provisioned instances is worked out again. */
  functionChanged(namespace: string, name: string): void {
    this.provisioning?.functionChanged(namespace, name);
  }

  /** Notices may have been missed: every share is worked out again. */
  reprovision(): void {
    this.provisioning?.reconcileAll();
  }

  /** This process's invoker id, when it runs functions. */
  get invokerId(): string | undefined {
    return this.invokerRole?.id;
  }

  /** Takes one tick of a schedule for this process: true for exactly one process of the cluster. */
  async claimTick(key: string): Promise<boolean> {
    return (await this.bus.acquireLease(leaseKey('tick', key), this.processId)) !== undefined;
  }

  /** Tells the other processes to drop what they cache of `change`. */
  announce(change: CacheChange): void {
    this.bus.announceChange({ origin: this.processId, change } satisfies ChangeNotice);
  }

  /** Follows the others' change notices; `onGap` when some may have been missed. */
  followChanges(onChange: (change: CacheChange) => void, onGap: () => void): void {
    this.following = this.bus.followChanges((value) => {
      const notice = value as Partial<ChangeNotice> | null;
      if (!notice || notice.origin === this.processId || typeof notice.change !== 'object' || notice.change === null) return;
      const change = notice.change as Partial<CacheChange>;
      if (typeof change.namespace !== 'string') return;
      if (change.kind === 'namespace') onChange({ kind: 'namespace', namespace: change.namespace });
      else if (
        (change.kind === 'action' || change.kind === 'package' || change.kind === 'trigger' || change.kind === 'scale') &&
        typeof change.name === 'string'
      )
        onChange({ kind: change.kind, namespace: change.namespace, name: change.name });
    }, onGap);
  }

  /** The live invokers, read from the registry. */
  invokers(): Promise<LiveInvoker[]> {
    return this.bus.listInvokers();
  }

  /** Stops taking work (an invoker drains: calls under way end first), then leaves. */
  async leave(): Promise<void> {
    this.provisioning?.stop();
    await this.invokerRole?.drain();
    this.following?.stop();
    this.executor?.close();
    this.view?.stop();
  }

  async close(): Promise<void> {
    await this.bus.close();
  }
}
