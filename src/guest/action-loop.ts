/**
 * OpenWhisk's ActionLoop protocol, spoken with the processes that run a function written in any
 * language but JavaScript: each reads one JSON line per activation on stdin, writes one JSON line
 * (its result) on fd 3, and prints the end-of-activation sentinel on stdout and stderr after it.
 *
 * One process serves one activation at a time, so that its output belongs to that activation;
 * up to `concurrency` of them are started on demand. fd 3 is a FIFO, never a socket: a process
 * that opens /dev/fd/3 (a JVM does) cannot open a socket that way.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, unlinkSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { type GuestMessage, MAX_RESULT_BYTES } from './protocol.js';

export const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';

type Stream = 'stdout' | 'stderr';

/** An activation's log allowance, counted by the agent's log function. */
export interface LogBudget {
  logBytes: number;
  truncated: boolean;
}

/** What the loop needs from the agent around it. */
export interface LoopHost {
  send(message: GuestMessage): void;
  /** Sends a result frame around `json`, which is already a valid JSON object. */
  sendResult(id: string, json: string): void;
  /** Logs output on an activation's budget (`id` undefined: the initialisation's). */
  log(budget: LogBudget, id: string | undefined, stream: Stream, text: string): void;
  /** The budget of output that belongs to no activation (while loading). */
  readonly looseBudget: LogBudget;
}

export interface LoopOptions {
  dir: string;
  /** argv, `{{memoryMb}}` already replaced. */
  command: string[];
  env: Record<string, string>;
  ack: boolean;
  concurrency: number;
}

const MKFIFO = ['/usr/bin/mkfifo', '/bin/mkfifo'].find((path) => existsSync(path));
export const TAIL_CHARS = 4096;
export const TAIL_LINES = 8;
/** Output without a newline is held (it may be the start of a sentinel) up to this much. */
export const PARTIAL_LINE_CHARS = 64 * 1024;
/** After the result, how long a launcher that prints sentinels has to print them. */
const SENTINEL_WAIT_MS = 2000;
/**
 * After the result of a process that prints no sentinels (a native binary built for OpenWhisk,
 * whose proxy prints them itself): a moment for output already in its pipes to be read.
 */
const UNFRAMED_SETTLE_MS = 5;
/** Without an ack, a process that has not died within this much is taken as started (as OpenWhisk's proxy does). */
const NO_ACK_START_MS = 5;
/** Past a run's deadline the platform stops the sandbox; should it not, the agent ends the run itself. */
export const DEADLINE_GRACE_MS = 2000;
/** A launcher that does not confirm a reseed within this much is left as it is. */
const RESEED_TIMEOUT_MS = 5000;
/** Once a process exited, how long its last output may take to arrive. */
export const EXIT_DRAIN_MS = 200;

interface LoopRun {
  readonly id: string;
  readonly budget: LogBudget;
  readonly deadline: number;
  result: string | undefined;
  /** Its result line was too long to keep. */
  oversized: boolean;
  ended: { stdout: boolean; stderr: boolean };
  timer: NodeJS.Timeout | undefined;
  readonly done: () => void;
}

let fifoCounter = 0;

/**
 * A FIFO for fd 3, made in `dir` and unlinked at once: the agent's read end (opened O_RDWR: it
 * never reads as ended) and the child's write end. Undefined where there is no mkfifo.
 */
export function makeFifo(dir: string): { read: number; write: number } | undefined {
  if (!MKFIFO) return undefined;
  const path = join(dir, `.isola-fd3-${process.pid}-${++fifoCounter}`);
  execFileSync(MKFIFO, ['-m', '600', path]);
  try {
    const read = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    const write = openSync(path, constants.O_WRONLY);
    return { read, write };
  } finally {
    unlinkSync(path);
  }
}

/**
 * What each runtime prints when memory runs out: Python's MemoryError, Java's OutOfMemoryError,
 * Go's "runtime: out of memory", PHP's "Allowed memory size ... exhausted", Ruby's NoMemoryError,
 * C's allocation failures.
 */
