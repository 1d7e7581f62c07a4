/**
 * Which invoker takes a call when Isola runs on several hosts, decided from a snapshot of the
 * invokers with no I/O, clock or randomness (after OpenWhisk's sharding, memory-aware balancer):
 *
 *  1. warm affinity: an invoker holding a warm instance of the call's version with room for
 *     another call takes it (the function's home first among them, then the least loaded);
 *  2. else the function's home invoker by consistent hashing (a ring with virtual nodes, so that
 *     an invoker joining or leaving moves only about 1/N of the functions), spilling to the next
 *     invokers in ring order when the home lacks memory: first to one with unused memory, then to
 *     one that can make room by letting idle instances go;
 *  3. else the least loaded capable invoker that can make room, or, when none can, the least
 *     loaded capable one, where the call waits for memory.
 *
 * Only healthy invokers that have the call's isolation backend and whose whole budget can hold
 * the call are capable; with none, the call is refused. The ring holds every registered invoker
 * and the walk skips those not capable of the call, which chooses exactly what a ring built from
 * the capable ones alone would: one ring serves every backend, and health changes need no new ring.
 */

/** An invoker as placement sees it, from its last report. */
export interface InvokerSnapshot {
  readonly id: string;
  /** The isolation backends it runs (`isolate`, `wasm`, `container`, ...). */
  readonly backends: readonly string[];
  readonly memoryBudgetMb: number;
  /** Memory of its live instances (starting, idle, busy). */
  readonly memoryUsedMb: number;
  /** Of `memoryUsedMb`, what its idle instances hold: it lets them go, least recently used first, for a new one. */
  readonly memoryIdleMb: number;
  /** By pool key: its warm instances with room for another call (idle, or busy and not full). */
  readonly warm: ReadonlyMap<string, number>;
  /** Heartbeating and taking work (not draining). */
  readonly healthy: boolean;
}

/** A call as placement sees it: one version of one function. */
export interface CallToPlace {
  /** The version's pool key (`namespace/name@version#revision`): where warm instances are looked up. */
  readonly poolKey: string;
  /** What the home is hashed from: the function (`namespace/name`), so that all its versions share a home. */
  readonly homeKey: string;
  readonly memoryMb: number;
  /** The isolation backend the version needs. */
  readonly backend: string;
}

/**
 * Why an invoker was chosen: a warm instance there; the function's home, or a later invoker on
 * the ring, with memory for a new instance; the least loaded invoker that can make room; the least
 * loaded one when no invoker can make room now (the call waits there for memory).
 */
export type PlacementReason = 'warm' | 'home' | 'spill' | 'least-loaded' | 'wait';

export type PlacementDecision =
  | { readonly kind: 'placed'; readonly invoker: string; readonly reason: PlacementReason }
  | { readonly kind: 'refused'; readonly reason: 'no-backend' | 'too-big'; readonly message: string };

/** A consistent-hash ring: virtual nodes at hashed positions, each owned by an invoker. */
export interface HashRing {
  /** Positions of the virtual nodes, ascending. */
  readonly positions: Uint32Array;
  /** The invoker owning each position. */
  readonly owners: readonly string[];
}

export interface PlacementOptions {
  /** Invokers tried in ring order, the home included, before any invoker off the ring walk. */
  spillLimit?: number | undefined;
}

/** Virtual nodes per invoker: shares of the ring within about ±10% of each other. */
export const DEFAULT_VIRTUAL_NODES = 128;
export const DEFAULT_SPILL_LIMIT = 4;

/** A 32-bit hash (FNV-1a with the MurmurHash3 finaliser, so that similar strings land far apart); the same everywhere. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The ring of these invokers. It depends only on the set of ids, not on their order. */
export function buildRing(invokerIds: Iterable<string>, virtualNodes = DEFAULT_VIRTUAL_NODES): HashRing {
  if (!Number.isSafeInteger(virtualNodes) || virtualNodes < 1)
    throw new Error(`virtual nodes must be 1 or more, not ${virtualNodes}`);
  const points: { position: number; owner: string }[] = [];
  for (const id of new Set(invokerIds)) {
    for (let v = 0; v < virtualNodes; v++) points.push({ position: hash32(`${id}#${v}`), owner: id });
  }
  // Ties (a 32-bit collision) are broken by id, so that the order never depends on the input's.
  points.sort((a, b) => a.position - b.position || (a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : 0));
  return { positions: Uint32Array.from(points, (p) => p.position), owners: points.map((p) => p.owner) };
}

/**
 * Invokers in ring order from a key's position, each once, those `accept` takes only, at most
 * `limit` of them. The first is the key's home among the accepted.
 */
export function ringOrder(
  ring: HashRing,
  key: string,
  accept: (id: string) => boolean,
  limit = Number.POSITIVE_INFINITY,
): string[] {
  const { positions, owners } = ring;
  const found: string[] = [];
  if (positions.length === 0 || limit < 1) return found;
  const seen = new Set<string>();
  let i = firstAtOrAfter(positions, hash32(key));
  for (let step = 0; step < positions.length; step++, i = i + 1 === positions.length ? 0 : i + 1) {
    const owner = owners[i] as string;
    if (seen.has(owner)) continue;
    seen.add(owner);
    if (!accept(owner)) continue;
    found.push(owner);
    if (found.length >= limit) break;
  }
  return found;
}

/** The key's home among the accepted invokers, or undefined when the ring holds none of them. */
export function homeOf(ring: HashRing, key: string, accept: (id: string) => boolean = () => true): string | undefined {
  return ringOrder(ring, key, accept, 1)[0];
}

