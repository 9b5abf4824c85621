#!/usr/bin/env bash
# Builds herald (release) and runs the demo. From a fresh clone this is the first command to
# run. Until the load-balancer demo lands (tools/herald-demo), the demo is the mt_list work-queue
# example: producers and workers sharing one lock-free-style list, with a census at the end.
# Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
cmake --preset release >/dev/null
cmake --build --preset release --target herald_example_01_mt_list_work_queue
exec build/release/examples/herald_example_01_mt_list_work_queue "$@"
