// The language runtimes really run in every process-like backend: the host's interpreters under
// the process backend's limits, and each language's image under runc, crun, runsc and a microVM
// (restored from its image's base snapshot). A Node.js function starts the runtime inside the
// sandbox, so this checks the images and the limits, whatever launches functions.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Kind } from '../src/core/kinds.js';
import { buildAgent } from '../src/guest/bundle.js';
import { ensureMicrovmImage } from '../src/images/microvm-image.js';
import { ensureRootfs } from '../src/images/node-rootfs.js';
import { RESEED_KERNEL_PATH } from '../src/images/reseed-kernel.js';
import { LANGUAGE_RUNTIMES, type LanguageRuntime, missingForKind, RUNTIME_CHECKS } from '../src/images/runtimes.js';
import { LAUNCHERS_DIR } from '../src/platform/function-packages.js';
import { buildFunction, runtimeStartOf } from '../src/platform/packages/builders.js';
import { DEFAULT_COMPILE_LIMITS } from '../src/platform/packages/compiler.js';
import type { Backend, FunctionCode } from '../src/sandbox/backend.js';
import { ContainerBackend } from '../src/sandbox/container/container-backend.js';
import { findBinary } from '../src/sandbox/container/runtime.js';
import { RUNNING_AS_ROOT, sandboxUids } from '../src/sandbox/host-ids.js';
import { MicrovmBackend } from '../src/sandbox/microvm/microvm-backend.js';
import { QEMU } from '../src/sandbox/microvm/vm.js';
import { ProcessBackend } from '../src/sandbox/process/process-backend.js';
import { ociRuntime } from '../src/sandbox/registry.js';

const KIND: Record<LanguageRuntime, Kind> = { python: 'python:3', java: 'java:17', ruby: 'ruby:3.1', php: 'php:8.2' };
/** What each runtime's check prints when it started. */
const EXPECTED: Record<LanguageRuntime, { stream: 'stdout' | 'stderr'; pattern: RegExp }> = {
  python: { stream: 'stdout', pattern: /^\{"ok": true\}\n$/ },
  java: { stream: 'stderr', pattern: /OpenJDK 64-Bit Server VM .*17\./ },
  ruby: { stream: 'stdout', pattern: /^\{"ok":true\}\n$/ },
  php: { stream: 'stdout', pattern: /^\{"ok":true\}\n$/ },
};

const RUN_COMMAND = `const { spawnSync } = require('child_process');
function main(p) {
  const input = p.input === undefined ? undefined : Buffer.from(p.input, 'base64');
  const r = spawnSync(p.command[0], p.command.slice(1), { input, encoding: 'utf8', timeout: 240000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: (r.stderr || '').slice(-3000), error: r.error ? String(r.error) : undefined };
}`;

const code: FunctionCode = {
  key: 'runtime-check',
  kind: 'nodejs:20',
  code: RUN_COMMAND,
  binary: false,
  main: 'main',
  filename: 'check.js',
  env: {},
  logLimitBytes: 65536,
};

interface Ran {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  error?: string;
}

/** Makes a blank sandbox of the runtime's kind, and runs the runtime's check in it. */
async function check(backend: Backend, runtime: LanguageRuntime, memoryMb: number, heapMb: number): Promise<void> {
  const sandbox = await backend.create({ memoryMb, kind: KIND[runtime] });
  try {
    const init = await sandbox.init(code, Date.now() + 240_000, () => {});
    assert.deepEqual(init, { ok: true });
    const outcome = await sandbox.run({
      activationId: `check-${runtime}`,
      params: { command: RUNTIME_CHECKS[runtime](heapMb) },
      deadline: Date.now() + 300_000,
      env: {},
      onLog: () => {},
    });
    assert.equal(outcome.kind, 'result', JSON.stringify(outcome));
    const ran = (outcome as { result: Ran }).result;
    assert.equal(ran.status, 0, `${runtime} exited with ${ran.status ?? ran.signal}: ${ran.error ?? ''} ${ran.stderr}`);
    const { stream, pattern } = EXPECTED[runtime];
    assert.match(ran[stream], pattern);
  } finally {
    await sandbox.destroy();
  }
}

