import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { wat } from '../../../test/helpers/wat.js';
import { buildBundle } from '../../guest/bundle.js';
import { importOwnMemory } from './binary.js';
import type { RunMessage } from './messages.js';
import { METER_MAX_BYTES, meterModule, REFUEL_UNITS, rewrite } from './metering.js';
import { MeteringThread } from './metering-thread.js';
import { runModule } from './run-module.js';

const MAX_PAGES = 1024;

function message(
  input: unknown,
  abi: 'reactor' | 'command' = 'reactor',
  importedMemory?: RunMessage['importedMemory'],
): RunMessage {
  return {
    type: 'run',
    id: 'a1',
    key: 'k',
    abi,
    input: JSON.stringify(input),
    env: {},
    maxPages: MAX_PAGES,
    ...(importedMemory ? { importedMemory } : {}),
  };
}

/** The module as the backend compiles it (its memory made an import) and its metered copy. */
async function both(bytes: Uint8Array) {
  const { bytes: imported, memory } = importOwnMemory(bytes, MAX_PAGES);
  const metered = await meterModule(imported);
  assert.ok(metered, 'the module was metered');
  return { plain: await WebAssembly.compile(imported), metered: await WebAssembly.compile(metered), memory };
}

/** A refuel that counts its calls and gives `grants` refills before saying the time is up. */
function refueller(grants = Number.POSITIVE_INFINITY) {
  const state = { calls: 0, refuel: () => 0 };
  state.refuel = () => {
    state.calls++;
    return state.calls <= grants ? REFUEL_UNITS : -1;
  };
  return state;
}

const reactor = (body: string, extra = '') => `(module
  ${extra}
  (memory (export "memory") 512)
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param $pointer i32) (param $length i32) (result i64)
    ${body}
    (i32.store8 (i32.const 0) (i32.const 123))
    (i32.store8 (i32.const 1) (i32.const 125))
    (i64.const 2)))`;

