// Lambda custom runtimes (provided.al2023): a zip whose `bootstrap` uses AWS Lambda's Runtime API,
// deployed and invoked unmodified with the real AWS SDK against a real `isola serve`. The agent
// serves the Runtime API inside the sandbox; the bootstraps are a static Go program (raw net/http,
// built here) on every process-like backend this host has but the microVM, and a POSIX shell
// script using curl on the process backend (the host's tools; the images carry no shell).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CreateFunctionCommand,
  InvalidParameterValueException,
  InvalidRequestContentException,
  InvokeCommand,
  LambdaClient,
} from '@aws-sdk/client-lambda';
import type { Isolation } from '../src/core/kinds.js';
import type { ActivationRecord } from '../src/core/types.js';
import type { BackendStatus } from '../src/sandbox/backend.js';
import { probeBackends } from '../src/sandbox/registry.js';
import { TestServer } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

/**
 * A custom runtime as AWS documents one, in Go with nothing but the standard library. It counts
 * invocations in memory, answers with what Lambda gave it (headers, environment), and on request
 * fails through /error, dies, answers too much, or probes the Runtime API's refusals.
 */
const GO_BOOTSTRAP = `package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

var api = "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime"

func post(url string, body []byte, errorType string) int {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	if errorType != "" {
		req.Header.Set("Lambda-Runtime-Function-Error-Type", errorType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "post:", err)
		os.Exit(2)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func main() {
	if os.Getenv("FAIL_INIT") != "" {
		fmt.Fprintln(os.Stderr, "no configuration")
		post(api+"/init/error", []byte(\`{"errorMessage":"missing configuration","errorType":"Config.Missing"}\`), "Config.Missing")
		os.Exit(1)
	}
	count := 0
	for {
		res, err := http.Get(api + "/invocation/next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			os.Exit(2)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		id := res.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var event map[string]interface{}
		json.Unmarshal(body, &event)
		count++
		fmt.Printf("invocation %d: %s\\n", count, id)
		switch event["action"] {
		case "fail":
			post(api+"/invocation/"+id+"/error", []byte(\`{"errorMessage":"it failed","errorType":"Handler.Failed","stackTrace":["main.go"]}\`), "Handler.Failed")
		case "crash":
			fmt.Fprintln(os.Stderr, "crashing on purpose")
			os.Exit(3)
		case "huge":
			post(api+"/invocation/"+id+"/response", []byte("\\""+strings.Repeat("x", 7*1024*1024)+"\\""), "")
		default:
			refusals := map[string]int{
				"unknownId": post(api+"/invocation/not-"+id+"/response", []byte("{}"), ""),
				"lateInitError": post(api+"/init/error", []byte("{}"), "Late"),
			}
			missing, _ := http.Get(api + "/nothing-here")
			refusals["unknownPath"] = missing.StatusCode
			missing.Body.Close()
			answer, _ := json.Marshal(map[string]interface{}{
				"count":     count,
				"event":     event,
				"refusals":  refusals,
				"requestId": id,
				"deadline":  res.Header.Get("Lambda-Runtime-Deadline-Ms"),
				"arn":       res.Header.Get("Lambda-Runtime-Invoked-Function-Arn"),
				"trace":     res.Header.Get("Lambda-Runtime-Trace-Id"),
				"context":   res.Header.Get("Lambda-Runtime-Client-Context"),
				"env": map[string]string{
					"handler":  os.Getenv("_HANDLER"),
					"name":     os.Getenv("AWS_LAMBDA_FUNCTION_NAME"),
					"version":  os.Getenv("AWS_LAMBDA_FUNCTION_VERSION"),
					"memory":   os.Getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
					"region":   os.Getenv("AWS_REGION"),
					"taskRoot": os.Getenv("LAMBDA_TASK_ROOT"),
					"greeting": os.Getenv("GREETING"),
					"runtimeApi": os.Getenv("AWS_LAMBDA_RUNTIME_API"),
				},
			})
			post(api+"/invocation/"+id+"/response", answer, "")
		}
	}
}
`;

