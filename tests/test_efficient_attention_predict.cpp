// Tests of predict mode (fast autoregressive inference) of efficient attention
// (layers/research/efficient_attention_predict.cpp), against eval mode over the whole
// sequence and against an independent computation of Trax 1.3.4's incremental rules:
//
//   * SelfAttention, full and chunked, causal (also shared QK and biases): one position per
//     call, a short prompt then single positions, a prompt longer than the drop length,
//     a prompt longer than the memory; with chunking the memory rolls by chunk_len and
//     keeps exactly the window of eval mode, so every position equals eval within 1e-5;
//   * LSHSelfAttention, n_hashes 1 and 2: equal to eval when every query's window covers
//     the whole sequence (chunk_len = L, n_chunks_before = n_hashes - 1... see the doc);
//     otherwise Trax's one-position rule (same-bucket priorities, top n_hashes * chunk_len *
//     (1 + n_chunks_before) slots, one softmax), the rolled buckets and the prompt path
//     (eval-mode LSH over the prompt, hashed with the state's key) are checked against
//     plain loops in float64;
//   * the state layout, a layer switched from eval to predict, and the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/research/efficient_attention.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using base::Mode;
using core::key_from_seed;
using testutil::contains;
using testutil::error_message;
using testutil::layer_error;

namespace {

Tensor randn(const Shape& shape, std::uint32_t seed, DType dtype = DType::f32) {
  return core::normal(key_from_seed(seed), shape, dtype);
}

double max_abs(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  return core::max_abs_diff(a.astype(DType::f64), b.astype(DType::f64));
}

Tensor positions(const Tensor& x, long lo, long hi) {
  return core::slice(x, 1, lo, hi);
}

// Feeds x [B, L, d] to a predict-mode layer in calls of the given lengths and checks each
// call's output against want[:, lo:hi] (eval mode over the whole sequence): position 0
// within tol_first, the others within tol.
void feed_and_compare(base::Layer& pred, const Tensor& x, const Tensor& want,
                      const std::vector<long>& calls, double tol, double tol_first = 0.0) {
  if (tol_first == 0.0) tol_first = tol;
  long lo = 0;
  for (long n : calls) {
    CAPTURE(lo);
    CAPTURE(n);
    const Tensor got = pred(Var(positions(x, lo, lo + n))).value();
    const long from = lo == 0 ? 1 : 0;  // position 0 on its own
    if (lo == 0) CHECK(max_abs(positions(got, 0, 1), positions(want, 0, 1)) < tol_first);
    if (from < n) {
      CHECK(max_abs(positions(got, from, n), positions(want, lo + from, lo + n)) < tol);
    }
    lo += n;
  }
  REQUIRE(lo == long(x.dim(1)));
}

std::vector<long> ones_after(long prompt, long total) {
  std::vector<long> calls;
  if (prompt > 0) calls.push_back(prompt);
  for (long t = prompt; t < total; ++t) calls.push_back(1);
  return calls;
}

}  // namespace

// =============================================================================================
// SelfAttention
// =============================================================================================

TEST_CASE("SelfAttention predict mode, full attention: every schedule gives eval's outputs") {
  const long B = 2, L = 8, d = 6;
  const Tensor x = randn({B, L, d}, 1);
  for (const bool share_qk : {false, true}) {
    for (const bool bias : {false, true}) {
      CAPTURE(share_qk);
      CAPTURE(bias);
      ea::SelfAttentionOptions o{.n_heads = 2,
                                 .d_qk = 4,
                                 .d_v = 3,
                                 .share_qk = share_qk,
                                 .causal = true,
                                 .bias = bias,
                                 .mode = Mode::eval};
      auto eval = ea::SelfAttention(o);
      eval->init({{x.shape(), DType::f32}}, key_from_seed(2));
      if (bias) {  // nonzero biases, so that they matter
        std::vector<Tensor> ws;
        for (const auto& w : eval->flat_weights()) {
          ws.push_back(w.name.find("b_") != std::string::npos ? randn(w.value.shape(), 3)
                                                              : w.value);
        }
        eval->set_flat_weights(ws);
      }
      const Tensor want = (*eval)(Var(x)).value();
      o.mode = Mode::predict;
      o.predict_mem_len = L;
      o.predict_drop_len = 4;
      for (const long prompt : {0L, 3L, 5L, 8L}) {  // 3: a short call; 5 and 8: a prompt
        CAPTURE(prompt);
        auto pred = ea::SelfAttention(o);
        pred->init({{{B, 1, d}, DType::f32}});
        pred->set_weights(eval->weights());
        feed_and_compare(*pred, x, want, ones_after(prompt, L), 1e-5);
        CHECK(pred->flat_state()[0].value.item<std::int32_t>() == L);  // mem_end
      }
    }
  }
}

