import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { IsolaError } from '../../core/errors.js';
import { assertEntityName } from '../../core/names.js';
import type { ActionVersion, KeyValue } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import { draftFromPut } from '../action-draft.js';
import { callerNamespace } from '../auth.js';
import { rawBody } from '../door.js';
import { parseJson } from '../json.js';
import type { ActionPut } from '../schemas.js';
import { parseSigV4 } from '../sigv4.js';
import { aliasVersion } from './aliases.js';
import { codeLocation } from './code-location.js';
import {
  type ArnScope,
  annotationOf,
  DESCRIPTION_ANNOTATION,
  functionArn,
  functionConfiguration,
  HANDLER_ANNOTATION,
  ISOLATION_SETTING,
  ROLE_ANNOTATION,
  RUNTIME_ANNOTATION,
  TAGS_ANNOTATION,
  tagsOf,
} from './configuration.js';
import { invalidParameter, invalidRequestContent, resourceNotFound } from './errors.js';
import { functionName, isolaVersion, lambdaVersion, qualifierKind, qualifierOf } from './names.js';
import { KIND_RUNTIMES, kindOfRuntime, lambdaPackage } from './packaging.js';

const Variables = z.record(z.string().max(256), z.string().max(4096));
const Tags = z.record(z.string().max(128), z.string().max(256));

const CreateFunctionSchema = z.object({
  FunctionName: z.string().min(1).max(256),
  Runtime: z.string().max(64),
  Handler: z.string().min(1).max(128),
  Role: z.string().max(2048).optional(),
  Code: z.object({
    ZipFile: z.string().optional(),
    S3Bucket: z.string().optional(),
    ImageUri: z.string().optional(),
  }),
  Description: z.string().max(256).optional(),
  Timeout: z.number().int().min(1).max(900).optional(),
  MemorySize: z.number().int().min(16).max(10240).optional(),
  Environment: z.object({ Variables: Variables.optional() }).optional(),
  Publish: z.boolean().optional(),
  PackageType: z.enum(['Zip']).optional(),
  Tags: Tags.optional(),
});

const UpdateCodeSchema = z.object({
  ZipFile: z.string().optional(),
  S3Bucket: z.string().optional(),
  ImageUri: z.string().optional(),
  Publish: z.boolean().optional(),
  RevisionId: z.string().optional(),
});

const UpdateConfigurationSchema = z.object({
  Runtime: z.string().max(64).optional(),
  Handler: z.string().min(1).max(128).optional(),
  Role: z.string().max(2048).optional(),
  Description: z.string().max(256).optional(),
  Timeout: z.number().int().min(1).max(900).optional(),
  MemorySize: z.number().int().min(16).max(10240).optional(),
  Environment: z.object({ Variables: Variables.optional() }).optional(),
  RevisionId: z.string().optional(),
});

const PublishSchema = z.object({
  CodeSha256: z.string().optional(),
  Description: z.string().max(256).optional(),
  RevisionId: z.string().optional(),
});

const PageQuerySchema = z.object({
  Marker: z
    .string()
    .regex(/^\d{1,9}$/, 'is not a marker this API gave')
    .optional(),
  MaxItems: z.coerce.number().int().min(1).max(10_000).optional(),
});
const QualifierQuerySchema = z.object({ Qualifier: z.string().max(128).optional() });

interface NameParams {
  name: string;
}

