// minitrax/core/ops_internal.hpp: helpers shared by the ops_*.cpp files (not a public API).
//
// Error-message helpers, scalar conversion and the broadcasting plan: the output
// shape and each operand's element strides (0 on broadcast axes), with size-1
// axes dropped and adjacent axes merged wherever every operand allows, so a
// broadcasting loop runs over as few, as long, rows as possible.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::core::ops_internal {

inline std::string s(std::string_view v) {
  return std::string(v);
}
inline std::string dname(DType d) {
  return std::string(dtype_name(d));
}

/// ValueError unless `t` is defined; `what` names the argument ("x", "a", "input 2").
inline void need_defined(std::string_view op, const Tensor& t, std::string_view what = "x") {
  if (!t.defined()) throw ValueError(s(op) + ": " + s(what) + " is an undefined tensor");
}

/// DTypeError unless `t` is float32/float64 (after a defined check).
inline void need_floating(std::string_view op, const Tensor& t) {
  need_defined(op, t);
  check_floating(op, t);
}

/// DTypeError when two operands have different dtypes (no silent promotion).
inline void need_same_dtype(std::string_view op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    throw DTypeError(s(op) + ": mixed dtypes " + dname(a.dtype()) + " and " + dname(b.dtype()) +
                     " (shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                     "); convert one with astype");
  }
}

/// "[1, -2]"
inline std::string longs_str(const std::vector<long>& v) {
  std::string r = "[";
  for (std::size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
  return r + "]";
}

/// Normalises an axis list (negative allowed); duplicates are a ValueError.
/// An empty list means every axis when `empty_is_all`.
inline std::vector<std::size_t> normalize_axes(const std::vector<long>& axes, std::size_t ndim,
                                               std::string_view op, bool empty_is_all) {
  std::vector<std::size_t> out;
  if (axes.empty()) {
    if (empty_is_all) {
      for (std::size_t i = 0; i < ndim; ++i) out.push_back(i);
    }
    return out;
  }
  std::vector<bool> seen(ndim, false);
  for (long a : axes) {
    const std::size_t ax = normalize_axis(a, ndim, op);
    if (seen[ax]) {
      throw ValueError(s(op) + ": axis " + std::to_string(ax) + " appears more than once in " +
                       longs_str(axes));
    }
    seen[ax] = true;
    out.push_back(ax);
  }
  return out;
}

/// `s` converted to T; for an integer T, ValueError unless `s` is a whole number in range.
template <class T>
T scalar_as(double v, std::string_view op, std::string_view what = "scalar") {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    constexpr double lo = static_cast<double>(std::numeric_limits<T>::min());
    // 2^31 or 2^63: the first value past the range (exactly representable as a double).
    constexpr double hi = -lo;
    if (!(std::isfinite(v) && v == std::trunc(v) && v >= lo && v < hi)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.15g", v);
      throw ValueError(s(op) + ": " + s(what) + " " + buf + " is not representable as " +
                       dname(dtype_of<T>()));
    }
    return static_cast<T>(v);
  }
}

/// True if `from` broadcasts to exactly `to` (numpy broadcast_to rules).
inline bool broadcasts_to(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  const std::size_t off = to.size() - from.size();
  for (std::size_t i = 0; i < from.size(); ++i) {
    if (from[i] != 1 && from[i] != to[i + off]) return false;
  }
  return true;
}

/// Contiguous row-major element strides of a shape.
inline std::vector<std::size_t> contiguous_strides(const Shape& shape) {
  std::vector<std::size_t> st(shape.size());
  std::size_t acc = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

/// A broadcasting loop over `out_shape` for N operands (operand shapes must broadcast to it).
/// After construction, `dims` has rank >= 1; the innermost stride of every operand is 0 or 1.
template <std::size_t N>
struct BroadcastPlan {
  std::vector<std::size_t> dims;
  std::vector<std::array<std::size_t, N>> strides;

  BroadcastPlan(const Shape& out_shape, const std::array<const Shape*, N>& shapes) {
    const std::size_t r = out_shape.size();
    std::vector<std::array<std::size_t, N>> st(r);
    for (std::size_t k = 0; k < N; ++k) {
      const Shape& sh = *shapes[k];
      const std::size_t off = r - sh.size();
      std::size_t acc = 1;
      for (std::size_t i = r; i-- > 0;) {
        if (i < off) {
          st[i][k] = 0;
          continue;
        }
        const std::size_t e = sh[i - off];
        st[i][k] = (e == 1) ? 0 : acc;
        acc *= e;
      }
    }
    for (std::size_t i = 0; i < r; ++i) {
      if (out_shape[i] == 1) continue;
      if (!dims.empty()) {
        bool merge = true;
        for (std::size_t k = 0; k < N; ++k) {
          if (strides.back()[k] != st[i][k] * out_shape[i]) merge = false;
        }
        if (merge) {
          dims.back() *= out_shape[i];
          strides.back() = st[i];
          continue;
        }
      }
      dims.push_back(out_shape[i]);
      strides.push_back(st[i]);
    }
    if (dims.empty()) {
      dims.push_back(1);
      strides.push_back({});
    }
  }

  /// Calls f(offsets, n, inner_strides) once per innermost row; offsets are element
  /// offsets of each operand at the start of the row. Does nothing if any extent is 0.
  template <class F>
  void for_each_row(F&& f) const {
    const std::size_t rank = dims.size();
    for (std::size_t d : dims) {
      if (d == 0) return;
    }
    const std::size_t n = dims.back();
    const std::array<std::size_t, N> inner = strides.back();
    std::array<std::size_t, N> off{};
    if (rank == 1) {
      f(off, n, inner);
      return;
    }
    std::vector<std::size_t> idx(rank - 1, 0);
    for (;;) {
      f(off, n, inner);
      std::size_t ax = rank - 1;
      for (;;) {
        if (ax == 0) return;
        --ax;
        if (++idx[ax] < dims[ax]) {
          for (std::size_t k = 0; k < N; ++k) off[k] += strides[ax][k];
          break;
        }
        idx[ax] = 0;
        for (std::size_t k = 0; k < N; ++k) off[k] -= strides[ax][k] * (dims[ax] - 1);
      }
    }
  }
};

}  // namespace minitrax::core::ops_internal
