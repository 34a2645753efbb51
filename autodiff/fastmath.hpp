// minitrax/autodiff/fastmath.hpp: the differentiable ops, numpy-style.
//
// As Trax exposes `trax.fastmath.numpy`, minitrax exposes `minitrax::fastmath`:
// numpy-named functions on Vars, so code ported from the Trax source or the
// course labs reads the same. Each op computes with the kernels of core/ and, while
// a tape records, adds one node whose VJP rule is written beside the forward in
// autodiff/fastmath_*.cpp. Tensors convert to constant Vars implicitly.
//
// Shapes and dtypes are checked before any work, and errors name the op and the
// shapes. Binary ops broadcast as numpy; both operands must have the same dtype.
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
Var add(const Var& a, const Var& b);
Var subtract(const Var& a, const Var& b);
Var multiply(const Var& a, const Var& b);
Var divide(const Var& a, const Var& b);
Var negative(const Var& x);
Var power(const Var& a, const Var& b);  // a > 0 where b's gradient is needed
Var power(const Var& x, double exponent);
Var maximum(const Var& a, const Var& b);  // ties: the gradient goes half to each
Var minimum(const Var& a, const Var& b);
/// cond: any dtype, nonzero = true; never differentiated.
Var where(const Var& cond, const Var& a, const Var& b);
// scalar forms (the scalar takes x's dtype)
Var add(const Var& x, double s);
Var multiply(const Var& x, double s);

// ---- element-wise functions ---------------------------------------------------
Var exp(const Var& x);
Var log(const Var& x);
Var tanh(const Var& x);
Var sigmoid(const Var& x);
Var relu(const Var& x);
/// Gaussian error linear unit, exact form: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
Var gelu(const Var& x);
/// The tanh approximation (Trax's FastGelu): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Var gelu_tanh(const Var& x);
Var sqrt(const Var& x);
Var rsqrt(const Var& x);
Var square(const Var& x);
Var abs(const Var& x);  // gradient sign(x), 0 at 0

// ---- reductions (axes may be negative; empty = all axes) ----------------------
Var sum(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
Var mean(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
/// Gradient split evenly among tied maxima.
Var max(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);
Var logsumexp(const Var& x, const std::vector<long>& axes = {}, bool keepdims = false);

// ---- shape and layout ------------------------------------------------------
/// One extent may be -1. Shares storage with x (no copy).
Var reshape(const Var& x, const std::vector<long>& shape);
/// Permutes axes (empty perm = reverse them).
Var transpose(const Var& x, const std::vector<std::size_t>& perm = {});
Var expand_dims(const Var& x, long axis);
Var squeeze(const Var& x, const std::vector<long>& axes = {});
Var broadcast_to(const Var& x, const Shape& shape);
Var concatenate(const VarList& xs, long axis);
/// Pieces of the given sizes along axis.
VarList split(const Var& x, const std::vector<std::size_t>& sizes, long axis);
/// n equal pieces along axis.
VarList split(const Var& x, std::size_t n, long axis);
/// x[start:stop:step] along one axis (Python semantics for negative start/stop).
Var slice(const Var& x, long axis, long start, long stop, long step = 1);
/// Pads with a constant; pads[i] = (before, after) for axis i.
Var pad(const Var& x, const std::vector<std::pair<std::size_t, std::size_t>>& pads,
        double value = 0.0);
Var roll(const Var& x, long shift, long axis);
/// A copy converted to another dtype (float <-> float is differentiable).
Var astype(const Var& x, DType dtype);

// ---- linear algebra ---------------------------------------------------------
/// a [..., m, k] @ b [..., k, n] (optionally transposed); leading axes equal, or b rank 2.
Var matmul(const Var& a, const Var& b, Trans ta = Trans::N, Trans tb = Trans::N);
/// x [..., d_in] @ w [d_in, d_out] (+ b [d_out]): the Dense layer's product, as one gemm.
Var dense(const Var& x, const Var& w, const Var& b = Var());

// ---- gathers and indexing ---------------------------------------------------------
/// numpy take along an axis; indices int32/int64 (not differentiated). VJP: scatter-add.
Var take(const Var& x, const Var& indices, long axis = 0);
/// numpy take_along_axis. VJP: scatter-add.
Var take_along_axis(const Var& x, const Var& indices, long axis);
/// Not differentiable: returns constants.
Var one_hot(const Var& indices, std::size_t depth, DType dtype = DType::f32);
Var argmax(const Var& x, long axis = -1);
Var argsort(const Var& x, long axis = -1);

// ---- normalisation and probabilities -----------------------------------------------
Var softmax(const Var& x);      // over the last axis
Var log_softmax(const Var& x);  // over the last axis
/// Layer norm over the last axis with scale and bias [d] (one fused kernel each way).
Var layer_norm(const Var& x, const Var& scale, const Var& bias, double eps = 1e-6);
/// x * mask / keep_prob, with a given 0/1 mask that broadcasts against x (dropout's
/// forward and backward both use the same mask; the rng that made it lives elsewhere).
Var dropout(const Var& x, const Var& mask, double keep_prob);

// ---- non-differentiable comparisons (int32 0/1 constants) --------------------------
Var equal(const Var& a, const Var& b);
Var less(const Var& a, const Var& b);
Var greater(const Var& a, const Var& b);

}  // namespace minitrax::fastmath

namespace minitrax::autodiff {
// Arithmetic operators on Vars (found by argument-dependent lookup, so they work
// without a using-declaration). They call the fastmath functions above.
Var operator+(const Var& a, const Var& b);
Var operator-(const Var& a, const Var& b);
Var operator*(const Var& a, const Var& b);
Var operator/(const Var& a, const Var& b);
Var operator-(const Var& x);
Var operator+(const Var& a, double s);
Var operator+(double s, const Var& a);
Var operator-(const Var& a, double s);
Var operator-(double s, const Var& a);
Var operator*(const Var& a, double s);
Var operator*(double s, const Var& a);
Var operator/(const Var& a, double s);
Var operator/(double s, const Var& a);
}  // namespace minitrax::autodiff