export const OUT_OF_MEMORY =
  /MemoryError|OutOfMemoryError|out of memory|Allowed memory size of \d+ bytes exhausted|NoMemoryError|failed to allocate memory|Cannot allocate memory|std::bad_alloc/i;

export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `was killed by ${signal}`;
  if (code !== null) return `exited with code ${code}`;
  return 'exited';
}

/** One process speaking ActionLoop. */
export class Launcher {
  readonly child: ChildProcess;
  /** Resolves once the process is ready for activations; rejects with why it is not. */
  ready: Promise<void>;
  current: LoopRun | undefined;
  exit: { code: number | null; signal: string | null; error?: string } | undefined;
  /** It prints sentinels (ours always do; a native binary may not). */
  private framed: boolean;
  private readonly results: Socket;
  private resultChunks: Buffer[] = [];
  private resultBytes = 0;
  private resultOversized = false;
  /** Consumers of fd 3 lines that are not results: the ack, reseed confirmations. */
  private readonly lineWaiters: ((line: string | undefined) => void)[] = [];
  private readonly carry = { stdout: '', stderr: '' };
  private tail = '';
  /** The process said memory ran out (a crash dump can push that line out of the tail). */
  private outOfMemory = false;
  /** The agent itself stopped the process (a run past its deadline), so a SIGKILL is not the kernel's. */
  private killedByAgent = false;
  /** ... because a run went past its deadline: that run timed out, whatever the process said. */
  private stoppedAtDeadline = false;
  /** The last activation served, which output arriving after its end is attributed to. */
  private previous: { id: string; budget: LogBudget } | undefined;
  private readonly drained: Promise<void>;

  /** What its loop does when it exits, or finishes an activation and lives on. */
  onExit: (launcher: Launcher) => void = () => {};
  onIdle: (launcher: Launcher) => void = () => {};
  private readonly exited: Promise<void>;

