import { createHash, timingSafeEqual } from 'node:crypto';
import { newActivationId } from '../core/ids.js';
import type { ActionVersion, ActivationRecord, KeyValue } from '../core/types.js';
import { annotationValue } from '../core/types.js';
import { storedFunctionSettings } from '../scheduler/function-settings.js';
import { QueueFullError, TooBigError } from '../scheduler/scheduler.js';
import type { QueuedActivation, Store } from '../store/store.js';
import type { Credentials } from './credentials.js';
import type { Executor } from './executor.js';
import { Sequences } from './sequences.js';

/** A function as a caller names it: its namespace and name, and optionally one stored version. */
export interface FunctionRef {
  namespace: string;
  name: string;
  /** A stored version (`0.0.3`); absent (or Lambda's `$LATEST`) means the latest. */
  version?: string;
}

/**
 * `sync` runs the function and waits for it (up to the blocking wait), `async` queues it durably
 * and answers at once, `dry-run` resolves the function and checks the caller's right to call it,
 * and runs and stores nothing.
 */
export type InvokeMode = 'sync' | 'async' | 'dry-run';

/** Where the invocation came from. Every door but OpenWhisk's own is recorded on the activation. */
export type Door = 'openwhisk' | 'lambda' | 'openfaas' | 'web' | 'trigger' | 'ui';

/** Who asks for the invocation. */
export type Caller =
  /** Authenticated with a namespace's key: may call the functions of that namespace. */
  | { kind: 'namespace'; namespace: string }
  /**
   * A web request, known only by what it carries: it may call the function's namespace's web
   * actions, and the ones behind `require-whisk-auth` only with the credentials or secret they ask.
   */
  | { kind: 'web'; credentials?: Credentials; secret?: string };

/** The one request every door and trigger hands to `Platform.invoke`. */
export interface InvokeCommand {
  function: FunctionRef;
  params: Record<string, unknown>;
  mode: InvokeMode;
  door: Door;
  caller: Caller;
  /** The trigger activation that caused this one. */
  cause?: string;
  /** `sync` only: the caller's own bound on the wait (ms), at most the server's blocking wait. */
  waitMs?: number;
  /**
   * `sync` only: the door's rule for a successful result (a web action's HTTP shape, say): a
   * message when the result breaks it, which makes the activation the function's error.
   */
  checkResult?: (result: unknown) => string | undefined;
  /** `sync` only: the platform's part of a system action, applied to its result (see `Invocation.applyResult`). */
  applyResult?: (result: unknown) => Promise<unknown>;
  /** `sync` only: Lambda's client context (JSON), which a Lambda custom runtime is handed with the event. */
  clientContext?: string;
}

export type RejectReason = 'forbidden' | 'unauthorised' | 'queue-full' | 'too-big';

/** How an invocation ended, as far as its caller is concerned. The door formats it. */
export type InvokeOutcome =
  /** `sync`: the function ran and its activation is stored. */
  | { kind: 'completed'; function: ActionVersion; record: ActivationRecord }
  /**
   * `async`: queued durably; or `sync` that outlived its wait (`late`): it goes on running and
   * its record is stored when it ends.
   */
  | { kind: 'accepted'; function: ActionVersion; activationId: string; late: boolean }
  /** `dry-run`: the function exists and the caller may call it. */
  | { kind: 'dry-run'; function: ActionVersion }
  | { kind: 'not-found'; message: string }
  /** Refused before anything was recorded. */
  | { kind: 'rejected'; function: ActionVersion; reason: RejectReason; message: string };

export interface InvokePathOptions {
  store: Store;
  /** Where the calls run: this host's backends, or a cluster's invokers. */
  executor: Executor;
  /** The function a reference names (the latest version unless it names one). */
  resolve: (ref: FunctionRef) => Promise<ActionVersion | undefined>;
  /** The namespace credentials belong to, or undefined. */
  authenticate: (credentials: Credentials) => Promise<string | undefined>;
  blockingWaitMs: number;
  retryBaseMs: number;
  warn: (message: string) => void;
}

