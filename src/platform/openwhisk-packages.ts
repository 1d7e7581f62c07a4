import { badRequest, notFound } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { ActionVersion, KeyValue } from '../core/types.js';
import type { ListPage, PackageRecord, Store } from '../store/store.js';
import type { FunctionRef } from './invoke.js';

export type { PackageRecord };

/** What a package or binding is made of, as a PUT gives it. */
export interface PackageDraft {
  namespace: string;
  name: string;
  /** The package to bind, `_` for the same namespace; absent for a package of its own. */
  binding?: { namespace: string; name: string };
  parameters: KeyValue[];
  annotations: KeyValue[];
  publish: boolean;
}

/** A package as a namespace sees it: the record, and for a binding the package it binds. */
export interface ResolvedPackage {
  record: PackageRecord;
  /** The package whose actions it offers: itself, or the bound one (undefined when that went). */
  source?: PackageRecord;
}

/**
 * OpenWhisk's packages: a package groups actions (stored as `package/action`) and gives them
 * default parameters; a published package can be used from every namespace; a binding names a
 * package (its own namespace's or a published one elsewhere) and adds parameters of its own.
 * Parameters merge, weakest first: the action's, its package's, the binding's, the invocation's.
 */
export class Packages {
  /**
   * Packages as read, `null` for none: every invoke through a package reads one or two, and only
   * this class changes them (put, delete; a namespace's purge calls `forget`).
   */
  private readonly cache = new Map<string, PackageRecord | null>();

  constructor(
    private readonly store: Store,
    private readonly getAction: (namespace: string, name: string, version?: string) => Promise<ActionVersion | undefined>,
    /** Namespaces whose packages every namespace may read (the system catalogue). */
    private readonly publicNamespaces: ReadonlySet<string>,
    /** Told of every package stored or deleted here (a cluster's other servers drop their copies). */
    private readonly changed: (namespace: string, name: string) => void = () => {},
  ) {}

  /** Stores a package or binding, checked first; nothing is stored when it is refused. */
  async put(draft: PackageDraft, overwrite: boolean): Promise<PackageRecord> {
    assertEntityName('package', draft.name);
    let binding: PackageDraft['binding'];
    if (draft.binding) {
      const target = {
        namespace: draft.binding.namespace === '_' ? draft.namespace : assertEntityName('namespace', draft.binding.namespace),
        name: assertEntityName('package', draft.binding.name),
      };
      if (target.namespace === draft.namespace && target.name === draft.name)
        throw badRequest(`The binding ${draft.name} may not bind itself.`);
      const bound = await this.store.packages.get(target.namespace, target.name);
      if (!bound || !this.visible(bound, draft.namespace))
        throw badRequest(`The package /${target.namespace}/${target.name} to bind does not exist or is not shared.`);
      if (bound.binding)
        throw badRequest(`/${target.namespace}/${target.name} is itself a binding: bind the package it binds instead.`);
      binding = target;
    }
    const { binding: _given, ...rest } = draft;
    const stored = await this.store.packages.put({ ...rest, ...(binding ? { binding } : {}) }, { overwrite });
    this.cache.set(cacheKey(stored.namespace, stored.name), stored);
    this.changed(stored.namespace, stored.name);
    return stored;
  }

  /** A package or binding as `viewer` may see it: its own, or a shared one elsewhere. */
  async get(viewer: string, namespace: string, name: string): Promise<ResolvedPackage | undefined> {
    const record = await this.read(namespace, name);
    if (!record || !this.visible(record, viewer)) return undefined;
    if (!record.binding) return { record, source: record };
    const bound = await this.read(record.binding.namespace, record.binding.name);
    // A binding whose package went (or stopped being shared) offers nothing.
    return bound && !bound.binding && this.visible(bound, namespace) ? { record, source: bound } : { record };
  }

  /** A namespace's packages and bindings; another namespace sees only the published ones. */
  list(viewer: string, namespace: string, page: ListPage): Promise<PackageRecord[]> {
    const publishedOnly = viewer !== namespace && !this.publicNamespaces.has(namespace);
    return this.store.packages.list(namespace, page, { publishedOnly });
  }

  /** The actions a package offers (the bound package's, for a binding), latest versions. */
  async actionsOf(resolved: ResolvedPackage): Promise<ActionVersion[]> {
    const source = resolved.source;
    return source ? this.store.actions.inPackage(source.namespace, source.name) : [];
  }

