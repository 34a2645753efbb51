// Tests of dense multi-head attention (layers/attention.hpp).
//
// Values are checked against an independent computation: explicit loops over batch,
// head, query and key in double, with their own projections, softmax and masks, fed
// with the layers' own weights. Then shapes (output_signature), float64 gradchecks
// over inputs and weights, attention dropout (train mode only, replayed by the rng),
// the causal property, predict mode against eval mode, structure and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/attention.hpp"
#include "layers/combinators.hpp"
#include "layers/layer_gradcheck.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
using base::Layer;
using base::LayerPtr;
using base::Mode;
using base::ShapeDtype;
using base::Signature;
using base::Stack;
using core::key_from_seed;

namespace {
using minitrax::testutil::contains;
using minitrax::testutil::error_message;
using minitrax::testutil::layer_error;

using Vec = std::vector<double>;
// allowed(n, i, j): may query i of attention batch n look at key j?
using Allowed = std::function<bool(std::size_t, std::size_t, std::size_t)>;

Tensor randn(const Shape& shape, std::int64_t seed, DType dtype = DType::f32) {
  return core::normal(key_from_seed(seed), shape, dtype);
}

Vec vals(const Tensor& t) {
  return t.to_vector<double>();
}
Vec vals(const Var& v) {
  return v.value().to_vector<double>();
}

double max_diff(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// y[r, :] = x[r, :] w + b, for `rows` rows.
Vec dense_naive(const Vec& x, std::size_t rows, const Tensor& w, const Tensor& b) {
  const std::size_t di = w.dim(0), dout = w.dim(1);
  const Vec W = vals(w), B = vals(b);
  Vec y(rows * dout);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t o = 0; o < dout; ++o) {
      double s = B[o];
      for (std::size_t i = 0; i < di; ++i) s += x[r * di + i] * W[i * dout + o];
      y[r * dout + o] = s;
    }
  }
  return y;
}

// Scaled dot-product attention with explicit loops: q, k [N, L?, dh], v [N, Lk, dv].
// Masked logits are -1e9; keep (optional) [N, Lq, Lk] multiplies the weights / keep_prob.
Vec sdpa_naive(const Vec& q, const Vec& k, const Vec& v, std::size_t N, std::size_t Lq,
               std::size_t Lk, std::size_t dh, std::size_t dv, const Allowed& allowed,
               const Vec* keep = nullptr, double keep_prob = 1.0) {
  Vec out(N * Lq * dv, 0.0);
  for (std::size_t n = 0; n < N; ++n) {
    for (std::size_t i = 0; i < Lq; ++i) {
      Vec logit(Lk);
      double mx = -1e300;
      for (std::size_t j = 0; j < Lk; ++j) {
        double s = 0;
        for (std::size_t t = 0; t < dh; ++t)
          s += q[(n * Lq + i) * dh + t] * k[(n * Lk + j) * dh + t];
        logit[j] = allowed(n, i, j) ? s / std::sqrt(double(dh)) : -1e9;
        mx = std::max(mx, logit[j]);
      }
      double z = 0;
      for (std::size_t j = 0; j < Lk; ++j) z += std::exp(logit[j] - mx);
      for (std::size_t j = 0; j < Lk; ++j) {
        double p = std::exp(logit[j] - mx) / z;
        if (keep) p = (*keep)[(n * Lq + i) * Lk + j] * p / keep_prob;
        for (std::size_t t = 0; t < dv; ++t)
          out[(n * Lq + i) * dv + t] += p * v[(n * Lk + j) * dv + t];
      }
    }
  }
  return out;
}

