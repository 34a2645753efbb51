// Optimizers (training/optimizers.cpp): each against an independent reference of
// its update rule written here in plain double loops, run side by side for several
// steps on random weights and gradients; convergence on a small least-squares
// problem with gradients from autodiff::grad; weight decay, gradient clipping,
// slot round trips (bit for bit), and the errors for bad hyperparameters.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "training/optimizers.hpp"

using namespace minitrax;
namespace tr = minitrax::training;
namespace fm = minitrax::fastmath;
using autodiff::VarList;
using Vec = std::vector<double>;

namespace {

// ---- reference rules: one weight, plain doubles ---------------------------------------------

struct RefWeight {
  Shape shape;
  Vec w;
  std::vector<Vec> slots;  // whatever the rule keeps
};

double mean_of(const Vec& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

using RefRule = std::function<void(long step, const Vec& g, RefWeight& rw)>;

RefRule ref_sgd(double lr) {
  return [lr](long, const Vec& g, RefWeight& rw) {
    for (std::size_t i = 0; i < g.size(); ++i) rw.w[i] = rw.w[i] - lr * g[i];
  };
}

RefRule ref_momentum(double lr, double mass, double wd, bool nesterov) {
  return [=](long, const Vec& g, RefWeight& rw) {
    if (rw.slots.empty()) rw.slots.assign(1, Vec(g.size(), 0.0));
    Vec& v = rw.slots[0];
    for (std::size_t i = 0; i < g.size(); ++i) {
      v[i] = mass * v[i] + g[i];
      const double u = nesterov ? mass * v[i] + g[i] : v[i];
      rw.w[i] = (1 - wd) * rw.w[i] - lr * u;
    }
  };
}

RefRule ref_adam(double lr, double wd, double b1, double b2, double eps) {
  return [=](long step, const Vec& g, RefWeight& rw) {
    if (rw.slots.empty()) rw.slots.assign(2, Vec(g.size(), 0.0));
    Vec& m = rw.slots[0];
    Vec& v = rw.slots[1];
    for (std::size_t i = 0; i < g.size(); ++i) {
      m[i] = (1 - b1) * g[i] + b1 * m[i];
      v[i] = (1 - b2) * g[i] * g[i] + b2 * v[i];
      const double mhat = m[i] / (1 - std::pow(b1, step + 1));
      const double vhat = v[i] / (1 - std::pow(b2, step + 1));
      rw.w[i] = (1 - wd) * rw.w[i] - lr * mhat / (std::sqrt(vhat) + eps);
    }
  };
}

// Adafactor as written in the paper / Trax's adafactor.py, with explicit row and
// column means over multi-indices [b, r, c].
RefRule ref_adafactor(const tr::AdafactorOptions& o) {
  return [o](long step, const Vec& g, RefWeight& rw) {
    const std::size_t n = g.size();
    const bool factored = o.factored && rw.shape.size() >= 2;
    const std::size_t C = factored ? rw.shape.back() : 1;
    const std::size_t R = factored ? rw.shape[rw.shape.size() - 2] : 1;
    const std::size_t B = factored ? n / (R * C) : 1;
    if (rw.slots.empty()) {
      if (factored) {
        rw.slots.push_back(Vec(B * R, 0.0));
        rw.slots.push_back(Vec(B * C, 0.0));
      } else {
        rw.slots.push_back(Vec(n, 0.0));
      }
      rw.slots.push_back(Vec(n, 0.0));  // momentum (used only with do_momentum)
    }
    const double t = static_cast<double>(step) + 1;
    const double decay = 1 - std::pow(t, -o.decay_rate);
    double scale = o.learning_rate;
    if (o.multiply_by_parameter_scale) {
      Vec w2(n);
      for (std::size_t i = 0; i < n; ++i) w2[i] = rw.w[i] * rw.w[i];
      scale *= std::max(std::sqrt(mean_of(w2)), o.epsilon2);
    }
    Vec g2(n), y(n);
    for (std::size_t i = 0; i < n; ++i) g2[i] = g[i] * g[i] + o.epsilon1;
    if (factored) {
      Vec& vr = rw.slots[0];
      Vec& vc = rw.slots[1];
      for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t r = 0; r < R; ++r) {
          Vec row(C);
          for (std::size_t c = 0; c < C; ++c) row[c] = g2[(b * R + r) * C + c];
          vr[b * R + r] = decay * vr[b * R + r] + (1 - decay) * mean_of(row);
        }
        for (std::size_t c = 0; c < C; ++c) {
          Vec col(R);
          for (std::size_t r = 0; r < R; ++r) col[r] = g2[(b * R + r) * C + c];
          vc[b * C + c] = decay * vc[b * C + c] + (1 - decay) * mean_of(col);
        }
        const double rcm = mean_of(Vec(vr.begin() + static_cast<long>(b * R),
                                       vr.begin() + static_cast<long>((b + 1) * R)));
        for (std::size_t r = 0; r < R; ++r) {
          for (std::size_t c = 0; c < C; ++c) {
            const std::size_t i = (b * R + r) * C + c;
            y[i] = g[i] * std::pow(vr[b * R + r] / rcm, -0.5) * std::pow(vc[b * C + c], -0.5);
          }
        }
      }
    } else {
      Vec& v = rw.slots[0];
      for (std::size_t i = 0; i < n; ++i) {
        v[i] = decay * v[i] + (1 - decay) * g2[i];
        y[i] = g[i] * std::pow(v[i], -0.5);
      }
    }
    if (o.do_clipping) {
      Vec y2(n);
      for (std::size_t i = 0; i < n; ++i) y2[i] = y[i] * y[i];
      const double denom = std::max(1.0, std::sqrt(mean_of(y2)) / o.clipping_threshold);
      for (double& yi : y) yi /= denom;
    }
    Vec& m = rw.slots.back();
    for (std::size_t i = 0; i < n; ++i) {
      double sub = scale * y[i];
      if (o.do_momentum) {
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * sub;
        sub = m[i];
      }
      rw.w[i] = (1 - o.weight_decay_rate) * rw.w[i] - sub;
    }
  };
}

