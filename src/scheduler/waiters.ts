/**
 * Calls waiting for an instance, in two parts: the fair order in which they are served (pure
 * data, used by placement's decisions) and the calls themselves (their promises and their queue
 * timeouts, kept by the scheduler).
 */

/** A waiting call as the fair queue sees it. */
export interface Queued {
  readonly id: number;
  readonly namespace: string;
}

/** Namespaces remembered as served; beyond this the least recently served are forgotten. */
const MAX_REMEMBERED_NAMESPACES = 4096;

/**
 * The order of waiting calls: namespaces take turns, the least recently served first (so one that
 * just had an instance yields it to another that waits), and within a namespace calls go first
 * come, first served. No timers, no I/O.
 */
export class FairQueue<T extends Queued> {
  /** Waiting calls per namespace, in arrival order. */
  private readonly queues = new Map<string, T[]>();
  /** When each namespace was last served (a counter): the least recently served goes first. */
  private readonly lastServed = new Map<string, number>();
  private serveCount = 0;
  private readonly byId = new Map<number, T>();

  get size(): number {
    return this.byId.size;
  }

  has(id: number): boolean {
    return this.byId.has(id);
  }

  values(): IterableIterator<T> {
    return this.byId.values();
  }

  add(item: T): void {
    if (this.byId.has(item.id)) return;
    let queue = this.queues.get(item.namespace);
    if (!queue) {
      queue = [];
      this.queues.set(item.namespace, queue);
    }
    queue.push(item);
    this.byId.set(item.id, item);
  }

  /** Takes a call out of the queue; undefined if it was not in it. */
  remove(id: number): T | undefined {
    const item = this.byId.get(id);
    if (!item) return undefined;
    this.byId.delete(id);
    const queue = this.queues.get(item.namespace) as T[];
    queue.splice(queue.indexOf(item), 1);
    if (queue.length === 0) this.queues.delete(item.namespace);
    return item;
  }

  /**
   * Namespaces with calls waiting, in the order they take their turn now, each with its calls in
   * arrival order (the queue itself, not a copy: read it before changing the queue).
   */
  turns(): { namespace: string; calls: readonly T[] }[] {
    const rank = (namespace: string) => this.lastServed.get(namespace) ?? -1;
    return [...this.queues.entries()].sort(([a], [b]) => rank(a) - rank(b)).map(([namespace, calls]) => ({ namespace, calls }));
  }

  /** A namespace had a call served: it goes to the back of the round. */
  served(namespace: string): void {
    this.lastServed.delete(namespace);
    this.lastServed.set(namespace, ++this.serveCount);
    // Bounded: the least recently served are forgotten, which only moves them to the front.
    if (this.lastServed.size > MAX_REMEMBERED_NAMESPACES) {
      for (const forgotten of [...this.lastServed.keys()].slice(0, MAX_REMEMBERED_NAMESPACES / 2))
        this.lastServed.delete(forgotten);
    }
  }
}

/** A call waiting for its instance, with what the caller attached to it. */
export interface Waiter<P> {
  readonly id: number;
  readonly payload: P;
  /** ms since the epoch when the call arrived. */
  readonly arrived: number;
}

interface Pending<P, V> extends Waiter<P> {
  timer: NodeJS.Timeout | undefined;
  resolve: (value: V) => void;
  reject: (error: Error) => void;
}

export interface WaitersOptions<P> {
  /** How long a call may wait in the queue before it fails. */
  timeoutMs: number;
  /**
   * The queue timeout of a call passed: take it out of the queue and say whether it was still
   * there (it is then rejected with `timeoutError`); false leaves it be.
   */
  onTimeout: (waiter: Waiter<P>) => boolean;
  timeoutError: () => Error;
  /** A call will not be served: called before its promise rejects. */
  onRejected?: (waiter: Waiter<P>) => void;
}

/**
 * The calls themselves: each is a promise settled once (served, refused, failed or timed out),
 * and a queue timeout that runs only while the call waits in the queue.
 */
export class Waiters<P, V> {
  private readonly pending = new Map<number, Pending<P, V>>();
  private nextId = 1;

  constructor(private readonly options: WaitersOptions<P>) {}

  get size(): number {
    return this.pending.size;
  }

  get(id: number): Waiter<P> | undefined {
    return this.pending.get(id);
  }

  values(): IterableIterator<Waiter<P>> {
    return this.pending.values();
  }

  /** A new call; `id` names it to placement. */
  add(payload: P, arrived: number): { id: number; promise: Promise<V> } {
    const id = this.nextId++;
    const promise = new Promise<V>((resolve, reject) => {
      this.pending.set(id, { id, payload, arrived, timer: undefined, resolve, reject });
    });
    return { id, promise };
  }

  /** The call waits in the queue: its timeout runs from now. */
  queued(id: number): void {
    const waiter = this.pending.get(id);
    if (!waiter) return;
    clearTimeout(waiter.timer);
    waiter.timer = setTimeout(() => {
      waiter.timer = undefined;
      if (this.pending.get(id) === waiter && this.options.onTimeout(waiter)) this.reject(id, this.options.timeoutError());
    }, this.options.timeoutMs);
  }

  /** The call left the queue (an instance is starting for it): no timeout any more. */
  dequeued(id: number): void {
    const waiter = this.pending.get(id);
    if (!waiter) return;
    clearTimeout(waiter.timer);
    waiter.timer = undefined;
  }

  /** Serves the call; false if it was already settled. */
  resolve(id: number, value: V): boolean {
    const waiter = this.take(id);
    waiter?.resolve(value);
    return waiter !== undefined;
  }

  /** Fails the call; false if it was already settled. */
  reject(id: number, error: Error): boolean {
    const waiter = this.take(id);
    if (!waiter) return false;
    this.options.onRejected?.(waiter);
    waiter.reject(error);
    return true;
  }

  rejectAll(error: () => Error): void {
    for (const id of [...this.pending.keys()]) this.reject(id, error());
  }

  private take(id: number): Pending<P, V> | undefined {
    const waiter = this.pending.get(id);
    if (!waiter) return undefined;
    this.pending.delete(id);
    clearTimeout(waiter.timer);
    return waiter;
  }
}
