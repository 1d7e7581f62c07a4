import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  cpuFlags,
  elfCetMarks,
  type HardwareFeature,
  type HostView,
  hardwareFeatures,
  probeHardwareIsolation,
} from './hardware.js';

/** A host as the checks see it: the flags line of /proc/cpuinfo, the paths that exist, the files' texts. */
function host(flags: string, paths: Record<string, string> = {}, rest: Partial<HostView> = {}): HostView {
  return {
    cpuinfo: `processor\t: 0\nvendor_id\t: Some\nflags\t\t: ${flags}\nbogomips\t: 4000\n\nprocessor\t: 1\nflags\t\t: fpu\n`,
    exists: (path) => path in paths,
    read: (path) => paths[path],
    nodeCet: { ibt: false, shstk: false },
    wasmCodeKeyed: () => false,
    execArgv: [],
    ...rest,
  };
}

function byId(features: HardwareFeature[], id: HardwareFeature['id']): HardwareFeature {
  const feature = features.find((f) => f.id === id);
  assert.ok(feature, `no ${id} row`);
  return feature;
}

/** An ELF64 little-endian header with one PT_GNU_PROPERTY segment holding GNU_PROPERTY_X86_FEATURE_1_AND = bits. */
function elfWithCetBits(bits: number): Buffer {
  const file = Buffer.alloc(120 + 32);
  file.writeUInt32BE(0x7f454c46, 0);
  file[4] = 2;
  file[5] = 1;
  file.writeBigUInt64LE(64n, 0x20);
  file.writeUInt16LE(56, 0x36);
  file.writeUInt16LE(1, 0x38);
  file.writeUInt32LE(0x6474e553, 64);
  file.writeBigUInt64LE(120n, 64 + 8);
  file.writeBigUInt64LE(32n, 64 + 32);
  file.writeBigUInt64LE(8n, 64 + 48);
  file.writeUInt32LE(4, 120);
  file.writeUInt32LE(16, 124);
  file.writeUInt32LE(5, 128);
  file.write('GNU\0', 132, 'latin1');
  file.writeUInt32LE(0xc0000002, 136);
  file.writeUInt32LE(4, 140);
  file.writeUInt32LE(bits, 144);
  return file;
}

const readerOf = (file: Buffer) => (offset: number, length: number) => file.subarray(offset, offset + length);

