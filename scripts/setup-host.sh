#!/usr/bin/env bash
# Installs the Debian packages Isola's backends and tests use. Safe to run again.
#   isolate, process: nothing beyond Node.js 20 and a C++ toolchain for the native addons.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: run as root (it calls apt-get)" >&2
  exit 1
fi
packages=(
  g++ make python3         # node-gyp builds isolated-vm and better-sqlite3
  util-linux               # prlimit: per-sandbox process limits
)
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup-host: ready (${#missing[@]} package(s) installed)"
