import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildRing,
  type CallToPlace,
  hash32,
  homeOf,
  type InvokerSnapshot,
  leastLoaded,
  type PlacementDecision,
  placeCall,
  ringOrder,
} from './placement.js';

function invoker(id: string, fields: Partial<InvokerSnapshot> = {}): InvokerSnapshot {
  return {
    id,
    backends: ['isolate', 'container'],
    memoryBudgetMb: 4096,
    memoryUsedMb: 0,
    memoryIdleMb: 0,
    warm: new Map(),
    healthy: true,
    ...fields,
  };
}

function cluster(...invokers: InvokerSnapshot[]): Map<string, InvokerSnapshot> {
  return new Map(invokers.map((i) => [i.id, i]));
}

function call(name: string, fields: Partial<CallToPlace> = {}): CallToPlace {
  return { poolKey: `ns/${name}@1#r`, homeKey: `ns/${name}`, memoryMb: 256, backend: 'isolate', ...fields };
}

const ids = (n: number, prefix = 'invoker-') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

function chosen(decision: PlacementDecision): string {
  assert.equal(decision.kind, 'placed', JSON.stringify(decision));
  return decision.kind === 'placed' ? decision.invoker : '';
}

/** A function whose home, among these invokers, is `want`. */
function functionHomedAt(ring: ReturnType<typeof buildRing>, want: string): string {
  for (let i = 0; ; i++) if (homeOf(ring, `ns/f${i}`) === want) return `f${i}`;
}

describe('the hash ring', () => {
  it('hashes the same everywhere and spreads similar strings', () => {
    assert.equal(hash32('ns/f'), hash32('ns/f'));
    assert.notEqual(hash32('invoker-1#0'), hash32('invoker-1#1'));
    assert.equal(hash32(''), hash32(''));
    // Fixed values: the ring must place keys the same in every process and on every host.
    assert.equal(hash32('a'), hash32(String.fromCharCode(97)));
    assert.ok(hash32('ns/f') >= 0 && hash32('ns/f') < 2 ** 32);
  });

  it('does not depend on the order the invokers are given in', () => {
    const a = buildRing(['x', 'y', 'z']);
    const b = buildRing(['z', 'x', 'y', 'x']);
    assert.deepEqual([...a.positions], [...b.positions]);
    assert.deepEqual(a.owners, b.owners);
    assert.equal(a.owners.length, 3 * 128);
  });

  it('gives each invoker a fair share of keys', () => {
    const ring = buildRing(ids(20));
    const counts = new Map<string, number>();
    for (let k = 0; k < 20_000; k++) {
      const home = homeOf(ring, `ns/f${k}`) as string;
      counts.set(home, (counts.get(home) ?? 0) + 1);
    }
    assert.equal(counts.size, 20);
    const max = Math.max(...counts.values());
    const min = Math.min(...counts.values());
    assert.ok(max / 1000 < 1.35 && min / 1000 > 0.65, `shares from ${min} to ${max} keys of a mean 1000`);
  });

  it('moves only the keys the joining invoker takes, about 1/N of them', () => {
    const keys = Array.from({ length: 20_000 }, (_, k) => `ns/f${k}`);
    const before = buildRing(ids(10));
    const after = buildRing([...ids(10), 'invoker-new']);
    let moved = 0;
    for (const key of keys) {
      const from = homeOf(before, key);
      const to = homeOf(after, key);
      if (from !== to) {
        moved++;
        assert.equal(to, 'invoker-new', `${key} moved from ${from} to ${to}, not to the new invoker`);
      }
    }
    const fraction = moved / keys.length;
    // 1/11 = 0.091 expected; a modulo hash would move ~10/11 of them.
    assert.ok(fraction > 0.04 && fraction < 0.15, `${(fraction * 100).toFixed(1)}% of keys moved`);
  });

  it('moves only the leaving invoker keys, to the next ones on the ring', () => {
    const keys = Array.from({ length: 20_000 }, (_, k) => `ns/f${k}`);
    const before = buildRing(ids(10));
    const after = buildRing(ids(10).filter((id) => id !== 'invoker-3'));
    let moved = 0;
    for (const key of keys) {
      const from = homeOf(before, key);
      const to = homeOf(after, key);
      if (from === 'invoker-3') {
        moved++;
        // Where it goes is where the old ring spilled it to.
        assert.equal(to, ringOrder(before, key, () => true, 2)[1]);
      } else assert.equal(to, from, `${key} moved from ${from}, which stayed`);
    }
    const fraction = moved / keys.length;
    assert.ok(fraction > 0.05 && fraction < 0.15, `${(fraction * 100).toFixed(1)}% of keys moved`);
  });

  it('skipping invokers on the walk chooses what a ring without them would', () => {
    const all = buildRing(ids(12));
    const some = ids(12).filter((_, i) => i % 3 !== 0);
    const ringOfSome = buildRing(some);
    for (let k = 0; k < 2000; k++) {
      const key = `ns/f${k}`;
      assert.deepEqual(
        ringOrder(all, key, (id) => some.includes(id), 3),
        ringOrder(ringOfSome, key, () => true, 3),
      );
    }
  });

  it('walks each invoker once, and at most the limit', () => {
    const ring = buildRing(ids(5));
    const order = ringOrder(ring, 'ns/f', () => true);
    assert.equal(order.length, 5);
    assert.equal(new Set(order).size, 5);
    assert.deepEqual(
      ringOrder(ring, 'ns/f', () => true, 2),
      order.slice(0, 2),
    );
    assert.deepEqual(
      ringOrder(buildRing([]), 'ns/f', () => true),
      [],
    );
  });
});

