// Tests of core/ops.hpp against independent computations: hand-written expected arrays,
// naive loops over multi-indices, and round trips.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "core/ops.hpp"

using namespace minitrax;
namespace ops = minitrax::core;
using minitrax::core::dtype_of;
using minitrax::core::shape_str;

namespace {

using i32 = std::int32_t;
using i64 = std::int64_t;

constexpr double inf = std::numeric_limits<double>::infinity();
const double nan_ = std::numeric_limits<double>::quiet_NaN();

// ---- independent helpers ------------------------------------------------------------

std::vector<std::size_t> unravel(std::size_t flat, const Shape& shape) {
  std::vector<std::size_t> idx(shape.size());
  for (std::size_t i = shape.size(); i-- > 0;) {
    idx[i] = flat % shape[i];
    flat /= shape[i];
  }
  return idx;
}

std::size_t ravel(const std::vector<std::size_t>& idx, const Shape& shape) {
  std::size_t f = 0;
  for (std::size_t i = 0; i < shape.size(); ++i) f = f * shape[i] + idx[i];
  return f;
}

/// Flat position in `operand` of the element broadcast to out index `idx` (numpy rules).
std::size_t bcast_index(const std::vector<std::size_t>& idx, const Shape& operand) {
  const std::size_t off = idx.size() - operand.size();
  std::vector<std::size_t> j(operand.size());
  for (std::size_t i = 0; i < operand.size(); ++i) j[i] = operand[i] == 1 ? 0 : idx[i + off];
  return ravel(j, operand);
}

/// Deterministic pseudo-random values (an LCG), independent of core/rng.
struct Lcg {
  std::uint64_t s;
  explicit Lcg(std::uint64_t seed) : s(seed * 6364136223846793005ull + 1442695040888963407ull) {}
  double uniform() {  // [0, 1)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) / 9007199254740992.0;
  }
};

template <class T>
Tensor rand_tensor(const Shape& shape, std::uint64_t seed, double lo = -2.0, double hi = 2.0) {
  Lcg g(seed);
  std::vector<T> v(ops::shape_size(shape));
  for (auto& e : v) {
    const double u = lo + (hi - lo) * g.uniform();
    if constexpr (std::is_integral_v<T>) {
      e = static_cast<T>(std::floor(u * 4));  // small integers, both signs
    } else {
      e = static_cast<T>(u);
    }
  }
  return Tensor::from<T>(shape, v);
}

template <class T>
std::vector<T> vals(const Tensor& t) {
  return t.to_vector<T>();
}

bool same_double(double a, double b) {
  return a == b || (std::isnan(a) && std::isnan(b));
}

}  // namespace

// =====================================================================================
// broadcasting
// =====================================================================================

TEST_CASE("ops: broadcast_shapes follows numpy") {
  CHECK(ops::broadcast_shapes({2, 3}, {3}) == Shape{2, 3});
  CHECK(ops::broadcast_shapes({2, 1}, {1, 4}) == Shape{2, 4});
  CHECK(ops::broadcast_shapes({}, {5, 1}) == Shape{5, 1});
  CHECK(ops::broadcast_shapes({4, 1, 3}, {2, 1}) == Shape{4, 2, 3});
  CHECK(ops::broadcast_shapes({0, 3}, {1, 3}) == Shape{0, 3});
  CHECK(ops::broadcast_shapes({0}, {1}) == Shape{0});
  CHECK_THROWS_WITH_AS(ops::broadcast_shapes({2, 3}, {4}, "add"),
                       "add: cannot broadcast shapes [2, 3] and [4]", ShapeError);
  CHECK_THROWS_WITH_AS(ops::broadcast_shapes({0}, {2}),
                       "broadcast: cannot broadcast shapes [0] and [2]", ShapeError);
}

TEST_CASE("ops: broadcast_to copies along new and size-1 axes") {
  Tensor x = Tensor::from<float>({2, 1}, {1, 2});
  Tensor y = ops::broadcast_to(x, {3, 2, 4});
  REQUIRE(y.shape() == Shape{3, 2, 4});
  for (std::size_t f = 0; f < y.size(); ++f) {
    auto idx = unravel(f, y.shape());
    CHECK(y.flat(f) == x.flat(bcast_index(idx, x.shape())));
  }
  Tensor same = ops::broadcast_to(x, {2, 1});
  CHECK(equal(same, x));
  CHECK_FALSE(same.shares_storage(x));
  CHECK(ops::broadcast_to(Tensor::scalar(7, DType::i64), {2}).to_vector<i64>() ==
        std::vector<i64>{7, 7});
  CHECK(ops::broadcast_to(x, {0, 2, 1}).shape() == Shape{0, 2, 1});
  CHECK_THROWS_WITH_AS(ops::broadcast_to(x, {2, 3, 3}),
                       "broadcast_to: cannot broadcast shape [2, 1] to [2, 3, 3]", ShapeError);
  CHECK_THROWS_WITH_AS(ops::broadcast_to(x, {1}),
                       "broadcast_to: cannot broadcast shape [2, 1] to [1]", ShapeError);
}

// =====================================================================================
// element-wise binary ops
// =====================================================================================

TEST_CASE("ops: binary ops, hand-computed") {
  Tensor a = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::from<float>({3}, {10, 20, 30});
  CHECK(equal(ops::add(a, b), Tensor::from<float>({2, 3}, {11, 22, 33, 14, 25, 36})));
  CHECK(equal(ops::sub(a, b), Tensor::from<float>({2, 3}, {-9, -18, -27, -6, -15, -24})));
  CHECK(equal(ops::mul(a, b), Tensor::from<float>({2, 3}, {10, 40, 90, 40, 100, 180})));
  Tensor c = Tensor::from<double>({2, 1}, {2, 4});
  Tensor d = Tensor::from<double>({1, 2}, {1, 8});
  CHECK(equal(ops::div(c, d), Tensor::from<double>({2, 2}, {2, 0.25, 4, 0.5})));
  CHECK(equal(ops::pow(c, d), Tensor::from<double>({2, 2}, {2, 256, 4, 65536})));
  CHECK(equal(ops::maximum(c, d), Tensor::from<double>({2, 2}, {2, 8, 4, 8})));
  CHECK(equal(ops::minimum(c, d), Tensor::from<double>({2, 2}, {1, 2, 1, 4})));
  Tensor p = Tensor::from<i32>({4}, {1, 5, 3, 3});
  Tensor q = Tensor::from<i32>({4}, {2, 5, 1, 3});
  CHECK(equal(ops::equal_to(p, q), Tensor::from<i32>({4}, {0, 1, 0, 1})));
  CHECK(equal(ops::less(p, q), Tensor::from<i32>({4}, {1, 0, 0, 0})));
  CHECK(equal(ops::less_equal(p, q), Tensor::from<i32>({4}, {1, 1, 0, 1})));
  CHECK(equal(ops::greater(p, q), Tensor::from<i32>({4}, {0, 0, 1, 0})));
  CHECK(equal(ops::greater_equal(p, q), Tensor::from<i32>({4}, {0, 1, 1, 1})));
  CHECK(ops::less(a, b).dtype() == DType::i32);
  // rank-0 with rank-0 stays rank 0
  Tensor s = ops::add(Tensor::scalar(1.5), Tensor::scalar(2.0));
  CHECK(s.shape() == Shape{});
  CHECK(s.item<float>() == 3.5f);
}

TEST_CASE("ops: maximum/minimum propagate NaN; comparisons with NaN are false") {
  Tensor a = Tensor::from<float>({3}, {1.f, NAN, 3.f});
  Tensor b = Tensor::from<float>({3}, {NAN, 2.f, 1.f});
  auto mx = vals<float>(ops::maximum(a, b));
  auto mn = vals<float>(ops::minimum(a, b));
  CHECK(std::isnan(mx[0]));
  CHECK(std::isnan(mx[1]));
  CHECK(mx[2] == 3.f);
  CHECK(std::isnan(mn[0]));
  CHECK(std::isnan(mn[1]));
  CHECK(mn[2] == 1.f);
  CHECK(vals<i32>(ops::equal_to(a, a)) == std::vector<i32>{1, 0, 1});
  CHECK(vals<i32>(ops::greater_equal(a, b)) == std::vector<i32>{0, 0, 1});
}

