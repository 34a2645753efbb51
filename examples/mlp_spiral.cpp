// examples/mlp_spiral.cpp: a small MLP fitted with minitrax's own autodiff.
//
// The data set is three interleaved spirals in the plane (a classic that a linear
// model cannot separate), drawn from minitrax's counter-based rng. The model is
// Dense(2, H) -> tanh -> Dense(H, H) -> tanh -> Dense(H, 3), trained with Adam on
// the softmax cross-entropy, written directly with fastmath ops and
// value_and_grad. Until the layer and training floors exist, this is the main job.
//
//   mlp_spiral [--steps N] [--hidden H] [--lr X] [--seed S] [--points-per-class P]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;

namespace {

struct Config {
  long steps = 1500;
  long hidden = 64;
  double lr = 0.01;
  long seed = 0;
  long points_per_class = 200;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "mlp_spiral: " << msg << "\n"
            << "usage: mlp_spiral [--steps N (1..1000000)] [--hidden H (1..4096)] "
               "[--lr X (0 < X <= 1)] [--seed S] [--points-per-class P (1..100000)]\n";
  std::exit(2);
}

double parse_number(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v)) {
    usage_error(flag + " needs a number, got '" + text + "'");
  }
  return v;
}

long parse_int(const std::string& flag, const std::string& text, long lo, long hi) {
  const double v = parse_number(flag, text);
  if (v != std::floor(v) || v < static_cast<double>(lo) || v > static_cast<double>(hi)) {
    usage_error(flag + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got '" + text + "'");
  }
  return static_cast<long>(v);
}

Config parse_args(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage_error("trains an MLP on three spirals");
    if (i + 1 >= argc) usage_error("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--steps") {
      c.steps = parse_int(flag, value, 1, 1000000);
    } else if (flag == "--hidden") {
      c.hidden = parse_int(flag, value, 1, 4096);
    } else if (flag == "--lr") {
      c.lr = parse_number(flag, value);
      if (!(c.lr > 0 && c.lr <= 1)) usage_error("--lr must be in (0, 1], got '" + value + "'");
    } else if (flag == "--seed") {
      c.seed = parse_int(flag, value, 0, 2147483647);
    } else if (flag == "--points-per-class") {
      c.points_per_class = parse_int(flag, value, 1, 100000);
    } else {
      usage_error("unknown flag '" + flag +
                  "' (allowed: --steps, --hidden, --lr, --seed, --points-per-class)");
    }
  }
  return c;
}

// Three spirals: class c, point i at radius r = i/P and angle 3 pi r + 2 pi c / 3 + noise
// (one and a half turns each, so the classes interleave).
void make_spirals(core::Key key, std::size_t per_class, Tensor& points, Tensor& labels) {
  const std::size_t n = 3 * per_class;
  points = Tensor::empty({n, 2});
  labels = Tensor::empty({n}, DType::i32);
  const Tensor noise = core::normal(key, {n}, DType::f32);
  float* p = points.data<float>();
  std::int32_t* y = labels.data<std::int32_t>();
  const float* z = noise.data<float>();
  for (std::size_t c = 0; c < 3; ++c) {
    for (std::size_t i = 0; i < per_class; ++i) {
      const std::size_t k = c * per_class + i;
      const double r = static_cast<double>(i + 1) / static_cast<double>(per_class);
      const double angle = 3.0 * M_PI * r + 2.0 * M_PI * static_cast<double>(c) / 3.0 + 0.15 * z[k];
      p[2 * k] = static_cast<float>(r * std::sin(angle));
      p[2 * k + 1] = static_cast<float>(r * std::cos(angle));
      y[k] = static_cast<std::int32_t>(c);
    }
  }
}

Tensor glorot(core::Key key, std::size_t d_in, std::size_t d_out) {
  const double limit = std::sqrt(6.0 / static_cast<double>(d_in + d_out));
  return core::uniform(key, {d_in, d_out}, DType::f32, -limit, limit);
}

// Logits of the MLP for a batch of points: params = {w1, b1, w2, b2, w3, b3}.
Var mlp(const autodiff::VarList& p, const Var& x) {
  Var h = fm::tanh(fm::dense(x, p[0], p[1]));
  h = fm::tanh(fm::dense(h, p[2], p[3]));
  return fm::dense(h, p[4], p[5]);
}

