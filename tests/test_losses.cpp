// Losses and metrics (training/losses.cpp) against naive loops and hand-computed
// values, float64 gradchecks with respect to the log-probabilities, Trax 1.3.4's
// layer arities and names, and the errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "training/losses.hpp"

using namespace minitrax;
namespace tr = minitrax::training;
namespace fm = minitrax::fastmath;
using autodiff::VarList;
using base::Stack;

namespace {

// Log-probabilities [shape..., vocab] from random logits (float64).
Tensor random_log_probs(const Shape& shape, std::uint64_t seed) {
  return core::log_softmax(
      core::normal(core::key_from_seed(static_cast<std::int64_t>(seed)), shape, DType::f64));
}

Tensor random_targets(const Shape& shape, std::int64_t vocab, std::uint64_t seed,
                      DType dtype = DType::i32) {
  return core::randint(core::key_from_seed(static_cast<std::int64_t>(seed)), shape, 0, vocab,
                       dtype);
}

Tensor random_weights(const Shape& shape, std::uint64_t seed) {
  // 0/1 masks with some fractional weights mixed in
  Tensor u = core::uniform(core::key_from_seed(static_cast<std::int64_t>(seed)), shape, DType::f64);
  std::vector<double> v = u.to_vector<double>();
  for (double& x : v) x = x < 0.25 ? 0.0 : (x < 0.5 ? x : 1.0);
  return Tensor::from<double>(shape, v);
}

// The naive weighted cross entropy: a loop over positions.
double naive_weighted_ce(const Tensor& lp, const Tensor& targets, const Tensor& weights) {
  const std::size_t vocab = lp.shape().back();
  const auto l = lp.to_vector<double>();
  const auto t = targets.to_vector<std::int64_t>();
  const auto w = weights.to_vector<double>();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    num += w[i] * -l[i * vocab + static_cast<std::size_t>(t[i])];
    den += w[i];
  }
  return num / den;
}

double value(const Var& v) {
  return v.value().item<double>();
}

}  // namespace

TEST_CASE("cross entropies: hand-computed values") {
  // two positions, three classes
  const Tensor lp = Tensor::from<double>({2, 3}, {std::log(0.5), std::log(0.25), std::log(0.25),
                                                  std::log(0.1), std::log(0.2), std::log(0.7)});
  const Tensor t = Tensor::from<std::int32_t>({2}, {0, 2});
  const Tensor w = Tensor::from<double>({2}, {1.0, 3.0});
  const double nll0 = -std::log(0.5), nll1 = -std::log(0.7);
  CHECK(value(tr::weighted_cross_entropy(lp, t, w)) ==
        doctest::Approx((nll0 * 1 + nll1 * 3) / 4).epsilon(1e-15));
  CHECK(value(tr::cross_entropy(lp, t)) == doctest::Approx((nll0 + nll1) / 2).epsilon(1e-15));
  CHECK(value(tr::cross_entropy_sum(lp, t, w)) == doctest::Approx(nll0 + 3 * nll1).epsilon(1e-15));
  const auto per = tr::nll_per_position(lp, t).value();
  CHECK(per.shape() == Shape{2});
  CHECK(per.flat(0) == doctest::Approx(nll0).epsilon(1e-15));
  CHECK(per.flat(1) == doctest::Approx(nll1).epsilon(1e-15));

  // the layers: Trax 1.3.4's CrossEntropyLoss takes (log_probs, targets, weights)
  auto loss = tr::CrossEntropyLoss();
  CHECK(loss->n_in() == 3);
  CHECK(loss->n_out() == 1);
  CHECK(loss->repr() == "CrossEntropyLoss_in3");
  CHECK(value((*loss)(Stack{lp, t, w})[0]) == value(tr::weighted_cross_entropy(lp, t, w)));
  CHECK(value((*tr::WeightedCategoryCrossEntropy())(Stack{lp, t, w})[0]) ==
        value(tr::weighted_cross_entropy(lp, t, w)));
  CHECK(value((*tr::CrossEntropySum())(Stack{lp, t, w})[0]) ==
        value(tr::cross_entropy_sum(lp, t, w)));
  auto ce = tr::CrossEntropy();
  CHECK(ce->n_in() == 2);
  CHECK(value((*ce)(Stack{lp, t})[0]) == value(tr::cross_entropy(lp, t)));
  // a single example: log_probs [V], target a scalar
  const Tensor lp1 = Tensor::from<double>({3}, {std::log(0.2), std::log(0.3), std::log(0.5)});
  CHECK(value(tr::cross_entropy(lp1, Tensor::from<std::int64_t>({}, {1}))) ==
        doctest::Approx(-std::log(0.3)).epsilon(1e-15));
}

