import type { FastifyRequest } from 'fastify';
import { headerMap, rawBody } from './door.js';
import { parseJson } from './json.js';

const TEXT_TYPES = /^(text\/|application\/(json|xml|x-www-form-urlencoded|javascript)|[^;]*\+(json|xml))/i;

/**
 * The parameters a function sees for a raw HTTP request (web actions, OpenFaaS): a JSON object
 * body merged with the query, anything else as `__ow_body` (base64 when binary), and OpenWhisk's
 * `__ow_method`, `__ow_headers`, `__ow_path` and `__ow_query`.
 */
export function httpParams(request: FastifyRequest, path: string): Record<string, unknown> {
  const body = rawBody(request.body);
  const contentType = String(request.headers['content-type'] ?? '');
  const query = request.query as Record<string, unknown>;
  // Merged by spreading, which defines keys: assigning a `__proto__` key would set a prototype.
  let params: Record<string, unknown> = { ...query };
  if (body.length > 0) {
    if (/^application\/json/i.test(contentType)) {
      const parsed = parseJson(body.toString('utf8'));
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) params = { ...params, ...parsed };
      else params.__ow_body = parsed;
    } else if (/^application\/x-www-form-urlencoded/i.test(contentType)) {
      params = { ...params, ...Object.fromEntries(new URLSearchParams(body.toString('utf8'))) };
    } else {
      params.__ow_body = TEXT_TYPES.test(contentType) ? body.toString('utf8') : body.toString('base64');
    }
  }
  params.__ow_method = request.method.toLowerCase();
  params.__ow_headers = headerMap(request.headers);
  params.__ow_path = path;
  params.__ow_query = (request.raw.url ?? '').split('?')[1] ?? '';
  return params;
}
