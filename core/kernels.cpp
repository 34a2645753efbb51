// minitrax/core/kernels.cpp: row-wise kernels, gathers/scatters, sorts and the
// floating-point environment. (Matrix products are in gemm.cpp.)
//
// Layout conventions: an op "along axis" views the tensor as [outer, n, inner] with
// outer = prod(shape[:axis]), n = shape[axis], inner = prod(shape[axis+1:]); all loops
// run on raw pointers over that view, the innermost loop over contiguous memory.
//
// Special values (documented here, tested in tests/test_kernels.cpp):
//  * softmax / log_softmax of a row that is all -inf is NaN (0/0, as in JAX and
//    PyTorch); logsumexp of such a row is -inf; logsumexp of a row holding +inf is
//    +inf. Any NaN in a row makes that row's results NaN.
//  * argmax treats NaN as the largest value: the first NaN's index is returned (numpy
//    and JAX do the same).
//  * argsort / sort_key_val put NaN keys last (numpy's order), keeping their order.
//  * one_hot gives an all-zero row for an index outside [0, depth) (jax.nn.one_hot).
#include "core/kernels.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(__SSE__)
#include <pmmintrin.h>
#include <xmmintrin.h>
#define MINITRAX_HAVE_MXCSR 1
#else
#define MINITRAX_HAVE_MXCSR 0
#endif

#include "core/vmath.hpp"