// ---- the side-by-side driver --------------------------------------------------------------------

Tensor random_tensor(const Shape& shape, std::int64_t seed, DType dtype, double scale = 1.0) {
  return core::mul(core::normal(core::key_from_seed(seed), shape, DType::f64), scale).astype(dtype);
}

const std::vector<Shape> kShapes = {{4, 5}, {7}, {2, 3, 4}, {}, {1, 6}, {3, 1}};

// Runs `opt` and the reference for `steps` steps on the same random gradients,
// returning the largest |ours - ref| / (1 + |ref|) seen (weights, after each step).
double run_side_by_side(tr::Optimizer& opt, const RefRule& ref, int steps, DType dtype,
                        std::optional<double> clip, double grad_scale = 1.0, long first_step = 0) {
  std::vector<Tensor> ws;
  std::vector<RefWeight> refs;
  for (std::size_t k = 0; k < kShapes.size(); ++k) {
    ws.push_back(random_tensor(kShapes[k], 100 + static_cast<std::int64_t>(k), dtype));
    refs.push_back({kShapes[k], ws.back().to_vector<double>(), {}});
  }
  opt.init(ws);
  double worst = 0;
  for (int s = 0; s < steps; ++s) {
    const long step = first_step + s;
    std::vector<Tensor> gs;
    std::vector<Vec> gv;
    double norm2 = 0;
    for (std::size_t k = 0; k < kShapes.size(); ++k) {
      gs.push_back(random_tensor(kShapes[k], 1000 * (s + 1) + static_cast<std::int64_t>(k), dtype,
                                 grad_scale));
      gv.push_back(gs.back().to_vector<double>());
      for (double x : gv.back()) norm2 += x * x;
    }
    // the reference's clipping: global norm over all gradients
    const double norm = std::sqrt(norm2);
    if (clip && !(norm < *clip)) {
      for (Vec& g : gv) {
        for (double& x : g) x *= *clip / norm;
      }
    }
    const auto metrics = opt.update(step, gs, ws);
    CHECK(metrics.gradients_l2 == doctest::Approx(norm).epsilon(1e-12));
    for (std::size_t k = 0; k < kShapes.size(); ++k) {
      ref(step, gv[k], refs[k]);
      const auto ours = ws[k].to_vector<double>();
      REQUIRE(ours.size() == refs[k].w.size());
      for (std::size_t i = 0; i < ours.size(); ++i) {
        worst = std::max(worst, std::abs(ours[i] - refs[k].w[i]) / (1 + std::abs(refs[k].w[i])));
      }
    }
  }
  return worst;
}

