/**
 * The isolation battery: a fixed set of escape attempts, deployed as ordinary functions on each
 * backend. Whether an attack was contained is judged from evidence on the host side (a canary's
 * content in the result or logs, a file appearing on the host, a connection reaching a listener,
 * a neighbour's latency, processes left behind), never from the function's own say-so.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { availableParallelism, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Isolation } from '../../../src/core/kinds.js';
import { EGRESS_ISOLATIONS } from '../../../src/core/network-policy.js';
import type { ActivationRecord } from '../../../src/core/types.js';
import type { ServerProcess } from '../../../test/helpers/server-process.js';
import { wat } from '../../../test/helpers/wat.js';
import type { KeepAliveClient } from './http.js';
import { pause, summarize, time } from './stats.js';

export const ATTACKS = [
  {
    name: 'read-host-files',
    description: "reads a private file in the server's data dir, a world-readable host file and /etc/shadow",
  },
  { name: 'list-host-processes', description: "lists /proc and looks for the server's command line" },
  { name: 'reach-network', description: "connects to a listener on the host's 127.0.0.1 and to the server's port" },
  {
    name: 'reach-network-egress',
    description:
      "the same with network=egress, also on every host address and the sandbox's gateway: outside yes, the host never",
  },
  { name: 'write-host-files', description: "writes into /, the host's /tmp and the server's data dir" },
  {
    name: 'fork-bomb',
    description: 'starts processes without bound for 3 s; a neighbour must be served and nothing may survive',
  },
  { name: 'memory-bomb', description: 'allocates 4x its memory limit, on the heap and outside it; a neighbour must be served' },
  { name: 'cpu-hog', description: 'one busy loop per host core; a neighbour must stay within 5x its latency' },
  { name: 'env-leak', description: "looks for a secret in the server's environment" },
  { name: 'proc-leak', description: "reads the host's /proc/1 and the server's /proc entries" },
] as const;

export type AttackName = (typeof ATTACKS)[number]['name'];

export interface IsolationResult {
  backend: string;
  attack: AttackName;
  /** Nothing reached the host or a neighbour. */
  contained: boolean;
  /** False where the backend offers no call to even try (e.g. starting a process from WASI). */
  attempted: boolean;
  note: string;
}

/** Host-side bait shared by every backend in a run. */
export interface Bait {
  secret: string;
  privateToken: string;
  privateCanary: string;
  publicToken: string;
  publicCanary: string;
  shadowLine: string;
  hostInitCmdline: string;
  listener: Server;
  listenerPort: number;
  connections: number;
}

const MEMORY_MB = 256;
const token = () => randomBytes(12).toString('hex');

/**
 * Plants the canaries: a private file in the data dir, a world-readable one in the host's /tmp,
 * and a TCP listener on 127.0.0.1 that counts who reaches it. `secret` goes into the server's
 * environment.
 */
