// tests/efficient_attention_test_util.hpp: helpers the efficient-attention test programs
// share (test_efficient_attention.cpp, test_efficient_attention_long.cpp): closeness with
// the worst element named, a forward + backward run of a layer, and padding masks.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/base.hpp"

namespace minitrax::eatest {

using Vec = std::vector<double>;

inline Vec vals(const core::Tensor& t) {
  return t.to_vector<double>();
}

/// |a - b| <= atol + rtol |b| everywhere; on failure, says where.
inline void check_close(const core::Tensor& a, const core::Tensor& b, double rtol, double atol,
                        const std::string& what) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), what << ": shapes " << core::shape_str(a.shape())
                                               << " vs " << core::shape_str(b.shape()));
  const Vec x = vals(a), y = vals(b);
  std::size_t worst = 0;
  double worst_ratio = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = std::abs(x[i] - y[i]) / (atol + rtol * std::abs(y[i]));
    if (r > worst_ratio) {
      worst_ratio = r;
      worst = i;
    }
  }
  CHECK_MESSAGE(worst_ratio <= 1.0, what << ": element " << worst << " differs: " << x[worst]
                                         << " vs " << y[worst] << " (ratio to tolerance "
                                         << worst_ratio << ")");
}

inline base::Signature sig_of(const std::vector<core::Tensor>& xs) {
  base::Signature s;
  for (const core::Tensor& x : xs) s.push_back({x.shape(), x.dtype()});
  return s;
}

/// Everything a forward + backward pass gives (Trax's _run_forward_and_backward).
struct RunResult {
  core::Tensor out;
  std::vector<core::Tensor> state;
  core::Tensor x_grad;
  std::vector<core::Tensor> w_grads;
};

/// pure_fn on inputs (the first one watched) with these weights, state and rng, then the
/// gradients of sum(y * cotangent) w.r.t. x and every weight. Cotangent: ones (Trax's
/// test), or uniform(cotangent_key) so that every output element matters differently.
inline RunResult run_forward_backward(base::Layer& layer, const std::vector<core::Tensor>& inputs,
                                      const std::vector<core::Tensor>& weights,
                                      const base::State& state, core::Key rng,
                                      std::optional<core::Key> cotangent_key = std::nullopt) {
  autodiff::Tape tape;
  base::Stack xs;
  xs.push_back(tape.watch(inputs[0]));
  for (std::size_t i = 1; i < inputs.size(); ++i) xs.emplace_back(inputs[i]);
  std::vector<autodiff::Var> ws;
  for (const core::Tensor& w : weights) ws.push_back(tape.watch(w));
  layer.set_flat_weights(ws);
  auto [ys, new_state] = layer.pure_fn(xs, layer.weight_vars(), state, rng);
  autodiff::Var y = ys.at(0);
  if (cotangent_key) {
    y = y * autodiff::Var(core::uniform(*cotangent_key, y.shape(), y.dtype()));
  }
  autodiff::Var total = fastmath::sum(y);
  autodiff::VarList wrt{xs[0]};
  wrt.insert(wrt.end(), ws.begin(), ws.end());
  std::vector<core::Tensor> g = tape.gradient(total, wrt);
  RunResult r;
  r.out = ys[0].value();
  r.state = new_state.flatten();
  r.x_grad = g[0];
  r.w_grads.assign(g.begin() + 1, g.end());
  return r;
}

/// The values of a layer's weights, in flat order.
inline std::vector<core::Tensor> flat_values(const base::Layer& layer) {
  std::vector<core::Tensor> out;
  for (const auto& nt : layer.flat_weights()) out.push_back(nt.value);
  return out;
}

/// Outputs and gradients close, states equal.
inline void check_same_run(const RunResult& ref, const RunResult& test, double rtol, double atol,
                           const std::string& what) {
  check_close(test.out, ref.out, rtol, atol, what + " output");
  REQUIRE(test.state.size() == ref.state.size());
  for (std::size_t i = 0; i < ref.state.size(); ++i) {
    CHECK_MESSAGE(core::equal(test.state[i], ref.state[i]), what << " state " << i);
  }
  check_close(test.x_grad, ref.x_grad, rtol, atol, what + " input gradient");
  REQUIRE(test.w_grads.size() == ref.w_grads.size());
  for (std::size_t i = 0; i < ref.w_grads.size(); ++i) {
    check_close(test.w_grads[i], ref.w_grads[i], rtol, atol,
                what + " weight gradient " + std::to_string(i));
  }
}

/// A mask [B, L] (int32) whose suffix from lengths[b] on is 0.
inline core::Tensor suffix_mask(const std::vector<long>& lengths, long L) {
  std::vector<std::int32_t> m;
  for (long len : lengths) {
    for (long t = 0; t < L; ++t) m.push_back(t < len ? 1 : 0);
  }
  return core::Tensor::from<std::int32_t>({lengths.size(), static_cast<std::size_t>(L)}, m);
}

}  // namespace minitrax::eatest
