import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';
import type { Isolation } from '../core/kinds.js';
import { defaultKindOf } from '../core/kinds.js';
import type { Backend } from '../sandbox/backend.js';
import { FakeBackend, type FakeSandbox } from '../sandbox/fake/fake-backend.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';

let cells: StemCells | undefined;

function pool(targets: StemCellTarget[]): { backend: FakeBackend; cells: StemCells } {
  const backend = new FakeBackend('process');
  cells = new StemCells(new Map<Isolation, Backend>([['process', backend]]), targets);
  cells.start();
  return { backend, cells };
}

/** Until the pool holds `size` ready sandboxes (the fake backend makes them at once). */
async function filled(stemCells: StemCells, size: number): Promise<void> {
  for (let i = 0; i < 100 && stemCells.size < size; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(stemCells.size, size);
}

afterEach(async () => {
  mock.timers.reset();
  await cells?.close();
  cells = undefined;
});

describe('stem cells', () => {
  it('makes blank sandboxes of the kind each target names', async () => {
    const { backend, cells } = pool([
      { isolation: 'process', memoryMb: 256, count: 1 },
      { isolation: 'process', memoryMb: 256, kind: 'python:3', count: 2 },
    ]);
    await filled(cells, 3);
    const kinds = backend.sandboxes.map((s) => s.spec.kind).sort();
    assert.deepEqual(kinds, ['nodejs:20', 'python:3', 'python:3']);
    assert.ok(backend.sandboxes.every((s) => s.spec.ahead === true && s.spec.memoryMb === 256));
  });

  it('hands a sandbox only to a spec of the same kind and memory size', async () => {
    const { cells } = pool([{ isolation: 'process', memoryMb: 256, kind: 'java:17', count: 1 }]);
    await filled(cells, 1);
    assert.equal(cells.take('process', { memoryMb: 256, kind: 'python:3' }), undefined);
    assert.equal(cells.take('process', { memoryMb: 256, kind: 'nodejs:20' }), undefined);
    assert.equal(cells.take('process', { memoryMb: 256 }), undefined, 'no kind means JavaScript');
    assert.equal(cells.take('process', { memoryMb: 512, kind: 'java:17' }), undefined);
    const taken = cells.take('process', { memoryMb: 256, kind: 'java:17' }) as FakeSandbox | undefined;
    assert.equal(taken?.spec.kind, 'java:17');
  });

  it('takes a target without a kind as JavaScript, and a spec without one the same way', async () => {
    const { cells } = pool([{ isolation: 'process', memoryMb: 256, count: 1 }]);
    await filled(cells, 1);
    assert.equal(cells.take('process', { memoryMb: 256, kind: 'go:1.19' }), undefined);
    assert.ok(cells.take('process', { memoryMb: 256 }));
  });

  it('refills the pool of the kind that was taken', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const { backend, cells } = pool([
      { isolation: 'process', memoryMb: 256, kind: 'ruby:3.1', count: 1 },
      { isolation: 'process', memoryMb: 256, kind: 'php:8.2', count: 1 },
    ]);
    await filled(cells, 2);
    assert.ok(cells.take('process', { memoryMb: 256, kind: 'ruby:3.1' }));
    // The refill waits for the cold start that took the cell to say it loaded, and a moment more.
    mock.timers.tick(1000);
    assert.equal(backend.created, 2);
    cells.replenish('process', { memoryMb: 256, kind: 'ruby:3.1' });
    assert.equal(backend.created, 2);
    mock.timers.tick(20);
    await filled(cells, 2);
    assert.deepEqual(
      backend.sandboxes.map((s) => s.spec.kind),
      ['ruby:3.1', 'php:8.2', 'ruby:3.1'],
    );
  });

  it('defaults to each backend\u2019s first kind', () => {
    assert.equal(defaultKindOf('isolate'), 'nodejs:20');
    assert.equal(defaultKindOf('process'), 'nodejs:20');
    assert.equal(defaultKindOf('wasm'), 'wasm');
  });
});
