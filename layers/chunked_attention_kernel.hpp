/// @file
/// The chunked attention kernel under chunked_attention.hpp's custom-VJP nodes (internal:
/// included by layers/chunked_attention.cpp only). Raw, contiguous row-major buffers;
/// float and double. For each slice, chunk of query rows and tile of tile_rows rows: the
/// scores against the chunk's window of keys, the masks, the softmax through its
/// logsumexp, the dropout multiplier, the product with the values; the backward pass
/// recomputes the probabilities from the saved logsumexps. The rows come in place
/// (core_*) or through the LSH sort (lsh_*: gathered rows, outputs written to their
/// unsorted rows, the hash rounds combined around them).
#pragma once

#include "layers/chunked_attention.hpp"

namespace minitrax::layers::kernels::detail {

/// Rows in place. q, k [n_slices, seq_len, d_qk] (keys already scaled), v [n_slices,
/// seq_len, d_v] -> out [n_slices, seq_len, d_v], lse [n_slices, seq_len].
template <class T>
void core_forward(const ChunkedAttentionSpec& spec, long n_slices, long seq_len, long d_qk,
                  long d_v, const T* q, const T* k, const T* v, T* out, T* lse);

/// The gradients of core_forward: dout [n_slices, seq_len, d_v], dlse [n_slices, seq_len]
/// (nullptr: 0) -> dq, dk, dv added into (zeroed by the caller), shaped as q, k, v.
template <class T>
void core_backward(const ChunkedAttentionSpec& spec, long n_slices, long seq_len, long d_qk,
                   long d_v, const T* q, const T* k, const T* v, const T* lse, const T* dout,
                   const T* dlse, T* dq, T* dk, T* dv);

/// Rows through the LSH sort. q [n_examples, seq_len, heads * d_qk], v [n_examples,
/// seq_len, heads * d_v] (n_slices = n_examples * heads) -> out (rounds combined) in v's
/// layout, lse [n_slices, n_slots] (n_slots = n_hashes * seq_len, unsorted rows) and,
/// when o_rounds is given, the rounds' outputs [n_slices, n_slots, d_v] (kept for the
/// backward pass; needed when n_hashes > 1).
template <class T>
void lsh_forward(const LshAttentionSpec& spec, long n_slices, long seq_len, long d_qk, long d_v,
                 const T* q, const T* v, T* out, T* o_rounds, T* lse);

/// The gradients of lsh_forward w.r.t. q (as queries and as normalised keys) and v, from
/// dout in out's layout; dq, dv added into (zeroed by the caller). o_rounds: as kept by
/// lsh_forward (nullptr for one round).
template <class T>
void lsh_backward(const LshAttentionSpec& spec, long n_slices, long seq_len, long d_qk, long d_v,
                  const T* q, const T* v, const T* out, const T* o_rounds, const T* lse,
                  const T* dout, T* dq, T* dv);

}  // namespace minitrax::layers::kernels::detail
