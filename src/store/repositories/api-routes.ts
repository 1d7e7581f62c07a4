import type { Selectable } from 'kysely';
import type { StoreDatabase } from '../database.js';
import type { ApiRouteFilter, ApiRouteRecord } from '../records.js';
import type { ApiRoutesTable } from '../schema.js';

/** An operation to store under an API: its path, verb, action and response type. */
export type ApiOperationInput = Pick<ApiRouteRecord, 'relPath' | 'verb' | 'action' | 'responseType'>;

/**
 * API gateway routes, grouped into APIs by base path. An API keeps the name it was first given,
 * as OpenWhisk's does; an operation stored again replaces the one it repeats.
 */
export class ApiRouteRepository {
  constructor(private readonly database: StoreDatabase) {}

  private get db() {
    return this.database.db;
  }

  /**
   * Stores operations under one API. `replace` drops the API's other operations first (an API
   * given whole, as a swagger document, replaces what was there). Returns the API's operations.
   */
  put(
    namespace: string,
    basePath: string,
    apiName: string | undefined,
    operations: readonly ApiOperationInput[],
    options: { replace: boolean },
  ): Promise<ApiRouteRecord[]> {
    return this.db.transaction().execute(async (trx) => {
      await this.database.lock(trx, `api:${namespace}:${basePath}`);
      const existing = await trx
        .selectFrom('api_routes')
        .select('api_name')
        .where('namespace', '=', namespace)
        .where('base_path', '=', basePath)
        .executeTakeFirst();
      if (options.replace) {
        await trx.deleteFrom('api_routes').where('namespace', '=', namespace).where('base_path', '=', basePath).execute();
      }
      // Replaced whole, the API takes the name it is given; otherwise it keeps its first one.
      const name = (options.replace ? apiName : (existing?.api_name ?? apiName)) || basePath;
      const created = Date.now();
      for (const operation of operations) {
        await trx
          .deleteFrom('api_routes')
          .where('namespace', '=', namespace)
          .where('base_path', '=', basePath)
          .where('rel_path', '=', operation.relPath)
          .where('verb', '=', operation.verb)
          .execute();
        await trx
          .insertInto('api_routes')
          .values({
            namespace,
            base_path: basePath,
            rel_path: operation.relPath,
            verb: operation.verb,
            action: operation.action,
            response_type: operation.responseType,
            api_name: name,
            created,
          })
          .execute();
      }
      const rows = await trx
        .selectFrom('api_routes')
        .selectAll()
        .where('namespace', '=', namespace)
        .where('base_path', '=', basePath)
        .orderBy('rel_path')
        .orderBy('verb')
        .execute();
      return rows.map(fromRow);
    });
  }

  /** A namespace's operations, by base path, path and verb; narrowed by the filter. */
  async list(namespace: string, filter: ApiRouteFilter = {}): Promise<ApiRouteRecord[]> {
    let query = this.db.selectFrom('api_routes').selectAll().where('namespace', '=', namespace);
    if (filter.api !== undefined)
      query = filter.api.startsWith('/') ? query.where('base_path', '=', filter.api) : query.where('api_name', '=', filter.api);
    if (filter.relPath !== undefined) query = query.where('rel_path', '=', filter.relPath);
    if (filter.verb !== undefined) query = query.where('verb', '=', filter.verb);
    const rows = await query.orderBy('base_path').orderBy('rel_path').orderBy('verb').execute();
    return rows.map(fromRow);
  }

  /** Deletes the operations the filter selects; returns them. */
  async delete(namespace: string, filter: ApiRouteFilter): Promise<ApiRouteRecord[]> {
    let query = this.db.deleteFrom('api_routes').where('namespace', '=', namespace);
    if (filter.api !== undefined)
      query = filter.api.startsWith('/') ? query.where('base_path', '=', filter.api) : query.where('api_name', '=', filter.api);
    if (filter.relPath !== undefined) query = query.where('rel_path', '=', filter.relPath);
    if (filter.verb !== undefined) query = query.where('verb', '=', filter.verb);
    const rows = await query.returningAll().execute();
    return rows.map(fromRow).sort(byRoute);
  }
}

function byRoute(a: ApiRouteRecord, b: ApiRouteRecord): number {
  const key = (r: ApiRouteRecord) => [r.basePath, r.relPath, r.verb];
  const [x, y] = [key(a), key(b)];
  for (let i = 0; i < x.length; i++) {
    const [p, q] = [x[i] as string, y[i] as string];
    if (p !== q) return p < q ? -1 : 1;
  }
  return 0;
}

function fromRow(row: Selectable<ApiRoutesTable>): ApiRouteRecord {
  return {
    namespace: row.namespace,
    basePath: row.base_path,
    relPath: row.rel_path,
    verb: row.verb,
    action: row.action,
    responseType: row.response_type,
    apiName: row.api_name,
    created: Number(row.created),
  };
}
