/**
 * AWS Lambda's Runtime API (version 2018-06-01), served by the agent to a custom runtime's
 * `bootstrap`: the process is started with `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`, asks for
 * each event with `GET /runtime/invocation/next` (held open until there is one) and answers it with
 * `POST /runtime/invocation/{id}/response` or `/error`, or reports a failed start with
 * `POST /runtime/init/error`. It lives between invocations, as on Lambda.
 *
 * Each bootstrap has a server of its own, on a port of the sandbox's loopback: its output then
 * belongs to the one invocation it was given. Up to `concurrency` of them run on demand; one that
 * dies is replaced by the next invocation that needs it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
// The same bounds as the ActionLoop launchers' (tails, partial lines, deadline grace, exit drain).
import {
  DEADLINE_GRACE_MS,
  describeExit,
  EXIT_DRAIN_MS,
  type LogBudget,
  type LoopHost,
  OUT_OF_MEMORY,
  PARTIAL_LINE_CHARS,
  TAIL_CHARS,
  TAIL_LINES,
} from './action-loop.js';
import { MAX_RESULT_BYTES } from './protocol.js';

/** Lambda's limit on a synchronous response (and its error), as its Runtime API enforces it. */
export const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024;
const API = '/2018-06-01/runtime/';
/** After an answer, how long the bootstrap has to ask for its next event before the run ends anyway. */
const NEXT_WAIT_MS = 50;
/** Once the bootstrap asked for its next event: a moment for output already in its pipes to be read. */
const SETTLE_MS = 5;

type Stream = 'stdout' | 'stderr';

/** How Lambda shapes a function's error: what Invoke returns as its payload. */
export interface LambdaErrorBody {
  errorMessage: string;
  errorType: string;
  stackTrace?: unknown;
}

/** A bootstrap that could not be started, or that failed before asking for its first event. */
export class BootstrapFailure extends Error {
  constructor(readonly lambdaError: LambdaErrorBody) {
    super(lambdaError.errorMessage);
  }
}

export interface LambdaRuntimeOptions {
  dir: string;
  /** argv of the bootstrap. */
  command: string[];
  /** Its environment, all but AWS_LAMBDA_RUNTIME_API (each process's own). */
  env: Record<string, string>;
  concurrency: number;
  /** Lambda-Runtime-Invoked-Function-Arn. */
  functionArn: string;
}

interface Run {
  readonly id: string;
  /** The event, JSON. */
  readonly event: string;
  readonly deadline: number;
  readonly budget: LogBudget;
  readonly traceId: string;
  /** Lambda-Runtime-Client-Context, when the invoke had one. */
  readonly clientContext: string | undefined;
  /** The bootstrap has been handed the event. */
  delivered: boolean;
  /** What the bootstrap answered: the response's body, or its error. */
  outcome: { response: Buffer } | { error: unknown } | undefined;
  deadlineTimer: NodeJS.Timeout | undefined;
  settleTimer: NodeJS.Timeout | undefined;
  readonly done: () => void;
}

/** An X-Ray trace header, as Lambda hands every invocation one. */
function traceId(): string {
  const seconds = Math.floor(Date.now() / 1000).toString(16);
  return `Root=1-${seconds}-${randomBytes(12).toString('hex')};Parent=${randomBytes(8).toString('hex')};Sampled=0`;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** The Runtime API's own errors: `{errorMessage, errorType}` with its status. */
function refuse(res: ServerResponse, status: number, errorType: string, errorMessage: string): void {
  sendJson(res, status, { errorMessage, errorType });
}

/** The body, or undefined when it is over `limit` bytes (it is read to its end all the same). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let over = Number(req.headers['content-length'] ?? 0) > limit;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      bytes += chunk.length;
      if (bytes > limit) {
        over = true;
        chunks.length = 0;
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks)));
    req.on('error', () => resolve(undefined));
  });
}

/**
 * An error as the bootstrap posted it: Lambda's `{errorMessage, errorType, stackTrace}` (the
 * Lambda-Runtime-Function-Error-Type header names the type when the body does not), or text.
 */
export function errorBodyOf(body: Buffer, typeHeader: string | string[] | undefined): LambdaErrorBody {
  const headerType = typeof typeHeader === 'string' && typeHeader.length > 0 ? typeHeader.slice(0, 256) : undefined;
  const text = body.toString('utf8');
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
      const fields = parsed as Record<string, unknown>;
      return {
        ...fields,
        errorMessage: typeof fields.errorMessage === 'string' ? fields.errorMessage : '',
        errorType: typeof fields.errorType === 'string' ? fields.errorType : (headerType ?? 'Unhandled'),
      };
    }
  } catch {
    // Not JSON: the text is the message.
  }
  return { errorMessage: text.trim(), errorType: headerType ?? 'Unhandled' };
}