  /** `waitForLoad`: a runtime started ahead, ready only once a `load` line made it load a function. */
  constructor(
    private readonly host: LoopHost,
    options: LoopOptions,
    waitForLoad = false,
  ) {
    this.framed = options.ack;
    const fifo = makeFifo(options.dir);
    const [file, ...args] = options.command as [string, ...string[]];
    try {
      this.child = spawn(file, args, {
        cwd: options.dir,
        env: options.env,
        // Without mkfifo (a minimal image), a socket: launchers that write fd 3 directly still work.
        stdio: ['pipe', 'pipe', 'pipe', fifo ? fifo.write : 'pipe'],
      });
    } catch (error) {
      if (fifo) closeSync(fifo.read);
      throw error;
    } finally {
      if (fifo) closeSync(fifo.write);
    }
    this.results = fifo
      ? new Socket({ fd: fifo.read, readable: true, writable: false })
      : ((this.child.stdio[3] as Socket | null) ?? new Socket());
    this.results.on('data', (chunk: Buffer) => this.onResultData(chunk));
    this.results.on('error', () => {});
    this.child.stdin?.on('error', () => {});
    const streams = (['stdout', 'stderr'] as const).map((name) => {
      const stream = this.child[name];
      stream?.setEncoding('utf8');
      stream?.on('data', (text: string) => this.onOutput(name, text));
      return new Promise<void>((resolve) => {
        if (!stream) resolve();
        stream?.once('close', resolve);
        stream?.once('error', () => resolve());
      });
    });
    this.drained = Promise.all(streams).then(() => {});
    this.exited = new Promise<void>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exit ??= { code, signal };
        resolve();
      });
      this.child.once('error', (error) => {
        this.exit ??= { code: null, signal: null, error: error.message };
        resolve();
      });
    });
    void this.exited.then(() => this.onExited());
    // A runtime waiting for its function answers control lines (a reseed) before its ack.
    this.ready = waitForLoad ? new Promise(() => {}) : this.awaitReady(options.ack);
  }

  /** Has a runtime started ahead load the function described by `line`; resolves once it did. */
  load(line: string): Promise<void> {
    this.ready = this.awaitReady(true);
    this.child.stdin?.write(line);
    return this.ready;
  }

  private awaitReady(ack: boolean): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      const fail = () => reject(new Error(this.describeFailure('before it was ready')));
      void this.exited.then(() => this.drainOutput()).then(fail);
      if (ack) {
        this.lineWaiters.push((line) => {
          if (line !== undefined) resolve();
        });
      } else {
        setTimeout(() => {
          if (!this.exit) resolve();
        }, NO_ACK_START_MS);
      }
    });
    // A rejection nobody waits for (a launcher that dies while the loop is idle) is not an error.
    ready.catch(() => {});
    return ready;
  }

  get pid(): number | undefined {
    return this.exit ? undefined : this.child.pid;
  }

  /** Why the process is gone, with the last lines it printed on stderr. */
  describeFailure(when: string): string {
    const how = this.exit?.error
      ? `could not be started (${this.exit.error})`
      : describeExit(this.exit?.code ?? null, this.exit?.signal ?? null);
    const tail = this.tail.trim().split('\n').slice(-TAIL_LINES).join('\n');
    return `The action's process ${how} ${when}${tail ? `: ${tail}` : '.'}`;
  }

  /** Serves one activation; `run.done` is called once it ended, whichever way. */
  serve(run: LoopRun, line: string): void {
    this.current = run;
    const overdue = Math.max(0, run.deadline - Date.now()) + DEADLINE_GRACE_MS;
    run.timer = setTimeout(() => {
      this.host.log(run.budget, run.id, 'stderr', 'The action did not finish by its deadline: its process was stopped.\n');
      this.stoppedAtDeadline = true;
      this.kill();
    }, overdue);
    this.child.stdin?.write(line);
  }

  /** Sends a control line and waits for its `{"ok": true}`; false if none came in time. */
  control(line: string): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(undefined), RESEED_TIMEOUT_MS);
      const finish = (answer: string | undefined) => {
        clearTimeout(timer);
        const index = this.lineWaiters.indexOf(finish);
        if (index >= 0) this.lineWaiters.splice(index, 1);
        resolve(answer !== undefined);
      };
      this.lineWaiters.push(finish);
      this.child.stdin?.write(line);
    });
  }

  kill(): void {
    this.killedByAgent = true;
    if (!this.exit) this.child.kill('SIGKILL');
  }

  private onResultData(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, start)) {
      this.takeResultBytes(chunk.subarray(start, newline));
      const oversized = this.resultOversized;
      const line = Buffer.concat(this.resultChunks).toString('utf8').trim();
      this.resultChunks = [];
      this.resultBytes = 0;
      this.resultOversized = false;
      start = newline + 1;
      if (oversized) this.onResultLine(undefined);
      // Some runtimes write an empty line beside the result.
      else if (line) this.onResultLine(line);
    }
    if (start < chunk.length) this.takeResultBytes(chunk.subarray(start));
  }

  /** Buffers part of a line, dropping it once it is certainly too large to be a result. */
  private takeResultBytes(part: Buffer): void {
    if (this.resultOversized) return;
    this.resultBytes += part.length;
    if (this.resultBytes > MAX_RESULT_BYTES + 1024) {
      this.resultOversized = true;
      this.resultChunks = [];
      return;
    }
    this.resultChunks.push(Buffer.from(part));
  }

  /** A line on fd 3: the current activation's result, else an ack. `undefined`: a line too long to keep. */
  private onResultLine(line: string | undefined): void {
    const run = this.current;
    if (run && run.result === undefined) {
      run.result = line ?? '';
      run.oversized = line === undefined;
      clearTimeout(run.timer);
      const complete = this.framed ? run.ended.stdout && run.ended.stderr : false;
      if (complete) this.finish(run);
      else run.timer = setTimeout(() => this.finish(run), this.framed ? SENTINEL_WAIT_MS : UNFRAMED_SETTLE_MS);
      return;
    }
    this.lineWaiters.shift()?.(line ?? '');
  }

  private onOutput(stream: Stream, chunk: string): void {
    let text = this.carry[stream] + chunk;
    for (let at = text.indexOf(`${SENTINEL}\n`); at >= 0; at = text.indexOf(`${SENTINEL}\n`)) {
      if (at > 0) this.emit(stream, text.endsWith('\n', at) ? text.slice(0, at) : `${text.slice(0, at)}\n`);
      text = text.slice(at + SENTINEL.length + 1);
      this.endOfActivation(stream);
    }
    // Whole lines go out at once; a long line without its end goes out but for what may begin a sentinel.
    let cut = text.lastIndexOf('\n') + 1;
    if (text.length - cut > PARTIAL_LINE_CHARS) cut = text.length - SENTINEL.length;
    if (cut > 0) this.emit(stream, text.slice(0, cut));
    this.carry[stream] = text.slice(cut);
  }

  private emit(stream: Stream, text: string): void {
    if (stream === 'stderr') {
      this.tail = (this.tail + text).slice(-TAIL_CHARS);
      if (!this.outOfMemory && OUT_OF_MEMORY.test(text)) this.outOfMemory = true;
    }
    const owner = this.current ?? this.previous;
    this.host.log(owner?.budget ?? this.host.looseBudget, owner?.id, stream, text);
  }

  private endOfActivation(stream: Stream): void {
    this.framed = true;
    const run = this.current;
    if (!run) return;
    run.ended[stream] = true;
    if (run.result !== undefined && run.ended.stdout && run.ended.stderr) this.finish(run);
  }

  /** Output held back (a last line without its newline) goes to whoever it belongs to. */
  private flushCarry(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      const text = this.carry[stream];
      this.carry[stream] = '';
      if (text) this.emit(stream, `${text}\n`);
    }
  }

  private finish(run: LoopRun): void {
    if (this.current !== run) return;
    clearTimeout(run.timer);
    this.flushCarry();
    const result = run.result;
    if (run.oversized) {
      this.host.send({
        type: 'error',
        id: run.id,
        error: `The action produced a response that exceeded the allowed length: more than ${MAX_RESULT_BYTES} bytes.`,
      });
    } else if (result !== undefined && isDictionary(result)) {
      const bytes = Buffer.byteLength(result, 'utf8');
      if (bytes > MAX_RESULT_BYTES) {
        this.host.send({
          type: 'error',
          id: run.id,
          error: `The action produced a response that exceeded the allowed length: ${bytes} > ${MAX_RESULT_BYTES} bytes.`,
        });
      } else this.host.sendResult(run.id, result);
    } else if (result !== undefined) {
      // Handed on as a string, which the platform refuses as it refuses any function's result that
      // is not a dictionary: the developer's error, as OpenWhisk's ActionLoop proxy has it.
      this.host.log(run.budget, run.id, 'stderr', `The action's result is not a JSON object: ${result.slice(0, 200)}\n`);
      this.host.sendResult(run.id, JSON.stringify(result.slice(0, 200)));
    } else {
      // Killed by the kernel (a cgroup's OOM killer sends SIGKILL, and nothing else in the sandbox
      // does but the agent), or dead after saying memory ran out: the memory limit ended it.
      const killed = this.exit?.signal === 'SIGKILL' && !this.killedByAgent;
      this.host.send({
        type: 'error',
        id: run.id,
        error: this.describeFailure('during the activation'),
        ...(this.outOfMemory || killed ? { outOfMemory: true } : {}),
        // Normally the platform stops the sandbox at the deadline first; on a host too busy to,
        // this stop is still the run's timeout.
        ...(this.stoppedAtDeadline ? { timedOut: true } : {}),
      });
    }
    this.current = undefined;
    this.previous = { id: run.id, budget: run.budget };
    run.done();
    if (!this.exit) this.onIdle(this);
  }

  /** Waits (briefly) for what the process printed before it died. */
  private async drainOutput(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, EXIT_DRAIN_MS)))]);
    clearTimeout(timer);
  }

  private async onExited(): Promise<void> {
    await this.drainOutput();
    this.flushCarry();
    for (const waiter of this.lineWaiters.splice(0)) waiter(undefined);
    const run = this.current;
    if (run) {
      // Its result, if it wrote one, stands; otherwise the activation ends with why it died.
      this.finish(run);
    }
    this.results.destroy();
    this.onExit(this);
  }
}

