/**
 * What the languages dimension asks of the platform beyond its HTTP API: whether a backend runs
 * a kind on this host (doctor's answer), and the image and package a bare `runc run` of the same
 * bundle needs.
 */
import { join } from 'node:path';
import type { Isolation } from '../../../src/core/kinds.js';
import { ensureRootfs, type NodeRootfs } from '../../../src/images/node-rootfs.js';
import { imageNameFor } from '../../../src/images/runtimes.js';
import { FunctionPackages } from '../../../src/platform/function-packages.js';
import { kindSupport } from '../../../src/sandbox/registry.js';
import { execFor, functionSource, type LanguageKind, type LanguageWorkload } from './languages.js';
import type { PeerFunction } from './peers.js';

/**
 * Why a working backend cannot run `kind` on this host (isola doctor's answer: its bounds, then
 * whether the host has the kind's runtime and compiler), or undefined when it can.
 */
export function languageSupport(isolation: Isolation, kind: LanguageKind): string | undefined {
  const support = kindSupport(isolation).find((k) => k.kind === kind);
  if (!support || support.available) return undefined;
  return support.why ?? 'not on this host';
}

/**
 * The image and package for a bare `<runtime> run` of a kind's function: the kind's image (the
 * one the container backend boots for it) with the guest agent, handed what the platform's deploy
 * makes of the same source.
 */
export async function packageForBareRun(
  kind: LanguageKind,
  workload: LanguageWorkload,
  dataDir: string,
  cacheDir: string,
  memoryMb: number,
): Promise<{ image: NodeRootfs; fn: Omit<PeerFunction, 'params'>; source: string }> {
  const image = ensureRootfs(join(dataDir, 'images'), join(dataDir, 'runtime'), imageNameFor(kind));
  // A CommonJS function is not packaged: the agent loads its code, as the platform does.
  if (kind === 'nodejs:20') return { image, fn: { code: functionSource(kind, workload) }, source: 'the same code in the agent' };
  const exec = execFor(kind, workload, 'bare', cacheDir);
  const prepared = await new FunctionPackages({ dataDir: cacheDir }).prepare({
    name: `bare-${workload}`,
    exec: { ...exec, binary: exec.binary ?? false },
  });
  if (!prepared.package) throw new Error(`the deploy made no package of the ${kind} function`);
  return {
    image,
    fn: { code: '', package: prepared.package, ...(exec.main ? { main: exec.main } : {}), memoryMb },
    source: `the ${image.name} image and the package the deploy makes`,
  };
}
