import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * Where the images carry the kernel reseeding helper. Every microVM instance is a clone of a
 * snapshot, and the guest kernel's random number generator resumes in the snapshot's state:
 * clones read the same bytes from getrandom() and /dev/urandom (Python's os.urandom and
 * `random`, Java's SecureRandom, Go's crypto/rand) until the kernel reseeds on its own, up to a
 * minute later. Debian's cloud kernel has no VM generation ID driver (CONFIG_VMGENID) that
 * would reseed it on restore, so the guest's root, once restored, runs this helper with fresh
 * entropy from the host on stdin: it credits the bytes to the kernel's pool (RNDADDENTROPY) and
 * makes the kernel reseed its generator from it at once (RNDRESEEDCRNG). Both need
 * CAP_SYS_ADMIN: in a container the helper fails and changes nothing. Given the host's time (ms
 * since the epoch) as its argument, it also sets the guest's clock, which a restore leaves at the
 * snapshot's moment, for runtimes that read the kernel's clock (every one but the agent's own).
 */
export { RESEED_KERNEL_PATH } from '../guest/reseed.js';

export const RESEED_KERNEL_SOURCE = `#include <fcntl.h>
#include <linux/random.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* Reads 32 to 512 bytes of entropy on stdin; exits 0 once the kernel has reseeded from them. */
int main(int argc, char **argv) {
  struct { int entropy_count; int buf_size; unsigned char buf[512]; } entropy;
  int n = 0;
  while (n < (int)sizeof entropy.buf) {
    ssize_t got = read(0, entropy.buf + n, sizeof entropy.buf - n);
    if (got <= 0) break;
    n += (int)got;
  }
  if (n < 32) return 2;
  entropy.entropy_count = n * 8;
  entropy.buf_size = n;
  int fd = open("/dev/urandom", O_WRONLY);
  if (fd < 0) return 3;
  if (ioctl(fd, RNDADDENTROPY, &entropy) < 0) return 4;
  if (ioctl(fd, RNDRESEEDCRNG) < 0) return 5;
  if (argc > 1) {
    long long ms = atoll(argv[1]);
    struct timespec now = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    if (ms <= 0 || clock_settime(CLOCK_REALTIME, &now) < 0) return 6;
  }
  return 0;
}
`;

const GCC = '/usr/bin/gcc';

/** Whether the helper can be built here (gcc and the C library's headers, from `isola setup base`). */
export function canBuildReseedHelper(): boolean {
  return existsSync(GCC);
}

/** Compiles the helper (static: it needs nothing from the image) to `target`; false when there is no compiler. */
export function buildReseedHelper(target: string): boolean {
  if (!canBuildReseedHelper()) return false;
  const work = mkdtempSync(join(tmpdir(), 'isola-reseed-'));
  try {
    writeFileSync(join(work, 'reseed-kernel.c'), RESEED_KERNEL_SOURCE);
    mkdirSync(dirname(target), { recursive: true });
    execFileSync(GCC, ['-static', '-Os', '-s', '-o', target, join(work, 'reseed-kernel.c')], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
