// The thumbnail workload in AssemblyScript: the same generated RGBA image and the same bilinear
// downscaling as the JavaScript version, with Uint8ClampedArray's rounding (ties to even).
//   build: npx asc thumbnail.ts -o thumbnail.wasm --runtime stub -O3 --noAssert
import { integerField, Prng, paramError, paramErrorResult, result } from './params';

export { isola_alloc } from './params';

function clampByte(value: f64): u8 {
  return <u8>min(255.0, max(0.0, nearest(value)));
}

export function isola_handle(pointer: usize, length: i32): u64 {
  const params = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const random = new Prng(<u32>integerField(params, 'seed', 1, 0, 4294967295));
  const w = <i32>integerField(params, 'width', 512, 2, 4096);
  const h = <i32>integerField(params, 'height', 512, 2, 4096);
  // The thumbnail is square and at least 2 pixels wide: the scale divides by its width - 1.
  const tw = <i32>integerField(params, 'thumb', 64, 2, 1024);
  if (paramError.length > 0) return paramErrorResult();
  const th = tw;
  const src = new Uint8Array(w * h * 4);
  for (let i = 0; i < src.length; i++) src[i] = <u8>(<i32>(<f64>((i >> 2) % w) + random.next() * 32) & 255);
  const dst = new Uint8Array(tw * th * 4);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      const sx = <f64>(x * (w - 1)) / <f64>(tw - 1);
      const sy = <f64>(y * (h - 1)) / <f64>(th - 1);
      const x0 = <i32>Math.floor(sx);
      const y0 = <i32>Math.floor(sy);
      const x1 = min(w - 1, x0 + 1);
      const y1 = min(h - 1, y0 + 1);
      const fx = sx - <f64>x0;
      const fy = sy - <f64>y0;
      for (let c = 0; c < 4; c++) {
        const a = <f64>src[(y0 * w + x0) * 4 + c];
        const b = <f64>src[(y0 * w + x1) * 4 + c];
        const d = <f64>src[(y1 * w + x0) * 4 + c];
        const e = <f64>src[(y1 * w + x1) * 4 + c];
        dst[(y * tw + x) * 4 + c] = clampByte((a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy);
      }
    }
  }
  let checksum: u32 = 0;
  for (let i = 0; i < dst.length; i++) checksum = checksum * 31 + <u32>dst[i];
  return result(`{"width":${tw},"height":${th},"checksum":${checksum}}`);
}
