import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { LEAVES_A_MARK, loopsOnLongInput } from '../../../test/helpers/wasm-modules.js';
import { wat } from '../../../test/helpers/wat.js';
import { importOwnMemory } from './binary.js';
import type { RunMessage } from './messages.js';
import { meterModule } from './metering.js';
import { memoryPool, runModule } from './run-module.js';

const MAX_PAGES = 64 * 16;

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

  it('gives back, zeroed, the memory of a metered run stopped at its budget', async () => {
    const { bytes: imported, memory } = importOwnMemory(Buffer.from(await wat(loopsOnLongInput('1 77')), 'base64'), MAX_PAGES);
    const metered = await meterModule(imported);
    assert.ok(metered);
    const { module, message } = await prepare(Buffer.from(await wat(loopsOnLongInput('1 77')), 'base64'));
    assert.ok(memory);
    assert.deepEqual(run(message({}), module), {});
    const kept = memoryPool.bytes;
    // The host refuses fuel at once: the loop traps where a budget would have ended it.
    const stopped = runModule(
      message({ padding: 'more than twenty bytes' }),
      await WebAssembly.compile(metered),
      () => {},
      () => -1,
    );
    assert.deepEqual(stopped, { kind: 'error', error: 'RuntimeError: unreachable' });
    assert.equal(memoryPool.bytes, kept, 'the stopped run gave its memory back');
    assert.deepEqual(run(message({}), module), {});
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
