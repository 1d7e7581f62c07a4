/**
 * What the languages dimension asks of the platform beyond its HTTP API: whether a backend runs
 * a kind on this host (doctor's answer), and the image and package a bare `runc run` of the same
 * bundle needs.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { zipSync } from 'fflate';
import type { Isolation } from '../../../src/core/kinds.js';
import type { FunctionPackage } from '../../../src/guest/protocol.js';
import type { NodeRootfs } from '../../../src/images/node-rootfs.js';
import { ensureNodeRootfs, ensureRootfs } from '../../../src/images/node-rootfs.js';
import { imageNameFor } from '../../../src/images/runtimes.js';
import { kindSupport } from '../../../src/sandbox/registry.js';
import { functionSource, LANGUAGE_PEERS, type LanguageKind, type LanguageWorkload } from './languages.js';
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

/** The container image of a kind: the guest agent and the kind's runtime. */
function kindImage(kind: LanguageKind, dataDir: string): NodeRootfs {
  return ensureRootfs(join(dataDir, 'images'), join(dataDir, 'runtime'), imageNameFor(kind));
}

/** Every file under a directory, by its path relative to it. */
function filesOf(dir: string, root = dir): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {};
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) Object.assign(files, filesOf(path, root));
    else files[relative(root, path)] = readFileSync(path);
  }
  return files;
}

/**
 * The package of the bare peer's directory (its minimal launcher and the function), for the agent
 * to unpack and run as it runs a deployed one.
 */
function peerPackage(
  kind: LanguageKind,
  workload: LanguageWorkload,
  cacheDir: string,
  memoryMb: number,
  image: NodeRootfs,
): FunctionPackage {
  const peer = LANGUAGE_PEERS.find((p) => p.kind === kind);
  if (!peer) throw new Error(`no bare peer for ${kind}`);
  const command = peer.prepare(workload, cacheDir, memoryMb);
  const files = filesOf(command.cwd);
  // The native peer runs the ELF where it was built: in the package it is `exec`.
  const argv =
    kind === 'native'
      ? ['./exec']
      : kind === 'nodejs:20'
        ? [image.nodePath, ...command.args]
        : [command.command, ...command.args];
  return {
    zip: Buffer.from(zipSync(files)).toString('base64'),
    command: argv,
    executables: Object.keys(files).filter((f) => f === 'exec'),
    ack: true,
  };
}

/**
 * The image and package for a bare `<runtime> run` of a kind's hello: the kind's image with the
 * guest agent, handed the same function.
 */
export async function packageForBareRun(
  kind: LanguageKind,
  workload: LanguageWorkload,
  dataDir: string,
  cacheDir: string,
  memoryMb: number,
): Promise<{ image: NodeRootfs; fn: Omit<PeerFunction, 'params'>; source: string }> {
  // A CommonJS function is not packaged: the agent loads its code, as the platform does.
  if (kind === 'nodejs:20')
    return {
      image: ensureNodeRootfs(join(dataDir, 'images'), join(dataDir, 'runtime')),
      fn: { code: functionSource(kind, workload) },
      source: 'the same code in the agent',
    };
  const image = kindImage(kind, dataDir);
  return {
    image,
    fn: { code: '', package: peerPackage(kind, workload, cacheDir, memoryMb, image), memoryMb },
    source: "the bench's own minimal launcher, packaged",
  };
}
