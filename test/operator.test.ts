import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../src/core/types.js';
import { activationState } from './helpers/activations.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');
const SLEEPER = 'async function main(p) { await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { slept: p.ms ?? 0 }; }';
const HELLO = 'function main(p) { return { hello: p.name ?? "world" }; }';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** This process's environment without the settings that would point the CLI elsewhere. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['ISOLA_AUTH', 'ISOLA_APIHOST', 'ISOLA_ADMIN_TOKEN', 'ISOLA_DATA_DIR', 'ISOLA_GUEST_AUTH']) delete env[name];
  return env;
}

/** The real `isola` command in a child process. */
function isola(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--no-node-snapshot', '--import', import.meta.resolve('tsx'), MAIN, ...args],
      {
        cwd: ROOT,
        env: { ...cleanEnv(), ...env },
        timeout: timeoutMs,
        maxBuffer: 16 * 2 ** 20,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

function serverJson(dataDir: string): { pid: number; url?: string; startTime?: string } {
  return JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8'));
}

async function serverPid(server: TestServer): Promise<number> {
  return (await server.request<{ pid: number }>('GET', '/healthz', undefined, { auth: null })).body.pid;
}

/** Requests as another namespace: the same server, other credentials. */
function as(server: TestServer, auth: string) {
  return {
    request: <T = unknown>(method: string, path: string, body?: unknown) => server.request<T>(method, path, body, { auth }),
  };
}

describe('one server per data dir', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start();
  });
  after(async () => {
    await server.dispose();
  });

  it('refuses a second server on the same data dir, naming the first one, which keeps serving', async () => {
    assert.equal((await server.deploy('hello', HELLO)).status, 200);
    assert.equal((await server.invoke('hello')).status, 200);
    const pid = await serverPid(server);
    const before = readFileSync(join(server.dataDir, 'server.json'), 'utf8');
    const second = await isola(['serve', '--port', '0', '--data-dir', server.dataDir], {
      ISOLA_BACKENDS: 'isolate',
      ISOLA_PREWARM: 'isolate:0',
    });
    assert.notEqual(second.code, 0, second.stdout);
    assert.match(second.stderr, new RegExp(`Another Isola server \\(pid ${pid}, listening on ${server.url}\\)`));
    assert.doesNotMatch(second.stdout, /listening on/);
    // The first one's record of itself is untouched, and it still answers, warm.
    assert.equal(readFileSync(join(server.dataDir, 'server.json'), 'utf8'), before);
    const again = await server.invoke<ActivationRecord>('hello');
    assert.equal(again.status, 200);
    assert.equal(annotation(again.body, 'coldStart'), false);
  });

  it('lets doctor probe a live data dir without taking it over or disturbing the server', async () => {
    const pid = await serverPid(server);
    const before = readFileSync(join(server.dataDir, 'server.json'), 'utf8');
    const doctor = await isola(['doctor', '--data-dir', server.dataDir], { COLUMNS: '80' }, 300_000);
    assert.equal(doctor.code, 0, doctor.stderr);
    assert.match(
      doctor.stdout.replace(/\s+/g, ' '),
      new RegExp(`A server runs on this data dir \\(pid ${pid}, ${server.url}\\)`),
    );
    // Tables fit the terminal width it was given.
    for (const line of doctor.stdout.split('\n')) assert.ok(line.length <= 80, `longer than 80: ${line}`);
    assert.equal(readFileSync(join(server.dataDir, 'server.json'), 'utf8'), before);
    // The server still holds the data dir, and still serves its warm instance.
    const second = await isola(['serve', '--port', '0', '--data-dir', server.dataDir], { ISOLA_BACKENDS: 'isolate' });
    assert.match(second.stderr, new RegExp(`pid ${pid}`));
    const warm = await server.invoke<ActivationRecord>('hello');
    assert.equal(warm.status, 200);
    assert.equal(annotation(warm.body, 'coldStart'), false);
  });

  it('takes over the lock of a server killed with SIGKILL, whatever server.json says', async () => {
    await server.kill();
    // As if the dead server's pid had been reused by a live process: the record names a running
    // pid (this test's own) with another start time. Neither the next server nor the CLI believes it.
    writeFileSync(
      join(server.dataDir, 'server.json'),
      JSON.stringify({ pid: process.pid, startTime: '1', url: 'http://127.0.0.1:9' }),
    );
    const listed = await isola(['namespace', 'list', '--data-dir', server.dataDir, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { name: string }[]).map((n) => n.name),
      ['guest'],
    );
    await server.restart();
    const pid = await serverPid(server);
    assert.equal(serverJson(server.dataDir).pid, pid);
    assert.equal(serverJson(server.dataDir).url, server.url);
    const second = await isola(['serve', '--port', '0', '--data-dir', server.dataDir], { ISOLA_BACKENDS: 'isolate' });
    assert.match(second.stderr, new RegExp(`pid ${pid}, listening on ${server.url}`));
  });

  it('removes its record when stopped, and the data dir is free again', async () => {
    await server.stop();
    assert.equal(existsSync(join(server.dataDir, 'server.json')), false);
    await server.restart();
    assert.equal(serverJson(server.dataDir).url, server.url);
  });
});

