import { zipSync } from 'fflate';
import yauzl from 'yauzl';
import { badRequest, IsolaError } from '../../core/errors.js';

/** A zip as uploaded (base64 decoded), at most: OpenWhisk's largest action. */
export const MAX_ZIP_BYTES = 48 * 2 ** 20;
/** What all the entries of a zip may add up to once unpacked. */
export const MAX_UNPACKED_BYTES = 128 * 2 ** 20;
/** Files and folders in a zip: a large node_modules has a few thousand. */
export const MAX_ZIP_ENTRIES = 20_000;
/** Entries larger than this must not have shrunk more than MAX_RATIO times: a zip bomb does. */
const RATIO_FLOOR_BYTES = 2 ** 20;
const MAX_RATIO = 200;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** One file of a checked zip: a relative path that stays inside the directory, and its bytes. */
export interface ZipFile {
  path: string;
  data: Uint8Array;
  /** The unix mode bits the zip recorded (0 when it recorded none). */
  mode: number;
}

/** A zip's local file header signature, `PK\x03\x04`; an empty zip starts with its end record `PK\x05\x06`. */
export function isZip(bytes: Uint8Array): boolean {
  return bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5) && (bytes[3] === 4 || bytes[3] === 6);
}

/** `\x7fELF`: a Linux executable. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
}

const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}\s*$/;

/** The first bytes of a base64 text, when it is base64 at all (without decoding all of it). */
export function base64Head(text: string): Uint8Array | undefined {
  if (text.length < 8 || !/^[A-Za-z0-9+/]{8}/.test(text)) return undefined;
  return Buffer.from(text.slice(0, 8), 'base64');
}

/** Decodes base64 code, refusing what is not base64 or is larger than an upload may be. */
export function decodeBase64(text: string, what: string): Buffer {
  if (!BASE64.test(text)) throw badRequest(`exec.code is not valid base64 (${what}).`);
  // Checked before decoding: base64 is 4 characters for 3 bytes.
  if (Math.floor((text.replace(/\s/g, '').length * 3) / 4) > MAX_ZIP_BYTES + 3) {
    throw badRequest(`The ${what} is larger than ${MAX_ZIP_BYTES / 2 ** 20} MB.`);
  }
  return Buffer.from(text, 'base64');
}

/** A path inside the zip as the directory will hold it, or why it is refused. */
function safePath(raw: string): string {
  if (raw.includes('\0')) throw badRequest('The zip is refused: an entry name contains a NUL character.');
  const name = raw.replace(/\\/g, '/');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) {
    throw badRequest(`The zip is refused: the entry "${name.slice(0, 200)}" has an absolute path.`);
  }
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) {
    throw badRequest(`The zip is refused: the entry "${name.slice(0, 200)}" escapes the directory with "..".`);
  }
  return parts.join('/');
}

/**
 * Reads an uploaded zip and checks every entry before any of it is used: its size and entry
 * count, paths (absolute, or escaping with `..`), types (a symlink or device could point outside),
 * duplicate names, and how much each entry inflates. Throws a 400 naming the first problem.
 * yauzl checks that each entry's data is as long as its header says while it inflates it.
 */
export async function readZip(bytes: Buffer): Promise<ZipFile[]> {
  if (bytes.length > MAX_ZIP_BYTES) throw badRequest(`The zip is larger than ${MAX_ZIP_BYTES / 2 ** 20} MB.`);
  let zip: yauzl.ZipFile;
  try {
    zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
      yauzl.fromBuffer(bytes, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true }, (error, opened) =>
        error ? reject(error) : resolve(opened),
      ),
    );
  } catch (error) {
    throw badRequest(`The zip cannot be read: ${(error as Error).message}.`);
  }
  if (zip.entryCount > MAX_ZIP_ENTRIES) {
    zip.close();
    throw badRequest(`The zip has ${zip.entryCount} entries; at most ${MAX_ZIP_ENTRIES} are allowed.`);
  }
  const files: ZipFile[] = [];
  const seen = new Set<string>();
  let total = 0;
  try {
    for (;;) {
      const entry = await nextEntry(zip);
      if (!entry) break;
      const rawName = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
      const isDirectory = rawName.endsWith('/') || rawName.endsWith('\\');
      const path = safePath(rawName);
      const mode = entry.externalFileAttributes >>> 16;
      const type = mode & S_IFMT;
      if (type === S_IFLNK) throw badRequest(`The zip is refused: the entry "${path}" is a symbolic link.`);
      if (type !== 0 && type !== S_IFREG && type !== S_IFDIR) {
        throw badRequest(`The zip is refused: the entry "${path}" is not a regular file or a folder.`);
      }
      if (entry.isEncrypted()) throw badRequest(`The zip is refused: the entry "${path}" is encrypted.`);
      if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
        throw badRequest(
          `The zip is refused: the entry "${path}" uses compression method ${entry.compressionMethod} (only stored and deflate).`,
        );
      }
      if (path === '') continue;
      const key = isDirectory || type === S_IFDIR ? `${path}/` : path;
      if (seen.has(key) || seen.has(isDirectory ? path : `${path}/`)) {
        throw badRequest(`The zip is refused: the name "${path}" appears twice.`);
      }
      seen.add(key);
      if (isDirectory || type === S_IFDIR) continue;
      total += entry.uncompressedSize;
      if (total > MAX_UNPACKED_BYTES) {
        throw badRequest(`The zip unpacks to more than ${MAX_UNPACKED_BYTES / 2 ** 20} MB.`);
      }
      if (entry.uncompressedSize > RATIO_FLOOR_BYTES && entry.uncompressedSize / Math.max(1, entry.compressedSize) > MAX_RATIO) {
        throw badRequest(
          `The zip is refused: the entry "${path}" inflates more than ${MAX_RATIO} times (${entry.compressedSize} to ${entry.uncompressedSize} bytes), as a zip bomb does.`,
        );
      }
      files.push({ path, data: await entryData(zip, entry), mode: type === 0 ? 0 : mode & 0o7777 });
    }
  } catch (error) {
    zip.close();
    if (error instanceof IsolaError) throw error;
    throw badRequest(`The zip cannot be read: ${(error as Error).message}.`);
  }
  return files;
}

function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | undefined> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      zip.off('entry', onEntry);
      zip.off('end', onEnd);
      zip.off('error', onError);
    };
    const onEntry = (entry: yauzl.Entry) => {
      cleanup();
      resolve(entry);
    };
    const onEnd = () => {
      cleanup();
      resolve(undefined);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    zip.on('entry', onEntry);
    zip.on('end', onEnd);
    zip.on('error', onError);
    zip.readEntry();
  });
}

async function entryData(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Uint8Array> {
  const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
    zip.openReadStream(entry, (error, opened) => (error ? reject(error) : resolve(opened))),
  );
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Packs files into a zip (deflated), each path as given. */
export function packZip(files: readonly { path: string; data: Uint8Array }[]): Buffer {
  const tree: Record<string, Uint8Array> = {};
  for (const file of files) tree[file.path] = file.data;
  return Buffer.from(zipSync(tree, { level: 6 }));
}
