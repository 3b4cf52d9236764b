#!/usr/bin/env bash
# The user story of the README, with shell tools only: mkdir, setfattr, cp, ls, getfattr,
# cat, numpy's mmap, the zero-copy segment, rm, and the errors a user meets first.
#
# usage: tests/shell/scenario_test.sh SMOSD_PATH
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "start smosd"
start_daemon --reset
obj=$mnt/frames

step "mkdir: a new object with the default settings"
mkdir "$obj"
[[ -d $obj ]] || fail "$obj is not a directory"
expect_eq "$(xattr user.smos.capacity "$obj")" 1024 "default capacity"
expect_eq "$(xattr user.smos.commit "$obj")" close "default commit mode"
expect_eq "$(xattr user.smos.entries "$obj")" 0 "entries of a new object"

step "setfattr user.smos.capacity 64"
setfattr -n user.smos.capacity -v 64 "$obj"
expect_eq "$(xattr user.smos.capacity "$obj")" 64 "capacity"

step "make obs.npy with numpy"
"$PY" -c '
import sys, numpy
numpy.save(sys.argv[1], numpy.arange(250000, dtype=numpy.int64).reshape(500, 500))
numpy.save(sys.argv[2], numpy.full((1000,), 7, dtype=numpy.float32))
' "$files/obs.npy" "$files/new.npy"
size=$(stat -c %s "$files/obs.npy")
want_sum=$((250000 * 249999 / 2))

step "cp obs.npy into the object: create, write, and commit on close"
cp "$files/obs.npy" "$obj/0"

step "ls -l lists the committed entry with its size"
ls -l "$obj"
expect_eq "$(ls -l "$obj" | awk '$NF == "0" { print $5 }')" "$size" "size in ls -l"
expect_eq "$(ls "$obj")" 0 "names in ls"
expect_eq "$(stat -c %s "$obj/0")" "$size" "size in stat"

step "getfattr -d -m - shows the entry's state"
attrs=$(getfattr --absolute-names -d -m - "$obj/0")
echo "$attrs"
for want in 'user.smos.state="idle"' 'user.smos.readers="0"' 'user.smos.seq="1"'; do
  grep -qxF "$want" <<<"$attrs" || fail "getfattr -d lacks $want"
  echo "    ok: $want"
done
segment=$(sed -nE 's/^user\.smos\.segment="(.*)"$/\1/p' <<<"$attrs")
[[ $segment == /dev/shm/"$store".slot.* ]] || fail "segment '$segment' is not /dev/shm/$store.slot.N"
echo "    ok: segment $segment"
expect_eq "$(xattr user.smos.entries "$obj")" 1 "entries of the object"

step "cat and cmp return the same bytes"
cmp "$files/obs.npy" "$obj/0"
cat "$obj/0" | cmp - "$files/obs.npy"
echo "    ok: identical"

