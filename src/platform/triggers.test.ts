import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import type { ActionVersion } from '../core/types.js';
import { Store } from '../store/store.js';
import { Triggers } from './triggers.js';

describe('cron triggers', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-triggers-'));
    store = await Store.open({ dataDir: dir });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fire on their schedule, and never again once unscheduled', async () => {
    const action = await store.putAction(
      {
        namespace: 'guest',
        name: 'on-tick',
        exec: { kind: 'nodejs:20', code: 'function main() { return {}; }', binary: false },
        limits: { memory: 128, timeout: 1000, concurrency: 1, logs: 10 },
        parameters: [],
        annotations: [],
        isolation: 'isolate',
      },
      { overwrite: false },
    );
    const trigger = await store.putTrigger(
      { namespace: 'guest', name: 'every-second', parameters: [], annotations: [{ key: 'cron', value: '* * * * * *' }] },
      { overwrite: false },
    );
    await store.putRule(
      { namespace: 'guest', name: 'tick-rule', trigger: 'every-second', action: 'on-tick', status: 'active' },
      { overwrite: false },
    );
    const fired: string[] = [];
    const triggers = new Triggers({
      store,
      invoke: async (command) => {
        assert.equal(command.mode, 'async');
        assert.equal(command.function.name, action.name);
        fired.push(command.function.name);
        return { kind: 'accepted', function: action as ActionVersion, activationId: `id-${fired.length}`, late: false };
      },
      warn: (message) => assert.fail(message),
    });
    const settle = async () => {
      for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    };
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: Date.parse('2026-01-01T00:00:00.500Z') });
    try {
      triggers.schedule(trigger);
      for (let s = 0; s < 3; s++) {
        mock.timers.tick(1000);
        await settle();
      }
      assert.equal(fired.length, 3, 'once a second for three seconds');
      triggers.unschedule('guest', 'every-second');
      for (let s = 0; s < 5; s++) {
        mock.timers.tick(1000);
        await settle();
      }
      assert.equal(fired.length, 3, 'an unscheduled trigger no longer fires');
    } finally {
      triggers.stop();
      mock.timers.reset();
    }
  });
});