void check_against_reference(const std::function<std::unique_ptr<tr::Optimizer>()>& make,
                             const RefRule& ref, std::optional<double> clip = std::nullopt,
                             double grad_scale = 1.0) {
  for (long first_step : {0L, 1L}) {
    auto opt = make();
    opt->set_clip_grad_norm(clip);
    const double err64 = run_side_by_side(*opt, ref, 6, DType::f64, clip, grad_scale, first_step);
    CHECK_MESSAGE(err64 < 1e-14, opt->name(), " float64 from step ", first_step, ": ", err64);
    auto opt32 = make();
    opt32->set_clip_grad_norm(clip);
    const double err32 = run_side_by_side(*opt32, ref, 6, DType::f32, clip, grad_scale, first_step);
    CHECK_MESSAGE(err32 < 2e-6, opt->name(), " float32 from step ", first_step, ": ", err32);
  }
}

}  // namespace

// ---- each optimizer against its reference
// --------------------------------------------------------

TEST_CASE("SGD against the reference") {
  check_against_reference(
      [] { return std::make_unique<tr::SGD>(tr::SGDOptions{.learning_rate = 0.1}); }, ref_sgd(0.1));
}

TEST_CASE("Momentum against the reference, Nesterov and plain") {
  for (bool nesterov : {true, false}) {
    INFO("nesterov ", nesterov);
    tr::MomentumOptions o{
        .learning_rate = 0.05, .mass = 0.8, .weight_decay_rate = 1e-3, .nesterov = nesterov};
    check_against_reference([o] { return std::make_unique<tr::Momentum>(o); },
                            ref_momentum(0.05, 0.8, 1e-3, nesterov));
  }
  CHECK(tr::Momentum().nesterov());  // Trax's default
}

TEST_CASE("Adam against the reference (Trax defaults and others)") {
  check_against_reference([] { return std::make_unique<tr::Adam>(); },
                          ref_adam(1e-4, 1e-5, 0.9, 0.999, 1e-5));
  tr::AdamOptions o{
      .learning_rate = 0.01, .weight_decay_rate = 0.01, .b1 = 0.5, .b2 = 0.9, .eps = 1e-3};
  check_against_reference([o] { return std::make_unique<tr::Adam>(o); },
                          ref_adam(0.01, 0.01, 0.5, 0.9, 1e-3));
}

TEST_CASE("Adafactor against the reference: factored, full, momentum, clipping, scaling") {
  std::vector<tr::AdafactorOptions> variants;
  variants.push_back({});  // Trax's defaults
  variants.push_back({.factored = false});
  variants.push_back({.do_momentum = true, .beta1 = 0.9});
  variants.push_back({.multiply_by_parameter_scale = false, .do_clipping = false});
  variants.push_back({.learning_rate = 0.01,
                      .do_clipping = true,
                      .decay_rate = 0.5,
                      .clipping_threshold = 0.5,
                      .weight_decay_rate = 0.01,
                      .epsilon2 = 2.0});
  for (std::size_t k = 0; k < variants.size(); ++k) {
    INFO("variant ", k);
    const auto o = variants[k];
    check_against_reference([o] { return std::make_unique<tr::Adafactor>(o); }, ref_adafactor(o));
  }
  // gradients large and small: the update clipping and epsilon1 matter
  check_against_reference([] { return std::make_unique<tr::Adafactor>(); }, ref_adafactor({}),
                          std::nullopt, 100.0);
  check_against_reference([] { return std::make_unique<tr::Adafactor>(); }, ref_adafactor({}),
                          std::nullopt, 1e-3);
}

