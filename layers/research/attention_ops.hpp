// minitrax/layers/research/attention_ops.hpp: the building blocks of efficient
// attention, as documented public functions (Trax 1.3.4's
// trax/layers/research/efficient_attention.py module functions, and the steps the
// course's "Reformer Efficient Attention" lab calls one by one).
//
// All of them work on ONE example and ONE head (the "unbatched" view of
// forward_unbatched): sequences are [length, depth]. Differentiable inputs are
// Vars (a tape records them); integer metadata (positions, buckets, sort keys)
// are Tensors. Each function checks its inputs and throws ShapeError/ValueError
// naming itself and what it expected.
//
// Conventions kept from Trax 1.3.4 (see docs/efficient_attention.md):
//   * keys are length-normalised (RMS, eps 1e-6, no centring) only when shared with
//     queries, then every key is divided by sqrt(d_k); queries are never scaled;
//   * masks are additive constants applied in order, in the dots' dtype:
//     causal -1e9 where q_info < kv_info, self -1e5 where q_info == kv_info,
//     padding -1e9 where kv_info < 0 (so padded position 0 is never masked);
//   * look_adjacent wraps around in both directions and keeps duplicates;
//   * attention dropout draws one [q_chunk_len, window] keep mask, broadcast over
//     all chunks; output dropout one [d] mask, broadcast over positions.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"

namespace minitrax::layers::research {

using autodiff::Var;
using core::Key;
using core::Tensor;

/// x / sqrt(mean(x^2, -1, keepdims) + epsilon): RMS normalisation of the last axis.
Var length_normalized(const Var& x, double epsilon = 1e-6);

/// x: [n_chunks, chunk_len, ...] -> [n_chunks, (1 + before + after) * chunk_len, ...]:
/// the concatenation, along axis 1, of copies of x rolled so that chunk c sees
/// chunks c-before .. c+after (mod n_chunks), in the order
/// [-before, ..., -1, 0, 1, ..., after] (Python slicing semantics: a shift of at
/// least n_chunks leaves x as it is, so wide windows repeat chunks). Works on Vars (differentiable)
/// and, through the Tensor overload, on integer metadata.
Var look_adjacent(const Var& x, long n_chunks_before, long n_chunks_after);
Tensor look_adjacent(const Tensor& x, long n_chunks_before, long n_chunks_after);

/// Applies the additive masks to dots [..., q, kv], where q_info broadcasts as
/// [..., q, 1] and kv_info as [..., 1, kv] (int32 positions; see the conventions).
Var mask_self_attention(const Var& dots, const Tensor& q_info, const Tensor& kv_info,
                        bool causal = true, bool exclude_self = true, bool masked = false);

/// A mask function as attend calls it: (dots, q_info [..., q, 1], kv_info [..., 1, kv]).
using MaskFn = std::function<Var(const Var& dots, const Tensor& q_info, const Tensor& kv_info)>;

struct AttendOptions {
  std::optional<long> q_chunk_len;   // none: no chunking
  std::optional<long> kv_chunk_len;  // must equal q_chunk_len when keys are shared
  long n_chunks_before = 0;
  long n_chunks_after = 0;
  MaskFn mask_fn;        // empty: no mask
  Tensor q_info;         // int32 [q_len]; default arange(q_len)
  Tensor kv_info;        // int32 [kv_len]; default arange, or q_info if shared
  double dropout = 0.0;  // attention dropout rate
  Key rng{};             // for dropout
};

struct AttendResult {
  Var out;        // [q_len, d_v]
  Var logsumexp;  // [q_len]: log of each query's softmax normaliser (combines LSH rounds)
};

/// Dot-product attention with optional chunking, adjacent chunks, masking and
/// dropout (Trax's `attend`). `k` undefined (Var()) means shared-QK: k = q, then
/// length-normalised. Chunk lengths must divide the lengths (ValueError saying so).
AttendResult attend(const Var& q, const Var& k, const Var& v, const AttendOptions& options);

/// vecs * mask / keep_prob with one bernoulli keep mask of shape [vecs.shape[-1]]
/// broadcast over the other axes; the identity when rate == 0.
Var apply_broadcasted_dropout(const Var& vecs, double rate, Key rng);

/// take(val, permutation, axis), whose VJP is take(grad, inverse_permutation, axis)
/// (a gather, not a scatter). permutation/inverse: int32 or int64 [n].
Var permute_via_gather(const Var& val, const Tensor& permutation, const Tensor& inverse_permutation,
                       long axis = 0);

/// val permuted by sorting `keys` (sort_key_val(keys, val)[1]); VJP: the gradient
/// permuted by sorting `inverse_keys`. Numerically a permutation.
Var permute_via_sort(const Var& val, const Tensor& keys, const Tensor& inverse_keys, long axis = 0);

/// Angular LSH (Trax's hash_vectors): rotations R ~ N(0, 1) of shape
/// [d, n_hashes, rot_size / 2] drawn from `rng` (float32, as Trax), rotated = vecs R
/// per round, bucket = argmax([rotated, -rotated]) (first index on ties). With
/// several factors (n_buckets = {f0, f1, ...}, rot_size = sum f_i) each factor takes
/// its next f_i/2 columns and the buckets combine as b0 + f0 b1 + f0 f1 b2 ...
/// With a padding mask (int, nonzero = valid, [L]) padded positions go to an extra
/// bucket n_buckets (then n_buckets + 1 buckets per round). Round h's ids are offset by
/// h * (buckets per round). Returns int32 [n_hashes * L], index h * L + t.
/// Every factor must be even and >= 2 (ValueError otherwise). `vecs` is [L, d]; no
/// gradient flows through hashing.
Tensor hash_vectors(const Tensor& vecs, Key rng, const std::vector<long>& n_buckets, long n_hashes,
                    const Tensor* mask = nullptr);
/// The rotations hash_vectors draws, exposed so that other implementations can be
/// compared with explicit rotations: [d, n_hashes, rot_size / 2] float32.
Tensor hash_rotations(Key rng, long d, const std::vector<long>& n_buckets, long n_hashes);
/// hash_vectors with given rotations.
Tensor hash_vectors_with(const Tensor& vecs, const Tensor& rotations,
                         const std::vector<long>& n_buckets, long n_hashes,
                         const Tensor* mask = nullptr);

/// The sort step of LSH attention, for buckets [n_hashes * L] (int32):
///   ticker = arange(n_hashes * L);  buckets_and_t = L * buckets + ticker % L
///   (sbuckets_and_t, sticker) = sort_key_val(buckets_and_t, ticker)
///   (_, undo_sort) = sort_key_val(sticker, ticker)
/// All int32 [n_hashes * L]; sticker % L are the original positions in sorted order.
struct SortedBuckets {
  Tensor ticker, buckets_and_t, sbuckets_and_t, sticker, undo_sort;
};
SortedBuckets sort_buckets(const Tensor& buckets, long seqlen, long n_hashes);

}  // namespace minitrax::layers::research