TEST_CASE("SelfAttention predict mode, chunked: the memory rolls with eval's chunk windows") {
  const long B = 2, L = 16, d = 6, chunk = 4;
  const Tensor x = randn({B, L, d}, 4);
  for (const long before : {0L, 1L}) {
    CAPTURE(before);
    ea::SelfAttentionOptions o{.n_heads = 3,
                               .d_qk = 4,
                               .d_v = 4,
                               .causal = true,
                               .chunk_len = chunk,
                               .n_chunks_before = before,
                               .mode = Mode::eval};
    auto eval = ea::SelfAttention(o);
    eval->init({{x.shape(), DType::f32}}, key_from_seed(5));
    const Tensor want = (*eval)(Var(x)).value();
    o.mode = Mode::predict;  // Trax's defaults: mem chunk * (1 + before), drop chunk
    auto make = [&] {
      auto pred = ea::SelfAttention(o);
      pred->init({{{B, 1, d}, DType::f32}});
      pred->set_weights(eval->weights());
      return pred;
    };
    CHECK(make()->predict_lengths() == std::pair<long, long>{chunk * (1 + before), chunk});
    SUBCASE("one position per call (the memory rolls twice or more)") {
      auto pred = make();
      feed_and_compare(*pred, x, want, ones_after(0, L), 1e-5);
      // the memory holds the last chunks: positions [L - mem_len, L) at slots [0, mem_len)
      const auto st = pred->flat_state();
      const long mem_len = chunk * (1 + before);
      CHECK(st[0].value.item<std::int32_t>() == mem_len);
      CHECK(max_abs(st[1].value, positions(x, L - mem_len, L)) == 0.0);
    }
    SUBCASE("a short prompt, then single positions") {
      auto pred = make();
      feed_and_compare(*pred, x, want, ones_after(3, L), 1e-5);
    }
    SUBCASE("a prompt of two chunks (chunked attention), then single positions") {
      auto pred = make();
      feed_and_compare(*pred, x, want, ones_after(8, L), 1e-5);
    }
    SUBCASE("a prompt longer than the memory keeps its last positions") {
      auto pred = make();
      feed_and_compare(*pred, x, want, ones_after(12, L), 1e-5);
    }
  }
}

TEST_CASE("SelfAttention predict mode: state layout, pure_fn, a layer switched from eval") {
  const long B = 2, L = 6, d = 4;
  const Tensor x = randn({B, L, d}, 6);
  ea::SelfAttentionOptions o{.n_heads = 2,
                             .d_qk = 4,
                             .d_v = 4,
                             .causal = true,
                             .mode = Mode::eval,
                             .predict_mem_len = 6,
                             .predict_drop_len = 2};
  auto eval = ea::SelfAttention(o);
  eval->init({{x.shape(), DType::f32}}, key_from_seed(7));
  const Tensor want = (*eval)(Var(x)).value();
  o.mode = Mode::predict;
  auto pred = ea::SelfAttention(o);
  pred->init({{{B, 1, d}, DType::f32}});
  pred->set_weights(eval->weights());
  // Trax's (mem_end, (memory,), ()) : no per-slice state for SelfAttention
  const base::State fresh = pred->state();
  REQUIRE(fresh.size() == 3);
  CHECK(fresh[2].size() == 0);
  const auto st = pred->flat_state();
  REQUIRE(st.size() == 2);
  CHECK(st[0].value.shape() == Shape{});
  CHECK(st[0].value.dtype() == DType::i32);
  CHECK(st[1].value.shape() == Shape{2, 6, 4});

  SUBCASE("pure_fn returns the new state and leaves the layer's alone") {
    auto [ys, s1] =
        pred->pure_fn({Var(positions(x, 0, 2))}, pred->weight_vars(), fresh, key_from_seed(0));
    CHECK(max_abs(ys[0].value(), positions(want, 0, 2)) < 1e-5);
    CHECK(s1[0].leaf().item<std::int32_t>() == 2);
    CHECK(pred->flat_state()[0].value.item<std::int32_t>() == 0);
    auto [ys2, s2] =
        pred->pure_fn({Var(positions(x, 2, 3))}, pred->weight_vars(), s1, key_from_seed(0));
    CHECK(max_abs(ys2[0].value(), positions(want, 2, 3)) < 1e-5);
  }
  SUBCASE("initialised in eval mode, switched to predict: starts an empty memory") {
    auto late_eval = ea::SelfAttention([&] {
      auto e = o;
      e.mode = Mode::eval;
      return e;
    }());
    late_eval->init({{x.shape(), DType::f32}});
    late_eval->set_weights(eval->weights());
    late_eval->set_mode(Mode::predict);
    feed_and_compare(*late_eval, x, want, {2, 1, 1, 1, 1}, 1e-5);
  }
}

