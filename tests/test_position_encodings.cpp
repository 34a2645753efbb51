// Tests of AxialPositionalEncoding (layers/research/position_encodings.hpp).
//
// Values are checked against a naive loop over (example, position, feature) that
// decomposes each position into its grid digits (last axis fastest, as numpy's
// reshape) and reads the axis tables directly, written without the library's ops.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layer_test_util.hpp"
#include "layers/combinators.hpp"
#include "layers/initializers.hpp"
#include "layers/layer_gradcheck.hpp"
#include "layers/research/position_encodings.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace tr = minitrax::layers::research;
namespace init = minitrax::layers::init;
using base::Layer;
using base::LayerPtr;
using base::Mode;
using base::ShapeDtype;
using base::Signature;
using core::key_from_seed;

namespace {
using minitrax::testutil::contains;
using minitrax::testutil::error_message;
using minitrax::testutil::layer_error;

using minitrax::testutil::check_gradients;
using minitrax::testutil::randn;
using minitrax::testutil::run_checked;
using minitrax::testutil::vals;

// emb[p * d + j] for every position p < prod(shape): the naive concatenation.
std::vector<double> naive_embedding(const Layer& layer, const Shape& shape, const Shape& d_embs) {
  const auto named = layer.flat_weights();
  REQUIRE(named.size() == shape.size());
  std::vector<std::vector<double>> tables;
  for (const auto& w : named) tables.push_back(vals(w.value));
  std::size_t n_pos = 1, d = 0;
  for (std::size_t s : shape) n_pos *= s;
  for (std::size_t e : d_embs) d += e;
  std::vector<double> emb(n_pos * d);
  for (std::size_t p = 0; p < n_pos; ++p) {
    std::vector<std::size_t> digit(shape.size());
    std::size_t rest = p;
    for (std::size_t a = shape.size(); a-- > 0;) {  // last axis fastest
      digit[a] = rest % shape[a];
      rest /= shape[a];
    }
    std::size_t j = 0;
    for (std::size_t a = 0; a < shape.size(); ++a) {
      // table a is [1, .., shape[a], .., 1, d_embs[a]]: row digit[a], column k
      for (std::size_t k = 0; k < d_embs[a]; ++k)
        emb[p * d + j++] = tables[a][digit[a] * d_embs[a] + k];
    }
  }
  return emb;
}

const Shape kShape{3, 4, 2};
const Shape kDembs{2, 3, 1};
LayerPtr make(double dropout = 0.0, std::vector<long> dims = {}, Mode mode = Mode::train) {
  return tr::AxialPositionalEncoding({3, 4, 2}, {2, 3, 1}, init::RandomNormal(1.0), dropout,
                                     std::move(dims), mode);
}

}  // namespace

TEST_CASE("AxialPositionalEncoding: one weight per axis, drawn from split(rng, n_axes)") {
  auto pe = make();
  pe->init({{{2, 24, 6}, DType::f32}}, key_from_seed(5));
  const auto named = pe->flat_weights();
  REQUIRE(named.size() == 3);
  CHECK(named[0].name == "AxialPositionalEncoding/ax0");
  CHECK(named[1].name == "AxialPositionalEncoding/ax1");
  CHECK(named[2].name == "AxialPositionalEncoding/ax2");
  CHECK(named[0].value.shape() == Shape{1, 3, 1, 1, 2});
  CHECK(named[1].value.shape() == Shape{1, 1, 4, 1, 3});
  CHECK(named[2].value.shape() == Shape{1, 1, 1, 2, 1});
  const auto keys = core::split(key_from_seed(5), 3);
  for (std::size_t a = 0; a < 3; ++a) {
    CHECK(vals(named[a].value) ==
          vals(init::RandomNormal(1.0)(keys[a], named[a].value.shape(), DType::f32)));
  }
  CHECK(pe->flat_state().empty());  // no state outside predict mode
  // float64 inputs give float64 weights with the same values
  auto pe64 = make();
  pe64->init({{{1, 24, 6}, DType::f64}}, key_from_seed(5));
  CHECK(pe64->flat_weights()[1].value.dtype() == DType::f64);
  CHECK(vals(pe64->flat_weights()[1].value) == vals(named[1].value));
  // inside a combinator the weights are named by path
  auto s = tl::Serial({make()});
  s->init({{{1, 24, 6}, DType::f32}});
  CHECK(s->flat_weights()[2].name == "Serial/AxialPositionalEncoding_0/ax2");
}

TEST_CASE("AxialPositionalEncoding: x + the concatenated axis embeddings (naive loop)") {
  struct Case {
    std::vector<long> shape, d_embs;
  };
  for (const Case& c : {Case{{3, 4, 2}, {2, 3, 1}}, Case{{5}, {4}}, Case{{2, 3}, {1, 2}}}) {
    const Shape shape(c.shape.begin(), c.shape.end()), d_embs(c.d_embs.begin(), c.d_embs.end());
    std::size_t n_pos = 1, d = 0;
    for (std::size_t v : shape) n_pos *= v;
    for (std::size_t v : d_embs) d += v;
    CAPTURE(n_pos);
    auto pe = tr::AxialPositionalEncoding(c.shape, c.d_embs);
    const Tensor x = randn({2, n_pos, d}, 11);
    pe->init({{x.shape(), x.dtype()}}, key_from_seed(12));
    const auto emb = naive_embedding(*pe, shape, d_embs);
    const auto xv = vals(x), y = vals(run_checked(*pe, x));
    REQUIRE(y.size() == xv.size());
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t p = 0; p < n_pos; ++p) {
        for (std::size_t j = 0; j < d; ++j) {
          const std::size_t i = (b * n_pos + p) * d + j;
          CHECK(y[i] == doctest::Approx(xv[i] + emb[p * d + j]).epsilon(1e-6));
        }
      }
    }
    // eval mode is the same function (no dropout here)
    pe->set_mode(Mode::eval);
    CHECK(vals((*pe)(Var(x))) == y);
  }
}

TEST_CASE("AxialPositionalEncoding: a shorter sequence gets the first L positions") {
  auto pe = make();
  pe->init({{{2, 24, 6}, DType::f32}}, key_from_seed(3));
  const auto emb = naive_embedding(*pe, kShape, kDembs);
  for (std::size_t len : {1u, 7u, 10u, 23u}) {
    CAPTURE(len);
    const Tensor x = randn({3, len, 6}, 20 + static_cast<std::int64_t>(len));
    const auto xv = vals(x), y = vals(run_checked(*pe, x));
    for (std::size_t b = 0; b < 3; ++b) {
      for (std::size_t p = 0; p < len; ++p) {
        for (std::size_t j = 0; j < 6; ++j) {
          const std::size_t i = (b * len + p) * 6 + j;
          CHECK(y[i] == doctest::Approx(xv[i] + emb[p * 6 + j]).epsilon(1e-6));
        }
      }
    }
  }
  // a layer initialised for a short sequence also runs the full length
  auto short_init = make();
  short_init->init({{{1, 5, 6}, DType::f32}}, key_from_seed(3));
  CHECK(vals(short_init->flat_weights()[0].value) == vals(pe->flat_weights()[0].value));
  CHECK(run_checked(*short_init, randn({1, 24, 6}, 4)).shape() == Shape{1, 24, 6});
}

TEST_CASE("AxialPositionalEncoding: dropout masks follow the noise shape; eval has none") {
  const Tensor x = randn({3, 24, 6}, 30);
  const auto xv = vals(x);
  // noise shape [batch, 3, 4, 2, 6] with broadcast dims set to 1
  struct Case {
    std::vector<long> dims;
    Shape noise;
  };
  for (const Case& c :
       {Case{{0, 2}, {1, 3, 1, 2, 6}}, Case{{-1}, {3, 3, 4, 2, 1}}, Case{{}, {3, 3, 4, 2, 6}}}) {
    CAPTURE(c.noise);
    auto pe = make(0.5, c.dims);
    pe->init({{x.shape(), x.dtype()}}, key_from_seed(31));
    const auto emb = naive_embedding(*pe, kShape, kDembs);
    pe->set_rng(key_from_seed(32));
    const auto y = vals(run_checked(*pe, x));
    // the mask as Trax draws it, read through the broadcast by plain index arithmetic
    const auto m = vals(core::bernoulli(key_from_seed(32), 0.5, c.noise));
    std::set<double> ratios;
    for (std::size_t b = 0; b < 3; ++b) {
      for (std::size_t p = 0; p < 24; ++p) {
        const std::size_t idx[5] = {b, p / 8, (p / 2) % 4, p % 2, 0};
        for (std::size_t j = 0; j < 6; ++j) {
          std::size_t flat = 0;
          for (std::size_t a = 0; a < 5; ++a) {
            const std::size_t i = a == 4 ? j : idx[a];
            flat = flat * c.noise[a] + (c.noise[a] == 1 ? 0 : i);
          }
          const std::size_t i = (b * 24 + p) * 6 + j;
          const double want = xv[i] + emb[p * 6 + j] * m[flat] * 2.0;
          CHECK(y[i] == doctest::Approx(want).epsilon(1e-5));
          ratios.insert(std::round((y[i] - xv[i]) / emb[p * 6 + j]));
        }
      }
    }
    CHECK(ratios == std::set<double>{0.0, 2.0});  // both kept (x2) and dropped entries
    // a shorter sequence gets the first L positions of the full-length mask
    const Tensor x10 = core::slice(x, 1, 0, 10);
    const auto y10 = vals((*pe)(Var(x10)));
    for (std::size_t b = 0; b < 3; ++b) {
      for (std::size_t i = 0; i < 10 * 6; ++i) CHECK(y10[b * 60 + i] == y[b * 144 + i]);
    }
    // eval: no dropout
    pe->set_mode(Mode::eval);
    const auto e = vals((*pe)(Var(x)));
    for (std::size_t i = 0; i < e.size(); ++i) {
      CHECK(e[i] == doctest::Approx(xv[i] + emb[i % 144]).epsilon(1e-6));
    }
  }
  // with broadcast dims {0, 2} the mask is constant over the batch and grid axis 1
  auto pe = make(0.5, {0, 2});
  pe->init({{x.shape(), x.dtype()}});
  pe->set_rng(key_from_seed(33));
  const auto y = vals((*pe)(Var(x)));
  const auto emb = naive_embedding(*pe, kShape, kDembs);
  auto ratio = [&](std::size_t b, std::size_t i0, std::size_t i1, std::size_t i2, std::size_t j) {
    const std::size_t p = (i0 * 4 + i1) * 2 + i2, i = (b * 24 + p) * 6 + j;
    return std::round((y[i] - xv[i]) / emb[p * 6 + j]);
  };
  for (std::size_t i0 = 0; i0 < 3; ++i0) {
    for (std::size_t i2 = 0; i2 < 2; ++i2) {
      for (std::size_t j = 0; j < 6; ++j) {
        for (std::size_t b = 0; b < 3; ++b) {
          for (std::size_t i1 = 0; i1 < 4; ++i1) {
            CHECK(ratio(b, i0, i1, i2, j) == ratio(0, i0, 0, i2, j));
          }
        }
      }
    }
  }
}

TEST_CASE("AxialPositionalEncoding: predict mode, position by position, equals eval") {
  auto ev = make(0.3, {}, Mode::eval);  // dropout is off outside train mode
  const Tensor x = randn({2, 24, 6}, 40);
  ev->init({{x.shape(), x.dtype()}}, key_from_seed(41));
  const auto full = vals((*ev)(Var(x)));

  auto pr = make(0.3, {}, Mode::predict);
  pr->init({{{2, 1, 6}, DType::f32}}, key_from_seed(41));
  const auto st = pr->flat_state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].value.dtype() == DType::i32);
  CHECK(st[0].value.shape() == Shape{});
  CHECK(st[0].value.item<std::int32_t>() == 0);
  CHECK(vals(pr->flat_weights()[1].value) == vals(ev->flat_weights()[1].value));
  for (std::size_t p = 0; p < 24; ++p) {
    const auto y =
        vals(run_checked(*pr, core::slice(x, 1, static_cast<long>(p), static_cast<long>(p + 1))));
    for (std::size_t b = 0; b < 2; ++b) {
      for (std::size_t j = 0; j < 6; ++j) CHECK(y[b * 6 + j] == full[(b * 24 + p) * 6 + j]);
    }
    CHECK(pr->flat_state()[0].value.item<std::int32_t>() == static_cast<std::int32_t>(p + 1));
  }
  CHECK(layer_error([&] {
          (*pr)(Var(Tensor::zeros({2, 1, 6})));
        }) ==
        "predict mode: at position 24, 1 more position(s) would pass prod(shape) = 24 "
        "(shape [3, 4, 2])");
  // several positions per call
  pr->set_flat_state({Tensor::scalar(0, DType::i32)});
  const auto a = vals((*pr)(Var(core::slice(x, 1, 0, 5))));
  const auto b = vals((*pr)(Var(core::slice(x, 1, 5, 24))));
  for (std::size_t e = 0; e < 2; ++e) {
    for (std::size_t i = 0; i < 5 * 6; ++i) CHECK(a[e * 30 + i] == full[e * 144 + i]);
    for (std::size_t i = 0; i < 19 * 6; ++i) CHECK(b[e * 114 + i] == full[e * 144 + 30 + i]);
  }
  CHECK(pr->flat_state()[0].value.item<std::int32_t>() == 24);
  // a layer initialised in another mode starts at position 0 when switched to predict
  ev->set_mode(Mode::predict);
  const auto first = vals((*ev)(Var(core::slice(x, 1, 0, 1))));
  for (std::size_t j = 0; j < 6; ++j) CHECK(first[j] == full[j]);
  CHECK(ev->flat_state()[0].value.item<std::int32_t>() == 1);
  pr->set_flat_state({Tensor::zeros({2}, DType::i32)});
  CHECK(layer_error([&] {
          (*pr)(Var(Tensor::zeros({2, 1, 6})));
        }) == "predict mode: the state must be an int32 scalar (the next position), got [2] int32");
}

TEST_CASE("AxialPositionalEncoding: float64 gradcheck over the input and every axis table") {
  SUBCASE("train, full length") {
    auto pe = tr::AxialPositionalEncoding({2, 3}, {2, 1});
    pe->init({{{2, 6, 3}, DType::f32}});
    check_gradients(*pe, {randn({2, 6, 3}, 50, DType::f64)});
  }
  SUBCASE("a shorter sequence (only some rows get a gradient)") {
    auto pe = tr::AxialPositionalEncoding({2, 3, 2}, {1, 2, 1});
    pe->init({{{2, 7, 4}, DType::f64}});
    check_gradients(*pe, {randn({2, 7, 4}, 51, DType::f64)});
  }
  SUBCASE("train with dropout and broadcast dims") {
    auto pe = tr::AxialPositionalEncoding({2, 3}, {2, 2}, init::RandomNormal(1.0), 0.4, {2});
    pe->init({{{3, 6, 4}, DType::f64}});
    check_gradients(*pe, {randn({3, 6, 4}, 52, DType::f64)}, key_from_seed(53));
  }
  SUBCASE("predict, from position 2") {
    auto pe = tr::AxialPositionalEncoding({2, 3}, {2, 1}, init::RandomNormal(1.0), 0.0, {},
                                          Mode::predict);
    pe->init({{{2, 3, 3}, DType::f64}});
    pe->set_flat_state({Tensor::scalar(2, DType::i32)});
    check_gradients(*pe, {randn({2, 3, 3}, 54, DType::f64)});
  }
}

TEST_CASE("AxialPositionalEncoding: output_signature touches no data") {
  const std::size_t huge = std::size_t{1} << 40;
  auto pe = tr::AxialPositionalEncoding();  // Trax's defaults: 12288 positions of width 1024
  CHECK(pe->output_signature({{{huge, 12288, 1024}, DType::f32}}).at(0) ==
        ShapeDtype{{huge, 12288, 1024}, DType::f32});
  auto& layer = dynamic_cast<tr::AxialPositionalEncodingLayer&>(*pe);
  CHECK(layer.max_len() == 12288);
  CHECK(layer.d_feature() == 1024);
  CHECK(pe->repr() == "AxialPositionalEncoding");
}