namespace minitrax::core {

// ---- the floating-point environment ----------------------------------------------

void set_flush_denormals(bool on) {
#if MINITRAX_HAVE_MXCSR
  // FTZ (bit 15): denormal results become 0. DAZ (bit 6): denormal inputs read as 0.
  const unsigned bits = _MM_FLUSH_ZERO_MASK | _MM_DENORMALS_ZERO_MASK;  // 0x8040
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(on ? (csr | bits) : (csr & ~bits));
#else
  (void)on;  // not x86: a no-op (denormals keep their IEEE meaning)
#endif
}

bool flush_denormals_enabled() {
#if MINITRAX_HAVE_MXCSR
  const unsigned bits = _MM_FLUSH_ZERO_MASK | _MM_DENORMALS_ZERO_MASK;
  return (_mm_getcsr() & bits) == bits;
#else
  return false;
#endif
}

namespace detail {
// Runs when the program (or shared library) is loaded, on the loading thread; threads
// started later inherit the MXCSR of the thread that starts them (Linux copies it).
// gemm.cpp and vmath.cpp take this variable's address, so a static libminitrax.a
// cannot drop this object file while anything that multiplies or exponentiates is used.
extern const bool flush_denormals_at_load;
const bool flush_denormals_at_load = [] {
  set_flush_denormals(true);
#if defined(__GLIBC__)
  // Tensors of tens of MiB (attention scores, activations) are allocated and freed
  // every step. glibc serves blocks above its mmap threshold (32 MiB at most) with
  // fresh mappings, so every step paid ~40,000 page faults zeroing them again
  // (docs/performance.md). Keeping such blocks in the heap, and not trimming it,
  // lets the next step reuse them: a caching allocator at the cost of a few
  // buffers of resident memory.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  return true;
}();
}  // namespace detail

namespace {

// ---- helpers -----------------------------------------------------------------

std::string dt(DType d) {
  return std::string(dtype_name(d));
}

// Rows of the last axis: x viewed as [rows, d].
struct Rows {
  std::size_t rows = 0, d = 0;
};

Rows last_axis_rows(const std::string& op, const Tensor& x) {
  check_floating(op, x);
  if (x.ndim() == 0) {
    throw ShapeError(op + ": needs a tensor of rank >= 1 (it works on the last axis), got shape " +
                     shape_str(x.shape()));
  }
  Rows r;
  r.d = x.shape().back();
  r.rows = shape_size(Shape(x.shape().begin(), x.shape().end() - 1));
  return r;
}

void check_same(const std::string& op, const char* name_a, const Tensor& a, const char* name_b,
                const Tensor& b) {
  if (!b.defined()) throw ValueError(op + ": " + name_b + " is undefined");
  if (a.dtype() != b.dtype()) {
    throw DTypeError(op + ": " + name_a + " is " + dt(a.dtype()) + " but " + name_b + " is " +
                     dt(b.dtype()));
  }
  if (a.shape() != b.shape()) {
    throw ShapeError(op + ": " + name_a + " " + shape_str(a.shape()) + " and " + name_b + " " +
                     shape_str(b.shape()) + " must have the same shape");
  }
}

void check_index_dtype(const std::string& op, const char* what, DType d) {
  if (d != DType::i32 && d != DType::i64) {
    throw DTypeError(op + ": " + what + " must be int32 or int64, got " + dt(d));
  }
}

// The [outer, n, inner] view of `shape` around `axis`.
struct AxisView {
  std::size_t outer = 1, n = 0, inner = 1;
};

AxisView axis_view(const Shape& shape, std::size_t axis) {
  AxisView v;
  for (std::size_t i = 0; i < axis; ++i) v.outer *= shape[i];
  v.n = shape[axis];
  for (std::size_t i = axis + 1; i < shape.size(); ++i) v.inner *= shape[i];
  return v;
}

[[noreturn]] void throw_bad_index(const std::string& op, long long index, std::size_t axis,
                                  std::size_t extent, const Shape& shape) {
  throw ValueError(op + ": index " + std::to_string(index) + " is out of range for axis " +
                   std::to_string(axis) + " of extent " + std::to_string(extent) + " (shape " +
                   shape_str(shape) + ")");
}

// Reads and bounds-checks an index tensor into size_t positions.
std::vector<std::size_t> checked_indices(const std::string& op, const Tensor& indices,
                                         std::size_t axis, std::size_t extent, const Shape& shape) {
  std::vector<std::size_t> out(indices.size());
  dispatch_integer(indices.dtype(), op, [&](auto tag) {
    using I = decltype(tag);
    const I* p = indices.data<I>();
    for (std::size_t i = 0; i < out.size(); ++i) {
      const I v = p[i];
      if (v < 0 || static_cast<std::make_unsigned_t<I>>(v) >= extent) {
        throw_bad_index(op, static_cast<long long>(v), axis, extent, shape);
      }
      out[i] = static_cast<std::size_t>(v);
    }
  });
  return out;
}

// ---- row-wise kernels ----------------------------------------------------------

template <class T>
T row_logsumexp_special(const T* x, std::size_t d, T m) {
  // m is +-inf (or a NaN slipped past vmax): the max-shift cannot be used.
  for (std::size_t j = 0; j < d; ++j) {
    if (std::isnan(x[j])) return std::numeric_limits<T>::quiet_NaN();
  }
  return m;
}

template <class T>
void softmax_rows(const T* x, T* y, std::size_t rows, std::size_t d) {
  if (d == 0) return;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T m = vmax(xr, d);
    const T s = vexp_shift_sum(xr, yr, d, m);
    const T inv = T(1) / s;
    for (std::size_t j = 0; j < d; ++j) yr[j] *= inv;
  }
}

template <class T>
void log_softmax_rows(const T* x, T* y, std::size_t rows, std::size_t d) {
  if (d == 0) return;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T m = vmax(xr, d);
    const T log_s = std::log(vexp_shift_sum(xr, yr, d, m));  // yr is scratch here
    // (x - m) - log s, not x - (m + log s): keeps the precision when |m| is large.
    for (std::size_t j = 0; j < d; ++j) yr[j] = (xr[j] - m) - log_s;
  }
}

template <class T>
void logsumexp_rows(const T* x, T* out, std::size_t rows, std::size_t d, std::vector<T>& scratch) {
  if (d == 0) {
    std::fill_n(out, rows, -std::numeric_limits<T>::infinity());
    return;
  }
  scratch.resize(d);
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T m = vmax(xr, d);
    if (!std::isfinite(m)) {
      out[r] = row_logsumexp_special(xr, d, m);
      continue;
    }
    out[r] = m + std::log(vexp_shift_sum(xr, scratch.data(), d, m));
  }
}

