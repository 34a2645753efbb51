/// @file
/// Dense multi-head attention (Trax 1.3.4's attention.py).
///
/// Trax's dense (full) attention, with the same layer structure as Trax so that repr()
/// and the flat weight names read the same:
///
/// @code{.unparsed}
///   Attention(d, n_heads)          (x, mask) -> (y, mask)
///     = Serial[Dup, Dup, AttentionQKV(d, n_heads)]
///   AttentionQKV(d, n_heads)       (q, k, v, mask) -> (y, mask)
///     = Serial[Parallel[Dense_d, Dense_d, Dense_d], PureAttention_in4_out2, Dense_d]
///   PureAttention(n_heads)         (q, k, v, mask) -> (heads merged back, mask)
///   CausalAttention(d, n_heads)    x -> y, each position attending to itself and the past
///     = Serial[Branch_out3[Serial[Dense_d, SplitIntoHeads] x 3],
///              DotProductCausalAttention_in3, MergeHeads, Dense_d]
///   SplitIntoHeads(n_heads)        [B, L, d] -> [B * n_heads, L, d / n_heads]
///   MergeHeads(n_heads)            [B * n_heads, L, d_head] -> [B, L, n_heads * d_head]
///   PaddingMask(pad)               ids [B, L] -> int32 [B, 1, 1, L], 1 where ids != pad
/// @endcode
///
/// The attention itself (dot_product_attention, shared by both forms):
///
/// @code{.unparsed}
///   dots = (q / sqrt(d_head)) k^T              batched matmuls, one gemm per (batch, head)
///   dots = where(mask, dots, -1e9)             Trax 1.3.4's mask value (kMaskValue)
///   w    = softmax(dots)                       over the keys
///   w    = w * bernoulli(1 - rate) / (1 - rate)    train mode and rate > 0 only, from the
///                                                  layer's rng (same rng, same mask)
///   out  = w v
/// @endcode
///
/// How it is computed: in train and eval mode, DotProductCausalAttention and
/// PureAttention with a key-padding mask ([B or 1, 1, 1, Lk], PaddingMask's form, with
/// Lq == Lk) run through the chunked attention kernel (layers/chunked_attention.hpp)
/// tile by tile, without the [B, n_heads, Lq, Lk] logits: memory O(L * d_head) per head,
/// and causal tiles skip the keys in their future. The results are those of the
/// formulas above up to float rounding, the dropout masks included (each tile draws its
/// elements of the same bernoulli(rng, 1 - rate, [.., Lq, Lk]) with core::bernoulli_range).
/// Other masks (varying over heads or queries), Lq != Lk and predict mode (the key/value
/// cache) use dot_product_attention, which materialises the logits.
///
/// A mask is any tensor that broadcasts to the attention logits ([B, n_heads, Lq, Lk]
/// for PureAttention, e.g. [B, 1, 1, Lk] from PaddingMask or [B, 1, Lq, Lk]); nonzero
/// means "may attend". Trax's masks are booleans; here any dtype is accepted, as
/// fastmath::where does. A query whose keys are all masked attends uniformly to all of
/// them (every logit is -1e9), as in Trax.
///
/// Predict mode (fast autoregressive inference) of DotProductCausalAttention: the state
/// is (keys [N, max_len, d_head], values [N, max_len, d_head], index int32 scalar) with
/// N = batch * n_heads, zeros after an init in predict mode (or on the first predict
/// call if the layer was initialised in another mode). A call with n new positions
/// writes their keys and values at [index, index + n), attends over the first
/// index + n cached positions and advances the index by n. Going past max_len is a
/// ValueError. Outside predict mode the state is empty.
///
/// Deliberate differences from Trax 1.3.4:
///   * The 1/sqrt(d_head) scale is applied to q before q k^T (Trax divides the dots):
///     the same values up to rounding, L/d_head times less work.
///   * d_feature % n_heads != 0 is a ValueError when Attention/CausalAttention are
///     created (Trax: at creation for CausalAttention, at the first call for Attention).
///   * Inputs are checked: x must be [batch, length, width], q/k/v must agree, the mask
///     must broadcast to the logits; errors say what was expected and what was got.
///   * Predict mode: the buffer length is a parameter (max_len, default 2048 as Trax
///     hardcodes; TransformerLM passes its own max_len), and several positions given in
///     one call are causally masked among themselves (Trax lets them all see each
///     other), so a prompt fed at once gives what feeding it one position at a time
///     gives. Only the first index + n cached positions enter the product.
///   * No 'viz' mode (Trax keeps the attention weights as state there).
#pragma once

#include <cstddef>
#include <source_location>
#include <string>

#include "layers/base.hpp"
#include "layers/core.hpp"

