import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { processAlive as pidAlive } from '../sandbox/sweep.js';
import { runBuildTool } from './build-tool.js';

/**
 * A guest kernel specialised for running one function, after Lupine Linux (EuroSys 2020): Linux
 * from Debian's `linux-source`, configured from `tinyconfig` up with only what the agent and the
 * language runtimes use, everything built in (no modules, no initramfs), booted straight into the
 * root disk with the runtime as PID 1. What Lupine adds beyond configuration (Kernel Mode Linux,
 * running the application in ring 0) is not in Debian's sources and not done here.
 */

/**
 * The options set on top of `tinyconfig`, each checked in the final configuration (Kconfig drops
 * an option whose dependencies are missing without saying so). Grouped by who needs them.
 */
export const SPECIALISED_OPTIONS: readonly string[] = [
  // The machine: 64-bit, one CPU, booted by QEMU through the PVH entry point, KVM's clock and
  // paravirtual operations when it runs under KVM; 250 Hz (the command line's loops-per-jiffy
  // under TCG assume it).
  'CONFIG_64BIT=y',
  'CONFIG_SMP=n',
  'CONFIG_HYPERVISOR_GUEST=y',
  'CONFIG_PARAVIRT=y',
  'CONFIG_KVM_GUEST=y',
  'CONFIG_PVH=y',
  'CONFIG_HZ_250=y',
  // `uname -r` says which kernel a guest runs (6.1.x-isola).
  'CONFIG_LOCALVERSION="-isola"',
  // No PCI, no ACPI: the microvm machine's devices are virtio-mmio, found from the command line.
  'CONFIG_PCI=n',
  'CONFIG_ACPI=n',
  'CONFIG_MODULES=n',
  'CONFIG_BLK_DEV_INITRD=n',
  // The console: the kernel's messages (a panic, the OOM killer) on the serial port.
  'CONFIG_PRINTK=y',
  'CONFIG_BUG=y',
  'CONFIG_TTY=y',
  'CONFIG_SERIAL_8250=y',
  'CONFIG_SERIAL_8250_CONSOLE=y',
  'CONFIG_UNIX98_PTYS=y',
  'CONFIG_LEGACY_PTYS=n',
  'CONFIG_VT=n',
  // The generator seeded from the CPU's RDRAND at boot, as Debian's kernels are: without it,
  // Node.js's first getrandom() waits for entropy a quiet VM under TCG gathers for a minute.
  'CONFIG_RANDOM_TRUST_CPU=y',
  // Devices: the root disk, the agent's port, the network of a function with egress.
  'CONFIG_BLOCK=y',
  'CONFIG_BLK_DEV=y',
  'CONFIG_VIRTIO_MENU=y',
  'CONFIG_VIRTIO=y',
  'CONFIG_VIRTIO_MMIO=y',
  'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y',
  'CONFIG_VIRTIO_BLK=y',
  'CONFIG_VIRTIO_CONSOLE=y',
  'CONFIG_NETDEVICES=y',
  'CONFIG_NET_CORE=y',
  'CONFIG_VIRTIO_NET=y',
  // File systems: the read-only root disk, /proc, /sys, /dev without a udev, a tmpfs /tmp.
  'CONFIG_EXT4_FS=y',
  'CONFIG_PROC_FS=y',
  'CONFIG_PROC_SYSCTL=y',
  'CONFIG_SYSFS=y',
  'CONFIG_TMPFS=y',
  'CONFIG_DEVTMPFS=y',
  'CONFIG_DEVTMPFS_MOUNT=y',
  // What the runtimes call: Node.js (libuv's epoll, eventfd, timerfd, io_uring; V8's membarrier
  // and madvise), Python's and Java's threads and semaphores, ELF binaries and #! scripts, users.
  'CONFIG_BINFMT_ELF=y',
  'CONFIG_BINFMT_SCRIPT=y',
  'CONFIG_MULTIUSER=y',
  'CONFIG_FUTEX=y',
  'CONFIG_EPOLL=y',
  'CONFIG_SIGNALFD=y',
  'CONFIG_TIMERFD=y',
  'CONFIG_EVENTFD=y',
  'CONFIG_SHMEM=y',
  'CONFIG_AIO=y',
  'CONFIG_IO_URING=y',
  'CONFIG_ADVISE_SYSCALLS=y',
  'CONFIG_MEMBARRIER=y',
  'CONFIG_RSEQ=y',
  'CONFIG_FILE_LOCKING=y',
  'CONFIG_POSIX_TIMERS=y',
  'CONFIG_SYSVIPC=y',
  'CONFIG_FHANDLE=y',
  'CONFIG_INOTIFY_USER=y',
  // Sockets: the loopback a Lambda runtime reaches the agent on, IPv4 for egress.
  'CONFIG_NET=y',
  'CONFIG_INET=y',
  'CONFIG_UNIX=y',
];

