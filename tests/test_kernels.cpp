// Tests of core/kernels.hpp and core/vmath.hpp against independent naive computations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/kernels.hpp"
#include "core/tensor.hpp"
#include "core/vmath.hpp"

using namespace minitrax;
using core::Trans;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <class T>
std::vector<T> random_vec(std::size_t n, unsigned seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

template <class T>
Tensor random_tensor(const Shape& shape, unsigned seed, double lo = -1.0, double hi = 1.0) {
  return Tensor::from<T>(shape, random_vec<T>(core::shape_size(shape), seed, lo, hi));
}

// C = alpha * op(A) op(B) + beta * C in long double, element by element (row-major with
// leading dimensions, like the kernel under test).
template <class T>
void naive_gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, double alpha,
                const T* a, std::size_t lda, const T* b, std::size_t ldb, double beta, T* c,
                std::size_t ldc) {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      long double s = 0;
      for (std::size_t p = 0; p < k; ++p) {
        const T av = ta == Trans::N ? a[i * lda + p] : a[p * lda + i];
        const T bv = tb == Trans::N ? b[p * ldb + j] : b[j * ldb + p];
        s += static_cast<long double>(av) * bv;
      }
      const long double old = beta == 0.0 ? 0.0L : static_cast<long double>(c[i * ldc + j]) * beta;
      c[i * ldc + j] = static_cast<T>(alpha * s + old);
    }
  }
}

template <class T>
double tol() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

template <class T>
void check_close(const std::vector<T>& got, const std::vector<T>& want, double rtol, double atol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(w) || std::isinf(w)) {
      CHECK_MESSAGE((std::isnan(w) ? std::isnan(g) : g == w), "at ", i, ": got ", g, " want ", w);
      continue;
    }
    CHECK_MESSAGE(std::abs(g - w) <= atol + rtol * std::abs(w), "at ", i, ": got ", g, " want ", w);
  }
}

// Batched product of tensors by the naive loop: a [B.., m, k]-ish, b rank 2 or batched.
template <class T>
std::vector<T> naive_matmul(const Tensor& a, const Tensor& b, Trans ta, Trans tb) {
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const std::size_t ra = as.size(), rb = bs.size();
  const std::size_t m = ta == Trans::N ? as[ra - 2] : as[ra - 1];
  const std::size_t k = ta == Trans::N ? as[ra - 1] : as[ra - 2];
  const std::size_t n = tb == Trans::N ? bs[rb - 1] : bs[rb - 2];
  const std::size_t batch = a.size() / (m * k);
  std::vector<T> c(batch * m * n, T(0));
  for (std::size_t i = 0; i < batch; ++i) {
    const T* bp = b.data<T>() + (rb == 2 ? 0 : i * k * n);
    naive_gemm<T>(ta, tb, m, n, k, 1.0, a.data<T>() + i * m * k, as[ra - 1], bp, bs[rb - 1], 0.0,
                  c.data() + i * m * n, n);
  }
  return c;
}

}  // namespace

// ============================================================================
// gemm
// ============================================================================

TEST_CASE_TEMPLATE("gemm: all transposes, alpha/beta, padded leading dimensions", T, float,
                   double) {
  const std::size_t m = 5, n = 7, k = 3;
  for (Trans ta : {Trans::N, Trans::T}) {
    for (Trans tb : {Trans::N, Trans::T}) {
      CAPTURE(static_cast<int>(ta));
      CAPTURE(static_cast<int>(tb));
      // Stored A is m x k (or k x m), with 2 columns of padding per row.
      const std::size_t a_rows = ta == Trans::N ? m : k, a_cols = ta == Trans::N ? k : m;
      const std::size_t b_rows = tb == Trans::N ? k : n, b_cols = tb == Trans::N ? n : k;
      const std::size_t lda = a_cols + 2, ldb = b_cols + 1, ldc = n + 3;
      auto a = random_vec<T>(a_rows * lda, 1);
      auto b = random_vec<T>(b_rows * ldb, 2);
      auto c = random_vec<T>(m * ldc, 3);
      auto want = c;
      naive_gemm<T>(ta, tb, m, n, k, 1.5, a.data(), lda, b.data(), ldb, -0.5, want.data(), ldc);
      core::gemm(ta, tb, m, n, k, T(1.5), a.data(), lda, b.data(), ldb, T(-0.5), c.data(), ldc);
      check_close(c, want, tol<T>(), tol<T>());
    }
  }
}

TEST_CASE_TEMPLATE("gemm: empty dimensions follow BLAS's beta semantics", T, float, double) {
  std::vector<T> c = {1, 2, std::numeric_limits<T>::quiet_NaN(), 4};
  // k == 0: C = beta * C.
  core::gemm(Trans::N, Trans::N, 2, 2, 0, T(1), nullptr, 0, nullptr, 2, T(2), c.data(), 2);
  CHECK(c[0] == 2);
  CHECK(c[1] == 4);
  CHECK(std::isnan(c[2]));
  CHECK(c[3] == 8);
  // beta == 0 clears, NaN included.
  core::gemm(Trans::N, Trans::N, 2, 2, 0, T(1), nullptr, 0, nullptr, 2, T(0), c.data(), 2);
  CHECK(c == std::vector<T>{0, 0, 0, 0});
  // m == 0 or n == 0: nothing is touched.
  std::vector<T> d = {5};
  core::gemm(Trans::N, Trans::N, 0, 1, 3, T(1), nullptr, 3, nullptr, 1, T(0), d.data(), 1);
  core::gemm(Trans::N, Trans::N, 1, 0, 3, T(1), nullptr, 3, nullptr, 0, T(0), d.data(), 0);
  CHECK(d[0] == 5);
}