// Multi-head self-attention of x [B, L, d_in] with weights (wq, bq, wk, bk, wv, bv, wo, bo)
// in flat_weights order; allowed(b, i, j) per batch element (the same for every head).
Vec mha_naive(const Tensor& x, const std::vector<base::NamedTensor>& w, std::size_t H,
              const Allowed& allowed) {
  REQUIRE(w.size() == 8);
  const std::size_t B = x.dim(0), L = x.dim(1), d = w[0].value.dim(1), dh = d / H;
  const Vec xv = vals(x);
  const Vec Q = dense_naive(xv, B * L, w[0].value, w[1].value);
  const Vec K = dense_naive(xv, B * L, w[2].value, w[3].value);
  const Vec V = dense_naive(xv, B * L, w[4].value, w[5].value);
  // [B, L, H*dh] -> [B*H, L, dh]
  auto split = [&](const Vec& a) {
    Vec s(a.size());
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t i = 0; i < L; ++i)
          for (std::size_t t = 0; t < dh; ++t)
            s[((b * H + h) * L + i) * dh + t] = a[(b * L + i) * d + h * dh + t];
    return s;
  };
  const Allowed per_head = [&](std::size_t n, std::size_t i, std::size_t j) {
    return allowed(n / H, i, j);
  };
  const Vec o = sdpa_naive(split(Q), split(K), split(V), B * H, L, L, dh, dh, per_head);
  Vec merged(B * L * d);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t i = 0; i < L; ++i)
        for (std::size_t t = 0; t < dh; ++t)
          merged[(b * L + i) * d + h * dh + t] = o[((b * H + h) * L + i) * dh + t];
  return dense_naive(merged, B * L, w[6].value, w[7].value);
}

// A padding mask [2, 1, 1, 5]: batch 0 sees everything, batch 1 its first three keys.
Tensor pad_mask() {
  return Tensor::from<std::int32_t>({2, 1, 1, 5}, {1, 1, 1, 1, 1, 1, 1, 1, 0, 0});
}
bool pad_allowed(std::size_t b, std::size_t, std::size_t j) {
  return b == 0 || j < 3;
}
bool causal_allowed(std::size_t, std::size_t i, std::size_t j) {
  return j <= i;
}

void check_gradients(Layer& layer, const std::vector<Tensor>& inputs, Key rng = key_from_seed(0)) {
  base::cast_layer(layer, DType::f64);
  const auto r = base::gradcheck_layer(layer, inputs, rng);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.n_checked > 0);
}

}  // namespace

// ============================================================================================
// Values
// ============================================================================================

TEST_CASE("Attention: (x, mask) -> (y, mask), values against naive loops with a padding mask") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(core::dtype_name(dt));
    auto att = tl::Attention(8, 2);
    CHECK(att->n_in() == 2);
    CHECK(att->n_out() == 2);
    const Tensor x = randn({2, 5, 8}, 1, dt);
    const Tensor mask = pad_mask();
    att->init({{x.shape(), dt}, {mask.shape(), DType::i32}}, key_from_seed(3));
    const Signature predicted =
        att->output_signature({{x.shape(), dt}, {mask.shape(), DType::i32}});
    Stack ys = (*att)(Stack{Var(x), Var(mask)});
    REQUIRE(ys.size() == 2);
    CHECK(predicted == base::signature_of(ys));
    CHECK(ys[0].shape() == Shape{2, 5, 8});
    CHECK(ys[0].dtype() == dt);
    CHECK(core::equal(ys[1].value(), mask));  // the mask passes through
    const Vec want = mha_naive(x, att->flat_weights(), 2, pad_allowed);
    CHECK(max_diff(vals(ys[0]), want) < (dt == DType::f64 ? 1e-12 : 2e-5));
  }
}

TEST_CASE("Attention: a mask per query [B, 1, Lq, Lk], float mask, input width != d_feature") {
  // d_in = 6 -> d_feature 8: the projections change the width, as Trax's Dense does.
  auto att = tl::Attention(8, 4);
  const Tensor x = randn({2, 5, 6}, 2, DType::f64);
  std::vector<double> m(2 * 5 * 5);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t i = 0; i < 5; ++i)
      for (std::size_t j = 0; j < 5; ++j) m[(b * 5 + i) * 5 + j] = (i * 3 + j + b) % 4 != 0;
  // query 2 of batch 0 sees nothing: every logit is -1e9, so it attends uniformly
  for (std::size_t j = 0; j < 5; ++j) m[2 * 5 + j] = 0;
  const Tensor mask = Tensor::from<double>({2, 1, 5, 5}, m);
  att->init({{x.shape(), DType::f64}, {mask.shape(), DType::f64}});
  Stack ys = (*att)(Stack{Var(x), Var(mask)});
  const Vec want = mha_naive(
      x, att->flat_weights(), 4,
      [&](std::size_t b, std::size_t i, std::size_t j) { return m[(b * 5 + i) * 5 + j] != 0; });
  CHECK(max_diff(vals(ys[0]), want) < 1e-12);
}

