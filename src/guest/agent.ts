/**
 * The guest agent: runs one function inside a process, container, gVisor sandbox or microVM and
 * speaks the framed protocol with the platform. It is bundled into a single CommonJS file that
 * needs nothing but the node binary.
 *
 * Usage: node agent.cjs [--channel=stdio | --channel=/dev/virtio-ports/<name>] [--unlink-self]
 *
 * `--unlink-self` removes the agent's file once it is loaded, for a sandbox whose private /tmp
 * holds it: the function then finds its /tmp empty.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createReadStream, createWriteStream, openSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import timers from 'node:timers';
import { format, promisify } from 'node:util';
import { compileFunction } from 'node:vm';
import { ActionLoop, Launcher, type LogBudget, type LoopHost, reseedLine } from './action-loop.js';
import { BootstrapFailure, LambdaRuntime } from './lambda-runtime.js';
import { unpackPackage } from './package.js';
import {
  type CallInfo,
  type Entry,
  lambdaRuntimeOptions,
  loadLine,
  loadModule,
  loopOptions,
  runtimeOptions,
} from './package-loader.js';
import {
  AGENT_PROTOCOL_VERSION,
  DEFAULT_LOG_LIMIT_BYTES,
  encodeFrame,
  encodeJsonFrame,
  FrameDecoder,
  type FunctionPackage,
  type GuestMessage,
  type HostMessage,
  MAX_RESULT_BYTES,
} from './protocol.js';
import { installReseedableRandomness, installRestorableClock, KernelReseeder, reseed, reseedKernel } from './reseed.js';

// Before any function code loads, so that everything it captures can be reseeded after a restore.
installReseedableRandomness();
installRestorableClock();
// In a VM guest, before the snapshot is taken: a clone reseeds its kernel through it.
const kernelReseeder = KernelReseeder.start();

type Stream = 'stdout' | 'stderr';

/** What the agent keeps about one run, from its start until its deadline. */
interface Activation {
  readonly id: string;
  /** Timers and immediates the run (or its leftover work) scheduled and that have not fired yet. */
  readonly timers: Map<object, 'timeout' | 'immediate'>;
  /** UTF-8 bytes of output so far, against the log limit; output after its return counts too. */
  logBytes: number;
  truncated: boolean;
  returned: boolean;
  /** When its time is up, on this process's monotonic clock (performance.now()). */
  readonly deadlineAt: number;
  /** Past its deadline: its pending timers were cleared and it may not schedule more. */
  expired: boolean;
  /** Fires at the deadline while the activation runs or has timers pending. */
  expiry: NodeJS.Timeout | undefined;
}

// Every frame a function's output is cut into stays small, whatever it prints at once.
const LOG_CHUNK_CHARS = 256 * 1024;
// A syntax error's source line is shown around the error when the line is longer than this.
const SOURCE_LINE_WINDOW = 160;

const original = {
  setTimeout: globalThis.setTimeout,
  setInterval: globalThis.setInterval,
  setImmediate: globalThis.setImmediate,
  clearTimeout: globalThis.clearTimeout,
  clearInterval: globalThis.clearInterval,
  clearImmediate: globalThis.clearImmediate,
};

const currentActivation = new AsyncLocalStorage<Activation>();
const channelArg = process.argv.find((a) => a.startsWith('--channel='))?.slice('--channel='.length) ?? 'stdio';
const agentFile = __filename;

if (process.argv.includes('--unlink-self')) {
  try {
    unlinkSync(agentFile);
  } catch {
    // Nothing to hide if it is already gone.
  }
}

let writeFrame: (frame: Buffer) => void;
/** Starts reading frames from the channel, calling `onChunk` with each chunk. */
let listen: (onChunk: (chunk: Buffer) => void) => void;

