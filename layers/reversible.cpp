// minitrax/layers/reversible.cpp
#include "layers/reversible.hpp"

#include <string>
#include <utility>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "layers/stack_internal.hpp"

namespace minitrax::layers {

using autodiff::Var;
using autodiff::VarList;
using detail::replace_top;
using detail::top;

namespace {

std::vector<Tensor> values_of(const Stack& xs) {
  std::vector<Tensor> out;
  out.reserve(xs.size());
  for (const Var& x : xs) out.push_back(x.value());
  return out;
}

Stack vars_of(const std::vector<Tensor>& xs) {
  return Stack(xs.begin(), xs.end());
}

// The child states of a combinator's state tree (a marker or leaf gives empties).
State child_state(const State& s, std::size_t i) {
  if (s.is_leaf() || i >= s.size()) return State();
  return s[i];
}

void check_count(const std::string& who, const char* what, std::size_t got, int want) {
  if (static_cast<int>(got) != want) {
    throw core::ValueError(who + ": expected " + std::to_string(want) + " " + what + ", got " +
                           std::to_string(got));
  }
}

}  // namespace

// ---- ReversibleLayer ------------------------------------------------------------------

std::vector<Tensor> ReversibleLayer::reverse(const std::vector<Tensor>&, const State&, const State&,
                                             Key) {
  throw core::ValueError(name() + ": reverse is not implemented by this layer");
}

ReverseGrad ReversibleLayer::reverse_and_grad(const std::vector<Tensor>& outputs,
                                              const std::vector<Tensor>& output_cts,
                                              const State& state, const State& new_state, Key rng) {
  const std::vector<Tensor> inputs = reverse(outputs, state, new_state, rng);
  return grad_at(inputs, output_cts, state, rng);
}

ReverseGrad ReversibleLayer::grad_at(const std::vector<Tensor>& inputs,
                                     const std::vector<Tensor>& output_cts, const State& state,
                                     Key rng) {
  check_count(name(), "inputs", inputs.size(), n_in());
  check_count(name(), "output cotangents", output_cts.size(), n_out());
  const std::size_t n = inputs.size();
  std::vector<Tensor> primals = inputs;
  for (const base::NamedTensor& w : flat_weights()) primals.push_back(w.value);
  const Key saved_rng = rng_;
  autodiff::VjpResult result;
  {
    base::RestoreGuard restore(*this, base::RestoreGuard::weights | base::RestoreGuard::state);
    result = autodiff::vjp(
        [&](const VarList& v) {
          set_flat_weights(std::vector<Var>(v.begin() + static_cast<long>(n), v.end()));
          set_state(state);
          return apply(Stack(v.begin(), v.begin() + static_cast<long>(n)), rng);
        },
        primals);
  }
  rng_ = saved_rng;
  std::vector<Tensor> cts = result.pullback(output_cts);
  ReverseGrad g;
  g.inputs = inputs;
  g.input_cts.assign(cts.begin(), cts.begin() + static_cast<long>(n));
  g.weight_cts.assign(cts.begin() + static_cast<long>(n), cts.end());
  return g;
}

// ---- ReversibleSwap ---------------------------------------------------------------------

ReversibleSwapLayer::ReversibleSwapLayer(std::source_location where)
    : ReversibleLayer(2, 2, "ReversibleSwap", where) {}

Stack ReversibleSwapLayer::forward(const Stack& inputs) {
  return {inputs[1], inputs[0]};
}

Signature ReversibleSwapLayer::forward_signature(const Signature& input_signature) {
  return {input_signature[1], input_signature[0]};
}

std::vector<Tensor> ReversibleSwapLayer::reverse(const std::vector<Tensor>& outputs, const State&,
                                                 const State&, Key) {
  check_count(name(), "outputs", outputs.size(), 2);
  return {outputs[1], outputs[0]};
}

ReverseGrad ReversibleSwapLayer::reverse_and_grad(const std::vector<Tensor>& outputs,
                                                  const std::vector<Tensor>& output_cts,
                                                  const State& state, const State& new_state,
                                                  Key rng) {
  check_count(name(), "output cotangents", output_cts.size(), 2);
  ReverseGrad g;
  g.inputs = reverse(outputs, state, new_state, rng);
  g.input_cts = {output_cts[1], output_cts[0]};
  return g;
}

// ---- ReversibleHalfResidual ---------------------------------------------------------------

namespace {
// The residual must have the accumulator's shape and dtype (no broadcasting).
void check_residual(const std::string& who, const base::ShapeDtype& residual,
                    const base::ShapeDtype& accumulator) {
  if (residual != accumulator) {
    throw core::ShapeError(who + ": the residual has shape " + core::shape_str(residual.shape) +
                           " " + std::string(core::dtype_name(residual.dtype)) +
                           ", the accumulator it is added to has " +
                           core::shape_str(accumulator.shape) + " " +
                           std::string(core::dtype_name(accumulator.dtype)));
  }
}

std::vector<LayerPtr> half_residual_sublayers(std::vector<LayerPtr> residual_layers,
                                              LayerPtr attention_layer) {
  std::vector<LayerPtr> subs{
      Serial(detail::checked(std::move(residual_layers), "ReversibleHalfResidual"))};
  if (attention_layer) subs.push_back(std::move(attention_layer));
  return subs;
}
}  // namespace

ReversibleHalfResidualLayer::ReversibleHalfResidualLayer(std::vector<LayerPtr> residual_layers,
                                                         LayerPtr attention_layer,
                                                         std::source_location where)
    : ReversibleLayer(1, 1, "ReversibleHalfResidual", where) {
  std::vector<LayerPtr> subs =
      half_residual_sublayers(std::move(residual_layers), std::move(attention_layer));
  const int n = detail::serial_arity(subs).first + 1;
  set_arity(n, n);
  set_sublayers(std::move(subs));
}

LayerPtr ReversibleHalfResidualLayer::attention_layer() const {
  return sublayers().size() > 1 ? sublayers()[1] : nullptr;
}

Stack ReversibleHalfResidualLayer::forward(const Stack& inputs) {
  const auto& subs = sublayers();
  const auto rngs = core::split(rng_, subs.size());
  const Stack context(inputs.begin() + 1, inputs.end());
  Stack stack = context;
  for (std::size_t i = 0; i < subs.size(); ++i) {
    const LayerPtr& l = subs[i];
    stack = replace_top(stack, l->n_in(), l->apply(top(stack, l->n_in()), rngs[i]));
  }
  check_residual(name(), {stack[0].shape(), stack[0].dtype()},
                 {inputs[0].shape(), inputs[0].dtype()});
  Stack out{inputs[0] + stack[0]};
  out.insert(out.end(), context.begin(), context.end());
  return out;
}

void ReversibleHalfResidualLayer::init_weights_and_state(const Signature& input_signature) {
  Signature stack(input_signature.begin() + 1, input_signature.end());
  for (const LayerPtr& l : sublayers()) {
    const Signature in = top(stack, l->n_in());
    l->init(in, l->rng(), /*use_cache=*/true);
    stack = replace_top(stack, l->n_in(), l->output_signature(in));
  }
  check_residual(name(), stack[0], input_signature[0]);
}

Signature ReversibleHalfResidualLayer::forward_signature(const Signature& input_signature) {
  Signature stack(input_signature.begin() + 1, input_signature.end());
  for (const LayerPtr& l : sublayers()) {
    stack = replace_top(stack, l->n_in(), l->output_signature(top(stack, l->n_in())));
  }
  check_residual(name(), stack[0], input_signature[0]);
  return input_signature;
}

Var ReversibleHalfResidualLayer::residual_of(const Stack& context, const State& residual_state,
                                             const State* attention_state,
                                             const std::vector<Key>& rngs) {
  const LayerPtr& residual = compute_residual();
  residual->set_state(residual_state);
  Stack stack = replace_top(context, residual->n_in(),
                            residual->apply(top(context, residual->n_in()), rngs[0]));
  if (const LayerPtr attention = attention_layer()) {
    attention->set_state(*attention_state);
    // The recomputation of the forward pass: LSH attention reuses its buckets.
    stack = replace_top(stack, attention->n_in(),
                        attention->recompute(top(stack, attention->n_in()), rngs[1]));
  }
  return stack[0];
}

State ReversibleHalfResidualLayer::state_for_backward(const State& before) const {
  if (!attention_layer() || before.is_leaf() || before.size() != 2) return before;
  return State::list({before[0], State()});
}

std::vector<Tensor> ReversibleHalfResidualLayer::reverse(const std::vector<Tensor>& outputs,
                                                         const State& state, const State& new_state,
                                                         Key rng) {
  check_count(name(), "outputs", outputs.size(), n_out());
  const auto rngs = core::split(rng, sublayers().size());
  const State attention_state = child_state(new_state, 1);
  Tensor residual;
  {
    autodiff::NoRecord quiet;
    base::RestoreGuard restore(*this, base::RestoreGuard::weights | base::RestoreGuard::state);
    residual = residual_of(vars_of(std::vector<Tensor>(outputs.begin() + 1, outputs.end())),
                           child_state(state, 0), &attention_state, rngs)
                   .value();
  }
  std::vector<Tensor> inputs = outputs;
  inputs[0] = core::sub(outputs[0], residual);
  return inputs;
}

ReverseGrad ReversibleHalfResidualLayer::reverse_and_grad(const std::vector<Tensor>& outputs,
                                                          const std::vector<Tensor>& output_cts,
                                                          const State& state,
                                                          const State& new_state, Key rng) {
  check_count(name(), "outputs", outputs.size(), n_out());
  check_count(name(), "output cotangents", output_cts.size(), n_out());
  const auto rngs = core::split(rng, sublayers().size());
  const State residual_state = child_state(state, 0);
  const State attention_state = child_state(new_state, 1);
  const std::size_t n_context = outputs.size() - 1;

  // Recompute the residual from the context on a private tape: the residual
  // layers with the state they had before the forward pass, the attention layer
  // with the state the forward pass left (its buckets) and no state update.
  std::vector<Tensor> primals(outputs.begin() + 1, outputs.end());
  for (const base::NamedTensor& w : flat_weights()) primals.push_back(w.value);
  const Key saved_rng = rng_;
  autodiff::VjpResult result;
  {
    base::RestoreGuard restore(*this, base::RestoreGuard::weights | base::RestoreGuard::state);
    result = autodiff::vjp(
        [&](const VarList& v) {
          set_flat_weights(std::vector<Var>(v.begin() + static_cast<long>(n_context), v.end()));
          const Stack context(v.begin(), v.begin() + static_cast<long>(n_context));
          return VarList{residual_of(context, residual_state, &attention_state, rngs)};
        },
        primals);
  }
  rng_ = saved_rng;
  const Tensor& residual = result.outputs.at(0);
  // The accumulator's cotangent flows into the residual unchanged.
  std::vector<Tensor> cts = result.pullback({output_cts[0]});

  ReverseGrad g;
  g.inputs = outputs;
  g.inputs[0] = core::sub(outputs[0], residual);  // acc = (acc + residual) - residual
  g.input_cts.push_back(output_cts[0]);
  for (std::size_t i = 0; i < n_context; ++i) {
    g.input_cts.push_back(core::add(output_cts[i + 1], cts[i]));
  }
  g.weight_cts.assign(cts.begin() + static_cast<long>(n_context), cts.end());
  return g;
}

// ---- ReversibleSerial -------------------------------------------------------------------

namespace {
std::vector<LayerPtr> checked_reversible(std::vector<LayerPtr> layers) {
  layers = detail::checked(std::move(layers), "ReversibleSerial");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (!dynamic_cast<ReversibleLayer*>(layers[i].get())) {
      throw core::ValueError("ReversibleSerial: sublayer " + std::to_string(i) + " (" +
                             layers[i]->name() + ", created at " + layers[i]->where() +
                             ") is not reversible; allowed are ReversibleSwap, "
                             "ReversibleHalfResidual, ReversibleSerial and other "
                             "ReversibleLayer subclasses");
    }
  }
  return layers;
}
}  // namespace

