// Tests of dense attention through the chunked attention kernel (layers/attention.cpp's
// kernel_attention, layers/chunked_attention.hpp's replace_masked and element_dropout)
// and of core::bernoulli_range, the per-tile draw of its dropout masks.
//
// The layers' outputs and gradients are compared with two independent computations:
// explicit loops in double (Trax's dot_product_attention written out: (q / sqrt(d)) k^T,
// masked logits replaced by -1e9, softmax, keep / keep_prob from core::bernoulli over
// [slices, L, L], times v) and the materialising dot_product_attention (fastmath ops,
// differentiated by the tape). Lengths include ones that are not multiples of the
// kernel's tiles (128 and 256 rows), fully masked rows, batch > 1, heads > 1, dropout in
// train mode. Then float64 gradchecks and the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layer_test_util.hpp"
#include "layers/attention.hpp"
#include "layers/chunked_attention.hpp"
#include "layers/layer_gradcheck.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace fm = minitrax::fastmath;
using base::Layer;
using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using core::key_from_seed;

namespace {

using Vec = std::vector<double>;
// allowed(s, i, j): may query i of slice s attend to key j?
using Allowed = std::function<bool(std::size_t, std::size_t, std::size_t)>;

using testutil::check_gradients;
using testutil::randn;
using testutil::vals;
double max_diff(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
double max_abs(const Vec& a) {
  double m = 0;
  for (double x : a) m = std::max(m, std::abs(x));
  return m;
}

// Trax's dot_product_attention in double, one slice at a time: q, k [G, L, d],
// v [G, L, dv]; keep (optional) [G, L, L] 0/1 multiplies the weights / keep_prob.
Vec attention_naive(const Vec& q, const Vec& k, const Vec& v, std::size_t G, std::size_t L,
                    std::size_t d, std::size_t dv, const Allowed& allowed,
                    const Vec* keep = nullptr, double keep_prob = 1.0) {
  Vec out(G * L * dv, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Vec logit(L);
  for (std::size_t s = 0; s < G; ++s) {
    for (std::size_t i = 0; i < L; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < L; ++j) {
        double dot = 0;
        for (std::size_t t = 0; t < d; ++t) dot += q[(s * L + i) * d + t] * k[(s * L + j) * d + t];
        logit[j] = allowed(s, i, j) ? dot * scale : -1e9;  // replaced, not lowered
        mx = std::max(mx, logit[j]);
      }
      double z = 0;
      for (std::size_t j = 0; j < L; ++j) z += std::exp(logit[j] - mx);
      for (std::size_t j = 0; j < L; ++j) {
        double p = std::exp(logit[j] - mx) / z;
        if (keep != nullptr) p = (*keep)[(s * L + i) * L + j] * p / keep_prob;
        for (std::size_t t = 0; t < dv; ++t)
          out[(s * L + i) * dv + t] += p * v[(s * L + j) * dv + t];
      }
    }
  }
  return out;
}

// [B, L, H * dh] <-> [B * H, L, dh] on plain vectors (the naive side's head split).
Vec split_heads(const Vec& a, std::size_t B, std::size_t L, std::size_t H, std::size_t dh) {
  Vec s(a.size());
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t i = 0; i < L; ++i)
        for (std::size_t t = 0; t < dh; ++t)
          s[((b * H + h) * L + i) * dh + t] = a[(b * L + i) * H * dh + h * dh + t];
  return s;
}
Vec merge_heads(const Vec& a, std::size_t B, std::size_t L, std::size_t H, std::size_t dh) {
  Vec m(a.size());
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t i = 0; i < L; ++i)
        for (std::size_t t = 0; t < dh; ++t)
          m[(b * L + i) * H * dh + h * dh + t] = a[((b * H + h) * L + i) * dh + t];
  return m;
}