// Mean softmax cross-entropy of logits [n, 3] against integer labels [n].
Var cross_entropy(const Var& logits, const Tensor& labels) {
  const Tensor targets = core::one_hot(labels, 3, logits.dtype());
  return -fm::mean(fm::sum(fm::log_softmax(logits) * targets, {-1}));
}

double accuracy(const Tensor& logits, const Tensor& labels) {
  const Tensor pred = core::argmax(logits, -1, DType::i32);
  const auto* a = pred.data<std::int32_t>();
  const auto* b = labels.data<std::int32_t>();
  std::size_t hits = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) hits += a[i] == b[i];
  return static_cast<double>(hits) / static_cast<double>(labels.size());
}

}  // namespace

int main(int argc, char** argv) try {
  const Config cfg = parse_args(argc, argv);
  const auto keys = core::split(core::key_from_seed(cfg.seed), 5);

  Tensor train_x, train_y, test_x, test_y;
  make_spirals(keys[0], static_cast<std::size_t>(cfg.points_per_class), train_x, train_y);
  make_spirals(keys[1], static_cast<std::size_t>(cfg.points_per_class), test_x, test_y);

  const auto h = static_cast<std::size_t>(cfg.hidden);
  const auto wkeys = core::split(keys[2], 3);
  std::vector<Tensor> params = {glorot(wkeys[0], 2, h), Tensor::zeros({h}),
                                glorot(wkeys[1], h, h), Tensor::zeros({h}),
                                glorot(wkeys[2], h, 3), Tensor::zeros({3})};

  // Adam (Kingma & Ba): first and second moments per parameter.
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<Tensor> m, v;
  for (const Tensor& p : params) {
    m.push_back(Tensor::zeros_like(p));
    v.push_back(Tensor::zeros_like(p));
  }

  std::printf(
      "minitrax: MLP (2-%zu-%zu-3, tanh) on three spirals, %zu training points, Adam lr %g\n", h, h,
      train_x.dim(0), cfg.lr);
  std::printf("BLAS kernels: %s\n", core::blas_core_name().c_str());
  const auto t0 = std::chrono::steady_clock::now();
  double loss = 0;
  for (long step = 1; step <= cfg.steps; ++step) {
    auto [value, grads] = value_and_grad(
        [&](const autodiff::VarList& p) { return cross_entropy(mlp(p, train_x), train_y); },
        params);
    loss = value.item<double>();
    const double c1 = 1.0 - std::pow(b1, static_cast<double>(step));
    const double c2 = 1.0 - std::pow(b2, static_cast<double>(step));
    for (std::size_t i = 0; i < params.size(); ++i) {
      float* p = params[i].data<float>();
      float* mi = m[i].data<float>();
      float* vi = v[i].data<float>();
      const float* g = grads[i].data<float>();
      for (std::size_t j = 0; j < params[i].size(); ++j) {
        mi[j] = static_cast<float>(b1 * mi[j] + (1 - b1) * g[j]);
        vi[j] = static_cast<float>(b2 * vi[j] + (1 - b2) * g[j] * g[j]);
        p[j] -= static_cast<float>(cfg.lr * (mi[j] / c1) / (std::sqrt(vi[j] / c2) + eps));
      }
    }
    if (step == 1 || step % 100 == 0 || step == cfg.steps) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      autodiff::VarList pv(params.begin(), params.end());
      const double train_acc = accuracy(mlp(pv, train_x).value(), train_y);
      std::printf("step %5ld  loss %.4f  train accuracy %5.1f%%  (%.0f steps/s)\n", step, loss,
                  100 * train_acc, static_cast<double>(step) / elapsed);
      std::fflush(stdout);
    }
  }
  autodiff::VarList pv(params.begin(), params.end());
  const double test_acc = accuracy(mlp(pv, test_x).value(), test_y);
  std::printf("final: loss %.4f, held-out accuracy %.1f%% on %zu fresh points\n", loss,
              100 * test_acc, test_x.dim(0));
  return 0;
} catch (const std::exception& e) {
  // minitrax reports bad input and failed files with exceptions (core/error.hpp): say
  // what went wrong and exit 1, as the main job does, instead of std::terminate.
  std::cerr << "mlp_spiral: error: " << e.what() << "\n";
  return 1;
}