ReversibleSerialLayer::ReversibleSerialLayer(std::vector<LayerPtr> layers,
                                             std::source_location where)
    : ReversibleLayer(1, 1, "ReversibleSerial", where) {
  layers = checked_reversible(std::move(layers));
  const auto [n_in, n_out] = detail::serial_arity(layers);
  set_arity(n_in, n_out);
  set_sublayers(std::move(layers));
}

void ReversibleSerialLayer::init_weights_and_state(const Signature& input_signature) {
  Signature stack = input_signature;
  for (const LayerPtr& l : sublayers()) {
    const Signature in = top(stack, l->n_in());
    l->init(in, l->rng(), /*use_cache=*/true);
    stack = replace_top(stack, l->n_in(), l->output_signature(in));
  }
}

Signature ReversibleSerialLayer::forward_signature(const Signature& input_signature) {
  Signature stack = input_signature;
  for (const LayerPtr& l : sublayers()) {
    stack = replace_top(stack, l->n_in(), l->output_signature(top(stack, l->n_in())));
  }
  return stack;
}

Stack ReversibleSerialLayer::run_blocks(const Stack& inputs, std::vector<State>* old_states,
                                        std::vector<State>* new_states) {
  const auto& blocks = sublayers();
  if (blocks.empty()) return inputs;
  const auto rngs = core::split(rng_, blocks.size());
  Stack stack = inputs;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const LayerPtr& l = blocks[i];
    if (old_states) {
      old_states->push_back(static_cast<ReversibleLayer*>(l.get())->state_for_backward(l->state()));
    }
    stack = replace_top(stack, l->n_in(), l->apply(top(stack, l->n_in()), rngs[i]));
    if (new_states) new_states->push_back(l->state());
  }
  return stack;
}

