import { randomInt } from 'node:crypto';
import { badRequest } from '../core/errors.js';
import { type AliasRecord, type AliasTarget, LATEST_VERSION, type ListPage, type Store } from '../store/store.js';

export type { AliasRecord, AliasTarget };
export { LATEST_VERSION };

/** Lambda's rule for an alias name: letters, digits, `-` and `_`, 1 to 128 of them, not all digits. */
const ALIAS_NAME = /^(?!\d+$)[A-Za-z0-9_-]{1,128}$/;

/** Whether a qualifier could name an alias (rather than a version). */
export function isAliasName(name: string): boolean {
  return ALIAS_NAME.test(name);
}

/** An alias may route a share of its invocations to at most this many other versions. */
const MAX_ADDITIONAL_VERSIONS = 1;

function checkName(name: string): void {
  if (!isAliasName(name))
    throw badRequest(
      `The alias name "${name.slice(0, 140)}" must be 1 to 128 letters, digits, "-" or "_", and not a number alone.`,
    );
}

/** Lambda's rules for what an alias points at; the versions' existence is checked where they are stored. */
function checkTarget(target: AliasTarget): void {
  const additional = Object.entries(target.routing);
  if (additional.length > MAX_ADDITIONAL_VERSIONS)
    throw badRequest(`An alias routes to at most ${MAX_ADDITIONAL_VERSIONS} additional version; got ${additional.length}.`);
  for (const [version, weight] of additional) {
    if (!Number.isFinite(weight) || weight < 0 || weight > 1)
      throw badRequest(`The weight of version ${version.slice(0, 40)} must be between 0.0 and 1.0; got ${String(weight)}.`);
    if (version === target.functionVersion)
      throw badRequest('The additional version of an alias must not be its FunctionVersion.');
    if (version === LATEST_VERSION || target.functionVersion === LATEST_VERSION)
      throw badRequest('An alias that routes between versions must name published versions, not $LATEST.');
  }
}

/**
 * The version one invocation through the alias runs: the additional version with its weight's
 * chance (drawn from the crypto random source, per invocation), else the alias's own.
 */
export function pickVersion(target: Pick<AliasTarget, 'functionVersion' | 'routing'>): string {
  const [additional] = Object.entries(target.routing);
  if (!additional) return target.functionVersion;
  const [version, weight] = additional;
  const SCALE = 1_000_000;
  return randomInt(SCALE) < Math.round(weight * SCALE) ? version : target.functionVersion;
}

/**
 * Aliases of functions: a name for one version (an Isola version `0.0.N`, or `$LATEST`) that
 * callers invoke instead of the version, optionally sending a weighted share to one other
 * version. Stored beside the function; deleting the function or its namespace deletes them.
 */
export class FunctionAliases {
  constructor(private readonly store: Store) {}

  create(namespace: string, fn: string, name: string, target: AliasTarget): Promise<AliasRecord> {
    checkName(name);
    checkTarget(target);
    return this.store.aliases.create(namespace, fn, name, target);
  }

  get(namespace: string, fn: string, name: string): Promise<AliasRecord | undefined> {
    return this.store.aliases.get(namespace, fn, name);
  }

  list(namespace: string, fn: string, page: ListPage & { functionVersion?: string }): Promise<AliasRecord[]> {
    return this.store.aliases.list(namespace, fn, page);
  }

  /** Changes what is given and keeps the rest; `revisionId`, when given, must be the alias's current one (else 412). */
  update(namespace: string, fn: string, name: string, changes: Partial<AliasTarget>, revisionId?: string): Promise<AliasRecord> {
    return this.store.aliases.update(namespace, fn, name, revisionId, (current) => {
      const next: AliasTarget = {
        functionVersion: changes.functionVersion ?? current.functionVersion,
        routing: changes.routing ?? current.routing,
        description: changes.description ?? current.description,
      };
      checkTarget(next);
      return next;
    });
  }

  delete(namespace: string, fn: string, name: string): Promise<AliasRecord | undefined> {
    return this.store.aliases.delete(namespace, fn, name);
  }
}
