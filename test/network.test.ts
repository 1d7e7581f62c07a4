/**
 * The network policy end to end: functions deployed with `network: egress` reach a test host the
 * test makes itself (a network namespace on a documentation address, 198.51.100.10, routed through
 * a veth from the host) and a private one the server's --egress-allow opens, but never the host:
 * not its loopback, not any of its addresses, not the server's port, not a private range left
 * closed. Functions without the annotation reach nothing. Never a real outside address.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { findBinary } from '../src/sandbox/container/runtime.js';
import { RUNNING_AS_ROOT } from '../src/sandbox/host-ids.js';
import { QEMU } from '../src/sandbox/microvm/vm.js';
import { egressSupported } from '../src/sandbox/network/egress.js';
import { TestServer, waitFor } from './helpers/server.js';
import { TestHost } from './helpers/test-host.js';

// TEST-NET-2: on these hosts TEST-NET-3 (203.0.113.0/24) is where the package mirrors are, and a
// route for it would take their traffic away from every process on the host while the test runs.
const OUTSIDE = '198.51.100.10';
const ALLOWED_PRIVATE = '10.77.1.10';
const CLOSED_PRIVATE = '10.77.2.10';
const HTTP_PORT = 8080;

function skipReason(): string | undefined {
  if (!RUNNING_AS_ROOT) return 'network namespaces need root';
  const support = egressSupported();
  if (!support.ok) return support.reason;
  return undefined;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** What the function tries: TCP connections to each target, then an HTTP GET of each URL. */
const PROBE = `
const net = require('net');
const os = require('os');
function connect(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => { socket.destroy(); resolve('timeout'); }, 1500);
    socket.once('connect', () => { clearTimeout(timer); socket.destroy(); resolve('connected'); });
    socket.once('error', (error) => { clearTimeout(timer); resolve(error.code || error.message); });
  });
}
async function get(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(15000) });
    return 'body:' + (await response.text());
  } catch (error) {
    return 'error:' + ((error.cause && error.cause.code) || error.name || error.message);
  }
}
async function main(params) {
  // Its own address and the gateway beside it (the host's end of its link), when it has a network.
  const own = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
  const targets = [...params.targets];
  if (own) {
    const parts = own.address.split('.');
    parts[3] = String(Number(parts[3]) - 1);
    for (const port of params.gatewayPorts) targets.push({ host: parts.join('.'), port });
  }
  const connections = {};
  for (const t of targets) connections[t.host + ':' + t.port] = await connect(t.host, t.port);
  const fetched = {};
  for (const url of params.urls) fetched[url] = await get(url);
  return { address: own ? own.address : null, connections, fetched };
}`;

interface ProbeResult {
  address: string | null;
  connections: Record<string, string>;
  fetched: Record<string, string>;
}

