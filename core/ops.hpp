// minitrax/core/ops.hpp: plain (non-differentiable) array operations on Tensors.
//
// These are the building blocks of the differentiable ops in autodiff/ (their
// forwards and their VJPs) and of anything else that needs numpy-like work on
// tensors. Every function checks shapes and dtypes first and throws ShapeError /
// DTypeError / ValueError naming the op and the shapes involved. Results are new
// tensors; inputs are never written to.
//
// Element-wise binary ops broadcast as numpy does. Both operands must have the same
// dtype (no silent promotion): mixing float32 and float64 is a DTypeError.
// Comparison ops return int32 tensors of 0/1.
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

// With a scalar (converted to the tensor's dtype).
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
/// acc += x, with x summed down to acc's shape if it is broadcast larger (sum_to);
/// used to accumulate cotangents. Same dtype required.
void add_inplace(Tensor& acc, const Tensor& x);
/// acc = acc * s.
void scale_inplace(Tensor& acc, double s);

// ---- reductions -------------------------------------------------------------
/// Axes may be negative; an empty `axes` means all axes.
Tensor sum(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor max(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
Tensor min(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// log(sum(exp(x))) over axes, max-shifted (any axes; see kernels.hpp for the fast last-axis one).
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
/// Splits into `n` equal pieces.
std::vector<Tensor> split(const Tensor& x, std::size_t n, long axis);
/// x[start:stop] along one axis (negative start/stop count from the end, like Python; step >= 1).
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
/// Largest |a - b| over all elements (shapes must match).
double max_abs_diff(const Tensor& a, const Tensor& b);
/// numpy allclose: |a - b| <= atol + rtol * |b| everywhere, and same shape.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
/// True if every element is finite.
bool all_finite(const Tensor& x);

}  // namespace minitrax::core
