import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';
import { wat } from './helpers/wat.js';

const example = (file: string) => readFileSync(new URL(`../examples/wasm/${file}`, import.meta.url)).toString('base64');

// A reactor whose state would leak between invocations if instances were shared: it counts its
// calls in a global and answers {"count":N}.
const COUNTER = `(module
  (memory (export "memory") 1 1)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 0) "{\\"count\\":0}")
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param i32 i32) (result i64)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store8 (i32.const 9) (i32.add (i32.const 48) (global.get $calls)))
    (i64.const 11)))`;

// A WASI command writing a fixed JSON document to stdout, then exiting with the code it is given.
const command = (exitCode: number) => `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\\"from\\":\\"wat\\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const ${exitCode}))))`;

// A reactor whose result is nested 2,000 levels deep: {"a":{"a":...1...}}.
const DEPTH = 2000;
const DEEP = `(module
  (memory (export "memory") 1)
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 32768))
  (func (export "isola_handle") (param i32 i32) (result i64)
    (local $i i32)
    (loop $levels
      ;; {"a": at 5 * i, and } at 5 * DEPTH + 1 + i
      (i32.store8 (i32.mul (local.get $i) (i32.const 5)) (i32.const 123))
      (i32.store8 (i32.add (i32.mul (local.get $i) (i32.const 5)) (i32.const 1)) (i32.const 34))
      (i32.store8 (i32.add (i32.mul (local.get $i) (i32.const 5)) (i32.const 2)) (i32.const 97))
      (i32.store8 (i32.add (i32.mul (local.get $i) (i32.const 5)) (i32.const 3)) (i32.const 34))
      (i32.store8 (i32.add (i32.mul (local.get $i) (i32.const 5)) (i32.const 4)) (i32.const 58))
      (i32.store8 (i32.add (i32.const ${5 * DEPTH + 1}) (local.get $i)) (i32.const 125))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $levels (i32.lt_u (local.get $i) (i32.const ${DEPTH}))))
    (i32.store8 (i32.const ${5 * DEPTH}) (i32.const 49))
    (i64.const ${6 * DEPTH + 1})))`;

const LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop $forever (br $forever))))';

// Grows memory a page at a time; when growing fails (the limit), it traps as an allocator would.
const GROW = `(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))`;