// The output and the gradients of sum(f(q, k, v) * r) w.r.t. q, k and v, by the tape.
struct Run {
  Vec out, dq, dk, dv;
};
Run run_with_grads(const std::function<Var(const Var&, const Var&, const Var&)>& f, const Tensor& q,
                   const Tensor& k, const Tensor& v, std::int64_t seed) {
  autodiff::Tape tape;
  const Var qv = tape.watch(q), kv = tape.watch(k), vv = tape.watch(v);
  const Var out = f(qv, kv, vv);
  const Var r(randn(out.shape(), seed, out.dtype()));
  const Var loss = fm::sum(out * r);
  const std::vector<Tensor> g = tape.gradient(loss, {qv, kv, vv});
  return {vals(out), vals(g.at(0)), vals(g.at(1)), vals(g.at(2))};
}

// Gradients agree to float32 rounding, relative to their size.
void check_close(const Run& got, const Run& want, double out_tol, double grad_tol) {
  CHECK(max_diff(got.out, want.out) < out_tol);
  CHECK(max_diff(got.dq, want.dq) < grad_tol * std::max(1.0, max_abs(want.dq)));
  CHECK(max_diff(got.dk, want.dk) < grad_tol * std::max(1.0, max_abs(want.dk)));
  CHECK(max_diff(got.dv, want.dv) < grad_tol * std::max(1.0, max_abs(want.dv)));
}

// Runs a layer in its pure form with a fixed rng.
Var apply(Layer& layer, const Stack& in, core::Key rng) {
  return layer.pure_fn(in, layer.weight_vars(), layer.state(), rng).first.at(0);
}

// The materialising path: PureAttention's head split and dot_product_attention.
Var pure_attention_old(const Var& q, const Var& k, const Var& v, const Var& mask, long heads,
                       double rate, Mode mode, core::Key rng) {
  const auto B = static_cast<long>(q.dim(0)), L = static_cast<long>(q.dim(1)),
             d = static_cast<long>(q.dim(2));
  auto split = [&](const Var& x) {
    return fm::transpose(fm::reshape(x, {B, L, heads, d / heads}), {0, 2, 1, 3});
  };
  const Var o = tl::dot_product_attention(split(q), split(k), split(v), mask, rate, mode, rng);
  return fm::reshape(fm::transpose(o, {0, 2, 1, 3}), {B, L, d});
}

}  // namespace

// ============================================================================================
// bernoulli_range: the elements of one bernoulli draw, range by range
// ============================================================================================

TEST_CASE("bernoulli_range gives the elements offset .. offset + count - 1 of bernoulli") {
  for (std::size_t n : {1UL, 2UL, 7UL, 64UL, 1001UL}) {
    for (double p : {0.0, 0.3, 0.9, 1.0}) {
      CAPTURE(n);
      CAPTURE(p);
      const core::Key key = core::fold_in(key_from_seed(5), static_cast<std::uint32_t>(n));
      const std::vector<std::int32_t> all = core::bernoulli(key, p, {n}).to_vector<std::int32_t>();
      // every range of a few sizes, at every offset: both halves of the counter pairs,
      // and the padded last pair of an odd n
      for (std::size_t count : {1UL, 3UL, n / 2, n}) {
        for (std::size_t offset = 0; offset + count <= n;
             offset += std::max<std::size_t>(1, n / 13)) {
          std::vector<std::int32_t> got(count, -1);
          core::bernoulli_range(key, p, n, offset, count, got.data());
          CHECK(std::equal(got.begin(), got.end(), all.begin() + static_cast<long>(offset)));
        }
      }
    }
  }
  // A multi-axis draw is the flat draw: row 2 of [6, 8].
  const core::Key key = key_from_seed(9);
  const std::vector<std::int32_t> grid =
      core::bernoulli(key, 0.5, {6, 8}).to_vector<std::int32_t>();
  std::vector<std::int32_t> row(8);
  core::bernoulli_range(key, 0.5, 48, 16, 8, row.data());
  CHECK(std::equal(row.begin(), row.end(), grid.begin() + 16));
  // count 0 checks the arguments and writes nothing
  CHECK_NOTHROW(core::bernoulli_range(key, 0.5, 48, 48, 0, nullptr));
}

