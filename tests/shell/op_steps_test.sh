#!/usr/bin/env bash
# bench/op_steps, the step-by-step timing of docs/benchmarks.md, and bench/visibility run
# against a mount: a line of figures each, and the objects they used are left empty. (How long
# things take is not judged.)
#
# usage: tests/shell/op_steps_test.sh SMOSD_PATH     (both are built next to smosd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OP_STEPS=$(dirname "$SMOSD")/op_steps
VISIBILITY=$(dirname "$SMOSD")/visibility
for tool in "$OP_STEPS" "$VISIBILITY"; do [[ -x $tool ]] || fail "$tool is not built"; done

start_daemon --reset --memory=64M
mkdir "$mnt/q"

step "op_steps on an object: nine steps, each with a time"
out=$(timeout 60 "$OP_STEPS" "$mnt/q" 50 --cpu 0)
echo "$out"
expect_eq "$(grep -cE '^  [.a-z ]+ +[0-9]+\.[0-9]+ us$' <<<"$out")" 9 "step lines"

step "it leaves the object empty"
expect_eq "$(xattr user.smos.entries "$mnt/q")" 0 "entries"

step "bad input: a directory that is no object"
rc=0
timeout 60 "$OP_STEPS" "$mnt/no-such-object" 5 2>"$files/err" || rc=$?
expect_eq "$rc" 1 "exit status"
grep -q "open .*/.push" "$files/err" || fail "no reason given: $(cat "$files/err")"

step "visibility: another process finds each entry once its writer closed it"
mkdir "$mnt/v"
out=$(timeout 60 "$VISIBILITY" "$mnt/v" 20 --spin 1000)
echo "$out"
grep -qE '^20 entries .* median -?[0-9.]+ us, p90 -?[0-9.]+ us, worst -?[0-9.]+ us$' <<<"$out" ||
  fail "no figures"
expect_eq "$(xattr user.smos.entries "$mnt/v")" 0 "entries left"
