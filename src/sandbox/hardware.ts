/**
 * What the CPU and kernel offer for hardware-assisted isolation, and whether Isola uses it:
 * protection keys, virtualisation extensions, confidential VMs (SEV, TDX), enclaves (SGX) and
 * control-flow enforcement (CET). Read from /proc/cpuinfo, /dev and /sys, and for the uses, from
 * the running Node.js binary and this process's own memory map. `isola doctor` prints it; the
 * design note docs/hardware-isolation.md says what the missing ones would change.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';

export type HardwareFeatureId = 'pku' | 'virtualization' | 'sev' | 'tdx' | 'sgx' | 'cet';

export interface HardwareFeature {
  id: HardwareFeatureId;
  name: string;
  /** The CPU has it and the kernel lets it be used. */
  offered: boolean;
  /** What was found: CPU flags, devices, kernel switches. */
  found: string;
  /** Isola (or V8 inside it) uses it on this host. */
  used: boolean;
  /** How it is used, or why not. */
  use: string;
}

/** What the checks read from the host; tests give their own. */
export interface HostView {
  cpuinfo: string;
  exists(path: string): boolean;
  read(path: string): string | undefined;
  /** x86 control-flow features the running Node.js binary was built for (its ELF property note). */
  nodeCet: { ibt: boolean; shstk: boolean } | undefined;
  /** Whether a WebAssembly module's code in this process sits behind a protection key of its own. */
  wasmCodeKeyed: () => boolean;
  /** The microVM backend's accelerator, when that backend works here. */
  microvmAccelerator?: 'kvm' | 'tcg';
  /** V8 flags the process was started with (`process.execArgv`). */
  execArgv: readonly string[];
}

/** The flags of the first CPU in /proc/cpuinfo (x86: `flags`, arm64: `Features`). */
export function cpuFlags(cpuinfo: string): Set<string> {
  const line = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  return new Set(line.split(/\s+/).filter(Boolean));
}

function listed(flags: Set<string>, names: readonly string[]): string[] {
  return names.filter((name) => flags.has(name));
}

function switchOn(host: HostView, path: string): boolean {
  const value = host.read(path)?.trim();
  return value === 'Y' || value === '1';
}

export function hardwareFeatures(host: HostView): HardwareFeature[] {
  const flags = cpuFlags(host.cpuinfo);
  const inVm = flags.has('hypervisor');
  return [
    pku(host, flags),
    virtualization(host, flags, inVm),
    sev(host, flags),
    tdx(host, flags),
    sgx(host, flags),
    cet(host, flags),
  ];
}

function pku(host: HostView, flags: Set<string>): HardwareFeature {
  const name = 'memory protection keys (PKU/MPK)';
  const keysOff = host.execArgv.includes('--no-wasm-memory-protection-keys');
  if (!flags.has('pku')) {
    return {
      id: 'pku',
      name,
      offered: false,
      found: 'no pku flag',
      used: false,
      use: 'V8 would keep WebAssembly code behind a key of its own (--wasm-memory-protection-keys, its default)',
    };
  }
  if (!flags.has('ospke')) {
    return {
      id: 'pku',
      name,
      offered: false,
      found: 'pku without ospke: the kernel has not enabled it',
      used: false,
      use: 'a kernel with CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS enables it',
    };
  }
  if (keysOff) {
    return {
      id: 'pku',
      name,
      offered: true,
      found: 'pku, ospke',
      used: false,
      use: 'turned off by --no-wasm-memory-protection-keys',
    };
  }
  const keyed = host.wasmCodeKeyed();
  return {
    id: 'pku',
    name,
    offered: true,
    found: 'pku, ospke',
    used: keyed,
    use: keyed
      ? 'V8 keeps WebAssembly code (wasm backend, and WebAssembly inside isolates) writable only under a key of its own'
      : 'V8 did not put WebAssembly code behind a key here (its --wasm-memory-protection-keys found none free)',
  };
}

