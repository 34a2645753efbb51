/// @file
/// base::Layer, the contract every layer keeps (see the class documentation of
/// minitrax::base::Layer), and the types around it: the data stack, signatures,
/// weight and state trees, modes and LayerError.
#pragma once

#include <initializer_list>
#include <memory>
#include <optional>
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
  Shape shape;               ///< The item's shape, e.g. {8, 32}.
  DType dtype = DType::f32;  ///< The item's element type.
  /// Equal shapes and dtypes.
  friend bool operator==(const ShapeDtype&, const ShapeDtype&) = default;
};
/// The signature of a stack: one ShapeDtype per item.
using Signature = std::vector<ShapeDtype>;
/// A signature as text, e.g. "(f32[8, 32], i32[8])", for error messages.
std::string signature_str(const Signature& sig);
/// The signature of a stack of Vars: each item's shape and dtype.
Signature signature_of(const Stack& xs);

/// Weights and state as trees mirroring the sublayers. A leaf holding an
/// undefined Tensor/Var is the "shared: see the first occurrence" marker.
using Weights = Tree<Tensor>;
/// A layer's state (e.g. predict-mode caches, LSH buckets), a tree like Weights.
using State = Tree<Tensor>;
/// Weights as Vars, as a forward pass sees them (so a tape records their use).
using VarTree = Tree<Var>;

/// What a layer is run for: train (dropout on), eval (no dropout) or predict
/// (fast autoregressive inference, one or more positions per call, with caches in
/// the state).
enum class Mode {
  train,   ///< Training: dropout and other train-only randomness on.
  eval,    ///< Evaluation: deterministic, whole sequences.
  predict  ///< Fast inference: layers keep their past in their state.
};
/// "train", "eval" or "predict".
std::string_view mode_name(Mode mode);

/// An error inside a layer, with the layer's name, where it was created, its
/// input shapes, then the original message; outer layers append their frames.
class LayerError : public core::Error {
 public:
  /// `message` is the full text (frames included); `original` the first error's message.
  LayerError(const std::string& message, std::string original)
      : core::Error(message), original_(std::move(original)) {}
  /// The message of the exception that started it.
  const std::string& original() const { return original_; }

 private:
  std::string original_;
};

class Layer;
class RestoreGuard;
/// Layers are held and composed by shared pointer; sharing a pointer shares weights.
using LayerPtr = std::shared_ptr<Layer>;

/// Where the layers of a model were created, for error messages ("created at
/// m.cpp:12"), without passing the site to every sublayer by hand.
///
/// Every layer records a creation site; a factory's defaulted last argument
/// (`SrcLoc where = SrcLoc::current()`) gives the line of its caller. A model factory
/// opens one CreationSite with its own `where` at the top; while it lives, every layer
/// constructed on this thread records that site, whatever `where` its factory got.
/// The model's code then reads like Trax's:
/// @code
/// LayerPtr MyModel(long d, SrcLoc where = SrcLoc::current()) {
///   base::CreationSite site(where);     // the caller's line, for every layer below
///   return Serial({LayerNorm(), Dense(d), Relu()});
/// }
/// @endcode
/// The outermost site wins: a model factory called by another (TransformerLM calls
/// DecoderBlock) opens a scope that changes nothing, so all layers name the line of
/// the user's outermost call. Scopes are per thread and end with their block (also
/// when it throws); layers constructed outside any scope keep their own `where`.
class CreationSite {
 public:
  /// Opens a scope recording `where` (unless an outer scope is open on this thread).
  explicit CreationSite(std::source_location where = std::source_location::current());
  /// Closes the scope (if it was the outermost, layers record their own site again).
  ~CreationSite();
  CreationSite(const CreationSite&) = delete;
  CreationSite& operator=(const CreationSite&) = delete;
  /// The site a layer constructed now records: the open scope's, or `own` if none is open.
  static std::source_location resolve(std::source_location own);

 private:
  bool outermost_;
};