TEST_CASE("Adafactor slots: factored for rank >= 2, full otherwise") {
  tr::Adafactor af;
  af.init({Tensor::zeros({2, 3, 4}), Tensor::zeros({5}), Tensor::zeros({}, DType::f64)},
          {"a", "b", "c"});
  const auto s = af.slots();
  REQUIRE(s.size() == 4);
  CHECK(s[0].name == "a/v_row");
  CHECK(s[0].value.shape() == Shape{2, 3});
  CHECK(s[1].name == "a/v_col");
  CHECK(s[1].value.shape() == Shape{2, 4});
  CHECK(s[2].name == "b/v");
  CHECK(s[2].value.shape() == Shape{5});
  CHECK(s[3].value.dtype() == DType::f64);
  tr::Adafactor full({.factored = false, .do_momentum = true});
  full.init({Tensor::zeros({2, 3})});
  const auto fs = full.slots();
  REQUIRE(fs.size() == 2);
  CHECK(fs[0].name == "0/v");
  CHECK(fs[0].value.shape() == Shape{2, 3});
  CHECK(fs[1].name == "0/m");
  CHECK(tr::SGD().slots().empty());
}

TEST_CASE("clipping by global norm, as Trax's tree_update") {
  for (DType dt : {DType::f32, DType::f64}) {
    // two gradients of global norm 10 (6^2 + 8^2 = 100)
    std::vector<Tensor> g{Tensor::full({1}, 6.0, dt), Tensor::full({1}, 8.0, dt)};
    std::vector<Tensor> w{Tensor::zeros({1}, dt), Tensor::zeros({1}, dt)};
    tr::SGD sgd({.learning_rate = 1.0, .clip_grad_norm = 2.0});
    sgd.init(w);
    const auto m = sgd.update(0, g, w);
    CHECK(m.gradients_l2 == doctest::Approx(10.0));
    CHECK(w[0].flat(0) == doctest::Approx(-1.2).epsilon(1e-6));  // 6 * 2 / 10
    CHECK(w[1].flat(0) == doctest::Approx(-1.6).epsilon(1e-6));
    // below the threshold: untouched
    tr::SGD loose({.learning_rate = 1.0, .clip_grad_norm = 10.5});
    std::vector<Tensor> w2{Tensor::zeros({1}, dt), Tensor::zeros({1}, dt)};
    loose.init(w2);
    loose.update(0, g, w2);
    CHECK(w2[0].flat(0) == -6.0);
    CHECK(w2[1].flat(0) == -8.0);
  }
  const auto clipped = tr::clip_grads(
      {Tensor::full({2}, 3.0, DType::f64), Tensor::full({1}, 4.0 * std::sqrt(2.0), DType::f64)},
      5.0);
  // norm = sqrt(18 + 32) = sqrt(50); factor 5 / sqrt(50)
  CHECK(clipped[0].flat(0) == doctest::Approx(3.0 * 5.0 / std::sqrt(50.0)));
  CHECK(tr::l2_norm(clipped) == doctest::Approx(5.0));
  CHECK(tr::l2_norm({Tensor::full({4}, 0.5, DType::f32)}) == 1.0);
  CHECK_THROWS_AS(tr::clip_grads({}, 0.0), ValueError);
  // clipping applies to every optimizer: Adam with and without, against the reference
  check_against_reference(
      [] { return std::make_unique<tr::Adam>(tr::AdamOptions{.learning_rate = 0.01}); },
      ref_adam(0.01, 1e-5, 0.9, 0.999, 1e-5), 1.5);
  check_against_reference([] { return std::make_unique<tr::Momentum>(tr::MomentumOptions{}); },
                          ref_momentum(0.01, 0.9, 1e-5, true), 2.0);
  check_against_reference([] { return std::make_unique<tr::Adafactor>(); }, ref_adafactor({}), 0.5);
}

