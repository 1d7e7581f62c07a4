import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { badRequest, forbidden, IsolaError, notFound } from '../core/errors.js';
import { type ApiDraft, type ApiRoute, functionName, type GatewayMatch, pathParameters } from '../platform/api-gateway.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, callerNamespace, namespaceAuth } from './auth.js';
import { invokeFor, rawBodyScope } from './door.js';
import { parseJson } from './json.js';
import { formatWebCall, webCall, webCaller } from './web.js';
import type { WebExtension } from './web-response.js';

/**
 * OpenWhisk's API gateway, without a gateway: the API management web actions
 * (`/api/v1/web/whisk.system/apimgmt/{createApi,getApi,deleteApi}[.http]`) that `wsk api` and the
 * `openwhisk` client call, answering in their shapes, and the gateway URLs
 * `/api/{namespace uuid}/{base path}/{path}` that run the routes' web actions.
 */

const MANAGEMENT = '/api/v1/web/whisk.system/apimgmt/:operation';

const OPERATIONS: Record<string, { method: string; run: Handler }> = {
  createApi: { method: 'POST', run: createApi },
  getApi: { method: 'GET', run: getApi },
  deleteApi: { method: 'DELETE', run: deleteApi },
};

type Handler = (platform: Platform, request: FastifyRequest, namespace: string) => Promise<unknown>;

const ActionSchema = z.object({
  name: z.string().min(1, 'action is missing the name field.'),
  namespace: z.string().min(1, 'action is missing the namespace field.'),
  backendMethod: z.string().optional(),
  backendUrl: z.string().optional(),
  authkey: z.string().optional(),
  secureKey: z.string().optional(),
});

/** One route, as `wsk api create` and the client's `routes.create` send it. */
const RouteDocSchema = z.object({
  namespace: z.string().min(1, 'apidoc is missing the namespace field.'),
  gatewayBasePath: z.string({ error: 'apidoc is missing the gatewayBasePath field.' }),
  gatewayPath: z.string({ error: 'apidoc is missing the gatewayPath field.' }),
  gatewayMethod: z.string({ error: 'apidoc is missing the gatewayMethod field.' }),
  id: z.string().optional(),
  apiName: z.string().optional(),
  responsetype: z.string().optional(),
  pathParameters: z.array(z.unknown()).optional(),
  action: ActionSchema,
});

/** A whole API as a swagger document, with OpenWhisk's `x-openwhisk` on each operation. */
const SwaggerSchema = z.object({
  basePath: z.string({ error: 'swagger is missing the basePath field.' }),
  info: z.object({ title: z.string().optional() }, { error: 'swagger is missing the info field.' }),
  paths: z.record(z.string(), z.record(z.string(), z.unknown()), { error: 'swagger is missing the paths field.' }),
});

const SwaggerOperationSchema = z.object({
  'x-openwhisk': z.object(
    {
      action: z.string().min(1),
      package: z.string().optional(),
      namespace: z.string().optional(),
      url: z.string().optional(),
    },
    { error: 'each operation needs x-openwhisk with the action it runs.' },
  ),
});

/** Registers the API management endpoints (namespace key) and the gateway URLs (no key needed). */
export function registerApiGatewayRoutes(app: FastifyInstance, platform: Platform): void {
  void app.register(async (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
    scope.route<{ Params: { operation: string } }>({
      method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      url: MANAGEMENT,
      handler: async (request) => {
        const operation = request.params.operation.replace(/\.(http|json)$/, '');
        const known = Object.hasOwn(OPERATIONS, operation) ? OPERATIONS[operation] : undefined;
        if (!known) throw notFound(`There is no API management operation "${request.params.operation.slice(0, 40)}".`);
        if (request.method !== known.method) {
          throw new IsolaError(405, `${operation} takes ${known.method}, not ${request.method}.`);
        }
        return known.run(platform, request, callerNamespace(request));
      },
    });
  });

  rawBodyScope(app, (scope) => {
    const serve = async (request: FastifyRequest, reply: FastifyReply) => {
      const params = request.params as { namespaceId: string; '*'?: string };
      const { namespaceId } = params;
      // `/api/v1/...` is the platform's own API: a path there that nothing else took does not exist.
      if (namespaceId === 'v1') throw notFound();
      const path = `/${params['*'] ?? ''}`;
      const match: GatewayMatch = await platform.apis.match(namespaceId, path, request.method);
      if (match.kind === 'none') throw notFound('Not found: no API route has this path.');
      // OpenWhisk's gateway answers a known path with another verb with a 404 too.
      if (match.kind === 'no-verb') throw notFound(`Verb not supported: the API route has no ${request.method} operation.`);
      const { route } = match;
      const call = webCall(request, webCaller(request), {
        namespace: route.namespace,
        name: functionName(route.action),
        extension: route.responseType as WebExtension,
        // As OpenWhisk's gateway: only an http route passes on the path (below the base path).
        path: route.responseType === 'http' ? match.relativePath : '',
        pathParams: match.params,
      });
      return formatWebCall(reply, call, await invokeFor(platform, request, reply, call.command));
    };
    const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] as const;
    scope.route({ method: [...methods], url: '/api/:namespaceId', handler: serve });
    scope.route({ method: [...methods], url: '/api/:namespaceId/*', handler: serve });
  });
}

