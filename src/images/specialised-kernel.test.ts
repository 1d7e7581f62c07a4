import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runBuildTool } from './build-tool.js';
import { findLinuxSource, kernelCacheDir, SPECIALISED_OPTIONS, withBuildLock } from './specialised-kernel.js';

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

  it('takes over a build lock whose holder is gone, and leaves none behind', () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-kernel-lock-'));
    const entry = join(dir, 'kernel');
    try {
      // A holder that has exited: its pid is free.
      const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      mkdirSync(`${entry}.lock`);
      writeFileSync(join(`${entry}.lock`, 'pid'), gone.stdout);
      assert.equal(
        withBuildLock(
          entry,
          () => undefined,
          () => 'built',
        ),
        'built',
      );
      assert.equal(existsSync(`${entry}.lock`), false);
      // A lock without a pid, left long ago by a process that died taking it.
      mkdirSync(`${entry}.lock`);
      utimesSync(`${entry}.lock`, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
      assert.equal(
        withBuildLock(
          entry,
          () => undefined,
          () => 'built again',
        ),
        'built again',
      );
      // What is already built is not built again.
      assert.equal(
        withBuildLock(
          entry,
          () => 'cached',
          () => assert.fail('built twice'),
        ),
        'cached',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reports a build tool's failure with its stderr, in the caller's error class, and logs its output", () => {
    class BuildError extends Error {}
    const dir = mkdtempSync(join(tmpdir(), 'isola-build-tool-'));
    const log = join(dir, 'build.log');
    try {
      assert.equal(runBuildTool('sh', ['-c', 'echo made'], { cwd: dir, log, error: BuildError }), 'made\n');
      assert.throws(
        () => runBuildTool('sh', ['-c', 'echo partly; echo "no rule to make target" >&2; exit 2'], { log, error: BuildError }),
        (error: unknown) => error instanceof BuildError && /^sh -c .* failed: no rule to make target$/.test(error.message),
      );
      assert.equal(readFileSync(log, 'utf8'), 'made\npartly\nno rule to make target\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
