import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBuildTool } from './build-tool.js';
import type { NodeRootfs } from './node-rootfs.js';
import type { ImageName } from './runtimes.js';
import { ensureSpecialisedKernel } from './specialised-kernel.js';

/** Bumped whenever the image layout or the init script changes. */
const LAYOUT_VERSION = 5;
const BUSYBOX = '/bin/busybox';
const DEBUGFS = '/sbin/debugfs';
// Loaded in this order: each needs the ones before it. The rest the microvm machine needs (ext4,
// the console) is built into Debian's cloud kernel.
// failover, net_failover and virtio_net give a VM with egress its network device; the virtio_pci
// ones serve the q35 machine (isolation vm), whose devices are on PCI.
const MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_blk',
  'virtio_console',
  'failover',
  'net_failover',
  'virtio_net',
];

/** Which kernel a microVM guest boots: Debian's cloud kernel, or one specialised for functions. */
export type Guest = 'debian' | 'specialised';

export interface MicrovmImage {
  /** Which root file system the root disk holds (see NodeRootfs.name). */
  name: ImageName;
  /** `debian` (Debian's cloud kernel, modules in an initramfs) or `specialised` (see specialised-kernel.ts). */
  guest: Guest;
  /** Uncompressed kernel ELF with a PVH entry point: QEMU boots it directly. */
  kernel: string;
  kernelVersion: string;
  /** The Debian guest's initramfs; the specialised guest boots without one. */
  initramfs?: string;
  /** Read-only ext4 disk with node, its libraries and the agent. */
  rootDisk: string;
  /** How the kernel is started on this disk (part of the hash: a snapshot holds a booted kernel). */
  bootArgs: string[];
  /** Identifies the whole image; snapshots are only valid for the image they were taken of. */
  hash: string;
}

export class ImageBuildError extends Error {}

function run(command: string, args: string[], cwd?: string): string {
  return runBuildTool(command, args, { ...(cwd ? { cwd } : {}), error: ImageBuildError });
}

/** The cloud kernel package apt would install now, e.g. linux-image-6.1.0-56-cloud-amd64. */
function cloudKernelPackage(): string {
  const depends = run('apt-cache', ['depends', 'linux-image-cloud-amd64']);
  const match = /linux-image-(\d[^\s]*-cloud-amd64)/.exec(depends);
  if (!match) throw new ImageBuildError('apt knows no linux-image-cloud-amd64 kernel; is the Debian archive reachable?');
  return `linux-image-${match[1]}`;
}

/**
 * Fetches Debian's cloud kernel with apt (it is not installed on the host), unpacks it and turns
 * its bzImage into the uncompressed ELF, whose PVH note lets QEMU boot it without firmware.
 */
