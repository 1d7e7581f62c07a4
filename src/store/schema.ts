import type { Generated } from 'kysely';

/** Table shapes as stored. JSON columns hold text so that SQLite and Postgres store them alike. */
export interface NamespacesTable {
  name: string;
  uuid: string;
  /** Kept as given: AWS Signature V4 needs the secret itself to check a signature. */
  key: string;
  created: number;
}

export interface ActionsTable {
  namespace: string;
  name: string;
  latest_version: string;
  created: number;
  updated: number;
  /** Instances kept provisioned, set by scaling; null when the minInstances annotation decides. */
  provisioned_instances: number | null;
}

export interface ActionVersionsTable {
  namespace: string;
  name: string;
  version: string;
  revision: string;
  kind: string;
  code: string;
  binary: number;
  main: string | null;
  limits: string;
  parameters: string;
  annotations: string;
  isolation: string;
  created: number;
}

export type ActivationState = 'queued' | 'running' | 'done';

export interface ActivationsTable {
  activation_id: string;
  namespace: string;
  name: string;
  version: string;
  subject: string;
  state: ActivationState;
  /** When the platform accepted the request; orders the queue. */
  accepted: number;
  start: number;
  end: number;
  duration: number;
  status: string;
  success: number;
  result: string;
  logs: string;
  annotations: string;
  /** The invocation's parameters while it waits in the queue; cleared once it ran. */
  params: string | null;
  seq: Generated<number>;
  /** Attempts made so far (asynchronous invocations are retried). */
  attempts: Generated<number>;
  /** A queued retry does not run before this time. */
  not_before: Generated<number>;
}

/** A finished activation as the group commit writes it. */
export type ActivationRow = Omit<ActivationsTable, 'seq' | 'attempts' | 'not_before'> & { attempts: number };

export interface TriggersTable {
  namespace: string;
  name: string;
  parameters: string;
  annotations: string;
  version: string;
  updated: number;
}

export interface RulesTable {
  namespace: string;
  name: string;
  trigger: string;
  action: string;
  status: 'active' | 'inactive';
  version: string;
  updated: number;
}

export interface PackagesTable {
  namespace: string;
  name: string;
  /** A binding names the package it binds (in this or another namespace); null for a package. */
  binding_namespace: string | null;
  binding_name: string | null;
  parameters: string;
  annotations: string;
  publish: number;
  version: string;
  updated: number;
}

export interface VersionCountersTable {
  namespace: string;
  name: string;
  last_version: string;
}

/** A function's alias; `function_version` is an Isola version (`0.0.N`) or `$LATEST`. */
export interface AliasesTable {
  namespace: string;
  function: string;
  name: string;
  function_version: string;
  /** JSON: `{ "<version>": weight }`, the additional version and its share; `{}` for none. */
  routing: string;
  description: string;
  revision_id: string;
  created: number;
  updated: number;
}

/** One operation of an API gateway route: a verb on a path under a base path, served by a web action. */
export interface ApiRoutesTable {
  namespace: string;
  /** Starts with '/' ('/' alone for none). */
  base_path: string;
  /** Starts with '/'; may hold path parameters such as `{id}`. */
  rel_path: string;
  /** Upper case: GET, POST, ... */
  verb: string;
  /** As given: `action` or `package/action`. */
  action: string;
  /** The web action extension the result is rendered as: json, http, text, html, svg. */
  response_type: string;
  /** The API's name; the base path when none was given. */
  api_name: string;
  created: number;
}

/** A dashboard sign-in (see UiSessionRepository). */
export interface UiSessionsTable {
  /** SHA-256 of the session token, hex: the token itself is only in the browser's cookie. */
  token_hash: string;
  namespace: string;
  csrf_token: string;
  created: number;
  expires: number;
}

export interface Database {
  namespaces: NamespacesTable;
  actions: ActionsTable;
  action_versions: ActionVersionsTable;
  activations: ActivationsTable;
  triggers: TriggersTable;
  rules: RulesTable;
  version_counters: VersionCountersTable;
  packages: PackagesTable;
  aliases: AliasesTable;
  api_routes: ApiRoutesTable;
  ui_sessions: UiSessionsTable;
}
