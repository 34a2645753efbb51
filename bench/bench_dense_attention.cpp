// bench/bench_dense_attention.cpp: dense CausalAttention (layers/attention.hpp, the
// attention TransformerLM uses, through the chunked attention kernel) against
// research::SelfAttention (causal, unchunked: the efficient layers' fast path) on the
// same shape, x [batch, L, 256], 4 heads of 64, train mode, dropout 0, threads 2
// (BENCH_THREADS=n to change).
//
//   causal/<fwd|fwdbwd>/L    CausalAttention(256, 4): Dense q, k, v, split heads,
//                            DotProductCausalAttention, merge heads, Dense
//   self/<fwd|fwdbwd>/L      SelfAttention(n_heads 4, d_qk = d_v = 64, causal)
//
// fwdbwd: the gradients of sum(y) w.r.t. x and all weights. batch 2 (BENCH_BATCH=n);
// L = 1024 and 4096. One untimed step first. Issue 14's goal: causal within 1.3x of self.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "layers/attention.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using autodiff::Tape;
using autodiff::Var;
using core::Tensor;

namespace {

constexpr long kHeads = 4, kDHead = 64, kDModel = 256;

void run_steps(benchmark::State& state, base::Layer& layer, const Tensor& x, bool backward) {
  std::vector<Tensor> w0;
  for (const auto& v : layer.flat_weights()) w0.push_back(v.value);
  const core::Key rng = core::key_from_seed(3);
  auto step = [&] {
    if (!backward) {
      const Var y = layer.apply({Var(x)}, rng).at(0);
      benchmark::DoNotOptimize(y.value().data<float>());
      return;
    }
    Tape tape;
    const Var xv = tape.watch(x);
    std::vector<Var> ws;
    for (const Tensor& w : w0) ws.push_back(tape.watch(w));
    layer.set_flat_weights(ws);
    const Var y = fastmath::sum(layer.apply({xv}, rng).at(0));
    std::vector<Var> wrt{xv};
    wrt.insert(wrt.end(), ws.begin(), ws.end());
    auto g = tape.gradient(y, wrt);
    benchmark::DoNotOptimize(g[0].data<float>());
  };
  step();
  for (auto _ : state) step();
  state.counters["L"] = static_cast<double>(x.dim(1));
  state.counters["batch"] = static_cast<double>(x.dim(0));
}

void BM_layer(benchmark::State& state) {
  const bool self = state.range(0) != 0;
  const long L = state.range(1), batch = state.range(2);
  const bool backward = state.range(3) != 0;
  core::set_blas_num_threads(static_cast<int>(state.range(4)));
  base::LayerPtr layer = self ? ea::SelfAttention({.n_heads = kHeads,
                                                   .d_qk = kDHead,
                                                   .d_v = kDHead,
                                                   .causal = true,
                                                   .mode = base::Mode::train})
                              : layers::CausalAttention(kDModel, kHeads, 0.0, base::Mode::train);
  const Tensor x = core::uniform(core::key_from_seed(1),
                                 {static_cast<std::size_t>(batch), static_cast<std::size_t>(L),
                                  static_cast<std::size_t>(kDModel)});
  layer->init({{x.shape(), core::DType::f32}}, core::key_from_seed(0));
  run_steps(state, *layer, x, backward);
}

long env_or(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atol(v) > 0 ? std::atol(v) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const long threads = env_or("BENCH_THREADS", 2), batch = env_or("BENCH_BATCH", 2);
  for (long backward : {0L, 1L}) {
    for (long L : {1024L, 4096L}) {
      for (long self : {0L, 1L}) {
        benchmark::RegisterBenchmark((std::string(self ? "self/" : "causal/") +
                                      (backward ? "fwdbwd" : "fwd") + "/L:" + std::to_string(L))
                                         .c_str(),
                                     BM_layer)
            ->Args({self, L, batch, backward, threads})
            ->Unit(benchmark::kMillisecond)
            ->MeasureProcessCPUTime()
            ->UseRealTime();
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
