// The messaging layer against a real nats-server (test/helpers/nats.ts): each test uses its own
// prefix, so its stream, consumers and buckets are its own.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { NATS_MAX_PAYLOAD, NatsInstance, sharedNats, stopSharedNats } from '../../test/helpers/nats.js';
import { freePort, waitFor } from '../../test/helpers/server-process.js';
import { Bus, BusError, type BusOptions, type InvokerInfo, type LiveInvoker, leaseKey, type WorkDelivery } from './bus.js';

const buses: Bus[] = [];
after(async () => {
  await Promise.allSettled(buses.map((bus) => bus.close()));
  await stopSharedNats();
});

async function open(prefix: string, options: Partial<BusOptions> = {}, url?: string): Promise<Bus> {
  const bus = await Bus.connect({ url: url ?? (await sharedNats()).url, prefix, ...options });
  buses.push(bus);
  return bus;
}

const newPrefix = () => `t${randomBytes(4).toString('hex')}`;

interface Job {
  n: number;
}
const decodeJob = (value: unknown): Job => {
  if (typeof value !== 'object' || value === null || typeof (value as Job).n !== 'number') throw new Error('not a job');
  return value as Job;
};

function invoker(id: string): InvokerInfo {
  return {
    id,
    host: '127.0.0.1',
    backends: ['isolate', 'wasm'],
    minMemoryMb: { isolate: 16, wasm: 16 },
    memoryBudgetMb: 1024,
    memoryInUseMb: 0,
    memoryIdleMb: 0,
    warm: {},
    live: {},
    ready: {},
    instances: 0,
    draining: false,
  };
}

