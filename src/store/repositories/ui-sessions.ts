import type { StoreDatabase } from '../database.js';

export interface UiSessionRecord {
  tokenHash: string;
  namespace: string;
  csrfToken: string;
  created: number;
  expires: number;
}

/** The dashboard's sessions, by the hash of their token. */
export class UiSessionRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  async create(session: UiSessionRecord): Promise<void> {
    await this.db
      .insertInto('ui_sessions')
      .values({
        token_hash: session.tokenHash,
        namespace: session.namespace,
        csrf_token: session.csrfToken,
        created: session.created,
        expires: session.expires,
      })
      .execute();
  }

  /** The session, unless it expired by `now`. */
  async get(tokenHash: string, now: number): Promise<UiSessionRecord | undefined> {
    const row = await this.db
      .selectFrom('ui_sessions')
      .selectAll()
      .where('token_hash', '=', tokenHash)
      .where('expires', '>', now)
      .executeTakeFirst();
    return row
      ? {
          tokenHash: row.token_hash,
          namespace: row.namespace,
          csrfToken: row.csrf_token,
          created: Number(row.created),
          expires: Number(row.expires),
        }
      : undefined;
  }

  async delete(tokenHash: string): Promise<void> {
    await this.db.deleteFrom('ui_sessions').where('token_hash', '=', tokenHash).execute();
  }

  /** Removes sessions that expired by `now`, and every session of `namespace` when given (it was deleted). */
  async prune(now: number, namespace?: string): Promise<void> {
    await this.db
      .deleteFrom('ui_sessions')
      .where((eb) =>
        namespace === undefined ? eb('expires', '<=', now) : eb.or([eb('expires', '<=', now), eb('namespace', '=', namespace)]),
      )
      .execute();
  }
}
