import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { notFound } from '../core/errors.js';
import { assertEntityName, pathAndName, qualifiedName } from '../core/names.js';
import { annotationValue } from '../core/types.js';
import type { PackageRecord, ResolvedPackage } from '../platform/openwhisk-packages.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, callerNamespace, namespaceAuth, pathNamespace } from './auth.js';
import { KeyValueSchema, ListQuerySchema, PutQuerySchema, parseOrThrow } from './schemas.js';

/** The body of `PUT .../packages/{name}`: what OpenWhisk's clients send for a package or a binding. */
const PackagePutSchema = z.strictObject({
  namespace: z.string().optional(),
  name: z.string().optional(),
  version: z.string().optional(),
  publish: z.boolean().optional(),
  updated: z.number().optional(),
  parameters: z.array(KeyValueSchema).max(1000).optional(),
  annotations: z.array(KeyValueSchema).max(1000).optional(),
  // `{}` is "not a binding", as OpenWhisk's clients send it.
  binding: z
    .union([z.strictObject({ namespace: z.string().min(1).max(256), name: z.string().min(1).max(256) }), z.strictObject({})])
    .optional(),
});

const PackageListQuerySchema = ListQuerySchema.extend({ public: z.enum(['true', 'false']).optional() });

interface Params {
  namespace: string;
  name: string;
}

/** A package as OpenWhisk lists it. */
function packageSummary(record: PackageRecord) {
  return {
    namespace: record.namespace,
    name: record.name,
    version: record.version,
    publish: record.publish,
    binding: record.binding ?? {},
    annotations: record.annotations,
    updated: record.updated,
  };
}

/** A package as OpenWhisk shows it: with its parameters, and the actions (and feeds) it offers. */
async function packageView(platform: Platform, resolved: ResolvedPackage) {
  const offered = await platform.packages.actionsOf(resolved);
  const entries = offered.map((action) => ({
    name: pathAndName(qualifiedName(action.namespace, action.name)).name,
    version: action.version,
    annotations: action.annotations.filter((a) => a.key !== 'isolation'),
  }));
  const isFeed = (index: number) => annotationValue(offered[index]?.annotations ?? [], 'feed') !== undefined;
  return {
    ...packageSummary(resolved.record),
    parameters: resolved.record.parameters,
    actions: entries.filter((_, i) => !isFeed(i)),
    feeds: entries.filter((_, i) => isFeed(i)),
  };
}

/** OpenWhisk's `/packages`: packages, bindings, and what other namespaces share. */
export function registerPackageRoutes(app: FastifyInstance, platform: Platform): void {
  void app.register(async (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
    registerRoutes(scope, platform);
  });
}

function registerRoutes(app: FastifyInstance, platform: Platform): void {
  const base = '/api/v1/namespaces/:namespace';
  const { packages } = platform;

  app.get<{ Params: Omit<Params, 'name'> }>(`${base}/packages`, { config: { shared: true } }, async (request) => {
    const page = parseOrThrow(PackageListQuerySchema, request.query, 'query');
    return (await packages.list(callerNamespace(request), pathNamespace(request), page)).map(packageSummary);
  });

  app.put<{ Params: Params }>(`${base}/packages/:name`, async (request) => {
    const namespace = pathNamespace(request);
    const name = assertEntityName('package', request.params.name);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(PackagePutSchema, request.body ?? {}, 'package');
    const current = overwrite ? await packages.get(namespace, namespace, name) : undefined;
    const given = body.binding && 'name' in body.binding ? (body.binding as { namespace: string; name: string }) : undefined;
    const binding = body.binding === undefined ? current?.record.binding : given;
    const stored = await packages.put(
      {
        namespace,
        name,
        ...(binding ? { binding } : {}),
        parameters: body.parameters ?? current?.record.parameters ?? [],
        annotations: body.annotations ?? current?.record.annotations ?? [],
        publish: body.publish ?? current?.record.publish ?? false,
      },
      overwrite,
    );
    return { ...packageSummary(stored), parameters: stored.parameters };
  });

  app.get<{ Params: Params }>(`${base}/packages/:name`, { config: { shared: true } }, async (request) => {
    const namespace = pathNamespace(request);
    const name = assertEntityName('package', request.params.name);
    const resolved = await packages.get(callerNamespace(request), namespace, name);
    if (!resolved) throw notFound(`The package "${name}" does not exist in namespace "${namespace}".`);
    return packageView(platform, resolved);
  });

  app.delete<{ Params: Params }>(`${base}/packages/:name`, async (request) => {
    const deleted = await packages.delete(pathNamespace(request), request.params.name);
    return { ...packageSummary(deleted), parameters: deleted.parameters };
  });
}
