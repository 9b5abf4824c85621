#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). From a fresh clone:
#   1. installs missing Debian packages (scripts/install-deps.sh);
#   2. release build: every test (unit, stress, examples, install);
#   3. AddressSanitizer + UBSan (+ LeakSanitizer) build: unit, stress and example tests;
#   4. ThreadSanitizer build: unit, stress and example tests;
#   5. clang build (Debug, with -Wthread-safety): unit, stress and example tests.
# Each step is a CMake workflow preset (CMakePresets.json); the first failure stops the run.
# Options: --only release|asan|tsan|clang   run one step (after the dependency check).
set -euo pipefail
cd "$(dirname "$0")/.."

only=""
if [[ "${1:-}" == "--only" ]]; then
  only="${2:?--only needs release, asan, tsan or clang}"
fi

scripts/install-deps.sh

# Two cores: build with both; tests inside one preset run as the preset says.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

summary=()
run_step() {
  local preset=$1
  if [[ -n "$only" && "$only" != "$preset" ]]; then
    return 0
  fi
  echo
  echo "==== herald: ${preset} build and tests ===="
  local start=$SECONDS
  cmake --workflow --preset "$preset"
  summary+=("${preset}: passed in $((SECONDS - start)) s")
}

run_step release
run_step asan
run_step tsan
run_step clang

echo
echo "==== herald: test summary ===="
printf '%s\n' "${summary[@]}"