TEST_CASE("weighted cross entropy: against a naive loop, one-hot form, float32 and int weights") {
  const Shape s{3, 5};
  const std::size_t vocab = 11;
  const Tensor lp = random_log_probs({3, 5, vocab}, 1);
  const Tensor t = random_targets(s, vocab, 2, DType::i64);
  const Tensor w = random_weights(s, 3);
  const double naive = naive_weighted_ce(lp, t, w);
  CHECK(value(tr::weighted_cross_entropy(lp, t, w)) == doctest::Approx(naive).epsilon(1e-14));
  // Trax 1.3.4's own formulation: -sum(one_hot * lp, -1), then the weighted mean
  const Tensor oh = core::one_hot(t, vocab, DType::f64);
  const Tensor per = core::neg(core::sum(core::mul(oh, lp), {-1}));
  const double trax = core::sum(core::mul(per, w)).item<double>() / core::sum(w).item<double>();
  CHECK(value(tr::weighted_cross_entropy(lp, t, w)) == doctest::Approx(trax).epsilon(1e-14));
  // float32 model output, float64 weights: the weights are converted
  const Tensor lp32 = lp.astype(DType::f32);
  const Var v32 = tr::weighted_cross_entropy(lp32, t, w);
  CHECK(v32.dtype() == DType::f32);
  CHECK(value(v32) == doctest::Approx(naive).epsilon(1e-5));
  // integer 0/1 masks work as weights
  const Tensor mask = core::greater(w, Tensor::scalar(0.0, DType::f64));  // int32
  CHECK(value(tr::weighted_cross_entropy(lp, t, mask)) ==
        doctest::Approx(naive_weighted_ce(lp, t, mask.astype(DType::f64))).epsilon(1e-14));
}

TEST_CASE("weights summing to zero give NaN, as Trax 1.3.4's sum(v * w) / sum(w)") {
  const Tensor lp = random_log_probs({4, 3}, 4);
  const Tensor t = random_targets({4}, 3, 5);
  const Tensor zeros = Tensor::zeros({4}, DType::f64);
  CHECK(std::isnan(value(tr::weighted_cross_entropy(lp, t, zeros))));
  CHECK(std::isnan(tr::weighted_accuracy(lp, t, zeros).item<double>()));
  // and the gradient is NaN too (0 / 0 per position), as jax.grad gives
  auto g = autodiff::grad(
      [&](const VarList& xs) { return tr::weighted_cross_entropy(xs[0], t, zeros); }, {lp});
  CHECK_FALSE(core::all_finite(g[0]));
}

TEST_CASE("gradchecks in float64 with respect to the log-probabilities (and weights)") {
  const Shape s{2, 3};
  const std::size_t vocab = 7;
  const Tensor lp = random_log_probs({2, 3, vocab}, 6);
  const Tensor t = random_targets(s, vocab, 7);
  const Tensor w = random_weights(s, 8);
  auto check = [](const autodiff::Fn& f, const std::vector<Tensor>& inputs) {
    const auto r = autodiff::gradcheck(f, inputs);
    CHECK_MESSAGE(r.ok, r.message);
    CHECK(r.n_checked > 0);
  };
  check([](const VarList& x) { return VarList{tr::weighted_cross_entropy(x[0], x[1], x[2])}; },
        {lp, t, w});
  check([](const VarList& x) { return VarList{tr::cross_entropy(x[0], x[1])}; }, {lp, t});
  check([](const VarList& x) { return VarList{tr::cross_entropy_sum(x[0], x[1], x[2])}; },
        {lp, t, w});
  check([](const VarList& x) { return VarList{tr::nll_per_position(x[0], x[1])}; }, {lp, t});
  check([](const VarList& x) { return VarList{tr::l2_loss(x[0], x[1], x[2])}; },
        {lp, random_log_probs({2, 3, vocab}, 9), random_weights({2, 3, vocab}, 10)});
  // through the layers, with from_logits (log_softmax inside)
  auto wcce = tr::WeightedCategoryCrossEntropy(/*from_logits=*/true);
  check(
      [&](const VarList& x) {
        return (*wcce)(Stack{x[0], x[1], x[2]});
      },
      {core::normal(core::key_from_seed(11), {2, 3, vocab}, DType::f64), t, w});
  auto cel = tr::CrossEntropyLoss();
  check([&](const VarList& x) { return (*cel)(Stack{x[0], x[1], x[2]}); }, {lp, t, w});
}

