import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cgroupPids } from '../packages/bench/src/pss.js';
import type { ActivationRecord } from '../src/core/types.js';
import { ensureNodeRootfs } from '../src/images/node-rootfs.js';
import { kernelCacheDir, specialisedKernelStatus } from '../src/images/specialised-kernel.js';
import { ContainerBackend } from '../src/sandbox/container/container-backend.js';
import { type ContainerLaunch, findBinary, OciRuntime } from '../src/sandbox/container/runtime.js';
import { cpuFlags } from '../src/sandbox/hardware.js';
import { pidAlive, RUNNING_AS_ROOT, sandboxUids } from '../src/sandbox/host-ids.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const ISOLA = fileURLToPath(new URL('../bin/isola.js', import.meta.url));

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

/** Everything of these servers' containers: runtime state, bundles, cgroups, all named after the server. */
function leftovers(dataDir: string, serverPids: number[]): string[] {
  const ours = (name: string) => serverPids.some((pid) => name.startsWith(`isola-${pid}-`));
  const found: string[] = [];
  for (const runtime of ['runc', 'crun', 'runsc']) {
    const bundles = join(dataDir, 'containers', runtime);
    if (existsSync(bundles))
      found.push(
        ...readdirSync(bundles)
          .filter(ours)
          .map((b) => `bundle ${runtime}/${b}`),
      );
    const state = join(dataDir, 'run', runtime);
    const binary = findBinary(runtime);
    if (existsSync(state) && binary) {
      const args = ['--root', state, 'list', '--quiet'];
      const listed = execFileSync(binary, args, { encoding: 'utf8' }).trim();
      if (listed)
        found.push(
          ...listed
            .split('\n')
            .filter(ours)
            .map((id) => `container ${runtime}/${id}`),
        );
    }
  }
  for (const controller of readdirSync('/sys/fs/cgroup')) {
    const parent = join('/sys/fs/cgroup', controller, 'isola');
    if (!existsSync(parent)) continue;
    for (const entry of readdirSync(parent).filter(ours)) found.push(`cgroup ${controller}/isola/${entry}`);
  }
  return found;
}

