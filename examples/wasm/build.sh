#!/usr/bin/env bash
# Builds the WebAssembly examples offline: AssemblyScript (from npm, in packages/bench), C (Debian clang with
# wasi-libc) and Rust (Debian's rustc with its wasm32-wasi standard library). The built modules
# are committed next to their sources, so deploying them needs none of these toolchains.
#   apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 rustc libstd-rust-dev-wasm32
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here}"
mkdir -p "$out"

# AssemblyScript comes with the development tools (npm run bench:install).
asc="$root/packages/bench/node_modules/.bin/asc"
# The stub runtime never frees: each invocation gets a fresh instance, so nothing accumulates.
for module in greet compression graph thumbnail scratch; do
  "$asc" "$here/assemblyscript/$module.ts" -o "$out/$module.wasm" --runtime stub -O3 --noAssert
done
clang --target=wasm32-wasi -O2 -s -o "$out/wordcount.wasm" "$here/c/wordcount.c"
# Debian's rustc, not a rustup toolchain that may be first on PATH: only it has wasm32-wasi here.
/usr/bin/rustc --target wasm32-wasi --crate-type cdylib -O -C strip=symbols -o "$out/fib.wasm" "$here/rust/fib.rs"
ls -l "$out"/*.wasm
