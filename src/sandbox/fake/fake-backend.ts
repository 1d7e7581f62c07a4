import type { Isolation } from '../../core/kinds.js';
import type {
  Backend,
  BackendStatus,
  FunctionCode,
  InitOutcome,
  LogSink,
  RunOutcome,
  RunRequest,
  Sandbox,
  SandboxSpec,
} from '../backend.js';

/**
 * A backend for the scheduler's unit tests, beside the real ones: sandboxes that cost nothing and
 * do what the test says, when the test says. A function's code names its behaviour: `fail` fails
 * to load, `hold-init` waits to load until the test lets it (`finishInit`), anything else loads.
 * Runs answer at once with their params (or `params.result` when given), unless the params say
 * `{ hold: true }`: then they wait for `finishRun(activationId, outcome)`; `{ throw: true }` makes
 * the run itself fail, as a broken backend would. With `snapshots: true` it also takes snapshots
 * (a function loaded once is restored after) and fails to restore those listed in `brokenSnapshots`.
 * Never registered as a backend users can choose.
 */
export class FakeBackend implements Backend {
  readonly minMemoryMb = 16;
  readonly sandboxes: FakeSandbox[] = [];
  readonly heldRuns = new Map<string, (outcome: RunOutcome) => void>();
  readonly heldInits: ((outcome: InitOutcome) => void)[] = [];
  created = 0;
  /** Keys of the functions snapshotted, and of those whose restore fails. */
  readonly snapshots = new Set<string>();
  readonly brokenSnapshots = new Set<string>();
  restored = 0;
  /** The next this many creates fail, as a backend out of resources would. */
  failCreates = 0;
  readonly restore?: (code: FunctionCode, spec: SandboxSpec) => Promise<Sandbox | undefined>;
  readonly snapshot?: (code: FunctionCode, spec: SandboxSpec) => void;

  constructor(
    readonly isolation: Isolation = 'isolate',
    options: { snapshots?: boolean } = {},
  ) {
    if (options.snapshots) {
      this.snapshot = (code) => this.snapshots.add(code.key);
      this.restore = async (code, spec) => {
        if (this.brokenSnapshots.has(code.key)) throw new Error('the snapshot is corrupt');
        if (!this.snapshots.has(code.key)) return undefined;
        this.restored++;
        const sandbox = new FakeSandbox(this, spec, ++this.created);
        sandbox.code = code;
        this.sandboxes.push(sandbox);
        return sandbox;
      };
    }
  }

  async status(): Promise<BackendStatus> {
    return { isolation: this.isolation, available: true, detail: 'fake sandboxes for tests' };
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new Error('no room for another sandbox');
    }
    const sandbox = new FakeSandbox(this, spec, ++this.created);
    this.sandboxes.push(sandbox);
    return sandbox;
  }

  /** Ends a held run. */
  finishRun(activationId: string, outcome: RunOutcome = { kind: 'result', result: { done: activationId } }): void {
    const finish = this.heldRuns.get(activationId);
    if (!finish) throw new Error(`no held run ${activationId}`);
    this.heldRuns.delete(activationId);
    finish(outcome);
  }

  /** Lets the oldest held initialisation finish. */
  finishInit(outcome: InitOutcome = { ok: true }): void {
    const finish = this.heldInits.shift();
    if (!finish) throw new Error('no held initialisation');
    finish(outcome);
  }

  /** Live sandboxes (not destroyed, not dead). */
  get alive(): number {
    return this.sandboxes.filter((s) => s.alive).length;
  }

  async close(): Promise<void> {}
}

export class FakeSandbox implements Sandbox {
  readonly id: string;
  private dead = false;
  private deathListener: ((reason: string) => void) | undefined;
  code: FunctionCode | undefined;

  constructor(
    private readonly backend: FakeBackend,
    readonly spec: SandboxSpec,
    n: number,
  ) {
    this.id = `fake-${n}`;
  }

  get alive(): boolean {
    return !this.dead;
  }

  init(code: FunctionCode, _deadline: number, _onLog: LogSink): Promise<InitOutcome> {
    this.code = code;
    if (code.code === 'fail') return Promise.resolve({ ok: false, kind: 'error', error: 'the function failed to load' });
    if (code.code === 'hold-init') return new Promise((resolve) => this.backend.heldInits.push(resolve));
    return Promise.resolve({ ok: true });
  }

  run(request: RunRequest): Promise<RunOutcome> {
    if (this.dead) return Promise.resolve({ kind: 'crash', reason: 'the sandbox is gone' });
    // `{ notStartedOn: "fake-1" }`: that sandbox never begins the run (and dies), as one blocked
    // by an earlier activation's leftover work does.
    if (request.params.notStartedOn === this.id) {
      this.kill('blocked');
      return Promise.resolve({ kind: 'not-started', reason: 'blocked by leftover work' });
    }
    if (request.params.throw === true) return Promise.reject(new Error('the sandbox broke'));
    if (request.params.result !== undefined) return Promise.resolve({ kind: 'result', result: request.params.result });
    if (request.params.hold === true) {
      return new Promise((resolve) => this.backend.heldRuns.set(request.activationId, resolve));
    }
    return Promise.resolve({ kind: 'result', result: request.params });
  }

  /** The sandbox dies on its own, as a crashed process would. */
  kill(reason = 'killed'): void {
    if (this.dead) return;
    this.dead = true;
    this.deathListener?.(reason);
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListener = listener;
  }

  async destroy(): Promise<void> {
    this.dead = true;
  }
}
