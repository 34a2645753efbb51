// bench/bench_efficient_attention.cpp: speed of the efficient attention layers
// (layers/research/efficient_attention.hpp), b = 1 unless said, 4 heads, d_head 64
// (d_model 256), threads 2 (BENCH_THREADS=n to change; the benchmark's
// cpu_time is the process's CPU time, user + system, all threads).
//
//   dense/<fwd|fwdbwd>/L           SelfAttention, no chunking, causal (the fast path);
//                                  L = 128 ... 4096, and 16384 (fwd+bwd only: memory)
//   lsh/<fwd|fwdbwd>/n_hashes/L    LSHSelfAttention fast path, causal, chunk_len 64,
//                                  n_chunks_before 1, n_buckets 2 L / 64 (the paper's
//                                  rule), factorised above 128 as Trax does (see
//                                  lsh_buckets), batch 16384 / L
//                                  (a fixed 16384 tokens per step; L = 32768: batch 1),
//                                  n_parallel_heads 4; L = 128, 256, 512 (n_hashes 1, 2)
//                                  for the crossover
//   path/<layer>/<ref|fast>/L      fwd+bwd at L = 256 and 1024, reference loop vs fast path
//
// Every benchmark runs one untimed step first (allocator warm-up, as in training).
// Counters: us_per_token (the time per step divided by batch * L). On the AVX-512 machine
// of docs/performance.md, run with OPENBLAS_CORETYPE=SkylakeX (OpenBLAS falls back to
// Prescott kernels on that CPU otherwise, see "OpenBLAS does not recognise this CPU");
// on a CPU without AVX-512 that setting dies with SIGILL (OpenBLAS does not check), and
// OpenBLAS's own choice (e.g. Haswell on AVX2) is the one to use. Results are bitwise
// the same for any thread count whatever the kernels (core/parallel.hpp).
// --per_head_path runs the memory-lean path head by head (the layers' per_head_path
// option: forward_unbatched per slice, the path before batching) for comparison.
//
// heap_peak_MiB: the largest number of bytes live in malloc'd blocks at any moment of
// the timed iterations (this program interposes malloc/free and counts each block's
// usable size; OpenBLAS's own buffers and thread stacks are mmap'd and not counted). It
// is what the computation needs, independent of how much of it the allocator keeps
// resident afterwards (compare with /usr/bin/time's "Maximum resident set size").
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using autodiff::Tape;
using autodiff::Var;
using core::Tensor;

// ---- peak live heap bytes: malloc interposed, forwarding to glibc's __libc_* ----------
extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
}

namespace {
std::atomic<long> g_live{0}, g_peak{0};
void* counted(void* p) {
  if (p != nullptr) {
    const long now = g_live.fetch_add(static_cast<long>(malloc_usable_size(p))) +
                     static_cast<long>(malloc_usable_size(p));
    long peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
  }
  return p;
}
void uncount(void* p) {
  if (p != nullptr) g_live.fetch_sub(static_cast<long>(malloc_usable_size(p)));
}
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  return counted(__libc_malloc(n));
}
void free(void* p) {
  uncount(p);
  __libc_free(p);
}
void* calloc(std::size_t n, std::size_t m) {
  return counted(__libc_calloc(n, m));
}
void* realloc(void* p, std::size_t n) {
  uncount(p);
  return counted(__libc_realloc(p, n));
}
void* memalign(std::size_t a, std::size_t n) {
  return counted(__libc_memalign(a, n));
}
void* aligned_alloc(std::size_t a, std::size_t n) {
  return counted(__libc_memalign(a, n));
}
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  void* p = counted(__libc_memalign(a, n));
  if (p == nullptr) return 12;  // ENOMEM
  *out = p;
  return 0;
}
}