/** Runs `isola doctor` as a user would, with extra arguments and environment. */
function doctor(args: string[], env: Record<string, string> = {}): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [ISOLA, 'doctor', ...args],
      { env: { ...process.env, ...env }, timeout: 5 * 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

/** The host pid the runtime wrote down for the container that runs as `uid` (its bundle says which). */
/** The host pid of every container of a runtime in a data dir (the agent; under runsc the gVisor sandbox). */
function containerPids(dataDir: string, runtime: string): number[] {
  const bundles = join(dataDir, 'containers', runtime);
  const pids: number[] = [];
  for (const id of readdirSync(bundles)) {
    try {
      pids.push(Number(readFileSync(join(bundles, id, 'container.pid'), 'utf8')));
    } catch {
      // a bundle being made or removed
    }
  }
  return pids.filter((pid) => pid > 0);
}

/**
 * Kills every container of the runtime (the idle ones and those made ahead are replaced as
 * needed): the one running a call is among them, whichever it is. Under runsc the process the
 * runtime started is the gVisor sandbox (its kernel), else the agent.
 */
function killContainers(dataDir: string, runtime: string): void {
  const pids = containerPids(dataDir, runtime);
  assert.ok(pids.length > 0);
  for (const pid of pids) {
    let command: string;
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    assert.match(command, runtime === 'runsc' ? /runsc-sandbox/ : /agent\.cjs/);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** Instances of a function that are running a call now, from the server's gauge. */
async function busyInstances(server: TestServer, name: string): Promise<number> {
  const metrics = await server.metrics();
  const match = new RegExp(`^isola_function_instances\\{[^}]*action="${name}"[^}]*state="busy"[^}]*\\} (\\d+)`, 'm').exec(
    metrics,
  );
  return Number(match?.[1] ?? 0);
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
      const res = await run(`spin-${setup.runtime}`, { spin: true });
      assert.equal(res.response.status, 'action developer error');
      assert.equal(annotation(res, 'timeout'), true);
      // The next call needs a new container, made within the function's time limit: on a busy
      // host that can take longer than 1.5 s, so the next version allows more.
      await deploy(`spin-${setup.runtime}`, 'function main(p) { if (p.spin) while (true) {} return { ok: true }; }', {
        timeout: 60_000,
      });
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
      // Contained whichever limit acts first: the task limit refuses spawns, the spawned processes
      // exhaust the container's memory and it is killed, or (on a busy host, where 300 spawns are
      // slow) the run reaches its time limit and the container is killed.
      if (res.response.status === 'success') {
        const counts = res.response.result as { started: number; refused: number };
        assert.ok(counts.refused > 0, `the task limit refused some of ${counts.started} spawns`);
      } else {
        assert.match(
          String((res.response.result as { error: string }).error),
          /exhausted its memory limit|exceeded its time limits/,
        );
      }
      const health = await server.request('GET', '/healthz', undefined, { auth: null });
      assert.equal(health.status, 200);
      assert.equal(
        (await run(`hello-${setup.runtime}`, { name: 'after' })).response.status,
        'success',
        'other functions still run',
      );
    });

    it('records a failure when the sandbox process is killed mid-call, and serves the next call', async () => {
      const name = `slow-${setup.runtime}`;
      await deploy(
        name,
        'function main(p) { return new Promise((r) => setTimeout(() => r({ done: p.n, uid: process.getuid() }), p.wait)); }',
        { timeout: 60_000 },
      );
      await result(name, { n: 0, wait: 0 });
      let settled = false;
      const pending = server.invoke<ActivationRecord>(name, { n: 1, wait: 50_000 }).finally(() => {
        settled = true;
      });
      // A run whose sandbox dies before the agent acknowledged it never began, and the platform
      // rightly places it again: so kill again whenever the call is still running on some
      // instance after the last kill, until it ends (a kill after the acknowledgement ends it).
      for (let round = 0; !settled; round++) {
        assert.ok(round < 5, 'the call ends once its running sandbox is killed');
        const running = await waitFor('the call to be running, or to end', async () =>
          settled ? false : (await busyInstances(server, name)) === 1 ? true : undefined,
        ).catch(() => false);
        if (!running) break;
        killContainers(server.dataDir, setup.runtime);
        await waitFor('the call to end', async () => (settled ? true : undefined), 5_000).catch(() => undefined);
      }
      const res = await pending;
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(String((res.body.response.result as { error: string }).error), /did not complete/);
      const stored = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${res.body.activationId}`);
      assert.equal(stored.status, 200);
      assert.equal(stored.body.response.status, 'action developer error');
      const next = await run(name, { n: 2, wait: 0 });
      assert.equal(next.response.status, 'success', JSON.stringify(next.response));
      assert.equal((next.response.result as { done: number }).done, 2);
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

describe('the container backend, in this process', { skip: skipReason('runc') ?? false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'isola-container-backend-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const image = () => ensureNodeRootfs(join(dir, 'images'), join(dir, 'runtime'));
  const runc = findBinary('runc') as string;
  /** The real uid allocator, counting the leases this backend holds. */
  const countedUids = () => {
    const real = sandboxUids();
    const held = new Set<number>();
    return {
      held,
      acquire: () => {
        const uid = real.acquire();
        held.add(uid);
        return uid;
      },
      release: (uid: number) => {
        held.delete(uid);
        real.release(uid);
      },
    };
  };

  it('gives back the uid lease and the bundle when a container fails before it exists', async () => {
    class SpawnFails extends OciRuntime {
      override spawnContainer(): never {
        throw new Error('spawn failed');
      }
    }
    const uids = countedUids();
    const bundlesDir = join(dir, 'failing-bundles');
    const backend = await ContainerBackend.open({
      isolation: 'container',
      runtime: new SpawnFails('runc', runc, join(dir, 'failing-state'), false),
      image: image(),
      bundlesDir,
      uids,
    });
    await assert.rejects(backend.create({ memoryMb: 128 }), /spawn failed/);
    assert.deepEqual([...uids.held], [], 'no uid lease is held');
    assert.deepEqual(readdirSync(bundlesDir), [], 'no bundle is left');
  });

  it('never signals the pid it read once the container is gone', async () => {
    // A process that has the pid the pid file named, as after the container exited and its pid
    // was reused.
    const bystander = spawn('sleep', ['600'], { stdio: 'ignore' });
    after(() => bystander.kill('SIGKILL'));
    class PidReused extends OciRuntime {
      override spawnContainer(how: ContainerLaunch, id: string, bundle: string, pidFile: string, stdinFd: number) {
        const child = super.spawnContainer(how, id, bundle, pidFile, stdinFd);
        child.once('exit', () => writeFileSync(pidFile, String(bystander.pid)));
        return child;
      }
    }
    const runtime = new PidReused('runc', runc, join(dir, 'reused-state'), false);
    const bundlesDir = join(dir, 'reused-bundles');
    const backend = await ContainerBackend.open({
      isolation: 'container',
      runtime,
      image: image(),
      bundlesDir,
      uids: countedUids(),
    });
    const sandbox = await backend.create({ memoryMb: 128 });
    const [id] = readdirSync(bundlesDir);
    // The container ends on its own; the platform then cleans up after it.
    await runtime.kill(id as string);
    await waitFor('the container to be cleaned up', async () => (readdirSync(bundlesDir).length === 0 ? true : undefined));
    assert.equal(sandbox.alive, false);
    assert.ok(pidAlive(bystander.pid as number), 'the process that has the pid now was not signalled');
    // Destroying it again signals nothing either.
    await sandbox.destroy();
    assert.ok(pidAlive(bystander.pid as number));
  });
});

describe('isola doctor on a live data dir', { skip: skipReason('runc') ?? false }, () => {
  it("removes only what a dead server left, never a running server's containers", async () => {
    const live = await serverFor('runc', SETUPS[0].env);
    const livePid = Number((await live.request<{ pid: number }>('GET', '/healthz', undefined, { auth: null })).body.pid);
    const fn = 'doctor-neighbour';
    await live.deploy(fn, 'function main() { return { uid: process.getuid() }; }', {
      limits: { memory: 128, timeout: 10_000 },
      annotations: [{ key: 'isolation', value: 'container' }],
    });
    const first = (await live.invoke<ActivationRecord>(fn)).body;
    const { uid } = first.response.result as { uid: number };

    // Another server runs a container and is killed: what it leaves is what a crashed server
    // leaves. It has a data dir of its own (a live server's data dir is locked to it); cgroups
    // are host-wide, so a doctor on any data dir sees the dead one's.
    const dead = await TestServer.start({
      env: { ISOLA_BACKENDS: 'container', ISOLA_CONTAINER_RUNTIME: 'runc', ISOLA_PREWARM: 'container:1' },
    });
    after(() => dead.dispose());
    const deadPid = dead.pid as number;
    await dead.deploy('doctor-victim', 'function main() { return {}; }', {
      limits: { memory: 128, timeout: 10_000 },
      annotations: [{ key: 'isolation', value: 'container' }],
    });
    assert.equal((await dead.invoke<ActivationRecord>('doctor-victim')).body.response.status, 'success');
    await dead.kill();
    // Its containers die with it: their agents read the end of their input.
    const running = () =>
      readdirSync(existsSync('/sys/fs/cgroup/memory/isola') ? '/sys/fs/cgroup/memory/isola' : '/sys/fs/cgroup/isola')
        .filter((entry) => entry.startsWith(`isola-${deadPid}-`))
        .flatMap((entry) => cgroupPids(`/isola/${entry}`));
    await waitFor("the killed server's containers to exit", async () => (running().length === 0 ? true : undefined));
    assert.notDeepEqual(leftovers(dead.dataDir, [deadPid]), [], 'the killed server left containers behind');
    const liveThings = leftovers(live.dataDir, [livePid]);
    assert.ok(liveThings.length > 0);

    const byFlag = await doctor(['--data-dir', live.dataDir], { COLUMNS: '300' });
    assert.equal(byFlag.code, 0, byFlag.output);
    // Per working backend, the kinds it runs here and why not the others.
    assert.match(
      byFlag.output,
      /^isolate\s+nodejs:20\s+python:3, java:17, go:1\.19, ruby:3\.1, php:8\.2, native, wasm: V8 isolates run JavaScript only\s*$/m,
    );
    assert.match(
      byFlag.output,
      /^container\s+nodejs:20, python:3, java:17, go:1\.19, ruby:3\.1, php:8\.2, native\s+wasm: runs under wasm only\s*$/m,
    );
    // As root with ip and nft (this suite runs as root), egress can be given.
    assert.match(
      byFlag.output,
      /^Egress \(annotation network: egress\): available on process, container, gvisor, microvm and vm\.$/m,
    );
    // Hardware-assisted isolation: a row per feature, each saying whether the CPU offers it here.
    const flags = cpuFlags(readFileSync('/proc/cpuinfo', 'utf8'));
    const keys = flags.has('pku') && flags.has('ospke') ? 'offered' : 'not offered';
    assert.match(byFlag.output, new RegExp(`^memory protection keys \\(PKU/MPK\\)\\s+${keys}\\s+(used|not used)\\s`, 'm'));
    for (const feature of [
      'virtualisation \\(VT-x/AMD-V\\)',
      'AMD SEV',
      'Intel TDX',
      'Intel SGX',
      'control-flow enforcement \\(CET\\)',
    ])
      assert.match(byFlag.output, new RegExp(`^${feature}.*\\s+(offered|not offered)\\s+(used|not used)\\s`, 'm'));
    // The specialised guest kernel: built, buildable or why not, whichever is true of this host.
    const kernel = specialisedKernelStatus(kernelCacheDir(process.env));
    assert.ok(
      byFlag.output.includes(
        `The microVM's specialised guest kernel (ISOLA_MICROVM_GUEST=specialised): ${kernel.detail.slice(0, 40)}`,
      ),
      byFlag.output,
    );
    const stillThere = leftovers(live.dataDir, [livePid]);
    assert.deepEqual(
      liveThings.filter((thing) => !stillThere.includes(thing)),
      [],
      "the live server's containers are all still there",
    );
    const again = (await live.invoke<ActivationRecord>(fn)).body;
    assert.equal(annotation(again, 'coldStart'), false, 'served by the same container');
    assert.deepEqual(again.response.result, { uid });
    const onDeadDir = await doctor(['--data-dir', dead.dataDir]);
    assert.equal(onDeadDir.code, 0, onDeadDir.output);
    assert.deepEqual(leftovers(dead.dataDir, [deadPid]), [], "the dead server's containers, bundles and cgroups are gone");

    const byEnv = await doctor([], { ISOLA_DATA_DIR: live.dataDir });
    assert.equal(byEnv.code, 0, byEnv.output);
    const third = (await live.invoke<ActivationRecord>(fn)).body;
    assert.equal(annotation(third, 'coldStart'), false, 'served by the same container');
    assert.deepEqual(third.response.result, { uid });
  });
});

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
