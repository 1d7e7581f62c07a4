/** WebAssembly text of small reactors that tests of the wasm backend share (assemble with `wat`). */

/**
 * Answers {} at once, unless its parameters are longer than 20 bytes: then it loops forever.
 * `memory` is its memory's limits (a test gives it a maximum of its own so that no other test's
 * kept memory is under the same limits).
 */
export function loopsOnLongInput(memory = '1'): string {
  return `(module
  (memory (export "memory") ${memory})
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param $pointer i32) (param $length i32) (result i64)
    (if (i32.gt_u (local.get $length) (i32.const 20)) (then (loop $forever (br $forever))))
    (i32.store8 (i32.const 0) (i32.const 123))
    (i32.store8 (i32.const 1) (i32.const 125))
    (i64.const 2)))`;
}

/**
 * Answers {"seen":D,"pages":P}: D the byte at 4096 when the run starts (a digit), P the memory's
 * pages when it starts. Then leaves 7 at 4096 and grows the memory by a page, as a run's
 * allocations would, for the next run to find if memories were not zeroed.
 */
export const LEAVES_A_MARK = `(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\\"seen\\":0,\\"pages\\":0}")
  (func (export "isola_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "isola_handle") (param i32 i32) (result i64)
    (i32.store8 (i32.const 8) (i32.add (i32.const 48) (i32.load8_u (i32.const 4096))))
    (i32.store8 (i32.const 18) (i32.add (i32.const 48) (memory.size)))
    (i32.store8 (i32.const 4096) (i32.const 7))
    (drop (memory.grow (i32.const 1)))
    (i64.const 20)))`;
