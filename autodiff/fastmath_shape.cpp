// minitrax/autodiff/fastmath_shape.cpp: transpose, expand_dims, squeeze, broadcast_to,
// concatenate, split, slice, pad and roll.
//
// Every op here moves elements without changing them, so every VJP moves the
// cotangent back the same way: the inverse permutation, the inverse reshape, the
// sum over broadcast axes, the slice of a concatenation, ... The rules read only
// small captured ints and shapes; none of them needs a saved tensor.
#include <string>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"

namespace minitrax::fastmath {

using autodiff::record;
using autodiff::record1;
using autodiff::VjpContext;

// ---- transpose ------------------------------------------------------------------------

Var transpose(const Var& x, const std::vector<std::size_t>& perm) {
  // out = transpose(x, perm): out axis i is x axis perm[i]
  //   =>  dx = transpose(g, inverse(perm)) (inverse[perm[i]] = i); an empty perm
  //       reverses the axes, and the inverse of a reversal is a reversal.
  const Var in[] = {x};
  Tensor out = core::transpose(x.value(), perm);  // checks perm
  std::vector<std::size_t> inverse(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = i;
  return record1("transpose", in, out, {}, [inverse](VjpContext& ctx) {
    ctx.accumulate(0, core::transpose(ctx.ct(), inverse));
  });
}

// ---- expand_dims, squeeze ---------------------------------------------------------------

Var expand_dims(const Var& x, long axis) {
  // out = expand_dims(x, axis)   =>  dx = g viewed with x's shape
  const Var in[] = {x};
  return record1("expand_dims", in, core::expand_dims(x.value(), axis), {}, [](VjpContext& ctx) {
    ctx.accumulate(0, ctx.ct().reshape(ctx.node().input_shapes[0]));
  });
}

Var squeeze(const Var& x, const std::vector<long>& axes) {
  // out = squeeze(x, axes)   =>  dx = g viewed with x's shape
  const Var in[] = {x};
  return record1("squeeze", in, core::squeeze(x.value(), axes), {}, [](VjpContext& ctx) {
    ctx.accumulate(0, ctx.ct().reshape(ctx.node().input_shapes[0]));
  });
}

// ---- broadcast_to ---------------------------------------------------------------------------

Var broadcast_to(const Var& x, const Shape& shape) {
  // out = broadcast_to(x, shape)   =>  dx = sum_to(g, x.shape) (sum over the broadcast axes)
  const Var in[] = {x};
  return record1("broadcast_to", in, core::broadcast_to(x.value(), shape), {}, [](VjpContext& ctx) {
    ctx.accumulate(0, core::sum_to(ctx.ct(), ctx.node().input_shapes[0]));
  });
}

// ---- concatenate and split --------------------------------------------------------------

Var concatenate(const VarList& xs, long axis) {
  // out = concatenate(xs, axis)   =>  dxs[i] = g[offset_i : offset_i + n_i] along axis
  if (xs.empty()) throw ValueError("concatenate: needs at least one tensor, got none");
  std::vector<Tensor> values;
  values.reserve(xs.size());
  for (const Var& v : xs) values.push_back(v.value());
  Tensor out = core::concatenate(values, axis);  // checks shapes, dtypes and axis
  const std::size_t ax = core::normalize_axis(axis, out.ndim(), "concatenate");
  const long lax = static_cast<long>(ax);
  return record1("concatenate", xs, out, {}, [lax](VjpContext& ctx) {
    const Tensor g = ctx.ct();
    long offset = 0;
    for (std::size_t i = 0; i < ctx.node().inputs.size(); ++i) {
      const long n = static_cast<long>(ctx.node().input_shapes[i][static_cast<std::size_t>(lax)]);
      if (ctx.needs(i)) ctx.accumulate(i, core::slice(g, lax, offset, offset + n));
      offset += n;
    }
  });
}

namespace {

// One node with a output per piece. The cotangents of pieces that received none
// come as zeros (ctx.ct), and the input's cotangent is their concatenation.
VarList record_split(const Var& x, std::vector<Tensor> pieces, long axis) {
  // pieces = split(x, ..., axis)   =>  dx = concatenate([g_0, g_1, ...], axis)
  const std::size_t ax = core::normalize_axis(axis, x.ndim(), "split");
  const long lax = static_cast<long>(ax);
  const Var in[] = {x};
  return record("split", in, std::move(pieces), {}, [lax](VjpContext& ctx) {
    if (!ctx.needs(0)) return;
    std::vector<Tensor> cts;
    cts.reserve(ctx.n_outputs());
    for (std::size_t i = 0; i < ctx.n_outputs(); ++i) cts.push_back(ctx.ct(i));
    ctx.accumulate(0, core::concatenate(cts, lax));
  });
}

}  // namespace

VarList split(const Var& x, const std::vector<std::size_t>& sizes, long axis) {
  return record_split(x, core::split(x.value(), sizes, axis), axis);
}

VarList split(const Var& x, std::size_t n, long axis) {
  return record_split(x, core::split(x.value(), n, axis), axis);
}

// ---- slice, pad, roll ------------------------------------------------------------------------

Var slice(const Var& x, long axis, long start, long stop, long step) {
  // out = x[start:stop:step] along axis
  //   =>  dx = zeros of x's shape with g written into [start:stop:step] (slice_backward)
  const Var in[] = {x};
  return record1("slice", in, core::slice(x.value(), axis, start, stop, step), {},
                 [axis, start, stop, step](VjpContext& ctx) {
                   ctx.accumulate(0, core::slice_backward(ctx.ct(), ctx.node().input_shapes[0],
                                                          axis, start, stop, step));
                 });
}

Var pad(const Var& x, const std::vector<std::pair<std::size_t, std::size_t>>& pads, double value) {
  // out = pad(x, pads, value): x sits at [before_i : before_i + n_i] on every axis i
  //   =>  dx = that interior of g (the padding is a constant: no gradient)
  const Var in[] = {x};
  Tensor out = core::pad(x.value(), pads, value);  // checks one pair per axis
  return record1("pad", in, out, {}, [pads](VjpContext& ctx) {
    const Shape& x_shape = ctx.node().input_shapes[0];
    Tensor g = ctx.ct();
    for (std::size_t a = 0; a < x_shape.size(); ++a) {
      if (pads[a].first == 0 && pads[a].second == 0) continue;
      const long begin = static_cast<long>(pads[a].first);
      g = core::slice(g, static_cast<long>(a), begin, begin + static_cast<long>(x_shape[a]));
    }
    ctx.accumulate(0, g);
  });
}

Var roll(const Var& x, long shift, long axis) {
  // out = roll(x, shift, axis)   =>  dx = roll(g, -shift, axis)
  const Var in[] = {x};
  Tensor out = core::roll(x.value(), shift, axis);  // checks the axis
  // -shift, taken modulo the extent (so that no shift, however large, overflows)
  const long n = static_cast<long>(x.dim(axis));
  const long back = n == 0 ? 0 : (n - ((shift % n) + n) % n) % n;
  return record1("roll", in, out, {}, [back, axis](VjpContext& ctx) {
    ctx.accumulate(0, core::roll(ctx.ct(), back, axis));
  });
}

}  // namespace minitrax::fastmath
