// The messaging layer between controllers and invokers on several hosts: one typed wrapper over
// a NATS connection with JetStream (nats-server 2.9 or newer; nothing here needs a later
// server). It knows nothing of the platform: the roles decide what goes in the messages.
//
//   isola.work.<pool>        stream ISOLA_WORK: asynchronous work (async calls, trigger firings,
//                            retries), one durable work-queue consumer `work-<pool>` per pool
//   isola.invoke.<invoker>   request/reply: blocking calls to one invoker
//   KV isola-invokers        the invoker registry, entries live for the registry TTL
//   KV isola-leases          cluster-wide leases (a cron tick fires once)
//
// ("isola" is the prefix; several installations can share one NATS with different prefixes.)
import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { type KV, type KvEntry, Kvm } from '@nats-io/kv';
import {
  connect,
  type Msg,
  type NatsConnection,
  nanos,
  RequestError,
  type Subscription,
  TimeoutError,
} from '@nats-io/transport-node';
import { IsolaError } from '../core/errors.js';

export interface BusOptions {
  /** `nats://host:port`; several servers of one NATS cluster separated by commas. */
  url: string;
  /** The connection's name in the server's monitoring, e.g. `isola-invoker-<id>`. */
  name?: string;
  /** Names the stream, subjects and buckets (lowercase letters and digits): `isola` by default. */
  prefix?: string;
  /** How long an invoker stays registered without a heartbeat; it heartbeats every third of it. */
  registryTtlMs?: number;
  /**
   * How long a delivered work message may go without an acknowledgement or an in-progress signal
   * before it is delivered again (to any invoker of its pool). The bus signals progress every third
   * of it while a handler runs, so only a dead holder lets it lapse.
   */
  ackWaitMs?: number;
  /** How long a repeated message id (the activation id) is recognised as a duplicate. */
  duplicateWindowMs?: number;
  /** The lease bucket's TTL: a lease not renewed within it lapses; a tick's key must be taken within it. */
  leaseTtlMs?: number;
  /** Pause between reconnection attempts (it tries forever). */
  reconnectWaitMs?: number;
  /** Keep trying when the first connection fails instead of failing at once. */
  waitForServer?: boolean;
  /** Where the bus reports what it recovers from by itself (a failed heartbeat, a lost fetch). */
  log?: (message: string) => void;
}

export type BusStatus = 'connected' | 'disconnected' | 'closed';

/** What an invoker says of itself in the registry (refreshed by every heartbeat). */
export interface InvokerInfo {
  /** Letters, digits, `_` and `-`: it is a subject token (`isola.invoke.<id>`). */
  id: string;
  /** Where the invoker runs (its host name or address), for operators. */
  host: string;
  /** The isolation backends it has (`isolate`, `wasm`, `process`, ...). */
  backends: string[];
  /** The least memory each of its backends gives an instance (`limits.memory` below it is refused). */
  minMemoryMb: Record<string, number>;
  memoryBudgetMb: number;
  memoryInUseMb: number;
  /** The part of the memory in use that idle instances hold: given back when they are evicted. */
  memoryIdleMb: number;
  /** Per version (pool key), instances that could take one more call now: warm affinity. */
  warm: Record<string, number>;
  /** Per version, instances starting or running; `ready`: those started (for replica counts). */
  live: Record<string, number>;
  ready: Record<string, number>;
  instances: number;
  /** True once it stopped taking work (SIGTERM) and drains. */
  draining: boolean;
}

export interface LiveInvoker extends InvokerInfo {
  /** When its last heartbeat was stored (the NATS server's clock, ms since the epoch). */
  heartbeatAt: number;
}

export interface InvokerRegistration {
  /** Stores the invoker's description now (the bus also does every third of the TTL). */
  heartbeat(): Promise<void>;
  /** Stops the heartbeats and removes the entry: controllers stop placing work there at once. */
  deregister(): Promise<void>;
}

export interface InvokerWatch {
  /** The live invokers as last seen. */
  current(): LiveInvoker[];
  stop(): void;
}

export interface WorkDelivery<T> {
  readonly pool: string;
  readonly activationId: string;
  readonly work: T;
  /** 1 on the first delivery; more when a holder died or asked for a retry. */
  readonly deliveryCount: number;
  /**
   * The outcome is committed: the message is removed. True once the server confirmed; false when
   * the confirmation did not come, in which case the message may be delivered again (commits are
   * keyed by activation id, so the second delivery finds the record and just acknowledges).
   */
  ack(): Promise<boolean>;
  /** Deliver it again after `delayMs`, to any invoker of the pool. */
  retry(delayMs: number): void;
  /** Never deliver it again (it cannot be run; its failure is recorded elsewhere). */
  drop(): void;
}

