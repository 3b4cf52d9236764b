#!/bin/bash
# An RL pipeline on smos with shell tools only: the shell twin of rl_pipeline.py.
#
#   actors  --cat > .push-->   <prefix>traj     --cat .pop-->            learner
#   actors  <--cat .latest--   <prefix>weights  <--yes | head > weights--  learner
#
# Actors read the latest weights and push trajectories (a header line with a checksum, then a
# payload). The learner pops them (cat .pop blocks until there is one), checks each, and after
# every batch publishes a new version of `weights` with `>`, an atomic replace: a reader sees
# one whole version, never a mix. Exit status 0, or 1 with what went wrong.
#
#   examples/rl_pipeline.sh MOUNTPOINT [actors [trajectories-per-actor [batch]]]
set -euo pipefail

mnt=${1:?usage: rl_pipeline.sh MOUNTPOINT [actors [trajectories [batch]]]}
actors=${2:-3}
per_actor=${3:-10}
batch=${4:-5}
traj=$mnt/sh_$$_traj
weights=$mnt/sh_$$_weights
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -rf "$traj" "$weights" 2>/dev/null || true' EXIT

# Version v of the weights: 4096 lines that all say v, written by cp: an atomic replace.
publish() {
  head -n 4096 < <(yes "$1") > "$work/weights"
  cp "$work/weights" "$weights/weights"
}

# The version in a read of the weights; fails if the read mixed versions.
version_of() {
  local v
  v=$(sort -u)
  [[ $v =~ ^[0-9]+$ ]] || { echo "rl_pipeline.sh: torn weights read" >&2; return 1; }
  echo "$v"
}

actor() {
  local a=$1 i v last=0 payload
  for ((i = 0; i < per_actor; i++)); do
    v=$(version_of < "$weights/.latest")
    ((v >= last)) || { echo "rl_pipeline.sh: actor $a went back to version $v" >&2; return 1; }
    last=$v
    payload=$(head -c 2048 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$a $i $v $(echo "$payload" | md5sum | cut -d' ' -f1)" > "$work/traj.$a"
    echo "$payload" >> "$work/traj.$a"
    # cp opens .push once (a new entry), writes, and its close commits, as `cat x > .push`
    # would.
    until cp "$work/traj.$a" "$traj/.push" 2>/dev/null; do
      sleep 0.01  # the queue is full (ENOSPC): the learner is behind
    done
  done
}

learner() {
  local total=$((actors * per_actor)) n=0 version=0 a i v sum payload
  while ((n < total)); do
    {
      read -r a i v sum
      read -r payload
    } < "$traj/.pop"  # blocks until a trajectory can be popped; the entry is freed at close
    [[ $(echo "$payload" | md5sum | cut -d' ' -f1) == "$sum" ]] ||
      { echo "rl_pipeline.sh: corrupt trajectory $a.$i" >&2; return 1; }
    echo "$a $i" >> "$work/seen"
    n=$((n + 1))
    if ((n % batch == 0 || n == total)); then
      version=$((version + 1))
      publish "$version"
    fi
  done
  echo "$version" > "$work/versions"
}

mkdir "$traj" "$weights"
setfattr -n user.smos.capacity -v 32 "$traj"
publish 0

start=$(date +%s%N)
learner & learner_pid=$!
pids=()
for ((a = 0; a < actors; a++)); do
  actor "$a" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
if ((status != 0)); then
  rm -rf "$traj"  # wakes the learner's blocked `cat .pop` with ENOENT
fi
wait "$learner_pid" || status=1
ms=$((($(date +%s%N) - start) / 1000000))

total=$((actors * per_actor))
popped=$(wc -l < "$work/seen" 2>/dev/null || echo 0)
dups=$(sort "$work/seen" 2>/dev/null | uniq -d | wc -l)
echo "rl_pipeline.sh: $popped of $total trajectories popped, $dups duplicates," \
  "$(cat "$work/versions" 2>/dev/null || echo 0) weight versions" \
  "(weights seq $(getfattr --absolute-names -n user.smos.seq --only-values "$weights/weights")) in" \
  "$ms ms"
if ((status != 0 || popped != total || dups != 0)); then
  echo "rl_pipeline.sh: FAILED" >&2
  exit 1
fi
rm -r "$traj" "$weights"
