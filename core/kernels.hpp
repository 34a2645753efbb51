/// @file
/// The numeric kernels that carry the weight: gemm and matmul, the row-wise kernels
/// (softmax, log_softmax, logsumexp, layer norm), gathers, scatters and sorts.
///
/// Matrix products go to OpenBLAS (cblas, called from gemm.cpp alone: `<cblas.h>` and
/// xtensor-blas cannot share a translation unit). The row-wise kernels (softmax,
/// log_softmax, logsumexp, layer norm) are tight loops over contiguous rows of the
/// last axis, max-shifted for stability, with exp vectorised (core/vmath.hpp).
/// Gathers, scatters and sorts work along one axis. Float kernels accept float32 and
/// float64; index tensors are int32 or int64.
///
/// @code
/// Rng rng(0);
/// Tensor q = rng.normal({8, 64, 32}), k = rng.normal({8, 64, 32});
/// Tensor logits = matmul(q, k, Trans::N, Trans::T);   // [8, 64, 64]: q @ k^T per batch
/// Tensor p = softmax(logits);                         // rows sum to 1
/// Tensor order = argsort(Tensor::from<int>({4}, {3, 1, 2, 1}));  // int64 [1, 3, 2, 0]
/// Tensor rows = take(p, order, 1);                    // [8, 4, 64]
/// @endcode
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "core/tensor.hpp"

namespace minitrax::core {

// ---- matrix products ------------------------------------------------------
/// Whether gemm and matmul use an operand as stored or transposed (cblas's
/// CblasNoTrans / CblasTrans).
enum class Trans : bool {
  N = false,  ///< as stored
  T = true    ///< transposed: the operand's last two axes swapped
};

/** @{ */
/// C = alpha * op(A) @ op(B) + beta * C on raw row-major memory (cblas semantics;
/// op(A) is m x k, op(B) is k x n, C is m x n; ld* are row strides). float or double.
/// @code
/// // c[2x4] = a[2x3] @ b[3x4]
/// gemm(Trans::N, Trans::N, 2, 4, 3, 1.0f, a, 3, b, 4, 0.0f, c, 4);
/// @endcode
void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc);
void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc);
/** @} */

/** @{ */
/// `batch` products C_i = alpha * op(A_i) @ op(B_i) + beta * C_i, with element strides
/// between consecutive A_i / B_i / C_i (a stride of 0 reuses one matrix for every i).
/// The products run in order i = 0, 1, ...: a shared C (stride_c = 0) with beta = 1 sums
/// them. With a shared B, ta = N and stride_a = m * lda, stride_c = m * ldc the batch is
/// one (batch*m) x n gemm call.
void gemm_batched(Trans ta, Trans tb, std::size_t batch, std::size_t m, std::size_t n,
                  std::size_t k, float alpha, const float* a, std::size_t lda, std::size_t stride_a,
                  const float* b, std::size_t ldb, std::size_t stride_b, float beta, float* c,
                  std::size_t ldc, std::size_t stride_c);
void gemm_batched(Trans ta, Trans tb, std::size_t batch, std::size_t m, std::size_t n,
                  std::size_t k, double alpha, const double* a, std::size_t lda,
                  std::size_t stride_a, const double* b, std::size_t ldb, std::size_t stride_b,
                  double beta, double* c, std::size_t ldc, std::size_t stride_c);
/** @} */

/// Tensor-level product: a [..., m, k] (or [..., k, m] if ta) times b [..., k, n] (or
/// [..., n, k] if tb). Leading (batch) axes must be equal, or b may be rank 2 (shared;
/// with ta = N the whole batch is then one gemm), or a may be rank 2 (shared by b's
/// batch). Rank-1 operands are not accepted (reshape first). Checks shapes and dtypes:
/// "matmul: inner dimensions differ: a [2, 3] (k=3), b [4, 5] (k=4)".
/// The result is [..., m, n] in the operands' dtype (float32 or float64):
/// `matmul(x, w)` with x [4, 16, 32] and w [32, 64] is [4, 16, 64].
Tensor matmul(const Tensor& a, const Tensor& b, Trans ta = Trans::N, Trans tb = Trans::N);
/// out = alpha * matmul(a, b) + beta * out, into an existing tensor of the right shape
/// (beta = 1 accumulates gradients in place). out must not share storage with a or b
/// (ValueError). beta = 0 overwrites out without reading it (NaNs there are ignored).
void matmul_into(Tensor& out, const Tensor& a, const Tensor& b, Trans ta = Trans::N,
                 Trans tb = Trans::N, double alpha = 1.0, double beta = 0.0);

/// The name of the BLAS kernel set in use (OpenBLAS's core name, e.g. "SkylakeX",
/// "Haswell", or "Prescott" when OpenBLAS did not recognise the CPU and fell back
/// to its generic SSE3 kernels; see docs/performance.md).
std::string blas_core_name();

