// Tests of the basic layers (layers/core.hpp) and the initializers (layers/initializers.hpp).
//
// Every layer gets (1) values against an independent computation (naive loops over
// the data, written here without the library's ops), (2) output_signature against the
// shape and dtype of the actual output, and (3) a float64 gradcheck over its inputs
// and weights (base::cast_layer + base::gradcheck_layer). Error messages are checked
// through LayerError::original(), the message without the layer frame.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <numeric>
#include <string>
#include <vector>

#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layer_test_util.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/initializers.hpp"
#include "layers/layer_gradcheck.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace init = minitrax::layers::init;
using base::Layer;
using base::LayerPtr;
using base::Mode;
using base::ShapeDtype;
using base::Signature;
using base::Stack;
using core::key_from_seed;

namespace {
using minitrax::testutil::error_message;
using minitrax::testutil::layer_error;

using minitrax::testutil::check_gradients;
using minitrax::testutil::randn;
using minitrax::testutil::run_checked;
using minitrax::testutil::vals;

struct Moments {
  double mean, var, min, max;
};
Moments moments(const Tensor& t) {
  const auto v = vals(t);
  const double n = static_cast<double>(v.size());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, ss / n, *std::min_element(v.begin(), v.end()),
          *std::max_element(v.begin(), v.end())};
}

}  // namespace

// ============================================================================================
// Initializers
// ============================================================================================

TEST_CASE("initializers: fans as Trax's _GetFans") {
  CHECK(init::fans({3, 4}).in == 3);
  CHECK(init::fans({3, 4}).out == 4);
  CHECK(init::fans({5}).in == 5);
  CHECK(init::fans({5}).out == 5);
  CHECK(init::fans({}).in == 1);
  // rank 3: the leading (receptive field) axis is not multiplied in, as in Trax
  CHECK(init::fans({7, 3, 4}).in == 3);
  CHECK(init::fans({7, 3, 4}).out == 4);
  CHECK(init::fans({7, 3, 4}, 0, 1).out == 7);
  CHECK_THROWS_AS(init::fans({3, 4}, 2), ValueError);
}

TEST_CASE("initializers: statistics against the formulas") {
  // n = 60000 draws. Standard errors: mean sigma / sqrt(n); variance, relative,
  // sqrt(2 / n) = 0.58% for a normal and sqrt(0.8 / n) = 0.37% for a uniform. The
  // tolerances are 5 standard errors.
  const Shape shape{200, 300};
  const double n = 60000;
  const Key key = key_from_seed(7);
  auto check_normal = [&](const Tensor& t, double var) {
    const Moments m = moments(t);
    CHECK(std::abs(m.mean) < 5 * std::sqrt(var / n));
    CHECK(m.var == doctest::Approx(var).epsilon(5 * std::sqrt(2 / n)));
  };
  auto check_uniform = [&](const Tensor& t, double lim) {
    const Moments m = moments(t);
    const double var = lim * lim / 3;
    CHECK(m.min >= -lim);
    CHECK(m.max <= lim);
    CHECK(m.min < -0.99 * lim);  // the whole range is used
    CHECK(m.max > 0.99 * lim);
    CHECK(std::abs(m.mean) < 5 * std::sqrt(var / n));
    CHECK(m.var == doctest::Approx(var).epsilon(5 * std::sqrt(0.8 / n)));
  };
  SUBCASE("GlorotUniform: lim = sqrt(6 / (fan_in + fan_out))") {
    check_uniform(init::GlorotUniform()(key, shape, DType::f32), std::sqrt(6.0 / 500));
  }
  SUBCASE("GlorotNormal: variance 2 / (fan_in + fan_out)") {
    check_normal(init::GlorotNormal()(key, shape, DType::f32), 2.0 / 500);
  }
  SUBCASE("HeNormal: variance 2 / fan_in") {
    check_normal(init::HeNormal()(key, shape, DType::f32), 2.0 / 200);
  }
  SUBCASE("HeUniform: lim = sqrt(6 / fan_in)") {
    check_uniform(init::HeUniform()(key, shape, DType::f32), std::sqrt(6.0 / 200));
  }
  SUBCASE("LeCunNormal: variance 1 / fan_in; scale multiplies it") {
    check_normal(init::LeCunNormal()(key, shape, DType::f32), 1.0 / 200);
    check_normal(init::GlorotNormal(-1, -2, 3.0)(key, shape, DType::f32), 6.0 / 500);
  }
  SUBCASE("RandomNormal(stddev)") {
    check_normal(init::RandomNormal(0.5)(key, shape, DType::f32), 0.25);
    check_normal(init::RandomNormal(1e-6)(key, shape, DType::f32), 1e-12);
  }
  SUBCASE("RandomUniform(lim)") {
    check_uniform(init::RandomUniform(0.3)(key, shape, DType::f32), 0.3);
  }
  SUBCASE("Zeros and Ones") {
    const Moments z = moments(init::Zeros()(key, {3, 4}, DType::f64));
    CHECK(z.min == 0);
    CHECK(z.max == 0);
    const Moments o = moments(init::Ones()(key, {3, 4}, DType::f32));
    CHECK(o.min == 1);
    CHECK(o.max == 1);
  }
}

