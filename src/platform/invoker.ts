import { IsolaError } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import { MAX_JSON_DEPTH, nestedDeeperThan } from '../core/limits.js';
import { qualifiedName } from '../core/names.js';
import type { ActionVersion, ActivationRecord, ActivationResponse, KeyValue } from '../core/types.js';
import type { RunOutcome } from '../sandbox/backend.js';
import { InitFailure, type Lease, type Scheduler, TooBigError } from '../scheduler/scheduler.js';
import type { QueuedActivation, Store } from '../store/store.js';
import type { RetryPlan } from './executor.js';
import { LogCollector } from './logs.js';
import type { Metrics } from './metrics.js';

/** OpenWhisk's limit on an action's result. */
export const MAX_RESULT_BYTES = 1024 * 1024;
const MAX_RETRY_DELAY_MS = 5 * 60_000;

export interface Invocation {
  action: ActionVersion;
  params: Record<string, unknown>;
  /** The namespace the caller authenticated as. */
  subject: string;
  activationId?: string;
  /** ms since the epoch when the platform accepted the request. */
  accepted?: number;
  /** Extra annotations on the record, e.g. the door it came through. */
  annotations?: KeyValue[];
  /** Called once an instance is found, before the function runs. */
  onStarted?: () => Promise<void>;
  /**
   * A door's own rule for a successful result (a web action's HTTP shape, say): a message when
   * the result breaks it, which makes the activation the function's error, recorded as such.
   */
  checkResult?: (result: unknown) => string | undefined;
  /**
   * The platform's own part of a system action (a feed's effect on a trigger), applied to a
   * successful result before the record is stored: its answer becomes the result, and a refusal
   * (an IsolaError) the activation's application error.
   */
  applyResult?: (result: unknown) => Promise<unknown>;
  /** Lambda's client context (JSON) of a synchronous Invoke. */
  clientContext?: string;
}

interface Timing {
  start: number;
  waitMs: number;
  initMs?: number;
  cold: boolean;
  restored?: boolean;
}

/** How one placement of an invocation ended: how its run ended, or the response it could not get past. */
type Attempt = {
  timing: Timing;
  /** The failed initialisation timed out. */
  initTimedOut: boolean;
  retryable: boolean;
} & ({ outcome: RunOutcome; response?: undefined } | { outcome?: undefined; response: ActivationResponse });

/** Placements one invocation may have when its runs are never begun. */
const MAX_PLACEMENTS = 3;

/**
 * The one invoke every door leads to: finds an instance, runs the function, and stores the
 * activation record: before anyone is told the result, or (on one server) within the record window.
 */
