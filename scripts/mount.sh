#!/usr/bin/env bash
# Install what is missing, build, and mount the store at /mnt/smos.
#
# usage: scripts/mount.sh [SMOSD_OPTIONS...]
#   Options go to smosd (see `man -l man/smosd.8`), e.g. --store=NAME or -o allow_other.
#   smosd puts itself in the background unless given -f or -d.
#   Idempotent: if /mnt/smos is already a live smos mount, it says so and exits 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mnt=/mnt/smos

sudo=()
((EUID == 0)) || sudo=(sudo)

# /proc/mounts escapes spaces and the like; /mnt/smos has none, so a plain match is enough.
mount_line() { awk -v m="$mnt" '$2 == m' /proc/mounts | tail -n 1; }

if mountpoint -q "$mnt" 2>/dev/null; then
  line=$(mount_line)
  case $line in
    smos* | *" fuse.smos"*)
      echo "mount.sh: $mnt is already mounted ($line)"
      exit 0
      ;;
    *)
      echo "mount.sh: $mnt is already mounted, and not by smos: $line" >&2
      exit 1
      ;;
  esac
fi
# A stale mount (the daemon died: ENOTCONN) is not live; smosd clears it itself at start-up.

scripts/deps.sh
scripts/build.sh build

if [[ -z $(mount_line) && ! -d $mnt ]]; then
  "${sudo[@]}" mkdir -p "$mnt"
  ((EUID == 0)) || "${sudo[@]}" chown "$(id -u):$(id -g)" "$mnt"
fi

ring=/sys/module/fuse/parameters/enable_uring
if [[ $(cat "$ring" 2>/dev/null) == N ]]; then
  echo "mount.sh: a control call costs less than half as much through io_uring; to have smosd" \
    "use it, run 'echo 1 > $ring' as root before mounting (smosd(8), NOTES)"
fi

build/smosd "$@" "$mnt"

# Without -f/-d smosd returns once the mount is up. With them it runs in the foreground, and
# we only get here after it exits.
if mountpoint -q "$mnt" 2>/dev/null; then
  echo "mount.sh: smos is mounted at $mnt (unmount with scripts/umount.sh)"
fi
