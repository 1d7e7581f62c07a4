import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer } from './helpers/server.js';

// What every Node.js backend must do with functions that misbehave. Each runs against a real
// server; the platform must keep serving after each one.
const BACKENDS = [
  { isolation: 'isolate', memory: 64 },
  { isolation: 'process', memory: 128 },
] as const;

for (const { isolation, memory } of BACKENDS) {
  describe(`misbehaving functions under isolation "${isolation}"`, () => {
    let server: TestServer;
    const deploy = (name: string, code: string, limits: Record<string, number> = {}) =>
      server.deploy(name, code, {
        limits: { memory, timeout: 2000, ...limits },
        annotations: [{ key: 'isolation', value: isolation }],
      });
    const run = (name: string, params = {}) => server.invoke<ActivationRecord>(name, params);

    before(async () => {
      server = await TestServer.start({ env: { ISOLA_PREWARM: `${isolation}:1` } });
      const ok = await deploy('ok', 'function main(p) { return { ok: true, n: p.n ?? 0 }; }');
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    });
    after(async () => {
      await server.dispose();
    });

    it('reports a thrown error as an application error with the message and the stack in the logs', async () => {
      await deploy('throws', 'function main() { throw new Error("kaboom"); }');
      const res = await run('throws');
      assert.equal(res.status, 502);
      assert.equal(res.body.response.status, 'application error');
      assert.deepEqual(res.body.response.result, { error: 'kaboom' });
      assert.match(res.body.logs.join('\n'), /stderr: Error: kaboom/);
      assert.equal((await run('throws')).body.response.status, 'application error', 'the instance survives an exception');
    });

    it('passes a rejected object through as the error', async () => {
      await deploy('rejects', 'async function main() { throw { code: 42, reason: "no" }; }');
      const res = await run('rejects');
      assert.deepEqual(res.body.response.result, { error: { code: 42, reason: 'no' } });
    });

    it('stops an infinite loop at its timeout and serves the next call', async () => {
      await deploy('spin', 'function main(p) { if (p.spin) { while (true) {} } return { fine: true }; }', { timeout: 500 });
      const res = await run('spin', { spin: true });
      assert.equal(res.status, 502);
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(String((res.body.response.result as { error: string }).error), /exceeded its time limits of 500 milliseconds/);
      assert.equal(annotation(res.body, 'timeout'), true);
      // Stopped at its limit, not before it (the record's own duration, not a clock in the test).
      assert.ok(res.body.duration >= 450, `stopped after ${res.body.duration} ms`);
      const next = await run('spin');
      assert.deepEqual(next.body.response.result, { fine: true });
      assert.equal(annotation(next.body, 'coldStart'), true, 'the looping sandbox was replaced');
      assert.deepEqual((await run('ok', { n: 1 })).body.response.result, { ok: true, n: 1 });
    });

    it('stops a function awaiting a timer past its timeout', async () => {
      await deploy('sleepy', 'async function main() { await new Promise((r) => setTimeout(r, 60000)); return {}; }', {
        timeout: 400,
      });
      const res = await run('sleepy');
      // Ended by its limit, not by the timer it awaited (which would have made it a success).
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(String((res.body.response.result as { error: string }).error), /exceeded its time limits of 400 milliseconds/);
      assert.equal(annotation(res.body, 'timeout'), true);
    });

    it('ends unbounded allocation with an out-of-memory error and keeps serving', async () => {
      await deploy('hog', 'function main() { const keep = []; for (;;) keep.push(new Array(100000).fill(Math.random())); }', {
        timeout: 20000,
      });
      const res = await run('hog');
      assert.equal(res.status, 502);
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(
        String((res.body.response.result as { error: string }).error),
        new RegExp(`exhausted its memory limit of ${memory} MB`),
      );
      assert.deepEqual((await run('ok', { n: 2 })).body.response.result, { ok: true, n: 2 });
    });

    it('caps memory outside the heap too: ArrayBuffers past the limit fail, the server keeps serving', {
      skip: isolation === 'process' && process.getuid?.() !== 0 ? 'the process backend caps private memory only as root' : false,
    }, async () => {
      await deploy(
        'buffers',
        'function main() { const keep = []; let mb = 0; while (mb < 4 * 1024) { keep.push(new Uint8Array(8 << 20).fill(1)); mb += 8; } return { mb }; }',
        { timeout: 20000 },
      );
      const res = await run('buffers');
      assert.equal(res.body.response.success, false, `allocated past the limit: ${JSON.stringify(res.body.response)}`);
      assert.deepEqual((await run('ok', { n: 3 })).body.response.result, { ok: true, n: 3 });
    });

    it('rejects a result that is not a dictionary, and treats no result as {}', async () => {
      await deploy('number', 'function main() { return 42; }');
      const res = await run('number');
      assert.equal(res.body.response.status, 'action developer error');
      assert.deepEqual(res.body.response.result, { error: 'The action did not return a dictionary.' });
      await deploy('nothing', 'function main() {}');
      assert.deepEqual((await run('nothing')).body.response.result, {});
    });

    it('fails initialisation of code that does not parse or has no entry point', async () => {
      await deploy('syntax', 'function main( {');
      const res = await run('syntax');
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(
        String((res.body.response.result as { error: string }).error),
        /Initialization has failed due to: SyntaxError/,
      );
      assert.equal(annotation(res.body, 'coldStart'), true);
      await deploy('nomain', 'const x = 1;');
      const none = await run('nomain');
      assert.match(String((none.body.response.result as { error: string }).error), /no entry point "main"/);
    });

    it('supports exports.main, module.exports and a named entry point', async () => {
      await deploy('exported', 'exports.main = (p) => ({ via: "exports", x: p.x });');
      assert.deepEqual((await run('exported', { x: 1 })).body.response.result, { via: 'exports', x: 1 });
      await deploy('modexp', 'module.exports = async (p) => ({ via: "module.exports" });');
      assert.deepEqual((await run('modexp')).body.response.result, { via: 'module.exports' });
      const named = await server.deploy('named', 'function handler() { return { via: "handler" }; }', {
        exec: { main: 'handler' },
        limits: { memory },
        annotations: [{ key: 'isolation', value: isolation }],
      });
      assert.equal(named.status, 200);
      assert.deepEqual((await run('named')).body.response.result, { via: 'handler' });
    });

    it('serves concurrent invocations of one action on separate instances', async () => {
      await deploy('slow', 'async function main(p) { await new Promise((r) => setTimeout(r, 300)); return { i: p.i }; }');
      const results = await Promise.all([0, 1, 2].map((i) => run('slow', { i })));
      assert.deepEqual(
        results.map((r) => (r.body.response.result as { i: number }).i),
        [0, 1, 2],
      );
    });
  });
}