/** A path segment decoded; one that does not decode names no invocation. */
function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return '';
  }
}

/** One bootstrap process and the Runtime API it is given. */
class Bootstrap {
  child: ChildProcess | undefined;
  /** Resolves once it asked for its first event; rejects (BootstrapFailure) with why it never will. */
  readonly ready: Promise<void>;
  current: Run | undefined;
  exit: { code: number | null; signal: string | null; error?: string } | undefined;
  /** Who the output of a bootstrap started for a waiting run belongs to while it starts. */
  initOwner: { id: string; budget: LogBudget } | undefined;
  onExit: (bootstrap: Bootstrap) => void = () => {};
  onIdle: (bootstrap: Bootstrap) => void = () => {};
  /** Called with its pid once it runs. */
  onSpawn: () => void = () => {};
  private readonly server: Server;
  private initialised = false;
  private failed: BootstrapFailure | undefined;
  /** Its `GET /next`, held until there is an event. */
  private parked: ServerResponse | undefined;
  private previous: { id: string; budget: LogBudget } | undefined;
  private readonly carry = { stdout: '', stderr: '' };
  private tail = '';
  private outOfMemory = false;
  private killedByAgent = false;
  private settleReady: { resolve: () => void; reject: (error: BootstrapFailure) => void } | undefined;

  constructor(
    private readonly host: LoopHost,
    private readonly options: LambdaRuntimeOptions,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    // A failure nobody waits for (a bootstrap that dies while idle) is not an error.
    this.ready.catch(() => {});
    this.server = createServer((req, res) => this.handle(req, res));
    // `GET /next` is a long poll: no timeout of Node's may end it, nor the connection around it.
    this.server.requestTimeout = 0;
    this.server.keepAliveTimeout = 0;
    this.server.on('error', (error) => {
      if (!this.child) this.failToStart(error.message);
    });
    // Only inside the sandbox: its loopback, which nothing outside the sandbox reaches.
    this.server.listen(0, '127.0.0.1', () => this.spawn());
  }

  get pid(): number | undefined {
    return this.exit ? undefined : this.child?.pid;
  }

