/// @file
/// The basic layers (Trax 1.3.4's core.py, activation_fns.py, normalization.py's
/// LayerNorm, and attention.py's ShiftRight and PositionalEncoding).
///
/// @code{.unparsed}
///   Dense(n_units)                  x [..., d_in] -> x @ w + b [..., n_units]
///   Embedding(vocab_size, d)        ids [...] (int32/int64) -> [..., d]
///   Dropout(rate, shared_axes)      x * mask / (1 - rate) in train mode, x otherwise
///   LayerNorm(epsilon)              over the last axis, with scale and bias [d]
///   Relu, Gelu, FastGelu, Sigmoid, Tanh, LogSoftmax(axis)
///   ShiftRight(n)                   zeros on the left of axis 1, last n dropped
///   PositionalEncoding(max_len)     x [B, L, d] + sinusoids [L, d]
///   Mean(axis, keepdims), Flatten(n_axes_to_keep)
/// @endcode
///
/// Each factory takes the creation site as its last (defaulted) argument, as the
/// combinators do; under a base::CreationSite (opened by model factories) every layer
/// records the scope's site instead, so model code calls `Dense(n)` without it. A layer's name() is
/// its kind ("Dense"), which gives the paths of flat_weights() ("Serial/Dense_1/w"); label() is
/// Trax's name with sizes
/// ("Dense_64"), used by repr().
///
/// Weight dtype: a layer's weights take the dtype of its (first) input signature if
/// that is floating, float32 otherwise (Embedding, whose input is ids, is always
/// float32). Random draws are made in float32 in any case (see initializers.hpp), so
/// init with a float64 signature gives the float32 model's values in float64. At run
/// time the input's floating dtype must equal the weights' dtype (DTypeError
/// otherwise); base::cast_layer converts a whole model.
///
/// Deliberate differences from Trax 1.3.4, all in the direction of errors over
/// silent surprises:
///   * Embedding: an id outside [0, vocab_size) is a ValueError naming the id and the
///     vocabulary size (Trax's jnp.take clips it into range).
///   * Dropout: rate must be in [0, 1) (Trax does not check).
///   * PositionalEncoding: odd d_feature is allowed (feature 2i is sin, 2i+1 is cos of
///     the same frequency; Trax's numpy assignment fails for odd d). In predict mode a
///     position past max_len is an error (JAX would clamp the slice start).
///   * ShiftRight(0) is the identity (Trax's [:, :-0] would return an empty slice).
#pragma once

#include <cstddef>
#include <functional>
#include <source_location>
#include <string>
#include <vector>

#include "layers/base.hpp"
#include "layers/initializers.hpp"

