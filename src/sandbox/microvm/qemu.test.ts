import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEBIAN_BOOT_ARGS, type MicrovmImage, SPECIALISED_BOOT_ARGS } from '../../images/microvm-image.js';
import { qemuArguments, type VmConfig } from './qemu.js';

const debian: MicrovmImage = {
  name: 'nodejs',
  guest: 'debian',
  kernel: '/images/kernel-6.1.0-cloud-amd64/vmlinux',
  kernelVersion: '6.1.0-cloud-amd64',
  initramfs: '/images/microvm-0123456789abcdef/initramfs.cpio',
  rootDisk: '/images/microvm-0123456789abcdef/root.ext4',
  bootArgs: DEBIAN_BOOT_ARGS,
  hash: '0123456789abcdef',
};
const specialised: MicrovmImage = {
  name: 'nodejs',
  guest: 'specialised',
  kernel: '/cache/specialised-6.1-0123456789abcdef/vmlinux',
  kernelVersion: '6.1.192-isola',
  rootDisk: '/images/microvm-specialised-0123456789abcdef/root.ext4',
  bootArgs: SPECIALISED_BOOT_ARGS,
  hash: 'fedcba9876543210',
};

function config(image: MicrovmImage, machine: VmConfig['machine'] = 'microvm'): VmConfig {
  return {
    image,
    machine,
    accelerator: 'tcg',
    memoryMb: 256,
    heapMb: 121,
    dir: '/vm',
    ram: { path: '/vm/ram', shared: false },
    incoming: false,
  };
}

const after = (args: string[], flag: string) => args[args.indexOf(flag) + 1] as string;

describe('the QEMU command line of each guest', () => {
  it("boots Debian's kernel into its initramfs, with ACPI describing the devices", () => {
    const args = qemuArguments(config(debian));
    assert.equal(after(args, '-initrd'), debian.initramfs);
    assert.match(after(args, '-append'), /\brdinit=\/init\b/);
    assert.doesNotMatch(after(args, '-append'), /\broot=/);
    assert.match(after(args, '-M'), /pit=off,pic=off/);
    assert.doesNotMatch(after(args, '-M'), /acpi=off/);
  });

  it('boots the specialised kernel straight into the root disk, its devices named on the command line', () => {
    const args = qemuArguments(config(specialised));
    assert.ok(!args.includes('-initrd'), 'no initramfs');
    const append = after(args, '-append');
    assert.match(append, /\broot=\/dev\/vda rootfstype=ext4 ro init=\/isola\/init\b/);
    assert.doesNotMatch(append, /rdinit/);
    // Without ACPI the clocksource watchdog would take a busy guest's TSC for unstable and fall
    // back to jiffies (a 4 ms clock).
    assert.match(append, /\btsc=reliable\b/);
    // Without ACPI (the kernel has none) QEMU adds virtio_mmio.device= for each device itself;
    // the PIT and PIC are what the kernel checks its APIC timer against.
    assert.match(after(args, '-M'), /^microvm,.*pit=on,pic=on,acpi=off/);
    assert.equal(after(args, '-kernel'), specialised.kernel);
  });
});
