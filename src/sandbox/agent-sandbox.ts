import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { encodeFrame, FrameDecoder, type GuestMessage, type HostMessage } from '../guest/protocol.js';
import type { FunctionCode, InitOutcome, LogSink, LogStream, RunOutcome, RunRequest, Sandbox } from './backend.js';

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
}

interface PendingRun {
  resolve: (outcome: RunOutcome) => void;
  onLog: LogSink;
}

const STDERR_TAIL_LINES = 20;
const OOM_PATTERN = /JavaScript heap out of memory|Reached heap limit|Allocation failed/;

/** A sandbox whose function runs under the guest agent, whatever wraps the agent. */
export class AgentSandbox implements Sandbox {
  private readonly decoder = new FrameDecoder<GuestMessage>();
  private readonly runs = new Map<string, PendingRun>();
  private initSink: LogSink | undefined;
  private helloWaiter: ((ok: boolean) => void) | undefined;
  private reseedWaiter: ((ok: boolean) => void) | undefined;
  private initWaiter: ((outcome: InitOutcome) => void) | undefined;
  private readonly stderrTail: string[] = [];
  private exitInfo: ExitInfo | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroying = false;
  private destroyed: Promise<void> | undefined;
  private timedOut = false;
  private timedOutRun: string | undefined;
  private helloSeen = false;

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

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    if (!this.alive) return { ok: false, kind: 'crash', error: this.describeFailure() };
    this.initSink = onLog;
    const outcome = await new Promise<InitOutcome>((resolve) => {
      const timer = setTimeout(
        () => {
          this.timedOut = true;
          this.transport.kill();
        },
        Math.max(1, deadline - Date.now()),
      );
      this.initWaiter = (result) => {
        clearTimeout(timer);
        this.initWaiter = undefined;
        resolve(result);
      };
      this.send({ type: 'init', code: code.code, main: code.main, binary: code.binary, env: code.env });
    });
    this.initSink = undefined;
    if (!outcome.ok) await this.destroy();
    return outcome;
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    if (!this.alive) return { kind: 'crash', reason: this.describeFailure() };
    const remaining = request.deadline - Date.now();
    if (remaining <= 0) return { kind: 'timeout' };
    return new Promise<RunOutcome>((resolve) => {
      const timer = setTimeout(() => {
        // The function overran its deadline: the whole sandbox goes, since nothing else can stop
        // a busy loop. The exit handler then settles this run as a timeout.
        this.timedOutRun = request.activationId;
        this.transport.kill();
      }, remaining);
      this.runs.set(request.activationId, {
        onLog: request.onLog,
        resolve: (outcome) => {
          clearTimeout(timer);
          this.runs.delete(request.activationId);
          resolve(outcome);
        },
      });
      this.send({
        type: 'run',
        id: request.activationId,
        params: request.params,
        deadline: request.deadline,
        env: { ...request.env, __OW_ACTIVATION_ID: request.activationId, __OW_DEADLINE: String(request.deadline) },
      });
    });
  }

  /**
   * After a restore from a snapshot: gives the agent fresh entropy (and the host's time) so this
   * clone's random values are its own. False if the agent did not confirm in time.
   */
  reseed(timeoutMs: number): Promise<boolean> {
    if (!this.alive) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.reseedWaiter = undefined;
        resolve(ok);
      };
      this.reseedWaiter = finish;
      this.send({ type: 'reseed', entropy: randomBytes(48).toString('base64'), now: Date.now() });
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

  private sinkFor(id: string | undefined): LogSink | undefined {
    if (id !== undefined) {
      const run = this.runs.get(id);
      if (run) return run.onLog;
    }
    if (this.initSink) return this.initSink;
    if (this.runs.size === 1) return this.runs.values().next().value?.onLog;
    return undefined;
  }

  private onData(chunk: Buffer): void {
    let messages: GuestMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch {
      // A function that writes raw bytes over the channel breaks only its own sandbox.
      this.stderrTail.push('The sandbox sent a corrupt frame.\n');
      this.transport.kill();
      return;
    }
    for (const message of messages) this.onMessage(message);
  }

  private onMessage(message: GuestMessage): void {
    switch (message.type) {
      case 'hello':
        this.helloSeen = true;
        this.helloWaiter?.(true);
        return;
      case 'ready':
        this.initWaiter?.({ ok: true });
        return;
      case 'initError':
        this.initWaiter?.({ ok: false, kind: 'error', error: message.error });
        return;
      case 'log':
        this.sinkFor(message.id)?.(message.stream, message.text);
        return;
      case 'result':
        this.runs.get(message.id)?.resolve({ kind: 'result', result: message.result });
        return;
      case 'error':
        this.runs.get(message.id)?.resolve({ kind: 'error', error: message.error });
        return;
      case 'pong':
        return;
      case 'reseeded':
        this.reseedWaiter?.(true);
        return;
    }
  }

  private onStderr(text: string): void {
    this.stderrTail.push(text);
    if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    const sink = this.sinkFor(undefined);
    sink?.('stderr' as LogStream, text);
  }

  private onExit(info: ExitInfo): void {
    const oom = info.oom || OOM_PATTERN.test(this.stderrTail.join(''));
    this.exitInfo = { ...info, oom };
    const reason = this.describeFailure();
    this.helloWaiter?.(false);
    this.reseedWaiter?.(false);
    if (this.initWaiter) {
      this.initWaiter(
        this.timedOut
          ? { ok: false, kind: 'timeout', error: 'Initialization did not finish in time.' }
          : oom
            ? { ok: false, kind: 'oom', error: 'Initialization exhausted the memory limit.' }
            : { ok: false, kind: 'crash', error: reason },
      );
    }
    const hadWork = this.runs.size > 0;
    for (const [id, run] of [...this.runs]) {
      if (id === this.timedOutRun) run.resolve({ kind: 'timeout' });
      else if (oom) run.resolve({ kind: 'oom' });
      else if (this.timedOutRun)
        run.resolve({
          kind: 'crash',
          reason: 'The sandbox was stopped because another activation in it overran its time limit.',
        });
      else run.resolve({ kind: 'crash', reason });
    }
    if (!this.destroying && !hadWork) this.deathListener?.(reason);
    if (!this.destroying) void this.transport.cleanup();
  }
}
