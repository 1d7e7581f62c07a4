import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { forbidden, IsolaError, notFound, tooManyRequests, unauthorized, unavailable } from '../core/errors.js';
import type { InvokeCommand, InvokeOutcome, RejectReason } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';

/**
 * Every door is the same three steps: parse the request into an invoke command (throwing a 400
 * for what it cannot read), hand it to `platform.invoke`, and format the outcome in the door's
 * own protocol. A door's parse and format are plain functions beside its routes.
 */

const REJECTIONS: Record<RejectReason, (message: string) => IsolaError> = {
  forbidden,
  unauthorised: unauthorized,
  'queue-full': tooManyRequests,
  'too-big': unavailable,
};

/** The activation a request started, for the lines logged about it afterwards. */
const activations = new WeakMap<FastifyRequest, string>();

/** The activation id a request's invocation got, if it got one. */
export function activationOf(request: FastifyRequest): string | undefined {
  return activations.get(request);
}

/**
 * Hands a door's command to the platform. From then on the request knows its activation id (see
 * `activationOf`), and at debug level its logger carries it and one line says what was invoked
 * and how it ended. (A logger of its own per request costs more than the call itself at load.)
 */
export async function invokeFor(
  platform: Pick<Platform, 'invoke'>,
  request: FastifyRequest,
  reply: FastifyReply,
  command: InvokeCommand,
): Promise<InvokeOutcome> {
  const outcome = await platform.invoke(command);
  const activationId =
    outcome.kind === 'completed' ? outcome.record.activationId : outcome.kind === 'accepted' ? outcome.activationId : undefined;
  if (activationId !== undefined) activations.set(request, activationId);
  if (request.log.level !== 'debug' && request.log.level !== 'trace') return outcome;
  if (activationId !== undefined) {
    request.log = request.log.child({ activationId });
    reply.log = request.log;
  }
  request.log.debug(
    {
      door: command.door,
      function: `${command.function.namespace}/${command.function.name}`,
      mode: command.mode,
      outcome: outcome.kind === 'rejected' ? `rejected: ${outcome.reason}` : outcome.kind,
    },
    'invoked',
  );
  return outcome;
}

/** The error a door answers for an invocation that found no function or was refused. */
export function outcomeError(outcome: Extract<InvokeOutcome, { kind: 'not-found' | 'rejected' }>): IsolaError {
  return outcome.kind === 'not-found' ? notFound(outcome.message) : REJECTIONS[outcome.reason](outcome.message);
}

/**
 * What a door read from a request body, or why it could not. OpenWhisk's order of checks reports
 * a missing function (or a refused caller) before a body it cannot read: such a door parses the
 * body into this, invokes in `dry-run` mode when it failed, and throws the error once the outcome
 * says the function is there.
 */
export function attempt<T>(parse: () => T): T | IsolaError {
  try {
    return parse();
  } catch (error) {
    if (error instanceof IsolaError) return error;
    throw error;
  }
}

/**
 * Registers routes in a scope of their own where every body arrives as raw bytes, as doors other
 * than OpenWhisk's need: Lambda signs the exact bytes, OpenFaaS and web actions pass them on.
 */
export function rawBodyScope(app: FastifyInstance, register: (scope: FastifyInstance) => void): void {
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    register(scope);
  });
}

export function rawBody(body: unknown): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.alloc(0);
}

/** Lower-cased request headers as plain strings, for functions that want to see them. */
export function headerMap(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  // Built with fromEntries: a header called `__proto__` becomes a key, not a prototype.
  return Object.fromEntries(
    Object.entries(headers)
      .filter((entry): entry is [string, string | string[]] => entry[1] !== undefined && entry[0] !== 'authorization')
      .map(([name, value]) => [name.toLowerCase(), Array.isArray(value) ? value.join(', ') : value]),
  );
}

/** JSON text for a value, or an Error saying why it has none (too deep, say). */
export function safeJson(value: unknown): string | Error {
  try {
    return JSON.stringify(value) ?? 'null';
  } catch (error) {
    return new Error(`The result cannot be sent as JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Serialises a successful result once, as the run ends (`check` is the invocation's checkResult),
 * so that a result that cannot be sent as JSON is recorded as the function's error rather than
 * failing the response; `render` hands back that text (serialising now if the check did not run).
 */
export function jsonRenderer(): { check: (result: unknown) => string | undefined; render: (result: unknown) => string | Error } {
  let text: string | undefined;
  return {
    check: (result) => {
      const serialised = safeJson(result);
      if (serialised instanceof Error) return serialised.message;
      text = serialised;
      return undefined;
    },
    render: (result) => text ?? safeJson(result),
  };
}

/** A failed activation's answer: its error fields, the activation id and the request id. */
export function errorBody(result: unknown, failure: Error | undefined, activationId: string, requestId: string) {
  const fields =
    failure instanceof Error
      ? { error: failure.message }
      : result !== null && typeof result === 'object' && !Array.isArray(result)
        ? result
        : { error: result };
  return { ...fields, activationId, code: requestId };
}
