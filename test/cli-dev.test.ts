// `isola dev`: deploy a file, redeploy it on every save, tail its activations; against a real
// server, with real files and real fs events, through bin/isola.js as users run it.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TestServer, waitFor } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/isola.js');
/** Long enough for a first deploy and a cold start on a busy host; each wait ends as soon as its event is seen. */
const WAIT_MS = 60_000;

/** One `isola dev` process, its output gathered as it comes. */
class DevProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[], cwd: string, env: Record<string, string>) {
    this.child = spawn(process.execPath, [BIN, 'dev', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString('utf8');
    });
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
    this.exited = new Promise((resolve) => this.child.once('close', (code) => resolve(code)));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until stdout or stderr matches; the match. */
  async waitForOutput(pattern: RegExp, stream: 'stdout' | 'stderr' = 'stdout'): Promise<RegExpMatchArray> {
    return waitFor(
      `isola dev to print ${pattern} on ${stream} (stdout so far: ${this.stdout}; stderr: ${this.stderr})`,
      async () => {
        if (!this.running && !pattern.test(this[stream])) throw new Error(`isola dev exited: ${this.stdout}\n${this.stderr}`);
        return this[stream].match(pattern) ?? undefined;
      },
      WAIT_MS,
    );
  }

  /** How many times stdout matches. */
  count(pattern: RegExp): number {
    return [...this.stdout.matchAll(new RegExp(pattern.source, 'g'))].length;
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}

const source = (value: number) =>
  `export function main(params) {\n  console.log('serving version ${value}');\n  return { value: ${value} };\n}\n`;

describe('isola dev: deploy, redeploy on save, tail the logs', () => {
  let server: TestServer;
  let work: string;
  let env: Record<string, string>;
  const started: DevProcess[] = [];

  const isolaDev = (args: string[]) => {
    const dev = new DevProcess([...args, '--apihost', server.url, '--auth', server.auth], work, env);
    started.push(dev);
    return dev;
  };
  const resultOf = async (name: string) =>
    (await server.invoke<Record<string, unknown>>(name, {}, 'blocking=true&result=true')).body;
  const actionStatus = async (name: string) => (await server.request('GET', `/api/v1/namespaces/_/actions/${name}`)).status;

  before(async () => {
    server = await TestServer.start();
    work = mkdtempSync(join(tmpdir(), 'isola-cli-dev-'));
    mkdirSync(join(work, 'xdg'));
    env = { ...process.env } as Record<string, string>;
    for (const name of ['ISOLA_AUTH', 'ISOLA_APIHOST', 'ISOLA_DATA_DIR', 'ISOLA_GUEST_AUTH']) delete env[name];
    env.XDG_CONFIG_HOME = join(work, 'xdg');
  });
  after(async () => {
    // Even when a test failed half-way: no `isola dev` outlives the file.
    for (const dev of started) {
      if (dev.running && dev.pid !== undefined) {
        process.kill(dev.pid, 'SIGKILL');
        await dev.exited;
      }
    }
    await server?.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  describe('one session on hello.js', () => {
    let dev: DevProcess;
    let file: string;

    it('deploys the file under its name and prints the URLs of its doors', async () => {
      file = join(work, 'hello.js');
      writeFileSync(file, source(1));
      dev = isolaDev([file]);
      await dev.waitForOutput(/deployed hello version \S+/);
      await dev.waitForOutput(/Ctrl-C stops \(the function stays deployed\)/);
      for (const url of [
        `${server.url}/api/v1/namespaces/_/actions/hello`,
        `${server.url}/api/v1/web/guest/default/hello.json`,
        `${server.url}/2015-03-31/functions/hello/invocations`,
        `${server.url}/function/hello`,
        `${server.url}/ui/functions/hello`,
      ]) {
        assert.ok(dev.stdout.includes(url), `${url} in ${dev.stdout}`);
      }
      assert.match(dev.stdout, /hello\.json +\(answers only once web-exported/);
      assert.deepEqual(await resultOf('hello'), { value: 1 });
    });

    it('redeploys a new version when the file is saved', async () => {
      const before = dev.count(/deployed hello version/);
      writeFileSync(file, source(2));
      await waitFor('the new code to answer', async () => ((await resultOf('hello')).value === 2 ? true : undefined), WAIT_MS);
      // The server may answer with the new code before `isola dev` has read its own deploy's reply.
      await waitFor(
        'isola dev to report the deploy',
        async () => (dev.count(/deployed hello version/) > before ? true : undefined),
        WAIT_MS,
      );
      const versions = [...dev.stdout.matchAll(/deployed hello version (\S+)/g)].map((m) => m[1]);
      assert.equal(new Set(versions).size, versions.length, `each deploy is a new version: ${versions.join(', ')}`);
    });

    it('prints each activation with its status, duration, cold or warm, and its logs', async () => {
      const invoked = await server.invoke<{ activationId: string }>('hello');
      assert.equal(invoked.status, 200);
      const id = invoked.body.activationId;
      const [line] = await dev.waitForOutput(
        new RegExp(`activation ${id} v\\S+ success \\d+ ms (cold|warm)\\n.*serving version 2`),
      );
      assert.ok(line);
    });

    it('reports a deploy the server refuses and keeps running; the fix is deployed on the next save', async () => {
      writeFileSync(file, 'export function main(params) {\n  return { value: ;\n}\n');
      await dev.waitForOutput(/error: deploy of hello failed: The function does not compile/, 'stderr');
      assert.ok(dev.running);
      assert.deepEqual(await resultOf('hello'), { value: 2 }, 'the last good version still serves');
      writeFileSync(file, source(3));
      await waitFor('the fixed code to answer', async () => ((await resultOf('hello')).value === 3 ? true : undefined), WAIT_MS);
    });

    it('stops on SIGINT with exit code 0, leaving the function deployed', async () => {
      dev.signal('SIGINT');
      assert.equal(await dev.exited, 0, dev.stderr);
      assert.match(dev.stdout, /hello stays deployed/);
      assert.equal(await actionStatus('hello'), 200);
    });
  });

  it('with --rm, deletes the function on SIGINT', async () => {
    const file = join(work, 'scratch.js');
    writeFileSync(file, source(7));
    const dev = isolaDev([file, '--rm']);
    await dev.waitForOutput(/Ctrl-C stops \(the function is deleted\)/);
    assert.deepEqual(await resultOf('scratch'), { value: 7 });
    dev.signal('SIGINT');
    assert.equal(await dev.exited, 0, dev.stderr);
    assert.match(dev.stdout, /deleted scratch/);
    assert.equal(await actionStatus('scratch'), 404);
  });

  it('deploys a directory zipped, under the name given with --name, and stops on SIGTERM', async () => {
    const dir = join(work, 'site');
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'site', main: 'index.js' }));
    writeFileSync(join(dir, 'index.js'), 'exports.main = () => ({ from: "a directory" });\n');
    const dev = isolaDev([dir, '--name', 'from-dir', '--no-tail']);
    await dev.waitForOutput(/deployed from-dir version \S+ \(nodejs:20/);
    assert.deepEqual(await resultOf('from-dir'), { from: 'a directory' });
    writeFileSync(join(dir, 'index.js'), 'exports.main = () => ({ from: "a directory, saved again" });\n');
    await waitFor(
      'the directory saved again to answer',
      async () => ((await resultOf('from-dir')).from === 'a directory, saved again' ? true : undefined),
      WAIT_MS,
    );
    dev.signal('SIGTERM');
    assert.equal(await dev.exited, 0, dev.stderr);
  });

  it('ends with a one-line error and a non-zero code when the file is missing or the server unreachable', async () => {
    const missing = isolaDev([join(work, 'nothing-here.js')]);
    assert.notEqual(await missing.exited, 0);
    assert.match(missing.stderr, /^error: .*nothing-here\.js does not exist/);
    assert.equal(missing.stderr.trim().split('\n').length, 1, missing.stderr);

    const file = join(work, 'lonely.js');
    writeFileSync(file, source(1));
    const unreachable = new DevProcess([file, '--apihost', 'http://127.0.0.1:9', '--auth', server.auth], work, env);
    started.push(unreachable);
    assert.notEqual(await unreachable.exited, 0);
    assert.match(unreachable.stderr, /^error: Cannot reach the Isola server at http:\/\/127\.0\.0\.1:9/);
    assert.equal(unreachable.stderr.trim().split('\n').length, 1, unreachable.stderr);
  });
});