export class Invoker {
  /** The URL the API answers on (`__OW_API_HOST` in every run), once the server listens. */
  apiHost: string | undefined;
  /** Added to every record: in a cluster, the invoker that ran it. */
  recordAnnotations: KeyValue[] = [];

  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
    private readonly metrics: Metrics,
    private readonly options: {
      /**
       * The record of a call made now is handed to the store's record window and the caller answered
       * at once, rather than after its commit (see ServerConfig.recordWindowMs).
       */
      answerBeforeCommit?: boolean;
    } = {},
  ) {}

  async invoke(invocation: Invocation): Promise<ActivationRecord> {
    const { record } = await this.execute(invocation);
    const accepted = invocation.accepted ?? record.start;
    if (this.options.answerBeforeCommit) this.store.recordActivation(record, accepted);
    else await this.store.completeActivation(record, accepted);
    return record;
  }

  /**
   * Runs one invocation and builds its record, without storing it. `retryable` says whether the
   * failure (if any) is worth another attempt: the platform's own failures and sandbox deaths
   * (timeouts, out of memory, crashes) are; a function that reports an error is only when its
   * result says `retryable: true`; failing to load the function is not.
   */
  async execute(invocation: Invocation): Promise<{ record: ActivationRecord; retryable: boolean }> {
    const accepted = invocation.accepted ?? Date.now();
    const activationId = invocation.activationId ?? newActivationId();
    const action = invocation.action;
    const logs = new LogCollector(action.limits.logs * 1024);
    let attempt: Attempt;
    for (let placements = 1; ; placements++) {
      attempt = await this.attempt(invocation, activationId, accepted, logs);
      // A run its sandbox never began (blocked by an earlier activation's leftover work, say)
      // goes to another instance; the function has not run, so this cannot run it twice.
      if (attempt.outcome?.kind !== 'not-started' || placements >= MAX_PLACEMENTS) break;
    }
    const { timing, outcome } = attempt;
    let response: ActivationResponse;
    let retryable = attempt.retryable;
    if (!outcome) response = attempt.response;
    else {
      response = responseFor(outcome, action);
      if (invocation.checkResult || invocation.applyResult) response = await withPlatformRules(response, invocation);
      retryable =
        outcome.kind === 'timeout' ||
        outcome.kind === 'oom' ||
        outcome.kind === 'crash' ||
        outcome.kind === 'not-started' ||
        (!response.success && (response.result as { retryable?: unknown } | undefined)?.retryable === true);
    }
    const timedOut = outcome?.kind === 'timeout' || attempt.initTimedOut;
    const end = Date.now();
    const record: ActivationRecord = {
      activationId,
      namespace: action.namespace,
      name: action.name,
      version: action.version,
      subject: invocation.subject,
      start: timing.start,
      end,
      duration: end - timing.start,
      response,
      logs: logs.finish(),
      annotations: [
        { key: 'path', value: qualifiedName(action.namespace, action.name).slice(1) },
        { key: 'kind', value: action.exec.kind },
        { key: 'limits', value: action.limits },
        { key: 'isolation', value: action.isolation },
        { key: 'waitTime', value: timing.waitMs },
        { key: 'coldStart', value: timing.cold },
        ...(timing.cold && timing.initMs !== undefined ? [{ key: 'initTime', value: timing.initMs }] : []),
        ...(timing.restored ? [{ key: 'restoredFromSnapshot', value: true }] : []),
        ...(timedOut ? [{ key: 'timeout', value: true }] : []),
        ...this.recordAnnotations,
        ...(invocation.annotations ?? []),
      ],
      publish: false,
    };
    this.observe(record, timing);
    return { record, retryable };
  }

  /**
   * One placement of the invocation: an instance, the run, and the instance given back exactly
   * once, whatever happens. Never throws: every way it can end becomes an outcome or a response.
   */
  private async attempt(invocation: Invocation, activationId: string, accepted: number, logs: LogCollector): Promise<Attempt> {
    const action = invocation.action;
    if (action.exec.code === '') {
      // Taken at create as OpenWhisk takes it; there is nothing to initialise.
      return {
        timing: { start: Date.now(), waitMs: Date.now() - accepted, cold: true },
        response: developerError(
          'Initialization has failed due to: the action has no code (exec.code is empty); update it with its code.',
        ),
        retryable: false,
        initTimedOut: false,
      };
    }
    let lease: Lease;
    try {
      lease = await this.scheduler.acquire(action, logs.sink);
    } catch (error) {
      if (error instanceof InitFailure) {
        this.countStart(action, 'cold');
        return {
          timing: { start: error.startedAt, waitMs: error.waitMs, initMs: error.initMs, cold: true },
          response: developerError(initFailureMessage(error, action)),
          retryable: false,
          initTimedOut: error.outcome.kind === 'timeout',
        };
      }
      return {
        timing: { start: Date.now(), waitMs: Date.now() - accepted, cold: false },
        response: { status: 'whisk internal error', success: false, result: { error: errorMessage(error) } },
        // A function bigger than the whole budget can never run here; other capacity shortages pass.
        retryable: !(error instanceof TooBigError),
        initTimedOut: false,
      };
    }
    const timing: Timing = {
      start: lease.startedAt,
      waitMs: lease.waitMs,
      initMs: lease.initMs,
      cold: lease.cold,
      restored: lease.restored,
    };
    let healthy = false;
    try {
      // Only a queued activation has one: a call made now does not wait a turn for nothing.
      if (invocation.onStarted) await invocation.onStarted();
      this.countStart(
        action,
        lease.cold ? (lease.restored ? 'restore' : lease.prewarmed ? 'stemcell' : 'cold') : lease.prewarmHit ? 'prewarm' : 'warm',
      );
      const outcome = await lease.sandbox.run({
        activationId,
        params: { ...parametersOf(action), ...invocation.params },
        deadline: Date.now() + action.limits.timeout,
        env: this.apiHost ? { __OW_API_HOST: this.apiHost } : {},
        ...(invocation.clientContext !== undefined ? { clientContext: invocation.clientContext } : {}),
        onLog: logs.sink,
      });
      healthy = outcome.kind === 'result' || outcome.kind === 'error';
      return { timing, outcome, retryable: false, initTimedOut: false };
    } catch (error) {
      return {
        timing,
        response: {
          status: 'whisk internal error',
          success: false,
          result: { error: `The platform failed to run the action: ${errorMessage(error)}` },
        },
        retryable: true,
        initTimedOut: false,
      };
    } finally {
      this.scheduler.release(lease, healthy);
    }
  }

  /**
   * Runs an activation from the durable queue. A retryable failure with attempts left goes back
   * in the queue with exponential backoff and `retry` is called with it; otherwise the record is
   * stored over the queued one, with the number of attempts.
   */
  async runQueued(
    queued: QueuedActivation,
    action: ActionVersion | undefined,
    retry: RetryPlan,
  ): Promise<ActivationRecord | undefined> {
    const attempt = queued.attempts + 1;
    if (!action || queued.params === undefined) {
      const reason = action ? 'The invocation cannot be run again.' : 'The action version was deleted before the activation ran.';
      const record = failedRecord(queued, 'whisk internal error', reason);
      await this.store.completeActivation(record, queued.accepted, attempt);
      return record;
    }
    const { record, retryable } = await this.execute({
      action,
      params: queued.params,
      subject: queued.subject,
      activationId: queued.activationId,
      accepted: queued.accepted,
      annotations: [...queued.annotations.filter((a) => a.key !== 'attempt'), { key: 'attempt', value: attempt }],
      onStarted: () => this.store.markActivationRunning(queued.activationId),
    });
    if (retryable && attempt <= retry.maxRetries) {
      const notBefore = Date.now() + Math.min(retry.baseDelayMs * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS);
      await this.store.requeueActivation(queued.activationId, attempt, notBefore);
      retry.requeued({ ...queued, attempts: attempt, notBefore });
      return undefined;
    }
    await this.store.completeActivation(record, queued.accepted, attempt);
    return record;
  }

  /** Records an activation that cannot be run again as failed, with the reason. */
  async fail(pending: QueuedActivation, reason: string): Promise<void> {
    await this.store.completeActivation(
      failedRecord(pending, 'whisk internal error', reason),
      pending.accepted,
      pending.attempts,
    );
  }

  private countStart(action: ActionVersion, start: 'cold' | 'warm' | 'stemcell' | 'prewarm' | 'restore'): void {
    this.metrics.starts.inc({ isolation: action.isolation, namespace: action.namespace, action: action.name, start });
  }

  private observe(record: ActivationRecord, timing: Timing): void {
    const isolation = String(record.annotations.find((a) => a.key === 'isolation')?.value ?? 'unknown');
    this.metrics.activations.inc({ isolation, namespace: record.namespace, action: record.name, status: record.response.status });
    this.metrics.duration.observe(isolation, record.duration / 1000);
    this.metrics.waitTime.observe(isolation, timing.waitMs / 1000);
    if (timing.cold && timing.initMs !== undefined) this.metrics.initTime.observe(isolation, timing.initMs / 1000);
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function parametersOf(action: ActionVersion): Record<string, unknown> {
  return Object.fromEntries(action.parameters.map((p) => [p.key, p.value]));
}

/**
 * A run's response after the platform's own rules on it: the door's rule on a successful result
 * (`checkResult`), then a system action's part (`applyResult`).
 */
export async function withPlatformRules(
  response: ActivationResponse,
  invocation: Pick<Invocation, 'checkResult' | 'applyResult'>,
): Promise<ActivationResponse> {
  const broken = response.success ? invocation.checkResult?.(response.result) : undefined;
  let ruled = broken !== undefined ? developerError(broken) : response;
  if (ruled.success && invocation.applyResult) ruled = await applied(invocation.applyResult, ruled);
  return ruled;
}

async function applied(apply: (result: unknown) => Promise<unknown>, response: ActivationResponse): Promise<ActivationResponse> {
  try {
    return { ...response, result: await apply(response.result) };
  } catch (error) {
    if (!(error instanceof IsolaError)) throw error;
    return { status: 'application error', success: false, result: { error: error.message } };
  }
}

function developerError(message: string): ActivationResponse {
  return { status: 'action developer error', success: false, result: { error: message } };
}

function initFailureMessage(failure: InitFailure, action: ActionVersion): string {
  switch (failure.outcome.kind) {
    case 'timeout':
      return `The action exceeded its time limits of ${action.limits.timeout} milliseconds during initialization.`;
    case 'oom':
      return `The action exhausted its memory limit of ${action.limits.memory} MB during initialization.`;
    default:
      return `Initialization has failed due to: ${failure.outcome.error}`;
  }
}

/** Maps how a run ended to OpenWhisk's response: status, success, and the result or error. */
export function responseFor(outcome: RunOutcome, action: ActionVersion): ActivationResponse {
  switch (outcome.kind) {
    case 'result': {
      const result = outcome.result ?? {};
      if (typeof result !== 'object') return developerError('The action did not return a dictionary.');
      const problem = unstorable(result);
      if (problem) return developerError(`The action produced a response that ${problem}.`);
      // OpenWhisk's rule: a result with a top-level "error" field is the function reporting failure.
      if (!Array.isArray(result) && Object.hasOwn(result, 'error'))
        return { status: 'application error', success: false, result };
      return { status: 'success', success: true, result };
    }
    case 'error': {
      const problem = unstorable(outcome.error);
      if (problem) return developerError(`The action failed with an error value that ${problem}.`);
      return { status: 'application error', success: false, result: { error: outcome.error } };
    }
    case 'timeout':
      return developerError(`The action exceeded its time limits of ${action.limits.timeout} milliseconds.`);
    case 'oom':
      return developerError(`The action exhausted its memory limit of ${action.limits.memory} MB and was aborted.`);
    case 'crash':
      return developerError(`The action did not complete: ${outcome.reason}`);
    case 'not-started':
      return {
        status: 'whisk internal error',
        success: false,
        result: { error: `The action could not be run: ${outcome.reason}` },
      };
  }
}

/**
 * Why a value from a function cannot be stored and sent back as JSON, or undefined when it can:
 * too large (OpenWhisk's 1 MB limit), nested too deeply, or not serialisable at all.
 */
function unstorable(value: unknown): string | undefined {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    if (error instanceof RangeError) return `is nested more deeply than the ${MAX_JSON_DEPTH} levels allowed`;
    return `is not JSON (${errorMessage(error)})`;
  }
  if (text === undefined) return undefined;
  const size = Buffer.byteLength(text);
  if (size > MAX_RESULT_BYTES) return `exceeded the allowed length: ${size} > ${MAX_RESULT_BYTES} bytes`;
  // Nesting n levels takes at least 2n characters: only long texts need the walk.
  if (text.length > 2 * MAX_JSON_DEPTH && nestedDeeperThan(value, MAX_JSON_DEPTH))
    return `is nested more deeply than the ${MAX_JSON_DEPTH} levels allowed`;
  return undefined;
}

export function failedRecord(queued: QueuedActivation, status: ActivationResponse['status'], message: string): ActivationRecord {
  const now = Date.now();
  return {
    activationId: queued.activationId,
    namespace: queued.namespace,
    name: queued.name,
    version: queued.version,
    subject: queued.subject,
    start: queued.accepted,
    end: now,
    duration: now - queued.accepted,
    response: { status, success: false, result: { error: message } },
    logs: [],
    annotations: [{ key: 'path', value: qualifiedName(queued.namespace, queued.name).slice(1) }, ...queued.annotations],
    publish: false,
  };
}