TEST_CASE("initializers: pure in the key; float64 gives the float32 numbers") {
  const Key k1 = key_from_seed(1), k2 = key_from_seed(2);
  for (const init::Initializer& f :
       {init::GlorotUniform(), init::GlorotNormal(), init::HeNormal(), init::HeUniform(),
        init::RandomNormal(1.0), init::RandomUniform(1.0)}) {
    const Tensor a = f(k1, {4, 5}, DType::f32);
    CHECK(a.shape() == Shape{4, 5});
    CHECK(a.dtype() == DType::f32);
    CHECK(core::equal(a, f(k1, {4, 5}, DType::f32)));
    CHECK_FALSE(core::equal(a, f(k2, {4, 5}, DType::f32)));
    const Tensor d = f(k1, {4, 5}, DType::f64);
    CHECK(d.dtype() == DType::f64);
    CHECK(core::equal(d, a.astype(DType::f64)));
  }
  // GlorotUniform is jax.random.uniform(key, shape, float32, -lim, lim), as in Trax
  const float lim = std::sqrt(static_cast<float>(3.0 * 2.0 / 9.0));
  CHECK(core::equal(init::GlorotUniform()(k1, {4, 5}, DType::f32),
                    core::uniform(k1, {4, 5}, DType::f32, -lim, lim)));
}

TEST_CASE("initializers: bad arguments") {
  CHECK_THROWS_AS(init::GlorotUniform()(key_from_seed(0), {2, 2}, DType::i32), DTypeError);
  CHECK_THROWS_AS(init::Zeros()(key_from_seed(0), {2}, DType::i64), DTypeError);
  CHECK_THROWS_AS(init::RandomUniform(0.0), ValueError);
  CHECK_THROWS_AS(init::RandomNormal(-1.0), ValueError);
  CHECK_THROWS_AS(init::GlorotNormal(-1, -2, 0.0), ValueError);
  CHECK(error_message([] { init::RandomUniform(-2.0); }) ==
        "RandomUniform: lim must be a positive finite number, got -2");
  // a zero-size weight is fine (nothing to draw)
  CHECK(init::GlorotUniform()(key_from_seed(0), {0, 3}, DType::f32).size() == 0);
}

// ============================================================================================
// Dense
// ============================================================================================

TEST_CASE("Dense: values, weights as Trax lays them out, signature, gradients") {
  auto dense = tl::Dense(5);
  const Key key = key_from_seed(3);
  dense->init({{{2, 3, 4}, DType::f32}}, key);
  const auto named = dense->flat_weights();
  REQUIRE(named.size() == 2);
  CHECK(named[0].name == "Dense/w");
  CHECK(named[1].name == "Dense/b");
  const Tensor w = named[0].value, b = named[1].value;
  CHECK(w.shape() == Shape{4, 5});
  CHECK(b.shape() == Shape{5});
  // Trax: rng_w, rng_b = split(rng); w = GlorotUniform(rng_w), b = RandomNormal(1e-6)(rng_b)
  const auto keys = core::split(key, 2);
  CHECK(core::equal(w, init::GlorotUniform()(keys[0], {4, 5}, DType::f32)));
  CHECK(core::equal(b, init::RandomNormal(1e-6)(keys[1], {5}, DType::f32)));
  for (double v : vals(b)) CHECK(std::abs(v) < 1e-5);

  // a bias that matters for the value check
  dense->set_weights(base::Weights::list({base::Weights(w), base::Weights(randn({5}, 9))}));
  const Tensor bb = dense->flat_weights()[1].value;
  const Tensor x = randn({2, 3, 4}, 4);
  const Var y = run_checked(*dense, x);
  CHECK(y.shape() == Shape{2, 3, 5});
  const auto xv = vals(x), wv = vals(w), bv = vals(bb), yv = vals(y);
  for (std::size_t r = 0; r < 6; ++r) {
    for (std::size_t j = 0; j < 5; ++j) {
      double acc = bv[j];
      for (std::size_t k = 0; k < 4; ++k) acc += xv[r * 4 + k] * wv[k * 5 + j];
      CHECK(yv[r * 5 + j] == doctest::Approx(acc).epsilon(1e-5));
    }
  }
  check_gradients(*dense, {randn({2, 3, 4}, 5, DType::f64)});
  CHECK(dense->label() == "Dense_5");
  CHECK(dense->repr() == "Dense_5");
}

TEST_CASE("Dense: without bias; float64 init; errors") {
  auto d = tl::Dense(3, init::GlorotNormal(), init::Zeros(), /*use_bias=*/false);
  d->init({{{4, 2}, DType::f64}});
  const auto named = d->flat_weights();
  REQUIRE(named.size() == 1);
  CHECK(named[0].name == "Dense/w");
  CHECK(named[0].value.dtype() == DType::f64);  // weights take the input's floating dtype
  const Tensor x = randn({4, 2}, 1, DType::f64);
  const auto y = vals(run_checked(*d, x));
  const auto xv = vals(x), wv = vals(named[0].value);
  for (std::size_t r = 0; r < 4; ++r) {
    for (std::size_t j = 0; j < 3; ++j) {
      CHECK(y[r * 3 + j] ==
            doctest::Approx(xv[r * 2] * wv[j] + xv[r * 2 + 1] * wv[3 + j]).epsilon(1e-12));
    }
  }
  check_gradients(*d, {x});

  auto e = tl::Dense(5);
  e->init({{{2, 4}, DType::f32}});
  CHECK(layer_error([&] {
          (*e)(Var(Tensor::zeros({2, 3})));
        }) == "expected an input [..., 4] (d_in of the weights w [4, 5]), got [2, 3]");
  CHECK(layer_error([&] {
          (*e)(Var(Tensor::zeros({2, 4}, DType::f64)));
        }) ==
        "the input is float64 but the weights are float32 (init with float64 inputs, or "
        "convert the layer with base::cast_layer)");
  CHECK(layer_error([&] {
          (*e)(Var(Tensor::zeros({2, 4}, DType::i32)));
        }) == "expected a float32 or float64 input, got int32");
  CHECK(layer_error([&] {
          e->output_signature({{{}, DType::f32}});
        }) == "expected an input of rank >= 1 [..., d_in], got shape []");
  // the full message names the layer and where it was created
  try {
    (*e)(Var(Tensor::zeros({2, 3})));
    FAIL("no error");
  } catch (const base::LayerError& err) {
    CHECK(std::string(err.what()).find("Dense (created at tests/test_core_layers.cpp:") == 0);
  }
  CHECK(error_message([] { tl::Dense(0); }) == "Dense: n_units must be positive, got 0");
}

