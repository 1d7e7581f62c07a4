import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { unescape as lenientUnescape } from 'node:querystring';

/** What a request looks like to AWS Signature Version 4. */
export interface SignedRequest {
  method: string;
  /** Path and query exactly as sent, still URL-encoded. */
  rawUrl: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface SigV4Authorization {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

const AUTH_PATTERN =
  /^AWS4-HMAC-SHA256\s+Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})\s*$/;
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;

export function parseSigV4(header: string | undefined): SigV4Authorization | undefined {
  const match = header ? AUTH_PATTERN.exec(header) : null;
  if (!match) return undefined;
  const [, accessKeyId, date, region, service, signed, signature] = match as unknown as string[];
  return {
    accessKeyId: accessKeyId as string,
    date: date as string,
    region: region as string,
    service: service as string,
    signedHeaders: (signed as string).split(';'),
    signature: signature as string,
  };
}

// RFC 3986 unreserved characters stay; everything else is percent-encoded, as SigV4 requires.
function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

// SignedHeaders names come from the caller: only the request's own headers count, never
// members of Object.prototype such as "constructor".
function header(headers: SignedRequest['headers'], name: string): string | undefined {
  if (!Object.hasOwn(headers, name)) return undefined;
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * Decodes a query component the way signing clients read their own query string (Node's
 * querystring, as aws4 uses): `+` is a space and a malformed escape such as `%zz` stays as it is
 * rather than throwing, so a bad query is a signature mismatch, never a server error.
 */
function queryUnescape(text: string): string {
  return lenientUnescape(text.replace(/\+/g, ' '));
}

/**
 * Verifies a SigV4-signed request against a secret: the canonical request is rebuilt from what
 * arrived and signed again. Returns a reason when it does not match, undefined when it does.
 */
export function verifySigV4(
  request: SignedRequest,
  auth: SigV4Authorization,
  secret: string,
  now = Date.now(),
): string | undefined {
  const amzDate = header(request.headers, 'x-amz-date');
  if (!amzDate || !/^\d{8}T\d{6}Z$/.test(amzDate) || !amzDate.startsWith(auth.date))
    return 'X-Amz-Date is missing or does not match the credential scope.';
  const signedAt = Date.parse(
    `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`,
  );
  if (!Number.isFinite(signedAt) || Math.abs(now - signedAt) > MAX_CLOCK_SKEW_MS)
    return 'The request signature is too old or from the future.';
  const [rawPath = '/', rawQuery = ''] = request.rawUrl.split('?', 2);
  // Services other than S3 encode each path segment a second time.
  const canonicalPath = rawPath
    .split('/')
    .map((segment) => uriEncode(segment))
    .join('/');
  const canonicalQuery = rawQuery
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const at = pair.indexOf('=');
      const [k, v] = at < 0 ? [pair, ''] : [pair.slice(0, at), pair.slice(at + 1)];
      return [uriEncode(queryUnescape(k)), uriEncode(queryUnescape(v))];
    })
    .sort(([a = '', x = ''], [b = '', y = '']) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonicalHeaders = auth.signedHeaders
    .map((name) => `${name}:${(header(request.headers, name) ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const declaredHash = header(request.headers, 'x-amz-content-sha256');
  const payloadHash =
    declaredHash && declaredHash !== 'UNSIGNED-PAYLOAD' ? declaredHash : createHash('sha256').update(request.body).digest('hex');
  if (
    declaredHash &&
    declaredHash !== 'UNSIGNED-PAYLOAD' &&
    declaredHash !== createHash('sha256').update(request.body).digest('hex')
  ) {
    return 'X-Amz-Content-Sha256 does not match the body.';
  }
  const canonicalRequest = [
    request.method.toUpperCase(),
    canonicalPath,
    canonicalQuery,
    canonicalHeaders,
    auth.signedHeaders.join(';'),
    payloadHash,
  ].join('\n');
  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join(
    '\n',
  );
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secret}`, auth.date), auth.region), auth.service), 'aws4_request');
  const expected = createHmac('sha256', signingKey).update(stringToSign).digest();
  const given = Buffer.from(auth.signature, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected)
    ? undefined
    : 'The request signature does not match.';
}