function virtualization(host: HostView, flags: Set<string>, inVm: boolean): HardwareFeature {
  const name = 'virtualisation (VT-x/AMD-V)';
  const cpu = listed(flags, ['vmx', 'svm']);
  const kvm = host.exists('/dev/kvm');
  const found = [cpu.length > 0 ? cpu.join(', ') : 'no vmx/svm flag', kvm ? '/dev/kvm' : 'no /dev/kvm'];
  if (inVm && cpu.length === 0) found.push('itself a VM without nested virtualisation');
  const usesKvm = host.microvmAccelerator === 'kvm';
  return {
    id: 'virtualization',
    name,
    offered: cpu.length > 0 && kvm,
    found: found.join('; '),
    used: usesKvm,
    use: usesKvm
      ? 'microVMs run under KVM'
      : host.microvmAccelerator === 'tcg'
        ? 'microVMs run under TCG (emulation), see the microvm row'
        : 'microVMs would run under KVM (the microvm backend does not work here)',
  };
}

function sev(host: HostView, flags: Set<string>): HardwareFeature {
  const cpu = listed(flags, ['sev', 'sev_es', 'sev_snp']);
  const kvmSev = switchOn(host, '/sys/module/kvm_amd/parameters/sev');
  const found = [cpu.length > 0 ? cpu.join(', ') : 'no sev flag'];
  if (cpu.length > 0) found.push(kvmSev ? 'kvm_amd sev=on' : 'kvm_amd sev off');
  return {
    id: 'sev',
    name: 'AMD SEV (encrypted VMs)',
    offered: cpu.length > 0 && kvmSev && host.exists('/dev/sev'),
    found: found.join('; '),
    used: false,
    use: 'not used: microVMs are not confidential guests (needs an SEV firmware and attested launch)',
  };
}

function tdx(host: HostView, flags: Set<string>): HardwareFeature {
  const cpu = listed(flags, ['tdx_host_platform', 'tdx_guest']);
  const kvmTdx = switchOn(host, '/sys/module/kvm_intel/parameters/tdx');
  return {
    id: 'tdx',
    name: 'Intel TDX (trust domains)',
    offered: flags.has('tdx_host_platform') && kvmTdx,
    found: cpu.length > 0 ? cpu.join(', ') : 'no tdx flag',
    used: false,
    use: 'not used: microVMs are not trust domains (needs a TDX firmware and attested launch)',
  };
}

function sgx(host: HostView, flags: Set<string>): HardwareFeature {
  const cpu = listed(flags, ['sgx', 'sgx_lc']);
  const device = host.exists('/dev/sgx_enclave');
  return {
    id: 'sgx',
    name: 'Intel SGX (enclaves)',
    offered: flags.has('sgx') && device,
    found: [cpu.length > 0 ? cpu.join(', ') : 'no sgx flag', device ? '/dev/sgx_enclave' : 'no /dev/sgx_enclave'].join('; '),
    used: false,
    use: 'not used: no backend runs functions in enclaves (see docs/hardware-isolation.md)',
  };
}

function cet(host: HostView, flags: Set<string>): HardwareFeature {
  const cpu = listed(flags, ['ibt', 'shstk', 'user_shstk']);
  const built = host.nodeCet;
  const builtFor = built ? [built.ibt ? 'IBT' : '', built.shstk ? 'SHSTK' : ''].filter(Boolean) : [];
  // User-space shadow stacks need the CPU, the kernel (user_shstk) and a binary marked for them.
  const used = flags.has('user_shstk') && built?.shstk === true;
  return {
    id: 'cet',
    name: 'control-flow enforcement (CET)',
    offered: flags.has('user_shstk') || flags.has('ibt'),
    found: cpu.length > 0 ? cpu.join(', ') : 'no ibt/shstk flag',
    used,
    use: used
      ? 'Node.js runs with shadow stacks'
      : builtFor.length === 0
        ? 'not used: this Node.js binary is not built for IBT or shadow stacks'
        : `not used: Node.js is built for ${builtFor.join(' and ')}, the kernel does not enable user shadow stacks`,
  };
}

const PT_NOTE = 4;
const PT_GNU_PROPERTY = 0x6474e553;
const NT_GNU_PROPERTY_TYPE_0 = 5;
const GNU_PROPERTY_X86_FEATURE_1_AND = 0xc0000002;

