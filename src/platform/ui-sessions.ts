import { createHash, randomBytes } from 'node:crypto';
import type { Store } from '../store/store.js';

/** How long a sign-in lasts: a working day, then the key is asked for again. */
export const SESSION_TTL_MS = 8 * 60 * 60 * 1000;

export interface UiSession {
  namespace: string;
  /** Sent back with every change (a form field or the X-CSRF-Token header), compared with this. */
  csrfToken: string;
  expires: number;
}

const hashOf = (token: string) => createHash('sha256').update(token).digest('hex');

/**
 * The dashboard's sign-ins. The browser holds a random token (in an httpOnly cookie); the
 * database holds its hash, the namespace it signed in to and the session's CSRF token, so any
 * server of a cluster knows the session and a stolen database gives no usable token.
 */
export class UiSessions {
  constructor(
    private readonly store: Store,
    private readonly authenticate: (uuid: string, key: string) => Promise<string | undefined>,
  ) {}

  /** Opens a session for a namespace's `uuid:key`; undefined when the credentials are wrong. */
  async signIn(credentials: string, now = Date.now()): Promise<{ token: string; session: UiSession } | undefined> {
    const colon = credentials.indexOf(':');
    if (colon <= 0) return undefined;
    const namespace = await this.authenticate(credentials.slice(0, colon).trim(), credentials.slice(colon + 1).trim());
    if (!namespace) return undefined;
    const token = randomBytes(32).toString('base64url');
    const session = { namespace, csrfToken: randomBytes(24).toString('base64url'), expires: now + SESSION_TTL_MS };
    // Expired sessions go as new ones come: the table stays as small as the sessions in use.
    await this.store.uiSessions.prune(now);
    await this.store.uiSessions.create({ tokenHash: hashOf(token), created: now, ...session });
    return { token, session };
  }

  /** The session a cookie's token opens, unless it expired or was signed out. */
  async lookup(token: string | undefined, now = Date.now()): Promise<UiSession | undefined> {
    if (!token || token.length > 100) return undefined;
    const found = await this.store.uiSessions.get(hashOf(token), now);
    return found ? { namespace: found.namespace, csrfToken: found.csrfToken, expires: found.expires } : undefined;
  }

  async signOut(token: string | undefined): Promise<void> {
    if (token) await this.store.uiSessions.delete(hashOf(token));
  }
}
