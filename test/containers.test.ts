import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { findBinary } from '../src/sandbox/container/runtime.js';
import { RUNNING_AS_ROOT } from '../src/sandbox/host-ids.js';
import { annotation, TestServer } from './helpers/server.js';

// Each runtime in a server of its own; runsc serves isolation "gvisor" next to runc.
const SETUPS = [
  { runtime: 'runc', isolation: 'container', env: { ISOLA_BACKENDS: 'container,gvisor', ISOLA_CONTAINER_RUNTIME: 'runc' } },
  { runtime: 'crun', isolation: 'container', env: { ISOLA_BACKENDS: 'container', ISOLA_CONTAINER_RUNTIME: 'crun' } },
  { runtime: 'runsc', isolation: 'gvisor', env: { ISOLA_BACKENDS: 'container,gvisor', ISOLA_CONTAINER_RUNTIME: 'runc' } },
] as const;

function skipReason(runtime: string): string | undefined {
  if (!RUNNING_AS_ROOT) return 'containers need root here';
  if (!findBinary(runtime)) return `${runtime} is not installed (npx isola setup containers)`;
  return undefined;
}

const servers = new Map<string, TestServer>();
async function serverFor(key: string, env: Record<string, string>): Promise<TestServer> {
  let server = servers.get(key);
  if (!server) {
    server = await TestServer.start({ env: { ...env, ISOLA_PREWARM: 'container:1,gvisor:1' } });
    servers.set(key, server);
  }
  return server;
}

/** Everything a server leaves of its containers: runtime state, bundles, cgroups named after it. */
function leftovers(dataDir: string, serverPids: number[]): string[] {
  const found: string[] = [];
  for (const runtime of ['runc', 'crun', 'runsc']) {
    const bundles = join(dataDir, 'containers', runtime);
    if (existsSync(bundles)) found.push(...readdirSync(bundles).map((b) => `bundle ${runtime}/${b}`));
    const state = join(dataDir, 'run', runtime);
    const binary = findBinary(runtime);
    if (existsSync(state) && binary) {
      const args = ['--root', state, 'list', '--quiet'];
      const listed = execFileSync(binary, args, { encoding: 'utf8' }).trim();
      if (listed) found.push(...listed.split('\n').map((id) => `container ${runtime}/${id}`));
    }
  }
  for (const controller of readdirSync('/sys/fs/cgroup')) {
    const parent = join('/sys/fs/cgroup', controller, 'isola');
    if (!existsSync(parent)) continue;
    for (const entry of readdirSync(parent)) {
      if (serverPids.some((pid) => entry.startsWith(`isola-${pid}-`))) found.push(`cgroup ${controller}/isola/${entry}`);
    }
  }
  return found;
}

