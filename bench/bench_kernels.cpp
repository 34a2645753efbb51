// Benchmarks of core/kernels.hpp: our gemm/matmul next to a direct cblas_sgemm call,
// and the row kernels (softmax, logsumexp, layer norm) next to plain scalar loops.
//
// Run (docs/performance.md has the numbers, the machine and the exact command lines):
//   ./build/h-kern/bench/bench_kernels --benchmark_repetitions=3
//   --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
// On CPUs newer than the installed OpenBLAS (0.3.21) knows, set OPENBLAS_CORETYPE
// (e.g. SkylakeX): otherwise it falls back to its generic Prescott (SSE3) kernels.
//
// The gemm cases time the direct cblas call and ours alternately inside one benchmark
// (see BM_sgemm_paired), so both see the same machine load.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/kernels.hpp"
#include "core/parallel.hpp"
#include "core/tensor.hpp"
#include "core/vmath.hpp"

using minitrax::Shape;
using minitrax::Tensor;
namespace core = minitrax::core;

namespace {

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

Tensor random_tensor(const Shape& shape, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  return Tensor::from<float>(shape, random_floats(core::shape_size(shape), seed, lo, hi));
}

// ---- paired: the same products timed call by call, alternating -------------------------
// The machine these numbers come from is shared (other builds run next to the
// benchmark), so separately run benchmarks drift apart by 10-30%. Each iteration calls
// the direct cblas_sgemm, core::gemm, core::matmul and core::matmul_into once each, in
// a rotating order, timing each call; the counters are median(direct) / median(ours)
// (1.0 = as fast as cblas, > 1 faster). args {n, threads}. The direct call runs on
// `threads` OpenBLAS threads (OpenBLAS's own split, whose bits depend on the count);
// minitrax keeps OpenBLAS at one thread and cuts the product into fixed blocks dealt to
// `threads` threads of its own (core/gemm.cpp).

// A direct cblas call on `threads` OpenBLAS threads; OpenBLAS back at one thread after.
template <class F>
void with_blas_threads(int threads, F f) {
  openblas_set_num_threads(threads);
  f();
  openblas_set_num_threads(1);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

void BM_sgemm_paired(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  core::set_blas_num_threads(threads);
  Tensor a = random_tensor({n, n}, 1), b = random_tensor({n, n}, 2);
  Tensor c_direct = Tensor::empty({n, n}), c_gemm = Tensor::empty({n, n});
  Tensor c_into = Tensor::empty({n, n});
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const int ni = static_cast<int>(n);
  std::vector<double> times[4];
  const auto run = [&](int which) {
    const auto t0 = std::chrono::steady_clock::now();
    switch (which) {
      case 0:
        with_blas_threads(threads, [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, pa, ni, pb, ni,
                      0.0f, c_direct.data<float>(), ni);
        });
        break;
      case 1:
        core::gemm(core::Trans::N, core::Trans::N, n, n, n, 1.0f, pa, n, pb, n, 0.0f,
                   c_gemm.data<float>(), n);
        break;
      case 2: {
        Tensor c = core::matmul(a, b);
        benchmark::DoNotOptimize(c.raw_data());
        break;
      }
      default:
        core::matmul_into(c_into, a, b);
        break;
    }
    benchmark::ClobberMemory();
    const auto t1 = std::chrono::steady_clock::now();
    times[which].push_back(std::chrono::duration<double>(t1 - t0).count());
  };
  int start = 0;
  for (auto _ : state) {
    for (int j = 0; j < 4; ++j) run((start + j) % 4);
    start = (start + 1) % 4;
  }
  const double direct = median(times[0]);
  state.counters["direct_us"] = direct * 1e6;
  state.counters["direct_GFLOPS"] = 2.0 * double(n) * double(n) * double(n) / direct * 1e-9;
  state.counters["gemm_ratio"] = direct / median(times[1]);
  state.counters["matmul_ratio"] = direct / median(times[2]);
  state.counters["matmul_into_ratio"] = direct / median(times[3]);
}

// ---- a batch times a shared matrix: [32, 128, 512] x [512, 512], paired ---------------
// core::matmul folds the batch into one (32*128) x 512 x 512 gemm; the baseline is what a
// plain per-item loop of cblas calls does (on `threads` OpenBLAS threads). Alternating as
// above; the counter is median(loop) / median(folded). args {threads}.
constexpr std::size_t kFoldBatch = 32, kFoldM = 128, kFoldK = 512, kFoldN = 512;

void BM_shared_b_paired(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  core::set_blas_num_threads(threads);
  Tensor a = random_tensor({kFoldBatch, kFoldM, kFoldK}, 3), b = random_tensor({kFoldK, kFoldN}, 4);
  Tensor c_loop = Tensor::empty({kFoldBatch, kFoldM, kFoldN});
  Tensor c_fold = Tensor::empty({kFoldBatch, kFoldM, kFoldN});
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* pc = c_loop.data<float>();
  std::vector<double> loop_t, fold_t;
  bool loop_first = true;
  for (auto _ : state) {
    for (int j = 0; j < 2; ++j) {
      const bool loop = (j == 0) == loop_first;
      const auto t0 = std::chrono::steady_clock::now();
      if (loop) {
        with_blas_threads(threads, [&] {
          for (std::size_t i = 0; i < kFoldBatch; ++i) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(kFoldM), int(kFoldN),
                        int(kFoldK), 1.0f, pa + i * kFoldM * kFoldK, int(kFoldK), pb, int(kFoldN),
                        0.0f, pc + i * kFoldM * kFoldN, int(kFoldN));
          }
        });
      } else {
        core::matmul_into(c_fold, a, b);
      }
      benchmark::ClobberMemory();
      const auto t1 = std::chrono::steady_clock::now();
      (loop ? loop_t : fold_t).push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    loop_first = !loop_first;
  }
  const double flops = 2.0 * double(kFoldBatch * kFoldM) * double(kFoldN) * double(kFoldK);
  state.counters["loop_GFLOPS"] = flops / median(loop_t) * 1e-9;
  state.counters["folded_GFLOPS"] = flops / median(fold_t) * 1e-9;
  state.counters["folded_speedup"] = median(loop_t) / median(fold_t);
}