// =============================================================================================
// LSHSelfAttention
// =============================================================================================

// When one chunk and its n_chunks_before predecessors hold the whole hashed sequence with
// every position equally often (n_hashes * L / chunk_len is 1 or 1 + n_chunks_before), eval
// mode is full causal shared-QK attention whatever the buckets; predict mode attends to the
// n_hashes * chunk_len * (1 + n_chunks_before) >= L + 1 best slots, i.e. to every past
// position: the same function.
//
// Position 0 sees only copies of itself, under the -1e5 self mask. In float32 eval mode
// weighs those copies only to about 1e-2 (dots - 1e5 has a spacing of 2^-7; Trax's too,
// see docs/efficient_attention.md), while predict mode's single copy gives exactly its
// value: position 0 is compared within 2e-2 in float32; float64 agrees everywhere.
TEST_CASE("LSHSelfAttention predict mode equals eval when the windows cover the sequence") {
  const long B = 2, L = 8, d = 6;
  struct Config {
    long n_hashes, chunk_len, before;
  };
  for (const DType dt : {DType::f32, DType::f64})
    for (const Config c : {Config{1, 8, 1}, Config{1, 8, 2}, Config{2, 8, 1}, Config{2, 16, 0}}) {
      CAPTURE(core::dtype_name(dt));
      const Tensor x = randn({B, L, d}, 8, dt);
      const double tol = dt == DType::f32 ? 1e-5 : 1e-9;
      const double tol_first = dt == DType::f32 ? 2e-2 : 1e-9;
      CAPTURE(c.n_hashes);
      CAPTURE(c.chunk_len);
      CAPTURE(c.before);
      ea::LSHSelfAttentionOptions o{.n_heads = 2,
                                    .d_qk = 4,
                                    .d_v = 4,
                                    .causal = true,
                                    .chunk_len = c.chunk_len,
                                    .n_chunks_before = c.before,
                                    .n_hashes = c.n_hashes,
                                    .n_buckets = {4},
                                    .mode = Mode::eval};
      auto eval = ea::LSHSelfAttention(o);
      eval->init({{x.shape(), dt}}, key_from_seed(9));
      const Tensor want = (*eval)(Var(x)).value();
      o.mode = Mode::predict;
      SUBCASE("Trax's default memory (2048, drop 256): one position per call, or a short call") {
        for (const long prompt : {0L, 3L}) {
          CAPTURE(prompt);
          auto pred = ea::LSHSelfAttention(o);
          pred->init({{{B, 1, d}, dt}});
          pred->set_weights(eval->weights());
          feed_and_compare(*pred, x, want, ones_after(prompt, L), tol, tol_first);
        }
      }
      SUBCASE("a prompt (longer than predict_drop_len), then single positions") {
        o.predict_mem_len = 16;
        o.predict_drop_len = 2;
        for (const long prompt : {3L, 8L}) {
          CAPTURE(prompt);
          auto pred = ea::LSHSelfAttention(o);
          pred->init({{{B, 1, d}, dt}});
          pred->set_weights(eval->weights());
          feed_and_compare(*pred, x, want, ones_after(prompt, L), tol, tol_first);
          const auto st = pred->flat_state();  // mem_end, memory, buckets, buckets_idx, key
          REQUIRE(st.size() == 5);
          CHECK(st[0].value.item<std::int32_t>() == L);
          CHECK(st[2].value.shape() == Shape{4, std::size_t(16 * c.n_hashes)});
          CHECK(st[3].value.shape() == Shape{4});
          CHECK(st[3].value.to_vector<std::int32_t>() == std::vector<std::int32_t>(4, L));
        }
      }
    }
}

