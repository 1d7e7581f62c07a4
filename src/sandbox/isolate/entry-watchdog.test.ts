import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import ivm from 'isolated-vm';
import { waitFor } from '../../../test/helpers/server-process.js';
import { EntryWatchdog } from './entry-watchdog.js';

/** An isolate with a function that spins for `ms` (forever when negative). */
function spinner(): { isolate: ivm.Isolate; spin: ivm.Reference<(ms: number) => number> } {
  const isolate = new ivm.Isolate({ memoryLimit: 16 });
  const context = isolate.createContextSync();
  const spin = context.evalSync(
    '(function (ms) { const end = Date.now() + ms; let n = 0; while (ms < 0 || Date.now() < end) n++; return n; })',
    { reference: true },
  ) as ivm.Reference<(ms: number) => number>;
  return { isolate, spin };
}

/** The entry's number once the watchdog covers this isolate (the first entries take isolated-vm's timeout). */
async function coveredEntry(watchdog: EntryWatchdog, isolate: ivm.Isolate, budgetMs: number): Promise<number> {
  return waitFor('the watchdog to cover the isolate', async () => {
    const entry = watchdog.enter(isolate, Date.now() + budgetMs);
    if (entry !== 0) return entry;
    await new Promise((resolve) => setTimeout(resolve, 5));
    return undefined;
  });
}

describe('the entry watchdog', () => {
  const watchdog = new EntryWatchdog();
  after(() => watchdog.close());

  it('ends an entry that runs past its budget by disposing its isolate, and tells the host', async () => {
    const { isolate, spin } = spinner();
    const entry = await coveredEntry(watchdog, isolate, 20);
    assert.throws(() => spin.applySync(undefined, [-1]), /disposed during execution/);
    assert.equal(watchdog.exit(entry, isolate), true);
    assert.equal(isolate.isDisposed, true);
    assert.equal(watchdog.stats.claimed, 1);
  });

  it('leaves an entry that ends within its budget, and its isolate, alone', async () => {
    const { isolate, spin } = spinner();
    for (let i = 0; i < 20; i++) {
      const entry = await coveredEntry(watchdog, isolate, 200);
      assert.ok((spin.applySync(undefined, [1]) as number) > 0);
      assert.equal(watchdog.exit(entry, isolate), false);
    }
    assert.equal(isolate.isDisposed, false);
    watchdog.forget(isolate);
    isolate.dispose();
  });

  it('covers the next isolate after one it ended, and stops watching when idle', async () => {
    const first = spinner();
    const entry = await coveredEntry(watchdog, first.isolate, 20);
    assert.throws(() => first.spin.applySync(undefined, [-1]), /disposed during execution/);
    assert.equal(watchdog.exit(entry, first.isolate), true);
    const second = spinner();
    const next = await coveredEntry(watchdog, second.isolate, 200);
    assert.ok((second.spin.applySync(undefined, [1]) as number) > 0);
    assert.equal(watchdog.exit(next, second.isolate), false);
    // A second without entries ends the loop, so that an idle process can exit.
    await waitFor('the loop to end when idle', async () => (watchdog.watching ? undefined : true));
    assert.equal(watchdog.enter(second.isolate, Date.now() + 200), 0, 'an entry while the loop is down is not covered');
    await coveredEntry(watchdog, second.isolate, 200).then((e) => watchdog.exit(e, second.isolate));
    watchdog.forget(second.isolate);
    second.isolate.dispose();
  });
});
