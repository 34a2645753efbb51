// minitrax/core/ops.hpp: plain (non-differentiable) array operations on Tensors.
//
// These are the building blocks of the differentiable ops in autodiff/ (their
// forwards and their VJPs) and of anything else that needs numpy-like work on
// tensors. Every function checks shapes and dtypes first and throws ShapeError /
// DTypeError / ValueError naming the op and the shapes involved. Results are new
// tensors with their own storage, never sharing an input's buffer (even when nothing
// changes: expand_dims, squeeze, broadcast_to or sum_to to the same shape copy; use
// Tensor::reshape for a view); inputs are never written to. Undefined (default-
// constructed) inputs are a ValueError.
//
// Element-wise binary ops broadcast as numpy does. Both operands must have the same
// dtype (no silent promotion): mixing float32 and float64 is a DTypeError.
// Comparison ops return int32 tensors of 0/1. Integer add/sub/mul/neg/abs wrap
// around on overflow as numpy's do (no undefined behaviour); div and pow need float
// tensors (DTypeError for ints: cast with astype). maximum/minimum propagate NaN.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::core {

// ---- broadcasting ------------------------------------------------------------
/// numpy's broadcast of two shapes; ShapeError naming `op` and both shapes if they don't fit.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op = "broadcast");
/// `x` broadcast (copied) to `shape`.
Tensor broadcast_to(const Tensor& x, const Shape& shape);
/// Sums `x` down to `shape`: the inverse of broadcasting (used by every broadcasting VJP).
/// `shape` must broadcast to x's shape.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- element-wise, binary (broadcasting) --------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
/// Comparisons: int32 0/1.
Tensor equal_to(const Tensor& a, const Tensor& b);
Tensor less(const Tensor& a, const Tensor& b);
Tensor less_equal(const Tensor& a, const Tensor& b);
Tensor greater(const Tensor& a, const Tensor& b);
Tensor greater_equal(const Tensor& a, const Tensor& b);
/// `cond` (any dtype, nonzero = true) picks from a or b; all three broadcast.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// With a scalar (converted to the tensor's dtype; for an int tensor the scalar must be
// a whole number in the dtype's range, else ValueError). pow needs a float tensor.
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double exponent);

// ---- element-wise, unary (float32/float64 unless said) ---------------------
Tensor neg(const Tensor& x);  // any dtype
Tensor abs(const Tensor& x);  // any dtype
Tensor sign(const Tensor& x);
Tensor square(const Tensor& x);
Tensor exp(const Tensor& x);  // vectorised (core/vmath.hpp)
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor erf(const Tensor& x);
Tensor relu(const Tensor& x);

// ---- in place (the caller owns `acc`) ---------------------------------------
/// acc += x, with x summed down to acc's shape if it is broadcast larger (sum_to), or
/// broadcast over acc if it is smaller; used to accumulate cotangents. Same dtype
/// required; any other shape pair is a ShapeError.
void add_inplace(Tensor& acc, const Tensor& x);
/// acc = acc * s (for an int acc, s must be a whole number, as for mul(a, s)).
void scale_inplace(Tensor& acc, double s);

// ---- reductions -------------------------------------------------------------
/// Axes may be negative; an empty `axes` means all axes; a repeated axis is a ValueError.
/// sum keeps the dtype (int32 stays int32, wrapping on overflow); max/min take any
/// dtype and propagate NaN; mean and logsumexp need float tensors (mean of an int
/// tensor is a DTypeError: cast first). Over zero elements: sum is 0, mean NaN,
/// logsumexp -inf, and max/min a ValueError.
Tensor sum(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor max(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor min(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// log(sum(exp(x))) over axes, max-shifted (any axes; see kernels.hpp for the fast last-axis one).
/// A slice of all -inf gives -inf; a +inf gives +inf; a NaN gives NaN.
Tensor logsumexp(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);

// ---- shape and layout ------------------------------------------------------
/// Permutes axes (numpy transpose); an empty `perm` reverses them. Copies.
Tensor transpose(const Tensor& x, const std::vector<std::size_t>& perm = {});
/// Swaps the last two axes (a common special case; copies).
Tensor swap_last_two(const Tensor& x);
Tensor expand_dims(const Tensor& x, long axis);
/// Removes the given size-1 axes (all size-1 axes if empty).
Tensor squeeze(const Tensor& x, const std::vector<long>& axes = {});
Tensor concatenate(const std::vector<Tensor>& xs, long axis);
/// Splits along `axis` into pieces of the given sizes (they must add up to the extent).
std::vector<Tensor> split(const Tensor& x, const std::vector<std::size_t>& sizes, long axis);
/// Splits into `n` equal pieces (ShapeError if the extent is not a multiple of n).
std::vector<Tensor> split(const Tensor& x, std::size_t n, long axis);
/// x[start:stop:step] along one axis (Python semantics: negative start/stop count from the
/// end, then both are clamped to the extent; step >= 1, a step <= 0 is a ValueError).
Tensor slice(const Tensor& x, long axis, long start, long stop, long step = 1);
/// The VJP of `slice`: zeros of `shape` with `src` written into x[start:stop:step] along `axis`.
Tensor slice_backward(const Tensor& src, const Shape& shape, long axis, long start, long stop,
                      long step = 1);
/// Pads with `value`: pads[i] = (before, after) for axis i (one pair per axis).
Tensor pad(const Tensor& x, const std::vector<std::pair<std::size_t, std::size_t>>& pads,
           double value = 0.0);
/// numpy roll along one axis (elements shifted off one end come back at the other).
Tensor roll(const Tensor& x, long shift, long axis);

// ---- comparison helpers (for tests and checks) --------------------------------
/// Largest |a - b| over all elements (shapes must match; dtypes may differ, compared as
/// double). Equal elements (also equal infinities) differ by 0; a NaN gives NaN.
double max_abs_diff(const Tensor& a, const Tensor& b);
/// numpy allclose: |a - b| <= atol + rtol * |b| everywhere, and same shape (false, not an
/// error, if the shapes differ). Infinities are close only to themselves, NaN to nothing.
/// Dtypes may differ (compared as double).
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
/// True if every element is finite.
bool all_finite(const Tensor& x);

}  // namespace minitrax::core
