import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { buildAgent, bundleHash } from '../guest/bundle.js';
import { buildReseedHelper, canBuildReseedHelper, RESEED_KERNEL_PATH, RESEED_KERNEL_SOURCE } from './reseed-kernel.js';
import { type ImageName, type LanguageRuntime, runtimeLayout } from './runtimes.js';

const MKFIFO = '/usr/bin/mkfifo';

/** Bumped whenever the layout below changes, so that cached images are rebuilt. */
const LAYOUT_VERSION = 5;
/** Changes whenever a Debian package is installed, upgraded or removed: a runtime's libraries may have moved. */
const DPKG_STATUS = '/var/lib/dpkg/status';

export interface NodeRootfs {
  /** Which image: `nodejs` (node and the agent) or a language's (node, the agent and that runtime). */
  name: ImageName;
  /** Absolute path of the root file system directory. */
  path: string;
  /** Inside the rootfs. */
  nodePath: string;
  agentPath: string;
}

/** The shared libraries the binaries need, as `ldd` resolves them; libraries it cannot find are left out. */
function sharedLibraries(binaries: readonly string[]): string[] {
  const libraries = new Set<string>();
  // A few hundred files per call: ldd takes many at once and prints each one's libraries in turn.
  for (let i = 0; i < binaries.length; i += 200) {
    let output: string;
    try {
      output = execFileSync('ldd', binaries.slice(i, i + 200), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (error) {
      // ldd exits non-zero when one of them is static; the others' output is still there.
      output = String((error as { stdout?: string }).stdout ?? '');
    }
    for (const line of output.split('\n')) {
      const match = /=>\s+(\/\S+)|^\s+(\/\S+)\s+\(/.exec(line);
      const path = match?.[1] ?? match?.[2];
      if (path) libraries.add(path);
    }
  }
  return [...libraries].sort();
}

function isElf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(4);
    return readSync(fd, head, 0, 4, 0) === 4 && head.toString('latin1') === '\x7fELF';
  } finally {
    closeSync(fd);
  }
}

/** Links a file into the image, or copies it across file systems. */
function place(source: string, target: string): void {
  mkdirSync(dirname(target), { recursive: true });
  const real = realpathSync(source);
  try {
    linkSync(real, target);
  } catch {
    copyFileSync(real, target);
  }
}

interface FileEntry {
  /** Where it goes in the image (the host path it was found at). */
  path: string;
  size: number;
  mtimeMs: number;
}

/**
 * Every regular file under the runtime's paths, symbolic links followed (Debian links many of a
 * runtime's files to /etc), minus what the layout excludes. Links that lead nowhere are skipped.
 */
function runtimeFiles(runtime: LanguageRuntime): { files: FileEntry[]; links: [string, string][] } {
  const layout = runtimeLayout(runtime);
  const files: FileEntry[] = [];
  // A directory reached twice through links (a link to `.`) is walked once.
  const walked = new Set<string>();
  const visit = (path: string, depth: number): void => {
    if (layout.exclude?.test(path) || depth > 32) return;
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(path);
    } catch {
      return;
    }
    if (stat.isDirectory()) {
      const real = realpathSync(path);
      if (walked.has(real)) return;
      walked.add(real);
      for (const entry of readdirSync(path).sort()) visit(join(path, entry), depth + 1);
    } else if (stat.isFile()) {
      files.push({ path, size: stat.size, mtimeMs: stat.mtimeMs });
    }
  };
  for (const path of layout.paths) visit(path, 0);
  return { files, links: layout.links };
}

function dpkgState(): string {
  try {
    const stat = statSync(DPKG_STATUS);
    return `${stat.size} ${stat.mtimeMs}`;
  } catch {
    return '';
  }
}

/**
 * A minimal read-only root file system for running the guest agent in a container: the host's
 * node binary, the libraries it links, the agent, an empty /tmp and the mount points. Built into
 * `<imagesDir>/node-<hash>` and reused until node, its libraries or the agent change.
 */
