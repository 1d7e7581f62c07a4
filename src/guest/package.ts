/**
 * Unpacking a function package: the zip the platform made at deploy, written into a fresh
 * directory of the agent's own (in its private temporary directory).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { type FlateError, Unzip, type UnzipDecoder, UnzipPassThrough, unzipSync } from 'fflate';
import type { FunctionPackage } from './protocol.js';

/**
 * Deflated entries inflated by zlib rather than in JavaScript: a 2.4 MB Go binary takes about
 * 150 ms to inflate in a freshly started agent with fflate's own inflater, a few with zlib's.
 */
class NativeInflate implements UnzipDecoder {
  static readonly compression = 8;
  ondata: (error: FlateError | null, data: Uint8Array, final: boolean) => void = () => {};
  private readonly chunks: Buffer[] = [];

  push(data: Uint8Array, final: boolean): void {
    this.chunks.push(Buffer.from(data));
    if (final) this.ondata(null, inflateRawSync(Buffer.concat(this.chunks)), true);
  }
}

/** Every entry of a zip, by name; directories end with '/'. */
function entriesOf(zip: Buffer): Map<string, Uint8Array> {
  const entries = new Map<string, Uint8Array>();
  try {
    const unzip = new Unzip((file) => {
      const parts: Uint8Array[] = [];
      file.ondata = (error, data, final) => {
        if (error) throw error;
        parts.push(data);
        if (final) entries.set(file.name, parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts));
      };
      file.start();
    });
    unzip.register(UnzipPassThrough);
    unzip.register(NativeInflate);
    unzip.push(zip, true);
    return entries;
  } catch {
    // A zip the streaming reader does not follow (odd data descriptors, say): read it whole.
    return new Map(Object.entries(unzipSync(zip)));
  }
}

/**
 * Unpacks the package into a new directory and returns its path; or into `into`, the directory of
 * a runtime started ahead, keeping the files already there (that runtime's launcher, which the
 * package holds too, byte for byte: the runtime's id says so).
 */
export function unpackPackage(pkg: Pick<FunctionPackage, 'zip' | 'executables'>, into?: string): string {
  const dir = into ?? mkdtempSync(join(tmpdir(), 'function-'));
  for (const [name, data] of entriesOf(Buffer.from(pkg.zip, 'base64'))) {
    // Deploy checked every path already; a package is still never written outside its directory.
    const path = resolve(dir, name);
    if (path !== dir && !path.startsWith(dir + sep)) throw new Error(`The package has an entry outside its directory: ${name}`);
    if (name.endsWith('/')) {
      mkdirSync(path, { recursive: true });
      continue;
    }
    if (into && existsSync(path)) continue;
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