template <class T>
void softmax_backward_rows(const T* y, const T* gy, T* gx, std::size_t rows, std::size_t d) {
  if (d == 0) return;  // [2^40, 0]: no work, and no 2^40 empty iterations
  for (std::size_t r = 0; r < rows; ++r) {
    const T* yr = y + r * d;
    const T* gr = gy + r * d;
    T* out = gx + r * d;
    const T dot = vdot(gr, yr, d);
    for (std::size_t j = 0; j < d; ++j) out[j] = yr[j] * (gr[j] - dot);
  }
}

template <class T>
void log_softmax_backward_rows(const T* y, const T* gy, T* gx, std::size_t rows, std::size_t d) {
  if (d == 0) return;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* yr = y + r * d;
    const T* gr = gy + r * d;
    T* out = gx + r * d;
    const T s = vsum(gr, d);
    vexp(yr, out, d);
    for (std::size_t j = 0; j < d; ++j) out[j] = gr[j] - out[j] * s;
  }
}

template <class T>
void layer_norm_rows(const T* x, const T* scale, const T* bias, T* y, T* mean, T* rstd,
                     std::size_t rows, std::size_t d, T eps) {
  const T inv_d = T(1) / static_cast<T>(d);
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    // Mean and variance of x - x[0] (then of x - mean): for rows far from 0 relative to
    // their spread (x ~ 1000 +- 0.1 in float32) a plain float sum loses digits.
    const T shift = xr[0];
    for (std::size_t j = 0; j < d; ++j) yr[j] = xr[j] - shift;
    const T offset = vsum(yr, d) * inv_d;  // mean - shift
    for (std::size_t j = 0; j < d; ++j) yr[j] -= offset;
    const T mu = shift + offset;
    const T var = vdot(yr, yr, d) * inv_d;
    const T rs = T(1) / std::sqrt(var + eps);
    for (std::size_t j = 0; j < d; ++j) yr[j] = yr[j] * rs * scale[j] + bias[j];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

template <class T>
void layer_norm_backward_rows(const T* x, const T* scale, const T* mean, const T* rstd, const T* dy,
                              T* dx, T* dscale, T* dbias, std::size_t rows, std::size_t d) {
  // xhat = (x - mean) * rstd, g = dy * scale:
  //   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
  //   dscale = sum_rows(dy * xhat), dbias = sum_rows(dy).
  // The parameter gradients are accumulated in double, also for float32 inputs.
  std::vector<T> xhat(d);
  std::vector<double> acc_scale(d, 0.0), acc_bias(d, 0.0);
  const T inv_d = T(1) / static_cast<T>(d);
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T* dyr = dy + r * d;
    T* g = dx + r * d;  // dx's row holds g until the last loop overwrites it
    const T mu = mean[r], rs = rstd[r];
    for (std::size_t j = 0; j < d; ++j) {
      xhat[j] = (xr[j] - mu) * rs;
      g[j] = dyr[j] * scale[j];
    }
    const T mean_g = vsum(g, d) * inv_d;
    const T mean_gx = vdot(g, xhat.data(), d) * inv_d;
    for (std::size_t j = 0; j < d; ++j) {
      g[j] = rs * (g[j] - mean_g - xhat[j] * mean_gx);
      acc_scale[j] += static_cast<double>(dyr[j]) * static_cast<double>(xhat[j]);
      acc_bias[j] += static_cast<double>(dyr[j]);
    }
  }
  for (std::size_t j = 0; j < d; ++j) {
    dscale[j] = static_cast<T>(acc_scale[j]);
    dbias[j] = static_cast<T>(acc_bias[j]);
  }
}

// ---- gathers and scatters -------------------------------------------------------

