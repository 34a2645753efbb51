#!/usr/bin/env bash
# Installs the Debian packages minitrax needs, if any are missing (needs root or sudo).
# Extra package names given as arguments are installed too (scripts/test.sh adds gdb
# and doxygen).
set -euo pipefail

packages=(
  cmake g++ make ccache pkg-config            # toolchain
  libxtensor-dev libxtensor-blas-dev libxsimd-dev libopenblas-dev zlib1g-dev  # the library
  nlohmann-json3-dev                          # the main job's JSON config
  libsentencepiece-dev                        # subword tokenizers (data/tokenizers.cpp)
  doctest-dev libbenchmark-dev                # tests and benchmarks
  python3 python3-numpy                       # numpy round-trip tests of .npy/.npz
  librsvg2-bin                                # rsvg-convert: the tests render every SVG
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "minitrax: installing missing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "minitrax: please run as root (or install sudo): apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
