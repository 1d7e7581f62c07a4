import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { buildAgent, bundleHash } from '../guest/bundle.js';

/** Bumped whenever the layout below changes, so that cached images are rebuilt. */
const LAYOUT_VERSION = 2;

export interface NodeRootfs {
  /** Absolute path of the root file system directory. */
  path: string;
  /** Inside the rootfs. */
  nodePath: string;
  agentPath: string;
}

/** The shared libraries the node binary needs, as `ldd` resolves them. */
function sharedLibraries(binary: string): string[] {
  const output = execFileSync('ldd', [binary], { encoding: 'utf8' });
  const libraries: string[] = [];
  for (const line of output.split('\n')) {
    const match = /=>\s+(\/\S+)|^\s*(\/\S+)\s+\(/.exec(line);
    const path = match?.[1] ?? match?.[2];
    if (path) libraries.push(path);
  }
  return libraries;
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

/**
 * A minimal read-only root file system for running the guest agent in a container: the host's
 * node binary, the libraries it links, the agent, an empty /tmp and the mount points. Built into
 * `<imagesDir>/node-<hash>` and reused until node, its libraries or the agent change.
 */
export function ensureNodeRootfs(imagesDir: string, runtimeDir: string): NodeRootfs {
  const node = realpathSync(process.execPath);
  const libraries = sharedLibraries(node);
  const nodeStat = statSync(node);
  const hash = createHash('sha256')
    .update(
      JSON.stringify({
        LAYOUT_VERSION,
        node,
        size: nodeStat.size,
        mtime: nodeStat.mtimeMs,
        libraries,
        agent: bundleHash('agent'),
      }),
    )
    .digest('hex')
    .slice(0, 16);
  const path = join(imagesDir, `node-${hash}`);
  const image = { path, nodePath: '/usr/bin/node', agentPath: '/app/agent.cjs' };
  if (existsSync(join(path, '.complete'))) return image;

  mkdirSync(imagesDir, { recursive: true, mode: 0o755 });
  const temp = `${path}.${process.pid}.tmp`;
  rmSync(temp, { recursive: true, force: true });
  for (const dir of ['usr/bin', 'app', 'tmp', 'proc', 'dev', 'sys', 'etc'])
    mkdirSync(join(temp, dir), { recursive: true, mode: 0o755 });
  chmodSync(join(temp, 'tmp'), 0o1777);
  place(node, join(temp, image.nodePath));
  for (const library of libraries) place(library, join(temp, library));
  place(buildAgent(runtimeDir), join(temp, image.agentPath));
  writeFileSync(
    join(temp, 'etc/passwd'),
    'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/sbin/nologin\n',
  );
  writeFileSync(join(temp, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(temp, 'etc/hosts'), '127.0.0.1 localhost\n');
  writeFileSync(join(temp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(path, { recursive: true, force: true });
  renameSync(temp, path);
  // Older images of this kind are of no further use.
  for (const entry of readdirSync(imagesDir)) {
    if (/^node-[0-9a-f]{16}$/.test(entry) && entry !== `node-${hash}`)
      rmSync(join(imagesDir, entry), { recursive: true, force: true });
  }
  return image;
}