namespace {

// Checks op(a, b) against a naive loop over the broadcast output's multi-indices.
template <class T, class R, class F>
void check_binary_naive(const Tensor& a, const Tensor& b, const Tensor& got, F ref) {
  Shape out = ops::broadcast_shapes(a.shape(), b.shape());
  REQUIRE(got.shape() == out);
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  const R* pg = got.data<R>();
  for (std::size_t f = 0; f < got.size(); ++f) {
    auto idx = unravel(f, out);
    const R want = ref(pa[bcast_index(idx, a.shape())], pb[bcast_index(idx, b.shape())]);
    if constexpr (std::is_floating_point_v<R>) {
      if (!same_double(pg[f], want)) {
        FAIL_CHECK("element " << f << " of " << shape_str(a.shape()) << " op "
                              << shape_str(b.shape()) << ": got " << pg[f] << ", want " << want);
      }
    } else {
      if (pg[f] != want) {
        FAIL_CHECK("element " << f << " of " << shape_str(a.shape()) << " op "
                              << shape_str(b.shape()) << ": got " << pg[f] << ", want " << want);
      }
    }
  }
}

const std::vector<std::pair<Shape, Shape>> kShapePairs = {
    {{2, 3}, {2, 3}},        // same shape: flat loop
    {{2, 3}, {}},            // scalar on the right
    {{}, {4, 5}},            // scalar on the left
    {{1, 1}, {3, 4}},        // size-1 of higher rank
    {{7}, {1, 1, 7}},        // size-equal, different rank
    {{3, 1}, {1, 4}},        // outer product
    {{2, 3, 4}, {4}},        // bias
    {{2, 3, 4}, {3, 1}},     // middle
    {{2, 1, 4}, {3, 1}},     // both broadcast
    {{5, 1, 1}, {1, 6, 7}},  // both broadcast, merged inner
    {{2, 3, 4, 5}, {2, 1, 4, 1}},
    {{1, 3, 1, 5}, {2, 1, 4, 1}},
    {{0, 3}, {3}},     // empty
    {{4, 1}, {4, 0}},  // empty
    {{33, 17}, {17}},  // longer rows (vectorised loop + tail)
    {{5, 40}, {5, 1}},
};

template <class T>
void binary_suite() {
  std::uint64_t seed = 1;
  for (const auto& [sa, sb] : kShapePairs) {
    CAPTURE(shape_str(sa));
    CAPTURE(shape_str(sb));
    Tensor a = rand_tensor<T>(sa, seed++);
    Tensor b = rand_tensor<T>(sb, seed++);
    check_binary_naive<T, T>(a, b, ops::add(a, b), [](T x, T y) { return T(x + y); });
    check_binary_naive<T, T>(a, b, ops::sub(a, b), [](T x, T y) { return T(x - y); });
    check_binary_naive<T, T>(a, b, ops::mul(a, b), [](T x, T y) { return T(x * y); });
    check_binary_naive<T, T>(a, b, ops::maximum(a, b), [](T x, T y) { return std::max(x, y); });
    check_binary_naive<T, T>(a, b, ops::minimum(a, b), [](T x, T y) { return std::min(x, y); });
    check_binary_naive<T, i32>(a, b, ops::equal_to(a, b), [](T x, T y) { return i32(x == y); });
    check_binary_naive<T, i32>(a, b, ops::less(a, b), [](T x, T y) { return i32(x < y); });
    check_binary_naive<T, i32>(a, b, ops::less_equal(a, b), [](T x, T y) { return i32(x <= y); });
    check_binary_naive<T, i32>(a, b, ops::greater(a, b), [](T x, T y) { return i32(x > y); });
    check_binary_naive<T, i32>(a, b, ops::greater_equal(a, b),
                               [](T x, T y) { return i32(x >= y); });
    if constexpr (std::is_floating_point_v<T>) {
      check_binary_naive<T, T>(a, b, ops::div(a, b), [](T x, T y) { return T(x / y); });
      Tensor pa = rand_tensor<T>(sa, seed++, 0.1, 3.0);
      check_binary_naive<T, T>(pa, b, ops::pow(pa, b), [](T x, T y) { return T(std::pow(x, y)); });
    }
  }
}

}  // namespace

TEST_CASE("ops: binary ops broadcast like a naive multi-index loop (float32)") {
  binary_suite<float>();
}
TEST_CASE("ops: binary ops broadcast like a naive multi-index loop (float64)") {
  binary_suite<double>();
}
TEST_CASE("ops: binary ops broadcast like a naive multi-index loop (int32)") {
  binary_suite<i32>();
}
TEST_CASE("ops: binary ops broadcast like a naive multi-index loop (int64)") {
  binary_suite<i64>();
}

TEST_CASE("ops: integer arithmetic wraps like numpy instead of overflowing") {
  const i32 big = std::numeric_limits<i32>::max();
  Tensor a = Tensor::from<i32>({2}, {big, std::numeric_limits<i32>::min()});
  Tensor one = Tensor::from<i32>({1}, {1});
  CHECK(vals<i32>(ops::add(a, one)) ==
        std::vector<i32>{std::numeric_limits<i32>::min(), std::numeric_limits<i32>::min() + 1});
  CHECK(vals<i32>(ops::sub(a, one))[1] == big);
  CHECK(vals<i32>(ops::mul(a, Tensor::from<i32>({1}, {2})))[0] == -2);
  CHECK(vals<i32>(ops::neg(a))[1] == std::numeric_limits<i32>::min());
  CHECK(vals<i32>(ops::abs(a))[1] == std::numeric_limits<i32>::min());
}

TEST_CASE("ops: binary op errors name the op, the dtypes and the shapes") {
  Tensor f = Tensor::zeros({2, 3});
  Tensor d = Tensor::zeros({3}, DType::f64);
  Tensor i = Tensor::zeros({2, 3}, DType::i32);
  CHECK_THROWS_WITH_AS(ops::add(f, Tensor::zeros({4})),
                       "add: cannot broadcast shapes [2, 3] and [4]", ShapeError);
  CHECK_THROWS_WITH_AS(ops::mul(f, d),
                       "mul: mixed dtypes float32 and float64 (shapes [2, 3] and [3]); convert "
                       "one with astype",
                       DTypeError);
  CHECK_THROWS_WITH_AS(ops::less(i, f),
                       "less: mixed dtypes int32 and float32 (shapes [2, 3] and [2, 3]); convert "
                       "one with astype",
                       DTypeError);
  CHECK_THROWS_WITH_AS(ops::div(i, i),
                       "div: needs float32 or float64 operands, got int32 (shapes [2, 3] and "
                       "[2, 3]); convert with astype",
                       DTypeError);
  CHECK_THROWS_AS(ops::pow(i, i), DTypeError);
  CHECK_THROWS_WITH_AS(ops::sub(Tensor(), f), "sub: a is an undefined tensor", ValueError);
  CHECK_THROWS_WITH_AS(ops::maximum(f, Tensor()), "maximum: b is an undefined tensor", ValueError);
}