/**
 * A blank sandbox of python:3 starts Python with its launcher ahead (the recipe and the package
 * the platform makes), and a function loads into that process: it was started with no function name.
 */
async function startsPythonAhead(backend: Backend): Promise<void> {
  const context = { name: 'ahead', launchersDir: LAUNCHERS_DIR, cacheDir: join(dir, 'tools'), limits: DEFAULT_COMPILE_LIMITS };
  const runtime = await runtimeStartOf('python:3', context);
  assert.ok(runtime);
  const prepared = await buildFunction(
    { kind: 'python:3', code: 'import sys\ndef main(args):\n    return {"argv": sys.argv[1:]}\n', binary: false },
    context,
  );
  const sandbox = await backend.create({ memoryMb: 256, kind: 'python:3', ahead: true });
  try {
    sandbox.prestart?.(runtime, 256);
    const fn: FunctionCode = {
      ...code,
      key: 'ahead',
      kind: 'python:3',
      filename: 'ahead.py',
      ...(prepared.package ? { package: prepared.package } : {}),
      memoryMb: 256,
      concurrency: 1,
    };
    assert.deepEqual(await sandbox.init(fn, Date.now() + 240_000, () => {}), { ok: true });
    const outcome = await sandbox.run({
      activationId: 'ahead',
      params: {},
      deadline: Date.now() + 240_000,
      env: {},
      onLog: () => {},
    });
    assert.deepEqual(outcome, { kind: 'result', result: { argv: [] } });
  } finally {
    await sandbox.destroy();
  }
}

