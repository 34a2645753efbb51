// core::parallel_for (core/parallel.hpp) and the attention kernels that use it: every
// item runs exactly once, errors reach the caller, nested loops run serially, and the
// efficient attention layers give bitwise the same outputs, states and gradients with
// one thread and with several (each item is computed whole by one thread).
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;

namespace {

// Restores the default thread count and work threshold when a test case ends.
struct ThreadsGuard {
  ~ThreadsGuard() {
    core::set_num_threads(0);
    core::set_parallel_min_flops(core::kParallelMinFlops);
  }
};

}  // namespace

TEST_CASE("parallel_for: every item once, on up to num_threads() workers") {
  ThreadsGuard guard;
  for (int threads : {1, 2, 3, 8}) {
    core::set_num_threads(threads);
    CHECK(core::num_threads() == threads);
    for (long n : {0L, 1L, 2L, 7L, 100L}) {
      std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
      std::atomic<int> max_worker{-1};
      core::parallel_for(n, core::kParallelMinFlops, [&](long i, int worker) {
        ++seen[static_cast<std::size_t>(i)];
        int m = max_worker.load();
        while (worker > m && !max_worker.compare_exchange_weak(m, worker)) {
        }
      });
      for (long i = 0; i < n; ++i) CHECK(seen[static_cast<std::size_t>(i)].load() == 1);
      const int workers = core::parallel_workers(n, core::kParallelMinFlops);
      CHECK(max_worker.load() < workers);
      CHECK(workers == (n <= 1 ? 1 : std::min<long>(threads, n)));
      // Too little work in total: the calling thread does it all.
      CHECK(core::parallel_workers(n, core::kParallelMinFlops / static_cast<double>(n + 1)) == 1);
    }
  }
}

TEST_CASE("parallel_for: a body's exception reaches the caller; nested loops are serial") {
  ThreadsGuard guard;
  core::set_num_threads(2);
  CHECK_THROWS_WITH_AS(core::parallel_for(50, core::kParallelMinFlops,
                                          [](long i, int) {
                                            if (i == 17) throw ValueError("item 17 failed");
                                          }),
                       "item 17 failed", ValueError);
  std::atomic<int> inner_workers{0};
  core::parallel_for(4, core::kParallelMinFlops, [&](long, int) {
    inner_workers += core::parallel_workers(10, core::kParallelMinFlops);  // 1 inside a body
    core::parallel_for(3, core::kParallelMinFlops, [](long, int worker) { CHECK(worker == 0); });
  });
  CHECK(inner_workers.load() == 4);
  CHECK_THROWS_AS(core::set_num_threads(-1), ValueError);
  CHECK_THROWS_AS(core::set_parallel_min_flops(-1.0), ValueError);
}

namespace {

struct Result {
  std::vector<core::Tensor> tensors;  // output, new state, d x, d weights
};

// Forward (train mode: dropout, LSH rehashes) and backward of sum(y * ct) with the
// layer's thread count set to `threads`.
Result run(base::Layer& layer, const core::Tensor& x, int threads) {
  core::set_num_threads(threads);
  Tape tape;
  Var xv = tape.watch(x);
  std::vector<Var> ws;
  for (const auto& w : layer.flat_weights()) ws.push_back(tape.watch(w.value));
  layer.set_flat_weights(ws);
  const base::State state0 = layer.state();
  Var y = layer(xv);
  const core::Tensor ct = core::uniform(core::key_from_seed(5), y.shape(), y.dtype());
  Var total = fastmath::sum(y * Var(ct));
  std::vector<Var> wrt{xv};
  wrt.insert(wrt.end(), ws.begin(), ws.end());
  Result r;
  r.tensors.push_back(y.value());
  for (const core::Tensor& s : layer.state().flatten()) r.tensors.push_back(s);
  for (const core::Tensor& g : tape.gradient(total, wrt)) r.tensors.push_back(g);
  layer.set_state(state0);
  return r;
}

void check_bitwise(const Result& a, const Result& b, const std::string& what) {
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const core::Tensor x = a.tensors[i].clone(), y = b.tensors[i].clone();
    REQUIRE(x.shape() == y.shape());
    CHECK_MESSAGE(std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0,
                  what << ": tensor " << i << " differs between 1 and several threads");
  }
}

}  // namespace

TEST_CASE("efficient attention: bitwise the same results with 1, 2 and 3 threads") {
  ThreadsGuard guard;
  core::set_parallel_min_flops(0.0);  // thread every loop, however small
  SUBCASE("SelfAttention, unchunked, causal: tiles of rows dealt to threads") {
    auto layer = ea::SelfAttention({.n_heads = 4,
                                    .d_qk = 16,
                                    .d_v = 16,
                                    .causal = true,
                                    .mode = base::Mode::train,
                                    .attention_dropout = 0.1,
                                    .output_dropout = 0.1});
    const core::Tensor x = core::normal(core::key_from_seed(1), {2, 384, 32});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(2));
    const Result one = run(*layer, x, 1);
    check_bitwise(one, run(*layer, x, 2), "SelfAttention, 2 threads");
    check_bitwise(one, run(*layer, x, 3), "SelfAttention, 3 threads");
  }
  SUBCASE("LSHSelfAttention, 2 rounds, factorised buckets, dropout: slices dealt to threads") {
    auto layer = ea::LSHSelfAttention({.n_heads = 3,
                                       .d_qk = 16,
                                       .d_v = 8,
                                       .causal = true,
                                       .chunk_len = 16,
                                       .n_chunks_before = 1,
                                       .n_hashes = 2,
                                       .n_buckets = {4, 2},
                                       .mode = base::Mode::train,
                                       .attention_dropout = 0.1,
                                       .output_dropout = 0.1,
                                       .n_parallel_heads = 3});
    const core::Tensor x = core::normal(core::key_from_seed(3), {2, 128, 24});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(4));
    const Result one = run(*layer, x, 1);
    check_bitwise(one, run(*layer, x, 2), "LSHSelfAttention, 2 threads");
    check_bitwise(one, run(*layer, x, 3), "LSHSelfAttention, 3 threads");
  }
}
