// minitrax/layers/base.hpp: base::Layer, the contract every layer keeps.
//
// A layer is a function on a data stack, as in Trax (trax/layers/base.py):
// it takes the top n_in items of the stack and puts back its n_out outputs.
// It owns its weights and state (trees mirroring its sublayers), knows where it
// was created (for error messages), and has an rng key from which all its
// randomness is derived. Layers are ordinary C++ classes held by shared_ptr; the
// same layer object used twice in a model shares its weights (Trax's "weight
// sharing is layer sharing").
//
//   auto model = Serial({Dense(64), Relu(), Dense(10), LogSoftmax()});
//   model->init({{{8, 32}, DType::f32}}, key_from_seed(0));
//   Var y = (*model)(x);                         // forward with the layer's own weights
//   auto [ys, new_state] = model->pure_fn({x}, weights, state, rng);   // pure form
//
// Weights and state during a forward pass are Trees of Vars, so a tape records
// the whole model and gradients reach every weight, shared or not.
#pragma once

#include <memory>
#include <source_location>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "core/tree.hpp"

namespace minitrax::base {

using autodiff::Var;
using core::DType;
using core::Key;
using core::Shape;
using core::Tensor;
using core::Tree;

/// The data stack: the inputs or outputs of a layer, top of stack first.
using Stack = std::vector<Var>;

/// Shape and dtype of one stack item (Trax's ShapeDtype).
struct ShapeDtype {
  Shape shape;
  DType dtype = DType::f32;
  friend bool operator==(const ShapeDtype&, const ShapeDtype&) = default;
};
/// The signature of a stack: one ShapeDtype per item.
using Signature = std::vector<ShapeDtype>;
std::string signature_str(const Signature& sig);
Signature signature_of(const Stack& xs);

/// Weights and state as trees mirroring the sublayers. A leaf holding an
/// undefined Tensor/Var is the "shared: see the first occurrence" marker.
using Weights = Tree<Tensor>;
using State = Tree<Tensor>;
using VarTree = Tree<Var>;

enum class Mode { train, eval, predict };
std::string_view mode_name(Mode mode);

/// An error inside a layer, with the layer's name, where it was created, its
/// input shapes, then the original message; outer layers append their frames.
class LayerError : public core::Error {
 public:
  LayerError(const std::string& message, std::string original)
      : core::Error(message), original_(std::move(original)) {}
  /// The message of the exception that started it.
  const std::string& original() const { return original_; }

 private:
  std::string original_;
};

class Layer;
using LayerPtr = std::shared_ptr<Layer>;

/// A named weight (e.g. "Serial/Dense_1/w") in the flat view.
struct NamedTensor {
  std::string name;
  Tensor value;
};

class Layer : public std::enable_shared_from_this<Layer> {
 public:
  Layer(int n_in, int n_out, std::string name,
        std::source_location where = std::source_location::current());
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  // ---- identity ---------------------------------------------------------------
  const std::string& name() const { return name_; }
  int n_in() const { return n_in_; }
  int n_out() const { return n_out_; }
  const std::vector<LayerPtr>& sublayers() const { return sublayers_; }
  /// Where the layer was created ("file.cpp:12").
  std::string where() const;
  /// Trax-style structure: "Serial_in2_out2[\n  Dense_64\n  ...]".
  std::string repr() const;
  /// The short label used in repr (name plus key sizes, e.g. "Dense_64").
  virtual std::string label() const { return name_; }

  // ---- initialisation -------------------------------------------------------------
  /// Creates weights and state for inputs of this signature, from `rng` (split
  /// over sublayers). Idempotent with use_cache: a layer already initialised in
  /// this pass returns markers, so a layer used twice keeps one set of weights.
  std::pair<Weights, State> init(const Signature& input_signature, Key rng = core::key_from_seed(0),
                                 bool use_cache = false);
  bool initialized() const { return initialized_; }