// ============================================================================================
// Embedding
// ============================================================================================

TEST_CASE("Embedding: row lookup for int32 and int64 ids of any shape") {
  auto emb = tl::Embedding(7, 3);
  const Key key = key_from_seed(11);
  emb->init({{{2, 3}, DType::i32}}, key);
  const auto named = emb->flat_weights();
  REQUIRE(named.size() == 1);
  CHECK(named[0].name == "Embedding/embeddings");
  const Tensor table = named[0].value;
  CHECK(table.shape() == Shape{7, 3});
  CHECK(table.dtype() == DType::f32);
  // Trax: RandomNormal(1.0) with the layer's rng, unsplit
  CHECK(core::equal(table, init::RandomNormal(1.0)(key, {7, 3}, DType::f32)));
  const auto tv = vals(table);

  const std::vector<std::int32_t> ids{0, 6, 2, 2, 5, 1};
  const Var y = run_checked(*emb, Tensor::from<std::int32_t>({2, 3}, ids));
  CHECK(y.shape() == Shape{2, 3, 3});
  const auto yv = vals(y);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      CHECK(yv[i * 3 + j] == tv[static_cast<std::size_t>(ids[i]) * 3 + j]);
    }
  }
  const Var y64 = run_checked(*emb, Tensor::from<std::int64_t>({4}, {3, 3, 0, 6}));
  CHECK(y64.shape() == Shape{4, 3});
  CHECK(vals(y64)[0] == tv[9]);
  const Var y0 = run_checked(*emb, Tensor::from<std::int32_t>({}, {4}));  // a scalar id
  CHECK(y0.shape() == Shape{3});
  CHECK(vals(y0)[2] == tv[14]);
  // repeated ids accumulate their gradients
  check_gradients(*emb, {Tensor::from<std::int32_t>({2, 3}, {1, 1, 4, 0, 1, 6})});
  CHECK(emb->label() == "Embedding_7_3");
}

TEST_CASE("Embedding: errors") {
  auto emb = tl::Embedding(5, 2);
  emb->init({{{3}, DType::i32}});
  CHECK(layer_error([&] {
          (*emb)(Var(Tensor::from<std::int32_t>({2, 3}, {0, 1, 2, 3, 7, 1})));
        }) ==
        "token id 7 (at flat position 4) is out of range for vocab_size 5: ids must be in [0, 5)");
  CHECK(layer_error([&] {
          (*emb)(Var(Tensor::from<std::int64_t>({2}, {-1, 0})));
        }) ==
        "token id -1 (at flat position 0) is out of range for vocab_size 5: ids must be in [0, 5)");
  CHECK(layer_error([&] { (*emb)(Var(Tensor::zeros({2}))); }) ==
        "expected int32 or int64 token ids, got float32");
  CHECK_THROWS_AS(tl::Embedding(0, 3), ValueError);
}

// ============================================================================================
// Dropout
// ============================================================================================

TEST_CASE("Dropout: train mode keeps 1 - rate of the values and scales them") {
  const Tensor x = Tensor::ones({100, 100});
  for (double rate : {0.5, 0.1, 0.9}) {
    auto d = tl::Dropout(rate);
    d->init({{x.shape(), x.dtype()}});
    d->set_rng(key_from_seed(42));
    const auto y = vals(run_checked(*d, x));
    const double keep = 1 - rate;
    std::size_t kept = 0;
    for (double v : y) {
      if (v != 0) {
        CHECK(v == doctest::Approx(1 / keep).epsilon(1e-6));
        ++kept;
      }
    }
    // binomial: standard error sqrt(keep (1 - keep) / n); 5 of them
    const double frac = static_cast<double>(kept) / 1e4;
    CHECK(std::abs(frac - keep) < 5 * std::sqrt(keep * rate / 1e4));
  }
}

TEST_CASE("Dropout: the mask is bernoulli(rng, 1 - rate); same rng same mask") {
  auto d = tl::Dropout(0.3);
  const Tensor x = randn({6, 8}, 1);
  d->init({{x.shape(), x.dtype()}});
  const Key k = key_from_seed(5);
  d->set_rng(k);
  const auto y1 = vals((*d)(Var(x)));
  const Tensor mask = core::bernoulli(k, 0.7, {6, 8});
  const auto xv = vals(x), mv = vals(mask);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    CHECK(y1[i] == doctest::Approx(xv[i] * mv[i] / 0.7).epsilon(1e-6));
  }
  d->set_rng(k);
  CHECK(vals((*d)(Var(x))) == y1);
  auto [ys, st] = d->pure_fn({Var(x)}, d->weight_vars(), d->state(), k);
  CHECK(vals(ys[0]) == y1);
  d->set_rng(key_from_seed(6));
  CHECK(vals((*d)(Var(x))) != y1);
  // inside a Serial, each call's rng comes from the Serial's
  auto s = tl::Serial({tl::Dropout(0.5)});
  s->init({{x.shape(), x.dtype()}});
  s->set_rng(key_from_seed(1));
  const auto z1 = vals((*s)(Var(x)));
  s->set_rng(key_from_seed(1));
  CHECK(vals((*s)(Var(x))) == z1);
  s->set_rng(key_from_seed(2));
  CHECK(vals((*s)(Var(x))) != z1);
}

