import { createHash } from 'node:crypto';
import type { ActionVersion, KeyValue } from '../../core/types.js';
import { lambdaVersion } from './names.js';
import { KIND_RUNTIMES } from './packaging.js';

/** Annotations that keep what Lambda's API shows and Isola's exec does not hold. */
export const RUNTIME_ANNOTATION = 'lambda-runtime';
export const HANDLER_ANNOTATION = 'lambda-handler';
export const ROLE_ANNOTATION = 'lambda-role';
export const TAGS_ANNOTATION = 'lambda-tags';
export const DESCRIPTION_ANNOTATION = 'description';

/** The tag, or environment variable, that chooses Isola's isolation for a function. */
export const ISOLATION_SETTING = 'ISOLA_ISOLATION';

/** Where an ARN says the function lives: the signature's region, and the namespace as the account. */
export interface ArnScope {
  region: string;
  namespace: string;
}

export function annotationOf(action: Pick<ActionVersion, 'annotations'>, key: string): unknown {
  return action.annotations.find((a) => a.key === key)?.value;
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function functionArn(scope: ArnScope, name: string, version?: string): string {
  return `arn:aws:lambda:${scope.region}:${scope.namespace}:function:${name}${version ? `:${version}` : ''}`;
}

/** Default parameters as Lambda's environment variables: strings, other values as JSON. */
export function environmentOf(parameters: readonly KeyValue[]): Record<string, string> {
  return Object.fromEntries(
    parameters.map((p) => [p.key, typeof p.value === 'string' ? p.value : (JSON.stringify(p.value) ?? 'null')]),
  );
}

export function tagsOf(action: ActionVersion): Record<string, string> {
  const tags = annotationOf(action, TAGS_ANNOTATION);
  return tags !== null && typeof tags === 'object' && !Array.isArray(tags) ? (tags as Record<string, string>) : {};
}

/**
 * An action as Lambda's FunctionConfiguration. `version` is the Lambda version to show: `$LATEST`
 * for the latest, else the action's own version as a number (`0.0.N` is `N`).
 */
export function functionConfiguration(action: ActionVersion, scope: ArnScope, asLatest: boolean) {
  const code = action.exec.binary ? Buffer.from(action.exec.code, 'base64') : Buffer.from(action.exec.code, 'utf8');
  const version = asLatest ? '$LATEST' : lambdaVersion(action.version);
  const environment = environmentOf(action.parameters);
  const lastModified = new Date(action.updated).toISOString().replace('Z', '+0000');
  return {
    FunctionName: action.name,
    FunctionArn: functionArn(scope, action.name, asLatest ? undefined : version),
    // A sequence (OpenWhisk's) has no Lambda runtime: it says what it is.
    Runtime: action.sequence
      ? 'sequence'
      : (stringOf(annotationOf(action, RUNTIME_ANNOTATION)) ?? KIND_RUNTIMES[action.exec.kind]),
    Role: stringOf(annotationOf(action, ROLE_ANNOTATION)) ?? `arn:aws:iam::${scope.namespace}:role/isola`,
    Handler: stringOf(annotationOf(action, HANDLER_ANNOTATION)) ?? action.exec.main ?? 'main',
    CodeSize: code.length,
    CodeSha256: createHash('sha256').update(code).digest('base64'),
    Description: stringOf(annotationOf(action, DESCRIPTION_ANNOTATION)) ?? '',
    Timeout: Math.max(1, Math.ceil(action.limits.timeout / 1000)),
    MemorySize: action.limits.memory,
    LastModified: lastModified,
    Version: version,
    ...(Object.keys(environment).length > 0 ? { Environment: { Variables: environment } } : {}),
    RevisionId: action.revision,
    State: 'Active',
    LastUpdateStatus: 'Successful',
    PackageType: 'Zip',
    Architectures: ['x86_64'],
    // Isola's own: the sandbox the function runs in, and its version there.
    IsolaIsolation: action.isolation,
    IsolaVersion: action.version,
  };
}
