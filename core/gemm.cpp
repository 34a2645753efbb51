// minitrax/core/gemm.cpp: matrix products through OpenBLAS's cblas.
//
// The only translation unit that includes <cblas.h> (xtensor-blas declares its own
// cblas prototypes, which clash with OpenBLAS's). Every size is checked here before a
// BLAS routine sees it: OpenBLAS reports bad arguments by printing a line and
// returning, which would leave C unwritten.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/kernels.hpp"
#include "core/parallel.hpp"

namespace minitrax::core {

namespace detail {
// See vmath.cpp: keeps kernels.o (and its flush-to-zero initializer) linked.
extern const bool flush_denormals_at_load;
}  // namespace detail

namespace {

[[gnu::used]] const bool* const keep_fp_env_initializer = &detail::flush_denormals_at_load;

CBLAS_TRANSPOSE cblas_trans(Trans t) {
  return t == Trans::T ? CblasTrans : CblasNoTrans;
}

std::string trans_name(Trans t) {
  return t == Trans::T ? "T" : "N";
}

// cblas takes sizes as blasint (int unless OpenBLAS was built with 64-bit integers).
void check_fits(const char* op, const char* what, std::size_t v) {
  if (v > static_cast<std::size_t>(std::numeric_limits<blasint>::max())) {
    throw ValueError(std::string(op) + ": " + what + " = " + std::to_string(v) +
                     " is larger than BLAS's integer type allows (" +
                     std::to_string(std::numeric_limits<blasint>::max()) + ")");
  }
}

template <class T>
void scale_c(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc) {
  if (beta == T(1)) return;
  for (std::size_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    if (beta == T(0)) {
      std::fill_n(row, n, T(0));  // BLAS semantics: beta = 0 ignores NaN/inf in C
    } else {
      for (std::size_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

// How a product is cut into blocks of C, each one single-threaded BLAS call, dealt to
// threads by parallel_for. The cut depends only on (m, n, k), never on the thread count
// or the work threshold, so every block sees the same operands and sizes whatever runs
// it, and the result has the same bits for any thread count (OpenBLAS's own threads
// would split a product by their number and round differently per part; see parallel.hpp).
//
// Blocks of whole rows of C (B shared, packed again per block: cheap next to the block's
// own work) unless C has too few rows; then blocks of columns. A product cut at all has at
// least kGemmBlockMinFlops of work per block, so the small products inside parallel loops
// (attention tiles) mostly stay one call.
constexpr double kGemmBlockMinFlops = 4e6;
constexpr std::size_t kGemmMinBlocks = 2;  // at least this many when the sizes allow
constexpr std::size_t kGemmMaxRows = 256, kGemmMinRows = 64;
constexpr std::size_t kGemmMaxCols = 512, kGemmMinCols = 64;
constexpr std::size_t kGemmAlign = 16;  // block sizes: multiples of the kernels' unrolling

struct GemmCut {
  std::size_t count = 1;  // blocks
  std::size_t size = 0;   // rows (or columns) per block; the last may be shorter
  bool rows = true;
};

// A cut of `len` into blocks of at most max_len (at least kGemmMinBlocks blocks of at
// least min_len when len allows), at most max_blocks blocks; count 1 if no cut.
GemmCut cut_axis(std::size_t len, std::size_t max_len, std::size_t min_len, std::size_t max_blocks,
                 bool rows) {
  std::size_t nb = (len + max_len - 1) / max_len;
  nb = std::max(nb, std::min(kGemmMinBlocks, len / min_len));
  nb = std::min(nb, max_blocks);
  if (nb < 2) return {1, len, rows};
  std::size_t size = (len + nb - 1) / nb;
  size = (size + kGemmAlign - 1) / kGemmAlign * kGemmAlign;
  return {(len + size - 1) / size, size, rows};
}

GemmCut gemm_cut(std::size_t m, std::size_t n, std::size_t k) {
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const double by_flops = std::floor(flops / kGemmBlockMinFlops);
  if (by_flops < 2.0) return {1, m, true};
  const auto max_blocks = static_cast<std::size_t>(std::min(by_flops, 1e9));
  const GemmCut r = cut_axis(m, kGemmMaxRows, kGemmMinRows, max_blocks, true);
  if (r.count > 1) return r;
  return cut_axis(n, kGemmMaxCols, kGemmMinCols, max_blocks, false);
}

template <class T>
void gemm_impl(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
               std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  if (c == nullptr) throw ValueError("gemm: C is a null pointer");
  if (ldc < n) {
    throw ValueError("gemm: ldc = " + std::to_string(ldc) +
                     " is smaller than n = " + std::to_string(n));
  }
  if (k == 0) {  // an empty sum: C = beta * C
    scale_c(m, n, beta, c, ldc);
    return;
  }
  if (a == nullptr || b == nullptr) throw ValueError("gemm: A or B is a null pointer");
  // Row-major: A is m x k (lda >= k) or, transposed, k x m (lda >= m); B likewise.
  const std::size_t a_cols = ta == Trans::N ? k : m;
  const std::size_t b_cols = tb == Trans::N ? n : k;
  if (lda < a_cols) {
    throw ValueError("gemm: lda = " + std::to_string(lda) + " is smaller than the " +
                     std::to_string(a_cols) + " columns of A (ta = " + trans_name(ta) +
                     ", m = " + std::to_string(m) + ", k = " + std::to_string(k) + ")");
  }
  if (ldb < b_cols) {
    throw ValueError("gemm: ldb = " + std::to_string(ldb) + " is smaller than the " +
                     std::to_string(b_cols) + " columns of B (tb = " + trans_name(tb) +
                     ", k = " + std::to_string(k) + ", n = " + std::to_string(n) + ")");
  }
  check_fits("gemm", "m", m);
  check_fits("gemm", "n", n);
  check_fits("gemm", "k", k);
  check_fits("gemm", "lda", lda);
  check_fits("gemm", "ldb", ldb);
  check_fits("gemm", "ldc", ldc);
  detail::blas_single_thread();
  const auto bi = [](std::size_t v) { return static_cast<blasint>(v); };
  // One single-threaded BLAS call: C[mm, nn] (at pc) = alpha A B + beta C.
  const auto call = [&](std::size_t mm, std::size_t nn, const T* pa, const T* pb, T* pc) {
    if constexpr (std::is_same_v<T, float>) {
      cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), bi(mm), bi(nn), bi(k), alpha, pa,
                  bi(lda), pb, bi(ldb), beta, pc, bi(ldc));
    } else {
      cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), bi(mm), bi(nn), bi(k), alpha, pa,
                  bi(lda), pb, bi(ldb), beta, pc, bi(ldc));
    }
  };
  const GemmCut cut = gemm_cut(m, n, k);
  if (cut.count == 1) {
    call(m, n, a, b, c);
    return;
  }
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  parallel_for(static_cast<long>(cut.count), flops / static_cast<double>(cut.count),
               [&](long item, int) {
                 const std::size_t i0 = static_cast<std::size_t>(item) * cut.size;
                 if (cut.rows) {
                   // Rows [i0, i0 + mm) of C and of op(A); op(A) = A^T: columns of A.
                   const std::size_t mm = std::min(cut.size, m - i0);
                   call(mm, n, ta == Trans::N ? a + i0 * lda : a + i0, b, c + i0 * ldc);
                 } else {
                   // Columns [i0, i0 + nn) of C and of op(B); op(B) = B^T: rows of B.
                   const std::size_t nn = std::min(cut.size, n - i0);
                   call(m, nn, a, tb == Trans::N ? b + i0 : b + i0 * ldb, c + i0);
                 }
               });
}

template <class T>
void gemm_batched_impl(Trans ta, Trans tb, std::size_t batch, std::size_t m, std::size_t n,
                       std::size_t k, T alpha, const T* a, std::size_t lda, std::size_t stride_a,
                       const T* b, std::size_t ldb, std::size_t stride_b, T beta, T* c,
                       std::size_t ldc, std::size_t stride_c) {
  if (batch == 0 || m == 0 || n == 0) return;
  // One B for all, A not transposed and the A_i / C_i stacked at their row strides:
  // the batch is one tall product (batch*m) x k times k x n. One big gemm is faster
  // than `batch` small ones (better blocking, one thread fork/join).
  const bool foldable = batch > 1 && ta == Trans::N && stride_b == 0 && stride_a == m * lda &&
                        stride_c == m * ldc &&
                        batch <= static_cast<std::size_t>(std::numeric_limits<blasint>::max()) / m;
  if (foldable) {
    gemm_impl(ta, tb, batch * m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  for (std::size_t i = 0; i < batch; ++i) {
    gemm_impl(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
              c + i * stride_c, ldc);
  }
}

// Sizes of a tensor-level product, worked out (and checked) once.
struct MatmulPlan {
  Shape out_shape;
  std::size_t batch = 1, m = 0, n = 0, k = 0;
  std::size_t lda = 0, ldb = 0, ldc = 0;
  std::size_t stride_a = 0, stride_b = 0, stride_c = 0;
};

MatmulPlan plan_matmul(const std::string& op, const Tensor& a, const Tensor& b, Trans ta,
                       Trans tb) {
  check_floating(op, a);
  check_floating(op, b);
  if (a.dtype() != b.dtype()) {
    throw DTypeError(op + ": dtypes differ: a " + std::string(dtype_name(a.dtype())) + " " +
                     shape_str(a.shape()) + ", b " + std::string(dtype_name(b.dtype())) + " " +
                     shape_str(b.shape()));
  }
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const std::size_t ra = as.size(), rb = bs.size();
  if (ra < 2 || rb < 2) {
    throw ShapeError(op + ": needs operands of rank >= 2 (reshape vectors first): a " +
                     shape_str(as) + ", b " + shape_str(bs));
  }
  // A rank-2 operand is shared by every item of the other one's batch.
  const bool shared_b = rb == 2;
  const bool shared_a = ra == 2 && rb > 2;
  if (!shared_a && !shared_b && (ra != rb || !std::equal(as.begin(), as.end() - 2, bs.begin()))) {
    throw ShapeError(op + ": batch dimensions differ: a " + shape_str(as) + ", b " + shape_str(bs) +
                     " (the leading axes must be equal, or one operand rank 2)");
  }
  MatmulPlan p;
  p.m = ta == Trans::N ? as[ra - 2] : as[ra - 1];
  const std::size_t ka = ta == Trans::N ? as[ra - 1] : as[ra - 2];
  const std::size_t kb = tb == Trans::N ? bs[rb - 2] : bs[rb - 1];
  p.n = tb == Trans::N ? bs[rb - 1] : bs[rb - 2];
  if (ka != kb) {
    throw ShapeError(op + ": inner dimensions differ: a " + shape_str(as) +
                     (ta == Trans::T ? " (transposed, k=" : " (k=") + std::to_string(ka) + "), b " +
                     shape_str(bs) + (tb == Trans::T ? " (transposed, k=" : " (k=") +
                     std::to_string(kb) + ")");
  }
  p.k = ka;
  const Shape& lead = shared_a ? bs : as;
  p.out_shape.assign(lead.begin(), lead.end() - 2);
  p.batch = shape_size(p.out_shape);
  p.out_shape.push_back(p.m);
  p.out_shape.push_back(p.n);
  // [2^32, 1] @ [1, 2^32]: the product of valid operands can be too large to address.
  (void)checked_size(p.out_shape, op, a.dtype());
  p.lda = as[ra - 1];
  p.ldb = bs[rb - 1];
  p.ldc = p.n;
  p.stride_a = shared_a ? 0 : as[ra - 2] * as[ra - 1];
  p.stride_b = shared_b ? 0 : bs[rb - 2] * bs[rb - 1];
  p.stride_c = p.m * p.n;
  return p;
}

void run_plan(const MatmulPlan& p, Tensor& out, const Tensor& a, const Tensor& b, Trans ta,
              Trans tb, double alpha, double beta, const std::string& op) {
  dispatch_floating(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    gemm_batched_impl<T>(ta, tb, p.batch, p.m, p.n, p.k, static_cast<T>(alpha), a.data<T>(), p.lda,
                         p.stride_a, b.data<T>(), p.ldb, p.stride_b, static_cast<T>(beta),
                         out.data<T>(), p.ldc, p.stride_c);
  });
}

}  // namespace

void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc) {
  gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc) {
  gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_batched(Trans ta, Trans tb, std::size_t batch, std::size_t m, std::size_t n,
                  std::size_t k, float alpha, const float* a, std::size_t lda, std::size_t stride_a,
                  const float* b, std::size_t ldb, std::size_t stride_b, float beta, float* c,
                  std::size_t ldc, std::size_t stride_c) {
  gemm_batched_impl(ta, tb, batch, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                    stride_c);
}

void gemm_batched(Trans ta, Trans tb, std::size_t batch, std::size_t m, std::size_t n,
                  std::size_t k, double alpha, const double* a, std::size_t lda,
                  std::size_t stride_a, const double* b, std::size_t ldb, std::size_t stride_b,
                  double beta, double* c, std::size_t ldc, std::size_t stride_c) {
  gemm_batched_impl(ta, tb, batch, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                    stride_c);
}

Tensor matmul(const Tensor& a, const Tensor& b, Trans ta, Trans tb) {
  const std::string op = "matmul";
  const MatmulPlan p = plan_matmul(op, a, b, ta, tb);
  Tensor out = Tensor::empty(p.out_shape, a.dtype(), op);
  run_plan(p, out, a, b, ta, tb, 1.0, 0.0, op);  // beta = 0: the empty buffer is never read
  return out;
}

void matmul_into(Tensor& out, const Tensor& a, const Tensor& b, Trans ta, Trans tb, double alpha,
                 double beta) {
  const std::string op = "matmul_into";
  const MatmulPlan p = plan_matmul(op, a, b, ta, tb);
  if (!out.defined()) throw ValueError(op + ": the output tensor is undefined");
  if (out.dtype() != a.dtype()) {
    throw DTypeError(op + ": out is " + std::string(dtype_name(out.dtype())) +
                     ", the operands are " + std::string(dtype_name(a.dtype())));
  }
  check_shape(op, p.out_shape, out.shape());
  if (out.size() > 0 && (out.shares_storage(a) || out.shares_storage(b))) {
    throw ValueError(op + ": out shares storage with an operand (BLAS cannot write in place)");
  }
  run_plan(p, out, a, b, ta, tb, alpha, beta, op);
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? std::string(name) : std::string("unknown");
}

}  // namespace minitrax::core
