import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { TestCluster } from './helpers/cluster.js';
import { annotation, waitFor } from './helpers/server.js';
import type { ServerProcess } from './helpers/server-process.js';

/**
 * How the multi-process cluster (test/cluster.test.ts) behaves when its parts fail: an invoker
 * cut off from the network, PostgreSQL restarting, a controller killed. Each part is real: a
 * network namespace with a veth pair, PostgreSQL and nats-server of the test's own, `isola serve`
 * processes. The deadlines are generous (a loaded 2-core machine); nothing is timed.
 */

/** The stored record of an activation, once there is one. */
async function recordOf(via: ServerProcess, activationId: string): Promise<ActivationRecord | undefined> {
  const response = await via.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${activationId}`);
  return response.status === 200 ? response.body : undefined;
}

/** Waits for the record of every activation, read through `via`. */
function allRecords(via: ServerProcess, ids: readonly string[], timeoutMs: number): Promise<ActivationRecord[]> {
  return waitFor(
    `a record for each of ${ids.length} activations`,
    async () => {
      const records = await Promise.all(ids.map((id) => recordOf(via, id)));
      return records.every((record) => record !== undefined) ? (records as ActivationRecord[]) : undefined;
    },
    timeoutMs,
  );
}

/** Whether `server` runs an instance of `action` busy with a call now, by its metrics. */
async function runsNow(server: ServerProcess, action: string): Promise<boolean> {
  const busy = new RegExp(`^isola_function_instances\\{[^}]*action="${action}"[^}]*state="busy"[^}]*\\} [1-9]`, 'm');
  return busy.test(await server.metrics());
}

/** A function that answers after `p.ms` milliseconds (at once without). */
const SLEEPER = 'function main(p) { return new Promise((r) => setTimeout(() => r({ n: p.n, slept: p.ms || 0 }), p.ms || 0)); }';

/** Why network namespaces cannot be made here, or undefined when they can. */
function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'making network namespaces needs root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `\`ip netns\` does not work here: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
  }
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A network namespace joined to the host by a veth pair on a /30 of 10.213.0.0/16 that nothing
 * on the host uses: the host end is .1, the namespace's end .2. Cutting it sets the host end
 * down: the namespace's packets go nowhere, while the host keeps reaching its own end's address
 * (a local address stays local when its link is down).
 */
class VethNamespace {
  private removed = false;
  private readonly removeOnExit = () => this.remove();

  private constructor(
    readonly name: string,
    readonly hostVeth: string,
    readonly hostAddress: string,
    readonly namespaceAddress: string,
    readonly subnet: string,
  ) {
    process.once('exit', this.removeOnExit);
  }

  static create(): VethNamespace {
    const tag = randomBytes(3).toString('hex');
    const used = ip('-4', '-o', 'addr', 'show') + ip('-4', 'route', 'show', 'table', 'all');
    let octet: number | undefined;
    for (let tries = 0; tries < 50 && octet === undefined; tries++) {
      const candidate = randomInt(0, 256);
      if (!used.includes(`10.213.${candidate}.`)) octet = candidate;
    }
    if (octet === undefined) throw new Error('no free /24 of 10.213.0.0/16 on this host');
    const net = new VethNamespace(
      `isola-cut-${tag}`,
      `ivh${tag}`,
      `10.213.${octet}.1`,
      `10.213.${octet}.2`,
      `10.213.${octet}.0/30`,
    );
    const namespaceVeth = `ivn${tag}`;
    try {
      ip('netns', 'add', net.name);
      ip('link', 'add', net.hostVeth, 'type', 'veth', 'peer', 'name', namespaceVeth);
      ip('link', 'set', namespaceVeth, 'netns', net.name);
      ip('addr', 'add', `${net.hostAddress}/30`, 'dev', net.hostVeth);
      ip('link', 'set', net.hostVeth, 'up');
      ip('-n', net.name, 'addr', 'add', `${net.namespaceAddress}/30`, 'dev', namespaceVeth);
      ip('-n', net.name, 'link', 'set', namespaceVeth, 'up');
      ip('-n', net.name, 'link', 'set', 'lo', 'up');
    } catch (error) {
      net.remove();
      throw error;
    }
    return net;
  }

  /** The command prefix that runs a program inside (`ip netns exec` execs it: the pid is the program's). */
  get exec(): string[] {
    return ['ip', 'netns', 'exec', this.name];
  }

  cut(): void {
    ip('link', 'set', this.hostVeth, 'down');
  }

  restore(): void {
    ip('link', 'set', this.hostVeth, 'up');
  }

  /** Deletes the namespace (its end of the pair goes with it, and so the host end). Never throws. */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    process.off('exit', this.removeOnExit);
    for (const args of [
      ['netns', 'del', this.name],
      ['link', 'del', this.hostVeth],
    ]) {
      try {
        ip(...args);
      } catch {
        // Not there (any more): nothing to remove.
      }
    }
  }
}

const noNetns = netnsUnavailable();

describe('an invoker in a network namespace that is cut off and reconnected', { skip: noNetns }, () => {
  let net: VethNamespace;
  let cluster: TestCluster;
  let controller: ServerProcess;
  let hostInvoker: ServerProcess;
  let cutInvoker: ServerProcess;
  let hostInvokerId: string;
  let cutInvokerId: string;
  /** A function whose home is the invoker in the namespace. */
  let homedThere: string;
  let cutDone = false;
  const listInvokers = (via: ServerProcess) => cluster.listInvokers(via);

  before(async () => {
    net = VethNamespace.create();
    // PostgreSQL on 127.0.0.1 and the veth's host end; NATS on the host end only (the host's
    // processes reach it there too, cut or not).
    cluster = await TestCluster.start({
      backends: ['isolate'],
      postgres: { listenAddresses: [net.hostAddress], trustedNetworks: [net.subnet] },
      nats: { host: net.hostAddress },
    });
    const database = new URL(cluster.databaseUrl).pathname.slice(1);
    controller = await cluster.start('controller');
    hostInvoker = await cluster.start('invoker', { env: { ISOLA_MEMORY_BUDGET_MB: '2048' } });
    cutInvoker = await cluster.start('invoker', {
      wrap: net.exec,
      env: {
        ISOLA_HOST: net.namespaceAddress,
        ISOLA_DATABASE_URL: cluster.postgres.url(database, net.hostAddress),
        ISOLA_MEMORY_BUDGET_MB: '2048',
      },
    });
    const listed = await cluster.waitForInvokers(controller, 2);
    hostInvokerId = cluster.invokerIdOf(listed, hostInvoker) as string;
    cutInvokerId = cluster.invokerIdOf(listed, cutInvoker) as string;
    assert.ok(hostInvokerId && cutInvokerId, JSON.stringify(listed));
  });

  after(async () => {
    // Reconnected first, so that the invoker in the namespace can leave as it does on SIGTERM.
    if (cutDone) {
      try {
        net.restore();
      } catch {
        // Removed below either way.
      }
    }
    await cluster?.dispose();
    net?.remove();
  });

  it('lists the invoker in the namespace with its host and backends, and runs calls there', async () => {
    assert.ok(cutInvoker.url.includes(net.namespaceAddress), `it listens on ${cutInvoker.url}`);
    const listed = await listInvokers(controller);
    const there = listed.find((invoker) => invoker.id === cutInvokerId);
    assert.ok(there, JSON.stringify(listed));
    assert.deepEqual(there.backends, ['isolate']);
    assert.equal(there.health, 'healthy');
    assert.ok(there.host.length > 0, 'it names its host');
    // Each function has a home invoker by consistent hashing: new ones until one's is there.
    let found: ActivationRecord | undefined;
    for (let i = 0; i < 24 && !found; i++) {
      const name = `home-${i}`;
      const deployed = await controller.deploy(name, SLEEPER, { limits: { memory: 128, timeout: 60_000 } });
      assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
      const res = await controller.invoke<ActivationRecord>(name, { n: i });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.response.status, 'success', JSON.stringify(res.body.response));
      const ranOn = annotation(res.body, 'invoker');
      assert.ok(ranOn === hostInvokerId || ranOn === cutInvokerId, `ran on ${String(ranOn)}`);
      if (ranOn === cutInvokerId) {
        homedThere = name;
        found = res.body;
      }
    }
    assert.ok(found, 'one of 24 functions has its home on the invoker in the namespace');
    const stored = await recordOf(controller, found.activationId);
    assert.equal(stored?.response.status, 'success');
    assert.equal(annotation(stored as ActivationRecord, 'invoker'), cutInvokerId);
  });

  it('drops it from the registry once cut off, serves its calls on the other invoker and runs its asynchronous work again', async () => {
    assert.ok(homedThere, 'a function has its home on the invoker in the namespace (the test before)');
    const deployed = await controller.deploy('sleepy', SLEEPER, {
      limits: { memory: 128, timeout: 120_000 },
      annotations: [{ key: 'retries', value: 3 }],
    });
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    // Asynchronous calls, one at a time, until the invoker in the namespace runs one: both
    // invokers take work from the same stream.
    const accepted: string[] = [];
    await waitFor(
      'the invoker in the namespace to run an asynchronous call',
      async () => {
        if (await runsNow(cutInvoker, 'sleepy')) return true;
        if (accepted.length < 12) {
          const res = await controller.invoke<{ activationId: string }>(
            'sleepy',
            { n: accepted.length, ms: 20_000 },
            'blocking=false',
          );
          assert.equal(res.status, 202, JSON.stringify(res.body));
          accepted.push(res.body.activationId);
        }
        return undefined;
      },
      60_000,
    );

    net.cut();
    cutDone = true;
    // Within the registry TTL (10 s) and a reading of it, with room to spare.
    await waitFor(
      'the cut-off invoker to leave the registry',
      async () => {
        const ids = (await listInvokers(controller)).map((invoker) => invoker.id);
        return !ids.includes(cutInvokerId) && ids.includes(hostInvokerId) ? true : undefined;
      },
      60_000,
    );
    // A call placed just before the controller's view dropped it ends with a whisk internal
    // error ("left the cluster"); from then on its home's calls run on the host.
    await waitFor(
      "a call of the function homed there to run on the host's invoker",
      async () => {
        const res = await controller.invoke<ActivationRecord>(homedThere, { n: 0 });
        return res.status === 200 && annotation(res.body, 'invoker') === hostInvokerId ? true : undefined;
      },
      60_000,
    );
    for (let n = 1; n <= 3; n++) {
      const res = await controller.invoke<ActivationRecord>(homedThere, { n });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.response.status, 'success', JSON.stringify(res.body.response));
      assert.deepEqual(res.body.response.result, { n, slept: 0 });
      assert.equal(annotation(res.body, 'invoker'), hostInvokerId);
    }

    // The work it held is delivered again once its ack wait lapses, and ends on the host's invoker.
    const records = await allRecords(controller, accepted, 240_000);
    for (const record of records) {
      const ranOn = annotation(record, 'invoker');
      if (record.response.status === 'whisk internal error') continue;
      assert.equal(record.response.status, 'success', JSON.stringify(record.response));
      assert.equal(ranOn, hostInvokerId, 'recorded while the invoker in the namespace cannot reach the database');
    }
    const again = records.filter((record) => Number(annotation(record, 'attempt')) > 1);
    assert.ok(again.length > 0, 'some calls ran again after their invoker was cut off');
    for (const record of again) assert.equal(record.response.status, 'success', JSON.stringify(record.response));
  });

  it('lists it again by itself once its network is back, and places calls on it again', async () => {
    net.restore();
    cutDone = false;
    // NATS's client noticed the lost server and tries again every second; its heartbeat then
    // registers it anew.
    await waitFor(
      'the invoker to be listed again',
      async () => {
        const listed = await listInvokers(controller);
        return listed.some((invoker) => invoker.id === cutInvokerId && invoker.health === 'healthy') ? true : undefined;
      },
      120_000,
    );
    // New functions until one has its home there again and runs there.
    let n = 0;
    await waitFor(
      'a call to run on the reconnected invoker',
      async () => {
        const name = `back-${n++}`;
        const deployed = await controller.deploy(name, SLEEPER, { limits: { memory: 128, timeout: 60_000 } });
        assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
        const res = await controller.invoke<ActivationRecord>(name, { n });
        return res.status === 200 && res.body.response.status === 'success' && annotation(res.body, 'invoker') === cutInvokerId
          ? true
          : undefined;
      },
      180_000,
    );
  });
});

describe('a cluster whose PostgreSQL restarts', () => {
  let cluster: TestCluster;
  let controller: ServerProcess;

  before(async () => {
    cluster = await TestCluster.start({ backends: ['isolate'] });
    controller = await cluster.start('controller');
    await cluster.start('invoker');
    await cluster.waitForInvokers(controller, 1);
  });

  after(async () => {
    await cluster?.dispose();
  });

  it('answers 503 while the database is down and serves calls again by itself once it is back', async () => {
    const deployed = await controller.deploy('echo', SLEEPER, { limits: { memory: 128, timeout: 60_000 } });
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    assert.equal((await controller.invoke<ActivationRecord>('echo', { n: 1 })).body.response.status, 'success');

    await cluster.postgres.shutdown();
    for (let n = 0; n < 3; n++) {
      const blocking = await controller.invoke<{ error: string }>('echo', { n });
      assert.equal(blocking.status, 503, JSON.stringify(blocking.body));
      assert.match(blocking.body.error, /database/i);
      const later = await controller.invoke<{ error: string }>('echo', { n }, 'blocking=false');
      assert.equal(later.status, 503, JSON.stringify(later.body));
    }
    const listing = await controller.request<{ error: string }>('GET', '/api/v1/namespaces/_/activations');
    assert.equal(listing.status, 503, JSON.stringify(listing.body));

    await cluster.postgres.restart();
    const served = await waitFor(
      'a call to succeed again',
      async () => {
        const res = await controller.invoke<ActivationRecord>('echo', { n: 42 });
        return res.status === 200 ? res.body : undefined;
      },
      60_000,
    );
    assert.deepEqual(served.response.result, { n: 42, slept: 0 });
    assert.equal((await recordOf(controller, served.activationId))?.response.status, 'success');
    // Asynchronous ones too: the invoker writes its records again.
    const accepted = await controller.invoke<{ activationId: string }>('echo', { n: 43 }, 'blocking=false');
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    const [record] = await allRecords(controller, [accepted.body.activationId], 60_000);
    assert.deepEqual(record?.response.result, { n: 43, slept: 0 });
  });
});

describe('a cluster that loses a controller', () => {
  let cluster: TestCluster;
  let first: ServerProcess;
  let second: ServerProcess;
  let invoker: ServerProcess;

  before(async () => {
    cluster = await TestCluster.start({ backends: ['isolate'] });
    // The first controller creates the schema before the others share it.
    first = await cluster.start('controller');
    [second, invoker] = await Promise.all([
      cluster.start('controller'),
      cluster.start('invoker', { env: { ISOLA_MEMORY_BUDGET_MB: '1024' } }),
    ]);
    for (const controller of [first, second]) await cluster.waitForInvokers(controller, 1);
  });

  after(async () => {
    await cluster?.dispose();
  });

  it('completes every asynchronous call the killed controller accepted, and the other serves on', async () => {
    const deployed = await first.deploy('steady', SLEEPER, { limits: { memory: 128, timeout: 60_000 } });
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    const accepted: string[] = [];
    for (let n = 0; n < 16; n++) {
      const res = await first.invoke<{ activationId: string }>('steady', { n, ms: 2000 }, 'blocking=false');
      assert.equal(res.status, 202, JSON.stringify(res.body));
      accepted.push(res.body.activationId);
    }
    await first.kill();

    const records = await allRecords(second, accepted, 180_000);
    const invokerId = cluster.invokerIdOf(await cluster.listInvokers(second), invoker);
    assert.ok(invokerId);
    records.forEach((record, n) => {
      assert.equal(record.response.status, 'success', JSON.stringify(record.response));
      assert.deepEqual(record.response.result, { n, slept: 2000 });
      assert.equal(annotation(record, 'invoker'), invokerId);
    });
    const listed = await second.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?name=steady&limit=100');
    assert.equal(listed.body.filter((record) => accepted.includes(record.activationId)).length, accepted.length);

    for (let n = 100; n < 103; n++) {
      const res = await second.invoke<ActivationRecord>('steady', { n });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.response.result, { n, slept: 0 });
    }
  });
});