/// A named weight (e.g. "Serial/Dense_1/w") in the flat view.
struct NamedTensor {
  std::string name;  ///< Path of the weight, e.g. "Serial/Dense_1/w".
  Tensor value;      ///< Its value.
};

/// The base class of every layer: a function on a data stack, as in Trax
/// (trax/layers/base.py).
///
/// A layer takes the top n_in() items of the stack and puts back its n_out()
/// outputs. It owns its weights and state (trees mirroring its sublayers), knows
/// where it was created (for error messages), and has an rng key from which all its
/// randomness is derived. Layers are ordinary C++ classes held by shared_ptr
/// (LayerPtr); the same layer object used twice in a model shares its weights
/// (Trax's "weight sharing is layer sharing").
///
/// Weights and state during a forward pass are Trees of Vars, so a tape records
/// the whole model and gradients reach every weight, shared or not.
///
/// @code
/// auto model = Serial({Dense(64), Relu(), Dense(10), LogSoftmax()});
/// model->init({8, 32}, DType::f32, key_from_seed(0));   // or init(x) from an example
/// Var y = (*model)(x);                         // x [8, 32] -> y [8, 10]
/// auto [ys, new_state] = model->pure_fn({x}, weights, state, rng);   // pure form
/// @endcode
///
/// A new layer derives from Layer, passes n_in, n_out and its name to the
/// constructor, and overrides forward() (and init_weights_and_state() if it has
/// weights, forward_signature() for shape inference without data).
class Layer : public std::enable_shared_from_this<Layer> {
 public:
  /// A layer taking `n_in` stack items and giving `n_out`, named `name` (its kind,
  /// e.g. "Dense"), created at `where` (the default records the caller's line).
  Layer(int n_in, int n_out, std::string name,
        std::source_location where = std::source_location::current());
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  // ---- identity ---------------------------------------------------------------
  /// The layer's kind ("Dense", "Serial", ...); the path element of flat_weights() names.
  const std::string& name() const { return name_; }
  /// How many stack items the layer takes.
  int n_in() const { return n_in_; }
  /// How many stack items the layer gives back.
  int n_out() const { return n_out_; }
  /// The direct sublayers (empty for leaf layers).
  const std::vector<LayerPtr>& sublayers() const { return sublayers_; }
  /// Where the layer was created ("file.cpp:12").
  std::string where() const;
  /// Trax-style structure: `"Serial_in2_out2[\n  Dense_64\n  ...]"`.
  std::string repr() const;
  /// The short label used in repr (name plus key sizes, e.g. "Dense_64").
  virtual std::string label() const { return name_; }

  // ---- initialisation -------------------------------------------------------------
  /// Creates weights and state for inputs of this signature, from `rng` (split
  /// over sublayers). Idempotent with use_cache: a layer already initialised in
  /// this pass returns markers, so a layer used twice keeps one set of weights.
  /// Returns the new (weights, state), which are also installed in the layer.
  /// @code
  /// auto dense = Dense(16);
  /// dense->init({{{4, 8}, DType::f32}});    // w [8, 16], b [16]
  /// @endcode
  std::pair<Weights, State> init(const Signature& input_signature, Key rng = core::key_from_seed(0),
                                 bool use_cache = false);
  /// init for one input shaped like `example` (its shape and dtype; no data is read).
  /// @code
  /// model->init(x, key);                  // x: a Tensor [2, 1024, 64] f32
  /// @endcode
  std::pair<Weights, State> init(const Tensor& example, Key rng = core::key_from_seed(0));
  /// init for one input shaped like the Var `example`.
  std::pair<Weights, State> init(const Var& example, Key rng = core::key_from_seed(0));
  /// init for one input of this shape and dtype, the shape as signed integers (what
  /// users hold sizes in); a negative extent is a ValueError naming it. An empty list
  /// means no inputs, as `init({})` always has (a scalar input: `init(Shape{})`).
  /// @code
  /// model->init({2, 1024, 64});                          // f32 [2, 1024, 64]
  /// model->init({batch, length}, DType::i32, key);       // long batch, length
  /// @endcode
  std::pair<Weights, State> init(std::initializer_list<long> shape, DType dtype = DType::f32,
                                 Key rng = core::key_from_seed(0));
  /// The same with the shape in a vector of signed integers.
  std::pair<Weights, State> init(const std::vector<long>& shape, DType dtype = DType::f32,
                                 Key rng = core::key_from_seed(0));
  /// The same with a core::Shape (e.g. another tensor's shape()).
  std::pair<Weights, State> init(const Shape& shape, DType dtype = DType::f32,
                                 Key rng = core::key_from_seed(0));
  /// Whether init() has run (or weights were installed).
  bool initialized() const { return initialized_; }

