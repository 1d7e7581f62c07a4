import { readFileSync } from 'node:fs';
import type { MicrovmImage } from '../../images/microvm-image.js';
import type { SandboxNetwork } from '../network/egress.js';

export type Accelerator = 'kvm' | 'tcg';
/** Debian's SeaBIOS (package seabios), the firmware of the q35 machine. */
export const SEABIOS = '/usr/share/seabios/bios-256k.bin';

/** `microvm`: no firmware, no PCI (isolation microvm); `q35`: a full PC with SeaBIOS and PCI devices (isolation vm). */
export type Machine = 'microvm' | 'q35';

/** One VM's configuration: everything the QEMU command line is made from. */
export interface VmConfig {
  image: MicrovmImage;
  machine: Machine;
  accelerator: Accelerator;
  memoryMb: number;
  /** The V8 heap limit inside the guest. */
  heapMb: number;
  /** Directory of this VM's sockets and console log. */
  dir: string;
  /** Guest RAM in a file: shared (a template, whose RAM a snapshot keeps) or a private copy-on-write mapping of one. */
  ram: { path: string; shared: boolean };
  /** Wait for an incoming migration (a restore) instead of booting. */
  incoming: boolean;
  /** Egress: a virtio-net device on this tap, the guest's address given on the command line. */
  network?: SandboxNetwork;
}

/**
 * The specialised kernel's machine. Without ACPI (the kernel has none) QEMU names the virtio-mmio
 * devices on the kernel command line, where the kernel finds them; and without ACPI's word that
 * there is no legacy timer, the kernel checks its local APIC timer against the PIT, through the
 * PIC: without them the check fails, the APIC timer is turned off and no timer ever fires.
 * (Debian's kernel learns from QEMU's ACPI tables to calibrate against the TSC alone.)
 */
const SPECIALISED_MACHINE = 'pit=on,pic=on,acpi=off';

/** The host's TSC frequency, passed to the guest so that a TCG boot does not hang calibrating. */
function tscKhz(): number {
  try {
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return mhz ? Math.round(Number(mhz[1]) * 1000) : 2_000_000;
  } catch {
    return 2_000_000;
  }
}

// Debian's cloud kernel runs at 250 Hz: loops per jiffy = kHz * 1000 / 250.
const KERNEL_HZ = 250;

export function kernelCommandLine(config: Pick<VmConfig, 'heapMb' | 'accelerator' | 'network' | 'image'>): string {
  const khz = tscKhz();
  const timing =
    config.accelerator === 'tcg' ? [`tsc_early_khz=${khz}`, `lpj=${Math.round((khz * 1000) / KERNEL_HZ)}`, 'no_timer_check'] : [];
  const { network } = config;
  return [
    'console=ttyS0',
    'quiet',
    ...timing,
    ...config.image.bootArgs,
    'panic=-1',
    'reboot=t',
    `isola.heap=${config.heapMb}`,
    ...(network ? [`isola.net=${network.address}/${network.prefixLength},${network.gateway}`] : []),
  ].join(' ');
}

/**
 * A `microvm` machine: no PCI, no firmware, no network device (but a virtio-net on a tap for a
 * function with egress); the root disk read-only on
 * virtio-mmio; the agent's channel a virtio-serial port on a unix socket; the console (kernel
 * messages only) in a file; QMP on a unix socket for snapshots and restores. A `q35` machine has
 * the same devices on PCI, behind Debian's SeaBIOS, which boots the same kernel through QEMU's
 * PVH option ROM.
 */
export function qemuArguments(config: VmConfig): string[] {
  const accel = config.accelerator === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,tb-size=32', '-cpu', 'max'];
  const bus = config.machine === 'q35' ? 'pci' : 'device';
  return [
    '-M',
    config.machine === 'q35'
      ? 'q35,memory-backend=ram'
      : `microvm,x-option-roms=off,${config.image.initramfs ? 'pit=off,pic=off' : SPECIALISED_MACHINE},isa-serial=on,rtc=on,memory-backend=ram`,
    ...(config.machine === 'q35' ? ['-bios', SEABIOS] : []),
    ...accel,
    '-m',
    `${config.memoryMb}M`,
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-object',
    `memory-backend-file,id=ram,size=${config.memoryMb}M,mem-path=${config.ram.path},share=${config.ram.shared ? 'on' : 'off'}`,
    '-kernel',
    config.image.kernel,
    ...(config.image.initramfs ? ['-initrd', config.image.initramfs] : []),
    '-append',
    kernelCommandLine(config),
    '-drive',
    `id=root,file=${config.image.rootDisk},format=raw,if=none,readonly=on`,
    '-device',
    `virtio-blk-${bus},drive=root`,
    '-device',
    `virtio-serial-${bus}`,
    '-chardev',
    `socket,id=agent,path=${config.dir}/agent.sock,server=on,wait=off`,
    '-device',
    'virtserialport,chardev=agent,name=isola',
    '-serial',
    `file:${config.dir}/console.log`,
    ...(config.network
      ? [
          '-netdev',
          `tap,id=net0,ifname=${config.network.hostInterface},script=no,downscript=no`,
          '-device',
          `virtio-net-${bus},netdev=net0`,
        ]
      : []),
    // A snapshot does not record that the VM was paused when it was taken, so a restore runs the
    // guest as soon as its state is loaded (QEMU started without -S), without waiting for a
    // `cont` sent after QEMU has said the state is in.
    '-global',
    'migration.store-global-state=off',
    '-qmp',
    `unix:${config.dir}/qmp.sock,server=on,wait=off`,
    ...(config.incoming ? ['-incoming', 'defer'] : []),
  ];
}