TEST_CASE("ops: where picks from a or b and broadcasts all three") {
  Tensor cond = Tensor::from<i32>({2, 1}, {1, 0});
  Tensor a = Tensor::from<float>({3}, {1, 2, 3});
  Tensor b = Tensor::scalar(-1.f);
  CHECK(equal(ops::where(cond, a, b), Tensor::from<float>({2, 3}, {1, 2, 3, -1, -1, -1})));
  // same shapes, float condition (nonzero, including NaN, is true)
  Tensor fc = Tensor::from<double>({4}, {0.0, 2.5, -0.0, nan_});
  Tensor x = Tensor::from<i64>({4}, {1, 2, 3, 4});
  Tensor y = Tensor::from<i64>({4}, {10, 20, 30, 40});
  CHECK(vals<i64>(ops::where(fc, x, y)) == std::vector<i64>{10, 2, 30, 4});
  // against a naive loop
  const std::vector<std::array<Shape, 3>> cases = {
      {Shape{3, 1, 4}, Shape{5, 1}, Shape{4}}, {Shape{}, Shape{2, 3}, Shape{3}},
      {Shape{2, 3}, Shape{2, 3}, Shape{}},     {Shape{1, 7}, Shape{3, 1}, Shape{3, 7}},
      {Shape{4, 1}, Shape{4, 1}, Shape{1, 5}},  // one condition per row: fill or copy
      {Shape{6, 1}, Shape{6, 9}, Shape{}},
  };
  std::uint64_t seed = 100;
  for (const auto& [sc, sa, sb] : cases) {
    Tensor c = rand_tensor<i64>(sc, seed++, -0.25, 0.25);  // -1 or 0: both branches
    Tensor ta = rand_tensor<double>(sa, seed++);
    Tensor tb = rand_tensor<double>(sb, seed++);
    Tensor got = ops::where(c, ta, tb);
    Shape out = ops::broadcast_shapes(ops::broadcast_shapes(sc, sa), sb);
    REQUIRE(got.shape() == out);
    for (std::size_t f = 0; f < got.size(); ++f) {
      auto idx = unravel(f, out);
      const double want = c.flat(bcast_index(idx, sc)) != 0 ? ta.flat(bcast_index(idx, sa))
                                                            : tb.flat(bcast_index(idx, sb));
      CHECK(got.flat(f) == want);
    }
  }
  CHECK_THROWS_WITH_AS(ops::where(Tensor::zeros({2}), Tensor::zeros({3}), Tensor::zeros({4})),
                       "where: cannot broadcast shapes [2] (cond), [3] (a) and [4] (b)",
                       ShapeError);
  CHECK_THROWS_AS(ops::where(cond, a, Tensor::zeros({3}, DType::f64)), DTypeError);
}

TEST_CASE("ops: ops with a scalar") {
  Tensor a = Tensor::from<float>({3}, {1, -2, 4});
  CHECK(equal(ops::add(a, 0.5), Tensor::from<float>({3}, {1.5f, -1.5f, 4.5f})));
  CHECK(equal(ops::mul(a, -2.0), Tensor::from<float>({3}, {-2, 4, -8})));
  CHECK(equal(ops::pow(a, 2.0), Tensor::from<float>({3}, {1, 4, 16})));
  CHECK(equal(ops::pow(a, 1.0), a));
  CHECK(equal(ops::pow(a, -1.0), Tensor::from<float>({3}, {1, -0.5f, 0.25f})));
  Tensor p = Tensor::from<double>({3}, {4, 9, 2});
  auto r = vals<double>(ops::pow(p, 0.5));
  CHECK(r[0] == 2.0);
  CHECK(r[1] == 3.0);
  CHECK(r[2] == std::pow(2.0, 0.5));
  CHECK(vals<double>(ops::pow(p, 3.0)) == std::vector<double>{64, 729, 8});
  Tensor i = Tensor::from<i64>({2}, {3, -4});
  CHECK(vals<i64>(ops::add(i, 2.0)) == std::vector<i64>{5, -2});
  CHECK(vals<i64>(ops::mul(i, -3.0)) == std::vector<i64>{-9, 12});
  CHECK_THROWS_WITH_AS(ops::add(Tensor::zeros({2}, DType::i32), 0.5),
                       "add: scalar 0.5 is not representable as int32", ValueError);
  CHECK_THROWS_WITH_AS(ops::mul(Tensor::zeros({2}, DType::i32), 3e9),
                       "mul: scalar 3000000000 is not representable as int32", ValueError);
  CHECK_THROWS_AS(ops::mul(Tensor::zeros({2}, DType::i64), nan_), ValueError);
  CHECK(vals<i32>(ops::add(Tensor::zeros({1}, DType::i32), -2147483648.0)) ==
        std::vector<i32>{std::numeric_limits<i32>::min()});
  CHECK_THROWS_AS(ops::add(Tensor::zeros({1}, DType::i32), 2147483648.0), ValueError);
  CHECK_THROWS_AS(ops::pow(i, 2.0), DTypeError);
}

// =====================================================================================
// element-wise unary ops
// =====================================================================================

namespace {

template <class T>
void unary_suite(double rel) {
  std::vector<T> xs;
  for (int k = -40; k <= 40; ++k) xs.push_back(static_cast<T>(k * 0.37));
  const Shape shape{xs.size()};
  Tensor x = Tensor::from<T>(shape, xs);
  std::vector<T> pos;
  for (int k = 1; k <= 81; ++k) pos.push_back(static_cast<T>(k * 0.29));
  Tensor xp = Tensor::from<T>(shape, pos);

  auto close = [&](const Tensor& got, const std::vector<T>& in, auto ref, double tol) {
    REQUIRE(got.dtype() == dtype_of<T>());
    REQUIRE(got.shape() == shape);
    auto g = vals<T>(got);
    for (std::size_t i = 0; i < in.size(); ++i) {
      const double want = ref(static_cast<double>(in[i]));
      const double err = std::fabs(static_cast<double>(g[i]) - want);
      if (!(err <= tol * std::max(1.0, std::fabs(want)))) {
        FAIL_CHECK("x = " << in[i] << ": got " << g[i] << ", want " << want);
      }
    }
  };
  const double exact = std::is_same_v<T, float> ? 1e-7 : 1e-16;
  close(
      ops::neg(x), xs, [](double v) { return -v; }, 0);
  close(
      ops::abs(x), xs, [](double v) { return std::fabs(v); }, 0);
  close(
      ops::sign(x), xs, [](double v) { return double((v > 0) - (v < 0)); }, 0);
  close(
      ops::square(x), xs, [](double v) { return v * v; }, exact);
  close(
      ops::relu(x), xs, [](double v) { return v > 0 ? v : 0.0; }, 0);
  close(
      ops::sqrt(xp), pos, [](double v) { return std::sqrt(v); }, exact);
  close(
      ops::rsqrt(xp), pos, [](double v) { return 1 / std::sqrt(v); }, 2 * exact);
  close(
      ops::erf(x), xs, [](double v) { return std::erf(v); }, 2 * exact);
  close(
      ops::exp(x), xs, [](double v) { return std::exp(v); }, rel);
  close(
      ops::log(xp), pos, [](double v) { return std::log(v); }, rel);
  close(
      ops::tanh(x), xs, [](double v) { return std::tanh(v); }, rel);
  close(
      ops::sigmoid(x), xs, [](double v) { return 1 / (1 + std::exp(-v)); }, rel);
}

}  // namespace

TEST_CASE("ops: unary ops match std:: (float32)") {
  unary_suite<float>(4e-7);
}
TEST_CASE("ops: unary ops match std:: (float64)") {
  unary_suite<double>(1e-14);
}

TEST_CASE("ops: unary ops: special values, ints, empty tensors, errors") {
  Tensor s = Tensor::from<double>({4}, {0.0, -inf, nan_, inf});
  auto sg = vals<double>(ops::sign(s));
  CHECK(sg[0] == 0.0);
  CHECK(sg[1] == -1.0);
  CHECK(std::isnan(sg[2]));
  CHECK(sg[3] == 1.0);
  auto rl = vals<double>(ops::relu(s));
  CHECK(rl[1] == 0.0);
  CHECK(std::isnan(rl[2]));
  CHECK(rl[3] == inf);
  auto ex = vals<double>(ops::exp(s));
  CHECK(ex[0] == 1.0);
  CHECK(ex[1] == 0.0);
  CHECK(ex[3] == inf);
  Tensor i = Tensor::from<i64>({3}, {-3, 0, 5});
  CHECK(vals<i64>(ops::neg(i)) == std::vector<i64>{3, 0, -5});
  CHECK(vals<i64>(ops::abs(i)) == std::vector<i64>{3, 0, 5});
  CHECK(ops::exp(Tensor::zeros({0, 3})).shape() == Shape{0, 3});
  CHECK(ops::tanh(Tensor::scalar(0.0, DType::f64)).item<double>() == 0.0);
  CHECK_THROWS_WITH_AS(ops::exp(Tensor::zeros({2}, DType::i32)),
                       "exp: needs a float32 or float64 tensor, got int32 of shape [2]",
                       DTypeError);
  for (auto f : {ops::sign, ops::square, ops::log, ops::sqrt, ops::rsqrt, ops::tanh, ops::sigmoid,
                 ops::erf, ops::relu}) {
    CHECK_THROWS_AS(f(i), DTypeError);
  }
  CHECK_THROWS_WITH_AS(ops::log(Tensor()), "log: x is an undefined tensor", ValueError);
}