step "numpy.load(mmap_mode='r') through the mount"
got_sum=$("$PY" -c '
import sys, numpy
a = numpy.load(sys.argv[1], mmap_mode="r")
print(int(a.sum()))
' "$obj/0")
expect_eq "$got_sum" "$want_sum" "sum of the array"

step "zero-copy: mmap user.smos.segment while the entry is held open (the lease)"
"$PY" - "$obj/0" "$files/obs.npy" <<'EOF'
import mmap, os, subprocess, sys
path, ref = sys.argv[1], sys.argv[2]
want = open(ref, "rb").read()
fd = os.open(path, os.O_RDONLY)  # the lease: the segment is this entry's only while fd is open
try:
    state = os.getxattr(fd, "user.smos.state").decode()
    readers = os.getxattr(fd, "user.smos.readers").decode()
    assert (state, readers) == ("busy", "1"), f"held open: state {state}, readers {readers}"
    segment = os.getxattr(fd, "user.smos.segment").decode()
    with open(segment, "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert len(m) == len(want), f"segment is {len(m)} bytes, want {len(want)}"
            assert m[:] == want, "segment bytes differ"
    cat = subprocess.run(["cat", segment], check=True, capture_output=True).stdout
    assert cat == want, "cat of the segment differs"
    print(f"    ok: {segment}: {len(want)} bytes, state busy, readers 1")
finally:
    os.close(fd)
EOF

step "after close the entry is idle again"
deadline=$((SECONDS + 5))
# The kernel sends release after close() returns, so the count drops a moment later.
until [[ $(xattr user.smos.readers "$obj/0") == 0 ]]; do
  ((SECONDS < deadline)) || fail "readers still $(xattr user.smos.readers "$obj/0")"
  sleep 0.05
done
expect_eq "$(xattr user.smos.state "$obj/0")" idle "state"

step "cp over a committed entry is an atomic replace; a reader keeps the old version"
"$PY" - "$obj/0" "$files/obs.npy" "$files/new.npy" <<'EOF'
import os, subprocess, sys
path, old_ref, new_ref = sys.argv[1:4]
old, new = open(old_ref, "rb").read(), open(new_ref, "rb").read()
with open(path, "rb") as reader:
    subprocess.run(["cp", new_ref, path], check=True)
    assert reader.read() == old, "an open reader saw the replacement"
    state = os.getxattr(reader.fileno(), "user.smos.state").decode()
    assert state == "zombie", f"the replaced version is {state}, want zombie"
    with open(path, "rb") as f:
        assert f.read() == new, "the name does not give the new version"
print("    ok: old reader sees the old bytes (zombie), the name gives the new ones")
EOF
cmp "$files/new.npy" "$obj/0"
expect_eq "$(xattr user.smos.seq "$obj/0")" 2 "seq of the new version"
expect_eq "$(xattr user.smos.entries "$obj")" 1 "entries after replace"

step "rm the entry; ls shows nothing"
rm "$obj/0"
expect_eq "$(ls "$obj")" "" "ls after rm"
expect_eq "$(xattr user.smos.entries "$obj")" 0 "entries after rm"
expect_errno "No such file or directory" cat "$obj/0"

step "cmd > entry: the entry commits when the redirection ends, whoever looks meanwhile"
# The shell closes its own descriptor before the block writes, and sleep closes its copy half a
# second before the last echo: neither close is the last, so a watcher must not commit it.
{ echo first; sleep 0.5 >&-; echo second; } >"$obj/log" &
writer=$!
while kill -0 "$writer" 2>/dev/null; do
  ls "$obj" >/dev/null
  stat "$obj/log" >/dev/null 2>&1 || true
  sleep 0.01
done
wait "$writer" || fail "the redirection's writes failed"
expect_eq "$(cat "$obj/log")" $'first\nsecond' "the entry's bytes"
rm "$obj/log"

step "errors a shell user meets"
expect_errno "Operation not permitted" touch "$mnt/file-in-root"
expect_errno "Operation not permitted" mkdir "$obj/nested"
expect_errno "File exists" mkdir "$obj"
cp "$files/obs.npy" "$obj/a"
expect_errno "Directory not empty" rmdir "$obj"
expect_errno "Operation not permitted" ln "$obj/a" "$obj/b"
expect_errno "Operation not permitted" ln -s a "$obj/c"
expect_errno "Device or resource busy" setfattr -n user.smos.capacity -v 8 "$obj"
expect_errno "Invalid argument" setfattr -n user.smos.commit -v sometimes "$obj"
expect_errno "Operation not permitted" setfattr -n user.smos.entries -v 5 "$obj"
expect_errno "Operation not permitted" bash -c 'echo more >>"$1"' _ "$obj/a"
cmp "$files/obs.npy" "$obj/a"

step "df reports the memory budget"
df -h "$mnt"
blocks=$(stat -f -c %b "$mnt")
((blocks > 0)) || fail "statfs reports $blocks blocks"
echo "    ok: $blocks blocks"

step "rm -r the object"
cp "$files/new.npy" "$obj/b"
rm -r "$obj"
expect_eq "$(ls -A "$mnt")" "" "ls -A of the root"
expect_errno "No such file or directory" stat "$obj"

step "SIGTERM unmounts cleanly and exits 0"
kill -TERM "$daemon_pid"
rc=0
wait_gone "$daemon_pid" 10 || rc=$?
expect_eq "$rc" 0 "exit status of smosd"
is_mounted && fail "$mnt is still mounted"
echo "PASS"