  private spawn(): void {
    const { port } = this.server.address() as AddressInfo;
    const [file, ...args] = this.options.command as [string, ...string[]];
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: this.options.dir,
        env: { ...this.options.env, AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${port}` },
        stdio: ['ignore', 'pipe', 'pipe'],
        // A group of its own, so that what it runs (a curl waiting for the next event) goes with it.
        detached: true,
      });
    } catch (error) {
      this.failToStart(error instanceof Error ? error.message : String(error));
      return;
    }
    this.child = child;
    const streams = (['stdout', 'stderr'] as const).map((name) => {
      const stream = child[name];
      stream?.setEncoding('utf8');
      stream?.on('data', (text: string) => this.onOutput(name, text));
      return new Promise<void>((resolve) => {
        if (!stream) resolve();
        stream?.once('close', resolve);
        stream?.once('error', () => resolve());
      });
    });
    const drained = Promise.all(streams).then(() => {});
    child.once('exit', (code, signal) => {
      this.exit ??= { code, signal };
      void this.onExited(drained);
    });
    child.once('error', (error) => {
      this.exit ??= { code: null, signal: null, error: error.message };
      void this.onExited(drained);
    });
    if (child.pid !== undefined) this.onSpawn();
  }

  private failToStart(reason: string): void {
    this.exit ??= { code: null, signal: null, error: reason };
    this.server.close();
    this.rejectReady(`The bootstrap could not be started: ${reason}`, 'Runtime.InvalidEntrypoint');
    this.onExit(this);
  }

  private rejectReady(errorMessage: string, errorType: string): void {
    if (this.initialised || this.failed) return;
    this.failed = new BootstrapFailure({ errorMessage, errorType });
    this.settleReady?.reject(this.failed);
  }

  /** Hands it a run: at once if it is waiting for its next event, else when it asks. */
  serve(run: Run): void {
    this.current = run;
    run.deadlineTimer = setTimeout(
      () => {
        this.host.log(run.budget, run.id, 'stderr', 'The function did not finish by its deadline: its bootstrap was stopped.\n');
        this.kill();
      },
      Math.max(0, run.deadline - Date.now()) + DEADLINE_GRACE_MS,
    );
    const parked = this.parked;
    if (parked) {
      this.parked = undefined;
      this.deliver(run, parked);
    }
  }

  kill(): void {
    this.killedByAgent = true;
    const pid = this.child?.pid;
    if (pid === undefined || this.exit) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      this.child?.kill('SIGKILL');
    }
  }

  // ---- the Runtime API ----------------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const route = path.startsWith(API) ? path.slice(API.length) : undefined;
    const answer = route === undefined ? null : /^invocation\/([^/]+)\/(response|error)$/.exec(route);
    const expected = route === 'invocation/next' ? 'GET' : route === 'init/error' || answer ? 'POST' : undefined;
    if (expected === undefined) {
      refuse(res, 404, 'NotFound', `The Runtime API has no ${path.slice(0, 200)}.`);
      return;
    }
    if (req.method !== expected) {
      res.setHeader('Allow', expected);
      refuse(res, 405, 'MethodNotAllowed', `${path.slice(0, 200)} takes ${expected}.`);
      return;
    }
    if (route === 'invocation/next') this.next(req, res);
    else if (route === 'init/error') void this.initError(req, res);
    else if (answer) void this.answer(safeDecode(answer[1] as string), answer[2] as 'response' | 'error', req, res);
  }

  private next(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    if (this.failed) {
      refuse(res, 403, 'InvalidStateTransition', 'The runtime reported an initialization error: it gets no invocation.');
      return;
    }
    if (this.parked) {
      refuse(res, 403, 'InvalidStateTransition', 'The runtime is already waiting for its next invocation.');
      return;
    }
    if (!this.initialised) {
      this.initialised = true;
      this.settleReady?.resolve();
    }
    const run = this.current;
    if (run?.delivered) {
      // Asking for the next event ends the current one; without an answer, it failed.
      run.outcome ??= {
        error: {
          errorMessage: `The bootstrap asked for its next invocation without answering ${run.id}.`,
          errorType: 'Runtime.NoResponse',
        },
      };
      clearTimeout(run.settleTimer);
      run.settleTimer = setTimeout(() => this.finish(run), SETTLE_MS);
    }
    if (run && !run.delivered) {
      this.deliver(run, res);
      return;
    }
    this.parked = res;
    res.once('close', () => {
      if (this.parked === res) this.parked = undefined;
    });
  }

  private deliver(run: Run, res: ServerResponse): void {
    run.delivered = true;
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(run.event),
      'Lambda-Runtime-Aws-Request-Id': run.id,
      'Lambda-Runtime-Deadline-Ms': String(run.deadline),
      'Lambda-Runtime-Invoked-Function-Arn': this.options.functionArn,
      'Lambda-Runtime-Trace-Id': run.traceId,
      ...(run.clientContext !== undefined ? { 'Lambda-Runtime-Client-Context': run.clientContext } : {}),
    });
    res.end(run.event);
  }

  /** `POST /runtime/invocation/{id}/response` and `/error`. */
  private async answer(id: string, kind: 'response' | 'error', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const run = this.current;
    const open = (candidate: Run | undefined): candidate is Run =>
      candidate !== undefined && this.current === candidate && candidate.id === id && candidate.delivered && !candidate.outcome;
    if (!open(run)) {
      req.resume();
      refuse(res, 400, 'InvalidRequestID', 'Invalid request ID');
      return;
    }
    const body = await readBody(req, MAX_PAYLOAD_BYTES);
    if (!open(run)) {
      refuse(res, 400, 'InvalidRequestID', 'Invalid request ID');
      return;
    }
    if (body === undefined) {
      const errorMessage = `Response payload size exceeded maximum allowed payload size (${MAX_PAYLOAD_BYTES} bytes).`;
      run.outcome = { error: { errorMessage, errorType: 'Function.ResponseSizeTooLarge' } };
      refuse(res, 413, 'RequestEntityTooLarge', `Exceeded maximum allowed payload size (${MAX_PAYLOAD_BYTES} bytes).`);
    } else {
      run.outcome =
        kind === 'response'
          ? { response: body }
          : { error: errorBodyOf(body, req.headers['lambda-runtime-function-error-type']) };
      sendJson(res, 202, { status: 'OK' });
    }
    // The run ends once the bootstrap asks for its next event (its output until then is this
    // run's), or a moment after the answer if it does not.
    clearTimeout(run.settleTimer);
    run.settleTimer = setTimeout(() => this.finish(run), NEXT_WAIT_MS);
  }

  /** `POST /runtime/init/error`: the bootstrap could not start its function. */
  private async initError(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.initialised || this.failed) {
      req.resume();
      refuse(
        res,
        403,
        'InvalidStateTransition',
        'The runtime has already initialised: init/error is only taken before the first invocation.',
      );
      return;
    }
    const body = await readBody(req, MAX_PAYLOAD_BYTES);
    const error = body ? errorBodyOf(body, req.headers['lambda-runtime-function-error-type']) : undefined;
    sendJson(res, 202, { status: 'OK' });
    const detail = error ? `${error.errorType}: ${error.errorMessage || '(no message)'}` : 'its report was too large to read';
    this.rejectReady(`The bootstrap reported an initialization error: ${detail}`, error?.errorType ?? 'Runtime.InitError');
    // As on Lambda, a runtime that failed to initialise is not kept.
    res.once('finish', () => this.kill());
  }

  // ---- output and the end of runs ------------------------------------------------------------

  private onOutput(stream: Stream, chunk: string): void {
    const text = this.carry[stream] + chunk;
    let cut = text.lastIndexOf('\n') + 1;
    if (text.length - cut > PARTIAL_LINE_CHARS) cut = text.length;
    if (cut > 0) this.emit(stream, text.slice(0, cut));
    this.carry[stream] = text.slice(cut);
  }

  private emit(stream: Stream, text: string): void {
    if (stream === 'stderr') {
      this.tail = (this.tail + text).slice(-TAIL_CHARS);
      if (!this.outOfMemory && OUT_OF_MEMORY.test(text)) this.outOfMemory = true;
    }
    const owner = this.current ?? (this.initialised ? this.previous : (this.initOwner ?? this.previous));
    this.host.log(owner?.budget ?? this.host.looseBudget, owner?.id, stream, text);
  }

  private flushCarry(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      const text = this.carry[stream];
      this.carry[stream] = '';
      if (text) this.emit(stream, `${text}\n`);
    }
  }

  /** Why the process is gone, with the last lines it printed on stderr. */
  describeFailure(when: string): string {
    const how = this.exit?.error
      ? `could not be started (${this.exit.error})`
      : describeExit(this.exit?.code ?? null, this.exit?.signal ?? null);
    const tail = this.tail.trim().split('\n').slice(-TAIL_LINES).join('\n');
    return `The bootstrap ${how} ${when}${tail ? `: ${tail}` : '.'}`;
  }

  private finish(run: Run): void {
    if (this.current !== run) return;
    clearTimeout(run.deadlineTimer);
    clearTimeout(run.settleTimer);
    this.flushCarry();
    const outcome = run.outcome;
    if (outcome && 'response' in outcome) this.sendResponse(run, outcome.response);
    else if (outcome) this.host.send({ type: 'error', id: run.id, error: outcome.error });
    else {
      // Killed by the kernel (a cgroup's OOM killer sends SIGKILL, and nothing else in the sandbox
      // does but the agent), or dead after saying memory ran out: the memory limit ended it.
      const killed = this.exit?.signal === 'SIGKILL' && !this.killedByAgent;
      const error: LambdaErrorBody = {
        errorMessage: this.describeFailure('during the invocation'),
        errorType: 'Runtime.ExitError',
      };
      this.host.send({ type: 'error', id: run.id, error, ...(this.outOfMemory || killed ? { outOfMemory: true } : {}) });
    }
    this.current = undefined;
    this.previous = { id: run.id, budget: run.budget };
    run.done();
    if (!this.exit) this.onIdle(this);
  }

  /**
   * The response as the activation's result: JSON, as every function's result is (an object or
   * an array; a string or number is refused by the platform as any function's is, and an empty
   * body is `{}`, as a Node.js handler that returns nothing). Text that is not JSON is handed on as
   * a string, which the platform refuses the same way, and the logs say what it was.
   */
  private sendResponse(run: Run, body: Buffer): void {
    if (body.length > MAX_RESULT_BYTES) {
      this.host.send({
        type: 'error',
        id: run.id,
        error: `The action produced a response that exceeded the allowed length: ${body.length} > ${MAX_RESULT_BYTES} bytes.`,
      });
      return;
    }
    const text = body.toString('utf8').trim();
    if (text === '') {
      this.host.sendResult(run.id, '{}');
      return;
    }
    try {
      JSON.parse(text);
      this.host.sendResult(run.id, text);
    } catch {
      this.host.log(run.budget, run.id, 'stderr', `The bootstrap's response is not JSON: ${text.slice(0, 200)}\n`);
      this.host.sendResult(run.id, JSON.stringify(text.slice(0, 200)));
    }
  }

