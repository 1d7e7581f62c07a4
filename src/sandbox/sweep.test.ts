import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { removeCgroup } from './sweep.js';

describe('sweep: cgroups', () => {
  it('waits for a cgroup whose last process is still running to empty, then removes it', async (t) => {
    // A v1 hierarchy where there is one (runc's containers have a directory in each), else v2.
    const base = existsSync('/sys/fs/cgroup/pids/cgroup.procs') ? '/sys/fs/cgroup/pids' : '/sys/fs/cgroup';
    const name = `isola-sweep-test-${process.pid}`;
    const dir = join(base, name);
    try {
      mkdirSync(dir);
    } catch (error) {
      t.skip(`no cgroup can be made here: ${(error as Error).message}`);
      return;
    }
    const child = spawn('sleep', ['0.3'], { stdio: 'ignore' });
    try {
      writeFileSync(join(dir, 'cgroup.procs'), String(child.pid));
      assert.throws(() => rmdirSync(dir), { code: 'EBUSY' });
      await removeCgroup(`/${name}`);
      assert.equal(existsSync(dir), false, 'removed once the process had exited');
    } finally {
      child.kill('SIGKILL');
      if (existsSync(dir)) await removeCgroup(`/${name}`);
    }
  });
});
