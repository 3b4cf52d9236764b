#!/usr/bin/env bash
# Configure and build smos.
#
# usage: scripts/build.sh [BUILD_DIR [CMAKE_ARGS...]]
#   BUILD_DIR defaults to build/, relative to the repository root. Extra arguments go to the
#   configure step, e.g. scripts/build.sh build-asan -DSMOS_SANITIZE=address,undefined
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-build}
(($# > 0)) && shift

cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$dir" -j "$(nproc)"