TEST_CASE("gemm: leading dimensions are checked before BLAS sees them") {
  std::vector<float> a(6), b(6), c(4);
  CHECK_THROWS_WITH_AS(
      core::gemm(Trans::N, Trans::N, 2, 2, 3, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2),
      "gemm: lda = 2 is smaller than the 3 columns of A (ta = N, m = 2, k = 3)", ValueError);
  CHECK_THROWS_AS(
      core::gemm(Trans::N, Trans::T, 2, 2, 3, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2),
      ValueError);
  CHECK_THROWS_AS(
      core::gemm(Trans::N, Trans::N, 2, 2, 3, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 1),
      ValueError);
}

TEST_CASE_TEMPLATE("gemm_batched: strides, shared A or B, folded and looped paths", T, float,
                   double) {
  const std::size_t batch = 3, m = 4, n = 5, k = 6;
  for (Trans ta : {Trans::N, Trans::T}) {
    for (Trans tb : {Trans::N, Trans::T}) {
      for (int shared : {0, 1, 2}) {  // 0: none, 1: B shared (stride 0), 2: A shared
        CAPTURE(shared);
        const std::size_t lda = ta == Trans::N ? k : m, ldb = tb == Trans::N ? n : k;
        const std::size_t sa = shared == 2 ? 0 : m * k, sb = shared == 1 ? 0 : k * n;
        auto a = random_vec<T>(batch * m * k, 10);
        auto b = random_vec<T>(batch * k * n, 11);
        auto c = random_vec<T>(batch * m * n, 12);
        auto want = c;
        for (std::size_t i = 0; i < batch; ++i) {
          naive_gemm<T>(ta, tb, m, n, k, 0.5, a.data() + i * sa, lda, b.data() + i * sb, ldb, 2.0,
                        want.data() + i * m * n, n);
        }
        core::gemm_batched(ta, tb, batch, m, n, k, T(0.5), a.data(), lda, sa, b.data(), ldb, sb,
                           T(2), c.data(), n, m * n);
        check_close(c, want, tol<T>(), tol<T>());
      }
    }
  }
}

TEST_CASE_TEMPLATE("matmul: batched and shared-b products against naive loops", T, float, double) {
  for (Trans ta : {Trans::N, Trans::T}) {
    for (Trans tb : {Trans::N, Trans::T}) {
      const std::size_t m = 3, k = 5, n = 4;
      const Shape a_mat = ta == Trans::N ? Shape{m, k} : Shape{k, m};
      const Shape b_mat = tb == Trans::N ? Shape{k, n} : Shape{n, k};
      // Rank 2 x rank 2.
      Tensor a2 = random_tensor<T>(a_mat, 20);
      Tensor b2 = random_tensor<T>(b_mat, 21);
      Tensor c2 = core::matmul(a2, b2, ta, tb);
      CHECK(c2.shape() == Shape{m, n});
      check_close(c2.to_vector<T>(), naive_matmul<T>(a2, b2, ta, tb), tol<T>(), tol<T>());
      // Batched [2, 3, .., ..] with matching leading axes.
      Shape a4{2, 3}, b4{2, 3};
      a4.insert(a4.end(), a_mat.begin(), a_mat.end());
      b4.insert(b4.end(), b_mat.begin(), b_mat.end());
      Tensor a = random_tensor<T>(a4, 22);
      Tensor b = random_tensor<T>(b4, 23);
      Tensor c = core::matmul(a, b, ta, tb);
      CHECK(c.shape() == Shape{2, 3, m, n});
      check_close(c.to_vector<T>(), naive_matmul<T>(a, b, ta, tb), tol<T>(), tol<T>());
      // b rank 2, shared by the batch (the folded single-gemm path when ta == N).
      Tensor cs = core::matmul(a, b2, ta, tb);
      CHECK(cs.shape() == Shape{2, 3, m, n});
      check_close(cs.to_vector<T>(), naive_matmul<T>(a, b2, ta, tb), tol<T>(), tol<T>());
      // a rank 2, shared by b's batch: item i is matmul(a2, b[i]).
      Tensor ca = core::matmul(a2, b, ta, tb);
      CHECK(ca.shape() == Shape{2, 3, m, n});
      std::vector<T> want_a;
      for (std::size_t i = 0; i < 6; ++i) {
        Tensor bi = Tensor::from<T>(
            b_mat, std::vector<T>(b.data<T>() + i * k * n, b.data<T>() + (i + 1) * k * n));
        for (T v : naive_matmul<T>(a2, bi, ta, tb)) want_a.push_back(v);
      }
      check_close(ca.to_vector<T>(), want_a, tol<T>(), tol<T>());
    }
  }
}

TEST_CASE_TEMPLATE("matmul_into: alpha and beta accumulate into the output", T, float, double) {
  Tensor a = random_tensor<T>({4, 2, 3}, 30);
  Tensor b = random_tensor<T>({3, 5}, 31);
  Tensor out = random_tensor<T>({4, 2, 5}, 32);
  const std::vector<T> before = out.to_vector<T>();
  core::matmul_into(out, a, b, Trans::N, Trans::N, 2.0, 1.0);
  std::vector<T> prod = naive_matmul<T>(a, b, Trans::N, Trans::N);
  std::vector<T> want(before.size());
  for (std::size_t i = 0; i < want.size(); ++i) want[i] = T(2) * prod[i] + before[i];
  check_close(out.to_vector<T>(), want, tol<T>(), tol<T>());
  // beta = 0 overwrites (and ignores NaN already there).
  Tensor nan_out = Tensor::full({4, 2, 5}, std::nan(""), core::dtype_of<T>());
  core::matmul_into(nan_out, a, b);
  check_close(nan_out.to_vector<T>(), prod, tol<T>(), tol<T>());
}