/**
 * The x86 control-flow features an ELF64 little-endian executable is marked for, from its
 * `.note.gnu.property` (GNU_PROPERTY_X86_FEATURE_1_AND: bit 0 IBT, bit 1 SHSTK); undefined for a
 * file that is not such an executable. Reads the headers and the note only.
 */
export function elfCetMarks(read: (offset: number, length: number) => Buffer): { ibt: boolean; shstk: boolean } | undefined {
  const header = read(0, 64);
  if (header.length < 64 || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return undefined;
  const phoff = Number(header.readBigUInt64LE(0x20));
  const phentsize = header.readUInt16LE(0x36);
  const phnum = header.readUInt16LE(0x38);
  if (phentsize < 56 || phnum > 128) return undefined;
  const table = read(phoff, phentsize * phnum);
  const marks = { ibt: false, shstk: false };
  for (let i = 0; i < phnum && (i + 1) * phentsize <= table.length; i++) {
    const at = i * phentsize;
    const type = table.readUInt32LE(at);
    if (type !== PT_GNU_PROPERTY && type !== PT_NOTE) continue;
    const offset = Number(table.readBigUInt64LE(at + 8));
    const size = Number(table.readBigUInt64LE(at + 32));
    const descAlign = Number(table.readBigUInt64LE(at + 48)) >= 8 ? 8 : 4;
    if (size > 65536) continue;
    const notes = read(offset, size);
    for (let n = 0; n + 12 <= notes.length; ) {
      const nameSize = notes.readUInt32LE(n);
      const descSize = notes.readUInt32LE(n + 4);
      const noteType = notes.readUInt32LE(n + 8);
      const name = notes.subarray(n + 12, n + 12 + nameSize).toString('latin1');
      const descAt = n + 12 + align(nameSize, 4);
      if (noteType === NT_GNU_PROPERTY_TYPE_0 && name === 'GNU\0') {
        for (let p = descAt; p + 8 <= descAt + descSize && p + 8 <= notes.length; ) {
          const propertyType = notes.readUInt32LE(p);
          const dataSize = notes.readUInt32LE(p + 4);
          if (propertyType === GNU_PROPERTY_X86_FEATURE_1_AND && dataSize >= 4 && p + 12 <= notes.length) {
            const bits = notes.readUInt32LE(p + 8);
            marks.ibt ||= (bits & 1) !== 0;
            marks.shstk ||= (bits & 2) !== 0;
          }
          p += 8 + align(dataSize, 8);
        }
      }
      n = descAt + align(descSize, descAlign);
    }
  }
  return marks;
}

function align(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}

function nodeCetMarks(): { ibt: boolean; shstk: boolean } | undefined {
  let fd: number | undefined;
  try {
    const opened = openSync(process.execPath, 'r');
    fd = opened;
    return elfCetMarks((offset, length) => {
      const buffer = Buffer.alloc(length);
      return buffer.subarray(0, readSync(opened, buffer, 0, length, offset));
    });
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The smallest valid module with one function: compiling it allocates WebAssembly code space. */
const TINY_MODULE = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07, 0x05, 0x01,
  0x01, 0x66, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
]);

/**
 * Compiles a module and looks in this process's memory map for a mapping with a protection key
 * other than 0: that is V8's WebAssembly code space (the kernel lists `ProtectionKey:` per mapping
 * only where keys are enabled).
 */
function wasmCodeKeyedHere(): boolean {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(TINY_MODULE));
  (instance.exports.f as () => void)();
  try {
    return /^ProtectionKey:\s+[1-9]/m.test(readFileSync('/proc/self/smaps', 'utf8'));
  } catch {
    return false;
  }
}

/** This host, as `isola doctor` sees it. */
export function probeHardwareIsolation(microvmAccelerator?: 'kvm' | 'tcg'): HardwareFeature[] {
  let cpuinfo = '';
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // not Linux, or no /proc: nothing is reported as offered
  }
  return hardwareFeatures({
    cpuinfo,
    exists: existsSync,
    read: (path) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
    nodeCet: nodeCetMarks(),
    wasmCodeKeyed: wasmCodeKeyedHere,
    ...(microvmAccelerator ? { microvmAccelerator } : {}),
    execArgv: process.execArgv,
  });
}
