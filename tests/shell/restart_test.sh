#!/usr/bin/env bash
# Crash recovery: SIGKILL the daemon while entries exist, start it again on the same (now
# stale) mountpoint with the same store, and prove that everything committed came back:
# bytes, user xattrs, object settings, seq and inode numbers. An entry still being written
# at the crash is gone.
#
# usage: tests/shell/restart_test.sh SMOSD_PATH
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "start smosd"
start_daemon --reset
first_pid=$daemon_pid
obj=$mnt/runs
xobj=$mnt/staged

step "objects and their settings"
mkdir "$obj" "$xobj"
setfattr -n user.smos.capacity -v 16 "$obj"
setfattr -n user.smos.block_size -v $((8 * 1024 * 1024)) "$obj"
setfattr -n user.owner -v restart-test "$obj"
setfattr -n user.smos.commit -v explicit "$xobj"
chmod 750 "$xobj"

step "entries: cp of several sizes, and one with user.dtype set before its commit"
: >"$files/empty"
printf x >"$files/one"
head -c 4097 /dev/urandom >"$files/page"
head -c $((3 * 1024 * 1024 + 5)) /dev/urandom >"$files/big"
names=(empty one page big)
for n in "${names[@]}"; do cp "$files/$n" "$obj/$n"; done
head -c 65536 /dev/urandom >"$files/typed"
"$PY" - "$obj/typed" "$files/typed" <<'EOF'
import os, sys
path, src = sys.argv[1:3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
os.write(fd, open(src, "rb").read())
os.setxattr(fd, "user.dtype", b"float32")  # user xattrs are settable while in write state
os.setxattr(fd, "user.shape", b"128,128")
os.close(fd)  # close mode: the last release commits
EOF
names+=(typed)

step "explicit mode: one entry committed by setfattr, one left in write state at the crash"
head -c 1000 /dev/urandom >"$files/kept"
"$PY" - "$xobj/kept" "$files/kept" <<'EOF'
import os, sys
path, src = sys.argv[1:3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, open(src, "rb").read())
os.setxattr(fd, "user.smos.state", b"idle")
os.close(fd)
EOF
ready=$work/writer-ready
"$PY" - "$xobj/torn" "$ready" <<'EOF' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, b"half-written" * 1000)
open(sys.argv[2], "w").close()
time.sleep(600)  # never commits; killed by the test
EOF
helper_pids+=($!)
deadline=$((SECONDS + 10))
until [[ -e $ready ]]; do
  ((SECONDS < deadline)) || fail "the writer did not start"
  sleep 0.05
done

step "record what was committed"
declare -A seqs inos
for n in "${names[@]}"; do
  seqs[$n]=$(xattr user.smos.seq "$obj/$n")
  inos[$n]=$(stat -c %i "$obj/$n")
done
obj_ino=$(stat -c %i "$obj")
kept_mode=$(stat -c %a "$xobj/kept")
ls -l "$obj" "$xobj"
expect_eq "$(xattr user.smos.entries "$obj")" "${#names[@]}" "committed entries in $obj"
expect_eq "$(xattr user.smos.entries "$xobj")" 1 "committed entries in $xobj"

step "kill -9 smosd (pid $first_pid), just after the root was looked at"
# The kernel now caches the root's attributes, so for a moment stat(2) of the dead mount's
# root still succeeds: the new daemon must not take that for a plain directory.
stat "$mnt" >/dev/null
kill -KILL "$first_pid"
rc=0
wait "$first_pid" || rc=$?
expect_eq "$rc" 137 "exit status of the killed daemon"
kill -KILL "${helper_pids[@]}"
wait "${helper_pids[@]}" 2>/dev/null || true
helper_pids=()
expect_errno "Transport endpoint is not connected" ls "$obj"
is_mounted || fail "the stale mount is gone already"

step "start smosd again on the stale mountpoint, same store"
start_daemon
expect_eq "$(mount_ids | wc -l)" 1 "mounts on $mnt (the stale one cleared)"

step "every committed entry is back"
ls -l "$obj" "$xobj"
expect_eq "$(ls "$obj" | sort | xargs)" "$(printf '%s\n' "${names[@]}" | sort | xargs)" "names in $obj"
for n in "${names[@]}"; do
  cmp "$files/$n" "$obj/$n" || fail "$n differs after the restart"
  expect_eq "$(xattr user.smos.seq "$obj/$n")" "${seqs[$n]}" "seq of $n"
  expect_eq "$(stat -c %i "$obj/$n")" "${inos[$n]}" "inode of $n"
  expect_eq "$(xattr user.smos.state "$obj/$n")" idle "state of $n"
  expect_eq "$(xattr user.smos.readers "$obj/$n")" 0 "readers of $n"
done
expect_eq "$(xattr user.dtype "$obj/typed")" float32 "user.dtype of typed"
expect_eq "$(xattr user.shape "$obj/typed")" 128,128 "user.shape of typed"
expect_eq "$(stat -c %a "$obj/typed")" 640 "mode of typed"

step "objects and their settings are back"
expect_eq "$(stat -c %i "$obj")" "$obj_ino" "inode of $obj"
expect_eq "$(xattr user.smos.capacity "$obj")" 16 "capacity"
expect_eq "$(xattr user.smos.block_size "$obj")" $((8 * 1024 * 1024)) "block_size"
expect_eq "$(xattr user.owner "$obj")" restart-test "user.owner of the object"
expect_eq "$(xattr user.smos.commit "$xobj")" explicit "commit mode"
expect_eq "$(stat -c %a "$xobj")" 750 "mode of $xobj"

step "the explicitly committed entry is back; the one in write state is discarded"
expect_eq "$(ls "$xobj" | xargs)" kept "names in $xobj"
cmp "$files/kept" "$xobj/kept"
expect_eq "$(stat -c %a "$xobj/kept")" "$kept_mode" "mode of kept"
expect_errno "No such file or directory" stat "$xobj/torn"

step "the store goes on: seq continues, capacity is intact"
cp "$files/one" "$obj/after"
max=0
for n in "${names[@]}"; do
  if ((seqs[$n] > max)); then max=${seqs[$n]}; fi
done
expect_eq "$(xattr user.smos.seq "$obj/after")" $((max + 1)) "seq of a new entry"
for i in $(seq 1 $((16 - ${#names[@]} - 1))); do printf '%s' "$i" >"$obj/fill$i"; done
expect_eq "$(xattr user.smos.entries "$obj")" 16 "entries at capacity"
expect_errno "No space left on device" cp "$files/one" "$obj/overflow"

step "unmount: smosd exits 0"
fusermount3 -u "$mnt"
rc=0
wait_gone "$daemon_pid" 10 || rc=$?
expect_eq "$rc" 0 "exit status of smosd"
echo "PASS"