Stack ReversibleSerialLayer::forward(const Stack& inputs) {
  if (!reversible_backward_ || autodiff::recording_tape() == nullptr) {
    return run_blocks(inputs, nullptr, nullptr);
  }
  // What the backward pass needs besides the outputs: the per-block states, the
  // rng, and the weight values the forward used.
  struct Saved {
    std::vector<State> old_states, new_states;
    std::vector<Tensor> weights;
    Key rng;
  };
  auto saved = std::make_shared<Saved>();
  saved->rng = rng_;
  VarList parents = inputs;
  for (const Var& w : flat_weight_vars()) {
    parents.push_back(w);
    saved->weights.push_back(w.value());
  }
  const std::size_t n = inputs.size();
  auto self = std::static_pointer_cast<ReversibleSerialLayer>(shared_from_this());

  auto forward_fn = [self, saved, n](const std::vector<Tensor>& in,
                                     std::vector<Tensor>& residuals) {
    const Stack out = self->run_blocks(Stack(in.begin(), in.begin() + static_cast<long>(n)),
                                       &saved->old_states, &saved->new_states);
    residuals = values_of(out);
    return residuals;
  };
  auto backward_fn = [self, saved](const std::vector<Tensor>& outputs,
                                   const std::vector<Tensor>& output_cts) {
    // Differentiate with the weights the forward used, whatever is installed now.
    ReverseGrad g;
    {
      base::RestoreGuard restore(*self, base::RestoreGuard::weights);
      self->set_flat_weights(saved->weights);
      g = self->walk_back(outputs, output_cts, saved->old_states, saved->new_states, saved->rng);
    }
    std::vector<Tensor> cts = std::move(g.input_cts);
    cts.insert(cts.end(), g.weight_cts.begin(), g.weight_cts.end());
    return cts;
  };
  return autodiff::custom_vjp("ReversibleSerial", parents, forward_fn, backward_fn);
}

