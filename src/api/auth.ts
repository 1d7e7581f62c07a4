import type { FastifyRequest } from 'fastify';
import { forbidden, unauthorized } from '../core/errors.js';
import type { Platform } from '../platform/platform.js';

export interface Caller {
  namespace: string;
}

/** Parses HTTP Basic `uuid:key`; undefined when absent or not Basic. */
export function basicCredentials(header: string | undefined): { uuid: string; key: string } | undefined {
  if (!header) return undefined;
  const match = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const at = decoded.indexOf(':');
  if (at <= 0) return undefined;
  return { uuid: decoded.slice(0, at), key: decoded.slice(at + 1) };
}

/** The namespace the request's credentials belong to; 401 without valid ones. */
export async function authenticate(platform: Platform, request: FastifyRequest): Promise<Caller> {
  const credentials = basicCredentials(request.headers.authorization);
  if (!credentials) throw unauthorized('The resource requires authentication, which was not supplied with the request.');
  const namespace = await platform.authenticate(credentials.uuid, credentials.key);
  if (!namespace) throw unauthorized();
  return { namespace };
}

/** `_` is the caller's own namespace; any other namespace than the caller's is forbidden. */
export function resolveNamespace(requested: string, caller: Caller): string {
  if (requested === '_' || requested === caller.namespace) return caller.namespace;
  throw forbidden();
}