namespace {

// Trax 1.3.4's one-position rule for ONE (example, head), in plain double loops. The memory
// holds positions [start, start + mem_len) at slots [0, mem_len); slots after the query are
// empty (zero inputs, zero buckets). rot: [d_qk, n_hashes, n_buckets / 2].
struct LshRef {
  std::vector<double> x;           // [L, d] this example
  std::vector<double> wq, wv, wo;  // [d, dqk], [d, dv], [dv, d] this head
  std::vector<double> rot;         // [dqk, n_hashes, nb / 2] this head
  long d, dqk, dv, n_hashes, n_buckets, chunk, before, mem_len;

  std::vector<double> proj(long pos, const std::vector<double>& w, long cols) const {
    std::vector<double> r(std::size_t(cols), 0.0);
    for (long j = 0; j < cols; ++j)
      for (long i = 0; i < d; ++i)
        r[std::size_t(j)] += x[std::size_t(pos * d + i)] * w[std::size_t(i * cols + j)];
    return r;
  }
  std::vector<long> buckets(long pos) const {  // one per round, with the round offsets
    const std::vector<double> q = proj(pos, wq, dqk);
    const long half = n_buckets / 2;
    std::vector<long> out;
    for (long h = 0; h < n_hashes; ++h) {
      long best = 0;
      double best_v = -1e300;
      for (long j = 0; j < n_buckets; ++j) {  // argmax over [qR, -qR], first on ties
        double v = 0;
        for (long f = 0; f < dqk; ++f)
          v += q[std::size_t(f)] * rot[std::size_t((f * n_hashes + h) * half + j % half)];
        if (j >= half) v = -v;
        if (v > best_v) {
          best_v = v;
          best = j;
        }
      }
      out.push_back(best + h * n_buckets);
    }
    return out;
  }
  // out [d] for the query at position t, the memory starting at position `start`.
  std::vector<double> query(long t, long start) const {
    const long q_slot = t - start;
    const std::vector<long> qb = buckets(t);
    std::vector<long> pri(static_cast<std::size_t>(mem_len));
    for (long s = 0; s < mem_len; ++s) {
      bool valid = false;
      const std::vector<long> sb =
          s <= q_slot ? buckets(start + s) : std::vector<long>(std::size_t(n_hashes), 0);
      for (long h = 0; h < n_hashes; ++h) valid = valid || sb[std::size_t(h)] == qb[std::size_t(h)];
      pri[std::size_t(s)] = (s > q_slot + 1 ? -(mem_len + s) : s) + (valid ? mem_len : 0);
    }
    std::vector<long> order(static_cast<std::size_t>(mem_len));
    std::iota(order.begin(), order.end(), 0L);
    std::sort(order.begin(), order.end(),
              [&](long a, long b) { return pri[std::size_t(a)] > pri[std::size_t(b)]; });
    const long n_kv = std::min(mem_len, n_hashes * chunk * (1 + before));
    const std::vector<double> q = proj(t, wq, dqk);
    std::vector<double> dots, o(std::size_t(dv), 0.0);
    std::vector<std::vector<double>> vs;
    for (long j = 0; j < n_kv; ++j) {
      const long s = order[std::size_t(j)];
      std::vector<double> k(std::size_t(dqk), 0.0), v(std::size_t(dv), 0.0);
      if (s <= q_slot) {
        k = proj(start + s, wq, dqk);
        v = proj(start + s, wv, dv);
      }
      double ms = 0;
      for (double e : k) ms += e * e;
      const double norm = std::sqrt(ms / double(dqk) + 1e-6);
      double dot = 0;
      for (long f = 0; f < dqk; ++f)
        dot += q[std::size_t(f)] * k[std::size_t(f)] / norm / std::sqrt(double(dqk));
      if (s > q_slot) dot -= 1e9;
      if (s == q_slot) dot -= 1e5;
      dots.push_back(dot);
      vs.push_back(v);
    }
    const double m = *std::max_element(dots.begin(), dots.end());
    double z = 0;
    for (double e : dots) z += std::exp(e - m);
    for (std::size_t j = 0; j < dots.size(); ++j)
      for (long f = 0; f < dv; ++f)
        o[std::size_t(f)] += std::exp(dots[j] - m) / z * vs[j][std::size_t(f)];
    std::vector<double> out(std::size_t(d), 0.0);
    for (long i = 0; i < d; ++i)
      for (long f = 0; f < dv; ++f)
        out[std::size_t(i)] += o[std::size_t(f)] * wo[std::size_t(f * d + i)];
    return out;
  }
};

std::vector<double> block(const Tensor& stacked, long i) {  // row i of [N, ...] as doubles
  return core::slice(stacked, 0, i, i + 1).to_vector<double>();
}

}  // namespace

