// minitrax/autodiff/fastmath_reduce.cpp: mean, max and logsumexp over any axes.
//
// The pattern of fastmath_arith.cpp: forward with core/ kernels, then `record1` with the
// VJP rule beside it. Every rule first views the cotangent with the reduced axes
// kept as size 1 (`kept_shape`), so that it broadcasts back against x.
#include <string>

#include "autodiff/fastmath.hpp"
#include "autodiff/op_helpers.hpp"
#include "core/ops.hpp"

namespace minitrax::fastmath {

using autodiff::record1;
using autodiff::VjpContext;
using autodiff::detail::kept_shape;

Var mean(const Var& x, const std::vector<long>& axes, bool keepdims) {
  // out = sum(x, axes) / n   =>  dx = g / n broadcast back over the reduced axes
  const Var in[] = {x};
  Tensor out = core::mean(x.value(), axes, keepdims);
  const Shape kept = kept_shape(x.shape(), axes, "mean");
  std::size_t n = 1;
  if (axes.empty()) {
    n = x.size();
  } else {
    for (long a : axes) n *= x.shape()[core::normalize_axis(a, x.ndim(), "mean")];
  }
  const double inv_n = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  return record1("mean", in, out, {}, [kept, inv_n](VjpContext& ctx) {
    const Shape& x_shape = ctx.node().input_shapes[0];
    ctx.accumulate(0, core::broadcast_to(core::mul(ctx.ct().reshape(kept), inv_n), x_shape));
  });
}

Var max(const Var& x, const std::vector<long>& axes, bool keepdims) {
  // out = max(x, axes)   =>  dx = g * [x == out] / (number of maxima), over the reduced
  // axes: the gradient is split evenly among tied maxima
  const Var in[] = {x};
  Tensor out = core::max(x.value(), axes, keepdims);
  if (!core::is_floating(out.dtype())) return Var(out);  // integers: not differentiable
  const Shape kept = kept_shape(x.shape(), axes, "max");
  return record1("max", in, out, {x.value(), out}, [kept, axes](VjpContext& ctx) {
    const Tensor& xv = ctx.saved(0);
    const Tensor hit = core::equal_to(xv, ctx.saved(1).reshape(kept)).astype(xv.dtype());
    const Tensor count = core::sum(hit, axes, /*keepdims=*/true);
    ctx.accumulate(0, core::mul(hit, core::div(ctx.ct().reshape(kept), count)));
  });
}

Var logsumexp(const Var& x, const std::vector<long>& axes, bool keepdims) {
  // out = log(sum(exp(x), axes))   =>  dx = g * exp(x - out), broadcast over the reduced axes
  const Var in[] = {x};
  Tensor out = core::logsumexp(x.value(), axes, keepdims);
  const Shape kept = kept_shape(x.shape(), axes, "logsumexp");
  return record1("logsumexp", in, out, {x.value(), out}, [kept](VjpContext& ctx) {
    const Tensor p = core::exp(core::sub(ctx.saved(0), ctx.saved(1).reshape(kept)));
    ctx.accumulate(0, core::mul(p, ctx.ct().reshape(kept)));
  });
}

}  // namespace minitrax::fastmath
