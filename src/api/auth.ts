import type { FastifyInstance, FastifyRequest } from 'fastify';
import { forbidden, unauthorized } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { Caller } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The route reads or invokes what other namespaces share (published packages, the system
     * catalogue): its path may name another namespace, and the handler checks what it may see.
     */
    shared?: boolean;
  }
  interface FastifyRequest {
    /** Who sent the request, as the door scope's auth hook found it. */
    caller: Caller | null;
    /** The namespace the path names (`_` resolved), once the caller may use it. */
    namespace: string | null;
  }
}

/** Headers parsed lately, and what they held: a client sends the same header with every request. */
const parsedHeaders = new Map<string, Readonly<{ uuid: string; key: string }> | undefined>();
const PARSED_HEADERS_KEPT = 1024;
/** Longer headers are parsed every time: the cache must stay small whatever clients send. */
const CACHED_HEADER_CHARS = 512;

/** Parses HTTP Basic `uuid:key`; undefined when absent or not Basic. */
export function basicCredentials(header: string | undefined): Readonly<{ uuid: string; key: string }> | undefined {
  if (!header) return undefined;
  if (parsedHeaders.has(header)) return parsedHeaders.get(header);
  const credentials = parseBasic(header);
  if (header.length > CACHED_HEADER_CHARS) return credentials;
  if (parsedHeaders.size >= PARSED_HEADERS_KEPT) parsedHeaders.clear();
  parsedHeaders.set(header, credentials);
  return credentials;
}

function parseBasic(header: string): Readonly<{ uuid: string; key: string }> | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const at = decoded.indexOf(':');
  if (at <= 0) return undefined;
  return Object.freeze({ uuid: decoded.slice(0, at), key: decoded.slice(at + 1) });
}

/** The namespace the request's Basic credentials belong to; 401 without valid ones. */
export async function basicNamespace(
  platform: Pick<Platform, 'authenticate'>,
  request: { headers: { authorization?: string | undefined } },
): Promise<string> {
  const credentials = basicCredentials(request.headers.authorization);
  if (!credentials) throw unauthorized('The resource requires authentication, which was not supplied with the request.');
  const namespace = await platform.authenticate(credentials.uuid, credentials.key);
  if (!namespace) throw unauthorized();
  return namespace;
}

/** `_` is the caller's own namespace; any other namespace than the caller's is forbidden. */
export function resolveNamespace(requested: string, namespace: string): string {
  if (requested === '_' || requested === namespace) return namespace;
  throw forbidden();
}

/**
 * A door scope's auth: one hook that finds the caller (and throws its 401 when there is none)
 * and decorates the request with it, and with the path's namespace when the route has one.
 * It runs before the handler and after the body is read, as the checks always have: a malformed
 * body is a 400 whoever sends it.
 */
export function authenticateScope(scope: FastifyInstance, identify: (request: FastifyRequest) => Promise<Caller>): void {
  scope.decorateRequest('caller', null);
  scope.decorateRequest('namespace', null);
  scope.addHook('preHandler', async (request) => {
    const caller = await identify(request);
    request.caller = caller;
    const requested = (request.params as { namespace?: unknown } | undefined)?.namespace;
    if (typeof requested === 'string' && caller.kind === 'namespace') {
      const shared = request.routeOptions.config.shared === true && requested !== '_' && requested !== caller.namespace;
      request.namespace = shared ? assertEntityName('namespace', requested) : resolveNamespace(requested, caller.namespace);
    }
  });
}

/** HTTP Basic with a namespace's key (OpenWhisk's API, OpenFaaS). */
export function namespaceAuth(platform: Platform) {
  return async (request: FastifyRequest): Promise<Caller> => ({
    kind: 'namespace',
    namespace: await basicNamespace(platform, request),
  });
}

/** The caller a hook found; only routes in a scope with an auth hook ask. */
export function callerOf(request: FastifyRequest): Caller {
  if (!request.caller) throw new Error(`No auth hook ran for ${request.routeOptions.url ?? request.url}.`);
  return request.caller;
}

/** The caller's namespace, for routes of a namespace-authenticated scope. */
export function callerNamespace(request: FastifyRequest): string {
  const caller = callerOf(request);
  if (caller.kind !== 'namespace') throw new Error('This route needs a namespace-authenticated caller.');
  return caller.namespace;
}

/** The namespace the path names, resolved by the auth hook. */
export function pathNamespace(request: FastifyRequest): string {
  if (request.namespace === null) throw new Error(`No namespace was resolved for ${request.routeOptions.url ?? request.url}.`);
  return request.namespace;
}