describe('process isolation specifics', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'process:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  it('lets functions require Node.js built-ins and passes OpenWhisk environment variables', async () => {
    await server.deploy(
      'builtin',
      'const os = require("os"); function main() { return { platform: os.platform(), id: process.env.__OW_ACTIVATION_ID, ns: process.env.__OW_NAMESPACE }; }',
      {
        limits: { memory: 128 },
        annotations: [{ key: 'isolation', value: 'process' }],
      },
    );
    const res = await server.invoke<ActivationRecord>('builtin');
    const result = res.body.response.result as { platform: string; id: string; ns: string };
    assert.equal(result.platform, 'linux');
    assert.equal(result.id, res.body.activationId);
    assert.equal(result.ns, 'guest');
  });

  it('does not pass the server environment or data directory into the sandbox', async () => {
    await server.deploy(
      'peek',
      'const fs = require("fs"); function main(p) { let data; try { data = fs.readdirSync(p.dir).length; } catch (e) { data = e.code; } return { env: Object.keys(process.env).filter((k) => k.startsWith("ISOLA")), data, uid: process.getuid() }; }',
      { limits: { memory: 128 }, annotations: [{ key: 'isolation', value: 'process' }] },
    );
    const res = await server.invoke<ActivationRecord>('peek', { dir: server.dataDir });
    const result = res.body.response.result as { env: string[]; data: unknown; uid: number };
    assert.deepEqual(result.env, []);
    if (process.getuid?.() === 0) {
      assert.notEqual(result.uid, 0, 'the sandbox runs as another user');
      // Not readable (another user's) or not there at all (a data dir under the host's /tmp is
      // hidden behind the sandbox's private /tmp).
      assert.ok(result.data === 'EACCES' || result.data === 'ENOENT', `the sandbox read the data dir: ${String(result.data)}`);
    }
  });
});
