#!/usr/bin/env bash
# Builds herald (release) and runs the demo: herald-demo, a simulated load balancer whose
# servers publish HAProxy-style SERVER events to subscribers in every delivery mode, ending
# with a summary table per subscription that checks itself (exit 1 if the counts do not add
# up). From a fresh clone this is the first command to run.
#
# Usage: scripts/demo.sh [herald-demo options]   e.g. --duration 10 --servers 64 --rate 20000
#        scripts/demo.sh --help                   the demo's options
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release --target herald_demo
exec build/release/tools/herald-demo/herald-demo "$@"
