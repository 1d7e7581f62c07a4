/**
 * Turns a web action's result into the HTTP response it describes, checking everything the
 * function controls before anything is sent: a result that breaks the rules of HTTP is the
 * function's error (recorded as such, answered 502), never a server error or a hung caller.
 */

export const WEB_EXTENSIONS = ['json', 'html', 'http', 'text', 'svg'] as const;
export type WebExtension = (typeof WEB_EXTENSIONS)[number];

/** A response ready to send: every header checked, the body already encoded. */
export interface WebResponse {
  statusCode: number;
  headers: [name: string, value: string | string[]][];
  body?: Buffer;
}

/** Why a result cannot become a response; the message is the activation's error. */
export class WebResultError extends Error {}

// RFC 9110 token: what a header name may consist of.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// What Node.js lets through in a header value: tab, visible ASCII and space, and Latin-1 (sent as
// one byte each). Anything else (control characters, line breaks, characters beyond U+00FF) is not
// representable in an HTTP/1.1 header.
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// The platform frames the response itself: a function's own framing or connection headers would
// contradict the body actually sent (a Content-Length that does not match, chunked encoding
// announced beside a length), so they are left out rather than passed on.
const FRAMING_HEADERS = new Set([
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
]);
// OpenWhisk's rule: for any other content type a string body is base64 and is decoded on the way out.
const TEXT_CONTENT = /^(text\/|application\/(json|xml|javascript))|\+xml|\+json/i;
export const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** The response a web action's result describes, for the extension the caller asked for. */
export function renderWebResult(result: unknown, extension: WebExtension | undefined): WebResponse {
  if (result === null || typeof result !== 'object') throw new WebResultError('The action did not return a dictionary.');
  const fields = result as Record<string, unknown>;
  switch (extension) {
    case 'json':
      return { statusCode: 200, headers: [['content-type', 'application/json; charset=utf-8']], body: jsonBytes(result) };
    case 'html':
      return textResponse(fields, 'html', 'text/html; charset=utf-8');
    case 'text':
      return textResponse(fields, 'text', 'text/plain; charset=utf-8');
    case 'svg':
      return textResponse(fields, 'svg', 'image/svg+xml');
    default:
      break;
  }
  const isHttp =
    extension === 'http' ||
    Object.hasOwn(fields, 'body') ||
    Object.hasOwn(fields, 'statusCode') ||
    Object.hasOwn(fields, 'headers');
  if (!isHttp) {
    return { statusCode: 200, headers: [['content-type', 'application/json; charset=utf-8']], body: jsonBytes(result) };
  }
  return httpResponse(fields);
}

function httpResponse(result: Record<string, unknown>): WebResponse {
  const body = result.body;
  const hasBody = body !== undefined && body !== null;
  const statusCode = statusCodeOf(result.statusCode, hasBody ? 200 : 204);
  const headers = headersOf(result.headers);
  const typeAt = headers.findIndex(([name]) => name === 'content-type');
  const declared = headers[typeAt]?.[1];
  if (Array.isArray(declared)) throw new WebResultError('The header content-type may have only one value.');
  // An empty content type says nothing: the default for the body applies.
  if (declared === '') headers.splice(typeAt, 1);
  const declaredType = declared === '' ? undefined : declared;
  if (!hasBody) return { statusCode, headers };
  if (typeof body === 'object') {
    // An object or array body is sent as JSON, whatever the content type says.
    if (declaredType === undefined) headers.push(['content-type', 'application/json; charset=utf-8']);
    return { statusCode, headers, body: jsonBytes(body) };
  }
  if (typeof body !== 'string' && typeof body !== 'number' && typeof body !== 'boolean') {
    throw new WebResultError(`The body must be a string, a number, a boolean, an object or an array; got ${typeof body}.`);
  }
  const text = String(body);
  if (declaredType === undefined) {
    headers.push(['content-type', 'text/html; charset=utf-8']);
    return { statusCode, headers, body: Buffer.from(text, 'utf8') };
  }
  if (TEXT_CONTENT.test(declaredType)) return { statusCode, headers, body: Buffer.from(text, 'utf8') };
  const base64 = text.replace(/\s+/g, '');
  if (!BASE64.test(base64)) {
    throw new WebResultError(`The body must be base64 for the binary content type "${declaredType.slice(0, 80)}".`);
  }
  return { statusCode, headers, body: Buffer.from(base64, 'base64') };
}

/** A final status code: a 1xx is an interim response, after which the caller would wait forever. */
export function statusCodeOf(value: unknown, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  const code = typeof value === 'string' && /^\d{3}$/.test(value.trim()) ? Number(value) : value;
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 200 || code > 599) {
    throw new WebResultError(
      `The action returned an invalid statusCode ${JSON.stringify(value)?.slice(0, 40)}: a response's status code is an integer from 200 to 599.`,
    );
  }
  return code;
}

export function headersOf(value: unknown): [string, string | string[]][] {
  if (value === undefined || value === null) return [];
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new WebResultError('The headers must be an object of header names and values.');
  }
  const headers: [string, string | string[]][] = [];
  for (const [name, raw] of Object.entries(value)) {
    if (!TOKEN.test(name)) throw new WebResultError(`The header name ${JSON.stringify(name.slice(0, 80))} is not an HTTP token.`);
    // A token, but the reply's header table is a plain object, where this key would set its prototype.
    if (name === '__proto__') throw new WebResultError('The header name __proto__ cannot be sent.');
    const lower = name.toLowerCase();
    if (FRAMING_HEADERS.has(lower) || raw === undefined || raw === null) continue;
    const values = (Array.isArray(raw) ? raw : [raw]).map((item) => headerValue(name, item));
    if (values.length === 0) continue;
    const existing = headers.findIndex(([n]) => n === lower);
    if (existing >= 0) headers.splice(existing, 1);
    headers.push([lower, Array.isArray(raw) ? values : (values[0] as string)]);
  }
  return headers;
}

function headerValue(name: string, value: unknown): string {
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
    throw new WebResultError(
      `The value of header ${name.slice(0, 80)} must be a string, a number or a boolean (or an array of them).`,
    );
  }
  const text = String(value);
  if (!HEADER_VALUE.test(text)) {
    throw new WebResultError(
      `The value of header ${name.slice(0, 80)} has characters a header cannot carry (control characters, line breaks or characters beyond U+00FF).`,
    );
  }
  return text;
}

function textResponse(result: Record<string, unknown>, property: string, contentType: string): WebResponse {
  const value = Object.hasOwn(result, property) ? result[property] : undefined;
  if (value !== undefined && value !== null && typeof value === 'object') {
    throw new WebResultError(`The result's property ${property} must be a string, not an object.`);
  }
  return {
    statusCode: 200,
    headers: [['content-type', contentType]],
    body: Buffer.from(value === undefined || value === null ? '' : String(value), 'utf8'),
  };
}

export function jsonBytes(value: unknown): Buffer {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new WebResultError(`The result cannot be sent as JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  return Buffer.from(text ?? 'null', 'utf8');
}
