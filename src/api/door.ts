import type { FastifyInstance } from 'fastify';

/**
 * Registers routes in a scope of their own where every body arrives as raw bytes, as doors other
 * than OpenWhisk's need: Lambda signs the exact bytes, OpenFaaS and web actions pass them on.
 */
export function rawBodyScope(app: FastifyInstance, register: (scope: FastifyInstance) => void): void {
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    register(scope);
  });
}

export function rawBody(body: unknown): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.alloc(0);
}

/** Lower-cased request headers as plain strings, for functions that want to see them. */
export function headerMap(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  // Built with fromEntries: a header called `__proto__` becomes a key, not a prototype.
  return Object.fromEntries(
    Object.entries(headers)
      .filter((entry): entry is [string, string | string[]] => entry[1] !== undefined && entry[0] !== 'authorization')
      .map(([name, value]) => [name.toLowerCase(), Array.isArray(value) ? value.join(', ') : value]),
  );
}