export function ensureNodeRootfs(imagesDir: string, runtimeDir: string): NodeRootfs {
  return ensureRootfs(imagesDir, runtimeDir, 'nodejs');
}

/**
 * The root file system of an image: what the Node.js image has, plus the named language
 * runtimes at their host paths and every shared library they link. Built into
 * `<imagesDir>/<prefix>-<hash>` (prefix `node` for the Node.js image, the image's name otherwise)
 * and reused until node, the agent, a runtime's files or the installed packages change.
 * `runtimes` defaults to the image's own; naming several makes one image for all of them.
 */
export function ensureRootfs(
  imagesDir: string,
  runtimeDir: string,
  name: ImageName | 'all',
  runtimes: readonly LanguageRuntime[] = name === 'nodejs' || name === 'all' ? [] : [name],
): NodeRootfs {
  const node = realpathSync(process.execPath);
  // mkfifo: the agent hands an ActionLoop launcher a FIFO as fd 3 (a socket there breaks any
  // runtime that opens /dev/fd/3, as Java's does).
  const nodeLibraries = sharedLibraries([node, MKFIFO]);
  const nodeStat = statSync(node);
  const found = runtimes.map(runtimeFiles);
  const hash = createHash('sha256')
    .update(
      JSON.stringify({
        LAYOUT_VERSION,
        node,
        size: nodeStat.size,
        mtime: nodeStat.mtimeMs,
        libraries: nodeLibraries,
        agent: bundleHash('agent'),
        runtimes: found,
        packages: runtimes.length > 0 ? dpkgState() : '',
        reseed: canBuildReseedHelper() ? RESEED_KERNEL_SOURCE : '',
      }),
    )
    .digest('hex')
    .slice(0, 16);
  const prefix = name === 'nodejs' ? 'node' : name;
  const path = join(imagesDir, `${prefix}-${hash}`);
  const image: NodeRootfs = {
    name: name === 'all' ? 'nodejs' : name,
    path,
    nodePath: '/usr/bin/node',
    agentPath: '/app/agent.cjs',
  };
  if (existsSync(join(path, '.complete'))) return image;

  mkdirSync(imagesDir, { recursive: true, mode: 0o755 });
  const temp = `${path}.${process.pid}.tmp`;
  rmSync(temp, { recursive: true, force: true });
  for (const dir of ['usr/bin', 'app', 'tmp', 'proc', 'dev', 'sys', 'etc'])
    mkdirSync(join(temp, dir), { recursive: true, mode: 0o755 });
  chmodSync(join(temp, 'tmp'), 0o1777);
  place(node, join(temp, image.nodePath));
  place(MKFIFO, join(temp, MKFIFO));
  const elves: string[] = [];
  for (const { files, links } of found) {
    for (const file of files) {
      place(file.path, join(temp, file.path));
      if (file.size > 4 && isElf(file.path)) elves.push(file.path);
    }
    for (const [link, target] of links) {
      mkdirSync(dirname(join(temp, link)), { recursive: true });
      rmSync(join(temp, link), { force: true });
      symlinkSync(target, join(temp, link));
    }
  }
  for (const library of new Set([...nodeLibraries, ...sharedLibraries(elves)])) {
    if (!existsSync(join(temp, library))) place(library, join(temp, library));
  }
  place(buildAgent(runtimeDir), join(temp, image.agentPath));
  buildReseedHelper(join(temp, RESEED_KERNEL_PATH));
  writeFileSync(
    join(temp, 'etc/passwd'),
    'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/sbin/nologin\n',
  );
  writeFileSync(join(temp, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(temp, 'etc/hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(temp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(path, { recursive: true, force: true });
  renameSync(temp, path);
  // Older builds of this image are of no further use.
  for (const entry of readdirSync(imagesDir)) {
    if (new RegExp(`^${prefix}-[0-9a-f]{16}$`).test(entry) && entry !== `${prefix}-${hash}`)
      rmSync(join(imagesDir, entry), { recursive: true, force: true });
  }
  return image;
}