TEST_CASE("CausalAttention: x -> y, values against naive loops with a causal mask") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(core::dtype_name(dt));
    auto att = tl::CausalAttention(8, 2);
    CHECK(att->n_in() == 1);
    CHECK(att->n_out() == 1);
    const Tensor x = randn({2, 5, 8}, 4, dt);
    att->init({{x.shape(), dt}}, key_from_seed(5));
    const Signature predicted = att->output_signature({{x.shape(), dt}});
    Var y = (*att)(Var(x));
    CHECK(predicted == Signature{{y.shape(), y.dtype()}});
    CHECK(y.shape() == Shape{2, 5, 8});
    const Vec want = mha_naive(x, att->flat_weights(), 2, causal_allowed);
    CHECK(max_diff(vals(y), want) < (dt == DType::f64 ? 1e-12 : 2e-5));
  }
  // one head, and as many heads as features
  for (long h : {1L, 8L}) {
    auto att = tl::CausalAttention(8, h);
    const Tensor x = randn({2, 5, 8}, 6, DType::f64);
    att->init({{x.shape(), DType::f64}});
    CHECK(max_diff(vals((*att)(Var(x))),
                   mha_naive(x, att->flat_weights(), std::size_t(h), causal_allowed)) < 1e-12);
  }
}

TEST_CASE("dot_product_attention and causal_mask") {
  const Tensor q = randn({3, 4, 2}, 7, DType::f64), k = randn({3, 6, 2}, 8, DType::f64),
               v = randn({3, 6, 5}, 9, DType::f64);
  // no mask; then the causal mask of 4 queries at the end of 6 keys
  Var out = tl::dot_product_attention(q, k, v, Var(), 0.0, Mode::train, key_from_seed(0));
  CHECK(out.shape() == Shape{3, 4, 5});
  auto all = [](std::size_t, std::size_t, std::size_t) { return true; };
  CHECK(max_diff(vals(out), sdpa_naive(vals(q), vals(k), vals(v), 3, 4, 6, 2, 5, all)) < 1e-12);
  const Tensor cm = tl::causal_mask(4, 6);
  CHECK(cm.shape() == Shape{1, 4, 6});
  CHECK(cm.dtype() == DType::i32);
  CHECK(vals(cm) == Vec{1, 1, 1, 0, 0, 0,  //
                        1, 1, 1, 1, 0, 0,  //
                        1, 1, 1, 1, 1, 0,  //
                        1, 1, 1, 1, 1, 1});
  Var masked = tl::dot_product_attention(q, k, v, Var(cm), 0.0, Mode::eval, key_from_seed(0));
  auto late = [](std::size_t, std::size_t i, std::size_t j) { return j <= i + 2; };
  CHECK(max_diff(vals(masked), sdpa_naive(vals(q), vals(k), vals(v), 3, 4, 6, 2, 5, late)) < 1e-12);
  CHECK(vals(tl::causal_mask(3, 3)) == Vec{1, 0, 0, 1, 1, 0, 1, 1, 1});
  // errors say what was expected and what was got
  CHECK(contains(error_message([&] {
                   tl::dot_product_attention(q, randn({3, 6, 3}, 1, DType::f64), v, Var(), 0.0,
                                             Mode::eval, key_from_seed(0));
                 }),
                 "expected q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv] with the same leading "
                 "axes, got q [3, 4, 2], k [3, 6, 3], v [3, 6, 5]"));
  CHECK(contains(error_message([&] {
                   tl::dot_product_attention(q, k, v, Var(tl::causal_mask(6, 6)), 0.0, Mode::eval,
                                             key_from_seed(0));
                 }),
                 "expected a mask that broadcasts to the attention logits [..., Lq, Lk] = "
                 "[3, 4, 6]"));
  CHECK(contains(error_message([&] {
                   tl::dot_product_attention(q, k.astype(DType::f32), v, Var(), 0.0, Mode::eval,
                                             key_from_seed(0));
                 }),
                 "q, k and v must have one dtype, got q float64, k float32, v float64"));
  CHECK_THROWS_AS(tl::causal_mask(4, 3), ValueError);
}

