// minitrax/autodiff/fastmath_index.cpp: gathers (take, take_along_axis) and the
// non-differentiable index ops (one_hot, argmax, argsort).
//
// A gather copies elements of x to the output; its VJP sends each output
// cotangent back to the element it came from, adding where an element was taken
// more than once (a scatter-add). Index tensors are never differentiated: they are
// recorded as edges that receive no cotangent, so dumps still show them.
#include <string_view>
#include <utility>

#include "autodiff/fastmath.hpp"

namespace minitrax::fastmath {

using autodiff::record;
using autodiff::VjpContext;

namespace {

Var record_gather(std::string_view op, const Var& x, const Var& indices, Tensor out,
                  autodiff::VjpRule vjp) {
  const Var in[] = {x, indices};
  // Saved: the indices only (x's shape is in the node); the rule needs nothing else.
  return std::move(
      record(op, in, {std::move(out)}, {indices.value()}, std::move(vjp), {true, false})[0]);
}

}  // namespace

// ---- take, take_along_axis --------------------------------------------------------------

Var take(const Var& x, const Var& indices, long axis) {
  // out = take(x, indices, axis)
  //   =>  dx = zeros of x's shape with g scatter-added at indices along axis
  //       (repeated indices accumulate: take_backward)
  Tensor out = core::take(x.value(), indices.value(), axis);  // checks axis, dtype, range
  return record_gather("take", x, indices, out, [axis](VjpContext& ctx) {
    if (!ctx.needs(0)) return;
    ctx.accumulate(0,
                   core::take_backward(ctx.ct(), ctx.saved(0), ctx.node().input_shapes[0], axis));
  });
}

Var take_along_axis(const Var& x, const Var& indices, long axis) {
  // out = take_along_axis(x, indices, axis)
  //   =>  dx = zeros of x's shape with g scatter-added at indices along axis
  Tensor out = core::take_along_axis(x.value(), indices.value(), axis);
  return record_gather("take_along_axis", x, indices, out, [axis](VjpContext& ctx) {
    if (!ctx.needs(0)) return;
    ctx.accumulate(0, core::take_along_axis_backward(ctx.ct(), ctx.saved(0),
                                                     ctx.node().input_shapes[0], axis));
  });
}

// ---- not differentiable: constants --------------------------------------------------------
// Their outputs are integers or a function of integers only; they are returned as
// constant Vars (nothing is recorded), so no gradient can flow through them.

Var one_hot(const Var& indices, std::size_t depth, DType dtype) {
  return Var(core::one_hot(indices.value(), depth, dtype));
}

Var argmax(const Var& x, long axis) {
  return Var(core::argmax(x.value(), axis));
}

Var argsort(const Var& x, long axis) {
  return Var(core::argsort(x.value(), axis));
}

}  // namespace minitrax::fastmath
