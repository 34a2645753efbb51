/// @file
/// The Reformer language model (Trax 1.3.4's trax/models/reformer/reformer.py:
/// ReformerLM, DecoderBlock, ChunkedFeedForward).
///
/// @code
/// auto model = models::ReformerLM({
///     .vocab_size = 64, .d_model = 128, .d_ff = 256, .n_layers = 2, .n_heads = 2,
///     .attention_type = {models::lsh_self_attention({.chunk_len = 16, .n_hashes = 4,
///                                                    .n_buckets = {8}})}});
/// model->init({8, 64}, DType::i32);
/// Var logp = (*model)(Var(ids));          // ids int [B, L] -> log-probs [B, L, vocab]
/// @endcode
///
/// Structure, as Trax's:
///
/// @code{.unparsed}
///   Serial[
///     ShiftRight(1)                        the identity in predict mode
///     Embedding_<vocab>_<d_model>
///     Dropout(shared_axes -2)
///     PositionalEncoding(max_len) or AxialPositionalEncoding(axial_pos_shape, d_axial_pos_embs)
///     Dup                                  two streams x1 = x2 = x
///     ReversibleSerial[ n_layers x DecoderBlock ]
///     Concatenate                          [B, L, 2 * d_model]
///     LayerNorm
///     Dropout(shared_axes -2)
///     Dense_<vocab>
///     LogSoftmax
///   ]
/// @endcode
///
/// DecoderBlock (on the streams (x1, x2)):
/// @code{.unparsed}
///   ReversibleHalfResidual(LayerNorm, attention_layer = attention)  y1 = x1 + Attn(LN(x2))
///   ReversibleSwap
///   ReversibleHalfResidual(ChunkedFeedForward)                      y2 = x2 + FF(y1)
///   ReversibleSwap                                                  output (y1, y2)
/// @endcode
///
/// The attention of layer i is attention_type[i % attention_type.size()]: a factory
/// that receives Trax's per-layer arguments (n_heads, d_qk = d_attention_key, d_v =
/// d_attention_value, causal = true, output_dropout = dropout, mode) and keeps every
/// other option it was made with (chunk_len, n_hashes, n_buckets, ...).
#pragma once

#include <functional>
#include <source_location>
#include <vector>

#include "layers/base.hpp"
#include "layers/core.hpp"
#include "layers/research/efficient_attention.hpp"

