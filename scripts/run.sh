#!/usr/bin/env bash
# The main job: installs what is missing, builds (release preset) and trains the toy
# Reformer (LSH attention, reversible layers) on the duplication task "0 w 0 w".
# Extra arguments go to the training program (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target reformer_duplication -j "$(nproc)"
# OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to its generic
# SSE3 kernels, 5x slower at gemm (docs/performance.md). Unless the caller chose,
# point it at the AVX-512 or AVX2 kernels the CPU supports.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
  fi
fi
exec ./build/release/examples/reformer_duplication "$@"