describe('placing a call', () => {
  const names = ids(6);
  const ring = buildRing(names);

  it('takes an invoker with a warm instance of the version, even when it is not the home', () => {
    const fn = functionHomedAt(ring, 'invoker-0');
    const invokers = cluster(
      ...names.map((id) => invoker(id, id === 'invoker-4' ? { warm: new Map([[`ns/${fn}@1#r`, 1]]) } : {})),
    );
    assert.deepEqual(placeCall(call(fn), invokers, ring), { kind: 'placed', invoker: 'invoker-4', reason: 'warm' });
  });

  it('among warm invokers prefers the home, then the least loaded', () => {
    const fn = functionHomedAt(ring, 'invoker-2');
    const warm = new Map([[`ns/${fn}@1#r`, 1]]);
    const withHome = cluster(...names.map((id) => invoker(id, { warm, memoryUsedMb: id === 'invoker-2' ? 4000 : 512 })));
    assert.equal(chosen(placeCall(call(fn), withHome, ring)), 'invoker-2', 'the home, though it is the busiest');
    const withoutHome = cluster(
      ...names.map((id) =>
        invoker(id, {
          warm: id === 'invoker-2' ? new Map() : warm,
          memoryUsedMb: id === 'invoker-5' ? 256 : 1024,
        }),
      ),
    );
    assert.deepEqual(placeCall(call(fn), withoutHome, ring), { kind: 'placed', invoker: 'invoker-5', reason: 'warm' });
  });

  it('a warm instance of another version does not count', () => {
    const fn = functionHomedAt(ring, 'invoker-1');
    const invokers = cluster(
      ...names.map((id) => invoker(id, id === 'invoker-3' ? { warm: new Map([[`ns/${fn}@0#old`, 2]]) } : {})),
    );
    assert.deepEqual(placeCall(call(fn), invokers, ring), { kind: 'placed', invoker: 'invoker-1', reason: 'home' });
  });

  it('with no warm instance goes home, and every version of the function has the same home', () => {
    const fn = functionHomedAt(ring, 'invoker-3');
    const invokers = cluster(...names.map((id) => invoker(id)));
    assert.deepEqual(placeCall(call(fn), invokers, ring), { kind: 'placed', invoker: 'invoker-3', reason: 'home' });
    assert.equal(chosen(placeCall(call(fn, { poolKey: `ns/${fn}@7#x` }), invokers, ring)), 'invoker-3');
  });

  it('spills to the next invoker on the ring with unused memory when the home is full', () => {
    const fn = functionHomedAt(ring, 'invoker-0');
    const [home, next, third] = ringOrder(ring, `ns/${fn}`, () => true, 3) as [string, string, string];
    const full = { memoryUsedMb: 4096 - 128 };
    const invokers = cluster(...names.map((id) => invoker(id, id === home || id === next ? full : {})));
    assert.deepEqual(placeCall(call(fn), invokers, ring), { kind: 'placed', invoker: third, reason: 'spill' });
  });

  it('prefers unused memory along the walk to letting idle instances go at home, and lets them go when nothing is unused', () => {
    const fn = functionHomedAt(ring, 'invoker-0');
    const [home, next] = ringOrder(ring, `ns/${fn}`, () => true, 2) as [string, string];
    const idleHome = cluster(...names.map((id) => invoker(id, id === home ? { memoryUsedMb: 4096, memoryIdleMb: 1024 } : {})));
    assert.deepEqual(placeCall(call(fn), idleHome, ring), { kind: 'placed', invoker: next, reason: 'spill' });
    const allIdle = cluster(...names.map((id) => invoker(id, { memoryUsedMb: 4096, memoryIdleMb: 1024 })));
    assert.deepEqual(placeCall(call(fn), allIdle, ring), { kind: 'placed', invoker: home, reason: 'home' });
  });

  it('beyond the spill limit takes the least loaded invoker with room, and when none has any, the least loaded (to wait)', () => {
    const fn = functionHomedAt(ring, 'invoker-0');
    const walk = ringOrder(ring, `ns/${fn}`, () => true, 2);
    const offWalk = names.filter((id) => !walk.includes(id));
    const roomy = offWalk[1] as string;
    const busy = cluster(
      ...names.map((id) => invoker(id, { memoryUsedMb: id === roomy ? 2048 : id === offWalk[0] ? 1024 : 4096 })),
    );
    // Two invokers off the walk have room: the less loaded of them.
    assert.deepEqual(placeCall(call(fn), busy, ring, { spillLimit: 2 }), {
      kind: 'placed',
      invoker: offWalk[0],
      reason: 'least-loaded',
    });
    const full = cluster(...names.map((id) => invoker(id, { memoryUsedMb: id === roomy ? 3968 : 4096 })));
    assert.deepEqual(placeCall(call(fn), full, ring, { spillLimit: 2 }), { kind: 'placed', invoker: roomy, reason: 'wait' });
  });

  it('never chooses an invoker without the backend, and refuses when no invoker has it', () => {
    const fn = functionHomedAt(ring, 'invoker-2');
    const wasmOnly = new Set(['invoker-2', 'invoker-4']);
    const invokers = cluster(
      ...names.map((id) =>
        invoker(id, {
          backends: wasmOnly.has(id) ? ['wasm'] : ['isolate'],
          // A warm instance on an invoker without the backend (a stale report) is no reason either.
          warm: id === 'invoker-4' ? new Map([[`ns/${fn}@1#r`, 1]]) : new Map(),
        }),
      ),
    );
    for (let k = 0; k < 200; k++) {
      const decision = placeCall(call(`g${k}`), invokers, ring);
      assert.ok(!wasmOnly.has(chosen(decision)));
    }
    assert.ok(!wasmOnly.has(chosen(placeCall(call(fn), invokers, ring))));
    assert.equal(chosen(placeCall(call(fn, { backend: 'wasm' }), invokers, ring)), 'invoker-4');
    assert.deepEqual(placeCall(call(fn, { backend: 'microvm' }), invokers, ring), {
      kind: 'refused',
      reason: 'no-backend',
      message: 'No invoker has the microvm backend.',
    });
  });

  it('refuses a call bigger than every capable invoker', () => {
    const invokers = cluster(invoker('a', { memoryBudgetMb: 1024 }), invoker('b', { memoryBudgetMb: 8192, backends: ['wasm'] }));
    const decision = placeCall(call('f', { memoryMb: 2048 }), invokers, buildRing(['a', 'b']));
    assert.equal(decision.kind, 'refused');
    assert.equal(decision.kind === 'refused' && decision.reason, 'too-big');
  });

  it('never chooses an unhealthy invoker, warm or home, and moves none of the others', () => {
    const fn = functionHomedAt(ring, 'invoker-1');
    const down = cluster(
      ...names.map((id) => invoker(id, id === 'invoker-1' ? { healthy: false, warm: new Map([[`ns/${fn}@1#r`, 1]]) } : {})),
    );
    const up = cluster(...names.map((id) => invoker(id)));
    assert.equal(chosen(placeCall(call(fn), down, ring)), ringOrder(ring, `ns/${fn}`, () => true, 2)[1]);
    for (let k = 0; k < 300; k++) {
      const before = chosen(placeCall(call(`g${k}`), up, ring));
      const after = chosen(placeCall(call(`g${k}`), down, ring));
      if (before !== 'invoker-1') assert.equal(after, before);
      else assert.notEqual(after, 'invoker-1');
    }
    const none = cluster(...names.map((id) => invoker(id, { healthy: false })));
    assert.equal(placeCall(call(fn), none, ring).kind, 'refused');
  });

  it('is deterministic: the same snapshot in any order gives the same choice', () => {
    const snapshot = names.map((id, i) =>
      invoker(id, {
        memoryUsedMb: (i * 700) % 4096,
        memoryIdleMb: (i * 300) % 700,
        warm: i % 2 === 0 ? new Map([['ns/g3@1#r', 1]]) : new Map(),
      }),
    );
    const reversed = cluster(...[...snapshot].reverse());
    const forward = cluster(...snapshot);
    const otherRing = buildRing([...names].reverse());
    for (let k = 0; k < 300; k++) {
      const c = call(`g${k}`, { memoryMb: 128 * (1 + (k % 8)) });
      const a = placeCall(c, forward, ring);
      assert.deepEqual(placeCall(c, forward, ring), a);
      assert.deepEqual(placeCall(c, reversed, otherRing), a);
    }
  });

  it('load is memory at work: idle memory counts only to break ties, then the id does', () => {
    const idle = invoker('idle', { memoryUsedMb: 3072, memoryIdleMb: 3072 });
    const busy = invoker('busy', { memoryUsedMb: 512 });
    assert.equal(leastLoaded([busy, idle])?.id, 'idle');
    assert.equal(leastLoaded([idle, invoker('empty')])?.id, 'empty');

    const a = invoker('a', { memoryUsedMb: 1024 });
    const b = invoker('b', { memoryUsedMb: 1024 });
    assert.equal(leastLoaded([b, a])?.id, 'a');
    assert.equal(
      leastLoaded([a, invoker('c', { memoryUsedMb: 512, memoryBudgetMb: 1024 })])?.id,
      'a',
      'load is a share of the budget',
    );
  });
});
