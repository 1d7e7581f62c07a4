import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { wat } from '../../../test/helpers/wat.js';
import { importOwnMemory, PAGE_BYTES, parseModule } from './binary.js';

const bytesOf = async (source: string) => Buffer.from(await wat(source), 'base64');

// Imports a function before its memory, calls it, and reads its data segment: what must keep
// working once the memory is an import too.
const WITH_IMPORTS = `(module
  (import "env" "seed" (func $seed (result i32)))
  (memory (export "memory") 2 40)
  (data (i32.const 100) "hi")
  (func (export "first_byte") (result i32) (i32.load8_u (i32.const 100)))
  (func (export "seeded") (result i32) (call $seed))
  (func (export "size") (result i32) (memory.size)))`;

describe("wasm binary: a module's own memory as an import", () => {
  it('imports env.memory with the same minimum and a maximum capped at the limit; calls, data and exports unchanged', async () => {
    const { bytes, memory } = importOwnMemory(await bytesOf(WITH_IMPORTS), 16);
    assert.deepEqual(memory, { initial: 2, maximum: 16 });
    const info = parseModule(bytes);
    assert.deepEqual(info.memories, []);
    assert.deepEqual(
      info.imports.map((i) => [i.module, i.name, i.kind]),
      [
        ['env', 'seed', 'function'],
        ['env', 'memory', 'memory'],
      ],
    );
    assert.deepEqual(info.imports[1]?.memory, { min: 2, max: 16, shared: false, memory64: false });
    const host = new WebAssembly.Memory({ initial: 2, maximum: 16 });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { seed: () => 42, memory: host } });
    const exports = instance.exports as { first_byte(): number; seeded(): number; size(): number; memory: WebAssembly.Memory };
    assert.equal(exports.first_byte(), 'h'.charCodeAt(0), 'the data segment was written into the host memory');
    assert.equal(exports.seeded(), 42, 'the imported function keeps its index');
    assert.equal(exports.memory, host, 'the module exports the memory it was given');
    assert.equal(exports.size(), 2);
    assert.equal(host.grow(14), 2);
    assert.throws(() => host.grow(1), RangeError, 'the limit holds');
  });

  it('adds an import section to a module that has none, and keeps a maximum below the limit', async () => {
    const source = `(module
      (memory (export "memory") 1 3)
      (func (export "grow") (result i32) (memory.grow (i32.const 5))))`;
    const { bytes, memory } = importOwnMemory(await bytesOf(source), 1024);
    assert.deepEqual(memory, { initial: 1, maximum: 3 });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
      env: { memory: new WebAssembly.Memory({ initial: 1, maximum: 3 }) },
    });
    assert.equal((instance.exports as { grow(): number }).grow(), -1, 'past its own maximum');
  });

  it('leaves a module without a memory of its own as it is', async () => {
    const none = await bytesOf('(module (func (export "_start")))');
    assert.equal(importOwnMemory(none, 16).bytes, none);
    const imported = await bytesOf('(module (import "env" "memory" (memory 1)) (func (export "_start")))');
    assert.deepEqual(importOwnMemory(imported, 16), { bytes: imported });
  });

  it('keeps custom sections where they were', async () => {
    const base = await bytesOf('(module (memory (export "memory") 1))');
    const name = Buffer.from('note');
    const custom = Buffer.concat([Buffer.from([0, 1 + name.length + 3, name.length]), name, Buffer.from('abc')]);
    // A custom section first, before the type section would be.
    const withCustom = Buffer.concat([base.subarray(0, 8), custom, base.subarray(8)]);
    const { bytes } = importOwnMemory(withCustom, 16);
    const module = new WebAssembly.Module(bytes);
    assert.deepEqual(
      WebAssembly.Module.customSections(module, 'note').map((s) => Buffer.from(s).toString()),
      ['abc'],
    );
    assert.deepEqual(WebAssembly.Module.imports(module), [{ module: 'env', name: 'memory', kind: 'memory' }]);
    assert.equal(PAGE_BYTES, 65536);
  });
});