// ---- row-wise kernels over the last axis ------------------------------------
// float32/float64, rank >= 1. A row that is all -inf gives NaN from softmax and
// log_softmax (0/0, as JAX and PyTorch do) and -inf from logsumexp_last; a row holding
// +inf gives +inf from logsumexp_last; a NaN anywhere in a row makes that row NaN.
/// exp(x) / sum(exp(x)) over the last axis (max-shifted); same shape and dtype as x,
/// float32/float64, rank >= 1. A row that is all -inf gives NaN (0/0, as JAX and
/// PyTorch do); a NaN anywhere in a row makes that row NaN.
Tensor softmax(const Tensor& x);
/// x - logsumexp(x) over the last axis (max-shifted); same shape and dtype as x. Rows of
/// all -inf and NaNs as for softmax.
Tensor log_softmax(const Tensor& x);
/// log(sum(exp(x))) over the last axis; the result drops that axis (keepdims: keeps it as 1).
Tensor logsumexp_last(const Tensor& x, bool keepdims = false);
/// VJP of softmax from its output y: gx = y * (gy - sum(gy * y, -1)).
Tensor softmax_backward(const Tensor& y, const Tensor& gy);
/// VJP of log_softmax from its output y: gx = gy - exp(y) * sum(gy, -1).
Tensor log_softmax_backward(const Tensor& y, const Tensor& gy);

/// What layer_norm returns: the output and the per-row statistics its backward needs.
struct LayerNormResult {
  /** @{ */
  /// y: the normalised output, x's shape. mean and rstd: per row, shape x[:-1].
  Tensor y, mean, rstd;
  /** @} */
};
/// Layer norm over the last axis: y = (x - mean) * rstd * scale + bias, with
/// rstd = 1 / sqrt(var + eps) (biased variance, as Trax's LayerNorm). scale and
/// bias have shape [d]. Returns y and the per-row mean and rstd (shape x[:-1]).
/// @code
/// auto [y, mean, rstd] = layer_norm(x, Tensor::ones({d}), Tensor::zeros({d}));
/// @endcode
LayerNormResult layer_norm(const Tensor& x, const Tensor& scale, const Tensor& bias,
                           double eps = 1e-6);
/// The cotangents layer_norm_backward returns.
struct LayerNormGrads {
  /** @{ */
  /// dx: x's shape; dscale and dbias: [d].
  Tensor dx, dscale, dbias;
  /** @} */
};
/// The VJP of layer_norm: from x, scale, the forward's per-row mean and rstd and the
/// output cotangent dy (x's shape), the cotangents of x, scale and bias.
LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& scale, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& dy);

// ---- gathers, scatters, sorts ------------------------------------------------
/// numpy take along one axis: out.shape = x.shape[:axis] + indices.shape + x.shape[axis+1:].
/// Negative or too-large indices are a ValueError naming the index and the extent.
Tensor take(const Tensor& x, const Tensor& indices, long axis = 0);
/// The VJP of take: zeros of `shape` with `g` scatter-added at `indices` along `axis`
/// (repeated indices accumulate).
Tensor take_backward(const Tensor& g, const Tensor& indices, const Shape& shape, long axis = 0);
/// numpy take_along_axis: indices has x's rank; out[..., i, ...] = x[..., indices[..., i, ...],
/// ...].
Tensor take_along_axis(const Tensor& x, const Tensor& indices, long axis);
/// The VJP of take_along_axis (scatter-add).
Tensor take_along_axis_backward(const Tensor& g, const Tensor& indices, const Shape& shape,
                                long axis);
/// Stable argsort along an axis (equal keys keep their order), as int64 (or `index_dtype`).
/// Keys of any dtype; NaN keys sort last (numpy's order).
Tensor argsort(const Tensor& keys, long axis = -1, DType index_dtype = DType::i64);
/// Sorts (key, value) pairs by key along `axis` (stable), like jax.lax.sort_key_val:
/// returns (sorted keys, values permuted the same way). Shapes must match.
std::pair<Tensor, Tensor> sort_key_val(const Tensor& keys, const Tensor& values, long axis = -1);
/// Index of the largest element along an axis (first one on ties), int64 (or `index_dtype`).
/// NaN counts as the largest value: the first NaN's index is returned (numpy, JAX). An
/// empty axis is a ValueError.
Tensor argmax(const Tensor& x, long axis = -1, DType index_dtype = DType::i64);
/// out[..., c] = (indices[...] == c) for c < depth; shape indices.shape + [depth].
/// An index outside [0, depth) gives a row of zeros (as jax.nn.one_hot).
Tensor one_hot(const Tensor& indices, std::size_t depth, DType dtype = DType::f32);

// ---- the floating-point environment --------------------------------------------
/// Turns flush-to-zero and denormals-are-zero on or off for the calling thread.
/// Denormals from exp of large negative logits slow softmax many times over;
/// minitrax turns them off when it loads (see kernels.cpp) and on every thread it starts.
/// The load-time switch lives in kernels.cpp, which gemm.cpp and vmath.cpp reference,
/// so it runs in any program that uses matmul, exp, softmax, ... even when linked
/// against the static library; threads started later inherit it (Linux copies MXCSR).
/// On non-x86 targets both are no-ops (enabled() returns false).
void set_flush_denormals(bool on);
/// True if flush-to-zero and denormals-are-zero are on for the calling thread (the
/// default); false on non-x86 targets.
bool flush_denormals_enabled();

}  // namespace minitrax::core
