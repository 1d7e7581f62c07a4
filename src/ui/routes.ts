import { timingSafeEqual } from 'node:crypto';
import fastifyCookie from '@fastify/cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError } from '../core/errors.js';
import type { Platform } from '../platform/platform.js';
import type { UiSession } from '../platform/ui-sessions.js';
import { SESSION_TTL_MS } from '../platform/ui-sessions.js';
import { assets } from './assets.js';
import { html, type SafeHtml } from './html.js';
import { page } from './layout.js';
import { registerActivationPages } from './pages/activations.js';
import { registerFunctionPages } from './pages/functions.js';
import { registerSystemPages } from './pages/system.js';

export const SESSION_COOKIE = 'isola_ui';

declare module 'fastify' {
  interface FastifyRequest {
    /** The dashboard session the request came with (set by `requireSession`). */
    uiSession?: UiSession;
  }
}

/** The signed-in session of a request that passed `requireSession`. */
export function sessionOf(request: FastifyRequest): UiSession {
  const session = request.uiSession;
  if (!session) throw new IsolaError(401, 'Sign in first.');
  return session;
}

/** A form body as the dashboard's forms send it (fields by name). */
export function formOf(request: FastifyRequest): Record<string, string> {
  const body = request.body;
  return body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, string>) : {};
}

/** Sends a whole page (or, to htmx, the fragment it asked for). */
export function sendHtml(reply: FastifyReply, markup: SafeHtml, status = 200): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').send(markup.value);
}

/** Whether the request comes from htmx (it then wants a fragment, and a redirect as a header). */
export function fromHtmx(request: FastifyRequest): boolean {
  return request.headers['hx-request'] === 'true';
}

const sameSecret = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/**
 * The dashboard at `/ui`: server-rendered pages with htmx, signed in with a namespace's key held
 * in a session (an httpOnly, SameSite=Strict cookie; the key is never in a URL), a CSRF token on
 * every change, and a Content-Security-Policy that lets the pages load only Isola's own files.
 */
