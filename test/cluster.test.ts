import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { runCli } from './helpers/cli.js';
import { type InvokerStatus, TestCluster } from './helpers/cluster.js';
import { annotation, waitFor } from './helpers/server.js';
import type { ServerProcess } from './helpers/server-process.js';
import { wat } from './helpers/wat.js';

/**
 * A cluster on this machine: PostgreSQL and NATS of its own, two controllers and three invokers,
 * each a separate `isola serve` process. Calls go in through either controller.
 */
describe('a cluster of controllers and invokers', () => {
  let cluster: TestCluster;
  const controllers: ServerProcess[] = [];
  const invokers: ServerProcess[] = [];
  const listInvokers = (via: ServerProcess) => cluster.listInvokers(via);
  const invokerProcess = (id: string) => cluster.invokerProcess(id);
  const startInvoker = async () => {
    const invoker = await cluster.start('invoker', { env: { ISOLA_MEMORY_BUDGET_MB: '2048' } });
    invokers.push(invoker);
    return invoker;
  };
  /** The live invoker running a call of `action` now; fails at once when `call` ends before it is seen. */
  const invokerRunning = async (action: string, call: Promise<unknown>): Promise<ServerProcess> => {
    let ended: unknown;
    void call.then((outcome) => {
      ended = outcome ?? 'nothing';
    });
    const busy = new RegExp(`^isola_function_instances\\{[^}]*action="${action}"[^}]*state="busy"[^}]*\\} [1-9]`, 'm');
    return waitFor(
      `an invoker to run ${action}`,
      async () => {
        if (ended !== undefined) throw new Error(`the call ended before it was seen running: ${JSON.stringify(ended)}`);
        for (const server of invokers) {
          if (server.pid !== undefined && busy.test(await server.metrics().catch(() => ''))) return server;
        }
        return undefined;
      },
      60_000,
    );
  };
  const records = async (via: ServerProcess, name: string) =>
    (await via.request<ActivationRecord[]>('GET', `/api/v1/namespaces/_/activations?name=${name}&limit=200&docs=true`)).body;

  before(async () => {
    cluster = await TestCluster.start({ backends: ['isolate', 'process', 'wasm'] });
    // The first controller creates the schema before the others share it.
    controllers.push(await cluster.start('controller'));
    const [second] = await Promise.all([cluster.start('controller'), startInvoker(), startInvoker(), startInvoker()]);
    controllers.push(second);
    for (const controller of controllers) await cluster.waitForInvokers(controller, 3);
  });

  after(async () => {
    await cluster?.dispose();
  });

  it('lists its invokers, their backends and health, to the operator only', async () => {
    const listed = await listInvokers(controllers[1] as ServerProcess);
    assert.equal(listed.length, 3);
    for (const invoker of listed) {
      assert.deepEqual([...invoker.backends].sort(), ['isolate', 'process', 'wasm']);
      assert.equal(invoker.health, 'healthy');
      assert.ok(invokerProcess(invoker.id), `${invoker.id} is one of the invoker processes`);
    }
    // The CLI shows the same, with the operator token.
    const status = await runCli(['--apihost', (controllers[0] as ServerProcess).url, '--json', 'cluster', 'status'], {
      ISOLA_ADMIN_TOKEN: cluster.adminToken,
    });
    assert.equal(status.code, 0, status.stderr);
    const shown = JSON.parse(status.stdout) as InvokerStatus[];
    assert.deepEqual(shown.map((invoker) => invoker.id).sort(), listed.map((invoker) => invoker.id).sort());
    const table = await runCli(['--apihost', (controllers[0] as ServerProcess).url, 'cluster', 'status'], {
      ISOLA_ADMIN_TOKEN: cluster.adminToken,
    });
    for (const invoker of listed) assert.match(table.stdout, new RegExp(invoker.id));
    const refused = await runCli(['--apihost', (controllers[0] as ServerProcess).url, 'cluster', 'status'], {
      ISOLA_ADMIN_TOKEN: 'not-the-operator-token',
    });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /operator token/);
    const anonymous = await (controllers[0] as ServerProcess).request('GET', '/api/v1/invokers', undefined, { auth: null });
    assert.equal(anonymous.status, 401);
    // Each role has its metrics: a controller counts the invokers it sees, an invoker its instances.
    assert.match(await (controllers[0] as ServerProcess).metrics(), /^isola_cluster_invokers\{health="healthy"\} 3$/m);
    assert.match(await (invokers[0] as ServerProcess).metrics(), /^isola_memory_budget_megabytes 2048$/m);
    // An invoker serves no door: the OpenWhisk API is not there.
    const door = await (invokers[0] as ServerProcess).request('GET', '/api/v1/namespaces/_/actions');
    assert.equal(door.status, 404);
  });

  it('runs a call deployed through one controller and invoked through the other, warm on the same invoker after', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    const deployed = await first.deploy('hello', 'function main(p) { return { hello: p.name }; }');
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    const runs: ActivationRecord[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await second.invoke<ActivationRecord>('hello', { name: `call ${i}` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      runs.push(res.body);
    }
    assert.deepEqual(
      runs.map((r) => (r.response.result as { hello: string }).hello),
      ['call 0', 'call 1', 'call 2', 'call 3'],
    );
    const placedOn = new Set(runs.map((r) => annotation(r, 'invoker')));
    assert.equal(placedOn.size, 1, `all on one invoker: ${[...placedOn]}`);
    assert.equal(annotation(runs[0] as ActivationRecord, 'coldStart'), true);
    for (const run of runs.slice(1)) assert.equal(annotation(run, 'coldStart'), false);
    // Every controller reads every invoker's records.
    const listed = await records(first, 'hello');
    assert.deepEqual(new Set(listed.map((r) => r.activationId)), new Set(runs.map((r) => r.activationId)));
  });

  it('runs the new version everywhere once it is deployed through either controller', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy('versioned', 'function main() { return { v: 1 }; }');
    assert.deepEqual((await second.invoke<ActivationRecord>('versioned')).body.response.result, { v: 1 });
    // The other controller cached version 1 when it ran it: the deploy's notice makes it read again.
    await first.deploy('versioned', 'function main() { return { v: 2 }; }');
    const result = await waitFor('the second controller to run version 2', async () => {
      const res = await second.invoke<ActivationRecord>('versioned');
      return (res.body.response.result as { v: number }).v === 2 ? res.body : undefined;
    });
    assert.equal(result.version, '0.0.2');
  });

  it('refuses at the controller a WebAssembly module no invoker could run, and runs one they can', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    const deploy = (name: string, code: string) =>
      first.request<{ error?: string }>('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
        exec: { kind: 'wasm', code, binary: true },
      });
    const refused = await deploy(
      'missiles',
      await wat('(module (import "env" "launch_missiles" (func)) (func (export "_start")))'),
    );
    assert.equal(refused.status, 400);
    assert.match(refused.body.error ?? '', /imports env\.launch_missiles \(function\), which Isola does not provide/);
    assert.equal((await second.request('GET', '/api/v1/namespaces/_/actions/missiles')).status, 404, 'nothing was stored');
    const echo = await deploy(
      'wasm-echo',
      await wat(`(module
  (memory (export "memory") 1)
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param $at i32) (param $length i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32)) (i64.extend_i32_u (local.get $length)))))`),
    );
    assert.equal(echo.status, 200, JSON.stringify(echo.body));
    const ran = await second.invoke<ActivationRecord>('wasm-echo', { echoed: true });
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.deepEqual(ran.body.response.result, { echoed: true });
    assert.ok(invokerProcess(String(annotation(ran.body, 'invoker'))));
  });

  it('answers 202 for an asynchronous call and stores its record from the invoker that ran it', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy('later', 'function main(p) { return { twice: p.n * 2 }; }');
    const accepted = await second.invoke<{ activationId: string }>('later', { n: 21 }, 'blocking=false');
    assert.equal(accepted.status, 202);
    const record = await waitFor('the record', async () => {
      const res = await first.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${accepted.body.activationId}`);
      return res.status === 200 ? res.body : undefined;
    });
    assert.deepEqual(record.response.result, { twice: 42 });
    assert.ok(invokerProcess(String(annotation(record, 'invoker'))));
  });

  it('answers 503 while NATS is down and serves again by itself once it is back', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy('steady', 'function main(p) { return { n: p.n }; }');
    assert.equal((await second.invoke<ActivationRecord>('steady', { n: 1 })).status, 200);
    // Calls that reach a controller in the moment before it sees the connection go are sent on
    // it and accepted (202: a blocking one after its wait); they may run once NATS is back.
    const raced = new Set<number>();
    await cluster.nats.shutdown();
    try {
      const refused = await waitFor('a call refused while NATS is down', async () => {
        const res = await second.invoke<{ error: string }>('steady', { n: 2 }, 'blocking=true&timeout=2000');
        if (res.status !== 200 && res.status !== 202) return res;
        raced.add(2);
        return undefined;
      });
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      const queued = await waitFor('an asynchronous call refused while NATS is down', async () => {
        const res = await first.invoke<{ error: string }>('steady', { n: 3 }, 'blocking=false');
        if (res.status !== 202) return res;
        raced.add(3);
        return undefined;
      });
      assert.equal(queued.status, 503, JSON.stringify(queued.body));
    } finally {
      // Also when something above failed: the suites after this one need NATS.
      await cluster.nats.restart();
    }
    const served = await waitFor(
      'calls to be served again',
      async () => {
        const res = await second.invoke<ActivationRecord>('steady', { n: 4 });
        return res.status === 200 ? res.body : undefined;
      },
      60_000,
    );
    assert.deepEqual(served.response.result, { n: 4 });
    // Each controller reconnects on its own: the first may still be on its way back (a 503, kept nowhere).
    const accepted = await waitFor('the first controller to accept again', async () => {
      const res = await first.invoke<{ activationId: string }>('steady', { n: 5 }, 'blocking=false');
      if (res.status === 503) return undefined;
      assert.equal(res.status, 202, JSON.stringify(res.body));
      return res;
    });
    const record = await waitFor('the asynchronous call to run', async () => {
      const res = await second.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${accepted.body.activationId}`);
      return res.status === 200 ? res.body : undefined;
    });
    assert.deepEqual(record.response.result, { n: 5 });
    // The refused calls were not kept to run later (those that raced the outage may have run).
    const ran = (await records(first, 'steady')).map((r) => (r.response.result as { n: number }).n);
    assert.deepEqual(ran.filter((n) => !raced.has(n)).sort(), [1, 4, 5]);
    await waitFor('every invoker to be back in the registry', async () =>
      (await listInvokers(first)).length === 3 ? true : undefined,
    );
  });

  it('loses no accepted asynchronous call when an invoker is killed in the middle of a burst', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy('burst', 'function main(p) { return new Promise((r) => setTimeout(() => r({ n: p.n }), 1500)); }', {
      limits: { memory: 128, timeout: 60_000 },
      annotations: [{ key: 'retries', value: 3 }],
    });
    const ids: string[] = [];
    for (let n = 0; n < 40; n++) {
      const via = n % 2 === 0 ? first : second;
      const res = await via.invoke<{ activationId: string }>('burst', { n }, 'blocking=false');
      assert.equal(res.status, 202, JSON.stringify(res.body));
      ids.push(res.body.activationId);
    }
    // Kill an invoker while it holds work: it runs some of the burst now.
    const victim = await waitFor('an invoker running part of the burst', async () => {
      for (const server of invokers) {
        if (server.pid === undefined) continue;
        const metrics = await server.metrics();
        if (/^isola_function_instances\{[^}]*action="burst"[^}]*state="busy"[^}]*\} [1-9]/m.test(metrics)) return server;
      }
      return undefined;
    });
    await victim.kill();
    const done = await waitFor(
      'every accepted call to have a record',
      async () => {
        const listed = await records(first, 'burst');
        return listed.length >= ids.length ? listed : undefined;
      },
      120_000,
    );
    assert.deepEqual(new Set(done.map((r) => r.activationId)), new Set(ids), 'one record per accepted call');
    assert.equal(done.length, ids.length, 'no activation recorded twice');
    for (const record of done) assert.equal(record.response.status, 'success', JSON.stringify(record.response));
    // Those the dead invoker held ran again elsewhere: a further attempt, as documented.
    const rerun = done.filter((r) => Number(annotation(r, 'attempt')) > 1);
    assert.ok(rerun.length > 0, 'some calls ran again after the invoker died');
    for (const record of rerun) assert.notEqual(annotation(record, 'invoker'), undefined);
    await waitFor(
      'the dead invoker to leave the registry',
      async () => ((await listInvokers(first)).length === 2 ? true : undefined),
      30_000,
    );
  });

  it('ends a blocking call with a whisk internal error when its invoker dies mid-run, and serves the next', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy(
      'slow',
      'function main(p) { return p.wait ? new Promise((r) => setTimeout(() => r({ slept: true }), p.wait)) : { ready: true }; }',
      { limits: { memory: 128, timeout: 120_000 } },
    );
    assert.deepEqual((await second.invoke<ActivationRecord>('slow')).body.response.result, { ready: true });
    const call = second.invoke<ActivationRecord>('slow', { wait: 100_000 });
    const home = await invokerRunning('slow', call);
    await home.kill();
    const answer = await call;
    const record =
      answer.status === 202
        ? await waitFor('the record', async () => {
            const id = (answer.body as unknown as { activationId: string }).activationId;
            const res = await first.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
            return res.status === 200 ? res.body : undefined;
          })
        : answer.body;
    assert.equal(record.response.status, 'whisk internal error', JSON.stringify(record.response));
    assert.match(String((record.response.result as { error: string }).error), /left the cluster/);
    const next = await second.invoke<ActivationRecord>('slow');
    assert.deepEqual(next.body.response.result, { ready: true });
  });

  it('drains an invoker on SIGTERM: its call under way ends, new calls go elsewhere, then it leaves', async () => {
    const second = controllers[1] as ServerProcess;
    await startInvoker();
    await cluster.waitForInvokers(second, 2);
    await second.deploy(
      'drained',
      'function main(p) { return p.wait ? new Promise((r) => setTimeout(() => r({ slept: true }), p.wait)) : { ready: true }; }',
    );
    assert.deepEqual((await second.invoke<ActivationRecord>('drained')).body.response.result, { ready: true });
    const call = second.invoke<ActivationRecord>('drained', { wait: 6000 });
    const home = await invokerRunning('drained', call);
    const homeId = (await listInvokers(second)).find((invoker) => invokerProcess(invoker.id) === home)?.id as string;
    const stopped = home.stop();
    await waitFor('the invoker to say it drains', async () =>
      (await listInvokers(second)).find((invoker) => invoker.id === homeId)?.health !== 'healthy' ? true : undefined,
    );
    const meanwhile = await second.invoke<ActivationRecord>('drained');
    assert.deepEqual(meanwhile.body.response.result, { ready: true });
    assert.notEqual(annotation(meanwhile.body, 'invoker'), homeId);
    const answer = await call;
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(answer.body.response.result, { slept: true });
    assert.equal(annotation(answer.body, 'invoker'), homeId);
    await stopped;
    assert.ok(!(await listInvokers(second)).some((invoker) => invoker.id === homeId), 'it left the registry');
  });

  it('keeps provisioned instances spread over the invokers, moves them off a dead one, and scales them', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await startInvoker();
    const pair = (await cluster.waitForInvokers(second, 2)).map((invoker) => invokerProcess(invoker.id) as ServerProcess);
    /** Instances of the function an invoker has, starting or running. */
    const instancesOn = async (server: ServerProcess) => {
      const lines = (await server.metrics()).match(
        /^isola_function_instances\{[^}]*action="provisioned"[^}]*state="(?:starting|idle|busy)"[^}]*\} \d+$/gm,
      );
      return (lines ?? []).reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
    };
    const status = async (via: ServerProcess) =>
      (
        await via.request<{
          replicas: number;
          availableReplicas: number;
          invocationCount: number;
          labels: Record<string, string>;
        }>('GET', '/system/function/provisioned')
      ).body;

    const deployed = await first.deploy('provisioned', 'function main() { return { ready: true }; }', {
      annotations: [{ key: 'minInstances', value: 3 }],
    });
    assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
    // Shared out: two on one invoker, one on the other.
    const counts = await waitFor('three instances over the two invokers', async () => {
      const now = await Promise.all(pair.map(instancesOn));
      return [...now].sort().join() === '1,2' ? now : undefined;
    });
    const seen = await waitFor('the other controller to show three replicas', async () => {
      const now = await status(second);
      return now.availableReplicas === 3 ? now : undefined;
    });
    assert.equal(seen.labels['com.openfaas.scale.min'], '3');
    const warm = await second.invoke<ActivationRecord>('provisioned');
    assert.equal(warm.status, 200, JSON.stringify(warm.body));
    assert.equal(annotation(warm.body, 'coldStart'), false, 'a provisioned instance took the call');
    // Counted from the records in PostgreSQL, whichever invoker ran it and controller took it.
    assert.equal((await status(first)).invocationCount, 1);

    // The dashboard of either controller lists them per invoker (signed in with the namespace's key).
    const signIn = await fetch(`${second.url}/ui/signin`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ key: cluster.guestAuth }),
      redirect: 'manual',
    });
    assert.equal(signIn.status, 303);
    const cookie = signIn.headers.get('set-cookie')?.split(';')[0] ?? '';
    await waitFor('the dashboard to list the three instances per invoker', async () => {
      const page = await (await fetch(`${second.url}/ui/instances`, { headers: { cookie } })).text();
      const rows = [
        ...page.matchAll(
          /<tr><td><a href="\/ui\/functions\/provisioned">provisioned<\/a><\/td><td>0\.0\.1<\/td><td>([^<]+)<\/td><td>(\d+)<\/td>/g,
        ),
      ];
      const ids = new Set(rows.map((row) => row[1]));
      const live = rows.reduce((sum, row) => sum + Number(row[2]), 0);
      return live === 3 && ids.size === 2 ? true : undefined;
    });

    // The invoker holding two dies: the other keeps all three once the registry drops the dead one.
    const victim = pair[counts.indexOf(2)] as ServerProcess;
    const survivor = pair[counts.indexOf(1)] as ServerProcess;
    await victim.kill();
    await waitFor('the survivor to hold all three', async () => ((await instancesOn(survivor)) === 3 ? true : undefined), 60_000);

    // Scaled through the OpenFaaS door of either controller: the count takes the annotation's place.
    const scale = async (via: ServerProcess, replicas: number) => {
      const res = await via.request('POST', '/system/scale-function/provisioned', { serviceName: 'provisioned', replicas });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    };
    await scale(first, 1);
    await waitFor('one instance left', async () => ((await instancesOn(survivor)) === 1 ? true : undefined));
    await waitFor('the other controller to show it', async () => {
      const now = await status(second);
      return now.replicas === 1 && now.labels['com.openfaas.scale.min'] === '1' ? true : undefined;
    });
    await scale(second, 0);
    await waitFor('none left', async () => ((await instancesOn(survivor)) === 0 ? true : undefined));
  });

  it('fires a cron trigger once per tick across controllers, and goes on when one controller dies', async () => {
    const [first, second] = controllers as [ServerProcess, ServerProcess];
    await first.deploy('ticked', 'function main() { return { ticked: true }; }');
    const trigger = await first.request('PUT', '/api/v1/namespaces/_/triggers/every-second', {
      annotations: [{ key: 'cron', value: '* * * * * *' }],
    });
    assert.equal(trigger.status, 200, JSON.stringify(trigger.body));
    const rule = await second.request('PUT', '/api/v1/namespaces/_/rules/tick-rule', {
      trigger: '/_/every-second',
      action: '/_/ticked',
    });
    assert.equal(rule.status, 200, JSON.stringify(rule.body));
    const firings = async () => (await records(second, 'every-second')).map((r) => r.start).sort((a, b) => a - b);
    const seen = await waitFor('six firings', async () => ((await firings()).length >= 6 ? firings() : undefined), 60_000);
    // One firing per second at most: both controllers run the schedule, one takes each tick.
    const spanSeconds = Math.floor(((seen.at(-1) as number) - (seen[0] as number)) / 1000);
    assert.ok(seen.length <= spanSeconds + 2, `${seen.length} firings within ${spanSeconds} s`);
    // The first controller dies: the second goes on firing.
    await first.kill();
    const before = (await firings()).length;
    await waitFor(
      'firings after the first controller died',
      async () => ((await firings()).length >= before + 3 ? true : undefined),
      30_000,
    );
    assert.equal((await second.request('DELETE', '/api/v1/namespaces/_/rules/tick-rule')).status, 200);
    assert.equal((await second.request('DELETE', '/api/v1/namespaces/_/triggers/every-second')).status, 200);
  });
});
