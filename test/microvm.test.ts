import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { kernelCacheDir, missingForKernelBuild } from '../src/images/specialised-kernel.js';
import { pidAlive } from '../src/sandbox/host-ids.js';
import { callInChild, sourceUrl } from '../src/sandbox/in-child.js';
import { QEMU } from '../src/sandbox/microvm/vm.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const skip = existsSync(QEMU) ? false : 'QEMU is not installed (npx isola setup microvm)';

/** QEMU processes of this server's VMs, by the pid files in their directories. */
function vmPids(dataDir: string, isolation: string): { dir: string; pid: number }[] {
  const vms = join(dataDir, isolation, 'vms');
  if (!existsSync(vms)) return [];
  return readdirSync(vms)
    .map((dir) => {
      try {
        return { dir, pid: Number(readFileSync(join(vms, dir, 'qemu.pid'), 'utf8')) };
      } catch {
        return { dir, pid: 0 };
      }
    })
    .filter((v) => v.pid > 0 && pidAlive(v.pid));
}

/** The function snapshots of a data dir that are complete. */
function functionSnapshots(dataDir: string, isolation: string): string[] {
  const root = join(dataDir, isolation);
  return readdirSync(root)
    .filter((d) => d.startsWith('snapshots-'))
    .flatMap((d) => readdirSync(join(root, d)).map((e) => join(root, d, e)))
    .filter((dir) => dir.includes('/fn-') && existsSync(join(dir, '.complete')));
}

// The microvm machine, and the q35 machine with firmware and PCI devices (isolation vm): one guest,
// the same limits, death and cleanup; and the microvm machine booting the specialised kernel.
const kernelMissing = missingForKernelBuild();
const CONFIGURATIONS = [
  { isolation: 'microvm', guest: 'debian', skip },
  { isolation: 'vm', guest: 'debian', skip },
  {
    isolation: 'microvm',
    guest: 'specialised',
    skip: skip || (kernelMissing ? `the specialised kernel cannot be built: ${kernelMissing} (npx isola setup kernel)` : false),
  },
] as const;