TEST_CASE("bernoulli_range: errors say what is allowed") {
  const core::Key key = key_from_seed(0);
  std::int32_t out[4];
  CHECK_THROWS_WITH_AS(core::bernoulli_range(key, 1.5, 10, 0, 4, out),
                       "bernoulli_range: p must be in [0, 1], got 1.5", ValueError);
  CHECK_THROWS_WITH_AS(core::bernoulli_range(key, 0.5, 10, 8, 4, out),
                       "bernoulli_range: elements [8, 8 + 4) are not within the 10 elements of "
                       "the draw",
                       ValueError);
  CHECK_THROWS_WITH_AS(core::bernoulli_range(key, 0.5, std::size_t{1} << 32, 0, 4, out),
                       "bernoulli: 4294967296 random 32-bit words requested in one draw; at most "
                       "4294967294 are supported",
                       ValueError);
}

// ============================================================================================
// DotProductCausalAttention (CausalAttention's core) through the kernel
// ============================================================================================

TEST_CASE("DotProductCausalAttention through the kernel = the loops and dot_product_attention") {
  const auto causal = [](std::size_t, std::size_t i, std::size_t j) { return j <= i; };
  // 129, 300: not multiples of the 128-row causal tiles; 1100: past 1024 rows (256-row tiles)
  for (std::size_t L : {1UL, 5UL, 37UL, 129UL, 300UL, 1100UL}) {
    for (double rate : {0.0, 0.3}) {
      CAPTURE(L);
      CAPTURE(rate);
      const std::size_t G = L > 300 ? 2 : 6, d = 8, dv = 5;  // G = batch * heads
      const Tensor q = randn({G, L, d}, 1), k = randn({G, L, d}, 2), v = randn({G, L, dv}, 3);
      const core::Key rng = key_from_seed(static_cast<std::int64_t>(40 + L));
      auto layer = tl::DotProductCausalAttention(rate, Mode::train);
      layer->init({{q.shape(), DType::f32}, {k.shape(), DType::f32}, {v.shape(), DType::f32}});
      const Run got = run_with_grads(
          [&](const Var& a, const Var& b, const Var& c) {
            return apply(*layer, {a, b, c}, rng);
          },
          q, k, v, 7);
      const Run old = run_with_grads(
          [&](const Var& a, const Var& b, const Var& c) {
            return tl::dot_product_attention(a, b, c, Var(tl::causal_mask(L, L)), rate, Mode::train,
                                             rng);
          },
          q, k, v, 7);
      const Vec keep = vals(core::bernoulli(rng, 1.0 - rate, {G, L, L}));
      const Vec want = attention_naive(vals(q), vals(k), vals(v), G, L, d, dv, causal,
                                       rate > 0 ? &keep : nullptr, 1.0 - rate);
      CHECK(max_diff(got.out, want) < 1e-5);
      check_close(got, old, 1e-5, 1e-5);
      // eval mode: no dropout, whatever the rate
      layer->set_mode(Mode::eval);
      const Vec plain = attention_naive(vals(q), vals(k), vals(v), G, L, d, dv, causal);
      CHECK(max_diff(vals(apply(*layer, {Var(q), Var(k), Var(v)}, rng)), plain) < 1e-5);
    }
  }
}

// ============================================================================================
// PureAttention (Attention's core) with a key-padding mask through the kernel
// ============================================================================================

