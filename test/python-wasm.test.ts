// python:3 under isolation "wasm" (CPython through Pyodide), end to end through the API of a real
// server: what a hostile function can reach from inside the interpreter, the limits it runs in,
// and what a deploy is refused for. The conformance suite (test/conformance.test.ts) covers
// answers, errors, the environment, the timeout and the memory limit.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const deploy = (server: TestServer, name: string, code: string, limits: Record<string, number> = {}) =>
  server.request<{ error?: string }>('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
    exec: { kind: 'python:3', code },
    limits,
    annotations: [{ key: 'isolation', value: 'wasm' }],
  });

// Every way out this function tries: Python's bridge to JavaScript (the global object, eval, the
// Function constructor behind any JavaScript object, Pyodide's own module), the host's files and
// network, and a child process. Each answer says what happened.
const ESCAPES = `
import os, socket, subprocess

def attempt(what):
    try:
        return 'reached: ' + repr(what())[:80]
    except BaseException as error:
        return 'refused: %s: %s' % (type(error).__name__, str(error)[:120])

def main(args):
    import js, pyodide_js
    from pyodide.ffi import to_js
    return {
        'process': attempt(lambda: js.process.pid),
        'require': attempt(lambda: js.require('fs')),
        'eval': attempt(lambda: js.eval('globalThis.process')),
        'function': attempt(lambda: to_js([]).constructor.constructor('return globalThis.process')()),
        'module': attempt(lambda: pyodide_js._module.constructor.constructor('return 1')()),
        'helpers': attempt(lambda: js.__isolaWriteFile),
        'passwd': attempt(lambda: open('/etc/passwd').read()),
        'hostname': attempt(lambda: open('/proc/sys/kernel/hostname').read()),
        'socket': attempt(lambda: socket.create_connection(('127.0.0.1', 22), timeout=1)),
        'spawn': attempt(lambda: subprocess.run(['id'], check=True)),
        'fork': attempt(lambda: os.fork()),
        'heap': attempt(lambda: (setattr(js, '__isolaHeapMax', 2 ** 31), js.__isolaHeapMax)[1] == 2 ** 31 or _raise()),
    }

def _raise():
    raise PermissionError('the memory limit stayed as it was')
`;

const SCRATCH = `
import errno, os

def main(args):
    written = 0
    try:
        with open('/tmp/fill', 'wb') as out:
            while written < 1 << 30:
                out.write(b'x' * (1 << 20))
                written += 1 << 20
    except OSError as error:
        return {'written': written, 'enospc': error.errno == errno.ENOSPC}
    return {'written': written}
`;

const CHATTY = `
def main(args):
    for i in range(200000):
        print('line %d %s' % (i, 'x' * 100))
    return {'printed': True}
`;

const STATEFUL = `
calls = 0

def main(args):
    global calls
    calls += 1
    return {'calls': calls}
`;

describe('python:3 under isolation "wasm"', () => {
  let server: TestServer;
  const invoke = (name: string, params: Record<string, unknown> = {}) => server.invoke<ActivationRecord>(name, params);

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_BACKENDS: 'wasm,process' } });
  });
  after(() => server?.dispose());

  it('reaches nothing outside its interpreter: no Node.js, no code from strings, no host files, sockets or processes', async () => {
    assert.equal((await deploy(server, 'escapes', ESCAPES)).status, 200);
    const res = await invoke('escapes');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(annotation(res.body, 'isolation'), 'wasm');
    const result = res.body.response.result as Record<string, string>;
    for (const [what, answer] of Object.entries(result)) {
      assert.match(answer, /^refused: /, `${what}: ${answer}`);
    }
    assert.match(result.eval as string, /EvalError/);
    assert.match(result.function as string, /EvalError/);
    assert.match(result.passwd as string, /FileNotFoundError/);
    // The server is unharmed and still serves.
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/escapes')).status, 200);
  });

  it('keeps its globals between warm calls in one instance, as a Python process does', async () => {
    assert.equal((await deploy(server, 'stateful', STATEFUL)).status, 200);
    const first = await invoke('stateful');
    const second = await invoke('stateful');
    assert.deepEqual(first.body.response.result, { calls: 1 });
    assert.deepEqual(second.body.response.result, { calls: 2 });
    assert.equal(annotation(second.body, 'coldStart'), false);
  });

  it('bounds the scratch space to a quarter of its memory: ENOSPC, then the next call is served', async () => {
    assert.equal((await deploy(server, 'scratch', SCRATCH, { memory: 128 })).status, 200);
    const res = await invoke('scratch');
    assert.equal(res.body.response.status, 'success', JSON.stringify(res.body.response));
    const result = res.body.response.result as { written: number; enospc?: boolean };
    assert.equal(result.enospc, true, JSON.stringify(result));
    assert.ok(result.written <= 32 * 1024 * 1024, `wrote ${result.written} bytes into a 32 MB scratch space`);
    assert.ok(result.written >= 16 * 1024 * 1024, `only ${result.written} bytes fit`);
    const again = await invoke('scratch');
    assert.equal(again.body.response.status, 'success', JSON.stringify(again.body.response));
  });

  it('truncates a function that prints without end at its log limit', async () => {
    assert.equal((await deploy(server, 'chatty', CHATTY, { logs: 16 })).status, 200);
    const res = await invoke('chatty');
    assert.equal(res.body.response.status, 'success', JSON.stringify(res.body.response));
    const logs = await waitFor('the logs of the chatty function', async () => {
      const got = await server.request<{ logs: string[] }>(
        'GET',
        `/api/v1/namespaces/_/activations/${res.body.activationId}/logs`,
      );
      return got.body.logs?.some((l) => l.includes('truncated')) ? got.body.logs : undefined;
    });
    const bytes = logs.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
    assert.ok(bytes < 64 * 1024, `${bytes} bytes of logs kept for a 16 KB limit`);
  });

  it('refuses at deploy what one interpreter per instance cannot do, and stores nothing', async () => {
    const concurrent = await deploy(server, 'concurrent', STATEFUL, { concurrency: 4 });
    assert.equal(concurrent.status, 400, JSON.stringify(concurrent.body));
    assert.match(concurrent.body.error as string, /concurrency must be 1/);
    const small = await deploy(server, 'small', STATEFUL, { memory: 32 });
    assert.equal(small.status, 400, JSON.stringify(small.body));
    assert.match(small.body.error as string, /at least 64 MB/);
    for (const name of ['concurrent', 'small']) {
      assert.equal((await server.request('GET', `/api/v1/namespaces/_/actions/${name}`)).status, 404, `${name} was stored`);
    }
  });
});