describe('wasm fuel metering', () => {
  it('gives the same results and logs as the module it was made from, for every example', async () => {
    const examples: [file: string, input: unknown][] = [
      ['greet.wasm', { name: 'metered' }],
      ['wordcount.wasm', { text: 'the cat and the hat and the bat' }],
      ['graph.wasm', {}],
      ['compression.wasm', {}],
      ['thumbnail.wasm', {}],
      ['scratch.wasm', { rounds: 2, bytes: 8192, chunk: 1024 }],
      ['fib.wasm', { n: 25 }],
    ];
    for (const [file, input] of examples) {
      const bytes = readFileSync(new URL(`../../../examples/wasm/${file}`, import.meta.url));
      const { plain, metered, memory } = await both(bytes);
      const abi = WebAssembly.Module.exports(plain).some((e) => e.name === '_start') ? 'command' : 'reactor';
      const logs = { plain: [] as string[], metered: [] as string[] };
      const expected = runModule(message(input, abi, memory), plain, (_s, text) => logs.plain.push(text));
      const fuel = refueller();
      const actual = runModule(message(input, abi, memory), metered, (_s, text) => logs.metered.push(text), fuel.refuel);
      assert.equal(expected.kind, 'json', `${file} ran`);
      assert.deepEqual(actual, expected, file);
      assert.deepEqual(logs.metered, logs.plain, file);
    }
  });

  it('stops a loop once the host refuses more fuel, and not before', async () => {
    const { metered, memory } = await both(Buffer.from(await wat(reactor('(loop $forever (br $forever))')), 'base64'));
    const fuel = refueller(5);
    const outcome = runModule(message({}, 'reactor', memory), metered, () => {}, fuel.refuel);
    assert.equal(fuel.calls, 6, 'five refills, then the refusal');
    assert.deepEqual(outcome, { kind: 'error', error: 'RuntimeError: unreachable' });
  });

  it('charges calls at their entry, so recursion without a loop is bounded too', async () => {
    // fib(40) by plain recursion: 300 million calls, none with a loop in it.
    const fib = `(func $fib (param $n i32) (result i32)
      (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
        (then (local.get $n))
        (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1))) (call $fib (i32.sub (local.get $n) (i32.const 2)))))))`;
    const { metered, memory } = await both(Buffer.from(await wat(reactor('(drop (call $fib (i32.const 40)))', fib)), 'base64'));
    const fuel = refueller(3);
    assert.deepEqual(
      runModule(message({}, 'reactor', memory), metered, () => {}, fuel.refuel),
      { kind: 'error', error: 'RuntimeError: unreachable' },
    );
    assert.equal(fuel.calls, 4);
  });

  it('charges bulk memory instructions by their length before they run', async () => {
    // Each fill of 32 MB costs 2 million units: more than a refill, so every one asks the host.
    const fills = '(memory.fill (i32.const 0) (i32.const 7) (i32.const 0x2000000))';
    const { metered, memory } = await both(Buffer.from(await wat(reactor(`${fills} ${fills} ${fills}`)), 'base64'));
    const fuel = refueller();
    assert.equal(runModule(message({}, 'reactor', memory), metered, () => {}, fuel.refuel).kind, 'json');
    assert.equal(fuel.calls, 3);
    const refused = refueller(0);
    assert.deepEqual(
      runModule(message({}, 'reactor', memory), metered, () => {}, refused.refuel),
      {
        kind: 'error',
        error: 'RuntimeError: unreachable',
      },
    );
    assert.equal(refused.calls, 1, 'stopped before the first fill');
  });

  it('charges calls that may reach the host more than plain instructions', async () => {
    const seed = '(import "env" "seed" (func $seed (result i32)))';
    const counted = async (body: string) => {
      const { metered, memory } = await both(Buffer.from(await wat(reactor(body, seed)), 'base64'));
      const fuel = refueller();
      assert.equal(runModule(message({}, 'reactor', memory), metered, () => {}, fuel.refuel).kind, 'json');
      return fuel.calls;
    };
    // 250 host calls cost more than one refill; as many calls of the module's own do not.
    assert.ok((await counted(Array.from({ length: 250 }, () => '(drop (call $seed))').join(' '))) >= 1);
    assert.equal(await counted(Array.from({ length: 250 }, () => '(drop (i32.const 1))').join(' ')), 0);
  });

  it("leaves a module's own traps its own", async () => {
    const { metered, memory } = await both(
      Buffer.from(await wat(reactor('(drop (i32.div_u (i32.const 1) (i32.const 0)))')), 'base64'),
    );
    const fuel = refueller();
    assert.deepEqual(
      runModule(message({}, 'reactor', memory), metered, () => {}, fuel.refuel),
      {
        kind: 'error',
        error: 'RuntimeError: divide by zero',
      },
    );
    assert.equal(fuel.calls, 0);
  });

  it('meters a module whose last field is a function, and one with an empty function', async () => {
    const module = Buffer.from(await wat('(module (func $empty) (func $last (param i32) (result i32) (local.get 0)))'), 'base64');
    const metered = await meterModule(module);
    assert.ok(metered);
    assert.ok(WebAssembly.validate(metered));
  });

  it('declines what it cannot bound or would clash with', async () => {
    assert.equal(await meterModule(new Uint8Array(METER_MAX_BYTES + 1)), undefined, 'too large');
    assert.equal(await meterModule(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99])), undefined, 'malformed');
    assert.equal(rewrite('(module\n  (func $f (type $t0)\n    memory.atomic.wait32\n    drop))\n'), undefined, 'a wait');
    assert.equal(rewrite('(module\n  (func $__isola_meter_fuel (type $t0)))\n'), undefined, 'its own names taken');
    assert.equal(rewrite('(module\n  (memory $m0 i64 1))\n'), undefined, '64-bit memory');
  });
});

describe('wasm fuel metering on its own thread', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-meter-test-'));
  const thread = new MeteringThread(buildBundle('wasm-meter', runtime));
  after(async () => {
    await thread.close();
    rmSync(runtime, { recursive: true, force: true });
  });

  it('makes the same copy as in this thread, declines what cannot be metered, and starts again after closing', async () => {
    const greet = importOwnMemory(readFileSync(new URL('../../../examples/wasm/greet.wasm', import.meta.url)), MAX_PAGES).bytes;
    const [there, here] = await Promise.all([thread.meter(greet), meterModule(greet)]);
    assert.ok(there && here);
    assert.deepEqual(Buffer.from(there), Buffer.from(here));
    assert.equal(await thread.meter(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99])), undefined);
    await thread.close();
    assert.ok(WebAssembly.validate((await thread.meter(greet)) as Uint8Array));
  });
});