TEST_CASE("weight decay: decoupled, not scaled by the learning rate (Trax 1.3.4); none in SGD") {
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor w0 = random_tensor({3, 4}, 7, dt);
    const Tensor zero = Tensor::zeros({3, 4}, dt);
    const Tensor want = core::mul(w0, 1.0 - 0.1);  // (1 - wd) * w in the weights' dtype
    std::vector<std::unique_ptr<tr::Optimizer>> opts;
    opts.push_back(std::make_unique<tr::Momentum>(
        tr::MomentumOptions{.learning_rate = 0.0, .weight_decay_rate = 0.1}));
    opts.push_back(std::make_unique<tr::Adam>(
        tr::AdamOptions{.learning_rate = 0.0, .weight_decay_rate = 0.1}));
    opts.push_back(std::make_unique<tr::Adafactor>(
        tr::AdafactorOptions{.learning_rate = 0.0, .weight_decay_rate = 0.1}));
    for (auto& opt : opts) {
      INFO(opt->name());
      std::vector<Tensor> w{w0};
      opt->init(w);
      opt->update(0, {zero}, w);
      CHECK(equal(w[0], want));
      // with lr > 0 and zero gradients the step adds nothing: decay only
      opt->set_learning_rate(0.5);
      std::vector<Tensor> w2{w0};
      opt->init(w2);
      opt->update(0, {zero}, w2);
      CHECK(equal(w2[0], want));
    }
    tr::SGD sgd({.learning_rate = 0.5});
    std::vector<Tensor> w{w0};
    sgd.init(w);
    sgd.update(0, {zero}, w);
    CHECK(equal(w[0], w0));
  }
}

TEST_CASE("update is functional for weights: the old buffers are never written") {
  const Tensor w0 = random_tensor({5}, 1, DType::f32);
  const Tensor copy = w0.clone();
  std::vector<Tensor> w{w0};
  tr::Adam adam({.learning_rate = 0.1});
  adam.init(w);
  adam.update(0, {random_tensor({5}, 2, DType::f32)}, w);
  CHECK(equal(w0, copy));
  CHECK_FALSE(w[0].shares_storage(w0));
  CHECK_FALSE(equal(w[0], w0));
}

// ---- convergence --------------------------------------------------------------------------------

namespace {

// mean((A X + c - B)^2) over a [6, 3] target: X [4, 3] (factored in Adafactor), c [3].
struct LeastSquares {
  Tensor A = core::add(core::mul(random_tensor({6, 4}, 11, DType::f64), 0.3),
                       Tensor::from<double>({6, 4}, {1, 0, 0, 0, 0,   1,   0, 0, 0, 0, 1,   0,
                                                     0, 0, 0, 1, 0.5, 0.5, 0, 0, 0, 0, 0.5, 0.5}));
  Tensor B = random_tensor({6, 3}, 12, DType::f64);

  Var loss(const Var& x, const Var& c) const {
    Var r = fm::subtract(fm::add(fm::matmul(A, x), c), B);
    return fm::mean(fm::square(r));
  }
  double loss_value(const std::vector<Tensor>& w) const {
    return loss(w[0], w[1]).value().item<double>();
  }
  // the least achievable loss (normal equations via many exact gradient steps)
  double optimum() const {
    std::vector<Tensor> w{Tensor::zeros({4, 3}, DType::f64), Tensor::zeros({3}, DType::f64)};
    tr::SGD sgd({.learning_rate = 0.5});
    sgd.init(w);
    for (long s = 0; s < 20000; ++s) sgd.update(s, grads(w), w);
    REQUIRE(tr::l2_norm(grads(w)) < 1e-12);
    return loss_value(w);
  }
  std::vector<Tensor> grads(const std::vector<Tensor>& w) const {
    return autodiff::grad([this](const VarList& v) { return loss(v[0], v[1]); }, w);
  }
};

double train(tr::Optimizer& opt, const LeastSquares& p, int steps) {
  std::vector<Tensor> w{core::mul(random_tensor({4, 3}, 13, DType::f64), 2.0),
                        random_tensor({3}, 14, DType::f64)};
  opt.init(w);
  for (long s = 0; s < steps; ++s) opt.update(s + 1, p.grads(w), w);  // Trax's Loop: from 1
  return p.loss_value(w);
}

}  // namespace