template <class T>
void gather_blocks(const T* x, T* out, const std::vector<std::size_t>& idx, const AxisView& v) {
  const std::size_t ni = idx.size();
  if (v.inner == 1) {
    for (std::size_t o = 0; o < v.outer; ++o) {
      const T* xo = x + o * v.n;
      T* oo = out + o * ni;
      for (std::size_t i = 0; i < ni; ++i) oo[i] = xo[idx[i]];
    }
    return;
  }
  const std::size_t bytes = v.inner * sizeof(T);
  for (std::size_t o = 0; o < v.outer; ++o) {
    for (std::size_t i = 0; i < ni; ++i) {
      std::memcpy(out + (o * ni + i) * v.inner, x + (o * v.n + idx[i]) * v.inner, bytes);
    }
  }
}

template <class T>
void scatter_add_blocks(const T* g, T* out, const std::vector<std::size_t>& idx,
                        const AxisView& v) {
  const std::size_t ni = idx.size();
  for (std::size_t o = 0; o < v.outer; ++o) {
    for (std::size_t i = 0; i < ni; ++i) {
      const T* src = g + (o * ni + i) * v.inner;
      T* dst = out + (o * v.n + idx[i]) * v.inner;
      for (std::size_t j = 0; j < v.inner; ++j) dst[j] += src[j];
    }
  }
}

// take_along_axis and its scatter: out/g and indices are [outer, ni, inner]; x/result
// are [outer, n, inner]. `Scatter` adds g into the result instead of gathering.
template <bool Scatter, class TBig, class TSmall, class I>
void along_axis(const std::string& op, TBig* big, TSmall* small, const I* idx, const AxisView& v,
                std::size_t ni, std::size_t axis, const Shape& big_shape) {
  for (std::size_t o = 0; o < v.outer; ++o) {
    for (std::size_t i = 0; i < ni; ++i) {
      const std::size_t base_small = (o * ni + i) * v.inner;
      for (std::size_t j = 0; j < v.inner; ++j) {
        const I k = idx[base_small + j];
        if (k < 0 || static_cast<std::make_unsigned_t<I>>(k) >= v.n) {
          throw_bad_index(op, static_cast<long long>(k), axis, v.n, big_shape);
        }
        const std::size_t pos = (o * v.n + static_cast<std::size_t>(k)) * v.inner + j;
        if constexpr (Scatter) {
          big[pos] += small[base_small + j];
        } else {
          small[base_small + j] = big[pos];
        }
      }
    }
  }
}

// ---- sorts ------------------------------------------------------------------------

// A strict weak order with NaNs after every number (and equal to each other).
template <class K>
struct KeyLess {
  bool operator()(K a, K b) const {
    if constexpr (std::is_floating_point_v<K>) {
      return a < b || (std::isnan(b) && !std::isnan(a));
    } else {
      return a < b;
    }
  }
};

// Sorts every line along the axis; calls emit(o, j, perm) with perm[i] = source
// position of the i-th smallest key (ties in their original order).
template <class K, class Emit>
void sort_lines(const K* keys, const AxisView& v, Emit&& emit) {
  // (key, position) pairs ordered by key, then position: std::sort on these gives
  // exactly the stable order, without stable_sort's per-call buffer allocation.
  std::vector<std::pair<K, std::size_t>> line(v.n);
  std::vector<std::size_t> perm(v.n);
  const KeyLess<K> less;
  for (std::size_t o = 0; o < v.outer; ++o) {
    for (std::size_t j = 0; j < v.inner; ++j) {
      const K* base = keys + o * v.n * v.inner + j;
      for (std::size_t i = 0; i < v.n; ++i) line[i] = {base[i * v.inner], i};
      std::sort(line.begin(), line.end(), [&](const auto& a, const auto& b) {
        if (less(a.first, b.first)) return true;
        if (less(b.first, a.first)) return false;
        return a.second < b.second;
      });
      for (std::size_t i = 0; i < v.n; ++i) perm[i] = line[i].second;
      emit(o, j, perm);
    }
  }
}

