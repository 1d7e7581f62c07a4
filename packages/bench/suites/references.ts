/**
 * What naming a function through OpenWhisk's resource model costs per warm invocation: one echo
 * action invoked (blocking, on one `isola serve`, isolate backend) by its plain name, as
 * `package/action`, through a binding, and as another namespace's shared action by its full name
 * (`/whisk.system/utils/echo`); rounds interleave the four so that the machine's noise falls on
 * all alike. Reported as medians and as ratios to the plain name measured in the same run.
 * Usage: npm run bench:references -- [--rounds N] [--out file]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ServerProcess } from '../../../test/helpers/server-process.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '300' },
    out: { type: 'string', default: join(ROOT, 'packages/bench/results/references.json') },
  },
});
const rounds = Number(values.rounds);
const ECHO = 'function main(params) { return params; }';

const server = await ServerProcess.start({ env: { ISOLA_BACKENDS: 'isolate', ISOLA_PREWARM: 'isolate:0' } });
try {
  const ok = async (method: string, path: string, body?: unknown) => {
    const response = await server.request(method, path, body);
    if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`);
  };
  await ok('PUT', '/api/v1/namespaces/_/actions/echo', { exec: { kind: 'nodejs:20', code: ECHO } });
  await ok('PUT', '/api/v1/namespaces/_/packages/tools', { parameters: [{ key: 'p', value: 1 }] });
  await ok('PUT', '/api/v1/namespaces/_/actions/tools/echo', { exec: { kind: 'nodejs:20', code: ECHO } });
  await ok('PUT', '/api/v1/namespaces/_/packages/bound', {
    binding: { namespace: '_', name: 'tools' },
    parameters: [{ key: 'b', value: 2 }],
  });
  const paths: Record<string, string> = {
    plain: '/api/v1/namespaces/_/actions/echo',
    package: '/api/v1/namespaces/_/actions/tools/echo',
    binding: '/api/v1/namespaces/_/actions/bound/echo',
    shared: '/api/v1/namespaces/whisk.system/actions/utils/echo',
  };
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(paths).map((k) => [k, []]));
  const invoke = async (path: string) => {
    const start = process.hrtime.bigint();
    await ok('POST', `${path}?blocking=true&result=true`, { x: 1 });
    return Number(process.hrtime.bigint() - start) / 1e6;
  };
  // Warm every instance first: cold starts are not what is measured here.
  for (const path of Object.values(paths)) for (let i = 0; i < 5; i++) await invoke(path);
  for (let round = 0; round < rounds; round++) {
    const order = Object.keys(paths);
    // Rotate which goes first, so that no name always follows another.
    for (let i = 0; i < round % order.length; i++) order.push(order.shift() as string);
    for (const name of order) samples[name]?.push(await invoke(paths[name] as string));
  }
  const median = (list: number[]) => {
    const sorted = [...list].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)] as number;
  };
  const p90 = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length * 0.9)] as number;
  const plain = median(samples.plain as number[]);
  const results = Object.fromEntries(
    Object.entries(samples).map(([name, list]) => [
      name,
      { medianMs: +median(list).toFixed(3), p90Ms: +p90(list).toFixed(3), ratioToPlain: +(median(list) / plain).toFixed(3) },
    ]),
  );
  const report = { suite: 'references', date: new Date().toISOString(), rounds, backend: 'isolate', results };
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
} finally {
  await server.dispose();
}