  private async onExited(drained: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, EXIT_DRAIN_MS)))]);
    clearTimeout(timer);
    this.flushCarry();
    this.rejectReady(this.describeFailure('before it asked for an invocation'), 'Runtime.ExitError');
    this.parked = undefined;
    this.server.close();
    this.server.closeAllConnections();
    const run = this.current;
    // Its answer, if it gave one, stands; otherwise the run ends with why it died.
    if (run) this.finish(run);
    this.onExit(this);
  }
}

/** The bootstraps that serve a function's invocations. */
export class LambdaRuntime {
  private readonly bootstraps = new Set<Bootstrap>();
  private readonly idle: Bootstrap[] = [];
  private readonly waiting: Run[] = [];

  constructor(
    private readonly host: LoopHost,
    private readonly options: LambdaRuntimeOptions,
  ) {}

  /** Starts the first bootstrap; rejects (BootstrapFailure) with why it could not start. */
  async start(): Promise<void> {
    const bootstrap = this.spawn();
    await bootstrap.ready;
    this.release(bootstrap);
  }

  /** Runs one invocation with `event` (JSON). Never rejects. */
  run(id: string, event: string, deadline: number, budget: LogBudget, clientContext?: string): Promise<void> {
    return new Promise((resolve) => {
      const run: Run = {
        id,
        event,
        deadline,
        budget,
        traceId: traceId(),
        // A header value is one line of visible text: anything else is not passed on.
        clientContext: clientContext !== undefined && /^[\x20-\x7e]*$/.test(clientContext) ? clientContext : undefined,
        delivered: false,
        outcome: undefined,
        deadlineTimer: undefined,
        settleTimer: undefined,
        done: resolve,
      };
      const bootstrap = this.idle.pop();
      if (bootstrap) bootstrap.serve(run);
      else {
        this.waiting.push(run);
        if (this.bootstraps.size < this.options.concurrency) this.startFor(run);
      }
    });
  }