describe('hardware-assisted isolation', () => {
  it('reads the first CPU flags line, on x86 and arm64', () => {
    assert.deepEqual([...cpuFlags('flags\t\t: fpu pku ospke\nflags\t: other\n')], ['fpu', 'pku', 'ospke']);
    assert.deepEqual([...cpuFlags('Features\t: fp asimd bti\n')], ['fp', 'asimd', 'bti']);
    assert.equal(cpuFlags('no flags here').size, 0);
  });

  it('reports a host with keys, VT-x, SGX and CET, and what Isola uses of them', () => {
    const features = hardwareFeatures(
      host(
        'fpu vmx pku ospke sgx sgx_lc ibt shstk user_shstk',
        { '/dev/kvm': '', '/dev/sgx_enclave': '' },
        { wasmCodeKeyed: () => true, microvmAccelerator: 'kvm', nodeCet: { ibt: false, shstk: true } },
      ),
    );
    assert.deepEqual(
      features.map((f) => [f.id, f.offered, f.used]),
      [
        ['pku', true, true],
        ['virtualization', true, true],
        ['sev', false, false],
        ['tdx', false, false],
        ['sgx', true, false],
        ['cet', true, true],
      ],
    );
    assert.match(byId(features, 'pku').use, /WebAssembly code/);
    assert.equal(byId(features, 'virtualization').use, 'microVMs run under KVM');
  });

  it('does not call keys used when the kernel has not enabled them, or V8 was told not to use them', () => {
    const noOspke = byId(hardwareFeatures(host('fpu pku', {}, { wasmCodeKeyed: () => true })), 'pku');
    assert.equal(noOspke.offered, false);
    assert.equal(noOspke.used, false);
    assert.match(noOspke.found, /without ospke/);
    const turnedOff = byId(
      hardwareFeatures(host('fpu pku ospke', {}, { wasmCodeKeyed: () => true, execArgv: ['--no-wasm-memory-protection-keys'] })),
      'pku',
    );
    assert.equal(turnedOff.offered, true);
    assert.equal(turnedOff.used, false);
    assert.match(turnedOff.use, /--no-wasm-memory-protection-keys/);
    const noKeyGiven = byId(hardwareFeatures(host('fpu pku ospke')), 'pku');
    assert.deepEqual([noKeyGiven.offered, noKeyGiven.used], [true, false]);
  });

  it('reports AMD SEV only with the kernel switch and device, and never as used', () => {
    const on = byId(
      hardwareFeatures(host('svm sev sev_es sev_snp', { '/sys/module/kvm_amd/parameters/sev': 'Y\n', '/dev/sev': '' })),
      'sev',
    );
    assert.deepEqual([on.offered, on.used, on.found], [true, false, 'sev, sev_es, sev_snp; kvm_amd sev=on']);
    const off = byId(hardwareFeatures(host('svm sev', { '/sys/module/kvm_amd/parameters/sev': 'N\n', '/dev/sev': '' })), 'sev');
    assert.equal(off.offered, false);
  });

  it('says a VM without nested virtualisation offers none, and that microVMs run emulated', () => {
    const features = hardwareFeatures(host('fpu sse2 hypervisor avx2', {}, { microvmAccelerator: 'tcg' }));
    assert.ok(features.every((f) => !f.offered && !f.used));
    const virtualization = byId(features, 'virtualization');
    assert.match(virtualization.found, /itself a VM without nested virtualisation/);
    assert.match(virtualization.use, /TCG/);
    assert.match(byId(features, 'cet').use, /not built for IBT or shadow stacks/);
  });

  it("reads an executable's IBT and shadow-stack marks from its ELF property note", () => {
    assert.deepEqual(elfCetMarks(readerOf(elfWithCetBits(3))), { ibt: true, shstk: true });
    assert.deepEqual(elfCetMarks(readerOf(elfWithCetBits(1))), { ibt: true, shstk: false });
    assert.deepEqual(elfCetMarks(readerOf(elfWithCetBits(0))), { ibt: false, shstk: false });
    assert.equal(elfCetMarks(readerOf(Buffer.from('#!/bin/sh\necho not an ELF file\n'))), undefined);
  });

  it('finds on this host what /proc/cpuinfo, /dev and the Node.js binary say', () => {
    const features = probeHardwareIsolation();
    const flags = cpuFlags(readFileSync('/proc/cpuinfo', 'utf8'));
    assert.equal(byId(features, 'pku').offered, flags.has('pku') && flags.has('ospke'));
    assert.equal(byId(features, 'virtualization').found.includes('no /dev/kvm'), !existsSync('/dev/kvm'));
    assert.equal(byId(features, 'sgx').offered, flags.has('sgx') && existsSync('/dev/sgx_enclave'));
    // The running binary's marks, as binutils reads them where it is installed.
    const fd = openSync(process.execPath, 'r');
    let marks: ReturnType<typeof elfCetMarks>;
    try {
      marks = elfCetMarks((offset, length) => {
        const buffer = Buffer.alloc(length);
        return buffer.subarray(0, readSync(fd, buffer, 0, length, offset));
      });
    } finally {
      closeSync(fd);
    }
    assert.ok(marks, 'node is an ELF64 executable');
    const readelf = ['/usr/bin/readelf', '/bin/readelf'].find((path) => existsSync(path));
    if (readelf) {
      const notes = execFileSync(readelf, ['-n', process.execPath], { encoding: 'utf8', maxBuffer: 64 << 20 });
      const properties = notes
        .split('\n')
        .filter((line) => /x86 feature:/.test(line))
        .join(' ');
      assert.equal(marks.ibt, /\bIBT\b/.test(properties));
      assert.equal(marks.shstk, /\bSHSTK\b/.test(properties));
    }
  });
});
