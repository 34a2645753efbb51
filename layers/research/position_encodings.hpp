/// @file
/// Trax 1.3.4's AxialPositionalEncoding (trax/layers/research/position_encodings.py),
/// the position encoding of the Reformer.
///
/// The positions 0 .. N-1, N = prod(shape), are laid out on a grid of the given
/// shape, last axis fastest (as numpy's reshape does): position p has the mixed-radix
/// digits (i_0, ..., i_{n-1}) with p = i_0 * shape[1] * ... * shape[n-1] + ... + i_{n-1}.
/// Axis a owns a trainable table of shape[a] rows of width d_embs[a], and the encoding
/// of p is the concatenation of the rows i_0, ..., i_{n-1} of the tables:
///
/// @code{.unparsed}
///   emb[p] = concat(w_0[i_0], w_1[i_1], ..., w_{n-1}[i_{n-1}])   (width sum(d_embs))
///   y[b, p, :] = x[b, p, :] + emb[p]
/// @endcode
///
/// With shape (64, 64, 3) and d_embs (384, 384, 256), 64 + 64 + 3 = 131 rows of weights
/// encode 12288 positions of width 1024.
///
/// Weights, as Trax: one per axis, "ax0", "ax1", ..., `ax<a>` of shape
/// [1, 1, .., shape[a], .., 1, d_embs[a]] (rank n + 2), drawn with kernel_init from
/// split(rng, n)[a]. Their dtype is the input's (float32 or float64).
///
/// Dropout (train mode only, rate > 0), as Trax: the noise shape is that of the
/// broadcast embedding [batch, shape..., sum(d_embs)] with size 1 on each of
/// dropout_broadcast_dims (axes of that rank-(n + 2) shape; negative counts from the
/// end); the embedding is multiplied by bernoulli(rng, keep) / keep, keep = 1 - dropout.
/// E.g. dropout_broadcast_dims {0, 1} shares the mask over the batch and the first grid
/// axis. x itself is not dropped.
///
/// Predict mode (fast inference): the state is an int32 scalar, the next position
/// (0 after init; the same for every sequence of the batch, as in Trax). A call with
/// L positions adds emb[pos .. pos + L) and advances the state by L. Outside predict
/// mode the state is empty.
///
/// @code
/// auto pe = research::AxialPositionalEncoding({64, 64, 3}, {384, 384, 256});
/// pe->init({8, 12288, 1024});
/// Var y = (*pe)(x);                          // x [8, 12288, 1024]
/// @endcode
///
/// Deliberate differences from Trax 1.3.4:
///   * Variable length (Trax: "TODO: support variable-length sequences"): in train and
///     eval mode the input length L may be anything up to prod(shape); the layer adds
///     the encodings of the positions 0 .. L-1 (the first L rows of the full encoding,
///     and with dropout the first L rows of the full-length mask). L > prod(shape) is a
///     ShapeError saying so; Trax requires L == prod(shape) (a reshape error otherwise).
///   * Predict mode: passing the end of the grid is a ValueError (jax's dynamic_slice
///     would clamp the start and silently reuse the last positions).
///   * Errors instead of asserts: len(shape) != len(d_embs), an empty shape, a shape or
///     d_embs entry <= 0, dropout outside [0, 1), a dropout_broadcast_dims axis out of
///     range, and sum(d_embs) != d_feature (a ValueError at init, as Trax, and at call).
///   * Dropout is decided at call time: rate as given in train mode, none otherwise, so
///     set_mode(eval) switches it off (Trax zeroes the rate at construction).
///   * The encoding is computed by gathering the needed rows of each axis table
///     (memory L * sum(d_embs), whatever the batch), not by broadcasting every table to
///     [batch, shape..., d] and concatenating: the same values and gradients.
#pragma once

#include <source_location>
#include <string>
#include <vector>

#include "layers/base.hpp"
#include "layers/initializers.hpp"

namespace minitrax::layers::research {

using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using core::DType;
using core::Shape;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

/// Trax's AxialPositionalEncoding (see the file documentation of
/// position_encodings.hpp). Input x [B, L, d_feature] with d_feature = sum(d_embs)
/// and L <= prod(shape); output of the same shape. Made by AxialPositionalEncoding().
class AxialPositionalEncodingLayer : public base::Layer {
 public:
  /// See AxialPositionalEncoding().
  AxialPositionalEncodingLayer(std::vector<long> shape, std::vector<long> d_embs,
                               init::Initializer kernel_init, double dropout,
                               std::vector<long> dropout_broadcast_dims, Mode mode, SrcLoc where);

  /// The grid of positions.
  const Shape& shape() const { return shape_; }
  /// The width of each axis' embedding.
  const Shape& d_embs() const { return d_embs_; }
  /// prod(shape): the number of positions encoded.
  std::size_t max_len() const { return max_len_; }
  /// max_len(): predict mode takes at most that many positions.
  std::optional<std::size_t> predict_max_len() const override { return max_len_; }
  /// sum(d_embs): the d_feature the input must have.
  std::size_t d_feature() const { return d_feature_; }
  /// The dropout rate on the embedding (train mode).
  double dropout() const { return dropout_; }
  /// The axes of [batch, shape..., d_feature] that share one dropout mask value.
  const std::vector<long>& dropout_broadcast_dims() const { return broadcast_dims_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
  /// "ax0", "ax1", ...
  std::vector<std::string> weight_names() const override;

 private:
  void check_input(const Shape& shape, DType dtype) const;
  void check_weights(DType input_dtype) const;
  /// The encoding of positions start .. start + len - 1, [1, len, d_feature].
  base::Var embedding(std::size_t start, std::size_t len) const;

  Shape shape_, d_embs_;
  std::size_t max_len_ = 1, d_feature_ = 0;
  init::Initializer kernel_init_;
  double dropout_;
  std::vector<long> broadcast_dims_;
};

/// shape and d_embs: one entry per axis, all > 0, same length (>= 1); prod(shape) must
/// fit in an int32 (the predict-mode position). dropout in [0, 1). dropout_broadcast_dims:
/// axes of [batch, shape..., d_feature], in [-(n + 2), n + 2). ValueError otherwise,
/// naming the layer and the values. x [B, L, sum(d_embs)] -> the same shape, L <= prod(shape).
/// @code
/// auto pe = AxialPositionalEncoding({8, 8}, {64, 64});   // 64 positions of width 128
/// pe->init({4, 64, 128});   // weights ax0 [1, 8, 1, 64], ax1 [1, 1, 8, 64]
/// @endcode
LayerPtr AxialPositionalEncoding(std::vector<long> shape = {64, 64, 3},
                                 std::vector<long> d_embs = {384, 384, 256},
                                 init::Initializer kernel_init = init::RandomNormal(1.0),
                                 double dropout = 0.0,
                                 std::vector<long> dropout_broadcast_dims = {},
                                 Mode mode = Mode::train, SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers::research
