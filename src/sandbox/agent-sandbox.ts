import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import {
  DEFAULT_LOG_LIMIT_BYTES,
  encodeFrame,
  FrameDecoder,
  FrameError,
  type GuestMessage,
  type HostMessage,
  type RuntimeStart,
} from '../guest/protocol.js';
import {
  type FunctionCode,
  type InitOutcome,
  type LogSink,
  type LogStream,
  lateOutputLine,
  type RunOutcome,
  type RunRequest,
  type Sandbox,
} from './backend.js';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** The sandbox was killed for exceeding its memory limit. */
  oom: boolean;
}

/**
 * How a backend connects the platform to one guest agent: the agent's frame channel, its raw
 * stderr (anything the runtime prints outside frames), and how to kill it and clean up.
 */
export interface AgentTransport {
  readonly input: Writable;
  readonly output: Readable;
  readonly stderr?: Readable;
  /** Resolves once the sandbox is gone; never rejects. */
  readonly exited: Promise<ExitInfo>;
  /** Kills the sandbox at once. Safe to call more than once. */
  kill(): void;
  /** Frees what the sandbox held (files, cgroups, ids) after it exited. */
  cleanup(): Promise<void>;
  /**
   * Called whenever the last run in flight has ended and the sandbox lives on, before it can be
   * given another run: stops every process the function left behind besides the agent. It is
   * on the path of every warm call, so it must be quick.
   */
  reapStrays?(): void;
  /**
   * Called once the function has loaded: processes it started while loading are part of what
   * it loaded (a background process it keeps between calls), and `reapStrays` spares them and
   * their children.
   */
  adoptProcesses?(): void;
  /**
   * The agent's own helper processes (a function's ActionLoop launchers), as it last reported
   * them: `reapStrays` spares exactly these, though not what they start (but for `trees`, whose
   * descendants it spares too: a Lambda bootstrap's), and `adoptProcesses` does not count them
   * as the function's.
   */
  spareProcesses?(pids: readonly number[], trees: readonly number[]): void;
}

interface PendingRun {
  readonly id: string;
  readonly onLog: LogSink;
  /** The run's time budget: its deadline counts from when the agent begins it. */
  readonly budgetMs: number;
  started: boolean;
  /** Wall-clock deadline once started. */
  deadline: number;
  /** Until started, how long to wait for the agent to begin; then the run's own deadline. */
  timer: NodeJS.Timeout | undefined;
  settle: (outcome: RunOutcome) => void;
}

interface LateOutput {
  id: string;
  stream: LogStream;
  text: string;
}

const STDERR_TAIL_LINES = 20;
/** What V8, Node.js and the C++ runtime print when memory runs out (heap limit, RLIMIT_DATA...). */
const OOM_PATTERN = /out of memory|Reached heap limit|Allocation failed|std::bad_alloc/i;
/**
 * A healthy agent begins a run as soon as it reads it. Once the earlier activations' deadlines
 * have passed, an agent that has not begun a run within this much is stuck in leftover work.
 */
const START_GRACE_MS = 5000;
/** A slow channel's pace (about 1 MB/s), for how long a run frame may take to arrive. */
const START_BYTES_PER_MS = 1000;
const STALLED_REASON =
  "The sandbox was stopped before the run began: it was still busy with an earlier activation's leftover work past that activation's deadline.";
const NEIGHBOUR_OVERRAN = 'The sandbox was stopped because another activation in it overran its time limit.';

/** A sandbox whose function runs under the guest agent, whatever wraps the agent. */
export class AgentSandbox implements Sandbox {
  private readonly decoder = new FrameDecoder<GuestMessage>();
  private readonly runs = new Map<string, PendingRun>();
  private initSink: LogSink | undefined;
  private helloWaiter: ((ok: boolean) => void) | undefined;
  private reseedWaiter: ((ok: boolean) => void) | undefined;
  /** What the agent said its last reseed took (for the restore's breakdown in benchmarks). */
  lastReseedGuestMs: { kernel: number; total: number } | undefined;
  private initWaiter: ((outcome: InitOutcome) => void) | undefined;
  private readonly stderrTail: string[] = [];
  private stderrCarry = '';
  private oomSeen = false;
  private exitInfo: ExitInfo | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroying = false;
  private destroyed: Promise<void> | undefined;
  private initTimedOut = false;
  private readonly timedOutRuns = new Set<string>();
  /** Killed because an earlier activation's leftover work kept the agent from beginning a run. */
  private stalled = false;
  private corrupt = false;
  private helloSeen = false;
  /** The latest deadline of any run begun here: until then, leftover work may keep the agent busy. */
  private latestDeadline = 0;
  private logLimitBytes = DEFAULT_LOG_LIMIT_BYTES;
  /** Output of activations that had returned, held for the start of the next one. */
  private late: LateOutput[] = [];
  private lateChars = 0;
  private lateDroppedFrom: string | undefined;

  constructor(
    readonly id: string,
    private readonly transport: AgentTransport,
  ) {
    transport.output.on('data', (chunk: Buffer) => this.onData(chunk));
    transport.output.on('error', () => transport.kill());
    transport.input.on('error', () => transport.kill());
    transport.stderr?.setEncoding('utf8');
    transport.stderr?.on('data', (text: string) => this.onStderr(text));
    void transport.exited.then((info) => this.onExit(info));
  }

  get alive(): boolean {
    return this.exitInfo === undefined && !this.destroying;
  }

  /** Waits for the agent's hello; false if it died or did not answer in time. */
  waitForHello(timeoutMs: number): Promise<boolean> {
    if (this.helloSeen) return Promise.resolve(true);
    if (!this.alive) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.helloWaiter = undefined;
        resolve(ok);
      };
      this.helloWaiter = finish;
    });
  }

  /** Why the agent stopped answering, from its exit and the last lines it printed. */
  describeFailure(): string {
    const exit = this.exitInfo;
    const how = exit
      ? exit.signal
        ? `was killed by ${exit.signal}`
        : exit.code !== null
          ? `exited with code ${exit.code}`
          : 'exited'
      : 'did not answer';
    const tail = this.stderrTail.join('').trim().split('\n').slice(-5).join('\n');
    return `The sandbox ${how}${tail ? `: ${tail}` : '.'}`;
  }

  prestart(runtime: RuntimeStart, memoryMb: number): void {
    if (this.alive) this.send({ type: 'prestart', runtime, memoryMb });
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    if (!this.alive) return { ok: false, kind: 'crash', error: this.describeFailure() };
    this.initSink = onLog;
    this.logLimitBytes = code.logLimitBytes;
    const outcome = await new Promise<InitOutcome>((resolve) => {
      const timer = setTimeout(
        () => {
          this.initTimedOut = true;
          this.transport.kill();
        },
        Math.max(1, deadline - Date.now()),
      );
      this.initWaiter = (result) => {
        clearTimeout(timer);
        this.initWaiter = undefined;
        resolve(result);
      };
      this.send({
        type: 'init',
        code: code.code,
        main: code.main,
        binary: code.binary,
        env: code.env,
        filename: code.filename,
        logLimitBytes: code.logLimitBytes,
        ...(code.package ? { package: code.package } : {}),
        ...(code.memoryMb !== undefined ? { memoryMb: code.memoryMb } : {}),
        ...(code.concurrency !== undefined ? { concurrency: code.concurrency } : {}),
      });
    });
    this.initSink = undefined;
    if (!outcome.ok) await this.destroy();
    return outcome;
  }

  /**
   * Runs the function once. The run's time counts from when the agent begins it (its `started`
   * frame), so leftover work of an earlier activation that keeps the agent busy for a while does
   * not eat into it. Until it begins, the wait is bounded by the earlier activations' deadlines
   * (or a short grace once they have passed); an agent still busy then is killed and the run
   * ends as `not-started`, for the platform to place elsewhere.
   */
  run(request: RunRequest): Promise<RunOutcome> {
    if (!this.alive) return Promise.resolve({ kind: 'not-started', reason: this.describeFailure() });
    const now = Date.now();
    const budgetMs = request.deadline - now;
    if (budgetMs <= 0) return Promise.resolve({ kind: 'timeout' });
    return new Promise<RunOutcome>((resolve) => {
      const run: PendingRun = {
        id: request.activationId,
        onLog: request.onLog,
        budgetMs,
        started: false,
        deadline: request.deadline,
        timer: undefined,
        settle: resolve,
      };
      const frame = encodeFrame({
        type: 'run',
        id: request.activationId,
        params: request.params,
        deadline: request.deadline,
        timeoutMs: budgetMs,
        ack: true,
        env: { ...request.env, __OW_ACTIVATION_ID: request.activationId, __OW_DEADLINE: String(request.deadline) },
        ...(request.clientContext !== undefined ? { clientContext: request.clientContext } : {}),
      });
      // Before any activation ran here nothing can be left over: the run's own timeout bounds
      // the wait. After, the earlier deadlines do (or a grace once they passed), plus the time a
      // large frame takes to cross a slow channel (a microVM's serial port under emulation).
      const waitUntil =
        this.latestDeadline === 0
          ? request.deadline
          : Math.min(request.deadline, Math.max(this.latestDeadline, now + START_GRACE_MS) + frame.length / START_BYTES_PER_MS);
      run.timer = setTimeout(() => this.onStartOverdue(run), waitUntil - now);
      this.runs.set(run.id, run);
      if (this.transport.input.writable) this.transport.input.write(frame);
    });
  }

  /**
   * After a restore from a snapshot: gives the agent fresh entropy (and the host's time) so this
   * clone's random values are its own. False if the agent did not confirm in time.
   */
  reseed(timeoutMs: number, options: { startKernelHelper?: boolean } = {}): Promise<boolean> {
    if (!this.alive) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.reseedWaiter = undefined;
        resolve(ok);
      };
      this.reseedWaiter = finish;
      this.send({
        type: 'reseed',
        entropy: randomBytes(48).toString('base64'),
        now: Date.now(),
        ...(options.startKernelHelper ? { startKernelHelper: true } : {}),
      });
    });
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListener = listener;
  }

  /** Kills the sandbox and removes what it leaves; every caller waits for the same cleanup. */
  destroy(): Promise<void> {
    this.destroyed ??= (async () => {
      this.destroying = true;
      this.transport.kill();
      await this.transport.exited;
      await this.transport.cleanup();
    })();
    return this.destroyed;
  }

  private send(message: HostMessage): void {
    if (this.transport.input.writable) this.transport.input.write(encodeFrame(message));
  }

  private begin(run: PendingRun): void {
    run.started = true;
    clearTimeout(run.timer);
    this.flushLateOutput(run.onLog);
    run.deadline = Date.now() + run.budgetMs;
    this.latestDeadline = Math.max(this.latestDeadline, run.deadline);
    run.timer = setTimeout(() => {
      // The function overran its deadline: the whole sandbox goes, since nothing else can stop
      // a busy loop. The exit handler then settles this run as a timeout.
      this.timedOutRuns.add(run.id);
      this.transport.kill();
    }, run.budgetMs);
  }

  private onStartOverdue(run: PendingRun): void {
    if (run.started || !this.runs.has(run.id)) return;
    this.stalled = true;
    this.transport.kill();
  }

  private finish(run: PendingRun, outcome: RunOutcome): void {
    if (!run.started) this.flushLateOutput(run.onLog);
    clearTimeout(run.timer);
    this.runs.delete(run.id);
    // Whatever the function left running goes before the sandbox can take another run.
    if (this.runs.size === 0 && this.alive) this.transport.reapStrays?.();
    run.settle(outcome);
  }

  private sinkFor(id: string | undefined): LogSink | undefined {
    if (id !== undefined) {
      const run = this.runs.get(id);
      if (run) return run.onLog;
    }
    if (this.initSink) return this.initSink;
    if (this.runs.size === 1) return this.runs.values().next().value?.onLog;
    return undefined;
  }

  /** Output from an activation that already returned: held, within the log limit, for the next one. */
  private holdLateOutput(id: string, stream: LogStream, text: string): void {
    if (this.lateDroppedFrom !== undefined) return;
    if (this.lateChars + text.length > this.logLimitBytes) {
      this.lateDroppedFrom = id;
      return;
    }
    this.late.push({ id, stream, text });
    this.lateChars += text.length;
  }

  /** Writes the held output at the start of a run's logs, each line marked with where it came from. */
  private flushLateOutput(sink: LogSink): void {
    if (this.late.length === 0 && this.lateDroppedFrom === undefined) return;
    const partial = new Map<string, LateOutput>();
    for (const { id, stream, text } of this.late) {
      const key = `${id}\n${stream}`;
      const lines = `${partial.get(key)?.text ?? ''}${text}`.split('\n');
      const rest = lines.pop() ?? '';
      for (const line of lines) sink(stream, `${lateOutputLine(id, line)}\n`);
      partial.set(key, { id, stream, text: rest });
    }
    for (const { id, stream, text } of partial.values()) if (text) sink(stream, `${lateOutputLine(id, text)}\n`);
    if (this.lateDroppedFrom !== undefined) {
      sink(
        'stderr',
        `${lateOutputLine(this.lateDroppedFrom, `Further output was dropped: it exceeded the limit of ${this.logLimitBytes} bytes.`)}\n`,
      );
    }
    this.late = [];
    this.lateChars = 0;
    this.lateDroppedFrom = undefined;
  }

  private onData(chunk: Buffer): void {
    if (this.corrupt) return;
    let messages: GuestMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch (error) {
      // What the agent sent before the corrupt bytes counts (a run's `started`, say): the run that
      // wrote them had begun, and ends as its own crash.
      if (error instanceof FrameError) for (const message of error.decoded as GuestMessage[]) this.onMessage(message);
      // A function that writes raw bytes over the channel breaks only its own sandbox.
      this.corrupt = true;
      this.stderrTail.push('The sandbox sent a corrupt frame.\n');
      this.transport.kill();
      return;
    }
    for (const message of messages) this.onMessage(message);
  }

  private onMessage(message: GuestMessage): void {
    // The guest is not trusted: a message of the wrong shape is ignored, never acted on.
    switch (message.type) {
      case 'hello':
        this.helloSeen = true;
        this.helloWaiter?.(true);
        return;
      case 'ready':
        if (this.initWaiter) this.transport.adoptProcesses?.();
        this.initWaiter?.({ ok: true });
        return;
      case 'initError':
        this.initWaiter?.({ ok: false, kind: 'error', error: String(message.error) });
        return;
      case 'log': {
        const { id, stream, text } = message;
        if (typeof text !== 'string' || (stream !== 'stdout' && stream !== 'stderr')) return;
        if (typeof id === 'string' && !this.runs.has(id)) this.holdLateOutput(id, stream, text);
        else this.sinkFor(typeof id === 'string' ? id : undefined)?.(stream, text);
        return;
      }
      case 'started': {
        const run = this.runs.get(message.id);
        if (run && !run.started) this.begin(run);
        return;
      }
      case 'result': {
        const run = this.runs.get(message.id);
        if (run) this.finish(run, { kind: 'result', result: message.result });
        return;
      }
      case 'error': {
        const run = this.runs.get(message.id);
        if (run)
          this.finish(
            run,
            message.timedOut === true
              ? { kind: 'timeout' }
              : message.outOfMemory === true
                ? { kind: 'oom' }
                : { kind: 'error', error: message.error },
          );
        return;
      }
      case 'pong':
        return;
      case 'reseeded':
        if (message.guestMs) this.lastReseedGuestMs = message.guestMs;
        this.reseedWaiter?.(true);
        return;
      case 'processes': {
        const { pids, trees = [] } = message;
        const valid = (list: unknown): list is number[] =>
          Array.isArray(list) && list.every((pid) => Number.isSafeInteger(pid) && pid > 1);
        // Only processes it spares can have their children spared.
        if (valid(pids) && valid(trees) && trees.every((pid) => pids.includes(pid))) this.transport.spareProcesses?.(pids, trees);
        return;
      }
    }
  }

  private onStderr(text: string): void {
    // Checked chunk by chunk (with a little of the previous one, for a message split in two):
    // a native stack trace after the message can be longer than the tail that is kept.
    if (!this.oomSeen && OOM_PATTERN.test(this.stderrCarry + text)) this.oomSeen = true;
    this.stderrCarry = text.slice(-64);
    this.stderrTail.push(text);
    if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    const sink = this.sinkFor(undefined);
    sink?.('stderr', text);
  }

  private onExit(info: ExitInfo): void {
    const oom = info.oom || this.oomSeen;
    this.exitInfo = { ...info, oom };
    const reason = this.describeFailure();
    this.helloWaiter?.(false);
    this.reseedWaiter?.(false);
    if (this.initWaiter) {
      this.initWaiter(
        this.initTimedOut
          ? { ok: false, kind: 'timeout', error: 'Initialization did not finish in time.' }
          : oom
            ? { ok: false, kind: 'oom', error: 'Initialization exhausted the memory limit.' }
            : { ok: false, kind: 'crash', error: reason },
      );
    }
    const hadWork = this.runs.size > 0;
    const now = Date.now();
    const overran = (run: PendingRun) => run.started && (this.timedOutRuns.has(run.id) || now >= run.deadline);
    const anyOverran = [...this.runs.values()].some(overran);
    // Every run in flight is settled here, whatever ended the sandbox: none is left waiting.
    for (const run of [...this.runs.values()]) {
      clearTimeout(run.timer);
      this.runs.delete(run.id);
      if (!run.started) {
        run.settle({
          kind: 'not-started',
          reason: anyOverran
            ? 'The sandbox was stopped before the run began because another activation in it overran its time limit.'
            : this.stalled
              ? STALLED_REASON
              : reason,
        });
      } else if (overran(run)) run.settle({ kind: 'timeout' });
      else if (oom) run.settle({ kind: 'oom' });
      else if (anyOverran) run.settle({ kind: 'crash', reason: NEIGHBOUR_OVERRAN });
      else if (this.stalled) run.settle({ kind: 'crash', reason: STALLED_REASON });
      else run.settle({ kind: 'crash', reason });
    }
    if (!this.destroying && !hadWork) this.deathListener?.(reason);
    if (!this.destroying) void this.transport.cleanup();
  }
}