// ---- row kernels on [4096, 1024] float32 -------------------------------------------------
constexpr std::size_t kRows = 4096, kCols = 1024;

// Plain scalar loops (std::exp, no SIMD intrinsics; GCC does not vectorise std::exp or
// the max/sum reductions without -ffast-math). Outputs are preallocated.
void scalar_softmax(const float* x, float* y, std::size_t rows, std::size_t d) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float m = xr[0];
    for (std::size_t j = 1; j < d; ++j) m = std::max(m, xr[j]);
    float s = 0.0f;
    for (std::size_t j = 0; j < d; ++j) {
      yr[j] = std::exp(xr[j] - m);
      s += yr[j];
    }
    const float inv = 1.0f / s;
    for (std::size_t j = 0; j < d; ++j) yr[j] *= inv;
  }
}

void scalar_logsumexp(const float* x, float* out, std::size_t rows, std::size_t d) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float m = xr[0];
    for (std::size_t j = 1; j < d; ++j) m = std::max(m, xr[j]);
    float s = 0.0f;
    for (std::size_t j = 0; j < d; ++j) s += std::exp(xr[j] - m);
    out[r] = m + std::log(s);
  }
}

void scalar_layer_norm(const float* x, const float* scale, const float* bias, float* y, float* mean,
                       float* rstd, std::size_t rows, std::size_t d, float eps) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float s = 0.0f;
    for (std::size_t j = 0; j < d; ++j) s += xr[j];
    const float mu = s / static_cast<float>(d);
    float v = 0.0f;
    for (std::size_t j = 0; j < d; ++j) v += (xr[j] - mu) * (xr[j] - mu);
    const float rs = 1.0f / std::sqrt(v / static_cast<float>(d) + eps);
    for (std::size_t j = 0; j < d; ++j) yr[j] = (xr[j] - mu) * rs * scale[j] + bias[j];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

constexpr double kElem = sizeof(float);
// Bytes read + written per call.
constexpr double kSoftmaxBytes = 2.0 * kRows * kCols * kElem;
constexpr double kLseBytes = (kRows * kCols + kRows) * kElem;
constexpr double kLayerNormBytes = (2.0 * kRows * kCols + 2.0 * kCols + 2.0 * kRows) * kElem;

void set_bytes(benchmark::State& state, double bytes) {
  state.SetBytesProcessed(
      static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
}

void BM_softmax_scalar(benchmark::State& state) {
  auto x = random_floats(kRows * kCols, 5, -8, 8);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    scalar_softmax(x.data(), y.data(), kRows, kCols);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kSoftmaxBytes);
}

