// core::parallel_for (core/parallel.hpp) and what uses it: every item runs exactly once,
// errors reach the caller, nested loops run serially, OpenBLAS always runs at one thread
// (its requested count is minitrax's default thread count), and products (core::matmul,
// cut into fixed blocks by core::gemm, or into fixed tiles by a caller), Dense, a
// TransformerLM training step and the efficient attention layers give bitwise the same
// results for every thread setting: OpenBLAS requested at 1 or 2 threads, minitrax at 1,
// 2 or 3, the work threshold at 0 or its default.
//
// The bitwise checks must be able to fail: a product split among OpenBLAS's threads
// rounds differently from the same product on one thread (under the Haswell and the
// Prescott kernels alike), so letting OpenBLAS use the requested count fails them; the
// row counts are not multiples of the tiles, and the summed lengths are not multiples
// of 16. Run this program under each OPENBLAS_CORETYPE the CPU can run.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/error.hpp"
#include "core/kernels.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "layers/core.hpp"
#include "layers/research/efficient_attention.hpp"
#include "models/transformer.hpp"
#include "training/losses.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
namespace tl = minitrax::layers;

// OpenBLAS's thread control, to see what OpenBLAS itself runs with.
extern "C" {
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
}

namespace {

// Restores the default thread count, work threshold and OpenBLAS's thread count when a
// test case ends.
struct ThreadsGuard {
  int blas = core::blas_num_threads();
  ~ThreadsGuard() {
    core::set_num_threads(0);
    core::set_parallel_min_flops(core::kParallelMinFlops);
    core::set_blas_num_threads(blas);
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

TEST_CASE("OpenBLAS always runs on one thread; its requested count is minitrax's default") {
  ThreadsGuard guard;
  MESSAGE("OpenBLAS kernels: " << core::blas_core_name());
  CHECK(openblas_get_num_threads() == 1);  // put there when the library was loaded
  core::set_blas_num_threads(2);
  CHECK(core::blas_num_threads() == 2);
  CHECK(openblas_get_num_threads() == 1);
  CHECK(core::num_threads() == (std::getenv("MINITRAX_NUM_THREADS") ? core::num_threads() : 2));
  // A direct openblas_set_num_threads is a request too: the next product takes it and
  // puts OpenBLAS back at one thread.
  openblas_set_num_threads(3);
  const int asked = openblas_get_num_threads();  // 3, or OpenBLAS's cap
  CHECK(asked > 1);
  const core::Tensor a = core::uniform(core::key_from_seed(1), {300, 200});
  (void)core::matmul(a, a, core::Trans::N, core::Trans::T);
  CHECK(openblas_get_num_threads() == 1);
  CHECK(core::blas_num_threads() == asked);
  // The BLAS thread counts seen by a loop's bodies: {min, max}; 1 in parallel and serial
  // loops alike.
  auto seen = [](long n, double flops) {
    std::atomic<int> lo{1 << 20}, hi{0};
    core::parallel_for(n, flops, [&](long, int) {
      const int b = openblas_get_num_threads();
      int m = lo.load();
      while (b < m && !lo.compare_exchange_weak(m, b)) {
      }
      m = hi.load();
      while (b > m && !hi.compare_exchange_weak(m, b)) {
      }
    });
    return std::pair<int, int>{lo.load(), hi.load()};
  };
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    core::set_num_threads(threads);
    CHECK(seen(6, core::kParallelMinFlops) == std::pair<int, int>{1, 1});
    CHECK(seen(1, 1e12) == std::pair<int, int>{1, 1});
    CHECK(seen(6, 1.0) == std::pair<int, int>{1, 1});
  }
  CHECK_THROWS_AS(core::set_blas_num_threads(0), ValueError);
}

namespace {

// Every thread setting a user can make: OpenBLAS's requested count, minitrax's thread
// count and the work threshold. f() runs under each; all results must be memcmp-equal.
template <class F>
void check_all_thread_settings(const std::string& what, F f) {
  ThreadsGuard guard;
  std::vector<core::Tensor> ref;
  std::string ref_setting;
  for (int blas : {1, 2}) {
    for (int threads : {1, 2, 3}) {
      for (double min_flops : {0.0, core::kParallelMinFlops}) {
        core::set_blas_num_threads(blas);
        core::set_num_threads(threads);
        core::set_parallel_min_flops(min_flops);
        const std::string setting = "OpenBLAS " + std::to_string(blas) + ", threads " +
                                    std::to_string(threads) + ", min flops " +
                                    std::to_string(min_flops);
        std::vector<core::Tensor> out = f();
        if (ref.empty()) {
          ref = std::move(out);
          ref_setting = setting;
          continue;
        }
        REQUIRE(out.size() == ref.size());
        for (std::size_t i = 0; i < out.size(); ++i) {
          const core::Tensor x = out[i].clone(), y = ref[i].clone();
          REQUIRE(x.shape() == y.shape());
          CHECK_MESSAGE(
              std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0,
              what << ": result " << i << " differs between " << ref_setting << " and " << setting);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("matmul: bitwise the same for every OpenBLAS, minitrax thread count and threshold") {
  // Shapes cut into blocks of rows (tall), of columns (few rows, many columns), not cut
  // (small), with transposes, alpha / beta, a batch folded into one product, float64.
  struct Case {
    std::size_t m, n, k;
    core::Trans ta, tb;
  };
  const std::vector<Case> cases{{1000, 300, 200, core::Trans::N, core::Trans::N},
                                {300, 1000, 300, core::Trans::T, core::Trans::N},
                                {300, 300, 1000, core::Trans::N, core::Trans::T},
                                {16, 5000, 300, core::Trans::T, core::Trans::T},
                                {20, 30, 40, core::Trans::N, core::Trans::N}};
  for (core::DType dt : {core::DType::f32, core::DType::f64}) {
    for (const Case& c : cases) {
      const core::Shape as = c.ta == core::Trans::N ? core::Shape{c.m, c.k} : core::Shape{c.k, c.m};
      const core::Shape bs = c.tb == core::Trans::N ? core::Shape{c.k, c.n} : core::Shape{c.n, c.k};
      const core::Tensor a = core::uniform(core::key_from_seed(21), as, dt);
      const core::Tensor b = core::uniform(core::key_from_seed(22), bs, dt);
      const core::Tensor c0 = core::uniform(core::key_from_seed(23), {c.m, c.n}, dt);
      check_all_thread_settings(
          "matmul " + std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k),
          [&] {
            core::Tensor acc = c0.clone();
            core::matmul_into(acc, a, b, c.ta, c.tb, 0.7, 1.3);
            return std::vector<core::Tensor>{core::matmul(a, b, c.ta, c.tb), acc};
          });
    }
  }
  // [32, 128, 256] x [256, 384]: folded into one (32 * 128) x 384 product.
  const core::Tensor a = core::uniform(core::key_from_seed(24), {32, 128, 256});
  const core::Tensor b = core::uniform(core::key_from_seed(25), {256, 384});
  check_all_thread_settings("batched matmul",
                            [&] { return std::vector<core::Tensor>{core::matmul(a, b)}; });
}

TEST_CASE("gemm: fixed blocks give the same values as one product, within rounding") {
  // The cut changes only the rounding: compare with a float64 product.
  ThreadsGuard guard;
  core::set_num_threads(2);
  core::set_parallel_min_flops(0.0);
  const core::Tensor a = core::uniform(core::key_from_seed(26), {700, 300});
  const core::Tensor b = core::uniform(core::key_from_seed(27), {500, 300});
  const core::Tensor c = core::matmul(a, b, core::Trans::N, core::Trans::T);
  const core::Tensor c64 = core::matmul(a.astype(core::DType::f64), b.astype(core::DType::f64),
                                        core::Trans::N, core::Trans::T);
  double worst = 0;
  for (std::size_t i = 0; i < 700; ++i) {
    for (std::size_t j = 0; j < 500; ++j) {
      worst = std::max(worst, std::abs(double(c.at({i, j})) - c64.at({i, j})));
    }
  }
  CHECK(worst < 1e-3);
}

namespace {

// C = A B, [m, k] x [k, n], in tiles of `tile` rows dealt to `threads` threads.
template <class T>
std::vector<T> tiled_product(const std::vector<T>& a, const std::vector<T>& b, long m, long n,
                             long k, long tile, int threads) {
  core::set_num_threads(threads);
  std::vector<T> c(static_cast<std::size_t>(m * n));
  const long tiles = (m + tile - 1) / tile;
  core::parallel_for(tiles, 2.0 * static_cast<double>(tile * n * k), [&](long t, int) {
    const long r0 = t * tile, rows = std::min(tile, m - r0);
    core::gemm(core::Trans::N, core::Trans::N, static_cast<std::size_t>(rows),
               static_cast<std::size_t>(n), static_cast<std::size_t>(k), T(1), a.data() + r0 * k,
               static_cast<std::size_t>(k), b.data(), static_cast<std::size_t>(n), T(0),
               c.data() + r0 * n, static_cast<std::size_t>(n));
  });
  return c;
}

template <class T>
void check_tiled_product(long m, long n, long k, long tile) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(tile);
  const core::DType dt = core::dtype_of<T>();
  const core::Tensor at =
      core::uniform(core::key_from_seed(11), {std::size_t(m), std::size_t(k)}, dt);
  const core::Tensor bt =
      core::uniform(core::key_from_seed(12), {std::size_t(k), std::size_t(n)}, dt);
  const std::vector<T> a(at.data<T>(), at.data<T>() + m * k), b(bt.data<T>(), bt.data<T>() + k * n);
  // The reference: the same tiles, one after the other, OpenBLAS at one thread.
  core::set_blas_num_threads(1);
  std::vector<T> ref(static_cast<std::size_t>(m * n));
  for (long r0 = 0; r0 < m; r0 += tile) {
    const long rows = std::min(tile, m - r0);
    core::gemm(core::Trans::N, core::Trans::N, static_cast<std::size_t>(rows),
               static_cast<std::size_t>(n), static_cast<std::size_t>(k), T(1), a.data() + r0 * k,
               static_cast<std::size_t>(k), b.data(), static_cast<std::size_t>(n), T(0),
               ref.data() + r0 * n, static_cast<std::size_t>(n));
  }
  core::set_blas_num_threads(2);
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    const std::vector<T> c = tiled_product(a, b, m, n, k, tile, threads);
    CHECK(std::memcmp(c.data(), ref.data(), c.size() * sizeof(T)) == 0);
  }
}

}  // namespace

TEST_CASE("parallel_for: a product in tiles of rows is bitwise the same with 1, 2 and 3 threads") {
  ThreadsGuard guard;
  core::set_parallel_min_flops(0.0);  // a parallel loop even for 3 tiles of 5 MFLOP
  // Tiles of 128 rows with a short last one; OpenBLAS would split each tile's product
  // among its threads (m * n * k far above its threshold) if the loop let it.
  for (long k : {64L, 300L}) {
    check_tiled_product<float>(300, 300, k, 128);
    check_tiled_product<double>(300, 300, k, 128);
  }
  check_tiled_product<float>(300, 64, 300, 128);  // the attention kernels' P V shape
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

// The three runs of a layer, with 1, 2 and 3 threads, bitwise the same.
void check_threads(base::Layer& layer, const core::Tensor& x, const std::string& what) {
  const Result one = run(layer, x, 1);
  check_bitwise(one, run(layer, x, 2), what + ", 2 threads");
  check_bitwise(one, run(layer, x, 3), what + ", 3 threads");
}

}  // namespace

TEST_CASE("efficient attention: bitwise the same results with 1, 2 and 3 threads") {
  ThreadsGuard guard;
  core::set_blas_num_threads(2);      // what a single-worker loop must not hand to its gemms
  core::set_parallel_min_flops(0.0);  // thread every loop, however small
  SUBCASE("SelfAttention, unchunked, causal: tiles of rows dealt to threads") {
    // L = 384: tiles of 128 rows, windows of 128, 256 and 384 keys.
    auto layer = ea::SelfAttention({.n_heads = 4,
                                    .d_qk = 16,
                                    .d_v = 16,
                                    .causal = true,
                                    .mode = base::Mode::train,
                                    .attention_dropout = 0.1,
                                    .output_dropout = 0.1});
    const core::Tensor x = core::normal(core::key_from_seed(1), {2, 384, 32});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(2));
    check_threads(*layer, x, "SelfAttention");
  }
  SUBCASE("SelfAttention, unchunked, causal, L = 300: a short last tile, windows of 300") {
    // Tiles of 128, 128 and 44 rows; the last windows sum over 300 keys (not a multiple
    // of 16: Prescott's kernels round that differently on 2 OpenBLAS threads).
    auto layer = ea::SelfAttention({.n_heads = 2,
                                    .d_qk = 32,
                                    .d_v = 64,
                                    .causal = true,
                                    .mode = base::Mode::train,
                                    .attention_dropout = 0.1});
    const core::Tensor x = core::normal(core::key_from_seed(6), {2, 300, 48});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(7));
    check_threads(*layer, x, "SelfAttention L = 300");
  }
  SUBCASE("SelfAttention, chunked (100, one chunk before), not causal: chunks dealt to threads") {
    auto layer = ea::SelfAttention({.n_heads = 2,
                                    .d_qk = 32,
                                    .d_v = 32,
                                    .chunk_len = 100,
                                    .n_chunks_before = 1,
                                    .mode = base::Mode::train,
                                    .attention_dropout = 0.1});
    const core::Tensor x = core::normal(core::key_from_seed(8), {2, 300, 32});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(9));
    check_threads(*layer, x, "chunked SelfAttention");
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
    check_threads(*layer, x, "LSHSelfAttention");
  }
}

TEST_CASE(
    "efficient attention at the default work threshold: bitwise the same with 1, 2, 3 threads") {
  // Sizes whose loops pass kParallelMinFlops by far, so the layers take their threaded
  // paths as they do in use.
  ThreadsGuard guard;
  core::set_blas_num_threads(2);
  // The dense forward's loop: 2 x 2 slices of 5 tiles of about 2 * 128 * 600 * 128 flops.
  CHECK(20.0 * 2 * 128 * 600 * 128 > core::kParallelMinFlops);
  SUBCASE("SelfAttention, unchunked, causal, L = 600") {
    auto layer = ea::SelfAttention({.n_heads = 2,
                                    .d_qk = 64,
                                    .d_v = 64,
                                    .causal = true,
                                    .mode = base::Mode::train,
                                    .attention_dropout = 0.1});
    const core::Tensor x = core::normal(core::key_from_seed(13), {2, 600, 64});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(14));
    check_threads(*layer, x, "SelfAttention L = 600");
  }
  SUBCASE("LSHSelfAttention, 2 rounds, L = 1024") {
    // 2 slices of 2000 sorted slots, windows of 128: about 2 * 2000 * 128 * 64 flops each.
    auto layer = ea::LSHSelfAttention({.n_heads = 2,
                                       .d_qk = 32,
                                       .d_v = 32,
                                       .causal = true,
                                       .chunk_len = 64,
                                       .n_chunks_before = 1,
                                       .n_hashes = 2,
                                       .n_buckets = {8, 4},
                                       .mode = base::Mode::train,
                                       .attention_dropout = 0.1,
                                       .n_parallel_heads = 2});
    const core::Tensor x = core::normal(core::key_from_seed(15), {1, 1024, 32});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(16));
    check_threads(*layer, x, "LSHSelfAttention L = 1024");
  }
}

