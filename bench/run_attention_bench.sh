#!/usr/bin/env bash
# bench/run_attention_bench.sh: issue 4's attention benchmark points.
#
#   bash bench/run_attention_bench.sh              # from the top of the repository
#   PARTS="ratio" REPS=5 bash bench/run_attention_bench.sh
#   MT=path/to/bench_efficient_attention bash bench/run_attention_bench.sh  # no build
#
# PARTS (default "ratio crossover scaling memory path plot"):
#   ratio      dense causal attention, L = 1024, 2048, 4096, fwd and fwd+bwd: minitrax's
#              SelfAttention (bench_efficient_attention dense/...) next to LibTorch
#              (bench/libtorch/attention_libtorch, the core softmax(q k^T/sqrt d + mask) v
#              and the whole layer with q/k/v/output projections, as minitrax's layer),
#              REPS rounds, the implementations back to back in each round (the order
#              alternates), each run its own process.
#   crossover  minitrax only: dense vs LSH (n_hashes 1, 2; chunk_len 64) at L = 128 ... 1024.
#   scaling    minitrax only, per-token time against L: LSH (n_hashes 1, 2, 4; chunk_len 64;
#              16384 tokens per step) at L = 1024 ... 32768 and dense at L = 128 ... 4096,
#              fwd and fwd+bwd, REPS processes per configuration, the configurations
#              interleaved (all lengths once, then again), so drift hits them alike.
#   memory     L = 16384, fwd+bwd, one timed step per process under /usr/bin/time -v
#              (max RSS) with the benchmark's own peak of live heap bytes (heap_peak_MiB):
#              LSH (n_hashes 1, 2, 4), dense SelfAttention (tiled, never materialises the
#              scores), a baseline process; and LibTorch's materialised dense core
#              (max RSS) at L = 2048, 4096, 8192 and 16384, each under `ulimit -v`
#              (LIBTORCH_VMEM_GB, default 16) so that it fails instead of exhausting RAM.
#   path       reference loop vs fast path, fwd+bwd, L = 256 and 1024 (SelfAttention chunk 64
#              causal; LSH n_hashes 2, chunk 64, 8 buckets), REPS processes each.
#   plot       docs/attention_scaling.svg from the scaling part's JSON (METRIC)
#              (bench/plot_attention_scaling.py).
# b = 1 (LSH: batch 16384 / L), 4 heads, d_head 64, THREADS (2) threads everywhere,
# OPENBLAS_CORETYPE=SkylakeX for both (Debian's libtorch links the same OpenBLAS).
# Output: $OUT/*.jsonl / *.txt / *.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PARTS=${PARTS:-"ratio crossover scaling memory path plot"}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
MIN_TIME=${MIN_TIME:-0.5}
OUT=${OUT:-build/release/attention_bench}
LIBTORCH_VMEM_GB=${LIBTORCH_VMEM_GB:-16}
# METRIC (scaling, crossover, plot): us_per_token (wall time) or cpu_us_per_token (process
# CPU time; with THREADS=1 the work itself, robust when other jobs share the machine).
METRIC=${METRIC:-us_per_token}
export METRIC

if [[ -z "${MT:-}" ]]; then
  echo "== building minitrax (release preset, bench_efficient_attention)"
  cmake --preset release -DMINITRAX_BUILD_BENCH=ON > /dev/null
  cmake --build --preset release --target bench_efficient_attention -j"$THREADS"
  MT=build/release/bench/bench_efficient_attention
fi
if [[ -z "${LT:-}" ]]; then
  echo "== building the LibTorch benchmark (bench/libtorch/build)"
  cmake -S bench/libtorch -B bench/libtorch/build -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build bench/libtorch/build -j"$THREADS" --target attention_libtorch
  LT=bench/libtorch/build/attention_libtorch
fi

mkdir -p "$OUT"
export OPENBLAS_CORETYPE=SkylakeX
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS BENCH_THREADS=$THREADS

