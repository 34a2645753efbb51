// minitrax/layers/core.hpp: the basic layers (Trax 1.3.4's core.py, activation_fns.py,
// normalization.py's LayerNorm, and attention.py's ShiftRight and PositionalEncoding).
//
//   Dense(n_units)                  x [..., d_in] -> x @ w + b [..., n_units]
//   Embedding(vocab_size, d)        ids [...] (int32/int64) -> [..., d]
//   Dropout(rate, shared_axes)      x * mask / (1 - rate) in train mode, x otherwise
//   LayerNorm(epsilon)              over the last axis, with scale and bias [d]
//   Relu, Gelu, FastGelu, Sigmoid, Tanh, LogSoftmax(axis)
//   ShiftRight(n)                   zeros on the left of axis 1, last n dropped
//   PositionalEncoding(max_len)     x [B, L, d] + sinusoids [L, d]
//   Mean(axis, keepdims), Flatten(n_axes_to_keep)
//
// Each factory takes the creation site as its last (defaulted) argument, as the
// combinators do. A layer's name() is its kind ("Dense"), which gives the paths of
// flat_weights() ("Serial/Dense_1/w"); label() is Trax's name with sizes
// ("Dense_64"), used by repr().
//
// Weight dtype: a layer's weights take the dtype of its (first) input signature if
// that is floating, float32 otherwise (Embedding, whose input is ids, is always
// float32). Random draws are made in float32 in any case (see initializers.hpp), so
// init with a float64 signature gives the float32 model's values in float64. At run
// time the input's floating dtype must equal the weights' dtype (DTypeError
// otherwise); base::cast_layer converts a whole model.
//
// Deliberate differences from Trax 1.3.4, all in the direction of errors over
// silent surprises:
//   * Embedding: an id outside [0, vocab_size) is a ValueError naming the id and the
//     vocabulary size (Trax's jnp.take clips it into range).
//   * Dropout: rate must be in [0, 1) (Trax does not check).
//   * PositionalEncoding: odd d_feature is allowed (feature 2i is sin, 2i+1 is cos of
//     the same frequency; Trax's numpy assignment fails for odd d). In predict mode a
//     position past max_len is an error (JAX would clamp the slice start).
//   * ShiftRight(0) is the identity (Trax's [:, :-0] would return an empty slice).
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
using SrcLoc = std::source_location;

// ---- layers with weights --------------------------------------------------------------

/// y = x @ w + b. Weights: w [d_in, n_units] ("w"), b [n_units] ("b", if use_bias).
/// Trax splits its rng in two: the first key draws w, the second b.
class DenseLayer : public base::Layer {
 public:
  DenseLayer(long n_units, init::Initializer kernel_init, init::Initializer bias_init,
             bool use_bias, SrcLoc where);
  std::string label() const override;
  std::size_t n_units() const { return n_units_; }
  bool use_bias() const { return use_bias_; }

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
  std::vector<std::string> weight_names() const override;

 private:
  void check_input(const Shape& shape, DType dtype) const;
  std::size_t n_units_;
  init::Initializer kernel_init_, bias_init_;
  bool use_bias_;
};

/// Row lookup: out[..., :] = embeddings[ids[...], :]. Weight: embeddings [vocab, d]
/// ("embeddings"), drawn from the layer's rng unsplit (as Trax).
class EmbeddingLayer : public base::Layer {
 public:
  EmbeddingLayer(long vocab_size, long d_feature, init::Initializer init, SrcLoc where);
  std::string label() const override;
  std::size_t vocab_size() const { return vocab_size_; }
  std::size_t d_feature() const { return d_feature_; }

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
  std::vector<std::string> weight_names() const override;

 private:
  std::size_t vocab_size_, d_feature_;
  init::Initializer init_;
};

/// y = (x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, with the
/// biased variance (Trax's LayerNorm). Weights: scale [d] ones, bias [d] zeros.
class LayerNormLayer : public base::Layer {
 public:
  LayerNormLayer(double epsilon, SrcLoc where);
  double epsilon() const { return epsilon_; }

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
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
class PositionalEncodingLayer : public base::Layer {
 public:
  PositionalEncodingLayer(long max_len, double dropout, Mode mode,
                          std::vector<long> dropout_broadcast_dims, SrcLoc where);
  std::size_t max_len() const { return max_len_; }

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
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
/// rate used is the one given here).
class DropoutLayer : public base::Layer {
 public:
  DropoutLayer(double rate, std::vector<long> shared_axes, Mode mode, SrcLoc where);
  double rate() const { return rate_; }

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
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
  using Forward = std::function<base::Var(const base::Var&, Mode)>;
  using ShapeRule = std::function<base::ShapeDtype(const base::ShapeDtype&)>;
  ShapedFnLayer(std::string name, std::string label, Forward f, ShapeRule rule, Mode mode,
                SrcLoc where);
  std::string label() const override { return label_; }

 protected:
  Stack forward(const Stack& inputs) override;
  Signature forward_signature(const Signature& input_signature) override;

 private:
  std::string label_;
  Forward f_;
  ShapeRule rule_;
};

// ---- factories ------------------------------------------------------------------------

/// n_units > 0 (ValueError otherwise). Label "Dense_<n_units>".
LayerPtr Dense(long n_units, init::Initializer kernel_init = init::GlorotUniform(),
               init::Initializer bias_init = init::RandomNormal(1e-6), bool use_bias = true,
               SrcLoc where = SrcLoc::current());
/// vocab_size, d_feature > 0. Label "Embedding_<vocab_size>_<d_feature>".
LayerPtr Embedding(long vocab_size, long d_feature,
                   init::Initializer init = init::RandomNormal(1.0),
                   SrcLoc where = SrcLoc::current());
/// rate in [0, 1) (ValueError otherwise); shared_axes may be negative.
LayerPtr Dropout(double rate = 0.0, std::vector<long> shared_axes = {}, Mode mode = Mode::train,
                 SrcLoc where = SrcLoc::current());
/// epsilon finite and >= 0.
LayerPtr LayerNorm(double epsilon = 1e-6, SrcLoc where = SrcLoc::current());
/// max_len > 0, dropout in [0, 1).
LayerPtr PositionalEncoding(long max_len = 2048, double dropout = 0.0, Mode mode = Mode::train,
                            std::vector<long> dropout_broadcast_dims = {-2},
                            SrcLoc where = SrcLoc::current());

/// max(x, 0).
LayerPtr Relu(SrcLoc where = SrcLoc::current());
/// x * Phi(x), the exact form with erf.
LayerPtr Gelu(SrcLoc where = SrcLoc::current());
/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
LayerPtr FastGelu(SrcLoc where = SrcLoc::current());
LayerPtr Sigmoid(SrcLoc where = SrcLoc::current());
LayerPtr Tanh(SrcLoc where = SrcLoc::current());
/// x - logsumexp(x, axis) (the fused kernel for the last axis).
LayerPtr LogSoftmax(long axis = -1, SrcLoc where = SrcLoc::current());
/// Pads n zeros in front of axis 1 and drops the last n (any dtype; rank >= 2).
/// Identity in predict mode. Label "ShiftRight(<n>)".
LayerPtr ShiftRight(long n_positions = 1, Mode mode = Mode::train,
                    SrcLoc where = SrcLoc::current());
/// Mean over one axis (floating inputs).
LayerPtr Mean(long axis = -1, bool keepdims = false, SrcLoc where = SrcLoc::current());
/// Keeps the first n axes and merges the rest into one (rank must exceed n).
/// Label "Flatten_keep<n>".
LayerPtr Flatten(long n_axes_to_keep = 1, SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers
