#!/usr/bin/env bash
# Build smosd and smos_bench, then run the benchmark of issue 4 (docs/benchmarks.md): every
# workload on a fresh smos mount and on tmpfs, one table line each, with the ratio to tmpfs.
#
# usage: scripts/bench.sh [smos_bench options]     e.g. scripts/bench.sh --quick
#   Options pass through to smos_bench: --quick, --only W[,W...], --markdown, --memory SIZE,
#   --timeout SEC, --no-passthrough, --no-io-uring. The default size takes under 3 minutes, --quick under 30 seconds.
#   SMOS_BUILD_DIR picks the build directory (default build/). Build output goes to stderr, so
#   stdout is the table alone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${SMOS_BUILD_DIR:-build}

scripts/build.sh "$dir" >&2

# Requests go through smosd's io_uring only while the fuse module's enable_uring is on (kernel
# 6.14+, off by default). As root, turn it on for this run and put it back afterwards; pass
# --no-io-uring to measure /dev/fuse instead.
ring_param=/sys/module/fuse/parameters/enable_uring
ring_before=$(cat "$ring_param" 2>/dev/null || true)
if [[ $ring_before == N && -w $ring_param ]]; then
  trap 'echo N >"$ring_param"' EXIT
  echo 1 >"$ring_param"
fi

"$dir/smos_bench" --smosd "$dir/smosd" "$@"