TEST_CASE("Dense and a TransformerLM training step: bitwise the same for every thread setting") {
  SUBCASE("Dense forward and backward") {
    auto layer = tl::Dense(384);
    const core::Tensor x = core::normal(core::key_from_seed(31), {4, 200, 256});
    layer->init({{x.shape(), x.dtype()}}, core::key_from_seed(32));
    check_all_thread_settings("Dense", [&] {
      Result r = run(*layer, x, core::num_threads());
      return r.tensors;
    });
  }
  SUBCASE("TransformerLM: loss and gradients of one training step") {
    auto model = models::TransformerLM({.vocab_size = 300,
                                        .d_model = 128,
                                        .d_ff = 512,
                                        .n_layers = 1,
                                        .n_heads = 4,
                                        .dropout = 0.1,
                                        .max_len = 256});
    const core::Tensor ids = core::randint(core::key_from_seed(33), {2, 256}, 0, 300);
    model->init({{ids.shape(), ids.dtype()}}, core::key_from_seed(34));
    auto loss_layer = training::WeightedCategoryCrossEntropy();
    const core::Tensor weights = core::Tensor::ones({2, 256}, core::DType::f32);
    check_all_thread_settings("TransformerLM", [&] {
      Tape tape;
      std::vector<Var> vs;
      for (const auto& w : model->flat_weights()) vs.push_back(tape.watch(w.value));
      const std::vector<Var> saved = vs;
      model->set_flat_weights(vs);
      base::Stack out = model->apply({Var(ids)}, core::key_from_seed(35));
      Var l = loss_layer->apply({out.at(0), Var(ids), Var(weights)}, core::key_from_seed(36))[0];
      std::vector<core::Tensor> r{l.value()};
      for (const core::Tensor& g : tape.gradient(l, vs)) r.push_back(g);
      std::vector<core::Tensor> plain;
      for (const Var& v : saved) plain.push_back(v.value());
      model->set_flat_weights(plain);
      return r;
    });
  }
}