/** The same runtime as a POSIX shell script, with curl: the shape of AWS's own tutorial. */
const SHELL_BOOTSTRAP = `#!/bin/sh
set -u
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
if [ -n "\${FAIL_INIT:-}" ]; then
  curl -sS -X POST -H 'Lambda-Runtime-Function-Error-Type: Config.Missing' \\
    -d '{"errorMessage":"missing configuration","errorType":"Config.Missing"}' "$api/init/error" >/dev/null
  exit 1
fi
headers="$(mktemp)"
count=0
while true; do
  event="$(curl -sS -D "$headers" "$api/invocation/next")"
  id="$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$headers" | tr -d '\\r' | cut -d' ' -f2)"
  count=$((count + 1))
  echo "invocation $count: $id"
  case "$event" in
    *'"action":"fail"'*)
      curl -sS -X POST -H 'Lambda-Runtime-Function-Error-Type: Handler.Failed' \\
        -d '{"errorMessage":"it failed","errorType":"Handler.Failed","stackTrace":["bootstrap"]}' "$api/invocation/$id/error" >/dev/null ;;
    *'"action":"crash"'*)
      echo "crashing on purpose" >&2
      exit 3 ;;
    *)
      curl -sS -X POST -d "{\\"count\\":$count,\\"requestId\\":\\"$id\\",\\"event\\":$event,\\"env\\":{\\"handler\\":\\"$_HANDLER\\",\\"greeting\\":\\"\${GREETING:-}\\"}}" \\
        "$api/invocation/$id/response" >/dev/null ;;
  esac
done
`;