TEST_CASE("matmul: empty extents") {
  Tensor a = Tensor::zeros({2, 0});
  Tensor b = Tensor::zeros({0, 3});
  Tensor c = core::matmul(a, b);
  CHECK(c.shape() == Shape{2, 3});
  CHECK(c.to_vector<float>() == std::vector<float>(6, 0.0f));
  Tensor e = core::matmul(Tensor::zeros({0, 4, 2}), Tensor::zeros({2, 3}));
  CHECK(e.shape() == Shape{0, 4, 3});
  Tensor acc = Tensor::ones({2, 3});
  core::matmul_into(acc, a, b, Trans::N, Trans::N, 1.0, 3.0);
  CHECK(acc.to_vector<float>() == std::vector<float>(6, 3.0f));
}

TEST_CASE("matmul: shape and dtype errors name the op and both shapes") {
  CHECK_THROWS_WITH_AS(core::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})),
                       "matmul: inner dimensions differ: a [2, 3] (k=3), b [4, 5] (k=4)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(
      core::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}), Trans::T, Trans::T),
      "matmul: inner dimensions differ: a [2, 3] (transposed, k=2), b [4, 5] (transposed, k=5)",
      ShapeError);
  CHECK_THROWS_WITH_AS(core::matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 4})),
                       "matmul: batch dimensions differ: a [2, 2, 3], b [3, 3, 4] (the leading "
                       "axes must be equal, or one operand rank 2)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(core::matmul(Tensor::zeros({3}), Tensor::zeros({3, 4})),
                       "matmul: needs operands of rank >= 2 (reshape vectors first): a [3], b "
                       "[3, 4]",
                       ShapeError);
  CHECK_THROWS_WITH_AS(core::matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 4}, DType::f64)),
                       "matmul: dtypes differ: a float32 [2, 3], b float64 [3, 4]", DTypeError);
  CHECK_THROWS_AS(core::matmul(Tensor::zeros({2, 3}, DType::i32), Tensor::zeros({3, 4})),
                  DTypeError);
  Tensor out = Tensor::zeros({2, 5});
  CHECK_THROWS_WITH_AS(core::matmul_into(out, Tensor::zeros({2, 3}), Tensor::zeros({3, 4})),
                       "matmul_into: expected shape [2, 4], got [2, 5]", ShapeError);
  Tensor sq = Tensor::zeros({3, 3});
  CHECK_THROWS_AS(core::matmul_into(sq, sq, Tensor::zeros({3, 3})), ValueError);
}

// ============================================================================
// softmax family
// ============================================================================