for (const { isolation, guest, skip } of CONFIGURATIONS)
  describe(`isolation "${isolation}"${guest === 'specialised' ? ' with the specialised guest kernel' : ''}`, { skip }, () => {
    const dataDir = mkdtempSync(join(tmpdir(), `isola ${isolation} ${guest} `));
    let server: TestServer;
    const deploy = (name: string, code: string, extra: Record<string, unknown> = {}) =>
      server.deploy(name, code, {
        limits: { memory: 256, timeout: 30_000 },
        annotations: [{ key: 'isolation', value: isolation }],
        ...extra,
      });
    const run = async (name: string, params = {}) => (await server.invokeToEnd<ActivationRecord>(name, params)).body;
    const gauge = async (pattern: RegExp) => {
      const metrics = await server.metrics();
      let total = 0;
      for (const match of metrics.matchAll(pattern)) total += Number(match[1]);
      return total;
    };
    /** Instances of a function running a call now. */
    const busy = (name: string) =>
      gauge(new RegExp(`^isola_function_instances\\{[^}]*action="${name}"[^}]*state="busy"[^}]*\\} (\\d+)`, 'gm'));
    /** Every live microVM instance. */
    const instances = () => gauge(new RegExp(`^isola_instances\\{[^}]*isolation="${isolation}"[^}]*\\} (\\d+)`, 'gm'));

    before(async () => {
      // The specialised kernel is built once per host (minutes) before the server starts, so that
      // its start waits only for the root disk; a second run finds it in the kernel cache.
      if (guest === 'specialised')
        await callInChild(sourceUrl('../src/images/specialised-kernel', import.meta.url), 'ensureSpecialisedKernel', [
          kernelCacheDir(process.env),
        ]);
      // No VMs made ahead: every cold start below restores a clone into a fresh QEMU. A space in
      // the data dir's path: nothing that handles paths may go through a shell.
      server = await TestServer.start({
        dataDir: dataDir,
        env: { ISOLA_BACKENDS: isolation, ISOLA_PREWARM: `${isolation}:0`, ISOLA_MICROVM_GUEST: guest },
      });
    });
    after(async () => {
      await server?.dispose();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('restores a clone from the snapshot for a cold start, then serves warm', async () => {
      const res = await deploy(
        'vm-hello',
        'const os = require("os"); function main(p) { return { hi: p.name, kernel: os.release(), cpus: os.cpus().length }; }',
      );
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const cold = await run('vm-hello', { name: 'vm' });
      assert.equal(cold.response.status, 'success', JSON.stringify(cold.response));
      const result = cold.response.result as { hi: string; kernel: string; cpus: number };
      assert.equal(result.hi, 'vm');
      assert.match(result.kernel, guest === 'specialised' ? /-isola$/ : /cloud-amd64/, 'the guest runs its own kernel');
      assert.equal(annotation(cold, 'coldStart'), true);
      const warm = await run('vm-hello', { name: 'again' });
      assert.equal(annotation(warm, 'coldStart'), false);
      assert.deepEqual((warm.response.result as { hi: string }).hi, 'again');
    });

    // Only the specialised guest has a kernel of its own making to check.
    if (guest === 'specialised')
      it('boots the kernel built from linux-source, without modules or an initramfs, the runtime as PID 1', async () => {
        await deploy(
          'vm-guest',
          'const fs = require("fs"); const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } };' +
            // Answered from a timer: a guest kernel without a working clock event never fires one.
            'function main() { return new Promise((r) => setTimeout(() => r({ pid: process.pid, release: require("os").release(), modules: tryIt(() => fs.readFileSync("/proc/modules", "utf8")), cmdline: fs.readFileSync("/proc/cmdline", "utf8"), clock: busyClock() }), 100)); }' +
            // Seconds of work on the guest's one CPU, then its clocksource: the watchdog once took
            // a busy guest's TSC for unstable and fell back to jiffies (a 4 ms clock).
            'function busyClock() { const start = Date.now(); let x = 1; while (Date.now() - start < 3000) x = (x * 31 + 7) | 0; return fs.readFileSync("/sys/devices/system/clocksource/clocksource0/current_clocksource", "utf8").trim() + (x === 0 ? "!" : ""); }',
        );
        const result = (await run('vm-guest')).response.result as {
          pid: number;
          release: string;
          modules: string;
          cmdline: string;
          clock: string;
        };
        assert.match(result.release, /-isola$/, "the kernel built from linux-source, not Debian's");
        assert.equal(result.modules, 'ENOENT', 'a kernel without modules has no /proc/modules');
        assert.match(result.cmdline, /\binit=\/isola\/init\b/);
        assert.doesNotMatch(result.cmdline, /rdinit/, 'no initramfs');
        assert.equal(result.pid, 1, "the runtime is the guest's PID 1");
        assert.equal(result.clock, 'tsc', 'the clock keeps the TSC under load');
      });

    it('gives clones of one snapshot their own randomness and the current time', async () => {
      // Three functions: the first call of each is a clone restored from the same base snapshot.
      const names = ['vm-random-0', 'vm-random-1', 'vm-random-2'];
      for (const name of names)
        await deploy(name, 'function main() { return { uuid: crypto.randomUUID(), random: Math.random(), now: Date.now() }; }');
      const sentAt = Date.now();
      const clones = await Promise.all(names.map((name) => run(name)));
      const answeredAt = Date.now();
      for (const clone of clones) assert.equal(annotation(clone, 'coldStart'), true, 'each a clone of its own');
      const results = clones.map((c) => c.response.result as { uuid: string; random: number; now: number });
      assert.equal(new Set(results.map((r) => r.uuid)).size, 3, JSON.stringify(results));
      assert.equal(new Set(results.map((r) => r.random)).size, 3, JSON.stringify(results));
      // Each clone's clock reads a time between the call and its answer (give or take the guest
      // clock's granularity), not the time the snapshot was taken.
      for (const r of results)
        assert.ok(
          r.now >= sentAt - 1000 && r.now <= answeredAt + 1000,
          `clock at ${r.now}, called at ${sentAt}, answered at ${answeredAt}`,
        );
    });

    it("reseeds each clone's kernel and sets its clock through the helper the agent keeps running", async () => {
      // A file's time comes from the kernel's clock, not the agent's; /dev/urandom from the
      // kernel's generator; the helper is in the snapshot, started by the agent before it.
      const probe = `function main() {
      const fs = require('fs');
      fs.writeFileSync('/tmp/now', '');
      const bytes = Buffer.alloc(16);
      const fd = fs.openSync('/dev/urandom', 'r');
      fs.readSync(fd, bytes, 0, 16, null);
      fs.closeSync(fd);
      const processes = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).map((p) => {
        try { return fs.readFileSync('/proc/' + p + '/comm', 'utf8').trim(); } catch { return ''; }
      });
      return { fileTime: fs.statSync('/tmp/now').mtimeMs, urandom: bytes.toString('hex'), helpers: processes.filter((c) => c === 'reseed-kernel').length };
    }`;
      const names = ['vm-kernel-0', 'vm-kernel-1'];
      for (const name of names) await deploy(name, probe);
      const results: { fileTime: number; urandom: string; helpers: number }[] = [];
      for (const name of names) {
        const sentAt = Date.now();
        const record = await run(name);
        const answeredAt = Date.now();
        assert.equal(annotation(record, 'coldStart'), true);
        const result = record.response.result as { fileTime: number; urandom: string; helpers: number };
        assert.ok(
          result.fileTime >= sentAt - 1000 && result.fileTime <= answeredAt + 1000,
          `the kernel's clock at ${result.fileTime}, called at ${sentAt}, answered at ${answeredAt}`,
        );
        assert.equal(result.helpers, 1, 'one helper kept running, none left behind');
        results.push(result);
      }
      assert.notEqual(results[0]?.urandom, results[1]?.urandom, 'two clones read the same bytes from the kernel');
    });

    it('kills the VM at the timeout and serves the next call', async () => {
      await deploy('vm-spin', 'function main(p) { if (p.spin) while (true) {} return { ok: true }; }', {
        limits: { memory: 256, timeout: 2000 },
      });
      const res = await run('vm-spin', { spin: true });
      assert.equal(res.response.status, 'action developer error');
      assert.equal(annotation(res, 'timeout'), true);
      assert.deepEqual((await run('vm-spin')).response.result, { ok: true });
    });

    it('ends a memory bomb at the memory limit', async () => {
      // Filling 256 MB under an emulated CPU while another suite runs can take longer than 30 s:
      // a longer time limit, so that the memory limit is what ends it.
      const slow = { limits: { memory: 256, timeout: 180_000 } };
      await deploy('vm-bomb', 'function main() { const keep = []; for (;;) keep.push(new Array(100000).fill(1)); }', slow);
      const res = await run('vm-bomb');
      assert.equal(res.response.status, 'action developer error');
      assert.match(String((res.response.result as { error: string }).error), /exhausted its memory limit of 256 MB/);
      // Outside the V8 heap (ArrayBuffers) the guest kernel runs out instead: reported the same way.
      await deploy(
        'vm-buffers',
        'function main() { const keep = []; for (;;) keep.push(new Uint8Array(8 << 20).fill(1)); }',
        slow,
      );
      const buffers = await run('vm-buffers');
      assert.match(String((buffers.response.result as { error: string }).error), /exhausted its memory limit of 256 MB/);
    });

    it('cannot see host files or reach the host network', async () => {
      await deploy(
        'vm-peek',
        'const fs = require("fs"); const net = require("net"); const tryIt = (f) => { try { return f(); } catch (e) { return e.code; } };' +
          'function main(p) { return new Promise((r) => { const s = net.connect(p.port, "127.0.0.1"); const done = (how) => r({ how, shadow: tryIt(() => fs.readFileSync("/etc/shadow").length), dataDir: tryIt(() => fs.readdirSync(p.dataDir).length), interfaces: Object.keys(require("os").networkInterfaces()) }); s.on("connect", () => done("connected")); s.on("error", (e) => done(e.code)); }); }',
      );
      const res = await run('vm-peek', { port: Number(new URL(server.url).port), dataDir: server.dataDir });
      const result = res.response.result as { how: string; shadow: unknown; dataDir: unknown; interfaces: string[] };
      assert.notEqual(result.how, 'connected', JSON.stringify(result));
      assert.equal(result.shadow, 'ENOENT');
      assert.equal(result.dataDir, 'ENOENT');
      assert.ok(
        result.interfaces.every((i) => i === 'lo'),
        `no network device: ${result.interfaces}`,
      );
    });

    it('turns a VM killed mid-invocation into a failed activation and serves the next call', async () => {
      // Only this function's VM may be running: deleting the others drains their instances.
      for (const name of [
        'vm-hello',
        'vm-guest',
        'vm-random-0',
        'vm-random-1',
        'vm-random-2',
        'vm-kernel-0',
        'vm-kernel-1',
        'vm-spin',
        'vm-bomb',
        'vm-peek',
      ])
        await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
      await waitFor('idle VMs to stop', async () => (vmPids(server.dataDir, isolation).length === 0 ? true : undefined));
      await deploy('vm-slow', 'function main(p) { return new Promise((r) => setTimeout(() => r({ done: p.n }), p.wait)); }');
      await run('vm-slow', { n: 0, wait: 0 });
      const pending = server.invoke<ActivationRecord>('vm-slow', { n: 1, wait: 60_000 });
      await waitFor('the call to be running', async () => ((await busy('vm-slow')) === 1 ? true : undefined));
      const running = vmPids(server.dataDir, isolation);
      assert.equal(running.length, 1, 'one VM runs the function');
      process.kill(running[0]?.pid as number, 'SIGKILL');
      const res = await pending;
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.response.status, 'action developer error');
      assert.match(String((res.body.response.result as { error: string }).error), /did not complete/);
      const stored = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${res.body.activationId}`);
      assert.equal(stored.status, 200, 'the failure is recorded');
      assert.equal(stored.body.response.status, 'action developer error');
      assert.deepEqual((await run('vm-slow', { n: 2, wait: 0 })).response.result, { done: 2 });
    });

    it('takes a snapshot after the function initialises when asked, and later cold starts restore it', async () => {
      // The initialisation says so in the logs: a clone restored from the snapshot does not run it.
      const code =
        'console.log("initialising"); const t0 = Date.now(); let n = 0; while (Date.now() - t0 < 1500) n++;' +
        'function main(p) { return new Promise((r) => setTimeout(() => r({ loaded: n > 0, uuid: crypto.randomUUID() }), p.wait ?? 0)); }';
      await deploy('vm-snap', code, {
        limits: { memory: 256, timeout: 120_000 },
        annotations: [
          { key: 'isolation', value: isolation },
          { key: 'snapshot', value: true },
        ],
      });
      const first = await run('vm-snap');
      assert.equal(first.response.status, 'success');
      assert.equal(annotation(first, 'restoredFromSnapshot'), undefined);
      assert.match(first.logs.join('\n'), /initialising/);
      // The snapshot is taken in the background after the first initialisation.
      await waitFor(
        'the function snapshot',
        async () => (functionSnapshots(server.dataDir, isolation).length > 0 ? true : undefined),
        120_000,
      );
      // While the first instance is busy, a second call needs a new one.
      const busyCall = run('vm-snap', { wait: 20_000 });
      await waitFor('the first instance to be busy', async () => ((await busy('vm-snap')) === 1 ? true : undefined));
      const other = await run('vm-snap');
      assert.equal(annotation(other, 'restoredFromSnapshot'), true, JSON.stringify(other.annotations));
      assert.equal(annotation(other, 'coldStart'), true);
      assert.doesNotMatch(other.logs.join('\n'), /initialising/, 'the restored clone skipped the initialisation');
      assert.deepEqual((other.response.result as { loaded: boolean }).loaded, true);
      const held = await busyCall;
      assert.equal(held.response.status, 'success', JSON.stringify(held.response));
    });

    it('destroys the VM when a restore fails, and serves the call by loading the function', async () => {
      // A snapshot whose device state is gone: the restore fails after its QEMU has started.
      const [snapshot] = functionSnapshots(server.dataDir, isolation);
      assert.ok(snapshot, 'the function snapshot of the test before');
      rmSync(join(snapshot, 'state'));
      // Every existing instance busy, so that the call needs a new one.
      const existing = await gauge(/^isola_function_instances\{[^}]*action="vm-snap"[^}]*\} (\d+)/gm);
      const holders = Array.from({ length: existing }, () => run('vm-snap', { wait: 20_000 }));
      await waitFor('every instance to be busy', async () => ((await busy('vm-snap')) === existing ? true : undefined), 60_000);
      const res = await run('vm-snap');
      assert.equal(res.response.status, 'success', JSON.stringify(res.response));
      assert.equal(annotation(res, 'restoredFromSnapshot'), undefined);
      assert.match(res.logs.join('\n'), /initialising/);
      // No QEMU is left over from the failed attempt: one per instance (the snapshot taken again
      // in the background has one of its own until it is done).
      await waitFor(
        'one QEMU per instance',
        async () => (vmPids(server.dataDir, isolation).length === (await instances()) ? true : undefined),
        120_000,
      );
      for (const held of await Promise.all(holders)) assert.equal(held.response.status, 'success');
    });

    it('leaves no QEMU process or VM directory behind once the server stops', async () => {
      await server.stop();
      assert.deepEqual(vmPids(server.dataDir, isolation), []);
      const vms = join(server.dataDir, isolation, 'vms');
      assert.deepEqual(existsSync(vms) ? readdirSync(vms) : [], []);
    });
  });
