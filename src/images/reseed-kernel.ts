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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct entropy { int entropy_count; int buf_size; unsigned char buf[512]; };

/* 0 once the kernel has reseeded from the n bytes (and, given ms > 0, its clock is set). */
static int reseed(int fd, struct entropy *entropy, int n, long long ms, int set_clock) {
  if (n < 32) return 2;
  entropy->entropy_count = n * 8;
  entropy->buf_size = n;
  if (fd < 0) return 3;
  int status = 0;
  if (ioctl(fd, RNDADDENTROPY, entropy) < 0) status = 4;
  else if (ioctl(fd, RNDRESEEDCRNG) < 0) status = 5;
  if (status == 0 && set_clock) {
    struct timespec now = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    if (ms <= 0 || clock_settime(CLOCK_REALTIME, &now) < 0) status = 6;
  }
  return status;
}

static int read_full(int fd, unsigned char *to, int length) {
  int n = 0;
  while (n < length) {
    ssize_t got = read(fd, to + n, length - n);
    if (got <= 0) return n;
    n += (int)got;
  }
  return n;
}

/*
 * --serve: stays running and reseeds on each request on stdin (4-byte little-endian entropy
 * length, 8-byte little-endian ms since the epoch, the entropy), answering one status byte on
 * stdout; exits at the end of its input. Started before a snapshot, a clone reseeds by a write
 * to a process already there instead of starting one, which under an emulated CPU is most of a
 * restore's first answer.
 * Otherwise: reads 32 to 512 bytes of entropy on stdin; exits 0 once the kernel has reseeded
 * from them (and, given the host's time in ms as its argument, its clock is set).
 */
int main(int argc, char **argv) {
  struct entropy entropy;
  /* Opened once: a clone's reseed takes no path lookup. */
  int fd = open("/dev/urandom", O_WRONLY);
  if (argc > 1 && strcmp(argv[1], "--serve") == 0) {
    for (;;) {
      unsigned char header[12];
      if (read_full(0, header, 12) < 12) return 0;
      uint32_t n = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 | (uint32_t)header[3] << 24;
      uint64_t ms = 0;
      for (int i = 7; i >= 0; i--) ms = ms << 8 | header[4 + i];
      if (n > sizeof entropy.buf || read_full(0, entropy.buf, (int)n) < (int)n) return 2;
      unsigned char status = (unsigned char)reseed(fd, &entropy, (int)n, (long long)ms, 1);
      if (write(1, &status, 1) != 1) return 7;
    }
  }
  int n = read_full(0, entropy.buf, sizeof entropy.buf);
  return reseed(fd, &entropy, n, argc > 1 ? atoll(argv[1]) : 0, argc > 1);
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