namespace minitrax::layers {

using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using base::Var;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

/// The logit masked-out positions get (Trax 1.3.4: jnp.where(mask, dots, -1e9)).
inline constexpr double kMaskValue = -1e9;

/// Attention on per-head tensors: q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv] with
/// equal leading axes (batch, or batch and heads), mask undefined (no mask) or any
/// dtype broadcasting to [..., Lq, Lk]. Returns [..., Lq, dv]. Dropout on the
/// attention weights in train mode when dropout > 0, drawn from `rng`.
/// ShapeError / DTypeError / ValueError naming what was expected and what was got.
/// @code
/// // q, k, v [B * n_heads, L, d_head]; causal mask [1, L, L]
/// Var out = dot_product_attention(q, k, v, Var(causal_mask(L, L)), 0.0, Mode::eval, rng);
/// @endcode
Var dot_product_attention(const Var& q, const Var& k, const Var& v, const Var& mask, double dropout,
                          Mode mode, core::Key rng);

/// int32 [1, n_queries, n_keys]: 1 where key j <= n_keys - n_queries + i (query i sits
/// at the last n_queries positions of the keys), 0 elsewhere. n_queries == n_keys is
/// the lower triangle (Trax's jnp.tril(ones((1, L, L)))).
/// @code
/// causal_mask(2, 3);   // [[[1, 1, 0], [1, 1, 1]]]: query 0 sits at key position 1
/// @endcode
Tensor causal_mask(std::size_t n_queries, std::size_t n_keys);

/// Trax's PureAttention: (q, k, v, mask) -> (merged heads, mask), q/k/v [B, L, d] with
/// d a multiple of n_heads; the heads are split to [B, n_heads, L, d / n_heads].
/// The mask broadcasts to [B, n_heads, Lq, Lk]. Made by PureAttention().
class PureAttentionLayer : public base::Layer {
 public:
  /// See PureAttention().
  PureAttentionLayer(long n_heads, double dropout, Mode mode, SrcLoc where);
  /// The number of heads q, k and v are split into.
  std::size_t n_heads() const { return n_heads_; }
  /// The attention-weight dropout rate (train mode).
  double dropout() const { return dropout_; }

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;

 private:
  void check_inputs(const Signature& sig) const;
  std::size_t n_heads_;
  double dropout_;
};

/// Trax's DotProductCausalAttention: (q, k, v) [N, L, d_head] -> [N, L, d_head], each
/// position attending to itself and earlier positions. Predict mode (key/value
/// caches of max_len positions in the state): see the file documentation of
/// attention.hpp. Made by DotProductCausalAttention().
class DotProductCausalAttentionLayer : public base::Layer {
 public:
  /// See DotProductCausalAttention().
  DotProductCausalAttentionLayer(double dropout, Mode mode, long max_len, SrcLoc where);
  /// The attention-weight dropout rate (train mode).
  double dropout() const { return dropout_; }
  /// The length of the predict-mode key/value caches.
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

 private:
  void check_inputs(const Signature& sig) const;
  Stack predict_forward(const Var& q, const Var& k, const Var& v);
  double dropout_;
  std::size_t max_len_;
};

// ---- factories --------------------------------------------------------------------------
// d_feature and n_heads > 0 with d_feature % n_heads == 0; dropout in [0, 1); max_len > 0
// (ValueError otherwise). `mode` is set on every sublayer.

/// (x [B, L, d_in], mask) -> (y [B, L, d_feature], mask): self-attention with a mask.
/// @code
/// auto attn = Serial({Branch({nullptr, PaddingMask()}),        // ids -> (ids, mask)
///                     Parallel({Embedding(100, 64), nullptr}),  // (x [B, L, 64], mask)
///                     Attention(64, 4), Select({0}, 2)});       // -> y [B, L, 64]
/// @endcode
LayerPtr Attention(long d_feature, long n_heads = 1, double dropout = 0.0, Mode mode = Mode::train,
                   SrcLoc where = SrcLoc::current());
/// (q, k, v, mask) -> (y, mask): q, k and v projected by their own Dense(d_feature).
LayerPtr AttentionQKV(long d_feature, long n_heads = 1, double dropout = 0.0,
                      Mode mode = Mode::train, SrcLoc where = SrcLoc::current());
/// (q, k, v [B, L, d], mask) -> (y [B, L, d], mask): the attention of
/// PureAttentionLayer, without projections (d % n_heads == 0).
LayerPtr PureAttention(long n_heads = 1, double dropout = 0.0, Mode mode = Mode::train,
                       SrcLoc where = SrcLoc::current());
/// x [B, L, d_in] -> [B, L, d_feature], causally masked self-attention. max_len is the
/// predict-mode buffer length (not a Trax argument; Trax hardcodes 2048).
/// @code
/// auto attn = CausalAttention(512, 8, 0.1);   // x [B, L, 512] -> [B, L, 512]
/// @endcode
LayerPtr CausalAttention(long d_feature, long n_heads = 1, double dropout = 0.0,
                         Mode mode = Mode::train, long max_len = 2048,
                         SrcLoc where = SrcLoc::current());
/// (q, k, v [N, L, d_head]) -> [N, L, d_head], causally masked; N = batch * heads
/// (after SplitIntoHeads). See DotProductCausalAttentionLayer.
LayerPtr DotProductCausalAttention(double dropout = 0.0, Mode mode = Mode::train,
                                   long max_len = 2048, SrcLoc where = SrcLoc::current());
/// [B, L, d] -> [B * n_heads, L, d / n_heads] (d must be a multiple of n_heads).
LayerPtr SplitIntoHeads(long n_heads, SrcLoc where = SrcLoc::current());
/// [B * n_heads, L, d_head] -> [B, L, n_heads * d_head] (undoes SplitIntoHeads).
LayerPtr MergeHeads(long n_heads, SrcLoc where = SrcLoc::current());
/// Integer ids [B, L] -> int32 [B, 1, 1, L]: 1 where ids != pad. Label `"PaddingMask(<pad>)"`.
LayerPtr PaddingMask(long pad = 0, SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers
