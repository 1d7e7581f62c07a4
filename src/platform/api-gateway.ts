import { badRequest, notFound } from '../core/errors.js';
import { type ActionVersion, annotationValue } from '../core/types.js';
import type { ApiOperationInput, ApiRouteFilter, ApiRouteRecord, Store } from '../store/store.js';

/** The verbs an API operation may have (those `wsk api create` takes). */
export const API_VERBS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'] as const;

/** The web action extensions a route's result may be rendered as; `json` when none is given. */
export const API_RESPONSE_TYPES = ['json', 'http', 'text', 'html', 'svg'] as const;

const MAX_PATH_LENGTH = 1024;
/** Printable, no whitespace, no query or fragment; `{name}` path parameters are checked apart. */
const PATH_CHARACTERS = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/{}]*$/;
const PARAMETER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

export type ApiRoute = ApiRouteRecord;

/** An API to store: operations under a base path, with the API's name when one is given. */
export interface ApiDraft {
  basePath: string;
  apiName?: string;
  operations: ApiOperationInput[];
  /** The document names the API whole (a swagger document): its other operations go. */
  replace: boolean;
}

/** What a gateway request found. */
export type GatewayMatch =
  | {
      kind: 'route';
      route: ApiRoute;
      /** The path parameters, by name, decoded. */
      params: Record<string, string>;
      /** The request's path below the API's base path. */
      relativePath: string;
    }
  /** A route has the path, but not with this verb. */
  | { kind: 'no-verb' }
  | { kind: 'none' };

/**
 * OpenWhisk's API gateway, served by the platform itself: APIs of routes (a verb on a path under a
 * base path) that run web actions. A route is stored only for an action that exists and is a web
 * action; a request is matched here and run by the web action door.
 */
export class ApiGateway {
  constructor(
    private readonly store: Store,
    /** The function a reference names as its namespace sees it (packages and bindings included). */
    private readonly findAction: (ref: { namespace: string; name: string }) => Promise<ActionVersion | undefined>,
  ) {}

  /** Checks and stores an API's operations; returns the whole API as stored. */
  async put(namespace: string, draft: ApiDraft): Promise<ApiRoute[]> {
    const basePath = checkBasePath(draft.basePath);
    if (draft.operations.length === 0) throw badRequest('The API has no operations.');
    const operations: ApiOperationInput[] = [];
    for (const operation of draft.operations) {
      const relPath = checkRelativePath(operation.relPath);
      const verb = checkVerb(operation.verb);
      const responseType = checkResponseType(operation.responseType);
      await this.checkAction(namespace, operation.action);
      operations.push({ relPath, verb, action: operation.action, responseType });
    }
    const apiName = draft.apiName?.trim() || undefined;
    if (apiName !== undefined && apiName.length > 256) throw badRequest('The API name is longer than 256 characters.');
    return this.store.putApiRoutes(namespace, basePath, apiName, operations, { replace: draft.replace });
  }

  /** A namespace's routes; `api` is a base path or an API name. */
  list(namespace: string, filter: ApiRouteFilter = {}): Promise<ApiRoute[]> {
    return this.store.listApiRoutes(namespace, normalFilter(filter));
  }

  /** Deletes an API, or its operations on a path, or one operation; 404 when nothing matched. */
  async delete(namespace: string, filter: ApiRouteFilter & { api: string }): Promise<ApiRoute[]> {
    if (filter.verb !== undefined && filter.relPath === undefined)
      throw badRequest('When specifying an operation, the path is required.');
    const deleted = await this.store.deleteApiRoutes(namespace, normalFilter(filter));
    if (deleted.length === 0) {
      const what =
        filter.relPath === undefined
          ? `API '${filter.api}'`
          : `path ${filter.relPath}${filter.verb ? ` with operation ${filter.verb.toLowerCase()}` : ''} of API '${filter.api}'`;
      throw notFound(`The ${what} does not exist.`);
    }
    return deleted;
  }

  /**
   * The id that names a namespace in gateway URLs: the namespace's uuid (the first half of its
   * key), as OpenWhisk's gateway uses it.
   */
  async namespaceId(namespace: string): Promise<string> {
    const row = await this.store.getNamespace(namespace);
    if (!row) throw notFound(`The namespace "${namespace}" does not exist.`);
    return row.uuid;
  }

  /** The route a request to `/api/{namespaceId}{path}` with this verb runs, if any. */
  async match(namespaceId: string, path: string, verb: string): Promise<GatewayMatch> {
    // No credentials are that long or hold a NUL (which PostgreSQL cannot even compare).
    if (namespaceId.length > 256 || namespaceId.includes('\0')) return { kind: 'none' };
    const owner = await this.store.keyOf(namespaceId);
    if (!owner) return { kind: 'none' };
    const routes = await this.store.listApiRoutes(owner.namespace);
    const requested = trimSlash(path);
    const found = routes
      .map((route) => ({ route, params: matchTemplate(fullPath(route), requested) }))
      .filter((m): m is { route: ApiRoute; params: Record<string, string> } => m.params !== undefined)
      // Fewer path parameters first: a literal path wins over a template that also matches.
      .sort((a, b) => Object.keys(a.params).length - Object.keys(b.params).length);
    if (found.length === 0) return { kind: 'none' };
    const upper = verb.toUpperCase();
    const hit = found.find((m) => m.route.verb === upper);
    if (!hit) return { kind: 'no-verb' };
    const base = hit.route.basePath === '/' ? '' : hit.route.basePath;
    return { kind: 'route', route: hit.route, params: hit.params, relativePath: requested.slice(base.length) || '/' };
  }

