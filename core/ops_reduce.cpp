// minitrax/core/ops_reduce.cpp: sum, mean, max, min, logsumexp over any axes, and sum_to.
//
// The reduced axes are grouped into runs of consecutive axes. Each run is reduced in
// turn (innermost first) by viewing the current tensor as [outer, R, inner]: no
// transposes, every loop reads contiguous memory.
//  - inner == 1: each output is a contiguous row of R elements (float sums are
//    pairwise, as numpy's, which keeps float32 sums accurate);
//  - inner > 1: output rows of `inner` elements are accumulated one input row at a
//    time, which vectorises over `inner` (float sums run sequentially within blocks of
//    128 rows and pairwise across blocks, so the rounding error grows like
//    128 + log2(R / 128)).
// Reducing run by run is exact for max/min, and for integer sums (modular); for float
// sums it only changes the summation order; for logsumexp it is the identity
// lse(x over A u B) = lse(lse(x over B) over A).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/ops.hpp"
#include "core/ops_internal.hpp"
#include "core/vmath.hpp"

namespace minitrax::core {

using namespace ops_internal;

namespace {

enum class Red { sum, max, min, lse };

// ---- sum ----------------------------------------------------------------------

/// numpy's pairwise summation of a contiguous array.
template <class T>
T pairwise_sum(const T* x, std::size_t n) {
  if (n < 8) {
    T s = T(0);
    for (std::size_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  if (n <= 128) {
    T r[8];
    for (std::size_t l = 0; l < 8; ++l) r[l] = x[l];
    std::size_t i = 8;
    for (; i + 8 <= n; i += 8) {
      for (std::size_t l = 0; l < 8; ++l) r[l] += x[i + l];
    }
    T s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += x[i];
    return s;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(x, n2) + pairwise_sum(x + n2, n - n2);
}

/// y[j] = sum over r < R of x[r * inner + j] (plain sequential sum).
template <class T>
void sum_rows_seq(const T* x, std::size_t R, std::size_t inner, T* y) {
  if (R == 0) {
    std::fill_n(y, inner, T(0));
    return;
  }
  std::memcpy(y, x, inner * sizeof(T));
  for (std::size_t r = 1; r < R; ++r) {
    const T* row = x + r * inner;
    for (std::size_t j = 0; j < inner; ++j) y[j] += row[j];
  }
}

/// y[j] = sum over r < R of x[r * inner + j], pairwise over blocks of 128 rows: the
/// two halves are summed separately (the second into `scratch`, which holds one row
/// per level of recursion) and then added.
template <class T>
void sum_rows_pairwise(const T* x, std::size_t R, std::size_t inner, T* y, T* scratch) {
  constexpr std::size_t block = 128;
  if (R <= block) {
    sum_rows_seq(x, R, inner, y);
    return;
  }
  const std::size_t h = R / 2;
  sum_rows_pairwise(x, h, inner, y, scratch + inner);
  sum_rows_pairwise(x + h * inner, R - h, inner, scratch, scratch + inner);
  for (std::size_t j = 0; j < inner; ++j) y[j] += scratch[j];
}

template <class T>
void sum_kernel(const T* x, T* y, std::size_t outer, std::size_t R, std::size_t inner) {
  if constexpr (std::is_integral_v<T>) {
    // Modular (wrapping) arithmetic in the unsigned type: the same result as an int64
    // accumulation converted back, with no undefined overflow.
    using U = std::make_unsigned_t<T>;
    if (inner == 1) {
      for (std::size_t o = 0; o < outer; ++o) {
        const T* row = x + o * R;
        U acc = 0;
        for (std::size_t r = 0; r < R; ++r) acc += static_cast<U>(row[r]);
        y[o] = static_cast<T>(acc);
      }
      return;
    }
    std::vector<U> acc(inner);
    for (std::size_t o = 0; o < outer; ++o) {
      const T* xo = x + o * R * inner;
      std::fill(acc.begin(), acc.end(), U(0));
      for (std::size_t r = 0; r < R; ++r) {
        const T* row = xo + r * inner;
        for (std::size_t j = 0; j < inner; ++j) acc[j] += static_cast<U>(row[j]);
      }
      for (std::size_t j = 0; j < inner; ++j) y[o * inner + j] = static_cast<T>(acc[j]);
    }
  } else if (inner == 1) {
    for (std::size_t o = 0; o < outer; ++o) y[o] = pairwise_sum(x + o * R, R);
  } else {
    std::size_t levels = 0;
    for (std::size_t n = R; n > 128; n = n - n / 2) ++levels;
    std::vector<T> scratch(levels * inner);
    for (std::size_t o = 0; o < outer; ++o) {
      sum_rows_pairwise(x + o * R * inner, R, inner, y + o * inner, scratch.data());
    }
  }
}

// ---- max / min ---------------------------------------------------------------------

/// The larger (IsMax) or smaller of m and v; a NaN in either wins (numpy semantics).
template <bool IsMax, class T>
inline T pick(T m, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    if constexpr (IsMax) {
      return (v > m || v != v) ? v : m;
    } else {
      return (v < m || v != v) ? v : m;
    }
  } else {
    if constexpr (IsMax) {
      return v > m ? v : m;
    } else {
      return v < m ? v : m;
    }
  }
}

/// Max (or min) of a contiguous row, n >= 1; eight independent lanes.
template <bool IsMax, class T>
T extreme_row_exact(const T* x, std::size_t n) {
  T m;
  std::size_t i = 0;
  if (n >= 8) {
    T r[8];
    for (std::size_t l = 0; l < 8; ++l) r[l] = x[l];
    for (i = 8; i + 8 <= n; i += 8) {
      for (std::size_t l = 0; l < 8; ++l) r[l] = pick<IsMax>(r[l], x[i + l]);
    }
    m = r[0];
    for (std::size_t l = 1; l < 8; ++l) m = pick<IsMax>(m, r[l]);
  } else {
    m = x[0];
    i = 1;
  }
  for (; i < n; ++i) m = pick<IsMax>(m, x[i]);
  return m;
}

/// As extreme_row_exact, but for floats it first runs a loop that ignores NaN (it
/// vectorises, the NaN test does not) while summing x * 0, which is NaN iff some
/// element is NaN or infinite; only then is the exact loop run.
template <bool IsMax, class T>
T extreme_row(const T* x, std::size_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    if (n >= 16) {
      T r[8], z[8];
      for (std::size_t l = 0; l < 8; ++l) {
        r[l] = x[l];
        z[l] = x[l] * T(0);
      }
      std::size_t i = 8;
      for (; i + 8 <= n; i += 8) {
        for (std::size_t l = 0; l < 8; ++l) {
          const T v = x[i + l];
          if constexpr (IsMax) {
            r[l] = v > r[l] ? v : r[l];
          } else {
            r[l] = v < r[l] ? v : r[l];
          }
          z[l] += v * T(0);
        }
      }
      T m = r[0], zs = z[0];
      for (std::size_t l = 1; l < 8; ++l) {
        m = pick<IsMax>(m, r[l]);
        zs += z[l];
      }
      for (; i < n; ++i) {
        m = pick<IsMax>(m, x[i]);
        zs += x[i] * T(0);
      }
      if (zs == zs) return m;  // all finite: the fast result is exact
    }
  }
  return extreme_row_exact<IsMax>(x, n);
}

/// y[j] = max (or min) over r < R of x[r * inner + j]; R >= 1.
template <bool IsMax, class T>
void extreme_rows(const T* x, std::size_t R, std::size_t inner, T* y) {
  std::memcpy(y, x, inner * sizeof(T));
  for (std::size_t r = 1; r < R; ++r) {
    const T* row = x + r * inner;
    for (std::size_t j = 0; j < inner; ++j) y[j] = pick<IsMax>(y[j], row[j]);
  }
}

template <bool IsMax, class T>
void extreme_kernel(const T* x, T* y, std::size_t outer, std::size_t R, std::size_t inner) {
  for (std::size_t o = 0; o < outer; ++o) {
    if (inner == 1) {
      y[o] = extreme_row<IsMax>(x + o * R, R);
    } else {
      extreme_rows<IsMax>(x + o * R * inner, R, inner, y + o * inner);
    }
  }
}

// ---- logsumexp -------------------------------------------------------------------

/// The shift for a slice whose max is m: m if finite, else 0 (an all -inf slice then
/// sums exp(-inf) = 0 and gives log(0) = -inf; a +inf or NaN max propagates).
template <class T>
inline T lse_shift(T m) {
  return std::isfinite(m) ? m : T(0);
}

template <class T>
void lse_kernel(const T* x, T* y, std::size_t outer, std::size_t R, std::size_t inner) {
  if (R == 0) {
    std::fill_n(y, outer * inner, -std::numeric_limits<T>::infinity());
    return;
  }
  if (inner == 1) {
    std::vector<T> scratch(R);
    for (std::size_t o = 0; o < outer; ++o) {
      const T* row = x + o * R;
      const T shift = lse_shift(extreme_row<true>(row, R));
      const T total = vexp_shift_sum(row, scratch.data(), R, shift);
      y[o] = shift + std::log(total);
    }
    return;
  }
  std::vector<T> shift(inner), tmp(inner), acc(inner);
  for (std::size_t o = 0; o < outer; ++o) {
    const T* xo = x + o * R * inner;
    extreme_rows<true>(xo, R, inner, shift.data());
    for (std::size_t j = 0; j < inner; ++j) shift[j] = lse_shift(shift[j]);
    std::fill(acc.begin(), acc.end(), T(0));
    for (std::size_t r = 0; r < R; ++r) {
      const T* row = xo + r * inner;
      for (std::size_t j = 0; j < inner; ++j) tmp[j] = row[j] - shift[j];
      vexp(tmp.data(), tmp.data(), inner);
      for (std::size_t j = 0; j < inner; ++j) acc[j] += tmp[j];
    }
    T* yo = y + o * inner;
    vlog(acc.data(), yo, inner);
    for (std::size_t j = 0; j < inner; ++j) yo[j] += shift[j];
  }
}

// ---- driver ------------------------------------------------------------------------

template <Red K, class T>
void run_kernel(const T* x, T* y, std::size_t outer, std::size_t R, std::size_t inner) {
  if constexpr (K == Red::sum) {
    sum_kernel(x, y, outer, R, inner);
  } else if constexpr (K == Red::max) {
    extreme_kernel<true>(x, y, outer, R, inner);
  } else if constexpr (K == Red::min) {
    extreme_kernel<false>(x, y, outer, R, inner);
  } else if constexpr (std::is_floating_point_v<T>) {
    lse_kernel(x, y, outer, R, inner);
  }
}

/// Reduces x over the axes flagged in `reduce` (same rank as x); keeps them as size 1.
template <Red K>
Tensor reduce_keep(std::string_view op, const Tensor& x, const std::vector<bool>& reduce) {
  const std::size_t r = x.ndim();
  Tensor cur = x;
  Shape shape = x.shape();
  bool any = false;
  // Runs of consecutive reduced axes, innermost first.
  std::size_t q = r;
  while (q > 0) {
    if (!reduce[q - 1]) {
      --q;
      continue;
    }
    std::size_t p = q - 1;
    while (p > 0 && reduce[p - 1]) --p;
    std::size_t outer = 1, R = 1, inner = 1;
    for (std::size_t i = 0; i < p; ++i) outer *= shape[i];
    for (std::size_t i = p; i < q; ++i) R *= shape[i];
    for (std::size_t i = q; i < r; ++i) inner *= shape[i];
    for (std::size_t i = p; i < q; ++i) shape[i] = 1;
    Tensor next = Tensor::empty(shape, x.dtype(), op);
    if (next.size() > 0) {
      dispatch_all(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        run_kernel<K>(cur.data<T>(), next.data<T>(), outer, R, inner);
      });
    }
    cur = next;
    any = true;
    q = p;
  }
  return any ? cur : x.clone();
}

template <Red K>
Tensor reduce(std::string_view op, const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  need_defined(op, x);
  if (K == Red::lse) need_floating(op, x);
  const std::vector<std::size_t> ax = normalize_axes(axes, x.ndim(), op, true);
  std::vector<bool> flag(x.ndim(), false);
  std::size_t count = 1;
  for (std::size_t a : ax) {
    flag[a] = true;
    count *= x.shape()[a];
  }
  if ((K == Red::max || K == Red::min) && count == 0) {
    throw ValueError(s(op) + ": cannot reduce over zero elements (shape " + shape_str(x.shape()) +
                     ", axes " + longs_str(axes) + "): the reduction has no identity");
  }
  Tensor out = reduce_keep<K>(op, x, flag);
  if (keepdims) return out;
  Shape shape;
  for (std::size_t i = 0; i < x.ndim(); ++i) {
    if (!flag[i]) shape.push_back(x.shape()[i]);
  }
  return out.reshape(shape);
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  return reduce<Red::sum>("sum", x, axes, keepdims);
}

Tensor mean(const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  need_floating("mean", x);
  const std::vector<std::size_t> ax = normalize_axes(axes, x.ndim(), "mean", true);
  std::size_t count = 1;
  for (std::size_t a : ax) count *= x.shape()[a];
  Tensor out = reduce<Red::sum>("mean", x, axes, keepdims);
  dispatch_floating(out.dtype(), "mean", [&](auto tag) {
    using T = decltype(tag);
    T* p = out.data<T>();
    const T c = static_cast<T>(count);  // 0 / 0 gives NaN, as numpy's mean of nothing
    for (std::size_t i = 0; i < out.size(); ++i) p[i] /= c;
  });
  return out;
}

Tensor max(const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  return reduce<Red::max>("max", x, axes, keepdims);
}

Tensor min(const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  return reduce<Red::min>("min", x, axes, keepdims);
}

Tensor logsumexp(const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  return reduce<Red::lse>("logsumexp", x, axes, keepdims);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  need_defined("sum_to", x);
  if (!broadcasts_to(shape, x.shape())) {
    throw ShapeError("sum_to: cannot sum shape " + shape_str(x.shape()) + " down to " +
                     shape_str(shape) + " (" + shape_str(shape) + " does not broadcast to " +
                     shape_str(x.shape()) + ")");
  }
  const std::size_t off = x.ndim() - shape.size();
  std::vector<bool> flag(x.ndim(), false);
  bool any = false;
  for (std::size_t i = 0; i < x.ndim(); ++i) {
    flag[i] = i < off || (shape[i - off] == 1 && x.shape()[i] != 1);
    any = any || flag[i];
  }
  if (!any) return x.clone().reshape(shape);
  return reduce_keep<Red::sum>("sum_to", x, flag).reshape(shape);
}

}  // namespace minitrax::core
