/**
 * Unpacking a function package: the zip the platform made at deploy, written into a fresh
 * directory of the agent's own (in its private temporary directory).
 */
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { unzipSync } from 'fflate';
import type { FunctionPackage } from './protocol.js';

/** Unpacks the package into a new directory and returns its path. */
export function unpackPackage(pkg: FunctionPackage): string {
  const dir = mkdtempSync(join(tmpdir(), 'function-'));
  const entries = unzipSync(Buffer.from(pkg.zip, 'base64'));
  for (const [name, data] of Object.entries(entries)) {
    // Deploy checked every path already; a package is still never written outside its directory.
    const path = resolve(dir, name);
    if (path !== dir && !path.startsWith(dir + sep)) throw new Error(`The package has an entry outside its directory: ${name}`);
    if (name.endsWith('/')) {
      mkdirSync(path, { recursive: true });
      continue;
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, data);
  }
  for (const name of pkg.executables ?? []) {
    const path = resolve(dir, name);
    if (!path.startsWith(dir + sep)) throw new Error(`The package names an executable outside its directory: ${name}`);
    chmodSync(path, 0o755);
  }
  return dir;
}
