/// @file
/// The building blocks of efficient attention, as documented public functions
/// (Trax 1.3.4's trax/layers/research/efficient_attention.py module functions, and
/// the steps the course's "Reformer Efficient Attention" lab calls one by one).
///
/// All of them work on ONE example and ONE head (the "unbatched" view of
/// forward_unbatched): sequences are [length, depth]. Differentiable inputs are
/// Vars (a tape records them); integer metadata (positions, buckets, sort keys)
/// are Tensors. Each function checks its inputs and throws ShapeError/ValueError
/// naming itself and what it expected.
///
/// Conventions kept from Trax 1.3.4 (see docs/efficient_attention.md):
///   * keys are length-normalised (RMS, eps 1e-6, no centring) only when shared with
///     queries, then every key is divided by sqrt(d_k); queries are never scaled;
///   * masks are additive constants applied in order, in the dots' dtype:
///     causal -1e9 where q_info < kv_info, self -1e5 where q_info == kv_info,
///     padding -1e9 where kv_info < 0 (so padded position 0 is never masked);
///   * look_adjacent wraps around in both directions and keeps duplicates;
///   * attention dropout draws one [q_chunk_len, window] keep mask, broadcast over
///     all chunks; output dropout one [d] mask, broadcast over positions.
///
/// The LSH attention of one head, step by step (qk, v [L, d], one hash round):
/// @code
/// Tensor buckets = hash_vectors(qk.value(), rng, {n_buckets}, 1);  // int32 [L]
/// SortedBuckets s = sort_buckets(buckets, L, 1);                   // sticker = sorted positions
/// Var sqk = permute_via_gather(qk, s.sticker, s.undo_sort);         // [L, d], bucket order
/// Var sv = permute_via_gather(v, s.sticker, s.undo_sort);
/// AttendResult r = attend(sqk, Var(), sv, {.q_chunk_len = 16, .kv_chunk_len = 16,
///                                          .n_chunks_before = 1, .q_info = s.sticker});
/// Var out = permute_via_gather(r.out, s.undo_sort, s.sticker);     // back to position order
/// @endcode
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
/// Any shape [..., d] -> the same shape.
Var length_normalized(const Var& x, double epsilon = 1e-6);

/// x: [n_chunks, chunk_len, ...] -> [n_chunks, (1 + before + after) * chunk_len, ...]:
/// the concatenation, along axis 1, of copies of x rolled so that chunk c sees
/// chunks c-before .. c+after (mod n_chunks), in the order
/// [-before, ..., -1, 0, 1, ..., after] (Python slicing semantics: a shift of at
/// least n_chunks leaves x as it is, so wide windows repeat chunks). Works on Vars (differentiable)
/// and, through the Tensor overload, on integer metadata.
/// @code
/// // x [4, 16, 64] (4 chunks of 16) -> [4, 32, 64]: chunk c-1 (mod 4), then chunk c
/// Var w = look_adjacent(x, /*n_chunks_before=*/1, /*n_chunks_after=*/0);
/// @endcode
Var look_adjacent(const Var& x, long n_chunks_before, long n_chunks_after);
/// look_adjacent on a Tensor (integer metadata such as positions or bucket ids).
Tensor look_adjacent(const Tensor& x, long n_chunks_before, long n_chunks_after);

/// Applies the additive masks to dots [..., q, kv], where q_info broadcasts as
/// [..., q, 1] and kv_info as [..., 1, kv] (int32 positions; see the conventions).
/// Returns dots with the masks added, same shape.
Var mask_self_attention(const Var& dots, const Tensor& q_info, const Tensor& kv_info,
                        bool causal = true, bool exclude_self = true, bool masked = false);

/// A mask function as attend calls it: (dots, q_info [..., q, 1], kv_info [..., 1, kv]).
using MaskFn = std::function<Var(const Var& dots, const Tensor& q_info, const Tensor& kv_info)>;

