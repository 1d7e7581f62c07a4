import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { FastifyBaseLogger } from 'fastify';
import { badRequest, IsolaError } from '../../core/errors.js';
import type { ActivationRecord } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import { errorBody } from '../door.js';
import { renderOpenFaasResult } from './result.js';

/** Attempts at delivering one result, and the wait before the second (doubling after each failure). */
export const CALLBACK_ATTEMPTS = 4;
const FIRST_RETRY_MS = 500;
const ATTEMPT_TIMEOUT_MS = 10_000;
// How long a queued call may take to end (its retries included) before its callback is given up.
const RESULT_WAIT_MS = 60 * 60_000;

/**
 * The URL an `/async-function` call's result is posted to, checked before anything is queued:
 * http or https, and not this server's own port on this host (a callback to the gateway would let
 * a call invoke further functions with nobody's credentials). Other loopback receivers are allowed.
 */
export async function callbackTarget(header: string | string[] | undefined, ownPort: number): Promise<URL | undefined> {
  if (header === undefined) return undefined;
  if (Array.isArray(header)) throw badRequest('Send one X-Callback-Url.');
  let url: URL;
  try {
    url = new URL(header);
  } catch {
    throw badRequest(`X-Callback-Url is not a URL: ${JSON.stringify(header.slice(0, 200))}.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badRequest('X-Callback-Url must be an http or https URL.');
  await refuseOwnServer(url, ownPort);
  return url;
}

async function refuseOwnServer(url: URL, ownPort: number): Promise<void> {
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  if (port !== ownPort) return;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    throw badRequest(`X-Callback-Url names a host that does not resolve: ${host.slice(0, 200)}.`);
  }
  const local = localAddresses();
  if (addresses.some((address) => local.has(address) || isLoopback(address))) {
    throw badRequest(`X-Callback-Url may not point at this server (port ${ownPort}): callbacks go to a receiver of your own.`);
  }
}

function localAddresses(): Set<string> {
  const addresses = new Set(['0.0.0.0', '::']);
  for (const list of Object.values(networkInterfaces())) for (const entry of list ?? []) addresses.add(entry.address);
  return addresses;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

/** One call whose result is owed to a callback. */
export interface PendingCallback {
  url: URL;
  namespace: string;
  name: string;
  activationId: string;
  /** The port the call came in on: the server's own, which the callback may not point at. */
  ownPort: number;
}

/** How a delivery ended, as the activation's `callback` annotation records it. */
export interface CallbackOutcome {
  /** The callback URL as given, less any user and password in it. */
  url: string;
  status: 'delivered' | 'failed';
  attempts: number;
  /** The last HTTP status the receiver answered, if it answered. */
  statusCode?: number;
  /** The last error met (no answer, a refused address), if any. */
  error?: string;
  /** When the delivery ended (ms since the epoch). */
  at: number;
}

/**
 * Posts queued calls' results to their callbacks once their activations are stored. Not durable:
 * a callback still owed when the server stops is not sent after a restart (the activation is).
 * Every delivery ends in one log line (`openfaas callback`): at info when delivered, at warn when
 * given up, with the activation id, the callback's origin and path, the attempts and the status;
 * and in the activation's `callback` annotation (see `CallbackOutcome`), where its owner sees it.
 */
export class CallbackDeliveries {
  private readonly stopping = new AbortController();
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly platform: Pick<Platform, 'activations' | 'annotateActivation'>,
    private readonly log: FastifyBaseLogger,
  ) {}

  start(pending: PendingCallback): void {
    const task = this.deliver(pending).catch((error: unknown) =>
      this.log.warn(
        { activationId: pending.activationId, err: error instanceof Error ? error.message : String(error) },
        'openfaas callback failed',
      ),
    );
    this.running.add(task);
    void task.finally(() => this.running.delete(task));
  }

  async close(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.running]);
  }

  private async deliver(pending: PendingCallback): Promise<void> {
    const record = await this.finished(pending);
    const where = `${pending.url.origin}${pending.url.pathname}`;
    if (!record) {
      if (!this.stopping.signal.aborted)
        this.log.warn(
          { activationId: pending.activationId, callback: where },
          'openfaas callback given up: the call never ended',
        );
      return;
    }
    const message = callbackMessage(record);
    let outcome = '';
    let statusCode: number | undefined;
    let error: string | undefined;
    for (let attempt = 1; attempt <= CALLBACK_ATTEMPTS; attempt++) {
      if (this.stopping.signal.aborted) return;
      try {
        // Checked again before each attempt: the name may resolve elsewhere by now.
        await refuseOwnServer(pending.url, pending.ownPort);
        const response = await fetch(pending.url, {
          method: 'POST',
          headers: message.headers,
          body: message.body,
          redirect: 'manual',
          signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(ATTEMPT_TIMEOUT_MS)]),
        });
        await response.body?.cancel();
        outcome = `HTTP ${response.status}`;
        statusCode = response.status;
        if (response.ok) {
          this.log.info(
            { activationId: record.activationId, callback: where, attempts: attempt, status: response.status },
            'openfaas callback delivered',
          );
          await this.record(pending, { status: 'delivered', attempts: attempt, statusCode, error });
          return;
        }
      } catch (failure) {
        // Stopping cut the attempt short: that is no outcome of the receiver's.
        if (this.stopping.signal.aborted) return;
        outcome =
          failure instanceof IsolaError ? failure.message : String((failure as Error).cause ?? (failure as Error).message);
        error = outcome;
      }
      if (attempt < CALLBACK_ATTEMPTS) await this.pause(FIRST_RETRY_MS * 2 ** (attempt - 1));
    }
    this.log.warn(
      { activationId: record.activationId, callback: where, attempts: CALLBACK_ATTEMPTS, outcome },
      'openfaas callback given up',
    );
    await this.record(pending, { status: 'failed', attempts: CALLBACK_ATTEMPTS, statusCode, error });
  }

  /** Amends the finished activation with how its delivery ended: its `callback` annotation. */
  private async record(
    pending: PendingCallback,
    ended: {
      status: CallbackOutcome['status'];
      attempts: number;
      statusCode: number | undefined;
      error: string | undefined;
    },
  ): Promise<void> {
    const url = new URL(pending.url);
    url.username = '';
    url.password = '';
    const value: CallbackOutcome = {
      url: url.href,
      status: ended.status,
      attempts: ended.attempts,
      ...(ended.statusCode !== undefined ? { statusCode: ended.statusCode } : {}),
      ...(ended.error !== undefined ? { error: ended.error } : {}),
      at: Date.now(),
    };
    const recorded = await this.platform.annotateActivation(pending.namespace, pending.activationId, [
      { key: 'callback', value },
    ]);
    if (!recorded) {
      this.log.warn({ activationId: pending.activationId }, 'openfaas callback outcome not recorded: no finished activation');
    }
  }

  /** The call's stored record, polled with a growing interval; undefined when stopping or past the wait. */
  private async finished(pending: PendingCallback): Promise<ActivationRecord | undefined> {
    const deadline = Date.now() + RESULT_WAIT_MS;
    let interval = 20;
    while (!this.stopping.signal.aborted && Date.now() < deadline) {
      const record = await this.platform.activations.get(pending.namespace, pending.activationId);
      if (record) return record;
      await this.pause(interval);
      interval = Math.min(interval * 2, 1000);
    }
    return undefined;
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const signal = this.stopping.signal;
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });
  }
}

/** What the callback receives: the body and status the waiting call would have answered, and OpenFaaS's headers. */
export function callbackMessage(record: ActivationRecord): { headers: Record<string, string>; body: Buffer } {
  const headers: Record<string, string> = {
    'x-call-id': record.activationId,
    'x-function-name': record.name,
    'x-duration-seconds': String(record.duration / 1000),
  };
  const rendered = record.response.success ? renderOpenFaasResult(record.response.result) : undefined;
  if (rendered !== undefined && !(rendered instanceof Error)) {
    const type = rendered.headers.find(([name]) => name === 'content-type')?.[1];
    if (typeof type === 'string') headers['content-type'] = type;
    headers['x-function-status'] = String(rendered.statusCode);
    return { headers, body: rendered.body ?? Buffer.alloc(0) };
  }
  headers['content-type'] = 'application/json; charset=utf-8';
  headers['x-function-status'] = record.response.status === 'whisk internal error' ? '500' : '502';
  const failure = rendered instanceof Error ? rendered : undefined;
  return {
    headers,
    body: Buffer.from(JSON.stringify(errorBody(record.response.result, failure, record.activationId, record.activationId))),
  };
}
