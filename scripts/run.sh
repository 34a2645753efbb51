#!/usr/bin/env bash
# The main job: installs what is missing, builds (release preset) and trains.
# Extra arguments go to the training program (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target mlp_spiral -j "$(nproc)"
exec ./build/release/examples/mlp_spiral "$@"