const root = mkdtempSync(join(tmpdir(), 'isola-runtime-api-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** The Go bootstrap, built static (no cgo) as a provided.al2023 function's would be. */
function buildGoBootstrap(): Buffer {
  const dir = join(root, 'go');
  mkdirSync(dir);
  writeFileSync(join(dir, 'main.go'), GO_BOOTSTRAP);
  writeFileSync(join(dir, 'go.mod'), 'module bootstrap\n\ngo 1.19\n');
  const built = spawnSync('/usr/bin/go', ['build', '-trimpath', '-o', 'bootstrap', '.'], {
    cwd: dir,
    encoding: 'utf8',
    env: {
      PATH: '/usr/bin:/bin',
      HOME: dir,
      CGO_ENABLED: '0',
      GOPROXY: 'off',
      GOFLAGS: '-mod=mod',
      GOTOOLCHAIN: 'local',
      // Kept between runs: the standard library (net/http) compiles once.
      GOCACHE: join(tmpdir(), 'isola-test-go-cache'),
      GOPATH: join(dir, 'gopath'),
    },
  });
  assert.equal(built.status, 0, built.stderr);
  return readFileSync(join(dir, 'bootstrap'));
}

const decode = (payload: Uint8Array | undefined) =>
  JSON.parse(Buffer.from(payload ?? []).toString('utf8')) as Record<string, unknown>;

interface Setup {
  name: string;
  isolation: Isolation;
  env: Record<string, string>;
  containerRuntime?: 'runc';
  bootstraps: ('go' | 'shell')[];
}

const SETUPS: Setup[] = [
  { name: 'process', isolation: 'process', env: {}, bootstraps: ['go', 'shell'] },
  {
    name: 'container (runc)',
    isolation: 'container',
    containerRuntime: 'runc',
    env: { ISOLA_CONTAINER_RUNTIME: 'runc' },
    bootstraps: ['go'],
  },
  { name: 'gvisor', isolation: 'gvisor', env: {}, bootstraps: ['go'] },
];

/** What doctor finds for a backend (the same probe), or undefined when it is there. */
async function unavailable(setup: Setup, dataDir: string): Promise<string | undefined> {
  const { backends, statuses } = await probeBackends(
    { dataDir, ...(setup.containerRuntime ? { containerRuntime: setup.containerRuntime } : {}) },
    [setup.isolation],
  );
  await Promise.all([...backends.values()].map((b) => b.close()));
  const status = statuses.find((s) => s.isolation === setup.isolation) as BackendStatus;
  if (!status.available) return `${status.detail}${status.fix ? ` (fix: ${status.fix})` : ''}`;
  const native = status.kinds?.find((k) => k.kind === 'native');
  return native && !native.available ? (native.why ?? 'native functions do not run here') : undefined;
}

const hasCurl = existsSync('/usr/bin/curl') && existsSync('/bin/sh');
const goBootstrap = existsSync('/usr/bin/go') ? buildGoBootstrap() : undefined;

// ISOLA_RUNTIME_API_BACKENDS=process,gvisor runs only those setups (by isolation).
const only = process.env.ISOLA_RUNTIME_API_BACKENDS?.split(',');
for (const setup of SETUPS.filter((s) => !only || only.includes(s.isolation))) {
  const dataDir = join(root, setup.name.replace(/\W+/g, '-'));
  mkdirSync(dataDir);
  const skip = (await unavailable(setup, dataDir)) ?? false;

  describe(`Lambda custom runtimes on ${setup.name}`, { skip }, () => {
    let server: TestServer;
    let lambda: LambdaClient;
    /** The activation id the Lambda door answered the last Invoke with (x-isola-activation-id). */
    let lastActivationId: string | undefined;

    before(async () => {
      server = await TestServer.start({
        dataDir,
        env: {
          ISOLA_BACKENDS: setup.isolation,
          ISOLA_PREWARM: `${setup.isolation}:0`,
          ...setup.env,
        },
      });
      const [accessKeyId, secretAccessKey] = server.auth.split(':') as [string, string];
      lambda = new LambdaClient({
        endpoint: server.url,
        region: 'eu-west-1',
        credentials: { accessKeyId, secretAccessKey },
        maxAttempts: 1,
      });
      lambda.middlewareStack.add(
        (next) => async (args) => {
          const out = await next(args);
          const headers = (out.response as { headers?: Record<string, string> }).headers ?? {};
          lastActivationId = headers['x-isola-activation-id'];
          return out;
        },
        { step: 'deserialize', name: 'activationIdOfInvoke' },
      );
    });
    after(async () => {
      lambda?.destroy();
      await server?.dispose();
    });

    const create = (name: string, bootstrap: Uint8Array | string, variables: Record<string, string> = {}) =>
      lambda.send(
        new CreateFunctionCommand({
          FunctionName: name,
          Runtime: 'provided.al2023',
          Role: 'arn:aws:iam::000000000000:role/ignored',
          Handler: 'function.handler',
          Code: { ZipFile: zipOf([{ name: 'bootstrap', data: bootstrap, mode: 0o100755 }]) },
          MemorySize: 128,
          Timeout: 30,
          Environment: { Variables: { ISOLA_ISOLATION: setup.isolation, GREETING: 'hello from the environment', ...variables } },
        }),
      );
    const invoke = (name: string, event: unknown, clientContext?: unknown) =>
      lambda.send(
        new InvokeCommand({
          FunctionName: name,
          Payload: Buffer.from(JSON.stringify(event)),
          LogType: 'Tail',
          ...(clientContext ? { ClientContext: Buffer.from(JSON.stringify(clientContext)).toString('base64') } : {}),
        }),
      );
    const logsOf = (out: { LogResult?: string | undefined }) => Buffer.from(out.LogResult ?? '', 'base64').toString('utf8');

    for (const flavour of setup.bootstraps) {
      const code = flavour === 'go' ? goBootstrap : SHELL_BOOTSTRAP;
      const why = code === undefined ? 'go is not installed' : flavour === 'shell' && !hasCurl ? 'no curl or /bin/sh' : false;
      describe(`a ${flavour === 'go' ? 'static Go' : 'shell (curl)'} bootstrap`, { skip: why }, () => {
        const fn = `custom-${flavour}`;
        before(async () => {
          await create(fn, code as Uint8Array | string);
          await create(`${fn}-init-error`, code as Uint8Array | string, { FAIL_INIT: '1' });
        });

        it('answers through /response, stays warm between invocations, and sees what Lambda gives it', async () => {
          const first = await invoke(fn, { who: 'Ada' }, { custom: { app: 'tést ✓' } });
          assert.equal(first.StatusCode, 200);
          assert.equal(first.FunctionError, undefined, Buffer.from(first.Payload ?? []).toString());
          const answer = decode(first.Payload);
          assert.equal(answer.count, 1);
          assert.deepEqual(answer.event, { who: 'Ada', GREETING: 'hello from the environment' });
          assert.ok(lastActivationId);
          assert.equal(answer.requestId, lastActivationId);
          const env = answer.env as Record<string, string>;
          assert.equal(env.handler, 'function.handler');
          assert.equal(env.greeting, 'hello from the environment');
          assert.match(logsOf(first), new RegExp(`invocation 1: ${lastActivationId}`));

          // The same process, its memory intact: the count goes on.
          const second = await invoke(fn, { who: 'Grace' });
          assert.equal(second.FunctionError, undefined, Buffer.from(second.Payload ?? []).toString());
          const again = decode(second.Payload);
          assert.equal(again.count, 2);
          assert.equal(again.requestId, lastActivationId);
          assert.notEqual(again.requestId, answer.requestId);

          if (flavour === 'go') {
            assert.match(String(answer.arn), new RegExp(`^arn:aws:lambda:[^:]+:[^:]+:function:${fn}$`));
            assert.match(String(answer.trace), /^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$/);
            // The client context of a synchronous Invoke, as JSON; none when the call had none.
            assert.deepEqual(JSON.parse(String(answer.context)), { custom: { app: 'tést ✓' } });
            assert.equal(again.context, '');
            const deadline = Number(answer.deadline);
            assert.ok(deadline > Date.now() && deadline <= Date.now() + 31_000, `deadline ${answer.deadline}`);
            // The Runtime API is the sandbox's own: on its loopback, which the host does not share
            // (the process backend has a network namespace of its own only when run as root).
            assert.match(env.runtimeApi ?? '', /^127\.0\.0\.1:\d+$/);
            if (setup.isolation !== 'process' || process.getuid?.() === 0) {
              await assert.rejects(
                fetch(`http://${env.runtimeApi}/2018-06-01/runtime/invocation/next`, { signal: AbortSignal.timeout(5000) }),
                (error: Error & { cause?: { code?: string } }) => {
                  assert.equal(error.cause?.code, 'ECONNREFUSED', String(error.cause ?? error));
                  return true;
                },
              );
            }
            assert.deepEqual(
              { ...env, taskRoot: env.taskRoot ? 'set' : '', runtimeApi: 'set' },
              {
                handler: 'function.handler',
                name: fn,
                version: '1',
                memory: '128',
                region: env.region,
                taskRoot: 'set',
                greeting: 'hello from the environment',
                runtimeApi: 'set',
              },
            );
            assert.ok(env.region);
            // Unknown request ids are 400 and unknown paths 404, as Lambda answers; init/error
            // after the start is a state the runtime cannot go back to (403).
            assert.deepEqual(answer.refusals, { unknownId: 400, unknownPath: 404, lateInitError: 403 });
          }
        });

        it("reports a function's error through /error as Lambda's Unhandled error, with its payload", async () => {
          const out = await invoke(fn, { action: 'fail' });
          assert.equal(out.StatusCode, 200);
          assert.equal(out.FunctionError, 'Unhandled');
          assert.deepEqual(decode(out.Payload), {
            errorMessage: 'it failed',
            errorType: 'Handler.Failed',
            stackTrace: [flavour === 'go' ? 'main.go' : 'bootstrap'],
          });
          // The runtime lives on.
          assert.equal((await invoke(fn, {})).FunctionError, undefined);
        });

        it('ends an invocation whose bootstrap dies with its exit, and starts a new bootstrap for the next', async () => {
          const crashed = await invoke(fn, { action: 'crash' });
          assert.equal(crashed.FunctionError, 'Unhandled');
          const error = decode(crashed.Payload);
          assert.equal(error.errorType, 'Runtime.ExitError');
          assert.match(String(error.errorMessage), /exited with code 3 during the invocation: crashing on purpose/);
          assert.match(logsOf(crashed), /crashing on purpose/);

          const recovered = await invoke(fn, { who: 'again' });
          assert.equal(recovered.FunctionError, undefined, Buffer.from(recovered.Payload ?? []).toString());
          assert.equal(decode(recovered.Payload).count, 1, 'a fresh bootstrap counts from 1');
        });

        it('fails the invocation with the error a bootstrap reports through /init/error', async () => {
          const out = await invoke(`${fn}-init-error`, {});
          assert.equal(out.StatusCode, 200);
          assert.equal(out.FunctionError, 'Unhandled');
          const error = decode(out.Payload);
          assert.match(
            String(error.errorMessage),
            /The bootstrap reported an initialization error: Config\.Missing: missing configuration/,
          );
        });

        if (flavour === 'go') {
          it("refuses a response over Lambda's 6 MB with 413 and fails the invocation", async () => {
            const out = await invoke(fn, { action: 'huge' });
            assert.equal(out.FunctionError, 'Unhandled');
            assert.equal(decode(out.Payload).errorType, 'Function.ResponseSizeTooLarge');
            assert.equal((await invoke(fn, {})).FunctionError, undefined);
          });
        }
      });
    }

    if (setup.isolation === 'process') {
      it('refuses a provided zip with neither bootstrap nor exec (400, nothing stored)', async () => {
        await assert.rejects(
          lambda.send(
            new CreateFunctionCommand({
              FunctionName: 'custom-empty',
              Runtime: 'provided.al2023',
              Role: 'arn:aws:iam::000000000000:role/ignored',
              Handler: 'function.handler',
              Code: { ZipFile: zipOf([{ name: 'handler.sh', data: '#!/bin/sh\n' }]) },
            }),
          ),
          (error: unknown) => {
            assert.ok(error instanceof InvalidParameterValueException, String(error));
            assert.equal(error.$metadata.httpStatusCode, 400);
            assert.match(error.message, /bootstrap/);
            return true;
          },
        );
        assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/custom-empty')).status, 404);
      });

      it('refuses a client context that is not a base64 JSON object with a 400', { skip: !goBootstrap }, async () => {
        for (const ClientContext of ['not base64!', Buffer.from('[1]').toString('base64'), 'A'.repeat(3584)]) {
          await assert.rejects(
            lambda.send(new InvokeCommand({ FunctionName: 'custom-go', Payload: Buffer.from('{}'), ClientContext })),
            (error: unknown) => {
              assert.ok(error instanceof InvalidRequestContentException, String(error));
              assert.match(error.message, /X-Amz-Client-Context/);
              return true;
            },
          );
        }
      });

      it('runs the same zip as an OpenWhisk native action, its main the handler', { skip: !goBootstrap }, async () => {
        const zip = zipOf([{ name: 'bootstrap', data: goBootstrap as Uint8Array, mode: 0o100755 }]);
        const put = await server.request('PUT', '/api/v1/namespaces/_/actions/ow-custom?overwrite=true', {
          exec: { kind: 'native', code: zip.toString('base64'), binary: true, main: 'function.handler' },
          annotations: [{ key: 'isolation', value: 'process' }],
        });
        assert.equal(put.status, 200, JSON.stringify(put.body));
        const res = await server.request<ActivationRecord>('POST', '/api/v1/namespaces/_/actions/ow-custom?blocking=true', {
          who: 'OpenWhisk',
        });
        assert.equal(res.body.response.status, 'success', JSON.stringify(res.body));
        const result = res.body.response.result as Record<string, unknown>;
        assert.equal(result.requestId, res.body.activationId);
        assert.deepEqual(result.event, { who: 'OpenWhisk' });
        assert.equal((result.env as Record<string, string>).handler, 'function.handler');

        const failed = await server.request<ActivationRecord>('POST', '/api/v1/namespaces/_/actions/ow-custom?blocking=true', {
          action: 'fail',
        });
        assert.equal(failed.body.response.status, 'application error');
        assert.deepEqual(failed.body.response.result, {
          error: { errorMessage: 'it failed', errorType: 'Handler.Failed', stackTrace: ['main.go'] },
        });
      });
    }
  });
}