describe('work stream', () => {
  it('stores a repeated activation id once', async () => {
    const bus = await open(newPrefix());
    assert.deepEqual(await bus.publishWork('isolate', 'act-1', { n: 1 }), { duplicate: false });
    assert.deepEqual(await bus.publishWork('isolate', 'act-1', { n: 1 }), { duplicate: true });
    assert.deepEqual(await bus.publishWork('isolate', 'act-2', { n: 2 }), { duplicate: false });

    const received: string[] = [];
    const consumer = await bus.consumeWork('isolate', { concurrency: 1, decode: decodeJob }, async (delivery) => {
      received.push(delivery.activationId);
      assert.equal(await delivery.ack(), true);
    });
    await waitFor('both activations', async () => (received.includes('act-2') ? true : undefined));
    await consumer.stop();
    // One at a time and in order: a stored duplicate of act-1 would have come before act-2.
    assert.deepEqual(received, ['act-1', 'act-2']);
    assert.deepEqual(await bus.workBacklog('isolate'), { waiting: 0, inProgress: 0 });
  });

  it('keeps work with a live holder past the ack wait and gives it to another consumer once the holder dies', async () => {
    const prefix = newPrefix();
    const ackWaitMs = 1000;
    const first = await open(prefix, { ackWaitMs });
    const second = await open(prefix, { ackWaitMs });
    const firstGot: WorkDelivery<Job>[] = [];
    // The first holder never settles: it holds the message until its connection dies.
    await first.consumeWork('process', { concurrency: 1, decode: decodeJob }, (delivery) => {
      firstGot.push(delivery);
      return new Promise<void>(() => {});
    });
    await second.publishWork('process', 'act-r', { n: 7 });
    await waitFor('the first consumer to hold the work', async () => (firstGot.length > 0 ? true : undefined));
    assert.equal(firstGot[0]?.deliveryCount, 1);

    const secondGot: WorkDelivery<Job>[] = [];
    const consumer = await second.consumeWork('process', { concurrency: 2, decode: decodeJob }, async (delivery) => {
      secondGot.push(delivery);
      // The marker comes back after three ack waits (the server's clock): by then a holder that
      // only relied on the ack wait would have lost act-r to this consumer.
      if (delivery.activationId === 'marker' && delivery.deliveryCount === 1) delivery.retry(3 * ackWaitMs);
      else await delivery.ack();
    });
    await second.publishWork('process', 'marker', { n: 0 });
    await waitFor('the marker to come back', async () => (secondGot.some((d) => d.deliveryCount === 2) ? true : undefined));
    assert.deepEqual(
      secondGot.map((d) => d.activationId),
      ['marker', 'marker'],
      'the live holder kept its work through its progress signals',
    );

    await first.close();
    await waitFor('the work to reach the second consumer', async () => (secondGot.length > 2 ? true : undefined), 20_000);
    await consumer.stop();
    const redelivered = secondGot[2];
    assert.equal(redelivered?.activationId, 'act-r');
    assert.deepEqual(redelivered?.work, { n: 7 });
    assert.ok((redelivered?.deliveryCount ?? 0) >= 2, `delivery count ${redelivered?.deliveryCount}`);
    assert.deepEqual(await second.workBacklog('process'), { waiting: 0, inProgress: 0 });
  });

  it('delivers again after a retry and never after a drop', async () => {
    const bus = await open(newPrefix());
    await bus.publishWork('wasm', 'act-retry', { n: 1 });
    await bus.publishWork('wasm', 'act-drop', { n: 2 });
    await bus.publishWork('wasm', 'act-bad', { wrong: true });
    const seen: string[] = [];
    const consumer = await bus.consumeWork('wasm', { concurrency: 1, decode: decodeJob }, async (delivery) => {
      seen.push(`${delivery.activationId}#${delivery.deliveryCount}`);
      if (delivery.activationId === 'act-drop') delivery.drop();
      else if (delivery.deliveryCount === 1) delivery.retry(200);
      else await delivery.ack();
    });
    await waitFor('the retried work', async () => (seen.includes('act-retry#2') ? true : undefined));
    await waitFor('nothing left', async () => {
      const backlog = await bus.workBacklog('wasm');
      return backlog.waiting === 0 && backlog.inProgress === 0 ? true : undefined;
    });
    await consumer.stop();
    assert.deepEqual(
      seen.filter((s) => s.startsWith('act-drop')),
      ['act-drop#1'],
    );
    // A body the decoder refuses never reaches the handler.
    assert.equal(seen.filter((s) => s.startsWith('act-bad')).length, 0);
  });
});

describe('invoker registry', () => {
  it('lists a registered invoker until its heartbeats stop and the TTL passes', async () => {
    const prefix = newPrefix();
    const controller = await open(prefix, { registryTtlMs: 1500 });
    const invokerBus = await open(prefix, { registryTtlMs: 1500 });
    let load = 0;
    await invokerBus.registerInvoker(() => ({ ...invoker('inv-a'), memoryInUseMb: load }));
    const seen: LiveInvoker[][] = [];
    const watch = await controller.watchInvokers((invokers) => seen.push(invokers));

    assert.deepEqual(
      (await controller.listInvokers()).map((i) => [i.id, i.backends]),
      [['inv-a', ['isolate', 'wasm']]],
    );
    assert.deepEqual(
      watch.current().map((i) => i.id),
      ['inv-a'],
    );
    // Heartbeats carry what the invoker says of itself then.
    load = 256;
    await waitFor('a heartbeat with the new load', async () =>
      (await controller.listInvokers()).some((i) => i.memoryInUseMb === 256) ? true : undefined,
    );

    await invokerBus.close();
    await waitFor('the entry to expire', async () => ((await controller.listInvokers()).length === 0 ? true : undefined), 15_000);
    await waitFor('the watch to drop it', async () => (watch.current().length === 0 ? true : undefined), 15_000);
    assert.deepEqual(seen.at(-1), []);
    watch.stop();
  });

  it('drops a deregistered invoker at once', async () => {
    const prefix = newPrefix();
    const controller = await open(prefix, { registryTtlMs: 60_000 });
    const invokerBus = await open(prefix, { registryTtlMs: 60_000 });
    const watch = await controller.watchInvokers(() => {});
    const registration = await invokerBus.registerInvoker(() => invoker('inv-b'));
    await waitFor('the watch to see it', async () => (watch.current().length === 1 ? true : undefined));
    await registration.deregister();
    // Within the TTL (a minute): only the deletion can have removed it.
    await waitFor('the watch to drop it', async () => (watch.current().length === 0 ? true : undefined));
    assert.deepEqual(await controller.listInvokers(), []);
    watch.stop();
  });
});

