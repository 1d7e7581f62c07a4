/**
 * The peers Isola is measured against in the same run: the same work done without the platform
 * (a bare runtime CLI, a bare QEMU boot, a bare `node` start, a bare `node:http` server) and by
 * another platform (Cloudflare's `workerd`).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, Socket } from 'node:net';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { encodeFrame, FrameDecoder, type FunctionPackage, type GuestMessage } from '../../../src/guest/protocol.js';
import type { MicrovmImage } from '../../../src/images/microvm-image.js';
import type { NodeRootfs } from '../../../src/images/node-rootfs.js';
import { CONTAINER_PROFILES, containerHeapMb } from '../../../src/sandbox/container/container-backend.js';
import { containerSpec } from '../../../src/sandbox/container/oci-spec.js';
import type { RuntimeName } from '../../../src/sandbox/container/runtime.js';
import { heapFor } from '../../../src/sandbox/microvm/microvm-backend.js';
import type { Accelerator } from '../../../src/sandbox/microvm/qemu.js';
import { qemuArguments } from '../../../src/sandbox/microvm/qemu.js';
import { QEMU } from '../../../src/sandbox/microvm/vm.js';
import { ociRuntime } from '../../../src/sandbox/registry.js';
import { removeCgroup } from '../../../src/sandbox/sweep.js';
import { freePort } from '../../../test/helpers/server-process.js';
import { KeepAliveClient } from './http.js';
import { cgroupPids, processesNaming } from './pss.js';
import { time } from './stats.js';

/** A JavaScript function (`function main(params)`) and the parameters to call it with. */
export interface PeerFunction {
  code: string;
  params: Record<string, unknown>;
  /** A function of another kind: the package the agent unpacks and runs instead of `code`. */
  package?: FunctionPackage;
  main?: string;
  memoryMb?: number;
}

/**
 * Time from spawning a command that runs the guest agent until the function's result comes back:
 * the init and run frames are written at once, as a caller with no platform would; a package
 * (another language) must be unpacked and its process started first, so its run goes on `ready`.
 */
export function bareAgentInvoke(command: string, args: string[], fn: PeerFunction): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'ignore'], env: { PATH: '/usr/bin:/bin' } });
    const decoder = new FrameDecoder<GuestMessage>();
    let done = false;
    child.stdout.on('data', (chunk: Buffer) => {
      for (const message of decoder.push(chunk)) {
        if (done) return;
        if (message.type === 'ready' && fn.package) sendRun();
        else if (message.type === 'result') {
          done = true;
          resolve(performance.now() - started);
          child.kill('SIGKILL');
        } else if (message.type === 'error' || message.type === 'initError') {
          done = true;
          reject(new Error(`the function failed: ${JSON.stringify(message)}`));
          child.kill('SIGKILL');
        }
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (!done) reject(new Error(`${command} exited with ${code} before answering`));
    });
    child.stdin.on('error', () => {
      // the child went away; 'exit' says so
    });
    child.stdin.write(
      encodeFrame({
        type: 'init',
        code: fn.code,
        main: fn.main ?? 'main',
        binary: false,
        env: {},
        ...(fn.package ? { package: fn.package, memoryMb: fn.memoryMb ?? 256, concurrency: 1 } : {}),
      }),
    );
    const sendRun = () =>
      child.stdin.write(encodeFrame({ type: 'run', id: 'bare', params: fn.params, deadline: Date.now() + 120_000, env: {} }));
    if (!fn.package) sendRun();
  });
}

/** A bare `node` process running the guest agent: the floor under every Node.js backend. */
export async function bareNodeStart(image: NodeRootfs, fn: PeerFunction, count: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    samples.push(await bareAgentInvoke(process.execPath, [join(image.path, image.agentPath), '--channel=stdio'], fn));
  }
  return samples;
}

/**
 * The runtime CLI alone: `run` of a bundle identical to the one the platform writes (same rootfs,
 * limits, seccomp profile and uid), timed from spawning the CLI to the function's result.
 */
