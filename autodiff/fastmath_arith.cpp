// minitrax/autodiff/fastmath_arith.cpp: arithmetic, exp, sum, reshape and matrix products.
//
// The pattern of every op in minitrax (see docs/architecture.md, "How to add an op"):
//   1. compute the output with core/ kernels (they check shapes and dtypes);
//   2. call `record` with the inputs, the output, the tensors the VJP needs, and the
//      VJP rule, written right here, quoting the forward line it differentiates.
// A rule accumulates into its inputs (`ctx.accumulate` sums broadcast axes away)
// and skips inputs that need no cotangent (`ctx.needs`).
#include "autodiff/fastmath.hpp"
#include "autodiff/op_helpers.hpp"
#include "core/ops.hpp"

namespace minitrax::fastmath {

using autodiff::record1;
using autodiff::VjpContext;

// ---- + - * / and negation --------------------------------------------------------

Var add(const Var& a, const Var& b) {
  // out = a + b   =>  da = g, db = g (summed over broadcast axes)
  const Var in[] = {a, b};
  return record1("add", in, core::add(a.value(), b.value()), {}, [](VjpContext& ctx) {
    Tensor g = ctx.ct();
    ctx.accumulate(0, g);
    ctx.accumulate(1, g);
  });
}

Var subtract(const Var& a, const Var& b) {
  // out = a - b   =>  da = g, db = -g
  const Var in[] = {a, b};
  return record1("subtract", in, core::sub(a.value(), b.value()), {}, [](VjpContext& ctx) {
    Tensor g = ctx.ct();
    ctx.accumulate(0, g);
    if (ctx.needs(1)) ctx.accumulate(1, core::neg(g));
  });
}

Var multiply(const Var& a, const Var& b) {
  // out = a * b   =>  da = g * b, db = g * a
  const Var in[] = {a, b};
  return record1("multiply", in, core::mul(a.value(), b.value()), {a.value(), b.value()},
                 [](VjpContext& ctx) {
                   Tensor g = ctx.ct();
                   if (ctx.needs(0)) ctx.accumulate(0, core::mul(g, ctx.saved(1)));
                   if (ctx.needs(1)) ctx.accumulate(1, core::mul(g, ctx.saved(0)));
                 });
}

Var divide(const Var& a, const Var& b) {
  // out = a / b   =>  da = g / b, db = -g * out / b
  const Var in[] = {a, b};
  Tensor out = core::div(a.value(), b.value());
  return record1("divide", in, out, {b.value(), out}, [](VjpContext& ctx) {
    Tensor g = ctx.ct();
    Tensor g_over_b = core::div(g, ctx.saved(0));
    if (ctx.needs(0)) ctx.accumulate(0, g_over_b);
    if (ctx.needs(1)) ctx.accumulate(1, core::neg(core::mul(g_over_b, ctx.saved(1))));
  });
}

Var negative(const Var& x) {
  // out = -x   =>  dx = -g
  const Var in[] = {x};
  return record1("negative", in, core::neg(x.value()), {},
                 [](VjpContext& ctx) { ctx.accumulate(0, core::neg(ctx.ct())); });
}

Var add(const Var& x, double s) {
  // out = x + s   =>  dx = g
  const Var in[] = {x};
  return record1("add_scalar", in, core::add(x.value(), s), {},
                 [](VjpContext& ctx) { ctx.accumulate(0, ctx.ct()); });
}

Var multiply(const Var& x, double s) {
  // out = x * s   =>  dx = g * s
  const Var in[] = {x};
  return record1("multiply_scalar", in, core::mul(x.value(), s), {},
                 [s](VjpContext& ctx) { ctx.accumulate(0, core::mul(ctx.ct(), s)); });
}

// ---- exp ------------------------------------------------------------------------

Var exp(const Var& x) {
  // out = exp(x)   =>  dx = g * out
  const Var in[] = {x};
  Tensor out = core::exp(x.value());
  return record1("exp", in, out, {out},
                 [](VjpContext& ctx) { ctx.accumulate(0, core::mul(ctx.ct(), ctx.saved(0))); });
}

// ---- sum ----------------------------------------------------------------------------

Var sum(const Var& x, const std::vector<long>& axes, bool keepdims) {
  // out = sum(x, axes)   =>  dx = g broadcast back over the summed axes
  const Var in[] = {x};
  Tensor out = core::sum(x.value(), axes, keepdims);
  const Shape kept = autodiff::detail::kept_shape(x.shape(), axes, "sum");
  return record1("sum", in, out, {}, [kept](VjpContext& ctx) {
    const Shape& x_shape = ctx.node().input_shapes[0];
    ctx.accumulate(0, core::broadcast_to(ctx.ct().reshape(kept), x_shape));
  });
}

// ---- reshape --------------------------------------------------------------------------

Var reshape(const Var& x, const std::vector<long>& shape) {
  // out = x viewed with a new shape   =>  dx = g viewed with x's shape
  const Var in[] = {x};
  return record1("reshape", in, x.value().reshape(shape), {}, [](VjpContext& ctx) {
    ctx.accumulate(0, ctx.ct().reshape(ctx.node().input_shapes[0]));
  });
}

// ---- matrix products ----------------------------------------------------------------

Var matmul(const Var& a, const Var& b, Trans ta, Trans tb) {
  // out = op(a) @ op(b)   =>  d op(a) = g @ op(b)^T,  d op(b) = op(a)^T @ g
  // Written per transpose flag so that each gradient is one gemm accumulating
  // straight into the input's cotangent buffer (beta = 1).
  const Var in[] = {a, b};
  Tensor out = core::matmul(a.value(), b.value(), ta, tb);
  return record1("matmul", in, out, {a.value(), b.value()}, [ta, tb](VjpContext& ctx) {
    const Tensor g = ctx.ct();
    const Tensor& av = ctx.saved(0);
    const Tensor& bv = ctx.saved(1);
    const bool b_shared = bv.ndim() == 2 && av.ndim() > 2;
    if (ctx.needs(0)) {
      Tensor& ga = ctx.grad_buffer(0);
      // a not transposed: ga += g @ op(b)^T ; a transposed: ga += op(b) @ g^T
      if (ta == Trans::N) {
        core::matmul_into(ga, g, bv, Trans::N, tb == Trans::N ? Trans::T : Trans::N, 1.0, 1.0);
      } else if (b_shared) {
        // ga_i = (g_i @ op(b)^T)^T, with op(b) shared by every batch item
        Tensor t = core::matmul(g, bv, Trans::N, tb == Trans::N ? Trans::T : Trans::N);
        core::add_inplace(ga, core::swap_last_two(t));
      } else {
        core::matmul_into(ga, bv, g, tb == Trans::N ? Trans::N : Trans::T, Trans::T, 1.0, 1.0);
      }
    }
    if (ctx.needs(1)) {
      if (b_shared) {
        // b was shared by every batch item: fold the batch into rows, one gemm.
        const std::size_t rows = core::shape_size(Shape(g.shape().begin(), g.shape().end() - 1));
        Tensor g2 = g.reshape(Shape{rows, g.dim(-1)});
        Tensor a2 = ta == Trans::N ? av.reshape(Shape{rows, av.dim(-1)})
                                   : core::swap_last_two(av).reshape(Shape{rows, av.dim(-2)});
        Tensor& gb = ctx.grad_buffer(1);
        if (tb == Trans::N) {
          core::matmul_into(gb, a2, g2, Trans::T, Trans::N, 1.0, 1.0);
        } else {
          core::matmul_into(gb, g2, a2, Trans::T, Trans::N, 1.0, 1.0);
        }
      } else {
        Tensor& gb = ctx.grad_buffer(1);
        // b not transposed: gb += op(a)^T @ g ; b transposed: gb += g^T @ op(a)
        if (tb == Trans::N) {
          core::matmul_into(gb, av, g, ta == Trans::N ? Trans::T : Trans::N, Trans::N, 1.0, 1.0);
        } else {
          core::matmul_into(gb, g, av, Trans::T, ta == Trans::N ? Trans::N : Trans::T, 1.0, 1.0);
        }
      }
    }
  });
}

Var dense(const Var& x, const Var& w, const Var& b) {
  // out = x @ w (+ b): x [..., d_in], w [d_in, d_out], b [d_out]
  if (w.ndim() != 2) {
    throw ShapeError("dense: the kernel w must have rank 2 [d_in, d_out], got " +
                     core::shape_str(w.shape()));
  }
  if (x.ndim() < 1 || x.dim(-1) != w.dim(0)) {
    throw ShapeError("dense: x has shape " + core::shape_str(x.shape()) + ", expected [..., " +
                     std::to_string(w.dim(0)) + "] to match w " + core::shape_str(w.shape()));
  }
  Shape out_shape = x.shape();
  out_shape.back() = w.dim(1);
  // The leading extents' product, not x.size() / d_in: d_in may be 0.
  const long rows =
      static_cast<long>(core::shape_size(Shape(x.shape().begin(), x.shape().end() - 1)));
  Var y = matmul(reshape(x, {rows, static_cast<long>(w.dim(0))}), w);
  std::vector<long> back(out_shape.begin(), out_shape.end());
  y = reshape(y, back);
  if (b.defined()) {
    if (b.shape() != Shape{w.dim(1)}) {
      throw ShapeError("dense: the bias b must have shape " + core::shape_str({w.dim(1)}) +
                       ", got " + core::shape_str(b.shape()));
    }
    y = add(y, b);
  }
  return y;
}

}  // namespace minitrax::fastmath