// ---- createApi ------------------------------------------------------------------------------

async function createApi(platform: Platform, request: FastifyRequest, namespace: string) {
  const body = objectOf(request.body, 'The request body must be a JSON object with an apidoc field.');
  const query = request.query as Record<string, unknown>;
  const rawDoc = body.apidoc;
  if (rawDoc === undefined || rawDoc === null || rawDoc === '') throw badRequest('apidoc is required.');
  const apidoc = objectOf(
    typeof rawDoc === 'string' ? parseText(rawDoc, 'apidoc field cannot be parsed. Ensure it is valid JSON.') : rawDoc,
    'apidoc field should be a JSON object or a JSON string.',
  );
  if (typeof apidoc.namespace !== 'string' || apidoc.namespace === '') throw badRequest('apidoc is missing the namespace field');
  ownNamespace(apidoc.namespace, namespace);
  const responseType = firstString(query.responsetype, body.responsetype, apidoc.responsetype);
  const draft = apidoc.swagger !== undefined ? swaggerDraft(apidoc, namespace) : routeDraft(apidoc, namespace, responseType);
  const stored = await platform.apis.put(namespace, draft);
  return apiValue(await gatewayContext(platform, request, namespace), stored);
}

function routeDraft(apidoc: Record<string, unknown>, namespace: string, responseType: string | undefined): ApiDraft {
  if (apidoc.action === undefined) throw badRequest('apidoc is missing the action field.');
  const doc = parseDoc(RouteDocSchema, apidoc);
  const action = actionReference(doc.action.name, doc.action.namespace, namespace);
  return {
    basePath: doc.gatewayBasePath,
    ...(doc.apiName !== undefined ? { apiName: doc.apiName } : {}),
    operations: [{ relPath: doc.gatewayPath, verb: doc.gatewayMethod, action, responseType: responseType ?? 'json' }],
    replace: false,
  };
}

function swaggerDraft(apidoc: Record<string, unknown>, namespace: string): ApiDraft {
  if (apidoc.gatewayBasePath !== undefined)
    throw badRequest('swagger and gatewayBasePath are mutually exclusive and cannot be specified together.');
  const raw =
    typeof apidoc.swagger === 'string'
      ? parseText(apidoc.swagger, 'swagger field cannot be parsed. Ensure it is valid JSON.')
      : apidoc.swagger;
  const swagger = parseDoc(SwaggerSchema, objectOf(raw, 'swagger field should be an object or a JSON string.'));
  const operations: ApiDraft['operations'] = [];
  for (const [relPath, pathItem] of Object.entries(swagger.paths)) {
    for (const [verb, value] of Object.entries(pathItem)) {
      if (verb === 'parameters') continue;
      const operation = parseDoc(SwaggerOperationSchema, value);
      const ext = operation['x-openwhisk'];
      const pkg = ext.package && ext.package !== 'default' ? ext.package : undefined;
      const action = actionReference(pkg ? `${pkg}/${ext.action}` : ext.action, ext.namespace ?? '_', namespace);
      const responseType = /\.([a-z]+)(?:\$\(request\.path\))?$/.exec(ext.url ?? '')?.[1] ?? 'json';
      operations.push({ relPath, verb, action, responseType });
    }
  }
  return {
    basePath: swagger.basePath,
    ...(swagger.info.title ? { apiName: swagger.info.title } : {}),
    operations,
    replace: true,
  };
}

/** `name`, `pkg/name` or `/ns/pkg/name` in the caller's namespace: the name as stored (`pkg/name` kept). */
function actionReference(name: string, actionNamespace: string, namespace: string): string {
  let reference = name;
  let owner = actionNamespace;
  if (reference.startsWith('/')) {
    const [ns = '', ...rest] = reference.slice(1).split('/');
    owner = ns;
    reference = rest.join('/');
  }
  if (owner !== '_' && owner !== namespace) {
    throw badRequest(`The action "${name}" is in namespace "${owner}": an API can only expose actions of its own namespace.`);
  }
  if (reference === '') throw badRequest('action is missing the name field.');
  return reference;
}

// ---- getApi and deleteApi -------------------------------------------------------------------