/** Lambda's control plane over the caller's actions: every action is a function, and the reverse. */
export function registerFunctionRoutes(scope: FastifyInstance, platform: Platform): void {
  const base = '/2015-03-31/functions';

  scope.post(base, { bodyLimit: platform.config.maxActionBytes }, async (request, reply) => {
    const body = parseBody(CreateFunctionSchema, request);
    const namespace = callerNamespace(request);
    const name = assertEntityName('function', body.FunctionName);
    const code = zipOf(body.Code);
    kindOfRuntime(body.Runtime);
    const pkg = await lambdaPackage(body.Runtime, body.Handler, code);
    const environment = body.Environment?.Variables ?? {};
    const annotations: KeyValue[] = [
      { key: RUNTIME_ANNOTATION, value: body.Runtime },
      { key: HANDLER_ANNOTATION, value: body.Handler },
      ...(body.Role !== undefined ? [{ key: ROLE_ANNOTATION, value: body.Role }] : []),
      ...(body.Description !== undefined ? [{ key: DESCRIPTION_ANNOTATION, value: body.Description }] : []),
      ...(body.Tags !== undefined ? [{ key: TAGS_ANNOTATION, value: body.Tags }] : []),
      ...isolationAnnotation(body.Tags?.[ISOLATION_SETTING] ?? environment[ISOLATION_SETTING]),
    ];
    const put: ActionPut = {
      exec: { kind: pkg.kind, code: pkg.code, binary: true, ...(pkg.main ? { main: pkg.main } : {}) },
      limits: limitsOf(body),
      parameters: parametersOf(environment),
      annotations,
    };
    const stored = await platform.deploy(draftFromPut(namespace, name, put), false);
    return reply.code(201).send(functionConfiguration(stored, arnScope(request), !body.Publish));
  });

  scope.get(base, async (request) => {
    const query = parseQuery(PageQuerySchema, request);
    const namespace = callerNamespace(request);
    const skip = Number(query.Marker ?? 0);
    const limit = query.MaxItems ?? 50;
    const actions = await platform.actions.list(namespace, { limit: limit + 1, skip });
    const scope = arnScope(request);
    return {
      Functions: actions.slice(0, limit).map((a) => functionConfiguration(a, scope, true)),
      ...(actions.length > limit ? { NextMarker: String(skip + limit) } : {}),
    };
  });

  scope.get<{ Params: NameParams }>(`${base}/:name`, async (request) => {
    const found = await findFunction(platform, request);
    const location = codeLocation(platform, request, found.version);
    return {
      Configuration: shownConfiguration(found, arnScope(request)),
      Code: { RepositoryType: 'S3', ...(location !== undefined ? { Location: location } : {}) },
      Tags: tagsOf(found.version),
    };
  });

  scope.get<{ Params: NameParams }>(`${base}/:name/configuration`, async (request) => {
    return shownConfiguration(await findFunction(platform, request), arnScope(request));
  });

  scope.put<{ Params: NameParams }>(`${base}/:name/code`, { bodyLimit: platform.config.maxActionBytes }, async (request) => {
    const body = parseBody(UpdateCodeSchema, request);
    const current = await latestFunction(platform, request);
    assertRevision(current, body.RevisionId);
    const code = zipOf(body);
    const runtime = annotationOf(current, RUNTIME_ANNOTATION);
    const handler = annotationOf(current, HANDLER_ANNOTATION);
    const pkg =
      typeof runtime === 'string' && typeof handler === 'string'
        ? await lambdaPackage(runtime, handler, code)
        : await lambdaPackage(KIND_RUNTIMES[current.exec.kind], handlerOf(current), code);
    const put: ActionPut = {
      exec: { kind: pkg.kind, code: pkg.code, binary: true, ...(pkg.main ? { main: pkg.main } : {}) },
    };
    const stored = await platform.deploy(draftFromPut(current.namespace, current.name, put, current), true);
    return functionConfiguration(stored, arnScope(request), !body.Publish);
  });

  scope.put<{ Params: NameParams }>(`${base}/:name/configuration`, async (request) => {
    const body = parseBody(UpdateConfigurationSchema, request);
    const current = await latestFunction(platform, request);
    assertRevision(current, body.RevisionId);
    const runtime = body.Runtime ?? annotationOf(current, RUNTIME_ANNOTATION);
    const handler = body.Handler ?? annotationOf(current, HANDLER_ANNOTATION);
    let exec: ActionPut['exec'];
    if (
      (body.Runtime !== undefined || body.Handler !== undefined) &&
      typeof runtime === 'string' &&
      typeof handler === 'string'
    ) {
      if (!current.exec.binary) throw invalidParameter('Only a function deployed as a zip can change its Runtime or Handler.');
      const pkg = await lambdaPackage(runtime, handler, current.exec.code);
      exec = { kind: pkg.kind, code: pkg.code, binary: true, ...(pkg.main ? { main: pkg.main } : {}) };
    } else if (body.Runtime !== undefined || body.Handler !== undefined) {
      throw invalidParameter('Set Runtime and Handler together on a function created outside the Lambda API.');
    }
    const annotations: KeyValue[] = [
      ...(body.Runtime !== undefined ? [{ key: RUNTIME_ANNOTATION, value: body.Runtime }] : []),
      ...(body.Handler !== undefined ? [{ key: HANDLER_ANNOTATION, value: body.Handler }] : []),
      ...(body.Role !== undefined ? [{ key: ROLE_ANNOTATION, value: body.Role }] : []),
      ...(body.Description !== undefined ? [{ key: DESCRIPTION_ANNOTATION, value: body.Description }] : []),
      ...isolationAnnotation(body.Environment?.Variables?.[ISOLATION_SETTING]),
    ];
    const put: ActionPut = {
      ...(exec ? { exec } : {}),
      limits: limitsOf(body),
      ...(body.Environment ? { parameters: parametersOf(body.Environment.Variables ?? {}) } : {}),
      ...(annotations.length > 0 ? { annotations } : {}),
    };
    const stored = await platform.deploy(draftFromPut(current.namespace, current.name, put, current), true);
    return functionConfiguration(stored, arnScope(request), true);
  });

  scope.delete<{ Params: NameParams }>(`${base}/:name`, async (request, reply) => {
    const { Qualifier } = parseQuery(QualifierQuerySchema, request);
    if (isolaVersion(Qualifier) !== undefined)
      throw invalidParameter('Isola deletes a function with all its versions; delete it without a Qualifier.');
    const current = await latestFunction(platform, request);
    await platform.deleteAction(current.namespace, current.name);
    return reply.code(204).send();
  });

  // Every update stores an immutable version already: publishing names the latest one.
  scope.post<{ Params: NameParams }>(`${base}/:name/versions`, async (request, reply) => {
    const body = parseBody(PublishSchema, request);
    const current = await latestFunction(platform, request);
    assertRevision(current, body.RevisionId);
    const configuration = functionConfiguration(current, arnScope(request), false);
    if (body.CodeSha256 !== undefined && body.CodeSha256 !== configuration.CodeSha256)
      throw invalidParameter('CodeSha256 does not match the code of the latest version.');
    return reply.code(201).send(configuration);
  });

  scope.get<{ Params: NameParams }>(`${base}/:name/versions`, async (request) => {
    const query = parseQuery(PageQuerySchema, request);
    const current = await latestFunction(platform, request);
    const scope = arnScope(request);
    const versions = await platform.actions.versions(current.namespace, current.name);
    // Oldest first, as Lambda lists them, after $LATEST.
    const ordered = [...versions].sort((a, b) => Number(lambdaVersion(a.version)) - Number(lambdaVersion(b.version)));
    const all = [functionConfiguration(current, scope, true), ...ordered.map((v) => functionConfiguration(v, scope, false))];
    const skip = Number(query.Marker ?? 0);
    const limit = query.MaxItems ?? 50;
    return {
      Versions: all.slice(skip, skip + limit),
      ...(all.length > skip + limit ? { NextMarker: String(skip + limit) } : {}),
    };
  });
}