TEST_CASE("Dropout: identity in eval and predict mode and for rate 0; state is the rate") {
  const Tensor x = randn({4, 5}, 2);
  auto ev = tl::Dropout(0.5, {}, Mode::eval);
  ev->init({{x.shape(), x.dtype()}});
  CHECK(vals(run_checked(*ev, x)) == vals(x));
  auto pr = tl::Dropout(0.5, {}, Mode::predict);
  pr->init({{x.shape(), x.dtype()}});
  CHECK(vals((*pr)(Var(x))) == vals(x));
  auto tr = tl::Dropout(0.5);
  tr->init({{x.shape(), x.dtype()}});
  CHECK(vals((*tr)(Var(x))) != vals(x));
  tr->set_mode(Mode::eval);
  CHECK(vals((*tr)(Var(x))) == vals(x));
  auto zero = tl::Dropout(0.0);
  zero->init({{x.shape(), x.dtype()}});
  CHECK(vals((*zero)(Var(x))) == vals(x));
  // Trax keeps the rate as the layer's state
  const auto st = tr->flat_state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].value.shape() == Shape{});
  CHECK(st[0].value.item<double>() == 0.5);
  CHECK(tr->flat_weights().empty());
  CHECK(tr->label() == "Dropout");
}

TEST_CASE("Dropout: shared_axes broadcast one mask value along those axes") {
  const Tensor x = Tensor::ones({8, 50});
  auto rows = tl::Dropout(0.5, {0});  // mask [1, 50]: each column all kept or all dropped
  rows->init({{x.shape(), x.dtype()}});
  rows->set_rng(key_from_seed(3));
  const auto y = vals(run_checked(*rows, x));
  std::size_t dropped_cols = 0;
  for (std::size_t j = 0; j < 50; ++j) {
    for (std::size_t i = 1; i < 8; ++i) CHECK(y[i * 50 + j] == y[j]);
    dropped_cols += y[j] == 0;
  }
  CHECK(dropped_cols > 0);
  CHECK(dropped_cols < 50);
  // the mask is bernoulli over the mask shape, broadcast
  const auto m = vals(core::bernoulli(key_from_seed(3), 0.5, {1, 50}));
  for (std::size_t j = 0; j < 50; ++j) CHECK(y[j] == m[j] * 2);

  auto cols = tl::Dropout(0.5, {-1});  // mask [8, 1]
  cols->init({{x.shape(), x.dtype()}});
  cols->set_rng(key_from_seed(4));
  const auto z = vals((*cols)(Var(x)));
  for (std::size_t i = 0; i < 8; ++i) {
    for (std::size_t j = 1; j < 50; ++j) CHECK(z[i * 50 + j] == z[i * 50]);
  }
  CHECK(layer_error([&] { cols->output_signature({{{8}, DType::f32}}); }).empty());
  auto bad = tl::Dropout(0.5, {2});
  CHECK(layer_error([&] {
          bad->output_signature({{{8, 50}, DType::f32}});
        }) == "shared axis 2 is out of range for an input of rank 2 (shape [8, 50])");
}

TEST_CASE("Dropout: gradients with a fixed rng; bad rates") {
  auto d = tl::Dropout(0.4, {1});
  const Tensor x = randn({3, 4, 5}, 8, DType::f64);
  d->init({{x.shape(), x.dtype()}});
  check_gradients(*d, {x}, key_from_seed(12));
  CHECK(error_message([] { tl::Dropout(1.0); }) == "Dropout: rate must be in [0, 1), got 1");
  CHECK_THROWS_AS(tl::Dropout(-0.1), ValueError);
  CHECK_THROWS_AS(tl::Dropout(std::nan("")), ValueError);
  auto t = tl::Dropout(0.5);
  CHECK(layer_error([&] { (*t)(Var(Tensor::zeros({2}, DType::i32))); }) ==
        "expected a float32 or float64 input, got int32");
}

// ============================================================================================
// LayerNorm
// ============================================================================================

TEST_CASE("LayerNorm: (x - mean) / sqrt(var + eps) * scale + bias over the last axis") {
  for (double eps : {1e-6, 0.5}) {  // a large eps tells sqrt(var + eps) from sqrt(var) + eps
    auto ln = tl::LayerNorm(eps);
    const Tensor x = core::add(core::mul(randn({3, 2, 7}, 1), 3.0), 1.5);
    ln->init({{x.shape(), x.dtype()}});
    const auto named = ln->flat_weights();
    REQUIRE(named.size() == 2);
    CHECK(named[0].name == "LayerNorm/scale");
    CHECK(named[1].name == "LayerNorm/bias");
    CHECK(vals(named[0].value) == std::vector<double>(7, 1.0));
    CHECK(vals(named[1].value) == std::vector<double>(7, 0.0));
    const Tensor scale = randn({7}, 2), bias = randn({7}, 3);
    ln->set_flat_weights(std::vector<Tensor>{scale, bias});
    const auto y = vals(run_checked(*ln, x));
    const auto xv = vals(x), sv = vals(scale), bv = vals(bias);
    for (std::size_t r = 0; r < 6; ++r) {
      double mean = 0, var = 0;
      for (std::size_t j = 0; j < 7; ++j) mean += xv[r * 7 + j];
      mean /= 7;
      for (std::size_t j = 0; j < 7; ++j) var += (xv[r * 7 + j] - mean) * (xv[r * 7 + j] - mean);
      var /= 7;
      for (std::size_t j = 0; j < 7; ++j) {
        const double want = (xv[r * 7 + j] - mean) / std::sqrt(var + eps) * sv[j] + bv[j];
        CHECK(y[r * 7 + j] == doctest::Approx(want).epsilon(1e-5));
      }
    }
    check_gradients(*ln, {core::add(core::mul(randn({3, 2, 7}, 4, DType::f64), 2.0), -1.0)});
  }
  auto ln = tl::LayerNorm();
  ln->init({{{2, 4}, DType::f32}});
  CHECK(layer_error([&] {
          (*ln)(Var(Tensor::zeros({2, 5})));
        }) == "expected an input [..., 4] (the size of the weights scale and bias), got [2, 5]");
  CHECK(ln->label() == "LayerNorm");
  CHECK_THROWS_AS(tl::LayerNorm(-1.0), ValueError);
}

