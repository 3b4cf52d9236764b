#!/usr/bin/env bash
# Unmount the store that scripts/mount.sh mounted at /mnt/smos. smosd exits once unmounted;
# the store itself stays in /dev/shm and comes back at the next mount.
#
# usage: scripts/umount.sh [-z]   (-z: lazy, for a mount that is busy or whose daemon died)
set -euo pipefail

mnt=/mnt/smos
if ! awk -v m="$mnt" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; then
  echo "umount.sh: $mnt is not mounted"
  exit 0
fi
if [[ ${1:-} == -z ]]; then
  fusermount3 -uz "$mnt"
elif ! fusermount3 -u "$mnt"; then
  echo "umount.sh: if $mnt is busy, close what uses it, or run: scripts/umount.sh -z" >&2
  exit 1
fi
echo "umount.sh: unmounted $mnt"
