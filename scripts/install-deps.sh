#!/usr/bin/env bash
# Installs the Debian packages herald's build, tests and benchmarks need, and only those that
# are missing: a machine that has them all is left untouched (no apt-get at all).
#
# Usage: scripts/install-deps.sh            # everything the quick-start commands need
# Environment: HERALD_APT_EXTRA="pkg ..."   # more packages to ensure (e.g. for a later issue)
set -euo pipefail

packages=(
  g++            # the compiler (GCC 12 on Debian 12); its sanitizer runtimes come with it
  clang          # the second compiler (clang 14 on Debian 12): the test command's clang step
  cmake          # 3.25 on Debian 12
  ninja-build    # the generator the presets use
  pkgconf        # pkg-config, used by the install test
  libgtest-dev   # GoogleTest
  libgmock-dev   # GoogleMock
  libbenchmark-dev  # Google Benchmark (herald_microbench)
  libxxhash-dev  # xxHash (subscription ids), used header-only
  libasio-dev    # standalone asio (herald/asio.hpp adapter, its test and example), header-only
  libboost-dev   # Boost.Signals2, a peer in herald_microbench
  libsigc++-3.0-dev  # libsigc++ 3, a peer in herald_microbench
  libconcurrentqueue-dev  # moodycamel ConcurrentQueue, a peer in herald_microbench (async)
  python3        # tools/herald-bench (standard library only) and its unit test
  gnuplot-nox    # tools/herald-bench's PNG plots (pngcairo terminal, no X11)
  fonts-dejavu-core  # the font of those plots' text
)
# shellcheck disable=SC2206
packages+=(${HERALD_APT_EXTRA:-})

missing=()
for pkg in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for a package that is fully installed.
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "herald: all build dependencies are installed"
  exit 0
fi

echo "herald: installing missing packages: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "herald: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