template <class T, class I>
void argmax_lines(const T* x, I* out, const AxisView& v) {
  const auto better = [](T cand, T best) {
    if constexpr (std::is_floating_point_v<T>) {
      return cand > best || (std::isnan(cand) && !std::isnan(best));
    } else {
      return cand > best;
    }
  };
  if (v.inner == 1) {
    for (std::size_t o = 0; o < v.outer; ++o) {
      const T* xo = x + o * v.n;
      std::size_t bi = 0;
      T bv = xo[0];
      for (std::size_t i = 1; i < v.n; ++i) {
        if (better(xo[i], bv)) {
          bv = xo[i];
          bi = i;
        }
      }
      out[o] = static_cast<I>(bi);
    }
    return;
  }
  std::vector<T> best(v.inner);
  for (std::size_t o = 0; o < v.outer; ++o) {
    const T* xo = x + o * v.n * v.inner;
    I* oo = out + o * v.inner;
    std::copy_n(xo, v.inner, best.data());
    std::fill_n(oo, v.inner, I(0));
    for (std::size_t i = 1; i < v.n; ++i) {
      const T* xi = xo + i * v.inner;
      for (std::size_t j = 0; j < v.inner; ++j) {
        if (better(xi[j], best[j])) {
          best[j] = xi[j];
          oo[j] = static_cast<I>(i);
        }
      }
    }
  }
}

Shape without_axis(const Shape& s, std::size_t axis) {
  Shape out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != axis) out.push_back(s[i]);
  }
  return out;
}

std::size_t checked_axis(const std::string& op, const Tensor& x, long axis) {
  if (!x.defined()) throw ValueError(op + ": the tensor is undefined");
  if (x.ndim() == 0) {
    throw ShapeError(op + ": needs a tensor of rank >= 1, got a scalar (shape [])");
  }
  return normalize_axis(axis, x.ndim(), op);
}

}  // namespace

// ---- row-wise kernels: public entry points -------------------------------------------

Tensor softmax(const Tensor& x) {
  const std::string op = "softmax";
  const Rows r = last_axis_rows(op, x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), op);
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_rows(x.data<T>(), y.data<T>(), r.rows, r.d);
  });
  return y;
}

Tensor log_softmax(const Tensor& x) {
  const std::string op = "log_softmax";
  const Rows r = last_axis_rows(op, x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), op);
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    log_softmax_rows(x.data<T>(), y.data<T>(), r.rows, r.d);
  });
  return y;
}

Tensor logsumexp_last(const Tensor& x, bool keepdims) {
  const std::string op = "logsumexp_last";
  const Rows r = last_axis_rows(op, x);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  if (keepdims) out_shape.push_back(1);
  Tensor out = Tensor::empty(out_shape, x.dtype(), op);
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> scratch;
    logsumexp_rows(x.data<T>(), out.data<T>(), r.rows, r.d, scratch);
  });
  return out;
}

Tensor softmax_backward(const Tensor& y, const Tensor& gy) {
  const std::string op = "softmax_backward";
  const Rows r = last_axis_rows(op, y);
  check_same(op, "y", y, "gy", gy);
  Tensor gx = Tensor::empty(y.shape(), y.dtype(), op);
  dispatch_floating(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_rows(y.data<T>(), gy.data<T>(), gx.data<T>(), r.rows, r.d);
  });
  return gx;
}

Tensor log_softmax_backward(const Tensor& y, const Tensor& gy) {
  const std::string op = "log_softmax_backward";
  const Rows r = last_axis_rows(op, y);
  check_same(op, "y", y, "gy", gy);
  Tensor gx = Tensor::empty(y.shape(), y.dtype(), op);
  dispatch_floating(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    log_softmax_backward_rows(y.data<T>(), gy.data<T>(), gx.data<T>(), r.rows, r.d);
  });
  return gx;
}

