import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, resolveBackendSettings } from '../../config.js';
import { DEFAULT_LIMITS } from '../../core/limits.js';
import {
  checkNetworkAnnotation,
  formatCidr,
  networkPolicyOf,
  parseCidr,
  parseCidrList,
  storedNetworkPolicy,
} from '../../core/network-policy.js';
import type { ActionVersion } from '../../core/types.js';
import { StemCells } from '../../scheduler/stem-cells.js';
import { sandboxSpecOf } from '../backend.js';
import { FakeBackend } from '../fake/fake-backend.js';

const network = (value: unknown) => [{ key: 'network', value }];

function action(annotations: ActionVersion['annotations']): ActionVersion {
  return {
    namespace: 'guest',
    name: 'fn',
    version: '0.0.1',
    revision: 'r1',
    exec: { kind: 'nodejs:20', code: 'ok', binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 128 },
    parameters: [],
    annotations,
    isolation: 'container',
    updated: 0,
  };
}

describe('the network policy', () => {
  it('is none unless a function asks for egress, and anything else is a 400', () => {
    assert.equal(networkPolicyOf([]), 'none');
    assert.equal(networkPolicyOf(network('none')), 'none');
    assert.equal(networkPolicyOf(network('egress')), 'egress');
    for (const bad of ['Egress', 'host', '', true, 1, { egress: true }]) {
      assert.throws(
        () => networkPolicyOf(network(bad)),
        (error: Error & { status?: number }) => error.status === 400 && /must be "none" or "egress"/.test(error.message),
        JSON.stringify(bad),
      );
    }
    // A stored version whose value today's checks would refuse runs without a network.
    assert.equal(storedNetworkPolicy(network('everywhere')), 'none');
  });

  it('gives egress only under the backends that can, naming them', () => {
    for (const isolation of ['process', 'container', 'gvisor', 'microvm'] as const) {
      checkNetworkAnnotation({ annotations: network('egress'), isolation });
    }
    for (const isolation of ['isolate', 'wasm'] as const) {
      assert.throws(
        () => checkNetworkAnnotation({ annotations: network('egress'), isolation }),
        (error: Error & { status?: number }) => error.status === 400 && /process, container, gvisor, microvm/.test(error.message),
      );
      checkNetworkAnnotation({ annotations: network('none'), isolation });
    }
    // A host without what egress needs refuses it, saying why; no network is always fine.
    const missing = { ok: false, reason: 'nft is not installed' } as const;
    assert.throws(
      () => checkNetworkAnnotation({ annotations: network('egress'), isolation: 'container' }, missing),
      (error: Error & { status?: number }) => error.status === 400 && /nft is not installed/.test(error.message),
    );
    checkNetworkAnnotation({ annotations: [], isolation: 'container' }, missing);
  });

  it('puts egress into the blank sandbox a function needs, and nothing when it has none', () => {
    assert.equal(sandboxSpecOf(action(network('egress'))).network, 'egress');
    assert.equal(sandboxSpecOf(action([])).network, undefined);
    assert.equal(sandboxSpecOf(action(network('none'))).network, undefined);
  });

  it('never hands a function with egress a blank sandbox from the pool (they have no network)', async () => {
    const backend = new FakeBackend('container');
    const cells = new StemCells(new Map([['container', backend]]), [{ isolation: 'container', memoryMb: 128, count: 1 }]);
    cells.start();
    try {
      const deadline = Date.now() + 5000;
      while (cells.size < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(cells.size, 1);
      assert.equal(cells.take('container', { memoryMb: 128, network: 'egress' }), undefined);
      assert.ok(cells.take('container', { memoryMb: 128 }));
    } finally {
      await cells.close();
    }
  });

  it('reads address ranges and clears their host bits for nftables', () => {
    assert.deepEqual(parseCidr('10.1.2.3/16'), { family: 4, address: '10.1.2.3', prefix: 16 });
    assert.equal(formatCidr(parseCidr('10.1.2.3/16')), '10.1.0.0/16');
    assert.equal(formatCidr(parseCidr('192.168.5.10')), '192.168.5.10/32');
    assert.equal(formatCidr(parseCidr('0.0.0.0/0')), '0.0.0.0/0');
    assert.deepEqual(parseCidrList(' 10.0.0.0/8, 172.16.0.0/12 192.168.1.1 ').map(formatCidr), [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.1.1/32',
    ]);
    for (const bad of ['10.0.0.0/33', '10.0.0/8', 'example.com', '10.0.0.0/8/1', '10.0.0.0/x', '10.0.0.0/-1']) {
      assert.throws(() => parseCidr(bad), /not an address range|prefix length/, bad);
    }
  });

  it('takes --egress-allow or ISOLA_EGRESS_ALLOW, and refuses what it cannot route', () => {
    assert.equal(resolveBackendSettings({}, {}).egressAllow, undefined);
    assert.deepEqual(
      resolveBackendSettings({}, { ISOLA_EGRESS_ALLOW: '10.1.0.0/16,192.168.5.10' }).egressAllow?.map(formatCidr),
      ['10.1.0.0/16', '192.168.5.10/32'],
    );
    // The flag wins over the environment.
    assert.deepEqual(
      resolveBackendSettings({ egressAllow: '172.20.0.0/16' }, { ISOLA_EGRESS_ALLOW: '10.0.0.0/8' }).egressAllow?.map(formatCidr),
      ['172.20.0.0/16'],
    );
    assert.throws(() => resolveBackendSettings({}, { ISOLA_EGRESS_ALLOW: 'fc00::/7' }), ConfigError);
    assert.throws(() => resolveBackendSettings({}, { ISOLA_EGRESS_ALLOW: 'intranet' }), /ISOLA_EGRESS_ALLOW/);
  });
});