// ============================================================================================
// Activations
// ============================================================================================

TEST_CASE("activations: values, signature, gradients, labels") {
  struct Case {
    LayerPtr layer;
    double (*f)(double);
    const char* label;
  };
  std::vector<Case> cases = {
      {tl::Relu(), [](double x) { return x > 0 ? x : 0.0; }, "Relu"},
      {tl::Gelu(), [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, "Gelu"},
      {tl::FastGelu(),
       [](double x) {
         return 0.5 * x *
                (1 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
       },
       "FastGelu"},
      {tl::Sigmoid(), [](double x) { return 1 / (1 + std::exp(-x)); }, "Sigmoid"},
      {tl::Tanh(), [](double x) { return std::tanh(x); }, "Tanh"},
  };
  const Tensor x = core::mul(randn({3, 5}, 21), 2.0);
  for (Case& k : cases) {
    CAPTURE(k.label);
    k.layer->init({{x.shape(), x.dtype()}});
    const auto y = vals(run_checked(*k.layer, x));
    const auto xv = vals(x);
    for (std::size_t i = 0; i < xv.size(); ++i) {
      CHECK(y[i] == doctest::Approx(k.f(xv[i])).epsilon(1e-5));
    }
    check_gradients(*k.layer, {core::mul(randn({3, 5}, 22, DType::f64), 2.0)});
    CHECK(k.layer->label() == k.label);
    CHECK(k.layer->flat_weights().empty());
    CHECK(layer_error([&] { (*k.layer)(Var(Tensor::zeros({2}, DType::i32))); }) ==
          "expected a float32 or float64 input, got int32");
  }
}

TEST_CASE("LogSoftmax: x - log(sum(exp(x))) along an axis") {
  const Tensor x = core::mul(randn({3, 4}, 30), 3.0);
  const auto xv = vals(x);
  auto last = tl::LogSoftmax();
  const auto y = vals(run_checked(*last, x));
  for (std::size_t r = 0; r < 3; ++r) {
    double m = -1e300, s = 0;
    for (std::size_t j = 0; j < 4; ++j) m = std::max(m, xv[r * 4 + j]);
    for (std::size_t j = 0; j < 4; ++j) s += std::exp(xv[r * 4 + j] - m);
    for (std::size_t j = 0; j < 4; ++j) {
      CHECK(y[r * 4 + j] == doctest::Approx(xv[r * 4 + j] - m - std::log(s)).epsilon(1e-5));
    }
  }
  auto first = tl::LogSoftmax(0);
  const auto z = vals(run_checked(*first, x));
  for (std::size_t j = 0; j < 4; ++j) {
    double s = 0;
    for (std::size_t r = 0; r < 3; ++r) s += std::exp(xv[r * 4 + j]);
    for (std::size_t r = 0; r < 3; ++r) {
      CHECK(z[r * 4 + j] == doctest::Approx(xv[r * 4 + j] - std::log(s)).epsilon(1e-5));
    }
  }
  check_gradients(*last, {randn({2, 3, 4}, 31, DType::f64)});
  check_gradients(*first, {randn({3, 4}, 32, DType::f64)});
  CHECK(last->label() == "LogSoftmax");
  CHECK(layer_error([&] {
          first->output_signature({{{}, DType::f32}});
        }) == "expected an input of rank >= 1 [..., n], got shape []");
}

// ============================================================================================
// ShiftRight
// ============================================================================================

TEST_CASE("ShiftRight: zeros in front of axis 1, the last n dropped") {
  auto s1 = tl::ShiftRight();
  const Tensor ids = Tensor::from<std::int32_t>({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Var y = run_checked(*s1, ids);
  CHECK(y.dtype() == DType::i32);
  CHECK(vals(y) == std::vector<double>{0, 1, 2, 3, 0, 5, 6, 7});
  CHECK(vals((*tl::ShiftRight(2))(Var(ids))) == std::vector<double>{0, 0, 1, 2, 0, 0, 5, 6});
  CHECK(vals((*tl::ShiftRight(5))(Var(ids))) == std::vector<double>(8, 0.0));
  CHECK(vals((*tl::ShiftRight(0))(Var(ids))) == vals(ids));
  // float [B, L, d]: whole feature vectors move
  const Tensor x = randn({2, 3, 2}, 40);
  const auto xv = vals(x), yv = vals(run_checked(*s1, x));
  for (std::size_t b = 0; b < 2; ++b) {
    for (std::size_t l = 0; l < 3; ++l) {
      for (std::size_t k = 0; k < 2; ++k) {
        const double want = l == 0 ? 0.0 : xv[(b * 3 + l - 1) * 2 + k];
        CHECK(yv[(b * 3 + l) * 2 + k] == want);
      }
    }
  }
  // predict mode: the identity (one position at a time)
  auto p = tl::ShiftRight(1, Mode::predict);
  CHECK(vals((*p)(Var(ids))) == vals(ids));
  check_gradients(*s1, {randn({2, 3, 2}, 41, DType::f64)});
  CHECK(s1->label() == "ShiftRight(1)");
  CHECK(tl::ShiftRight(3)->repr() == "ShiftRight(3)");
  CHECK(layer_error([&] { (*s1)(Var(Tensor::zeros({4}))); }) ==
        "expected an input of rank >= 2 [batch, length, ...], got shape [4]");
  CHECK_THROWS_AS(tl::ShiftRight(-1), ValueError);
}

// ============================================================================================
// PositionalEncoding
// ============================================================================================

namespace {
// Trax 1.3.4: div_term = exp(arange(0, d, 2) * -(log(10000) / d));
// pe[:, 0::2] = sin(position * div_term); pe[:, 1::2] = cos(position * div_term)
double pe_formula(std::size_t p, std::size_t j, std::size_t d) {
  const double div = std::exp(static_cast<double>(2 * (j / 2)) * -(std::log(10000.0) / d));
  return j % 2 == 0 ? std::sin(static_cast<double>(p) * div)
                    : std::cos(static_cast<double>(p) * div);
}
}  // namespace

TEST_CASE("PositionalEncoding: x + sinusoids, pe a trainable weight [1, max_len, d]") {
  for (std::size_t d : {6u, 5u}) {
    CAPTURE(d);
    auto pe = tl::PositionalEncoding(16);
    const Tensor x = randn({2, 10, d}, 50);
    pe->init({{x.shape(), x.dtype()}});
    const auto named = pe->flat_weights();
    REQUIRE(named.size() == 1);
    CHECK(named[0].name == "PositionalEncoding/pe");
    CHECK(named[0].value.shape() == Shape{1, 16, d});
    const auto pv = vals(named[0].value);
    for (std::size_t p = 0; p < 16; ++p) {
      for (std::size_t j = 0; j < d; ++j) {
        CHECK(pv[p * d + j] == doctest::Approx(pe_formula(p, j, d)).epsilon(1e-6));
      }
    }
    const auto xv = vals(x), y = vals(run_checked(*pe, x));
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t l = 0; l < 10; ++l) {
        for (std::size_t j = 0; j < d; ++j) {
          const std::size_t i = (b * 10 + l) * d + j;
          CHECK(y[i] == doctest::Approx(xv[i] + pe_formula(l, j, d)).epsilon(1e-5));
        }
      }
    }
    CHECK(pe->state().is_leaf() == false);  // no state outside predict mode
    CHECK(pe->flat_state().empty());
  }
  // a few hand-computed values (d = 4): pe[1] = [sin 1, cos 1, sin 0.01, cos 0.01]
  auto pe4 = tl::PositionalEncoding(3);
  pe4->init({{{1, 3, 4}, DType::f32}});
  const auto v = vals(pe4->flat_weights()[0].value);
  CHECK(v[4] == doctest::Approx(0.8414709848).epsilon(1e-6));
  CHECK(v[5] == doctest::Approx(0.5403023059).epsilon(1e-6));
  CHECK(v[6] == doctest::Approx(0.0099998333).epsilon(1e-6));
  CHECK(v[7] == doctest::Approx(0.9999500004).epsilon(1e-6));
  CHECK(v[0] == 0);
  CHECK(v[1] == 1);

  auto small = tl::PositionalEncoding(8);
  small->init({{{2, 5, 4}, DType::f64}});
  check_gradients(*small, {randn({2, 5, 4}, 51, DType::f64)});
  CHECK(small->label() == "PositionalEncoding");
  CHECK(layer_error([&] {
          (*small)(Var(Tensor::zeros({1, 9, 4}, DType::f64)));
        }) == "the sequence length 9 exceeds max_len 8");
  CHECK(
      layer_error([&] {
        (*small)(Var(Tensor::zeros({1, 3, 5}, DType::f64)));
      }) ==
      "expected an input [batch, length, 4] (d_feature of the weight pe [1, 8, 4]), got [1, 3, 5]");
  CHECK(layer_error([&] {
          small->output_signature({{{3, 4}, DType::f64}});
        }) == "expected an input [batch, length, d_feature] of rank 3, got shape [3, 4]");
  CHECK(error_message([] { tl::PositionalEncoding(16, 1.0); }) ==
        "PositionalEncoding: dropout must be in [0, 1), got 1");
}

TEST_CASE("PositionalEncoding: dropout on pe, one mask value per feature (train only)") {
  auto pe = tl::PositionalEncoding(32, 0.5);
  const Tensor x = randn({3, 20, 16}, 60);
  pe->init({{x.shape(), x.dtype()}});
  pe->set_rng(key_from_seed(61));
  const auto y = vals(run_checked(*pe, x));
  const auto xv = vals(x);
  const auto mask = vals(core::bernoulli(key_from_seed(61), 0.5, {1, 1, 16}));
  for (std::size_t b = 0; b < 3; ++b) {
    for (std::size_t l = 0; l < 20; ++l) {
      for (std::size_t j = 0; j < 16; ++j) {
        const std::size_t i = (b * 20 + l) * 16 + j;
        const double want = xv[i] + pe_formula(l, j, 16) * mask[j] * 2;
        CHECK(y[i] == doctest::Approx(want).epsilon(1e-5));
      }
    }
  }
  pe->set_mode(Mode::eval);
  const auto e = vals((*pe)(Var(x)));
  for (std::size_t i = 0; i < e.size(); i += 37) {
    const std::size_t l = (i / 16) % 20, j = i % 16;
    CHECK(e[i] == doctest::Approx(xv[i] + pe_formula(l, j, 16)).epsilon(1e-5));
  }
}

TEST_CASE("PositionalEncoding: predict mode keeps each sequence's position in its state") {
  auto pe = tl::PositionalEncoding(6, 0.0, Mode::predict);
  pe->init({{{2, 1, 4}, DType::f32}});
  const auto st = pe->flat_state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].value.dtype() == DType::i32);
  CHECK(vals(st[0].value) == std::vector<double>{0, 0});
  const Tensor x = randn({2, 1, 4}, 70);
  const auto xv = vals(x);
  for (std::size_t step = 0; step < 3; ++step) {
    const auto y = vals(run_checked(*pe, x));
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t j = 0; j < 4; ++j) {
        CHECK(y[b * 4 + j] ==
              doctest::Approx(xv[b * 4 + j] + pe_formula(step, j, 4)).epsilon(1e-5));
      }
    }
    CHECK(vals(pe->flat_state()[0].value) ==
          std::vector<double>{double(step + 1), double(step + 1)});
  }
  // sequences at different positions; several positions in one call
  pe->set_flat_state({Tensor::from<std::int32_t>({2}, {0, 2})});
  const Tensor x3 = Tensor::zeros({2, 3, 4});
  const auto y3 = vals((*pe)(Var(x3)));
  for (std::size_t b = 0; b < 2; ++b) {
    for (std::size_t l = 0; l < 3; ++l) {
      for (std::size_t j = 0; j < 4; ++j) {
        CHECK(y3[(b * 3 + l) * 4 + j] ==
              doctest::Approx(pe_formula(b * 2 + l, j, 4)).epsilon(1e-6));
      }
    }
  }
  CHECK(vals(pe->flat_state()[0].value) == std::vector<double>{3, 5});
  CHECK(layer_error([&] {
          (*pe)(Var(Tensor::zeros({2, 2, 4})));
        }) == "predict mode: sequence 1 is at position 5; 2 more position(s) would pass max_len 6");
  // pure_fn leaves the layer's own state alone and returns the new one
  auto [ys, new_state] =
      pe->pure_fn({Var(Tensor::zeros({2, 1, 4}))}, pe->weight_vars(),
                  base::State(Tensor::from<std::int32_t>({2}, {1, 1})), key_from_seed(0));
  CHECK(vals(new_state.leaf()) == std::vector<double>{2, 2});
  CHECK(vals(pe->flat_state()[0].value) == std::vector<double>{3, 5});
}