/** The control line that has a launcher reseed its language's generators (a snapshot clone). */
export function reseedLine(entropy: string, now: number): string {
  return `${JSON.stringify({ __isola: 'reseed', entropy, now })}\n`;
}

function isDictionary(line: string): boolean {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

interface Waiting {
  readonly run: LoopRun;
  readonly line: string;
}

/** The processes that serve a function's activations. */
export class ActionLoop {
  private readonly launchers = new Set<Launcher>();
  private readonly idle: Launcher[] = [];
  private readonly waiting: Waiting[] = [];

  constructor(
    private readonly host: LoopHost,
    private readonly options: LoopOptions,
  ) {}

  /**
   * Starts the first process, or has a runtime started ahead load the function with `ahead.line`;
   * rejects with why it could not start (its stderr's last lines).
   */
  async start(ahead?: { launcher: Launcher; line: string }): Promise<void> {
    const launcher = ahead ? this.adopt(ahead.launcher) : this.spawn();
    await (ahead ? launcher.load(ahead.line) : launcher.ready);
    this.release(launcher);
  }

  /** Runs one activation; `line` is its ActionLoop request with the newline. Never rejects. */
  run(id: string, line: string, deadline: number, budget: LogBudget): Promise<void> {
    return new Promise((resolve) => {
      const run: LoopRun = {
        id,
        budget,
        deadline,
        result: undefined,
        oversized: false,
        ended: { stdout: false, stderr: false },
        timer: undefined,
        done: resolve,
      };
      const launcher = this.idle.pop();
      if (launcher) launcher.serve(run, line);
      else {
        this.waiting.push({ run, line });
        if (this.launchers.size < this.options.concurrency) this.startFor();
      }
    });
  }

  /** After a snapshot restore: each process reseeds its language's generators. */
  async reseed(entropy: string, now: number): Promise<void> {
    if (!this.options.ack) return;
    const line = reseedLine(entropy, now);
    await Promise.all(
      [...this.launchers].filter((launcher) => launcher.pid !== undefined).map((launcher) => launcher.control(line)),
    );
  }

  /** Stops every process (the agent is going away). */
  stop(): void {
    for (const launcher of this.launchers) launcher.kill();
  }

  private spawn(): Launcher {
    return this.adopt(new Launcher(this.host, this.options));
  }

  private adopt(launcher: Launcher): Launcher {
    launcher.onExit = (gone) => this.onExit(gone);
    launcher.onIdle = (free) => this.release(free);
    this.launchers.add(launcher);
    this.reportProcesses();
    return launcher;
  }

  /** Starts a process for the next waiting activation; if it cannot start, that activation fails. */
  private startFor(): void {
    let launcher: Launcher;
    try {
      launcher = this.spawn();
    } catch (error) {
      const next = this.waiting.shift();
      if (next)
        this.failWaiting(
          next,
          `The action's process could not be started: ${error instanceof Error ? error.message : String(error)}`,
        );
      return;
    }
    launcher.ready.then(
      () => this.release(launcher),
      (error: unknown) => {
        const next = this.waiting.shift();
        if (next) this.failWaiting(next, error instanceof Error ? error.message : String(error));
      },
    );
  }

  private failWaiting(waiting: Waiting, reason: string): void {
    this.host.send({ type: 'error', id: waiting.run.id, error: reason });
    waiting.run.done();
  }

  /** A process is free: it takes the next waiting activation, or waits for one. */
  private release(launcher: Launcher): void {
    if (launcher.exit) return;
    const next = this.waiting.shift();
    if (next) {
      launcher.serve(next.run, next.line);
      return;
    }
    this.idle.push(launcher);
  }

  private onExit(launcher: Launcher): void {
    this.launchers.delete(launcher);
    const index = this.idle.indexOf(launcher);
    if (index >= 0) this.idle.splice(index, 1);
    this.reportProcesses();
    // Activations waiting for a process get a new one in its place.
    if (this.waiting.length > 0 && this.launchers.size < this.options.concurrency) this.startFor();
  }

  private reportProcesses(): void {
    const pids = [...this.launchers].map((launcher) => launcher.pid).filter((pid): pid is number => pid !== undefined);
    this.host.send({ type: 'processes', pids });
  }
}
