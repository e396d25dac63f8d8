#!/usr/bin/env bash
# The test command: installs what the build needs, builds everything, runs every test
# through CTest. Ends with CTest's own summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
# ccache keys on the compiler's command line: with the checkout's parent as base dir the
# project's paths are made relative, so another clone of the repo reuses the cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(cd .. && pwd)}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" --timeout 600 "$@"