LayerNormResult layer_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, double eps) {
  const std::string op = "layer_norm";
  const Rows r = last_axis_rows(op, x);
  if (r.d == 0) throw ShapeError(op + ": the last axis of x " + shape_str(x.shape()) + " is empty");
  if (!(eps >= 0.0)) throw ValueError(op + ": eps must be >= 0, got " + std::to_string(eps));
  const Shape param{r.d};
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"scale", &scale},
                                std::pair<const char*, const Tensor*>{"bias", &bias}}) {
    if (!t->defined()) throw ValueError(op + ": " + name + " is undefined");
    if (t->dtype() != x.dtype()) {
      throw DTypeError(op + ": x is " + dt(x.dtype()) + " but " + name + " is " + dt(t->dtype()));
    }
    if (t->shape() != param) {
      throw ShapeError(op + ": " + name + " must have shape " + shape_str(param) + " for x " +
                       shape_str(x.shape()) + ", got " + shape_str(t->shape()));
    }
  }
  const Shape row_shape(x.shape().begin(), x.shape().end() - 1);
  LayerNormResult res{Tensor::empty(x.shape(), x.dtype(), op),
                      Tensor::empty(row_shape, x.dtype(), op),
                      Tensor::empty(row_shape, x.dtype(), op)};
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    layer_norm_rows(x.data<T>(), scale.data<T>(), bias.data<T>(), res.y.data<T>(),
                    res.mean.data<T>(), res.rstd.data<T>(), r.rows, r.d, static_cast<T>(eps));
  });
  return res;
}

LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& scale, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& dy) {
  const std::string op = "layer_norm_backward";
  const Rows r = last_axis_rows(op, x);
  if (r.d == 0) throw ShapeError(op + ": the last axis of x " + shape_str(x.shape()) + " is empty");
  check_same(op, "x", x, "dy", dy);
  const Shape row_shape(x.shape().begin(), x.shape().end() - 1);
  const Shape param{r.d};
  const std::pair<const char*, const Tensor*> checks[] = {
      {"scale", &scale}, {"mean", &mean}, {"rstd", &rstd}};
  for (const auto& [name, t] : checks) {
    if (!t->defined()) throw ValueError(op + ": " + name + " is undefined");
    if (t->dtype() != x.dtype()) {
      throw DTypeError(op + ": x is " + dt(x.dtype()) + " but " + name + " is " + dt(t->dtype()));
    }
    const Shape& want = t == &scale ? param : row_shape;
    if (t->shape() != want) {
      throw ShapeError(op + ": " + name + " must have shape " + shape_str(want) + " for x " +
                       shape_str(x.shape()) + ", got " + shape_str(t->shape()));
    }
  }
  LayerNormGrads g{Tensor::empty(x.shape(), x.dtype(), op), Tensor::empty(param, x.dtype(), op),
                   Tensor::empty(param, x.dtype(), op)};
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    layer_norm_backward_rows(x.data<T>(), scale.data<T>(), mean.data<T>(), rstd.data<T>(),
                             dy.data<T>(), g.dx.data<T>(), g.dscale.data<T>(), g.dbias.data<T>(),
                             r.rows, r.d);
  });
  return g;
}

// ---- gathers and scatters: public entry points --------------------------------------

Tensor take(const Tensor& x, const Tensor& indices, long axis) {
  const std::string op = "take";
  const std::size_t ax = checked_axis(op, x, axis);
  if (!indices.defined()) throw ValueError(op + ": indices are undefined");
  check_index_dtype(op, "indices", indices.dtype());
  const AxisView v = axis_view(x.shape(), ax);
  const std::vector<std::size_t> idx = checked_indices(op, indices, ax, v.n, x.shape());
  Shape out_shape(x.shape().begin(), x.shape().begin() + static_cast<long>(ax));
  out_shape.insert(out_shape.end(), indices.shape().begin(), indices.shape().end());
  out_shape.insert(out_shape.end(), x.shape().begin() + static_cast<long>(ax) + 1, x.shape().end());
  Tensor out = Tensor::empty(out_shape, x.dtype(), op);
  // An empty result has nothing to copy (and [2^40, 0] would loop 2^40 times over nothing).
  if (out.size() == 0) return out;
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gather_blocks(x.data<T>(), out.data<T>(), idx, v);
  });
  return out;
}

