# Sourced by the scripts that run training programs. OpenBLAS 0.3.21 does not recognise
# recent Xeons and falls back to its generic SSE3 kernels, 5x slower at gemm
# (docs/performance.md). Unless the caller chose, point it at the AVX-512 or AVX2
# kernels the CPU supports.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
  fi
fi
