#!/usr/bin/env bash
# What a user who only runs the platform pays to install it: `npm install` in a fresh clone of
# this repository's HEAD, with an empty npm cache and with a warm one, several runs each; wall
# time and the size of node_modules. Appends to packages/bench/results/install.md and
# install.json.
#   bash scripts/measure-install.sh [runs]   (default 3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-3}"
work="$(mktemp -d /tmp/isola-install-XXXXXX)"
trap 'rm -rf "$work"' EXIT
commit="$(git -C "$root" rev-parse --short HEAD)"
branch="$(git -C "$root" rev-parse --abbrev-ref HEAD)"
results="$root/packages/bench/results"
mkdir -p "$results"
rows=()
json=()

measure() { # kind (cold|warm), run number, cache dir
  local kind="$1" run="$2" cache="$3" clone="$work/clone-$1-$2" started ended seconds size files
  git clone -q --no-local --branch "$branch" "$root" "$clone"
  started=$(date +%s.%N)
  (cd "$clone" && npm install --no-audit --no-fund --cache "$cache" >"$work/log-$kind-$run" 2>&1)
  ended=$(date +%s.%N)
  seconds=$(echo "$ended - $started" | bc)
  size=$(du -sm "$clone/node_modules" | cut -f1)
  files=$(find "$clone/node_modules" -type f | wc -l)
  # The build output must be there and the platform must answer.
  node "$clone/bin/isola.js" --version >/dev/null
  printf '%s run %s: %.1f s, %s MB, %s files\n' "$kind" "$run" "$seconds" "$size" "$files"
  rows+=("| $kind | $run | $(printf '%.1f' "$seconds") | $size | $files | $(cut -d' ' -f1 /proc/loadavg) |")
  json+=("{\"cache\":\"$kind\",\"run\":$run,\"seconds\":$(printf '%.1f' "$seconds"),\"nodeModulesMb\":$size,\"files\":$files}")
  rm -rf "$clone"
}

for run in $(seq 1 "$runs"); do
  cache="$work/cache-$run"
  measure cold "$run" "$cache"
  measure warm "$run" "$cache"
  rm -rf "$cache"
done

{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
  echo
  echo "$(nproc) cores, $(node --version), npm $(npm --version). Cold: an empty npm cache (every tarball"
  echo "downloaded from the registry); warm: the cache the cold run filled. Each in a fresh clone."
  echo
  echo '| npm cache | run | npm install, s | node_modules, MB | files | load average at the end |'
  echo '| --- | ---: | ---: | ---: | ---: | ---: |'
  printf '%s\n' "${rows[@]}"
  echo
} >>"$results/install.md"
entry="{\"measured\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"commit\":\"$commit\",\"node\":\"$(node --version)\",\"runs\":[$(IFS=,; echo "${json[*]}")]}"
if [ -f "$results/install.json" ]; then
  node -e 'const fs=require("fs"); const [file, entry]=process.argv.slice(1); const all=JSON.parse(fs.readFileSync(file,"utf8")); all.push(JSON.parse(entry)); fs.writeFileSync(file, JSON.stringify(all,null,2)+"\n")' "$results/install.json" "$entry"
else
  node -e 'const fs=require("fs"); const [file, entry]=process.argv.slice(1); fs.writeFileSync(file, JSON.stringify([JSON.parse(entry)],null,2)+"\n")' "$results/install.json" "$entry"
fi
echo "$results/install.md"
