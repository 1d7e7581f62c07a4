import { basename, extname } from 'node:path';
import { unzipSync } from 'fflate';

/** What a file's extension says it is. */
const KIND_BY_EXTENSION: Record<string, string> = {
  '.js': 'nodejs:20',
  '.cjs': 'nodejs:20',
  // The server tells an ES module or TypeScript from CommonJS and compiles them.
  '.mjs': 'nodejs:20',
  '.ts': 'nodejs:20',
  '.py': 'python:3',
  '.java': 'java:17',
  '.jar': 'java:17',
  '.go': 'go:1.19',
  '.rb': 'ruby:3.1',
  '.php': 'php:8.2',
  '.wasm': 'wasm',
};

/** What is in a zip says its kind: OpenWhisk's layouts. */
const KIND_BY_ZIP: readonly { kind: string; holds: (names: readonly string[]) => boolean; what: string }[] = [
  { kind: 'nodejs:20', holds: (names) => names.includes('package.json'), what: 'package.json' },
  { kind: 'python:3', holds: (names) => names.includes('__main__.py'), what: '__main__.py' },
  { kind: 'native', holds: (names) => names.includes('exec') || names.includes('bootstrap'), what: 'exec or bootstrap' },
  {
    kind: 'java:17',
    holds: (names) => names.some((n) => n.endsWith('.class') || n.startsWith('META-INF/')),
    what: '.class files or META-INF/',
  },
  { kind: 'go:1.19', holds: (names) => names.some((n) => n === 'go.mod' || /^[^/]+\.go$/.test(n)), what: 'go.mod or .go files' },
];

export const isZipContent = (bytes: Uint8Array) =>
  bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5) && (bytes[3] === 4 || bytes[3] === 6);
export const isElfContent = (bytes: Uint8Array) =>
  bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;

/** The names in a zip, read from its directory without inflating anything. */
function zipNames(content: Uint8Array): string[] {
  const names: string[] = [];
  unzipSync(content, {
    filter: (file) => {
      names.push(file.name.replace(/^\.\//, ''));
      return false;
    },
  });
  return names;
}

function kindOfZip(file: string, content: Uint8Array): string {
  let names: string[];
  try {
    names = zipNames(content);
  } catch (error) {
    throw new Error(`${basename(file)} is not a readable zip: ${(error as Error).message}`);
  }
  const found = KIND_BY_ZIP.find((rule) => rule.holds(names));
  if (found) return found.kind;
  throw new Error(
    `Cannot tell which kind ${basename(file)} is: a zip is read by what is at its top (${KIND_BY_ZIP.map((r) => `${r.what}: ${r.kind}`).join('; ')}). ` +
      'Say which with --kind.',
  );
}

/** The kind to deploy a file as: --kind, else its extension, else its content (a zip, an ELF executable). */
export function inferKind(file: string, content: Uint8Array, kind?: string): string {
  if (kind) return kind;
  const extension = extname(file).toLowerCase();
  if (extension === '.zip' || (!KIND_BY_EXTENSION[extension] && isZipContent(content))) return kindOfZip(file, content);
  const known = KIND_BY_EXTENSION[extension];
  if (known) return known;
  if (isElfContent(content)) return 'native';
  const extensions = Object.entries(KIND_BY_EXTENSION)
    .map(([ext, k]) => `${ext} (${k})`)
    .join(', ');
  throw new Error(
    `Cannot tell how to run ${basename(file)}: isola deploys ${extensions}, a .zip (by what it holds) and Linux executables (native). ` +
      'If this file is one of those kinds, say which with --kind.',
  );
}

/** What goes in exec for a file: a zip, an executable or a wasm module base64, a source as text. */
export function execCodeOf(kind: string, content: Buffer): { code: string; binary: boolean } {
  const binary = kind === 'wasm' || isZipContent(content) || isElfContent(content);
  return { code: binary ? content.toString('base64') : content.toString('utf8'), binary };
}
