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
import type { NodeRootfs } from './node-rootfs.js';
import type { ImageName } from './runtimes.js';

/** Bumped whenever the image layout or the init script changes. */
const LAYOUT_VERSION = 5;
const BUSYBOX = '/bin/busybox';
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

export interface MicrovmImage {
  /** Which root file system the root disk holds (see NodeRootfs.name). */
  name: ImageName;
  /** Uncompressed kernel ELF with a PVH entry point: QEMU boots it directly. */
  kernel: string;
  kernelVersion: string;
  initramfs: string;
  /** Read-only ext4 disk with node, its libraries and the agent. */
  rootDisk: string;
  /** Identifies the whole image; snapshots are only valid for the image they were taken of. */
  hash: string;
}

export class ImageBuildError extends Error {}

function run(command: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? '').trim();
    throw new ImageBuildError(
      `${command} ${args.slice(0, 3).join(' ')} failed: ${stderr.slice(-400) || (error as Error).message}`,
    );
  }
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
 * The init of the initramfs: load the virtio modules, mount the read-only root disk, give it a
 * /tmp, and run the guest agent on the virtio-serial port named "isola". The heap limit comes
 * from the kernel command line (isola.heap=MB), so one image serves every memory size.
 */
const INIT_SCRIPT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
# What a distribution's init links in /dev: runtimes open /dev/fd/3 (Java's launcher) and /dev/stdin.
$B ln -s /proc/self/fd /dev/fd; $B ln -s fd/0 /dev/stdin; $B ln -s fd/1 /dev/stdout; $B ln -s fd/2 /dev/stderr
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
port=
i=0
while [ -z "$port" ] && [ $i -lt 500 ]; do
  for d in /mnt/sys/class/virtio-ports/*; do
    [ "$($B cat $d/name 2>/dev/null)" = isola ] && port=/dev/$($B basename $d)
  done
  [ -z "$port" ] && $B usleep 10000
  i=$((i+1))
done
heap=128
net=
for arg in $($B cat /mnt/proc/cmdline); do
  case $arg in isola.heap=*) heap=\${arg#isola.heap=};; isola.net=*) net=\${arg#isola.net=};; esac
done
# Loopback up, as a container's is: a Lambda custom runtime reaches the Runtime API the agent serves on 127.0.0.1.
$B ip link set lo up || $B echo "isola init: lo could not be brought up"
# A VM with egress (isola.net=<address/prefix>,<gateway>): its virtio-net device is eth0.
if [ -n "$net" ]; then
  i=0; while ! $B ip link show eth0 >/dev/null 2>&1 && [ $i -lt 500 ]; do $B usleep 10000; i=$((i+1)); done
  $B ip addr add \${net%,*} dev eth0 && $B ip link set eth0 up && $B ip route add default via \${net#*,} ||
    $B echo "isola init: eth0 could not be configured"
fi
exec $B chroot /mnt /usr/bin/node --max-old-space-size=$heap /app/agent.cjs --channel=$port
`;

/**
 * The microVM guest: Debian's cloud kernel, a busybox initramfs that loads the virtio modules,
 * and a read-only ext4 root disk with node and the agent (the container image's files, a
 * language's runtime included). Built into `<imagesDir>/microvm-<hash>` (the Node.js image) or
 * `microvm-<language>-<hash>` and reused until the kernel, the init or the root files change.
 */
export function ensureMicrovmImage(imagesDir: string, rootfs: NodeRootfs): MicrovmImage {
  mkdirSync(imagesDir, { recursive: true, mode: 0o755 });
  for (const tool of [BUSYBOX, '/usr/bin/lz4', '/usr/bin/cpio', '/sbin/mke2fs']) {
    if (!existsSync(tool)) throw new ImageBuildError(`${tool} is missing (npx isola setup microvm)`);
  }
  const kernel = ensureKernel(imagesDir);
  const busyboxSize = statSync(BUSYBOX).size;
  const hash = createHash('sha256')
    .update(JSON.stringify({ LAYOUT_VERSION, kernel: kernel.version, INIT_SCRIPT, rootfs: rootfs.path, busyboxSize }))
    .digest('hex')
    .slice(0, 16);
  const prefix = rootfs.name === 'nodejs' ? 'microvm' : `microvm-${rootfs.name}`;
  const dir = join(imagesDir, `${prefix}-${hash}`);
  const image: MicrovmImage = {
    name: rootfs.name,
    kernel: join(kernel.dir, 'vmlinux'),
    kernelVersion: kernel.version,
    initramfs: join(dir, 'initramfs.cpio'),
    rootDisk: join(dir, 'root.ext4'),
    hash,
  };
  if (existsSync(join(dir, '.complete'))) return image;

  const temp = `${dir}.${process.pid}.tmp`;
  rmSync(temp, { recursive: true, force: true });
  const initrd = join(temp, 'initrd');
  for (const sub of ['bin', 'lib/modules', 'proc', 'sys', 'dev', 'mnt']) mkdirSync(join(initrd, sub), { recursive: true });
  copyFileSync(BUSYBOX, join(initrd, 'bin', 'busybox'));
  chmodSync(join(initrd, 'bin', 'busybox'), 0o755);
  for (const module of MODULES)
    copyFileSync(join(kernel.dir, 'modules', `${module}.ko`), join(initrd, 'lib', 'modules', `${module}.ko`));
  writeFileSync(join(initrd, 'init'), INIT_SCRIPT, { mode: 0o755 });
  const files = run('find', ['.'], initrd);
  const cpio = execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: initrd, input: files, maxBuffer: 64 * 1024 * 1024 });
  writeFileSync(join(temp, 'initramfs.cpio'), cpio);
  rmSync(initrd, { recursive: true, force: true });
  // Room for the files plus a fifth; no journal on a disk that is only ever read.
  const sizeMb = Math.ceil(Number(run('du', ['-sm', '--apparent-size', rootfs.path]).split('\t')[0]) * 1.2 + 16);
  run('mke2fs', [
    '-q',
    '-t',
    'ext4',
    '-d',
    rootfs.path,
    '-L',
    'isola',
    '-O',
    '^has_journal',
    '-m',
    '0',
    join(temp, 'root.ext4'),
    `${sizeMb}M`,
  ]);
  writeFileSync(join(temp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(temp, dir);
  for (const entry of readdirSync(imagesDir)) {
    if (new RegExp(`^${prefix}-[0-9a-f]{16}$`).test(entry) && entry !== `${prefix}-${hash}`)
      rmSync(join(imagesDir, entry), { recursive: true, force: true });
  }
  return image;
}