TEST_CASE("PaddingMask: ids [B, L] -> int32 [B, 1, 1, L], 1 where id != pad") {
  auto pm = tl::PaddingMask();
  CHECK(pm->repr() == "PaddingMask(0)");
  const Tensor ids = Tensor::from<std::int32_t>({2, 3}, {5, 0, 2, 0, 0, 7});
  Var m = (*pm)(Var(ids));
  CHECK(m.shape() == Shape{2, 1, 1, 3});
  CHECK(m.dtype() == DType::i32);
  CHECK(vals(m) == Vec{1, 0, 1, 0, 0, 1});
  CHECK(pm->output_signature({{{2, 3}, DType::i32}}) == Signature{{{2, 1, 1, 3}, DType::i32}});
  CHECK(vals((*tl::PaddingMask(7))(Var(ids))) == Vec{1, 1, 1, 1, 1, 0});
  CHECK(layer_error([&] {
          (*pm)(Var(Tensor::zeros({2, 3, 1}, DType::i32)));
        }) == "expected ids [batch, length] of rank 2, got [2, 3, 1]");
}

TEST_CASE("SplitIntoHeads and MergeHeads: Trax's layouts, inverse of each other") {
  auto split = tl::SplitIntoHeads(2);
  auto merge = tl::MergeHeads(2);
  std::vector<double> v(2 * 3 * 4);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  const Tensor x = Tensor::from<double>({2, 3, 4}, v);
  Var s = (*split)(Var(x));
  CHECK(s.shape() == Shape{4, 3, 2});
  // head h of batch b is x[b, :, 2h:2h+2]
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t h = 0; h < 2; ++h)
      for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t t = 0; t < 2; ++t)
          CHECK(s.value().at({b * 2 + h, i, t}) == x.at({b, i, h * 2 + t}));
  CHECK(core::equal((*merge)(s).value(), x));
  CHECK(split->output_signature({{{2, 3, 4}, DType::f64}}) == Signature{{{4, 3, 2}, DType::f64}});
  CHECK(merge->output_signature({{{4, 3, 2}, DType::f32}}) == Signature{{{2, 3, 4}, DType::f32}});
  CHECK(layer_error([&] {
          (*split)(Var(Tensor::zeros({2, 3, 5})));
        }) ==
        "expected an input [batch, length, d] with d a multiple of n_heads (2), got [2, 3, 5]");
  CHECK(layer_error([&] {
          (*merge)(Var(Tensor::zeros({3, 3, 5})));
        }) ==
        "expected an input [batch * n_heads, length, d_head] with n_heads = 2, got [3, 3, 5]");
}

// ============================================================================================
// Gradients
// ============================================================================================

TEST_CASE("gradcheck: Attention and CausalAttention over inputs and weights (float64)") {
  const Tensor x = randn({2, 5, 8}, 10, DType::f64);
  SUBCASE("Attention, padding mask") {
    auto att = tl::Attention(8, 2);
    att->init({{x.shape(), DType::f64}, {{2, 1, 1, 5}, DType::i32}});
    check_gradients(*att, {x, pad_mask()});
  }
  SUBCASE("Attention, attention dropout 0.3 with a fixed rng") {
    auto att = tl::Attention(8, 2, 0.3);
    att->init({{x.shape(), DType::f64}, {{2, 1, 1, 5}, DType::i32}});
    check_gradients(*att, {x, pad_mask()}, key_from_seed(11));
  }
  SUBCASE("CausalAttention") {
    auto att = tl::CausalAttention(8, 2);
    att->init({{x.shape(), DType::f64}});
    check_gradients(*att, {x});
  }
  SUBCASE("CausalAttention, attention dropout 0.3") {
    auto att = tl::CausalAttention(8, 2, 0.3);
    att->init({{x.shape(), DType::f64}});
    check_gradients(*att, {x}, key_from_seed(12));
  }
  SUBCASE("PureAttention on its own (q, k, v all checked)") {
    auto pa = tl::PureAttention(2);
    pa->init({{{2, 5, 8}, DType::f64},
              {{2, 5, 8}, DType::f64},
              {{2, 5, 8}, DType::f64},
              {{2, 1, 1, 5}, DType::i32}});
    check_gradients(
        *pa, {x, randn({2, 5, 8}, 13, DType::f64), randn({2, 5, 8}, 14, DType::f64), pad_mask()});
  }
}

// ============================================================================================
// Dropout on the attention weights
// ============================================================================================