namespace {

constexpr long kHeads = 4, kDHead = 64, kDModel = 256;

// One step: forward, or forward + backward (gradients of sum(y) w.r.t. x and weights).
void run_steps(benchmark::State& state, ea::EfficientAttentionBase& layer, const Tensor& x,
               bool backward, long tokens) {
  const std::vector<Tensor> w0 = [&] {
    std::vector<Tensor> ws;
    for (const auto& v : layer.flat_weights()) ws.push_back(v.value);
    return ws;
  }();
  // One untimed step first: the timed steps then reuse the buffers the allocator keeps
  // (as every step of a training run after the first does) instead of faulting in fresh
  // pages, which at large L is a tenth of a single step.
  auto step = [&] {
    if (!backward) {
      Var y = layer(Var(x));
      benchmark::DoNotOptimize(y.value().data<float>());
    } else {
      Tape tape;
      Var xv = tape.watch(x);
      std::vector<Var> ws;
      for (const Tensor& w : w0) ws.push_back(tape.watch(w));
      layer.set_flat_weights(ws);
      Var y = fastmath::sum(layer(xv));
      std::vector<Var> wrt{xv};
      wrt.insert(wrt.end(), ws.begin(), ws.end());
      auto g = tape.gradient(y, wrt);
      benchmark::DoNotOptimize(g[0].data<float>());
    }
  };
  step();
  g_peak.store(g_live.load());
  for (auto _ : state) step();
  state.counters["us_per_token"] = benchmark::Counter(
      static_cast<double>(tokens) * 1e-6,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["heap_peak_MiB"] = static_cast<double>(g_peak.load()) / (1024.0 * 1024.0);
  state.counters["L"] = static_cast<double>(x.dim(1));
  state.counters["batch"] = static_cast<double>(x.dim(0));
}

Tensor input(long batch, long length) {
  return core::uniform(core::key_from_seed(1),
                       {static_cast<std::size_t>(batch), static_cast<std::size_t>(length),
                        static_cast<std::size_t>(kDModel)});
}

// --per_head_path: the layers' per_head_path option (see the top of the file).
bool g_per_head_path = false;

void BM_dense(benchmark::State& state) {
  const long L = state.range(0);
  const bool backward = state.range(1) != 0;
  core::set_blas_num_threads(static_cast<int>(state.range(2)));
  auto layer = ea::SelfAttention({.n_heads = kHeads,
                                  .d_qk = kDHead,
                                  .d_v = kDHead,
                                  .causal = true,
                                  .mode = base::Mode::train,
                                  .per_head_path = g_per_head_path});
  const Tensor x = input(1, L);
  layer->init({{x.shape(), core::DType::f32}}, core::key_from_seed(0));
  run_steps(state, *layer, x, backward, L);
}

// The number of buckets for length L: the Reformer paper's rule n_buckets = 2 L / chunk_len
// (an average bucket is half a chunk), which Trax (after 1.3.4) also takes when n_buckets
// is not given; above 128 buckets factorised as Trax does, into [a, 2 (n / 2a)] with
// a = 2^ceil(log2 sqrt n): hashing then rotates each vector against a/2 + b/2 directions
// per round instead of n/2, which would grow with L and make hashing O(L) per token
// (Trax's long-input configurations use factorised buckets too, e.g. [64, 128]).
std::vector<long> lsh_buckets(long L, long chunk_len) {
  const long n = 2 * std::max(1L, L / chunk_len);
  if (n <= 128) return {n};
  long a = 1;
  while (a * a < n) a *= 2;
  return {a, 2 * (n / (2 * a))};
}

void BM_lsh(benchmark::State& state) {
  const long n_hashes = state.range(0);
  const long L = state.range(1);
  const bool backward = state.range(2) != 0;
  core::set_blas_num_threads(static_cast<int>(state.range(3)));
  const long batch = std::max(1L, 16384 / L);
  auto layer = ea::LSHSelfAttention({.n_heads = kHeads,
                                     .d_qk = kDHead,
                                     .d_v = kDHead,
                                     .causal = true,
                                     .chunk_len = 64,
                                     .n_chunks_before = 1,
                                     .n_hashes = n_hashes,
                                     .n_buckets = lsh_buckets(L, 64),
                                     .mode = base::Mode::train,
                                     .n_parallel_heads = kHeads,
                                     .per_head_path = g_per_head_path});
  const Tensor x = input(batch, L);
  layer->init({{x.shape(), core::DType::f32}}, core::key_from_seed(0));
  run_steps(state, *layer, x, backward, batch * L);
}

// fwd+bwd, b = 1, reference loop vs fast path. layer 0: SelfAttention chunked
// (chunk 64, causal, 1 chunk before); 1: LSH n_hashes 2, chunk 64, n_buckets 8.
void BM_path(benchmark::State& state) {
  const long kind = state.range(0);
  const bool reference = state.range(1) != 0;
  const long L = state.range(2);
  core::set_blas_num_threads(static_cast<int>(state.range(3)));
  std::shared_ptr<ea::EfficientAttentionBase> layer;
  if (kind == 0) {
    layer = ea::SelfAttention({.n_heads = kHeads,
                               .d_qk = kDHead,
                               .d_v = kDHead,
                               .causal = true,
                               .chunk_len = 64,
                               .n_chunks_before = 1,
                               .use_reference_code = reference,
                               .per_head_path = g_per_head_path});
  } else {
    layer = ea::LSHSelfAttention({.n_heads = kHeads,
                                  .d_qk = kDHead,
                                  .d_v = kDHead,
                                  .causal = true,
                                  .chunk_len = 64,
                                  .n_hashes = 2,
                                  .n_buckets = {8},
                                  .n_parallel_heads = kHeads,
                                  .use_reference_code = reference,
                                  .per_head_path = g_per_head_path});
  }
  const Tensor x = input(1, L);
  layer->init({{x.shape(), core::DType::f32}}, core::key_from_seed(0));
  run_steps(state, *layer, x, true, L);
}

void register_all() {
  // Threads: 2 (the setting); BENCH_THREADS overrides (1 measures the
  // work alone: with one thread the process CPU time is the whole cost, robust on a
  // shared machine where a second thread waits for a busy core).
  const char* bt = std::getenv("BENCH_THREADS");
  const long threads = bt != nullptr && std::atol(bt) > 0 ? std::atol(bt) : 2;
  for (long backward : {0L, 1L}) {
    // 128-512: the crossover with LSH; 16384 (fwd+bwd only, slow): peak memory.
    for (long L : {128L, 256L, 512L, 1024L, 2048L, 4096L, 16384L}) {
      if (L == 16384 && !backward) continue;
      benchmark::RegisterBenchmark(
          ("dense/" + std::string(backward ? "fwdbwd" : "fwd") + "/L:" + std::to_string(L)).c_str(),
          BM_dense)
          ->Args({L, backward, threads})
          ->Unit(benchmark::kMillisecond)
          ->MeasureProcessCPUTime()
          ->UseRealTime();
    }
  }
  for (long backward : {0L, 1L}) {
    for (long n_hashes : {1L, 2L, 4L}) {
      for (long L : {128L, 256L, 512L, 1024L, 2048L, 4096L, 8192L, 16384L, 32768L}) {
        if (L < 1024 && n_hashes == 4) continue;  // 128-512: the crossover with dense
        benchmark::RegisterBenchmark(
            ("lsh/" + std::string(backward ? "fwdbwd" : "fwd") +
             "/n_hashes:" + std::to_string(n_hashes) + "/L:" + std::to_string(L))
                .c_str(),
            BM_lsh)
            ->Args({n_hashes, L, backward, threads})
            ->Unit(benchmark::kMillisecond)
            ->MeasureProcessCPUTime()
            ->UseRealTime();
      }
    }
  }
  for (long L : {256L, 1024L}) {
    for (long kind : {0L, 1L}) {
      for (long reference : {1L, 0L}) {
        benchmark::RegisterBenchmark(("path/" + std::string(kind == 0 ? "self" : "lsh") + "/" +
                                      (reference ? "ref" : "fast") + "/L:" + std::to_string(L))
                                         .c_str(),
                                     BM_path)
            ->Args({kind, reference, L, threads})
            ->Unit(benchmark::kMillisecond)
            ->MeasureProcessCPUTime()
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // BENCH_MMAP_THRESHOLD=n: glibc's mmap and trim thresholds set to n bytes, replacing
  // minitrax's 1 GiB (core/kernels.cpp), to measure what that caching costs in RSS.
  if (const char* t = std::getenv("BENCH_MMAP_THRESHOLD")) {
    mallopt(M_MMAP_THRESHOLD, std::atoi(t));
    mallopt(M_TRIM_THRESHOLD, std::atoi(t));
  }
  // --per_head_path (ours, taken out before Google Benchmark reads the flags).
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--per_head_path") {
      g_per_head_path = true;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  register_all();
  // Which OpenBLAS kernels ran (OPENBLAS_CORETYPE or OpenBLAS's own choice): the figures
  // depend on it.
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
