#!/usr/bin/env bash
# The text example: installs what is missing (the GNU Collaborative International
# Dictionary of English, Debian's dict-gcide, among them), builds (release preset) and
# trains a character-level ReformerLM (LSH attention, reversible layers, windows of 2048
# characters) on the dictionary's 40 MB of text for 10 minutes, reporting held-out bits
# per character and samples as it goes, into runs/gcide.
# Extra arguments go to text_lm (try --help); e.g. --time-budget 1200, or --resume to
# continue the run (a resumed run may be given a larger --time-budget).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh dict-gcide
cmake --preset release >/dev/null
cmake --build --preset release --target text_lm -j "$(nproc)"
source scripts/blas-kernels.sh
exec ./build/release/examples/text_lm --data /usr/share/dictd/gcide.dict.dz \
  --output-dir runs/gcide --time-budget 600 --warmup-steps 50 "$@"
