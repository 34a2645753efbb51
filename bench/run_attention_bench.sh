#!/usr/bin/env bash
# bench/run_attention_bench.sh: issue 4's attention benchmark points.
#
#   bash bench/run_attention_bench.sh              # from the top of the repository
#   PARTS="ratio" REPS=5 bash bench/run_attention_bench.sh
#
# PARTS (default "ratio crossover memory"):
#   ratio      dense causal attention, L = 1024, 2048, 4096, fwd and fwd+bwd: minitrax's
#              SelfAttention (bench_efficient_attention dense/...) next to LibTorch
#              (bench/libtorch/attention_libtorch, the core softmax(q k^T/sqrt d + mask) v
#              and the whole layer with q/k/v/output projections, as minitrax's layer),
#              REPS rounds, the implementations back to back in each round (the order
#              alternates), each run its own process.
#   crossover  minitrax only: dense vs LSH (n_hashes 1, 2; chunk_len 64) at L = 128 ... 1024.
#   memory     minitrax only, L = 16384, fwd+bwd, one iteration per process under
#              /usr/bin/time -v: dense SelfAttention vs LSH (n_hashes 2, chunk_len 64),
#              plus a baseline process (dense fwd at L = 128).
# b = 1 (LSH: batch 16384 / L), 4 heads, d_head 64, THREADS (2) threads everywhere,
# OPENBLAS_CORETYPE=SkylakeX for both (Debian's libtorch links the same OpenBLAS).
# Output: $OUT/*.jsonl / *.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PARTS=${PARTS:-"ratio crossover memory"}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
MIN_TIME=${MIN_TIME:-0.5}
OUT=${OUT:-build/release/attention_bench}

echo "== building minitrax (release preset, bench_efficient_attention)"
cmake --preset release -DMINITRAX_BUILD_BENCH=ON > /dev/null
cmake --build --preset release --target bench_efficient_attention -j"$THREADS"
MT=build/release/bench/bench_efficient_attention
echo "== building the LibTorch benchmark (bench/libtorch/build)"
cmake -S bench/libtorch -B bench/libtorch/build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build bench/libtorch/build -j"$THREADS" --target attention_libtorch
LT=bench/libtorch/build/attention_libtorch

mkdir -p "$OUT"
export OPENBLAS_CORETYPE=SkylakeX
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# minitrax NAME_REGEX REP: one process, appends JSON lines {impl, name, ms, us_per_token}.
mt_run() {
  "$MT" --benchmark_filter="$1" --benchmark_min_time="$MIN_TIME" --benchmark_format=json \
    2> /dev/null | python3 -c '
import json, sys
for b in json.load(sys.stdin)["benchmarks"]:
    print(json.dumps({"impl": "minitrax", "name": b["name"], "rep": int(sys.argv[1]),
                      "ms": b["real_time"], "iterations": b["iterations"],
                      "us_per_token": b["us_per_token"]}))' "$2"
}

if [[ " $PARTS " == *" ratio "* ]]; then
  R="$OUT/ratio.jsonl"; : > "$R"
  for rep in $(seq 1 "$REPS"); do
    for L in 1024 2048 4096; do
      for pass in fwd fwdbwd; do
        bwd=0; [[ $pass == fwdbwd ]] && bwd=1
        steps=10; (( L == 4096 )) && steps=4
        if (( rep % 2 )); then order=(minitrax libtorch); else order=(libtorch minitrax); fi
        for impl in "${order[@]}"; do
          echo "-- round $rep: $impl $pass L=$L"
          if [[ $impl == minitrax ]]; then
            mt_run "^dense/$pass/L:$L/" "$rep" >> "$R"
          else
            for proj in 0 1; do
              "$LT" --length "$L" --backward $bwd --proj $proj --warmup 1 --steps $steps \
                --threads "$THREADS" | sed "s/}\$/, \"rep\": $rep}/" >> "$R"
            done
          fi
        done
      done
    done
  done
  python3 - "$R" > "$OUT/ratio.md" <<'PY'
import json, re, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| pass | L | minitrax SelfAttention ms | LibTorch core ms | LibTorch layer ms "
      "| minitrax / LibTorch core | minitrax / LibTorch layer |")
print("|---|---:|---:|---:|---:|---:|---:|")
for p in ("fwd", "fwdbwd"):
    for L in (1024, 2048, 4096):
        def get(impl, what=None):
            out = {}
            for r in rows:
                if impl == "minitrax" and r["impl"] == "minitrax" and re.match(
                        r"dense/%s/L:%d/" % (p, L), r["name"]):
                    out[r["rep"]] = r["ms"]
                if impl == "libtorch" and r["impl"] == "libtorch" and r["pass"] == p and \
                        r["L"] == L and r["what"] == what:
                    out[r["rep"]] = r["step_ms_median"]
            return out
        m, c, l = get("minitrax"), get("libtorch", "core"), get("libtorch", "layer")
        rc = [m[k] / c[k] for k in m if k in c]
        rl = [m[k] / l[k] for k in m if k in l]
        f = lambda xs: ", ".join("%.2f" % x for x in xs)
        print("| %s | %d | %.1f | %.1f | %.1f | **%.2f** (%s) | **%.2f** (%s) |" % (
            p, L, st.median(m.values()), st.median(c.values()), st.median(l.values()),
            st.median(rc), f(rc), st.median(rl), f(rl)))
PY
  cat "$OUT/ratio.md"
fi

if [[ " $PARTS " == *" crossover "* ]]; then
  C="$OUT/crossover.jsonl"; : > "$C"
  for rep in $(seq 1 "$REPS"); do
    echo "-- crossover round $rep"
    mt_run '^dense/fwd(bwd)?/L:(128|256|512|1024)/|^lsh/fwd(bwd)?/n_hashes:(1|2)/L:(128|256|512|1024)/' \
      "$rep" >> "$C"
  done
  python3 - "$C" > "$OUT/crossover.md" <<'PY'
import json, re, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(prefix):
    xs = [r["us_per_token"] for r in rows if r["name"].startswith(prefix)]
    return st.median(xs) if xs else float("nan")
print("| L | dense fwd | LSH h1 fwd | LSH h2 fwd | dense fwd+bwd | LSH h1 fwd+bwd | LSH h2 fwd+bwd |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for L in (128, 256, 512, 1024):
    print("| %d | %s |" % (L, " | ".join("%.1f" % med(p) for p in (
        "dense/fwd/L:%d/" % L, "lsh/fwd/n_hashes:1/L:%d/" % L, "lsh/fwd/n_hashes:2/L:%d/" % L,
        "dense/fwdbwd/L:%d/" % L, "lsh/fwdbwd/n_hashes:1/L:%d/" % L,
        "lsh/fwdbwd/n_hashes:2/L:%d/" % L))))
PY
  cat "$OUT/crossover.md"
fi

if [[ " $PARTS " == *" memory "* ]]; then
  M="$OUT/memory.txt"; : > "$M"
  for name in 'dense/fwd/L:128/' 'lsh/fwdbwd/n_hashes:2/L:16384/' 'dense/fwdbwd/L:16384/'; do
    echo "-- memory: $name"
    tv=$(mktemp)
    /usr/bin/time -v -o "$tv" "$MT" --benchmark_filter="^$name" --benchmark_min_time=0 \
      2> /dev/null | grep -E '^(dense|lsh)/' || true
    echo "$name max_rss_kb $(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")" \
      "wall $(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tv")" | tee -a "$M"
    rm -f "$tv"
  done
fi
