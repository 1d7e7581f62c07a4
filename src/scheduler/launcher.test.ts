import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import type { Isolation } from '../core/kinds.js';
import { DEFAULT_LIMITS } from '../core/limits.js';
import type { ActionVersion, KeyValue } from '../core/types.js';
import type { Backend } from '../sandbox/backend.js';
import { FakeBackend } from '../sandbox/fake/fake-backend.js';
import { InitFailure, Launcher } from './launcher.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';

const noLogs = () => {};

function action(code = 'ok', annotations: KeyValue[] = [], isolation: Isolation = 'isolate'): ActionVersion {
  return {
    namespace: 'ns',
    name: 'fn',
    version: '0.0.1',
    revision: 'r1',
    exec: { kind: 'nodejs:20', code, binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 16, timeout: 1000 },
    parameters: [],
    annotations,
    isolation,
    updated: 0,
  };
}

const snapshotted = [{ key: 'snapshot', value: true }];

let warnings: string[];
let stemCells: StemCells;

function launcher(backend: FakeBackend, targets: StemCellTarget[] = []): Launcher {
  const backends = new Map<Isolation, Backend>([['isolate', backend]]);
  stemCells = new StemCells(backends, targets);
  stemCells.start();
  return new Launcher(backends, stemCells, (message) => warnings.push(message));
}

/** Lets the fake backend's promises run; timers stay frozen under the mock. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

beforeEach(() => {
  warnings = [];
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
});
afterEach(async () => {
  await stemCells.close();
  mock.timers.reset();
});

describe('the launcher', () => {
  it('creates a sandbox and loads the function into it', async () => {
    const backend = new FakeBackend();
    const launched = await launcher(backend).launch(action(), noLogs, Date.now());
    assert.equal(launched.restored, false);
    assert.equal(launched.prewarmed, false);
    assert.equal(backend.created, 1);
    assert.equal(backend.sandboxes[0]?.code?.code, 'ok', 'the function was loaded');
    assert.equal(launched.startedAt, 1_000_000);
  });

  it('takes a stem cell made ahead, so only the function has to load', async () => {
    const backend = new FakeBackend();
    const l = launcher(backend, [{ isolation: 'isolate', memoryMb: 16, count: 1 }]);
    await settle();
    assert.equal(stemCells.size, 1);
    const launched = await l.launch(action(), noLogs, Date.now());
    assert.equal(launched.prewarmed, true);
    assert.equal(launched.sandbox, backend.sandboxes[0]);
    assert.equal(backend.created, 1, 'no sandbox made on the call');
  });

  it('restores a snapshot taken after the first initialisation', async () => {
    const backend = new FakeBackend('isolate', { snapshots: true });
    const l = launcher(backend);
    const first = await l.launch(action('ok', snapshotted), noLogs, Date.now());
    assert.equal(first.restored, false);
    assert.equal(backend.snapshots.size, 1, 'a snapshot was taken');
    const second = await l.launch(action('ok', snapshotted), noLogs, Date.now());
    assert.equal(second.restored, true);
    assert.equal(backend.restored, 1);
  });

  it('starts afresh, and says so, when a snapshot fails to restore', async () => {
    const backend = new FakeBackend('isolate', { snapshots: true });
    const l = launcher(backend);
    await l.launch(action('ok', snapshotted), noLogs, Date.now());
    backend.brokenSnapshots.add([...backend.snapshots][0] as string);
    const launched = await l.launch(action('ok', snapshotted), noLogs, Date.now());
    assert.equal(launched.restored, false);
    assert.match(warnings.join('\n'), /restoring a snapshot of .* failed; starting it afresh/);
  });

  it("fails with the function's own error when it does not load, and destroys the sandbox", async () => {
    const backend = new FakeBackend();
    await assert.rejects(launcher(backend).launch(action('fail'), noLogs, Date.now() - 30), (error: unknown) => {
      assert.ok(error instanceof InitFailure);
      assert.equal(error.outcome.kind, 'error');
      assert.match(error.message, /failed to load/);
      assert.equal(error.waitMs, 30, 'the time from arrival to the launch');
      return true;
    });
    assert.equal(backend.alive, 0);
  });

  it('fails as a crash when the backend cannot make a sandbox or is not enabled', async () => {
    const backend = new FakeBackend();
    backend.failCreates = 1;
    const l = launcher(backend);
    await assert.rejects(l.launch(action(), noLogs, Date.now()), (error: unknown) => {
      assert.ok(error instanceof InitFailure);
      assert.equal(error.outcome.kind, 'crash');
      assert.match(error.message, /The isolate sandbox did not start: no room for another sandbox/);
      return true;
    });
    await assert.rejects(
      l.launch(action('ok', [], 'wasm'), noLogs, Date.now()),
      /The wasm backend is not enabled on this server/,
    );
  });
});
