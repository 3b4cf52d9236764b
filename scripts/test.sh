#!/usr/bin/env bash
# Install what is missing, build twice, and run every test under both builds:
#   build/       RelWithDebInfo, requests through /dev/fuse
#   build-asan/  -DSMOS_SANITIZE=address,undefined, at -O1 with assertions on, requests through
#                the io_uring where the kernel has one
# Exits non-zero if any build or test fails, or if a test left a FUSE mount behind.
# The last line is the summary: "test.sh: N passed, N failed[, N skipped]".
#
# usage: scripts/test.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS

scripts/deps.sh || { echo "test.sh: deps.sh failed"; echo "test.sh: 0 passed, 1 failed"; exit 1; }

echo "test.sh: kernel $(uname -r), $(nproc) cores, /dev/fuse $([[ -c /dev/fuse ]] && echo present || echo ABSENT)"

# Every test that honours TMPDIR (mktemp -d, std::filesystem::temp_directory_path) mounts in
# here, so anything left mounted under it is ours.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/smos-test.XXXXXX")
export TMPDIR=$tmp

# Every process of this run inherits the mark, so a daemon still serving a mount at the end
# can be traced back to it.
export SMOS_TEST_RUN="$$.$RANDOM"

# FUSE mounts under /tmp or $tmp, one mountpoint a line, as /proc/mounts spells them.
fuse_mounts() {
  awk -v t="$tmp/" '$3 ~ /^fuse/ && (index($2, "/tmp/") == 1 || index($2, t) == 1) { print $2 }' \
    /proc/mounts | sort -u
}

# Whether a mount that appeared during the run is traceably this run's: it is under $tmp, or
# the process serving it carries our mark.
is_ours() {
  [[ $1 == "$tmp"/* ]] && return 0
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null | grep -qxF -- "$1" || continue
    grep -qzxF "SMOS_TEST_RUN=$SMOS_TEST_RUN" "$p/environ" 2>/dev/null && return 0
  done
  return 1
}
mounts_before=$(fuse_mounts)
shm_before=$(ls /dev/shm 2>/dev/null | sort)

passed=0 failed=0 skipped=0

# run_suite NAME BUILD_DIR [CMAKE_ARGS...]: build, then ctest; adds to the counts.
run_suite() {
  local name=$1 dir=$2
  shift 2
  local t0=$SECONDS log="$tmp/ctest-$name.log"
  echo "=== test.sh: $name: build $dir $*"
  if ! scripts/build.sh "$dir" "$@"; then
    echo "=== test.sh: $name: BUILD FAILED"
    failed=$((failed + 1))
    return
  fi
  echo "=== test.sh: $name: ctest"
  ctest --test-dir "$dir" --output-on-failure -j2 --timeout 300 --no-tests=error 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}

  # "100% tests passed, 0 tests failed out of 12"; skipped tests count as passed there.
  local summary total fail skip
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [[ -z $summary ]]; then
    echo "=== test.sh: $name: ctest gave no summary (exit $rc)"
    failed=$((failed + 1))
    return
  fi
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
  fail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$summary")
  skip=$(grep -cE '^[[:space:]]*[0-9]+ - .*\((Skipped|Disabled)\)$' "$log")
  passed=$((passed + total - fail - skip))
  failed=$((failed + fail))
  skipped=$((skipped + skip))
  if ((rc != 0 && fail == 0)); then
    echo "=== test.sh: $name: ctest exited $rc"
    failed=$((failed + 1))
  fi
  echo "=== test.sh: $name: $((total - fail - skip)) passed, $fail failed, $skip skipped" \
    "in $((SECONDS - t0))s"
}

# The kernel hands requests to a daemon's io_uring only while the fuse module's enable_uring
# is on (kernel 6.14+; off by default). Each build runs the whole suite through one path: the
# release build through /dev/fuse, the sanitized one through the ring. The setting is put back
# at the end. Without root or the parameter, both run through whatever the kernel does.
ring_param=/sys/module/fuse/parameters/enable_uring
ring_before=$(cat "$ring_param" 2>/dev/null || true)
set_ring() {  # set_ring 0|1: prints which path the next suite takes
  if [[ -w $ring_param ]] && echo "$1" >"$ring_param" 2>/dev/null; then
    echo "test.sh: requests through $([[ $1 == 1 ]] && echo "the io_uring" || echo "/dev/fuse")"
  else
    echo "test.sh: cannot set $ring_param (${ring_before:-absent}); the ring tests may skip"
  fi
}
restore_ring() { [[ -n $ring_before && -w $ring_param ]] && echo "$ring_before" >"$ring_param"; }
trap restore_ring EXIT

set_ring 0
run_suite release build
set_ring 1
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  run_suite asan build-asan -DSMOS_SANITIZE=address,undefined \
  -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g"
restore_ring

# No test may leave a mount behind. Ours are reported, cleared, and fail the run. A new mount
# that cannot be traced to this run (say, a stale one whose daemon died) fails it too in CI,
# where nothing else mounts; elsewhere it may be someone else's, so it is only reported.
# Either way it is left alone.
leaked=0
while read -r m; do
  [[ -n $m ]] || continue
  if is_ours "$m"; then
    echo "test.sh: FUSE mount left behind by the tests: $m (unmounting it)"
    fusermount3 -uz "$m" || true
    leaked=$((leaked + 1))
  elif [[ ${CI:-} == true ]]; then
    echo "test.sh: FUSE mount left behind: $m"
    leaked=$((leaked + 1))
  else
    echo "test.sh: warning: a FUSE mount appeared during the run, maybe not ours: $m"
  fi
done < <(comm -13 <(echo "$mounts_before") <(fuse_mounts))
((leaked == 0)) || failed=$((failed + 1))
new_shm=$(comm -13 <(echo "$shm_before") <(ls /dev/shm 2>/dev/null | sort) | wc -l)
if ((new_shm > 0)); then
  echo "test.sh: warning: $new_shm new files in /dev/shm after the run (stores not removed?)"
fi
if [[ -z $(fuse_mounts | grep -F "$tmp/") ]]; then
  rm -rf --one-file-system "$tmp"
fi

echo "test.sh: $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s"
line="test.sh: $passed passed, $failed failed"
((skipped > 0)) && line+=", $skipped skipped"
echo "$line"
((failed == 0))
