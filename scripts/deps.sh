#!/usr/bin/env bash
# Install the Debian packages that smos needs to build, run and test.
#
# Idempotent: installs only what is missing, and runs `apt-get update` only then. Works on a
# fresh Debian 12 with nothing but git, as root or through sudo.
set -euo pipefail

packages=(
  # build
  g++ cmake make pkg-config
  libfuse3-dev liburing-dev libboost-dev libspdlog-dev
  libgtest-dev libgmock-dev
  # run: fusermount3 and /etc/fuse.conf; mountpoint(1)
  fuse3 util-linux
  # test: getfattr/setfattr, the numpy scenario, cmp
  attr python3 python3-numpy diffutils
  # man -l man/smos.7 (man-db renders with groff-base)
  man-db groff-base
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "deps.sh: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null; then
    echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"