void BM_softmax_minitrax(benchmark::State& state) {
  Tensor x = random_tensor({kRows, kCols}, 5, -8, 8);
  for (auto _ : state) {
    Tensor y = core::softmax(x);
    benchmark::DoNotOptimize(y.raw_data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kSoftmaxBytes);
}

void BM_logsumexp_scalar(benchmark::State& state) {
  auto x = random_floats(kRows * kCols, 6, -8, 8);
  std::vector<float> out(kRows);
  for (auto _ : state) {
    scalar_logsumexp(x.data(), out.data(), kRows, kCols);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kLseBytes);
}

void BM_logsumexp_minitrax(benchmark::State& state) {
  Tensor x = random_tensor({kRows, kCols}, 6, -8, 8);
  for (auto _ : state) {
    Tensor out = core::logsumexp_last(x);
    benchmark::DoNotOptimize(out.raw_data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kLseBytes);
}

void BM_layer_norm_scalar(benchmark::State& state) {
  auto x = random_floats(kRows * kCols, 7, -2, 2);
  auto scale = random_floats(kCols, 8, 0.5f, 1.5f), bias = random_floats(kCols, 9);
  std::vector<float> y(x.size()), mean(kRows), rstd(kRows);
  for (auto _ : state) {
    scalar_layer_norm(x.data(), scale.data(), bias.data(), y.data(), mean.data(), rstd.data(),
                      kRows, kCols, 1e-6f);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kLayerNormBytes);
}

void BM_layer_norm_minitrax(benchmark::State& state) {
  Tensor x = random_tensor({kRows, kCols}, 7, -2, 2);
  Tensor scale = random_tensor({kCols}, 8, 0.5f, 1.5f), bias = random_tensor({kCols}, 9);
  for (auto _ : state) {
    auto res = core::layer_norm(x, scale, bias, 1e-6);
    benchmark::DoNotOptimize(res.y.raw_data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, kLayerNormBytes);
}

// ---- element-wise exp on 1M floats -----------------------------------------------------
constexpr std::size_t kExpN = 1 << 20;

void BM_exp_scalar(benchmark::State& state) {
  auto x = random_floats(kExpN, 10, -20, 20);
  std::vector<float> y(kExpN);
  for (auto _ : state) {
    for (std::size_t i = 0; i < kExpN; ++i) y[i] = std::exp(x[i]);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2.0 * kExpN * kElem);
}

void BM_exp_minitrax_vexp(benchmark::State& state) {
  auto x = random_floats(kExpN, 10, -20, 20);
  std::vector<float> y(kExpN);
  for (auto _ : state) {
    core::vexp(x.data(), y.data(), kExpN);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2.0 * kExpN * kElem);
}

void register_all() {
  for (long n : {64, 128, 256, 512, 1024}) {
    for (long threads : {1, 2}) {
      // ~1 s per case at ~100 GFLOPS, at least 30 rounds of 4 calls.
      const double t_call = 2.0 * double(n) * double(n) * double(n) / 1e11;
      const auto iters = static_cast<benchmark::IterationCount>(std::max(30.0, 0.25 / t_call));
      benchmark::RegisterBenchmark(
          ("gemm_paired/n:" + std::to_string(n) + "/threads:" + std::to_string(threads)).c_str(),
          BM_sgemm_paired)
          ->Args({n, threads})
          ->Iterations(iters)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  for (long threads : {1, 2}) {
    benchmark::RegisterBenchmark(("shared_b_paired/threads:" + std::to_string(threads)).c_str(),
                                 BM_shared_b_paired)
        ->Arg(threads)
        ->Iterations(20)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  const auto row = [](const char* name, void (*fn)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, fn)->Unit(benchmark::kMicrosecond);
  };
  row("rows/softmax/scalar", BM_softmax_scalar);
  row("rows/softmax/minitrax", BM_softmax_minitrax);
  row("rows/logsumexp/scalar", BM_logsumexp_scalar);
  row("rows/logsumexp/minitrax", BM_logsumexp_minitrax);
  row("rows/layer_norm/scalar", BM_layer_norm_scalar);
  row("rows/layer_norm/minitrax", BM_layer_norm_minitrax);
  row("elementwise/exp/scalar", BM_exp_scalar);
  row("elementwise/exp/vexp", BM_exp_minitrax_vexp);
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("flush_denormals", core::flush_denormals_enabled() ? "on" : "off");
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
