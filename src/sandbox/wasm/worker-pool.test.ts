import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { wat } from '../../../test/helpers/wat.js';
import { buildBundle } from '../../guest/bundle.js';
import type { RunOutcome } from '../backend.js';
import type { RunMessage } from './messages.js';
import { WorkerPool } from './worker-pool.js';

const LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop $forever (br $forever))))';

let runs = 0;
const message = (key: string, abi: RunMessage['abi'], params: unknown = {}): RunMessage => ({
  type: 'run',
  id: `run-${++runs}`,
  key,
  abi,
  input: JSON.stringify(params),
  env: {},
  maxPages: 1024,
});

describe('wasm worker pool', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-wasm-pool-test-'));
  const pool = new WorkerPool(buildBundle('wasm-worker', runtime), 1, 4);
  let greet: WebAssembly.Module;
  let loop: WebAssembly.Module;

  before(async () => {
    assert.equal(await pool.ready(), true);
    greet = await WebAssembly.compile(readFileSync(new URL('../../../examples/wasm/greet.wasm', import.meta.url)));
    loop = await WebAssembly.compile(Buffer.from(await wat(LOOP), 'base64'));
  });
  after(async () => {
    await pool.close();
    rmSync(runtime, { recursive: true, force: true });
  });

  it('queues short runs for its workers instead of adding workers for them', async () => {
    const calls = Array.from({ length: 6 }, (_, i) =>
      pool.run(message('greet', 'reactor', { name: `n${i}` }), greet, Date.now() + 30_000, () => {}),
    );
    // Every worker busy, but with runs that have only just started: none added.
    assert.equal(pool.workers, 1);
    assert.deepEqual(
      await Promise.all(calls),
      calls.map((_, i) => ({ kind: 'result', result: { greeting: `Hello n${i}`, language: 'AssemblyScript' } })),
    );
  });

  it('adds a worker for a long run, so that a short run waiting behind it is served before the long one ends', async () => {
    const finished: string[] = [];
    const looping = pool
      .run(message('loop', 'command'), loop, Date.now() + 3000, () => {})
      .then((outcome) => {
        finished.push('loop');
        return outcome;
      });
    const short: RunOutcome = await pool.run(
      message('greet', 'reactor', { name: 'behind' }),
      greet,
      Date.now() + 30_000,
      () => {},
    );
    finished.push('greet');
    assert.deepEqual(short, { kind: 'result', result: { greeting: 'Hello behind', language: 'AssemblyScript' } });
    assert.equal(pool.workers, 2);
    assert.deepEqual(await looping, { kind: 'timeout' });
    assert.deepEqual(finished, ['greet', 'loop']);
  });
});