export interface WorkConsumer {
  /** Takes no more work; resolves when the handlers running have settled. */
  stop(): Promise<void>;
}

export interface WorkConsumerOptions<T> {
  /** How many messages this process holds at once (it fetches only what it can start). */
  concurrency: number;
  /** Checks a message's body; a body it refuses is dropped (it would never run). */
  decode: (value: unknown) => T;
  /** Retry delay when a handler settles nothing or throws. */
  retryDelayMs?: number;
}

/** The outcome of a blocking request to one invoker. */
export type InvocationReply<R> =
  | { kind: 'result'; value: R }
  /** The invoker's handler failed (its message). */
  | { kind: 'error'; message: string }
  /** The reply was larger than the server's max_payload: the invoker stored the record, read it there. */
  | { kind: 'too-large'; bytes: number; limit: number }
  /** No reply within the wait: the call goes on (a blocking call answers 202). */
  | { kind: 'timeout' }
  /** Nobody subscribes to that invoker's subject: it is gone. */
  | { kind: 'no-invoker' }
  /** The caller's signal aborted the wait (e.g. the invoker left the registry). */
  | { kind: 'aborted' };

export interface Lease {
  readonly key: string;
  readonly holder: string;
  /** Keeps it past the lease TTL; false if it was lost meanwhile (it lapsed and someone took it). */
  renew(): Promise<boolean>;
  /** Gives it up (only if still held). */
  release(): Promise<void>;
}

/** Why the bus refused: `unavailable` (NATS is down: 503) or `too-large` (over max_payload: 413). */
export class BusError extends IsolaError {
  constructor(
    readonly reason: 'unavailable' | 'too-large',
    message: string,
  ) {
    super(reason === 'unavailable' ? 503 : 413, message);
    this.name = 'BusError';
  }
}

/** Pool names and invoker ids are subject tokens. */
const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;
/** Room left under max_payload for headers (the message id) and the reply envelope. */
const HEADROOM = 1024;
const JS_TIMEOUT_MS = 5000;

type Settings = Required<Omit<BusOptions, 'name' | 'log'>> & { log: ((message: string) => void) | undefined };

type Reply<R> =
  | { type: 'result'; value: R }
  | { type: 'error'; message: string }
  | { type: 'too-large'; bytes: number; limit: number };

