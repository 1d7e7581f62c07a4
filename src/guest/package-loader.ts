/**
 * Loading a packaged function: a Node.js module required (or imported) in the agent's own
 * process, or the options of the ActionLoop processes that run any other language.
 */
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { LoopOptions } from './action-loop.js';
import type { LambdaRuntimeOptions } from './lambda-runtime.js';
import type { FunctionPackage, HostMessage, RuntimeStart } from './protocol.js';

const PATH = '/usr/local/bin:/usr/bin:/bin';
const DEFAULT_MEMORY_MB = 256;
/** The region a function's ARN names inside the sandbox (the namespace stands where Lambda puts the account). */
const LAMBDA_REGION = 'isola';

/** What a call knows about its activation, for entry points that take a context. */
export interface CallInfo {
  id: string;
  /** Wall-clock deadline (ms). */
  deadline: number;
}

export type Entry = (params: unknown, call: CallInfo) => unknown;

/**
 * A Lambda-like context, so that `exports.handler = async (event, context)` runs as it does
 * there: its name, version, ARN, memory, request id and remaining time. `invokedFunctionArn`
 * puts the namespace where Lambda puts the account (the region is `isola`), as the Lambda API's
 * ARNs do. `callbackWaitsForEmptyEventLoop` is accepted and changes nothing: a run ends with its
 * result, and what it left running is ended as for every function.
 */
function contextOf(call: CallInfo, memoryMb: number | undefined) {
  const { functionName, arn } = lambdaNames(process.env.__OW_ACTION_NAME ?? '');
  return {
    functionName,
    functionVersion: process.env.__OW_ACTION_VERSION ?? '',
    invokedFunctionArn: arn,
    memoryLimitInMB: String(memoryMb ?? DEFAULT_MEMORY_MB),
    awsRequestId: call.id,
    activationId: call.id,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, call.deadline - Date.now()),
  };
}