TEST_CASE("LSHSelfAttention predict mode follows Trax's one-position rule (float64, plain loops)") {
  const long B = 2, L = 14, d = 6, H = 2, dqk = 4, dv = 3, nb = 4, mem_len = 8, drop = 4;
  const Tensor x = randn({B, L, d}, 10, DType::f64);
  struct Config {
    long n_hashes, chunk_len, before, prompt;
  };
  for (const Config c :
       {Config{1, 2, 1, 0}, Config{2, 2, 0, 0}, Config{2, 2, 0, 6}, Config{1, 3, 0, 6}}) {
    CAPTURE(c.n_hashes);
    CAPTURE(c.chunk_len);
    CAPTURE(c.before);
    CAPTURE(c.prompt);
    ea::LSHSelfAttentionOptions o{.n_heads = H,
                                  .d_qk = dqk,
                                  .d_v = dv,
                                  .causal = true,
                                  .chunk_len = c.chunk_len,
                                  .n_chunks_before = c.before,
                                  .n_hashes = c.n_hashes,
                                  .n_buckets = {nb},
                                  .mode = Mode::predict,
                                  .predict_mem_len = mem_len,
                                  .predict_drop_len = drop};
    auto pred = ea::LSHSelfAttention(o);
    pred->init({{{B, 1, d}, DType::f64}}, key_from_seed(11));
    const Tensor rot =
        randn({std::size_t(H), std::size_t(dqk), std::size_t(c.n_hashes), std::size_t(nb / 2)}, 12,
              DType::f64);
    pred->set_fixed_rotations(rot);
    const auto ws = pred->flat_weights();  // w_q, w_v, w_o stacked over heads
    REQUIRE(ws.size() == 3);

    long t = 0;
    if (c.prompt > 0) {  // the prompt path: eval-mode LSH over the prompt, same rotations
      auto o_eval = o;
      o_eval.mode = Mode::eval;
      auto eval = ea::LSHSelfAttention(o_eval);
      const Tensor xp = positions(x, 0, c.prompt);
      eval->init({{xp.shape(), DType::f64}});
      eval->set_weights(pred->weights());
      eval->set_fixed_rotations(rot);
      const Tensor want = (*eval)(Var(xp)).value();
      const Tensor got = (*pred)(Var(xp)).value();
      CHECK(max_abs(got, want) < 1e-10);
      // the prompt's buckets are stored per round at slots [0, prompt)
      const Tensor eval_buckets = eval->flat_state()[0].value;  // [B*H, n_hashes * prompt]
      const Tensor pred_buckets = pred->flat_state()[2].value;  // [B*H, n_hashes * mem_len]
      for (long i = 0; i < B * H; ++i) {
        for (long h = 0; h < c.n_hashes; ++h) {
          for (long s = 0; s < c.prompt; ++s) {
            CHECK(pred_buckets.at({std::size_t(i), std::size_t(h * mem_len + s)}) ==
                  eval_buckets.at({std::size_t(i), std::size_t(h * c.prompt + s)}));
          }
        }
      }
      t = c.prompt;
    }
    long start = 0;  // the position at memory slot 0
    for (; t < L; ++t) {
      CAPTURE(t);
      if (t - start + 1 > mem_len) start += drop;                       // the memory rolls
      const Tensor got = (*pred)(Var(positions(x, t, t + 1))).value();  // [B, 1, d]
      std::vector<double> want(std::size_t(B * d), 0.0);
      for (long b = 0; b < B; ++b) {
        for (long h = 0; h < H; ++h) {
          const LshRef ref{block(x, b),
                           block(ws[0].value, h),
                           block(ws[1].value, h),
                           block(ws[2].value, h),
                           block(rot, h),
                           d,
                           dqk,
                           dv,
                           c.n_hashes,
                           nb,
                           c.chunk_len,
                           c.before,
                           mem_len};
          const std::vector<double> r = ref.query(t, start);
          for (long i = 0; i < d; ++i) want[std::size_t(b * d + i)] += r[std::size_t(i)];
        }
      }
      CHECK(max_abs(got, Tensor::from<double>({std::size_t(B), 1, std::size_t(d)}, want)) < 1e-9);
    }
    CHECK(pred->flat_state()[3].value.to_vector<std::int32_t>() ==
          std::vector<std::int32_t>(std::size_t(B * H), std::int32_t(L - start)));
  }
}