const missing = LANGUAGE_RUNTIMES.map((r) => missingForKind(KIND[r])).find(Boolean);
const dir = mkdtempSync(join(tmpdir(), 'isola-language-images-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const imagesDir = join(dir, 'images');
// A guest kernel unpacked already (a kernel-<version> directory of another images dir) saves
// fetching Debian's package where the archive cannot be reached.
const kernelDir = process.env.ISOLA_TEST_KERNEL_DIR;
if (kernelDir) cpSync(kernelDir, join(imagesDir, basename(kernelDir)), { recursive: true });
const runtimeDir = join(dir, 'runtime');

describe('the host runtimes under the process backend', { skip: missing ?? false }, () => {
  const backend = new ProcessBackend({ agentPath: buildAgent(runtimeDir) });
  after(() => backend.close());
  // The JVM reserves far more than it uses: the launcher's flags (MaxRAM, the serial collector)
  // keep it within the data limit (the memory limit + 64 MB) at the smallest sizes users pick.
  for (const memoryMb of [128, 256]) {
    for (const runtime of LANGUAGE_RUNTIMES) {
      it(`runs ${runtime} in a ${memoryMb} MB sandbox`, () => check(backend, runtime, memoryMb, memoryMb));
    }
  }
});

for (const name of ['runc', 'crun', 'runsc'] as const) {
  const skip = !RUNNING_AS_ROOT ? 'containers need root here' : !findBinary(name) ? `${name} is not installed` : missing;
  describe(`each language's image under ${name}`, { skip: skip ?? false }, () => {
    let backend: ContainerBackend | undefined;
    const open = async () => {
      backend ??= await ContainerBackend.open({
        isolation: name === 'runsc' ? 'gvisor' : 'container',
        runtime: ociRuntime(name, join(dir, 'run', name)),
        image: ensureRootfs(imagesDir, runtimeDir, 'nodejs'),
        imageFor: async (image) => ensureRootfs(imagesDir, runtimeDir, image),
        bundlesDir: join(dir, 'containers', name),
        uids: sandboxUids(),
      });
      return backend;
    };
    after(() => backend?.close());
    for (const runtime of LANGUAGE_RUNTIMES) {
      it(`runs ${runtime}`, async () => check(await open(), runtime, 256, 128));
    }
    it('starts Python ahead in a blank container, and loads a function into it', async () => startsPythonAhead(await open()));
  });
}

describe("each language's microVM guest, restored from its base snapshot", {
  skip: !existsSync(QEMU) ? 'QEMU is not installed' : (missing ?? false),
}, () => {
  let backend: MicrovmBackend | undefined;
  const open = async () => {
    backend ??= await MicrovmBackend.open({
      dataDir: join(dir, 'data'),
      image: ensureMicrovmImage(imagesDir, ensureRootfs(imagesDir, runtimeDir, 'nodejs')),
      imageFor: async (image) => ensureMicrovmImage(imagesDir, ensureRootfs(imagesDir, runtimeDir, image)),
      settleMs: 500,
    });
    return backend;
  };
  after(() => backend?.close());
  for (const runtime of LANGUAGE_RUNTIMES) {
    it(`runs ${runtime}`, async () => check(await open(), runtime, 256, 128));
  }
  it('starts Python ahead in a blank clone, and loads a function into it', async () => startsPythonAhead(await open()));

  it("takes a function's snapshot in its language's guest, and restores it there", async () => {
    const microvm = await open();
    const spec = { memoryMb: 256, kind: 'python:3' as const };
    const fn = { ...code, key: 'snapshot-python' };
    microvm.snapshot(fn, spec);
    // Waits for the snapshot being taken.
    const restored = await microvm.restore(fn, spec);
    assert.ok(restored, 'a snapshot was taken');
    try {
      assert.deepEqual(await restored.init(fn, Date.now() + 60_000, () => {}), { ok: true });
      const outcome = await restored.run({
        activationId: 'restored-python',
        params: { command: RUNTIME_CHECKS.python(128) },
        deadline: Date.now() + 120_000,
        env: {},
        onLog: () => {},
      });
      assert.equal(outcome.kind, 'result', JSON.stringify(outcome));
      assert.equal((outcome as { result: Ran }).result.status, 0, 'python3 runs: the clone has the Python root disk');
    } finally {
      await restored.destroy();
    }
  });

  it("gives every clone of a snapshot its own kernel randomness and the host's time, for the language runtimes", async () => {
    const probe = async () => {
      const sandbox = await (await open()).create({ memoryMb: 256, kind: 'python:3' });
      try {
        assert.deepEqual(await sandbox.init(code, Date.now() + 60_000, () => {}), { ok: true });
        const outcome = await sandbox.run({
          activationId: 'clone-probe',
          params: {
            command: ['/usr/bin/python3', '-c', 'import os, time; print(os.urandom(16).hex(), int(time.time() * 1000))'],
          },
          deadline: Date.now() + 60_000,
          env: {},
          onLog: () => {},
        });
        assert.equal(outcome.kind, 'result', JSON.stringify(outcome));
        const ran = (outcome as { result: Ran }).result;
        assert.equal(ran.status, 0, ran.stderr);
        const [bytes, at] = ran.stdout.trim().split(' ');
        return { bytes, at: Number(at), hostNow: Date.now() };
      } finally {
        await sandbox.destroy();
      }
    };
    const first = await probe();
    const second = await probe();
    assert.notEqual(first.bytes, second.bytes, 'two clones of one snapshot drew the same bytes from the kernel');
    for (const clone of [first, second]) {
      // The snapshot was taken minutes earlier on a slow host; a restored clock is within the probe's own run.
      assert.ok(Math.abs(clone.hostNow - clone.at) < 30_000, `the guest's clock is ${clone.hostNow - clone.at} ms behind`);
    }
  });

  it("lets the guest's root reseed the kernel's random number generator after a restore", async () => {
    const sandbox = await (await open()).create({ memoryMb: 256, kind: 'python:3' });
    try {
      await sandbox.init(code, Date.now() + 60_000, () => {});
      const reseed = async (bytes: number) => {
        const outcome = await sandbox.run({
          activationId: `reseed-${bytes}`,
          params: { command: [RESEED_KERNEL_PATH], input: randomBytes(bytes).toString('base64') },
          deadline: Date.now() + 60_000,
          env: {},
          onLog: () => {},
        });
        assert.equal(outcome.kind, 'result', JSON.stringify(outcome));
        return (outcome as { result: Ran }).result;
      };
      const done = await reseed(64);
      assert.equal(done.status, 0, `the helper failed: ${done.error ?? ''} ${done.stderr}`);
      assert.equal((await reseed(8)).status, 2, 'too little entropy is refused');
    } finally {
      await sandbox.destroy();
    }
  });
});
