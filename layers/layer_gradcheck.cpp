// minitrax/layers/layer_gradcheck.cpp
#include "layers/layer_gradcheck.hpp"

namespace minitrax::base {

void cast_layer(Layer& layer, DType dtype) {
  auto cast = [dtype](const Tensor& t) {
    return t.defined() && core::is_floating(t.dtype()) ? t.astype(dtype) : t;
  };
  layer.set_weights(layer.weights().map(cast));
  layer.set_state(layer.state().map(cast));
}

autodiff::GradcheckResult gradcheck_layer(Layer& layer, const std::vector<Tensor>& inputs, Key rng,
                                          const autodiff::GradcheckOptions& options) {
  const std::vector<NamedTensor> named = layer.flat_weights();
  const State state = layer.state();
  const VarTree saved_weights = layer.weight_vars();
  const std::size_t n_in = inputs.size();
  std::vector<Tensor> all = inputs;
  for (const NamedTensor& w : named) all.push_back(w.value);
  auto f = [&](const autodiff::VarList& vs) {
    Stack xs(vs.begin(), vs.begin() + static_cast<long>(n_in));
    std::vector<Var> ws(vs.begin() + static_cast<long>(n_in), vs.end());
    layer.set_flat_weights(ws);
    auto [ys, new_state] = layer.pure_fn(xs, layer.weight_vars(), state, rng);
    return ys;
  };
  autodiff::GradcheckResult r;
  try {
    r = autodiff::gradcheck(f, all, options);
  } catch (...) {
    layer.set_weights(saved_weights);
    layer.set_state(state);
    throw;
  }
  layer.set_weights(saved_weights);
  layer.set_state(state);
  if (!r.ok && r.input >= n_in) {
    r.message += " [weight " + named[r.input - n_in].name + "]";
  } else if (!r.ok) {
    r.message += " [layer input " + std::to_string(r.input) + "]";
  }
  return r;
}

}  // namespace minitrax::base