if (channelArg === 'stdio') {
  // stdout carries frames; whatever the function prints goes through the patched writers below.
  const rawWrite = process.stdout.write.bind(process.stdout);
  writeFrame = (frame) => {
    rawWrite(frame);
  };
  listen = (onChunk) => {
    process.stdin.on('data', onChunk);
    // The platform closed our stdin: it is done with this sandbox.
    process.stdin.on('end', () => process.exit(0));
  };
} else {
  const fd = openSync(channelArg, 'r+');
  const out = createWriteStream('', { fd, autoClose: false });
  writeFrame = (frame) => {
    out.write(frame);
  };
  // A virtio-serial port reads as ended while no host is connected to it (between a snapshot
  // restore and the host's connection, say): then wait and read again, never exit.
  listen = (onChunk) => {
    const read = () => {
      const stream = createReadStream('', { fd, autoClose: false, highWaterMark: 256 * 1024 });
      stream.on('data', (chunk) => onChunk(chunk as Buffer));
      stream.on('end', () => original.setTimeout(read, 5));
      stream.on('error', () => original.setTimeout(read, 5));
    };
    read();
  };
}

function send(message: GuestMessage): void {
  writeFrame(encodeFrame(message));
}

// ---------------------------------------------------------------------------------------------
// Output: tagged with the activation that printed it, capped per activation.

let logLimitBytes = DEFAULT_LOG_LIMIT_BYTES;
/** Output outside any activation (the initialisation, timers it set): capped per init and per run. */
const looseOutput = { logBytes: 0, truncated: false };

/** The longest prefix of `text` that is at most `maxBytes` bytes of UTF-8, without splitting a character. */
function utf8Prefix(text: string, maxBytes: number): string {
  if (maxBytes <= 0) return '';
  let end = Math.min(text.length, maxBytes);
  for (;;) {
    let prefix = text.slice(0, end);
    const last = prefix.charCodeAt(prefix.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) prefix = prefix.slice(0, -1);
    const bytes = Buffer.byteLength(prefix, 'utf8');
    if (bytes <= maxBytes) return prefix;
    end = Math.floor((end * maxBytes) / bytes);
  }
}

function sendLog(id: string | undefined, stream: Stream, text: string): void {
  let offset = 0;
  while (offset < text.length) {
    let end = Math.min(text.length, offset + LOG_CHUNK_CHARS);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    const piece = offset === 0 && end === text.length ? text : text.slice(offset, end);
    send(id === undefined ? { type: 'log', stream, text: piece } : { type: 'log', id, stream, text: piece });
    offset = end;
  }
}

function log(stream: Stream, text: string): void {
  const activation = currentActivation.getStore();
  logTo(activation ?? looseOutput, activation?.id, stream, text);
}

/** Logs output on a budget: an activation's (with its id) or the initialisation's. */
function logTo(budget: LogBudget, id: string | undefined, stream: Stream, text: string): void {
  if (budget.truncated || text.length === 0) return;
  const bytes = Buffer.byteLength(text, 'utf8');
  if (budget.logBytes + bytes <= logLimitBytes) {
    budget.logBytes += bytes;
    sendLog(id, stream, text);
    return;
  }
  // Cut before framing: a function that prints 100 MB at once must not make a 100 MB frame.
  const fits = utf8Prefix(text, logLimitBytes - budget.logBytes);
  budget.logBytes = logLimitBytes;
  budget.truncated = true;
  if (fits) sendLog(id, stream, `${fits}\n`);
  sendLog(id, 'stderr', `Logs were truncated because the total bytes size exceeds the limit of ${logLimitBytes} bytes.\n`);
}

function textOf(chunk: unknown, encoding: unknown): string {
  if (typeof chunk === 'string') {
    const decode = typeof encoding === 'string' && encoding !== 'utf8' && encoding !== 'utf-8' && Buffer.isEncoding(encoding);
    return decode ? Buffer.from(chunk, encoding).toString('utf8') : chunk;
  }
  if (chunk instanceof Uint8Array) {
    // Decode no more than can be logged: a 100 MB Buffer must not become a 100 MB string here.
    const length = Math.min(chunk.byteLength, logLimitBytes + 4);
    return Buffer.from(chunk.buffer, chunk.byteOffset, length).toString('utf8');
  }
  return String(chunk ?? '');
}

