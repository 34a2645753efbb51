// minitrax/layers/research/efficient_attention_internal.hpp: helpers shared by the files
// of the efficient attention layers (efficient_attention.cpp, efficient_attention_fast.cpp,
// efficient_attention_predict.cpp). Not installed.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "layers/research/efficient_attention.hpp"

namespace minitrax::layers::research::detail {

/// "12" for 12.
std::string str(long v);
/// A double in the shortest stream form ("0.1").
std::string num(double v);
/// A size as a signed length.
inline long as_long(std::size_t v) {
  return static_cast<long>(v);
}
/// ValueError "<who>: <what> must be positive, got <v>" unless v > 0.
void require_positive(const std::string& who, const char* what, long v);
/// Row i of a tensor stacked on axis 0, with that axis dropped.
Tensor row_of(const Tensor& stacked, long i);
/// rows[slice][leaf] -> one tensor per leaf, the slices stacked on a new axis 0.
std::vector<Tensor> stack_rows(const std::vector<std::vector<Tensor>>& rows);
/// A state tree (a flat list) from its leaves.
State state_of(const std::vector<Tensor>& leaves);
/// full[i, ...] += part, for a contiguous full [N, ...].
void add_block(Tensor& full, long i, const Tensor& part);
/// The smallest length >= seqlen with n_hashes * length a multiple of chunk_len.
long padded_length(long seqlen, long n_hashes, long chunk_len);

}  // namespace minitrax::layers::research::detail