describe('request/reply', () => {
  it('answers, fails, times out, and tells a missing invoker apart', async () => {
    const prefix = newPrefix();
    const invokerBus = await open(prefix);
    const controller = await open(prefix);
    // Lets go of the request the handler holds.
    const held: { release?: (() => void) | undefined } = {};
    const releaseHeld = () => {
      const release = held.release;
      held.release = undefined;
      release?.();
    };
    const served = await invokerBus.serveInvocations(
      'inv-1',
      (value) => value as { op: string; payload?: string },
      async (request) => {
        if (request.op === 'fail') throw new Error('the sandbox died');
        if (request.op === 'hold') {
          await new Promise<void>((resolve) => {
            held.release = resolve;
          });
        }
        if (request.op === 'huge') return { result: 'x'.repeat(NATS_MAX_PAYLOAD) };
        return { result: request.payload ?? null };
      },
    );
    const decode = (value: unknown) => value as { result: string | null };

    assert.deepEqual(await controller.requestInvocation('inv-1', { op: 'echo', payload: 'hi' }, { timeoutMs: 5000, decode }), {
      kind: 'result',
      value: { result: 'hi' },
    });
    // A 1 MiB parameter and result, Isola's default payload limit, fit in the server's max_payload.
    const mib = 'p'.repeat(1024 * 1024);
    const big = await controller.requestInvocation('inv-1', { op: 'echo', payload: mib }, { timeoutMs: 10_000, decode });
    assert.equal(big.kind === 'result' && big.value.result === mib, true);

    assert.deepEqual(await controller.requestInvocation('inv-1', { op: 'fail' }, { timeoutMs: 5000, decode }), {
      kind: 'error',
      message: 'the sandbox died',
    });
    const huge = await controller.requestInvocation('inv-1', { op: 'huge' }, { timeoutMs: 10_000, decode });
    assert.equal(huge.kind, 'too-large');

    assert.deepEqual(await controller.requestInvocation('inv-1', { op: 'hold' }, { timeoutMs: 300, decode }), {
      kind: 'timeout',
    });
    releaseHeld();

    const abort = new AbortController();
    const pending = controller.requestInvocation('inv-1', { op: 'hold' }, { timeoutMs: 60_000, decode, signal: abort.signal });
    await waitFor('the request to arrive', async () => (held.release ? true : undefined));
    abort.abort();
    assert.deepEqual(await pending, { kind: 'aborted' });
    releaseHeld();

    assert.deepEqual(await controller.requestInvocation('inv-2', { op: 'echo' }, { timeoutMs: 5000, decode }), {
      kind: 'no-invoker',
    });
    await assert.rejects(
      controller.requestInvocation('inv-1', { payload: 'x'.repeat(NATS_MAX_PAYLOAD) }, { timeoutMs: 5000, decode }),
      (error: unknown) => error instanceof BusError && error.reason === 'too-large' && error.status === 413,
    );
    await assert.rejects(
      controller.publishWork('isolate', 'act-huge', { payload: 'x'.repeat(NATS_MAX_PAYLOAD) }),
      (error: unknown) => error instanceof BusError && error.reason === 'too-large' && /max_payload/.test(error.message),
    );
    served.stop();
  });
});

describe('leases', () => {
  it('gives each key to exactly one of two contenders', async () => {
    const prefix = newPrefix();
    const a = await open(prefix);
    const b = await open(prefix);
    const keys = Array.from({ length: 10 }, (_, tick) =>
      leaseKey('cron', 'guest', 'every minute', 1_733_250_000_000 + tick * 60_000),
    );
    const results = await Promise.all(keys.map((key) => Promise.all([a.acquireLease(key, 'a'), b.acquireLease(key, 'b')])));
    for (const [index, [fromA, fromB]] of results.entries()) {
      assert.equal(Number(fromA !== undefined) + Number(fromB !== undefined), 1, `key ${keys[index]}`);
    }

    const [winner] = results[0] ?? [];
    const lease = winner ?? results[0]?.[1];
    assert.ok(lease);
    assert.equal(await lease.renew(), true);
    const other = lease.holder === 'a' ? b : a;
    assert.equal(await other.acquireLease(lease.key, 'other'), undefined);
    await lease.release();
    const taken = await other.acquireLease(lease.key, 'other');
    assert.equal(taken?.holder, 'other');
    // The former holder's revision is stale now.
    assert.equal(await lease.renew(), false);
  });

  it('makes keys of any text', () => {
    assert.equal(leaseKey('cron', 'guest', 'my trigger.x', 42), 'cron.guest.my=20trigger=2ex.42');
    assert.equal(leaseKey('a', ''), 'a.=');
  });
});

describe('connection', () => {
  it('refuses to start with a 503 when NATS is unreachable', async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    await assert.rejects(
      Bus.connect({ url }),
      (error: unknown) => error instanceof BusError && error.status === 503 && error.message.includes(url),
    );
  });

  it('reconnects by itself after a nats-server restart; calls fail with 503 meanwhile and resume after', async () => {
    const nats = await NatsInstance.start();
    try {
      const bus = await open(newPrefix(), { reconnectWaitMs: 200 }, nats.url);
      const statuses: string[] = [];
      bus.onStatus((status) => statuses.push(status));
      // Work stored with nobody consuming it (it must survive the restart), and a consumer of
      // another pool that keeps running through the restart.
      await bus.publishWork('isolate', 'act-stored', { n: 1 });
      const running: string[] = [];
      const runningConsumer = await bus.consumeWork('process', { concurrency: 2, decode: decodeJob }, async (delivery) => {
        running.push(delivery.activationId);
        await delivery.ack();
      });
      await bus.publishWork('process', 'act-before', { n: 2 });
      await waitFor('the running consumer to take work', async () => (running.length === 1 ? true : undefined));

      await nats.shutdown();
      await waitFor('the bus to see NATS gone', async () => (bus.connected ? undefined : true));
      await assert.rejects(
        bus.publishWork('isolate', 'act-down', { n: 3 }),
        (error: unknown) => error instanceof BusError && error.reason === 'unavailable' && error.status === 503,
      );

      await nats.restart();
      await waitFor('the bus to reconnect', async () => (bus.connected ? true : undefined), 30_000);
      assert.deepEqual(statuses, ['disconnected', 'connected']);
      await waitFor('a publish to go through', () =>
        bus.publishWork('process', 'act-after', { n: 4 }).then(
          () => true,
          () => undefined,
        ),
      );
      await waitFor(
        'the consumer that ran through the restart to take new work',
        async () => (running.includes('act-after') ? true : undefined),
        30_000,
      );
      await runningConsumer.stop();
      assert.deepEqual(running, ['act-before', 'act-after']);

      const stored: string[] = [];
      const consumer = await bus.consumeWork('isolate', { concurrency: 4, decode: decodeJob }, async (delivery) => {
        stored.push(delivery.activationId);
        await delivery.ack();
      });
      await waitFor('the work stored before the restart', async () => (stored.length === 1 ? true : undefined));
      await consumer.stop();
      assert.deepEqual(stored, ['act-stored']);
    } finally {
      await nats.stop();
    }
  });
});
