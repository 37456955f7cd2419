#!/usr/bin/env bash
# Installs the Debian packages CAR needs, only those missing. Safe to run repeatedly.
set -euo pipefail
pkgs=(build-essential pkg-config libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-openmpi-dev hdf5-tools
      libconfig-dev libjansson-dev python3-numpy python3-h5py python3-matplotlib
      clang libclang-rt-14-dev) # clang + libFuzzer/ASan/UBSan runtimes: make fuzz (Debian 12's clang is 14)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
