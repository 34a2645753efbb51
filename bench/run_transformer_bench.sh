#!/usr/bin/env bash
# bench/run_transformer_bench.sh: TransformerLM training speed and memory, minitrax
# (bench/bench_transformer.cpp) next to LibTorch (bench/libtorch/), interleaved.
#
#   bash bench/run_transformer_bench.sh            # from the top of the repository
#   REPS=5 STEPS=20 LAYERS="2" CORETYPES="SkylakeX" bash bench/run_transformer_bench.sh
#
# Builds both (minitrax: the release preset, only the bench_transformer target;
# LibTorch: bench/libtorch/build, needs `apt-get install -y libtorch-dev`), then runs
# REPS rounds; each round runs every (layers, OpenBLAS core type) configuration once
# for each implementation, the two implementations back to back (which one goes first
# alternates from round to round), each in its own process under /usr/bin/time -v, so
# that drift of the shared machine hits both and each peak RSS belongs to one run.
# Every run: WARMUP untimed steps, then STEPS timed steps; a run reports the median
# step time. The summary gives, per configuration, the median over the rounds and
# the median of the per-round ratios minitrax / LibTorch.
#
# Both programs use OpenBLAS 0.3.21 for sgemm (Debian's libtorch has BLAS_INFO=generic
# and links libblas.so.3, which is OpenBLAS here), so OPENBLAS_CORETYPE acts on both:
# CORETYPES lists the settings to run ("default" = unset, OpenBLAS's own detection,
# which falls back to Prescott kernels on this CPU). Threads: OPENBLAS_NUM_THREADS,
# OMP_NUM_THREADS (LibTorch's intra-op pool) and --threads are all THREADS.
#
# Raw results: $OUT/results.jsonl (one JSON object per run), summary: $OUT/summary.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
STEPS=${STEPS:-10}
THREADS=${THREADS:-2}
LAYERS=${LAYERS:-"2 6"}
CORETYPES=${CORETYPES:-"SkylakeX default"}
OUT=${OUT:-build/release/transformer_bench}
MODEL_FLAGS=(--d-model 256 --heads 4 --d-ff 1024 --vocab 256 --length 512 --batch 8)

if [[ ! -x /usr/bin/time ]]; then
  echo "run_transformer_bench.sh: /usr/bin/time is missing (apt-get install -y time)" >&2
  exit 1
fi

echo "== building minitrax (release preset, bench_transformer)"
cmake --preset release -DMINITRAX_BUILD_BENCH=ON > /dev/null
cmake --build --preset release --target bench_transformer -j"$THREADS"
MT=build/release/bench/bench_transformer

echo "== building the LibTorch benchmark (bench/libtorch/build)"
cmake -S bench/libtorch -B bench/libtorch/build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build bench/libtorch/build -j"$THREADS"
LT=bench/libtorch/build/transformer_libtorch

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# run IMPL CORETYPE LAYERS REP: one process; appends one line to $RESULTS.
run() {
  local impl=$1 ct=$2 layers=$3 rep=$4 bin tv json
  [[ $impl == minitrax ]] && bin=$MT || bin=$LT
  tv=$(mktemp)
  local envs=(env -u OPENBLAS_CORETYPE)
  [[ $ct != default ]] && envs=(env OPENBLAS_CORETYPE="$ct")
  json=$("${envs[@]}" /usr/bin/time -v -o "$tv" "$bin" --layers "$layers" "${MODEL_FLAGS[@]}" \
         --warmup "$WARMUP" --steps "$STEPS" --threads "$THREADS")
  local rss minflt majflt wall
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
  minflt=$(awk -F': ' '/Minor \(reclaiming a frame\) page faults/ {print $2}' "$tv")
  majflt=$(awk -F': ' '/Major \(requiring I\/O\) page faults/ {print $2}' "$tv")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tv")
  rm -f "$tv"
  echo "${json%\}}, \"rep\": $rep, \"coretype\": \"$ct\", \"time_max_rss_kb\": $rss, \"time_minor_faults\": $minflt, \"time_major_faults\": $majflt, \"time_wall\": \"$wall\"}" >> "$RESULTS"
}

echo "== $REPS rounds; layers: $LAYERS; OpenBLAS core types: $CORETYPES; $THREADS threads;" \
     "$WARMUP warm-up + $STEPS timed steps per run"
for rep in $(seq 1 "$REPS"); do
  for layers in $LAYERS; do
    for ct in $CORETYPES; do
      if (( rep % 2 )); then order=(minitrax libtorch); else order=(libtorch minitrax); fi
      for impl in "${order[@]}"; do
        echo "-- round $rep: $impl, $layers layers, OPENBLAS_CORETYPE=$ct"
        run "$impl" "$ct" "$layers" "$rep"
      done
    done
  done
done

echo "== summary (medians over $REPS rounds; raw runs in $RESULTS)"
python3 - "$RESULTS" > "$OUT/summary.md" <<'EOF'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = st.median
keys = sorted({(r["layers"], r["coretype"]) for r in rows}, key=lambda k: (k[0], k[1] != "SkylakeX"))
print("| layers | OpenBLAS kernels | impl | params | steps/s | tokens/s | peak RSS (MiB) "
      "| minor faults / timed step | minitrax / LibTorch (steps/s) |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
for layers, ct in keys:
    by = {}
    for impl in ("minitrax", "libtorch"):
        rs = [r for r in rows if (r["layers"], r["coretype"], r["impl"]) == (layers, ct, impl)]
        if rs: by[impl] = rs
    # per-round ratio: the two runs of a round ran back to back
    ratios = []
    for rep in sorted({r["rep"] for r in rows}):
        a = [r for r in by.get("minitrax", []) if r["rep"] == rep]
        b = [r for r in by.get("libtorch", []) if r["rep"] == rep]
        if a and b: ratios.append(a[0]["steps_per_s"] / b[0]["steps_per_s"])
    kern = "SkylakeX (OPENBLAS_CORETYPE=SkylakeX)" if ct == "SkylakeX" else (
        "default detection (Prescott)" if ct == "default" else ct)
    for impl, rs in by.items():
        ratio = ""
        if impl == "minitrax" and ratios:
            ratio = "**%.2f** (rounds: %s)" % (med(ratios), ", ".join("%.2f" % x for x in ratios))
        print("| %d | %s | %s | %d | %.3f | %.0f | %.0f | %.0f | %s |" % (
            layers, kern, "minitrax" if impl == "minitrax" else "LibTorch", rs[0]["params"],
            med([r["steps_per_s"] for r in rs]), med([r["tokens_per_s"] for r in rs]),
            med([r["time_max_rss_kb"] for r in rs]) / 1024.0,
            med([r["minflt_per_step"] for r in rs]), ratio))
EOF
cat "$OUT/summary.md"
