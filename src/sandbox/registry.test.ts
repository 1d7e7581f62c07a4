import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';
import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import type { Backend, BackendStatus } from './backend.js';
import { FakeBackend } from './fake/fake-backend.js';
import { BackendSet, BackendUnavailableError, kindSupport, NOT_ENABLED, type Probed } from './registry.js';

type Draft = Omit<ActionVersion, 'version' | 'revision' | 'updated'>;
const draft = (memory: number) => ({ limits: { memory } }) as unknown as Draft;

class ClosingFake extends FakeBackend {
  closes = 0;
  override async close(): Promise<void> {
    this.closes++;
  }
}

/** Probes the test ends by hand, recording the order in which they began. */
function handProbes() {
  const began: Isolation[] = [];
  const ends = new Map<Isolation, (probed: Probed) => void>();
  const probe = (isolation: Isolation) => {
    began.push(isolation);
    return new Promise<Probed>((resolve) => ends.set(isolation, resolve));
  };
  const works = (isolation: Isolation, backend: Backend = new ClosingFake(isolation)) => {
    const end = ends.get(isolation);
    assert.ok(end, `the ${isolation} probe has begun`);
    end({ backend, status: { isolation, available: true, detail: `fake ${isolation}` } });
    return backend;
  };
  const fails = (status: BackendStatus) => {
    const end = ends.get(status.isolation);
    assert.ok(end, `the ${status.isolation} probe has begun`);
    end({ status });
  };
  return { began, probe, works, fails };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('backends probed in the background', () => {
  afterEach(() => mock.timers.reset());

  it('serves through a stand-in that waits for the probe, then through the backend itself', async () => {
    const probes = handProbes();
    const lines: string[] = [];
    const ready: Backend[] = [];
    const set = new BackendSet(
      { dataDir: '/nonexistent' },
      ['isolate', 'process', 'microvm'],
      60_000,
      { progress: (isolation, message) => lines.push(`${isolation}: ${message}`), ready: (b) => ready.push(b) },
      probes.probe,
    );
    assert.deepEqual(
      set.statuses.map((s) => [s.isolation, s.available, s.detail === NOT_ENABLED]),
      [
        ['isolate', false, false],
        ['wasm', false, true],
        ['process', false, false],
        ['container', false, true],
        ['gvisor', false, true],
        ['microvm', false, false],
        ['vm', false, true],
      ],
    );
    assert.deepEqual(
      set.statuses.filter((s) => s.probing).map((s) => s.isolation),
      ['isolate', 'process', 'microvm'],
      'the enabled ones are marked as being probed',
    );
    assert.deepEqual(probes.began, [], 'nothing is probed before the caller has finished starting');
    const standIn = set.backends.get('isolate');
    assert.ok(standIn && !(standIn instanceof FakeBackend));
    const creating = standIn.create({ memoryMb: 64 });
    await turn();
    assert.deepEqual(probes.began, ['isolate'], 'the quick probes go one at a time, before the slow ones');

    const isolate = probes.works('isolate') as FakeBackend;
    const sandbox = await creating;
    assert.equal(isolate.created, 1, 'the call waited for the probe and was served by the backend');
    assert.ok(sandbox.alive);
    assert.equal(set.backends.get('isolate'), isolate, 'the stand-in is replaced');
    assert.equal(set.statuses[0]?.available, true);
    assert.deepEqual(ready, [isolate]);
    assert.ok(lines.includes('isolate: ready (fake isolate)'), lines.join('\n'));

    await turn();
    assert.deepEqual(probes.began, ['isolate', 'process']);
    probes.works('process');
    await turn();
    assert.deepEqual(probes.began, ['isolate', 'process', 'microvm'], 'the slow probes begin once the quick ones end');
    probes.works('microvm');
    await set.settled;
    assert.deepEqual(
      set.statuses.filter((s) => s.available).map((s) => s.isolation),
      ['isolate', 'process', 'microvm'],
    );
    assert.deepEqual(
      set.statuses.filter((s) => s.probing),
      [],
      'none is marked as being probed once the probes ended',
    );
  });

  it('drops a backend that does not work here: a deploy to it gets the 400 it always got', async () => {
    const probes = handProbes();
    const lines: string[] = [];
    const set = new BackendSet(
      { dataDir: '/nonexistent' },
      ['gvisor'],
      60_000,
      { progress: (isolation, message) => lines.push(`${isolation}: ${message}`) },
      probes.probe,
    );
    const standIn = set.backends.get('gvisor');
    assert.ok(standIn);
    const deploying = standIn.validate?.(draft(128));
    await turn();
    probes.fails({ isolation: 'gvisor', available: false, detail: 'runsc is not installed.', fix: 'npx isola setup' });
    await assert.rejects(
      deploying ?? Promise.resolve(),
      (error: unknown) =>
        error instanceof BackendUnavailableError &&
        error.status === 400 &&
        error.message === 'The isolation backend "gvisor" is not available on this server: runsc is not installed.',
    );
    await set.settled;
    assert.equal(set.backends.has('gvisor'), false);
    assert.deepEqual(set.statuses.find((s) => s.isolation === 'gvisor')?.detail, 'runsc is not installed.');
    assert.deepEqual(lines, [
      'gvisor: not available, although the backends setting asks for it: runsc is not installed. Fix: npx isola setup',
    ]);
  });

  it('answers 503 when the probe outlasts the wait, while a sandbox made ahead waits for it', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const probes = handProbes();
    const set = new BackendSet({ dataDir: '/nonexistent' }, ['microvm'], 60_000, {}, probes.probe);
    const standIn = set.backends.get('microvm');
    assert.ok(standIn);
    await turn();
    const deploying = standIn.validate?.(draft(256));
    const calling = standIn.create({ memoryMb: 256 });
    const ahead = standIn.create({ memoryMb: 256, ahead: true });
    mock.timers.tick(60_000);
    for (const waiting of [deploying ?? Promise.resolve(), calling]) {
      await assert.rejects(
        waiting,
        (error: unknown) =>
          error instanceof BackendUnavailableError &&
          error.status === 503 &&
          /"microvm" is still being prepared/.test(error.message),
      );
    }
    const microvm = probes.works('microvm') as FakeBackend;
    assert.ok((await ahead).alive);
    assert.equal(microvm.created, 1);
  });

  it('checks the memory floor of a backend that was being probed', async () => {
    const probes = handProbes();
    const set = new BackendSet({ dataDir: '/nonexistent' }, ['isolate'], 60_000, {}, probes.probe);
    const standIn = set.backends.get('isolate');
    assert.ok(standIn);
    const tooSmall = standIn.validate?.(draft(8));
    await turn();
    probes.works('isolate');
    await assert.rejects(tooSmall ?? Promise.resolve(), /limits.memory must be at least 16 MB under isolation "isolate"/);
  });

  it('closes a backend whose probe ends after the server began to stop', async () => {
    const probes = handProbes();
    const set = new BackendSet({ dataDir: '/nonexistent' }, ['container'], 60_000, {}, probes.probe);
    const standIn = set.backends.get('container');
    assert.ok(standIn);
    await turn();
    const closing = standIn.close();
    const container = probes.works('container') as ClosingFake;
    await closing;
    assert.equal(container.closes, 1);
    assert.notEqual(set.backends.get('container'), container, 'a stopping server does not take it up');
  });
});

