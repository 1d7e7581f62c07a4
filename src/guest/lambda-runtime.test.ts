import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { LoopHost } from './action-loop.js';
import { errorBodyOf, LambdaRuntime } from './lambda-runtime.js';
import type { GuestMessage } from './protocol.js';

// The Runtime API as the agent serves it, driven by a real bootstrap (a Node.js program using
// fetch, as a custom runtime in any language would use its HTTP client), with the frames the
// agent would send collected here.
const dir = mkdtempSync(join(tmpdir(), 'isola-runtime-api-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Answers each event as its `mode` says. */
const BOOTSTRAP = `
const api = 'http://' + process.env.AWS_LAMBDA_RUNTIME_API + '/2018-06-01/runtime';
(async () => {
  for (;;) {
    const next = await fetch(api + '/invocation/next');
    const id = next.headers.get('lambda-runtime-aws-request-id');
    const event = await next.json();
    console.log('run ' + id);
    const post = (path, body, headers = {}) =>
      fetch(api + '/invocation/' + encodeURIComponent(id) + '/' + path, { method: 'POST', body, headers });
    switch (event.mode) {
      case 'raw':
        await post('response', event.body);
        break;
      case 'text-error':
        await post('error', 'plain words', { 'Lambda-Runtime-Function-Error-Type': 'Text.Error' });
        break;
      case 'skip':
        break;
      case 'methods': {
        const wrongMethod = await fetch(api + '/invocation/' + id + '/response');
        await post('response', JSON.stringify({ wrongMethod: wrongMethod.status, allow: wrongMethod.headers.get('allow') }));
        break;
      }
      case 'meet': {
        // Answers once \`event.count\` invocations are under way at once (each leaves a file), or
        // after 8 s without them (within the run's deadline): only bootstraps running side by side meet.
        const fs = require('node:fs');
        fs.writeFileSync(event.dir + '/here-' + process.pid, '');
        const until = Date.now() + 8000;
        while (fs.readdirSync(event.dir).length < event.count && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
        await post('response', JSON.stringify({ pid: process.pid, api: process.env.AWS_LAMBDA_RUNTIME_API }));
        break;
      }
    }
  }
})();
`;
writeFileSync(join(dir, 'bootstrap.js'), BOOTSTRAP);

/** The frames the runtime sends, as the agent would send them on. */
function collector() {
  const messages: GuestMessage[] = [];
  const logs: { id: string | undefined; stream: string; text: string }[] = [];
  const host: LoopHost = {
    send: (message) => messages.push(message),
    sendResult: (id, json) => messages.push({ type: 'result', id, result: JSON.parse(json) }),
    log: (_budget, id, stream, text) => logs.push({ id, stream, text }),
    looseBudget: { logBytes: 0, truncated: false },
  };
  const outcomeOf = (id: string) => messages.find((m) => (m.type === 'result' || m.type === 'error') && m.id === id);
  return { host, messages, logs, outcomeOf };
}

function runtime(host: LoopHost, concurrency = 1): LambdaRuntime {
  return new LambdaRuntime(host, {
    dir,
    command: [process.execPath, 'bootstrap.js'],
    env: { PATH: '/usr/bin:/bin', HOME: dir },
    concurrency,
    functionArn: 'arn:aws:lambda:isola:ns:function:unit',
  });
}

const budget = () => ({ logBytes: 0, truncated: false });
let counter = 0;

async function invoke(lambda: LambdaRuntime, event: unknown): Promise<string> {
  const id = `unit-${++counter}`;
  await lambda.run(id, JSON.stringify(event), Date.now() + 10_000, budget());
  return id;
}

describe("the agent's Lambda Runtime API", () => {
  it('takes any JSON response as the result, an empty one as {}, and text that is not JSON as a string it logs', async () => {
    const { host, outcomeOf, logs } = collector();
    const lambda = runtime(host);
    await lambda.start();
    try {
      const cases: [string, unknown][] = [
        ['{"a":1}', { a: 1 }],
        ['[1,2]', [1, 2]],
        ['"words"', 'words'],
        ['', {}],
        ['not json', 'not json'],
      ];
      for (const [body, expected] of cases) {
        const id = await invoke(lambda, { mode: 'raw', body });
        assert.deepEqual(outcomeOf(id), { type: 'result', id, result: expected }, body);
        assert.ok(
          logs.some((l) => l.id === id && l.text === `run ${id}\n`),
          `the bootstrap's output is the run's: ${JSON.stringify(logs)}`,
        );
      }
      assert.ok(logs.some((l) => /The bootstrap's response is not JSON: not json/.test(l.text)));
    } finally {
      lambda.stop();
    }
  });

  it('takes a text error with its type from the header, refuses a wrong method with 405, and fails a run asked past without an answer', async () => {
    const { host, outcomeOf } = collector();
    const lambda = runtime(host);
    await lambda.start();
    try {
      const failed = await invoke(lambda, { mode: 'text-error' });
      assert.deepEqual(outcomeOf(failed), {
        type: 'error',
        id: failed,
        error: { errorMessage: 'plain words', errorType: 'Text.Error' },
      });
      const methods = await invoke(lambda, { mode: 'methods' });
      assert.deepEqual(outcomeOf(methods), { type: 'result', id: methods, result: { wrongMethod: 405, allow: 'POST' } });
      const skipped = await invoke(lambda, { mode: 'skip' });
      const outcome = outcomeOf(skipped) as Extract<GuestMessage, { type: 'error' }>;
      assert.equal((outcome.error as { errorType: string }).errorType, 'Runtime.NoResponse');
      // And the bootstrap serves the next one.
      const after = await invoke(lambda, { mode: 'raw', body: '{"ok":true}' });
      assert.deepEqual(outcomeOf(after), { type: 'result', id: after, result: { ok: true } });
    } finally {
      lambda.stop();
    }
  });

  it('runs up to `concurrency` bootstraps, each with a port of its own, and reports them to be spared with their children', async () => {
    const { host, outcomeOf, messages } = collector();
    const lambda = runtime(host, 2);
    await lambda.start();
    try {
      // Both wait for each other, so they run at once whatever the host's load.
      const meeting = mkdtempSync(join(dir, 'meet-'));
      const [first, second] = await Promise.all([
        invoke(lambda, { mode: 'meet', dir: meeting, count: 2 }),
        invoke(lambda, { mode: 'meet', dir: meeting, count: 2 }),
      ]);
      const a = (outcomeOf(first as string) as { result: { pid: number; api: string } }).result;
      const b = (outcomeOf(second as string) as { result: { pid: number; api: string } }).result;
      assert.notEqual(a.pid, b.pid);
      assert.notEqual(a.api, b.api);
      const reported = messages.filter((m) => m.type === 'processes').at(-1) as Extract<GuestMessage, { type: 'processes' }>;
      assert.deepEqual([...reported.pids].sort(), [a.pid, b.pid].sort());
      assert.deepEqual(reported.trees, reported.pids);
    } finally {
      lambda.stop();
    }
  });

  it("reads an error body in Lambda's shape, filling its type from the header when it has none", () => {
    const body = (value: unknown) => Buffer.from(JSON.stringify(value));
    assert.deepEqual(errorBodyOf(body({ errorMessage: 'm', errorType: 'T', stackTrace: ['s'] }), 'H'), {
      errorMessage: 'm',
      errorType: 'T',
      stackTrace: ['s'],
    });
    assert.deepEqual(errorBodyOf(body({ errorMessage: 'm' }), 'H'), { errorMessage: 'm', errorType: 'H' });
    assert.deepEqual(errorBodyOf(body([1]), undefined), { errorMessage: '[1]', errorType: 'Unhandled' });
  });
});
