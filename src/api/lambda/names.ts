import { assertActionName } from '../../core/names.js';
import type { FunctionRef } from '../../platform/invoke.js';

const ARN_PREFIX = /^arn:aws[\w-]*:lambda:[^:]*:[^:]*:function:/;

/** A function named by name, partial ARN or ARN, with the qualifier an ARN may end with. */
export function functionName(param: string): { name: string; qualifier?: string } {
  const unprefixed = param.replace(ARN_PREFIX, '');
  const at = unprefixed.indexOf(':');
  const name = at < 0 ? unprefixed : unprefixed.slice(0, at);
  const qualifier = at < 0 ? undefined : unprefixed.slice(at + 1);
  return { name: assertActionName(name), ...(qualifier ? { qualifier } : {}) };
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
 * The function and version an Invoke names: the version from `Qualifier` (a qualifier at the end
 * of an ARN is not applied, as before aliases exist).
 */
export function functionRef(namespace: string, param: string, qualifier?: string): FunctionRef {
  const version = isolaVersion(qualifier);
  return { namespace, name: functionName(param).name, ...(version !== undefined ? { version } : {}) };
}
