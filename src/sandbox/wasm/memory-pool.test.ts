import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PAGE_BYTES } from './binary.js';
import { MemoryPool } from './memory-pool.js';

const LIMITS = { initial: 1, maximum: 64 };

describe('wasm memory pool', () => {
  it('gives back the memory a run ended with, zeroed, at the size it grew to', () => {
    const pool = new MemoryPool();
    const first = pool.take(LIMITS);
    assert.equal(first.buffer.byteLength, PAGE_BYTES);
    first.grow(2);
    new Uint8Array(first.buffer).fill(0xab);
    pool.give(LIMITS, first);
    assert.equal(pool.bytes, 3 * PAGE_BYTES);
    const second = pool.take(LIMITS);
    assert.equal(second, first, 'the same memory, kept');
    assert.equal(second.buffer.byteLength, 3 * PAGE_BYTES);
    assert.ok(
      new Uint8Array(second.buffer).every((b) => b === 0),
      'nothing of the earlier run is left',
    );
    assert.equal(pool.bytes, 0);
    assert.notEqual(pool.take(LIMITS), first, 'taken memories are not handed out twice');
  });

  it('keeps memories by their limits', () => {
    const pool = new MemoryPool();
    const small = pool.take(LIMITS);
    pool.give(LIMITS, small);
    const other = pool.take({ initial: 1, maximum: 32 });
    assert.notEqual(other, small);
    assert.throws(() => other.grow(40), RangeError, 'made with its own maximum');
    assert.equal(pool.take(LIMITS), small);
  });

  it('leaves large memories to the garbage collector and holds a bounded number of bytes', () => {
    const pool = new MemoryPool(4 * PAGE_BYTES, 6 * PAGE_BYTES);
    const large = pool.take(LIMITS);
    large.grow(4);
    pool.give(LIMITS, large);
    assert.equal(pool.bytes, 0, 'five pages is more than a kept memory may hold');
    const limits = [1, 2, 3].map((initial) => ({ initial, maximum: 64 }));
    const memories = limits.map((l) => pool.take(l));
    memories[0]?.grow(2);
    for (const [i, memory] of memories.entries()) pool.give(limits[i] as (typeof limits)[number], memory);
    // 3 + 2 + 3 pages: the oldest (three pages) made room for the last.
    assert.equal(pool.bytes, 5 * PAGE_BYTES);
    assert.notEqual(pool.take(limits[0] as (typeof limits)[number]), memories[0]);
    assert.equal(pool.take(limits[2] as (typeof limits)[number]), memories[2]);
  });
});