TEST_CASE("LSHSelfAttention predict mode hashes with the state's key as it is (never advanced)") {
  const long B = 1, P = 8, d = 6, H = 2;
  const Tensor x = randn({B, P, d}, 13);
  ea::LSHSelfAttentionOptions o{.n_heads = H,
                                .d_qk = 4,
                                .d_v = 4,
                                .causal = true,
                                .chunk_len = 4,
                                .n_hashes = 2,
                                .n_buckets = {4},
                                .mode = Mode::predict,
                                .predict_mem_len = 16,
                                .predict_drop_len = 4};
  auto pred = ea::LSHSelfAttention(o);
  pred->init({{{B, 1, d}, DType::f32}}, key_from_seed(14));
  const Tensor keys = pred->flat_state()[4].value;  // [B*H, 2]
  (*pred)(Var(x));
  (*pred)(Var(randn({B, 1, d}, 15)));
  const auto st = pred->flat_state();
  CHECK(max_abs(st[4].value, keys) == 0.0);
  const Tensor w_q = pred->flat_weights()[0].value;  // [H, d, d_qk]
  for (long h = 0; h < H; ++h) {
    const Tensor q =
        core::matmul(core::slice(x, 0, 0, 1).reshape(Shape{std::size_t(P), std::size_t(d)}),
                     core::slice(w_q, 0, h, h + 1).reshape(Shape{std::size_t(d), 4}));
    const Tensor want = ea::hash_vectors(
        q, ea::key_from_tensor(core::slice(keys, 0, h, h + 1).reshape(Shape{2})), {4}, 2);
    for (long r = 0; r < 2; ++r) {
      for (long s = 0; s < P; ++s) {
        CHECK(st[2].value.at({std::size_t(h), std::size_t(r * 16 + s)}) ==
              want.at({std::size_t(r * P + s)}));
      }
    }
  }
}

// =============================================================================================
// Errors
// =============================================================================================