export class Bus {
  private status: BusStatus = 'connected';
  private readonly listeners = new Set<(status: BusStatus) => void>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly closers = new Set<() => void>();
  private readonly names: { stream: string; work: string; invoke: string; invokers: string; leases: string };

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly settings: Settings,
    private invokers: KV,
    private leases: KV,
  ) {
    const prefix = settings.prefix;
    this.names = {
      stream: `${prefix.toUpperCase()}_WORK`,
      work: `${prefix}.work`,
      invoke: `${prefix}.invoke`,
      invokers: `${prefix}-invokers`,
      leases: `${prefix}-leases`,
    };
    void this.followStatus();
  }

  /**
   * Connects (reconnecting forever after) and makes sure the stream and buckets exist with these
   * settings. Every process of a cluster must use the same settings: the first one creates them,
   * a later one with other values updates them.
   */
  static async connect(options: BusOptions): Promise<Bus> {
    const settings: Settings = {
      url: options.url,
      prefix: options.prefix ?? 'isola',
      registryTtlMs: options.registryTtlMs ?? 10_000,
      ackWaitMs: options.ackWaitMs ?? 10_000,
      duplicateWindowMs: options.duplicateWindowMs ?? 120_000,
      leaseTtlMs: options.leaseTtlMs ?? 60_000,
      reconnectWaitMs: options.reconnectWaitMs ?? 1000,
      waitForServer: options.waitForServer ?? false,
      log: options.log,
    };
    if (!/^[a-z][a-z0-9]{0,31}$/.test(settings.prefix))
      throw new Error(`bus prefix "${settings.prefix}": lowercase letters and digits`);
    for (const [name, ms] of Object.entries({
      registryTtlMs: settings.registryTtlMs,
      ackWaitMs: settings.ackWaitMs,
      leaseTtlMs: settings.leaseTtlMs,
    })) {
      if (!Number.isInteger(ms) || ms < 1000) throw new Error(`bus ${name}: at least 1000 ms`);
    }
    const nc = await connect({
      servers: settings.url.split(',').map((server) => server.trim()),
      ...(options.name ? { name: options.name } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: settings.reconnectWaitMs,
      waitOnFirstConnect: settings.waitForServer,
      // A server that vanished without closing the socket (a cut network) is noticed within ~15 s.
      pingInterval: 5000,
      maxPingOut: 2,
      // Errors here say what failed in words; a stack captured at every request costs ~0.1 ms a call.
      noAsyncTraces: true,
    }).catch((error: unknown) => {
      throw new BusError('unavailable', `Cannot reach the message broker (NATS) at ${settings.url}: ${message(error)}`);
    });
    try {
      const js = jetstream(nc, { timeout: JS_TIMEOUT_MS });
      const jsm = await jetstreamManager(nc, { timeout: JS_TIMEOUT_MS });
      const prefix = settings.prefix;
      await ensureWorkStream(jsm, `${prefix.toUpperCase()}_WORK`, `${prefix}.work.>`, settings.duplicateWindowMs);
      const invokers = await ensureBucket(js, jsm, `${prefix}-invokers`, settings.registryTtlMs);
      const leases = await ensureBucket(js, jsm, `${prefix}-leases`, settings.leaseTtlMs);
      return new Bus(nc, js, jsm, settings, invokers, leases);
    } catch (error) {
      await nc.close();
      throw error;
    }
  }

  /** Whether NATS is reachable now: while it is not, calls fail with a 503 BusError. */
  get connected(): boolean {
    return this.status === 'connected';
  }

  get currentStatus(): BusStatus {
    return this.status;
  }

  /** Calls `listener` on every change of status; returns how to stop. */
  onStatus(listener: (status: BusStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The largest message the server takes (its `max_payload`), headers included. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  /** Closes the connection at once: no deregistration, no waiting for handlers (a crash looks the same). */
  async close(): Promise<void> {
    for (const close of this.closers) close();
    for (const timer of this.timers) clearInterval(timer);
    this.timers.clear();
    if (!this.nc.isClosed()) await this.nc.close();
    this.setStatus('closed');
  }

  // ---- work stream ----------------------------------------------------------------------------

  /**
   * Stores work for any invoker of `pool`. The activation id is the message id: publishing it
   * again within the duplicate window stores nothing (`duplicate: true`), so a controller that
   * is unsure whether its publish went through simply publishes again. A retry of the same
   * activation is the holder's `retry()`, not a new publish.
   */
  async publishWork(pool: string, activationId: string, work: unknown): Promise<{ duplicate: boolean }> {
    checkToken('pool', pool);
    this.checkConnected();
    const data = this.encode(work, 'the work');
    try {
      const ack = await this.js.publish(`${this.names.work}.${pool}`, data, { msgID: activationId, timeout: JS_TIMEOUT_MS });
      return { duplicate: ack.duplicate };
    } catch (error) {
      throw this.unavailable(error, 'publishing work');
    }
  }

  /**
   * Runs `handler` on the work of `pool`, at most `concurrency` at a time. All invokers of a pool
   * share one durable work-queue consumer: a message goes to one of them, and goes again to any
   * of them when its holder neither acknowledges nor signals progress within the ack wait, which
   * is what happens when the holder dies.
   *
   * Why one shared consumer rather than a subject per invoker: with per-invoker consumers a dead
   * invoker's messages stay pending on its own consumer until someone notices the death and moves
   * them (a controller-side reassignment, with its own window for loss or duplicates). A shared
   * consumer needs no one to notice: the server redelivers after the ack wait. Invokers pull only
   * what they can start, so the work spreads by free capacity; pools (e.g. one per isolation
   * backend) keep work away from invokers that cannot run it. Warm affinity is for blocking calls,
   * which go to a chosen invoker by request/reply.
   */
  async consumeWork<T>(
    pool: string,
    options: WorkConsumerOptions<T>,
    handler: (delivery: WorkDelivery<T>) => Promise<void>,
  ): Promise<WorkConsumer> {
    checkToken('pool', pool);
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new Error('concurrency: a positive integer');
    const name = await this.ensureWorkConsumer(pool);
    const retryDelayMs = options.retryDelayMs ?? 1000;
    let running = true;
    let inFlight = 0;
    let wake: (() => void) | undefined;
    let currentFetch: { stop(): void } | undefined;
    const settled = new Set<Promise<void>>();
    const nudge = () => {
      wake?.();
      wake = undefined;
    };
    const pause = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });

    // Never rejects: a handler's failure becomes a retry.
    const run = async (msg: JsMsg) => {
      inFlight++;
      try {
        const delivery = this.delivery(pool, msg, options.decode);
        if (!delivery) return;
        try {
          await handler(delivery.delivery);
        } catch (error) {
          this.settings.log?.(`work ${delivery.delivery.activationId} on ${pool}: the handler failed: ${message(error)}`);
        }
        if (!delivery.settled()) delivery.delivery.retry(retryDelayMs);
      } catch (error) {
        this.settings.log?.(`work on ${pool}: ${message(error)}`);
      } finally {
        inFlight--;
        nudge();
      }
    };

    const loop = async () => {
      let failures = 0;
      let consumer: Consumer | undefined;
      while (running) {
        const free = options.concurrency - inFlight;
        if (free <= 0 || !this.connected) {
          await pause(1000);
          continue;
        }
        try {
          consumer ??= await this.js.consumers.get(this.names.stream, name);
          const expires = 10_000;
          const messages = await consumer.fetch({ max_messages: free, expires });
          // The client ends a fetch by itself; this only guards against one left hanging by a
          // reconnection, whose pull request the server forgot.
          const guard = setTimeout(() => messages.stop(), expires + 5000);
          currentFetch = messages;
          try {
            for await (const msg of messages) {
              const task = run(msg);
              settled.add(task);
              void task.then(() => settled.delete(task));
            }
          } finally {
            clearTimeout(guard);
            currentFetch = undefined;
          }
          failures = 0;
        } catch (error) {
          if (!running) break;
          consumer = undefined;
          failures++;
          this.settings.log?.(`fetching work of ${pool}: ${message(error)}`);
          if (/not found/i.test(message(error))) await this.ensureWorkConsumer(pool).catch(() => {});
          await pause(Math.min(5000, 250 * 2 ** Math.min(failures, 5)));
        }
      }
    };
    const done = loop();
    const stop = async () => {
      running = false;
      currentFetch?.stop();
      nudge();
      await done;
      await Promise.allSettled([...settled]);
    };
    const closer = () => {
      running = false;
      currentFetch?.stop();
      nudge();
    };
    this.closers.add(closer);
    return {
      stop: async () => {
        this.closers.delete(closer);
        await stop();
      },
    };
  }

  /** How much work of `pool` waits (not yet delivered) and how much is held by invokers now. */
  async workBacklog(pool: string): Promise<{ waiting: number; inProgress: number }> {
    checkToken('pool', pool);
    this.checkConnected();
    const info = await this.jsm.consumers.info(this.names.stream, await this.ensureWorkConsumer(pool));
    return { waiting: info.num_pending, inProgress: info.num_ack_pending };
  }

  private async ensureWorkConsumer(pool: string): Promise<string> {
    const name = `work-${pool}`;
    const ackWait = nanos(this.settings.ackWaitMs);
    try {
      const info = await this.jsm.consumers.info(this.names.stream, name);
      if (info.config.ack_wait !== ackWait) await this.jsm.consumers.update(this.names.stream, name, { ack_wait: ackWait });
    } catch (error) {
      if (!/consumer not found/i.test(message(error))) throw error;
      await this.jsm.consumers.add(this.names.stream, {
        durable_name: name,
        filter_subject: `${this.names.work}.${pool}`,
        ack_policy: AckPolicy.Explicit,
        // A work-queue stream only allows consumers that start from its first message.
        deliver_policy: DeliverPolicy.All,
        replay_policy: ReplayPolicy.Instant,
        ack_wait: ackWait,
        // Retries are the handler's decision (it sees deliveryCount and may drop).
        max_deliver: -1,
        max_ack_pending: 10_000,
        max_waiting: 4096,
      });
    }
    return name;
  }

  /** Wraps a delivered message; undefined (and the message dropped) when its body is unusable. */
  private delivery<T>(
    pool: string,
    msg: JsMsg,
    decode: (value: unknown) => T,
  ): { delivery: WorkDelivery<T>; settled(): boolean } | undefined {
    const activationId = msg.headers?.get('Nats-Msg-Id') ?? '';
    let work: T;
    try {
      work = decode(msg.json());
    } catch (error) {
      this.settings.log?.(`work ${activationId || msg.seq} on ${pool} cannot be read, dropped: ${message(error)}`);
      msg.term();
      return undefined;
    }
    let settled = false;
    // In-progress signals keep the message ours while the handler runs; they stop when it settles,
    // when the bus closes, or when the process dies: then the ack wait lapses and another invoker
    // gets it.
    const heartbeat = setInterval(
      () => {
        try {
          msg.working();
        } catch {
          // The connection is closed: the ack wait will lapse, as it should.
        }
      },
      Math.max(500, Math.floor(this.settings.ackWaitMs / 3)),
    );
    this.timers.add(heartbeat);
    const settle = () => {
      if (settled) throw new Error(`work ${activationId} was already acknowledged, retried or dropped`);
      settled = true;
      clearInterval(heartbeat);
      this.timers.delete(heartbeat);
    };
    const delivery: WorkDelivery<T> = {
      pool,
      activationId,
      work,
      deliveryCount: msg.info.deliveryCount,
      ack: async () => {
        settle();
        try {
          return await msg.ackAck({ timeout: JS_TIMEOUT_MS });
        } catch (error) {
          this.settings.log?.(`work ${activationId}: the acknowledgement was not confirmed: ${message(error)}`);
          return false;
        }
      },
      retry: (delayMs) => {
        settle();
        msg.nak(Math.max(1, Math.round(delayMs)));
      },
      drop: () => {
        settle();
        msg.term();
      },
    };
    return { delivery, settled: () => settled };
  }

  // ---- request/reply ---------------------------------------------------------------------------

  /**
   * Answers blocking requests sent to this invoker (`isola.invoke.<invokerId>`, no queue group:
   * the controller picked this invoker). A reply larger than max_payload is replaced by a
   * `too-large` answer: the handler has stored the record, and the controller reads it there.
   * Resolves once the server has the subscription: register the invoker after that, or a
   * controller may find no one there.
   */
  async serveInvocations<Q, R>(
    invokerId: string,
    decode: (value: unknown) => Q,
    handler: (request: Q) => Promise<R>,
  ): Promise<{ stop(): void }> {
    checkToken('invoker id', invokerId);
    const respond = (msg: Msg, reply: Reply<R>) => {
      if (!msg.reply) return;
      const data = Buffer.from(JSON.stringify(reply));
      const limit = this.maxPayload - HEADROOM;
      try {
        msg.respond(data.length > limit ? Buffer.from(JSON.stringify({ type: 'too-large', bytes: data.length, limit })) : data);
      } catch (error) {
        // The connection closed meanwhile: the caller times out.
        this.settings.log?.(`reply from ${invokerId}: ${message(error)}`);
      }
    };
    const subscription: Subscription = this.nc.subscribe(`${this.names.invoke}.${invokerId}`, {
      callback: (error, msg) => {
        if (error) {
          this.settings.log?.(`invocation subscription of ${invokerId}: ${message(error)}`);
          return;
        }
        void (async () => {
          let request: Q;
          try {
            request = decode(msg.json());
          } catch (cause) {
            respond(msg, { type: 'error', message: `the request cannot be read: ${message(cause)}` });
            return;
          }
          try {
            respond(msg, { type: 'result', value: await handler(request) });
          } catch (cause) {
            respond(msg, { type: 'error', message: message(cause) });
          }
        })();
      },
    });
    const stop = () => subscription.unsubscribe();
    this.closers.add(stop);
    // The subscription travels to the server asynchronously: a round trip makes sure it is there.
    await this.nc.flush();
    return {
      stop: () => {
        this.closers.delete(stop);
        stop();
      },
    };
  }

  /** Sends a blocking request to one invoker and waits for its reply at most `timeoutMs`. */
  async requestInvocation<R>(
    invokerId: string,
    request: unknown,
    options: { timeoutMs: number; decode: (value: unknown) => R; signal?: AbortSignal },
  ): Promise<InvocationReply<R>> {
    checkToken('invoker id', invokerId);
    this.checkConnected();
    const data = this.encode(request, 'the request');
    const { signal } = options;
    if (signal?.aborted) return { kind: 'aborted' };
    const asked = this.nc.request(`${this.names.invoke}.${invokerId}`, data, { timeout: options.timeoutMs }).then(
      (msg) => ({ msg }),
      (error: unknown) => ({ error }),
    );
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<{ aborted: true }>((resolve) => {
      onAbort = () => resolve({ aborted: true });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    const outcome = await Promise.race([asked, aborted]);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    if ('aborted' in outcome) return { kind: 'aborted' };
    if ('error' in outcome) {
      const { error } = outcome;
      if (error instanceof TimeoutError) return { kind: 'timeout' };
      if (error instanceof RequestError && error.isNoResponders()) return { kind: 'no-invoker' };
      throw this.unavailable(error, 'sending a request');
    }
    const reply = outcome.msg.json<Reply<unknown>>();
    if (reply.type === 'result') return { kind: 'result', value: options.decode(reply.value) };
    if (reply.type === 'too-large') return { kind: 'too-large', bytes: reply.bytes, limit: reply.limit };
    return { kind: 'error', message: reply.message };
  }

  // ---- invoker registry ------------------------------------------------------------------------

  /**
   * Puts the invoker in the registry and heartbeats it every third of the registry TTL with what
   * `describe` returns then (its load changes). Without heartbeats the entry expires after the TTL
   * (the server removes it): a dead invoker leaves placement by itself.
   */
  async registerInvoker(describe: () => InvokerInfo): Promise<InvokerRegistration> {
    const first = describe();
    checkToken('invoker id', first.id);
    const put = async () => {
      const info = describe();
      if (info.id !== first.id) throw new Error(`an invoker cannot change its id (${first.id} -> ${info.id})`);
      await this.invokers.put(info.id, Buffer.from(JSON.stringify(info)));
    };
    this.checkConnected();
    await put();
    const timer = setInterval(
      () => {
        if (!this.connected) return;
        put().catch((error) => this.settings.log?.(`heartbeat of invoker ${first.id}: ${message(error)}`));
      },
      Math.floor(this.settings.registryTtlMs / 3),
    );
    this.timers.add(timer);
    return {
      heartbeat: put,
      deregister: async () => {
        clearInterval(timer);
        this.timers.delete(timer);
        await this.invokers.delete(first.id);
      },
    };
  }

  /** The invokers whose last heartbeat is younger than the registry TTL, read from the server. */
  async listInvokers(): Promise<LiveInvoker[]> {
    this.checkConnected();
    // The keys from the stream's subjects, then each value: every step a request with a timeout.
    // (Reading the bucket's history through a consumer could wait for its end for minutes while
    // heartbeats kept arriving.)
    const prefix = `$KV.${this.names.invokers}.`;
    let entries: (KvEntry | null)[];
    try {
      const info = await this.jsm.streams.info(`KV_${this.names.invokers}`, { subjects_filter: `${prefix}>` });
      const subjects = Object.keys(info.state.subjects ?? {});
      entries = await Promise.all(subjects.map((subject) => this.invokers.get(subject.slice(prefix.length))));
    } catch (error) {
      throw this.unavailable(error, 'reading the invoker registry');
    }
    const live: LiveInvoker[] = [];
    for (const entry of entries) {
      // A deregistered invoker's key holds a delete marker until it expires.
      if (entry?.operation !== 'PUT') continue;
      const invoker = readInvoker(entry.value, entry.created.getTime());
      if (invoker) live.push(invoker);
    }
    return live.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Follows the registry: `onChange` gets the live invokers whenever they change. Registrations and
   * deregistrations arrive as they happen; an entry that expired (the server says nothing when a
   * TTL removes it on nats-server 2.9) disappears at the next reading of the whole registry, every
   * third of the TTL, so a dead invoker leaves within 4/3 of the TTL.
   */
  async watchInvokers(onChange: (invokers: LiveInvoker[]) => void): Promise<InvokerWatch> {
    const known = new Map<string, { invoker: LiveInvoker; seenAt: number }>();
    let stopped = false;
    const snapshot = () => [...known.values()].map((k) => k.invoker).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const changed = () => {
      if (!stopped) onChange(snapshot());
    };
    const reconcile = async () => {
      const startedAt = Date.now();
      const live = await this.listInvokers();
      const ids = new Set(live.map((i) => i.id));
      let change = false;
      for (const [id, entry] of known) {
        // Keep what the watch reported during the reading: the reading may predate it.
        if (!ids.has(id) && entry.seenAt < startedAt) {
          known.delete(id);
          change = true;
        }
      }
      for (const invoker of live) {
        const previous = known.get(invoker.id);
        if (!previous || previous.invoker.heartbeatAt < invoker.heartbeatAt) {
          if (
            !previous ||
            JSON.stringify({ ...previous.invoker, heartbeatAt: 0 }) !== JSON.stringify({ ...invoker, heartbeatAt: 0 })
          ) {
            change = true;
          }
          known.set(invoker.id, { invoker, seenAt: startedAt });
        }
      }
      if (change) changed();
    };
    await reconcile();
    const watcher = await this.invokers.watch({ include: 'updates' });
    void (async () => {
      for await (const entry of watcher) {
        if (entry.operation === 'PUT') {
          const invoker = readInvoker(entry.value, entry.created.getTime());
          if (!invoker) continue;
          const previous = known.get(invoker.id);
          known.set(invoker.id, { invoker, seenAt: Date.now() });
          if (
            !previous ||
            JSON.stringify({ ...previous.invoker, heartbeatAt: 0 }) !== JSON.stringify({ ...invoker, heartbeatAt: 0 })
          ) {
            changed();
          }
        } else if (known.delete(entry.key)) {
          changed();
        }
      }
    })().catch((error) => this.settings.log?.(`invoker watch: ${message(error)}`));
    const timer = setInterval(
      () => {
        if (!this.connected) return;
        reconcile().catch((error) => this.settings.log?.(`reading the invoker registry: ${message(error)}`));
      },
      Math.floor(this.settings.registryTtlMs / 3),
    );
    this.timers.add(timer);
    const stop = () => {
      stopped = true;
      clearInterval(timer);
      this.timers.delete(timer);
      watcher.stop();
    };
    this.closers.add(stop);
    return {
      current: snapshot,
      stop: () => {
        this.closers.delete(stop);
        stop();
      },
    };
  }

  // ---- change notices --------------------------------------------------------------------------

  /**
   * Tells every process of the cluster that something they may cache changed (best effort: a
   * notice sent while NATS is unreachable is lost, which is why followers drop everything they
   * cache when the connection comes back).
   */
  announceChange(change: unknown): void {
    if (!this.connected) return;
    try {
      this.nc.publish(`${this.settings.prefix}.changes`, Buffer.from(JSON.stringify(change)));
    } catch (error) {
      this.settings.log?.(`announcing a change: ${message(error)}`);
    }
  }

  /**
   * Calls `onChange` with each change notice (its own included), and `onGap` when notices may
   * have been missed (after a reconnection): then whatever was cached should go.
   */
  followChanges(onChange: (change: unknown) => void, onGap: () => void): { stop(): void } {
    const subscription = this.nc.subscribe(`${this.settings.prefix}.changes`, {
      callback: (error, msg) => {
        if (error) return;
        try {
          onChange(msg.json());
        } catch (cause) {
          this.settings.log?.(`a change notice: ${message(cause)}`);
        }
      },
    });
    const unlisten = this.onStatus((status) => {
      if (status === 'connected') onGap();
    });
    const stop = () => {
      unlisten();
      subscription.unsubscribe();
    };
    this.closers.add(stop);
    return {
      stop: () => {
        this.closers.delete(stop);
        stop();
      },
    };
  }

  // ---- leases ----------------------------------------------------------------------------------

  /**
   * Takes the lease `key` for `holder` if nobody holds it: the server stores the key only if it has
   * no value (a create with an expected revision), so among any number of contenders exactly one
   * gets it. It lapses after the lease TTL unless renewed. For a cron tick, put the tick's time in
   * the key (`leaseKey('cron', namespace, trigger, tick)`): one firing per tick cluster-wide.
   */
  async acquireLease(key: string, holder: string): Promise<Lease | undefined> {
    this.checkConnected();
    const value = () => Buffer.from(JSON.stringify({ holder, at: Date.now() }));
    let revision: number;
    try {
      revision = await this.leases.create(key, value());
    } catch (error) {
      if (/wrong last sequence/i.test(message(error))) return undefined;
      throw this.unavailable(error, 'taking a lease');
    }
    return {
      key,
      holder,
      renew: async () => {
        try {
          revision = await this.leases.update(key, value(), revision);
          return true;
        } catch (error) {
          if (/wrong last sequence/i.test(message(error))) return false;
          throw this.unavailable(error, 'renewing a lease');
        }
      },
      release: async () => {
        try {
          await this.leases.delete(key, { previousSeq: revision });
        } catch (error) {
          if (!/wrong last sequence/i.test(message(error))) throw this.unavailable(error, 'releasing a lease');
        }
      },
    };
  }

  // ---- internals -------------------------------------------------------------------------------

  private async followStatus(): Promise<void> {
    for await (const event of this.nc.status()) {
      if (event.type === 'disconnect') this.setStatus('disconnected');
      else if (event.type === 'reconnect') {
        this.setStatus('connected');
        // A server that lost its store (a new one, or a wiped disk) gets the stream and buckets back.
        void this.recreateResources().catch((error) =>
          this.settings.log?.(`recreating the stream and buckets: ${message(error)}`),
        );
      } else if (event.type === 'close') this.setStatus('closed');
    }
  }

  private async recreateResources(): Promise<void> {
    await ensureWorkStream(this.jsm, this.names.stream, `${this.names.work}.>`, this.settings.duplicateWindowMs);
    this.invokers = await ensureBucket(this.js, this.jsm, this.names.invokers, this.settings.registryTtlMs);
    this.leases = await ensureBucket(this.js, this.jsm, this.names.leases, this.settings.leaseTtlMs);
  }

  private setStatus(status: BusStatus): void {
    if (this.status === status || this.status === 'closed') return;
    this.status = status;
    for (const listener of this.listeners) listener(status);
  }

  private checkConnected(): void {
    if (this.status !== 'connected') {
      throw new BusError('unavailable', `The message broker (NATS) is ${this.status === 'closed' ? 'closed' : 'unreachable'}.`);
    }
  }

  private unavailable(error: unknown, doing: string): Error {
    if (error instanceof BusError) return error;
    return new BusError('unavailable', `The message broker (NATS) failed ${doing}: ${message(error)}`);
  }

  private encode(value: unknown, what: string): Buffer {
    const data = Buffer.from(JSON.stringify(value));
    const limit = this.maxPayload - HEADROOM;
    if (data.length > limit) {
      throw new BusError(
        'too-large',
        `${what} is ${data.length} bytes; the message broker takes at most ${limit} (nats-server max_payload ${this.maxPayload} less ${HEADROOM} for headers).`,
      );
    }
    return data;
  }
}

/**
 * A lease key from parts of any text: characters a NATS KV key cannot hold become `=XX` (hex), and
 * the parts are joined with dots.
 */
export function leaseKey(...parts: (string | number)[]): string {
  if (parts.length === 0) throw new Error('a lease key needs at least one part');
  return parts
    .map((part) =>
      String(part) === ''
        ? '='
        : [...Buffer.from(String(part))]
            .map((byte) =>
              /[A-Za-z0-9_-]/.test(String.fromCharCode(byte))
                ? String.fromCharCode(byte)
                : `=${byte.toString(16).padStart(2, '0')}`,
            )
            .join(''),
    )
    .join('.');
}

async function ensureWorkStream(jsm: JetStreamManager, name: string, subjects: string, duplicateWindowMs: number): Promise<void> {
  const window = nanos(duplicateWindowMs);
  try {
    const info = await jsm.streams.info(name);
    if (info.config.duplicate_window !== window) await jsm.streams.update(name, { duplicate_window: window });
  } catch (error) {
    if (!/stream not found/i.test(message(error))) throw error;
    await jsm.streams.add({
      name,
      subjects: [subjects],
      // A message stays until one consumer acknowledges it; each pool's consumer has its own subject.
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      duplicate_window: window,
    });
  }
}

async function ensureBucket(js: JetStreamClient, jsm: JetStreamManager, name: string, ttlMs: number): Promise<KV> {
  const kv = await new Kvm(js).create(name, { ttl: ttlMs, history: 1, storage: StorageType.File });
  // An existing bucket is opened as it is: bring its TTL to this setting.
  const status = await kv.status();
  if (status.ttl !== ttlMs) {
    await jsm.streams.update(`KV_${name}`, { max_age: nanos(ttlMs), duplicate_window: nanos(Math.min(ttlMs, 120_000)) });
  }
  return kv;
}

function readInvoker(value: Uint8Array, heartbeatAt: number): LiveInvoker | undefined {
  try {
    const info = JSON.parse(Buffer.from(value).toString('utf8')) as Partial<InvokerInfo> | null;
    if (!info || typeof info.id !== 'string' || !Array.isArray(info.backends)) return undefined;
    return {
      id: info.id,
      host: typeof info.host === 'string' ? info.host : '',
      backends: info.backends.filter((b): b is string => typeof b === 'string'),
      minMemoryMb: readCounts(info.minMemoryMb, (key) => /^[a-z]{1,32}$/.test(key)),
      memoryBudgetMb: Number(info.memoryBudgetMb) || 0,
      memoryInUseMb: Number(info.memoryInUseMb) || 0,
      memoryIdleMb: Number(info.memoryIdleMb) || 0,
      warm: readPoolCounts(info.warm),
      live: readPoolCounts(info.live),
      ready: readPoolCounts(info.ready),
      instances: Number(info.instances) || 0,
      draining: info.draining === true,
      heartbeatAt,
    };
  } catch {
    return undefined;
  }
}

/** Counts by pool key as an invoker sent them, anything else dropped. */
function readPoolCounts(value: unknown): Record<string, number> {
  // Pool keys are namespace/name@version#revision: anything else (`__proto__`, say) is not one.
  return readCounts(value, (key) => key.includes('@'), 1);
}

/** Non-negative integers by key, from a map an invoker sent; keys `accept` refuses are dropped. */
function readCounts(value: unknown, accept: (key: string) => boolean, least = 0): Record<string, number> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return {};
  const counts: Record<string, number> = {};
  for (const [key, count] of Object.entries(value)) {
    if (accept(key) && Number.isSafeInteger(count) && (count as number) >= least) counts[key] = count as number;
  }
  return counts;
}

function checkToken(what: string, value: string): void {
  if (!TOKEN.test(value)) throw new Error(`${what} "${value}": 1-64 letters, digits, '_' or '-'`);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