export function parseBody<T extends z.ZodType>(schema: T, request: FastifyRequest): z.infer<T> {
  const text = rawBody(request.body).toString('utf8');
  let value: unknown = {};
  if (text.trim() !== '') {
    try {
      value = parseJson(text);
    } catch (error) {
      throw invalidRequestContent(error instanceof IsolaError ? error.message : 'Could not parse request body into json.');
    }
  }
  return validated(schema, value, 'request');
}

export function parseQuery<T extends z.ZodType>(schema: T, request: FastifyRequest): z.infer<T> {
  return validated(schema, request.query, 'query');
}

function validated<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : what}: ${issue.message}`);
  throw invalidParameter(`Invalid ${what}: ${problems.join('; ')}`);
}

function zipOf(code: { ZipFile?: string | undefined; S3Bucket?: string | undefined; ImageUri?: string | undefined }): string {
  if (code.S3Bucket !== undefined || code.ImageUri !== undefined)
    throw invalidParameter('Isola takes the code as Code.ZipFile; S3 locations and container images are not fetched.');
  if (code.ZipFile === undefined || code.ZipFile.length === 0) throw invalidParameter('Code.ZipFile is required.');
  if (!/^[A-Za-z0-9+/\r\n]*={0,2}\s*$/.test(code.ZipFile))
    throw invalidParameter('Could not unzip uploaded file. Please check your file, then try to upload again.');
  return code.ZipFile;
}

function limitsOf(body: { MemorySize?: number | undefined; Timeout?: number | undefined }): ActionPut['limits'] {
  return {
    ...(body.MemorySize !== undefined ? { memory: body.MemorySize } : {}),
    ...(body.Timeout !== undefined ? { timeout: body.Timeout * 1000 } : {}),
  };
}

/** Environment variables are the action's default parameters; ISOLA_ISOLATION is a setting, not one of them. */
function parametersOf(variables: Record<string, string>): KeyValue[] {
  return Object.entries(variables)
    .filter(([key]) => key !== ISOLATION_SETTING)
    .map(([key, value]) => ({ key, value }));
}

export function isolationAnnotation(isolation: string | undefined): KeyValue[] {
  return isolation === undefined ? [] : [{ key: 'isolation', value: isolation }];
}

function handlerOf(action: ActionVersion): string {
  return `index.${action.exec.main ?? 'main'}`;
}

function assertRevision(action: ActionVersion, revisionId: string | undefined): void {
  if (revisionId !== undefined && revisionId !== action.revision)
    throw new IsolaError(412, 'The RevisionId provided does not match the latest RevisionId for the function.');
}

export function arnScope(request: FastifyRequest): ArnScope {
  return { region: parseSigV4(request.headers.authorization)?.region ?? 'us-east-1', namespace: callerNamespace(request) };
}

export async function latestFunction(
  platform: Platform,
  request: FastifyRequest<{ Params: NameParams }>,
): Promise<ActionVersion> {
  const namespace = callerNamespace(request);
  const { name } = functionName(request.params.name);
  const action = await platform.actions.get(namespace, name);
  if (!action) throw resourceNotFound(`Function not found: arn:aws:lambda:::function:${name}`);
  return action;
}

/**
 * The version a read names by Qualifier (or an ARN's suffix): a version, an alias (its own
 * version, not a weighted pick) or the latest; `latest` when it is $LATEST, `alias` when one was named.
 */
async function findFunction(
  platform: Platform,
  request: FastifyRequest<{ Params: NameParams }>,
): Promise<{ version: ActionVersion; latest: boolean; alias?: string }> {
  const { Qualifier } = parseQuery(QualifierQuerySchema, request);
  const named = functionName(request.params.name);
  const qualifier = qualifierOf(named, Qualifier);
  const kind = qualifierKind(qualifier);
  const version =
    kind.kind === 'alias'
      ? await aliasVersion(platform, arnScope(request), named.name, kind.alias, false)
      : kind.kind === 'version'
        ? kind.version
        : undefined;
  const action = await platform.actions.get(callerNamespace(request), named.name, version);
  if (!action)
    throw resourceNotFound(`Function not found: ${named.name}${qualifier !== undefined ? `:${qualifier.slice(0, 40)}` : ''}`);
  return { version: action, latest: version === undefined, ...(kind.kind === 'alias' ? { alias: kind.alias } : {}) };
}

/** The configuration a read shows: an alias's ARN when it was read through one. */
function shownConfiguration(found: { version: ActionVersion; latest: boolean; alias?: string }, scope: ArnScope) {
  const configuration = functionConfiguration(found.version, scope, found.latest);
  return found.alias !== undefined
    ? { ...configuration, FunctionArn: functionArn(scope, found.version.name, found.alias) }
    : configuration;
}