function firstAtOrAfter(positions: Uint32Array, target: number): number {
  let low = 0;
  let high = positions.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((positions[mid] as number) < target) low = mid + 1;
    else high = mid;
  }
  return low === positions.length ? 0 : low;
}

/** Healthy, has the backend, and its whole budget can hold the call. */
export function canRun(invoker: InvokerSnapshot, call: CallToPlace): boolean {
  return invoker.healthy && invoker.memoryBudgetMb >= call.memoryMb && invoker.backends.includes(call.backend);
}

/** Memory a new instance can have now without letting anything go. */
export function unusedMb(invoker: InvokerSnapshot): number {
  return invoker.memoryBudgetMb - invoker.memoryUsedMb;
}

/** Memory a new instance can have now, letting idle instances go. */
export function reclaimableMb(invoker: InvokerSnapshot): number {
  return invoker.memoryBudgetMb - invoker.memoryUsedMb + invoker.memoryIdleMb;
}

/**
 * An invoker's load: the share of its budget held by instances at work (starting or busy). Idle
 * instances are not load: they make room for a new one.
 */
export function loadOf(invoker: InvokerSnapshot): number {
  return share(invoker.memoryUsedMb - invoker.memoryIdleMb, invoker.memoryBudgetMb);
}

function share(mb: number, budgetMb: number): number {
  return budgetMb > 0 ? mb / budgetMb : Number.POSITIVE_INFINITY;
}

/**
 * Less loaded first; at equal loads the one with less memory in use, then by id, so that the
 * answer never depends on the snapshot's order.
 */
export function lessLoaded(a: InvokerSnapshot, b: InvokerSnapshot): boolean {
  const la = loadOf(a);
  const lb = loadOf(b);
  if (la !== lb) return la < lb;
  const ua = share(a.memoryUsedMb, a.memoryBudgetMb);
  const ub = share(b.memoryUsedMb, b.memoryBudgetMb);
  return ua < ub || (ua === ub && a.id < b.id);
}

/** The least loaded of these invokers that `accept` takes. */
export function leastLoaded(
  invokers: Iterable<InvokerSnapshot>,
  accept: (invoker: InvokerSnapshot) => boolean = () => true,
): InvokerSnapshot | undefined {
  let best: InvokerSnapshot | undefined;
  for (const invoker of invokers) if (accept(invoker) && (!best || lessLoaded(invoker, best))) best = invoker;
  return best;
}

/**
 * Chooses the invoker for a call (see the module's comment). `invokers` is the snapshot by id;
 * `ring` is built from the registered invokers' ids (an invoker on the ring missing from the
 * snapshot is skipped; one in the snapshot not yet on the ring is chosen only off the ring walk).
 */
export function placeCall(
  call: CallToPlace,
  invokers: ReadonlyMap<string, InvokerSnapshot>,
  ring: HashRing,
  options: PlacementOptions = {},
): PlacementDecision {
  const spillLimit = options.spillLimit ?? DEFAULT_SPILL_LIMIT;
  let hasBackend = false;
  let capable = 0;
  const warm: InvokerSnapshot[] = [];
  for (const invoker of invokers.values()) {
    if (!invoker.healthy || !invoker.backends.includes(call.backend)) continue;
    hasBackend = true;
    if (invoker.memoryBudgetMb < call.memoryMb) continue;
    capable++;
    if ((invoker.warm.get(call.poolKey) ?? 0) > 0) warm.push(invoker);
  }
  if (!hasBackend) {
    return { kind: 'refused', reason: 'no-backend', message: `No invoker has the ${call.backend} backend.` };
  }
  if (capable === 0) {
    return {
      kind: 'refused',
      reason: 'too-big',
      message: `No invoker with the ${call.backend} backend has ${call.memoryMb} MB of memory.`,
    };
  }
  const accept = (id: string) => {
    const invoker = invokers.get(id);
    return invoker !== undefined && canRun(invoker, call);
  };
  if (warm.length > 0) {
    if (warm.length === 1) return placed(warm[0] as InvokerSnapshot, 'warm');
    const home = homeOf(ring, call.homeKey, accept);
    const atHome = warm.find((invoker) => invoker.id === home);
    return placed(atHome ?? (leastLoaded(warm) as InvokerSnapshot), 'warm');
  }
  const walk = ringOrder(ring, call.homeKey, accept, spillLimit).map((id) => invokers.get(id) as InvokerSnapshot);
  // Unused memory first: a new instance there costs no other function its warm instance.
  const roomy = walk.find((invoker) => unusedMb(invoker) >= call.memoryMb);
  if (roomy) return placed(roomy, roomy === walk[0] ? 'home' : 'spill');
  const reclaiming = walk.find((invoker) => reclaimableMb(invoker) >= call.memoryMb);
  if (reclaiming) return placed(reclaiming, reclaiming === walk[0] ? 'home' : 'spill');
  const elsewhere = leastLoaded(invokers.values(), (invoker) => canRun(invoker, call) && reclaimableMb(invoker) >= call.memoryMb);
  if (elsewhere) return placed(elsewhere, 'least-loaded');
  return placed(leastLoaded(invokers.values(), (invoker) => canRun(invoker, call)) as InvokerSnapshot, 'wait');
}

function placed(invoker: InvokerSnapshot, reason: PlacementReason): PlacementDecision {
  return { kind: 'placed', invoker: invoker.id, reason };
}