// Route everything the function prints into log frames tagged with its activation.
function patchStream(stream: NodeJS.WriteStream, name: Stream): void {
  stream.write = ((chunk: unknown, encodingOrCallback?: unknown, callback?: unknown): boolean => {
    log(name, textOf(chunk, encodingOrCallback));
    const done = typeof encodingOrCallback === 'function' ? encodingOrCallback : callback;
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  }) as typeof stream.write;
}
patchStream(process.stdout, 'stdout');
patchStream(process.stderr, 'stderr');
/** A line of output; a long one is logged in two parts rather than copied whole to add the newline. */
function logLine(stream: Stream, text: string): void {
  if (text.length <= LOG_CHUNK_CHARS) {
    log(stream, `${text}\n`);
  } else {
    log(stream, text);
    log(stream, '\n');
  }
}
console.log = (...args: unknown[]) => logLine('stdout', format(...args));
console.info = console.log;
console.debug = console.log;
console.warn = (...args: unknown[]) => logLine('stderr', format(...args));
console.error = console.warn;
console.trace = function trace(...args: unknown[]) {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, trace);
  const frames = userStack(holder.stack ?? '')
    .split('\n')
    .slice(1)
    .join('\n');
  log('stderr', `Trace: ${format(...args)}\n${frames}\n`);
};

