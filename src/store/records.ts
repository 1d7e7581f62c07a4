import type { KeyValue } from '../core/types.js';

/** The store's records as its callers see them (rows are in schema.ts). */

export interface NamespaceRow {
  name: string;
  uuid: string;
  created: number;
}

export interface ListPage {
  limit: number;
  skip: number;
}

export interface ActivationQuery extends ListPage {
  name?: string;
  /** Only successes, or only the others (application errors, developer and whisk errors). */
  outcome?: 'success' | 'failure';
  since?: number;
  upto?: number;
}

export interface QueuedActivation {
  activationId: string;
  namespace: string;
  name: string;
  version: string;
  subject: string;
  accepted: number;
  /** The invocation's parameters; undefined for one that may not be run again (a blocking call). */
  params: Record<string, unknown> | undefined;
  annotations: KeyValue[];
  /** Attempts made so far. */
  attempts: number;
  /** Not to run before this time (a retry's backoff). */
  notBefore: number;
}

export interface TriggerRecord {
  namespace: string;
  name: string;
  version: string;
  parameters: KeyValue[];
  annotations: KeyValue[];
  updated: number;
}

export interface RuleRecord {
  namespace: string;
  name: string;
  version: string;
  trigger: string;
  action: string;
  status: 'active' | 'inactive';
  updated: number;
}

export interface PackageRecord {
  namespace: string;
  name: string;
  version: string;
  /** The package this one binds, or undefined for a package of its own. */
  binding?: { namespace: string; name: string };
  parameters: KeyValue[];
  annotations: KeyValue[];
  publish: boolean;
  updated: number;
}

/** One operation of an API gateway route (see ApiRoutesTable). */
export interface ApiRouteRecord {
  namespace: string;
  basePath: string;
  relPath: string;
  verb: string;
  action: string;
  responseType: string;
  apiName: string;
  created: number;
}

/** Which routes of a namespace: one API (by base path or name), narrowed to a path and a verb. */
export interface ApiRouteFilter {
  /** A base path (starts with '/') or an API name. */
  api?: string;
  relPath?: string;
  verb?: string;
}

/** What deleting a namespace removed. */
export interface NamespacePurge {
  namespace: string;
  actions: number;
  versions: number;
  activations: number;
  triggers: number;
  rules: number;
  packages: number;
}

/** The version an alias names when it follows the function's latest version. */
export const LATEST_VERSION = '$LATEST';

/**
 * A function's alias: a name for one of its versions (an Isola version, `0.0.N`, or
 * `$LATEST`), with at most one additional version that gets a share (0 to 1) of invocations.
 */
export interface AliasRecord {
  namespace: string;
  function: string;
  name: string;
  functionVersion: string;
  routing: Record<string, number>;
  description: string;
  revisionId: string;
  created: number;
  updated: number;
}

/** What an alias is set to: its version, its routing and its description. */
export type AliasTarget = Pick<AliasRecord, 'functionVersion' | 'routing' | 'description'>;