namespace {

// Naive reference in long double, one row at a time.
struct RowRef {
  std::vector<long double> softmax, log_softmax;
  long double lse;
};

template <class T>
RowRef naive_row(const T* x, std::size_t d) {
  RowRef r;
  long double m = -INFINITY;
  for (std::size_t j = 0; j < d; ++j) m = std::max<long double>(m, x[j]);
  if (m == -INFINITY) {
    r.lse = -INFINITY;
    r.softmax.assign(d, NAN);
    r.log_softmax.assign(d, NAN);
    return r;
  }
  long double s = 0;
  for (std::size_t j = 0; j < d; ++j) s += std::exp(static_cast<long double>(x[j]) - m);
  r.lse = m + std::log(s);
  for (std::size_t j = 0; j < d; ++j) {
    const long double z = static_cast<long double>(x[j]) - m;
    r.softmax.push_back(std::exp(z) / s);
    r.log_softmax.push_back(z - std::log(s));
  }
  return r;
}

template <class T>
std::vector<T> test_rows(std::size_t d) {
  // Row 0: random; row 1: huge values (1e4) next to moderate ones; row 2: -1e30 and
  // normal values; row 3: all -inf; row 4: -inf mixed with finite values.
  std::vector<T> x = random_vec<T>(5 * d, 40, -5, 5);
  for (std::size_t j = 0; j < d; ++j) {
    x[d + j] = static_cast<T>(j % 3 == 0 ? 1e4 : 1e4 - static_cast<double>(j % 7));
    x[2 * d + j] = static_cast<T>(j % 2 == 0 ? -1e30 : x[2 * d + j]);
    x[3 * d + j] = -std::numeric_limits<T>::infinity();
    if (j % 2 == 1 || d == 1) x[4 * d + j] = -std::numeric_limits<T>::infinity();
  }
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("softmax, log_softmax, logsumexp_last against naive loops", T, float, double) {
  for (std::size_t d : {1, 2, 3, 7, 16, 17, 33, 100, 1000}) {
    CAPTURE(d);
    const std::vector<T> xv = test_rows<T>(d);
    Tensor x = Tensor::from<T>({5, d}, xv);
    Tensor sm = core::softmax(x);
    Tensor lsm = core::log_softmax(x);
    Tensor lse = core::logsumexp_last(x);
    Tensor lse_k = core::logsumexp_last(x, true);
    CHECK(lse.shape() == Shape{5});
    CHECK(lse_k.shape() == Shape{5, 1});
    std::vector<T> want_sm, want_lsm, want_lse;
    for (std::size_t r = 0; r < 5; ++r) {
      RowRef ref = naive_row(xv.data() + r * d, d);
      for (auto v : ref.softmax) want_sm.push_back(static_cast<T>(v));
      for (auto v : ref.log_softmax) want_lsm.push_back(static_cast<T>(v));
      want_lse.push_back(static_cast<T>(ref.lse));
    }
    const double rt = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    check_close(sm.to_vector<T>(), want_sm, rt, 1e-30);
    check_close(lsm.to_vector<T>(), want_lsm, rt, rt);
    check_close(lse.to_vector<T>(), want_lse, rt, 0.0);
    CHECK(lse_k.to_vector<T>() == lse.to_vector<T>());
  }
}

TEST_CASE("logsumexp_last: special rows") {
  const double nan = std::nan("");
  Tensor x = Tensor::from<double>({4, 3}, {-kInf, -kInf, -kInf,  // -inf
                                           1.0, kInf, 2.0,       // +inf
                                           -kInf, nan, -kInf,    // NaN
                                           -1e300, -1e300, -1e300});
  std::vector<double> lse = core::logsumexp_last(x).to_vector<double>();
  CHECK(lse[0] == -kInf);
  CHECK(lse[1] == kInf);
  CHECK(std::isnan(lse[2]));
  CHECK(lse[3] == doctest::Approx(-1e300));
  // Empty rows: an empty sum, log(0) = -inf; softmax of an empty row is empty.
  Tensor e = Tensor::zeros({2, 0});
  CHECK(core::logsumexp_last(e).to_vector<float>() ==
        std::vector<float>(2, -std::numeric_limits<float>::infinity()));
  CHECK(core::softmax(e).shape() == Shape{2, 0});
  // Rank >= 1 and floating dtypes only.
  CHECK_THROWS_AS(core::softmax(Tensor::scalar(1.0)), ShapeError);
  CHECK_THROWS_AS(core::softmax(Tensor::zeros({3}, DType::i32)), DTypeError);
}

TEST_CASE_TEMPLATE("softmax and log_softmax backward against naive loops and finite differences", T,
                   float, double) {
  const std::size_t rows = 3, d = 19;
  Tensor x = random_tensor<T>({rows, d}, 50, -3, 3);
  Tensor gy = random_tensor<T>({rows, d}, 51);
  Tensor y = core::softmax(x);
  Tensor ly = core::log_softmax(x);
  std::vector<T> yv = y.to_vector<T>(), lyv = ly.to_vector<T>(), g = gy.to_vector<T>();
  std::vector<T> want_s(rows * d), want_l(rows * d);
  for (std::size_t r = 0; r < rows; ++r) {
    long double dot = 0, sum = 0;
    for (std::size_t j = 0; j < d; ++j) {
      dot += static_cast<long double>(g[r * d + j]) * yv[r * d + j];
      sum += g[r * d + j];
    }
    for (std::size_t j = 0; j < d; ++j) {
      const std::size_t i = r * d + j;
      want_s[i] = static_cast<T>(yv[i] * (g[i] - dot));
      want_l[i] = static_cast<T>(g[i] - std::exp(static_cast<long double>(lyv[i])) * sum);
    }
  }
  const double rt = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  check_close(core::softmax_backward(y, gy).to_vector<T>(), want_s, rt, rt);
  check_close(core::log_softmax_backward(ly, gy).to_vector<T>(), want_l, rt, rt);
  CHECK_THROWS_WITH_AS(core::softmax_backward(y, Tensor::zeros({rows, d + 1}, y.dtype())),
                       "softmax_backward: y [3, 19] and gy [3, 20] must have the same shape",
                       ShapeError);

  if constexpr (std::is_same_v<T, double>) {
    // d/dx of L = sum(gy * softmax(x)) and of L = sum(gy * log_softmax(x)).
    const double h = 1e-6;
    Tensor gx_s = core::softmax_backward(y, gy);
    Tensor gx_l = core::log_softmax_backward(ly, gy);
    for (std::size_t i = 0; i < rows * d; i += 5) {
      Tensor xp = x.clone(), xm = x.clone();
      xp.data<double>()[i] += h;
      xm.data<double>()[i] -= h;
      auto loss = [&](const Tensor& t) {
        double s = 0;
        for (std::size_t j = 0; j < t.size(); ++j) s += g[j] * t.data<double>()[j];
        return s;
      };
      const double fd_s = (loss(core::softmax(xp)) - loss(core::softmax(xm))) / (2 * h);
      const double fd_l = (loss(core::log_softmax(xp)) - loss(core::log_softmax(xm))) / (2 * h);
      CHECK(gx_s.flat(i) == doctest::Approx(fd_s).epsilon(1e-6));
      CHECK(gx_l.flat(i) == doctest::Approx(fd_l).epsilon(1e-6));
    }
  }
}

// ============================================================================
// layer norm
// ============================================================================

TEST_CASE_TEMPLATE("layer_norm: forward against a naive two-pass computation in double", T, float,
                   double) {
  const std::size_t rows = 6, d = 37;
  const double eps = 1e-5;
  std::vector<T> xv = random_vec<T>(rows * d, 60, -2, 3);
  for (std::size_t j = 0; j < d; ++j) xv[d + j] = static_cast<T>(1000.0 + 0.01 * double(j));
  Tensor x = Tensor::from<T>({2, 3, d}, xv);
  Tensor scale = random_tensor<T>({d}, 61, 0.5, 1.5);
  Tensor bias = random_tensor<T>({d}, 62);
  auto res = core::layer_norm(x, scale, bias, eps);
  CHECK(res.y.shape() == Shape{2, 3, d});
  CHECK(res.mean.shape() == Shape{2, 3});
  CHECK(res.rstd.shape() == Shape{2, 3});
  std::vector<T> want_y, want_mean, want_rstd;
  for (std::size_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (std::size_t j = 0; j < d; ++j) mu += xv[r * d + j];
    mu /= double(d);
    for (std::size_t j = 0; j < d; ++j) var += (xv[r * d + j] - mu) * (xv[r * d + j] - mu);
    var /= double(d);
    const double rs = 1.0 / std::sqrt(var + eps);
    for (std::size_t j = 0; j < d; ++j) {
      want_y.push_back(static_cast<T>((xv[r * d + j] - mu) * rs * scale.flat(j) + bias.flat(j)));
    }
    want_mean.push_back(static_cast<T>(mu));
    want_rstd.push_back(static_cast<T>(rs));
  }
  const double rt = std::is_same_v<T, float> ? 1e-4 : 1e-10;
  check_close(res.y.to_vector<T>(), want_y, rt, rt);
  check_close(res.mean.to_vector<T>(), want_mean, rt, rt);
  check_close(res.rstd.to_vector<T>(), want_rstd, rt, rt);
  CHECK_THROWS_WITH_AS(core::layer_norm(x, Tensor::ones({d + 1}, x.dtype()), bias),
                       "layer_norm: scale must have shape [37] for x [2, 3, 37], got [38]",
                       ShapeError);
}

TEST_CASE("layer_norm_backward: central finite differences in double") {
  const std::size_t rows = 4, d = 9;
  const double eps = 1e-3;
  Tensor x = random_tensor<double>({rows, d}, 70, -2, 2);
  Tensor scale = random_tensor<double>({d}, 71, 0.5, 1.5);
  Tensor bias = random_tensor<double>({d}, 72);
  Tensor w = random_tensor<double>({rows, d}, 73);  // L = sum(w * y), so dy = w
  auto loss = [&](const Tensor& xx, const Tensor& ss, const Tensor& bb) {
    Tensor y = core::layer_norm(xx, ss, bb, eps).y;
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += w.flat(i) * y.flat(i);
    return s;
  };
  auto fwd = core::layer_norm(x, scale, bias, eps);
  auto g = core::layer_norm_backward(x, scale, fwd.mean, fwd.rstd, w);
  CHECK(g.dx.shape() == x.shape());
  CHECK(g.dscale.shape() == Shape{d});
  CHECK(g.dbias.shape() == Shape{d});
  const double h = 1e-5;
  auto fd = [&](Tensor& t, std::size_t i) {
    const double old = t.data<double>()[i];
    t.data<double>()[i] = old + h;
    const double lp = loss(x, scale, bias);
    t.data<double>()[i] = old - h;
    const double lm = loss(x, scale, bias);
    t.data<double>()[i] = old;
    return (lp - lm) / (2 * h);
  };
  for (std::size_t i = 0; i < x.size(); ++i) {
    CHECK(g.dx.flat(i) == doctest::Approx(fd(x, i)).epsilon(1e-6));
  }
  for (std::size_t j = 0; j < d; ++j) {
    CHECK(g.dscale.flat(j) == doctest::Approx(fd(scale, j)).epsilon(1e-6));
    CHECK(g.dbias.flat(j) == doctest::Approx(fd(bias, j)).epsilon(1e-6));
  }
  // float32 agrees with float64.
  auto gf = core::layer_norm_backward(x.astype(DType::f32), scale.astype(DType::f32),
                                      fwd.mean.astype(DType::f32), fwd.rstd.astype(DType::f32),
                                      w.astype(DType::f32));
  check_close(gf.dx.to_vector<double>(), g.dx.to_vector<double>(), 1e-4, 1e-5);
  check_close(gf.dscale.to_vector<double>(), g.dscale.to_vector<double>(), 1e-4, 1e-5);
  CHECK_THROWS_WITH_AS(
      core::layer_norm_backward(x, scale, fwd.mean, Tensor::ones({rows + 1}, DType::f64), w),
      "layer_norm_backward: rstd must have shape [4] for x [4, 9], got [5]", ShapeError);
}

// ============================================================================
// take / scatter
// ============================================================================

namespace {

// numpy take by plain index arithmetic.
template <class T>
std::vector<T> naive_take(const Tensor& x, const std::vector<long>& idx, std::size_t axis) {
  const Shape& s = x.shape();
  std::size_t outer = 1, inner = 1;
  for (std::size_t i = 0; i < axis; ++i) outer *= s[i];
  for (std::size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
  std::vector<T> out;
  for (std::size_t o = 0; o < outer; ++o)
    for (long k : idx)
      for (std::size_t j = 0; j < inner; ++j)
        out.push_back(x.data<T>()[(o * s[axis] + static_cast<std::size_t>(k)) * inner + j]);
  return out;
}

}  // namespace

TEST_CASE("take and take_backward along every axis, int32 and int64 indices") {
  Tensor x = random_tensor<float>({3, 4, 5}, 80);
  const std::vector<long> idx = {2, 0, 2, 1, 2};  // repeats
  for (DType idt : {DType::i32, DType::i64}) {
    Tensor ind = Tensor::from<std::int64_t>({5}, {2, 0, 2, 1, 2}).astype(idt);
    for (std::size_t axis = 0; axis < 3; ++axis) {
      CAPTURE(axis);
      Tensor t = core::take(x, ind, static_cast<long>(axis));
      Shape want_shape = x.shape();
      want_shape[axis] = 5;
      CHECK(t.shape() == want_shape);
      CHECK(t.to_vector<float>() == naive_take<float>(x, idx, axis));
      // The scatter-add: naive loop, and sum(take_backward(g)) == sum(g).
      Tensor g = random_tensor<float>(want_shape, 81);
      Tensor back = core::take_backward(g, ind, x.shape(), static_cast<long>(axis));
      CHECK(back.shape() == x.shape());
      std::vector<double> want(x.size(), 0.0);
      const Shape& s = x.shape();
      std::size_t outer = 1, inner = 1;
      for (std::size_t i = 0; i < axis; ++i) outer *= s[i];
      for (std::size_t i = axis + 1; i < 3; ++i) inner *= s[i];
      for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t k = 0; k < idx.size(); ++k)
          for (std::size_t j = 0; j < inner; ++j)
            want[(o * s[axis] + static_cast<std::size_t>(idx[k])) * inner + j] +=
                g.flat((o * idx.size() + k) * inner + j);
      check_close(back.to_vector<double>(), want, 1e-6, 1e-6);
      double sum_g = 0, sum_back = 0;
      for (std::size_t i = 0; i < g.size(); ++i) sum_g += g.flat(i);
      for (std::size_t i = 0; i < back.size(); ++i) sum_back += back.flat(i);
      CHECK(sum_back == doctest::Approx(sum_g).epsilon(1e-6));
    }
  }
  // Multi-dimensional indices, negative axis, int dtype data.
  Tensor xi = Tensor::arange(12, DType::i64).reshape(Shape{3, 4});
  Tensor ind2 = Tensor::from<std::int32_t>({2, 2}, {3, 0, 1, 1});
  Tensor t2 = core::take(xi, ind2, -1);
  CHECK(t2.shape() == Shape{3, 2, 2});
  CHECK(t2.to_vector<long>() == std::vector<long>{3, 0, 1, 1, 7, 4, 5, 5, 11, 8, 9, 9});
}

TEST_CASE("take: bad indices and dtypes are named") {
  Tensor x = Tensor::zeros({5, 3});
  CHECK_THROWS_WITH_AS(core::take(x, Tensor::from<std::int32_t>({2}, {1, 7}), 0),
                       "take: index 7 is out of range for axis 0 of extent 5 (shape [5, 3])",
                       ValueError);
  CHECK_THROWS_WITH_AS(core::take(x, Tensor::from<std::int64_t>({1}, {-1}), 1),
                       "take: index -1 is out of range for axis 1 of extent 3 (shape [5, 3])",
                       ValueError);
  CHECK_THROWS_WITH_AS(core::take(x, Tensor::zeros({1}), 0),
                       "take: indices must be int32 or int64, got float32", DTypeError);
  CHECK_THROWS_AS(core::take(x, Tensor::zeros({1}, DType::i32), 2), ValueError);
  CHECK_THROWS_WITH_AS(
      core::take_backward(Tensor::zeros({3, 3}), Tensor::zeros({2}, DType::i32), {5, 3}, 0),
      "take_backward: expected shape [2, 3], got [3, 3]", ShapeError);
}

TEST_CASE("take_along_axis and its backward against naive loops") {
  Tensor x = random_tensor<double>({3, 4, 2}, 90);
  // Along axis 1 with 5 picks per line (repeats).
  std::vector<std::int64_t> iv(3 * 5 * 2);
  std::mt19937 gen(91);
  for (auto& v : iv) v = static_cast<std::int64_t>(gen() % 4);
  Tensor ind = Tensor::from<std::int64_t>({3, 5, 2}, iv);
  Tensor t = core::take_along_axis(x, ind, 1);
  CHECK(t.shape() == Shape{3, 5, 2});
  Tensor g = random_tensor<double>({3, 5, 2}, 92);
  Tensor back = core::take_along_axis_backward(g, ind, x.shape(), 1);
  std::vector<double> want_back(x.size(), 0.0);
  for (std::size_t a = 0; a < 3; ++a) {
    for (std::size_t i = 0; i < 5; ++i) {
      for (std::size_t c = 0; c < 2; ++c) {
        const std::size_t k = static_cast<std::size_t>(iv[(a * 5 + i) * 2 + c]);
        CHECK(t.at({a, i, c}) == x.at({a, k, c}));
        want_back[(a * 4 + k) * 2 + c] += g.at({a, i, c});
      }
    }
  }
  check_close(back.to_vector<double>(), want_back, 1e-12, 1e-12);
  // int32 indices, last axis.
  Tensor ind32 = Tensor::from<std::int32_t>({3, 4, 1}, {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1});
  Tensor t32 = core::take_along_axis(x, ind32, -1);
  CHECK(t32.shape() == Shape{3, 4, 1});
  CHECK(t32.at({1, 2, 0}) == x.at({1, 2, 1}));
  CHECK_THROWS_WITH_AS(
      core::take_along_axis(x, Tensor::from<std::int32_t>({3, 1, 2}, {0, 1, 2, 3, 4, 0}), 1),
      "take_along_axis: index 4 is out of range for axis 1 of extent 4 (shape "
      "[3, 4, 2])",
      ValueError);
  CHECK_THROWS_WITH_AS(core::take_along_axis(x, Tensor::zeros({2, 4, 2}, DType::i32), 1),
                       "take_along_axis: indices [2, 4, 2] must have the shape of x [3, 4, 2] on "
                       "every axis but 1",
                       ShapeError);
}

// ============================================================================
// sorts, argmax, one_hot
// ============================================================================

TEST_CASE("argsort: stable with ties, along any axis, NaN last") {
  Tensor k = Tensor::from<float>({2, 6}, {3, 1, 2, 1, 3, 1,  //
                                          0, 0, 0, 0, 0, 0});
  CHECK(core::argsort(k).to_vector<long>() ==
        std::vector<long>{1, 3, 5, 2, 0, 4, 0, 1, 2, 3, 4, 5});
  Tensor k32 = core::argsort(k, -1, DType::i32);
  CHECK(k32.dtype() == DType::i32);
  // Along axis 0 of a [4, 2] int tensor.
  Tensor ki = Tensor::from<std::int32_t>({4, 2}, {5, 1, 2, 1, 5, 0, 2, 1});
  CHECK(core::argsort(ki, 0).to_vector<long>() == std::vector<long>{1, 2, 3, 0, 0, 1, 2, 3});
  const float nan = std::nanf("");
  Tensor kn = Tensor::from<float>({5}, {nan, 2, nan, -1, 2});
  CHECK(core::argsort(kn).to_vector<long>() == std::vector<long>{3, 1, 4, 0, 2});
  CHECK_THROWS_AS(core::argsort(k, -1, DType::f32), DTypeError);
  // A larger random case against std::stable_sort.
  std::vector<std::int64_t> big(500);
  std::mt19937 gen(100);
  for (auto& v : big) v = static_cast<std::int64_t>(gen() % 17);
  std::vector<long> want(500);
  std::iota(want.begin(), want.end(), 0L);
  std::stable_sort(want.begin(), want.end(), [&](long a, long b) { return big[a] < big[b]; });
  CHECK(core::argsort(Tensor::from<std::int64_t>({500}, big)).to_vector<long>() == want);
}

TEST_CASE("sort_key_val: keys sorted stably, values permuted the same way") {
  Tensor keys = Tensor::from<std::int32_t>({2, 4}, {3, 1, 3, 0,  //
                                                    2, 2, 1, 2});
  Tensor vals = Tensor::from<double>({2, 4}, {0.5, 1.5, 2.5, 3.5,  //
                                              4.5, 5.5, 6.5, 7.5});
  auto [sk, sv] = core::sort_key_val(keys, vals);
  CHECK(sk.dtype() == DType::i32);
  CHECK(sk.to_vector<int>() == std::vector<int>{0, 1, 3, 3, 1, 2, 2, 2});
  CHECK(sv.to_vector<double>() == std::vector<double>{3.5, 1.5, 0.5, 2.5, 6.5, 4.5, 5.5, 7.5});
  // Along axis 0, float keys, int values.
  Tensor fk = Tensor::from<float>({3, 2}, {2, 0, 1, 0, 2, -1});
  Tensor iv = Tensor::from<std::int64_t>({3, 2}, {10, 11, 12, 13, 14, 15});
  auto [sk0, sv0] = core::sort_key_val(fk, iv, 0);
  CHECK(sk0.to_vector<float>() == std::vector<float>{1, -1, 2, 0, 2, 0});
  CHECK(sv0.to_vector<long>() == std::vector<long>{12, 15, 10, 11, 14, 13});
  CHECK_THROWS_WITH_AS(core::sort_key_val(keys, Tensor::zeros({4, 2})),
                       "sort_key_val: keys [2, 4] and values [4, 2] must have the same shape",
                       ShapeError);
}

TEST_CASE("argmax: first index on ties, NaN wins, any axis") {
  Tensor x = Tensor::from<float>({2, 4}, {1, 3, 3, 2,  //
                                          5, 5, 5, 5});
  CHECK(core::argmax(x).to_vector<long>() == std::vector<long>{1, 0});
  CHECK(core::argmax(x, 0).to_vector<long>() == std::vector<long>{1, 1, 1, 1});
  CHECK(core::argmax(x, 0, DType::i32).dtype() == DType::i32);
  const float nan = std::nanf("");
  Tensor xn = Tensor::from<float>({2, 3}, {1, nan, nan, nan, 9, 1});
  CHECK(core::argmax(xn).to_vector<long>() == std::vector<long>{1, 0});
  CHECK(core::argmax(xn, 0).to_vector<long>() == std::vector<long>{1, 0, 0});
  Tensor xi = Tensor::from<std::int64_t>({2, 2, 3}, {0, 7, 7, 1, 7, 0, 3, 3, 3, 3, 2, 4});
  CHECK(core::argmax(xi, 1).to_vector<long>() == std::vector<long>{1, 0, 0, 0, 0, 1});
  CHECK(core::argmax(xi, 2).shape() == Shape{2, 2});
  CHECK_THROWS_AS(core::argmax(Tensor::zeros({2, 0})), ValueError);
}

TEST_CASE("one_hot") {
  Tensor idx = Tensor::from<std::int32_t>({2, 2}, {0, 2, 1, 5});
  Tensor oh = core::one_hot(idx, 3);
  CHECK(oh.shape() == Shape{2, 2, 3});
  CHECK(oh.dtype() == DType::f32);
  CHECK(oh.to_vector<float>() == std::vector<float>{1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0});
  Tensor oh64 = core::one_hot(Tensor::from<std::int64_t>({2}, {-1, 1}), 2, DType::i64);
  CHECK(oh64.to_vector<long>() == std::vector<long>{0, 0, 0, 1});
  CHECK_THROWS_AS(core::one_hot(Tensor::zeros({2}), 3), DTypeError);
}

// ============================================================================
// vmath
// ============================================================================

namespace {

// Distance in units in the last place of `want` (a value of type T).
template <class T>
double ulps(T got, long double want) {
  const long double a = std::fabs(want);
  const int e = std::ilogb(static_cast<T>(a));
  const long double ulp = std::ldexp(1.0L, std::max(e, std::numeric_limits<T>::min_exponent - 1) -
                                               (std::numeric_limits<T>::digits - 1));
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

}  // namespace

TEST_CASE_TEMPLATE("vexp, vlog, vtanh, vsigmoid against libm", T, float, double) {
  const std::size_t n = 200001;
  std::vector<T> x(n), y(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(-100.0 + 180.0 * double(i) / (n - 1));
  core::vexp(x.data(), y.data(), n);
  double max_ulp = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const long double want = std::exp(static_cast<long double>(x[i]));
    if (want < std::numeric_limits<T>::min()) {  // denormal range: flushed (FTZ) or tiny
      CHECK(std::fabs(y[i]) <= std::numeric_limits<T>::min());
      continue;
    }
    max_ulp = std::max(max_ulp, ulps(y[i], want));
  }
  MESSAGE("vexp<", std::string(std::is_same_v<T, float> ? "float" : "double"),
          "> max error over [-100, 80]: ", max_ulp, " ulp");
  CHECK(max_ulp < 4.0);

  // In place, and a length that leaves a tail.
  std::vector<T> z(x.begin(), x.begin() + 37);
  core::vexp(z.data(), z.data(), z.size());
  for (std::size_t i = 0; i < z.size(); ++i) CHECK(z[i] == y[i]);

  // Special values.
  std::vector<T> sp = {-std::numeric_limits<T>::infinity(),
                       std::numeric_limits<T>::infinity(),
                       std::numeric_limits<T>::quiet_NaN(),
                       T(0),
                       T(1000),
                       T(-1000)};
  std::vector<T> spo(sp.size());
  core::vexp(sp.data(), spo.data(), sp.size());
  CHECK(spo[0] == 0);
  CHECK(spo[1] == std::numeric_limits<T>::infinity());
  CHECK(std::isnan(spo[2]));
  CHECK(spo[3] == 1);
  CHECK(spo[4] == std::numeric_limits<T>::infinity());
  CHECK(spo[5] == 0);

  // log on (0, 1e6], tanh and sigmoid on [-20, 20].
  const std::size_t m = 50001;
  std::vector<T> xl(m), yl(m), xt(m), yt(m), ys(m);
  for (std::size_t i = 0; i < m; ++i) {
    xl[i] = static_cast<T>(1e-6 + 1e6 * std::pow(double(i) / (m - 1), 4.0));
    xt[i] = static_cast<T>(-20.0 + 40.0 * double(i) / (m - 1));
  }
  core::vlog(xl.data(), yl.data(), m);
  core::vtanh(xt.data(), yt.data(), m);
  core::vsigmoid(xt.data(), ys.data(), m);
  double ulp_log = 0, ulp_tanh = 0, ulp_sig = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const long double lx = static_cast<long double>(xl[i]);
    const long double tx = static_cast<long double>(xt[i]);
    if (std::fabs(std::log(lx)) > 1e-3L) ulp_log = std::max(ulp_log, ulps(yl[i], std::log(lx)));
    if (std::fabs(tx) > 1e-3L) ulp_tanh = std::max(ulp_tanh, ulps(yt[i], std::tanh(tx)));
    ulp_sig = std::max(ulp_sig, ulps(ys[i], 1.0L / (1.0L + std::exp(-tx))));
  }
  MESSAGE("vlog max ", ulp_log, " ulp, vtanh max ", ulp_tanh, " ulp, vsigmoid max ", ulp_sig,
          " ulp");
  CHECK(ulp_log < 4.0);
  CHECK(ulp_tanh < 8.0);
  CHECK(ulp_sig < 8.0);
}

TEST_CASE_TEMPLATE("vexp_shift_sum, vmax, vsum, vdot", T, float, double) {
  for (std::size_t n : {1, 3, 8, 16, 17, 31, 64, 67}) {
    CAPTURE(n);
    std::vector<T> x = random_vec<T>(n, 110 + static_cast<unsigned>(n), -10, 10);
    std::vector<T> b = random_vec<T>(n, 120 + static_cast<unsigned>(n));
    std::vector<T> y(n);
    long double want_sum = 0, want_dot = 0, want_es = 0;
    T want_max = x[0];
    for (std::size_t i = 0; i < n; ++i) {
      want_sum += x[i];
      want_dot += static_cast<long double>(x[i]) * b[i];
      want_es += std::exp(static_cast<long double>(x[i]) - 2.5L);
      want_max = std::max(want_max, x[i]);
    }
    CHECK(core::vmax(x.data(), n) == want_max);
    const double rt = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    CHECK(core::vsum(x.data(), n) == doctest::Approx(double(want_sum)).epsilon(rt).scale(10));
    CHECK(core::vdot(x.data(), b.data(), n) ==
          doctest::Approx(double(want_dot)).epsilon(rt).scale(10));
    const T es = core::vexp_shift_sum(x.data(), y.data(), n, T(2.5));
    CHECK(es == doctest::Approx(double(want_es)).epsilon(rt));
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(y[i] == doctest::Approx(std::exp(double(x[i]) - 2.5)).epsilon(rt));
    }
  }
  CHECK(core::vsum(static_cast<const T*>(nullptr), 0) == 0);
}

// ============================================================================
// flush-to-zero
// ============================================================================

TEST_CASE("flush denormals: on at load, zeroes denormal results and inputs, inherited") {
#if defined(__x86_64__) || defined(__i386__)
  CHECK(core::flush_denormals_enabled());  // set by kernels.cpp's static initializer
  volatile float tiny = 1e-38f;            // normal (FLT_MIN is 1.18e-38)
  volatile float half = 0.5f;
  CHECK(tiny * half == 0.0f);        // FTZ: a denormal result becomes 0
  std::uint32_t bits = 0x00000100u;  // a denormal bit pattern
  float den_f;
  std::memcpy(&den_f, &bits, sizeof den_f);
  volatile float den = den_f;
  volatile float one = 1.0f;
  CHECK(den * one == 0.0f);  // DAZ: a denormal input reads as 0
  // exp(-88) = 6.1e-39 < FLT_MIN: 0 under FTZ.
  float xs[3] = {-88.0f, 0.0f, -88.0f}, ys[3];
  const float s = core::vexp_shift_sum(xs, ys, 3, 0.0f);
  CHECK(ys[0] == 0.0f);
  CHECK(ys[2] == 0.0f);
  CHECK(s == 1.0f);
  // Threads started afterwards inherit the setting.
  bool in_thread = false;
  std::thread([&] { in_thread = core::flush_denormals_enabled(); }).join();
  CHECK(in_thread);
  // Off: the same product is a denormal again; then back on.
  core::set_flush_denormals(false);
  CHECK_FALSE(core::flush_denormals_enabled());
  CHECK(tiny * half > 0.0f);
  CHECK(den * one > 0.0f);
  core::set_flush_denormals(true);
  CHECK(core::flush_denormals_enabled());
  CHECK(tiny * half == 0.0f);
#else
  core::set_flush_denormals(true);  // a documented no-op
  CHECK_FALSE(core::flush_denormals_enabled());
#endif
}
