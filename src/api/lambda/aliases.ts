/**
 * Lambda's aliases (`/2015-03-31/functions/{name}/aliases[/{alias}]`: CreateAlias, GetAlias,
 * UpdateAlias, DeleteAlias, ListAliases) over the platform's function aliases. Lambda's version
 * `N` is Isola's `0.0.N` (see names.ts); `$LATEST` is the latest version as it changes.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { type AliasRecord, type AliasTarget, LATEST_VERSION, pickVersion } from '../../platform/aliases.js';
import type { Platform } from '../../platform/platform.js';
import { type ArnScope, functionArn } from './configuration.js';
import { invalidParameter, resourceNotFound } from './errors.js';
import { arnScope, latestFunction, parseBody, parseQuery } from './functions.js';
import { lambdaVersion } from './names.js';

/** Lambda's version field: `$LATEST` or a version number. */
const LambdaVersion = z.string().regex(/^(\$LATEST|[0-9]{1,10})$/, 'must be $LATEST or a version number');
const RoutingConfig = z.object({
  AdditionalVersionWeights: z.record(z.string().regex(/^[0-9]{1,10}$/, 'must be a version number'), z.number()).optional(),
});

const CreateAliasSchema = z.object({
  Name: z.string().min(1).max(128),
  FunctionVersion: LambdaVersion,
  Description: z.string().max(256).optional(),
  RoutingConfig: RoutingConfig.optional(),
});

const UpdateAliasSchema = z.object({
  FunctionVersion: LambdaVersion.optional(),
  Description: z.string().max(256).optional(),
  RoutingConfig: RoutingConfig.optional(),
  RevisionId: z.string().max(64).optional(),
});

const ListAliasesQuerySchema = z.object({
  FunctionVersion: LambdaVersion.optional(),
  Marker: z
    .string()
    .regex(/^\d{1,9}$/, 'is not a marker this API gave')
    .optional(),
  MaxItems: z.coerce.number().int().min(1).max(10_000).optional(),
});

interface AliasParams {
  name: string;
  alias: string;
}

export function registerAliasRoutes(scope: FastifyInstance, platform: Platform): void {
  const base = '/2015-03-31/functions/:name/aliases';

  scope.post<{ Params: { name: string } }>(base, async (request, reply) => {
    const body = parseBody(CreateAliasSchema, request);
    const fn = await latestFunction(platform, request);
    const target: AliasTarget = {
      functionVersion: isolaAliasVersion(body.FunctionVersion),
      routing: routingOf(body.RoutingConfig),
      description: body.Description ?? '',
    };
    const alias = await platform.aliases.create(fn.namespace, fn.name, body.Name, target);
    return reply.code(201).send(aliasConfiguration(alias, arnScope(request)));
  });

  scope.get<{ Params: { name: string } }>(base, async (request) => {
    const query = parseQuery(ListAliasesQuerySchema, request);
    const fn = await latestFunction(platform, request);
    const skip = Number(query.Marker ?? 0);
    const limit = query.MaxItems ?? 50;
    const aliases = await platform.aliases.list(fn.namespace, fn.name, {
      limit: limit + 1,
      skip,
      ...(query.FunctionVersion !== undefined ? { functionVersion: isolaAliasVersion(query.FunctionVersion) } : {}),
    });
    const scope = arnScope(request);
    return {
      Aliases: aliases.slice(0, limit).map((a) => aliasConfiguration(a, scope)),
      ...(aliases.length > limit ? { NextMarker: String(skip + limit) } : {}),
    };
  });

  scope.get<{ Params: AliasParams }>(`${base}/:alias`, async (request) => {
    const fn = await latestFunction(platform, request);
    const alias = await platform.aliases.get(fn.namespace, fn.name, request.params.alias);
    if (!alias) throw aliasNotFound(arnScope(request), fn.name, request.params.alias);
    return aliasConfiguration(alias, arnScope(request));
  });

  scope.put<{ Params: AliasParams }>(`${base}/:alias`, async (request) => {
    const body = parseBody(UpdateAliasSchema, request);
    const fn = await latestFunction(platform, request);
    const changes: Partial<AliasTarget> = {
      ...(body.FunctionVersion !== undefined ? { functionVersion: isolaAliasVersion(body.FunctionVersion) } : {}),
      ...(body.RoutingConfig !== undefined ? { routing: routingOf(body.RoutingConfig) } : {}),
      ...(body.Description !== undefined ? { description: body.Description } : {}),
    };
    const alias = await platform.aliases.update(fn.namespace, fn.name, request.params.alias, changes, body.RevisionId);
    return aliasConfiguration(alias, arnScope(request));
  });

  scope.delete<{ Params: AliasParams }>(`${base}/:alias`, async (request, reply) => {
    const fn = await latestFunction(platform, request);
    const deleted = await platform.aliases.delete(fn.namespace, fn.name, request.params.alias);
    if (!deleted) throw aliasNotFound(arnScope(request), fn.name, request.params.alias);
    return reply.code(204).send();
  });
}

/**
 * The Isola version an alias sends a call to: with `routed`, drawn by the alias's weights (an
 * invocation); without, the alias's own version (a read of the configuration). Undefined is the
 * latest version. 404 when the function has no such alias.
 */
export async function aliasVersion(
  platform: Platform,
  scope: ArnScope,
  fn: string,
  alias: string,
  routed: boolean,
): Promise<string | undefined> {
  const found = await platform.aliases.get(scope.namespace, fn, alias);
  // As Lambda words it when a call (not an alias operation) names an unknown qualifier.
  if (!found) throw resourceNotFound(`Function not found: ${functionArn(scope, fn, alias.slice(0, 128))}`);
  const version = routed ? pickVersion(found) : found.functionVersion;
  return version === LATEST_VERSION ? undefined : version;
}

function aliasNotFound(scope: ArnScope, fn: string, alias: string) {
  return resourceNotFound(`Alias not found: ${functionArn(scope, fn, alias.slice(0, 128))}`);
}

/** Lambda's AliasConfiguration. */
export function aliasConfiguration(alias: AliasRecord, scope: ArnScope) {
  const weights = Object.entries(alias.routing).map(([version, weight]) => [lambdaVersion(version), weight]);
  return {
    AliasArn: functionArn(scope, alias.function, alias.name),
    Name: alias.name,
    FunctionVersion: lambdaVersion(alias.functionVersion),
    Description: alias.description,
    ...(weights.length > 0 ? { RoutingConfig: { AdditionalVersionWeights: Object.fromEntries(weights) } } : {}),
    RevisionId: alias.revisionId,
  };
}

/** Lambda's `N` as Isola's `0.0.N`; `$LATEST` stays. */
function isolaAliasVersion(version: string): string {
  return version === LATEST_VERSION ? version : `0.0.${Number(version)}`;
}

function routingOf(config: z.infer<typeof RoutingConfig> | undefined): Record<string, number> {
  const weights = Object.entries(config?.AdditionalVersionWeights ?? {});
  const routing: Record<string, number> = {};
  for (const [version, weight] of weights) {
    const isola = isolaAliasVersion(version);
    if (Object.hasOwn(routing, isola)) throw invalidParameter(`Version ${version} is named twice in AdditionalVersionWeights.`);
    routing[isola] = weight;
  }
  return routing;
}
