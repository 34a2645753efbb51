#!/usr/bin/env bash
# Builds everything and runs every test: installs what is missing, then the
# release preset (all tests, including the install-and-consume test and the compilation
# of every C++ snippet of the docs, doc_snippets) once under each
# OpenBLAS kernel family this CPU can run (OPENBLAS_CORETYPE=Prescott, Haswell,
# SkylakeX: results must not depend on which one OpenBLAS picks), then the
# asan preset (AddressSanitizer + UBSan) over the whole suite, then the gdb tests in the
# debug preset (only the programs they drive are built; one of them installs the debug
# library and debugs an outside program built against it), then the fuzz preset (clang-14
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

# The OpenBLAS kernel families this CPU can run (x86-64): Prescott (SSE3) always,
# Haswell with AVX2 + FMA, SkylakeX with AVX-512 (F, BW, DQ, VL). OpenBLAS picks one by
# itself; OPENBLAS_CORETYPE forces it, so the suite sees each kernel a user's CPU may get.
# MINITRAX_KERNELS="Haswell" (a list) runs only those.
has() { [[ " $cpu_flags " == *" $1 "* ]]; }
kernel_families() {
  if [ -n "${MINITRAX_KERNELS:-}" ]; then echo "$MINITRAX_KERNELS"; return; fi
  if [ "$(uname -m)" != "x86_64" ]; then echo "default"; return; fi
  cpu_flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
  local out="Prescott"
  if has avx2 && has fma; then out="$out Haswell"; fi
  if has avx512f && has avx512bw && has avx512dq && has avx512vl; then out="$out SkylakeX"; fi
  echo "$out"
}

echo "== release build"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
families="$(kernel_families)"
echo "== release tests under each OpenBLAS kernel family this CPU runs: $families"
first=1
for family in $families; do
  echo "== release tests, OpenBLAS kernels: $family"
  # The install-and-consume and doc-snippet tests build programs; they run once, not
  # per kernel.
  extra=()
  if [ "$first" != 1 ]; then extra=(-E 'install_and_consume|doc_snippets'); fi
  if [ "$family" = "default" ]; then
    status=0; ctest --preset release -j "$jobs" "${extra[@]}" || status=$?
  else
    status=0; OPENBLAS_CORETYPE="$family" ctest --preset release -j "$jobs" "${extra[@]}" || status=$?
  fi
  if [ "$status" != 0 ]; then
    echo "FAILED: the release tests fail with OpenBLAS's $family kernels (OPENBLAS_CORETYPE=$family); rerun them with: OPENBLAS_CORETYPE=$family ctest --preset release --output-on-failure" >&2
    exit "$status"
  fi
  first=0
done

if [ "${MINITRAX_SKIP_ASAN:-0}" != "1" ]; then
  echo "== asan build and tests (AddressSanitizer + UBSan)"
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs" -E 'install_and_consume|doc_snippets'
fi

if [ "${MINITRAX_SKIP_GDB:-0}" != "1" ]; then
  echo "== debug build and the gdb tests (pretty-printers; the lab under gdb; the installed debug package)"
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
