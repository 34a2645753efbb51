/// @file
/// The differentiable ops, numpy-style: minitrax::fastmath, and the arithmetic
/// operators on Vars.
///
/// As Trax exposes `trax.fastmath.numpy`, minitrax exposes `minitrax::fastmath`:
/// numpy-named functions on Vars, so code ported from the Trax source or the
/// course labs reads the same. Each op computes with the kernels of core/ and, while
/// a tape records, adds one node whose VJP rule is written beside the forward in
/// autodiff/fastmath_*.cpp. Tensors convert to constant Vars implicitly.
///
/// Shapes and dtypes are checked before any work, and errors name the op and the
/// shapes. Binary ops broadcast as numpy; both operands must have the same dtype.
/// Unless said otherwise, the element-wise ops need float32/float64 inputs and return
/// the input's shape and dtype (the broadcast shape for binary ops).
///
/// @code
/// namespace fm = minitrax::fastmath;
/// // scaled dot-product attention of q, k, v [batch, len, d]
/// Var logits = fm::matmul(q, k, Trans::N, Trans::T) * (1.0 / std::sqrt(d));  // [b, len, len]
/// Var out = fm::matmul(fm::softmax(logits), v);                              // [b, len, d]
/// // a cross-entropy from logits [batch, vocab] and int32 targets [batch]
/// Var logp = fm::log_softmax(logits2);
/// Var nll = -fm::mean(fm::sum(logp * fm::one_hot(targets, vocab), {-1}));
/// @endcode
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/kernels.hpp"