export async function bareOciRun(
  name: RuntimeName,
  image: NodeRootfs,
  workDir: string,
  fn: PeerFunction,
  count: number,
  memoryMb = 256,
  /** Numbers the containers from here, for callers that take one sample at a time. */
  firstIndex = 0,
): Promise<number[]> {
  const runtime = ociRuntime(name, join(workDir, `state-${name}`));
  const profile = CONTAINER_PROFILES[name === 'runsc' ? 'gvisor' : 'container'];
  const samples: number[] = [];
  for (let i = firstIndex; i < firstIndex + count; i++) {
    const id = `bare-${name}-${process.pid}-${i}`;
    const bundle = join(workDir, id);
    mkdirSync(bundle, { recursive: true });
    const spec = containerSpec({
      rootfs: image.path,
      args: [image.nodePath, `--max-old-space-size=${containerHeapMb(memoryMb)}`, image.agentPath, '--channel=stdio'],
      memoryMb,
      cgroupsPath: `/isola/${id}`,
      uid: 65534,
      ...profile,
    });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const [command, args] = runtime.commandLine(['run', '--bundle', bundle, id]);
    try {
      samples.push(await bareAgentInvoke(command, args, fn));
    } finally {
      await runtime.kill(id);
      await runtime.delete(id);
      rmSync(bundle, { recursive: true, force: true });
    }
  }
  return samples;
}

