import { safeJson } from '../door.js';
import { BASE64, headersOf, jsonBytes, statusCodeOf, type WebResponse, WebResultError } from '../web-response.js';

const JSON_CONTENT = 'application/json; charset=utf-8';

/**
 * The response an OpenFaaS call answers with for a successful result. A result shaped as
 * of-watchdog's http mode and Lambda function URLs shape one (`statusCode`, or `body` with
 * `headers`; `isBase64Encoded`, `cookies`) becomes that response, checked as web actions' are.
 * Anything else, including a would-be response HTTP cannot carry (a status of 700, a header with a
 * line break), is sent as JSON with 200: a result's shape is never the caller's 5xx. Only a result
 * that cannot be JSON at all (nested too deep) is an Error, which the caller gets as the
 * function's failure.
 */
export function renderOpenFaasResult(result: unknown): WebResponse | Error {
  if (isHttpShaped(result)) {
    try {
      return httpResponse(result);
    } catch (error) {
      if (!(error instanceof WebResultError)) throw error;
    }
  }
  const json = safeJson(result);
  if (json instanceof Error) return json;
  return { statusCode: 200, headers: [['content-type', JSON_CONTENT]], body: Buffer.from(json, 'utf8') };
}

function isHttpShaped(result: unknown): result is Record<string, unknown> {
  if (result === null || typeof result !== 'object' || Array.isArray(result)) return false;
  return Object.hasOwn(result, 'statusCode') || (Object.hasOwn(result, 'body') && Object.hasOwn(result, 'headers'));
}

function httpResponse(result: Record<string, unknown>): WebResponse {
  const statusCode = statusCodeOf(result.statusCode, 200);
  const headers = headersOf(result.headers);
  const cookies = cookiesOf(result.cookies);
  if (cookies.length > 0) {
    const at = headers.findIndex(([name]) => name === 'set-cookie');
    const own = at < 0 ? [] : ([] as string[]).concat((headers[at] as [string, string | string[]])[1]);
    if (at >= 0) headers.splice(at, 1);
    headers.push(['set-cookie', [...own, ...cookies]]);
  }
  const declared = headers.find(([name]) => name === 'content-type')?.[1];
  if (Array.isArray(declared)) throw new WebResultError('The header content-type may have only one value.');
  const withType = (type: string): WebResponse['headers'] => (declared ? headers : [...headers, ['content-type', type]]);
  const body = result.body;
  if (body === undefined || body === null) return { statusCode, headers };
  if (typeof body === 'object') return { statusCode, headers: withType(JSON_CONTENT), body: jsonBytes(body) };
  if (typeof body !== 'string' && typeof body !== 'number' && typeof body !== 'boolean') {
    throw new WebResultError(`The body must be a string, a number, a boolean, an object or an array; got ${typeof body}.`);
  }
  const text = String(body);
  if (result.isBase64Encoded === true) {
    const base64 = text.replace(/\s+/g, '');
    if (!BASE64.test(base64)) throw new WebResultError('isBase64Encoded is true but the body is not base64.');
    return { statusCode, headers: withType('application/octet-stream'), body: Buffer.from(base64, 'base64') };
  }
  return { statusCode, headers: withType('text/plain; charset=utf-8'), body: Buffer.from(text, 'utf8') };
}

/** Lambda function URLs' `cookies`: Set-Cookie values, checked as header values are. */
function cookiesOf(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new WebResultError('cookies must be an array of Set-Cookie values.');
  const checked = headersOf({ 'set-cookie': value })[0]?.[1] ?? [];
  return ([] as string[]).concat(checked);
}
