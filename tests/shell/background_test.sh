#!/usr/bin/env bash
# smosd without -f: it detaches, serves, and on SIGTERM unmounts and exits. It is started with
# a mountpoint relative to its starting directory, which it leaves for / when it detaches: the
# unmount at exit must still find the mount.
#
# usage: tests/shell/background_test.sh SMOSD_PATH
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "start smosd in the background, on the relative mountpoint 'mnt'"
(cd "$work" && "$SMOSD" --store="$store" --reset --memory=64M mnt >>"$log" 2>&1)
deadline=$((SECONDS + 20))
until is_live_fuse; do
  ((SECONDS < deadline)) || fail "no mount at $mnt after 20s"
  sleep 0.05
done
# The detached daemon is no child of this shell: find it by its store name, unique to this test.
pid=
for cmdline in /proc/[0-9]*/cmdline; do
  if tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -q -- "--store=$store "; then
    pid=${cmdline#/proc/}
    pid=${pid%/cmdline}
    break
  fi
done
[[ -n $pid ]] || fail "no smosd process with --store=$store"
daemon_pids+=("$pid")
echo "    smosd pid $pid"

step "it serves"
mkdir "$mnt/q"
printf queued >"$mnt/q/.push"
expect_eq "$(cat "$mnt/q/.pop")" queued "the pop"

step "SIGTERM: it unmounts and exits"
kill -TERM "$pid"
deadline=$((SECONDS + 10))
while kill -0 "$pid" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "smosd $pid still running 10s after SIGTERM"
  sleep 0.05
done
if is_mounted; then fail "the mount is still there after smosd exited: $(grep " $mnt " /proc/mounts)"; fi
echo "    ok: unmounted"
