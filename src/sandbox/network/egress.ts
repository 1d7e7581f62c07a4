/**
 * Egress for sandboxes of functions deployed with `network: egress`. Each such sandbox gets a /30
 * of its own from 10.200.0.0/16 on a point-to-point link to the host: a veth pair whose far end
 * lives in a network namespace made for the sandbox (containers, gVisor, processes), or a tap
 * device a VM's virtio-net is backed by (microVMs). One nftables table per backend
 * (`inet isola_<pid>_<n>`) then decides, by the host-side interface's name:
 * Refused traffic is answered with ICMP "administratively prohibited", so a call fails at once
 * rather than timing out.
 * - nothing from a sandbox reaches the host itself (every address on every interface, so neither
 *   the host's loopback listeners nor the server's port), whatever is allowed;
 * - forwarded traffic to the sandbox pool, and to private, link-local, loopback, multicast and
 *   reserved IPv4 ranges is dropped unless `--egress-allow` names the range; IPv6 is not routed;
 * - the rest leaves through NAT (masquerade) on whichever interface routes it;
 * - nothing outside opens a connection into a sandbox: only replies come back.
 * The host must forward IPv4 (the table's first use sets net.ipv4.ip_forward=1, as container
 * engines do). Everything is named after the server's pid, so a later start sweeps what a dead
 * server left: namespaces `isola-<pid>-<n>`, host interfaces whose alias is such a name, tables.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { type Cidr, FORBIDDEN_IPV4, formatCidr, ipv4ToNumber, numberToIpv4, SANDBOX_POOL } from '../../core/network-policy.js';
import { orphaned, ownerPid, processAlive } from '../sweep.js';

const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((path) => existsSync(path)) ?? 'ip';
const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((path) => existsSync(path));
const POOL_BASE = ipv4ToNumber(SANDBOX_POOL.split('/')[0] ?? '10.200.0.0');
/** /30 networks in the pool. */
const POOL_SIZE = 2 ** (32 - Number(SANDBOX_POOL.split('/')[1])) / 4;
export const NETNS_DIR = '/run/netns';

/** The network a sandbox was given. */
export interface SandboxNetwork {
  /** `isola-<pid>-<n>`: the namespace's name (veth) and the host interface's alias. */
  readonly name: string;
  /** The namespace the sandbox's processes join, for a veth; absent for a tap. */
  readonly netnsPath?: string;
  /** The host-side interface: the veth's near end or the tap. */
  readonly hostInterface: string;
  /** Its address, the sandbox's gateway. */
  readonly gateway: string;
  /** The sandbox's own address (on `eth0` in its namespace, or the VM's NIC). */
  readonly address: string;
  readonly prefixLength: 30;
  /** Removes the link, the namespace and the table entry; safe to call twice. */
  release(): Promise<void>;
}

interface CommandResult {
  code: number | null;
  stderr: string;
  stdout: string;
}

function run(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once('error', (error) => resolve({ code: -1, stdout, stderr: error.message }));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.on('error', () => {
      // the command exited before reading: its exit code says why
    });
    child.stdin.end(input ?? '');
  });
}

