import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_LIMITS } from '../core/limits.js';
import type { ActionVersion } from '../core/types.js';
import { FakeBackend } from '../sandbox/fake/fake-backend.js';
import { FixedKeepAlive } from '../scheduler/policy.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { Store } from '../store/store.js';
import { Invoker } from './invoker.js';
import { Metrics } from './metrics.js';

describe('the invoker', () => {
  let dir: string;
  let store: Store;
  let backend: FakeBackend;
  let scheduler: Scheduler;
  let invoker: Invoker;
  const action: ActionVersion = {
    namespace: 'guest',
    name: 'fn',
    version: '0.0.1',
    revision: 'r1',
    exec: { kind: 'nodejs:20', code: 'ok', binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 16 },
    parameters: [],
    annotations: [],
    isolation: 'isolate',
    updated: 0,
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-invoker-'));
    store = await Store.open({ dataDir: dir });
    backend = new FakeBackend();
    scheduler = new Scheduler({
      backends: new Map([['isolate', backend]]),
      memoryBudgetMb: 64,
      policy: new FixedKeepAlive(60_000),
      queueTimeoutMs: 5000,
    });
    invoker = new Invoker(store, scheduler, new Metrics(scheduler));
  });
  after(async () => {
    await scheduler.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const invoke = (params: Record<string, unknown>, extra: Partial<Parameters<Invoker['invoke']>[0]> = {}) =>
    invoker.invoke({ action, params, subject: 'guest', ...extra });

  it('places a run that its sandbox never began on another instance', async () => {
    const record = await invoke({ notStartedOn: 'fake-1', result: { ok: 1 } });
    assert.equal(record.response.status, 'success', JSON.stringify(record.response));
    assert.deepEqual(record.response.result, { ok: 1 });
    assert.equal(backend.created, 2, 'a second instance ran it');
    scheduler.checkInvariants();
  });

  it('records a run whose sandbox failed as the platform failing, and gives the instance back', async () => {
    const record = await invoke({ throw: true });
    assert.equal(record.response.status, 'whisk internal error');
    assert.match(JSON.stringify(record.response.result), /the sandbox broke/);
    assert.equal((await store.getActivation('guest', record.activationId))?.response.status, 'whisk internal error');
    assert.equal(
      scheduler.stats().instances.find((i) => i.state === 'busy'),
      undefined,
      'no instance stays busy',
    );
    scheduler.checkInvariants();
  });

  it("makes results too deep or too large to store the function's error, and records them", async () => {
    let deep: Record<string, unknown> = {};
    const root = deep;
    for (let i = 0; i < 9000; i++) {
      const next = {};
      deep.a = next;
      deep = next;
    }
    const tooDeep = await invoke({ result: root });
    assert.equal(tooDeep.response.status, 'action developer error');
    assert.match(JSON.stringify(tooDeep.response.result), /nested more deeply than the 512 levels allowed/);
    const moderate = await invoke({ result: JSON.parse(`${'{"a":'.repeat(600)}1${'}'.repeat(600)}`) });
    assert.equal(moderate.response.status, 'action developer error', 'deeper than the limit, though serialisable');
    const big = await invoke({ result: { text: 'x'.repeat(2 * 1024 * 1024) } });
    assert.match(JSON.stringify(big.response.result), /exceeded the allowed length/);
    for (const record of [tooDeep, moderate, big]) assert.ok(await store.getActivation('guest', record.activationId));
  });

  it("applies a door's check to a successful result", async () => {
    const record = await invoke({ result: { statusCode: 101 } }, { checkResult: () => 'statusCode 101 is not a final status' });
    assert.equal(record.response.status, 'action developer error');
    assert.deepEqual(record.response.result, { error: 'statusCode 101 is not a final status' });
  });
});