/**
 * The one invoke path: resolves the function, checks the caller's right to call it, admits it
 * and runs it (now, or later from the durable queue), and answers with one outcome. Also owns
 * what outlives a request: late blocking runs, queued runs and their retries.
 */
export class InvokePath {
  private readonly background = new Set<Promise<unknown>>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private readonly sequences: Sequences;

  constructor(private readonly options: InvokePathOptions) {
    this.sequences = new Sequences({
      resolve: options.resolve,
      runAction: (fn, params, subject, annotations) => this.runComponent(fn, params, subject, annotations),
      store: (record, accepted) => options.store.completeActivation(record, accepted),
    });
  }

  /** One action of a sequence, run for the sequence's caller, now: its record, or why it was refused. */
  private async runComponent(
    fn: ActionVersion,
    params: Record<string, unknown>,
    subject: string,
    annotations: KeyValue[],
  ): Promise<ActivationRecord | string> {
    if (fn.namespace !== subject) return 'The supplied authentication is not authorized to access this resource.';
    const admission = this.admit(fn);
    if (admission?.kind === 'rejected') return admission.message;
    return this.options.executor.invoke({ action: fn, params, subject, annotations });
  }

  async invoke(command: InvokeCommand): Promise<InvokeOutcome> {
    const fn = await this.options.resolve(command.function);
    if (!fn) return notFound(command.function);
    // A namespace's caller is checked without a turn of the event loop: most calls are theirs.
    const caller = command.caller;
    const refused = caller.kind === 'namespace' ? namespaceRefusal(caller.namespace, fn) : await this.webRefusal(caller, fn);
    if (refused) return refused;
    switch (command.mode) {
      case 'dry-run':
        return { kind: 'dry-run', function: fn };
      case 'async':
        return this.enqueue(command, fn);
      case 'sync':
        return this.run(command, fn);
    }
  }

  /** Why a web caller may not call this function, or undefined when it may. */
  private async webRefusal(caller: Extract<Caller, { kind: 'web' }>, fn: ActionVersion): Promise<InvokeOutcome | undefined> {
    const exported = annotationValue(fn.annotations, 'web-export');
    // Not exported is not there, for the web: a caller learns nothing about other functions.
    if (exported !== true && exported !== 'true') return { kind: 'not-found', message: 'The requested resource does not exist.' };
    const required = annotationValue(fn.annotations, 'require-whisk-auth');
    const unauthorised: InvokeOutcome = {
      kind: 'rejected',
      function: fn,
      reason: 'unauthorised',
      message: 'The supplied authentication is invalid.',
    };
    if (required === true || required === 'true') {
      const namespace = caller.credentials ? await this.options.authenticate(caller.credentials) : undefined;
      return namespace === fn.namespace ? undefined : unauthorised;
    }
    if (required === undefined || required === null || required === false) return undefined;
    // A secret; anything that is not one (stored before deploys checked it) keeps the action closed.
    const secret = typeof required === 'string' || typeof required === 'number' ? String(required) : '';
    return secret !== '' && caller.secret !== undefined && sameSecret(caller.secret, secret) ? undefined : unauthorised;
  }