/** A bare QEMU boot of the microVM image, timed from spawning QEMU until the guest agent says hello. */
export async function bareQemuBoot(
  image: MicrovmImage,
  accelerator: Accelerator,
  workDir: string,
  count: number,
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const dir = join(workDir, `qemu-boot-${process.pid}-${i}`);
    mkdirSync(dir, { recursive: true });
    const args = qemuArguments({
      image,
      machine: 'microvm',
      accelerator,
      memoryMb: 256,
      heapMb: 121,
      dir,
      ram: { path: join(dir, 'ram'), shared: false },
      incoming: false,
    });
    const started = performance.now();
    const qemu = spawn(QEMU, args, { stdio: 'ignore' });
    try {
      samples.push(
        await new Promise<number>((resolve, reject) => {
          const deadline = Date.now() + 180_000;
          const tryConnect = () => {
            if (Date.now() > deadline) return reject(new Error('the guest did not say hello within 180 s'));
            const socket = connect(join(dir, 'agent.sock'));
            socket.once('data', () => {
              resolve(performance.now() - started);
              socket.destroy();
            });
            socket.once('error', () => setTimeout(tryConnect, 5));
          };
          tryConnect();
          qemu.once('exit', () => reject(new Error('QEMU exited during boot')));
        }),
      );
    } finally {
      if (qemu.exitCode === null) {
        const exited = new Promise((resolve) => qemu.once('exit', resolve));
        qemu.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return samples;
}

export interface LoadResult {
  requestsPerSecond: number;
  /** Requests completed in the window. */
  requests: number;
  latencyMs: { p50: number; p99: number };
  errors: number;
}

/** Closed-loop load: `connections` clients sending the same POST back to back for `seconds`. */
export async function loadTest(
  url: string,
  headers: Record<string, string>,
  body: string,
  seconds: number,
  connections: number,
): Promise<LoadResult> {
  // A call may take longer under load than autocannon's default 10 s timeout (an inference on an
  // emulated CPU): let one last the whole window.
  const result = await autocannon({
    url,
    method: 'POST',
    headers,
    body,
    connections,
    duration: seconds,
    timeout: Math.max(10, seconds),
  });
  // Completed requests over the window, not the mean of per-second samples rounded to an integer,
  // which reads 0 for a workload that completes less than one call a second.
  const perSecond = result.requests.total / Math.max(result.duration, seconds);
  return {
    requestsPerSecond: perSecond >= 100 ? Math.round(perSecond) : Math.round(perSecond * 100) / 100,
    requests: result.requests.total,
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99 },
    errors: result.errors + result.non2xx,
  };
}

/** A server running in a child process of ours, on 127.0.0.1. */
export interface PeerServer {
  url: string;
  /** Spawn to first successful response. */
  startMs: number;
  pid: number;
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Polls with POSTs until the server answers 200, and returns how long that took from `started`. */
async function firstResponse(
  url: string,
  body: string,
  started: number,
  child: ChildProcess,
  output: () => string,
): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: ${output().slice(-2000)}`);
    try {
      const response = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      await response.text();
      if (response.ok) return performance.now() - started;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no answer from ${url} within 60 s: ${output().slice(-2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Wraps a `main(params)` function as an HTTP handler body: params in as JSON, result out as JSON. */
const NODE_HTTP_SERVER = (fn: PeerFunction, port: number) => `
${fn.code}
const http = require('node:http');
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', async () => {
    const result = await main(body ? JSON.parse(body) : {});
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(result));
  });
}).listen(${port}, '127.0.0.1');`;

/** A bare `node:http` server running the function in its own process: no platform at all. */
export async function startNodeHttp(fn: PeerFunction): Promise<PeerServer> {
  const port = await freePort();
  return spawnPeer(process.execPath, ['-e', NODE_HTTP_SERVER(fn, port)], port, fn);
}

/**
 * Starts a peer server listening on `port` of 127.0.0.1 and waits for its first answer to the
 * function's params. The peer is stopped (and `cleanup` run) by `stop`, or when it never answers.
 */
async function spawnPeer(
  command: string,
  args: string[],
  port: number,
  fn: PeerFunction,
  options: { cwd?: string; cleanup?: () => void } = {},
): Promise<PeerServer> {
  const started = performance.now();
  const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const url = `http://127.0.0.1:${port}/`;
  const stop = async () => {
    await stopChild(child);
    options.cleanup?.();
  };
  try {
    const startMs = await firstResponse(url, JSON.stringify(fn.params), started, child, () => output);
    return { url, startMs, pid: child.pid ?? 0, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * The least a multi-tenant host built on this project's stack does for a warm call: `node:http`,
 * the function in an isolated-vm isolate of its own called synchronously under a time limit (one
 * entry a call, the result serialised inside the isolate), a record of the call (a time-ordered
 * id, as Isola's) group-committed to SQLite every `windowMs`, and the answers of one round of the
 * event loop written together at its end (as Isola's server does). No routing, credentials,
 * scheduling, limits on logs or results, metrics or keep-alive: what is left of a platform once
 * everything that can be taken away is, and so a bound for what Isola's server can reach here.
 */
const STACK_FLOOR_SERVER = (fn: PeerFunction, port: number, file: string, windowMs: number) => `
const http = require('node:http');
const ivm = require('isolated-vm');
const Database = require('better-sqlite3');
const { randomUUID } = require('node:crypto');
const isolate = new ivm.Isolate({ memoryLimit: 128 });
const context = isolate.createContextSync();
context.evalSync(${JSON.stringify(`${fn.code}\nglobalThis.call = (json) => JSON.stringify(main(JSON.parse(json)));`)});
const call = context.global.getSync('call', { reference: true });
const db = new Database(${JSON.stringify(file)});
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec('CREATE TABLE records (id TEXT PRIMARY KEY, start INTEGER, end INTEGER, result TEXT)');
const insert = db.prepare('INSERT INTO records VALUES (?, ?, ?, ?)');
const commit = db.transaction((rows) => { for (const row of rows) insert.run(row); });
let records = [];
let committing;
let answers = [];
let answering;
const newId = () => Date.now().toString(16).padStart(12, '0') + randomUUID().replaceAll('-', '').slice(12);
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const start = Date.now();
    const result = call.applySync(undefined, [body || '{}'], { timeout: 10 });
    records.push([newId(), start, Date.now(), result]);
    committing ??= setTimeout(() => { committing = undefined; const rows = records; records = []; commit(rows); }, ${windowMs});
    res.setHeader('content-type', 'application/json');
    answers.push([res, result]);
    answering ??= setImmediate(() => { answering = undefined; const all = answers; answers = []; for (const [r, b] of all) r.end(b); });
  });
}).listen(${port}, '127.0.0.1');`;

/** The stack floor above in its own process, its database in `workDir`. */
export async function startStackFloor(fn: PeerFunction, workDir: string, windowMs: number): Promise<PeerServer> {
  const port = await freePort();
  const file = join(workDir, `stack-floor-${port}.sqlite`);
  // Its modules resolved from the repository's own dependencies, run as the server runs them.
  const root = new URL('../../../', import.meta.url).pathname;
  return spawnPeer(process.execPath, ['--no-node-snapshot', '-e', STACK_FLOOR_SERVER(fn, port, file, windowMs)], port, fn, {
    cwd: root,
  });
}

/** Where npm put the workerd binary, if it did. */
export function workerdBinary(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    const module = require('workerd') as { default?: string };
    return typeof module.default === 'string' ? module.default : undefined;
  } catch {
    return undefined;
  }
}

const WORKERD_CONFIG = (port: number) => `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-23",
);
`;

/** The function as an ES module Worker: params from the request body, result as the JSON response. */
const WORKERD_WORKER = (fn: PeerFunction) => `${fn.code}
export default {
  async fetch(request) {
    const text = await request.text();
    return Response.json(await main(text ? JSON.parse(text) : {}));
  },
};
`;

/**
 * Cloudflare's workerd serving the function as a Worker: what the isolate backend is measured
 * against. `startMs` is process start to first response (workerd loads its workers at start-up).
 */
export async function startWorkerd(fn: PeerFunction, workDir: string): Promise<PeerServer> {
  const binary = workerdBinary();
  if (!binary) throw new Error('workerd is not installed (npm install)');
  const dir = join(workDir, `workerd-${process.pid}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  writeFileSync(join(dir, 'config.capnp'), WORKERD_CONFIG(port));
  writeFileSync(join(dir, 'worker.js'), WORKERD_WORKER(fn));
  return spawnPeer(binary, ['serve', join(dir, 'config.capnp')], port, fn, {
    cwd: dir,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  });
}

/** Sequential warm requests to a peer server over one keep-alive connection. */
export async function warmLatencies(url: string, body: unknown, count: number): Promise<number[]> {
  const client = new KeepAliveClient(url);
  const path = new URL(url).pathname;
  try {
    for (let i = 0; i < Math.max(5, count / 10); i++) await client.send('POST', path, body);
    const samples: number[] = [];
    for (let i = 0; i < count; i++) samples.push(await time(() => client.send('POST', path, body)));
    return samples;
  } finally {
    client.close();
  }
}

/** What a bare peer of an idle instance is: a runtime CLI's container, a `node` process, a QEMU guest. */
export type BareIdleKind = 'node' | RuntimeName | 'qemu';

/** Idle instances started with no platform: their host processes, and how to stop them. */
export interface BareIdleGroup {
  kind: BareIdleKind;
  count: number;
  /** Every host process the instances consist of now. */
  pids(): number[];
  stop(): Promise<void>;
}

/** Writes the agent's init and run frames and resolves on the function's result. */
function callAgent(
  input: NodeJS.WritableStream,
  output: NodeJS.ReadableStream,
  fn: PeerFunction,
  exited: Promise<unknown>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder<GuestMessage>();
    let done = false;
    const onData = (chunk: Buffer) => {
      for (const message of decoder.push(chunk)) {
        if (done) return;
        if (message.type === 'result') {
          done = true;
          output.removeListener('data', onData);
          resolve();
        } else if (message.type === 'error' || message.type === 'initError') {
          done = true;
          reject(new Error(`the function failed: ${JSON.stringify(message)}`));
        }
      }
    };
    output.on('data', onData);
    void exited.then(() => {
      if (!done) reject(new Error('the instance exited before answering'));
    });
    input.write(encodeFrame({ type: 'init', code: fn.code, main: fn.main ?? 'main', binary: false, env: {} }));
    input.write(encodeFrame({ type: 'run', id: 'bare', params: fn.params, deadline: Date.now() + 120_000, env: {} }));
  });
}

/**
 * `count` idle `node` processes running the guest agent with the function loaded and called once,
 * as the process backend runs them (same heap flag), with no platform around them.
 */
async function bareIdleNode(image: NodeRootfs, fn: PeerFunction, count: number, memoryMb: number): Promise<BareIdleGroup> {
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map((child) => stopChild(child)));
  };
  try {
    for (let i = 0; i < count; i++) {
      const child = spawn(
        process.execPath,
        [`--max-old-space-size=${memoryMb}`, join(image.path, image.agentPath), '--channel=stdio'],
        { stdio: ['pipe', 'pipe', 'ignore'], env: { PATH: '/usr/bin:/bin' } },
      );
      children.push(child);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await callAgent(child.stdin as NodeJS.WritableStream, child.stdout as NodeJS.ReadableStream, fn, exited);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { kind: 'node', count, pids: () => children.flatMap((c) => (c.pid ? [c.pid] : [])), stop };
}

/**
 * `count` idle containers of a bundle identical to the one the platform writes (same rootfs,
 * agent, heap flag, limits, seccomp profile, an unprivileged uid each), started the way the
 * runtime leaves the least behind: `run --detach`, the container's stdin a FIFO of ours, so that
 * no runtime process stays with it. The function is loaded and called once, then left idle.
 */
async function bareIdleOci(
  name: RuntimeName,
  image: NodeRootfs,
  workDir: string,
  fn: PeerFunction,
  count: number,
  memoryMb: number,
): Promise<BareIdleGroup> {
  const runtime = ociRuntime(name, join(workDir, `state-${name}`));
  const profile = CONTAINER_PROFILES[name === 'runsc' ? 'gvisor' : 'container'];
  const started: { id: string; bundle: string; cgroupsPath: string; input: Socket; output: ChildProcess['stdout'] }[] = [];
  const stop = async () => {
    for (const container of started.splice(0)) {
      container.input.destroy();
      container.output?.destroy();
      await runtime.kill(container.id);
      await runtime.delete(container.id);
      await removeCgroup(container.cgroupsPath);
      rmSync(container.bundle, { recursive: true, force: true });
    }
  };
  try {
    for (let i = 0; i < count; i++) {
      const id = `bare-idle-${name}-${process.pid}-${Date.now()}-${i}`;
      const bundle = join(workDir, id);
      const cgroupsPath = `/isola/${id}`;
      mkdirSync(bundle, { recursive: true });
      const spec = containerSpec({
        rootfs: image.path,
        args: [image.nodePath, `--max-old-space-size=${containerHeapMb(memoryMb)}`, image.agentPath, '--channel=stdio'],
        memoryMb,
        cgroupsPath,
        uid: 65534 - i,
        ...profile,
      });
      writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
      const fifo = join(bundle, 'stdin');
      execFileSync('mkfifo', ['-m', '0600', fifo]);
      const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const writeFd = openSync(fifo, constants.O_WRONLY);
      const command = runtime.spawnContainer({ kind: 'run' }, id, bundle, join(bundle, 'container.pid'), readFd);
      closeSync(readFd);
      const input = new Socket({ fd: writeFd, readable: false, writable: true });
      started.push({ id, bundle, cgroupsPath, input, output: command.stdout });
      const exitCode = new Promise<number | null>((resolve) => command.once('exit', resolve));
      let errors = '';
      command.stderr?.on('data', (chunk: Buffer) => {
        errors += chunk.toString();
      });
      // The container's output closes when its last process is gone.
      const gone = new Promise((resolve) => command.stdout?.once('close', resolve));
      const answered = callAgent(input, command.stdout as NodeJS.ReadableStream, fn, gone);
      if ((await exitCode) !== 0) throw new Error(`${name} run --detach failed: ${errors.trim().slice(-300)}`);
      await answered;
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    kind: name,
    count,
    // The processes in each container's cgroup (runsc's sandbox and gofer among them) and any of
    // the runtime's own outside it that name the container.
    pids: () => [...new Set(started.flatMap((c) => [...cgroupPids(c.cgroupsPath), ...processesNaming(c.id)]))],
    stop,
  };
}

/**
 * `count` idle QEMU guests of the microVM image, booted (no snapshot) with the same memory and
 * heap as the platform's, the function loaded through the agent's socket and called once.
 */
async function bareIdleQemu(
  image: MicrovmImage,
  accelerator: Accelerator,
  workDir: string,
  fn: PeerFunction,
  count: number,
  memoryMb: number,
): Promise<BareIdleGroup> {
  const guests: { qemu: ChildProcess; socket?: Socket; dir: string }[] = [];
  const stop = async () => {
    for (const guest of guests.splice(0)) {
      guest.socket?.destroy();
      await stopChild(guest.qemu);
      rmSync(guest.dir, { recursive: true, force: true });
    }
  };
  try {
    for (let i = 0; i < count; i++) {
      const dir = join(workDir, `qemu-idle-${process.pid}-${Date.now()}-${i}`);
      mkdirSync(dir, { recursive: true });
      const args = qemuArguments({
        image,
        machine: 'microvm',
        accelerator,
        memoryMb,
        heapMb: heapFor(memoryMb),
        dir,
        ram: { path: join(dir, 'ram'), shared: false },
        incoming: false,
      });
      const qemu = spawn(QEMU, args, { stdio: 'ignore' });
      const guest: { qemu: ChildProcess; socket?: Socket; dir: string } = { qemu, dir };
      guests.push(guest);
      const exited = new Promise((resolve) => qemu.once('exit', resolve));
      guest.socket = await new Promise<Socket>((resolve, reject) => {
        const deadline = Date.now() + 300_000;
        void exited.then(() => reject(new Error('QEMU exited during boot')));
        const tryConnect = () => {
          if (Date.now() > deadline) return reject(new Error('the guest did not say hello within 300 s'));
          // QEMU accepts the connection before the guest runs: the agent's hello says it is up.
          const socket = connect(join(dir, 'agent.sock'));
          socket.once('data', () => resolve(socket));
          socket.once('error', () => setTimeout(tryConnect, 20));
        };
        tryConnect();
      });
      await callAgent(guest.socket, guest.socket, fn, exited);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { kind: 'qemu', count, pids: () => guests.flatMap((g) => (g.qemu.pid ? [g.qemu.pid] : [])), stop };
}

/** Starts `count` idle bare instances of a kind (see BareIdleKind), each having run the function once. */
export async function startBareIdle(
  kind: BareIdleKind,
  options: {
    image: NodeRootfs;
    workDir: string;
    fn: PeerFunction;
    count: number;
    memoryMb?: number;
    microvm?: { image: MicrovmImage; accelerator: Accelerator };
  },
): Promise<BareIdleGroup> {
  const memoryMb = options.memoryMb ?? 256;
  if (kind === 'node') return bareIdleNode(options.image, options.fn, options.count, memoryMb);
  if (kind === 'qemu') {
    if (!options.microvm) throw new Error('a bare QEMU guest needs the microVM image');
    return bareIdleQemu(options.microvm.image, options.microvm.accelerator, options.workDir, options.fn, options.count, memoryMb);
  }
  return bareIdleOci(kind, options.image, options.workDir, options.fn, options.count, memoryMb);
}