TEST_CASE("PureAttention with a padding mask through the kernel, fully masked rows included") {
  // 300 and 600: one tile of 300 rows, three of 256 (the last one partial)
  for (std::size_t L : {1UL, 6UL, 37UL, 300UL, 600UL}) {
    for (double rate : {0.0, 0.25}) {
      for (bool shared : {false, true}) {
        CAPTURE(L);
        CAPTURE(rate);
        CAPTURE(shared);
        const std::size_t B = shared ? 2 : 3, H = 2, dh = 4, d = H * dh;
        const Tensor q = randn({B, L, d}, 11), k = randn({B, L, d}, 12), v = randn({B, L, d}, 13);
        // example 0: about a third of its keys masked; example 1: every key masked
        // (uniform weights); example 2: none. shared: one row [1, 1, 1, L] for all.
        std::vector<std::int32_t> m(shared ? L : B * L, 1);
        const Vec u = vals(core::uniform(key_from_seed(static_cast<std::int64_t>(L)), {L}));
        for (std::size_t j = 0; j < L; ++j) m[j] = u[j] < 0.35 ? 0 : 1;
        if (!shared)
          std::fill(m.begin() + static_cast<long>(L), m.begin() + 2 * static_cast<long>(L), 0);
        const Tensor mask =
            Tensor::from<std::int32_t>(shared ? Shape{1, 1, 1, L} : Shape{B, 1, 1, L}, m);
        const Allowed allowed = [&](std::size_t s, std::size_t, std::size_t j) {
          return m[(shared ? 0 : s / H) * L + j] != 0;
        };
        const core::Key rng = key_from_seed(static_cast<std::int64_t>(70 + L));
        auto layer = tl::PureAttention(static_cast<long>(H), rate, Mode::train);
        layer->init({{q.shape(), DType::f32},
                     {k.shape(), DType::f32},
                     {v.shape(), DType::f32},
                     {mask.shape(), DType::i32}});
        const Run got = run_with_grads(
            [&](const Var& a, const Var& b, const Var& c) {
              return apply(*layer, {a, b, c, Var(mask)}, rng);
            },
            q, k, v, 17);
        const Run old = run_with_grads(
            [&](const Var& a, const Var& b, const Var& c) {
              return pure_attention_old(a, b, c, Var(mask), static_cast<long>(H), rate, Mode::train,
                                        rng);
            },
            q, k, v, 17);
        const Vec keep = vals(core::bernoulli(rng, 1.0 - rate, {B, H, L, L}));
        const Vec want = merge_heads(
            attention_naive(split_heads(vals(q), B, L, H, dh), split_heads(vals(k), B, L, H, dh),
                            split_heads(vals(v), B, L, H, dh), B * H, L, dh, dh, allowed,
                            rate > 0 ? &keep : nullptr, 1.0 - rate),
            B, L, H, dh);
        CHECK(max_diff(got.out, want) < 1e-5);
        check_close(got, old, 1e-5, 1e-5);
        if (!shared && L > 1) {
          // the fully masked example: no gradient reaches its queries or keys
          const std::size_t row = L * d;
          CHECK(max_abs(Vec(got.dq.begin() + static_cast<long>(row),
                            got.dq.begin() + 2 * static_cast<long>(row))) == 0.0);
          CHECK(max_abs(Vec(got.dk.begin() + static_cast<long>(row),
                            got.dk.begin() + 2 * static_cast<long>(row))) == 0.0);
          CHECK(max_abs(Vec(got.dv.begin() + static_cast<long>(row),
                            got.dv.begin() + 2 * static_cast<long>(row))) > 0.0);
        }
      }
    }
  }
}

TEST_CASE("PureAttention: masks of other forms keep the materialising path, same results") {
  // [B, 1, L, L] varies over queries: dot_product_attention itself.
  const std::size_t B = 2, L = 7, H = 2, d = 6;
  const Tensor q = randn({B, L, d}, 21), k = randn({B, L, d}, 22), v = randn({B, L, d}, 23);
  std::vector<std::int32_t> m(B * L * L);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = (i * 7) % 5 != 0 ? 1 : 0;
  const Tensor mask = Tensor::from<std::int32_t>({B, 1, L, L}, m);
  auto layer = tl::PureAttention(static_cast<long>(H), 0.0, Mode::eval);
  layer->init({{q.shape(), DType::f32},
               {k.shape(), DType::f32},
               {v.shape(), DType::f32},
               {mask.shape(), DType::i32}});
  const core::Key rng = key_from_seed(1);
  const Vec got = vals(apply(*layer, {Var(q), Var(k), Var(v), Var(mask)}, rng));
  const Allowed allowed = [&](std::size_t s, std::size_t i, std::size_t j) {
    return m[((s / H) * L + i) * L + j] != 0;
  };
  const std::size_t dh = d / H;
  const Vec want = merge_heads(
      attention_naive(split_heads(vals(q), B, L, H, dh), split_heads(vals(k), B, L, H, dh),
                      split_heads(vals(v), B, L, H, dh), B * H, L, dh, dh, allowed),
      B, L, H, dh);
  CHECK(max_diff(got, want) < 1e-5);
}