// ============================================================================================
// Mean and Flatten
// ============================================================================================

TEST_CASE("Mean: over one axis, with or without keepdims") {
  const Tensor x = randn({2, 3, 4}, 80);
  const auto xv = vals(x);
  auto m = tl::Mean();
  const Var y = run_checked(*m, x);
  CHECK(y.shape() == Shape{2, 3});
  for (std::size_t r = 0; r < 6; ++r) {
    double s = 0;
    for (std::size_t j = 0; j < 4; ++j) s += xv[r * 4 + j];
    CHECK(vals(y)[r] == doctest::Approx(s / 4).epsilon(1e-5));
  }
  auto m0 = tl::Mean(0, true);
  const Var z = run_checked(*m0, x);
  CHECK(z.shape() == Shape{1, 3, 4});
  for (std::size_t i = 0; i < 12; ++i) {
    CHECK(vals(z)[i] == doctest::Approx((xv[i] + xv[12 + i]) / 2).epsilon(1e-5));
  }
  CHECK(run_checked(*tl::Mean(1), x).shape() == Shape{2, 4});
  check_gradients(*m, {randn({2, 3, 4}, 81, DType::f64)});
  check_gradients(*m0, {randn({2, 3, 4}, 82, DType::f64)});
  CHECK(layer_error([&] { (*tl::Mean(3))(Var(x)); }) ==
        "axis 3 is out of range for an input of rank 3 (shape [2, 3, 4])");
  CHECK(m->label() == "Mean");
}