TEST_CASE("attention dropout: bernoulli(rng, 1 - rate) on the weights, train mode only") {
  // DotProductCausalAttention sees the rng given to pure_fn as is: the mask can be rebuilt.
  const double rate = 0.4, keep = 1.0 - rate;
  auto dpa = tl::DotProductCausalAttention(rate);
  const Tensor q = randn({4, 5, 2}, 20, DType::f64), k = randn({4, 5, 2}, 21, DType::f64),
               v = randn({4, 5, 3}, 22, DType::f64);
  const Signature sig{{q.shape(), DType::f64}, {k.shape(), DType::f64}, {v.shape(), DType::f64}};
  dpa->init(sig);
  CHECK(dpa->output_signature(sig) == Signature{{{4, 5, 3}, DType::f64}});
  const Key rng = key_from_seed(23);
  auto run = [&](Key key) {
    return vals(dpa->pure_fn({q, k, v}, dpa->weight_vars(), dpa->state(), key).first[0]);
  };
  const Vec keep_mask = vals(core::bernoulli(rng, keep, {4, 5, 5}));
  const Vec want =
      sdpa_naive(vals(q), vals(k), vals(v), 4, 5, 5, 2, 3, causal_allowed, &keep_mask, keep);
  CHECK(max_diff(run(rng), want) < 1e-12);
  CHECK(run(rng) == run(rng));                // the same rng replays the same mask
  CHECK(run(rng) != run(key_from_seed(24)));  // another rng, another mask
  const Vec plain = sdpa_naive(vals(q), vals(k), vals(v), 4, 5, 5, 2, 3, causal_allowed);
  CHECK(max_diff(run(rng), plain) > 1e-3);
  // eval and predict: no dropout, whatever the rng
  dpa->set_mode(Mode::eval);
  CHECK(max_diff(run(rng), plain) < 1e-12);
  CHECK(run(key_from_seed(24)) == run(rng));
}

TEST_CASE("attention dropout in the composite layers: same rng, same output; eval = no dropout") {
  const Tensor x = randn({2, 5, 8}, 30);
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    auto make = [&](double rate, Mode mode) {
      return causal ? tl::CausalAttention(8, 2, rate, mode) : tl::Attention(8, 2, rate, mode);
    };
    auto with = make(0.5, Mode::train), without = make(0.0, Mode::train);
    const Signature sig = causal ? Signature{{x.shape(), DType::f32}}
                                 : Signature{{x.shape(), DType::f32}, {{2, 1, 1, 5}, DType::i32}};
    with->init(sig, key_from_seed(1));
    without->init(sig, key_from_seed(1));
    CHECK(vals(with->weights().flatten()[0]) == vals(without->weights().flatten()[0]));
    const Stack in = causal ? Stack{Var(x)} : Stack{Var(x), Var(pad_mask())};
    auto run = [&](Layer& l, Key key) {
      return vals(l.pure_fn(in, l.weight_vars(), l.state(), key).first[0]);
    };
    const Vec ref = run(*without, key_from_seed(2));
    CHECK(run(*with, key_from_seed(2)) == run(*with, key_from_seed(2)));
    CHECK(run(*with, key_from_seed(2)) != run(*with, key_from_seed(3)));
    CHECK(max_diff(run(*with, key_from_seed(2)), ref) > 1e-3);
    with->set_mode(Mode::eval);
    CHECK(max_diff(run(*with, key_from_seed(2)), ref) < 1e-6);
    auto built_eval = make(0.5, Mode::eval);
    built_eval->init(sig, key_from_seed(1));
    CHECK(built_eval->mode() == Mode::eval);
    CHECK(max_diff(run(*built_eval, key_from_seed(4)), ref) < 1e-6);
  }
}

// ============================================================================================
// Causality and predict mode
// ============================================================================================

TEST_CASE("CausalAttention: changing a token changes no earlier output") {
  auto att = tl::CausalAttention(8, 2);
  const Tensor x = randn({2, 5, 8}, 40);
  att->init({{x.shape(), DType::f32}});
  const Vec y = vals((*att)(Var(x)));
  for (std::size_t t = 0; t < 5; ++t) {
    CAPTURE(t);
    Vec xv = vals(x);
    for (std::size_t b = 0; b < 2; ++b)
      for (std::size_t j = 0; j < 8; ++j) xv[(b * 5 + t) * 8 + j] += 3.0;
    const Vec y2 = vals((*att)(Var(Tensor::from<double>({2, 5, 8}, xv).astype(DType::f32))));
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t i = 0; i < 5; ++i) {
        double d = 0;
        for (std::size_t j = 0; j < 8; ++j) {
          d = std::max(d, std::abs(y[(b * 5 + i) * 8 + j] - y2[(b * 5 + i) * 8 + j]));
        }
        if (i < t) {
          CHECK(d < 1e-6);
        } else {
          CHECK(d > 1e-4);
        }
      }
    }
  }
}