// ============================================================================================
// float64 gradchecks of the kernel path
// ============================================================================================

TEST_CASE("gradcheck (float64): dense attention through the kernel") {
  SUBCASE("DotProductCausalAttention, 2 tiles of 128 rows and a partial one, dropout 0.3") {
    auto dpa = tl::DotProductCausalAttention(0.3, Mode::train);
    const Tensor q = randn({2, 131, 2}, 31, DType::f64), k = randn({2, 131, 2}, 32, DType::f64),
                 v = randn({2, 131, 3}, 33, DType::f64);
    dpa->init({{q.shape(), DType::f64}, {k.shape(), DType::f64}, {v.shape(), DType::f64}});
    check_gradients(*dpa, {q, k, v}, key_from_seed(34));
  }
  SUBCASE("PureAttention, padding with a fully masked example, dropout 0.2") {
    auto pa = tl::PureAttention(2, 0.2, Mode::train);
    const Tensor mask =
        Tensor::from<std::int32_t>({3, 1, 1, 5}, {1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1});
    const Tensor q = randn({3, 5, 4}, 35, DType::f64), k = randn({3, 5, 4}, 36, DType::f64),
                 v = randn({3, 5, 4}, 37, DType::f64);
    pa->init({{q.shape(), DType::f64},
              {k.shape(), DType::f64},
              {v.shape(), DType::f64},
              {mask.shape(), DType::i32}});
    check_gradients(*pa, {q, k, v, mask}, key_from_seed(38));
  }
  SUBCASE("Attention (weights too), padding mask, dropout 0.1") {
    auto att = tl::Attention(8, 2, 0.1, Mode::train);
    const Tensor x = randn({2, 6, 8}, 39, DType::f64);
    const Tensor mask =
        Tensor::from<std::int32_t>({2, 1, 1, 6}, {1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0});
    att->init({{x.shape(), DType::f64}, {mask.shape(), DType::i32}});
    check_gradients(*att, {x, mask}, key_from_seed(40));
  }
  SUBCASE("CausalAttention (weights too), dropout 0.1") {
    auto att = tl::CausalAttention(8, 2, 0.1, Mode::train);
    const Tensor x = randn({2, 9, 8}, 41, DType::f64);
    att->init({{x.shape(), DType::f64}});
    check_gradients(*att, {x}, key_from_seed(42));
  }
}

// ============================================================================================
// Errors
// ============================================================================================

TEST_CASE("dense attention through the kernel: errors") {
  SUBCASE("a dropout mask of 2^32 or more elements is refused, as bernoulli refuses it") {
    // [1, 65536, 1]: the [1, L, L] mask would be 2^32 draws (the materialising path would
    // first have needed 16 GiB of scores).
    auto dpa = tl::DotProductCausalAttention(0.1, Mode::train);
    const Tensor x = Tensor::zeros({1, 65536, 1}, DType::f32);
    dpa->init({{x.shape(), DType::f32}, {x.shape(), DType::f32}, {x.shape(), DType::f32}});
    CHECK_THROWS_WITH_AS(apply(*dpa, {Var(x), Var(x), Var(x)}, key_from_seed(0)),
                         doctest::Contains("bernoulli: 4294967296 random 32-bit words requested "
                                           "in one draw; at most 4294967294 are supported"),
                         base::LayerError);  // the layer's frame around the ValueError
  }
  SUBCASE("per-element dropout needs the whole sequence as one chunk") {
    tl::kernels::ChunkedAttentionSpec spec;
    spec.chunk = 4;
    spec.element_dropout = 0.5;
    const Var x(Tensor::zeros({1, 8, 2}, DType::f32));
    CHECK_THROWS_WITH_AS(tl::kernels::chunked_attention(x, x, x, spec),
                         "chunked_attention: per-element dropout needs one chunk of the whole "
                         "sequence (8 rows) and no neighbours, got chunk 4, 0 before, 0 after",
                         ValueError);
  }
}
