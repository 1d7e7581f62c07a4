// Bundles examples/ml/classify.js with TensorFlow.js, its WebAssembly binaries and the
// MobileNetV2 model into one CommonJS file, so that it runs wherever node runs, node_modules or not.
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = fileURLToPath(new URL('.', import.meta.url));
export const OUTPUT = `${here}build/classify.cjs`;

export async function buildClassifier() {
  mkdirSync(`${here}build`, { recursive: true });
  await build({
    entryPoints: [`${here}classify.cjs`],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile: OUTPUT,
    loader: { '.wasm': 'binary' },
    // TensorFlow.js and nsfwjs come with the bench package (npm run bench:install).
    nodePaths: [fileURLToPath(new URL('../../packages/bench/node_modules', import.meta.url))],
    // Browser-only backends and optional peers nsfwjs never loads under Node.js.
    external: ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu'],
    logLevel: 'warning',
    minify: true,
    legalComments: 'none',
  });
  return OUTPUT;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log(await buildClassifier());
}