# minitrax NAME_REGEX REP: one process, appends JSON lines {impl, name, ms, us_per_token}.
mt_run() {
  "$MT" --benchmark_filter="$1" --benchmark_min_time="$MIN_TIME" --benchmark_format=json \
    2> /dev/null | python3 -c '
import json, sys
for b in json.load(sys.stdin)["benchmarks"]:
    print(json.dumps({"impl": "minitrax", "name": b["name"], "rep": int(sys.argv[1]),
                      "ms": b["real_time"], "cpu_ms": b["cpu_time"],
                      "iterations": b["iterations"], "us_per_token": b["us_per_token"],
                      "cpu_us_per_token": b["us_per_token"] * b["cpu_time"] / b["real_time"],
                      "heap_peak_MiB": b.get("heap_peak_MiB")}))' "$2"
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
print("| pass | L | minitrax ms (wall) | LibTorch core ms (wall) | LibTorch layer ms (wall) "
      "| / core (wall) | / layer (wall) | / core (CPU time) | / layer (CPU time) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in ("fwd", "fwdbwd"):
    for L in (1024, 2048, 4096):
        def get(impl, what=None, cpu=False):
            out = {}
            for r in rows:
                if impl == "minitrax" and r["impl"] == "minitrax" and re.match(
                        r"dense/%s/L:%d/" % (p, L), r["name"]):
                    out[r["rep"]] = r["cpu_ms"] if cpu else r["ms"]
                if impl == "libtorch" and r["impl"] == "libtorch" and r["pass"] == p and \
                        r["L"] == L and r["what"] == what:
                    out[r["rep"]] = r["cpu_ms_median"] if cpu else r["step_ms_median"]
            return out
        def ratio(a, b):
            rs = [a[k] / b[k] for k in a if k in b]
            return "**%.2f** (%s)" % (st.median(rs), ", ".join("%.2f" % x for x in rs))
        m, c, l = get("minitrax"), get("libtorch", "core"), get("libtorch", "layer")
        mc, cc, lc = (get("minitrax", cpu=True), get("libtorch", "core", True),
                      get("libtorch", "layer", True))
        print("| %s | %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |" % (
            p, L, st.median(m.values()), st.median(c.values()), st.median(l.values()),
            ratio(m, c), ratio(m, l), ratio(mc, cc), ratio(mc, lc)))
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
import json, os, re, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(prefix):
    xs = [r[os.environ["METRIC"]] for r in rows if r["name"].startswith(prefix)]
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

if [[ " $PARTS " == *" scaling "* ]]; then
  S="$OUT/scaling.jsonl"; : > "$S"
  for rep in $(seq 1 "$REPS"); do
    for pass in fwd fwdbwd; do
      for L in 128 256 512 1024 2048 4096; do
        echo "-- scaling round $rep: dense $pass L=$L"
        mt_run "^dense/$pass/L:$L/" "$rep" >> "$S"
      done
      for h in 1 2 4; do
        for L in 1024 2048 4096 8192 16384 32768; do
          echo "-- scaling round $rep: lsh $pass n_hashes $h L=$L"
          mt_run "^lsh/$pass/n_hashes:$h/L:$L/" "$rep" >> "$S"
        done
      done
    done
  done
  python3 - "$S" > "$OUT/scaling.md" <<'PY'
import json, os, re, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(prefix):
    xs = [r[os.environ["METRIC"]] for r in rows if r["name"].startswith(prefix)]
    return st.median(xs) if xs else float("nan")
Ls = (1024, 2048, 4096, 8192, 16384, 32768)
for p in ("fwd", "fwdbwd"):
    print("\n%s, us per token (median of runs):\n" % p)
    print("| n_hashes | " + " | ".join("L = %d" % L for L in Ls) + " | max / min |")
    print("|---:|" + "---:|" * (len(Ls) + 1))
    for h in (1, 2, 4):
        v = [med("lsh/%s/n_hashes:%d/L:%d/" % (p, h, L)) for L in Ls]
        ok = [x for x in v if x == x]
        print("| %d | %s | **%.2f** |" % (h, " | ".join("%.1f" % x for x in v),
                                          max(ok) / min(ok)))
    f = lambda x: "%.1f" % x if x == x else "–"
    print("| dense | " + " | ".join(f(med("dense/%s/L:%d/" % (p, L))) for L in Ls) + " | |")
PY
  cat "$OUT/scaling.md"
fi

if [[ " $PARTS " == *" memory "* ]]; then
  M="$OUT/memory.txt"; : > "$M"
  for name in 'dense/fwd/L:128/' 'lsh/fwdbwd/n_hashes:1/L:16384/' 'lsh/fwdbwd/n_hashes:2/L:16384/' \
              'lsh/fwdbwd/n_hashes:4/L:16384/' 'dense/fwdbwd/L:16384/'; do
    echo "-- memory: $name"
    tv=$(mktemp)
    line=$(/usr/bin/time -v -o "$tv" "$MT" --benchmark_filter="^$name" --benchmark_min_time=0 \
      2> /dev/null | grep -E '^(dense|lsh)/' || true)
    heap=$(echo "$line" | grep -o 'heap_peak_MiB=[0-9.]*' | cut -d= -f2)
    echo "minitrax $name max_rss_kb $(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")" \
      "heap_peak_MiB ${heap:-?} wall $(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tv")" \
      | tee -a "$M"
    rm -f "$tv"
  done
  for L in 2048 4096 8192 16384; do
    echo "-- memory: LibTorch core fwd+bwd L=$L (ulimit -v ${LIBTORCH_VMEM_GB} GiB)"
    if line=$( (ulimit -v $((LIBTORCH_VMEM_GB * 1024 * 1024)); \
                "$LT" --length "$L" --backward 1 --proj 0 --warmup 0 --steps 1 \
                  --threads "$THREADS") 2>&1 | grep '^{'); then
      echo "libtorch core L=$L $line" | tee -a "$M"
    else
      echo "libtorch core L=$L failed under ulimit -v ${LIBTORCH_VMEM_GB} GiB" | tee -a "$M"
    fi
  done
fi

if [[ " $PARTS " == *" path "* ]]; then
  P="$OUT/path.jsonl"; : > "$P"
  for rep in $(seq 1 "$REPS"); do
    echo "-- path round $rep"
    mt_run '^path/' "$rep" >> "$P"
  done
  python3 - "$P" > "$OUT/path.md" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(prefix, key="ms"):
    return st.median(r[key] for r in rows if r["name"].startswith(prefix))
print("| layer | L | reference ms (wall) | fast ms (wall) | reference / fast | reference heap MiB | fast heap MiB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for L in (256, 1024):
    for kind, name in (("self", "SelfAttention, chunk 64, causal"), ("lsh", "LSH, 2 hashes, chunk 64")):
        r, f = med("path/%s/ref/L:%d/" % (kind, L)), med("path/%s/fast/L:%d/" % (kind, L))
        print("| %s | %d | %.1f | %.1f | **%.2f** | %.1f | %.1f |" % (
            name, L, r, f, r / f, med("path/%s/ref/L:%d/" % (kind, L), "heap_peak_MiB"),
            med("path/%s/fast/L:%d/" % (kind, L), "heap_peak_MiB")))
PY
  cat "$OUT/path.md"
fi

if [[ " $PARTS " == *" plot "* ]]; then
  python3 bench/plot_attention_scaling.py "$OUT/scaling.jsonl" docs/attention_scaling.svg "$METRIC"
  echo "wrote docs/attention_scaling.svg"
fi
