/**
 * A worker thread that runs WebAssembly functions (see run-module.ts), one at a time. Bundled into
 * a single file, like the guest agent.
 */
import { parentPort } from 'node:worker_threads';
import type { RunMessage, WorkerMessage } from './messages.js';
import { runModule } from './run-module.js';

const port = parentPort;
if (!port) throw new Error('the wasm worker must run in a worker thread');
const MODULE_CACHE_SIZE = 64;
const modules = new Map<string, WebAssembly.Module>();

function send(message: WorkerMessage): void {
  port?.postMessage(message);
}

port.on('message', (message: RunMessage) => {
  if (message.type !== 'run') return;
  let module = modules.get(message.key);
  if (message.module) {
    module = message.module;
    modules.set(message.key, module);
    if (modules.size > MODULE_CACHE_SIZE) modules.delete(modules.keys().next().value as string);
  }
  if (!module) {
    send({
      type: 'done',
      id: message.id,
      outcome: { kind: 'crash', reason: 'The worker does not have the compiled module.' },
      ms: 0,
    });
    return;
  }
  const started = performance.now();
  const outcome = runModule(message, module, (stream, text) => send({ type: 'log', id: message.id, stream, text }));
  send({ type: 'done', id: message.id, outcome, ms: performance.now() - started });
});
send({ type: 'ready' });
