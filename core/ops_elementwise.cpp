// minitrax/core/ops_elementwise.cpp: broadcasting, element-wise ops, in-place updates and
// comparison helpers (see ops.hpp).
//
// Binary ops take one of three paths: operands of the output's size -> one flat loop;
// one operand of size 1 -> a flat loop against a constant; anything else -> a
// BroadcastPlan (ops_internal.hpp) that merges axes and runs a flat inner loop per
// row with each operand's inner stride 0 or 1. All loops are plain loops over raw
// pointers that the compiler vectorises. Signed integer arithmetic wraps (computed in
// the unsigned type), as numpy's does, instead of being undefined behaviour.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/ops.hpp"
#include "core/ops_internal.hpp"
#include "core/vmath.hpp"

namespace minitrax::core {

using namespace ops_internal;

// ---- broadcasting ------------------------------------------------------------

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  const std::size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (std::size_t i = 0; i < r; ++i) {
    const std::size_t ea = i + a.size() >= r ? a[i + a.size() - r] : 1;
    const std::size_t eb = i + b.size() >= r ? b[i + b.size() - r] : 1;
    if (ea != eb && ea != 1 && eb != 1) {
      throw ShapeError(s(op) + ": cannot broadcast shapes " + shape_str(a) + " and " +
                       shape_str(b));
    }
    out[i] = ea == 1 ? eb : ea;
  }
  return out;
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  need_defined("broadcast_to", x);
  if (!broadcasts_to(x.shape(), shape)) {
    throw ShapeError("broadcast_to: cannot broadcast shape " + shape_str(x.shape()) + " to " +
                     shape_str(shape));
  }
  if (x.shape() == shape) return x.clone();
  Tensor out = Tensor::empty(shape, x.dtype(), "broadcast_to");
  if (out.size() == 0) return out;
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    BroadcastPlan<2> plan(shape, {&shape, &x.shape()});
    plan.for_each_row([&](const auto& off, std::size_t n, const auto& inner) {
      T* o = po + off[0];
      const T* p = px + off[1];
      if (inner[1]) {
        std::memcpy(o, p, n * sizeof(T));
      } else {
        std::fill_n(o, n, *p);
      }
    });
  });
  return out;
}

// ---- element-wise, binary ------------------------------------------------------

namespace {

template <class T>
inline T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}
template <class T>
inline T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return a - b;
  }
}
template <class T>
inline T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
  } else {
    return a * b;
  }
}

struct AddOp {
  template <class T>
  static T apply(T a, T b) {
    return wrap_add(a, b);
  }
};
struct SubOp {
  template <class T>
  static T apply(T a, T b) {
    return wrap_sub(a, b);
  }
};
struct MulOp {
  template <class T>
  static T apply(T a, T b) {
    return wrap_mul(a, b);
  }
};
struct DivOp {
  template <class T>
  static T apply(T a, T b) {
    return a / b;
  }
};
struct PowOp {
  template <class T>
  static T apply(T a, T b) {
    return std::pow(a, b);
  }
};
// numpy maximum/minimum: a NaN in either operand gives NaN.
struct MaxOp {
  template <class T>
  static T apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a >= b || a != a) ? a : b;
    } else {
      return a >= b ? a : b;
    }
  }
};
struct MinOp {
  template <class T>
  static T apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a <= b || a != a) ? a : b;
    } else {
      return a <= b ? a : b;
    }
  }
};
struct EqOp {
  template <class T>
  static std::int32_t apply(T a, T b) {
    return a == b;
  }
};
struct LtOp {
  template <class T>
  static std::int32_t apply(T a, T b) {
    return a < b;
  }
};
struct LeOp {
  template <class T>
  static std::int32_t apply(T a, T b) {
    return a <= b;
  }
};
struct GtOp {
  template <class T>
  static std::int32_t apply(T a, T b) {
    return a > b;
  }
};
struct GeOp {
  template <class T>
  static std::int32_t apply(T a, T b) {
    return a >= b;
  }
};

enum class Kind { any, floating, compare };

/// One row: o[i] = op(a[i*sa], b[i*sb]) with sa, sb in {0, 1}. `o` may alias `a`.
template <class Op, class T, class R>
inline void binary_row(R* o, const T* a, std::size_t sa, const T* b, std::size_t sb,
                       std::size_t n) {
  if (sa && sb) {
    for (std::size_t i = 0; i < n; ++i) o[i] = Op::apply(a[i], b[i]);
  } else if (sa) {
    const T bv = *b;
    for (std::size_t i = 0; i < n; ++i) o[i] = Op::apply(a[i], bv);
  } else if (sb) {
    const T av = *a;
    for (std::size_t i = 0; i < n; ++i) o[i] = Op::apply(av, b[i]);
  } else {
    std::fill_n(o, n, static_cast<R>(Op::apply(*a, *b)));
  }
}

/// out = op(a, b) with broadcasting; out has the broadcast shape (it may be `a` itself).
template <class Op, class T, class R>
void binary_kernel(const Tensor& a, const Tensor& b, Tensor& out) {
  const std::size_t n = out.size();
  if (n == 0) return;
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  R* po = out.data<R>();
  const bool full_a = a.size() == n, full_b = b.size() == n;
  if (full_a && full_b) return binary_row<Op>(po, pa, 1, pb, 1, n);
  if (full_a && b.size() == 1) return binary_row<Op>(po, pa, 1, pb, 0, n);
  if (full_b && a.size() == 1) return binary_row<Op>(po, pa, 0, pb, 1, n);
  BroadcastPlan<3> plan(out.shape(), {&out.shape(), &a.shape(), &b.shape()});
  plan.for_each_row([&](const auto& off, std::size_t m, const auto& inner) {
    binary_row<Op>(po + off[0], pa + off[1], inner[1], pb + off[2], inner[2], m);
  });
}

template <class Op, Kind K>
Tensor binary(std::string_view op, const Tensor& a, const Tensor& b) {
  need_defined(op, a, "a");
  need_defined(op, b, "b");
  need_same_dtype(op, a, b);
  if (K == Kind::floating && !is_floating(a.dtype())) {
    throw DTypeError(s(op) + ": needs float32 or float64 operands, got " + dname(a.dtype()) +
                     " (shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                     "); convert with astype");
  }
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = Tensor::empty(shape, K == Kind::compare ? DType::i32 : a.dtype(), op);
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (K != Kind::floating || std::is_floating_point_v<T>) {
      using R = std::conditional_t<K == Kind::compare, std::int32_t, T>;
      binary_kernel<Op, T, R>(a, b, out);
    }
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return binary<AddOp, Kind::any>("add", a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary<SubOp, Kind::any>("sub", a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary<MulOp, Kind::any>("mul", a, b);
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary<DivOp, Kind::floating>("div", a, b);
}
Tensor pow(const Tensor& a, const Tensor& b) {
  return binary<PowOp, Kind::floating>("pow", a, b);
}
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary<MaxOp, Kind::any>("maximum", a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return binary<MinOp, Kind::any>("minimum", a, b);
}
Tensor equal_to(const Tensor& a, const Tensor& b) {
  return binary<EqOp, Kind::compare>("equal_to", a, b);
}
Tensor less(const Tensor& a, const Tensor& b) {
  return binary<LtOp, Kind::compare>("less", a, b);
}
Tensor less_equal(const Tensor& a, const Tensor& b) {
  return binary<LeOp, Kind::compare>("less_equal", a, b);
}
Tensor greater(const Tensor& a, const Tensor& b) {
  return binary<GtOp, Kind::compare>("greater", a, b);
}
Tensor greater_equal(const Tensor& a, const Tensor& b) {
  return binary<GeOp, Kind::compare>("greater_equal", a, b);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  need_defined("where", cond, "cond");
  need_defined("where", a, "a");
  need_defined("where", b, "b");
  need_same_dtype("where", a, b);
  Shape shape;
  try {
    shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  } catch (const ShapeError&) {
    throw ShapeError("where: cannot broadcast shapes " + shape_str(cond.shape()) + " (cond), " +
                     shape_str(a.shape()) + " (a) and " + shape_str(b.shape()) + " (b)");
  }
  Tensor out = Tensor::empty(shape, a.dtype(), "where");
  const std::size_t n = out.size();
  if (n == 0) return out;
  dispatch_all(cond.dtype(), [&](auto ctag) {
    using C = decltype(ctag);
    dispatch_all(a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const C* pc = cond.data<C>();
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* po = out.data<T>();
      if (cond.size() == n && a.size() == n && b.size() == n) {
        for (std::size_t i = 0; i < n; ++i) po[i] = pc[i] != C(0) ? pa[i] : pb[i];
        return;
      }
      BroadcastPlan<4> plan(shape, {&shape, &cond.shape(), &a.shape(), &b.shape()});
      plan.for_each_row([&](const auto& off, std::size_t m, const auto& in) {
        T* o = po + off[0];
        const C* c = pc + off[1];
        const T* x = pa + off[2];
        const T* y = pb + off[3];
        const std::size_t sc = in[1], sa = in[2], sb = in[3];
        if (sc && sa && sb) {
          for (std::size_t i = 0; i < m; ++i) o[i] = c[i] != C(0) ? x[i] : y[i];
        } else if (!sc) {  // one condition for the whole row: copy or fill from a or b
          const bool take_a = *c != C(0);
          const T* from = take_a ? x : y;
          if (take_a ? sa : sb) {
            std::memcpy(o, from, m * sizeof(T));
          } else {
            std::fill_n(o, m, *from);
          }
        } else {
          for (std::size_t i = 0; i < m; ++i) o[i] = c[i * sc] != C(0) ? x[i * sa] : y[i * sb];
        }
      });
    });
  });
  return out;
}

// ---- with a scalar ---------------------------------------------------------------

namespace {

template <class F>
Tensor map_any(std::string_view op, const Tensor& x, F&& f) {
  need_defined(op, x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), op);
  if (x.size() == 0) return out;
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    f(x.data<T>(), out.data<T>(), x.size());
  });
  return out;
}

