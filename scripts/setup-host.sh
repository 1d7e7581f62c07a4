#!/usr/bin/env bash
# Installs the Debian packages Isola's backends, examples and tests use. Safe to run again; only
# what is missing is installed. `isola setup [group ...]` runs this script.
#
#   base        g++ make python3 (node-gyp builds isolated-vm and better-sqlite3), prlimit
#   containers  runc, crun (isolation "container") and runsc (isolation "gvisor"); nftables, whose
#               rules give functions with network=egress NAT and keep them off the host
#   microvm     QEMU and what builds the guest image (busybox, mke2fs, cpio, lz4)
#   kernel      Linux's sources and what builds them (flex, bison, bc, libelf), for the microVM's
#               specialised guest kernel (ISOLA_MICROVM_GUEST=specialised); gcc and make are in base
#   wasm        clang + wasi-libc and rustc + its wasm32 standard library, to rebuild the examples
#   browser     Chromium, in which the tests open the benchmark report (headless)
#   languages   the language runtimes functions run on (python3, Java 17 with Gson, Go, Ruby, PHP);
#               the process backend runs them from the host, the images are made of them
#   postgres    PostgreSQL, for `isola serve --database postgres://...`; the tests start private
#               instances of it (initdb in a temp dir), never the cluster the package sets up
#   nats        nats-server (JetStream), for `isola serve --nats nats://...`; the tests start private
#               instances of it (a temp store dir), never the system service
#   all         every group (the default)
set -euo pipefail
# apt-get needs root: as another user, ask sudo (a root host may have no sudo at all, so it is
# only used when needed).
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -- bash "$0" "$@"
  fi
  echo "setup: it calls apt-get, which needs root: run it as root (sudo is not installed)" >&2
  exit 1
fi
declare -A groups=(
  [base]="g++ make python3 util-linux git"
  [containers]="runc crun runsc nftables"
  [microvm]="qemu-system-x86 seabios busybox-static e2fsprogs cpio lz4"
  [kernel]="linux-source flex bison bc libelf-dev xz-utils"
  [wasm]="clang lld wasi-libc libclang-rt-14-dev-wasm32 rustc libstd-rust-dev-wasm32"
  [browser]="chromium"
  [postgres]="postgresql"
  [nats]="nats-server"
  [languages]="python3 openjdk-17-jdk-headless libgoogle-gson-java golang-go ruby php8.2-cli"
)
wanted=("$@")
if [ "${#wanted[@]}" -eq 0 ] || [ "${wanted[0]}" = "all" ]; then wanted=(base containers microvm kernel wasm browser postgres nats languages); fi
packages=()
for group in "${wanted[@]}"; do
  if [ -z "${groups[$group]+x}" ]; then
    echo "setup: unknown group '$group' (known: ${!groups[*]} all)" >&2
    exit 2
  fi
  read -r -a list <<< "${groups[$group]}"
  packages+=("${list[@]}")
done
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: ready (${wanted[*]}; ${#missing[@]} package(s) installed)"