Tensor take_backward(const Tensor& g, const Tensor& indices, const Shape& shape, long axis) {
  const std::string op = "take_backward";
  if (!g.defined()) throw ValueError(op + ": g is undefined");
  if (shape.empty()) throw ShapeError(op + ": the target shape must have rank >= 1, got []");
  const std::size_t ax = normalize_axis(axis, shape.size(), op);
  if (!indices.defined()) throw ValueError(op + ": indices are undefined");
  check_index_dtype(op, "indices", indices.dtype());
  Shape want(shape.begin(), shape.begin() + static_cast<long>(ax));
  want.insert(want.end(), indices.shape().begin(), indices.shape().end());
  want.insert(want.end(), shape.begin() + static_cast<long>(ax) + 1, shape.end());
  check_shape(op, want, g.shape());
  const AxisView v = axis_view(shape, ax);
  const std::vector<std::size_t> idx = checked_indices(op, indices, ax, v.n, shape);
  Tensor out = Tensor::zeros(shape, g.dtype(), op);
  if (g.size() == 0) return out;
  dispatch_all(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    scatter_add_blocks(g.data<T>(), out.data<T>(), idx, v);
  });
  return out;
}

namespace {
void check_along_axis_shapes(const std::string& op, const Shape& big, const Shape& idx,
                             std::size_t ax, const char* big_name) {
  bool ok = big.size() == idx.size();
  for (std::size_t i = 0; ok && i < big.size(); ++i) ok = i == ax || big[i] == idx[i];
  if (!ok) {
    throw ShapeError(op + ": indices " + shape_str(idx) + " must have the shape of " + big_name +
                     " " + shape_str(big) + " on every axis but " + std::to_string(ax));
  }
}
}  // namespace

Tensor take_along_axis(const Tensor& x, const Tensor& indices, long axis) {
  const std::string op = "take_along_axis";
  const std::size_t ax = checked_axis(op, x, axis);
  if (!indices.defined()) throw ValueError(op + ": indices are undefined");
  check_index_dtype(op, "indices", indices.dtype());
  check_along_axis_shapes(op, x.shape(), indices.shape(), ax, "x");
  const AxisView v = axis_view(x.shape(), ax);
  Tensor out = Tensor::empty(indices.shape(), x.dtype(), op);
  if (out.size() == 0) return out;
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_integer(indices.dtype(), op, [&](auto itag) {
      using I = decltype(itag);
      along_axis<false>(op, x.data<T>(), out.data<T>(), indices.data<I>(), v, indices.shape()[ax],
                        ax, x.shape());
    });
  });
  return out;
}

Tensor take_along_axis_backward(const Tensor& g, const Tensor& indices, const Shape& shape,
                                long axis) {
  const std::string op = "take_along_axis_backward";
  if (!g.defined()) throw ValueError(op + ": g is undefined");
  if (shape.empty()) throw ShapeError(op + ": the target shape must have rank >= 1, got []");
  const std::size_t ax = normalize_axis(axis, shape.size(), op);
  if (!indices.defined()) throw ValueError(op + ": indices are undefined");
  check_index_dtype(op, "indices", indices.dtype());
  check_along_axis_shapes(op, shape, indices.shape(), ax, "the target");
  check_shape(op, indices.shape(), g.shape());
  const AxisView v = axis_view(shape, ax);
  Tensor out = Tensor::zeros(shape, g.dtype(), op);
  if (g.size() == 0) return out;
  dispatch_all(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_integer(indices.dtype(), op, [&](auto itag) {
      using I = decltype(itag);
      along_axis<true>(op, out.data<T>(), g.data<T>(), indices.data<I>(), v, indices.shape()[ax],
                       ax, shape);
    });
  });
  return out;
}

// ---- sorts: public entry points ----------------------------------------------------