template <class F>
Tensor map_float(std::string_view op, const Tensor& x, F&& f) {
  need_floating(op, x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), op);
  if (x.size() == 0) return out;
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    f(x.data<T>(), out.data<T>(), x.size());
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, double sv) {
  return map_any("add", a, [&](const auto* x, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const T c = scalar_as<T>(sv, "add");
    for (std::size_t i = 0; i < n; ++i) y[i] = wrap_add(x[i], c);
  });
}

Tensor mul(const Tensor& a, double sv) {
  return map_any("mul", a, [&](const auto* x, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const T c = scalar_as<T>(sv, "mul");
    for (std::size_t i = 0; i < n; ++i) y[i] = wrap_mul(x[i], c);
  });
}

Tensor pow(const Tensor& a, double exponent) {
  return map_float("pow", a, [&](const auto* x, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const T e = static_cast<T>(exponent);
    if (exponent == 2.0) {
      for (std::size_t i = 0; i < n; ++i) y[i] = x[i] * x[i];
    } else if (exponent == 1.0) {
      std::memcpy(y, x, n * sizeof(T));
    } else if (exponent == -1.0) {
      for (std::size_t i = 0; i < n; ++i) y[i] = T(1) / x[i];
    } else {
      for (std::size_t i = 0; i < n; ++i) y[i] = std::pow(x[i], e);
    }
  });
}

// ---- element-wise, unary --------------------------------------------------------

Tensor neg(const Tensor& x) {
  return map_any("neg", x, [](const auto* p, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    for (std::size_t i = 0; i < n; ++i) y[i] = wrap_sub(T(0), p[i]);
  });
}

Tensor abs(const Tensor& x) {
  return map_any("abs", x, [](const auto* p, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    if constexpr (std::is_floating_point_v<T>) {
      for (std::size_t i = 0; i < n; ++i) y[i] = std::fabs(p[i]);
    } else {
      // abs(INT_MIN) wraps to INT_MIN, as numpy's does.
      for (std::size_t i = 0; i < n; ++i) y[i] = p[i] < 0 ? wrap_sub(T(0), p[i]) : p[i];
    }
  });
}

Tensor sign(const Tensor& x) {
  return map_float("sign", x, [](const auto* p, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    // 0 stays 0, NaN stays NaN.
    for (std::size_t i = 0; i < n; ++i) y[i] = p[i] > T(0) ? T(1) : (p[i] < T(0) ? T(-1) : p[i]);
  });
}

Tensor square(const Tensor& x) {
  return map_float("square", x, [](const auto* p, auto* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] = p[i] * p[i];
  });
}

Tensor exp(const Tensor& x) {
  return map_float("exp", x, [](const auto* p, auto* y, std::size_t n) { vexp(p, y, n); });
}
Tensor log(const Tensor& x) {
  return map_float("log", x, [](const auto* p, auto* y, std::size_t n) { vlog(p, y, n); });
}
Tensor tanh(const Tensor& x) {
  return map_float("tanh", x, [](const auto* p, auto* y, std::size_t n) { vtanh(p, y, n); });
}
Tensor sigmoid(const Tensor& x) {
  return map_float("sigmoid", x, [](const auto* p, auto* y, std::size_t n) { vsigmoid(p, y, n); });
}

Tensor sqrt(const Tensor& x) {
  return map_float("sqrt", x, [](const auto* p, auto* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] = std::sqrt(p[i]);
  });
}

Tensor rsqrt(const Tensor& x) {
  return map_float("rsqrt", x, [](const auto* p, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    for (std::size_t i = 0; i < n; ++i) y[i] = T(1) / std::sqrt(p[i]);
  });
}

Tensor erf(const Tensor& x) {
  return map_float("erf", x, [](const auto* p, auto* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] = std::erf(p[i]);
  });
}

