#!/usr/bin/env bash
# Builds herald_microbench (release) and runs it. Arguments go to Google Benchmark, e.g.
#   scripts/bench.sh --benchmark_filter=List --benchmark_repetitions=5
# Default: every benchmark, 5 repetitions, aggregates only (median, mean, stddev, cv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release --target herald_microbench
if [[ $# -eq 0 ]]; then
  set -- --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
fi
exec build/release/bench/herald_microbench "$@"
