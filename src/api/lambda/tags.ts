/**
 * Lambda's tagging API on functions (`/2017-03-31/tags/{ARN}`: ListTags, TagResource,
 * UntagResource). Tags are kept as the action's `lambda-tags` annotation, so a change stores a new
 * version, as every other change to a function does; the tag `ISOLA_ISOLATION` moves the function
 * to that isolation, as at create.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ActionVersion, KeyValue } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import { draftFromPut } from '../action-draft.js';
import { callerNamespace } from '../auth.js';
import { ISOLATION_SETTING, TAGS_ANNOTATION, tagsOf } from './configuration.js';
import { invalidParameter, resourceNotFound } from './errors.js';
import { isolationAnnotation, parseBody, parseQuery } from './functions.js';
import { functionName } from './names.js';

/** Lambda's limits on a tag: 50 per resource, keys up to 128 characters, values up to 256. */
const MAX_TAGS = 50;
const TagsSchema = z.object({ Tags: z.record(z.string().min(1).max(128), z.string().max(256)) });
const TagKeysSchema = z.object({
  tagKeys: z.union([z.string().min(1).max(128), z.array(z.string().min(1).max(128)).max(MAX_TAGS)]),
});

interface ArnParams {
  arn: string;
}

export function registerTagRoutes(scope: FastifyInstance, platform: Platform): void {
  const path = '/2017-03-31/tags/:arn';

  scope.get<{ Params: ArnParams }>(path, async (request) => ({ Tags: tagsOf(await taggedFunction(platform, request)) }));

  scope.post<{ Params: ArnParams }>(path, async (request, reply) => {
    const current = await taggedFunction(platform, request);
    const body = parseBody(TagsSchema, request);
    const tags = { ...tagsOf(current), ...body.Tags };
    if (Object.keys(tags).length > MAX_TAGS) throw invalidParameter(`A function has at most ${MAX_TAGS} tags.`);
    await retag(platform, current, tags);
    return reply.code(204).send();
  });

  scope.delete<{ Params: ArnParams }>(path, async (request, reply) => {
    const current = await taggedFunction(platform, request);
    const { tagKeys } = parseQuery(TagKeysSchema, request);
    const removed = new Set(Array.isArray(tagKeys) ? tagKeys : [tagKeys]);
    const tags = Object.fromEntries(Object.entries(tagsOf(current)).filter(([key]) => !removed.has(key)));
    await retag(platform, current, tags);
    return reply.code(204).send();
  });
}

/** The latest version of the function the ARN names (the ARN's own qualifier is not a resource of its own here). */
async function taggedFunction(platform: Platform, request: FastifyRequest<{ Params: ArnParams }>): Promise<ActionVersion> {
  if (!request.params.arn.startsWith('arn:')) throw invalidParameter('Tags are addressed by the function ARN.');
  const { name } = functionName(request.params.arn);
  const action = await platform.actions.get(callerNamespace(request), name);
  if (!action) throw resourceNotFound(`Function not found: ${request.params.arn.slice(0, 300)}`);
  return action;
}

async function retag(platform: Platform, current: ActionVersion, tags: Record<string, string>): Promise<void> {
  const annotations: KeyValue[] = [{ key: TAGS_ANNOTATION, value: tags }, ...isolationAnnotation(tags[ISOLATION_SETTING])];
  await platform.deploy(draftFromPut(current.namespace, current.name, { annotations }, current), true);
}
