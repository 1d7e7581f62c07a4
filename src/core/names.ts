import { badRequest, forbidden } from './errors.js';

// OpenWhisk's entity name rule: word characters, then word characters, '@', ' ', '.', '-'; no
// trailing space; at most 256 characters.
const ENTITY_NAME = /^(?:\w|\w[\w@ .-]*[\w@.-])$/;
export const MAX_NAME_LENGTH = 256;

export function isValidEntityName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && ENTITY_NAME.test(name);
}

export function assertEntityName(what: string, name: string): string {
  if (!isValidEntityName(name)) {
    throw badRequest(
      `The ${what} name "${name.slice(0, 80)}" is not valid: use 1 to ${MAX_NAME_LENGTH} letters, digits, ` +
        `underscores, '@', '.', '-' or spaces, starting with a letter, digit or underscore.`,
    );
  }
  return name;
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** The entry point (`exec.main`) must be a plain identifier: it is looked up on the module and in scope. */
export function assertEntryPoint(main: string): string {
  if (!IDENTIFIER.test(main) || main.length > 128) {
    throw badRequest(`exec.main "${main.slice(0, 80)}" is not a valid JavaScript identifier.`);
  }
  return main;
}

/**
 * An action's name: `action`, or `package/action` for one in a package (each part an entity name).
 * Stored as given: the package is part of the action's name in its namespace.
 */
export function assertActionName(name: string, what = 'action'): string {
  const parts = name.split('/');
  if (parts.length > 2 || !parts.every(isValidEntityName)) {
    throw badRequest(
      `The ${what} name "${name.slice(0, 80)}" is not valid: use "action" or "package/action", each part 1 to ` +
        `${MAX_NAME_LENGTH} letters, digits, underscores, '@', '.', '-' or spaces, starting with a letter, digit or underscore.`,
    );
  }
  return name;
}

/** The package part of an action name, if it has one. */
export function packageOf(actionName: string): string | undefined {
  const slash = actionName.indexOf('/');
  return slash < 0 ? undefined : actionName.slice(0, slash);
}

/** An entity as a reference names it: its namespace and its name in it (`package/action` for one in a package). */
export interface EntityRef {
  namespace: string;
  name: string;
}

/**
 * Reads a reference as OpenWhisk's tools write them: `name`, `package/name`, `/namespace/name`,
 * `/namespace/package/name` or `namespace/package/name`; `_` (or no namespace) is `namespace`.
 */
export function parseReference(reference: string, namespace: string, what = 'action'): EntityRef {
  const parts = reference.split('/');
  let ns: string;
  let rest: string[];
  if (reference.startsWith('/')) {
    [ns = '', ...rest] = parts.slice(1);
  } else if (parts.length === 3) {
    [ns = '', ...rest] = parts;
  } else {
    ns = '_';
    rest = parts;
  }
  if (rest.length < 1 || rest.length > 2) {
    throw badRequest(
      `The ${what} reference "${reference.slice(0, 80)}" is not valid: use name, package/name, /namespace/name or /namespace/package/name.`,
    );
  }
  return {
    namespace: ns === '_' ? namespace : assertEntityName('namespace', ns),
    name: assertActionName(rest.join('/'), what),
  };
}

/** The system catalogue's namespace: read-only, its packages visible to every namespace. */
export const SYSTEM_NAMESPACE = 'whisk.system';

/**
 * How a namespace names an action of another namespace's shared package: `owner/package/action`.
 * Such a name is resolved from the caller's namespace (see `Packages.resolve`), so its runs are
 * recorded there and its instances are the caller's own, never shared with another tenant.
 */
export function viewedName(ref: EntityRef, viewer: string): string {
  if (ref.namespace === viewer) return ref.name;
  if (packageOf(ref.name) === undefined) {
    throw forbidden(
      `The action /${ref.namespace}/${ref.name} is not in a package: only the actions of a namespace's shared (published) packages can be used from another namespace.`,
    );
  }
  return `${ref.namespace}/${ref.name}`;
}

/** The fully qualified name (`/namespace/package/action`) of a name as `viewer` uses it. */
export function qualifiedName(viewer: string, name: string): string {
  return name.split('/').length === 3 ? `/${name}` : `/${viewer}/${name}`;
}

/** The owner's namespace and name behind a name as `viewer` uses it. */
export function ownerRef(viewer: string, name: string): EntityRef {
  const parts = name.split('/');
  return parts.length === 3 ? { namespace: parts[0] as string, name: parts.slice(1).join('/') } : { namespace: viewer, name };
}

/** `/ns/pkg/name` as OpenWhisk shows a reference: `{ path: 'ns/pkg', name }`. */
export function pathAndName(qualified: string): { path: string; name: string } {
  const slash = qualified.lastIndexOf('/');
  return { path: qualified.slice(1, slash), name: qualified.slice(slash + 1) };
}