  // ---- weights and state -------------------------------------------------------------
  /// Current weights as a tree mirroring sublayers (markers where a sublayer repeats).
  Weights weights() const;
  /// Installs weights (a tree as returned by weights(); markers are skipped).
  void set_weights(const Weights& weights);
  /// The same, with Vars (what a training step does before its forward pass).
  void set_weights(const VarTree& weights);
  VarTree weight_vars() const;
  State state() const;
  void set_state(const State& state);
  /// Weights flat, depth first, each named by its path, shared weights once.
  std::vector<NamedTensor> flat_weights() const;
  /// Sets weights from a flat list in the order of flat_weights().
  void set_flat_weights(const std::vector<Tensor>& flat);
  /// The same with Vars: a training step watches the flat weights on a tape,
  /// installs them, runs the model, and differentiates with respect to them.
  void set_flat_weights(const std::vector<Var>& flat);
  std::vector<Var> flat_weight_vars() const;
  /// State flat and named, like flat_weights.
  std::vector<NamedTensor> flat_state() const;
  void set_flat_state(const std::vector<Tensor>& flat);

  // ---- running --------------------------------------------------------------------
  /// Applies the layer with its own weights and state, updating its state.
  /// `inputs` must hold exactly n_in items.
  Stack operator()(const Stack& inputs);
  /// One input, one output.
  Var operator()(const Var& x);
  /// As a pure function: weights, state and rng given; returns (outputs, new state).
  /// The layer's own weights and state are left as they were.
  std::pair<Stack, State> pure_fn(const Stack& inputs, const VarTree& weights, const State& state,
                                  Key rng);
  /// The output signature for an input signature, from shapes alone.
  Signature output_signature(const Signature& input_signature);

  /// Applies the layer inside a forward pass: checks the inputs, sets the rng,
  /// names the scope, and turns exceptions into LayerErrors. Combinators call it.
  Stack apply(const Stack& inputs, Key rng);

  // ---- mode and rng -----------------------------------------------------------------
  Mode mode() const { return mode_; }
  /// Sets the mode of this layer and all sublayers.
  void set_mode(Mode mode);
  Key rng() const { return rng_; }
  /// Sets the rng, splitting it over sublayers recursively (as Trax's rng setter).
  void set_rng(Key rng);

 protected:
  /// The computation: exactly n_in inputs in, n_out outputs out. Use weight(i),
  /// state_, rng_ and mode_; assign state_ for a new state.
  virtual Stack forward(const Stack& inputs) = 0;
  /// Creates weights_ and state_ from the input signature (layers with weights).
  virtual void init_weights_and_state(const Signature& input_signature);
  /// Shape inference. The default runs forward on zeros without recording;
  /// layers override it with a rule that touches no data.
  virtual Signature forward_signature(const Signature& input_signature);
  /// Names of this layer's own weights ("w", "b"); default "0", "1", ...
  virtual std::vector<std::string> weight_names() const;

  /// This layer's own weights (leaf layers), as a tree of Vars.
  const VarTree& own_weights() const { return weights_; }
  /// Leaf i of the own-weights list.
  const Var& weight(std::size_t i) const;
  void set_own_weights(std::vector<Tensor> ws);
  void set_sublayers(std::vector<LayerPtr> sublayers);
  /// n_in/n_out can be set by combinators after the sublayers are known.
  void set_arity(int n_in, int n_out) {
    n_in_ = n_in;
    n_out_ = n_out;
  }

  State state_;
  Key rng_ = core::key_from_seed(0);
  Mode mode_ = Mode::train;

 private:
  void clear_init_cache();
  void collect_flat_weights(const std::string& prefix, std::vector<NamedTensor>& out,
                            std::vector<const Layer*>& seen) const;
  void collect_flat_state(const std::string& prefix, std::vector<NamedTensor>& out,
                          std::vector<const Layer*>& seen) const;
  void assign_flat_weights(const std::vector<Var>& flat, std::size_t& pos,
                           std::vector<const Layer*>& seen);
  void assign_flat_state(const std::vector<Tensor>& flat, std::size_t& pos,
                         std::vector<const Layer*>& seen);
  VarTree weights_tree(std::vector<const Layer*>& seen) const;
  State state_tree(std::vector<const Layer*>& seen) const;

  int n_in_, n_out_;
  std::string name_;
  std::source_location where_;
  std::vector<LayerPtr> sublayers_;
  VarTree weights_;  // leaf layers: their weights; combinators: unused
  bool initialized_ = false;
  bool init_cached_ = false;
};

/// Zero tensors of a signature (for shape inference by running a layer).
Stack zeros_of(const Signature& sig);

}  // namespace minitrax::base
