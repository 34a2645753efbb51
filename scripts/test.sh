#!/usr/bin/env bash
# Builds everything and runs every test: installs what is missing, then the
# release preset (all tests, including the install-and-consume test), then the
# asan preset (AddressSanitizer + UBSan) over the whole suite.
# MINITRAX_SKIP_ASAN=1 skips the sanitizer pass (for a quick local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
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
