import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync, version as esbuildVersion } from 'esbuild';

/**
 * A TypeScript source of the repository, found the same way from src/guest (tests through tsx) and
 * from dist/guest (the built platform, which users run): both bundle the same sources, so they
 * agree on every bundle's hash and share the sandboxes and images keyed by it.
 */
const source = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url));

/** Code that runs outside the server's module graph, bundled into one plain JavaScript file each. */
const BUNDLES = {
  /** The guest agent: runs on a bare node binary in a process, container or microVM. */
  agent: {
    entry: source('guest/agent.ts'),
    sources: [
      source('guest/agent.ts'),
      source('guest/protocol.ts'),
      source('guest/reseed.ts'),
      source('guest/action-loop.ts'),
      source('guest/lambda-runtime.ts'),
      source('guest/package.ts'),
      source('guest/package-loader.ts'),
      fileURLToPath(new URL('../../node_modules/fflate/package.json', import.meta.url)),
    ],
  },
  /** The wasm backend's worker thread. */
  'wasm-worker': {
    entry: source('sandbox/wasm/worker.ts'),
    sources: [
      source('sandbox/wasm/worker.ts'),
      source('sandbox/wasm/run-module.ts'),
      source('sandbox/wasm/messages.ts'),
      source('sandbox/wasm/binary.ts'),
    ],
  },
  /** The wasm backend's metering thread (WABT), which makes the fast path's metered copies. */
  'wasm-meter': {
    entry: source('sandbox/wasm/meter-worker.ts'),
    sources: [
      source('sandbox/wasm/meter-worker.ts'),
      source('sandbox/wasm/metering.ts'),
      source('sandbox/wasm/binary.ts'),
      fileURLToPath(new URL('../../node_modules/wabt/package.json', import.meta.url)),
    ],
  },
  /** A Python sandbox's worker thread under isolation "wasm" (Pyodide). */
  'python-worker': {
    entry: source('sandbox/wasm/python-worker.ts'),
    sources: [
      source('sandbox/wasm/python-worker.ts'),
      source('sandbox/wasm/pyodide-context.ts'),
      source('sandbox/wasm/python-messages.ts'),
    ],
  },
} as const;

export type BundleName = keyof typeof BUNDLES;

/** A content hash of a bundle's sources: sandboxes and images built from it are keyed by it. */
export function bundleHash(name: BundleName): string {
  const hash = createHash('sha256').update(esbuildVersion);
  for (const file of BUNDLES[name].sources) hash.update(readFileSync(file));
  return hash.digest('hex').slice(0, 16);
}

/** Builds a bundle into `dir`, cached by content hash so that it is rebuilt only when it changes. */
export function buildBundle(name: BundleName, dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `${name}-${bundleHash(name)}.cjs`);
  if (existsSync(file)) return file;
  const temp = `${file}.${process.pid}.tmp`;
  buildSync({
    entryPoints: [BUNDLES[name].entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile: temp,
    logLevel: 'silent',
    legalComments: 'none',
  });
  renameSync(temp, file);
  return file;
}

export const agentHash = () => bundleHash('agent');
export const buildAgent = (dir: string) => buildBundle('agent', dir);
