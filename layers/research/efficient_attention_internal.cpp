// minitrax/layers/research/efficient_attention_internal.cpp: the helpers shared by the
// files of the efficient attention layers (see efficient_attention_internal.hpp).
#include "layers/research/efficient_attention_internal.hpp"

#include <numeric>
#include <sstream>

#include "core/ops.hpp"

namespace minitrax::layers::research {

using core::ShapeError;
using core::ValueError;

namespace detail {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string str(long v) {
  return std::to_string(v);
}

void require_positive(const std::string& who, const char* what, long v) {
  if (v <= 0) throw ValueError(who + ": " + what + " must be positive, got " + str(v));
}

Tensor row_of(const Tensor& stacked, long i) {
  Shape rest(stacked.shape().begin() + 1, stacked.shape().end());
  return core::slice(stacked, 0, i, i + 1).reshape(rest);
}

std::vector<Tensor> stack_rows(const std::vector<std::vector<Tensor>>& rows) {
  std::vector<Tensor> leaves;
  if (rows.empty()) return leaves;
  for (std::size_t j = 0; j < rows[0].size(); ++j) {
    std::vector<Tensor> parts;
    parts.reserve(rows.size());
    for (const auto& r : rows) {
      Shape s = r.at(j).shape();
      s.insert(s.begin(), 1);
      parts.push_back(r[j].reshape(s));
    }
    leaves.push_back(core::concatenate(parts, 0));
  }
  return leaves;
}

State state_of(const std::vector<Tensor>& leaves) {
  State s;
  for (const Tensor& t : leaves) s.push_back(State(t));
  return s;
}

void add_block(Tensor& full, long i, const Tensor& part) {
  const std::size_t inner = full.size() / full.dim(0);
  if (part.size() != inner || part.dtype() != full.dtype()) {
    throw ShapeError("efficient attention: internal: block of " + core::shape_str(part.shape()) +
                     " does not fit a row of " + core::shape_str(full.shape()));
  }
  core::dispatch_floating(full.dtype(), "add_block", [&](auto tag) {
    using T = decltype(tag);
    T* dst = full.data<T>() + static_cast<std::size_t>(i) * inner;
    const T* src = part.data<T>();
    for (std::size_t k = 0; k < inner; ++k) dst[k] += src[k];
  });
}

long padded_length(long seqlen, long n_hashes, long chunk_len) {
  const long step = chunk_len / std::gcd(chunk_len, n_hashes);
  return (seqlen + step - 1) / step * step;
}

}  // namespace detail

}  // namespace minitrax::layers::research