describe('WebAssembly backend', () => {
  let server: TestServer;
  const deploy = (name: string, code: string, limits: Record<string, number> = {}, parameters: unknown[] = []) =>
    server.request<{ error?: string; annotations?: { key: string; value: unknown }[] }>(
      'PUT',
      `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
      { exec: { kind: 'wasm', code, binary: true }, limits: { timeout: 3000, ...limits }, parameters },
    );
  const run = (name: string, params = {}) => server.invoke<ActivationRecord>(name, params);
  /** Instances of a function that are running a call now, from the server's gauge. */
  const busy = async (name: string) => {
    const metrics = await server.metrics();
    const match = new RegExp(`^isola_function_instances\\{[^}]*action="${name}"[^}]*state="busy"[^}]*\\} (\\d+)`, 'm').exec(
      metrics,
    );
    return Number(match?.[1] ?? 0);
  };

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_WASM_WORKERS: '2' } });
  });
  after(async () => {
    await server.dispose();
  });

  it('runs the AssemblyScript reactor example, defaulting to isolation wasm', async () => {
    const res = await deploy('greet', example('greet.wasm'));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(annotation(res.body as { annotations: { key: string; value: unknown }[] }, 'isolation'), 'wasm');
    const cold = await run('greet', { name: 'Ada' });
    assert.deepEqual(cold.body.response.result, { greeting: 'Hello Ada', language: 'AssemblyScript' });
    assert.equal(annotation(cold.body, 'coldStart'), true);
    assert.match(cold.body.logs.join('\n'), /stderr: greeting Ada/);
    const warm = await run('greet', { name: 'Bo' });
    assert.equal(annotation(warm.body, 'coldStart'), false);
    assert.deepEqual(warm.body.response.result, { greeting: 'Hello Bo', language: 'AssemblyScript' });
  });

  it('runs the C command example with parameters as JSON on stdin and in the environment', async () => {
    assert.equal((await deploy('wordcount', example('wordcount.wasm'), {}, [{ key: 'GREETING', value: 'hej' }])).status, 200);
    const res = await run('wordcount', { text: 'one two  three' });
    assert.deepEqual(res.body.response.result, { words: 3, characters: 14, greeting: 'hej', language: 'C' });
    assert.match(res.body.logs.join('\n'), /stderr: counted 3 words in 14 characters/);
  });

  it('runs the Rust reactor example', async () => {
    assert.equal((await deploy('fib', example('fib.wasm'))).status, 200);
    const res = await run('fib', { n: 50 });
    assert.deepEqual(res.body.response.result, { n: 50, fib: '12586269025', language: 'Rust' });
    assert.match(res.body.logs.join('\n'), /computing fib\(50\)/);
  });

  it('runs a WASI command module and reports a non-zero exit as an application error', async () => {
    await deploy('cmd', await wat(command(0)));
    assert.deepEqual((await run('cmd')).body.response.result, { from: 'wat' });
    await deploy('cmd-fails', await wat(command(3)));
    const failed = await run('cmd-fails');
    assert.equal(failed.body.response.status, 'application error');
    assert.deepEqual(failed.body.response.result, { error: 'The module exited with code 3.' });
  });

  it('gives every invocation a fresh instance, even concurrent ones', async () => {
    await deploy('counter', await wat(COUNTER), { concurrency: 1 });
    const results = await Promise.all(Array.from({ length: 6 }, () => run('counter')));
    for (const res of results) assert.deepEqual(res.body.response.result, { count: 1 });
    assert.deepEqual((await run('counter')).body.response.result, { count: 1 });
  });

  it('ends an infinite loop at its timeout and serves the next call', async () => {
    await deploy('loop', await wat(LOOP), { timeout: 300 });
    const res = await run('loop');
    assert.equal(res.body.response.status, 'action developer error');
    assert.match(String((res.body.response.result as { error: string }).error), /exceeded its time limits of 300 milliseconds/);
    assert.deepEqual((await run('greet', { name: 'after' })).body.response.result, {
      greeting: 'Hello after',
      language: 'AssemblyScript',
    });
    // Every worker busy looping: the pool grows, and a call made meanwhile is answered before
    // the loops reach their timeout instead of queueing behind them.
    await deploy('long-loop', await wat(LOOP), { timeout: 3000 });
    const finished: string[] = [];
    const track = async (label: string, call: Promise<unknown>) => {
      await call;
      finished.push(label);
    };
    const loops = [track('loop', run('long-loop')), track('loop', run('long-loop')), track('loop', run('long-loop'))];
    await waitFor('the three loops to run', async () => ((await busy('long-loop')) === 3 ? true : undefined));
    await track('greet', run('greet', { name: 'x' }));
    await Promise.all(loops);
    assert.deepEqual(finished, ['greet', 'loop', 'loop', 'loop']);
  });

  it('answers at once, with a recorded error, a call whose result is nested thousands of levels deep', async () => {
    await deploy('deep', await wat(DEEP), { timeout: 30_000 });
    const res = await run('deep');
    // The worker hands the result over and the platform refuses to store what is nested deeper
    // than MAX_JSON_DEPTH: the function's error, recorded, long before the 30 s timeout.
    assert.equal(res.status, 502, JSON.stringify(res.body).slice(0, 300));
    assert.equal(res.body.response.status, 'action developer error');
    assert.match(String((res.body.response.result as { error: string }).error), /nested more deeply than the 512 levels/);
    assert.equal(annotation(res.body, 'timeout'), undefined);
    const stored = await server.request('GET', `/api/v1/namespaces/_/activations/${res.body.activationId}`);
    assert.equal(stored.status, 200);
  });

  it('stops memory growth at the memory limit with a clear error', async () => {
    await deploy('grow', await wat(GROW), { memory: 16 });
    const res = await run('grow');
    assert.equal(res.body.response.status, 'action developer error');
    assert.match(String((res.body.response.result as { error: string }).error), /exhausted its memory limit of 16 MB/);
  });

  it('rejects at deploy a module that starts with more memory than its limit', async () => {
    const res = await deploy('big', await wat('(module (memory (export "memory") 512) (func (export "_start")))'), {
      memory: 16,
    });
    assert.equal(res.status, 400);
    assert.match(res.body.error ?? '', /starts with 32 MB of memory, more than its memory limit of 16 MB/);
  });

  it('rejects at deploy a malformed module, a missing import and a module with no entry point', async () => {
    const garbage = await deploy('garbage', Buffer.from('definitely not wasm').toString('base64'));
    assert.equal(garbage.status, 400);
    assert.match(garbage.body.error ?? '', /malformed/);
    const truncated = Buffer.from(await wat(COUNTER), 'base64')
      .subarray(0, 40)
      .toString('base64');
    assert.equal((await deploy('truncated', truncated)).status, 400);
    const imports = await deploy(
      'imports',
      await wat('(module (import "env" "launch_missiles" (func)) (func (export "_start")))'),
    );
    assert.equal(imports.status, 400);
    assert.match(imports.body.error ?? '', /imports env\.launch_missiles \(function\), which Isola does not provide/);
    const sockets = await deploy(
      'sockets',
      await wat('(module (import "wasi_snapshot_preview2" "connect" (func)) (func (export "_start")))'),
    );
    assert.equal(sockets.status, 400);
    const noEntry = await deploy('noentry', await wat('(module (func (export "compute")))'));
    assert.equal(noEntry.status, 400);
    assert.match(noEntry.body.error ?? '', /neither a WASI command entry point/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/garbage')).status, 404, 'nothing was stored');
  });

  it('reports a trap as an application error', async () => {
    await deploy('trap', await wat('(module (memory (export "memory") 1) (func (export "_start") unreachable))'));
    const res = await run('trap');
    assert.equal(res.body.response.status, 'application error');
    assert.match(String((res.body.response.result as { error: string }).error), /RuntimeError: unreachable/);
  });

  it('refuses JavaScript under isolation wasm and wasm under another isolation', async () => {
    const js = await server.request<{ error: string }>('PUT', '/api/v1/namespaces/_/actions/jswasm?overwrite=true', {
      exec: { kind: 'nodejs:20', code: 'function main() {}' },
      annotations: [{ key: 'isolation', value: 'wasm' }],
    });
    assert.equal(js.status, 400);
    const wasmIsolate = await server.request<{ error: string }>('PUT', '/api/v1/namespaces/_/actions/wasmjs?overwrite=true', {
      exec: { kind: 'wasm', code: example('greet.wasm'), binary: true },
      annotations: [{ key: 'isolation', value: 'isolate' }],
    });
    assert.equal(wasmIsolate.status, 400);
  });

  // Last: it stops the server, to read everything it printed.
  it("prints nothing of its own into the server's output while running modules", async () => {
    // The C example asks WASI for its arguments and environment, which the shim's debug mode logs.
    assert.equal((await run('wordcount', { text: 'a b' })).body.response.status, 'success');
    assert.equal((await run('greet', { name: 'quiet' })).body.response.status, 'success');
    await server.stop();
    assert.doesNotMatch(server.output, /^wasi:/m);
  });
});
