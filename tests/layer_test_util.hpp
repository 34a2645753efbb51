// tests/layer_test_util.hpp: helpers the layer test programs share (doctest assertions).
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "core/rng.hpp"
#include "layers/base.hpp"
#include "layers/layer_gradcheck.hpp"

namespace minitrax::testutil {

/// Normal draws from key_from_seed(seed).
inline core::Tensor randn(const core::Shape& shape, std::int64_t seed,
                          core::DType dtype = core::DType::f32) {
  return core::normal(core::key_from_seed(static_cast<std::uint64_t>(seed)), shape, dtype);
}

inline std::vector<double> vals(const core::Tensor& t) {
  return t.to_vector<double>();
}
inline std::vector<double> vals(const autodiff::Var& v) {
  return v.value().to_vector<double>();
}

/// Runs a layer once on one input; checks output_signature against the actual output.
inline autodiff::Var run_checked(base::Layer& layer, const core::Tensor& x) {
  const base::Signature predicted = layer.output_signature({{x.shape(), x.dtype()}});
  autodiff::Var y = layer(autodiff::Var(x));
  REQUIRE(predicted.size() == 1);
  CHECK(predicted[0] == base::ShapeDtype{y.shape(), y.dtype()});
  return y;
}

/// Casts a layer to float64 and gradchecks it over `inputs` and all its weights.
inline void check_gradients(base::Layer& layer, const std::vector<core::Tensor>& inputs,
                            core::Key rng = core::key_from_seed(0)) {
  base::cast_layer(layer, core::DType::f64);
  const auto r = base::gradcheck_layer(layer, inputs, rng);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.n_checked > 0);
}

}  // namespace minitrax::testutil