async function mustRun(command: string, args: readonly string[], input?: string): Promise<string> {
  const result = await run(command, args, input);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr.trim().slice(-500) || `exit code ${result.code}`}`);
  }
  return result.stdout;
}

let tables = 0;
let names = 0;
// Servers on one host take addresses from the same pool: each starts at a different place and
// the interface name (`isv<index>`), which only one can create, settles any collision.
let nextIndex = (process.pid * 97) % POOL_SIZE;

/** True when this host has what egress needs: `ip`, `nft` and root. */
export function egressSupported(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'egress needs root (network namespaces and nftables)' };
  if (!NFT) return { ok: false, reason: 'nft is not installed (Debian package nftables; `isola setup containers`)' };
  if (!existsSync(IP)) return { ok: false, reason: 'ip is not installed (Debian package iproute2)' };
  return { ok: true };
}

const NSENTER = ['/usr/bin/nsenter', '/bin/nsenter'].find((path) => existsSync(path)) ?? 'nsenter';

/**
 * A command line that runs `command` inside the sandbox's network namespace (for a veth network).
 * nsenter joins only the network namespace; `ip netns exec` would also remount /sys, hiding the
 * cgroup hierarchy the command still has to join.
 */
export function netnsExec(network: SandboxNetwork, command: readonly string[]): string[] {
  if (!network.netnsPath) throw new Error(`${network.name} is a tap device, not a namespace`);
  return [NSENTER, `--net=${network.netnsPath}`, '--', ...command];
}

/** The nftables table that polices one backend's sandboxes. */
function ruleset(table: string, allow: readonly Cidr[]): string {
  const allowed = allow.filter((c) => c.family === 4).map(formatCidr);
  return `table inet ${table} {
  set ifaces { type ifname; }
  set allow4 { type ipv4_addr; flags interval; auto-merge;${allowed.length ? ` elements = { ${allowed.join(', ')} }` : ''} }
  set deny4 { type ipv4_addr; flags interval; auto-merge; elements = { ${FORBIDDEN_IPV4.join(', ')} } }
  chain input {
    type filter hook input priority -10; policy accept;
    iifname @ifaces reject with icmpx type admin-prohibited
  }
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname @ifaces meta nfproto != ipv4 drop
    iifname @ifaces ip daddr ${SANDBOX_POOL} reject with icmpx type admin-prohibited
    iifname @ifaces ip daddr @allow4 accept
    iifname @ifaces ip daddr @deny4 reject with icmpx type admin-prohibited
    iifname @ifaces accept
    oifname @ifaces ct state established,related accept
    oifname @ifaces drop
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    iifname @ifaces oifname != @ifaces masquerade
  }
}
`;
}

/** Egress for one backend's sandboxes: its own nftables table, set up on first use. */
export class EgressNetwork {
  private readonly table = `isola_${process.pid}_${++tables}`;
  private ready: Promise<void> | undefined;
  private readonly live = new Set<SandboxNetwork>();

  constructor(private readonly allow: readonly Cidr[] = []) {}

  /** A namespace with a veth pair: `eth0` inside, addressed and routed through the host. */
  namespace(): Promise<SandboxNetwork> {
    return this.attach('veth');
  }

  /** A tap device on the host, for a VM's virtio-net; the guest configures the address itself. */
  tap(): Promise<SandboxNetwork> {
    return this.attach('tap');
  }

  /** Releases every sandbox network still held and removes the table. */
  async close(): Promise<void> {
    await Promise.all([...this.live].map((network) => network.release()));
    if (this.ready) {
      await this.ready.catch(() => {});
      await run(NFT ?? 'nft', ['delete', 'table', 'inet', this.table]);
      this.ready = undefined;
    }
  }

  private setUp(): Promise<void> {
    this.ready ??= (async () => {
      const support = egressSupported();
      if (!support.ok) throw new Error(support.reason);
      await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
      await mustRun(NFT ?? 'nft', ['-f', '-'], ruleset(this.table, this.allow));
    })();
    return this.ready;
  }

  private async attach(how: 'veth' | 'tap'): Promise<SandboxNetwork> {
    await this.setUp();
    const name = `isola-${process.pid}-${++names}`;
    for (let attempt = 0; attempt < 64; attempt++) {
      const index = nextIndex;
      nextIndex = (nextIndex + 1) % POOL_SIZE;
      const hostInterface = `isv${index}`;
      const base = POOL_BASE + index * 4;
      const gateway = numberToIpv4(base + 1);
      const address = numberToIpv4(base + 2);
      const created =
        how === 'veth'
          ? await run(IP, ['link', 'add', hostInterface, 'type', 'veth', 'peer', 'name', `isvp${index}`])
          : await run(IP, ['tuntap', 'add', 'dev', hostInterface, 'mode', 'tap']);
      if (created.code !== 0) {
        if (/exists/i.test(created.stderr)) continue;
        throw new Error(`could not create ${hostInterface}: ${created.stderr.trim()}`);
      }
      const network = this.track({ name, hostInterface, gateway, address, how });
      try {
        // The alias names the owner, for the sweep; the set entry turns the rules on for it
        // before the link carries anything.
        await mustRun(NFT ?? 'nft', ['add', 'element', 'inet', this.table, 'ifaces', `{ "${hostInterface}" }`]);
        const host = [`link set ${hostInterface} alias ${name}`, `addr add ${gateway}/30 dev ${hostInterface}`];
        if (how === 'veth') {
          await mustRun(
            IP,
            ['-batch', '-'],
            [`netns add ${name}`, `link set isvp${index} netns ${name}`, ...host, `link set ${hostInterface} up`].join('\n'),
          );
          await mustRun(
            IP,
            ['-n', name, '-batch', '-'],
            [
              `link set isvp${index} name eth0`,
              `addr add ${address}/30 dev eth0`,
              'link set eth0 up',
              'link set lo up',
              `route add default via ${gateway}`,
            ].join('\n'),
          );
        } else {
          await mustRun(IP, ['-batch', '-'], [...host, `link set ${hostInterface} up`].join('\n'));
        }
        return network;
      } catch (error) {
        await network.release();
        throw error;
      }
    }
    throw new Error('no free address in the sandbox pool (64 tried)');
  }

  private track(input: {
    name: string;
    hostInterface: string;
    gateway: string;
    address: string;
    how: 'veth' | 'tap';
  }): SandboxNetwork {
    let released: Promise<void> | undefined;
    const network: SandboxNetwork = {
      name: input.name,
      hostInterface: input.hostInterface,
      gateway: input.gateway,
      address: input.address,
      prefixLength: 30,
      ...(input.how === 'veth' ? { netnsPath: `${NETNS_DIR}/${input.name}` } : {}),
      release: () => {
        released ??= (async () => {
          this.live.delete(network);
          // Deleting one end of a veth deletes both; the namespace goes once nothing uses it.
          await run(IP, ['link', 'del', input.hostInterface]);
          if (input.how === 'veth') await run(IP, ['netns', 'del', input.name]);
          await run(NFT ?? 'nft', ['delete', 'element', 'inet', this.table, 'ifaces', `{ "${input.hostInterface}" }`]);
        })();
        return released;
      },
    };
    this.live.add(network);
    return network;
  }
}

/**
 * Removes what servers that are gone left: their namespaces, host interfaces (found by alias) and
 * nftables tables. Returns what was removed. Does nothing on a host without `ip` or `nft`.
 */
export async function sweepNetworks(): Promise<string[]> {
  if (process.getuid?.() !== 0) return [];
  const removed: string[] = [];
  const links = await run(IP, ['-o', 'link', 'show']);
  for (const line of links.stdout.split('\n')) {
    const alias = /\salias (\S+)/.exec(line)?.[1];
    const ifname = /^\d+:\s+([^:@\s]+)/.exec(line)?.[1];
    if (!alias || !ifname || orphaned([alias]).length === 0) continue;
    await run(IP, ['link', 'del', ifname]);
    removed.push(ifname);
  }
  const namespaces = await run(IP, ['netns', 'list']);
  const names = namespaces.stdout.split('\n').map((line) => line.split(' ')[0] ?? '');
  for (const name of orphaned(names.filter((n) => n.startsWith('isola-')))) {
    await run(IP, ['netns', 'del', name]);
    removed.push(name);
  }
  if (NFT) {
    const listed = await run(NFT, ['list', 'tables']);
    for (const match of listed.stdout.matchAll(/^table inet (isola_(\d+)_\d+)$/gm)) {
      const [, table, pid] = match;
      if (!table || ownerPid(`${pid}-0`) === undefined || processAlive(Number(pid))) continue;
      await run(NFT, ['delete', 'table', 'inet', table]);
      removed.push(table);
    }
  }
  return removed;
}