describe('the kinds each backend runs (isola doctor)', () => {
  const everything = () => true;
  const kinds = (isolation: Isolation, exists: (path: string) => boolean = everything) =>
    Object.fromEntries(kindSupport(isolation, exists).map((k) => [k.kind, k.available ? 'yes' : k.why]));

  it('keeps V8 isolates to JavaScript and the wasm backend to WebAssembly and Pyodide, saying so', () => {
    const isolate = kinds('isolate');
    assert.equal(isolate['nodejs:20'], 'yes');
    for (const kind of ['python:3', 'java:17', 'go:1.19', 'ruby:3.1', 'php:8.2', 'native', 'wasm'])
      assert.equal(isolate[kind], 'V8 isolates run JavaScript only');
    const wasm = kinds('wasm');
    assert.equal(wasm.wasm, 'yes');
    for (const kind of ['nodejs:20', 'java:17', 'go:1.19', 'ruby:3.1', 'php:8.2', 'native'])
      assert.equal(wasm[kind], 'the wasm backend runs WebAssembly modules and python:3 (through Pyodide) only');
    // Pyodide's CPython (installed with Isola), whatever the host has.
    assert.equal(kinds('wasm', () => false)['python:3'], 'yes');
  });

  it('runs every language on the process-like backends when the host has its runtime', () => {
    for (const isolation of ['process', 'container', 'gvisor', 'microvm'] as const) {
      const found = kinds(isolation);
      for (const kind of ['nodejs:20', 'python:3', 'java:17', 'go:1.19', 'ruby:3.1', 'php:8.2', 'native'])
        assert.equal(found[kind], 'yes', `${kind} under ${isolation}`);
      assert.equal(found.wasm, 'runs under wasm only');
    }
  });

  it('names what is missing and how to install it when a runtime is not on the host', () => {
    const noJava = kinds('container', (path) => !path.includes('java'));
    assert.equal(
      noJava['java:17'],
      '/usr/bin/java, /usr/bin/javac, /usr/share/java/gson.jar are missing: run `isola setup languages`',
    );
    assert.equal(noJava['python:3'], 'yes');
    const noPython = kinds('process', (path) => path !== '/usr/bin/python3');
    assert.equal(noPython['python:3'], '/usr/bin/python3 is missing: run `isola setup languages`');
    assert.equal(noPython['nodejs:20'], 'yes', 'JavaScript needs no runtime of the host');
    assert.equal(noPython.native, 'yes');
  });
});
