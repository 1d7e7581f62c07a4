import type { FastifyRequest } from 'fastify';
import { MAX_JSON_DEPTH } from '../../core/limits.js';
import { headerMap, rawBody } from '../door.js';
import { jsonDepthOver, parseJson } from '../json.js';

const JSON_TYPE = /^application\/(?:[^;]*\+)?json/i;
// As web actions read them: these bodies reach the function as text, any other as base64.
const TEXT_TYPES = /^(text\/|application\/(json|xml|x-www-form-urlencoded|javascript)|[^;]*\+(json|xml))/i;

/**
 * The parameters a function sees for an OpenFaaS call, in web actions' convention: a JSON object
 * body merged with the query, any other body as `__ow_body` (text, or base64 when binary) with its
 * content type in `__ow_headers`, and `__ow_method`, `__ow_path`, `__ow_query`.
 *
 * OpenFaaS passes bodies through untouched, so JSON is recognised by its content, whatever the
 * content type says: `curl -d '{"a":1}'` sends it as a form, and the function gets `a`. Only a
 * body declared JSON must be JSON (400 otherwise); a form body is not decoded into parameters.
 */
export function openFaasParams(request: FastifyRequest, path: string): Record<string, unknown> {
  const body = rawBody(request.body);
  const contentType = String(request.headers['content-type'] ?? '');
  // Merged by spreading, which defines keys: assigning a `__proto__` key would set a prototype.
  let params: Record<string, unknown> = { ...(request.query as Record<string, unknown>) };
  if (body.length > 0) {
    const text = body.toString('utf8');
    const json = JSON_TYPE.test(contentType) ? parseJson(text) : jsonByContent(text);
    if (json === NOT_JSON) params.__ow_body = TEXT_TYPES.test(contentType) ? text : body.toString('base64');
    else if (json !== null && typeof json === 'object' && !Array.isArray(json)) params = { ...params, ...json };
    else params.__ow_body = json;
  }
  params.__ow_method = request.method.toLowerCase();
  params.__ow_headers = headerMap(request.headers);
  params.__ow_path = path;
  params.__ow_query = (request.raw.url ?? '').split('?')[1] ?? '';
  return params;
}

const NOT_JSON = Symbol('not JSON');

/** An undeclared body that is a JSON object or array; anything else (text, bytes, a bare number) passes through. */
function jsonByContent(text: string): unknown {
  const first = text.trimStart()[0];
  if (first !== '{' && first !== '[') return NOT_JSON;
  // Too deep for the platform is refused as a declared body would be; malformed JSON is just a body.
  if (jsonDepthOver(text, MAX_JSON_DEPTH) !== undefined) return parseJson(text);
  try {
    JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
  return parseJson(text);
}