TEST_CASE("convergence on a small least-squares problem, gradients by autodiff::grad") {
  const LeastSquares p;
  const double best = p.optimum();
  std::vector<Tensor> w0{core::mul(random_tensor({4, 3}, 13, DType::f64), 2.0),
                         random_tensor({3}, 14, DType::f64)};
  const double start = p.loss_value(w0) - best;
  REQUIRE(start > 1.0);
  auto excess_after = [&](tr::Optimizer& opt, int steps) {
    return (train(opt, p, steps) - best) / start;
  };
  tr::SGD sgd({.learning_rate = 0.3});
  tr::Momentum mom({.learning_rate = 0.05, .weight_decay_rate = 0.0});
  tr::Momentum heavy({.learning_rate = 0.05, .weight_decay_rate = 0.0, .nesterov = false});
  tr::Adam adam({.learning_rate = 0.02, .weight_decay_rate = 0.0});
  tr::Adafactor af({.learning_rate = 0.01, .weight_decay_rate = 0.0});
  tr::Adafactor af_mom(
      {.learning_rate = 0.05, .do_momentum = true, .beta1 = 0.9, .weight_decay_rate = 0.0});
  tr::Adafactor af_plain(
      {.learning_rate = 0.01, .multiply_by_parameter_scale = false, .weight_decay_rate = 0.0});
  // Adafactor without momentum takes steps of relative size ~lr that shrink only as
  // its second-moment average forgets the large early gradients: it gets within
  // 1e-3 in these steps, the others far closer.
  const std::vector<std::pair<tr::Optimizer*, double>> runs = {
      {&sgd, 1e-5}, {&mom, 1e-8},    {&heavy, 1e-8},   {&adam, 1e-8},
      {&af, 1e-3},  {&af_mom, 1e-4}, {&af_plain, 1e-4}};
  for (const auto& [opt, max_ratio] : runs) {
    const double ratio = excess_after(*opt, 1500);
    INFO(opt->name(), ": excess loss ratio ", ratio);
    CHECK(ratio < max_ratio);
  }
}

// ---- slots
// -----------------------------------------------------------------------------------------

TEST_CASE("slots round trip: a resumed run continues bit for bit") {
  std::vector<std::function<std::unique_ptr<tr::Optimizer>()>> makers = {
      [] { return std::make_unique<tr::SGD>(); },
      [] { return std::make_unique<tr::Momentum>(); },
      [] { return std::make_unique<tr::Adam>(tr::AdamOptions{.learning_rate = 0.01}); },
      [] {
        return std::make_unique<tr::Adafactor>(
            tr::AdafactorOptions{.do_momentum = true, .beta1 = 0.5, .clip_grad_norm = 3.0});
      },
  };
  for (DType dt : {DType::f32, DType::f64}) {
    for (auto& make : makers) {
      std::vector<Tensor> w0;
      std::vector<std::string> names;
      for (std::size_t k = 0; k < kShapes.size(); ++k) {
        w0.push_back(random_tensor(kShapes[k], 50 + static_cast<std::int64_t>(k), dt));
        names.push_back("layer_" + std::to_string(k) + "/w");
      }
      auto grads_at = [&](long s) {
        std::vector<Tensor> g;
        for (std::size_t k = 0; k < kShapes.size(); ++k) {
          g.push_back(random_tensor(kShapes[k], 7000 + 31 * s + static_cast<std::int64_t>(k), dt));
        }
        return g;
      };
      // uninterrupted: 10 steps
      auto a = make();
      std::vector<Tensor> wa = w0;
      a->init(wa, names);
      for (long s = 1; s <= 10; ++s) a->update(s, grads_at(s), wa);
      // 5 steps, save weights and slots, a new optimizer, restore, 5 more
      auto b = make();
      std::vector<Tensor> wb = w0;
      b->init(wb, names);
      for (long s = 1; s <= 5; ++s) b->update(s, grads_at(s), wb);
      const auto saved_slots = b->slots();
      std::vector<Tensor> saved_w;
      for (const Tensor& t : wb) saved_w.push_back(t.clone());
      b.reset();
      auto c = make();
      c->init(saved_w, names);
      c->set_slots(saved_slots);
      for (long s = 6; s <= 10; ++s) c->update(s, grads_at(s), saved_w);
      INFO(a->name(), " ", core::dtype_name(dt));
      for (std::size_t k = 0; k < wa.size(); ++k) CHECK(equal(wa[k], saved_w[k]));
      const auto sa = a->slots(), sc = c->slots();
      REQUIRE(sa.size() == sc.size());
      for (std::size_t k = 0; k < sa.size(); ++k) {
        CHECK(sa[k].name == sc[k].name);
        CHECK(equal(sa[k].value, sc[k].value));
      }
    }
  }
}

