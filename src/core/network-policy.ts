/**
 * A function's network policy (annotation `network`): `none`, the default, gives its sandbox no
 * network at all; `egress` lets it open connections to outside addresses through NAT, never to
 * the host itself, to link-local or private ranges (unless the operator opens some with
 * `--egress-allow`), nor to other sandboxes.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { badRequest } from './errors.js';
import type { Isolation } from './kinds.js';
import { annotationValue, type KeyValue } from './types.js';

export const NETWORK_POLICIES = ['none', 'egress'] as const;
export type NetworkPolicy = (typeof NETWORK_POLICIES)[number];

/**
 * The backends that can give a sandbox egress: those whose sandbox is a process tree that can join
 * a network namespace, or a VM that can have a network device. The isolate and wasm backends have
 * no network API at all.
 */
export const EGRESS_ISOLATIONS: readonly Isolation[] = ['process', 'container', 'gvisor', 'microvm', 'vm'];

/** The addresses sandboxes take their /30 networks from; never reachable from a sandbox, even when an allowed range covers them. */
export const SANDBOX_POOL = '10.200.0.0/16';

/**
 * IPv4 destinations a sandbox with egress never reaches unless `--egress-allow` names them:
 * "this network", private (RFC 1918), shared address space (carrier-grade NAT), loopback,
 * link-local (cloud metadata at 169.254.169.254), multicast and reserved. The host's own addresses
 * on every interface are refused separately, whatever is allowed. IPv6 is not routed for
 * sandboxes at all, so fc00::/7 and fe80::/10 are out of reach with the rest of IPv6.
 */
export const FORBIDDEN_IPV4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '224.0.0.0/3',
] as const;

/** The IPv6 ranges the issue names; listed for the documentation and the allow-list check. */
export const FORBIDDEN_IPV6 = ['::1/128', 'fc00::/7', 'fe80::/10'] as const;

/** The policy an action's annotations ask for; throws a 400 for anything but `none` or `egress`. */
export function networkPolicyOf(annotations: readonly KeyValue[]): NetworkPolicy {
  const value = annotationValue(annotations, 'network');
  if (value === undefined || value === null) return 'none';
  if (typeof value === 'string' && (NETWORK_POLICIES as readonly string[]).includes(value)) return value as NetworkPolicy;
  throw badRequest(`The annotation network must be "none" or "egress"; got ${JSON.stringify(value)}.`);
}

/** The policy of a version already stored: one the checks of today would refuse has no network. */
export function storedNetworkPolicy(annotations: readonly KeyValue[]): NetworkPolicy {
  return annotationValue(annotations, 'network') === 'egress' ? 'egress' : 'none';
}

/**
 * Deploy-time check: the annotation is valid, and `egress` only under a backend that can give it,
 * on a host that can (`support`: root, ip and nft; see egress.ts).
 */
export function checkNetworkAnnotation(
  draft: { annotations: readonly KeyValue[]; isolation: Isolation },
  support: { ok: true } | { ok: false; reason: string } = { ok: true },
): void {
  const policy = networkPolicyOf(draft.annotations);
  if (policy !== 'egress') return;
  if (!EGRESS_ISOLATIONS.includes(draft.isolation)) {
    throw badRequest(
      `The annotation network=egress cannot be given under isolation "${draft.isolation}"; ` +
        `deploy with isolation ${EGRESS_ISOLATIONS.join(', ')} for a function that calls out.`,
    );
  }
  if (!support.ok) throw badRequest(`This server cannot give functions egress: ${support.reason}.`);
}

/** One IPv4 or IPv6 range, `address/prefix` (a bare address is a single host). */
export interface Cidr {
  family: 4 | 6;
  address: string;
  prefix: number;
}

export function parseCidr(text: string): Cidr {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) throw new Error(`"${text}" is not an address range (address/prefix)`);
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  if (!family) throw new Error(`"${text}" is not an address range: "${address}" is not an IPv4 or IPv6 address`);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d+$/.test(prefixText ?? String(max)) || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    throw new Error(`"${text}" has a prefix length that is not from 0 to ${max}`);
  }
  return { family, address, prefix };
}

/** `--egress-allow 10.1.0.0/16,192.168.5.10`: comma- or space-separated ranges. */
export function parseCidrList(text: string): Cidr[] {
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map(parseCidr);
}

/** An IPv4 address as a number, and back. */
export function ipv4ToNumber(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

export function numberToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** The range with its host bits cleared (`10.1.2.3/16` is `10.1.0.0/16`), as nftables wants it. */
export function formatCidr(cidr: Cidr): string {
  if (cidr.family === 6) return `${cidr.address}/${cidr.prefix}`;
  const size = 2 ** (32 - cidr.prefix);
  return `${numberToIpv4(Math.floor(ipv4ToNumber(cidr.address) / size) * size)}/${cidr.prefix}`;
}