namespace minitrax::autodiff {

Var operator+(const Var& a, const Var& b) {
  return fastmath::add(a, b);
}
Var operator-(const Var& a, const Var& b) {
  return fastmath::subtract(a, b);
}
Var operator*(const Var& a, const Var& b) {
  return fastmath::multiply(a, b);
}
Var operator/(const Var& a, const Var& b) {
  return fastmath::divide(a, b);
}
Var operator-(const Var& x) {
  return fastmath::negative(x);
}
Var operator+(const Var& a, double s) {
  return fastmath::add(a, s);
}
Var operator+(double s, const Var& a) {
  return fastmath::add(a, s);
}
Var operator-(const Var& a, double s) {
  return fastmath::add(a, -s);
}
Var operator-(double s, const Var& a) {
  return fastmath::add(fastmath::negative(a), s);
}
Var operator*(const Var& a, double s) {
  return fastmath::multiply(a, s);
}
Var operator*(double s, const Var& a) {
  return fastmath::multiply(a, s);
}
Var operator/(const Var& a, double s) {
  return fastmath::multiply(a, 1.0 / s);
}
Var operator/(double s, const Var& a) {
  return fastmath::divide(Tensor::full(a.shape(), s, a.dtype()), a);
}

}  // namespace minitrax::autodiff
