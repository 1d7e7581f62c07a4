#!/usr/bin/env bash
# Packs the native addons built in node_modules into prebuilds/, in prebuild-install's layout and
# names, stripped of debug symbols (isolated-vm: 25 MB -> 1 MB). `npm install` then unpacks them
# instead of compiling (see .npmrc), which is most of its time. Run after a build from source of a
# new isolated-vm or better-sqlite3 version (`npm rebuild --build-from-source isolated-vm
# better-sqlite3`), on Linux x64 with glibc and the Node.js major version in package.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
abi="$(node -p process.versions.modules)"
platform="$(node -p 'process.platform + "-" + process.arch')"
out="$root/prebuilds"
mkdir -p "$out"
pack() { # package, binary path inside it
  local name="$1" binary="$2" dir="$root/node_modules/$1" stage
  local version
  version="$(node -p "require('$dir/package.json').version")"
  stage="$(mktemp -d)"
  mkdir -p "$stage/$(dirname "$binary")"
  cp "$dir/$binary" "$stage/$binary"
  strip --strip-unneeded "$stage/$binary"
  rm -f "$out/$name"-v*-node-v"$abi"-"$platform".tar.gz
  tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - "$binary" | gzip -n -9 >"$out/$name-v$version-node-v$abi-$platform.tar.gz"
  rm -rf "$stage"
}
pack isolated-vm out/isolated_vm.node
pack better-sqlite3 build/Release/better_sqlite3.node
ls -l "$out"
