// Tests for the element-wise, reduction and nn ops of fastmath
// (autodiff/fastmath_elementwise.cpp, fastmath_reduce.cpp, fastmath_nn.cpp): for every op, values
// against an independent naive computation (std:: functions in plain loops, or
// numbers worked out by hand), a float64 gradcheck with the default tolerances
// (broadcasting, keepdims and several axis sets included), the tie rules of
// maximum/minimum/max, float32 values, and errors that name the op.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
using autodiff::VarList;

namespace {

// ---- inputs -----------------------------------------------------------------------

/// Uniform values in [lo, hi] (float64 unless `dt` says otherwise).
Tensor uniform(const Shape& shape, double lo, double hi, unsigned seed, DType dt = DType::f64) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(core::shape_size(shape));
  for (double& x : v) x = dist(gen);
  return Tensor::from<double>(shape, v).astype(dt);
}

/// Values with |x| in [lo, hi] and a random sign: away from a kink at 0.
Tensor away_from_zero(const Shape& shape, double lo, double hi, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> mag(lo, hi);
  std::bernoulli_distribution neg(0.5);
  std::vector<double> v(core::shape_size(shape));
  for (double& x : v) x = neg(gen) ? -mag(gen) : mag(gen);
  return Tensor::from<double>(shape, v);
}

/// Values on the grid 0.1 k + offset, k in [-20, 20]: two grids with offsets 0.03 and
/// 0.07 never come closer than 0.04, so maximum/minimum have no ties (or near-ties).
Tensor grid(const Shape& shape, double offset, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int> k(-20, 20);
  std::vector<double> v(core::shape_size(shape));
  for (double& x : v) x = 0.1 * k(gen) + offset;
  return Tensor::from<double>(shape, v);
}

/// A random permutation of 0.37 k - 4: distinct values, for max without ties.
Tensor distinct(const Shape& shape, unsigned seed) {
  std::vector<double> v(core::shape_size(shape));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.37 * static_cast<double>(i) - 4.0;
  std::mt19937_64 gen(seed);
  std::shuffle(v.begin(), v.end(), gen);
  return Tensor::from<double>(shape, v);
}

Tensor f64(const Shape& shape, std::vector<double> v) {
  return Tensor::from<double>(shape, v);
}

// ---- a naive reference: broadcasting by explicit index arithmetic ----------------------

std::vector<std::size_t> unravel(std::size_t flat, const Shape& shape) {
  std::vector<std::size_t> idx(shape.size());
  for (std::size_t a = shape.size(); a-- > 0;) {
    idx[a] = flat % shape[a];
    flat /= shape[a];
  }
  return idx;
}

/// Flat position in `in` of the element that broadcasts to multi-index `idx` of the output.
std::size_t bcast_pos(const std::vector<std::size_t>& idx, const Shape& in) {
  const std::size_t off = idx.size() - in.size();
  std::size_t pos = 0;
  for (std::size_t a = 0; a < in.size(); ++a) pos = pos * in[a] + (in[a] == 1 ? 0 : idx[off + a]);
  return pos;
}

struct Ref {
  Shape shape;
  std::vector<double> v;
};

/// out = f(x_0[..], x_1[..], ...) with numpy broadcasting, element by element.
Ref ref_map(const std::vector<Tensor>& xs,
            const std::function<double(const std::vector<double>&)>& f) {
  std::size_t nd = 0;
  for (const Tensor& x : xs) nd = std::max(nd, x.ndim());
  Shape shape(nd, 1);
  for (const Tensor& x : xs) {
    for (std::size_t a = 0; a < x.ndim(); ++a) {
      std::size_t& d = shape[nd - x.ndim() + a];
      if (x.shape()[a] != 1) d = x.shape()[a];
    }
  }
  std::vector<std::vector<double>> vals;
  for (const Tensor& x : xs) vals.push_back(x.to_vector<double>());
  Ref r{shape, std::vector<double>(core::shape_size(shape))};
  std::vector<double> args(xs.size());
  for (std::size_t j = 0; j < r.v.size(); ++j) {
    const auto idx = unravel(j, shape);
    for (std::size_t k = 0; k < xs.size(); ++k) args[k] = vals[k][bcast_pos(idx, xs[k].shape())];
    r.v[j] = f(args);
  }
  return r;
}

Ref ref_unary(const Tensor& x, const std::function<double(double)>& f) {
  return ref_map({x}, [&](const std::vector<double>& a) { return f(a[0]); });
}

/// A reduction over `axes` (empty = all) by grouping the elements of each output position.
Ref ref_reduce(const Tensor& x, std::vector<long> axes, bool keepdims, const std::string& kind) {
  const std::size_t nd = x.ndim();
  std::vector<bool> flag(nd, axes.empty());
  for (long a : axes) flag[static_cast<std::size_t>(a < 0 ? a + static_cast<long>(nd) : a)] = true;
  Shape kept = x.shape();
  for (std::size_t a = 0; a < nd; ++a) {
    if (flag[a]) kept[a] = 1;
  }
  std::vector<std::vector<double>> groups(core::shape_size(kept));
  const std::vector<double> xv = x.to_vector<double>();
  for (std::size_t j = 0; j < xv.size(); ++j) {
    groups[bcast_pos(unravel(j, x.shape()), kept)].push_back(xv[j]);
  }
  Ref r;
  for (const auto& g : groups) {
    double s = 0;
    const double m = *std::max_element(g.begin(), g.end());
    if (kind == "mean") {
      for (double v : g) s += v;
      r.v.push_back(s / static_cast<double>(g.size()));
    } else if (kind == "max") {
      r.v.push_back(m);
    } else {  // logsumexp
      for (double v : g) s += std::exp(v - m);
      r.v.push_back(m + std::log(s));
    }
  }
  for (std::size_t a = 0; a < nd; ++a) {
    if (keepdims || !flag[a]) r.shape.push_back(kept[a]);
  }
  return r;
}

/// Applies f to each row of the last axis.
Ref ref_rows(const Tensor& x,
             const std::function<std::vector<double>(const std::vector<double>&)>& f) {
  const std::size_t d = x.shape().back();
  const std::vector<double> xv = x.to_vector<double>();
  Ref r{x.shape(), {}};
  for (std::size_t i = 0; i < xv.size(); i += d) {
    const std::vector<double> row(xv.begin() + static_cast<long>(i),
                                  xv.begin() + static_cast<long>(i + d));
    const std::vector<double> out = f(row);
    r.v.insert(r.v.end(), out.begin(), out.end());
  }
  return r;
}

double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
// Trax's FastGelu, with its literal constant.
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)));
}

// ---- checks -------------------------------------------------------------------------------

/// Same shape, and every element within tol * (1 + |want|).
void check_ref(const Tensor& got, const Ref& want, double tol = 1e-12) {
  REQUIRE(got.defined());
  CHECK_MESSAGE(got.shape() == want.shape, "shape " << core::shape_str(got.shape()) << ", want "
                                                    << core::shape_str(want.shape));
  const std::vector<double> g = got.to_vector<double>();
  REQUIRE(g.size() == want.v.size());
  std::size_t bad = g.size();
  for (std::size_t i = 0; i < g.size() && bad == g.size(); ++i) {
    if (!(std::abs(g[i] - want.v[i]) <= tol * (1.0 + std::abs(want.v[i])))) bad = i;
  }
  CHECK_MESSAGE(bad == g.size(), "element " << bad << ": got " << (bad < g.size() ? g[bad] : 0.0)
                                            << ", want " << (bad < g.size() ? want.v[bad] : 0.0));
}

void check_values(const Tensor& got, const Shape& shape, const std::vector<double>& want,
                  double tol = 1e-12) {
  check_ref(got, Ref{shape, want}, tol);
}

/// The worst gradcheck error ratio per op, printed by the last test case.
std::map<std::string, double>& worst_ratios() {
  static std::map<std::string, double> m;
  return m;
}

void grad_ok(const std::string& op, const autodiff::Fn& f, const std::vector<Tensor>& inputs,
             const GradcheckOptions& options = {}) {
  const auto r = gradcheck(f, inputs, options);
  CHECK_MESSAGE(r.ok, op << ": " << r.message);
  CHECK(r.n_checked > 0);
  double& w = worst_ratios()[op];
  w = std::max(w, r.error_ratio);
}

/// Throws E whose message contains `needle` (the op's name).
template <class E, class F>
void check_throws(F&& f, const std::string& needle) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string what = e.what();
    CHECK_MESSAGE(what.find(needle) != std::string::npos,
                  "the message \"" << what << "\" does not name " << needle);
  }
  CHECK_MESSAGE(thrown, "expected an exception naming " << needle);
}

using UnaryFn = Var (*)(const Var&);
using BinaryFn = Var (*)(const Var&, const Var&);

struct UnaryCase {
  const char* name;
  UnaryFn op;
  double (*ref)(double);
  double lo, hi;
  bool avoid_zero;  // inputs with |x| in [lo, hi], random sign
};

const UnaryCase kUnary[] = {
    {"log", fm::log, [](double x) { return std::log(x); }, 0.2, 3.0, false},
    {"tanh", fm::tanh, [](double x) { return std::tanh(x); }, -3.0, 3.0, false},
    {"sigmoid", fm::sigmoid, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, -5.0, 5.0, false},
    {"relu", fm::relu, [](double x) { return x > 0 ? x : 0.0; }, 0.05, 2.0, true},
    {"gelu", fm::gelu, gelu_ref, -4.0, 4.0, false},
    {"gelu_tanh", fm::gelu_tanh, gelu_tanh_ref, -4.0, 4.0, false},
    {"sqrt", fm::sqrt, [](double x) { return std::sqrt(x); }, 0.2, 3.0, false},
    {"rsqrt", fm::rsqrt, [](double x) { return 1.0 / std::sqrt(x); }, 0.2, 3.0, false},
    {"square", fm::square, [](double x) { return x * x; }, -2.0, 2.0, false},
    {"abs", fm::abs, [](double x) { return std::fabs(x); }, 0.05, 2.0, true},
};

Tensor unary_input(const UnaryCase& c, const Shape& shape, unsigned seed) {
  return c.avoid_zero ? away_from_zero(shape, c.lo, c.hi, seed) : uniform(shape, c.lo, c.hi, seed);
}

/// d sum(f(inputs)) / d inputs on a tape.
std::vector<Tensor> grads_of_sum(const std::function<Var(const VarList&)>& f,
                                 const std::vector<Tensor>& xs) {
  return grad([&](const VarList& v) { return fm::sum(f(v)); }, xs);
}

}  // namespace

// =====================================================================================
// element-wise unary functions
// =====================================================================================

TEST_CASE("unary ops: values against std:: in a loop (float64)") {
  for (const UnaryCase& c : kUnary) {
    CAPTURE(c.name);
    for (const Shape& shape : {Shape{}, Shape{7}, Shape{3, 4}, Shape{2, 3, 2}}) {
      const Tensor x = unary_input(c, shape, 11);
      const Var y = c.op(x);
      CHECK(y.dtype() == DType::f64);
      // gelu_tanh is compared with Trax's literal 0.7978845608 (sqrt(2/pi) to 10 digits).
      check_ref(y.value(), ref_unary(x, c.ref), std::string(c.name) == "gelu_tanh" ? 1e-10 : 1e-12);
    }
  }
}

TEST_CASE("unary ops: hand-computed values") {
  const Tensor x = f64({4}, {-1.0, 0.0, 1.0, 2.0});
  // Phi(1) = 0.841344746068543, so gelu(1) = Phi(1), gelu(-1) = -(1 - Phi(1)), gelu(2) = 2 Phi(2).
  check_values(fm::gelu(x).value(), {4},
               {-0.158655253931457, 0.0, 0.841344746068543, 1.954499736103642}, 1e-13);
  // relu and abs at 0: value 0.
  check_values(fm::relu(x).value(), {4}, {0, 0, 1, 2});
  check_values(fm::abs(x).value(), {4}, {1, 0, 1, 2});
  check_values(fm::square(x).value(), {4}, {1, 0, 1, 4});
  check_values(fm::sigmoid(x).value(), {4},
               {0.2689414213699951, 0.5, 0.7310585786300049, 0.8807970779778823}, 1e-14);
  check_values(fm::tanh(x).value(), {4},
               {-0.7615941559557649, 0.0, 0.7615941559557649, 0.9640275800758169}, 1e-14);
  const Tensor p = f64({3}, {0.25, 1.0, 4.0});
  check_values(fm::sqrt(p).value(), {3}, {0.5, 1.0, 2.0});
  check_values(fm::rsqrt(p).value(), {3}, {2.0, 1.0, 0.5});
  check_values(fm::log(f64({2}, {1.0, std::numbers::e})).value(), {2}, {0.0, 1.0});
  // gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.8411919906082768
  check_values(fm::gelu_tanh(f64({1}, {1.0})).value(), {1}, {0.8411919906082768}, 1e-13);
}

TEST_CASE("unary ops: gradcheck (float64)") {
  for (const UnaryCase& c : kUnary) {
    CAPTURE(c.name);
    for (const Shape& shape : {Shape{}, Shape{3, 4}, Shape{2, 3, 2}}) {
      const UnaryFn op = c.op;
      grad_ok(c.name, [op](const VarList& v) { return VarList{op(v[0])}; },
              {unary_input(c, shape, 23)});
    }
  }
  // Composites exercise the rules with cotangents that are not the random seed.
  grad_ok("gelu", [](const VarList& v) { return VarList{fm::gelu(fm::gelu(v[0]))}; },
          {uniform({5}, -3, 3, 5)});
  grad_ok("tanh",
          [](const VarList& v) { return VarList{fm::multiply(fm::tanh(v[0]), fm::sigmoid(v[0]))}; },
          {uniform({5}, -3, 3, 6)});
}

TEST_CASE("gelu and gelu_tanh: derivatives match their formulas at hand-picked points") {
  const Tensor x = f64({5}, {-2.0, -0.5, 0.0, 0.5, 2.0});
  const auto g = grads_of_sum([](const VarList& v) { return fm::gelu(v[0]); }, {x});
  const auto gt = grads_of_sum([](const VarList& v) { return fm::gelu_tanh(v[0]); }, {x});
  std::vector<double> want, want_t;
  const double c = std::sqrt(2.0 / std::numbers::pi), k = 0.044715;
  for (double v : x.to_vector<double>()) {
    const double cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
    const double pdf = std::exp(-v * v / 2) / std::sqrt(2 * std::numbers::pi);
    want.push_back(cdf + v * pdf);
    const double t = std::tanh(c * (v + k * v * v * v));
    want_t.push_back(0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * k * v * v));
  }
  check_values(g[0], {5}, want);
  check_values(gt[0], {5}, want_t);
  CHECK(g[0].flat(2) == doctest::Approx(0.5));  // Phi(0) + 0
  CHECK(gt[0].flat(2) == doctest::Approx(0.5));
}

TEST_CASE("relu and abs: the gradient at 0 is 0") {
  const Tensor x = f64({3}, {-1.5, 0.0, 2.0});
  check_values(grads_of_sum([](const VarList& v) { return fm::relu(v[0]); }, {x})[0], {3},
               {0, 0, 1});
  check_values(grads_of_sum([](const VarList& v) { return fm::abs(v[0]); }, {x})[0], {3},
               {-1, 0, 1});
}

// =====================================================================================
// power
// =====================================================================================

TEST_CASE("power: values with broadcasting") {
  const auto pw = [](const std::vector<double>& a) { return std::pow(a[0], a[1]); };
  const std::pair<Shape, Shape> cases[] = {{{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{3}, {2, 3}},
                                           {{2, 1}, {1, 3}}, {{2, 3}, {}},  {{}, {}}};
  for (const auto& [sa, sb] : cases) {
    CAPTURE(core::shape_str(sa));
    CAPTURE(core::shape_str(sb));
    const Tensor a = uniform(sa, 0.3, 2.5, 1);
    const Tensor b = uniform(sb, -2.0, 2.0, 2);
    check_ref(fm::power(a, b).value(), ref_map({a, b}, pw));
  }
  check_values(fm::power(f64({3}, {2, 3, 0.5}), f64({3}, {3, -1, 2})).value(), {3},
               {8, 1.0 / 3, 0.25});
  // the scalar form
  const Tensor x = uniform({2, 3}, 0.3, 2.5, 3);
  for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -1.0, -1.5}) {
    CAPTURE(e);
    check_ref(fm::power(x, e).value(), ref_unary(x, [e](double v) { return std::pow(v, e); }));
  }
}

TEST_CASE("power: gradcheck (float64)") {
  const std::pair<Shape, Shape> cases[] = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{3}, {2, 3}}, {{2, 1}, {1, 3}}, {{2, 3}, {}}};
  for (const auto& [sa, sb] : cases) {
    CAPTURE(core::shape_str(sa));
    CAPTURE(core::shape_str(sb));
    const Tensor a = uniform(sa, 0.5, 2.0, 4);
    const Tensor b = uniform(sb, -1.5, 2.0, 5);
    grad_ok("power", [](const VarList& v) { return VarList{fm::power(v[0], v[1])}; }, {a, b});
    // one operand a constant
    grad_ok("power", [b](const VarList& v) { return VarList{fm::power(v[0], b)}; }, {a});
    grad_ok("power", [a](const VarList& v) { return VarList{fm::power(a, v[0])}; }, {b});
  }
  for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -1.0, -1.5}) {
    CAPTURE(e);
    grad_ok("power(x, e)", [e](const VarList& v) { return VarList{fm::power(v[0], e)}; },
            {uniform({2, 3}, 0.5, 2.0, 6)});
  }
  // integer exponents: negative bases are fine
  grad_ok("power(x, e)", [](const VarList& v) { return VarList{fm::power(v[0], 3.0)}; },
          {uniform({4}, -2.0, 2.0, 7)});
}

TEST_CASE("power: d/db is only computed when needed; log(0) counts as 0") {
  // Negative bases with a constant exponent: da = b a^(b-1), no NaN from log(a).
  const Tensor a = f64({3}, {-2.0, -0.5, 1.5});
  const Tensor b = f64({3}, {3.0, 2.0, 2.0});
  const auto ga = grads_of_sum([b](const VarList& v) { return fm::power(v[0], b); }, {a});
  check_values(ga[0], {3}, {12.0, -1.0, 3.0});
  // Both watched, only a's gradient asked for: the tape never computes db.
  {
    Tape tape;
    const Var va = tape.watch(a), vb = tape.watch(b);
    const Tensor g = tape.gradient(fm::sum(fm::power(va, vb)), va);
    check_values(g, {3}, {12.0, -1.0, 3.0});
  }
  // 0^b: da = b 0^(b-1), db = out * log(0) taken as 0 (out is 0 anyway).
  const auto g2 = grads_of_sum([](const VarList& v) { return fm::power(v[0], v[1]); },
                               {f64({2}, {0.0, 2.0}), f64({2}, {2.0, 3.0})});
  check_values(g2[0], {2}, {0.0, 12.0});
  check_values(g2[1], {2}, {0.0, 8.0 * std::log(2.0)});
  // The scalar form with exponent 0: zero gradient.
  const auto g3 = grads_of_sum([](const VarList& v) { return fm::power(v[0], 0.0); }, {a});
  check_values(g3[0], {3}, {0, 0, 0});
}

// =====================================================================================
// maximum, minimum
// =====================================================================================

TEST_CASE("maximum and minimum: values and gradcheck with broadcasting") {
  const std::pair<Shape, Shape> cases[] = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{3}, {2, 3}}, {{2, 1}, {1, 3}}, {{2, 3}, {}}};
  for (const auto& [sa, sb] : cases) {
    CAPTURE(core::shape_str(sa));
    CAPTURE(core::shape_str(sb));
    const Tensor a = grid(sa, 0.03, 8);
    const Tensor b = grid(sb, 0.07, 9);
    check_ref(fm::maximum(a, b).value(), ref_map({a, b}, [](const std::vector<double>& v) {
                return v[0] > v[1] ? v[0] : v[1];
              }));
    check_ref(fm::minimum(a, b).value(), ref_map({a, b}, [](const std::vector<double>& v) {
                return v[0] < v[1] ? v[0] : v[1];
              }));
    grad_ok("maximum", [](const VarList& v) { return VarList{fm::maximum(v[0], v[1])}; }, {a, b});
    grad_ok("minimum", [](const VarList& v) { return VarList{fm::minimum(v[0], v[1])}; }, {a, b});
  }
}

TEST_CASE("maximum and minimum: ties send half the gradient to each side") {
  const auto gmax = grads_of_sum([](const VarList& v) { return fm::maximum(v[0], v[1]); },
                                 {f64({3}, {1, 2, 3}), f64({3}, {1, 5, 3})});
  check_values(gmax[0], {3}, {0.5, 0.0, 0.5});
  check_values(gmax[1], {3}, {0.5, 1.0, 0.5});
  const auto gmin = grads_of_sum([](const VarList& v) { return fm::minimum(v[0], v[1]); },
                                 {f64({3}, {1, 2, 3}), f64({3}, {1, 0, 3})});
  check_values(gmin[0], {3}, {0.5, 0.0, 0.5});
  check_values(gmin[1], {3}, {0.5, 1.0, 0.5});
  // With broadcasting: a [[1], [2]] against b [[1, 2, 0]]:
  //   row 0: 1v1 tie, 1v2 b wins, 1v0 a wins -> da[0] = 1.5; row 1: 2v1, 2v2 tie, 2v0 -> 2.5
  //   column sums for b: 0.5 + 0, 1 + 0.5, 0 + 0
  const auto gb = grads_of_sum([](const VarList& v) { return fm::maximum(v[0], v[1]); },
                               {f64({2, 1}, {1, 2}), f64({1, 3}, {1, 2, 0})});
  check_values(gb[0], {2, 1}, {1.5, 2.5});
  check_values(gb[1], {1, 3}, {0.5, 1.5, 0.0});
  // x with itself: the two halves add back to 1.
  const auto gs =
      grads_of_sum([](const VarList& v) { return fm::maximum(v[0], v[0]); }, {f64({2}, {-1, 4})});
  check_values(gs[0], {2}, {1, 1});
}

// =====================================================================================
// where
// =====================================================================================

TEST_CASE("where: values, gradcheck with broadcasting, cond not differentiated") {
  struct Case {
    Shape c, a, b;
  };
  const Case cases[] = {{{2, 3}, {2, 3}, {2, 3}},
                        {{2, 3}, {3}, {2, 3}},
                        {{2, 1}, {1, 3}, {}},
                        {{3}, {2, 1}, {2, 3}},
                        {{2, 3}, {2, 3}, {1}}};
  std::mt19937 gen(3);
  for (const Case& cs : cases) {
    CAPTURE(core::shape_str(cs.c));
    CAPTURE(core::shape_str(cs.a));
    CAPTURE(core::shape_str(cs.b));
    std::vector<std::int32_t> cv(core::shape_size(cs.c));
    for (std::size_t i = 0; i < cv.size(); ++i)
      cv[i] = static_cast<std::int32_t>((i + gen()) % 3);  // 0, 1, 2
    const Tensor cond = Tensor::from<std::int32_t>(cs.c, cv);
    const Tensor a = uniform(cs.a, -2, 2, 10), b = uniform(cs.b, -2, 2, 11);
    check_ref(fm::where(cond, a, b).value(),
              ref_map({cond, a, b},
                      [](const std::vector<double>& v) { return v[0] != 0 ? v[1] : v[2]; }));
    grad_ok("where", [cond](const VarList& v) { return VarList{fm::where(cond, v[0], v[1])}; },
            {a, b});
    // the int32 cond as an input of the function: gradcheck skips integer inputs
    grad_ok("where", [](const VarList& v) { return VarList{fm::where(v[0], v[1], v[2])}; },
            {cond, a, b});
  }
  // Hand-computed: gradient to a where cond, to b elsewhere; a float cond on the tape gets 0.
  Tape tape;
  const Var c = tape.watch(f64({4}, {1, 0, -2, 0}));
  const Var a = tape.watch(f64({4}, {1, 2, 3, 4}));
  const Var b = tape.watch(f64({1}, {10}));
  const Var y = fm::where(c, a, b);
  check_values(y.value(), {4}, {1, 10, 3, 10});
  const auto g = tape.gradient(fm::sum(fm::multiply(y, Tensor(f64({4}, {1, 2, 3, 4})))), {c, a, b});
  check_values(g[0], {4}, {0, 0, 0, 0});
  check_values(g[1], {4}, {1, 0, 3, 0});
  check_values(g[2], {1}, {6});
}

// =====================================================================================
// comparisons and astype
// =====================================================================================

TEST_CASE("equal, less, greater: int32 constants, with broadcasting") {
  const Tensor a = f64({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = f64({3}, {1, 5, 3});
  Tape tape;
  const Var va = tape.watch(a);
  const Var eq = fm::equal(va, b), lt = fm::less(va, b), gt = fm::greater(va, b);
  for (const Var* v : {&eq, &lt, &gt}) {
    CHECK(v->dtype() == DType::i32);
    CHECK_FALSE(v->on_tape());
  }
  check_values(eq.value(), {2, 3}, {1, 0, 1, 0, 1, 0});
  check_values(lt.value(), {2, 3}, {0, 1, 0, 0, 0, 0});
  check_values(gt.value(), {2, 3}, {0, 0, 0, 1, 0, 1});
  // integer operands too
  const Tensor i = Tensor::from<std::int32_t>({3}, {1, 2, 3});
  check_values(fm::less(i, Tensor::from<std::int32_t>({1}, {2})).value(), {3}, {1, 0, 0});
}

TEST_CASE("astype: float <-> float differentiable, to or from int not") {
  const Tensor x = f64({3}, {1.5, -2.25, 3.0});
  const Var y32 = fm::astype(x, DType::f32);
  CHECK(y32.dtype() == DType::f32);
  check_values(y32.value(), {3}, {1.5, -2.25, 3.0});
  check_values(fm::astype(y32, DType::f64).value(), {3}, {1.5, -2.25, 3.0});
  // the cotangent is cast back to the input's dtype
  {
    Tape tape;
    const Var vx = tape.watch(x);
    const Tensor w = Tensor::from<float>({3}, {2.0f, -1.0f, 0.5f});
    const Tensor g = tape.gradient(fm::sum(fm::multiply(fm::astype(vx, DType::f32), w)), vx);
    CHECK(g.dtype() == DType::f64);
    check_values(g, {3}, {2.0, -1.0, 0.5});
  }
  {
    Tape tape;
    const Var vx = tape.watch(Tensor::from<float>({2}, {1.0f, 2.0f}));
    const Tensor g = tape.gradient(
        fm::sum(fm::multiply(fm::astype(vx, DType::f64), Tensor(f64({2}, {3, 4})))), vx);
    CHECK(g.dtype() == DType::f32);
    check_values(g, {2}, {3, 4});
  }
  grad_ok("astype", [](const VarList& v) { return VarList{fm::astype(v[0], DType::f64)}; },
          {uniform({2, 3}, -1, 1, 12)});
  grad_ok("astype",
          [](const VarList& v) {
            return VarList{fm::square(fm::astype(fm::square(v[0]), DType::f64))};
          },
          {uniform({4}, -1, 1, 13)});
  // to and from int: constants
  Tape tape;
  const Var vx = tape.watch(x);
  const Var xi = fm::astype(vx, DType::i32);
  CHECK(xi.dtype() == DType::i32);
  CHECK_FALSE(xi.on_tape());
  check_values(xi.value(), {3}, {1, -2, 3});
  const Var back = fm::astype(xi, DType::f64);
  CHECK_FALSE(back.on_tape());
  check_values(back.value(), {3}, {1, -2, 3});
}

// =====================================================================================
// reductions
// =====================================================================================

TEST_CASE("mean, max, logsumexp: values and gradcheck over axis sets, keepdims or not") {
  const std::vector<std::vector<long>> axis_sets = {{},     {0},    {1},      {2},      {-1},
                                                    {0, 2}, {2, 0}, {-2, -1}, {0, 1, 2}};
  const Shape shape{2, 3, 4};
  const Tensor x = distinct(shape, 14);  // distinct values: max has no ties
  for (const auto& axes : axis_sets) {
    for (bool keepdims : {false, true}) {
      std::ostringstream label;
      for (long a : axes) label << a << ' ';
      CAPTURE(label.str());
      CAPTURE(keepdims);
      check_ref(fm::mean(x, axes, keepdims).value(), ref_reduce(x, axes, keepdims, "mean"));
      check_ref(fm::max(x, axes, keepdims).value(), ref_reduce(x, axes, keepdims, "max"));
      check_ref(fm::logsumexp(x, axes, keepdims).value(),
                ref_reduce(x, axes, keepdims, "logsumexp"));
      grad_ok(
          "mean",
          [axes, keepdims](const VarList& v) { return VarList{fm::mean(v[0], axes, keepdims)}; },
          {x});
      grad_ok("max",
              [axes, keepdims](const VarList& v) { return VarList{fm::max(v[0], axes, keepdims)}; },
              {x});
      grad_ok("logsumexp",
              [axes, keepdims](const VarList& v) {
                return VarList{fm::logsumexp(v[0], axes, keepdims)};
              },
              {x});
    }
  }
  // rank 1 and rank 0
  const Tensor v = distinct({5}, 15);
  check_ref(fm::mean(v).value(), ref_reduce(v, {}, false, "mean"));
  check_ref(fm::max(v, {0}, true).value(), ref_reduce(v, {0}, true, "max"));
  check_ref(fm::logsumexp(v).value(), ref_reduce(v, {}, false, "logsumexp"));
  const Tensor s = f64({}, {1.25});
  check_values(fm::mean(s).value(), {}, {1.25});
  check_values(fm::max(s).value(), {}, {1.25});
  check_values(fm::logsumexp(s).value(), {}, {1.25});
  grad_ok("logsumexp", [](const VarList& w) { return VarList{fm::logsumexp(w[0])}; }, {s});
  // logsumexp of large values stays finite (max-shifted)
  check_values(fm::logsumexp(f64({2}, {1000.0, 1000.0})).value(), {}, {1000.0 + std::log(2.0)});
  // ... and so does its gradient (a finite-difference check would drown in the rounding of
  // values near 1000, so the softmax is checked directly: [1/4, 3/4])
  const auto gl = grads_of_sum([](const VarList& w) { return fm::logsumexp(w[0], {-1}); },
                               {f64({1, 2}, {1000.0, 1000.0 + std::log(3.0)})});
  check_values(gl[0], {1, 2}, {0.25, 0.75}, 1e-12);
}

TEST_CASE("mean, max, logsumexp: hand-computed gradients") {
  const Tensor x = f64({2, 2}, {0.0, std::log(3.0), 1.0, 2.0});
  // mean over axis 1: each element gets 1/2
  check_values(grads_of_sum([](const VarList& v) { return fm::mean(v[0], {1}); }, {x})[0], {2, 2},
               {0.5, 0.5, 0.5, 0.5});
  check_values(grads_of_sum([](const VarList& v) { return fm::mean(v[0]); }, {x})[0], {2, 2},
               {0.25, 0.25, 0.25, 0.25});
  // logsumexp over axis 1 of row [0, log 3]: softmax = [1/4, 3/4]
  const auto g = grads_of_sum([](const VarList& v) { return fm::logsumexp(v[0], {1}); }, {x});
  CHECK(g[0].at({0, 0}) == doctest::Approx(0.25).epsilon(1e-14));
  CHECK(g[0].at({0, 1}) == doctest::Approx(0.75).epsilon(1e-14));
  CHECK(g[0].at({1, 0}) + g[0].at({1, 1}) == doctest::Approx(1.0).epsilon(1e-14));
}

TEST_CASE("max: the gradient is split evenly among tied maxima") {
  const Tensor x = f64({2, 3}, {1, 3, 3, 2, 2, 2});
  const double t = 1.0 / 3.0;
  check_values(grads_of_sum([](const VarList& v) { return fm::max(v[0], {1}); }, {x})[0], {2, 3},
               {0, 0.5, 0.5, t, t, t});
  check_values(grads_of_sum([](const VarList& v) { return fm::max(v[0]); }, {x})[0], {2, 3},
               {0, 0.5, 0.5, 0, 0, 0});
  check_values(grads_of_sum([](const VarList& v) { return fm::max(v[0], {0}, true); },
                            {f64({2, 3}, {2, 3, 1, 2, 1, 1})})[0],
               {2, 3}, {0.5, 1, 0.5, 0.5, 0, 0.5});
  check_values(grads_of_sum([](const VarList& v) { return fm::max(v[0], {-1}, true); }, {x})[0],
               {2, 3}, {0, 0.5, 0.5, t, t, t});
  // a non-uniform cotangent: each row's cotangent is split among its maxima
  Tape tape;
  const Var vx = tape.watch(x);
  const Tensor g = tape.gradient(fm::max(vx, {1}), vx, f64({2}, {6, 9}));
  check_values(g, {2, 3}, {0, 3, 3, 3, 3, 3});
  // integers: a constant
  CHECK_FALSE(fm::max(Tensor::from<std::int32_t>({3}, {1, 5, 2})).on_tape());
  check_values(fm::max(Tensor::from<std::int32_t>({3}, {1, 5, 2})).value(), {}, {5});
}

// =====================================================================================
// softmax, log_softmax, layer_norm, dropout
// =====================================================================================

TEST_CASE("softmax and log_softmax: values and gradcheck over the last axis") {
  const auto softmax_row = [](const std::vector<double>& r) {
    const double m = *std::max_element(r.begin(), r.end());
    double s = 0;
    for (double v : r) s += std::exp(v - m);
    std::vector<double> out;
    for (double v : r) out.push_back(std::exp(v - m) / s);
    return out;
  };
  const auto log_softmax_row = [&](const std::vector<double>& r) {
    std::vector<double> out = softmax_row(r);
    for (double& v : out) v = std::log(v);
    return out;
  };
  for (const Shape& shape : {Shape{5}, Shape{2, 5}, Shape{2, 3, 4}, Shape{3, 1}}) {
    CAPTURE(core::shape_str(shape));
    const Tensor x = uniform(shape, -3, 3, 17);
    check_ref(fm::softmax(x).value(), ref_rows(x, softmax_row));
    check_ref(fm::log_softmax(x).value(), ref_rows(x, log_softmax_row));
    grad_ok("softmax", [](const VarList& v) { return VarList{fm::softmax(v[0])}; }, {x});
    grad_ok("log_softmax", [](const VarList& v) { return VarList{fm::log_softmax(v[0])}; }, {x});
  }
  // hand-computed: softmax([0, log 3]) = [1/4, 3/4]; large logits stay finite
  check_values(fm::softmax(f64({2}, {0.0, std::log(3.0)})).value(), {2}, {0.25, 0.75}, 1e-14);
  check_values(fm::log_softmax(f64({2}, {1000.0, 1000.0})).value(), {2},
               {-std::log(2.0), -std::log(2.0)});
  // the rows of softmax sum to 1, so the gradient of sum(softmax) is 0
  const auto g = grads_of_sum([](const VarList& v) { return fm::softmax(v[0]); },
                              {uniform({2, 4}, -2, 2, 18)});
  CHECK(core::max_abs_diff(g[0], Tensor::zeros({2, 4}, DType::f64)) < 1e-15);
}

TEST_CASE("layer_norm: values and gradcheck of x, scale and bias") {
  for (double eps : {1e-6, 1e-2}) {
    for (const Shape& shape : {Shape{4}, Shape{3, 4}, Shape{2, 3, 5}}) {
      CAPTURE(eps);
      CAPTURE(core::shape_str(shape));
      const std::size_t d = shape.back();
      const Tensor x = uniform(shape, -2, 2, 19);
      const Tensor scale = uniform({d}, 0.5, 1.5, 20);
      const Tensor bias = uniform({d}, -0.5, 0.5, 21);
      const std::vector<double> sc = scale.to_vector<double>(), bi = bias.to_vector<double>();
      const Ref want = ref_rows(x, [&](const std::vector<double>& r) {
        double mu = 0, var = 0;
        for (double v : r) mu += v;
        mu /= static_cast<double>(r.size());
        for (double v : r) var += (v - mu) * (v - mu);
        var /= static_cast<double>(r.size());  // biased, as Trax
        std::vector<double> out;
        for (std::size_t i = 0; i < r.size(); ++i) {
          out.push_back((r[i] - mu) / std::sqrt(var + eps) * sc[i] + bi[i]);
        }
        return out;
      });
      check_ref(fm::layer_norm(x, scale, bias, eps).value(), want, 1e-11);
      grad_ok("layer_norm",
              [eps](const VarList& v) { return VarList{fm::layer_norm(v[0], v[1], v[2], eps)}; },
              {x, scale, bias});
      // x alone (scale and bias constants), and the parameters alone
      grad_ok("layer_norm",
              [eps, scale, bias](const VarList& v) {
                return VarList{fm::layer_norm(v[0], scale, bias, eps)};
              },
              {x});
      grad_ok("layer_norm",
              [eps, x](const VarList& v) { return VarList{fm::layer_norm(x, v[0], v[1], eps)}; },
              {scale, bias});
    }
  }
  // hand-computed: x = [1, 3] has mean 2, variance 1: y = [-1, 1] / sqrt(1 + eps)
  const double r = 1.0 / std::sqrt(1.0 + 1e-6);
  check_values(fm::layer_norm(f64({2}, {1, 3}), f64({2}, {1, 2}), f64({2}, {0, 10})).value(), {2},
               {-r, 2 * r + 10}, 1e-14);
  // dbias = sum of the cotangent over rows; dscale = sum of g * x_hat
  const auto g = grads_of_sum([](const VarList& v) { return fm::layer_norm(v[0], v[1], v[2]); },
                              {f64({2, 2}, {1, 3, 5, 1}), f64({2}, {1, 1}), f64({2}, {0, 0})});
  check_values(g[2], {2}, {2, 2});
  const double r2 = 2.0 / std::sqrt(4.0 + 1e-6);  // row [5, 1]: mean 3, variance 4
  check_values(g[1], {2}, {-r + r2, r - r2}, 1e-14);
}

TEST_CASE("dropout: x * mask / keep_prob, mask broadcast and never differentiated") {
  const double keep = 0.75;
  const Shape xs{2, 3, 4};
  const Tensor x = uniform(xs, -2, 2, 22);
  std::mt19937 gen(5);
  for (const Shape& ms : {Shape{2, 3, 4}, Shape{1, 3, 4}, Shape{4}, Shape{2, 1, 1}, Shape{}}) {
    CAPTURE(core::shape_str(ms));
    std::vector<double> mv(core::shape_size(ms));
    for (double& m : mv) m = static_cast<double>(gen() % 2);
    const Tensor mask = f64(ms, mv);
    const auto want =
        ref_map({x, mask}, [keep](const std::vector<double>& v) { return v[0] * v[1] / keep; });
    check_ref(fm::dropout(x, mask, keep).value(), want, 1e-15);
    // an int32 mask works the same
    std::vector<std::int32_t> mi(mv.begin(), mv.end());
    check_ref(fm::dropout(x, Tensor::from<std::int32_t>(ms, mi), keep).value(), want, 1e-15);
    grad_ok("dropout",
            [mask, keep](const VarList& v) { return VarList{fm::dropout(v[0], mask, keep)}; }, {x});
    GradcheckOptions only_x;
    only_x.check = {true, false};
    grad_ok(
        "dropout", [keep](const VarList& v) { return VarList{fm::dropout(v[0], v[1], keep)}; },
        {x, mask}, only_x);
  }
  // hand-computed gradient, and the mask (even a float one on the tape) gets nothing
  Tape tape;
  const Var vx = tape.watch(f64({4}, {1, 2, 3, 4}));
  const Var vm = tape.watch(f64({4}, {1, 0, 1, 0}));
  const Var y = fm::dropout(vx, vm, 0.5);
  check_values(y.value(), {4}, {2, 0, 6, 0});
  const auto g = tape.gradient(fm::sum(y), {vx, vm});
  check_values(g[0], {4}, {2, 0, 2, 0});
  check_values(g[1], {4}, {0, 0, 0, 0});
  // keep_prob = 1: the mask alone
  check_values(fm::dropout(f64({2}, {1, 2}), f64({2}, {0, 1}), 1.0).value(), {2}, {0, 2});
}

// =====================================================================================
// float32
// =====================================================================================

TEST_CASE("float32: values of every op against double references") {
  const double tol = 2e-6;
  const Tensor x = uniform({2, 3}, 0.3, 2.5, 30, DType::f32);  // positive
  const Tensor s = uniform({2, 3}, -3, 3, 31, DType::f32);     // signed
  const Tensor b = uniform({3}, -1.5, 1.5, 32, DType::f32);
  for (const UnaryCase& c : kUnary) {
    CAPTURE(c.name);
    const bool positive = c.lo > 0 && !c.avoid_zero;
    const Tensor in = positive ? x : s;
    const Var y = c.op(in);
    CHECK(y.dtype() == DType::f32);
    check_ref(y.value(), ref_unary(in, c.ref), tol);
  }
  const auto f32_check = [&](const Var& y, const Ref& want) {
    CHECK(y.dtype() == DType::f32);
    check_ref(y.value(), want, tol);
  };
  f32_check(fm::power(x, b),
            ref_map({x, b}, [](const std::vector<double>& v) { return std::pow(v[0], v[1]); }));
  f32_check(fm::power(x, 1.5), ref_unary(x, [](double v) { return std::pow(v, 1.5); }));
  f32_check(fm::maximum(s, b),
            ref_map({s, b}, [](const std::vector<double>& v) { return std::max(v[0], v[1]); }));
  f32_check(fm::minimum(s, b),
            ref_map({s, b}, [](const std::vector<double>& v) { return std::min(v[0], v[1]); }));
  const Tensor cond = Tensor::from<std::int32_t>({3}, {1, 0, 1});
  f32_check(fm::where(cond, s, b), ref_map({cond, s, b}, [](const std::vector<double>& v) {
              return v[0] != 0 ? v[1] : v[2];
            }));
  f32_check(fm::mean(s, {1}), ref_reduce(s, {1}, false, "mean"));
  f32_check(fm::max(s, {0}, true), ref_reduce(s, {0}, true, "max"));
  f32_check(fm::logsumexp(s, {}, false), ref_reduce(s, {}, false, "logsumexp"));
  f32_check(fm::softmax(s), ref_rows(s, [](const std::vector<double>& r) {
              double z = 0;
              for (double v : r) z += std::exp(v);
              std::vector<double> o;
              for (double v : r) o.push_back(std::exp(v) / z);
              return o;
            }));
  f32_check(fm::log_softmax(s), ref_rows(s, [](const std::vector<double>& r) {
              double z = 0;
              for (double v : r) z += std::exp(v);
              std::vector<double> o;
              for (double v : r) o.push_back(v - std::log(z));
              return o;
            }));
  const Tensor ones = Tensor::ones({3}, DType::f32), zeros = Tensor::zeros({3}, DType::f32);
  f32_check(fm::layer_norm(s, ones, zeros), ref_rows(s, [](const std::vector<double>& r) {
              const double mu = (r[0] + r[1] + r[2]) / 3;
              double var = 0;
              for (double v : r) var += (v - mu) * (v - mu);
              var /= 3;
              std::vector<double> o;
              for (double v : r) o.push_back((v - mu) / std::sqrt(var + 1e-6));
              return o;
            }));
  const Tensor mask = Tensor::from<float>({3}, {1, 0, 1});
  f32_check(fm::dropout(s, mask, 0.8),
            ref_map({s, mask}, [](const std::vector<double>& v) { return v[0] * v[1] / 0.8; }));
  // and a float32 gradient through a few ops
  Tape tape;
  const Var vs = tape.watch(s);
  const Tensor g = tape.gradient(fm::sum(fm::tanh(fm::gelu(vs))), vs);
  CHECK(g.dtype() == DType::f32);
  check_ref(g,
            ref_unary(s,
                      [](double v) {
                        const double t = std::tanh(gelu_ref(v));
                        const double cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
                        const double pdf = std::exp(-v * v / 2) / std::sqrt(2 * std::numbers::pi);
                        return (1 - t * t) * (cdf + v * pdf);
                      }),
            1e-5);
}

// =====================================================================================
// errors
// =====================================================================================

TEST_CASE("errors name the op") {
  const Tensor f = Tensor::ones({2, 3}, DType::f64);
  const Tensor f32 = Tensor::ones({2, 3}, DType::f32);
  const Tensor bad = Tensor::ones({4}, DType::f64);
  const Tensor i = Tensor::ones({2, 3}, DType::i32);

  // binary ops: dtypes and shapes
  check_throws<DTypeError>([&] { fm::power(i, i); }, "power");
  check_throws<DTypeError>([&] { fm::power(f, f32); }, "power");
  check_throws<ShapeError>([&] { fm::power(f, bad); }, "power");
  check_throws<DTypeError>([&] { fm::power(i, 2.0); }, "power");
  for (const auto& [name, op] : {std::pair<const char*, BinaryFn>{"maximum", fm::maximum},
                                 std::pair<const char*, BinaryFn>{"minimum", fm::minimum},
                                 std::pair<const char*, BinaryFn>{"equal", fm::equal},
                                 std::pair<const char*, BinaryFn>{"less", fm::less},
                                 std::pair<const char*, BinaryFn>{"greater", fm::greater}}) {
    CAPTURE(name);
    check_throws<DTypeError>([&] { op(f, f32); }, name);
    check_throws<ShapeError>([&] { op(f, bad); }, name);
  }
  check_throws<ShapeError>([&] { fm::where(Tensor::ones({5}, DType::i32), f, f); }, "where");
  check_throws<ShapeError>([&] { fm::where(i, f, bad); }, "where");
  check_throws<DTypeError>([&] { fm::where(i, f, f32); }, "where");

  // unary float ops refuse integers (abs accepts them, as a constant)
  for (const UnaryCase& c : kUnary) {
    if (std::string(c.name) == "abs") continue;
    CAPTURE(c.name);
    check_throws<DTypeError>([&] { c.op(i); }, c.name);
  }
  const Var ai = fm::abs(Tensor::from<std::int32_t>({2}, {-3, 4}));
  CHECK(ai.dtype() == DType::i32);
  check_values(ai.value(), {2}, {3, 4});

  // reductions
  check_throws<DTypeError>([&] { fm::mean(i); }, "mean");
  check_throws<ValueError>([&] { fm::mean(f, {2}); }, "mean");
  check_throws<ValueError>([&] { fm::mean(f, {1, -1}); }, "mean");
  check_throws<ValueError>([&] { fm::max(f, {-3}); }, "max");
  check_throws<ValueError>([&] { fm::max(Tensor::zeros({2, 0}, DType::f64), {1}); }, "max");
  check_throws<DTypeError>([&] { fm::logsumexp(i); }, "logsumexp");
  check_throws<ValueError>([&] { fm::logsumexp(f, {5}); }, "logsumexp");

  // nn
  check_throws<DTypeError>([&] { fm::softmax(i); }, "softmax");
  check_throws<ShapeError>([&] { fm::softmax(Tensor::scalar(1.0, DType::f64)); }, "softmax");
  check_throws<DTypeError>([&] { fm::log_softmax(i); }, "log_softmax");
  check_throws<ShapeError>([&] { fm::layer_norm(f, bad, bad); }, "layer_norm");
  check_throws<DTypeError>(
      [&] { fm::layer_norm(f, Tensor::ones({3}, DType::f32), Tensor::zeros({3}, DType::f32)); },
      "layer_norm");
  check_throws<DTypeError>(
      [&] { fm::layer_norm(i, Tensor::ones({3}, DType::i32), Tensor::zeros({3}, DType::i32)); },
      "layer_norm");
  check_throws<DTypeError>([&] { fm::dropout(i, i, 0.5); }, "dropout");
  check_throws<ShapeError>([&] { fm::dropout(f, bad, 0.5); }, "dropout");
  for (double kp : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    CAPTURE(kp);
    check_throws<ValueError>([&] { fm::dropout(f, f, kp); }, "dropout");
  }
}

// Last (doctest runs test cases in file order): the worst gradcheck ratio of each op.
TEST_CASE("gradcheck summary") {
  std::ostringstream out;
  out << "worst gradcheck error ratios (<= 1 passes):";
  for (const auto& [op, r] : worst_ratios()) out << "\n  " << op << ": " << r;
  MESSAGE(out.str());
}