// =====================================================================================
// sum_to and in-place updates
// =====================================================================================

namespace {

// sum_to against a naive scatter: every element of x is added at its broadcast source.
template <class T>
void check_sum_to(const Shape& xs, const Shape& target, std::uint64_t seed) {
  CAPTURE(shape_str(xs));
  CAPTURE(shape_str(target));
  Tensor x = rand_tensor<T>(xs, seed);
  Tensor got = ops::sum_to(x, target);
  REQUIRE(got.shape() == target);
  REQUIRE(got.dtype() == x.dtype());
  CHECK_FALSE(got.shares_storage(x));
  std::vector<double> want(ops::shape_size(target), 0.0);
  for (std::size_t f = 0; f < x.size(); ++f) {
    want[bcast_index(unravel(f, xs), target)] += x.flat(f);
  }
  for (std::size_t j = 0; j < want.size(); ++j) {
    CHECK(got.flat(j) == doctest::Approx(want[j]).epsilon(1e-5));
  }
}

}  // namespace

TEST_CASE("ops: sum_to reduces a broadcast result back to an operand's shape") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 3}, {3}},
      {{2, 3}, {1, 3}},
      {{2, 3}, {2, 1}},
      {{2, 3}, {}},
      {{2, 3}, {1}},
      {{2, 3}, {1, 1}},
      {{2, 3}, {2, 3}},
      {{4, 1, 3}, {3}},
      {{4, 1, 3}, {1, 3}},
      {{2, 3, 4}, {3, 1}},
      {{2, 3, 4}, {2, 1, 4}},
      {{2, 3, 4}, {1, 3, 1}},
      {{2, 3, 4, 5}, {2, 1, 4, 1}},
      {{2, 3, 4, 5}, {3, 1, 1}},
      {{5, 1}, {1}},
      {{0, 3}, {3}},
      {{3, 0}, {3, 1}},
      {{}, {}},
      {{300, 7}, {7}},
      {{7, 300}, {7, 1}},
  };
  std::uint64_t seed = 7;
  for (const auto& [xs, t] : cases) {
    check_sum_to<float>(xs, t, seed++);
    check_sum_to<double>(xs, t, seed++);
    check_sum_to<i32>(xs, t, seed++);
    check_sum_to<i64>(xs, t, seed++);
  }
  // hand-computed
  Tensor x = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(equal(ops::sum_to(x, {3}), Tensor::from<float>({3}, {5, 7, 9})));
  CHECK(equal(ops::sum_to(x, {2, 1}), Tensor::from<float>({2, 1}, {6, 15})));
  CHECK(equal(ops::sum_to(x, {}), Tensor::from<float>({}, {21})));
  CHECK_THROWS_WITH_AS(ops::sum_to(x, {2}),
                       "sum_to: cannot sum shape [2, 3] down to [2] ([2] does not broadcast to "
                       "[2, 3])",
                       ShapeError);
  CHECK_THROWS_AS(ops::sum_to(x, {1, 2, 3}), ShapeError);
}

TEST_CASE("ops: add_inplace accumulates same-shape, larger and smaller tensors") {
  Tensor acc = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const void* storage = acc.storage_id();
  ops::add_inplace(acc, Tensor::from<float>({2, 3}, {1, 1, 1, 1, 1, 1}));
  CHECK(equal(acc, Tensor::from<float>({2, 3}, {2, 3, 4, 5, 6, 7})));
  ops::add_inplace(acc, Tensor::from<float>({3}, {10, 20, 30}));  // smaller: broadcast
  CHECK(equal(acc, Tensor::from<float>({2, 3}, {12, 23, 34, 15, 26, 37})));
  ops::add_inplace(acc, Tensor::ones({4, 2, 3}));  // larger: summed down first
  CHECK(equal(acc, Tensor::from<float>({2, 3}, {16, 27, 38, 19, 30, 41})));
  CHECK(acc.storage_id() == storage);
  Tensor b = Tensor::from<double>({3, 1}, {1, 2, 3});
  ops::add_inplace(b, Tensor::from<double>({3, 2}, {1, 2, 3, 4, 5, 6}));
  CHECK(vals<double>(b) == std::vector<double>{4, 9, 14});
  Tensor s = Tensor::scalar(1.0, DType::i64);
  ops::add_inplace(s, Tensor::from<i64>({2, 2}, {1, 2, 3, 4}));
  CHECK(s.item<i64>() == 11);
  CHECK_THROWS_WITH_AS(ops::add_inplace(acc, Tensor::zeros({2, 3}, DType::f64)),
                       "add_inplace: mixed dtypes float32 and float64 (shapes [2, 3] and [2, 3]); "
                       "convert one with astype",
                       DTypeError);
  CHECK_THROWS_WITH_AS(ops::add_inplace(acc, Tensor::zeros({3, 2})),
                       "add_inplace: cannot accumulate a tensor of shape [3, 2] into an "
                       "accumulator of shape [2, 3]",
                       ShapeError);
  CHECK_THROWS_AS(ops::add_inplace(b, Tensor::zeros({1, 4}, DType::f64)), ShapeError);
}

TEST_CASE("ops: scale_inplace") {
  Tensor a = Tensor::from<float>({3}, {1, -2, 4});
  ops::scale_inplace(a, 0.5);
  CHECK(vals<float>(a) == std::vector<float>{0.5f, -1.f, 2.f});
  Tensor i = Tensor::from<i32>({2}, {3, -4});
  ops::scale_inplace(i, -2);
  CHECK(vals<i32>(i) == std::vector<i32>{-6, 8});
  CHECK_THROWS_AS(ops::scale_inplace(i, 0.5), ValueError);
  Tensor e = Tensor::zeros({0});
  ops::scale_inplace(e, 3);
  CHECK(e.size() == 0);
}

// =====================================================================================
// reductions
// =====================================================================================

namespace {

enum class R { sum, mean, max, min, lse };

// Naive reduction over `axes` (normalised, no duplicates) of x, in double.
std::vector<double> naive_reduce(const Tensor& x, const std::vector<std::size_t>& axes, R kind,
                                 Shape& kept_shape) {
  const Shape& xs = x.shape();
  kept_shape = xs;
  for (auto a : axes) kept_shape[a] = 1;
  const std::size_t n = ops::shape_size(kept_shape);
  std::vector<std::vector<double>> groups(n);
  for (std::size_t f = 0; f < x.size(); ++f) {
    auto idx = unravel(f, xs);
    for (auto a : axes) idx[a] = 0;
    groups[ravel(idx, kept_shape)].push_back(x.flat(f));
  }
  std::vector<double> out(n);
  for (std::size_t j = 0; j < n; ++j) {
    const auto& g = groups[j];
    switch (kind) {
      case R::sum:
        out[j] = std::accumulate(g.begin(), g.end(), 0.0);
        break;
      case R::mean:
        out[j] = std::accumulate(g.begin(), g.end(), 0.0) / double(g.size());
        break;
      case R::max:
        out[j] = *std::max_element(g.begin(), g.end());
        break;
      case R::min:
        out[j] = *std::min_element(g.begin(), g.end());
        break;
      case R::lse: {
        double m = *std::max_element(g.begin(), g.end());
        double s = 0;
        for (double v : g) s += std::exp(v - m);
        out[j] = m + std::log(s);
        break;
      }
    }
  }
  return out;
}

Tensor run_reduce(R kind, const Tensor& x, const std::vector<long>& axes, bool keepdims) {
  switch (kind) {
    case R::sum:
      return ops::sum(x, axes, keepdims);
    case R::mean:
      return ops::mean(x, axes, keepdims);
    case R::max:
      return ops::max(x, axes, keepdims);
    case R::min:
      return ops::min(x, axes, keepdims);
    case R::lse:
      return ops::logsumexp(x, axes, keepdims);
  }
  return {};
}

template <class T>
void reduce_suite(const Shape& shape, std::uint64_t seed) {
  Tensor x = rand_tensor<T>(shape, seed);
  const std::size_t r = shape.size();
  std::vector<R> kinds{R::sum, R::max, R::min};
  if constexpr (std::is_floating_point_v<T>) {
    kinds.push_back(R::mean);
    kinds.push_back(R::lse);
  }
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (std::size_t mask = 0; mask < (1u << r); ++mask) {
    std::vector<std::size_t> axes;
    std::vector<long> given;
    for (std::size_t a = 0; a < r; ++a) {
      if (mask & (1u << a)) {
        axes.push_back(a);
        // alternate positive and negative spellings of the same axis
        given.push_back(a % 2 ? static_cast<long>(a) - static_cast<long>(r) : static_cast<long>(a));
      }
    }
    if (mask == 0) {  // empty = all axes
      for (std::size_t a = 0; a < r; ++a) axes.push_back(a);
    }
    std::reverse(given.begin(), given.end());  // order of the axes list does not matter
    for (R kind : kinds) {
      for (bool keep : {false, true}) {
        CAPTURE(mask);
        CAPTURE(static_cast<int>(kind));
        CAPTURE(keep);
        Shape kept;
        auto want = naive_reduce(x, axes, kind, kept);
        Tensor got = run_reduce(kind, x, given, keep);
        Shape want_shape;
        for (std::size_t a = 0; a < r; ++a) {
          const bool reduced = std::find(axes.begin(), axes.end(), a) != axes.end();
          if (!reduced) want_shape.push_back(shape[a]);
          if (reduced && keep) want_shape.push_back(1);
        }
        REQUIRE(got.shape() == want_shape);
        REQUIRE(got.dtype() == x.dtype());
        for (std::size_t j = 0; j < want.size(); ++j) {
          if constexpr (std::is_floating_point_v<T>) {
            CHECK(got.flat(j) == doctest::Approx(want[j]).epsilon(tol));
          } else {
            CHECK(got.flat(j) == want[j]);
          }
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("ops: reductions over every axis combination of a rank-3 tensor") {
  reduce_suite<float>({3, 4, 5}, 11);
  reduce_suite<double>({3, 4, 5}, 12);
  reduce_suite<i32>({3, 4, 5}, 13);
  reduce_suite<i64>({3, 4, 5}, 14);
  // sizes that exercise the pairwise / blocked / lane loops
  reduce_suite<float>({3, 300, 9}, 15);
  reduce_suite<double>({2, 5, 1, 200}, 16);
  reduce_suite<float>({1, 1, 1}, 17);
}

TEST_CASE("ops: reductions, hand-computed, rank 0 and empty") {
  Tensor x = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(equal(ops::sum(x), Tensor::from<float>({}, {21})));
  CHECK(equal(ops::sum(x, {0}), Tensor::from<float>({3}, {5, 7, 9})));
  CHECK(equal(ops::sum(x, {-1}, true), Tensor::from<float>({2, 1}, {6, 15})));
  CHECK(equal(ops::mean(x, {1}), Tensor::from<float>({2}, {2, 5})));
  CHECK(equal(ops::max(x, {0}), Tensor::from<float>({3}, {4, 5, 6})));
  CHECK(equal(ops::min(x, {1}), Tensor::from<float>({2}, {1, 4})));
  CHECK(equal(ops::sum(Tensor::from<i32>({2, 2}, {1, 2, 3, 4}), {0}),
              Tensor::from<i32>({2}, {4, 6})));
  // rank 0
  Tensor s = Tensor::scalar(2.5, DType::f64);
  CHECK(ops::sum(s).item<double>() == 2.5);
  CHECK(ops::max(s, {}, true).shape() == Shape{});
  CHECK(ops::logsumexp(s).item<double>() == 2.5);
  // empty
  Tensor e = Tensor::zeros({0, 3});
  CHECK(equal(ops::sum(e, {0}), Tensor::zeros({3})));
  CHECK(ops::sum(e, {1}).shape() == Shape{0});
  CHECK(std::isnan(ops::mean(e, {0}).flat(0)));
  CHECK(ops::logsumexp(e, {0}).flat(0) == -inf);
  CHECK(ops::max(e, {1}).shape() == Shape{0});
  CHECK_THROWS_WITH_AS(ops::max(e, {0}),
                       "max: cannot reduce over zero elements (shape [0, 3], axes [0]): the "
                       "reduction has no identity",
                       ValueError);
  CHECK_THROWS_AS(ops::min(e), ValueError);
  // NaN propagates through max/min
  Tensor n = Tensor::from<double>({2, 9}, {1, 2, 3, 4, 5, 6, 7, 8, 9,  //
                                           1, 2, 3, nan_, 5, 6, 7, 8, 9});
  auto mx = vals<double>(ops::max(n, {1}));
  CHECK(mx[0] == 9);
  CHECK(std::isnan(mx[1]));
  CHECK(std::isnan(vals<double>(ops::min(n, {0}))[3]));
}

TEST_CASE("ops: int sums stay int; mean of ints is a DTypeError") {
  Tensor i = Tensor::from<i32>({3}, {std::numeric_limits<i32>::max(), 1, -5});
  Tensor s = ops::sum(i);
  CHECK(s.dtype() == DType::i32);
  CHECK(s.item<i64>() == 2147483643);  // wraps past INT32_MAX and back
  CHECK(ops::sum(Tensor::from<i64>({2}, {1LL << 40, 3})).item<i64>() == (1LL << 40) + 3);
  CHECK_THROWS_WITH_AS(ops::mean(Tensor::zeros({2, 3}, DType::i64)),
                       "mean: needs a float32 or float64 tensor, got int64 of shape [2, 3]",
                       DTypeError);
  CHECK_THROWS_AS(ops::logsumexp(Tensor::zeros({2}, DType::i32)), DTypeError);
}

TEST_CASE("ops: reduction axis errors") {
  Tensor x = Tensor::zeros({2, 3, 4});
  CHECK_THROWS_WITH_AS(ops::sum(x, {1, -2}), "sum: axis 1 appears more than once in [1, -2]",
                       ValueError);
  CHECK_THROWS_WITH_AS(ops::max(x, {3}),
                       "max: axis 3 is out of range for a tensor of rank 3 (allowed: -3 to 2)",
                       ValueError);
  CHECK_THROWS_AS(ops::logsumexp(x, {0, 0}), ValueError);
  CHECK_THROWS_WITH_AS(ops::mean(Tensor()), "mean: x is an undefined tensor", ValueError);
}

TEST_CASE("ops: float32 sums are accurate (pairwise / blocked)") {
  const std::size_t n = 1 << 20;
  Tensor x = Tensor::full({n}, 0.1);
  const double want = static_cast<double>(0.1f) * n;
  CHECK(ops::sum(x).item<double>() == doctest::Approx(want).epsilon(1e-6));
  Tensor y = Tensor::full({n / 4, 4}, 0.1);
  for (float v : vals<float>(ops::sum(y, {0}))) {
    CHECK(v == doctest::Approx(want / 4).epsilon(1e-5));
  }
}

TEST_CASE("ops: logsumexp is max-shifted and handles infinities") {
  Tensor big = Tensor::from<float>({3}, {1000, 1000, 999});
  CHECK(ops::logsumexp(big).item<double>() ==
        doctest::Approx(1000 + std::log(2 + std::exp(-1.0))).epsilon(1e-6));
  Tensor small = Tensor::from<double>({2}, {-1000, -1000});
  CHECK(ops::logsumexp(small).item<double>() == doctest::Approx(-1000 + std::log(2.0)));
  // rows: all -inf, one -inf, +inf, NaN; over the last axis (contiguous rows)
  Tensor x = Tensor::from<double>({4, 2}, {-inf, -inf, -inf, 0.0, inf, 1.0, nan_, 1.0});
  auto r = vals<double>(ops::logsumexp(x, {1}));
  CHECK(r[0] == -inf);
  CHECK(r[1] == 0.0);
  CHECK(r[2] == inf);
  CHECK(std::isnan(r[3]));
  // the same over the first axis (inner > 1 path)
  Tensor xt = ops::transpose(x);
  auto c = vals<double>(ops::logsumexp(xt, {0}));
  CHECK(c[0] == -inf);
  CHECK(c[1] == 0.0);
  CHECK(c[2] == inf);
  CHECK(std::isnan(c[3]));
  // float32, all -inf over several axes
  Tensor f = Tensor::full({2, 3, 4}, -inf);
  for (float v : vals<float>(ops::logsumexp(f, {0, 2}))) CHECK(v == -INFINITY);
}

// =====================================================================================
// transpose and rank changes
// =====================================================================================

namespace {

template <class T>
void check_transpose(const Tensor& x, const std::vector<std::size_t>& perm) {
  Tensor y = ops::transpose(x, perm);
  const Shape& xs = x.shape();
  Shape ys(xs.size());
  for (std::size_t k = 0; k < perm.size(); ++k) ys[k] = xs[perm[k]];
  REQUIRE(y.shape() == ys);
  const T* px = x.data<T>();
  const T* py = y.data<T>();
  // naive index arithmetic: y[i0, .., in] = x[j] with j[perm[k]] = i[k]
  for (std::size_t f = 0; f < y.size(); ++f) {
    auto i = unravel(f, ys);
    std::vector<std::size_t> j(xs.size());
    for (std::size_t k = 0; k < perm.size(); ++k) j[perm[k]] = i[k];
    if (py[f] != px[ravel(j, xs)]) {
      FAIL_CHECK("transpose of " << shape_str(xs) << ": element " << f << " differs");
      return;
    }
  }
}

template <class T>
void transpose_all_perms(const Shape& shape, std::uint64_t seed) {
  Tensor x = rand_tensor<T>(shape, seed);
  std::vector<std::size_t> perm(shape.size());
  std::iota(perm.begin(), perm.end(), 0);
  int count = 0;
  do {
    CAPTURE(shape_str(shape));
    CAPTURE(count);
    check_transpose<T>(x, perm);
    ++count;
  } while (std::next_permutation(perm.begin(), perm.end()));
  CHECK(count == [&] {
    int f = 1;
    for (std::size_t k = 2; k <= shape.size(); ++k) f *= static_cast<int>(k);
    return f;
  }());
}

}  // namespace

TEST_CASE("ops: transpose of rank-4 tensors, every permutation") {
  transpose_all_perms<float>({2, 3, 4, 5}, 21);
  transpose_all_perms<double>({2, 3, 4, 5}, 22);
  transpose_all_perms<i32>({3, 1, 4, 2}, 23);  // a size-1 axis
  transpose_all_perms<i64>({1, 2, 1, 3}, 24);
  transpose_all_perms<float>({5, 37, 2, 33}, 25);  // tiles with ragged edges
}

TEST_CASE("ops: transpose, large blocked cases, defaults and errors") {
  check_transpose<float>(rand_tensor<float>({70, 45}, 31), {1, 0});
  check_transpose<double>(rand_tensor<double>({3, 65, 37}, 32), {0, 2, 1});
  check_transpose<float>(rand_tensor<float>({64, 3, 64}, 33), {2, 1, 0});
  check_transpose<i32>(rand_tensor<i32>({2, 3, 4, 5, 6}, 34), {4, 0, 3, 1, 2});
  Tensor x = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(equal(ops::transpose(x), Tensor::from<float>({3, 2}, {1, 4, 2, 5, 3, 6})));
  CHECK(equal(ops::swap_last_two(x), ops::transpose(x, {1, 0})));
  Tensor r3 = rand_tensor<double>({2, 3, 4}, 35);
  CHECK(equal(ops::transpose(r3), ops::transpose(r3, {2, 1, 0})));
  check_transpose<double>(ops::swap_last_two(r3), {0, 2, 1});
  CHECK(equal(ops::swap_last_two(ops::swap_last_two(r3)), r3));
  CHECK(ops::transpose(Tensor::scalar(3.0)).item<double>() == 3.0);
  CHECK(ops::transpose(Tensor::zeros({0, 2}), {1, 0}).shape() == Shape{2, 0});
  Tensor same = ops::transpose(x, {0, 1});
  CHECK(equal(same, x));
  CHECK_FALSE(same.shares_storage(x));
  CHECK_THROWS_WITH_AS(ops::transpose(r3, {0, 0, 1}),
                       "transpose: perm [0, 0, 1] is not a permutation of the 3 axes of shape "
                       "[2, 3, 4]",
                       ValueError);
  CHECK_THROWS_AS(ops::transpose(r3, {0, 1}), ValueError);
  CHECK_THROWS_AS(ops::transpose(r3, {0, 1, 3}), ValueError);
  CHECK_THROWS_WITH_AS(ops::swap_last_two(Tensor::zeros({3})),
                       "swap_last_two: needs a tensor of rank >= 2, got shape [3]", ShapeError);
}

TEST_CASE("ops: expand_dims and squeeze") {
  Tensor x = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(ops::expand_dims(x, 0).shape() == Shape{1, 2, 3});
  CHECK(ops::expand_dims(x, 2).shape() == Shape{2, 3, 1});
  CHECK(ops::expand_dims(x, -1).shape() == Shape{2, 3, 1});
  CHECK(ops::expand_dims(x, -3).shape() == Shape{1, 2, 3});
  CHECK(ops::expand_dims(x, 1).to_vector<float>() == x.to_vector<float>());
  CHECK_FALSE(ops::expand_dims(x, 1).shares_storage(x));
  CHECK(ops::expand_dims(Tensor::scalar(1), 0).shape() == Shape{1});
  CHECK_THROWS_WITH_AS(ops::expand_dims(x, 3),
                       "expand_dims: axis 3 is out of range for a tensor of shape [2, 3] "
                       "(allowed: -3 to 2)",
                       ValueError);
  CHECK_THROWS_AS(ops::expand_dims(x, -4), ValueError);
  Tensor y = Tensor::zeros({1, 2, 1, 3, 1});
  CHECK(ops::squeeze(y).shape() == Shape{2, 3});
  CHECK(ops::squeeze(y, {0}).shape() == Shape{2, 1, 3, 1});
  CHECK(ops::squeeze(y, {-1, 2}).shape() == Shape{1, 2, 3});
  CHECK(ops::squeeze(Tensor::zeros({1, 1})).shape() == Shape{});
  CHECK_THROWS_WITH_AS(ops::squeeze(y, {1}),
                       "squeeze: axis 1 of shape [1, 2, 1, 3, 1] has extent 2, not 1", ShapeError);
  CHECK_THROWS_AS(ops::squeeze(y, {0, -5}), ValueError);
}

// =====================================================================================
// concatenate, split, slice
// =====================================================================================

TEST_CASE("ops: concatenate, hand-computed and errors") {
  Tensor a = Tensor::from<float>({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::from<float>({2, 1}, {5, 6});
  Tensor c = Tensor::from<float>({1, 2}, {7, 8});
  CHECK(equal(ops::concatenate({a, b}, 1), Tensor::from<float>({2, 3}, {1, 2, 5, 3, 4, 6})));
  CHECK(equal(ops::concatenate({a, b}, -1), Tensor::from<float>({2, 3}, {1, 2, 5, 3, 4, 6})));
  CHECK(equal(ops::concatenate({a, c, a}, 0),
              Tensor::from<float>({5, 2}, {1, 2, 3, 4, 7, 8, 1, 2, 3, 4})));
  Tensor one = ops::concatenate({a}, 0);
  CHECK(equal(one, a));
  CHECK_FALSE(one.shares_storage(a));
  CHECK(equal(ops::concatenate({Tensor::zeros({2, 0}), b}, 1), b));
  CHECK(vals<i64>(ops::concatenate({Tensor::from<i64>({2}, {1, 2}), Tensor::from<i64>({1}, {3})},
                                   0)) == std::vector<i64>{1, 2, 3});
  CHECK_THROWS_WITH_AS(ops::concatenate({Tensor::zeros({2, 3}), Tensor::zeros({2, 5, 1})}, 1),
                       "concatenate: input 1 has shape [2, 5, 1], expected [2, *] with rank 2 "
                       "and matching extents except axis 1",
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::concatenate({Tensor::zeros({3, 3}), Tensor::zeros({2, 5})}, 1),
                       "concatenate: input 1 has shape [2, 5], expected [3, *] with rank 2 and "
                       "matching extents except axis 1",
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::concatenate({a, Tensor::zeros({2, 2}, DType::f64)}, 0),
                       "concatenate: input 1 has dtype float64, expected float32 (the dtype of "
                       "input 0)",
                       DTypeError);
  CHECK_THROWS_WITH_AS(ops::concatenate({}, 0), "concatenate: needs at least one tensor, got none",
                       ValueError);
  CHECK_THROWS_AS(ops::concatenate({a, b}, 2), ValueError);
  CHECK_THROWS_AS(ops::concatenate({Tensor::scalar(1), Tensor::scalar(2)}, 0), ShapeError);
}

TEST_CASE("ops: split then concatenate is the identity") {
  Tensor x = rand_tensor<double>({4, 6, 5}, 41);
  for (long axis = -3; axis < 3; ++axis) {
    const std::size_t e = x.dim(axis);
    for (std::size_t n = 1; n <= e; ++n) {
      if (e % n) continue;
      auto parts = ops::split(x, n, axis);
      REQUIRE(parts.size() == n);
      for (const auto& p : parts) CHECK(p.dim(axis) == e / n);
      CHECK(equal(ops::concatenate(parts, axis), x));
    }
    std::vector<std::size_t> sizes{1, 0, e - 1};
    auto parts = ops::split(x, sizes, axis);
    REQUIRE(parts.size() == 3);
    CHECK(parts[1].dim(axis) == 0);
    CHECK(equal(ops::concatenate(parts, axis), x));
    CHECK(equal(parts[2], ops::slice(x, axis, 1, static_cast<long>(e))));
  }
  Tensor m = Tensor::from<i32>({2, 3}, {1, 2, 3, 4, 5, 6});
  auto cols = ops::split(m, {2, 1}, 1);
  CHECK(equal(cols[0], Tensor::from<i32>({2, 2}, {1, 2, 4, 5})));
  CHECK(equal(cols[1], Tensor::from<i32>({2, 1}, {3, 6})));
  CHECK_THROWS_WITH_AS(ops::split(m, 2, 1),
                       "split: axis 1 of shape [2, 3] has extent 3, which does not divide into 2 "
                       "equal parts",
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::split(m, {1, 1}, 1),
                       "split: sizes [1, 1] add up to 2, but axis 1 of shape [2, 3] has extent 3",
                       ShapeError);
  CHECK_THROWS_AS(ops::split(m, std::size_t{0}, 0), ValueError);
}

TEST_CASE("ops: slice has Python semantics") {
  // expected indices of range(5)[start:stop:step], written out by hand
  struct Case {
    long start, stop, step;
    std::vector<i32> want;
  };
  const long lmin = std::numeric_limits<long>::min(), lmax = std::numeric_limits<long>::max();
  const std::vector<Case> cases = {
      {1, 4, 1, {1, 2, 3}},
      {-2, 100, 1, {3, 4}},
      {-100, 2, 1, {0, 1}},
      {0, 5, 2, {0, 2, 4}},
      {1, 5, 3, {1, 4}},
      {4, 1, 1, {}},
      {-1, -3, 1, {}},
      {3, 3, 1, {}},
      {0, 100, 10, {0}},
      {-3, -1, 1, {2, 3}},
      {lmin, lmax, 2, {0, 2, 4}},
      {5, 9, 1, {}},
      {0, -1, 2, {0, 2}},
      {-5, 5, 4, {0, 4}},
      {1, 2, lmax, {1}},
  };
  Tensor x = Tensor::arange(5);
  for (const auto& c : cases) {
    CAPTURE(c.start);
    CAPTURE(c.stop);
    CAPTURE(c.step);
    Tensor s = ops::slice(x, 0, c.start, c.stop, c.step);
    CHECK(s.shape() == Shape{c.want.size()});
    CHECK(vals<i32>(s) == c.want);
  }
  // along a middle axis of a rank-3 tensor, per element
  Tensor y = rand_tensor<float>({2, 7, 3}, 51);
  Tensor s = ops::slice(y, 1, 1, -1, 2);  // rows 1, 3, 5
  REQUIRE(s.shape() == Shape{2, 3, 3});
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t j = 0; j < 3; ++j)
      for (std::size_t k = 0; k < 3; ++k) CHECK(s.at({i, j, k}) == y.at({i, 1 + 2 * j, k}));
  CHECK_THROWS_WITH_AS(ops::slice(x, 0, 0, 3, 0), "slice: step must be >= 1, got 0", ValueError);
  CHECK_THROWS_AS(ops::slice(x, 0, 3, 0, -1), ValueError);
  CHECK_THROWS_AS(ops::slice(x, 1, 0, 3), ValueError);
  CHECK_THROWS_AS(ops::slice(Tensor::scalar(1), 0, 0, 1), ShapeError);
}

TEST_CASE("ops: slice_backward puts values where slice took them") {
  Tensor y = rand_tensor<double>({3, 8, 2}, 61);
  const std::vector<std::array<long, 3>> specs = {
      {1, 6, 1}, {0, 8, 3}, {-3, 100, 2}, {5, 2, 1}, {-100, -2, 5}};
  for (const auto& [b, e, st] : specs) {
    Tensor s = ops::slice(y, 1, b, e, st);
    Tensor back = ops::slice_backward(s, y.shape(), 1, b, e, st);
    REQUIRE(back.shape() == y.shape());
    // positions taken by the slice, found by slicing an index tensor the same way
    Tensor pos = ops::slice(Tensor::arange(8, DType::i64), 0, b, e, st);
    std::vector<bool> taken(8, false);
    for (i64 p : vals<i64>(pos)) taken[static_cast<std::size_t>(p)] = true;
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 8; ++j)
        for (std::size_t k = 0; k < 2; ++k)
          CHECK(back.at({i, j, k}) == (taken[j] ? y.at({i, j, k}) : 0.0));
    // and slicing it again gives the slice back
    CHECK(equal(ops::slice(back, 1, b, e, st), s));
  }
  Tensor g = Tensor::from<float>({2}, {7, 9});
  CHECK(equal(ops::slice_backward(g, {5}, 0, 1, 4, 2), Tensor::from<float>({5}, {0, 7, 0, 9, 0})));
  CHECK_THROWS_WITH_AS(ops::slice_backward(Tensor::zeros({3}), {5}, 0, 1, 4, 2),
                       "slice_backward: src has shape [3], but slicing [5] along axis 0 with "
                       "1:4:2 gives [2]",
                       ShapeError);
  CHECK_THROWS_AS(ops::slice_backward(g, {5}, 0, 1, 4, 0), ValueError);
}

// =====================================================================================
// pad, roll
// =====================================================================================

TEST_CASE("ops: pad, hand-computed and against a naive loop") {
  Tensor x = Tensor::from<float>({2, 2}, {1, 2, 3, 4});
  CHECK(equal(ops::pad(x, {{1, 0}, {0, 2}}, -1.0),
              Tensor::from<float>({3, 4}, {-1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1})));
  Tensor i = Tensor::from<i32>({3}, {1, 2, 3});
  CHECK(vals<i32>(ops::pad(i, {{2, 1}}, 9)) == std::vector<i32>{9, 9, 1, 2, 3, 9});
  Tensor y = rand_tensor<double>({2, 3, 4}, 71);
  const std::vector<std::pair<std::size_t, std::size_t>> pads{{1, 2}, {0, 1}, {3, 0}};
  Tensor p = ops::pad(y, pads, 0.5);
  REQUIRE(p.shape() == Shape{5, 4, 7});
  for (std::size_t f = 0; f < p.size(); ++f) {
    auto idx = unravel(f, p.shape());
    bool inside = true;
    std::vector<std::size_t> src(3);
    for (std::size_t a = 0; a < 3; ++a) {
      inside = inside && idx[a] >= pads[a].first && idx[a] < pads[a].first + y.shape()[a];
      src[a] = idx[a] - pads[a].first;
    }
    CHECK(p.flat(f) == (inside ? y.flat(ravel(src, y.shape())) : 0.5));
  }
  // pad then slice is the identity
  Tensor back = ops::slice(ops::slice(ops::slice(p, 0, 1, 3), 1, 0, 3), 2, 3, 7);
  CHECK(equal(back, y));
  CHECK(equal(ops::pad(Tensor::scalar(2.0), {}), Tensor::scalar(2.0)));
  CHECK(equal(ops::pad(Tensor::zeros({0, 2}), {{1, 0}, {0, 0}}, 3.0), Tensor::full({1, 2}, 3.0)));
  CHECK_THROWS_WITH_AS(ops::pad(x, {{1, 1}}),
                       "pad: got 1 (before, after) pairs for a tensor of rank 2 (shape [2, 2]); "
                       "give one pair per axis",
                       ValueError);
  CHECK_THROWS_AS(ops::pad(i, {{1, 1}}, 0.5), ValueError);
}

TEST_CASE("ops: roll follows numpy") {
  Tensor x = Tensor::arange(5);
  CHECK(vals<i32>(ops::roll(x, 2, 0)) == std::vector<i32>{3, 4, 0, 1, 2});
  CHECK(vals<i32>(ops::roll(x, -2, 0)) == std::vector<i32>{2, 3, 4, 0, 1});
  CHECK(vals<i32>(ops::roll(x, 7, 0)) == std::vector<i32>{3, 4, 0, 1, 2});
  CHECK(vals<i32>(ops::roll(x, -7, 0)) == std::vector<i32>{2, 3, 4, 0, 1});
  CHECK(vals<i32>(ops::roll(x, 5, -1)) == std::vector<i32>{0, 1, 2, 3, 4});
  CHECK(vals<i32>(ops::roll(x, std::numeric_limits<long>::min(), 0)) ==
        vals<i32>(ops::roll(x, 2, 0)));  // -2^63 = 2 (mod 5)
  Tensor m = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(equal(ops::roll(m, 1, 0), Tensor::from<float>({2, 3}, {4, 5, 6, 1, 2, 3})));
  CHECK(equal(ops::roll(m, 1, 1), Tensor::from<float>({2, 3}, {3, 1, 2, 6, 4, 5})));
  Tensor y = rand_tensor<double>({3, 4, 5}, 81);
  for (long axis = 0; axis < 3; ++axis) {
    for (long k = -11; k <= 11; ++k) {
      Tensor r = ops::roll(y, k, axis);
      CHECK(equal(ops::roll(r, -k, axis), y));
      // naive: r[.., (i + k) mod n, ..] = y[.., i, ..]
      const long n = static_cast<long>(y.shape()[static_cast<std::size_t>(axis)]);
      for (std::size_t f = 0; f < y.size(); ++f) {
        auto idx = unravel(f, y.shape());
        const long to = ((static_cast<long>(idx[axis]) + k) % n + n) % n;
        idx[axis] = static_cast<std::size_t>(to);
        if (r.flat(ravel(idx, y.shape())) != y.flat(f)) {
          FAIL_CHECK("roll by " << k << " along " << axis);
          break;
        }
      }
    }
  }
  CHECK(ops::roll(Tensor::zeros({0, 3}), 2, 0).shape() == Shape{0, 3});
  CHECK_THROWS_AS(ops::roll(x, 1, 1), ValueError);
  CHECK_THROWS_AS(ops::roll(Tensor::scalar(1), 1, 0), ShapeError);
}

// =====================================================================================
// comparison helpers
// =====================================================================================

TEST_CASE("ops: max_abs_diff, allclose, all_finite") {
  Tensor a = Tensor::from<float>({3}, {1, 2, 3});
  Tensor b = Tensor::from<float>({3}, {1, 2.5f, 2});
  CHECK(ops::max_abs_diff(a, b) == 1.0);
  CHECK(ops::max_abs_diff(a, a) == 0.0);
  CHECK(ops::max_abs_diff(a, Tensor::from<double>({3}, {1, 2, 3.25})) == 0.25);  // mixed ok
  CHECK(ops::max_abs_diff(Tensor::from<double>({2}, {inf, 1}),
                          Tensor::from<double>({2}, {inf, 1})) == 0.0);
  CHECK(std::isnan(
      ops::max_abs_diff(Tensor::from<double>({2}, {nan_, 1}), Tensor::from<double>({2}, {1, 1}))));
  CHECK_THROWS_WITH_AS(ops::max_abs_diff(a, Tensor::zeros({2})),
                       "max_abs_diff: expected shape [3], got [2]", ShapeError);
  // numpy: |a - b| <= atol + rtol * |b|
  Tensor x = Tensor::from<double>({1}, {1.0});
  CHECK(ops::allclose(x, Tensor::from<double>({1}, {1.0 + 1e-6})));
  CHECK_FALSE(ops::allclose(x, Tensor::from<double>({1}, {1.0 + 1e-4})));
  CHECK(ops::allclose(x, Tensor::from<double>({1}, {1.05}), 0.05, 0.0));
  CHECK_FALSE(ops::allclose(Tensor::from<double>({1}, {1.05}), x, 0.05, 0.0));  // asymmetric
  CHECK(ops::allclose(Tensor::from<double>({1}, {0.0}), Tensor::from<double>({1}, {1e-9})));
  CHECK(ops::allclose(Tensor::from<double>({2}, {inf, -inf}),
                      Tensor::from<double>({2}, {inf, -inf})));
  CHECK_FALSE(ops::allclose(Tensor::from<double>({1}, {inf}), Tensor::from<double>({1}, {-inf})));
  CHECK_FALSE(ops::allclose(Tensor::from<double>({1}, {nan_}), Tensor::from<double>({1}, {nan_})));
  CHECK_FALSE(ops::allclose(a, Tensor::zeros({1, 3})));  // shapes differ
  CHECK(ops::allclose(Tensor::zeros({0}), Tensor::zeros({0})));
  CHECK(ops::all_finite(a));
  CHECK(ops::all_finite(Tensor::zeros({0})));
  CHECK(ops::all_finite(Tensor::from<i32>({2}, {1, 2})));
  std::vector<float> big(3000, 1.f);
  CHECK(ops::all_finite(Tensor::from<float>({3000}, big)));
  big[2999] = INFINITY;
  CHECK_FALSE(ops::all_finite(Tensor::from<float>({3000}, big)));
  big[2999] = NAN;
  CHECK_FALSE(ops::all_finite(Tensor::from<float>({3000}, big)));
  CHECK_FALSE(ops::all_finite(Tensor::from<double>({2}, {1.0, -inf})));
  CHECK(ops::all_finite(Tensor::from<double>({2}, {1e308, -1e308})));
}