namespace minitrax::fastmath {

using autodiff::Var;
using autodiff::VarList;
using core::DType;
using core::Shape;
using core::Tensor;
using core::Trans;

// ---- element-wise arithmetic (broadcasting) -------------------------------------
/// a + b (broadcasting); the VJP sums each cotangent down to its operand's shape.
/// `fm::add(x, b)` with x [4, 8] and b [8] is [4, 8].
Var add(const Var& a, const Var& b);
/// a - b (broadcasting).
Var subtract(const Var& a, const Var& b);
/// a * b (broadcasting).
Var multiply(const Var& a, const Var& b);
/// a / b (broadcasting).
Var divide(const Var& a, const Var& b);
/// -x.
Var negative(const Var& x);
/// a raised to the power b (broadcasting); a > 0 where b's gradient is needed (log(a)
/// is taken as 0 where a == 0, as JAX does).
Var power(const Var& a, const Var& b);  // a > 0 where b's gradient is needed
/// x raised to a constant power: `fm::power(x, 2.0)`.
Var power(const Var& x, double exponent);
/// The larger of a and b (broadcasting); on ties the gradient goes half to each.
Var maximum(const Var& a, const Var& b);  // ties: the gradient goes half to each
/// The smaller of a and b (broadcasting); on ties the gradient goes half to each.
Var minimum(const Var& a, const Var& b);
/// cond: any dtype, nonzero = true; never differentiated.
/// Picks a where cond is nonzero, else b; all three broadcast; a and b are differentiated
/// (each gets the cotangent where it was picked).
Var where(const Var& cond, const Var& a, const Var& b);
// scalar forms (the scalar takes x's dtype)
/// x + s, the scalar taking x's dtype.
Var add(const Var& x, double s);
/// x * s, the scalar taking x's dtype.
Var multiply(const Var& x, double s);

// ---- element-wise functions ---------------------------------------------------
/// e^x element-wise.
Var exp(const Var& x);
/// Natural logarithm element-wise (log(0) = -inf; its gradient 1/x is inf there).
Var log(const Var& x);
/// tanh(x) element-wise; VJP g * (1 - tanh^2).
Var tanh(const Var& x);
/// 1 / (1 + e^-x) element-wise; VJP g * s * (1 - s).
Var sigmoid(const Var& x);
/// max(x, 0) element-wise; the gradient is 0 at 0.
Var relu(const Var& x);
/// Gaussian error linear unit, exact form: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
Var gelu(const Var& x);
/// The tanh approximation (Trax's FastGelu): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Var gelu_tanh(const Var& x);
/// Square root element-wise.
Var sqrt(const Var& x);
/// 1 / sqrt(x) element-wise.
Var rsqrt(const Var& x);
/// x * x element-wise.
Var square(const Var& x);
/// |x| element-wise; gradient sign(x), 0 at 0.
Var abs(const Var& x);  // gradient sign(x), 0 at 0

// ---- reductions (axes may be negative; empty = all axes) ----------------------
/// Sum over `axes` (negative allowed; empty = all axes); the reduced axes are dropped, or
/// kept as 1 with `keepdims`. x [2, 3, 4] summed over {-1} is [2, 3]; over {} a scalar.
Var sum(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Mean over `axes` (as sum); float inputs only.
Var mean(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Largest element over `axes` (as sum). Gradient split evenly among tied maxima.
/// For integer inputs the result is a constant.
Var max(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// log(sum(exp(x))) over `axes` (as sum), max-shifted; VJP g * softmax(x) over the axes.
Var logsumexp(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);

// ---- shape and layout ------------------------------------------------------
/// x with a new shape of the same size: `fm::reshape(x, {b, -1, 64})`.
/// One extent may be -1. Shares storage with x (no copy).
Var reshape(const Var& x, const std::vector<long>& shape);
/// Permutes axes (empty perm = reverse them): output axis i is input axis perm[i]; the
/// VJP applies the inverse permutation. [b, len, h, d] with {0, 2, 1, 3} is [b, h, len, d].
Var transpose(const Var& x, const std::vector<std::size_t>& perm = {});
/// Inserts a size-1 axis at `axis` (as core::expand_dims): [2, 3] with axis 1 is [2, 1, 3].
Var expand_dims(const Var& x, long axis);
/// Removes the given size-1 axes (all size-1 axes if empty), as core::squeeze.
Var squeeze(const Var& x, const std::vector<long>& axes = {});
/// x broadcast to `shape` (numpy rules); the VJP sums the cotangent back to x's shape.
Var broadcast_to(const Var& x, const Shape& shape);
/// Joins Vars along an existing axis (other extents and dtypes equal); the VJP slices the
/// cotangent back into pieces.
Var concatenate(const VarList& xs, long axis);
/// Pieces of the given sizes along axis.
/// `fm::split(qkv, {d, d, d}, -1)` splits [b, len, 3d] into three [b, len, d].
VarList split(const Var& x, const std::vector<std::size_t>& sizes, long axis);
/// n equal pieces along axis.
VarList split(const Var& x, std::size_t n, long axis);
/// x[start:stop:step] along one axis (Python semantics for negative start/stop).
/// `fm::slice(x, 1, 0, -1)` drops the last position of a [b, len, d] tensor.
Var slice(const Var& x, long axis, long start, long stop, long step = 1);
/// Pads with a constant; pads[i] = (before, after) for axis i.
/// `fm::pad(x, {{0, 0}, {1, 0}})` shifts a [b, len] tensor right by one (ShiftRight's pad).
Var pad(const Var& x, const std::vector<std::pair<std::size_t, std::size_t>>& pads,
        double value = 0.0);
/// numpy roll along one axis: out[i] = x[(i - shift) mod n]; the VJP rolls back.
Var roll(const Var& x, long shift, long axis);
/// A copy converted to another dtype (float <-> float is differentiable; any conversion
/// from or to an integer dtype returns a constant).
Var astype(const Var& x, DType dtype);

// ---- linear algebra ---------------------------------------------------------
/// a [..., m, k] @ b [..., k, n] (optionally transposed); leading axes equal, or b rank 2.
/// The result is [..., m, n] (see core::matmul for the shape rules); the VJP is two more
/// gemms. `fm::matmul(q, k, Trans::N, Trans::T)` gives [..., len_q, len_k] logits.
Var matmul(const Var& a, const Var& b, Trans ta = Trans::N, Trans tb = Trans::N);
/// x [..., d_in] @ w [d_in, d_out] (+ b [d_out]): the Dense layer's product, as one gemm.
/// The result is [..., d_out]; b may be omitted (an undefined Var).
/// @code
/// // x [batch, len, 64], w1 [64, 256], b1 [256] -> h [batch, len, 256]
/// Var h = fm::relu(fm::dense(x, w1, b1));
/// @endcode
Var dense(const Var& x, const Var& w, const Var& b = Var());

// ---- gathers and indexing ---------------------------------------------------------
/// numpy take along an axis; indices int32/int64 (not differentiated). VJP: scatter-add.
/// out.shape = x.shape[:axis] + indices.shape + x.shape[axis+1:]: an embedding lookup is
/// `fm::take(table, ids)` with table [vocab, d] and ids [b, len], giving [b, len, d].
Var take(const Var& x, const Var& indices, long axis = 0);
/// numpy take_along_axis: indices have x's rank, and out has the indices' shape. VJP:
/// scatter-add. Sorting each row of x by keys: `fm::take_along_axis(x, fm::argsort(keys), -1)`.
Var take_along_axis(const Var& x, const Var& indices, long axis);
/// Not differentiable: returns constants.
/// One-hot encoding: shape indices.shape + [depth], 1 where the last index equals the
/// index (rows of zeros for indices outside [0, depth)).
Var one_hot(const Var& indices, std::size_t depth, DType dtype = DType::f32);
/// Index of the largest element along `axis` (first on ties), an int64 constant with that
/// axis dropped.
Var argmax(const Var& x, long axis = -1);
/// Stable argsort along `axis`, an int64 constant of x's shape.
Var argsort(const Var& x, long axis = -1);

// ---- normalisation and probabilities -----------------------------------------------
/// exp(x) / sum(exp(x)) over the last axis (max-shifted); same shape as x.
Var softmax(const Var& x);  // over the last axis
/// x - logsumexp(x) over the last axis; same shape as x.
Var log_softmax(const Var& x);  // over the last axis
/// Layer norm over the last axis with scale and bias [d] (one fused kernel each way):
/// (x - mean) / sqrt(var + eps) * scale + bias, x [..., d] to the same shape.
Var layer_norm(const Var& x, const Var& scale, const Var& bias, double eps = 1e-6);
/// x * mask / keep_prob, with a given 0/1 mask that broadcasts against x (dropout's
/// forward and backward both use the same mask; the rng that made it lives elsewhere).
/// keep_prob must be in (0, 1]; the mask is not differentiated.
/// @code
/// Tensor mask = rng.bernoulli(0.9, x.shape());
/// Var y = fm::dropout(x, mask, 0.9);
/// @endcode
Var dropout(const Var& x, const Var& mask, double keep_prob);

// ---- non-differentiable comparisons (int32 0/1 constants) --------------------------
/// a == b element-wise (broadcasting): an int32 0/1 constant.
Var equal(const Var& a, const Var& b);
/// a < b element-wise (broadcasting): an int32 0/1 constant.
Var less(const Var& a, const Var& b);
/// a > b element-wise (broadcasting): an int32 0/1 constant.
Var greater(const Var& a, const Var& b);

}  // namespace minitrax::fastmath

namespace minitrax::autodiff {
// Arithmetic operators on Vars (found by argument-dependent lookup, so they work
// without a using-declaration). They call the fastmath functions above.
/// fastmath::add(a, b): `Var y = x * w + b;`
Var operator+(const Var& a, const Var& b);
/// fastmath::subtract(a, b).
Var operator-(const Var& a, const Var& b);
/// fastmath::multiply(a, b).
Var operator*(const Var& a, const Var& b);
/// fastmath::divide(a, b).
Var operator/(const Var& a, const Var& b);
/// fastmath::negative(x).
Var operator-(const Var& x);
/// a + s (the scalar takes a's dtype).
Var operator+(const Var& a, double s);
/// s + a (the scalar takes a's dtype).
Var operator+(double s, const Var& a);
/// a - s (the scalar takes a's dtype).
Var operator-(const Var& a, double s);
/// s - a (the scalar takes a's dtype).
Var operator-(double s, const Var& a);
/// a * s (the scalar takes a's dtype): `x * 0.5`.
Var operator*(const Var& a, double s);
/// s * a (the scalar takes a's dtype).
Var operator*(double s, const Var& a);
/// a / s (the scalar takes a's dtype).
Var operator/(const Var& a, double s);
/// s / a element-wise (the scalar takes a's dtype).
Var operator/(double s, const Var& a);
}  // namespace minitrax::autodiff