TEST_CASE("CausalAttention predict mode: cached keys and values give the eval-mode outputs") {
  const Tensor x = randn({2, 6, 8}, 50);
  auto eval = tl::CausalAttention(8, 2, 0.1, Mode::eval);
  eval->init({{x.shape(), DType::f32}});
  const Vec want = vals((*eval)(Var(x)));
  auto pred = tl::CausalAttention(8, 2, 0.1, Mode::predict, /*max_len=*/6);
  pred->init({{{2, 1, 8}, DType::f32}});
  pred->set_weights(eval->weights());
  const base::State fresh = pred->state();
  const auto st = pred->flat_state();
  REQUIRE(st.size() == 3);  // keys, values, index
  CHECK(st[0].value.shape() == Shape{4, 6, 4});
  CHECK(st[1].value.shape() == Shape{4, 6, 4});
  CHECK(st[2].value.dtype() == DType::i32);
  CHECK(st[2].value.item<std::int32_t>() == 0);
  auto rows = [](const Vec& y, std::size_t from, std::size_t to) {  // y[:, from:to] of [2, 6, 8]
    Vec r;
    for (std::size_t b = 0; b < 2; ++b)
      for (std::size_t i = from; i < to; ++i)
        for (std::size_t j = 0; j < 8; ++j) r.push_back(y[(b * 6 + i) * 8 + j]);
    return r;
  };
  SUBCASE("one position at a time") {
    for (std::size_t t = 0; t < 6; ++t) {
      CAPTURE(t);
      Var y = (*pred)(Var(core::slice(x, 1, long(t), long(t + 1))));
      CHECK(y.shape() == Shape{2, 1, 8});
      CHECK(max_diff(vals(y), rows(want, t, t + 1)) < 2e-5);
      CHECK(pred->flat_state()[2].value.item<std::int32_t>() == int(t + 1));
    }
    // the cache is full
    CHECK(contains(layer_error([&] { (*pred)(Var(core::slice(x, 1, 0, 1))); }),
                   "predict mode: the cache holds 6 of 6 positions; 1 more would pass max_len"));
  }
  SUBCASE("a prompt of three at once, then one by one: causal within the prompt") {
    Var y = (*pred)(Var(core::slice(x, 1, 0, 3)));
    CHECK(max_diff(vals(y), rows(want, 0, 3)) < 2e-5);
    for (std::size_t t = 3; t < 6; ++t) {
      CHECK(max_diff(vals((*pred)(Var(core::slice(x, 1, long(t), long(t + 1))))),
                     rows(want, t, t + 1)) < 2e-5);
    }
  }
  SUBCASE("pure_fn leaves the layer's state alone; a mismatched state is an error") {
    auto [ys, s1] =
        pred->pure_fn({Var(core::slice(x, 1, 0, 2))}, pred->weight_vars(), fresh, key_from_seed(0));
    CHECK(max_diff(vals(ys[0]), rows(want, 0, 2)) < 2e-5);
    CHECK(pred->flat_state()[2].value.item<std::int32_t>() == 0);
    REQUIRE(s1.size() == 4);  // mirrors [Branch, DotProductCausalAttention, MergeHeads, Dense]
    REQUIRE(s1[1].size() == 3);
    CHECK(s1[1][2].leaf().item<std::int32_t>() == 2);
    CHECK(contains(layer_error([&] {
                     (*pred)(Var(Tensor::zeros({3, 1, 8})));
                   }),
                   "predict mode: the state must hold keys [6, 6, 4], values [6, 6, 4]"));
  }
  SUBCASE("initialised in eval mode, switched to predict: starts an empty cache") {
    auto late = tl::CausalAttention(8, 2, 0.0, Mode::eval, 6);
    late->init({{x.shape(), DType::f32}});
    late->set_weights(eval->weights());
    late->set_mode(Mode::predict);
    CHECK(max_diff(vals((*late)(Var(core::slice(x, 1, 0, 4)))), rows(want, 0, 4)) < 2e-5);
    CHECK(max_diff(vals((*late)(Var(core::slice(x, 1, 4, 6)))), rows(want, 4, 6)) < 2e-5);
  }
}

