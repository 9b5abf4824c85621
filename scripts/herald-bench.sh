#!/usr/bin/env bash
# Builds herald_microbench (preset `release`, as scripts/bench.sh does) and runs
# tools/herald-bench on it; every argument goes to the tool. Examples:
#   scripts/herald-bench.sh --quick                 # every suite in under a minute
#   scripts/herald-bench.sh --suite sync --suite async --repetitions 5
#   scripts/herald-bench.sh --help                  # the options (builds nothing)
# Tables go to stdout; the build's output and the progress bar go to stderr. docs/bench.md
# explains the figures.
set -euo pipefail
caller_dir=$PWD  # the tool runs from here, so that relative --out and --load paths work
root=$(cd "$(dirname "$0")/.." && pwd)
tool=$root/tools/herald-bench/herald_bench.py

for arg in "$@"; do
  case "$arg" in
    -h | --help | --load | --load=*) exec python3 "$tool" "$@" ;;
  esac
done

cd "$root"
scripts/install-deps.sh >&2
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release --target herald_microbench >&2
cd "$caller_dir"
exec python3 "$tool" --binary "$root/build/release/bench/herald_microbench" "$@"
