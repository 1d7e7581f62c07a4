/**
 * GetFunction's `Code.Location`: as Lambda's presigned S3 URL, a link from which the deployment
 * package downloads as a zip without credentials for ten minutes. Here the link is on Isola's own
 * server, signed by the platform (see SignedLinks) over the function's namespace, name, version,
 * revision and the expiry: any change to one of them, or a late use, is a 403 that says nothing
 * about the function.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ActionVersion } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import { rawBodyScope } from '../door.js';
import { annotationOf, HANDLER_ANNOTATION } from './configuration.js';
import { LambdaError, lambdaErrorHandler } from './errors.js';
import { lambdaVersion } from './names.js';
import { deploymentPackage } from './packaging.js';

/** How long a link works, as Lambda's does. */
export const CODE_LINK_SECONDS = 600;
const PURPOSE = 'lambda-code-location';

const CodeQuerySchema = z.object({
  namespace: z.string().min(1).max(256),
  version: z.string().min(1).max(64),
  revision: z.string().min(1).max(64),
  expires: z.string().regex(/^\d{1,12}$/),
  signature: z.string().min(1).max(128),
});

const denied = () => new LambdaError(403, 'AccessDeniedException', 'The link is not valid, or has expired.');

function signedFields(namespace: string, name: string, version: string, revision: string, expires: string): string[] {
  return [namespace, name, version, revision, expires];
}

/** The link for a version's code, on the host the request came to; undefined when it has no code. */
export function codeLocation(platform: Platform, request: FastifyRequest, action: ActionVersion): string | undefined {
  if (action.sequence || action.exec.code === '') return undefined;
  const expires = String(Math.floor(Date.now() / 1000) + CODE_LINK_SECONDS);
  const signature = platform.links.sign(
    PURPOSE,
    signedFields(action.namespace, action.name, action.version, action.revision, expires),
  );
  const query = new URLSearchParams({
    namespace: action.namespace,
    version: action.version,
    revision: action.revision,
    expires,
    signature,
  });
  return `${request.protocol}://${request.host}/2015-03-31/functions/${encodeURIComponent(action.name)}/code?${query}`;
}

/** `GET /2015-03-31/functions/{name}/code?...`: no credentials, the signature is the grant. */
export function registerCodeLocationRoute(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    scope.setErrorHandler(lambdaErrorHandler);
    scope.get<{ Params: { name: string } }>('/2015-03-31/functions/:name/code', async (request, reply) => {
      const query = CodeQuerySchema.safeParse(request.query);
      if (!query.success) throw denied();
      const { namespace, version, revision, expires, signature } = query.data;
      // The signature first: nothing is looked up for a link the platform did not make.
      const fields = signedFields(namespace, request.params.name, version, revision, expires);
      if (!platform.links.verify(PURPOSE, fields, signature)) throw denied();
      if (Number(expires) * 1000 <= Date.now()) throw denied();
      const action = await platform.actions.get(namespace, request.params.name, version);
      const handler = action ? annotationOf(action, HANDLER_ANNOTATION) : undefined;
      const zip =
        action && action.revision === revision
          ? deploymentPackage(action, typeof handler === 'string' ? handler : undefined)
          : undefined;
      // The function, or this version of it, was deleted since the link was made.
      if (!zip) throw new LambdaError(404, 'ResourceNotFoundException', 'The code this link named is gone.');
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${action?.name}-${lambdaVersion(version)}.zip"`)
        .header('cache-control', 'private, no-store')
        .send(zip);
    });
  });
}
