import { parentPort } from 'node:worker_threads';
import { meterModule } from './metering.js';

/**
 * The thread that makes metered copies of modules (see metering.ts): WABT's passes over a module
 * take milliseconds per kilobyte, which the server's thread must not spend.
 */
parentPort?.on('message', async (job: { id: number; bytes: Uint8Array }) => {
  let metered: Uint8Array | undefined;
  try {
    metered = await meterModule(job.bytes);
  } catch {
    metered = undefined;
  }
  parentPort?.postMessage({ id: job.id, bytes: metered });
});
