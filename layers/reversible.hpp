// minitrax/layers/reversible.hpp: reversible layers, the Reformer's second reform.
//
// A reversible layer can rebuild its inputs from its outputs, so a stack of them
// needs no stored activations for the backward pass: the backward walks the blocks
// last to first, rebuilds each block's input from its output, and differentiates
// the block on a private tape right there (Trax 1.3.4, trax/layers/reversible.py and
// ReversibleHalfResidualV2 in trax/models/reformer/reformer.py).
//
//   ReversibleSwap()                      [a, b]          -> [b, a]
//   ReversibleHalfResidual({F}, attn)     [acc, ctx...]   -> [acc + attn(F(ctx)), ctx...]
//   ReversibleSerial({blocks...})         the blocks one after another; on a tape it
//                                         records ONE node, whatever the depth
//
// The lab's example (F(x) = 2x, G(x) = 10x):
//
//   auto model = Serial({Dup(), ReversibleSerial({ReversibleHalfResidual({F}), ReversibleSwap(),
//                                                 ReversibleHalfResidual({G}), ReversibleSwap()}),
//                        Concatenate()});
//   model(1) -> [ 3 + 10*...]   (see tests/test_reversible.cpp: x = 1 gives [65, 681] for two
//   rounds)
//
// Randomness and state replay exactly in the backward pass: each block gets the rng
// it got in the forward (ReversibleSerial splits its rng over its blocks as Serial
// does, a half-residual over its sublayers), the residual layers run again with the
// state they had before the forward, and an attention layer in the half-residual's
// attention slot runs with the state the forward left (the LSH buckets) and
// update_state = false, as in Trax.
//
// Weights: reverse and reverse_and_grad use the weights installed in the layer (the
// ones its forward used); weight cotangents come back in flat_weights() order.
#pragma once

#include <memory>
#include <source_location>
#include <vector>

#include "layers/base.hpp"

namespace minitrax::layers {

using base::Key;
using base::LayerPtr;
using base::Signature;
using base::Stack;
using base::State;
using base::Tensor;

/// What reverse_and_grad returns.
struct ReverseGrad {
  std::vector<Tensor> inputs;      ///< the reconstructed inputs (n_in of them)
  std::vector<Tensor> input_cts;   ///< cotangents of the inputs
  std::vector<Tensor> weight_cts;  ///< cotangents of the weights, in flat_weights() order
};

/// A layer whose inputs can be computed from its outputs.
class ReversibleLayer : public base::Layer {
 public:
  using base::Layer::Layer;

  /// The inputs that produced `outputs`. `state` is the state before the forward
  /// pass, `new_state` the state after it, `rng` the rng the forward pass used.
  virtual std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                                      const State& new_state, Key rng);

  /// The backward pass from outputs alone: reconstructs the inputs and pulls
  /// `output_cts` back to the inputs and the weights. The default reverses, then
  /// differentiates forward at the reconstructed inputs on a private tape.
  virtual ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                                       const std::vector<Tensor>& output_cts, const State& state,
                                       const State& new_state, Key rng);

  /// What of the state before the forward pass the backward pass needs (kept from
  /// the forward to the backward): all of it by default. Layers that replay from
  /// the state after the forward (an attention layer's buckets) drop the rest.
  virtual State state_for_backward(const State& before) const { return before; }

 protected:
  /// The VJP of this layer's forward at `inputs` (state and rng given), with
  /// respect to the inputs and the flat weights, applied to `output_cts`.
  ReverseGrad grad_at(const std::vector<Tensor>& inputs, const std::vector<Tensor>& output_cts,
                      const State& state, Key rng);
};

/// [a, b] -> [b, a]; its own inverse.
class ReversibleSwapLayer : public ReversibleLayer {
 public:
  explicit ReversibleSwapLayer(std::source_location where);
  std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                              const State& new_state, Key rng) override;
  ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_cts, const State& state,
                               const State& new_state, Key rng) override;

 protected:
  Stack forward(const Stack& inputs) override;
  Signature forward_signature(const Signature& input_signature) override;
};

/// Half of a RevNet residual (Trax 1.3.4's ReversibleHalfResidualV2):
/// [acc, ctx...] -> [acc + residual, ctx...], where residual is the first output
/// of Serial(residual_layers) run on the context, followed by the attention layer
/// when one is given. The context passes through unchanged; n_in = n_out is the
/// deepest the stack gets, plus the accumulator. Reverse: acc = output - residual.
class ReversibleHalfResidualLayer : public ReversibleLayer {
 public:
  ReversibleHalfResidualLayer(std::vector<LayerPtr> residual_layers, LayerPtr attention_layer,
                              std::source_location where);
  const LayerPtr& compute_residual() const { return sublayers()[0]; }
  /// The attention layer, or nullptr.
  LayerPtr attention_layer() const;

  std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                              const State& new_state, Key rng) override;
  ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_cts, const State& state,
                               const State& new_state, Key rng) override;
  /// The residual layers' state; not the attention layer's (it replays from new_state).
  State state_for_backward(const State& before) const override;

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;

 private:
  // The residual from the context, with the sublayers' states and rngs given.
  base::Var residual_of(const Stack& context, const State& residual_state,
                        const State* attention_state, const std::vector<Key>& rngs);
};

/// Reversible sublayers one after another (Trax's ReversibleSerial). With a tape
/// recording and reversible_backward on (the default), the whole stack is one
/// node on the tape: its forward keeps only the outputs, per-block states and
/// rngs; its backward walks the blocks in reverse with reverse_and_grad.
class ReversibleSerialLayer : public ReversibleLayer {
 public:
  ReversibleSerialLayer(std::vector<LayerPtr> layers, std::source_location where);

  /// Off: the forward records every op as an ordinary Serial would (plain
  /// backprop through the same blocks; for comparisons and memory benchmarks).
  void set_reversible_backward(bool on) { reversible_backward_ = on; }
  bool reversible_backward() const { return reversible_backward_; }

  std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                              const State& new_state, Key rng) override;
  ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_cts, const State& state,
                               const State& new_state, Key rng) override;
  /// Each block's state_for_backward.
  State state_for_backward(const State& before) const override;

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;

 private:
  // Runs the blocks (ops record if a tape does); per-block states before/after.
  Stack run_blocks(const Stack& inputs, std::vector<State>* old_states,
                   std::vector<State>* new_states);
  ReverseGrad walk_back(std::vector<Tensor> stack, std::vector<Tensor> stack_ct,
                        const std::vector<State>& old_states, const std::vector<State>& new_states,
                        Key rng);

  bool reversible_backward_ = true;
};

LayerPtr ReversibleSwap(std::source_location where = std::source_location::current());
/// ReversibleHalfResidual(residual_layers, attention_layer = nullptr).
LayerPtr ReversibleHalfResidual(std::vector<LayerPtr> residual_layers,
                                LayerPtr attention_layer = nullptr,
                                std::source_location where = std::source_location::current());
/// Every layer must be reversible (ValueError naming the first that is not).
LayerPtr ReversibleSerial(std::vector<LayerPtr> layers,
                          std::source_location where = std::source_location::current());

}  // namespace minitrax::layers