async function getApi(platform: Platform, request: FastifyRequest, namespace: string) {
  const query = request.query as Record<string, unknown>;
  const api = optionalString(query.basepath, 'basepath');
  const relPath = optionalString(query.relpath, 'relpath');
  const verb = optionalString(query.operation, 'operation');
  const limit = wholeNumber(query.limit, 'limit') ?? 200;
  const skip = wholeNumber(query.skip, 'skip') ?? 0;
  const routes = await platform.apis.list(namespace, {
    ...(api ? { api } : {}),
    ...(relPath ? { relPath } : {}),
    ...(verb ? { verb } : {}),
  });
  const byBasePath = new Map<string, ApiRoute[]>();
  for (const route of routes) byBasePath.set(route.basePath, [...(byBasePath.get(route.basePath) ?? []), route]);
  const context = await gatewayContext(platform, request, namespace);
  const apis = [...byBasePath.entries()].slice(skip, skip + limit).map(([basePath, operations]) => ({
    id: `API:${namespace}:${basePath}`,
    key: `${namespace}:${basePath}`,
    value: apiValue(context, operations),
  }));
  return { apis };
}

async function deleteApi(platform: Platform, request: FastifyRequest, namespace: string) {
  const query = request.query as Record<string, unknown>;
  const api = optionalString(query.basepath, 'basepath');
  if (!api) throw badRequest('basepath is required.');
  const relPath = optionalString(query.relpath, 'relpath');
  const verb = optionalString(query.operation, 'operation');
  await platform.apis.delete(namespace, { api, ...(relPath ? { relPath } : {}), ...(verb ? { verb } : {}) });
  return {};
}

// ---- the API document -----------------------------------------------------------------------

interface GatewayContext {
  namespace: string;
  namespaceId: string;
  origin: string;
}

async function gatewayContext(platform: Platform, request: FastifyRequest, namespace: string): Promise<GatewayContext> {
  return {
    namespace,
    namespaceId: await platform.apis.namespaceId(namespace),
    origin: `${request.protocol}://${request.host || 'localhost'}`,
  };
}

/** OpenWhisk's API value: the swagger document and the URL the API is served at. */
function apiValue(context: GatewayContext, operations: readonly ApiRoute[]) {
  const first = operations[0];
  const basePath = first?.basePath ?? '/';
  return {
    namespace: context.namespace,
    gwApiActivated: true,
    tenantId: context.namespaceId,
    gwApiUrl: `${context.origin}/api/${context.namespaceId}${basePath === '/' ? '' : basePath}`,
    apidoc: swaggerDocument(context, basePath, first?.apiName ?? basePath, operations),
  };
}

function swaggerDocument(context: GatewayContext, basePath: string, apiName: string, operations: readonly ApiRoute[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of operations) {
    const verb = route.verb.toLowerCase();
    const slash = route.action.indexOf('/');
    const pkg = slash > 0 ? route.action.slice(0, slash) : '';
    const action = slash > 0 ? route.action.slice(slash + 1) : route.action;
    const parameters = pathParameters(route.relPath).map((name) => ({
      name,
      in: 'path',
      description: `Default description for '${name}'`,
      required: true,
      type: 'string',
    }));
    paths[route.relPath] ??= {};
    (paths[route.relPath] as Record<string, unknown>)[verb] = {
      operationId: operationId(verb, route.relPath),
      ...(parameters.length > 0 ? { parameters } : {}),
      'x-openwhisk': {
        namespace: context.namespace,
        package: pkg,
        action,
        url: `${context.origin}/api/v1/web/${encodeURIComponent(context.namespace)}/${pkg || 'default'}/${action}.${route.responseType}`,
      },
      responses: { default: { description: 'Default response' } },
    };
  }
  return { swagger: '2.0', info: { title: apiName, version: '1.0.0' }, basePath, paths };
}

/** `get` and `/books/{isbn}` give `getBooksIsbn`, as OpenWhisk names operations. */
function operationId(verb: string, relPath: string): string {
  const words = relPath.split(/[^0-9A-Za-z_-]+/).filter((w) => w !== '');
  return verb + words.map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()).join('');
}

// ---- reading the request --------------------------------------------------------------------

function ownNamespace(requested: string, namespace: string): void {
  if (requested !== '_' && requested !== namespace) throw forbidden();
}

function objectOf(value: unknown, message: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badRequest(message);
  return value as Record<string, unknown>;
}

function parseText(text: string, message: string): unknown {
  try {
    return parseJson(text);
  } catch {
    throw badRequest(message);
  }
}

function parseDoc<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue && issue.path.length > 0 ? ` (at ${issue.path.join('.')})` : '';
  throw badRequest(`${issue?.message ?? 'The API document is not valid.'}${issue?.code === 'invalid_type' ? where : ''}`);
}

function firstString(...values: unknown[]): string | undefined {
  for (const value of values) if (typeof value === 'string' && value !== '') return value;
  return undefined;
}

function optionalString(value: unknown, name: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw badRequest(`${name} must be given once.`);
  return value;
}

function wholeNumber(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const number = typeof value === 'string' && /^\d{1,9}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number)) throw badRequest(`${name} must be a whole number.`);
  return number;
}