State ReversibleSerialLayer::state_for_backward(const State& before) const {
  const auto& blocks = sublayers();
  if (before.is_leaf() || before.size() != blocks.size()) return before;
  std::vector<State> kept;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    kept.push_back(
        static_cast<const ReversibleLayer*>(blocks[b].get())->state_for_backward(before[b]));
  }
  return State::list(std::move(kept));
}

ReverseGrad ReversibleSerialLayer::walk_back(std::vector<Tensor> stack,
                                             std::vector<Tensor> stack_ct,
                                             const std::vector<State>& old_states,
                                             const std::vector<State>& new_states, Key rng) {
  const auto& blocks = sublayers();
  const auto rngs = core::split(rng, std::max<std::size_t>(blocks.size(), 1));
  // Where each block's flat weights sit in this layer's flat list (a layer shared
  // between blocks appears once there; its cotangents from each use add up).
  const std::vector<base::NamedTensor> all = flat_weights();
  std::vector<Tensor> weight_cts(all.size());
  for (std::size_t b = blocks.size(); b-- > 0;) {
    auto* block = static_cast<ReversibleLayer*>(blocks[b].get());
    const int n_out = block->n_out();
    ReverseGrad g = block->reverse_and_grad(top(stack, n_out), top(stack_ct, n_out),
                                            old_states.at(b), new_states.at(b), rngs[b]);
    stack = replace_top(stack, n_out, std::move(g.inputs));
    stack_ct = replace_top(stack_ct, n_out, std::move(g.input_cts));
    const std::vector<base::NamedTensor> mine = block->flat_weights();
    for (std::size_t j = 0; j < mine.size(); ++j) {
      std::size_t k = 0;
      while (k < all.size() && all[k].value.raw_data() != mine[j].value.raw_data()) ++k;
      if (k == all.size()) {
        throw core::ValueError(name() + ": weight " + mine[j].name + " of block " +
                               std::to_string(b) + " is not among the layer's weights");
      }
      weight_cts[k] = weight_cts[k].defined() ? core::add(weight_cts[k], g.weight_cts.at(j))
                                              : g.weight_cts.at(j);
    }
  }
  for (std::size_t k = 0; k < all.size(); ++k) {
    if (!weight_cts[k].defined()) {
      weight_cts[k] = Tensor::zeros(all[k].value.shape(), all[k].value.dtype());
    }
  }
  ReverseGrad g;
  g.inputs = std::move(stack);
  g.input_cts = std::move(stack_ct);
  g.weight_cts = std::move(weight_cts);
  return g;
}

