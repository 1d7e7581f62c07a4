import type { ActionVersion, ActivationRecord } from '../core/types.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { QueuedActivation } from '../store/store.js';
import type { Invocation, Invoker } from './invoker.js';

/** How a queued activation that failed is retried. */
export interface RetryPlan {
  maxRetries: number;
  baseDelayMs: number;
  /** Called with the activation put back in the queue, for its next attempt. */
  requeued: (again: QueuedActivation) => void;
}

/**
 * Where invocations run: on this host's backends (a server on its own, or a cluster's invoker), or,
 * for a cluster's controller, on the invokers it places them on. The invoke path above it is the
 * same either way.
 */
export interface Executor {
  /** Before anything is recorded: throws QueueFullError or TooBigError when the call cannot be taken now. */
  admit(fn: ActionVersion): void;
  /** Throws TooBigError when the function could never run here (it needs more memory than any budget). */
  assertFits(fn: ActionVersion): void;
  /** Runs the invocation now; resolves with its record once it is stored. */
  invoke(invocation: Invocation): Promise<ActivationRecord>;
  /** Runs an activation from the durable queue, retrying as planned; undefined when it went back in the queue. */
  runQueued(queued: QueuedActivation, action: ActionVersion | undefined, retry: RetryPlan): Promise<ActivationRecord | undefined>;
  /** Records an activation that cannot be run again as failed, with the reason. */
  fail(pending: QueuedActivation, reason: string): Promise<void>;
  /**
   * A cluster's: hands an accepted activation (already stored as queued) on to run elsewhere,
   * durably before it resolves; throws when it cannot. Without it, queued activations run here.
   */
  submit?(queued: QueuedActivation, fn: ActionVersion): Promise<void>;
}

/** This host's scheduler and invoker. */
export function localExecutor(scheduler: Scheduler, invoker: Invoker): Executor {
  return {
    admit: (fn) => scheduler.admit(fn),
    assertFits: (fn) => scheduler.assertFits(fn),
    invoke: (invocation) => invoker.invoke(invocation),
    runQueued: (queued, action, retry) => invoker.runQueued(queued, action, retry),
    fail: (pending, reason) => invoker.fail(pending, reason),
  };
}