/** A stack without the agent's own frames below the function's (they say nothing to its author). */
function userStack(stack: string): string {
  const lines = stack.split('\n');
  let cut = lines.findIndex((line) => line.startsWith('    at ') && line.includes(agentFile));
  if (cut < 0) return stack;
  while (cut > 1 && /\(node:async_hooks:|^ {4}at node:async_hooks:/.test(lines[cut - 1] as string)) cut--;
  return lines.slice(0, cut).join('\n');
}

function stackOf(error: unknown): string {
  if (error instanceof Error) return userStack(error.stack ?? `${error.name}: ${error.message}`);
  return String(error);
}

// ---------------------------------------------------------------------------------------------
// Timers: each belongs to the activation that scheduled it, and none outlives its deadline.

const OWNER = Symbol('isola.activation');
type Owned = { [OWNER]?: Activation };

/**
 * Watches for the activation's deadline while it can still do something at it; false once the
 * deadline has passed. Watching only then keeps a busy function from piling up a timer per run.
 */
function watchDeadline(activation: Activation): boolean {
  if (activation.expired) return false;
  const remaining = activation.deadlineAt - performance.now();
  if (remaining <= 0) {
    expire(activation);
    return false;
  }
  if (!activation.expiry) {
    activation.expiry = original.setTimeout(() => expire(activation), remaining);
    activation.expiry.unref();
  }
  return true;
}

/** Stops watching an activation that returned and has nothing pending. */
function settleIfIdle(activation: Activation): void {
  if (activation.returned && activation.timers.size === 0 && activation.expiry) {
    original.clearTimeout(activation.expiry);
    activation.expiry = undefined;
  }
}

function expire(activation: Activation): void {
  if (activation.expiry) original.clearTimeout(activation.expiry);
  activation.expired = true;
  activation.expiry = undefined;
  for (const [timer, kind] of activation.timers) {
    if (kind === 'immediate') original.clearImmediate(timer as NodeJS.Immediate);
    else original.clearTimeout(timer as NodeJS.Timeout);
  }
  activation.timers.clear();
}

function wrapScheduler<T extends object>(
  schedule: (callback: (...args: unknown[]) => void, ...rest: unknown[]) => T,
  cancel: (timer: T) => void,
  kind: 'timeout' | 'immediate',
  repeats: boolean,
): (callback: unknown, ...rest: unknown[]) => T {
  const wrapped = function (this: unknown, callback: unknown, ...rest: unknown[]): T {
    const activation = currentActivation.getStore();
    if (activation === undefined || typeof callback !== 'function') {
      return schedule.call(this, callback as (...args: unknown[]) => void, ...rest);
    }
    if (!watchDeadline(activation)) {
      // Leftover work past its deadline: what it schedules never runs.
      const timer = schedule(() => {}, ...rest);
      cancel(timer);
      return timer;
    }
    const fn = callback as (...args: unknown[]) => void;
    const timer: T = schedule(
      function (this: unknown, ...args: unknown[]) {
        if (!repeats) {
          activation.timers.delete(timer);
          settleIfIdle(activation);
        }
        return fn.apply(this, args);
      },
      ...rest,
    );
    (timer as Owned)[OWNER] = activation;
    activation.timers.set(timer, kind);
    return timer;
  };
  // util.promisify(setTimeout) keeps giving timers/promises' version (looked up when asked for).
  if (promisify.custom in schedule) {
    Object.defineProperty(wrapped, promisify.custom, {
      get: () => (schedule as unknown as Record<symbol, unknown>)[promisify.custom],
    });
  }
  return wrapped;
}

function wrapCancel<T>(cancel: (timer: T) => void): (timer: T) => void {
  return (timer: T) => {
    const activation = timer !== null && typeof timer === 'object' ? (timer as Owned)[OWNER] : undefined;
    if (activation) {
      activation.timers.delete(timer as object);
      settleIfIdle(activation);
    }
    cancel(timer);
  };
}

const patchedTimers = {
  setTimeout: wrapScheduler(original.setTimeout as never, original.clearTimeout as never, 'timeout', false),
  setInterval: wrapScheduler(original.setInterval as never, original.clearInterval as never, 'timeout', true),
  setImmediate: wrapScheduler(original.setImmediate as never, original.clearImmediate as never, 'immediate', false),
  clearTimeout: wrapCancel(original.clearTimeout),
  clearInterval: wrapCancel(original.clearInterval),
  clearImmediate: wrapCancel(original.clearImmediate),
};
Object.assign(globalThis, patchedTimers);
Object.assign(timers, patchedTimers);

// ---------------------------------------------------------------------------------------------
// Loading the function.

let entry: Entry | undefined;
let sourceName = 'index.js';

interface InitFailure {
  /** One line for the activation's result. */
  message: string;
  /** What goes to the initialisation's logs. */
  log: string;
}

function compile(code: string, filename: string) {
  return compileFunction(code, ['exports', 'require', 'module', '__filename', '__dirname'], { filename });
}

function loadFunction(code: string, mainName: string, filename: string): Entry {
  const dir = process.cwd();
  const path = join(dir, filename);
  const module = { exports: {} as unknown };
  // Scripts declare `function main` at top level; modules assign exports.main or module.exports.
  // The appended return hands back a top-level declaration when there is one.
  const body = `${code}\n;return typeof ${mainName} === 'function' ? ${mainName} : undefined;`;
  let compiled: ReturnType<typeof compile>;
  try {
    compiled = compile(body, filename);
  } catch (error) {
    // Where the error is in the function's own text, not in what was appended to it.
    if (error instanceof SyntaxError) compile(code, filename);
    throw error;
  }
  const local = compiled(module.exports, createRequire(path), module, path, dir) as unknown;
  const exported = module.exports as Record<string, unknown> | ((...a: unknown[]) => unknown);
  const candidates: unknown[] = [
    typeof exported === 'object' && exported !== null ? exported[mainName] : undefined,
    typeof exported === 'function' && mainName === 'main' ? exported : undefined,
    typeof exported === 'function' ? (exported as unknown as Record<string, unknown>)[mainName] : undefined,
    local,
  ];
  const found = candidates.find((c) => typeof c === 'function') as ((params: unknown) => unknown) | undefined;
  if (!found) throw new Error(`The function has no entry point "${mainName}": define function ${mainName}(params) or export it.`);
  return (params) => found(params);
}

/** A source line short enough to read, with the caret under the error's column. */
function pointAt(line: string, column: number): string {
  let start = 0;
  let shown = line;
  if (line.length > SOURCE_LINE_WINDOW) {
    start = Math.max(0, column - SOURCE_LINE_WINDOW / 2);
    shown = `${start > 0 ? '...' : ''}${line.slice(start, start + SOURCE_LINE_WINDOW)}${start + SOURCE_LINE_WINDOW < line.length ? '...' : ''}`;
    if (start > 0) start -= 3;
  }
  // Tabs stay tabs under the line, so that the caret lines up however they are shown.
  return `${shown}\n${shown.slice(0, Math.max(0, column - start)).replace(/[^\t]/g, ' ')}^`;
}

/** Why loading failed, in `node file.js` terms: where (file:line:column), the line, and the stack. */
function describeInitFailure(error: unknown, code: string, filename: string): InitFailure {
  if (!(error instanceof Error)) return { message: String(error), log: `${String(error)}\n` };
  const title = `${error.name}: ${error.message}`;
  // The result gets one line (the logs get all of it): the first line of the message, and where.
  const headline = `${error.name}: ${error.message.split('\n')[0]}`;
  if (error instanceof SyntaxError) {
    // Node.js puts the position in front of a compile error's stack: "file:line\n<source>\n   ^".
    // (An error at the very end has an empty line and no caret: column 1.)
    const arrow = /^(.*):(\d+)\n(.*)\n([ \t]*)(\^?)/.exec(error.stack ?? '');
    if (arrow && arrow[1] === filename) {
      const line = Number(arrow[2]);
      const column = arrow[5] ? (arrow[4] as string).length : 0;
      const source = code.split('\n')[line - 1] ?? (arrow[3] as string);
      const where = `${filename}:${line}:${column + 1}`;
      return { message: `${headline} (${where})`, log: `${where}\n${pointAt(source, column)}\n\n${title}\n` };
    }
    return { message: headline, log: `${title}\n` };
  }
  const stack = userStack(error.stack ?? title);
  const frame = new RegExp(`\\(?(${escapeRegExp(filename)}:\\d+:\\d+)\\)?$`, 'm').exec(stack);
  return { message: frame ? `${headline} (${frame[1]})` : headline, log: `${stack}\n` };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// Results: checked and serialised once, never into a frame larger than the platform accepts.

class TooLarge extends Error {}

type Serialised = { json: string } | { error: string };

/**
 * JSON for a value, refusing it once it is certainly more than `limit` bytes: the replacer sees
 * every value and counts a lower bound of its size, so a giant result is never built whole.
 */
function serialise(value: unknown, limit: number, what: string): Serialised {
  let atLeast = 0;
  let root = true;
  function count(this: unknown, key: string, v: unknown): unknown {
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') return v;
    // An element costs at least a comma, a property its quoted key and a colon; the first call
    // is for the value itself, under an empty key.
    const around = root ? 0 : Array.isArray(this) ? 1 : Buffer.byteLength(key, 'utf8') + 3;
    root = false;
    atLeast += around + (typeof v === 'string' ? Buffer.byteLength(v, 'utf8') + 2 : 1);
    if (atLeast > limit) throw new TooLarge();
    return v;
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(value, count);
  } catch (error) {
    if (error instanceof TooLarge) {
      return { error: `The action produced ${what} that exceeded the allowed length: more than ${limit} bytes.` };
    }
    if (error instanceof RangeError && /call stack/i.test(error.message)) {
      return { error: `The action produced ${what} nested too deeply to be sent as JSON.` };
    }
    const reason = (error instanceof Error ? error.message : String(error)).replace(/\s*\n\s*/g, ' ');
    return { error: `The action produced ${what} that is not JSON: ${reason}` };
  }
  if (json === undefined) return { json: 'null' };
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > limit) return { error: `The action produced ${what} that exceeded the allowed length: ${bytes} > ${limit} bytes.` };
  return { json };
}

function isOutOfMemory(error: unknown): boolean {
  return error instanceof RangeError && /allocation failed|out of memory/i.test(error.message);
}

function sendError(id: string, error: unknown): void {
  const outOfMemory = isOutOfMemory(error);
  let value: unknown;
  if (error instanceof Error) value = utf8Prefix(error.message || String(error), MAX_RESULT_BYTES);
  else if (error === undefined) value = 'The function rejected with undefined.';
  else {
    const serialised = serialise(error, MAX_RESULT_BYTES, 'an error value');
    value = 'json' in serialised ? JSON.parse(serialised.json) : serialised.error;
  }
  send({ type: 'error', id, error: value, ...(outOfMemory ? { outOfMemory: true } : {}) });
}

async function run(message: Extract<HostMessage, { type: 'run' }>): Promise<void> {
  const timeoutMs = message.timeoutMs ?? message.deadline - Date.now();
  const activation: Activation = {
    id: message.id,
    timers: new Map(),
    logBytes: 0,
    truncated: false,
    returned: false,
    deadlineAt: performance.now() + timeoutMs,
    expired: false,
    expiry: undefined,
  };
  watchDeadline(activation);
  if (message.ack) send({ type: 'started', id: message.id });
  looseOutput.logBytes = 0;
  looseOutput.truncated = false;
  Object.assign(process.env, message.env, { __OW_DEADLINE: String(Date.now() + timeoutMs) });
  let outcome: { result: unknown } | { error: unknown };
  try {
    if (!entry) throw new Error('The function has not been initialised.');
    const callEntry = entry;
    const call: CallInfo = { id: message.id, deadline: Date.now() + timeoutMs };
    outcome = { result: await currentActivation.run(activation, () => callEntry(message.params, call)) };
  } catch (error) {
    outcome = { error };
  }
  activation.returned = true;
  settleIfIdle(activation);
  try {
    if ('result' in outcome) {
      const serialised = serialise(outcome.result, MAX_RESULT_BYTES, 'a response');
      if ('json' in serialised) {
        writeFrame(encodeJsonFrame(`{"type":"result","id":${JSON.stringify(message.id)},"result":${serialised.json}}`));
      } else {
        send({ type: 'error', id: message.id, error: serialised.error });
      }
    } else {
      const { error } = outcome;
      if (error instanceof Error) currentActivation.run(activation, () => log('stderr', `${stackOf(error)}\n`));
      sendError(message.id, error);
    }
  } catch (error) {
    // Whatever went wrong, the platform hears how the run ended.
    send({
      type: 'error',
      id: message.id,
      error: `The function's outcome could not be sent: ${error instanceof Error ? error.message : String(error)}`,
      ...(isOutOfMemory(error) ? { outOfMemory: true } : {}),
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Packaged functions: a Node.js module loaded here, or processes that speak ActionLoop.

let loop: ActionLoop | undefined;
/** A Lambda custom runtime's bootstraps, behind the Runtime API. */
let lambdaRuntime: LambdaRuntime | undefined;
/** A kind's runtime started ahead, waiting for its function. */
let ahead: { id: string; launcher: Launcher; dir: string } | undefined;

const loopHost: LoopHost = {
  send,
  sendResult: (id, json) => writeFrame(encodeJsonFrame(`{"type":"result","id":${JSON.stringify(id)},"result":${json}}`)),
  log: logTo,
  looseBudget: looseOutput,
};

function prestart(message: Extract<HostMessage, { type: 'prestart' }>): void {
  // Once per sandbox. (A microVM clone may carry the warm-up function its template loaded: still blank.)
  if (ahead || loop) return;
  try {
    const dir = unpackPackage({ zip: message.runtime.zip });
    const launcher = new Launcher(loopHost, runtimeOptions(message.runtime, dir, message.memoryMb), true);
    ahead = { id: message.runtime.id, launcher, dir };
    // The process backend spares it between runs, as it spares a loop's launchers.
    if (launcher.pid !== undefined) send({ type: 'processes', pids: [launcher.pid] });
  } catch (error) {
    // The function's own launcher starts at init instead.
    log('stderr', `The runtime could not be started ahead: ${error instanceof Error ? error.message : String(error)}\n`);
  }
}

/** The runtime started ahead, if this package loads into it; any other is stopped (it would only hold memory). */
function takeAhead(pkg: FunctionPackage): { launcher: Launcher; dir: string } | undefined {
  const started = ahead;
  ahead = undefined;
  if (!started) return undefined;
  if (started.id === pkg.runtime?.id && started.launcher.pid !== undefined) return started;
  started.launcher.kill();
  return undefined;
}

async function initPackage(message: Extract<HostMessage, { type: 'init' }>): Promise<void> {
  const pkg = message.package as FunctionPackage;
  try {
    Object.assign(process.env, message.env);
    const ready = takeAhead(pkg);
    // Into the runtime's own directory: its working directory is then the function's, as it would be.
    const dir = unpackPackage(pkg, ready?.dir);
    const started = ready?.launcher;
    if (pkg.lambdaRuntime && pkg.command && pkg.command.length > 0) {
      const candidate = new LambdaRuntime(loopHost, lambdaRuntimeOptions(pkg, dir, message));
      await candidate.start();
      lambdaRuntime = candidate;
    } else if (pkg.command && pkg.command.length > 0) {
      const candidate = new ActionLoop(loopHost, loopOptions(pkg, dir, message));
      await candidate.start(started ? { launcher: started, line: loadLine(pkg, dir, message) } : undefined);
      loop = candidate;
    } else if (pkg.module) {
      entry = await loadModule(dir, pkg.module, message.main, message.memoryMb);
    } else {
      throw new Error('The package names neither a module nor a command.');
    }
    send({ type: 'ready' });
  } catch (error) {
    const failure = describePackageFailure(error);
    log('stderr', failure.log);
    send({ type: 'initError', error: failure.message });
  }
}

/** Why a package did not load: a launcher's own words, or a module's error and where it is. */
function describePackageFailure(error: unknown): InitFailure {
  if (!(error instanceof Error)) return { message: String(error), log: `${String(error)}\n` };
  if (error.message.startsWith("The action's process") || error instanceof BootstrapFailure)
    return { message: error.message, log: '' };
  const headline = `${error.name}: ${error.message.split('\n')[0]}`;
  // A syntax error's stack begins with "file:line" and the line itself.
  const at = error instanceof SyntaxError ? /^(\/[^\n]*:\d+)\n/.exec(error.stack ?? '') : null;
  return { message: at ? `${headline} (${at[1]})` : headline, log: `${userStack(error.stack ?? headline)}\n` };
}

/** One activation served by an ActionLoop process. */
async function runInLoop(actionLoop: ActionLoop, message: Extract<HostMessage, { type: 'run' }>): Promise<void> {
  const timeoutMs = message.timeoutMs ?? message.deadline - Date.now();
  const deadline = Date.now() + timeoutMs;
  if (message.ack) send({ type: 'started', id: message.id });
  // OpenWhisk's request line: the parameters, and each __OW_ variable by its lower-case name.
  const request: Record<string, unknown> = { value: message.params ?? {} };
  const env: Record<string, string> = { ...message.env, __OW_ACTIVATION_ID: message.id, __OW_DEADLINE: String(deadline) };
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('__OW_') && key.length > 5) request[key.slice(5).toLowerCase()] = value;
  }
  let line: string;
  try {
    line = `${JSON.stringify(request)}\n`;
  } catch (error) {
    send({ type: 'error', id: message.id, error: `The parameters are not JSON: ${String(error)}` });
    return;
  }
  await actionLoop.run(message.id, line, deadline, { logBytes: 0, truncated: false });
}

/** One invocation of a Lambda custom runtime: its event is the parameters. */
async function runInLambda(runtime: LambdaRuntime, message: Extract<HostMessage, { type: 'run' }>): Promise<void> {
  const timeoutMs = message.timeoutMs ?? message.deadline - Date.now();
  const deadline = Date.now() + timeoutMs;
  if (message.ack) send({ type: 'started', id: message.id });
  let event: string;
  try {
    event = JSON.stringify(message.params ?? {});
  } catch (error) {
    send({ type: 'error', id: message.id, error: `The parameters are not JSON: ${String(error)}` });
    return;
  }
  const clientContext = typeof message.clientContext === 'string' ? message.clientContext : undefined;
  await runtime.run(message.id, event, deadline, { logBytes: 0, truncated: false }, clientContext);
}

function handle(message: HostMessage): void {
  switch (message.type) {
    case 'init': {
      if (message.logLimitBytes !== undefined) logLimitBytes = message.logLimitBytes;
      sourceName = message.filename ?? sourceName;
      looseOutput.logBytes = 0;
      looseOutput.truncated = false;
      if (message.package) {
        void initPackage(message);
        return;
      }
      try {
        Object.assign(process.env, message.env);
        entry = loadFunction(message.code, message.main, sourceName);
        send({ type: 'ready' });
      } catch (error) {
        const failure = describeInitFailure(error, message.code, sourceName);
        log('stderr', failure.log);
        send({ type: 'initError', error: failure.message });
      }
      return;
    }
    case 'run':
      void (lambdaRuntime ? runInLambda(lambdaRuntime, message) : loop ? runInLoop(loop, message) : run(message));
      return;
    case 'ping':
      send({ type: 'pong', id: message.id });
      return;
    case 'prestart':
      prestart(message);
      return;
    case 'reseed': {
      const received = performance.now();
      // The kernel first: launchers started now or later (a blank clone loads Python next) read
      // its generator and clock, not the agent's; and the agent's clock offset is measured
      // against the kernel's clock once it is set. The host sends nothing else until the answer.
      const served =
        kernelReseeder?.running && !message.startKernelHelper ? kernelReseeder.reseed(message.entropy, message.now) : false;
      // No helper running (or it failed): start one, as before the helper was kept.
      if (!served) reseedKernel(message.entropy, message.now);
      const kernelMs = performance.now() - received;
      const offset = reseed(message.entropy, message.now);
      const answer = () =>
        send({
          type: 'reseeded',
          now: Date.now(),
          skewMs: offset,
          guestMs: { kernel: kernelMs, total: performance.now() - received },
        });
      // Launchers reseed their own languages' generators before a clone takes its first run.
      if (loop) void loop.reseed(message.entropy, message.now).then(answer);
      else if (ahead) void ahead.launcher.control(reseedLine(message.entropy, message.now)).then(answer);
      else answer();
      return;
    }
  }
}

const decoder = new FrameDecoder<HostMessage>();
listen((chunk: Buffer) => {
  let messages: HostMessage[];
  try {
    messages = decoder.push(chunk);
  } catch (error) {
    process.stderr.write(`isola agent: ${String(error)}\n`);
    process.exit(70);
  }
  for (const message of messages) handle(message);
});

// An error thrown by work the function left behind is logged on the activation it belongs to
// (the async context survives into these handlers); the platform marks it if that one returned.
process.on('uncaughtException', (error) => {
  log('stderr', `Uncaught exception: ${stackOf(error)}\n`);
});
process.on('unhandledRejection', (reason) => {
  log('stderr', `Unhandled rejection: ${stackOf(reason)}\n`);
});

/**
 * Takes the paths every run takes once before saying hello, so that V8 has compiled them (and
 * the async context machinery is set up) before the first activation: a sandbox is made ahead of
 * its first call, and that call would otherwise pay for it.
 */
async function warmUp(): Promise<void> {
  const rehearsal: Activation = {
    id: 'warm-up',
    timers: new Map(),
    logBytes: 0,
    truncated: false,
    returned: false,
    deadlineAt: performance.now() + 1000,
    expired: false,
    expiry: undefined,
  };
  watchDeadline(rehearsal);
  await currentActivation.run(rehearsal, async () => serialise({ warm: [1, 'up', null] }, MAX_RESULT_BYTES, 'a response'));
  rehearsal.returned = true;
  settleIfIdle(rehearsal);
  encodeJsonFrame('{"type":"pong","id":"warm-up"}');
}

void warmUp().finally(() => send({ type: 'hello', protocol: AGENT_PROTOCOL_VERSION, pid: process.pid, node: process.version }));
