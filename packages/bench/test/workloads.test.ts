import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../../../src/core/types.js';
import { TestServer } from '../../../test/helpers/server.js';
import { ensureMlBundle, WORKLOADS, type Workload } from '../src/workloads.js';

/** The benchmark's workloads, run through the server: each works, and its builds agree. */
describe('benchmark workloads', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0,process:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  async function run(workload: Workload, isolation: string): Promise<Record<string, unknown>> {
    const name = `${workload.name}-${workload.kind === 'wasm' ? 'wasm' : isolation}`;
    const exec =
      workload.kind === 'wasm'
        ? { kind: 'wasm', code: workload.code(), binary: true }
        : { kind: 'nodejs:20', code: workload.code() };
    const deployed = await server.request('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
      exec,
      limits: { memory: workload.memoryMb, timeout: workload.timeoutMs },
      annotations: [{ key: 'isolation', value: workload.kind === 'wasm' ? 'wasm' : isolation }],
    });
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    const res = await server.invoke<ActivationRecord>(name, workload.params);
    assert.equal(res.body.response.success, true, `${name}: ${JSON.stringify(res.body.response)}`);
    return res.body.response.result as Record<string, unknown>;
  }

  for (const name of ['hello', 'json', 'compression', 'graph', 'thumbnail', 'fib']) {
    it(`${name}: the JavaScript version runs, and a WebAssembly build returns the same result`, async () => {
      const js = WORKLOADS.find((w) => w.name === name && w.kind === 'nodejs:20') as Workload;
      const expected = await run(js, 'isolate');
      assert.ok(Object.keys(expected).length > 0);
      const wasm = WORKLOADS.find((w) => w.name === name && w.kind === 'wasm');
      if (!wasm) return;
      const got = await run(wasm, 'wasm');
      // The examples say which language they were written in; everything else must agree.
      const { language: _language, ...rest } = got;
      if (name === 'fib') assert.equal(String(rest.fib), String(expected.fib));
      else assert.deepEqual(rest, expected);
    });
  }

  it('scratch: the JavaScript version writes and reads its /tmp, and the WebAssembly build returns the same result', async () => {
    const js = WORKLOADS.find((w) => w.name === 'scratch' && w.kind === 'nodejs:20') as Workload;
    const expected = await run(js, 'process');
    assert.equal(expected.readBack, true);
    const wasm = WORKLOADS.find((w) => w.name === 'scratch' && w.kind === 'wasm') as Workload;
    assert.deepEqual(await run(wasm, 'wasm'), expected);
  });

  it('ml: classifies an image with MobileNetV2 under the process backend', async () => {
    await ensureMlBundle();
    const ml = WORKLOADS.find((w) => w.name === 'ml') as Workload;
    const result = (await run(ml, 'process')) as {
      model: string;
      backend: string;
      predictions: { className: string; probability: number }[];
    };
    assert.equal(result.model, 'MobileNetV2');
    assert.equal(result.backend, 'wasm');
    assert.equal(result.predictions.length, 3);
    for (const p of result.predictions) assert.ok(p.probability >= 0 && p.probability <= 1 && p.className.length > 0);
    // The same image gives the same answer on a warm instance.
    const again = (await server.invoke<ActivationRecord>('ml-process', ml.params)).body.response.result as typeof result;
    assert.deepEqual(again.predictions, result.predictions);
  });
});