Tensor argsort(const Tensor& keys, long axis, DType index_dtype) {
  const std::string op = "argsort";
  const std::size_t ax = checked_axis(op, keys, axis);
  check_index_dtype(op, "index_dtype", index_dtype);
  const AxisView v = axis_view(keys.shape(), ax);
  Tensor out = Tensor::empty(keys.shape(), index_dtype, op);
  // Nothing to sort; and a line buffer of the axis's extent ([2^40, 0] along axis 0)
  // would be allocated for nothing.
  if (out.size() == 0) return out;
  dispatch_all(keys.dtype(), [&](auto ktag) {
    using K = decltype(ktag);
    dispatch_integer(index_dtype, op, [&](auto itag) {
      using I = decltype(itag);
      I* po = out.data<I>();
      sort_lines(keys.data<K>(), v,
                 [&](std::size_t o, std::size_t j, const std::vector<std::size_t>& perm) {
                   I* base = po + o * v.n * v.inner + j;
                   for (std::size_t i = 0; i < v.n; ++i)
                     base[i * v.inner] = static_cast<I>(perm[i]);
                 });
    });
  });
  return out;
}

std::pair<Tensor, Tensor> sort_key_val(const Tensor& keys, const Tensor& values, long axis) {
  const std::string op = "sort_key_val";
  const std::size_t ax = checked_axis(op, keys, axis);
  if (!values.defined()) throw ValueError(op + ": values are undefined");
  if (keys.shape() != values.shape()) {
    throw ShapeError(op + ": keys " + shape_str(keys.shape()) + " and values " +
                     shape_str(values.shape()) + " must have the same shape");
  }
  const AxisView v = axis_view(keys.shape(), ax);
  Tensor sk = Tensor::empty(keys.shape(), keys.dtype(), op);
  Tensor sv = Tensor::empty(values.shape(), values.dtype(), op);
  if (sk.size() == 0) return {sk, sv};
  dispatch_all(keys.dtype(), [&](auto ktag) {
    using K = decltype(ktag);
    dispatch_all(values.dtype(), [&](auto vtag) {
      using V = decltype(vtag);
      const K* pk = keys.data<K>();
      const V* pv = values.data<V>();
      K* ok = sk.data<K>();
      V* ov = sv.data<V>();
      sort_lines(pk, v, [&](std::size_t o, std::size_t j, const std::vector<std::size_t>& perm) {
        const std::size_t base = o * v.n * v.inner + j;
        for (std::size_t i = 0; i < v.n; ++i) {
          ok[base + i * v.inner] = pk[base + perm[i] * v.inner];
          ov[base + i * v.inner] = pv[base + perm[i] * v.inner];
        }
      });
    });
  });
  return {sk, sv};
}

Tensor argmax(const Tensor& x, long axis, DType index_dtype) {
  const std::string op = "argmax";
  const std::size_t ax = checked_axis(op, x, axis);
  check_index_dtype(op, "index_dtype", index_dtype);
  const AxisView v = axis_view(x.shape(), ax);
  if (v.n == 0) {
    throw ValueError(op + ": axis " + std::to_string(ax) + " of shape " + shape_str(x.shape()) +
                     " is empty (no maximum)");
  }
  Tensor out = Tensor::empty(without_axis(x.shape(), ax), index_dtype, op);
  if (out.size() == 0) return out;  // e.g. [2^40, 0] along axis 0: no lines to scan
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_integer(index_dtype, op, [&](auto itag) {
      using I = decltype(itag);
      argmax_lines(x.data<T>(), out.data<I>(), v);
    });
  });
  return out;
}

Tensor one_hot(const Tensor& indices, std::size_t depth, DType dtype) {
  const std::string op = "one_hot";
  if (!indices.defined()) throw ValueError(op + ": indices are undefined");
  check_index_dtype(op, "indices", indices.dtype());
  Shape out_shape = indices.shape();
  out_shape.push_back(depth);
  Tensor out = Tensor::zeros(out_shape, dtype, op);
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* po = out.data<T>();
    dispatch_integer(indices.dtype(), op, [&](auto itag) {
      using I = decltype(itag);
      const I* pi = indices.data<I>();
      for (std::size_t i = 0; i < indices.size(); ++i) {
        const I c = pi[i];
        if (c >= 0 && static_cast<std::make_unsigned_t<I>>(c) < depth) {
          po[i * depth + static_cast<std::size_t>(c)] = T(1);
        }
      }
    });
  });
  return out;
}

}  // namespace minitrax::core