// ============================================================================================
// Structure, names, errors
// ============================================================================================

TEST_CASE("repr and flat weight names follow Trax's layer structure") {
  auto att = tl::Attention(8, 2);
  att->init({{{2, 5, 8}, DType::f32}, {{2, 1, 1, 5}, DType::i32}});
  CHECK(att->repr() ==
        "Serial_in2_out2[\n"
        "  Dup_out2\n"
        "  Dup_out2\n"
        "  Serial_in4_out2[\n"
        "    Parallel_in3_out3[\n"
        "      Dense_8\n"
        "      Dense_8\n"
        "      Dense_8\n"
        "    ]\n"
        "    PureAttention_in4_out2\n"
        "    Dense_8\n"
        "  ]\n"
        "]");
  std::vector<std::string> names;
  for (const auto& w : att->flat_weights()) names.push_back(w.name);
  CHECK(names == std::vector<std::string>{
                     "Serial/Serial_2/Parallel_0/Dense_0/w", "Serial/Serial_2/Parallel_0/Dense_0/b",
                     "Serial/Serial_2/Parallel_0/Dense_1/w", "Serial/Serial_2/Parallel_0/Dense_1/b",
                     "Serial/Serial_2/Parallel_0/Dense_2/w", "Serial/Serial_2/Parallel_0/Dense_2/b",
                     "Serial/Serial_2/Dense_2/w", "Serial/Serial_2/Dense_2/b"});
  CHECK(att->flat_weights()[0].value.shape() == Shape{8, 8});
  CHECK(att->flat_weights()[1].value.shape() == Shape{8});

  auto causal = tl::CausalAttention(8, 2);
  causal->init({{{2, 5, 8}, DType::f32}});
  const std::string r = causal->repr();
  INFO(r);
  CHECK(r.rfind("Serial[\n  Branch_out3[\n", 0) == 0);
  CHECK(contains(r, "      Serial[\n        Dense_8\n        SplitIntoHeads\n      ]\n"));
  CHECK(contains(r, "  ]\n  DotProductCausalAttention_in3\n  MergeHeads\n  Dense_8\n]"));
  names.clear();
  for (const auto& w : causal->flat_weights()) names.push_back(w.name);
  REQUIRE(names.size() == 8);
  CHECK(names[0] == "Serial/Branch_0/Parallel_1/Serial_0/Dense_0/w");
  CHECK(names[5] == "Serial/Branch_0/Parallel_1/Serial_2/Dense_0/b");
  CHECK(names[6] == "Serial/Dense_3/w");
  CHECK(causal->flat_state().empty());
}

