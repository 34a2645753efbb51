// minitrax/layers/research/lsh_kernels.hpp: LSH's hashing and bucket sort for the fast
// path (efficient_attention_fast.cpp): attention_ops.hpp's hash_vectors_with and
// sort_buckets, the same results without their temporaries. Not installed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::layers::research::detail {

/// int32 buckets [n_hashes * seq_len] of seq_len rows of q (float32 or float64; row t
/// at element first + t * ldq, d_qk values), as hash_vectors_with gives them for these
/// rotations [d_qk, n_hashes, rot_size / 2] (in q's dtype): per round the argmax over
/// [rotated, -rotated] per factor of n_buckets, plus the round's offset. mask [seq_len]
/// (or null): positions with mask 0 go to the padding bucket (the last of the round).
void hash_rows(const core::Tensor& q, std::size_t first, long ldq, long seq_len, long d_qk,
               const core::Tensor& rotations, const std::vector<long>& n_buckets, long n_hashes,
               const std::int32_t* mask, std::int32_t* buckets);

/// sort_buckets' sticker and undo_sort [n_hashes * seq_len] for buckets whose round h
/// holds ids in [h * per_round, (h + 1) * per_round) (hash_rows' form), by a stable
/// counting sort. false (nothing written) if the buckets do not have that form; the
/// caller then uses sort_buckets. `count` is scratch.
bool counting_sort_buckets(const std::int32_t* buckets, long seq_len, long n_hashes, long per_round,
                           std::int32_t* sticker, std::int32_t* undo_sort,
                           std::vector<long>& count);

}  // namespace minitrax::layers::research::detail