/** A function's name and ARN, as Lambda gives them, from its qualified name `/namespace/name`. */
function lambdaNames(qualified: string): { functionName: string; arn: string } {
  const [namespace = '', ...rest] = qualified.replace(/^\//, '').split('/');
  const functionName = rest.join('/') || qualified;
  return { functionName, arn: `arn:aws:lambda:${LAMBDA_REGION}:${namespace}:function:${functionName}` };
}

/**
 * A handler written in Lambda's callback style, `(event, context, callback)`, as a function that
 * returns a promise: the callback's error rejects it, its result resolves it; a handler that
 * returns a promise itself is taken at its word.
 */
function withCallback(fn: (event: unknown, context: unknown, callback: unknown) => unknown) {
  return (event: unknown, context: unknown) =>
    new Promise((resolve, reject) => {
      const callback = (error: unknown, result: unknown) => (error ? reject(error) : resolve(result));
      const returned = fn(event, context, callback);
      if (returned && typeof (returned as Promise<unknown>).then === 'function')
        (returned as Promise<unknown>).then(resolve, reject);
    });
}

function pick(exported: unknown, mainName: string): unknown {
  const record = (value: unknown) => (typeof value === 'object' || typeof value === 'function') && value !== null;
  if (!record(exported)) return undefined;
  const named = (exported as Record<string, unknown>)[mainName];
  if (typeof named === 'function') return named;
  if (mainName === 'main' && typeof exported === 'function') return exported;
  // An ES module (or its CommonJS translation): `export default function` or a default object.
  const fallback = (exported as Record<string, unknown>).default;
  if (fallback !== exported && fallback !== undefined) return pick(fallback, mainName);
  return undefined;
}

/** Requires the package's module (an ES module is imported) and returns its entry point. */
export async function loadModule(
  dir: string,
  modulePath: string,
  mainName: string,
  memoryMb: number | undefined,
): Promise<Entry> {
  // Stack traces of code compiled with an inline source map (TypeScript) show the source's lines.
  process.setSourceMapsEnabled(true);
  // Relative paths in the function (a data file beside it) mean its own directory, as on Lambda.
  process.chdir(dir);
  const file = resolve(dir, modulePath);
  let exported: unknown;
  try {
    exported = createRequire(file)(file);
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ERR_REQUIRE_ESM') throw error;
    exported = await import(pathToFileURL(file).href);
  }
  const found = pick(exported, mainName);
  if (typeof found !== 'function') {
    throw new Error(`The function has no entry point "${mainName}": ${modulePath} must export it.`);
  }
  const handler = found as (params: unknown, context: unknown, callback: unknown) => unknown;
  const fn = handler.length >= 3 ? withCallback(handler) : handler;
  return (params, call) => fn(params, contextOf(call, memoryMb), undefined);
}

function commandFor(command: readonly string[] | undefined, memoryMb: number | undefined): string[] {
  const limit = String(memoryMb ?? DEFAULT_MEMORY_MB);
  return (command ?? []).map((arg) => arg.replaceAll('{{memoryMb}}', limit));
}

function baseEnv(dir: string, extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = { ...extra, PATH, HOME: dir };
  if (process.env.LANG) env.LANG = process.env.LANG;
  return env;
}

/** How the ActionLoop processes of a package are started. */
export function loopOptions(pkg: FunctionPackage, dir: string, init: Extract<HostMessage, { type: 'init' }>): LoopOptions {
  const env = baseEnv(dir, init.env);
  if (pkg.ack) env.__OW_WAIT_FOR_ACK = '1';
  return {
    dir,
    command: commandFor(pkg.command, init.memoryMb),
    env,
    ack: pkg.ack === true,
    concurrency: Math.max(1, init.concurrency ?? 1),
  };
}

/** How a kind's runtime is started ahead, in the directory its launcher was unpacked in. */
export function runtimeOptions(runtime: RuntimeStart, dir: string, memoryMb: number): LoopOptions {
  const env = baseEnv(dir, { __OW_WAIT_FOR_ACK: '1', __ISOLA_WAIT_FOR_LOAD: '1' });
  return { dir, command: commandFor(runtime.command, memoryMb), env, ack: true, concurrency: 1 };
}

/** The line that has a runtime started ahead load a package unpacked in `dir`, with the environment its own launcher would have had. */
export function loadLine(pkg: FunctionPackage, dir: string, init: Extract<HostMessage, { type: 'init' }>): string {
  const env = { ...init.env, HOME: dir };
  return `${JSON.stringify({ __isola: 'load', dir, args: pkg.runtime?.args ?? [], env })}\n`;
}

/** What can be an environment variable's name (others are left out of a bootstrap's environment). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * How a Lambda custom runtime's bootstrap is started: the environment Lambda gives it (its
 * handler, task root, function name, version and memory, the region) over the action's own.
 * Isola's version 0.0.N is Lambda's version N.
 */
export function lambdaRuntimeOptions(
  pkg: FunctionPackage,
  dir: string,
  init: Extract<HostMessage, { type: 'init' }>,
): LambdaRuntimeOptions {
  const own = Object.fromEntries(
    Object.entries(init.env).filter(([name, value]) => ENV_NAME.test(name) && !value.includes('\0')),
  );
  const { functionName, arn } = lambdaNames(init.env.__OW_ACTION_NAME ?? '');
  const version = init.env.__OW_ACTION_VERSION ?? '';
  const env = baseEnv(dir, {
    ...own,
    _HANDLER: init.main,
    LAMBDA_TASK_ROOT: dir,
    LAMBDA_RUNTIME_DIR: dir,
    AWS_LAMBDA_FUNCTION_NAME: functionName,
    AWS_LAMBDA_FUNCTION_VERSION: /^0\.0\.(\d+)$/.exec(version)?.[1] ?? (version || '$LATEST'),
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(init.memoryMb ?? DEFAULT_MEMORY_MB),
    AWS_REGION: LAMBDA_REGION,
    AWS_DEFAULT_REGION: LAMBDA_REGION,
  });
  return {
    dir,
    command: commandFor(pkg.command, init.memoryMb),
    env,
    concurrency: Math.max(1, init.concurrency ?? 1),
    functionArn: arn,
  };
}