TEST_CASE("errors: heads, rates, ranks, widths, masks, dtypes") {
  CHECK(error_message([] { tl::Attention(10, 3); }) ==
        "Attention: d_feature (10) must be a multiple of n_heads (3)");
  CHECK(error_message([] { tl::CausalAttention(10, 4); }) ==
        "CausalAttention: d_feature (10) must be a multiple of n_heads (4)");
  CHECK(error_message([] { tl::CausalAttention(8, 0); }) ==
        "CausalAttention: n_heads must be positive, got 0");
  CHECK(error_message([] { tl::Attention(8, 2, 1.0); }) ==
        "Attention: dropout must be in [0, 1), got 1");
  CHECK(error_message([] { tl::DotProductCausalAttention(0.0, Mode::predict, 0); }) ==
        "DotProductCausalAttention: max_len must be positive, got 0");
  CHECK_THROWS_AS(tl::PureAttention(2, -0.1), ValueError);

  // rank and dtype: x must be floating [batch, length, width], at init, call and shape inference
  auto att = tl::Attention(8, 2);
  const std::string rank_msg =
      "expected activations x [batch, length, width] of rank 3, got [5, 8]";
  // The errors name the layer kind (its repr and weight names stay Trax's "Serial").
  CHECK(layer_error([&] {
          att->init({{{5, 8}, DType::f32}, {{1, 1, 1, 5}, DType::i32}});
        }) == "Attention: " + rank_msg);
  auto causal = tl::CausalAttention(8, 2);
  CHECK(layer_error([&] {
          causal->init({{{5, 8}, DType::f32}});
        }) == "CausalAttention: " + rank_msg);
  CHECK(layer_error([&] {
          causal->output_signature({{{5, 8}, DType::f32}});
        }) == "CausalAttention: " + rank_msg);
  CHECK(layer_error([&] {
          causal->init({{{2, 5, 8}, DType::i32}});
        }) == "CausalAttention: expected float32 or float64 activations, got int32");
  // PureAttention on its own checks q, k and v (rank 3 each)
  CHECK(contains(layer_error([&] {
                   tl::PureAttention(2)->output_signature({{{5, 8}, DType::f32},
                                                           {{5, 8}, DType::f32},
                                                           {{5, 8}, DType::f32},
                                                           {{1, 1, 1, 5}, DType::i32}});
                 }),
                 "expected q [batch, Lq, d], k [batch, Lk, d], v [batch, Lk, d], got q [5, 8]"));
  // width: after init with 8 features, 6 are refused by the first projection
  causal->init({{{2, 5, 8}, DType::f32}});
  const std::string msg = layer_error([&] { (*causal)(Var(Tensor::zeros({2, 5, 6}))); });
  CHECK(contains(msg, "expected an input [..., 8]"));
  CHECK(contains(msg, "got [2, 5, 6]"));
  // the full message names the user's line and each enclosing layer
  try {
    (*causal)(Var(Tensor::zeros({2, 5, 6})));
    FAIL("no error");
  } catch (const base::LayerError& e) {
    CHECK(contains(e.what(), "Dense (created at tests/test_attention.cpp:"));
    CHECK(contains(e.what(), "\n  in Serial (created at tests/test_attention.cpp:"));
  }
  // the mask must broadcast to [batch, n_heads, Lq, Lk]
  att->init({{{2, 5, 8}, DType::f32}, {{2, 1, 1, 5}, DType::i32}});
  CHECK(
      contains(layer_error([&] {
                 (*att)(Stack{Var(Tensor::zeros({2, 5, 8})), Var(Tensor::ones({2, 1, 1, 4}))});
               }),
               "expected a mask that broadcasts to the attention logits [batch, n_heads, Lq, "
               "Lk] = [2, 2, 5, 5] (e.g. [batch, 1, 1, keys] from PaddingMask), got [2, 1, 1, 4]"));
  CHECK(contains(layer_error([&] {
                   att->output_signature({{{2, 5, 8}, DType::f32}, {{3, 1, 5, 5}, DType::i32}});
                 }),
                 "got [3, 1, 5, 5]"));
  // PureAttention: q width not a multiple of the heads; q/k/v disagreeing; int inputs
  auto pa = tl::PureAttention(3);
  CHECK(layer_error([&] {
          pa->output_signature({{{2, 5, 8}, DType::f32},
                                {{2, 5, 8}, DType::f32},
                                {{2, 5, 8}, DType::f32},
                                {{2, 1, 1, 5}, DType::i32}});
        }) == "the feature width of q, k and v (8) must be a multiple of n_heads (3)");
  CHECK(contains(layer_error([&] {
                   pa->output_signature({{{2, 5, 6}, DType::f32},
                                         {{2, 4, 6}, DType::f32},
                                         {{2, 5, 6}, DType::f32},
                                         {{2, 1, 1, 5}, DType::i32}});
                 }),
                 "got q [2, 5, 6], k [2, 4, 6], v [2, 5, 6]"));
  CHECK(layer_error([&] {
          pa->output_signature({{{2, 5, 6}, DType::i32},
                                {{2, 5, 6}, DType::i32},
                                {{2, 5, 6}, DType::i32},
                                {{2, 1, 1, 5}, DType::i32}});
        }) == "expected float32 or float64 queries, got int32");
  // cross-attention shapes are fine for PureAttention: Lq != Lk
  CHECK(pa->output_signature({{{2, 4, 6}, DType::f32},
                              {{2, 7, 6}, DType::f32},
                              {{2, 7, 6}, DType::f32},
                              {{2, 1, 1, 7}, DType::i32}}) ==
        Signature{{{2, 4, 6}, DType::f32}, {{2, 1, 1, 7}, DType::i32}});
  // dtype: a float64 input to float32 weights
  CHECK(contains(layer_error([&] {
                   (*causal)(Var(Tensor::zeros({2, 5, 8}, DType::f64)));
                 }),
                 "the input is float64 but the weights are float32"));
}
