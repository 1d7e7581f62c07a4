import { Zip, ZipDeflate } from 'fflate';

export interface ZipEntrySpec {
  name: string;
  data?: string | Uint8Array;
  /** Unix mode, type bits included (0o100644 a file, 0o120777 a symlink). */
  mode?: number;
}

/**
 * A zip with exactly these entries, in this order: any name (absolute, `..`, twice) and any unix
 * mode, which a zip library's object API would refuse or tidy away.
 */
export function zipOf(entries: readonly ZipEntrySpec[]): Buffer {
  const chunks: Uint8Array[] = [];
  let failure: Error | null = null;
  const zip = new Zip((error, chunk) => {
    if (error) failure = error;
    else chunks.push(chunk);
  });
  for (const entry of entries) {
    const file = new ZipDeflate(entry.name, { level: 6 });
    if (entry.mode !== undefined) {
      file.os = 3;
      file.attrs = (entry.mode << 16) >>> 0;
    }
    zip.add(file);
    const data = typeof entry.data === 'string' ? Buffer.from(entry.data) : (entry.data ?? new Uint8Array());
    file.push(data, true);
  }
  zip.end();
  if (failure) throw failure;
  return Buffer.concat(chunks);
}