Tensor relu(const Tensor& x) {
  return map_float("relu", x, [](const auto* p, auto* y, std::size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    // max(x, 0) with NaN propagated (as jax.nn.relu).
    for (std::size_t i = 0; i < n; ++i) y[i] = (p[i] > T(0) || p[i] != p[i]) ? p[i] : T(0);
  });
}

// ---- in place -------------------------------------------------------------------

void add_inplace(Tensor& acc, const Tensor& x) {
  need_defined("add_inplace", acc, "acc");
  need_defined("add_inplace", x, "x");
  need_same_dtype("add_inplace", acc, x);
  if (acc.shape() == x.shape()) {
    if (acc.size() == 0) return;
    dispatch_all(acc.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* pa = acc.data<T>();
      const T* px = x.data<T>();
      const std::size_t n = acc.size();
      for (std::size_t i = 0; i < n; ++i) pa[i] = wrap_add(pa[i], px[i]);
    });
    return;
  }
  const auto fail = [&] {
    throw ShapeError("add_inplace: cannot accumulate a tensor of shape " + shape_str(x.shape()) +
                     " into an accumulator of shape " + shape_str(acc.shape()));
  };
  if (broadcasts_to(x.shape(), acc.shape())) {
    // x is smaller: broadcast it over acc.
    dispatch_all(acc.dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_kernel<AddOp, T, T>(acc, x, acc);
    });
  } else if (broadcasts_to(acc.shape(), x.shape())) {
    // x is a broadcast result: sum it down to acc's shape first.
    add_inplace(acc, sum_to(x, acc.shape()));
  } else {
    fail();
  }
}

void scale_inplace(Tensor& acc, double sv) {
  need_defined("scale_inplace", acc, "acc");
  if (acc.size() == 0) return;
  dispatch_all(acc.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T c = scalar_as<T>(sv, "scale_inplace");
    T* p = acc.data<T>();
    const std::size_t n = acc.size();
    for (std::size_t i = 0; i < n; ++i) p[i] = wrap_mul(p[i], c);
  });
}

// ---- comparison helpers -----------------------------------------------------------

namespace {

/// Calls f(pa, pb, n) with a's and b's element pointers (any dtype pair).
template <class F>
void dispatch_pair(const Tensor& a, const Tensor& b, F&& f) {
  dispatch_all(a.dtype(), [&](auto ta) {
    using A = decltype(ta);
    dispatch_all(b.dtype(), [&](auto tb) {
      using B = decltype(tb);
      f(a.data<A>(), b.data<B>(), a.size());
    });
  });
}

}  // namespace

double max_abs_diff(const Tensor& a, const Tensor& b) {
  need_defined("max_abs_diff", a, "a");
  need_defined("max_abs_diff", b, "b");
  check_shape("max_abs_diff", a.shape(), b.shape());
  double worst = 0.0;
  if (a.size() == 0) return worst;
  dispatch_pair(a, b, [&](const auto* pa, const auto* pb, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(pa[i]), y = static_cast<double>(pb[i]);
      if (x == y) continue;  // equal infinities differ by 0
      const double d = std::fabs(x - y);
      if (d != d) {
        worst = d;  // NaN
        return;
      }
      worst = std::max(worst, d);
    }
  });
  return worst;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  need_defined("allclose", a, "a");
  need_defined("allclose", b, "b");
  if (a.shape() != b.shape()) return false;
  bool ok = true;
  if (a.size() == 0) return ok;
  dispatch_pair(a, b, [&](const auto* pa, const auto* pb, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(pa[i]), y = static_cast<double>(pb[i]);
      if (x == y) continue;
      // numpy: an infinity is close only to the same infinity; NaN to nothing.
      if (!std::isfinite(x) || !std::isfinite(y) ||
          !(std::fabs(x - y) <= atol + rtol * std::fabs(y))) {
        ok = false;
        return;
      }
    }
  });
  return ok;
}

bool all_finite(const Tensor& x) {
  need_defined("all_finite", x);
  if (!is_floating(x.dtype()) || x.size() == 0) return true;
  // A float is finite iff its exponent bits are not all ones; an OR-reduction over the
  // bits vectorises.
  return dispatch_floating(x.dtype(), "all_finite", [&](auto tag) {
    using T = decltype(tag);
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr U exp_mask = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    const T* p = x.data<T>();
    const std::size_t n = x.size();
    constexpr std::size_t block = 1024;
    for (std::size_t i0 = 0; i0 < n; i0 += block) {
      const std::size_t i1 = std::min(n, i0 + block);
      U bad = 0;
      for (std::size_t i = i0; i < i1; ++i) {
        bad |= U((std::bit_cast<U>(p[i]) & exp_mask) == exp_mask);
      }
      if (bad) return false;
    }
    return true;
  });
}

}  // namespace minitrax::core
