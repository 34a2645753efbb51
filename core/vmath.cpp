// minitrax/core/vmath.cpp: vectorised exp/log/tanh/sigmoid and row reductions (xsimd).
//
// Every function runs full SIMD batches of the default xsimd architecture (chosen at
// compile time from the compiler flags: sse2 by default, avx512bw with -march=native
// on this project's build machine) and finishes the last partial batch by running the
// same SIMD code on a padded copy, so the result for an element never depends on
// where it sits in the array.
// GCC 12's AVX-512 intrinsics trip false -W(maybe-)uninitialized warnings
// (_mm512_undefined_*, GCC PR 105593, fixed in GCC 13) once xsimd's exp and hadd are
// inlined; the pragmas must come before <immintrin.h> is first included.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "core/vmath.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <xsimd/xsimd.hpp>

namespace minitrax::core {

namespace detail {
// Defined in kernels.cpp next to the static initializer that turns flush-to-zero on.
// Referencing it from here makes the linker pull kernels.o (and so run the initializer)
// into every program that uses vmath, even from a static library.
extern const bool flush_denormals_at_load;
}  // namespace detail

namespace {

[[gnu::used]] const bool* const keep_fp_env_initializer = &detail::flush_denormals_at_load;

template <class T>
using Batch = xsimd::batch<T>;

template <class T>
constexpr std::size_t kWidth = Batch<T>::size;

// Stack buffer for one batch, aligned for load_aligned/store_aligned.
template <class T>
struct alignas(64) Lane {
  T v[kWidth<T>];
};

// y[i] = f(x[i]) for a batch -> batch function f. The tail is padded with `pad` (a
// value for which f is harmless) and computed as one more batch.
template <class T, class F>
inline void map_unary(const T* x, T* y, std::size_t n, T pad, F f) {
  constexpr std::size_t W = kWidth<T>;
  std::size_t i = 0;
  for (; i + W <= n; i += W) {
    f(Batch<T>::load_unaligned(x + i)).store_unaligned(y + i);
  }
  if (i < n) {
    const std::size_t r = n - i;
    Lane<T> buf;
    std::copy_n(x + i, r, buf.v);
    std::fill(buf.v + r, buf.v + W, pad);
    f(Batch<T>::load_aligned(buf.v)).store_aligned(buf.v);
    std::copy_n(buf.v, r, y + i);
  }
}

template <class T>
inline T lane_sum(const Batch<T>& b) {
  return xsimd::hadd(b);
}

template <class T>
inline T lane_max(const Batch<T>& b) {
  Lane<T> buf;
  b.store_aligned(buf.v);
  T m = buf.v[0];
  for (std::size_t j = 1; j < kWidth<T>; ++j) m = buf.v[j] > m ? buf.v[j] : m;
  return m;
}

template <class T>
inline Batch<T> sigmoid_batch(const Batch<T>& x) {
  const Batch<T> one(T(1));
  return one / (one + xsimd::exp(-x));
}

template <class T>
T exp_shift_sum_impl(const T* x, T* y, std::size_t n, T shift) {
  constexpr std::size_t W = kWidth<T>;
  const Batch<T> s(shift);
  Batch<T> acc0(T(0)), acc1(T(0));
  std::size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const Batch<T> e0 = xsimd::exp(Batch<T>::load_unaligned(x + i) - s);
    const Batch<T> e1 = xsimd::exp(Batch<T>::load_unaligned(x + i + W) - s);
    e0.store_unaligned(y + i);
    e1.store_unaligned(y + i + W);
    acc0 += e0;
    acc1 += e1;
  }
  for (; i + W <= n; i += W) {
    const Batch<T> e0 = xsimd::exp(Batch<T>::load_unaligned(x + i) - s);
    e0.store_unaligned(y + i);
    acc0 += e0;
  }
  T total = lane_sum(acc0 + acc1);
  if (i < n) {
    // Padded lanes are computed but never stored or summed (with shift = -inf a pad
    // value would turn into NaN).
    const std::size_t r = n - i;
    Lane<T> buf;
    std::copy_n(x + i, r, buf.v);
    std::fill(buf.v + r, buf.v + W, T(0));
    (xsimd::exp(Batch<T>::load_aligned(buf.v) - s)).store_aligned(buf.v);
    for (std::size_t j = 0; j < r; ++j) {
      y[i + j] = buf.v[j];
      total += buf.v[j];
    }
  }
  return total;
}

template <class T>
T max_impl(const T* x, std::size_t n) {
  constexpr std::size_t W = kWidth<T>;
  std::size_t i = 0;
  T m = -std::numeric_limits<T>::infinity();
  if (n >= W) {
    Batch<T> acc = Batch<T>::load_unaligned(x);
    for (i = W; i + W <= n; i += W) acc = xsimd::max(acc, Batch<T>::load_unaligned(x + i));
    m = lane_max(acc);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <class T>
T sum_impl(const T* x, std::size_t n) {
  constexpr std::size_t W = kWidth<T>;
  Batch<T> acc0(T(0)), acc1(T(0));
  std::size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    acc0 += Batch<T>::load_unaligned(x + i);
    acc1 += Batch<T>::load_unaligned(x + i + W);
  }
  for (; i + W <= n; i += W) acc0 += Batch<T>::load_unaligned(x + i);
  T total = lane_sum(acc0 + acc1);
  for (; i < n; ++i) total += x[i];
  return total;
}

template <class T>
T dot_impl(const T* a, const T* b, std::size_t n) {
  constexpr std::size_t W = kWidth<T>;
  Batch<T> acc0(T(0)), acc1(T(0));
  std::size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    acc0 = xsimd::fma(Batch<T>::load_unaligned(a + i), Batch<T>::load_unaligned(b + i), acc0);
    acc1 =
        xsimd::fma(Batch<T>::load_unaligned(a + i + W), Batch<T>::load_unaligned(b + i + W), acc1);
  }
  for (; i + W <= n; i += W) {
    acc0 = xsimd::fma(Batch<T>::load_unaligned(a + i), Batch<T>::load_unaligned(b + i), acc0);
  }
  T total = lane_sum(acc0 + acc1);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace

void vexp(const float* x, float* y, std::size_t n) {
  map_unary(x, y, n, 0.0f, [](const auto& b) { return xsimd::exp(b); });
}
void vexp(const double* x, double* y, std::size_t n) {
  map_unary(x, y, n, 0.0, [](const auto& b) { return xsimd::exp(b); });
}
void vlog(const float* x, float* y, std::size_t n) {
  map_unary(x, y, n, 1.0f, [](const auto& b) { return xsimd::log(b); });
}
void vlog(const double* x, double* y, std::size_t n) {
  map_unary(x, y, n, 1.0, [](const auto& b) { return xsimd::log(b); });
}
void vtanh(const float* x, float* y, std::size_t n) {
  map_unary(x, y, n, 0.0f, [](const auto& b) { return xsimd::tanh(b); });
}
void vtanh(const double* x, double* y, std::size_t n) {
  map_unary(x, y, n, 0.0, [](const auto& b) { return xsimd::tanh(b); });
}
void vsigmoid(const float* x, float* y, std::size_t n) {
  map_unary(x, y, n, 0.0f, [](const auto& b) { return sigmoid_batch(b); });
}
void vsigmoid(const double* x, double* y, std::size_t n) {
  map_unary(x, y, n, 0.0, [](const auto& b) { return sigmoid_batch(b); });
}
float vexp_shift_sum(const float* x, float* y, std::size_t n, float shift) {
  return exp_shift_sum_impl(x, y, n, shift);
}
double vexp_shift_sum(const double* x, double* y, std::size_t n, double shift) {
  return exp_shift_sum_impl(x, y, n, shift);
}
float vmax(const float* x, std::size_t n) {
  return max_impl(x, n);
}
double vmax(const double* x, std::size_t n) {
  return max_impl(x, n);
}
float vsum(const float* x, std::size_t n) {
  return sum_impl(x, n);
}
double vsum(const double* x, std::size_t n) {
  return sum_impl(x, n);
}
float vdot(const float* a, const float* b, std::size_t n) {
  return dot_impl(a, b, n);
}
double vdot(const double* a, const double* b, std::size_t n) {
  return dot_impl(a, b, n);
}

}  // namespace minitrax::core