export async function plantBait(dataDir: string): Promise<Bait> {
  const privateToken = `private-${token()}`;
  const publicToken = `public-${token()}`;
  const privateCanary = join(dataDir, 'canary-private.txt');
  const publicCanary = `/tmp/isola-canary-public-${process.pid}.txt`;
  writeFileSync(privateCanary, privateToken, { mode: 0o600 });
  writeFileSync(publicCanary, publicToken);
  chmodSync(publicCanary, 0o644);
  let shadowLine = '';
  try {
    shadowLine = readFileSync('/etc/shadow', 'utf8').split('\n')[0] ?? '';
  } catch {
    // not readable by us either
  }
  let hostInitCmdline = '';
  try {
    hostInitCmdline = readFileSync('/proc/1/cmdline', 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    // hidden from us
  }
  const bait: Bait = {
    secret: `secret-${token()}`,
    privateToken,
    privateCanary,
    publicToken,
    publicCanary,
    shadowLine,
    hostInitCmdline,
    listener: createServer(),
    listenerPort: 0,
    connections: 0,
  };
  bait.listener.on('connection', (socket) => {
    bait.connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => bait.listener.listen(0, '127.0.0.1', resolve));
  const address = bait.listener.address();
  bait.listenerPort = typeof address === 'object' && address ? address.port : 0;
  return bait;
}

export async function removeBait(bait: Bait): Promise<void> {
  rmSync(bait.privateCanary, { force: true });
  rmSync(bait.publicCanary, { force: true });
  await new Promise((resolve) => bait.listener.close(resolve));
}

// ---- The attacks as JavaScript functions (every Node.js backend and the isolate) ----

/** Adds the host's end of the sandbox's own link (the address before its own) to the targets. */
const EGRESS_GATEWAY = `async function main(p) {
  const own = Object.values(require('os').networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
  if (own) {
    const gateway = own.address.replace(/\\d+$/, (last) => String(Number(last) - 1));
    p = { targets: [...p.targets, ...p.ports.map((port) => ({ host: gateway, port }))] };
  }`;

/** The body of reach-network's main(p): connects to each of p.targets. */
const REACH_NETWORK = `  const net = load('net');
  if (net.unavailable) {
    if (typeof fetch !== 'function') return { attempted: false, why: net.unavailable };
    const out = {};
    for (const t of p.targets) { try { await fetch('http://' + t.host + ':' + t.port + '/'); out[t.host + ':' + t.port] = 'connected'; } catch (e) { out[t.host + ':' + t.port] = 'error: ' + e.message; } }
    return out;
  }
  const out = {};
  for (const t of p.targets) {
    out[t.host + ':' + t.port] = await new Promise((resolve) => {
      const s = net.connect(t.port, t.host);
      const timer = setTimeout(() => { s.destroy(); resolve('timeout'); }, 2000);
      s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve('connected'); });
      s.once('error', (e) => { clearTimeout(timer); resolve('error: ' + e.code); });
    });
  }
  return out;
}`;

/** Loads a Node.js module, or says why it cannot (the isolate has none). */
const LOAD = `function load(name) { try { return require(name); } catch (e) { return { unavailable: String(e && e.message || e) }; } }`;

const JS = {
  'read-host-files': `${LOAD}
function main(p) {
  const fs = load('fs'); if (fs.unavailable) return { attempted: false, why: fs.unavailable };
  const out = {};
  for (const path of p.paths) { try { out[path] = fs.readFileSync(path, 'utf8').slice(0, 300); } catch (e) { out[path] = 'error: ' + (e.code || e.message); } }
  return out;
}`,
  'list-host-processes': `${LOAD}
function main() {
  const fs = load('fs'); if (fs.unavailable) return { attempted: false, why: fs.unavailable };
  const seen = [];
  let entries = [];
  try { entries = fs.readdirSync('/proc'); } catch (e) { return { error: e.code }; }
  for (const e of entries) if (/^\\d+$/.test(e)) { try { seen.push(e + ' ' + fs.readFileSync('/proc/' + e + '/cmdline', 'utf8').replace(/\\0/g, ' ').slice(0, 400)); } catch {} }
  return { count: seen.length, processes: seen };
}`,
  'reach-network': `${LOAD}
async function main(p) {
${REACH_NETWORK}`,
  'reach-network-egress': `${LOAD}
${EGRESS_GATEWAY}
${REACH_NETWORK}`,
  'write-host-files': `${LOAD}
function main(p) {
  const fs = load('fs'); if (fs.unavailable) return { attempted: false, why: fs.unavailable };
  const out = {};
  for (const path of p.paths) { try { fs.writeFileSync(path, p.token); out[path] = 'written'; } catch (e) { out[path] = 'error: ' + (e.code || e.message); } }
  return out;
}`,
  'fork-bomb': `${LOAD}
async function main(p) {
  const cp = load('child_process'); if (cp.unavailable) return { attempted: false, why: cp.unavailable };
  let started = 0, failed = 0, lastError = '';
  const until = Date.now() + p.ms;
  while (Date.now() < until) {
    try {
      const child = cp.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', p.marker], { detached: true, stdio: 'ignore' });
      child.on('error', (e) => { failed++; lastError = e.code || e.message; });
      child.unref();
      started++;
    } catch (e) { failed++; lastError = e.code || e.message; }
    if (started % 4 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 100));
  return { started: started - failed, failed, lastError };
}`,
  'memory-bomb': `function main(p) {
  const chunks = []; let total = 0; const size = 8 * 1024 * 1024;
  while (total < p.targetBytes) {
    chunks.push(p.mode === 'heap' ? new Array(size / 8).fill(total + 0.5) : new Uint8Array(size).fill(1));
    total += size;
  }
  return { allocatedMb: total / 1048576, chunks: chunks.length };
}`,
  'cpu-hog': `function main(p) { const until = Date.now() + p.ms; let spins = 0; while (Date.now() < until) spins++; return { spins }; }`,
  'env-leak': `function main() { return { env: typeof process === 'object' && process ? process.env : null, globals: Object.getOwnPropertyNames(globalThis) }; }`,
  'proc-leak': `${LOAD}
function main(p) {
  const fs = load('fs'); if (fs.unavailable) return { attempted: false, why: fs.unavailable };
  const out = {};
  for (const path of ['/proc/1/cmdline', '/proc/1/environ', '/proc/' + p.serverPid + '/cmdline', '/proc/' + p.serverPid + '/environ']) {
    try { out[path] = fs.readFileSync(path, 'utf8').replace(/\\0/g, ' ').slice(0, 4000); } catch (e) { out[path] = 'error: ' + (e.code || e.message); }
  }
  return out;
}`,
} satisfies Record<AttackName, string>;

const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';

// ---- The attacks as WebAssembly (WASI preview 1) probes ----

/** Bytes as a WAT string literal. */
const watBytes = (text: string) => `"${[...Buffer.from(text)].map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('')}"`;

const WASI = (name: string, params: string) =>
  `(import "wasi_snapshot_preview1" "${name}" (func $${name} (param ${params}) (result i32)))`;

// Memory layout of the probes: 0 iovec for writes, 8 iovec for reads, 16 count, 20 new fd,
// 64 the JSON written to stdout, 128 "OPENED ", 1024.. paths, 16384 a 16 KiB buffer.
const DONE_JSON = '{"probe":"done"}';
const PROBE_PRELUDE = `
  ${WASI('fd_write', 'i32 i32 i32 i32')}
  (memory (export "memory") 2)
  (data (i32.const 64) ${watBytes(DONE_JSON)})
  (data (i32.const 128) "OPENED ")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func $done (call $write (i32.const 1) (i32.const 64) (i32.const ${DONE_JSON.length})))`;

/**
 * Tries every path against every directory descriptor a module could have been given (3-9): on
 * success it logs "OPENED <path>" and then the file's content, a directory's listing, or writes
 * the token into it.
 */
function pathProbe(paths: readonly string[], mode: 'read' | 'write', written = ''): string {
  let offset = 1024;
  const data: string[] = [];
  const calls: string[] = [];
  for (const path of [...paths, written]) {
    data.push(`(data (i32.const ${offset}) ${watBytes(path)})`);
    if (path !== written) calls.push(`(call $try (local.get $dir) (i32.const ${offset}) (i32.const ${Buffer.byteLength(path)}))`);
    offset += Buffer.byteLength(path) + 8;
  }
  const tokenAt = offset - Buffer.byteLength(written) - 8;
  const oflags = mode === 'write' ? 9 : 0; // O_CREAT | O_TRUNC
  return `(module
  ${WASI('path_open', 'i32 i32 i32 i32 i32 i64 i64 i32 i32')}
  ${WASI('fd_read', 'i32 i32 i32 i32')}
  ${WASI('fd_readdir', 'i32 i32 i32 i64 i32')}
  ${PROBE_PRELUDE}
  ${data.join('\n  ')}
  (func $try (param $dir i32) (param $ptr i32) (param $len i32)
    (local $fd i32)
    (if (i32.eqz (call $path_open (local.get $dir) (i32.const 1) (local.get $ptr) (local.get $len) (i32.const ${oflags}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 20)))
      (then
        (local.set $fd (i32.load (i32.const 20)))
        (call $write (i32.const 2) (i32.const 128) (i32.const 7))
        (call $write (i32.const 2) (local.get $ptr) (local.get $len))
        ${
          mode === 'write'
            ? `(call $write (local.get $fd) (i32.const ${tokenAt}) (i32.const ${Buffer.byteLength(written)}))`
            : `(i32.store (i32.const 8) (i32.const 16384))
        (i32.store (i32.const 12) (i32.const 16384))
        (if (i32.eqz (call $fd_read (local.get $fd) (i32.const 8) (i32.const 1) (i32.const 16)))
          (then (call $write (i32.const 2) (i32.const 16384) (i32.load (i32.const 16)))))
        (if (i32.eqz (call $fd_readdir (local.get $fd) (i32.const 16384) (i32.const 16384) (i64.const 0) (i32.const 16)))
          (then (call $write (i32.const 2) (i32.const 16384) (i32.load (i32.const 16)))))`
        })))
  (func (export "_start")
    (local $dir i32)
    (local.set $dir (i32.const 3))
    (loop $dirs
      ${calls.join('\n      ')}
      (local.set $dir (i32.add (local.get $dir) (i32.const 1)))
      (br_if $dirs (i32.lt_u (local.get $dir) (i32.const 10))))
    (call $done)))`;
}

/** Every socket call WASI preview 1 has, on every descriptor 0-9: logs "OPENED" if one works. */
const SOCKET_PROBE = `(module
  ${WASI('sock_accept', 'i32 i32 i32')}
  ${WASI('sock_send', 'i32 i32 i32 i32 i32')}
  ${PROBE_PRELUDE}
  (func (export "_start")
    (local $fd i32)
    (loop $fds
      (if (i32.eqz (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 20)))
        (then (call $write (i32.const 2) (i32.const 128) (i32.const 7))))
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 4))
      (if (i32.eqz (call $sock_send (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 24)))
        (then (call $write (i32.const 2) (i32.const 128) (i32.const 7))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $fds (i32.lt_u (local.get $fd) (i32.const 10))))
    (call $done)))`;

/** The whole environment the module is given, to stderr. */
const ENV_PROBE = `(module
  ${WASI('environ_sizes_get', 'i32 i32')}
  ${WASI('environ_get', 'i32 i32')}
  ${PROBE_PRELUDE}
  (func (export "_start")
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (if (i32.le_u (i32.load (i32.const 20)) (i32.const 65536))
      (then
        (drop (call $environ_get (i32.const 4096) (i32.const 65536)))
        (call $write (i32.const 2) (i32.const 65536) (i32.load (i32.const 20)))))
    (call $done)))`;

const ESCAPED_JSON = '{"escaped":true}';

/** Grows memory 1 MiB at a time to `targetMb`; says so on stdout if it got there, traps if a grow fails. */
const GROW_PROBE = (targetMb: number) => `(module
  ${WASI('fd_write', 'i32 i32 i32 i32')}
  (memory (export "memory") 1)
  (data (i32.const 64) ${watBytes(ESCAPED_JSON)})
  (func (export "_start")
    (local $pages i32)
    (loop $grow
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (local.set $pages (i32.add (local.get $pages) (i32.const 16)))
      (br_if $grow (i32.lt_u (local.get $pages) (i32.const ${targetMb * 16}))))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const ${ESCAPED_JSON.length}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))`;

const LOOP_PROBE = '(module (memory (export "memory") 1) (func (export "_start") (loop $forever (br $forever))))';

// ---- Running the battery on one backend ----

export interface AttackTarget {
  backend: string;
  isolation: Isolation;
  server: ServerProcess;
  client: KeepAliveClient;
  serverPid: number;
  /** Shorter runs (quick mode). */
  quick: boolean;
}

type Invocation = { record: ActivationRecord; text: string; why?: string };

/** What a neighbour saw: the latencies of the calls that were served, and how many were not. */
export interface NeighbourCalls {
  latencies: number[];
  failed: number;
}

/**
 * A function beside an attack, called one call after another. A call counts as served only when
 * it succeeded: an answer that reports a failure (a 502, a 503) is a neighbour not served.
 */
export class Neighbour {
  constructor(
    private readonly client: KeepAliveClient,
    private readonly name: string,
  ) {}

  private async once(calls: NeighbourCalls): Promise<void> {
    let status = 0;
    const ms = await time(async () => {
      status = (await this.client.send('POST', `/api/v1/namespaces/_/actions/${this.name}?blocking=true&result=true`, {})).status;
    });
    if (status === 200) calls.latencies.push(ms);
    else calls.failed++;
  }

  /** `count` calls. */
  async sample(count: number): Promise<NeighbourCalls> {
    const calls: NeighbourCalls = { latencies: [], failed: 0 };
    for (let i = 0; i < count; i++) await this.once(calls);
    return calls;
  }

  /** Calls until `busy` settles. */
  async during(busy: Promise<unknown>): Promise<NeighbourCalls> {
    let finished = false;
    void busy.finally(() => {
      finished = true;
    });
    const calls: NeighbourCalls = { latencies: [], failed: 0 };
    while (!finished) await this.once(calls);
    return calls;
  }
}

/** True when every call was served, and there was at least one. */
export const served = (calls: NeighbourCalls) => calls.failed === 0 && calls.latencies.length > 0;

class Battery {
  private readonly names: string[] = [];
  private readonly wasm: boolean;

  constructor(
    private readonly target: AttackTarget,
    private readonly bait: Bait,
  ) {
    this.wasm = target.isolation === 'wasm';
  }

  private async deploy(
    name: string,
    code: string,
    timeoutMs: number,
    annotations: { key: string; value: unknown }[] = [],
  ): Promise<void> {
    const { server, isolation } = this.target;
    const exec = this.wasm ? { kind: 'wasm', code, binary: true } : { kind: 'nodejs:20', code };
    const response = await server.request('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
      exec,
      limits: { memory: MEMORY_MB, timeout: timeoutMs },
      annotations: [{ key: 'isolation', value: isolation }, ...annotations],
    });
    if (response.status !== 200) throw new Error(`deploying ${name} failed: ${response.status} ${JSON.stringify(response.body)}`);
    this.names.push(name);
  }

  private async invoke(name: string, params: unknown = {}): Promise<Invocation> {
    const response = await this.target.client.send('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, params);
    const record = JSON.parse(response.body) as ActivationRecord;
    const result = record.response?.result as { attempted?: boolean; why?: string } | undefined;
    const text = `${JSON.stringify(result ?? null)}\n${(record.logs ?? []).join('\n')}`;
    // The function says when it found no API to even try (the isolate has no require).
    return { record, text, ...(result?.attempted === false ? { why: String(result.why) } : {}) };
  }

  async cleanup(): Promise<void> {
    for (const name of this.names.splice(0)) await this.target.server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  }

  /** A warm hello on the same backend, called one call after another. */
  private async neighbour(): Promise<Neighbour> {
    const name = 'bench-neighbour';
    if (!this.names.includes(name)) {
      if (this.wasm)
        await this.deploy(name, await wat(`(module ${PROBE_PRELUDE} (func (export "_start") (call $done)))`), 30_000);
      else await this.deploy(name, HELLO, 30_000);
      await this.invoke(name);
    }
    return new Neighbour(this.target.client, name);
  }

  async run(attack: AttackName): Promise<Omit<IsolationResult, 'backend' | 'attack'>> {
    const bait = this.bait;
    const name = `bench-attack-${attack}`;
    switch (attack) {
      case 'read-host-files': {
        const paths = [bait.privateCanary, bait.publicCanary, '/etc/shadow'];
        if (this.wasm)
          await this.deploy(
            name,
            await wat(pathProbe([...paths, ...paths.map((p) => p.slice(1)), '../../../../etc/shadow'], 'read')),
            30_000,
          );
        else await this.deploy(name, JS[attack], 30_000);
        const invocation = await this.invoke(name, { paths });
        const { text } = invocation;
        const leaks = [
          text.includes(bait.privateToken) && "the data dir's private file",
          text.includes(bait.publicToken) && 'a world-readable host file',
          bait.shadowLine !== '' && text.includes(bait.shadowLine) && '/etc/shadow',
        ].filter(Boolean);
        return this.verdict(invocation, leaks as string[], 'no host file was read');
      }
      case 'list-host-processes': {
        if (this.wasm) await this.deploy(name, await wat(pathProbe(['/proc', 'proc', '../../../../proc'], 'read')), 30_000);
        else await this.deploy(name, JS[attack], 30_000);
        const invocation = await this.invoke(name);
        const { text } = invocation;
        const seen = /"count":(\d+)/.exec(text)?.[1];
        const leaks =
          text.includes(this.target.server.dataDir) || (this.wasm && text.includes('OPENED')) ? ["the server's process"] : [];
        return this.verdict(
          invocation,
          leaks,
          `the server's process was not visible${seen ? ` (${seen} processes seen)` : ''}`,
          seen ? `${seen} processes seen, the server's among them` : undefined,
        );
      }
      case 'reach-network': {
        const targets = [
          { host: '127.0.0.1', port: bait.listenerPort },
          { host: '127.0.0.1', port: Number(new URL(this.target.server.url).port) },
        ];
        if (this.wasm) await this.deploy(name, await wat(SOCKET_PROBE), 30_000);
        else await this.deploy(name, JS[attack], 30_000);
        const before = bait.connections;
        const invocation = await this.invoke(name, { targets });
        const { text } = invocation;
        await pause(200);
        const reached = bait.connections - before;
        const leaks = [
          reached > 0 && `${reached} connection(s) reached a host listener`,
          text.includes('"connected"') && 'connected to a host port',
          this.wasm && text.includes('OPENED') && 'a socket call worked',
        ].filter(Boolean) as string[];
        return this.verdict(invocation, leaks, 'no connection reached the host');
      }
      case 'reach-network-egress': {
        if (!EGRESS_ISOLATIONS.includes(this.target.isolation)) {
          return { contained: true, attempted: false, note: 'egress is refused at deploy under this isolation' };
        }
        const ports = [bait.listenerPort, Number(new URL(this.target.server.url).port)];
        // Every address the host has (its loopback and every interface's), on both ports.
        const hosts = Object.values(networkInterfaces())
          .flat()
          .flatMap((a) => (a && a.family === 'IPv4' ? [a.address] : []));
        const targets = hosts.flatMap((host) => ports.map((port) => ({ host, port })));
        await this.deploy(name, JS[attack], 30_000, [{ key: 'network', value: 'egress' }]);
        const before = bait.connections;
        const invocation = await this.invoke(name, { targets, ports });
        const { text } = invocation;
        await pause(200);
        const reached = bait.connections - before;
        const leaks = [
          reached > 0 && `${reached} connection(s) reached a host listener`,
          text.includes('"connected"') && 'connected to a host port',
        ].filter(Boolean) as string[];
        return this.verdict(invocation, leaks, `with egress, no connection reached the host (${targets.length + 2} tried)`);
      }
      case 'write-host-files': {
        const mark = token();
        const paths = [
          `/isola-escape-${mark}`,
          `/tmp/isola-escape-${mark}`,
          join(this.target.server.dataDir, `isola-escape-${mark}`),
        ];
        if (this.wasm)
          await this.deploy(name, await wat(pathProbe([...paths, ...paths.map((p) => p.slice(1))], 'write', mark)), 30_000);
        else await this.deploy(name, JS[attack], 30_000);
        const invocation = await this.invoke(name, { paths, token: mark });
        const landed = paths.filter((p) => existsSync(p));
        for (const p of landed) rmSync(p, { force: true });
        return this.verdict(
          invocation,
          landed.map((p) => `wrote ${p}`),
          'nothing was written on the host',
        );
      }
      case 'fork-bomb': {
        if (this.wasm) return { contained: true, attempted: false, note: 'WASI preview 1 has no call that starts a process' };
        const marker = `isola-fork-bomb-${token()}`;
        const neighbour = await this.neighbour();
        await this.deploy(name, JS[attack], 20_000);
        const bomb = this.invoke(name, { ms: 3000, marker });
        const during = await neighbour.during(bomb);
        const { text, why } = await bomb;
        await this.cleanupOne(name);
        const survivors = await waitForNone(() => processesWith(marker), 15_000);
        const after = await neighbour.sample(3);
        if (why) return { contained: true, attempted: false, note: `no process API: ${why}` };
        const started = /"started":(\d+)/.exec(text)?.[1];
        const failed = /"failed":(\d+)/.exec(text)?.[1];
        const lastError = /"lastError":"([^"]+)"/.exec(text)?.[1];
        const leaks = [
          survivors > 0 && `${survivors} processes survived the sandbox`,
          !served(during) &&
            `the neighbour was not served meanwhile (${during.failed} of ${during.failed + during.latencies.length} calls failed)`,
          !served(after) && `the neighbour was not served afterwards (${after.failed} of 3 calls failed)`,
        ].filter(Boolean) as string[];
        const servedNote = `the neighbour was served ${during.latencies.length} times meanwhile (p50 ${summarize(during.latencies).p50} ms)`;
        return {
          contained: leaks.length === 0,
          attempted: true,
          note: `${started ?? '?'} processes started, ${failed ?? '?'} refused${lastError ? ` (${lastError})` : ''}; ${leaks.length ? leaks.join('; ') : `${servedNote}; none survived`}`,
        };
      }
      case 'memory-bomb': {
        const neighbour = await this.neighbour();
        const targetMb = MEMORY_MB * 4;
        const outcomes: string[] = [];
        let escaped = false;
        for (const mode of this.wasm ? ['linear'] : ['heap', 'external']) {
          const fn = `${name}-${mode}`;
          if (this.wasm) await this.deploy(fn, await wat(GROW_PROBE(targetMb)), 30_000);
          else await this.deploy(fn, JS[attack], 30_000);
          const { record, text } = await this.invoke(fn, { mode, targetBytes: targetMb * 2 ** 20 });
          if (record.response.success || text.includes('"escaped":true')) {
            escaped = true;
            outcomes.push(`${mode}: allocated ${targetMb} MB with a ${MEMORY_MB} MB limit`);
          } else {
            outcomes.push(
              `${mode}: ${String((record.response.result as { error?: string } | undefined)?.error ?? record.response.status).slice(0, 120)}`,
            );
          }
        }
        const after = await neighbour.sample(3);
        if (!served(after)) outcomes.push(`the neighbour was not served afterwards (${after.failed} of 3 calls failed)`);
        return { contained: !escaped && served(after), attempted: true, note: outcomes.join('; ') };
      }
      case 'cpu-hog': {
        const neighbour = await this.neighbour();
        const hogs = availableParallelism();
        const ms = this.target.quick ? 2000 : 4000;
        if (this.wasm) await this.deploy(name, await wat(LOOP_PROBE), ms);
        else {
          await this.deploy(name, JS[attack], ms + 30_000);
          // One warm instance per hog first, so that the hogs run at once.
          await Promise.all(Array.from({ length: hogs }, () => this.invoke(name, { ms: 300 })));
        }
        const baselineCalls = await neighbour.sample(this.target.quick ? 20 : 50);
        const started = Promise.all(Array.from({ length: hogs }, () => this.invoke(name, { ms })));
        await pause(100);
        const duringCalls = await neighbour.during(started);
        const baseline = summarize(baselineCalls.latencies);
        const during = summarize(duringCalls.latencies);
        const limit = 5 * Math.max(1, baseline.p50);
        const ratio = Math.round((during.p50 / baseline.p50) * 10) / 10;
        const failed = baselineCalls.failed + duringCalls.failed;
        return {
          contained: served(baselineCalls) && served(duringCalls) && during.p50 <= limit,
          attempted: true,
          note: `${hogs} hogs: neighbour p50 ${baseline.p50} ms -> ${during.p50} ms (${ratio}x, limit 5x with a 1 ms floor; ${during.n} calls${failed ? `, ${failed} not served` : ''})`,
        };
      }
      case 'env-leak': {
        if (this.wasm) await this.deploy(name, await wat(ENV_PROBE), 30_000);
        else await this.deploy(name, JS[attack], 30_000);
        const invocation = await this.invoke(name);
        const { text } = invocation;
        return this.verdict(
          invocation,
          text.includes(bait.secret) ? ["the server's secret"] : [],
          "the server's environment was not visible",
        );
      }
      case 'proc-leak': {
        if (this.wasm)
          await this.deploy(
            name,
            await wat(pathProbe(['/proc/1/cmdline', 'proc/1/cmdline', '/proc/self/environ'], 'read')),
            30_000,
          );
        else await this.deploy(name, JS[attack], 30_000);
        const invocation = await this.invoke(name, { serverPid: this.target.serverPid });
        const { text } = invocation;
        const leaks = [
          bait.hostInitCmdline.length >= 8 &&
            text.includes(JSON.stringify(bait.hostInitCmdline).slice(1, -1)) &&
            "the host's pid 1 command line",
          text.includes(this.target.server.dataDir) && "the server's command line",
          text.includes(bait.secret) && "the server's environment",
        ].filter(Boolean) as string[];
        return this.verdict(invocation, leaks, "the host's /proc was not visible");
      }
    }
  }

  private async cleanupOne(name: string): Promise<void> {
    await this.target.server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
    const index = this.names.indexOf(name);
    if (index >= 0) this.names.splice(index, 1);
  }

  private verdict(
    invocation: Invocation,
    leaks: string[],
    containedNote: string,
    leakNote?: string,
  ): Omit<IsolationResult, 'backend' | 'attack'> {
    if (leaks.length > 0) return { contained: false, attempted: true, note: leakNote ?? `leaked: ${leaks.join(', ')}` };
    if (invocation.why) return { contained: true, attempted: true, note: `no API for it: ${invocation.why}` };
    return { contained: true, attempted: true, note: containedNote };
  }
}

/** Host processes whose command line contains `marker`. */
function processesWith(marker: string): number {
  let count = 0;
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker)) count++;
    } catch {
      // gone
    }
  }
  return count;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Polls until `count` is zero; returns what was left at the deadline. */
async function waitForNone(count: () => number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = count();
    if (left === 0 || Date.now() > deadline) return left;
    await pause(250);
  }
}

/** Runs the whole battery on one backend; the hooks are called around each attack. */
export async function runAttacks(
  target: AttackTarget,
  bait: Bait,
  hooks: { before?: (attack: AttackName) => void; after?: (attack: AttackName) => void } = {},
): Promise<IsolationResult[]> {
  const battery = new Battery(target, bait);
  const results: IsolationResult[] = [];
  try {
    for (const { name } of ATTACKS) {
      hooks.before?.(name);
      try {
        results.push({ backend: target.backend, attack: name, ...(await battery.run(name)) });
      } catch (error) {
        results.push({
          backend: target.backend,
          attack: name,
          contained: false,
          attempted: false,
          note: `the attack could not be run: ${(error as Error).message.slice(0, 300)}`,
        });
      }
      hooks.after?.(name);
    }
  } finally {
    await battery.cleanup();
  }
  return results;
}
