// bench/bench_tape.cpp: what recording costs.
//
// Each benchmark applies the same small op 1000 times, once with a tape
// recording and once without: the difference per op is the cost of one tape
// node (edges, shapes, saved tensors, the VJP rule). Read `per_op` in ns.
#include <benchmark/benchmark.h>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;

namespace {

constexpr int kOps = 1000;

void report(benchmark::State& state) {
  state.SetItemsProcessed(state.iterations() * kOps);
  state.counters["per_op"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kOps),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_MultiplyScalar_NoTape(benchmark::State& state) {
  const Tensor x0 = Tensor::ones({static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) {
    Var x = x0;
    for (int i = 0; i < kOps; ++i) benchmark::DoNotOptimize(x * 1.0001);
  }
  report(state);
}

void BM_MultiplyScalar_Recorded(benchmark::State& state) {
  const Tensor x0 = Tensor::ones({static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) {
    Tape tape;
    Var x = tape.watch(x0);
    for (int i = 0; i < kOps; ++i) benchmark::DoNotOptimize(x * 1.0001);
  }
  report(state);
}

void BM_Multiply_NoTape(benchmark::State& state) {
  const Tensor a = Tensor::ones({static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) {
    Var x = a;
    for (int i = 0; i < kOps; ++i) benchmark::DoNotOptimize(x * x);
  }
  report(state);
}

void BM_Multiply_Recorded(benchmark::State& state) {
  const Tensor a = Tensor::ones({static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) {
    Tape tape;
    Var x = tape.watch(a);
    for (int i = 0; i < kOps; ++i) benchmark::DoNotOptimize(x * x);
  }
  report(state);
}

// Recording plus the backward pass over the recorded chain.
void BM_Multiply_RecordedAndBackward(benchmark::State& state) {
  const Tensor a = Tensor::ones({static_cast<std::size_t>(state.range(0))});
  for (auto _ : state) {
    Tape tape;
    Var x = tape.watch(a);
    Var h = x;
    for (int i = 0; i < kOps; ++i) h = h * x;
    benchmark::DoNotOptimize(tape.gradient(fm::sum(h), x));
  }
  report(state);
}

}  // namespace

BENCHMARK(BM_MultiplyScalar_NoTape)->Arg(4)->Arg(64);
BENCHMARK(BM_MultiplyScalar_Recorded)->Arg(4)->Arg(64);
BENCHMARK(BM_Multiply_NoTape)->Arg(4)->Arg(64);
BENCHMARK(BM_Multiply_Recorded)->Arg(4)->Arg(64);
BENCHMARK(BM_Multiply_RecordedAndBackward)->Arg(4)->Arg(64);
BENCHMARK_MAIN();