/** Bumped whenever the build's steps change what they produce. */
const BUILD_VERSION = 1;
/** Debian's own build tools the kernel's make needs besides gcc and make (package names). */
const TOOLS = ['flex', 'bison', 'bc'];
export const KERNEL_SETUP_FIX = 'Install the kernel sources and build tools with `npx isola setup kernel`.';

export class KernelBuildError extends Error {}

export interface SpecialisedKernel {
  /** Uncompressed ELF with a PVH entry point. */
  vmlinux: string;
  /** `uname -r` in the guest, e.g. 6.1.192-isola */
  version: string;
  /** Identifies the sources and the configuration: part of every image's and snapshot's key. */
  hash: string;
  /** How many options are built in (`=y` in the final configuration). */
  builtIn: number;
}

/** Where built kernels are kept for every data dir of this user: `$XDG_CACHE_HOME/isola/kernels` or `~/.cache/isola/kernels`. */
export function kernelCacheDir(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CACHE_HOME?.startsWith('/') ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'isola', 'kernels');
}

/** The newest `linux-source-<version>.tar.xz` Debian's `linux-source` package put in /usr/src. */
export function findLinuxSource(srcDir = '/usr/src'): { tarball: string; version: string } | undefined {
  if (!existsSync(srcDir)) return undefined;
  const found = readdirSync(srcDir)
    .map((name) => /^linux-source-(\d+\.\d+)\.tar\.xz$/.exec(name))
    .filter((match): match is RegExpExecArray => match !== null)
    .sort((a, b) => (a[1] as string).localeCompare(b[1] as string, undefined, { numeric: true }));
  const newest = found.at(-1);
  return newest ? { tarball: join(srcDir, newest[0]), version: newest[1] as string } : undefined;
}

/** Why a specialised kernel cannot be built here, or undefined when it can. */
export function missingForKernelBuild(): string | undefined {
  if (!findLinuxSource()) return 'no /usr/src/linux-source-*.tar.xz (Debian package linux-source)';
  for (const tool of ['gcc', 'make', ...TOOLS]) {
    if (!['/usr/bin', '/bin'].some((dir) => existsSync(join(dir, tool)))) return `${tool} is not installed`;
  }
  // objtool, which every x86-64 build runs, is linked against libelf.
  if (!existsSync('/usr/include/libelf.h')) return 'libelf-dev is not installed';
  return undefined;
}

function run(command: string, args: string[], cwd: string, log?: string): string {
  return runBuildTool(command, args, { cwd, ...(log ? { log } : {}), error: KernelBuildError });
}

function lockAgeMs(lock: string): number {
  try {
    return Date.now() - statSync(lock).mtimeMs;
  } catch {
    return 0;
  }
}

function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Another process building the same kernel holds `<dir>.lock` (a directory with its pid): wait
 * for it rather than build twice on two cores. A lock whose process is gone is taken over.
 */
export function withBuildLock<T>(dir: string, done: () => T | undefined, build: () => T): T {
  const lock = `${dir}.lock`;
  for (;;) {
    const ready = done();
    if (ready) return ready;
    try {
      mkdirSync(lock);
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(lock, 'pid'), 'utf8'));
      } catch {}
      // A lock without a pid file is being taken (a moment) or was left by a process that died taking it.
      const stale = holder > 0 ? !pidAlive(holder) : lockAgeMs(lock) > 10_000;
      if (stale) rmSync(lock, { recursive: true, force: true });
      pause(1000);
      continue;
    }
    try {
      writeFileSync(join(lock, 'pid'), String(process.pid));
      return done() ?? build();
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
}

/** Where the kernel of these sources and this configuration is (or will be) in the cache. */
function cacheEntry(source: { tarball: string; version: string }, cacheDir: string) {
  const { size, mtimeMs } = statSync(source.tarball);
  const hash = createHash('sha256')
    .update(JSON.stringify({ BUILD_VERSION, tarball: source.tarball, size, mtimeMs, options: SPECIALISED_OPTIONS }))
    .digest('hex')
    .slice(0, 16);
  const dir = join(cacheDir, `specialised-${source.version}-${hash}`);
  const complete = (): SpecialisedKernel | undefined => {
    if (!existsSync(join(dir, '.complete'))) return undefined;
    return JSON.parse(readFileSync(join(dir, '.complete'), 'utf8')) as SpecialisedKernel;
  };
  return { hash, dir, complete };
}

