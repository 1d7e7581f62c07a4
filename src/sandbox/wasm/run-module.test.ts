import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { wat } from '../../../test/helpers/wat.js';
import { importOwnMemory, PAGE_BYTES } from './binary.js';
import { callWithBudget } from './fast-path.js';
import type { RunMessage } from './messages.js';
import { memoryPool, runModule } from './run-module.js';

const MAX_PAGES = 64 * 16;

// Answers {"seen":D,"pages":P}: D the byte at 4096 when the run starts (a digit), P the memory's
// pages when it starts. Then leaves 7 at 4096 and grows the memory by a page, as a run's
// allocations would, for the next run to find if memories were not zeroed.
const LEAVES_A_MARK = `(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\\"seen\\":0,\\"pages\\":0}")
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param i32 i32) (result i64)
    (i32.store8 (i32.const 8) (i32.add (i32.const 48) (i32.load8_u (i32.const 4096))))
    (i32.store8 (i32.const 18) (i32.add (i32.const 48) (memory.size)))
    (i32.store8 (i32.const 4096) (i32.const 7))
    (drop (memory.grow (i32.const 1)))
    (i64.const 20)))`;

// Loops forever when its input is longer than 20 bytes, answers {} otherwise. Its maximum is its
// own, so that no other test's memory is kept under its limits.
const LOOPS_ON_LONG_INPUT = `(module
  (memory (export "memory") 1 77)
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param $pointer i32) (param $length i32) (result i64)
    (if (i32.gt_u (local.get $length) (i32.const 20)) (then (loop $forever (br $forever))))
    (i32.store8 (i32.const 0) (i32.const 123))
    (i32.store8 (i32.const 1) (i32.const 125))
    (i64.const 2)))`;

/** The module as the backend compiles it (its memory an import) and the message for a run of it. */
async function prepare(bytes: Uint8Array) {
  const { bytes: rewritten, memory } = importOwnMemory(bytes, MAX_PAGES);
  const module = await WebAssembly.compile(rewritten);
  const message = (params: unknown): RunMessage => ({
    type: 'run',
    id: 'test',
    key: 'test',
    abi: 'reactor',
    input: JSON.stringify(params),
    env: {},
    maxPages: MAX_PAGES,
    ...(memory ? { importedMemory: memory } : {}),
  });
  return { module, message };
}

const run = (message: RunMessage, module: WebAssembly.Module) => {
  const outcome = runModule(message, module, () => {});
  assert.equal(outcome.kind, 'json', JSON.stringify(outcome));
  return JSON.parse((outcome as { text: string }).text);
};

describe('wasm runs on kept memories', () => {
  it("starts each run on zeroed memory, kept from the thread's previous run", async () => {
    const bytes = Buffer.from(await wat(LEAVES_A_MARK), 'base64');
    const { module, message } = await prepare(bytes);
    assert.deepEqual(run(message({}), module), { seen: 0, pages: 1 });
    // The same memory again (it kept the page the first run grew), with nothing of that run in it.
    assert.deepEqual(run(message({}), module), { seen: 0, pages: 2 });
    assert.deepEqual(run(message({}), module), { seen: 0, pages: 3 });
  });

  it('never keeps the memory of a run abandoned at its budget', async () => {
    const bytes = Buffer.from(await wat(LOOPS_ON_LONG_INPUT), 'base64');
    const { module, message } = await prepare(bytes);
    assert.deepEqual(run(message({}), module), {});
    const kept = memoryPool.bytes;
    const attempt = callWithBudget(() => runModule(message({ padding: 'more than twenty bytes' }), module, () => {}), 20);
    assert.deepEqual(attempt, { done: false });
    assert.equal(memoryPool.bytes, kept - PAGE_BYTES, 'the looping run took the kept memory and did not give it back');
    assert.deepEqual(run(message({}), module), {});
    assert.equal(memoryPool.bytes, kept);
  });

  it('gives the scratch example the same results as a memory of its own would', async () => {
    const bytes = readFileSync(new URL('../../../examples/wasm/scratch.wasm', import.meta.url));
    const { module: kept, message } = await prepare(bytes);
    const own = await WebAssembly.compile(bytes);
    for (const params of [
      { seed: 7, rounds: 10, bytes: 65536, chunk: 4096 },
      { seed: 3, rounds: 1, bytes: 100_000, chunk: 3000 },
      { seed: 1, rounds: 0, bytes: 1, chunk: 1 },
      { seed: 9, rounds: 2, bytes: 300_000, chunk: 65536 },
    ]) {
      const { importedMemory: _, ...ownMemory } = message(params);
      const expected = run(ownMemory, own);
      assert.equal(expected.readBack, true);
      // Twice: on a new memory, then on the kept one.
      assert.deepEqual(run(message(params), kept), expected);
      assert.deepEqual(run(message(params), kept), expected);
    }
  });
});
