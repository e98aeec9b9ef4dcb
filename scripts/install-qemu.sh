#!/usr/bin/env bash
# Makes sure the arm64 Lambda binaries can run on this (x86_64) machine: `qemu-aarch64`
# (user-mode emulation, Debian's qemu-user) and the arm64 glibc it loads them with
# (/usr/aarch64-linux-gnu, Debian's libc6-arm64-cross). Installs both with apt-get when either
# is missing; does nothing otherwise. Versions are whatever the distribution ships (apt cannot
# pin them portably), so they are printed for the record.
set -euo pipefail

SYSROOT=/usr/aarch64-linux-gnu

fail() { echo "install-qemu.sh: $*" >&2; exit 1; }

have() { command -v qemu-aarch64 >/dev/null 2>&1 && [[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]]; }

if ! have; then
  command -v apt-get >/dev/null 2>&1 ||
    fail "qemu-aarch64 or $SYSROOT is missing and apt-get is not available: install QEMU user-mode emulation (qemu-aarch64) and an arm64 glibc sysroot at $SYSROOT (Debian/Ubuntu: qemu-user and libc6-arm64-cross)"
  as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "installing qemu-user and libc6-arm64-cross needs root: run 'apt-get install -y qemu-user libc6-arm64-cross' as root"
    as_root=(sudo)
  fi
  echo "install-qemu.sh: installing qemu-user and libc6-arm64-cross with apt-get"
  "${as_root[@]}" apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    qemu-user libc6-arm64-cross >/dev/null || fail "apt-get install qemu-user libc6-arm64-cross failed"
  have || fail "qemu-aarch64 or $SYSROOT/lib/ld-linux-aarch64.so.1 still missing after the install"
fi

version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not from a Debian package"; }
echo "install-qemu.sh: $(qemu-aarch64 --version | head -1); qemu-user $(version qemu-user), libc6-arm64-cross $(version libc6-arm64-cross)"
