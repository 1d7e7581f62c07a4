// Image classification with MobileNetV2 (the model that ships inside the nsfwjs package) on
// TensorFlow.js's WebAssembly backend: the ML inference workload of `isola bench`, and a
// function you can deploy. `node examples/ml/build.mjs` bundles it, model and WebAssembly
// included, into one file (examples/ml/build/classify.cjs) that runs under any Node.js backend.
//
//   npx isola action create classify examples/ml/build/classify.cjs -i process -m 512 -t 120000
//   npx isola action invoke classify -r -p seed 7
const tf = require('@tensorflow/tfjs');
const wasmBackend = require('@tensorflow/tfjs-backend-wasm');
const nsfwjs = require('nsfwjs');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// Bundled as bytes; written to a temporary directory where the backend expects to find them.
const BINARIES = {
  'tfjs-backend-wasm.wasm': require('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'),
  'tfjs-backend-wasm-simd.wasm': require('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm'),
  'tfjs-backend-wasm-threaded-simd.wasm': require('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm'),
};
const SIZE = 224;
// nsfwjs finds its model and weights by computed paths a bundler cannot follow, or on the global
// object (as `model` and under the shard's name): put them there. They are required by file path
// because the package's exports do not list them (nsfwjs comes with packages/bench).
const unwrap = (m) => m.default ?? m;
globalThis.model = unwrap(require('../../packages/bench/node_modules/nsfwjs/dist/cjs/models/mobilenet_v2/model.min.js'));
globalThis.group1_shard1of1 = unwrap(
  require('../../packages/bench/node_modules/nsfwjs/dist/cjs/models/mobilenet_v2/group1-shard1of1.min.js'),
);

let model;
function load() {
  model ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-'));
    const files = {};
    for (const [name, bytes] of Object.entries(BINARIES)) {
      files[name] = path.join(dir, name);
      fs.writeFileSync(files[name], bytes);
    }
    wasmBackend.setWasmPaths(files);
    await tf.setBackend('wasm');
    await tf.ready();
    return nsfwjs.load('MobileNetV2');
  })();
  return model;
}
// Load with the function, not with its first call.
load();

/** A deterministic 224x224 RGB test image for a seed, when no pixels are given. */
function syntheticImage(seed) {
  const pixels = new Int32Array(SIZE * SIZE * 3);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < pixels.length; i++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    pixels[i] = ((i % (SIZE * 3)) + (state >>> 24)) & 255;
  }
  return pixels;
}

/** The image to classify, or why the parameters do not give one. */
function imageFrom(params) {
  if (params.pixels !== undefined) {
    if (typeof params.pixels !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(params.pixels)) {
      return { error: `pixels must be a base64 string of ${SIZE}x${SIZE} RGB bytes.` };
    }
    const pixels = Int32Array.from(Buffer.from(params.pixels, 'base64'));
    if (pixels.length !== SIZE * SIZE * 3) {
      return { error: `pixels must be ${SIZE}x${SIZE} RGB (${SIZE * SIZE * 3} bytes), base64; got ${pixels.length} bytes.` };
    }
    return { pixels };
  }
  const seed = params.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    return { error: `seed must be a whole number from 0 to ${0xffffffff}; got ${JSON.stringify(seed)?.slice(0, 40)}.` };
  }
  return { pixels: syntheticImage(seed) };
}

async function main(params) {
  const { pixels, error } = imageFrom(params);
  if (error) return { error };
  const classifier = await load();
  const image = tf.tensor3d(pixels, [SIZE, SIZE, 3], 'int32');
  try {
    const predictions = await classifier.classify(image, 3);
    return { model: 'MobileNetV2', backend: tf.getBackend(), predictions };
  } finally {
    image.dispose();
  }
}

module.exports.main = main;
