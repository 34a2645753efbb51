/// @file
/// Plain (non-differentiable) array operations on Tensors, numpy-style.
///
/// These are the building blocks of the differentiable ops in autodiff/ (their
/// forwards and their VJPs) and of anything else that needs numpy-like work on
/// tensors. Every function checks shapes and dtypes first and throws ShapeError /
/// DTypeError / ValueError naming the op and the shapes involved. Results are new
/// tensors with their own storage, never sharing an input's buffer (even when nothing
/// changes: expand_dims, squeeze, broadcast_to or sum_to to the same shape copy; use
/// Tensor::reshape for a view); inputs are never written to. Undefined (default-
/// constructed) inputs are a ValueError.
///
/// Element-wise binary ops broadcast as numpy does. Both operands must have the same
/// dtype (no silent promotion): mixing float32 and float64 is a DTypeError.
/// Comparison ops return int32 tensors of 0/1. Integer add/sub/mul/neg/abs wrap
/// around on overflow as numpy's do (no undefined behaviour); div and pow need float
/// tensors (DTypeError for ints: cast with astype). maximum/minimum propagate NaN.
///
/// @code
/// Tensor a = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
/// Tensor b = Tensor::from<float>({3}, {10, 20, 30});
/// Tensor c = core::add(a, b);                  // [2, 3]: b broadcast over the rows
/// Tensor s = core::sum(c, {-1});               // [2]: 66, 75
/// Tensor m = core::mean(c, {0}, true);         // [1, 3]
/// Tensor t = core::transpose(a);               // [3, 2]
/// Tensor p = core::pad(a, {{0, 0}, {1, 1}});   // [2, 5], zeros at both ends of each row
/// @endcode
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::core {

// ---- broadcasting ------------------------------------------------------------
/// numpy's broadcast of two shapes; ShapeError naming `op` and both shapes if they don't fit.
/// `broadcast_shapes({2, 1, 3}, {4, 1}) == Shape{2, 4, 3}`.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op = "broadcast");
/// `x` broadcast (copied) to `shape`, as numpy.broadcast_to: x's shape must broadcast to
/// `shape` (a [3] tensor to [2, 3] repeats the row), ShapeError otherwise.
Tensor broadcast_to(const Tensor& x, const Shape& shape);
/// Sums `x` down to `shape`: the inverse of broadcasting (used by every broadcasting VJP).
/// `shape` must broadcast to x's shape: `sum_to` of a [2, 3] tensor to {3} sums the rows,
/// to {2, 1} sums each row.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- element-wise, binary (broadcasting) --------------------------------------
/// a + b element-wise; the result has the broadcast shape of a and b, and their dtype.
Tensor add(const Tensor& a, const Tensor& b);
/// a - b element-wise (broadcasting).
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b element-wise (broadcasting).
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b element-wise (broadcasting); float tensors only (IEEE: x / 0 is inf or NaN).
Tensor div(const Tensor& a, const Tensor& b);
/// a raised to the power b element-wise (broadcasting); float tensors only.
Tensor pow(const Tensor& a, const Tensor& b);
/// The larger of a and b element-wise (broadcasting); NaN if either is NaN.
Tensor maximum(const Tensor& a, const Tensor& b);
/// The smaller of a and b element-wise (broadcasting); NaN if either is NaN.
Tensor minimum(const Tensor& a, const Tensor& b);
/// a == b element-wise (broadcasting), as an int32 tensor of 0/1.
Tensor equal_to(const Tensor& a, const Tensor& b);
/// a < b element-wise (broadcasting), as an int32 tensor of 0/1.
Tensor less(const Tensor& a, const Tensor& b);
/// a <= b element-wise (broadcasting), as an int32 tensor of 0/1.
Tensor less_equal(const Tensor& a, const Tensor& b);
/// a > b element-wise (broadcasting), as an int32 tensor of 0/1.
Tensor greater(const Tensor& a, const Tensor& b);
/// a >= b element-wise (broadcasting), as an int32 tensor of 0/1.
Tensor greater_equal(const Tensor& a, const Tensor& b);
/// `cond` (any dtype, nonzero = true) picks from a or b; all three broadcast. a and b
/// have the same dtype, which the result keeps; its shape is the broadcast of all three.
/// `where(mask, x, Tensor::full({}, -1e9))` masks attention logits.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// With a scalar (converted to the tensor's dtype; for an int tensor the scalar must be
// a whole number in the dtype's range, else ValueError). pow needs a float tensor.
/// a + s element-wise, s converted to a's dtype (for an int tensor a whole number in
/// range, else ValueError); same shape and dtype as a.
Tensor add(const Tensor& a, double s);
/// a * s element-wise, s converted to a's dtype (as for add); same shape and dtype as a.
Tensor mul(const Tensor& a, double s);
/// a raised to a scalar power element-wise; a must be a float tensor. `pow(x, 2.0)`.
Tensor pow(const Tensor& a, double exponent);

// ---- element-wise, unary (float32/float64 unless said) ---------------------
// Each returns a tensor of x's shape and dtype.
/// -x element-wise; any dtype (ints wrap around).
Tensor neg(const Tensor& x);  // any dtype
/// |x| element-wise; any dtype (ints wrap around).
Tensor abs(const Tensor& x);  // any dtype
/// -1, 0 or 1 by the sign of x, element-wise (NaN stays NaN).
Tensor sign(const Tensor& x);
/// x * x element-wise.
Tensor square(const Tensor& x);
/// e^x element-wise, vectorised (core/vmath.hpp).
Tensor exp(const Tensor& x);  // vectorised (core/vmath.hpp)
/// Natural logarithm element-wise (-inf at 0, NaN below 0).
Tensor log(const Tensor& x);
/// Square root element-wise (NaN below 0).
Tensor sqrt(const Tensor& x);
/// 1 / sqrt(x) element-wise (inf at 0).
Tensor rsqrt(const Tensor& x);
/// Hyperbolic tangent element-wise.
Tensor tanh(const Tensor& x);
/// The logistic function 1 / (1 + e^-x) element-wise.
Tensor sigmoid(const Tensor& x);
/// The error function element-wise (as std::erf).
Tensor erf(const Tensor& x);
/// max(x, 0) element-wise.
Tensor relu(const Tensor& x);

// ---- in place (the caller owns `acc`) ---------------------------------------
/// acc += x, with x summed down to acc's shape if it is broadcast larger (sum_to), or
/// broadcast over acc if it is smaller; used to accumulate cotangents. Same dtype
/// required; any other shape pair is a ShapeError.
void add_inplace(Tensor& acc, const Tensor& x);
/// acc = acc * s in place (for an int acc, s must be a whole number, as for mul(a, s)).
void scale_inplace(Tensor& acc, double s);

// ---- reductions -------------------------------------------------------------
// Axes may be negative; an empty `axes` means all axes; a repeated axis is a ValueError.
// sum keeps the dtype (int32 stays int32, wrapping on overflow); max/min take any
// dtype and propagate NaN; mean and logsumexp need float tensors (mean of an int
// tensor is a DTypeError: cast first). Over zero elements: sum is 0, mean NaN,
// logsumexp -inf, and max/min a ValueError.
/// Sum over `axes` (negative allowed; empty = all axes; a repeated axis is a ValueError).
/// The reduced axes are dropped, or kept as 1 with `keepdims`: a [2, 3, 4] tensor summed
/// over {-1} is [2, 3] ([2, 3, 1] with keepdims); over {} it is a scalar. Keeps the dtype
/// (int32 stays int32, wrapping on overflow); 0 over zero elements.
Tensor sum(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Mean over `axes` (as sum); float tensors only (cast an int tensor first); NaN over
/// zero elements.
Tensor mean(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Largest element over `axes` (as sum); any dtype; NaN propagates; zero elements are a
/// ValueError.
Tensor max(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Smallest element over `axes` (as sum); any dtype; NaN propagates; zero elements are a
/// ValueError.
Tensor min(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// log(sum(exp(x))) over axes, max-shifted (any axes; see kernels.hpp for the fast last-axis one).
/// Shapes as for sum; float tensors only; -inf over zero elements.
/// A slice of all -inf gives -inf; a +inf gives +inf; a NaN gives NaN.
Tensor logsumexp(const Tensor& x, const std::vector<long>& axes = {}, bool keepdims = false);

// ---- shape and layout ------------------------------------------------------
/// Permutes axes (numpy transpose); an empty `perm` reverses them. Copies.
/// Output axis i is input axis perm[i]: a [2, 3, 4] tensor with perm {0, 2, 1} is [2, 4, 3].
Tensor transpose(const Tensor& x, const std::vector<std::size_t>& perm = {});
/// Swaps the last two axes (a common special case; copies): [..., m, n] to [..., n, m].
Tensor swap_last_two(const Tensor& x);
/// Inserts a size-1 axis at `axis` (negative counts from the end of the result, as numpy):
/// a [2, 3] tensor with axis 1 is [2, 1, 3], with axis -1 it is [2, 3, 1]. Copies.
Tensor expand_dims(const Tensor& x, long axis);
/// Removes the given size-1 axes (all size-1 axes if empty); ShapeError if a given axis
/// is not of size 1. Copies.
Tensor squeeze(const Tensor& x, const std::vector<long>& axes = {});
/// Joins tensors along an existing axis: every other extent and the dtype must agree.
/// [2, 3] and [2, 5] along axis 1 give [2, 8].
Tensor concatenate(const std::vector<Tensor>& xs, long axis);
/// Splits along `axis` into pieces of the given sizes (they must add up to the extent):
/// a [2, 8] tensor split {3, 5} along 1 gives [2, 3] and [2, 5].
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
/// numpy roll along one axis (elements shifted off one end come back at the other):
/// out[i] = x[(i - shift) mod n] along `axis`; same shape.
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