TEST_CASE("slots: names from the weights, copies out and in, mismatches listed") {
  tr::Adam adam;
  adam.init({base::NamedTensor{"Serial/Dense_1/w", Tensor::zeros({2, 3})},
             base::NamedTensor{"Serial/Dense_1/b", Tensor::zeros({3})}});
  auto slots = adam.slots();
  REQUIRE(slots.size() == 4);
  CHECK(slots[0].name == "Serial/Dense_1/w/m");
  CHECK(slots[1].name == "Serial/Dense_1/w/v");
  CHECK(slots[3].name == "Serial/Dense_1/b/v");
  // slots() gives copies: writing into them changes nothing inside
  slots[0].value.data<float>()[0] = 5.0f;
  CHECK(adam.slots()[0].value.flat(0) == 0.0);
  // set_slots copies too, and accepts any order
  std::vector<base::NamedTensor> given(slots.rbegin(), slots.rend());
  adam.set_slots(given);
  given.back().value.data<float>()[0] = 7.0f;
  CHECK(adam.slots()[0].value.flat(0) == 5.0);
  // mismatches: all listed at once, nothing changed
  std::vector<base::NamedTensor> bad = adam.slots();
  bad[1].value = Tensor::zeros({3, 2});           // wrong shape
  bad[2].value = Tensor::zeros({3}, DType::f64);  // wrong dtype
  bad[3].name = "Serial/Dense_1/b/u";             // unexpected + missing
  try {
    adam.set_slots(bad);
    FAIL("no error");
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("slot 'Serial/Dense_1/w/v': expected [2, 3] float32, got [3, 2] float32") !=
          std::string::npos);
    CHECK(msg.find("slot 'Serial/Dense_1/b/m': expected [3] float32, got [3] float64") !=
          std::string::npos);
    CHECK(msg.find("unexpected slot 'Serial/Dense_1/b/u'") != std::string::npos);
    CHECK(msg.find("missing slot 'Serial/Dense_1/b/v'") != std::string::npos);
  }
  CHECK(adam.slots()[0].value.flat(0) == 5.0);
  CHECK_THROWS_AS(tr::Adam().set_slots({}), ValueError);  // before init
  CHECK_THROWS_AS(adam.init({Tensor::zeros({1}), Tensor::zeros({1})}, {"a", "a"}), ValueError);
  CHECK_THROWS_AS(adam.init({Tensor::zeros({1}, DType::i32)}), DTypeError);
}

// ---- hyperparameters and errors
// ------------------------------------------------------------------

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no ValueError";
}
}  // namespace

