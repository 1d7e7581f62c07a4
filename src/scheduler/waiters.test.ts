import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { FairQueue, type Queued, type Waiter, Waiters } from './waiters.js';

const call = (id: number, namespace: string): Queued => ({ id, namespace });

/** The calls in the order a driver serving one per turn, turn after turn, would take them. */
function serveAll(queue: FairQueue<Queued>): number[] {
  const order: number[] = [];
  while (queue.size > 0) {
    for (const { namespace, calls } of queue.turns()) {
      const first = calls[0] as Queued;
      queue.remove(first.id);
      queue.served(namespace);
      order.push(first.id);
    }
  }
  return order;
}

describe('the fair queue', () => {
  it('serves calls of one namespace first come, first served', () => {
    const queue = new FairQueue<Queued>();
    for (const id of [3, 1, 2]) queue.add(call(id, 'a'));
    assert.deepEqual(serveAll(queue), [3, 1, 2]);
  });

  it('lets namespaces take turns, so one flooding the queue does not starve another', () => {
    const queue = new FairQueue<Queued>();
    for (let id = 1; id <= 5; id++) queue.add(call(id, 'hog'));
    queue.add(call(10, 'quiet'));
    queue.add(call(11, 'quiet'));
    assert.deepEqual(serveAll(queue), [1, 10, 2, 11, 3, 4, 5]);
  });

  it('gives the first turn to the namespace served least recently', () => {
    const queue = new FairQueue<Queued>();
    queue.served('a');
    queue.served('b');
    queue.add(call(1, 'b'));
    queue.add(call(2, 'a'));
    queue.add(call(3, 'c'));
    assert.deepEqual(
      queue.turns().map((t) => t.namespace),
      ['c', 'a', 'b'],
      'never served, then served longest ago, then most recently',
    );
    queue.served('a');
    assert.deepEqual(
      queue.turns().map((t) => t.namespace),
      ['c', 'b', 'a'],
    );
  });

  it('takes a call out wherever it is, once', () => {
    const queue = new FairQueue<Queued>();
    for (const id of [1, 2, 3]) queue.add(call(id, 'a'));
    assert.equal(queue.remove(2)?.id, 2);
    assert.equal(queue.remove(2), undefined);
    assert.equal(queue.has(2), false);
    assert.deepEqual(
      queue.turns().flatMap((t) => t.calls.map((c) => c.id)),
      [1, 3],
    );
    queue.remove(1);
    queue.remove(3);
    assert.equal(queue.size, 0);
    assert.deepEqual(queue.turns(), [], 'an emptied namespace has no turn');
  });

  it('adds a call already queued only once', () => {
    const queue = new FairQueue<Queued>();
    const one = call(1, 'a');
    queue.add(one);
    queue.add(one);
    assert.equal(queue.size, 1);
    assert.equal(queue.turns()[0]?.calls.length, 1);
  });
});

describe('the waiting calls', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  /** The calls still in the queue, as a driver's placement would hold them. */
  let inQueue: Set<number>;
  let rejected: string[];

  function waiters(timeoutMs = 100): Waiters<string, string> {
    inQueue = new Set();
    rejected = [];
    return new Waiters<string, string>({
      timeoutMs,
      onTimeout: (waiter: Waiter<string>) => inQueue.delete(waiter.id),
      timeoutError: () => new Error('timed out'),
      onRejected: (waiter) => rejected.push(waiter.payload),
    });
  }

  function settledState(promise: Promise<string>): { value?: string; error?: Error } {
    const state: { value?: string; error?: Error } = {};
    promise.then(
      (value) => {
        state.value = value;
      },
      (error: Error) => {
        state.error = error;
      },
    );
    return state;
  }

  it('fails a call that waited in the queue for the whole timeout, and not before', async () => {
    const w = waiters(100);
    const { id, promise } = w.add('a', 0);
    inQueue.add(id);
    w.queued(id);
    const state = settledState(promise);
    mock.timers.tick(99);
    await Promise.resolve();
    assert.equal(state.error, undefined);
    mock.timers.tick(1);
    await Promise.resolve();
    assert.match(String(state.error), /timed out/);
    assert.equal(inQueue.has(id), false, 'it was taken out of the queue');
    assert.deepEqual(rejected, ['a']);
    assert.equal(w.size, 0);
  });

  it('lets the timeout pass over a call that has left the queue', async () => {
    const w = waiters(100);
    const { id, promise } = w.add('a', 0);
    inQueue.add(id);
    w.queued(id);
    // An instance is starting for it: it waits for the start, not for the queue.
    inQueue.delete(id);
    w.dequeued(id);
    mock.timers.tick(1000);
    await Promise.resolve();
    assert.ok(w.get(id), 'still waiting for its instance');
    assert.equal(w.resolve(id, 'lease'), true);
    assert.equal(await promise, 'lease');
    assert.deepEqual(rejected, []);
  });

  it('leaves a call the driver says is no longer queued to whoever holds it', async () => {
    const w = waiters(100);
    const { id, promise } = w.add('a', 0);
    w.queued(id);
    mock.timers.tick(100);
    const state = settledState(promise);
    await Promise.resolve();
    assert.equal(state.error, undefined, 'onTimeout said no: the call stands');
    w.resolve(id, 'lease');
    assert.equal(await promise, 'lease');
  });

  it('settles each call once: a served call cannot time out or be failed after', async () => {
    const w = waiters(100);
    const { id, promise } = w.add('a', 0);
    inQueue.add(id);
    w.queued(id);
    assert.equal(w.resolve(id, 'lease'), true);
    assert.equal(w.resolve(id, 'again'), false);
    assert.equal(w.reject(id, new Error('late')), false);
    mock.timers.tick(1000);
    assert.equal(await promise, 'lease');
    assert.deepEqual(rejected, [], 'onRejected only for calls that were failed');
  });

  it('fails every call at once on shutdown, and their timers never fire after', async () => {
    const w = waiters(100);
    const calls = ['a', 'b', 'c'].map((payload) => {
      const { id, promise } = w.add(payload, 0);
      inQueue.add(id);
      w.queued(id);
      return promise;
    });
    w.rejectAll(() => new Error('shutting down'));
    const results = await Promise.allSettled(calls);
    assert.deepEqual(
      results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.status)),
      ['shutting down', 'shutting down', 'shutting down'],
    );
    mock.timers.tick(1000);
    assert.deepEqual(rejected, ['a', 'b', 'c'], 'each failed once');
    assert.equal(inQueue.size, 3, 'no timeout ran after shutdown');
  });

  it('restarts the timeout when a call goes back in the queue', async () => {
    const w = waiters(100);
    const { id, promise } = w.add('a', 0);
    inQueue.add(id);
    w.queued(id);
    mock.timers.tick(60);
    w.queued(id);
    mock.timers.tick(60);
    const state = settledState(promise);
    await Promise.resolve();
    assert.equal(state.error, undefined, '60 ms since it was queued again');
    mock.timers.tick(40);
    await Promise.resolve();
    assert.match(String(state.error), /timed out/);
  });
});