TEST_CASE(
    "the gradient is -w / sum(w) at each target, zero elsewhere; the tape keeps no [.., V] "
    "tensor") {
  const std::size_t vocab = 1000;
  const Tensor lp = random_log_probs({4, 8, vocab}, 12);
  const Tensor t = random_targets({4, 8}, vocab, 13);
  const Tensor w = random_weights({4, 8}, 14);
  Tape tape;
  Var x = tape.watch(lp);
  Var loss = tr::weighted_cross_entropy(x, t, w);
  const auto stats = tape.stats();
  CHECK(stats.saved_bytes < lp.nbytes() / 20);  // no one-hot, no copy of the log-probs
  const Tensor g = tape.gradient(loss, x);
  const auto gv = g.to_vector<double>();
  const auto tv = t.to_vector<std::int64_t>();
  const auto wv = w.to_vector<double>();
  double wsum = 0;
  for (double v : wv) wsum += v;
  bool ok = true;
  for (std::size_t p = 0; p < tv.size(); ++p) {
    for (std::size_t c = 0; c < vocab; ++c) {
      const double want = c == static_cast<std::size_t>(tv[p]) ? -wv[p] / wsum : 0.0;
      if (std::abs(gv[p * vocab + c] - want) > 1e-15) ok = false;
    }
  }
  CHECK(ok);
}

TEST_CASE("accuracy: argmax (first on ties) against targets, weighted") {
  // rows: argmax 2, 1 (tie between 1 and 2: the first), 0, 2
  const Tensor out = Tensor::from<float>(
      {4, 3}, {0.1f, 0.2f, 0.7f, 0.0f, 3.0f, 3.0f, 5.0f, 1.0f, 1.0f, -3.0f, -2.0f, -1.0f});
  const Tensor t = Tensor::from<std::int32_t>({4}, {2, 2, 0, 1});
  const Tensor w = Tensor::from<float>({4}, {1.0f, 1.0f, 2.0f, 4.0f});
  // hits: 1, 0, 1, 0
  CHECK(tr::accuracy(out, t).item<double>() == doctest::Approx(0.5));
  CHECK(tr::accuracy(out, t).dtype() == DType::f32);
  CHECK(tr::weighted_accuracy(out, t, w).item<double>() == doctest::Approx(3.0 / 8.0));
  auto acc = tr::Accuracy();
  CHECK(acc->n_in() == 3);
  CHECK(acc->repr() == "Accuracy_in3");
  CHECK(value((*acc)(Stack{out, t, w})[0]) == doctest::Approx(3.0 / 8.0));
  CHECK(value((*tr::WeightedCategoryAccuracy())(Stack{out, t, w})[0]) ==
        doctest::Approx(3.0 / 8.0));
  auto cat = tr::CategoryAccuracy();
  CHECK(cat->n_in() == 2);
  CHECK(value((*cat)(Stack{out, t})[0]) == doctest::Approx(0.5));
  // a naive loop on a bigger random case
  const Tensor lp = random_log_probs({6, 5, 4}, 15);
  const Tensor tt = random_targets({6, 5}, 4, 16);
  const Tensor ww = random_weights({6, 5}, 17);
  const auto l = lp.to_vector<double>();
  const auto tv = tt.to_vector<std::int64_t>();
  const auto wv = ww.to_vector<double>();
  double hits = 0, total = 0;
  for (std::size_t p = 0; p < tv.size(); ++p) {
    std::size_t best = 0;
    for (std::size_t c = 1; c < 4; ++c) {
      if (l[p * 4 + c] > l[p * 4 + best]) best = c;
    }
    hits += (static_cast<std::int64_t>(best) == tv[p]) * wv[p];
    total += wv[p];
  }
  CHECK(tr::weighted_accuracy(lp, tt, ww).item<double>() == doctest::Approx(hits / total));
  // not differentiable: a constant, even when the output is on a tape
  Tape tape;
  Var x = tape.watch(lp);
  Var a = (*tr::Accuracy())(Stack{x, tt, ww})[0];
  CHECK_FALSE(a.on_tape());
}