std::vector<Tensor> ReversibleSerialLayer::reverse(const std::vector<Tensor>& outputs,
                                                   const State& state, const State& new_state,
                                                   Key rng) {
  check_count(name(), "outputs", outputs.size(), n_out());
  const auto& blocks = sublayers();
  const auto rngs = core::split(rng, std::max<std::size_t>(blocks.size(), 1));
  std::vector<Tensor> stack = outputs;
  for (std::size_t b = blocks.size(); b-- > 0;) {
    auto* block = static_cast<ReversibleLayer*>(blocks[b].get());
    const int n_out = block->n_out();
    stack = replace_top(stack, n_out,
                        block->reverse(top(stack, n_out), child_state(state, b),
                                       child_state(new_state, b), rngs[b]));
  }
  return stack;
}

ReverseGrad ReversibleSerialLayer::reverse_and_grad(const std::vector<Tensor>& outputs,
                                                    const std::vector<Tensor>& output_cts,
                                                    const State& state, const State& new_state,
                                                    Key rng) {
  check_count(name(), "outputs", outputs.size(), n_out());
  check_count(name(), "output cotangents", output_cts.size(), n_out());
  std::vector<State> old_states, new_states;
  for (std::size_t b = 0; b < sublayers().size(); ++b) {
    old_states.push_back(child_state(state, b));
    new_states.push_back(child_state(new_state, b));
  }
  return walk_back(outputs, output_cts, old_states, new_states, rng);
}

// ---- factories --------------------------------------------------------------------------

LayerPtr ReversibleSwap(std::source_location where) {
  return std::make_shared<ReversibleSwapLayer>(where);
}

LayerPtr ReversibleHalfResidual(std::vector<LayerPtr> residual_layers, LayerPtr attention_layer,
                                std::source_location where) {
  return std::make_shared<ReversibleHalfResidualLayer>(std::move(residual_layers),
                                                       std::move(attention_layer), where);
}

LayerPtr ReversibleSerial(std::vector<LayerPtr> layers, std::source_location where) {
  return std::make_shared<ReversibleSerialLayer>(std::move(layers), where);
}

LayerPtr ReversibleSerial(std::vector<LayerPtr> layers, ReversibleSerialOptions options,
                          std::source_location where) {
  auto layer = std::make_shared<ReversibleSerialLayer>(std::move(layers), where);
  layer->set_reversible_backward(options.reversible_backward);
  return layer;
}

}  // namespace minitrax::layers