  /** Stops every bootstrap (the agent is going away). */
  stop(): void {
    for (const bootstrap of this.bootstraps) bootstrap.kill();
  }

  private spawn(): Bootstrap {
    const bootstrap = new Bootstrap(this.host, this.options);
    bootstrap.onExit = (gone) => this.onExit(gone);
    bootstrap.onIdle = (free) => this.release(free);
    bootstrap.onSpawn = () => this.reportProcesses();
    this.bootstraps.add(bootstrap);
    return bootstrap;
  }

  /** Starts a bootstrap for the waiting runs; if it fails to start, the first of them fails with why. */
  private startFor(run: Run): void {
    const bootstrap = this.spawn();
    bootstrap.initOwner = { id: run.id, budget: run.budget };
    bootstrap.ready.then(
      () => this.release(bootstrap),
      (error: unknown) => {
        const next = this.waiting.shift();
        if (!next) return;
        const lambdaError =
          error instanceof BootstrapFailure ? error.lambdaError : { errorMessage: String(error), errorType: 'Runtime.Unknown' };
        this.host.send({ type: 'error', id: next.id, error: lambdaError });
        next.done();
      },
    );
  }

  /** A bootstrap is free: it takes the next waiting run, or waits for one. */
  private release(bootstrap: Bootstrap): void {
    if (bootstrap.exit) return;
    const next = this.waiting.shift();
    if (next) bootstrap.serve(next);
    else this.idle.push(bootstrap);
  }

  private onExit(bootstrap: Bootstrap): void {
    if (!this.bootstraps.delete(bootstrap)) return;
    const index = this.idle.indexOf(bootstrap);
    if (index >= 0) this.idle.splice(index, 1);
    this.reportProcesses();
    // Runs waiting for a bootstrap get a new one in its place: once the run that a bootstrap
    // which failed to start was started for has been failed (that comes first, as a microtask).
    queueMicrotask(() => {
      const next = this.waiting[0];
      if (next && this.bootstraps.size < this.options.concurrency) this.startFor(next);
    });
  }

  /** Its bootstraps stay between runs, and so does what they run (a request for the next event). */
  private reportProcesses(): void {
    const pids = [...this.bootstraps].map((b) => b.pid).filter((pid): pid is number => pid !== undefined);
    this.host.send({ type: 'processes', pids, trees: pids });
  }
}