TEST_CASE("Flatten: keeps the first n axes, merges the rest") {
  std::vector<double> seq(120);
  std::iota(seq.begin(), seq.end(), 0.0);
  const Tensor x = Tensor::from<double>({2, 3, 4, 5}, seq);
  auto f1 = tl::Flatten();
  const Var y = run_checked(*f1, x);
  CHECK(y.shape() == Shape{2, 60});
  CHECK(vals(y) == seq);
  CHECK(run_checked(*tl::Flatten(2), x).shape() == Shape{2, 3, 20});
  CHECK(run_checked(*tl::Flatten(0), x).shape() == Shape{120});
  CHECK(run_checked(*tl::Flatten(3), x).shape() == Shape{2, 3, 4, 5});
  CHECK(run_checked(*tl::Flatten(), Tensor::zeros({3, 0, 2}, DType::i32)).shape() == Shape{3, 0});
  check_gradients(*f1, {randn({2, 3, 4}, 90, DType::f64)});
  CHECK(f1->label() == "Flatten_keep1");
  CHECK(layer_error([&] {
          (*tl::Flatten(2))(Var(Tensor::zeros({2, 3})));
        }) == "the input rank (2) must exceed the number of axes to keep (2), got shape [2, 3]");
}

// ============================================================================================
// A small model
// ============================================================================================

