import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { findLinuxSource, kernelCacheDir, SPECIALISED_OPTIONS } from './specialised-kernel.js';

describe('the specialised kernel', () => {
  it("finds the newest of Debian's linux-source tarballs", () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-usr-src-'));
    try {
      assert.equal(findLinuxSource(dir), undefined);
      for (const name of ['linux-source-6.1.tar.xz', 'linux-source-6.10.tar.xz', 'linux-source-6.9.tar.xz', 'linux-6.12.tar.xz'])
        writeFileSync(join(dir, name), '');
      assert.deepEqual(findLinuxSource(dir), { tarball: join(dir, 'linux-source-6.10.tar.xz'), version: '6.10' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("keeps built kernels in the user's cache, for every data dir", () => {
    assert.equal(kernelCacheDir({ XDG_CACHE_HOME: '/var/cache/me' }), '/var/cache/me/isola/kernels');
    // A relative XDG path is ignored, as the XDG specification says.
    assert.match(kernelCacheDir({ XDG_CACHE_HOME: 'relative' }), /\/\.cache\/isola\/kernels$/);
  });

  it('builds in what a function needs and leaves out modules, an initramfs, PCI and ACPI', () => {
    for (const option of ['CONFIG_VIRTIO_MMIO=y', 'CONFIG_VIRTIO_BLK=y', 'CONFIG_EXT4_FS=y', 'CONFIG_PVH=y', 'CONFIG_UNIX=y'])
      assert.ok(SPECIALISED_OPTIONS.includes(option), option);
    for (const option of ['CONFIG_MODULES=n', 'CONFIG_BLK_DEV_INITRD=n', 'CONFIG_PCI=n', 'CONFIG_ACPI=n'])
      assert.ok(SPECIALISED_OPTIONS.includes(option), option);
    const names = SPECIALISED_OPTIONS.map((o) => o.split('=')[0]);
    assert.equal(new Set(names).size, names.length, 'each option once');
  });
});