  // ---- weights and state -------------------------------------------------------------
  /// Current weights as a tree mirroring sublayers (markers where a sublayer repeats).
  Weights weights() const;
  /// Installs weights (a tree as returned by weights(); markers are skipped).
  void set_weights(const Weights& weights);
  /// The same, with Vars (what a training step does before its forward pass).
  void set_weights(const VarTree& weights);
  /// Current weights as Vars (what a forward pass uses), tree as weights().
  VarTree weight_vars() const;
  /// Current state as a tree mirroring sublayers (e.g. predict-mode caches).
  State state() const;
  /// Installs state (a tree as returned by state()).
  void set_state(const State& state);
  /// Weights flat, depth first, each named by its path, shared weights once.
  std::vector<NamedTensor> flat_weights() const;
  /// Sets weights from a flat list in the order of flat_weights().
  void set_flat_weights(const std::vector<Tensor>& flat);
  /// The same with Vars: a training step watches the flat weights on a tape,
  /// installs them, runs the model, and differentiates with respect to them.
  void set_flat_weights(const std::vector<Var>& flat);
  /// The flat weights as Vars, in flat_weights() order.
  std::vector<Var> flat_weight_vars() const;
  /// State flat and named, like flat_weights.
  std::vector<NamedTensor> flat_state() const;
  /// Sets state from a flat list in the order of flat_state().
  void set_flat_state(const std::vector<Tensor>& flat);

  // ---- running --------------------------------------------------------------------
  /// Applies the layer with its own weights and state, updating its state.
  /// `inputs` must hold exactly n_in items; returns n_out items.
  /// @code
  /// Stack ys = (*Branch({Dense(8), Dense(4)}))({x});   // x [B, d] -> {[B, 8], [B, 4]}
  /// @endcode
  Stack operator()(const Stack& inputs);
  /// One input, one output.
  Var operator()(const Var& x);
  /// As a pure function: weights, state and rng given; returns (outputs, new state).
  /// The layer's own weights and state are left as they were.
  std::pair<Stack, State> pure_fn(const Stack& inputs, const VarTree& weights, const State& state,
                                  Key rng);
  /// The output signature for an input signature, from shapes alone.
  /// @code
  /// Dense(10)->output_signature({{{8, 32}, DType::f32}});   // {{{8, 10}, f32}}
  /// @endcode
  Signature output_signature(const Signature& input_signature);

  /// Applies the layer inside a forward pass: checks the inputs, sets the rng,
  /// names the scope, and turns exceptions into LayerErrors. Combinators call it.
  /// A layer that was never initialised, and under which some layer with weights
  /// (a non-empty weight_names()) has none, is a LayerError naming both: "Serial
  /// (created at m.cpp:3) was called before init(): call init with the input signature
  /// first (or set its weights); its sublayer Dense (created at m.cpp:2) has no weights".
  Stack apply(const Stack& inputs, Key rng);
  /// apply() as the recomputation of an earlier forward pass (reversible layers' backward
  /// pass): a layer whose forward pass draws a new state (LSH attention rehashes with a
  /// fresh key) reuses its current state instead and leaves it unchanged. The default
  /// is apply(); EfficientAttentionBase overrides it (update_state = false for the call).
  virtual Stack recompute(const Stack& inputs, Key rng);
  /// The most positions this layer itself takes in predict mode (a positional encoding's
  /// table, a causal attention's cache), or nullopt when it sets no such limit (the
  /// default). Sampling takes the smallest over a model's layers.
  virtual std::optional<std::size_t> predict_max_len() const { return std::nullopt; }