TEST_CASE("Serial([Embedding, Dense, Relu, Dense, LogSoftmax]): init, forward, names") {
  auto model =
      tl::Serial({tl::Embedding(10, 8), tl::Dense(16), tl::Relu(), tl::Dense(4), tl::LogSoftmax()});
  const Tensor ids = Tensor::from<std::int32_t>({2, 5}, {1, 2, 3, 4, 5, 9, 8, 7, 6, 0});
  model->init({{ids.shape(), ids.dtype()}}, key_from_seed(100));
  std::vector<std::string> names;
  for (const auto& w : model->flat_weights()) names.push_back(w.name);
  CHECK(names == std::vector<std::string>{"Serial/Embedding_0/embeddings", "Serial/Dense_1/w",
                                          "Serial/Dense_1/b", "Serial/Dense_3/w",
                                          "Serial/Dense_3/b"});
  const auto flat = model->flat_weights();
  CHECK(flat[1].value.shape() == Shape{8, 16});
  CHECK(flat[3].value.shape() == Shape{16, 4});
  const Var y = run_checked(*model, ids);
  CHECK(y.shape() == Shape{2, 5, 4});
  CHECK(y.dtype() == DType::f32);
  const auto yv = vals(y);
  for (std::size_t r = 0; r < 10; ++r) {
    double s = 0;
    for (std::size_t j = 0; j < 4; ++j) s += std::exp(yv[r * 4 + j]);
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
  }
  // the same forward by hand: take rows, dense, relu, dense, log-softmax
  const auto E = vals(flat[0].value), W1 = vals(flat[1].value), B1 = vals(flat[2].value),
             W2 = vals(flat[3].value), B2 = vals(flat[4].value);
  const auto idv = vals(ids);
  for (std::size_t r = 0; r < 10; ++r) {
    const auto id = static_cast<std::size_t>(idv[r]);
    std::vector<double> h(16), o(4);
    for (std::size_t j = 0; j < 16; ++j) {
      double a = B1[j];
      for (std::size_t k = 0; k < 8; ++k) a += E[id * 8 + k] * W1[k * 16 + j];
      h[j] = std::max(a, 0.0);
    }
    double mx = -1e300;
    for (std::size_t j = 0; j < 4; ++j) {
      double a = B2[j];
      for (std::size_t k = 0; k < 16; ++k) a += h[k] * W2[k * 4 + j];
      o[j] = a;
      mx = std::max(mx, a);
    }
    double s = 0;
    for (double a : o) s += std::exp(a - mx);
    for (std::size_t j = 0; j < 4; ++j) {
      CHECK(yv[r * 4 + j] == doctest::Approx(o[j] - mx - std::log(s)).epsilon(1e-4));
    }
  }
  CHECK(model->repr() ==
        "Serial[\n  Embedding_10_8\n  Dense_16\n  Relu\n  Dense_4\n  LogSoftmax\n]");
  check_gradients(*model, {ids});
}

TEST_CASE("labels in repr") {
  auto m = tl::Serial({tl::Dense(3), tl::Dropout(0.1), tl::LayerNorm(), tl::Gelu(), tl::FastGelu(),
                       tl::Sigmoid(), tl::Tanh(), tl::ShiftRight(2), tl::PositionalEncoding(),
                       tl::Mean(), tl::Flatten(2), tl::Embedding(5, 7)});
  CHECK(m->repr() ==
        "Serial[\n  Dense_3\n  Dropout\n  LayerNorm\n  Gelu\n  FastGelu\n  Sigmoid\n  Tanh\n"
        "  ShiftRight(2)\n  PositionalEncoding\n  Mean\n  Flatten_keep2\n  Embedding_5_7\n]");
}

TEST_CASE("output_signature touches no data: inputs far too large to allocate") {
  const std::size_t huge = std::size_t{1} << 40;  // 2^40 elements per feature
  auto sig = [](LayerPtr l, Shape shape, DType dtype = DType::f32) {
    return l->output_signature({{std::move(shape), dtype}}).at(0);
  };
  CHECK(sig(tl::Dense(7), {huge, 3}) == ShapeDtype{{huge, 7}, DType::f32});
  CHECK(sig(tl::Embedding(5, 4), {huge}, DType::i64) == ShapeDtype{{huge, 4}, DType::f32});
  CHECK(sig(tl::Dropout(0.5, {0}), {huge, 3}) == ShapeDtype{{huge, 3}, DType::f32});
  CHECK(sig(tl::LayerNorm(), {huge, 3}, DType::f64) == ShapeDtype{{huge, 3}, DType::f64});
  CHECK(sig(tl::PositionalEncoding(16), {huge, 16, 8}) == ShapeDtype{{huge, 16, 8}, DType::f32});
  CHECK(sig(tl::Relu(), {huge, 3}) == ShapeDtype{{huge, 3}, DType::f32});
  CHECK(sig(tl::LogSoftmax(0), {huge, 3}) == ShapeDtype{{huge, 3}, DType::f32});
  CHECK(sig(tl::ShiftRight(), {2, huge}, DType::i32) == ShapeDtype{{2, huge}, DType::i32});
  CHECK(sig(tl::Mean(0, true), {huge, 3}) == ShapeDtype{{1, 3}, DType::f32});
  CHECK(sig(tl::Flatten(), {2, huge, 3}) == ShapeDtype{{2, 3 * huge}, DType::f32});
  // initialised layers compare with their weights, still without data
  auto d = tl::Dense(7);
  d->init({{{2, 3}, DType::f32}});
  CHECK(sig(d, {huge, 3}) == ShapeDtype{{huge, 7}, DType::f32});
  // a rank-1 input is one row
  const Var y = run_checked(*d, randn({3}, 1));
  CHECK(y.shape() == Shape{7});
}
