import { z } from 'zod';
import { badRequest } from '../core/errors.js';

export const KeyValueSchema = z.strictObject({
  key: z.string().min(1).max(256),
  value: z.unknown(),
  // OpenWhisk marks parameters that are only given to initialisation.
  init: z.boolean().optional(),
});

const ExecSchema = z.strictObject({
  kind: z.string().min(1).max(64),
  code: z.string().optional(),
  binary: z.boolean().optional(),
  main: z.string().min(1).max(128).optional(),
  image: z.string().optional(),
  /** A sequence's actions, fully qualified (`/ns/name`, `_` for the caller's). */
  components: z.array(z.string().min(1).max(1024)).max(1000).optional(),
});

const LimitsSchema = z.strictObject({
  memory: z.number().optional(),
  timeout: z.number().optional(),
  concurrency: z.number().optional(),
  logs: z.number().optional(),
});

/** The body of `PUT .../actions/{name}`: the fields OpenWhisk clients send, and nothing else. */
export const ActionPutSchema = z.strictObject({
  namespace: z.string().optional(),
  name: z.string().optional(),
  version: z.string().optional(),
  publish: z.boolean().optional(),
  updated: z.number().optional(),
  exec: ExecSchema.optional(),
  limits: LimitsSchema.optional(),
  parameters: z.array(KeyValueSchema).max(1000).optional(),
  annotations: z.array(KeyValueSchema).max(1000).optional(),
  delAnnotations: z.array(z.string()).max(1000).optional(),
});
export type ActionPut = z.infer<typeof ActionPutSchema>;

const booleanFlag = z
  .enum(['true', 'false', ''])
  .optional()
  .transform((v) => v === 'true' || v === '');

const count = (max: number, fallback: number) =>
  z.coerce
    .number()
    .int()
    .min(0)
    .max(max)
    .optional()
    .transform((v) => v ?? fallback);

export const PutQuerySchema = z.object({ overwrite: booleanFlag });
export const InvokeQuerySchema = z.object({
  blocking: booleanFlag,
  result: booleanFlag,
  timeout: z
    .string()
    .regex(/^\d{1,10}$/, 'must be a whole number of milliseconds')
    .transform(Number)
    .optional(),
});
export const LambdaQuerySchema = z.object({ Qualifier: z.string().max(128).optional() });
export const ListQuerySchema = z.object({ limit: count(200, 30), skip: count(1_000_000, 0) });
export const GetActionQuerySchema = z.object({
  code: z.enum(['true', 'false']).optional(),
  version: z
    .string()
    .regex(/^\d+\.\d+\.\d+$/, 'a version looks like 0.0.1')
    .optional(),
});
export const ActivationListQuerySchema = z.object({
  name: z.string().max(256).optional(),
  limit: count(200, 30),
  skip: count(1_000_000, 0),
  since: z.coerce.number().int().min(0).optional(),
  upto: z.coerce.number().int().min(0).optional(),
  docs: booleanFlag,
});

/**
 * parseOrThrow for a query string that repeats from call to call (a client invoking the same way
 * at load): the parsed value of each raw query string is kept, up to `max` different ones, and
 * handed out again without validating anew. Only what parsed is kept; a bad query throws each time.
 */
export function memoisedQueryParser<T extends z.ZodType>(schema: T, max = 64) {
  const parsed = new Map<string, Readonly<z.infer<T>>>();
  return (rawQuery: string | undefined, query: unknown): Readonly<z.infer<T>> => {
    const known = rawQuery === undefined ? undefined : parsed.get(rawQuery);
    if (known !== undefined) return known;
    const value = Object.freeze(parseOrThrow(schema, query, 'query')) as Readonly<z.infer<T>>;
    if (rawQuery !== undefined) {
      // Many different query strings: start again rather than grow without bound.
      if (parsed.size >= max) parsed.clear();
      parsed.set(rawQuery, value);
    }
    return value;
  };
}

/** The part of a request URL after `?` (empty when there is none). */
export function rawQueryOf(url: string): string {
  const mark = url.indexOf('?');
  return mark < 0 ? '' : url.slice(mark + 1);
}

/** Parses with a schema and turns its complaints into one 400 that names each bad field. */
export function parseOrThrow<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : what;
    return `${path}: ${issue.message}`;
  });
  throw badRequest(`Invalid ${what}: ${problems.join('; ')}`);
}

/** Invocation parameters: a JSON object, or nothing. */
export function paramsFrom(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw badRequest('The request content must be a JSON object.');
  return body as Record<string, unknown>;
}
