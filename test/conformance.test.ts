// Conformance per kind, after OpenWhisk's runtime tests, end to end through the HTTP API of a real
// `isola serve` on every process-like backend this host has: process, container (runc, crun),
// gvisor and microvm. The same function in every kind (test/fixtures/conformance) does what each
// check asks of it. A backend or a kind this host cannot run is skipped with doctor's reason.
// The full set runs on process and runc; crun, gVisor and the microVM (slow to start, under TCG
// here) run hello, Unicode, errors, the environment and the timeout.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { invokeStatus } from '../src/api/views.js';
import type { Isolation, Kind } from '../src/core/kinds.js';
import type { ActivationRecord } from '../src/core/types.js';
import type { BackendStatus } from '../src/sandbox/backend.js';
import { probeBackends } from '../src/sandbox/registry.js';
import { compileErrors, type Variant, variants } from './fixtures/conformance/functions.js';
import { TestServer, waitFor } from './helpers/server.js';

type Check = 'hello' | 'large' | 'unicode' | 'error' | 'notdict' | 'env' | 'logs' | 'timeout' | 'memory';
const FULL: Check[] = ['hello', 'large', 'unicode', 'error', 'notdict', 'env', 'logs', 'timeout', 'memory'];
const SMALL: Check[] = ['hello', 'unicode', 'error', 'env', 'timeout'];

interface Setup {
  name: string;
  isolation: Isolation;
  env: Record<string, string>;
  containerRuntime?: 'runc' | 'crun';
  checks: Check[];
  /** limits.timeout of the action that sleeps forever: a cold start after it must fit in it. */
  timeoutMs: number;
  /** Kinds checked side by side: more would make cold starts on 2 cores slower than the timeout. */
  parallel: number;
  /**
   * limits.timeout of the other actions, when the default (60 s) is too short for a cold start:
   * a kind's first microVM start builds its snapshot under TCG, two at once on a busy host.
   */
  callTimeoutMs?: number;
  /** Only these kinds (a backend that runs few of them). */
  kinds?: Kind[];
}

const SETUPS: Setup[] = [
  { name: 'process', isolation: 'process', env: {}, checks: FULL, timeoutMs: 8_000, parallel: 4 },
  {
    name: 'container (runc)',
    isolation: 'container',
    containerRuntime: 'runc',
    env: { ISOLA_CONTAINER_RUNTIME: 'runc' },
    checks: FULL,
    // A JVM's cold start after the timeout must fit in it on a loaded host.
    timeoutMs: 15_000,
    parallel: 3,
  },
  {
    name: 'container (crun)',
    isolation: 'container',
    containerRuntime: 'crun',
    env: { ISOLA_CONTAINER_RUNTIME: 'crun' },
    checks: SMALL,
    timeoutMs: 15_000,
    parallel: 4,
  },
  { name: 'gvisor', isolation: 'gvisor', env: {}, checks: SMALL, timeoutMs: 15_000, parallel: 3 },
  { name: 'microvm', isolation: 'microvm', env: {}, checks: SMALL, timeoutMs: 45_000, parallel: 2, callTimeoutMs: 240_000 },
  // CPython through Pyodide: one interpreter per instance runs one activation at a time, so the
  // check of two overlapping runs in one sandbox does not apply (concurrency > 1 is refused).
  {
    name: 'wasm (pyodide)',
    isolation: 'wasm',
    env: {},
    checks: FULL.filter((check) => check !== 'logs'),
    timeoutMs: 8_000,
    parallel: 2,
    kinds: ['python:3'],
  },
];

const UNICODE = 'héllo 世界 🎉';
const GREETING = 'a default from the action’s parameters';
const ONE_MB = 1_000_000;

const root = mkdtempSync(join(tmpdir(), 'isola-conformance-'));
// One package cache for every server: Java and Go compile once for the whole file.
const sharedPackages = join(root, 'packages');
mkdirSync(sharedPackages);
after(() => rmSync(root, { recursive: true, force: true }));

/** What doctor finds for a backend: the same probe, in the data dir its server will use. */
async function probe(setup: Setup, dataDir: string): Promise<BackendStatus> {
  const { backends, statuses } = await probeBackends(
    { dataDir, ...(setup.containerRuntime ? { containerRuntime: setup.containerRuntime } : {}) },
    [setup.isolation],
  );
  await Promise.all([...backends.values()].map((b) => b.close()));
  return statuses.find((s) => s.isolation === setup.isolation) as BackendStatus;
}

const VARIANTS = variants();
const variantsOf = (setup: Setup) => VARIANTS.filter((v) => !setup.kinds || setup.kinds.includes(v.kind));
const started = Date.now();

const DESCRIPTIONS: Record<Check, string> = {
  hello: 'answers a call',
  large: 'echoes a 1 MB parameter',
  unicode: 'takes and returns Unicode',
  error: 'turns a thrown error into an application error with its message',
  notdict: 'turns a result that is not a dictionary into a developer error',
  env: "sets __OW_ACTION_NAME, __OW_NAMESPACE, __OW_ACTIVATION_ID, __OW_DEADLINE and the action's parameters",
  logs: 'attributes logs to their activation when two runs overlap in one sandbox',
  timeout: 'ends a run that exceeds its time limit as a developer error, then serves the next call',
  memory: 'ends a run that exhausts its memory limit as a developer error, then serves the next call',
};

/** The checks of one kind on one server: each invokes the actions deployed for it. */
class Conformance {
  private readonly base: string;
  constructor(
    private readonly server: () => TestServer,
    private readonly setup: Setup,
    private readonly variant: Variant,
  ) {
    this.base = `conf-${variant.id}`;
  }

  /** The function, once per limits a check needs (one package: it compiles once). */
  async deploy(): Promise<void> {
    const slow = this.setup.callTimeoutMs ? { timeout: this.setup.callTimeoutMs } : {};
    const actions: [string, Record<string, number>][] = [
      [this.base, slow],
      [`${this.base}-timeout`, { timeout: this.setup.timeoutMs }],
      [`${this.base}-memory`, { ...slow, memory: 128 }],
      ...(this.setup.checks.includes('logs')
        ? [[`${this.base}-concurrent`, { ...slow, concurrency: 2 }] as [string, Record<string, number>]]
        : []),
    ];
    for (const [name, limits] of actions) {
      const res = await this.server().request('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
        exec: this.variant.exec,
        limits,
        parameters: [{ key: 'greeting', value: GREETING }],
        annotations: [{ key: 'isolation', value: this.setup.isolation }],
      });
      assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 2000));
    }
  }

  /**
   * A blocking call, and its record. A call that outlasts the blocking wait (a kind's first microVM
   * call waits for its image and base snapshot, over a minute under TCG) is answered 202 with its
   * id, as OpenWhisk does: then the record is fetched once the activation ended.
   */
  private async invoke(name: string, params: Record<string, unknown>): Promise<{ http: number; record: ActivationRecord }> {
    const res = await this.server().invoke<ActivationRecord>(name, params);
    if (res.status === 202) {
      const { activationId } = res.body as unknown as { activationId: string };
      const record = await waitFor(
        `activation ${activationId} to end`,
        async () => {
          const got = await this.server().request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${activationId}`);
          return got.status === 200 ? got.body : undefined;
        },
        600_000,
      );
      return { http: invokeStatus(record), record };
    }
    assert.ok(res.body && typeof res.body === 'object' && 'response' in res.body, `${res.status}: ${JSON.stringify(res.body)}`);
    return { http: res.status, record: res.body };
  }

  private async succeed(name: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
    const { record } = await this.invoke(name, params);
    assert.equal(record.response.status, 'success', JSON.stringify(record).slice(0, 3000));
    assert.equal(record.response.success, true);
    return record.response.result as Record<string, unknown>;
  }

  async hello(): Promise<void> {
    assert.deepEqual(await this.succeed(this.base, { op: 'echo', payload: 'hello' }), {
      payload: 'hello',
      length: 5,
      literal: UNICODE,
    });
  }

  async large(): Promise<void> {
    const payload = 'x'.repeat(ONE_MB - 1000) + 'é'.repeat(500);
    assert.equal(Buffer.byteLength(payload), ONE_MB);
    const result = await this.succeed(this.base, { op: 'echo', payload });
    assert.equal(result.length, ONE_MB - 500);
    assert.ok(result.payload === payload, 'the 1 MB parameter came back as sent');
  }

  async unicode(): Promise<void> {
    const result = await this.succeed(this.base, { op: 'echo', payload: UNICODE });
    assert.deepEqual(result, { payload: UNICODE, length: 10, literal: UNICODE });
  }

  async error(): Promise<void> {
    const message = `broken on purpose in ${this.variant.id}: ${UNICODE}`;
    const { http, record } = await this.invoke(this.base, { op: 'throw', message });
    assert.equal(http, 502, 'a failed function, not the platform');
    assert.equal(record.response.status, 'application error', JSON.stringify(record.response));
    assert.equal(record.response.success, false);
    assert.match(String((record.response.result as { error?: unknown }).error), new RegExp(message));
  }

  async notdict(): Promise<void> {
    const { http, record } = await this.invoke(this.base, { op: 'notdict' });
    assert.equal(http, 502, 'a failed function, not the platform');
    // OpenWhisk's rule for every runtime: a result that is not a dictionary is the developer's error.
    assert.equal(record.response.status, 'action developer error', JSON.stringify(record.response));
    assert.equal(record.response.success, false);
    assert.deepEqual(record.response.result, { error: 'The action did not return a dictionary.' });
  }

  async env(): Promise<void> {
    const { record } = await this.invoke(this.base, { op: 'env' });
    assert.equal(record.response.status, 'success', JSON.stringify(record).slice(0, 3000));
    const env = record.response.result as Record<string, unknown>;
    assert.equal(env.actionName, `/${record.namespace}/${this.base}`);
    assert.equal(env.namespace, record.namespace);
    assert.equal(env.activationId, record.activationId);
    const deadline = Number(env.deadline);
    const now = Number(env.now);
    assert.ok(deadline > now, `__OW_DEADLINE ${env.deadline} is not after the function's clock ${now}`);
    const limit = this.setup.callTimeoutMs ?? 60_000;
    // The function's clock is read in whole milliseconds from a float (Python's time.time() * 1000
    // can land a millisecond short): 1 ms of rounding.
    assert.ok(deadline <= now + limit + 1, `__OW_DEADLINE ${env.deadline} is beyond the action's ${limit} ms limit`);
    assert.equal(env.greeting, GREETING);
  }

  async logs(): Promise<void> {
    const name = `${this.base}-concurrent`;
    // A warm instance with a free slot: both runs go to it, and meet in its /tmp.
    await this.succeed(name, { op: 'echo', payload: 'warm' });
    const token = randomUUID();
    const runs = ['first', 'second'].map((me, i, both) => ({
      marker: `marker-${me}-${token}`,
      params: { op: 'barrier', me: `${token}-${me}`, other: `${token}-${both[1 - i]}`, waitMs: 30_000 },
    }));
    const records = await Promise.all(runs.map((run) => this.invoke(name, { ...run.params, marker: run.marker })));
    for (const [i, { record }] of records.entries()) {
      const own = runs[i]?.marker as string;
      const other = runs[1 - i]?.marker as string;
      assert.equal(record.response.status, 'success', JSON.stringify(record).slice(0, 3000));
      assert.deepEqual(record.response.result, { marker: own });
      const logs = await waitFor(`the logs of ${record.activationId}`, async () => {
        const res = await this.server().request<{ logs: string[] }>(
          'GET',
          `/api/v1/namespaces/_/activations/${record.activationId}/logs`,
        );
        const lines = res.body.logs ?? [];
        return lines.filter((l) => l.includes(own)).length >= 3 ? lines : undefined;
      });
      assert.ok(
        logs.every((l) => !l.includes(other)),
        `${record.activationId} has the other run's logs: ${logs.join('\n')}`,
      );
      assert.equal(logs.filter((l) => l.includes(own)).length, 3, logs.join('\n'));
    }
  }

  async timeout(): Promise<void> {
    const name = `${this.base}-timeout`;
    await this.succeed(name, { op: 'echo', payload: 'before' });
    const { http, record } = await this.invoke(name, { op: 'sleep' });
    assert.equal(record.response.status, 'action developer error', JSON.stringify(record.response));
    assert.equal(record.response.success, false);
    assert.deepEqual(record.response.result, {
      error: `The action exceeded its time limits of ${this.setup.timeoutMs} milliseconds.`,
    });
    assert.equal(http, 502, 'a failed function, not the platform');
    assert.equal((await this.succeed(name, { op: 'echo', payload: 'after' })).payload, 'after');
  }

  async memory(): Promise<void> {
    const name = `${this.base}-memory`;
    const { http, record } = await this.invoke(name, { op: 'hog' });
    assert.equal(http, 502, `a failed function, not the platform: ${JSON.stringify(record.response)}`);
    assert.equal(record.response.success, false);
    const error = String((record.response.result as { error?: unknown }).error);
    // The sandbox is killed at its limit (developer error), or the language reports its own
    // allocation failure first (an application error naming it).
    if (record.response.status === 'application error') assert.match(error, /memory|heap/i, error);
    else {
      assert.equal(record.response.status, 'action developer error', JSON.stringify(record.response));
      assert.match(error, /memory|did not complete/i, error);
    }
    assert.equal((await this.succeed(name, { op: 'echo', payload: 'after' })).payload, 'after');
    assert.equal((await this.succeed(this.base, { op: 'echo', payload: 'still' })).payload, 'still');
  }
}

// ISOLA_CONFORMANCE_BACKENDS=process,gvisor runs only those setups (by name, or by isolation).
const only = process.env.ISOLA_CONFORMANCE_BACKENDS?.split(',');
for (const setup of SETUPS.filter(
  (s) => !only || only.some((o) => s.name === o || s.isolation === o || s.name.includes(`(${o})`)),
)) {
  const dataDir = join(root, setup.name.replace(/\W+/g, '-'));
  mkdirSync(dataDir);
  symlinkSync(sharedPackages, join(dataDir, 'packages'));
  const status = await probe(setup, dataDir);
  const skip = status.available ? false : `${status.detail}${status.fix ? ` (fix: ${status.fix})` : ''}`;

  // Kinds run side by side on one server; each kind's checks one after the other.
  describe(`conformance on ${setup.name}`, { skip, concurrency: setup.parallel }, () => {
    let server: TestServer;
    let setupStarted = 0;

    const conformances = new Map(variantsOf(setup).map((v) => [v.id, new Conformance(() => server, setup, v)]));
    before(async () => {
      setupStarted = Date.now();
      server = await TestServer.start({
        dataDir,
        env: { ISOLA_BACKENDS: setup.isolation, ISOLA_PREWARM: `${setup.isolation}:0`, ...setup.env },
      });
      // Everything deployed (and compiled) before the first call: no call waits behind a compiler.
      const runnable = variantsOf(setup).filter((v) => status.kinds?.find((k) => k.kind === v.kind)?.available !== false);
      await Promise.all(runnable.map((v) => conformances.get(v.id)?.deploy()));
    });
    after(async () => {
      await server?.dispose();
      console.log(`conformance on ${setup.name}: ${Math.round((Date.now() - setupStarted) / 1000)} s`);
    });

    if (setup.isolation === 'process') {
      it('refuses a compile error at deploy with a 400 that quotes the compiler, and stores nothing', async () => {
        for (const bad of compileErrors()) {
          const name = `compile-error-${bad.id}`;
          const res = await server.request<{ error: string }>('PUT', `/api/v1/namespaces/_/actions/${name}`, {
            exec: bad.exec,
            annotations: [{ key: 'isolation', value: 'process' }],
          });
          assert.equal(res.status, 400, JSON.stringify(res.body).slice(0, 2000));
          assert.match(res.body.error, bad.pattern);
          assert.equal((await server.request('GET', `/api/v1/namespaces/_/actions/${name}`)).status, 404, `${name} was stored`);
        }
      });
    }

    for (const variant of variantsOf(setup)) {
      const kindSupport = status.kinds?.find((k) => k.kind === variant.kind);
      const kindSkip = kindSupport && !kindSupport.available ? (kindSupport.why ?? 'not here') : false;
      describe(variant.id, { skip: kindSkip }, () => {
        const conformance = conformances.get(variant.id) as Conformance;
        for (const check of setup.checks) {
          it(DESCRIPTIONS[check], () => conformance[check]());
        }
      });
    }
  });
}

after(() => console.log(`conformance: ${Math.round((Date.now() - started) / 1000)} s in all`));