function ensureKernel(imagesDir: string): { dir: string; version: string } {
  // A kernel unpacked before a module was added to MODULES is unpacked again.
  const existing = readdirSync(imagesDir).filter(
    (e) =>
      /^kernel-.*cloud-amd64$/.test(e) &&
      existsSync(join(imagesDir, e, '.complete')) &&
      MODULES.every((m) => existsSync(join(imagesDir, e, 'modules', `${m}.ko`))),
  );
  if (existing.length > 0) {
    const dir = join(imagesDir, existing.sort().at(-1) as string);
    return { dir, version: readFileSync(join(dir, '.complete'), 'utf8').trim() };
  }
  const pkg = cloudKernelPackage();
  const version = pkg.replace('linux-image-', '');
  // apt downloads as its own user (_apt), which cannot enter a data dir private to the server:
  // the package goes to a directory of its own under the temporary directory.
  const work = mkdtempSync(join(tmpdir(), 'isola-kernel-download-'));
  try {
    chmodSync(work, 0o755);
    run('apt-get', ['download', '-q', pkg], work);
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new ImageBuildError(`apt-get download ${pkg} produced no package`);
    run('dpkg-deb', ['-x', deb, 'x'], work);
    const bzImage = readFileSync(join(work, 'x', 'boot', `vmlinuz-${version}`));
    // The payload is lz4 (legacy frame); decompressing from its magic yields the ELF kernel.
    const lz4Magic = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
    const at = bzImage.indexOf(lz4Magic);
    if (at < 0) throw new ImageBuildError('the kernel payload is not lz4-compressed; cannot extract vmlinux');
    writeFileSync(join(work, 'payload.lz4'), bzImage.subarray(at));
    let vmlinux: Buffer;
    try {
      vmlinux = execFileSync('lz4', ['-dcq', 'payload.lz4'], {
        cwd: work,
        stdio: ['ignore', 'pipe', 'ignore'],
        maxBuffer: 512 * 1024 * 1024,
      });
    } catch (error) {
      // lz4 exits non-zero over the bytes that follow the frame; what it decompressed is complete.
      vmlinux = (error as { stdout?: Buffer }).stdout ?? Buffer.alloc(0);
    }
    writeFileSync(join(work, 'vmlinux'), vmlinux);
    const elf = readFileSync(join(work, 'vmlinux')).subarray(0, 4);
    if (elf.toString('latin1') !== '\x7fELF') throw new ImageBuildError('the extracted kernel is not an ELF file');
    const dir = join(imagesDir, `kernel-${version}`);
    mkdirSync(join(dir, 'modules'), { recursive: true });
    // Copied, not renamed: the temporary directory may be another file system.
    copyFileSync(join(work, 'vmlinux'), join(dir, 'vmlinux'));
    const moduleRoot = join(work, 'x', 'lib', 'modules', version, 'kernel');
    const found = run('find', [moduleRoot, '-name', '*.ko']).split('\n');
    for (const module of MODULES) {
      const path = found.find((p) => p.endsWith(`/${module}.ko`));
      if (!path) throw new ImageBuildError(`the kernel package has no ${module}.ko`);
      copyFileSync(path, join(dir, 'modules', `${module}.ko`));
    }
    writeFileSync(join(dir, '.complete'), `${version}\n`);
    return { dir, version };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * What every guest's init does once the root disk is mounted at `root` (`/mnt` under the
 * initramfs, `` when the kernel mounted it as /): find the virtio-serial port named "isola", read
 * the heap limit (isola.heap=MB, so that one image serves every memory size) and the network
 * (isola.net=<address/prefix>,<gateway>) from the kernel command line, bring up the loopback (a
 * Lambda custom runtime reaches the Runtime API the agent serves on 127.0.0.1) and, for a VM with
 * egress, eth0. The agent then runs as PID 1 (`exec`).
 */
function agentStart(root: string, exec: string): string {
  return `port=
i=0
while [ -z "$port" ] && [ $i -lt 500 ]; do
  for d in ${root}/sys/class/virtio-ports/*; do
    [ "$($B cat $d/name 2>/dev/null)" = isola ] && port=/dev/$($B basename $d)
  done
  [ -z "$port" ] && $B usleep 10000
  i=$((i+1))
done
heap=128
net=
for arg in $($B cat ${root}/proc/cmdline); do
  case $arg in isola.heap=*) heap=\${arg#isola.heap=};; isola.net=*) net=\${arg#isola.net=};; esac
done
$B ip link set lo up || $B echo "isola init: lo could not be brought up"
if [ -n "$net" ]; then
  i=0; while ! $B ip link show eth0 >/dev/null 2>&1 && [ $i -lt 500 ]; do $B usleep 10000; i=$((i+1)); done
  $B ip addr add \${net%,*} dev eth0 && $B ip link set eth0 up && $B ip route add default via \${net#*,} ||
    $B echo "isola init: eth0 could not be configured"
fi
exec ${exec} /usr/bin/node --max-old-space-size=$heap /app/agent.cjs --channel=$port
`;
}

// What a distribution's init links in /dev: runtimes open /dev/fd/3 (Java's launcher) and /dev/stdin.
const DEV_LINKS =
  '$B ln -s /proc/self/fd /dev/fd; $B ln -s fd/0 /dev/stdin; $B ln -s fd/1 /dev/stdout; $B ln -s fd/2 /dev/stderr';

/**
 * The init of the Debian guest's initramfs: load the virtio modules, mount the read-only root
 * disk, give it a /tmp, and start the agent in it.
 */
const INIT_SCRIPT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
${DEV_LINKS}
# The kernel starts init without stdio when the initramfs has no /dev/console: give it the
# console, so that what crashes (a V8 out-of-memory abort, the kernel's OOM killer) is on record.
exec </dev/console >/dev/console 2>&1
for m in ${MODULES.join(' ')}; do $B insmod /lib/modules/$m.ko || $B echo "isola init: insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do $B usleep 10000; i=$((i+1)); done
$B mount -t ext4 -o ro,noatime /dev/vda /mnt || { $B echo "isola init: no root disk"; exit 1; }
$B mount -t tmpfs -o mode=1777,size=64m tmpfs /mnt/tmp
$B mount --move /dev /mnt/dev
$B mount --move /proc /mnt/proc
$B mount --move /sys /mnt/sys
${agentStart('/mnt', '$B chroot /mnt')}`;

/** Where the specialised guest's init and its busybox are on the root disk. */
export const SPECIALISED_INIT = '/isola/init';
const SPECIALISED_BUSYBOX = '/isola/busybox';

/**
 * The specialised guest's init, on the root disk itself: the kernel has every driver built in,
 * mounted the disk as / and devtmpfs on /dev before starting it, so it only mounts /proc, /sys
 * and /tmp before the agent replaces it as PID 1.
 */
const SPECIALISED_INIT_SCRIPT = `#!${SPECIALISED_BUSYBOX} sh
B=${SPECIALISED_BUSYBOX}
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
${DEV_LINKS}
exec </dev/console >/dev/console 2>&1
$B mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp
${agentStart('', '')}`;

/** The Debian guest starts in its initramfs, which mounts the root disk. */
export const DEBIAN_BOOT_ARGS = ['rdinit=/init'];

/**
 * The specialised guest mounts its root disk itself (every driver built in) and starts the init
 * on it. Without ACPI it has no clocksource but the TSC and jiffies, and the clocksource watchdog
 * took a busy guest's TSC (under TCG) for unstable and fell back to jiffies: a function's clock
 * then ticked in 4 ms steps. The TSC is what Debian's kernel keeps, so it is declared reliable.
 */
export const SPECIALISED_BOOT_ARGS = ['root=/dev/vda', 'rootfstype=ext4', 'ro', `init=${SPECIALISED_INIT}`, 'tsc=reliable'];

/**
 * The microVM guest, one of two. `debian`: Debian's cloud kernel, a busybox initramfs that loads
 * the virtio modules, and a read-only ext4 root disk with node and the agent (the container
 * image's files, a language's runtime included). `specialised`: a kernel built from Debian's
 * linux-source with every driver built in (see specialised-kernel.ts), no initramfs, and the same
 * root disk with an init of its own. Built into `<imagesDir>/microvm-<hash>` (the Node.js image on
 * Debian's kernel), `microvm-<language>-<hash>`, `microvm-specialised[-<language>]-<hash>`, and
 * reused until the kernel, the init or the root files change.
 */
export function ensureMicrovmImage(
  imagesDir: string,
  rootfs: NodeRootfs,
  guest: Guest = 'debian',
  kernelCacheDir?: string,
): MicrovmImage {
  mkdirSync(imagesDir, { recursive: true, mode: 0o755 });
  const tools =
    guest === 'debian' ? [BUSYBOX, '/usr/bin/lz4', '/usr/bin/cpio', '/sbin/mke2fs'] : [BUSYBOX, '/sbin/mke2fs', DEBUGFS];
  for (const tool of tools) {
    if (!existsSync(tool)) throw new ImageBuildError(`${tool} is missing (npx isola setup microvm)`);
  }
  const debianKernel = guest === 'debian' ? ensureKernel(imagesDir) : undefined;
  const kernel = debianKernel
    ? { vmlinux: join(debianKernel.dir, 'vmlinux'), version: debianKernel.version, key: debianKernel.version }
    : specialisedKernel(kernelCacheDir);
  const busyboxSize = statSync(BUSYBOX).size;
  const init = guest === 'debian' ? INIT_SCRIPT : SPECIALISED_INIT_SCRIPT;
  const bootArgs = guest === 'debian' ? DEBIAN_BOOT_ARGS : SPECIALISED_BOOT_ARGS;
  const hash = createHash('sha256')
    .update(JSON.stringify({ LAYOUT_VERSION, guest, kernel: kernel.key, init, bootArgs, rootfs: rootfs.path, busyboxSize }))
    .digest('hex')
    .slice(0, 16);
  const prefix = [
    'microvm',
    ...(guest === 'specialised' ? ['specialised'] : []),
    ...(rootfs.name === 'nodejs' ? [] : [rootfs.name]),
  ].join('-');
  const dir = join(imagesDir, `${prefix}-${hash}`);
  const image: MicrovmImage = {
    name: rootfs.name,
    guest,
    kernel: kernel.vmlinux,
    kernelVersion: kernel.version,
    ...(guest === 'debian' ? { initramfs: join(dir, 'initramfs.cpio') } : {}),
    rootDisk: join(dir, 'root.ext4'),
    bootArgs,
    hash,
  };
  if (existsSync(join(dir, '.complete'))) return image;

  const temp = `${dir}.${process.pid}.tmp`;
  rmSync(temp, { recursive: true, force: true });
  mkdirSync(temp, { recursive: true });
  if (debianKernel) writeInitramfs(temp, debianKernel.dir);
  // Room for the files plus a fifth; no journal on a disk that is only ever read.
  const sizeMb = Math.ceil(Number(run('du', ['-sm', '--apparent-size', rootfs.path]).split('\t')[0]) * 1.2 + 16);
  const rootDisk = join(temp, 'root.ext4');
  run('mke2fs', ['-q', '-t', 'ext4', '-d', rootfs.path, '-L', 'isola', '-O', '^has_journal', '-m', '0', rootDisk, `${sizeMb}M`]);
  if (guest === 'specialised') {
    // The init and its busybox go onto the disk the root file system was made into: copying
    // the root file system aside to add two files would cost its whole size again.
    writeFileSync(join(temp, 'init'), SPECIALISED_INIT_SCRIPT, { mode: 0o755 });
    // debugfs splits its commands at spaces and a data dir's path may have some: it runs in the
    // image's directory and is given names relative to it.
    const commands = [
      'mkdir /isola',
      `write ${BUSYBOX} ${SPECIALISED_BUSYBOX}`,
      `write init ${SPECIALISED_INIT}`,
      `sif ${SPECIALISED_BUSYBOX} mode 0100755`,
      `sif ${SPECIALISED_INIT} mode 0100755`,
    ];
    writeFileSync(join(temp, 'debugfs.commands'), `${commands.join('\n')}\n`);
    run(DEBUGFS, ['-w', '-f', 'debugfs.commands', 'root.ext4'], temp);
    // debugfs reports a failed command on its output but exits 0: check that both files are there.
    const listing = run(DEBUGFS, ['-R', 'ls -l /isola', 'root.ext4'], temp);
    for (const name of ['init', 'busybox']) {
      if (!new RegExp(`100755 .* ${name}\\s*$`, 'm').test(listing))
        throw new ImageBuildError(`debugfs did not put /isola/${name} on the root disk: ${listing.trim()}`);
    }
    rmSync(join(temp, 'init'));
    rmSync(join(temp, 'debugfs.commands'));
  }
  writeFileSync(join(temp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(temp, dir);
  for (const entry of readdirSync(imagesDir)) {
    if (new RegExp(`^${prefix}-[0-9a-f]{16}$`).test(entry) && entry !== `${prefix}-${hash}`)
      rmSync(join(imagesDir, entry), { recursive: true, force: true });
  }
  return image;
}

function specialisedKernel(cacheDir: string | undefined): { vmlinux: string; version: string; key: string } {
  if (!cacheDir) throw new ImageBuildError('the specialised guest needs the kernel cache directory');
  const { vmlinux, version, hash } = ensureSpecialisedKernel(cacheDir);
  return { vmlinux, version, key: `${version} ${hash}` };
}

/** The Debian guest's initramfs: busybox, the virtio modules, the init. */
function writeInitramfs(temp: string, kernelDir: string): void {
  const initrd = join(temp, 'initrd');
  for (const sub of ['bin', 'lib/modules', 'proc', 'sys', 'dev', 'mnt']) mkdirSync(join(initrd, sub), { recursive: true });
  copyFileSync(BUSYBOX, join(initrd, 'bin', 'busybox'));
  chmodSync(join(initrd, 'bin', 'busybox'), 0o755);
  for (const module of MODULES)
    copyFileSync(join(kernelDir, 'modules', `${module}.ko`), join(initrd, 'lib', 'modules', `${module}.ko`));
  writeFileSync(join(initrd, 'init'), INIT_SCRIPT, { mode: 0o755 });
  const files = run('find', ['.'], initrd);
  const cpio = execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: initrd, input: files, maxBuffer: 64 * 1024 * 1024 });
  writeFileSync(join(temp, 'initramfs.cpio'), cpio);
  rmSync(initrd, { recursive: true, force: true });
}
