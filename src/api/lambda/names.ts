import { assertActionName } from '../../core/names.js';
import { isAliasName } from '../../platform/aliases.js';
import type { FunctionRef } from '../../platform/invoke.js';
import { invalidParameter } from './errors.js';

const ARN_PREFIX = /^arn:aws[\w-]*:lambda:[^:]*:[^:]*:function:/;

/** A function named by name, partial ARN or ARN, with the qualifier an ARN may end with. */
export function functionName(param: string): { name: string; qualifier?: string } {
  const unprefixed = param.replace(ARN_PREFIX, '');
  const at = unprefixed.indexOf(':');
  const name = at < 0 ? unprefixed : unprefixed.slice(0, at);
  const qualifier = at < 0 ? undefined : unprefixed.slice(at + 1);
  return { name: assertActionName(name, 'function'), ...(qualifier ? { qualifier } : {}) };
}

/**
 * Isola's version for a Lambda qualifier: `$LATEST` (or none) is the latest, a Lambda version
 * number `N` is Isola's `0.0.N`, and Isola's own `0.0.N` is taken as it is.
 */
export function isolaVersion(qualifier: string | undefined): string | undefined {
  if (qualifier === undefined || qualifier === '' || qualifier === '$LATEST') return undefined;
  if (/^[1-9]\d{0,9}$/.test(qualifier)) return `0.0.${qualifier}`;
  return qualifier;
}

/** Lambda's version number for an Isola version (`0.0.N` is `N`). */
export function lambdaVersion(version: string): string {
  const match = /^0\.0\.(\d+)$/.exec(version);
  return match ? (match[1] as string) : version;
}

/**
 * The function an Invoke names, and the qualifier it asks for: `Qualifier`, or the ARN's suffix
 * (both at once must agree). A version is applied to the ref here; an alias is returned for the
 * caller to resolve.
 */
export function invokeTarget(
  namespace: string,
  param: string,
  qualifier?: string,
): { ref: FunctionRef; qualifier?: string; alias?: string } {
  const named = functionName(param);
  const asked = qualifierOf(named, qualifier);
  const kind = qualifierKind(asked);
  return {
    ref: { namespace, name: named.name, ...(kind.kind === 'version' ? { version: kind.version } : {}) },
    ...(asked !== undefined ? { qualifier: asked } : {}),
    ...(kind.kind === 'alias' ? { alias: kind.alias } : {}),
  };
}

/** `Qualifier` or the ARN's own qualifier; both, when they differ, are refused as Lambda refuses them. */
export function qualifierOf(named: { qualifier?: string }, qualifier: string | undefined): string | undefined {
  if (qualifier !== undefined && named.qualifier !== undefined && qualifier !== named.qualifier)
    throw invalidParameter('The derived qualifier from the function name does not match the specified qualifier.');
  return qualifier ?? named.qualifier;
}

/** What a qualifier names: the latest version, a stored version, or an alias (by Lambda's alias rule). */
export function qualifierKind(
  qualifier: string | undefined,
): { kind: 'latest' } | { kind: 'version'; version: string } | { kind: 'alias'; alias: string } {
  const version = isolaVersion(qualifier);
  if (version === undefined) return { kind: 'latest' };
  if (version === qualifier && isAliasName(qualifier)) return { kind: 'alias', alias: qualifier };
  return { kind: 'version', version };
}