/** For `isola doctor`: whether the specialised kernel is built, can be built here, or why not. */
export function specialisedKernelStatus(cacheDir: string): {
  state: 'built' | 'buildable' | 'unavailable';
  detail: string;
} {
  const missing = missingForKernelBuild();
  if (missing) return { state: 'unavailable', detail: `cannot be built: ${missing}. ${KERNEL_SETUP_FIX}` };
  const source = findLinuxSource() as { tarball: string; version: string };
  const built = cacheEntry(source, cacheDir).complete();
  if (built) return { state: 'built', detail: `${built.version}, ${built.builtIn} options built in: ${built.vmlinux}` };
  return {
    state: 'buildable',
    detail: `can be built from ${source.tarball} (minutes, once per host, on the first server with ISOLA_MICROVM_GUEST=specialised)`,
  };
}

/**
 * The specialised kernel, built once per sources and configuration into the kernel cache (minutes
 * on two cores) and reused by every data dir. Synchronous: run it in a child process.
 */
export function ensureSpecialisedKernel(cacheDir: string): SpecialisedKernel {
  const missing = missingForKernelBuild();
  if (missing) throw new KernelBuildError(`A specialised kernel cannot be built: ${missing}. ${KERNEL_SETUP_FIX}`);
  const source = findLinuxSource() as { tarball: string; version: string };
  mkdirSync(cacheDir, { recursive: true });
  const { hash, dir, complete } = cacheEntry(source, cacheDir);
  return withBuildLock(dir, complete, () => {
    // What a build that died left (the lock is ours: none is running).
    for (const entry of readdirSync(cacheDir)) {
      if (entry.startsWith(`specialised-${source.version}-${hash}.`) && entry.endsWith('.tmp'))
        rmSync(join(cacheDir, entry), { recursive: true, force: true });
    }
    const temp = `${dir}.${process.pid}.tmp`;
    mkdirSync(temp, { recursive: true });
    const log = join(temp, 'build.log');
    try {
      run('tar', ['-xaf', source.tarball, '-C', temp], temp);
      const tree = join(temp, `linux-source-${source.version}`);
      run('make', ['-s', 'tinyconfig'], tree, log);
      writeFileSync(join(temp, 'specialised.config'), `${SPECIALISED_OPTIONS.join('\n')}\n`);
      run('scripts/kconfig/merge_config.sh', ['-m', '.config', join(temp, 'specialised.config')], tree, log);
      run('make', ['-s', 'olddefconfig'], tree, log);
      const config = readFileSync(join(tree, '.config'), 'utf8');
      const dropped = SPECIALISED_OPTIONS.filter((option) => {
        const [name, value] = option.split('=') as [string, string];
        return value === 'n' ? new RegExp(`^${name}=[ym]$`, 'm').test(config) : !config.includes(`\n${option}\n`);
      });
      if (dropped.length > 0) throw new KernelBuildError(`the kernel's configuration did not take ${dropped.join(', ')}`);
      const jobs = String(Math.max(1, availableParallelism()));
      // KBUILD_BUILD_* make the build reproducible: the same sources give the same kernel (make
      // passes variables set on its command line on to the scripts that read them).
      run(
        'make',
        ['-s', `-j${jobs}`, 'KBUILD_BUILD_USER=isola', 'KBUILD_BUILD_HOST=isola', 'KBUILD_BUILD_TIMESTAMP=1970-01-01', 'vmlinux'],
        tree,
        log,
      );
      const kernelRelease = run('make', ['-s', 'kernelrelease'], tree).trim();
      copyFileSync(join(tree, 'vmlinux'), join(temp, 'vmlinux'));
      copyFileSync(join(tree, '.config'), join(temp, 'config'));
      run('strip', ['--strip-debug', join(temp, 'vmlinux')], temp);
      rmSync(tree, { recursive: true, force: true });
      const kernel: SpecialisedKernel = {
        vmlinux: join(dir, 'vmlinux'),
        version: kernelRelease,
        hash,
        builtIn: (config.match(/^CONFIG_\w+=y$/gm) ?? []).length,
      };
      writeFileSync(join(temp, '.complete'), `${JSON.stringify(kernel)}\n`);
      rmSync(dir, { recursive: true, force: true });
      renameSync(temp, dir);
      return kernel;
    } catch (error) {
      rmSync(temp, { recursive: true, force: true });
      if (error instanceof KernelBuildError) throw error;
      const stderr = String((error as { stderr?: Buffer | string }).stderr ?? '').trim();
      throw new KernelBuildError(`building the kernel failed: ${stderr.slice(-600) || (error as Error).message}`);
    }
  });
}
