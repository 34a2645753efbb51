// minitrax/autodiff/fastmath_elementwise.cpp: power, maximum/minimum, where, the
// element-wise functions (log, tanh, sigmoid, relu, gelu, ...), comparisons and astype.
//
// Each op follows the pattern of fastmath_arith.cpp: the forward with core/ kernels,
// then `record1` with the VJP rule beside it, quoting the forward line it
// differentiates. Rules read what they need from the node's `saved` list.
// Derivatives that would take several temporaries with core ops (tanh, gelu, ...)
// are fused into one loop over the cotangent and the saved tensor (`zip`).
#include <cmath>
#include <numbers>
#include <string>
#include <string_view>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"

namespace minitrax::fastmath {

using autodiff::record;
using autodiff::record1;
using autodiff::VjpContext;

namespace {

std::string dname(DType d) {
  return std::string(core::dtype_name(d));
}

/// out[i] = f(x[i]) for a float tensor x (f is called with float or double).
template <class F>
Tensor map(std::string_view op, const Tensor& x, F f) {
  core::check_floating(op, x);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  core::dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    for (std::size_t i = 0; i < out.size(); ++i) po[i] = f(px[i]);
  });
  return out;
}

/// out[i] = f(g[i], s[i]) for two float tensors of the same shape and dtype (a
/// cotangent and a saved tensor of the same op output or input).
template <class F>
Tensor zip(std::string_view op, const Tensor& g, const Tensor& s, F f) {
  core::check_shape(op, g.shape(), s.shape());
  core::check_dtype(op, g.dtype(), s.dtype());
  Tensor out = Tensor::empty(g.shape(), g.dtype());
  core::dispatch_floating(g.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    const T* ps = s.data<T>();
    T* po = out.data<T>();
    for (std::size_t i = 0; i < out.size(); ++i) po[i] = f(pg[i], ps[i]);
  });
  return out;
}

/// The checks of a differentiable binary op, with the op's own name in the errors.
void check_float_pair(std::string_view op, const Var& a, const Var& b) {
  core::check_floating(op, a.value());
  core::check_floating(op, b.value());
  if (a.dtype() != b.dtype()) {
    throw DTypeError(std::string(op) + ": the operands have different dtypes, " + dname(a.dtype()) +
                     " " + core::shape_str(a.shape()) + " and " + dname(b.dtype()) + " " +
                     core::shape_str(b.shape()) + "; convert one with astype");
  }
  (void)core::broadcast_shapes(a.shape(), b.shape(), op);
}

}  // namespace

// ---- power ------------------------------------------------------------------------

Var power(const Var& a, const Var& b) {
  // out = a ** b   =>  da = g * b * a ** (b - 1),  db = g * out * log(a)
  // (log(a) is taken as 0 where a == 0, as JAX does, so 0 ** b passes no NaN to b;
  // db is only computed when b needs a cotangent, so negative bases are fine for da)
  check_float_pair("power", a, b);
  const Var in[] = {a, b};
  Tensor out = core::pow(a.value(), b.value());
  return record1("power", in, out, {a.value(), b.value(), out}, [](VjpContext& ctx) {
    const Tensor g = ctx.ct();
    const Tensor& av = ctx.saved(0);
    const Tensor& bv = ctx.saved(1);
    if (ctx.needs(0)) {
      ctx.accumulate(0, core::mul(core::mul(g, bv), core::pow(av, core::add(bv, -1.0))));
    }
    if (ctx.needs(1)) {
      const Tensor log_a = map("power", av, [](auto x) {
        using T = decltype(x);
        return x == T(0) ? T(0) : std::log(x);
      });
      ctx.accumulate(1, core::mul(core::mul(g, ctx.saved(2)), log_a));
    }
  });
}

Var power(const Var& x, double exponent) {
  // out = x ** e   =>  dx = g * e * x ** (e - 1)
  core::check_floating("power", x.value());
  const Var in[] = {x};
  return record1(
      "power_scalar", in, core::pow(x.value(), exponent), {x.value()}, [exponent](VjpContext& ctx) {
        if (exponent == 0.0) return;  // out = 1: no dependence on x
        ctx.accumulate(0, zip("power", ctx.ct(), ctx.saved(0), [exponent](auto g, auto v) {
                         using T = decltype(g);
                         return g * T(exponent) * std::pow(v, T(exponent - 1.0));
                       }));
      });
}

// ---- maximum, minimum -------------------------------------------------------------