  private async checkAction(namespace: string, reference: string): Promise<void> {
    const name = functionName(reference);
    if (!/^[^/]+(\/[^/]+)?$/.test(reference)) {
      throw badRequest(`The action "${reference}" is not an action name ("action" or "package/action").`);
    }
    const action = await this.findAction({ namespace, name });
    if (!action) throw badRequest(`The action "${reference}" does not exist in namespace "${namespace}".`);
    const exported = annotationValue(action.annotations, 'web-export');
    if (exported !== true && exported !== 'true') {
      throw badRequest(
        `The action "${reference}" is not a web action: an API can only expose web actions (create it with --web true, ` +
          'that is the annotation web-export: true).',
      );
    }
  }
}

/** The function a route's action names: `default/name` is `name`. */
export function functionName(action: string): string {
  return action.startsWith('default/') ? action.slice('default/'.length) : action;
}

/** The route's whole path below the namespace id: base path and relative path. */
export function fullPath(route: Pick<ApiRoute, 'basePath' | 'relPath'>): string {
  return trimSlash((route.basePath === '/' ? '' : route.basePath) + route.relPath);
}

/** The names of a relative path's parameters, in order. */
export function pathParameters(relPath: string): string[] {
  return [...relPath.matchAll(PARAMETER)].map((m) => m[1] as string);
}

function trimSlash(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

/** The template's parameters when the path matches it, segment by segment; undefined when not. */
function matchTemplate(template: string, path: string): Record<string, string> | undefined {
  const wanted = template.split('/');
  const given = path.split('/');
  if (wanted.length !== given.length) return undefined;
  // Entries, not assignments: a parameter called `__proto__` is a key like any other.
  const params: [string, string][] = [];
  for (let i = 0; i < wanted.length; i++) {
    const pattern = wanted[i] as string;
    const segment = given[i] as string;
    const names = [...pattern.matchAll(PARAMETER)].map((m) => m[1] as string);
    if (names.length === 0) {
      if (safeDecode(pattern) !== safeDecode(segment)) return undefined;
      continue;
    }
    const source = pattern
      .split(PARAMETER)
      .map((part, index) => (index % 2 === 1 ? '([^/]+)' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('');
    const match = new RegExp(`^${source}$`).exec(segment);
    if (!match) return undefined;
    names.forEach((name, index) => {
      params.push([name, safeDecode(match[index + 1] as string)]);
    });
  }
  return Object.fromEntries(params);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function checkPath(what: string, path: unknown): string {
  if (typeof path !== 'string' || path === '') throw badRequest(`The ${what} is required.`);
  if (!path.startsWith('/')) throw badRequest(`The ${what} "${path.slice(0, 80)}" must start with '/'.`);
  if (path.length > MAX_PATH_LENGTH) throw badRequest(`The ${what} is longer than ${MAX_PATH_LENGTH} characters.`);
  if (!PATH_CHARACTERS.test(path) || path.includes('//'))
    throw badRequest(`The ${what} "${path.slice(0, 80)}" is not a valid URL path.`);
  return path;
}

function checkBasePath(path: unknown): string {
  const checked = checkPath('base path', path);
  if (/[{}]/.test(checked)) throw badRequest(`The base path "${checked.slice(0, 80)}" may not have path parameters.`);
  return trimSlash(checked);
}

function checkRelativePath(path: unknown): string {
  const checked = checkPath('relative path', path);
  // Braces only as whole `{name}` parameters, each name once.
  const rest = checked.replace(PARAMETER, '');
  if (/[{}]/.test(rest))
    throw badRequest(`The relative path "${checked.slice(0, 80)}" has a malformed path parameter: use {name}.`);
  const names = pathParameters(checked);
  if (names.some((name) => name.startsWith('__ow_')))
    throw badRequest(`The relative path "${checked.slice(0, 80)}" names a path parameter __ow_*, which web actions reserve.`);
  if (new Set(names).size !== names.length)
    throw badRequest(`The relative path "${checked.slice(0, 80)}" names a path parameter twice.`);
  return checked.length > 1 ? checked.replace(/\/+$/, '') : checked;
}

function checkVerb(verb: unknown): string {
  const upper = typeof verb === 'string' ? verb.toUpperCase() : '';
  if (!(API_VERBS as readonly string[]).includes(upper)) {
    throw badRequest(`The operation "${String(verb).slice(0, 20)}" is not one of ${API_VERBS.join(', ')}.`);
  }
  return upper;
}

function checkResponseType(type: unknown): string {
  const value = type === undefined || type === '' ? 'json' : type;
  if (typeof value !== 'string' || !(API_RESPONSE_TYPES as readonly string[]).includes(value)) {
    throw badRequest(`The response type "${String(type).slice(0, 20)}" is not one of ${API_RESPONSE_TYPES.join(', ')}.`);
  }
  return value;
}

function normalFilter(filter: ApiRouteFilter): ApiRouteFilter {
  return {
    ...(filter.api !== undefined ? { api: filter.api.startsWith('/') ? trimSlash(filter.api) : filter.api } : {}),
    ...(filter.relPath !== undefined
      ? { relPath: filter.relPath.length > 1 ? filter.relPath.replace(/\/+$/, '') : filter.relPath }
      : {}),
    ...(filter.verb !== undefined ? { verb: filter.verb.toUpperCase() } : {}),
  };
}