namespace minitrax::models {

using base::LayerPtr;
using base::Mode;
/// The creation site a factory records (its defaulted last argument). Model factories
/// open a base::CreationSite with it, so every layer of the model names the caller's line.
using SrcLoc = std::source_location;

/// Makes the feed-forward non-linearity; layers::Relu, layers::FastGelu, ... fit.
using Activation = std::function<LayerPtr(SrcLoc)>;

/// What DecoderBlock sets on each attention layer (the rest comes from the factory).
struct AttentionArgs {
  long n_heads = 8;             ///< attention heads (ReformerLMOptions::n_heads)
  long d_qk = 64;               ///< query/key width per head (d_attention_key)
  long d_v = 64;                ///< value width per head (d_attention_value)
  bool causal = true;           ///< always true in a language model
  double output_dropout = 0.0;  ///< the model's dropout
  Mode mode = Mode::train;      ///< the model's mode
};
/// Makes one attention layer from the per-layer arguments; see self_attention() and
/// lsh_self_attention(). The layer maps [B, L, d_model] to [B, L, d_model].
using AttentionFactory = std::function<LayerPtr(const AttentionArgs&, SrcLoc)>;

/// SelfAttention with these options, the per-layer arguments overridden.
AttentionFactory self_attention(layers::research::SelfAttentionOptions options = {});
/// LSHSelfAttention with these options, the per-layer arguments overridden.
/// @code
/// auto lsh = lsh_self_attention({.chunk_len = 64, .n_hashes = 4, .n_buckets = {32}});
/// // ReformerLMOptions{..., .attention_type = {lsh}}
/// @endcode
AttentionFactory lsh_self_attention(layers::research::LSHSelfAttentionOptions options);

/// A feed-forward block applied to chunks of chunk_size positions at a time, each
/// chunk rematerialised in the backward pass (Trax's ChunkedFeedForward, a Scan with
/// remat). Differences from Trax, so that results equal the unchunked block exactly:
/// chunks run along the length axis (all examples at once) and every chunk uses the
/// same rng, so the shared-axis dropout masks are the same as without chunking.
/// chunk_size <= 0 or >= the length: one chunk, no remat. Input [B, L, d], output
/// [B, L, d]. Made by ChunkedFeedForward().
class ChunkedFeedForwardLayer : public base::Layer {
 public:
  /// Serial(feed_forward) applied to chunks of chunk_size positions.
  ChunkedFeedForwardLayer(std::vector<LayerPtr> feed_forward, long chunk_size, SrcLoc where);
  /// Positions per chunk (<= 0: no chunking).
  long chunk_size() const { return chunk_size_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  base::Stack forward(const base::Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const base::Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  base::Signature forward_signature(const base::Signature& input_signature) override;

 private:
  long chunk_size_;
};

/// [LayerNorm, Dense(d_ff), Dropout(act_dropout, shared -2), activation, Dense(d_model),
/// Dropout(dropout, shared -2)] (Trax's reformer FeedForward).
std::vector<LayerPtr> ReformerFeedForward(long d_model, long d_ff, double dropout,
                                          const Activation& activation, double act_dropout,
                                          Mode mode, SrcLoc where = SrcLoc::current());
/// ReformerFeedForward(...) in a ChunkedFeedForwardLayer: x [B, L, d_model] -> [B, L, d_model],
/// chunk_size positions at a time.
/// @code
/// auto ff = ChunkedFeedForward(128, 512, 0.1, layers::FastGelu, 0.0, 64, Mode::train);
/// @endcode
LayerPtr ChunkedFeedForward(long d_model, long d_ff, double dropout, const Activation& activation,
                            double act_dropout, long chunk_size, Mode mode,
                            SrcLoc where = SrcLoc::current());

/// The four reversible layers of one Reformer decoder block (see the file
/// documentation of reformer.hpp), on two streams [B, L, d_model].
std::vector<LayerPtr> ReformerDecoderBlock(long d_model, long d_ff, long d_attention_key,
                                           long d_attention_value, long n_heads,
                                           const AttentionFactory& attention_type, double dropout,
                                           const Activation& ff_activation, long ff_chunk_size,
                                           Mode mode, SrcLoc where = SrcLoc::current());

/// The settings of ReformerLM (Trax 1.3.4's arguments and defaults).
struct ReformerLMOptions {
  long vocab_size = 0;          ///< required
  long d_model = 512;           ///< width of EACH of the two streams
  long d_ff = 2048;             ///< hidden width of the feed-forward blocks
  long d_attention_key = 64;    ///< query/key width per head
  long d_attention_value = 64;  ///< value width per head
  long n_layers = 6;            ///< decoder blocks
  long n_heads = 8;             ///< attention heads
  double dropout = 0.1;         ///< dropout rate everywhere (shared over positions)
  long max_len = 2048;          ///< PositionalEncoding length
  /// One factory per layer, cycled (n_layers % size == 0). Empty: SelfAttention
  /// with Trax's defaults (full attention).
  std::vector<AttentionFactory> attention_type = {};
  /// Non-empty: AxialPositionalEncoding(axial_pos_shape, d_axial_pos_embs) instead of
  /// PositionalEncoding; the product of the shape bounds the length, the d's sum to d_model.
  std::vector<long> axial_pos_shape = {};
  std::vector<long> d_axial_pos_embs = {};      ///< see axial_pos_shape
  Activation ff_activation = layers::FastGelu;  ///< the feed-forward non-linearity
  long ff_chunk_size = 0;   ///< positions per feed-forward chunk; 0: no chunking
  Mode mode = Mode::train;  ///< train, eval or predict (sampling)
  /// false: the blocks are differentiated by ordinary backprop (every activation on
  /// the tape) instead of reconstructed; same function, for comparisons.
  bool reversible = true;
};

/// Checks the options (ValueError naming the option) and builds the model: ids int32
/// [B, L] -> log-probs [B, L, vocab_size]. With LSH attention the length rules of
/// LSHSelfAttentionOptions::chunk_len apply; see the file documentation of
/// reformer.hpp for the structure.
/// @code
/// auto model = ReformerLM({.vocab_size = 64, .d_model = 128, .n_layers = 2, .n_heads = 4,
///                          .attention_type = {lsh_self_attention({.chunk_len = 16})},
///                          .ff_chunk_size = 32});
/// @endcode
LayerPtr ReformerLM(const ReformerLMOptions& options, SrcLoc where = SrcLoc::current());

}  // namespace minitrax::models