describe('/metrics and the admin API', () => {
  let server: TestServer;
  let capped: TestServer;
  const token = 'operator-token-for-the-test-0123456789';
  before(async () => {
    [server, capped] = await Promise.all([
      TestServer.start(),
      TestServer.start({ env: { ISOLA_ADMIN_TOKEN: token, ISOLA_METRICS_FUNCTIONS: '2' } }),
    ]);
  });
  after(async () => {
    await Promise.all([server.dispose(), capped.dispose()]);
  });

  it('needs the operator token, which the server makes on first start and keeps private', async () => {
    const file = join(server.dataDir, 'admin.token');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const fetchMetrics = (headers: Record<string, string>) => fetch(`${server.url}/metrics`, { headers });
    const anonymous = await fetchMetrics({});
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.match(((await anonymous.json()) as { error: string }).error, /operator token/);
    // A namespace's key is not enough: metrics span every namespace.
    const tenant = await fetchMetrics({ authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
    assert.equal(tenant.status, 401);
    assert.equal((await fetchMetrics({ authorization: 'Bearer not-the-token' })).status, 401);
    const operator = await fetchMetrics({ authorization: `Bearer ${readFileSync(file, 'utf8').trim()}` });
    assert.equal(operator.status, 200);
    assert.match(await operator.text(), /isola_memory_budget_megabytes/);
    assert.equal((await fetch(`${server.url}/admin/v1/namespaces`)).status, 401);
  });

  it('takes ISOLA_ADMIN_TOKEN instead, and writes no token file then', async () => {
    assert.equal(existsSync(join(capped.dataDir, 'admin.token')), false);
    const response = await fetch(`${capped.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    const wrong = await fetch(`${capped.url}/metrics`, {
      headers: { authorization: 'Bearer operator-token-for-the-test-wrong' },
    });
    assert.equal(wrong.status, 401);
  });

  it('keeps series for the most recently active functions only, and sums the rest under _other', async () => {
    for (const name of ['f1', 'f2', 'f3']) assert.equal((await capped.deploy(name, HELLO)).status, 200);
    for (const name of ['f1', 'f2', 'f3']) assert.equal((await capped.invoke(name)).status, 200);
    await capped.invoke('f3');
    const text = await capped.metrics();
    const activations = [...text.matchAll(/^isola_activations_total\{([^}]*)\} (\d+)/gm)].map((m) => ({
      labels: m[1] as string,
      value: Number(m[2]),
    }));
    const actions = new Set(activations.map((a) => /action="([^"]*)"/.exec(a.labels)?.[1]));
    assert.deepEqual([...actions].sort(), ['_other', 'f2', 'f3']);
    assert.equal(
      activations.reduce((sum, a) => sum + a.value, 0),
      4,
      'every activation is still counted',
    );
    assert.ok(activations.some((a) => /namespace="_other",action="_other"/.test(a.labels) && a.value === 1));
    for (const match of text.matchAll(/^isola_(?:starts_total|function_instances)\{[^}]*action="([^"]*)"/gm)) {
      assert.ok(['_other', 'f2', 'f3'].includes(match[1] as string), `unexpected series for ${match[1]}`);
    }
  });
});

describe('deleting a namespace', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  const create = async () => {
    const created = await isola(['namespace', 'create', 'other', '--data-dir', server.dataDir]);
    assert.equal(created.code, 0, created.stderr);
    return created.stdout.trim();
  };
  const activations = async (auth: string) =>
    (await as(server, auth).request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?limit=200')).body;

  it('through a live server: the old key stops at once and the new namespace starts empty', async () => {
    const oldAuth = await create();
    const old = as(server, oldAuth);
    assert.equal(
      (await old.request('PUT', '/api/v1/namespaces/_/actions/secret', { exec: { kind: 'nodejs:20', code: SLEEPER } })).status,
      200,
    );
    assert.equal(
      (
        await old.request('PUT', '/api/v1/namespaces/_/actions/secret?overwrite=true', {
          exec: { kind: 'nodejs:20', code: SLEEPER },
        })
      ).status,
      200,
    );
    assert.equal((await old.request('POST', '/api/v1/namespaces/_/actions/secret?blocking=true', { ms: 0 })).status, 200);
    // A cron trigger that fires every second, bound to the action.
    assert.equal(
      (
        await old.request('PUT', '/api/v1/namespaces/_/triggers/tick', {
          annotations: [{ key: 'cron', value: '* * * * * *' }],
        })
      ).status,
      200,
    );
    assert.equal(
      (await old.request('PUT', '/api/v1/namespaces/_/rules/tock', { trigger: 'tick', action: 'secret' })).status,
      200,
    );
    await waitFor('the cron trigger to fire', async () =>
      (await activations(oldAuth)).some((a) => a.name === 'tick') ? true : undefined,
    );
    // A run still under way when the namespace goes.
    const running = await old.request<{ activationId: string }>('POST', '/api/v1/namespaces/_/actions/secret', { ms: 3000 });
    await waitFor('the long run to start', async () =>
      activationState(server.dataDir, running.body.activationId) === 'running' ? true : undefined,
    );

    const deleted = await isola(['namespace', 'delete', 'other', '--data-dir', server.dataDir]);
    assert.equal(deleted.code, 0, deleted.stderr);
    // The server's credential cache does not keep the old key alive.
    assert.equal((await old.request('GET', '/api/v1/namespaces/_/actions')).status, 401);

    const newAuth = await create();
    const fresh = as(server, newAuth);
    assert.deepEqual((await fresh.request('GET', '/api/v1/namespaces/_/actions')).body, []);
    assert.equal((await fresh.request('GET', '/api/v1/namespaces/_/actions/secret')).status, 404);
    assert.equal((await fresh.request('GET', '/api/v1/namespaces/_/triggers/tick')).status, 404);
    assert.equal((await fresh.request('GET', '/api/v1/namespaces/_/rules/tock')).status, 404);
    assert.deepEqual(await activations(newAuth), []);
    assert.equal((await fresh.request('GET', `/api/v1/namespaces/_/activations/${running.body.activationId}`)).status, 404);
    // Version numbers start again; the action the old tenant deployed is not what runs.
    const redeployed = await fresh.request<{ version: string }>('PUT', '/api/v1/namespaces/_/actions/secret', {
      exec: { kind: 'nodejs:20', code: HELLO },
    });
    assert.equal(redeployed.body.version, '0.0.1');
    const result = await fresh.request<ActivationRecord>('POST', '/api/v1/namespaces/_/actions/secret?blocking=true', {});
    assert.deepEqual(result.body.response.result, { hello: 'world' });
    // The new tenant's own cron trigger fires twice (so the old one, every second, would have
    // fired meanwhile): nothing but the new tenant's records shows up.
    await fresh.request('PUT', '/api/v1/namespaces/_/actions/echo', { exec: { kind: 'nodejs:20', code: HELLO } });
    await fresh.request('PUT', '/api/v1/namespaces/_/triggers/mine', { annotations: [{ key: 'cron', value: '* * * * * *' }] });
    assert.equal(
      (await fresh.request('PUT', '/api/v1/namespaces/_/rules/mine-echo', { trigger: 'mine', action: 'echo' })).status,
      200,
    );
    await waitFor(
      "the new tenant's trigger to fire twice, and the old run to end (no instance busy)",
      async () => {
        const fired = (await activations(newAuth)).filter((a) => a.name === 'mine').length >= 2;
        const busy = /^isola_instances\{[^}]*state="busy"\} [1-9]/m.test(await server.metrics());
        return fired && !busy ? true : undefined;
      },
      20_000,
    );
    assert.equal(activationState(server.dataDir, running.body.activationId), undefined, 'the old run left no record');
    const records = await activations(newAuth);
    assert.deepEqual([...new Set(records.map((a) => a.name))].sort(), ['echo', 'mine', 'secret']);
    assert.ok(
      records.every((a) => a.name !== 'secret' || (a as unknown as { statusCode: number }).statusCode === 0),
      'only the new secret ran',
    );
    assert.equal(records.filter((a) => a.name === 'secret').length, 1);
    assert.match(
      deleted.stdout,
      /ok: deleted namespace other \(1 action\(s\), \d+ activation\(s\), 1 trigger\(s\), 1 rule\(s\)\)/,
    );
  });

  it('without a server, on the store directly, under the data dir lock', async () => {
    const listed = (await isola(['namespace', 'list', '--data-dir', server.dataDir, '--json'])).stdout;
    assert.match(listed, /"other"/);
    await server.stop();
    const deleted = await isola(['namespace', 'delete', 'other', '--data-dir', server.dataDir]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(
      deleted.stdout,
      /ok: deleted namespace other \(2 action\(s\), \d+ activation\(s\), 1 trigger\(s\), 1 rule\(s\)\)/,
    );
    const newAuth = await create();
    await server.restart();
    const fresh = as(server, newAuth);
    assert.deepEqual((await fresh.request('GET', '/api/v1/namespaces/_/actions')).body, []);
    assert.deepEqual(await activations(newAuth), []);
    assert.equal((await fresh.request('GET', '/api/v1/namespaces/_/triggers/mine')).status, 404);
    const missing = await isola(['namespace', 'delete', 'nosuch', '--data-dir', server.dataDir]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /The namespace "nosuch" does not exist/);
  });
});

describe('activation retention', () => {
  let byCount: TestServer;
  let byAge: TestServer;
  before(async () => {
    [byCount, byAge] = await Promise.all([
      TestServer.start({
        env: { ISOLA_ACTIVATIONS_PER_NAMESPACE: '3', ISOLA_ACTIVATION_RETENTION: 'off', ISOLA_RETENTION_INTERVAL: '200ms' },
      }),
      TestServer.start({
        env: { ISOLA_ACTIVATIONS_PER_NAMESPACE: 'off', ISOLA_ACTIVATION_RETENTION: '2s', ISOLA_RETENTION_INTERVAL: '200ms' },
      }),
    ]);
  });
  after(async () => {
    await Promise.all([byCount.dispose(), byAge.dispose()]);
  });

  const ids = async (server: TestServer) =>
    (await server.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?limit=200')).body.map(
      (a) => a.activationId,
    );

  it('keeps the newest finished activations per namespace, and never a running one', async () => {
    await byCount.deploy('sleeper', SLEEPER);
    const running = (await byCount.invoke<{ activationId: string }>('sleeper', { ms: 6000 }, 'blocking=false')).body.activationId;
    await waitFor('the long run to start', async () =>
      activationState(byCount.dataDir, running) === 'running' ? true : undefined,
    );
    const finished: string[] = [];
    for (let i = 0; i < 6; i++) finished.push((await byCount.invoke<ActivationRecord>('sleeper', { ms: 0 })).body.activationId);
    const kept = await waitFor('pruning down to 3', async () => {
      const now = await ids(byCount);
      return now.length === 3 ? now : undefined;
    });
    assert.deepEqual(kept, finished.slice(3).reverse(), 'the newest three');
    // Pruning passes ran while it was running: it is still there.
    assert.equal(activationState(byCount.dataDir, running), 'running');
  });

  it('prunes finished activations older than the retention', async () => {
    await byAge.deploy('hello', HELLO);
    const id = (await byAge.invoke<ActivationRecord>('hello')).body.activationId;
    assert.ok((await ids(byAge)).includes(id));
    await waitFor('the activation to be pruned', async () => ((await ids(byAge)).includes(id) ? undefined : true));
    assert.equal(activationState(byAge.dataDir, id), undefined);
  });
});

describe('the isola command', () => {
  let server: TestServer;
  let dir: string;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_BLOCKING_WAIT: '500ms', ISOLA_PREWARM: 'isolate:0' } });
    dir = mkdtempSync(join(tmpdir(), 'isola-cli-'));
  });
  after(async () => {
    await server.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  const cli = (args: string[], env: Record<string, string> = {}) => isola([...args, '--data-dir', server.dataDir], env);
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };

  it('prints its version', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const run = await isola(['--version']);
    assert.equal(run.code, 0);
    assert.equal(run.stdout.trim(), version);
  });

  it('refuses a file it cannot run, and stores nothing', async () => {
    for (const name of ['hello.txt', 'hello.rs', 'hello']) {
      const run = await cli(['action', 'create', 'refused', file(name, 'print("hi")')]);
      assert.notEqual(run.code, 0, name);
      assert.match(
        run.stderr,
        new RegExp(`Cannot tell how to run ${name.replace('.', '\\.')}: .*\\.js .*\\.py.*\\.wasm.*--kind`),
        name,
      );
    }
    const notZip = await cli(['action', 'create', 'refused', file('hello.zip', 'print("hi")')]);
    assert.notEqual(notZip.code, 0);
    assert.match(notZip.stderr, /hello\.zip is not a readable zip/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/refused')).status, 404);
    const cjs = await cli(['action', 'create', 'common', file('hello.cjs', 'exports.main = () => ({ ok: true });')]);
    assert.equal(cjs.code, 0, cjs.stderr);
    const kinded = await cli(['action', 'create', 'kinded', file('hello.txt', HELLO), '--kind', 'nodejs:20']);
    assert.equal(kinded.code, 0, kinded.stderr);
  });

  it('names the option whose number is not one', async () => {
    for (const [flag, value] of [
      ['-m', 'abc'],
      ['-t', 'soon'],
      ['-c', '1.5'],
      ['-l', '20000'],
    ] as const) {
      const run = await cli(['action', 'create', 'bad', file('bad.js', HELLO), flag, value]);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, new RegExp(`option '${flag}, --\\w+ <\\w+>' argument '${value}' is invalid`));
    }
    const list = await cli(['activation', 'list', '--limit', 'x']);
    assert.match(list.stderr, /option '--limit <n>' argument 'x' is invalid\. It must be a whole number from 1 to 200/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/bad')).status, 404);
  });

  it('says when a blocking call is still running, how to fetch it, and exits non-zero', async () => {
    assert.equal((await cli(['action', 'create', 'slow', file('slow.js', SLEEPER)])).code, 0);
    const run = await cli(['action', 'invoke', 'slow', '-r', '-p', 'ms', '2500']);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    const id = /activation ([0-9a-f]{32}) of slow is still running/.exec(run.stderr)?.[1];
    assert.ok(id, run.stderr);
    assert.match(run.stderr, new RegExp(`isola activation result ${id}`));
    const result = await cli(['activation', 'result', id, '--wait', '30s']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { slept: 2500 });
  });

  it('says when a list may go on, and how to page', async () => {
    for (const name of ['p1', 'p2', 'p3']) await server.deploy(name, HELLO);
    const first = await cli(['action', 'list', '--limit', '2']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /showing 2 actions .*--skip 2 for the next page/);
    const all = await cli(['action', 'list', '--limit', '200']);
    assert.doesNotMatch(all.stderr, /showing/);
  });

  it('takes durations and dates for --since, and fits its tables to the terminal', async () => {
    await server.invoke('p1');
    const recent = await cli(['activation', 'list', '--since', '5m'], { COLUMNS: '60' });
    assert.equal(recent.code, 0, recent.stderr);
    assert.match(recent.stdout, /p1/);
    for (const line of recent.stdout.split('\n')) assert.ok(line.length <= 60, `longer than 60: ${line}`);
    const future = await cli(['activation', 'list', '--since', new Date(Date.now() + 3_600_000).toISOString(), '--json']);
    assert.deepEqual(JSON.parse(future.stdout), []);
    const bad = await cli(['activation', 'list', '--since', 'abc']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /option '--since <when>' argument 'abc' is invalid/);
  });

  it('explains malformed credentials, naming where they came from', async () => {
    const run = await cli(['action', 'list'], { ISOLA_AUTH: 'nocolon' });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /The credentials from ISOLA_AUTH must look like uuid:key .* has no colon/);
  });

  it('runs the examples, which refuse bad input with a clear error', async () => {
    const fib = join(ROOT, 'examples/wasm/fib.wasm');
    assert.equal((await cli(['action', 'create', 'fib', fib])).code, 0);
    const exact = await cli(['action', 'invoke', 'fib', '-r', '-p', 'n', '90']);
    assert.equal(exact.code, 0, exact.stderr);
    assert.equal(JSON.parse(exact.stdout).fib, '2880067194370816120');
    for (const n of ['187', '-1', '"ten"', '1.5']) {
      const refused = await server.invoke<ActivationRecord>('fib', { n: JSON.parse(n) });
      assert.equal(refused.body.response.status, 'application error', n);
      assert.match(String((refused.body.response.result as { error: string }).error), /n must be an integer from 0 to 186/);
    }
    await server.request('PUT', '/api/v1/namespaces/_/actions/greet?overwrite=true', {
      exec: { kind: 'wasm', code: readFileSync(join(ROOT, 'examples/wasm/greet.wasm')).toString('base64'), binary: true },
    });
    const greet = await server.invoke<ActivationRecord>('greet', { name: 5 });
    assert.match(String((greet.body.response.result as { error: string }).error), /name must be a string/);
    await server.request('PUT', '/api/v1/namespaces/_/actions/wordcount?overwrite=true', {
      exec: { kind: 'wasm', code: readFileSync(join(ROOT, 'examples/wasm/wordcount.wasm')).toString('base64'), binary: true },
    });
    const words = await server.invoke<ActivationRecord>('wordcount', { text: 'one "two" three' });
    assert.equal((words.body.response.result as { words: number }).words, 3);
    const noText = await server.invoke<ActivationRecord>('wordcount', {});
    assert.match(String((noText.body.response.result as { error: string }).error), /needs the parameter text/);
  });
});
