#!/usr/bin/env bash
# The main job: installs what is missing, builds (release preset) and trains the toy
# Reformer (LSH attention, reversible layers) on the duplication task "0 w 0 w".
# Extra arguments go to the training program (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target reformer_duplication -j "$(nproc)"
source scripts/blas-kernels.sh
exec ./build/release/examples/reformer_duplication "$@"
