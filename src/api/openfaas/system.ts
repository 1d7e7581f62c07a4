import { readFileSync } from 'node:fs';
import { arch } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { badRequest, forbidden, notFound } from '../../core/errors.js';
import { assertActionName } from '../../core/names.js';
import { type ActionVersion, annotationValue } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import { SETTING_LIMITS, storedFunctionSettings } from '../../scheduler/function-settings.js';
import { callerNamespace } from '../auth.js';
import { rawBody } from '../door.js';
import { parseJson } from '../json.js';

const PAGE = 200;

/** OpenFaaS's function status, as `faas-cli list` and `describe` read it. */
export interface OpenFaasFunctionStatus {
  name: string;
  image: string;
  namespace: string;
  replicas: number;
  availableReplicas: number;
  invocationCount: number;
  envProcess: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  createdAt: string;
}

/**
 * OpenFaaS's system API over the caller's namespace: list, describe, delete and scale functions,
 * and the provider's info. `image` is the function's kind, `replicas` its live instances, and
 * scaling sets how many instances are kept provisioned (in place of the `minInstances`
 * annotation, without storing a new version).
 */
export function registerOpenFaasSystemRoutes(scope: FastifyInstance, platform: Platform): void {
  scope.get('/system/info', async () => ({
    provider: { provider: 'isola', orchestration: 'isola', version: VERSION },
    version: VERSION,
    arch: arch() === 'x64' ? 'x86_64' : arch(),
  }));

  scope.get('/system/namespaces', async (request) => [callerNamespace(request)]);

  scope.get('/system/functions', async (request) => {
    const namespace = ownNamespace(request);
    const statuses: OpenFaasFunctionStatus[] = [];
    for (let skip = 0; ; skip += PAGE) {
      const page = await platform.actions.list(namespace, { skip, limit: PAGE });
      for (const listed of page) {
        // Listings may leave the code out: the status is built from the stored latest version.
        const action = (await platform.actions.get(namespace, listed.name)) ?? listed;
        statuses.push(await functionStatus(platform, action));
      }
      if (page.length < PAGE) break;
    }
    return statuses;
  });

  scope.get<{ Params: { name: string } }>('/system/function/:name', async (request) => {
    const namespace = ownNamespace(request);
    return await functionStatus(platform, await existing(platform, namespace, request.params.name));
  });

  const noImages = async () => {
    throw badRequest(
      'Isola runs functions from their code, not from container images, so it cannot deploy an OpenFaaS image. ' +
        'Deploy the code instead: `isola action create NAME FILE`, the OpenWhisk API ' +
        '(PUT /api/v1/namespaces/_/actions/NAME) or Lambda CreateFunction; it is then callable at /function/NAME.',
    );
  };
  scope.post('/system/functions', noImages);
  scope.put('/system/functions', noImages);

  scope.delete('/system/functions', async (request, reply) => {
    const namespace = ownNamespace(request);
    const body = jsonObject(request);
    const name = body.functionName;
    if (typeof name !== 'string' || name === '') throw badRequest('The body must name the function: {"functionName": "NAME"}.');
    assertActionName(name, 'function');
    await platform.deleteAction(namespace, name);
    return reply.code(200).send();
  });

  scope.post<{ Params: { name: string } }>('/system/scale-function/:name', async (request, reply) => {
    const namespace = ownNamespace(request);
    const body = jsonObject(request);
    const action = await existing(platform, namespace, request.params.name);
    if (body.serviceName !== undefined && body.serviceName !== action.name) {
      throw badRequest(
        `serviceName "${String(body.serviceName).slice(0, 100)}" does not match the path's function "${action.name}".`,
      );
    }
    const settings = storedFunctionSettings(action);
    const most = Math.min(SETTING_LIMITS.minInstances.max, settings.maxInstances);
    const replicas = body.replicas;
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0 || replicas > most) {
      throw badRequest(
        `replicas must be an integer from 0 to ${most} (instances kept provisioned${
          most < SETTING_LIMITS.minInstances.max ? `, at most the function's maxInstances` : ''
        }); got ${JSON.stringify(replicas)?.slice(0, 40)}.`,
      );
    }
    // A setting of the function: no new version, so the instances it has stay.
    await platform.scaleFunction(namespace, action.name, replicas);
    return reply.code(200).send();
  });
}

/** The namespace a system call works in: the caller's (OpenFaaS's `?namespace=` may name only that one). */
function ownNamespace(request: FastifyRequest): string {
  const namespace = callerNamespace(request);
  const asked = (request.query as Record<string, unknown>).namespace;
  if (asked !== undefined && asked !== '' && asked !== namespace) {
    throw forbidden(`This key reaches the namespace "${namespace}" only, not ${JSON.stringify(String(asked).slice(0, 100))}.`);
  }
  return namespace;
}

async function existing(platform: Platform, namespace: string, name: string): Promise<ActionVersion> {
  assertActionName(name, 'function');
  const action = await platform.actions.get(namespace, name);
  if (!action) throw notFound(`The function "${name}" does not exist in namespace "${namespace}".`);
  return action;
}

function jsonObject(request: FastifyRequest): Record<string, unknown> {
  const body = rawBody(request.body);
  if (body.length === 0) throw badRequest('The request needs a JSON body.');
  const parsed = parseJson(body.toString('utf8'));
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw badRequest('The body must be a JSON object.');
  return parsed as Record<string, unknown>;
}

async function functionStatus(platform: Platform, action: ActionVersion): Promise<OpenFaasFunctionStatus> {
  const counts = await platform.functionCounts(action);
  return {
    name: action.name,
    image: action.sequence ? 'sequence' : action.exec.kind,
    namespace: action.namespace,
    replicas: counts.live,
    availableReplicas: counts.ready,
    invocationCount: counts.invocations,
    envProcess: action.exec.main ?? 'main',
    labels: {
      'isola.isolation': action.isolation,
      'isola.version': action.version,
      'com.openfaas.scale.min': String(counts.provisioned),
      ...(annotationValue(action.annotations, 'web-export') === true ? { 'isola.web-export': 'true' } : {}),
    },
    annotations: Object.fromEntries(
      action.annotations
        .filter((a) => a.key !== '__proto__')
        .map((a) => [a.key, typeof a.value === 'string' ? a.value : (JSON.stringify(a.value) ?? 'null')]),
    ),
    createdAt: new Date(action.updated).toISOString(),
  };
}

const VERSION = (() => {
  // src/api/openfaas/ and dist/api/openfaas/ are both three levels below the package.
  const manifest = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
  return { release: manifest.version ?? 'unknown', sha: '', commit_message: '' };
})();