for (const setup of SETUPS) {
  const reason = skipReason(setup.runtime);
  describe(`isolation "${setup.isolation}" on ${setup.runtime}`, { skip: reason ?? false }, () => {
    let server: TestServer;
    const deploy = (name: string, code: string, limits: Record<string, number> = {}) =>
      server.deploy(name, code, {
        limits: { memory: 128, timeout: 10_000, ...limits },
        annotations: [{ key: 'isolation', value: setup.isolation }],
      });
    const run = async (name: string, params = {}) => (await server.invoke<ActivationRecord>(name, params)).body;
    const result = async (name: string, params = {}) => (await run(name, params)).response.result as Record<string, unknown>;

    before(async () => {
      server = await serverFor(setup.runtime === 'crun' ? 'crun' : 'runc', setup.env);
    });

    it('deploys and invokes, cold then warm, with Node.js modules available', async () => {
      const res = await deploy(
        `hello-${setup.runtime}`,
        'const os = require("os"); function main(p) { console.log("in", os.hostname()); return { hi: p.name, uid: process.getuid() }; }',
      );
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const cold = await run(`hello-${setup.runtime}`, { name: 'c' });
      const { uid } = cold.response.result as { uid: number };
      assert.ok(uid !== 0, 'not root');
      assert.deepEqual(cold.response.result, { hi: 'c', uid });
      assert.equal(annotation(cold, 'coldStart'), true);
      assert.equal(annotation(cold, 'isolation'), setup.isolation);
      assert.match(cold.logs.join('\n'), /stdout: in isola/);
      const warm = await run(`hello-${setup.runtime}`, { name: 'w' });
      assert.equal(annotation(warm, 'coldStart'), false);
      assert.deepEqual(warm.response.result, { hi: 'w', uid });
    });

    it('loads a function of several megabytes (more than a pipe holds) and a large payload', async () => {
      // 6 MB of code: the init frame fills the container's stdin FIFO many times over.
      const big = `const TABLE = "${'x'.repeat(6 * 1024 * 1024)}";\nfunction main(p) { return { size: TABLE.length, echoed: p.blob.length }; }`;
      assert.equal((await deploy(`big-${setup.runtime}`, big, { memory: 256 })).status, 200);
      const res = await run(`big-${setup.runtime}`, { blob: 'y'.repeat(512 * 1024) });
      assert.deepEqual(res.response.result, { size: 6 * 1024 * 1024, echoed: 512 * 1024 }, JSON.stringify(res.response));
    });

    it('kills the container at the timeout and serves the next call', async () => {
      await deploy(`spin-${setup.runtime}`, 'function main(p) { if (p.spin) while (true) {} return { ok: true }; }', {
        timeout: 1500,
      });
      const started = Date.now();
      const res = await run(`spin-${setup.runtime}`, { spin: true });
      assert.equal(res.response.status, 'action developer error');
      assert.equal(annotation(res, 'timeout'), true);
      assert.ok(Date.now() - started < 10_000);
      assert.deepEqual(await result(`spin-${setup.runtime}`), { ok: true });
    });

    it('ends a memory bomb in an out-of-memory activation', async () => {
      await deploy(
        `bomb-${setup.runtime}`,
        'function main() { const keep = []; for (;;) keep.push(Buffer.alloc(1 << 20, 1)); }',
        { timeout: 20_000 },
      );
      const res = await run(`bomb-${setup.runtime}`);
      assert.equal(res.response.status, 'action developer error');
      assert.match(String((res.response.result as { error: string }).error), /exhausted its memory limit of 128 MB/);
    });

    it('contains a fork bomb', async () => {
      await deploy(
        `fork-${setup.runtime}`,
        'const cp = require("child_process"); function main() { let started = 0, refused = 0; for (let i = 0; i < 300; i++) { try { const c = cp.spawn("/usr/bin/node", ["-e", "setTimeout(() => {}, 20000)"]); c.on("error", () => refused++); started++; } catch { refused++; } } return new Promise((r) => setTimeout(() => r({ started, refused }), 1500)); }',
        { timeout: 30_000 },
      );
      const res = await run(`fork-${setup.runtime}`);
      // Contained either way: the task limit refuses spawns, or the spawned processes exhaust the
      // container's memory first and the container is killed.
      if (res.response.status === 'success') {
        const counts = res.response.result as { started: number; refused: number };
        assert.ok(counts.refused > 0, `the task limit refused some of ${counts.started} spawns`);
      } else {
        assert.match(String((res.response.result as { error: string }).error), /exhausted its memory limit/);
      }
      const health = await server.request('GET', '/healthz', undefined, { auth: null });
      assert.equal(health.status, 200);
      assert.equal(
        (await run(`hello-${setup.runtime}`, { name: 'after' })).response.status,
        'success',
        'other functions still run',
      );
    });

    it('has no network: connecting to a port of the host on 127.0.0.1 fails', async () => {
      await deploy(
        `net-${setup.runtime}`,
        'const net = require("net"); function main(p) { return new Promise((r) => { const s = net.connect(p.port, "127.0.0.1"); s.on("connect", () => r({ connected: true })); s.on("error", (e) => r({ error: e.code })); }); }',
      );
      const port = Number(new URL(server.url).port);
      const outcome = await result(`net-${setup.runtime}`, { port });
      assert.equal(outcome.connected, undefined, `reached the server's port: ${JSON.stringify(outcome)}`);
      assert.ok(outcome.error);
    });

    it('cannot see host files, the data dir or host processes, and cannot write its root', async () => {
      await deploy(
        `peek-${setup.runtime}`,
        'const fs = require("fs"); const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } }; function main(p) { return { shadow: tryIt(() => fs.readFileSync("/etc/shadow", "utf8").length), dataDir: tryIt(() => fs.readdirSync(p.dataDir).length), processes: fs.readdirSync("/proc").filter((x) => /^\\d+$/.test(x)).length, writeRoot: tryIt(() => fs.writeFileSync("/app/owned", "x")), writeTmp: tryIt(() => (fs.writeFileSync("/tmp/ok", "x"), "ok")) }; }',
      );
      const outcome = await result(`peek-${setup.runtime}`, { dataDir: server.dataDir });
      assert.equal(outcome.shadow, 'ENOENT');
      assert.equal(outcome.dataDir, 'ENOENT');
      assert.ok(Number(outcome.processes) <= 3, `sees ${outcome.processes} processes`);
      assert.ok(['EROFS', 'EACCES'].includes(String(outcome.writeRoot)), `writing the root gave ${outcome.writeRoot}`);
      assert.equal(outcome.writeTmp, 'ok', '/tmp is writable');
    });
  });
}

describe('container cleanup', { skip: skipReason('runc') ?? false }, () => {
  it('leaves no containers, bundles or cgroups behind once the servers stop', async () => {
    const pids: number[] = [];
    for (const server of servers.values()) {
      pids.push(Number((await server.request<{ pid?: number }>('GET', '/healthz', undefined, { auth: null })).body.pid ?? 0));
      await server.stop();
    }
    for (const server of servers.values()) {
      assert.deepEqual(leftovers(server.dataDir, pids), []);
      await server.dispose();
    }
  });
});

after(async () => {
  for (const server of servers.values()) await server.dispose();
});
