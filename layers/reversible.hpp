/// @file
/// Reversible layers, the Reformer's second reform.
///
/// A reversible layer can rebuild its inputs from its outputs, so a stack of them
/// needs no stored activations for the backward pass: the backward walks the blocks
/// last to first, rebuilds each block's input from its output, and differentiates
/// the block on a private tape right there (Trax 1.3.4, trax/layers/reversible.py and
/// ReversibleHalfResidualV2 in trax/models/reformer/reformer.py).
///
/// @code{.unparsed}
///   ReversibleSwap()                      [a, b]          -> [b, a]
///   ReversibleHalfResidual({F}, attn)     [acc, ctx...]   -> [acc + attn(F(ctx)), ctx...]
///   ReversibleSerial({blocks...})         the blocks one after another; on a tape it
///                                         records ONE node, whatever the depth
/// @endcode
///
/// The lab's example (F(x) = 2x, G(x) = 10x), from tests/test_reversible.cpp:
///
/// @code
/// std::vector<LayerPtr> blocks;
/// for (int round = 0; round < 2; ++round) {
///   blocks.push_back(ReversibleHalfResidual({F}));
///   blocks.push_back(ReversibleSwap());
///   blocks.push_back(ReversibleHalfResidual({G}));
///   blocks.push_back(ReversibleSwap());
/// }
/// auto model = Serial({Dup(), ReversibleSerial(blocks), Concatenate()});
/// model->init({1});
/// (*model)(Var(x));   // x = [1] gives [65, 681]
/// @endcode
///
/// Randomness and state replay exactly in the backward pass: each block gets the rng
/// it got in the forward (ReversibleSerial splits its rng over its blocks as Serial
/// does, a half-residual over its sublayers), the residual layers run again with the
/// state they had before the forward, and an attention layer in the half-residual's
/// attention slot runs with the state the forward left (the LSH buckets) and
/// update_state = false, as in Trax.
///
/// Weights: reverse and reverse_and_grad use the weights installed in the layer (the
/// ones its forward used); weight cotangents come back in flat_weights() order.
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

/// A layer whose inputs can be computed from its outputs: the base of
/// ReversibleSwapLayer, ReversibleHalfResidualLayer and ReversibleSerialLayer (and of
/// any new reversible block: override forward() and reverse()).
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

/// [a, b] -> [b, a]; its own inverse. Made by ReversibleSwap().
class ReversibleSwapLayer : public ReversibleLayer {
 public:
  /// A swap created at `where`.
  explicit ReversibleSwapLayer(std::source_location where);
  std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                              const State& new_state, Key rng) override;
  ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_cts, const State& state,
                               const State& new_state, Key rng) override;

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
};

/// Half of a RevNet residual (Trax 1.3.4's ReversibleHalfResidualV2):
/// [acc, ctx...] -> [acc + residual, ctx...], where residual is the first output
/// of Serial(residual_layers) run on the context, followed by the attention layer
/// when one is given. The context passes through unchanged; n_in = n_out is the
/// deepest the stack gets, plus the accumulator. Reverse: acc = output - residual.
/// Made by ReversibleHalfResidual().
class ReversibleHalfResidualLayer : public ReversibleLayer {
 public:
  /// See ReversibleHalfResidual().
  ReversibleHalfResidualLayer(std::vector<LayerPtr> residual_layers, LayerPtr attention_layer,
                              std::source_location where);
  /// Serial(residual_layers): the part run on the context before the attention.
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
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
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
/// Made by ReversibleSerial().
class ReversibleSerialLayer : public ReversibleLayer {
 public:
  /// See ReversibleSerial().
  ReversibleSerialLayer(std::vector<LayerPtr> layers, std::source_location where);

  /// Off: the forward records every op as an ordinary Serial would (plain
  /// backprop through the same blocks; for comparisons and memory benchmarks).
  void set_reversible_backward(bool on) { reversible_backward_ = on; }
  /// Whether the backward pass reconstructs (true, the default) or backpropagates.
  bool reversible_backward() const { return reversible_backward_; }

  std::vector<Tensor> reverse(const std::vector<Tensor>& outputs, const State& state,
                              const State& new_state, Key rng) override;
  ReverseGrad reverse_and_grad(const std::vector<Tensor>& outputs,
                               const std::vector<Tensor>& output_cts, const State& state,
                               const State& new_state, Key rng) override;
  /// Each block's state_for_backward.
  State state_for_backward(const State& before) const override;

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
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

/// [a, b] -> [b, a], reversible (see ReversibleSwapLayer).
LayerPtr ReversibleSwap(std::source_location where = std::source_location::current());
/// ReversibleHalfResidual(residual_layers, attention_layer = nullptr):
/// [acc, ctx...] -> [acc + attention(Serial(residual_layers)(ctx...)), ctx...] (see
/// ReversibleHalfResidualLayer). The Reformer's attention half, on streams [B, L, d]:
/// @code
/// auto half = ReversibleHalfResidual({LayerNorm()}, research::LSHSelfAttention({.n_heads = 2,
///                                                      .chunk_len = 16, .n_hashes = 4}));
/// // (x1, x2) -> (x1 + LSHAttention(LayerNorm(x2)), x2)
/// @endcode
LayerPtr ReversibleHalfResidual(std::vector<LayerPtr> residual_layers,
                                LayerPtr attention_layer = nullptr,
                                std::source_location where = std::source_location::current());
/// Reversible layers one after another (see ReversibleSerialLayer). Every layer must
/// be reversible (ValueError naming the first that is not).
/// @code
/// auto body = ReversibleSerial({ReversibleHalfResidual({F}), ReversibleSwap(),
///                               ReversibleHalfResidual({G}), ReversibleSwap()});
/// // (x1, x2) -> (y1, y2) = (x1 + F(x2), x2 + G(x1 + F(x2))), same shapes
/// @endcode
LayerPtr ReversibleSerial(std::vector<LayerPtr> layers,
                          std::source_location where = std::source_location::current());
/// The options of ReversibleSerial beyond its layers.
struct ReversibleSerialOptions {
  /// false: plain backprop through the same blocks (see
  /// ReversibleSerialLayer::set_reversible_backward), for comparisons.
  bool reversible_backward = true;
};
/// ReversibleSerial with options.
/// @code
/// auto plain = ReversibleSerial(blocks, {.reversible_backward = false});
/// @endcode
LayerPtr ReversibleSerial(std::vector<LayerPtr> layers, ReversibleSerialOptions options,
                          std::source_location where = std::source_location::current());

}  // namespace minitrax::layers