/// The options of attend(): chunking, adjacent chunks, mask, positions, dropout.
struct AttendOptions {
  std::optional<long> q_chunk_len;   ///< none: no chunking
  std::optional<long> kv_chunk_len;  ///< must equal q_chunk_len when keys are shared
  long n_chunks_before = 0;          ///< earlier key chunks each query chunk also sees
  long n_chunks_after = 0;           ///< later key chunks each query chunk also sees
  MaskFn mask_fn;                    ///< empty: no mask
  Tensor q_info;                     ///< int32 [q_len]; default arange(q_len)
  Tensor kv_info;                    ///< int32 [kv_len]; default arange, or q_info if shared
  double dropout = 0.0;              ///< attention dropout rate
  Key rng{};                         ///< for dropout
};

/// What attend() returns.
struct AttendResult {
  Var out;        ///< [q_len, d_v]
  Var logsumexp;  ///< [q_len]: log of each query's softmax normaliser (combines LSH rounds)
};

/// Dot-product attention with optional chunking, adjacent chunks, masking and
/// dropout (Trax's `attend`). `k` undefined (Var()) means shared-QK: k = q, then
/// length-normalised. Chunk lengths must divide the lengths (ValueError saying so).
/// q [q_len, d_k], k [kv_len, d_k], v [kv_len, d_v] -> out [q_len, d_v] and logsumexp [q_len].
/// @code
/// // causal full attention of one head, q, k [L, 64], v [L, 64]
/// AttendResult r = attend(q, k, v, {.mask_fn = [](const Var& d, const Tensor& qi,
///                                                 const Tensor& ki) {
///   return mask_self_attention(d, qi, ki, /*causal=*/true, /*exclude_self=*/false);
/// }});
/// @endcode
AttendResult attend(const Var& q, const Var& k, const Var& v, const AttendOptions& options);

/// vecs * mask / keep_prob with one bernoulli keep mask of shape [vecs.shape[-1]]
/// broadcast over the other axes; the identity when rate == 0. Output: vecs' shape.
Var apply_broadcasted_dropout(const Var& vecs, double rate, Key rng);

/// take(val, permutation, axis), whose VJP is take(grad, inverse_permutation, axis)
/// (a gather, not a scatter). permutation/inverse: int32 or int64 [n], n the size of
/// val along `axis`. Output: val's shape.
Var permute_via_gather(const Var& val, const Tensor& permutation, const Tensor& inverse_permutation,
                       long axis = 0);

/// val permuted by sorting `keys` (sort_key_val(keys, val)[1]); VJP: the gradient
/// permuted by sorting `inverse_keys`. Numerically a permutation. keys and
/// inverse_keys [n], n the size of val along `axis`; output: val's shape.
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
/// @code
/// Tensor b = hash_vectors(qk, rng, {8}, 2);   // qk [L, d] -> int32 [2 * L], ids in [0, 16)
/// @endcode
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
/// @code{.unparsed}
///   ticker = arange(n_hashes * L);  buckets_and_t = L * buckets + ticker % L
///   (sbuckets_and_t, sticker) = sort_key_val(buckets_and_t, ticker)
///   (_, undo_sort) = sort_key_val(sticker, ticker)
/// @endcode
/// All int32 [n_hashes * L]; sticker % L are the original positions in sorted order.
struct SortedBuckets {
  /// arange(n_hashes * L).
  Tensor ticker, buckets_and_t, sbuckets_and_t, sticker, undo_sort;
  /// @var buckets_and_t
  /// The sort keys L * bucket + ticker % L.
  /// @var sbuckets_and_t
  /// The sort keys, sorted.
  /// @var sticker
  /// The ticker in sorted order (sticker % L: the original positions).
  /// @var undo_sort
  /// The permutation from sorted order back to ticker order.
};
/// The sort step for buckets int32 [n_hashes * seqlen] (see SortedBuckets); stable,
/// so positions within a bucket stay in order.
SortedBuckets sort_buckets(const Tensor& buckets, long seqlen, long n_hashes);

}  // namespace minitrax::layers::research
