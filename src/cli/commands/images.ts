import { resolve } from 'node:path';
import type { Command } from 'commander';
import { printJson } from '../output.js';
import { globals, wholeNumber } from './common.js';

export function registerImagesCommands(program: Command): void {
  const images = program.command('images').description('build the images sandboxes run from');
  images
    .command('build <kind>')
    .description(
      'build an image now rather than on first use: "microvm" (guest kernel, initramfs, root disk and base snapshot), "container" (rootfs) or "kernel" (the specialised guest kernel, minutes, once per host)',
    )
    .option('--memory <MB>', 'memory size of the microVM base snapshot to make', wholeNumber(16, 8192, 'MB'), 256)
    .option(
      '--guest <guest>',
      "the microVM guest: debian (Debian's cloud kernel) or specialised (a kernel built from linux-source); default ISOLA_MICROVM_GUEST or debian",
    )
    .action(async (kind: string, options: { memory: number; guest?: string }, command: Command) => {
      const { dataDir, json } = globals(command);
      const { resolveBackendSettings, resolveKernelCacheDir } = await import('../../config.js');
      if (kind === 'kernel') {
        const { ensureSpecialisedKernel } = await import('../../images/specialised-kernel.js');
        const started = Date.now();
        const kernel = ensureSpecialisedKernel(resolveKernelCacheDir());
        if (json) printJson(kernel);
        else
          process.stdout.write(
            `specialised kernel ${kernel.version} (${kernel.builtIn} options built in): ${kernel.vmlinux}\ndone in ${Math.round((Date.now() - started) / 1000)} s\n`,
          );
        return;
      }
      const dir = resolve(dataDir ?? './.isola');
      const { ensureNodeRootfs } = await import('../../images/node-rootfs.js');
      const rootfs = ensureNodeRootfs(resolve(dir, 'images'), resolve(dir, 'runtime'));
      if (kind === 'container') {
        if (json) printJson({ rootfs: rootfs.path });
        else process.stdout.write(`container rootfs: ${rootfs.path}\n`);
        return;
      }
      if (kind !== 'microvm') throw new Error(`Unknown image kind "${kind}": use microvm, container or kernel.`);
      const { ensureMicrovmImage } = await import('../../images/microvm-image.js');
      const { prepareMicrovmSnapshot } = await import('../../sandbox/registry.js');
      const guest = options.guest ?? resolveBackendSettings({}).microvm?.guest ?? 'debian';
      if (guest !== 'debian' && guest !== 'specialised') throw new Error(`Unknown guest "${guest}": use debian or specialised.`);
      const started = Date.now();
      const image = ensureMicrovmImage(resolve(dir, 'images'), rootfs, guest, resolveKernelCacheDir());
      const backend = await prepareMicrovmSnapshot(dir, image, options.memory);
      const snapshot = { dir: backend.snapshotDir };
      const summary = {
        image,
        accelerator: backend.accelerator,
        why: backend.acceleratorReason,
        snapshot: snapshot.dir,
        seconds: Math.round((Date.now() - started) / 1000),
      };
      if (json) printJson(summary);
      else {
        process.stdout.write(
          `kernel ${image.kernelVersion}: ${image.kernel}\ninitramfs: ${image.initramfs ?? 'none (every driver built in)'}\nroot disk: ${image.rootDisk}\n` +
            `accelerator: ${backend.accelerator} (${backend.acceleratorReason})\nbase snapshot (${options.memory} MB): ${snapshot.dir}\n` +
            `done in ${summary.seconds} s\n`,
        );
      }
    });
}
