// minitrax/layers/chunked_attention.cpp: the custom-VJP nodes of chunked attention (see
// chunked_attention.hpp) around the kernel of chunked_attention_kernel.cpp.
#include "layers/chunked_attention.hpp"

#include <string>
#include <vector>

#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "layers/chunked_attention_kernel.hpp"

namespace minitrax::layers::kernels {

using autodiff::VarList;

namespace {

long as_long(std::size_t v) {
  return static_cast<long>(v);
}

}  // namespace

AttentionOutputs chunked_attention(const Var& q, const Var& k, const Var& v,
                                   const ChunkedAttentionSpec& spec,
                                   const std::pair<Tensor, Tensor>* saved) {
  std::pair<Tensor, Tensor> given;
  if (saved != nullptr) given = *saved;
  auto fwd = [spec, given](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &kv = in[1], &vv = in[2];
    const long n_slices = as_long(qv.dim(0)), seq_len = as_long(qv.dim(1));
    const Shape out_shape{qv.dim(0), qv.dim(1), vv.dim(2)}, lse_shape{qv.dim(0), qv.dim(1)};
    if (given.first.defined()) {
      if (given.first.shape() != out_shape || given.second.shape() != lse_shape ||
          given.first.dtype() != qv.dtype()) {
        throw core::ShapeError("chunked_attention: the saved outputs " +
                               core::shape_str(given.first.shape()) + " do not fit this call " +
                               core::shape_str(out_shape));
      }
      res = {qv, kv, vv, given.second};
      return std::vector<Tensor>{given.first, given.second};
    }
    if (spec.element_dropout > 0.0) {
      if (spec.chunk != seq_len || spec.before != 0 || spec.after != 0) {
        throw core::ValueError(
            "chunked_attention: per-element dropout needs one chunk of the whole sequence (" +
            std::to_string(seq_len) + " rows) and no neighbours, got chunk " +
            std::to_string(spec.chunk) + ", " + std::to_string(spec.before) + " before, " +
            std::to_string(spec.after) + " after");
      }
      // the draw's size is checked here, before the threads start (as bernoulli does)
      core::bernoulli_range(spec.element_dropout_rng, 1.0 - spec.element_dropout,
                            static_cast<std::size_t>(n_slices * seq_len * seq_len), 0, 0, nullptr);
    }
    Tensor out = Tensor::empty(out_shape, qv.dtype());
    Tensor lse = Tensor::empty(lse_shape, qv.dtype());
    core::dispatch_floating(qv.dtype(), "chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      detail::core_forward<T>(spec, n_slices, seq_len, as_long(qv.dim(2)), as_long(vv.dim(2)),
                              qv.data<T>(), kv.data<T>(), vv.data<T>(), out.data<T>(),
                              lse.data<T>());
    });
    res = {qv, kv, vv, lse};
    return std::vector<Tensor>{out, lse};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &kv = res[1], &vv = res[2], &lse = res[3];
    const long n_slices = as_long(qv.dim(0)), seq_len = as_long(qv.dim(1));
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dk = Tensor::zeros(kv.shape(), kv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    const Tensor dout =
        cts.at(0).defined() ? cts[0] : Tensor::zeros({qv.dim(0), qv.dim(1), vv.dim(2)}, qv.dtype());
    core::dispatch_floating(qv.dtype(), "chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      detail::core_backward<T>(spec, n_slices, seq_len, as_long(qv.dim(2)), as_long(vv.dim(2)),
                               qv.data<T>(), kv.data<T>(), vv.data<T>(), lse.data<T>(),
                               dout.data<T>(),
                               cts.size() > 1 && cts[1].defined() ? cts[1].data<T>() : nullptr,
                               dq.data<T>(), dk.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dk, dvv};
  };
  const VarList r = autodiff::custom_vjp("chunked_attention", {q, k, v}, fwd, bwd);
  return {r[0], r[1]};
}

// LSH attention for the n_slices = n_examples * heads slices of q [n_examples, seq_len, heads *
// d_qk] and v [n_examples, seq_len, heads * d_v] (the projections' layout): the rounds combined,
// [n_examples, seq_len, heads * d_v] in the same layout.
Var lsh_chunked_attention(const Var& q, const Var& v, const LshAttentionSpec& spec) {
  auto fwd = [spec](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &vv = in[1];
    const long n_examples = as_long(qv.dim(0)), seq_len = as_long(qv.dim(1)),
               n_slices = n_examples * spec.heads;
    const long d_qk = as_long(qv.dim(2)) / spec.heads, d_v = as_long(vv.dim(2)) / spec.heads;
    const long n_slots = spec.n_hashes * seq_len;
    const bool keep_rounds = spec.n_hashes > 1;
    Tensor out = Tensor::empty(vv.shape(), qv.dtype());
    Tensor lse = Tensor::empty(
        {static_cast<std::size_t>(n_slices), static_cast<std::size_t>(n_slots)}, qv.dtype());
    // The per-round outputs, kept for the backward pass when there are several rounds
    // (one round: the kernel uses per-thread scratch rows).
    Tensor rounds =
        keep_rounds
            ? Tensor::empty({static_cast<std::size_t>(n_slices), static_cast<std::size_t>(n_slots),
                             static_cast<std::size_t>(d_v)},
                            qv.dtype())
            : Tensor();
    core::dispatch_floating(qv.dtype(), "lsh_chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      detail::lsh_forward<T>(spec, n_slices, seq_len, d_qk, d_v, qv.data<T>(), vv.data<T>(),
                             out.data<T>(), keep_rounds ? rounds.data<T>() : nullptr,
                             lse.data<T>());
    });
    res = {qv, vv, out, lse};
    if (keep_rounds) res.push_back(rounds);
    return std::vector<Tensor>{out};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &vv = res[1], &out = res[2], &lse = res[3];
    const long n_examples = as_long(qv.dim(0)), seq_len = as_long(qv.dim(1)),
               n_slices = n_examples * spec.heads;
    const long d_qk = as_long(qv.dim(2)) / spec.heads, d_v = as_long(vv.dim(2)) / spec.heads;
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    if (!cts.at(0).defined()) return std::vector<Tensor>{dq, dvv};
    core::dispatch_floating(qv.dtype(), "lsh_chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      detail::lsh_backward<T>(spec, n_slices, seq_len, d_qk, d_v, qv.data<T>(), vv.data<T>(),
                              out.data<T>(), res.size() > 4 ? res[4].data<T>() : nullptr,
                              lse.data<T>(), cts[0].data<T>(), dq.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dvv};
  };
  return autodiff::custom_vjp("lsh_chunked_attention", {q, v}, fwd, bwd).at(0);
}

Tensor dropout_multiplier(double rate, Key rng, const Shape& shape, DType dtype) {
  const Tensor keep = core::bernoulli(rng, 1.0 - rate, shape);
  return core::div(keep.astype(dtype), Tensor::scalar(1.0 - rate, dtype));
}

}  // namespace minitrax::layers::kernels