describe('network policy', { skip: skipReason() }, () => {
  let server: TestServer;
  let hostListener: Server;
  let hostPort = 0;
  let hostConnections = 0;
  let testHost: TestHost | undefined;
  const backends = [
    'process',
    'container',
    ...(findBinary('runsc') ? ['gvisor'] : []),
    ...(existsSync(QEMU) && existsSync('/bin/busybox') ? ['microvm', 'vm'] : []),
  ];

  before(async () => {
    // The test hosts: one namespace, one veth, three networks: outside (documentation range),
    // a private range the server allows and one it does not. It answers with the address it was
    // reached on.
    testHost = await TestHost.start({
      networks: ['198.51.100', '10.77.1', '10.77.2'],
      program: `require('http').createServer((q, s) => s.end('hello from ' + q.socket.localAddress)).listen(${HTTP_PORT}, '0.0.0.0', () => console.log('ready'))`,
    });
    // A listener on every address of the host: no sandbox may reach it on any of them.
    hostListener = createServer((socket) => {
      hostConnections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => hostListener.listen(0, '0.0.0.0', resolve));
    hostPort = (hostListener.address() as { port: number }).port;
    server = await TestServer.start({
      env: {
        ISOLA_BACKENDS: ['isolate', ...backends].join(','),
        ISOLA_CONTAINER_RUNTIME: 'runc',
        ISOLA_EGRESS_ALLOW: '10.77.1.0/24',
        // A blank container is ready: a function with egress must not be given it.
        ISOLA_PREWARM: 'container:1',
      },
    });
  });

  after(async () => {
    await server?.dispose();
    hostListener?.close();
    testHost?.stop();
  });

  function hostAddresses(): string[] {
    return Object.values(networkInterfaces())
      .flat()
      .filter((a) => a !== undefined && a.family === 'IPv4')
      .map((a) => (a as { address: string }).address);
  }

  /** What the test host answers the host itself on its outside address, or why it does not. */
  async function testHostFromTheHost(): Promise<string> {
    try {
      const response = await fetch(`http://${OUTSIDE}:${HTTP_PORT}/`, { signal: AbortSignal.timeout(5000) });
      return await response.text();
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? String(error);
      return `unreachable from the host (${cause}); its server ${testHost?.ended ?? 'is still running'}`;
    }
  }

  async function probe(name: string): Promise<ProbeResult> {
    const serverPort = Number(new URL(server.url).port);
    const targets = [
      ...hostAddresses().flatMap((host) => [
        { host, port: hostPort },
        { host, port: serverPort },
      ]),
    ];
    const response = await server.invoke<{ response: { result: ProbeResult } }>(name, {
      targets,
      gatewayPorts: [hostPort, serverPort],
      urls: [
        `http://${OUTSIDE}:${HTTP_PORT}/`,
        `http://${ALLOWED_PRIVATE}:${HTTP_PORT}/`,
        `http://${CLOSED_PRIVATE}:${HTTP_PORT}/`,
      ],
    });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    return response.body.response.result;
  }

  it('refuses a network annotation it does not know, and egress under a backend that cannot give it, storing nothing', async () => {
    const bogus = await server.deploy('net-bogus', PROBE, {
      annotations: [
        { key: 'isolation', value: 'process' },
        { key: 'network', value: 'everywhere' },
      ],
    });
    assert.equal(bogus.status, 400);
    assert.match((bogus.body as { error: string }).error, /network must be "none" or "egress"/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/net-bogus')).status, 404);
    const isolate = await server.deploy('net-isolate', 'function main() { return {}; }', {
      annotations: [
        { key: 'isolation', value: 'isolate' },
        { key: 'network', value: 'egress' },
      ],
    });
    assert.equal(isolate.status, 400);
    assert.match(JSON.stringify(isolate.body), /process, container, gvisor, microvm/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/net-isolate')).status, 404);
  });

  for (const isolation of backends) {
    it(`${isolation}: egress reaches the outside test host and the allowed private one, never the host or a closed range`, async () => {
      const deployed = await server.deploy(`egress-${isolation}`, PROBE, {
        // A guest under TCG is slow to make its first connection.
        limits: { timeout: 180_000 },
        annotations: [
          { key: 'isolation', value: isolation },
          { key: 'network', value: 'egress' },
        ],
      });
      assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
      const before = hostConnections;
      // The test host itself must be there, or a refusal below would blame the egress path.
      assert.equal(await testHostFromTheHost(), `hello from ${OUTSIDE}`);
      const result = await probe(`egress-${isolation}`);
      if (result.fetched[`http://${OUTSIDE}:${HTTP_PORT}/`] !== `body:hello from ${OUTSIDE}`) {
        // Say whether the test host was gone, or the path from the sandbox failed while it served.
        assert.fail(`${JSON.stringify(result)}; the test host after the probe: ${await testHostFromTheHost()}`);
      }
      assert.match(result.address ?? '', /^10\.200\./, JSON.stringify(result));
      // Reached through NAT: the test host saw the host's address on its side, not the sandbox's.
      assert.equal(result.fetched[`http://${OUTSIDE}:${HTTP_PORT}/`], `body:hello from ${OUTSIDE}`, JSON.stringify(result));
      assert.equal(
        result.fetched[`http://${ALLOWED_PRIVATE}:${HTTP_PORT}/`],
        `body:hello from ${ALLOWED_PRIVATE}`,
        JSON.stringify(result),
      );
      assert.match(result.fetched[`http://${CLOSED_PRIVATE}:${HTTP_PORT}/`] ?? '', /^error:/, JSON.stringify(result));
      const reached = Object.entries(result.connections).filter(([, outcome]) => outcome === 'connected');
      assert.deepEqual(reached, [], `the sandbox reached the host: ${JSON.stringify(result.connections)}`);
      // The host's end of its own link was tried too.
      const gateway = (result.address ?? '').replace(/\d+$/, (last) => String(Number(last) - 1));
      assert.ok(`${gateway}:${hostPort}` in result.connections, JSON.stringify(result));
      assert.equal(hostConnections, before, 'a connection reached the host listener');
    });

    it(`${isolation}: without the annotation a function reaches nothing, not even the host`, async () => {
      const deployed = await server.deploy(`none-${isolation}`, PROBE, {
        limits: { timeout: 180_000 },
        annotations: [{ key: 'isolation', value: isolation }],
      });
      assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
      const before = hostConnections;
      const result = await probe(`none-${isolation}`);
      assert.equal(result.address, null, 'a sandbox without egress has no address but loopback');
      for (const url of [OUTSIDE, ALLOWED_PRIVATE, CLOSED_PRIVATE]) {
        assert.match(result.fetched[`http://${url}:${HTTP_PORT}/`] ?? '', /^error:/, JSON.stringify(result));
      }
      const reached = Object.entries(result.connections).filter(([, outcome]) => outcome === 'connected');
      assert.deepEqual(reached, [], JSON.stringify(result.connections));
      assert.equal(hostConnections, before);
    });
  }

  it('leaves no namespace, interface or nftables table behind once the server stops', async () => {
    const pid = server.pid;
    assert.ok(pid);
    assert.ok(networksOf(pid).length > 0, 'the egress sandboxes have networks while the server runs');
    await server.stop();
    const leftovers = await waitFor(
      'the sandbox networks to go',
      async () => (networksOf(pid).length === 0 ? [] : undefined),
      15_000,
    ).catch(() => networksOf(pid));
    assert.deepEqual(leftovers, []);
  });
});

/** The namespaces, host interfaces and nftables tables a server (by pid) made for egress. */
function networksOf(pid: number): string[] {
  return [
    ...ip('netns', 'list')
      .split('\n')
      .filter((line) => line.startsWith(`isola-${pid}-`)),
    ...ip('-o', 'link', 'show')
      .split('\n')
      .filter((line) => line.includes(`alias isola-${pid}-`)),
    ...execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes(`isola_${pid}_`)),
  ];
}

describe('sandbox networks a killed server left', { skip: skipReason() }, () => {
  it('are swept when a server starts again', async () => {
    const server = await TestServer.start({ env: { ISOLA_BACKENDS: 'process', ISOLA_PREWARM: '' } });
    try {
      const deployed = await server.deploy('egress-left', 'function main() { return { ok: true }; }', {
        annotations: [
          { key: 'isolation', value: 'process' },
          { key: 'network', value: 'egress' },
        ],
      });
      assert.equal(deployed.status, 200, JSON.stringify(deployed.body));
      assert.equal((await server.invoke('egress-left')).status, 200);
      const pid = server.pid;
      assert.ok(pid);
      await server.kill();
      assert.ok(networksOf(pid).length >= 3, `a namespace, its link and the table stay: ${networksOf(pid).join('; ')}`);
      await server.restart();
      await waitFor(
        "the dead server's networks to be swept",
        async () => (networksOf(pid).length === 0 ? true : undefined),
        30_000,
      );
    } finally {
      await server.dispose();
    }
  });
});