TEST_CASE("predict mode: bad options, an overflowing prompt and a different batch are errors") {
  using ea::LSHSelfAttentionOptions;
  using ea::SelfAttentionOptions;
  auto ctor_error = [](auto make) {
    try {
      make();
    } catch (const core::ValueError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(contains(ctor_error([] { ea::SelfAttention({.chunk_len = 4, .mode = Mode::predict}); }),
                 "SelfAttention: predict mode needs causal = true"));
  CHECK(contains(ctor_error([] { ea::SelfAttention({.causal = true, .mode = Mode::predict}); }),
                 "SelfAttention: predict mode without chunk_len needs predict_mem_len and "
                 "predict_drop_len"));
  CHECK(contains(
      ctor_error([] {
        ea::SelfAttention(
            {.causal = true, .mode = Mode::predict, .predict_mem_len = 4, .predict_drop_len = 5});
      }),
      "SelfAttention: predict mode needs 0 < predict_drop_len <= predict_mem_len, got "
      "predict_mem_len 4 and predict_drop_len 5"));
  CHECK(contains(
      ctor_error([] {
        ea::SelfAttention(
            {.causal = true, .chunk_len = 4, .mode = Mode::predict, .predict_drop_len = 0});
      }),
      "predict_drop_len 0"));
  CHECK(contains(ctor_error([] {
                   ea::SelfAttention(
                       {.causal = true, .masked = true, .chunk_len = 4, .mode = Mode::predict});
                 }),
                 "SelfAttention: predict mode does not support masked = true"));
  CHECK(
      contains(ctor_error([] {
                 ea::LSHSelfAttention(
                     {.causal = true, .chunk_len = 4, .n_chunks_after = 1, .mode = Mode::predict});
               }),
               "LSHSelfAttention: predict mode needs n_chunks_after = 0, got 1"));
  CHECK(contains(ctor_error([] { ea::LSHSelfAttention({.chunk_len = 4, .mode = Mode::predict}); }),
                 "LSHSelfAttention: predict mode needs causal = true"));
  // options are checked when the layer runs in predict mode (here: switched to it)
  auto switched = ea::SelfAttention({.n_heads = 1, .d_qk = 2, .d_v = 2, .chunk_len = 2});
  switched->init({{{1, 2, 2}, DType::f32}});
  switched->set_mode(Mode::predict);
  CHECK(contains(layer_error([&] {
                   (*switched)(Var(randn({1, 1, 2}, 1)));
                 }),
                 "SelfAttention: predict mode needs causal = true"));

  const long d = 4;
  auto pred = ea::SelfAttention({.n_heads = 2,
                                 .d_qk = 2,
                                 .d_v = 2,
                                 .causal = true,
                                 .chunk_len = 2,
                                 .n_chunks_before = 1,
                                 .mode = Mode::predict});
  pred->init({{{2, 1, d}, DType::f32}});  // memory 4, drop 2
  (*pred)(Var(randn({2, 1, d}, 2)));
  CHECK(contains(layer_error([&] {
                   (*pred)(Var(randn({2, 3, d}, 3)));
                 }),
                 "SelfAttention: predict mode: a call of 3 positions (more than predict_drop_len "
                 "= 2, or all predict_mem_len = 4) is a prompt and must start the sequence, but "
                 "the memory already holds 1 positions; the memory would overflow without "
                 "predict_drop_len handling"));
  CHECK(contains(layer_error([&] {
                   (*pred)(Var(randn({3, 1, d}, 4)));
                 }),
                 "SelfAttention: predict mode: this call has batch 3 but the memory was made for "
                 "batch 2"));
  auto prompt = ea::SelfAttention({.n_heads = 2,
                                   .d_qk = 2,
                                   .d_v = 2,
                                   .causal = true,
                                   .chunk_len = 2,
                                   .n_chunks_before = 1,
                                   .mode = Mode::predict});
  prompt->init({{{2, 1, d}, DType::f32}});
  CHECK(contains(layer_error([&] {
                   (*prompt)(Var(randn({2, 3, d}, 5)));
                 }),
                 "SelfAttention: predict mode: 3 new positions at position 0 are more than "
                 "chunk_len 2; they are attended chunk by chunk, which needs a prompt that starts "
                 "the sequence, is longer than predict_drop_len and fills whole chunks (pad it to "
                 "4)"));
  auto lsh = ea::LSHSelfAttention(
      {.n_heads = 2, .d_qk = 2, .d_v = 2, .causal = true, .chunk_len = 2, .mode = Mode::predict});
  lsh->init({{{2, 1, d}, DType::f32}});
  CHECK(contains(layer_error([&] {
                   (*lsh)(Var(randn({1, 1, d}, 6)));
                 }),
                 "LSHSelfAttention: predict mode: this call has batch 1 but the memory was made "
                 "for batch 2"));
}
