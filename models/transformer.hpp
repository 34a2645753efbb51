/// @file
/// The Transformer language model (Trax 1.3.4's trax/models/transformer.py:
/// TransformerLM, _DecoderBlock, _FeedForwardBlock).
///
/// @code
/// auto model = models::TransformerLM(/*vocab_size=*/33000);          // Trax's defaults
/// auto small = models::TransformerLM({.vocab_size = 100, .d_model = 64, .d_ff = 128,
///                                     .n_layers = 2, .n_heads = 4, .dropout = 0.0});
/// small->init({8, 32}, DType::i32);
/// Var logp = (*small)(Var(ids));            // ids int [B, L] -> log-probs [B, L, vocab]
/// @endcode
///
/// Structure, as Trax's (one flat Serial; a decoder block is two Residuals):
///
/// @code{.unparsed}
///   Serial[
///     ShiftRight(1)                      mode-aware: the identity in predict mode
///     Embedding_<vocab>_<d_model>
///     Dropout
///     PositionalEncoding                 max_len, mode
///     n_layers x [
///       Residual[LayerNorm, CausalAttention(d_model, n_heads, dropout, mode), Dropout]
///       Residual[LayerNorm, Dense_<d_ff>, activation, Dropout, Dense_<d_model>, Dropout]
///     ]
///     LayerNorm
///     Dense_<vocab>
///     LogSoftmax
///   ]
/// @endcode
///
/// The output at position i depends on tokens 0 .. i-1 only (ShiftRight, then causal
/// attention): it is the model's distribution for token i.
///
/// Arguments come either positionally, with Trax's names, order and defaults (less
/// dropout_shared_axes), or as a TransformerLMOptions struct (designated initialisers,
/// LibTorch style), which also has dropout_shared_axes. Both check them and throw
/// ValueError naming the argument: vocab_size, d_model, d_ff, n_heads, max_len > 0,
/// n_layers >= 0, d_model a multiple of n_heads, dropout in [0, 1), an activation.
///
/// Predict mode (fast autoregressive inference): ShiftRight is the identity, so the
/// caller feeds the shifted stream (a start token 0, then each sampled token), any
/// number of positions per call; PositionalEncoding and every CausalAttention keep
/// their position and key/value caches (of max_len positions) in their state. The
/// log-probs equal those of the same weights in eval mode on the whole sequence.
#pragma once

#include <functional>
#include <source_location>
#include <vector>

#include "layers/attention.hpp"
#include "layers/base.hpp"
#include "layers/core.hpp"

namespace minitrax::models {

using base::LayerPtr;
using base::Mode;
/// The creation site a factory records (its defaulted last argument). Model factories
/// open a base::CreationSite with it, so every layer of the model names the caller's line.
using SrcLoc = std::source_location;

/// Makes the feed-forward non-linearity; layers::Relu, layers::FastGelu, ... fit.
using Activation = std::function<LayerPtr(SrcLoc)>;

/// The settings of TransformerLM (Trax 1.3.4's arguments and defaults).
struct TransformerLMOptions {
  long vocab_size = 0;   ///< required
  long d_model = 512;    ///< embedding and residual width
  long d_ff = 2048;      ///< hidden width of the feed-forward blocks
  long n_layers = 6;     ///< decoder blocks
  long n_heads = 8;      ///< attention heads (d_model % n_heads == 0)
  double dropout = 0.1;  ///< dropout rate of every Dropout and of the attention weights
  std::vector<long> dropout_shared_axes = {};  ///< axes sharing one dropout mask value
  long max_len = 2048;      ///< positional encoding length and predict-mode cache length
  Mode mode = Mode::train;  ///< train, eval or predict (sampling)
  Activation ff_activation = layers::Relu;  ///< the feed-forward non-linearity
};

/// The Transformer decoder language model: ids int32 [B, L] -> log-probs
/// [B, L, vocab_size] (structure in the file documentation of transformer.hpp).
/// @code
/// auto lm = TransformerLM({.vocab_size = 100, .d_model = 64, .d_ff = 128, .n_layers = 2,
///                          .n_heads = 4});
/// lm->init({8, 32}, DType::i32);
/// @endcode
LayerPtr TransformerLM(const TransformerLMOptions& options, SrcLoc where = SrcLoc::current());
/// The same with Trax's positional arguments, names and defaults.
/// @code
/// auto lm = TransformerLM(/*vocab_size=*/100, /*d_model=*/64, /*d_ff=*/128, /*n_layers=*/2);
/// @endcode
LayerPtr TransformerLM(long vocab_size, long d_model = 512, long d_ff = 2048, long n_layers = 6,
                       long n_heads = 8, double dropout = 0.1, long max_len = 2048,
                       Mode mode = Mode::train, Activation ff_activation = layers::Relu,
                       SrcLoc where = SrcLoc::current());

/// [LayerNorm, Dense(d_ff), activation, Dropout, Dense(d_model), Dropout] (Trax's
/// _FeedForwardBlock), to be wrapped in a Residual.
std::vector<LayerPtr> FeedForwardBlock(long d_model, long d_ff, double dropout,
                                       const std::vector<long>& dropout_shared_axes, Mode mode,
                                       const Activation& activation,
                                       SrcLoc where = SrcLoc::current());

/// The two residual layers of one decoder block (Trax's _DecoderBlock):
/// Residual(LayerNorm, CausalAttention, Dropout) and Residual(FeedForwardBlock).
/// max_len is the predict-mode cache length of the attention.
std::vector<LayerPtr> DecoderBlock(long d_model, long d_ff, long n_heads, double dropout,
                                   const std::vector<long>& dropout_shared_axes, Mode mode,
                                   const Activation& ff_activation, long max_len = 2048,
                                   SrcLoc where = SrcLoc::current());

}  // namespace minitrax::models