TEST_CASE("AxialPositionalEncoding: error messages") {
  auto ctor = [](std::vector<long> shape, std::vector<long> d_embs, double dropout = 0.0,
                 std::vector<long> dims = {}) {
    return error_message([&] {
      tr::AxialPositionalEncoding(shape, d_embs, init::RandomNormal(1.0), dropout, dims);
    });
  };
  CHECK(ctor({3, 4}, {2, 3, 1}) ==
        "AxialPositionalEncoding: shape and d_embs must have one entry per axis each, got shape "
        "[3, 4] (2 axes) and d_embs [2, 3, 1] (3 entries)");
  CHECK(ctor({}, {}) == "AxialPositionalEncoding: shape must have at least one axis, got []");
  CHECK(ctor({3, 0}, {2, 3}) ==
        "AxialPositionalEncoding: every shape entry must be positive, got shape [3, 0]");
  CHECK(ctor({3, -4}, {2, 3}) ==
        "AxialPositionalEncoding: every shape entry must be positive, got shape [3, -4]");
  CHECK(ctor({3, 4}, {2, 0}) ==
        "AxialPositionalEncoding: every d_embs entry must be positive, got d_embs [2, 0]");
  CHECK(ctor({65536, 65536}, {2, 3}) ==
        "AxialPositionalEncoding: prod(shape) must be at most 2147483647 (positions are int32), "
        "got shape [65536, 65536]");
  CHECK(ctor({3, 4}, {2, 3}, 1.0) == "AxialPositionalEncoding: dropout must be in [0, 1), got 1");
  CHECK(ctor({3, 4}, {2, 3}, -0.1) ==
        "AxialPositionalEncoding: dropout must be in [0, 1), got -0.1");
  CHECK(ctor({3, 4}, {2, 3}, 0.1, {4}) ==
        "AxialPositionalEncoding: dropout_broadcast_dims must be axes of the embedding [batch, 3, "
        "4, d_feature] (-4 to 3), got 4");
  CHECK(ctor({3, 4}, {2, 3}, 0.1, {-5}) ==
        "AxialPositionalEncoding: dropout_broadcast_dims must be axes of the embedding [batch, 3, "
        "4, d_feature] (-4 to 3), got -5");
  CHECK(error_message([] { tr::AxialPositionalEncoding({3}, {2}, init::Initializer()); }) ==
        "AxialPositionalEncoding: the kernel initializer is empty");

  // at init: sum(d_embs) != d_feature (a ValueError, as Trax), wrapped in the layer's frame
  auto pe = make();
  const std::string sum_msg =
      "sum(d_embs) must equal d_feature, the input's last axis: sum([2, 3, 1]) = 6, got an "
      "input [2, 24, 7]";
  CHECK(layer_error([&] { pe->init({{{2, 24, 7}, DType::f32}}); }) == sum_msg);
  const std::string full = error_message([&] { pe->init({{{2, 24, 7}, DType::f32}}); });
  CHECK(contains(full, "AxialPositionalEncoding (created at "));
  CHECK(contains(full, "init with inputs [2, 24, 7] float32"));
  pe->init({{{2, 24, 6}, DType::f32}});
  CHECK(layer_error([&] { (*pe)(Var(Tensor::zeros({2, 24, 7}))); }) == sum_msg);
  CHECK(layer_error([&] {
          (*pe)(Var(Tensor::zeros({2, 25, 6})));
        }) ==
        "the sequence length 25 exceeds prod(shape) = 24 (shape [3, 4, 2]), the number of "
        "positions encoded");
  CHECK(layer_error([&] {
          pe->output_signature({{{24, 6}, DType::f32}});
        }) == "expected an input [batch, length, d_feature] of rank 3, got shape [24, 6]");
  CHECK(layer_error([&] {
          (*pe)(Var(Tensor::zeros({2, 24, 6}, DType::i32)));
        }) == "expected a float32 or float64 input, got int32");
  CHECK(layer_error([&] {
          (*pe)(Var(Tensor::zeros({2, 24, 6}, DType::f64)));
        }) ==
        "the input is float64 but the weight ax0 is float32 (init with float64 inputs, or "
        "convert the layer with base::cast_layer)");
  // a wrong-length sequence in predict mode is caught before running
  auto pr = make(0.0, {}, Mode::predict);
  pr->init({{{1, 1, 6}, DType::f32}});
  CHECK(layer_error([&] {
          (*pr)(Var(Tensor::zeros({1, 25, 6})));
        }) ==
        "the sequence length 25 exceeds prod(shape) = 24 (shape [3, 4, 2]), the number of "
        "positions encoded");
  pr->set_flat_state({Tensor::scalar(20, DType::i32)});
  CHECK(layer_error([&] {
          (*pr)(Var(Tensor::zeros({1, 5, 6})));
        }) ==
        "predict mode: at position 20, 5 more position(s) would pass prod(shape) = 24 "
        "(shape [3, 4, 2])");
}
