/// @file
/// The attention kernels under minitrax's attention layers: dot-product attention over
/// chunks of rows, block by block, as custom-VJP nodes whose memory is O(L * window) per
/// slice (no [L, L] scores for unchunked attention either).
///
/// @code{.unparsed}
///   chunked_attention       q, k, v [n_slices, seq_len, d] (rows in place):
///                           SelfAttention's fast path
///   lsh_chunked_attention   q, v [n_examples, seq_len, heads * d] read through the LSH
///                           sort (rows gathered per chunk), hash rounds combined:
///                           LSHSelfAttention's fast path
/// @endcode
///
/// The kernel itself (the steps of a tile shared by both: windows, masks, softmax with
/// logsumexp, dropout multiplier, the softmax's backward; and the two ways rows come
/// in) is in chunked_attention_kernel.cpp; this file's functions are its custom-VJP nodes.
/// Dense Attention / CausalAttention (layers/attention.cpp) call chunked_attention too,
/// with replace_masked and element_dropout.
///
/// Each computes, per slice and chunk of query rows, the scores against the chunk's
/// window of keys, Trax's masks (causal -1e9, self -1e5, padding -1e9), the softmax
/// through its logsumexp, the shared dropout multiplier and the product with the values;
/// the backward pass recomputes the probabilities from the saved logsumexp (the
/// arithmetic of attention_ops.hpp's attend, step by step, up to rounding).
#pragma once

#include <utility>

#include "autodiff/tape.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"

namespace minitrax::layers::kernels {

using autodiff::Var;
using core::DType;
using core::Key;
using core::Shape;
using core::Tensor;

/// What chunked_attention computes: attend's options for rows in place.
struct ChunkedAttentionSpec {
  long chunk = 0;             ///< rows per chunk (seq_len for unchunked attention)
  long before = 0;            ///< chunks before each chunk in its window (wrapping)
  long after = 0;             ///< chunks after each chunk in its window (wrapping)
  bool causal = false;        ///< a query attends to keys at its position and before only
  bool exclude_self = false;  ///< a query's own position scores -1e5 (shared QK)
  bool masked = false;        ///< keys with a negative kv_info are padding (-1e9)
  /// q_info = arange and |kv_info| = arange (SelfAttention): causal attention may then
  /// skip the keys in the future of a whole tile of rows.
  bool ordered = false;
  /// int32 [R, seq_len]: slice s uses row s / (n_slices / R); undefined: no mask.
  Tensor q_info;
  Tensor kv_info;     ///< int32 [R, seq_len]: the keys' positions, negative where padded
  Tensor multiplier;  ///< [chunk, window] dropout multiplier (keep / keep_prob), or undefined
  /// Trax's dense dot_product_attention (layers/attention.cpp): masked scores are
  /// REPLACED by -1e9 (where(mask, dots, -1e9)) instead of lowered by the mask constant,
  /// so a query whose keys are all masked attends uniformly to all seq_len keys and no
  /// gradient reaches a masked score. Causal and padding masks only (no exclude_self).
  bool replace_masked = false;
  /// Dense attention's dropout, one draw per score (rate > 0; needs chunk == seq_len and
  /// no neighbours): score (s, row, col) keeps element (s * seq_len + row) * seq_len + col
  /// of bernoulli(element_dropout_rng, 1 - rate, [n_slices, seq_len, seq_len]), as
  /// dot_product_attention draws its mask, and is multiplied by keep / (1 - rate).
  double element_dropout = 0.0;
  Key element_dropout_rng;  ///< the key of element_dropout's draw
};

/// The outputs of chunked_attention.
struct AttentionOutputs {
  Var out;        ///< [n_slices, seq_len, d_v]
  Var logsumexp;  ///< [n_slices, seq_len]
};

/// Chunked attention for n_slices slices at once: q, k (keys already scaled) [n_slices,
/// seq_len, d_qk], v [n_slices, seq_len, d_v]. One node on the tape; residuals q, k, v
/// and the logsumexps. `saved`, when given, holds (out, logsumexp) of an earlier call on
/// the same values (a recomputation): they are returned instead of computed again.
AttentionOutputs chunked_attention(const Var& q, const Var& k, const Var& v,
                                   const ChunkedAttentionSpec& spec,
                                   const std::pair<Tensor, Tensor>* saved = nullptr);

/// What lsh_chunked_attention computes: chunked shared-QK attention over the slots of
/// all hash rounds sorted by bucket (n_slots = n_hashes * seq_len per slice).
struct LshAttentionSpec {
  long n_hashes = 1;    ///< hash rounds
  long chunk = 0;       ///< sorted slots per chunk
  long before = 0;      ///< chunks before each chunk in its window (wrapping)
  long after = 0;       ///< chunks after each chunk in its window (wrapping)
  long heads = 1;       ///< heads side by side in q and v's last axis
  bool causal = false;  ///< a query attends to keys at its position and before only
  bool masked = false;  ///< keys with a negative kv_info are padding
  Tensor pos;           ///< int32 [n_slices, n_slots]: the position of sorted slot t (sticker % L)
  Tensor kv_info;       ///< int32 [n_slices, n_slots]: pos, or -pos where padded (masked only)
  Tensor row;           ///< int32 [n_slices, n_slots]: the unsorted row of sorted slot t (sticker)
  Tensor multiplier;    ///< [chunk, window] dropout multiplier, or undefined
};

/// LSH attention for the n_slices = n_examples * heads slices of q [n_examples, seq_len,
/// heads * d_qk] and v [n_examples, seq_len, heads * d_v] (the projections' layout): the
/// keys are the length-normalised queries / sqrt(d_qk); the rounds are combined, each
/// weighted by its share of the softmax mass. Returns [n_examples, seq_len, heads * d_v].
Var lsh_chunked_attention(const Var& q, const Var& v, const LshAttentionSpec& spec);

/// The keep multiplier of attend's and apply_broadcasted_dropout's dropout: keep /
/// keep_prob for a bernoulli keep mask of `shape` (the reference's draws and arithmetic).
Tensor dropout_multiplier(double rate, Key rng, const Shape& shape, DType dtype);

}  // namespace minitrax::layers::kernels