namespace {

/// The share of the cotangent that goes to `a` in maximum/minimum: 1 where a wins,
/// 0.5 on ties, 0 where b wins. `a_wins` is core::greater or core::less.
Tensor winner_weight(const Tensor& a, const Tensor& b, const Tensor& a_wins) {
  const DType dt = a.dtype();
  return core::where(
      a_wins, Tensor::scalar(1.0, dt),
      core::where(core::equal_to(a, b), Tensor::scalar(0.5, dt), Tensor::scalar(0.0, dt)));
}

/// The rule of maximum and minimum from the weight of a: da = g * w, db = g * (1 - w).
void split_between(VjpContext& ctx, const Tensor& w) {
  const Tensor g = ctx.ct();
  const Tensor ga = core::mul(g, w);
  if (ctx.needs(0)) ctx.accumulate(0, ga);
  if (ctx.needs(1)) ctx.accumulate(1, core::sub(g, ga));
}

}  // namespace

Var maximum(const Var& a, const Var& b) {
  // out = maximum(a, b)   =>  da = g * [a > b], db = g * [a < b]; ties: g / 2 to each
  Tensor out = core::maximum(a.value(), b.value());
  if (!core::is_floating(out.dtype())) return Var(out);  // integers: not differentiable
  const Var in[] = {a, b};
  return record1("maximum", in, out, {a.value(), b.value()}, [](VjpContext& ctx) {
    const Tensor& av = ctx.saved(0);
    const Tensor& bv = ctx.saved(1);
    split_between(ctx, winner_weight(av, bv, core::greater(av, bv)));
  });
}

Var minimum(const Var& a, const Var& b) {
  // out = minimum(a, b)   =>  da = g * [a < b], db = g * [a > b]; ties: g / 2 to each
  Tensor out = core::minimum(a.value(), b.value());
  if (!core::is_floating(out.dtype())) return Var(out);
  const Var in[] = {a, b};
  return record1("minimum", in, out, {a.value(), b.value()}, [](VjpContext& ctx) {
    const Tensor& av = ctx.saved(0);
    const Tensor& bv = ctx.saved(1);
    split_between(ctx, winner_weight(av, bv, core::less(av, bv)));
  });
}

// ---- where ---------------------------------------------------------------------------

Var where(const Var& cond, const Var& a, const Var& b) {
  // out = where(cond, a, b)   =>  da = g where cond, db = g elsewhere; cond gets nothing
  const Var in[] = {cond, a, b};
  Tensor out = core::where(cond.value(), a.value(), b.value());
  std::vector<Tensor> outs{std::move(out)};
  return std::move(record("where", in, std::move(outs), {cond.value()},
                          [](VjpContext& ctx) {
                            const Tensor g = ctx.ct();
                            const Tensor zero = Tensor::scalar(0.0, g.dtype());
                            if (ctx.needs(1)) ctx.accumulate(1, core::where(ctx.saved(0), g, zero));
                            if (ctx.needs(2)) ctx.accumulate(2, core::where(ctx.saved(0), zero, g));
                          },
                          {false, true, true})[0]);
}

// ---- element-wise functions ----------------------------------------------------------

Var log(const Var& x) {
  // out = log(x)   =>  dx = g / x
  const Var in[] = {x};
  return record1("log", in, core::log(x.value()), {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("log", ctx.ct(), ctx.saved(0), [](auto g, auto v) { return g / v; }));
  });
}

Var tanh(const Var& x) {
  // out = tanh(x)   =>  dx = g * (1 - out^2)
  const Var in[] = {x};
  Tensor out = core::tanh(x.value());
  return record1("tanh", in, out, {out}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("tanh", ctx.ct(), ctx.saved(0), [](auto g, auto y) {
                     using T = decltype(g);
                     return g * (T(1) - y * y);
                   }));
  });
}

Var sigmoid(const Var& x) {
  // out = 1 / (1 + exp(-x))   =>  dx = g * out * (1 - out)
  const Var in[] = {x};
  Tensor out = core::sigmoid(x.value());
  return record1("sigmoid", in, out, {out}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("sigmoid", ctx.ct(), ctx.saved(0), [](auto g, auto y) {
                     using T = decltype(g);
                     return g * y * (T(1) - y);
                   }));
  });
}

Var relu(const Var& x) {
  // out = max(x, 0)   =>  dx = g * [x > 0]
  const Var in[] = {x};
  return record1("relu", in, core::relu(x.value()), {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("relu", ctx.ct(), ctx.saved(0), [](auto g, auto v) {
                     using T = decltype(g);
                     return v > T(0) ? g : T(0);
                   }));
  });
}

