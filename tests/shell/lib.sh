# Helpers for the shell-level tests; sourced by tests/shell/*_test.sh, never run alone.
#
# Each test gets its own temp dir (mountpoint and scratch files) and its own store name. The
# EXIT trap always unmounts, reaps the daemons this test started (only those), and removes
# the store's files from /dev/shm, whatever way the test ends.
set -euo pipefail
export LC_ALL=C

# Debian's python3, which has numpy; the python3 on PATH may be another one.
PY=/usr/bin/python3

SMOSD=${1:?usage: $0 SMOSD_PATH}
[[ -x $SMOSD ]] || { echo "FAIL: $SMOSD is not an executable" >&2; exit 1; }
SMOSD=$(readlink -f "$SMOSD")
if [[ ! -c /dev/fuse ]]; then
  echo "SKIP: /dev/fuse is absent"
  exit 77
fi

work=$(mktemp -d)
mnt=$work/mnt
files=$work/files
log=$work/smosd.log
mkdir "$mnt" "$files"
store=sh$$$RANDOM
daemon_pids=()  # every smosd this test started
helper_pids=()  # background helpers (e.g. a process holding a file open)

step() { echo "--- $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
  [[ $1 == "$2" ]] || fail "$3: got '$1', want '$2'"
  echo "    ok: $3 = '$1'"
}

# expect_errno MESSAGE CMD...: CMD must fail, and its stderr must contain MESSAGE
# (strerror text, e.g. "Operation not permitted").
expect_errno() {
  local want=$1 err
  shift
  if err=$("$@" 2>&1 >/dev/null); then
    fail "'$*' succeeded; want '$want'"
  fi
  [[ $err == *"$want"* ]] || fail "'$*' failed with '$err'; want '$want'"
  echo "    ok: '$*' fails: $want"
}

# xattr NAME PATH: the value of one attribute.
xattr() { getfattr --absolute-names --only-values -n "$1" "$2"; }

is_mounted() { awk -v m="$mnt" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
# The ids of the mounts stacked on $mnt, oldest first.
mount_ids() { awk -v m="$mnt" '$5 == m { print $1 }' /proc/self/mountinfo; }
# Whether a live FUSE filesystem answers on $mnt. statfs(2) always asks the daemon (a stale
# mount fails with ENOTCONN), and a plain directory has another type.
is_live_fuse() { [[ $(stat -f -c %t "$mnt" 2>/dev/null) == 65735546 ]]; }

# start_daemon [SMOSD_OPTIONS...]: smosd in the foreground, in the background of this shell;
# returns once its mount is up. Sets $daemon_pid.
#
# `mountpoint -q` alone is not enough: on a stale mount whose root attributes the kernel still
# caches, it succeeds before the new daemon has mounted.
start_daemon() {
  "$SMOSD" --store="$store" -f "$@" "$mnt" >>"$log" 2>&1 &
  daemon_pid=$!
  daemon_pids+=("$daemon_pid")
  local deadline=$((SECONDS + 20))
  until is_live_fuse && mountpoint -q "$mnt" 2>/dev/null; do
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      local rc=0
      wait "$daemon_pid" || rc=$?
      fail "smosd exited ($rc) before the mount was up"
    fi
    ((SECONDS < deadline)) || fail "no mount at $mnt after 20s"
    sleep 0.05
  done
  echo "    smosd pid $daemon_pid, store $store, mounted at $mnt"
}

# wait_gone PID SECONDS: reap PID if it exits in time. Returns its exit status, or 124.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || return 124
    sleep 0.05
  done
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

cleanup() {
  local rc=$?
  set +e
  for pid in "${helper_pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Mounts may be stacked (a new one over a stale one): take them all off.
  local tries
  for tries in 1 2 3 4; do
    is_mounted || break
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
  done
  for pid in "${daemon_pids[@]}"; do
    local gone=0
    wait_gone "$pid" 10 || gone=$?
    if ((gone == 124)); then
      echo "cleanup: smosd $pid still running after unmount; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  rm -f "/dev/shm/$store.meta" "/dev/shm/$store.lock" "/dev/shm/$store".slot.*
  if ((rc != 0)) && [[ -s $log ]]; then
    echo "--- smosd log (last 40 lines):" >&2
    tail -n 40 "$log" >&2
  fi
  is_mounted || rm -rf --one-file-system "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
