import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, parseDuration, parsePrewarm, resolveServerConfig } from './config.js';
import { kernelCacheDir } from './images/specialised-kernel.js';

describe('server settings', () => {
  it('uses the contract defaults', () => {
    const config = resolveServerConfig({}, {});
    assert.equal(config.port, 3233);
    assert.equal(config.host, '127.0.0.1');
    assert.match(config.dataDir, /\.isola$/);
    assert.equal(config.backends, undefined, 'all backends that work');
    assert.equal(config.keepAlive, 'fixed:10m');
    assert.equal(resolveServerConfig({ keepAlive: '5m' }, {}).keepAlive, 'fixed:5m');
    assert.equal(resolveServerConfig({}, { ISOLA_KEEP_ALIVE: 'hybrid' }).keepAlive, 'hybrid');
  });
  it('lets flags win over the environment', () => {
    const env = { ISOLA_PORT: '4000', ISOLA_HOST: '0.0.0.0', ISOLA_BACKENDS: 'process', ISOLA_DATA_DIR: '/tmp/env' };
    const fromEnv = resolveServerConfig({}, env);
    assert.deepEqual([fromEnv.port, fromEnv.host, fromEnv.backends, fromEnv.dataDir], [4000, '0.0.0.0', ['process'], '/tmp/env']);
    const fromFlags = resolveServerConfig({ port: '5000', backends: 'isolate,process', dataDir: '/tmp/flag' }, env);
    assert.deepEqual([fromFlags.port, fromFlags.backends, fromFlags.dataDir], [5000, ['isolate', 'process'], '/tmp/flag']);
  });
  it('rejects bad values with a clear message', () => {
    assert.throws(() => resolveServerConfig({ port: '99999' }, {}), /port must be an integer from 0 to 65535/);
    assert.throws(() => resolveServerConfig({ backends: 'isolate,docker' }, {}), /Unknown backend "docker"/);
    assert.throws(() => resolveServerConfig({}, { ISOLA_GUEST_AUTH: 'nocolon' }), ConfigError);
  });
  it('takes the database from --database, then ISOLA_DATABASE (or ISOLA_DATABASE_URL); unset is SQLite', () => {
    const pg = 'postgres://isola@db:5432/isola';
    assert.equal(resolveServerConfig({}, {}).databaseUrl, undefined);
    assert.equal(resolveServerConfig({}, { ISOLA_DATABASE: pg }).databaseUrl, pg);
    assert.equal(resolveServerConfig({}, { ISOLA_DATABASE_URL: pg }).databaseUrl, pg);
    assert.equal(resolveServerConfig({ database: 'sqlite:/x.db' }, { ISOLA_DATABASE: pg }).databaseUrl, 'sqlite:/x.db');
    assert.throws(
      () => resolveServerConfig({ database: 'mysql://db/isola' }, {}),
      /must be a postgres:\/\/user@host:port\/database URL/,
    );
  });
  it('parses durations', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('10m'), 600_000);
    assert.equal(parseDuration('4h'), 14_400_000);
    assert.throws(() => parseDuration('soon'), ConfigError);
  });
  it('reads the backend settings once, typed', () => {
    const config = resolveServerConfig(
      { containerRuntime: 'runc' },
      {
        ISOLA_CONTAINER_PREWARM: 'created',
        ISOLA_WASM_WORKERS: '3',
        ISOLA_WASM_FAST_PATH: 'off',
        ISOLA_MICROVM_ACCEL: 'tcg',
        ISOLA_MICROVM_PREWARM: 'waiting',
        ISOLA_MICROVM_START: 'boot',
        ISOLA_MICROVM_SETTLE_MS: '500',
        ISOLA_MICROVM_GUEST: 'specialised',
        ISOLA_LOG_LEVEL: 'info',
      },
    );
    assert.deepEqual(config.backendSettings, {
      containerRuntime: 'runc',
      containerPrewarm: 'created',
      wasmWorkers: 3,
      wasmFastPath: false,
      microvm: {
        guest: 'specialised',
        kernelCacheDir: kernelCacheDir({}),
        accelerator: 'tcg',
        prewarmMode: 'waiting',
        start: 'boot',
        settleMs: 500,
      },
    });
    assert.equal(config.logLevel, 'info');
    const defaults = resolveServerConfig({}, {});
    assert.deepEqual(defaults.backendSettings, { containerPrewarm: 'started', microvm: {} });
    assert.equal(defaults.logLevel, 'warn');
  });
  it('reads prewarm targets per backend and kind', () => {
    assert.deepEqual(parsePrewarm('isolate:2,process:1,wasm:1'), [
      { isolation: 'isolate', kind: 'nodejs:20', count: 2 },
      { isolation: 'process', kind: 'nodejs:20', count: 1 },
      { isolation: 'wasm', kind: 'wasm', count: 1 },
    ]);
    assert.deepEqual(parsePrewarm('process:python:1, container:java:2,gvisor:ruby:3.1:1,microvm:go:default:1'), [
      { isolation: 'process', kind: 'python:3', count: 1 },
      { isolation: 'container', kind: 'java:17', count: 2 },
      { isolation: 'gvisor', kind: 'ruby:3.1', count: 1 },
      { isolation: 'microvm', kind: 'go:1.19', count: 1 },
    ]);
    // The same backend and kind twice: the later entry wins; `process:1` and `process:nodejs:20:3` are the same pool.
    assert.deepEqual(parsePrewarm('process:1,process:nodejs:20:3'), [{ isolation: 'process', kind: 'nodejs:20', count: 3 }]);
    assert.deepEqual(resolveServerConfig({}, {}).prewarm, parsePrewarm('isolate:2,process:1,container:1,gvisor:1,microvm:1'));
    assert.deepEqual(resolveServerConfig({ prewarm: 'process:php:1' }, { ISOLA_PREWARM: 'isolate:1' }).prewarm, [
      { isolation: 'process', kind: 'php:8.2', count: 1 },
    ]);
  });

  it('refuses a prewarm target with a kind that does not exist or cannot run on its backend', () => {
    assert.throws(
      () => parsePrewarm('process:cobol:1'),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /The kind "cobol" is not supported\. Supported kinds: nodejs:20, python:3/);
        return true;
      },
    );
    assert.throws(
      () => parsePrewarm('isolate:python:1'),
      /Kind python:3 cannot run under "isolate".*process, container, gvisor, microvm/,
    );
    assert.throws(() => parsePrewarm('wasm:nodejs:1'), /Kind nodejs:20 cannot run under "wasm"/);
    assert.throws(() => parsePrewarm('process:python:many'), /prewarm count for process must be an integer/);
    assert.throws(() => parsePrewarm('kvm:1'), /Unknown backend "kvm"/);
  });

  it('names the setting that is wrong, and what it accepts', () => {
    const wrong = (env: Record<string, string>, setting: string, message: RegExp) =>
      assert.throws(
        () => resolveServerConfig({}, env),
        (error: unknown) => error instanceof ConfigError && error.setting === setting && message.test(error.message),
      );
    wrong({ ISOLA_MICROVM_ACCEL: 'xen' }, 'ISOLA_MICROVM_ACCEL', /^ISOLA_MICROVM_ACCEL must be kvm or tcg; got "xen"\.$/);
    wrong({ ISOLA_MICROVM_START: 'warm' }, 'ISOLA_MICROVM_START', /must be snapshot or boot/);
    wrong({ ISOLA_MICROVM_GUEST: 'alpine' }, 'ISOLA_MICROVM_GUEST', /must be debian or specialised; got "alpine"/);
    wrong({ ISOLA_WASM_WORKERS: 'many' }, 'ISOLA_WASM_WORKERS', /must be an integer from 1 to 256; got "many"/);
    wrong({ ISOLA_WASM_FAST_PATH: 'yes' }, 'ISOLA_WASM_FAST_PATH', /must be on or off; got "yes"/);
    wrong({ ISOLA_RECORD_WINDOW: '2s' }, 'ISOLA_RECORD_WINDOW', /must be at most 1000 ms; got "2s"/);
    wrong({ ISOLA_RECORD_WINDOW: 'soon' }, 'ISOLA_RECORD_WINDOW', /is not a duration/);
    wrong({ ISOLA_LOG_LEVEL: 'loud' }, 'ISOLA_LOG_LEVEL', /must be fatal, error, warn, info, debug, trace or silent/);
    wrong({ ISOLA_QUEUE_TIMEOUT: 'soon' }, 'ISOLA_QUEUE_TIMEOUT', /"soon" is not a duration/);
    wrong({ ISOLA_CONTAINER_PREWARM: 'warm' }, 'ISOLA_CONTAINER_PREWARM', /must be started or created/);
    wrong({ ISOLA_ADMIN_TOKEN: 'short' }, 'ISOLA_ADMIN_TOKEN', /at least 16 characters/);
  });
});