  /** Deletes a package or binding; a package that holds actions is a conflict. */
  async delete(namespace: string, name: string): Promise<PackageRecord> {
    const deleted = await this.store.packages.delete(namespace, assertEntityName('package', name));
    this.cache.delete(cacheKey(namespace, name));
    if (deleted) this.changed(namespace, name);
    if (!deleted) throw notFound(`The package "${name}" does not exist in namespace "${namespace}".`);
    return deleted;
  }

  /** An action may be created in `package` only when it is a package of the namespace, not a binding. */
  async assertCanHold(namespace: string, pkg: string): Promise<void> {
    const record = await this.store.packages.get(namespace, pkg);
    if (!record) throw notFound(`The package "${pkg}" does not exist in namespace "${namespace}": create it first.`);
    if (record.binding) throw badRequest(`"${pkg}" is a binding: actions are created in the package it binds, not in a binding.`);
  }

  /**
   * The function a reference names, as the reference's namespace sees it: `action`, then
   * `package/action` (through a binding when the package is one), then `owner/package/action`
   * for a shared package of another namespace. An action reached through a package carries the
   * merged parameters and the name it was reached by, in the namespace that reached it.
   */
  async resolve(ref: FunctionRef): Promise<ActionVersion | undefined> {
    const parts = ref.name.split('/');
    if (parts.length === 1) return this.getAction(ref.namespace, ref.name, ref.version);
    if (parts.length === 2) {
      const [pkg = '', action = ''] = parts;
      return this.throughPackage(ref, ref.namespace, pkg, action);
    }
    if (parts.length === 3) {
      const [owner = '', pkg = '', action = ''] = parts;
      if (owner === ref.namespace) return this.throughPackage({ ...ref, name: `${pkg}/${action}` }, owner, pkg, action);
      return this.throughPackage(ref, owner, pkg, action);
    }
    return undefined;
  }

  private async throughPackage(
    ref: FunctionRef,
    packageNamespace: string,
    pkg: string,
    action: string,
  ): Promise<ActionVersion | undefined> {
    const resolved = await this.get(ref.namespace, packageNamespace, pkg);
    const source = resolved?.source;
    if (!resolved || !source) return undefined;
    // Another namespace's binding is its own: it is not shared further.
    if (packageNamespace !== ref.namespace && resolved.record.binding) return undefined;
    const record = resolved.record;
    const found = await this.getAction(source.namespace, `${source.name}/${action}`, ref.version);
    if (!found) return undefined;
    const parameters = mergeParameters(found.parameters, source.parameters, record.binding ? record.parameters : []);
    const moved = found.namespace !== ref.namespace || found.name !== ref.name;
    return {
      ...found,
      namespace: ref.namespace,
      name: ref.name,
      parameters,
      ...(moved ? { origin: { namespace: found.namespace, name: found.name } } : {}),
    };
  }

  /** @internal A namespace was purged, or (with a name) a package changed elsewhere: what was read of it goes. */
  forget(namespace: string, name?: string): void {
    if (name !== undefined) {
      this.cache.delete(cacheKey(namespace, name));
      return;
    }
    for (const key of this.cache.keys()) if (key.startsWith(`${namespace}/`)) this.cache.delete(key);
  }

  /** @internal Everything read goes (a cluster's server may have missed change notices). */
  forgetAll(): void {
    this.cache.clear();
  }

  /** A stored package, through the cache. */
  private async read(namespace: string, name: string): Promise<PackageRecord | undefined> {
    const key = cacheKey(namespace, name);
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached ?? undefined;
    const record = await this.store.packages.get(namespace, name);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, record ?? null);
    return record;
  }

  private visible(record: PackageRecord, viewer: string): boolean {
    return record.namespace === viewer || record.publish || this.publicNamespaces.has(record.namespace);
  }
}

function cacheKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Parameters merged, later lists overriding earlier ones key by key, in first-seen order. */
export function mergeParameters(...lists: readonly (readonly KeyValue[])[]): KeyValue[] {
  const merged = new Map<string, unknown>();
  for (const list of lists) for (const { key, value } of list) merged.set(key, value);
  return [...merged].map(([key, value]) => ({ key, value }));
}