  // ---- mode and rng -----------------------------------------------------------------
  /// The layer's mode (train, eval or predict).
  Mode mode() const { return mode_; }
  /// Sets the mode of this layer and all sublayers.
  void set_mode(Mode mode);
  /// The layer's rng key (dropout masks, LSH rotations, ... derive from it).
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
  /// Installs this layer's own weights (leaf layers, from init_weights_and_state).
  void set_own_weights(std::vector<Tensor> ws);
  /// Sets the sublayers (combinators, in their constructor).
  void set_sublayers(std::vector<LayerPtr> sublayers);
  /// n_in/n_out can be set by combinators after the sublayers are known.
  void set_arity(int n_in, int n_out) {
    n_in_ = n_in;
    n_out_ = n_out;
  }

  State state_;                       ///< This layer's own state; forward assigns the new one.
  Key rng_ = core::key_from_seed(0);  ///< The rng of the current call.
  Mode mode_ = Mode::train;           ///< The current mode.

 private:
  friend class RestoreGuard;  // puts rng_ back without set_rng's split over sublayers
  void clear_init_cache();
  const Layer* first_without_weights() const;
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

/// Puts back what a layer has installed (its weights, state, rng and mode) when the guard
/// goes out of scope, also when an exception leaves the scope: the one way minitrax code
/// swaps other weights or state into a layer for a while (pure_fn, the recomputations of
/// backward passes, the training loop around a step or a callback). release() keeps
/// the changes instead. A layer that was never initialised gets back its rng and mode.
/// @code
/// {
///   base::RestoreGuard restore(*layer);
///   layer->set_flat_weights(other);   // ... use the layer with other weights ...
/// }                                   // the layer's own weights are back
/// @endcode
class RestoreGuard {
 public:
  /// What a guard puts back (flags, combined with |).
  enum What : unsigned {
    weights = 1u,  ///< the installed weights (Vars: a tape's watched weights too)
    state = 2u,    ///< the state tree
    rng = 4u,      ///< the rng key (as it was, without set_rng's split)
    mode = 8u,     ///< the mode (of the layer and its sublayers)
    all = 15u,     ///< all of them
  };
  /// Saves what `what` names of the layer.
  explicit RestoreGuard(Layer& layer, unsigned what = all);
  /// Puts them back unless release() was called.
  ~RestoreGuard();
  RestoreGuard(const RestoreGuard&) = delete;
  RestoreGuard& operator=(const RestoreGuard&) = delete;
  /// Keeps whatever the layer has now (nothing is put back).
  void release() { active_ = false; }

 private:
  Layer& layer_;
  unsigned what_;
  bool initialized_;
  VarTree weights_;
  State state_;
  Key rng_;
  Mode mode_;
  bool active_ = true;
};

/// A layer's frame in error messages: "<name> (created at <file:line>)" followed by
/// `doing` (e.g. " with inputs [8, 32] f32"). Every LayerError frame is made here.
std::string layer_frame(const Layer& layer, const std::string& doing = "");

/// Inside a catch block: rethrows the exception in flight as a LayerError with `frame`
/// added. A plain exception becomes "<frame>: <message>"; a LayerError gets "\n  in
/// <frame>" appended (outer layers add their frames after inner ones) and keeps its
/// original message.
[[noreturn]] void rethrow_in_frame(const std::string& frame);

/// Zero tensors of a signature (for shape inference by running a layer).
Stack zeros_of(const Signature& sig);

}  // namespace minitrax::base