  /**
   * Runs the function and waits for it, up to the blocking wait (or the caller's own shorter
   * bound); past that the caller gets the activation id and the record is stored when the run ends.
   */
  private async run(command: InvokeCommand, fn: ActionVersion): Promise<InvokeOutcome> {
    // A sequence takes no instance itself; each of its actions is admitted when its turn comes.
    const admission = fn.sequence ? undefined : this.admit(fn);
    if (admission) return admission;
    const activationId = newActivationId();
    const accepted = Date.now();
    const subject = subjectOf(command, fn);
    const annotations = annotationsOf(command);
    const run = fn.sequence
      ? this.sequences.run(fn, {
          params: command.params,
          subject,
          activationId,
          accepted,
          annotations,
          ...(command.checkResult ? { checkResult: command.checkResult } : {}),
        })
      : this.options.executor.invoke({
          action: fn,
          params: command.params,
          subject,
          activationId,
          accepted,
          annotations,
          ...(command.checkResult ? { checkResult: command.checkResult } : {}),
          ...(command.applyResult ? { applyResult: command.applyResult } : {}),
          ...(command.clientContext !== undefined ? { clientContext: command.clientContext } : {}),
        });
    const waitMs = Math.min(command.waitMs ?? this.options.blockingWaitMs, this.options.blockingWaitMs);
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), waitMs);
    });
    let first: ActivationRecord | 'late';
    try {
      first = await Promise.race([run, waited]);
    } finally {
      // Also when the run rejects: a pending timer would keep its closure (and the process) alive.
      clearTimeout(timer);
    }
    if (first !== 'late') return { kind: 'completed', function: fn, record: first };
    // The caller stops waiting; mark the activation as running so that a restart records it.
    this.track(
      this.options.store.enqueueActivation(
        {
          activationId,
          namespace: fn.namespace,
          name: fn.name,
          version: fn.version,
          subject,
          accepted,
          // A blocking invocation is not run again after a restart: its parameters are not kept.
          params: undefined,
          annotations,
        },
        'running',
      ),
      activationId,
    );
    this.track(run, activationId);
    return { kind: 'accepted', function: fn, activationId, late: true };
  }

  /**
   * Before anything is recorded: refused when the function's queue is full, or when it needs more
   * memory than this server's whole budget (it was stored before the budget was lowered).
   */
  private admit(fn: ActionVersion): InvokeOutcome | undefined {
    try {
      this.options.executor.admit(fn);
      return undefined;
    } catch (error) {
      if (error instanceof QueueFullError)
        return { kind: 'rejected', function: fn, reason: 'queue-full', message: error.message };
      if (error instanceof TooBigError) return { kind: 'rejected', function: fn, reason: 'too-big', message: error.message };
      throw error;
    }
  }

  /**
   * Accepts an invocation for later: stored durably before this resolves, then run in the
   * background, with retries (at least once: see `recover`).
   */
  private async enqueue(command: InvokeCommand, fn: ActionVersion): Promise<InvokeOutcome> {
    try {
      if (!fn.sequence) this.options.executor.assertFits(fn);
    } catch (error) {
      if (error instanceof TooBigError) return { kind: 'rejected', function: fn, reason: 'too-big', message: error.message };
      throw error;
    }
    const { maxQueued } = storedFunctionSettings(fn);
    if ((await this.options.store.countPending(fn.namespace, fn.name)) >= maxQueued) {
      return {
        kind: 'rejected',
        function: fn,
        reason: 'queue-full',
        message: `Too many invocations of ${fn.namespace}/${fn.name} are queued (at most ${maxQueued}); try again later.`,
      };
    }
    const queued: QueuedActivation = {
      activationId: newActivationId(),
      namespace: fn.namespace,
      name: fn.name,
      version: fn.version,
      subject: subjectOf(command, fn),
      accepted: Date.now(),
      params: command.params,
      annotations: annotationsOf(command),
      attempts: 0,
      notBefore: 0,
    };
    await this.options.store.enqueueActivation(queued);
    const submit = this.options.executor.submit;
    // A sequence runs its actions from here, each placed by the executor.
    if (!submit || fn.sequence) this.dispatch(queued, fn);
    else {
      try {
        await submit.call(this.options.executor, queued, fn);
      } catch (error) {
        // Not handed on: the caller is told it failed, so it must not run later either.
        await this.options.store.discardActivation(queued.activationId).catch(() => {});
        throw error;
      }
    }
    return { kind: 'accepted', function: fn, activationId: queued.activationId, late: false };
  }

  /** Runs a queued activation now, or when its retry is due. */
  dispatch(queued: QueuedActivation, known?: ActionVersion): void {
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
        const action =
          known ?? (await this.options.resolve({ namespace: queued.namespace, name: queued.name, version: queued.version }));
        if (action?.sequence && queued.params !== undefined) {
          // Its actions are not retried as a whole: each ran once, and the chain stopped at a failure.
          await this.options.store.markActivationRunning(queued.activationId);
          await this.sequences.run(action, {
            params: queued.params,
            subject: queued.subject,
            activationId: queued.activationId,
            accepted: queued.accepted,
            annotations: queued.annotations,
          });
          return;
        }
        const maxRetries = action ? storedFunctionSettings(action).retries : 0;
        await this.options.executor.runQueued(queued, action, {
          maxRetries,
          baseDelayMs: this.options.retryBaseMs,
          requeued: (again) => this.dispatch(again, action),
        });
      })(),
      queued.activationId,
    );
  }

  /**
   * After a restart, asynchronous invocations are delivered at least once: those still queued run,
   * and those that were running when the server stopped run again while they have retries left
   * (they may have had effects: functions that must not run twice set `retries: 0`). Blocking
   * invocations that were running are recorded as failed.
   */
  async recover(): Promise<{ failed: number; resumed: number; retried: number }> {
    const store = this.options.store;
    let failed = 0;
    let retried = 0;
    // Read before the interrupted ones are put back in the queue.
    const queued = await store.queuedActivations();
    for (const pending of await store.interruptedActivations()) {
      const action = await this.options.resolve({ namespace: pending.namespace, name: pending.name, version: pending.version });
      const attempt = pending.attempts + 1;
      if (pending.params !== undefined && action && attempt <= storedFunctionSettings(action).retries) {
        await store.requeueActivation(pending.activationId, attempt, 0);
        this.dispatch({ ...pending, attempts: attempt, notBefore: 0 }, action);
        retried++;
      } else {
        await this.options.executor.fail(
          { ...pending, attempts: attempt },
          pending.params === undefined
            ? 'The server stopped while this blocking activation was running; blocking invocations are not run again.'
            : 'The server stopped while this activation was running, and it has no retries left.',
        );
        failed++;
      }
    }
    for (const activation of queued) this.dispatch(activation);
    return { failed, resumed: queued.length, retried };
  }

  /** Cancels the retries that are waiting for their time (on shutdown; `recover` finds them again). */
  stopRetries(): void {
    for (const timer of this.retryTimers) clearTimeout(timer);
    this.retryTimers.clear();
  }

  /** Resolves when the runs and writes under way in the background have ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  private track(promise: Promise<unknown>, activationId: string): void {
    const tracked = promise.catch((error: unknown) =>
      this.options.warn(
        `background activation ${activationId} failed: ${error instanceof Error ? error.message : String(error)}`,
      ),
    );
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}

function notFound(ref: FunctionRef): InvokeOutcome {
  return {
    kind: 'not-found',
    message:
      ref.version === undefined
        ? `The action "${ref.name}" does not exist in namespace "${ref.namespace}".`
        : `The action "${ref.name}" does not exist at version ${ref.version}.`,
  };
}

/** The namespace the activation is recorded under as its subject: the caller's, or for the web the function's. */
function subjectOf(command: InvokeCommand, fn: ActionVersion): string {
  return command.caller.kind === 'namespace' ? command.caller.namespace : fn.namespace;
}

/** What the record says about where the invocation came from. OpenWhisk's own door adds nothing. */
export function annotationsOf(command: Pick<InvokeCommand, 'door' | 'cause'>): KeyValue[] {
  return [
    ...(command.door === 'openwhisk' || command.door === 'trigger' ? [] : [{ key: 'door', value: command.door }]),
    ...(command.cause !== undefined ? [{ key: 'cause', value: command.cause }] : []),
  ];
}

/** Compares a given secret with the expected one in constant time (over their digests). */
function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Why a namespace's caller may not call this function (another namespace's), or undefined when it may. */
function namespaceRefusal(namespace: string, fn: ActionVersion): InvokeOutcome | undefined {
  return namespace === fn.namespace
    ? undefined
    : {
        kind: 'rejected',
        function: fn,
        reason: 'forbidden',
        message: 'The supplied authentication is not authorized to access this resource.',
      };
}
