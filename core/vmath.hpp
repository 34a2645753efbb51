/// @file
/// Vectorised element-wise math on raw contiguous arrays.
///
/// SIMD through xsimd (the instruction set is fixed at compile time: SSE2 with the
/// default flags, AVX-512 with -DMINITRAX_NATIVE=ON on an AVX-512 machine). The last
/// partial batch is computed by the same SIMD code on a padded copy, so an element's
/// result does not depend on its position. Out and in may be the same array. These
/// are what core::exp, softmax and friends call in their inner loops.
/// Accuracy (tests/test_kernels.cpp measures it): vexp within a few ulp of the
/// correctly rounded exp over [-100, 80]; results below the smallest normal number
/// are flushed to 0 when flush-to-zero is on (the default, see kernels.hpp).
///
/// @code
/// std::vector<float> x = {0.f, 1.f, 2.f}, y(3);
/// vexp(x.data(), y.data(), x.size());        // y = {1, e, e^2}
/// float total = vsum(y.data(), y.size());    // 1 + e + e^2
/// @endcode
#pragma once

#include <cstddef>

namespace minitrax::core {

/** @{ */
/// y[i] = exp(x[i]) for i < n (float or double).
void vexp(const float* x, float* y, std::size_t n);
void vexp(const double* x, double* y, std::size_t n);
/** @} */
/** @{ */
/// y[i] = log(x[i]) for i < n (-inf at 0, NaN below 0).
void vlog(const float* x, float* y, std::size_t n);
void vlog(const double* x, double* y, std::size_t n);
/** @} */
/** @{ */
/// y[i] = tanh(x[i]) for i < n.
void vtanh(const float* x, float* y, std::size_t n);
void vtanh(const double* x, double* y, std::size_t n);
/** @} */
/** @{ */
/// y[i] = 1 / (1 + exp(-x[i])) for i < n.
void vsigmoid(const float* x, float* y, std::size_t n);
void vsigmoid(const double* x, double* y, std::size_t n);
/** @} */
/** @{ */
/// y[i] = exp(x[i] - shift); returns the sum of y (the inner loop of softmax).
float vexp_shift_sum(const float* x, float* y, std::size_t n, float shift);
double vexp_shift_sum(const double* x, double* y, std::size_t n, double shift);
/** @} */
/** @{ */
/// Largest element (n >= 1). With NaNs in x the result is unspecified (a NaN or the
/// largest of the other elements); softmax and friends still end up NaN (see kernels.cpp).
float vmax(const float* x, std::size_t n);
double vmax(const double* x, std::size_t n);
/** @} */
/** @{ */
/// Sum of the elements (0 for n == 0); SIMD lanes, so the order differs from a plain loop.
float vsum(const float* x, std::size_t n);
double vsum(const double* x, std::size_t n);
/** @} */
/** @{ */
/// Dot product sum(a[i] * b[i]) (0 for n == 0).
float vdot(const float* a, const float* b, std::size_t n);
double vdot(const double* a, const double* b, std::size_t n);
/** @} */

}  // namespace minitrax::core