TEST_CASE("L2Loss and SumOfWeights (Trax 1.3.4's metrics_test values)") {
  const Tensor x = Tensor::from<double>({2, 2}, {1, 1, 1, 1});
  const Tensor target = Tensor::from<double>({2, 2}, {1, 1, 1, 0});
  CHECK(value((*tr::L2Loss())(Stack{x, target, Tensor::from<double>({2, 2}, {1, 1, 1, 0})})[0]) ==
        0.0);
  CHECK(value((*tr::L2Loss())(Stack{x, target, Tensor::from<double>({2, 2}, {1, 0, 0, 1})})[0]) ==
        0.5);
  CHECK(value((*tr::SumOfWeights())(Stack{x, target, Tensor::from<double>({2}, {2, 3})})[0]) ==
        5.0);
}

TEST_CASE("output signatures come from a rule (no NaN from zero weights)") {
  autodiff::set_debug_nans(true);
  const base::Signature in{{{2, 3, 5}, DType::f32}, {{2, 3}, DType::i32}, {{2, 3}, DType::f32}};
  for (const auto& layer : {tr::CrossEntropyLoss(), tr::Accuracy(), tr::CrossEntropySum()}) {
    const auto sig = layer->output_signature(in);
    REQUIRE(sig.size() == 1);
    CHECK(sig[0].shape == Shape{});
    CHECK(sig[0].dtype == DType::f32);
  }
  autodiff::set_debug_nans(false);
}

TEST_CASE("errors name the loss and what is expected") {
  const Tensor lp = random_log_probs({2, 3, 4}, 18);
  const Tensor t = random_targets({2, 3}, 4, 19);
  const Tensor w = Tensor::ones({2, 3}, DType::f64);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THROWS_AS(tr::weighted_cross_entropy(lp, t.astype(DType::f32), w), DTypeError);
  CHECK(message([&] {
          tr::weighted_cross_entropy(lp, t.astype(DType::f32), w);
        }).find("targets must be int32 or int64 class ids, got float32") != std::string::npos);
  CHECK_THROWS_AS(tr::weighted_cross_entropy(lp, Tensor::zeros({2, 4}, DType::i32), w), ShapeError);
  CHECK(message([&] {
          tr::cross_entropy(lp, Tensor::zeros({3, 2}, DType::i32));
        }).find("model output [2, 3, 4], so targets [2, 3], got [3, 2]") != std::string::npos);
  CHECK_THROWS_AS(tr::weighted_cross_entropy(lp, t, Tensor::ones({3}, DType::f64)), ShapeError);
  CHECK(message([&] {
          tr::weighted_accuracy(lp, t, Tensor::ones({6}, DType::f64));
        }).find("weights must have the targets' shape [2, 3], got [6]") != std::string::npos);
  CHECK_THROWS_AS(tr::cross_entropy(Tensor::scalar(0.0, DType::f64), Tensor::zeros({}, DType::i32)),
                  ShapeError);
  CHECK_THROWS_AS(tr::cross_entropy(t, t), DTypeError);  // int model output
  // an id outside [0, vocab)
  const Tensor bad = Tensor::from<std::int32_t>({2, 3}, {0, 1, 2, 3, 4, 0});
  CHECK_THROWS_AS(tr::weighted_cross_entropy(lp, bad, w), ValueError);
  // through a layer: a LayerError with the layer's name and where it was made
  auto loss = tr::CrossEntropyLoss();
  const std::string msg = message([&] { (*loss)(Stack{lp, t.astype(DType::f32), w}); });
  CHECK(msg.find("CrossEntropyLoss (created at tests/test_losses.cpp:") == 0);
  CHECK(msg.find("CrossEntropyLoss: targets must be int32 or int64") != std::string::npos);
  CHECK_THROWS_AS((*loss)(Stack{lp, t}), base::LayerError);  // two inputs for three
}
