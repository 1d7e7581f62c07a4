import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';
import { newRequestId } from '../core/ids.js';
import { assertActionName } from '../core/names.js';
import type { Platform } from '../platform/platform.js';
import { basicNamespace } from './auth.js';
import { parseJson } from './json.js';
import { openWhiskInvokeAnswer, parseOpenWhiskInvoke } from './openwhisk.js';
import type { RoundEnd } from './round-end.js';

/**
 * The plainest OpenWhisk invoke, answered without Fastify's routing, hooks and reply pipeline,
 * which cost about as much as the rest of a warm call: `POST /api/v1/namespaces/_/actions/{name}`
 * with one of a few exact query strings and a JSON body of a known length within the limit. Any
 * other request (another path, query, content type, framing or size, or a server that is closing)
 * goes to Fastify untouched. Once taken, the request is answered here in every case, with the
 * bytes and headers Fastify's route would send (lean-invoke.test.ts compares the two); the checks
 * run in the route's order: the body, then the credentials, then the query and parameters.
 */

const PATH = /^\/api\/v1\/namespaces\/_\/actions\/([A-Za-z0-9_][A-Za-z0-9_.@-]*)(\?.*)?$/;

/** The query strings taken here, as Fastify's query parser reads them. */
const QUERIES = new Map<string, Record<string, string>>([
  ['', {}],
  ['?blocking=true', { blocking: 'true' }],
  ['?blocking=true&result=true', { blocking: 'true', result: 'true' }],
]);

const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';

export interface ErrorAnswer {
  status: number;
  body: { error: string; code: string };
  /** The platform's own failure: logged with the request. */
  internal: boolean;
}

export interface LeanInvokeOptions {
  platform: Pick<Platform, 'invoke' | 'authenticate'>;
  bodyLimit: number;
  blockingWaitMs: number;
  log: FastifyBaseLogger;
  /** The server's answer to an error, as its Fastify error handler gives it. */
  errorAnswer: (error: unknown, requestId: string) => ErrorAnswer;
  /** True once the server is closing: Fastify then answers 503. */
  closing: () => boolean;
  /** Called for each request taken here (counted in /metrics). */
  taken: () => void;
  /** Where the server's answers wait for the end of the event loop's round. */
  rounds: RoundEnd;
}

/**
 * A request handler for the node:http server in front of Fastify's: true when it took the
 * request (and will answer it), false when Fastify must.
 */
export function leanInvokeHandler(options: LeanInvokeOptions): (request: IncomingMessage, response: ServerResponse) => boolean {
  const answers = new AnswerBatch(options.rounds);
  return (request, response) => {
    if (request.method !== 'POST' || options.closing()) return false;
    const url = request.url;
    if (url === undefined) return false;
    const match = PATH.exec(url);
    if (!match) return false;
    const query = QUERIES.get(match[2] ?? '');
    if (query === undefined) return false;
    const headers = request.headers;
    if (headers['content-type'] !== 'application/json' || headers['transfer-encoding'] !== undefined) return false;
    const length = headers['content-length'];
    if (length === undefined || !/^\d{1,9}$/.test(length) || Number(length) > options.bodyLimit) return false;
    const name = match[1] as string;
    try {
      assertActionName(name);
    } catch {
      return false;
    }
    options.taken();
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    // A client gone before its body ended: there is no one to answer.
    request.on('error', () => {});
    request.on('end', () => {
      const text = chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
      void answer(options, answers, request, response, name, query, text);
    });
    return true;
  };
}

async function answer(
  options: LeanInvokeOptions,
  answers: AnswerBatch,
  request: IncomingMessage,
  response: ServerResponse,
  name: string,
  query: Record<string, string>,
  text: string,
): Promise<void> {
  let body: unknown;
  try {
    body = text.trim() === '' ? undefined : parseJson(text);
  } catch (error) {
    // As Fastify answers a body its parser refused: the connection closes after the answer.
    fail(options, answers, response, error, undefined, true);
    return;
  }
  let activationId: string | undefined;
  try {
    // After the body, the scope's auth hook, then the route: in Fastify's order.
    const namespace = await basicNamespace(options.platform, request);
    const caller = { kind: 'namespace', namespace } as const;
    const call = parseOpenWhiskInvoke(
      { query, body, url: request.url as string },
      { namespace, name },
      caller,
      options.blockingWaitMs,
    );
    const outcome = await options.platform.invoke(call.command);
    activationId =
      outcome.kind === 'completed' ? outcome.record.activationId : outcome.kind === 'accepted' ? outcome.activationId : undefined;
    const { status, payload } = openWhiskInvokeAnswer(call, outcome);
    answers.send(response, status, payload);
  } catch (error) {
    fail(options, answers, response, error, activationId, false);
  }
}

function fail(
  options: LeanInvokeOptions,
  answers: AnswerBatch,
  response: ServerResponse,
  error: unknown,
  activationId: string | undefined,
  closeConnection: boolean,
): void {
  // Only an error answer shows the request id: a successful call draws none.
  const requestId = newRequestId();
  const failed = options.errorAnswer(error, requestId);
  if (failed.internal) options.log.error({ err: error, requestId, activationId }, 'request failed');
  answers.send(response, failed.status, failed.body, closeConnection);
}

interface Answer {
  response: ServerResponse;
  status: number;
  headers: Record<string, string>;
  text: string | undefined;
}

/** The lean path's answers, written at the end of the event loop's round with the server's others (see RoundEnd). */
export class AnswerBatch {
  constructor(private readonly rounds: RoundEnd) {}

  /** Fastify's reply.send for the payloads this door sends: a string as text, anything else as JSON. */
  send(response: ServerResponse, status: number, payload: unknown, closeConnection = false): void {
    if (payload === undefined) {
      // No body (a 204), as reply.send() sends it.
      this.queue({ response, status, headers: closeConnection ? { connection: 'close' } : {}, text: undefined });
      return;
    }
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const type = typeof payload === 'string' ? TEXT_TYPE : JSON_TYPE;
    const length = String(Buffer.byteLength(text));
    const headers: Record<string, string> = closeConnection
      ? { connection: 'close', 'content-type': type, 'content-length': length }
      : { 'content-type': type, 'content-length': length };
    this.queue({ response, status, headers, text });
  }

  private queue({ response, status, headers, text }: Answer): void {
    this.rounds.defer(() => {
      // A client that went away meanwhile: its socket is gone, there is nothing to write.
      if (response.destroyed) return;
      response.writeHead(status, headers);
      response.end(text);
    });
  }
}
