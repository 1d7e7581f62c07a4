import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, notFound, unauthorized } from '../core/errors.js';
import { newCredentials } from '../core/ids.js';
import { assertEntityName } from '../core/names.js';
import { formatAuth, sameSecret } from '../platform/credentials.js';
import type { Platform } from '../platform/platform.js';

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * The operator's door: an `onRequest` hook that lets through only `Authorization: Bearer <admin
 * token>` (the token in the data dir's admin.token, or ISOLA_ADMIN_TOKEN). A namespace's key is
 * not enough: what is behind it spans every namespace.
 */
export function adminOnly(platform: Platform) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const expected = platform.config.adminToken;
    const given = BEARER.exec(request.headers.authorization ?? '')?.[1];
    if (expected && given && sameSecret(given, expected)) return;
    reply.header('www-authenticate', 'Bearer realm="isola-admin"');
    throw unauthorized(
      "This needs the operator token: send Authorization: Bearer <token>, the token being the server's ISOLA_ADMIN_TOKEN or the contents of admin.token in its data dir.",
    );
  };
}

interface NamespaceParams {
  name: string;
}

function namespaceName(name: string): string {
  assertEntityName('namespace', name);
  // `_` stands for the caller's own namespace in every API path.
  if (name === '_') throw badRequest('The namespace name "_" is reserved: it means "my namespace" in API paths.');
  return name;
}

/**
 * The admin API, like wskadmin's `user` commands: create, list and delete namespaces. Deleting
 * goes through the platform, which purges the store and forgets the namespace's instances, cron
 * triggers and cached credentials; `isola namespace` uses this whenever a server runs on the
 * data dir.
 */
export function registerAdminRoutes(app: FastifyInstance, platform: Platform): void {
  app.register(async (admin) => {
    admin.addHook('onRequest', adminOnly(platform));

    admin.get('/admin/v1/namespaces', async () => {
      const rows = await platform.namespaces.list();
      return rows.map((r) => ({ name: r.name, uuid: r.uuid, created: Number(r.created) }));
    });

    admin.put<{ Params: NamespaceParams }>('/admin/v1/namespaces/:name', async (request, reply) => {
      const name = namespaceName(request.params.name);
      const credentials = newCredentials();
      const row = await platform.namespaces.create(name, credentials);
      return reply.code(201).send({ name, uuid: row.uuid, created: row.created, auth: formatAuth(credentials) });
    });

    admin.delete<{ Params: NamespaceParams }>('/admin/v1/namespaces/:name', async (request) => {
      const purge = await platform.namespaces.delete(request.params.name);
      if (!purge) throw notFound(`The namespace "${request.params.name}" does not exist.`);
      return { deleted: purge.namespace, removed: purge };
    });
  });
}
