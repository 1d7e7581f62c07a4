import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import {
  type Backend,
  functionCodeOf,
  type InitOutcome,
  type LogSink,
  type PreparedCode,
  type Sandbox,
  sandboxSpecOf,
} from '../sandbox/backend.js';
import type { StemCells } from './stem-cells.js';

/** The function could not be loaded into a new instance. */
export class InitFailure extends Error {
  constructor(
    readonly outcome: Extract<InitOutcome, { ok: false }>,
    readonly initMs: number,
    readonly waitMs: number,
    readonly startedAt: number,
  ) {
    super(outcome.error);
  }
}

/** A sandbox with one version of a function loaded, and how it came to be. */
export interface Launched {
  sandbox: Sandbox;
  /** Restored from a snapshot of the function taken after its initialisation. */
  restored: boolean;
  /** A blank sandbox made ahead of time (a stem cell) was used. */
  prewarmed: boolean;
  /** ms spent making the sandbox and loading the function. */
  initMs: number;
  /** ms since the epoch when the launch began. */
  startedAt: number;
}

/**
 * Makes instances: a snapshot restore when the function has one, else a blank sandbox (a stem
 * cell made ahead, or a new one) that loads the function. Knows backends, not instances.
 */
export class Launcher {
  constructor(
    private readonly backends: ReadonlyMap<Isolation, Backend>,
    private readonly stemCells: StemCells,
    private readonly onBackgroundError: (message: string, error: unknown) => void,
    /** What the deploy made of the action (a package, compiled code); found in a cache, made again when missing. */
    private readonly prepare?: (action: ActionVersion) => Promise<PreparedCode>,
  ) {}

  /** Resolves with the loaded sandbox; rejects with InitFailure, never anything else. */
  async launch(action: ActionVersion, onLog: LogSink, arrived: number): Promise<Launched> {
    const startedAt = Date.now();
    const fail = (outcome: Extract<InitOutcome, { ok: false }>) =>
      new InitFailure(outcome, Date.now() - startedAt, startedAt - arrived, startedAt);
    const backend = this.backends.get(action.isolation);
    if (!backend)
      throw fail({ ok: false, kind: 'crash', error: `The ${action.isolation} backend is not enabled on this server.` });
    let prepared: PreparedCode | undefined;
    try {
      prepared = await this.prepare?.(action);
    } catch (error) {
      // It was made once at deploy: failing to make it again from the stored source is the platform's failure.
      throw fail({ ok: false, kind: 'crash', error: `The function's package could not be made: ${errorText(error)}` });
    }
    const code = functionCodeOf(action, prepared);
    const spec = sandboxSpecOf(action);
    if (code.snapshot && backend.restore) {
      // A snapshot of this function skips both the sandbox's boot and the function's
      // initialisation. One that fails to restore is reported, and a fresh sandbox used instead.
      try {
        const restored = await backend.restore(code, spec);
        if (restored) return { sandbox: restored, restored: true, prewarmed: false, initMs: Date.now() - startedAt, startedAt };
      } catch (error) {
        this.onBackgroundError(`restoring a snapshot of ${code.key} failed; starting it afresh`, error);
      }
    }
    let sandbox: Sandbox | undefined;
    let prewarmed = false;
    try {
      sandbox = this.stemCells.take(action.isolation, spec);
      prewarmed = sandbox !== undefined;
      sandbox ??= await backend.create(spec);
    } catch (error) {
      this.stemCells.replenish(action.isolation, spec);
      throw fail({ ok: false, kind: 'crash', error: `The ${action.isolation} sandbox did not start: ${errorText(error)}` });
    }
    let outcome: InitOutcome;
    try {
      // The function's time limit covers loading it, not making its sandbox (as OpenWhisk's covers
      // /init, not the container's creation): a kind's first microVM builds its image and base
      // snapshot, which takes longer than most limits and is the platform's work, not the function's.
      outcome = await sandbox.init(code, Date.now() + action.limits.timeout, onLog);
    } catch (error) {
      outcome = { ok: false, kind: 'crash', error: `The sandbox failed while loading the function: ${errorText(error)}` };
    }
    this.stemCells.replenish(action.isolation, spec);
    if (!outcome.ok) {
      await sandbox.destroy().catch((error: unknown) => this.onBackgroundError('destroying a failed sandbox failed', error));
      throw fail(outcome);
    }
    if (code.snapshot) backend.snapshot?.(code, spec);
    return { sandbox, restored: false, prewarmed, initMs: Date.now() - startedAt, startedAt };
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
