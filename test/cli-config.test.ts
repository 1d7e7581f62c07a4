import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { configPath, resolveConnection } from '../src/cli/config-file.js';
import { TestServer } from './helpers/server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The command as users run it: bin/isola.js on the built platform, no TypeScript loader. */
const BIN = join(ROOT, 'bin/isola.js');
const AUTH = '23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], cwd: string, env: Record<string, string>): Promise<Run> {
  const clean = { ...process.env };
  for (const name of ['ISOLA_AUTH', 'ISOLA_APIHOST', 'ISOLA_DATA_DIR', 'ISOLA_GUEST_AUTH', 'XDG_CONFIG_HOME']) delete clean[name];
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...args], { cwd, env: { ...clean, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({
        code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
        stdout: String(stdout),
        stderr: String(stderr),
      });
    });
  });
}

describe('the CLI from any directory: isola property and the config file', () => {
  let server: TestServer;
  let work: string;
  let elsewhere: string;
  let xdg: string;
  let file: string;
  const isola = (args: string[], env: Record<string, string> = {}) => run(BIN, args, elsewhere, { XDG_CONFIG_HOME: xdg, ...env });

  before(async () => {
    server = await TestServer.start();
    work = mkdtempSync(join(tmpdir(), 'isola-cli-config-'));
    elsewhere = join(work, 'elsewhere');
    mkdirSync(elsewhere);
    xdg = join(work, 'xdg');
    file = join(xdg, 'isola', 'config.json');
  });
  after(async () => {
    await server?.dispose();
    rmSync(work, { recursive: true, force: true });
  });

  it('prints its version from the built platform', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const result = await isola(['--version']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), version);
  });

  it('has no server to talk to from another directory before anything is set', async () => {
    const result = await isola(['action', 'list']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /No credentials: .*isola property set --auth/);
  });

  it('refuses a bad API host or bad credentials and stores nothing', async () => {
    const badHost = await isola(['property', 'set', '--apihost', 'not a url']);
    assert.notEqual(badHost.code, 0);
    assert.match(badHost.stderr, /--apihost must be a URL/);
    const badAuth = await isola(['property', 'set', '--auth', 'nocolon']);
    assert.notEqual(badAuth.code, 0);
    assert.match(badAuth.stderr, /must look like uuid:key/);
    const nothing = await isola(['property', 'set']);
    assert.notEqual(nothing.code, 0);
    assert.match(nothing.stderr, /Nothing to set/);
    assert.equal(existsSync(file), false);
  });

  it('saves the API host and credentials in $XDG_CONFIG_HOME/isola/config.json, readable by its owner only', async () => {
    const result = await isola(['property', 'set', '--apihost', server.url, '--auth', server.auth]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { apihost: server.url, auth: server.auth });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const shown = await isola(['--json', 'property', 'get']);
    assert.equal(shown.code, 0, shown.stderr);
    const view = JSON.parse(shown.stdout) as { configFile: string; apihost: { value: string; source: string } };
    assert.equal(view.configFile, file);
    assert.deepEqual(view.apihost, { value: server.url, source: file });
  });

  it('then works from any directory against that server', async () => {
    const code = join(work, 'hello.js');
    writeFileSync(code, 'function main(params) { return { greeting: "Hello " + params.name }; }\n');
    const created = await isola(['action', 'create', 'hello', code]);
    assert.equal(created.code, 0, created.stderr);
    const invoked = await isola(['action', 'invoke', 'hello', '-r', '-p', 'name', 'Ada']);
    assert.equal(invoked.code, 0, invoked.stderr);
    assert.deepEqual(JSON.parse(invoked.stdout), { greeting: 'Hello Ada' });
  });

  it('lets the environment override the file, and a flag override both', async () => {
    const dead = 'http://127.0.0.1:9';
    const fromEnv = await isola(['property', 'get', 'apihost'], { ISOLA_APIHOST: dead });
    assert.equal(fromEnv.stdout.trim(), dead);
    const failing = await isola(['action', 'list'], { ISOLA_APIHOST: dead });
    assert.notEqual(failing.code, 0);
    assert.match(failing.stderr, /Cannot reach the Isola server at http:\/\/127\.0\.0\.1:9/);
    const flagged = await isola(['--apihost', server.url, 'action', 'list'], { ISOLA_APIHOST: dead });
    assert.equal(flagged.code, 0, flagged.stderr);
    assert.match(flagged.stdout, /hello/);
  });

  it('forgets what unset removes', async () => {
    const unset = await isola(['property', 'unset', 'auth']);
    assert.equal(unset.code, 0, unset.stderr);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { apihost: server.url });
    const missing = await isola(['property', 'get', 'auth']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /auth is not set/);
    const unknown = await isola(['property', 'unset', 'colour']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /Unknown property "colour"/);
  });

  it('says what is wrong with a config file that is not JSON', async () => {
    writeFileSync(file, '{ apihost: ');
    const result = await isola(['action', 'list']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /config\.json is not valid JSON/);
  });
});

describe('resolveConnection', () => {
  it('ranks flags, then the environment, then a named data dir, then the config file, then ./.isola', () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-resolve-'));
    try {
      const config = join(dir, 'config.json');
      writeFileSync(config, JSON.stringify({ apihost: 'http://file:1', auth: AUTH }));
      const dataDir = join(dir, 'data');
      mkdirSync(dataDir);
      writeFileSync(join(dataDir, 'server.json'), JSON.stringify({ url: 'http://dir:2', pid: 1 }));
      const env = { ISOLA_APIHOST: 'http://env:3' };
      const at = (flags: { apihost?: string; dataDir?: string }, environment: NodeJS.ProcessEnv) =>
        resolveConnection({ flags, env: environment, configFile: config }).apihost;
      assert.deepEqual(at({ apihost: 'http://flag:4/' }, env), { value: 'http://flag:4', source: '--apihost' });
      assert.deepEqual(at({ dataDir }, env), { value: 'http://env:3', source: 'ISOLA_APIHOST' });
      assert.equal(at({ dataDir }, {}).value, 'http://dir:2');
      assert.equal(at({}, { ISOLA_DATA_DIR: dataDir }).value, 'http://dir:2');
      assert.deepEqual(at({}, {}), { value: 'http://file:1', source: config });
      assert.deepEqual(resolveConnection({ flags: {}, env: {} }).apihost.source, 'default');
      assert.deepEqual(resolveConnection({ flags: {}, env: {}, configFile: config }).auth, { value: AUTH, source: config });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('finds the config file under XDG_CONFIG_HOME, else ~/.config', () => {
    assert.equal(configPath({ XDG_CONFIG_HOME: '/x/y' }), '/x/y/isola/config.json');
    assert.match(configPath({}), /\/\.config\/isola\/config\.json$/);
    assert.match(configPath({ XDG_CONFIG_HOME: 'relative' }), /\/\.config\/isola\/config\.json$/);
  });
});

describe('isola bench without the bench package', () => {
  it('says how to install it', async () => {
    // The launcher and manifest alone, where no node_modules holds the package's dependencies.
    const dir = mkdtempSync(join(tmpdir(), 'isola-bench-absent-'));
    try {
      const pkg = join(dir, 'packages', 'bench');
      mkdirSync(pkg, { recursive: true });
      for (const name of ['launch.js', 'package.json']) copyFileSync(join(ROOT, 'packages/bench', name), join(pkg, name));
      const result = await run(join(pkg, 'launch.js'), ['src/main.ts', 'bench', '--quick'], dir, {});
      assert.equal(result.code, 1);
      assert.match(result.stderr, /the benchmark harness is not installed: run `npm run bench:install`/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