export function registerUiRoutes(app: FastifyInstance, platform: Platform): void {
  app.get('/dashboard', async (_request, reply) => reply.redirect('/ui/', 303));

  void app.register(
    async (scope) => {
      await scope.register(fastifyCookie);
      scope.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'string', bodyLimit: platform.config.maxActionBytes },
        (_request, body, done) => {
          const fields: Record<string, string> = Object.create(null);
          for (const [key, value] of new URLSearchParams(String(body))) fields[key] = value;
          done(null, fields);
        },
      );

      scope.addHook('onSend', async (_request, reply, payload) => {
        reply.header(
          'content-security-policy',
          "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        );
        reply.header('x-content-type-options', 'nosniff');
        reply.header('referrer-policy', 'same-origin');
        reply.header('x-frame-options', 'DENY');
        if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
        return payload;
      });

      scope.setErrorHandler((error: Error & { statusCode?: number; status?: number }, request, reply) => {
        const status = error instanceof IsolaError ? error.status : (error.statusCode ?? 500);
        if (status >= 500) request.log.error({ err: error, requestId: String(request.id) }, 'dashboard request failed');
        const message = status >= 500 ? 'The server could not show this page. Try again.' : error.message;
        if (fromHtmx(request)) return sendHtml(reply, html`<p class="error" role="alert">${message}</p>`, status);
        return sendHtml(
          reply,
          page(
            { title: 'Error', ...(request.uiSession ? { session: request.uiSession } : {}) },
            html`<h1>${status === 404 ? 'Not found' : 'Something went wrong'}</h1><p class="error" role="alert">${message}</p><p><a href="/ui/">Back to the dashboard</a></p>`,
          ),
          status,
        );
      });
      scope.setNotFoundHandler(async (_request, reply) =>
        sendHtml(
          reply,
          page(
            { title: 'Not found' },
            html`<h1>Not found</h1><p>There is no such page.</p><p><a href="/ui/">The dashboard</a></p>`,
          ),
          404,
        ),
      );

      // ---- assets: no session needed, cached for good (the URL carries the content's hash) ----
      scope.get<{ Params: { name: string }; Querystring: { v?: string } }>('/assets/:name', async (request, reply) => {
        const asset = assets().get(request.params.name);
        if (!asset) return reply.callNotFound();
        reply.header('content-type', asset.type);
        reply.header('etag', `"${asset.version}"`);
        reply.header(
          'cache-control',
          request.query.v === asset.version ? 'public, max-age=31536000, immutable' : 'public, max-age=0, must-revalidate',
        );
        reply.header('vary', 'accept-encoding');
        if (request.headers['if-none-match'] === `"${asset.version}"`) return reply.code(304).send();
        if (/\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) {
          reply.header('content-encoding', 'gzip');
          return reply.send(asset.gzipped);
        }
        return reply.send(asset.body);
      });

      // ---- signing in and out ----
      const signInPage = (error?: string) =>
        page(
          { title: 'Sign in' },
          html`<section class="signin">
<h1>Sign in to Isola</h1>
<p>With your namespace's key, as the CLI and the OpenWhisk clients use it: <code>uuid:key</code>
(<code>isola property get auth</code> shows it).</p>
${error ? html`<p class="error" role="alert" id="signin-error">${error}</p>` : ''}
<form method="post" action="/ui/signin">
<label for="key">Namespace key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required spellcheck="false"${error ? html` aria-describedby="signin-error" aria-invalid="true"` : ''}>
<button type="submit">Sign in</button>
</form>
</section>`,
        );

      scope.get('/signin', async (request, reply) => {
        if (await platform.uiSessions.lookup(request.cookies[SESSION_COOKIE])) return reply.redirect('/ui/functions', 303);
        return sendHtml(reply, signInPage());
      });

      scope.post('/signin', async (request, reply) => {
        assertSameOrigin(request);
        const key = formOf(request).key ?? '';
        const opened = key.length <= 300 ? await platform.uiSessions.signIn(key) : undefined;
        if (!opened) return sendHtml(reply, signInPage('That key does not open a namespace here.'), 401);
        reply.setCookie(SESSION_COOKIE, opened.token, {
          path: '/ui',
          httpOnly: true,
          sameSite: 'strict',
          secure: request.protocol === 'https',
          maxAge: Math.floor(SESSION_TTL_MS / 1000),
        });
        return reply.redirect('/ui/functions', 303);
      });

      scope.post('/signout', { preHandler: requireSession(platform) }, async (request, reply) => {
        await platform.uiSessions.signOut(request.cookies[SESSION_COOKIE]);
        reply.clearCookie(SESSION_COOKIE, { path: '/ui' });
        return reply.redirect('/ui/signin', 303);
      });

      scope.get('/', { preHandler: requireSession(platform) }, async (_request, reply) => reply.redirect('/ui/functions', 303));

      // ---- the signed-in pages ----
      void scope.register(async (pages) => {
        pages.addHook('preHandler', requireSession(platform));
        registerFunctionPages(pages, platform);
        registerActivationPages(pages, platform);
        registerSystemPages(pages, platform);
      });
    },
    { prefix: '/ui' },
  );
}

/**
 * Lets through a request with a live session (and, for a change, its CSRF token and a same-origin
 * Origin). Without a session a page goes to the sign-in form; htmx is told to go there.
 */
function requireSession(platform: Platform) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const session = await platform.uiSessions.lookup(request.cookies[SESSION_COOKIE]);
    if (!session) {
      if (fromHtmx(request)) return reply.header('hx-redirect', '/ui/signin').code(401).send();
      if (request.method === 'GET') return reply.redirect('/ui/signin', 303);
      throw new IsolaError(401, 'The session ended: sign in again.');
    }
    request.uiSession = session;
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      assertSameOrigin(request);
      const sent = String(request.headers['x-csrf-token'] ?? formOf(request)._csrf ?? '');
      if (!sameSecret(sent, session.csrfToken))
        throw new IsolaError(403, 'The form is out of date: reload the page and try again.');
    }
  };
}

/** A change must come from a page of this server: the Origin (or Referer) names it, when the browser sends one. */
function assertSameOrigin(request: FastifyRequest): void {
  const from = request.headers.origin ?? request.headers.referer;
  if (from === undefined) return;
  let host: string | undefined;
  try {
    host = new URL(String(from)).host;
  } catch {
    host = undefined;
  }
  if (host !== request.headers.host) throw new IsolaError(403, "Changes are taken only from the dashboard's own pages.");
}
