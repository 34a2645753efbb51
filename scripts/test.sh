#!/usr/bin/env bash
# Builds everything and runs every test: installs what is missing, then the
# release preset (all tests, including the install-and-consume test), then the
# asan preset (AddressSanitizer + UBSan) over the whole suite, then the gdb tests in the
# debug preset (only the programs they drive are built), then the fuzz preset (clang-14
# and libFuzzer: short seeded runs of each fuzz target and replays of the inputs of
# fixed crashes; docs/fuzzing.md).
# MINITRAX_SKIP_ASAN=1 skips the sanitizer pass, MINITRAX_SKIP_GDB=1 the gdb pass,
# MINITRAX_SKIP_FUZZ=1 the fuzz pass (for a quick local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
extra_packages=(doxygen)
if [ "${MINITRAX_SKIP_GDB:-0}" != "1" ]; then extra_packages+=(gdb); fi
if [ "${MINITRAX_SKIP_FUZZ:-0}" != "1" ]; then extra_packages+=(clang-14 libclang-rt-14-dev); fi
bash scripts/install-deps.sh "${extra_packages[@]}"
jobs="$(nproc)"

echo "== release build and tests"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"

if [ "${MINITRAX_SKIP_ASAN:-0}" != "1" ]; then
  echo "== asan build and tests (AddressSanitizer + UBSan)"
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs" -E install_and_consume
fi

if [ "${MINITRAX_SKIP_GDB:-0}" != "1" ]; then
  echo "== debug build and the gdb tests (pretty-printers; the lab under gdb)"
  cmake --preset debug >/dev/null
  cmake --build --preset debug -j "$jobs" --target gdb_target reformer_lab
  ctest --preset debug -L gdb
fi

if [ "${MINITRAX_SKIP_FUZZ:-0}" != "1" ]; then
  echo "== fuzz build and the seeded fuzz runs (clang-14, libFuzzer, ASan + UBSan)"
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j "$jobs"
  ctest --preset fuzz -j "$jobs"
fi