Var gelu(const Var& x) {
  // out = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
  //   =>  dx = g * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
  const Var in[] = {x};
  Tensor out = map("gelu", x.value(), [](auto v) {
    using T = decltype(v);
    return T(0.5) * v * (T(1) + std::erf(v * T(std::numbers::sqrt2 / 2)));
  });
  return record1("gelu", in, out, {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("gelu", ctx.ct(), ctx.saved(0), [](auto g, auto v) {
                     using T = decltype(g);
                     const T cdf = T(0.5) * (T(1) + std::erf(v * T(std::numbers::sqrt2 / 2)));
                     const T pdf = T(std::numbers::inv_sqrtpi / std::numbers::sqrt2) *
                                   std::exp(T(-0.5) * v * v);
                     return g * (cdf + v * pdf);
                   }));
  });
}

namespace {
constexpr double kGeluC = std::numbers::sqrt2 * std::numbers::inv_sqrtpi;  // sqrt(2 / pi)
constexpr double kGeluK = 0.044715;
}  // namespace

Var gelu_tanh(const Var& x) {
  // out = 0.5 x (1 + t),  t = tanh(u),  u = c (x + k x^3),  c = sqrt(2 / pi), k = 0.044715
  //   =>  dx = g * (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2))
  const Var in[] = {x};
  Tensor out = map("gelu_tanh", x.value(), [](auto v) {
    using T = decltype(v);
    return T(0.5) * v * (T(1) + std::tanh(T(kGeluC) * (v + T(kGeluK) * v * v * v)));
  });
  return record1("gelu_tanh", in, out, {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("gelu_tanh", ctx.ct(), ctx.saved(0), [](auto g, auto v) {
                     using T = decltype(g);
                     const T t = std::tanh(T(kGeluC) * (v + T(kGeluK) * v * v * v));
                     const T du = T(kGeluC) * (T(1) + T(3 * kGeluK) * v * v);
                     return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
                   }));
  });
}

Var sqrt(const Var& x) {
  // out = sqrt(x)   =>  dx = g / (2 out)
  const Var in[] = {x};
  Tensor out = core::sqrt(x.value());
  return record1("sqrt", in, out, {out}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("sqrt", ctx.ct(), ctx.saved(0), [](auto g, auto y) {
                     using T = decltype(g);
                     return g / (T(2) * y);
                   }));
  });
}

Var rsqrt(const Var& x) {
  // out = x^(-1/2)   =>  dx = -g * out^3 / 2
  const Var in[] = {x};
  Tensor out = core::rsqrt(x.value());
  return record1("rsqrt", in, out, {out}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("rsqrt", ctx.ct(), ctx.saved(0), [](auto g, auto y) {
                     using T = decltype(g);
                     return T(-0.5) * g * y * y * y;
                   }));
  });
}

Var square(const Var& x) {
  // out = x * x   =>  dx = 2 g x
  const Var in[] = {x};
  return record1("square", in, core::square(x.value()), {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("square", ctx.ct(), ctx.saved(0), [](auto g, auto v) {
                     using T = decltype(g);
                     return T(2) * g * v;
                   }));
  });
}

Var abs(const Var& x) {
  // out = |x|   =>  dx = g * sign(x)  (0 at 0)
  Tensor out = core::abs(x.value());
  if (!core::is_floating(out.dtype())) return Var(out);  // integers: not differentiable
  const Var in[] = {x};
  return record1("abs", in, out, {x.value()}, [](VjpContext& ctx) {
    ctx.accumulate(0, zip("abs", ctx.ct(), ctx.saved(0), [](auto g, auto v) {
                     using T = decltype(g);
                     return v > T(0) ? g : (v < T(0) ? -g : T(0));
                   }));
  });
}

// ---- comparisons: constants -----------------------------------------------------------

Var equal(const Var& a, const Var& b) {
  return Var(core::equal_to(a.value(), b.value()));
}
Var less(const Var& a, const Var& b) {
  return Var(core::less(a.value(), b.value()));
}
Var greater(const Var& a, const Var& b) {
  return Var(core::greater(a.value(), b.value()));
}

// ---- astype -----------------------------------------------------------------------------

Var astype(const Var& x, DType dtype) {
  // out = x converted to dtype   =>  dx = g converted back to x's dtype
  if (!x.defined()) throw ValueError("astype: the tensor is undefined");
  Tensor out = x.value().astype(dtype);
  const DType from = x.dtype();
  if (!core::is_floating(from) || !core::is_floating(dtype)) return Var(out);  // not differentiable
  const Var in[] = {x};
  return record1("astype", in, out, {},
                 [from](VjpContext& ctx) { ctx.accumulate(0, ctx.ct().astype(from)); });
}

}  // namespace minitrax::fastmath