TEST_CASE("bad hyperparameters: a ValueError saying what is allowed") {
  CHECK(error_of([] { tr::SGD({.learning_rate = -0.1}); }) ==
        "SGD: learning_rate must be in [0, inf), got -0.1");
  CHECK(error_of([] { tr::Adam({.b1 = 1.0}); }) == "Adam: b1 must be in [0, 1), got 1");
  CHECK(error_of([] { tr::Adam({.b2 = -0.5}); }) == "Adam: b2 must be in [0, 1), got -0.5");
  CHECK(error_of([] { tr::Adam({.eps = 0.0}); }) == "Adam: eps must be in (0, inf), got 0");
  CHECK(error_of([] { tr::Adam({.weight_decay_rate = 1.0}); }) ==
        "Adam: weight_decay_rate must be in [0, 1), got 1");
  CHECK(error_of([] { tr::Momentum({.mass = 1.5}); }) ==
        "Momentum: mass must be in [0, 1), got 1.5");
  CHECK(error_of([] { tr::Adafactor({.beta1 = -0.1}); }) ==
        "Adafactor: beta1 must be in [0, 1), got -0.1");
  CHECK(error_of([] { tr::Adafactor({.decay_rate = -0.8}); }) ==
        "Adafactor: decay_rate must be in [0, inf), got -0.8");
  CHECK(error_of([] { tr::Adafactor({.clipping_threshold = 0.0}); }) ==
        "Adafactor: clipping_threshold must be in (0, inf), got 0");
  CHECK(error_of([] { tr::Adafactor({.epsilon1 = 0.0}); }) ==
        "Adafactor: epsilon1 must be in (0, inf), got 0");
  CHECK(error_of([] { tr::Adam({.learning_rate = std::nan("")}); }).find("learning_rate") !=
        std::string::npos);
  CHECK(error_of([] { tr::Adam({.clip_grad_norm = 0.0}); }) ==
        "Adam: clip_grad_norm must be in (0, inf) or unset, got 0");

  tr::Adam adam;
  CHECK(adam.learning_rate() == 1e-4);
  adam.set_learning_rate(3e-4);
  CHECK(adam.hyperparameter("learning_rate") == 3e-4);
  CHECK_THROWS_AS(adam.set_learning_rate(-1.0), ValueError);
  CHECK(adam.learning_rate() == 3e-4);  // unchanged
  adam.set_hyperparameter("b1", 0.8);
  CHECK(adam.hyperparameter("b1") == 0.8);
  CHECK(error_of([&] { adam.set_hyperparameter("beta1", 0.8); }) ==
        "Adam: no hyperparameter 'beta1'; it has learning_rate, weight_decay_rate, b1, b2, eps");
  const auto hs = tr::Adafactor().hyperparameters();
  REQUIRE(hs.size() == 7);
  CHECK(hs[2].first == "decay_rate");
  CHECK(hs[2].second == 0.8);
  CHECK(hs[5].second == 1e-30);
  CHECK(hs[6].second == 1e-3);
}

TEST_CASE("update errors: before init, wrong counts, shapes, dtypes, negative step") {
  tr::Adam adam;
  std::vector<Tensor> w{Tensor::zeros({2, 3}), Tensor::zeros({3})};
  CHECK(error_of([&] { adam.update(0, w, w); }) == "Adam.update: call init(weights) first");
  adam.init(w, {"w", "b"});
  CHECK_THROWS_AS(adam.update(-1, w, w), ValueError);
  std::vector<Tensor> one{Tensor::zeros({2, 3})};
  CHECK(error_of([&] {
          adam.update(0, one, w);
        }).find("expected 2 gradients and weights (as given to init), got 1 gradients") !=
        std::string::npos);
  std::vector<Tensor> bad_shape{Tensor::zeros({3, 2}), Tensor::zeros({3})};
  CHECK_THROWS_AS(adam.update(0, bad_shape, w), ShapeError);
  std::vector<Tensor> bad_dtype{Tensor::zeros({2, 3}, DType::f64), Tensor::zeros({3})};
  CHECK_THROWS_AS(adam.update(0, bad_dtype, w), DTypeError);
  try {
    adam.update(0, bad_shape, w);
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()).find("weight 'w' gradient") != std::string::npos);
  }
}