namespace minitrax::layers {

using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using core::DType;
using core::Shape;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

// ---- layers with weights --------------------------------------------------------------

/// y = x @ w + b. Weights: w [d_in, n_units] ("w"), b [n_units] ("b", if use_bias).
/// Trax splits its rng in two: the first key draws w, the second b.
/// Input x [..., d_in], output [..., n_units]. Made by Dense().
class DenseLayer : public base::Layer {
 public:
  /// See Dense().
  DenseLayer(long n_units, init::Initializer kernel_init, init::Initializer bias_init,
             bool use_bias, SrcLoc where);
  /// `"Dense_<n_units>"`.
  std::string label() const override;
  /// The output width.
  std::size_t n_units() const { return n_units_; }
  /// Whether the layer has the bias b.
  bool use_bias() const { return use_bias_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::weight_names
  std::vector<std::string> weight_names() const override;

 private:
  void check_input(const Shape& shape, DType dtype) const;
  std::size_t n_units_;
  init::Initializer kernel_init_, bias_init_;
  bool use_bias_;
};

/// Row lookup: out[..., :] = embeddings[ids[...], :]. Weight: embeddings [vocab, d]
/// ("embeddings"), drawn from the layer's rng unsplit (as Trax). Input ids [...]
/// (int32/int64), output float [..., d_feature]. Made by Embedding().
class EmbeddingLayer : public base::Layer {
 public:
  /// See Embedding().
  EmbeddingLayer(long vocab_size, long d_feature, init::Initializer init, SrcLoc where);
  /// `"Embedding_<vocab_size>_<d_feature>"`.
  std::string label() const override;
  /// The number of ids (rows of the table).
  std::size_t vocab_size() const { return vocab_size_; }
  /// The width of each embedding.
  std::size_t d_feature() const { return d_feature_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::weight_names
  std::vector<std::string> weight_names() const override;

 private:
  std::size_t vocab_size_, d_feature_;
  init::Initializer init_;
};

/// y = (x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, with the
/// biased variance (Trax's LayerNorm). Weights: scale [d] ones, bias [d] zeros.
/// Input x [..., d], output of the same shape. Made by LayerNorm().
class LayerNormLayer : public base::Layer {
 public:
  /// See LayerNorm().
  LayerNormLayer(double epsilon, SrcLoc where);
  /// The constant added to the variance.
  double epsilon() const { return epsilon_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::weight_names
  std::vector<std::string> weight_names() const override;

 private:
  void check_input(const Shape& shape, DType dtype) const;
  double epsilon_;
};

/// Trax 1.3.4's PositionalEncoding: a trainable weight pe [1, max_len, d] ("pe")
/// initialised to pe[0, p, 2i] = sin(p * f_i), pe[0, p, 2i+1] = cos(p * f_i) with
/// f_i = exp(-2i * ln(10000) / d). Input x [B, L, d], output x + pe[:, :L].
///
/// train mode with dropout > 0: x + pe[:, :L] * mask / keep, the mask drawn from the
/// rng with size 1 on dropout_broadcast_dims of [1, L, d] (default {-2}: one mask
/// value per feature, shared over batch and positions). eval/predict: no dropout.
///
/// predict mode (fast inference, one or more positions per call): the state is an
/// int32 tensor [B] holding each sequence's next position, zeros after init in
/// predict mode (or on the first predict call if the layer was initialised in
/// another mode). A call with L positions adds pe[0, s_b : s_b + L] to sequence b and
/// advances the state by L. Outside predict mode the state is empty.
///
/// Made by PositionalEncoding().
class PositionalEncodingLayer : public base::Layer {
 public:
  /// See PositionalEncoding().
  PositionalEncodingLayer(long max_len, double dropout, Mode mode,
                          std::vector<long> dropout_broadcast_dims, SrcLoc where);
  /// The number of positions encoded (the length of pe).
  std::size_t max_len() const { return max_len_; }
  /// max_len(): predict mode takes at most that many positions.
  std::optional<std::size_t> predict_max_len() const override { return max_len_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::weight_names
  std::vector<std::string> weight_names() const override;

 private:
  void check_input(const Shape& shape, DType dtype) const;
  std::size_t max_len_;
  double dropout_;
  std::vector<long> broadcast_dims_;
};

// ---- layers without weights -----------------------------------------------------------

/// Trax's Dropout. In train mode: x * keep / (1 - rate) with keep ~ bernoulli(1 - rate)
/// drawn from the layer's rng (set by the caller for each call: the same rng gives
/// the same mask); with shared_axes the mask has size 1 on those axes and
/// broadcasts. In eval and predict mode, and for rate 0, the identity.
/// State: the rate as a float32 scalar, as Trax keeps it (informative only: the
/// rate used is the one given here). Output: the input's shape. Made by Dropout().
class DropoutLayer : public base::Layer {
 public:
  /// See Dropout().
  DropoutLayer(double rate, std::vector<long> shared_axes, Mode mode, SrcLoc where);
  /// The probability of dropping an element (train mode).
  double rate() const { return rate_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;

 private:
  Shape mask_shape(const Shape& x_shape) const;
  double rate_;
  std::vector<long> shared_axes_;
};

/// A one-input layer with a shape rule that touches no data (activations, Mean,
/// Flatten, ShiftRight, LogSoftmax). `label` is what repr shows.
class ShapedFnLayer : public base::Layer {
 public:
  /// The computation: the input and the layer's mode -> the output.
  using Forward = std::function<base::Var(const base::Var&, Mode)>;
  /// The output's shape and dtype from the input's, touching no data.
  using ShapeRule = std::function<base::ShapeDtype(const base::ShapeDtype&)>;
  /// A layer of kind `name`, shown as `label`, computing `f` with shape rule `rule`.
  ShapedFnLayer(std::string name, std::string label, Forward f, ShapeRule rule, Mode mode,
                SrcLoc where);
  /// The label given to the constructor.
  std::string label() const override { return label_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;

 private:
  std::string label_;
  Forward f_;
  ShapeRule rule_;
};

// ---- factories ------------------------------------------------------------------------

/// A fully connected layer, x [..., d_in] -> x @ w + b [..., n_units] (see
/// DenseLayer). n_units > 0 (ValueError otherwise). Label `"Dense_<n_units>"`.
/// @code
/// auto dense = Dense(64);
/// dense->init({8, 32});                   // w [32, 64] Glorot uniform, b [64]
/// Var y = (*dense)(x);                    // x [8, 32] -> y [8, 64]
/// @endcode
LayerPtr Dense(long n_units, init::Initializer kernel_init = init::GlorotUniform(),
               init::Initializer bias_init = init::RandomNormal(1e-6), bool use_bias = true,
               SrcLoc where = SrcLoc::current());
/// ids [...] (int32/int64, each in [0, vocab_size)) -> [..., d_feature] (see
/// EmbeddingLayer). vocab_size, d_feature > 0. Label `"Embedding_<vocab_size>_<d_feature>"`.
/// @code
/// auto emb = Embedding(1000, 64);
/// emb->init({8, 32}, DType::i32);
/// Var x = (*emb)(Var(ids));               // ids int32 [8, 32] -> x [8, 32, 64]
/// @endcode
LayerPtr Embedding(long vocab_size, long d_feature,
                   init::Initializer init = init::RandomNormal(1.0),
                   SrcLoc where = SrcLoc::current());
/// Dropout in train mode, the identity otherwise (see DropoutLayer); output shape =
/// input shape. rate in [0, 1) (ValueError otherwise); shared_axes may be negative.
/// @code
/// auto drop = Dropout(0.1, {-2});         // x [B, L, d]: one mask value per (B, d), shared over L
/// @endcode
LayerPtr Dropout(double rate = 0.0, std::vector<long> shared_axes = {}, Mode mode = Mode::train,
                 SrcLoc where = SrcLoc::current());
/// Layer normalisation over the last axis, x [..., d] -> same shape (see
/// LayerNormLayer). epsilon finite and >= 0.
/// @code
/// auto ln = LayerNorm();                  // x [B, L, 512] -> [B, L, 512], scale and bias [512]
/// @endcode
LayerPtr LayerNorm(double epsilon = 1e-6, SrcLoc where = SrcLoc::current());
/// x [B, L, d] -> x + pe[:, :L] with trainable sinusoids (see
/// PositionalEncodingLayer). max_len > 0, dropout in [0, 1).
/// @code
/// auto pe = PositionalEncoding(1024);     // x [B, L, d] with L <= 1024 -> same shape
/// @endcode
LayerPtr PositionalEncoding(long max_len = 2048, double dropout = 0.0, Mode mode = Mode::train,
                            std::vector<long> dropout_broadcast_dims = {-2},
                            SrcLoc where = SrcLoc::current());

/// max(x, 0), element-wise; output shape = input shape.
LayerPtr Relu(SrcLoc where = SrcLoc::current());
/// x * Phi(x), the exact form with erf; element-wise.
LayerPtr Gelu(SrcLoc where = SrcLoc::current());
/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), element-wise.
LayerPtr FastGelu(SrcLoc where = SrcLoc::current());
/// 1 / (1 + exp(-x)), element-wise.
LayerPtr Sigmoid(SrcLoc where = SrcLoc::current());
/// tanh(x), element-wise.
LayerPtr Tanh(SrcLoc where = SrcLoc::current());
/// x - logsumexp(x, axis) (the fused kernel for the last axis): log-probabilities,
/// same shape as x. E.g. logits [B, L, vocab] -> log-probs [B, L, vocab].
LayerPtr LogSoftmax(long axis = -1, SrcLoc where = SrcLoc::current());
/// Pads n zeros in front of axis 1 and drops the last n (any dtype; rank >= 2).
/// Identity in predict mode. Label `"ShiftRight(<n>)"`.
/// @code
/// ShiftRight();   // ids [[5, 6, 7]] -> [[0, 5, 6]]: position i sees tokens before i
/// @endcode
LayerPtr ShiftRight(long n_positions = 1, Mode mode = Mode::train,
                    SrcLoc where = SrcLoc::current());
/// Mean over one axis (floating inputs): [B, L, d] -> [B, L] for axis -1, or
/// [B, L, 1] with keepdims.
LayerPtr Mean(long axis = -1, bool keepdims = false, SrcLoc where = SrcLoc::current());
/// Keeps the first n axes and merges the rest into one (rank must exceed n).
/// Label `"Flatten_keep<n>"`. E.g. [B, 4, 5] -> [B, 20] with n_axes_to_keep = 1.
LayerPtr Flatten(long n_axes_to_keep = 1, SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers
