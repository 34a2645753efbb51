// Tests of the differentiable shape, layout and index ops (autodiff/fastmath_shape.cpp,
// autodiff/fastmath_index.cpp) and of the arithmetic and matrix products of
// autodiff/fastmath_arith.cpp.
//
// Every op gets (1) a value check against an independent computation (hand-written
// arrays or naive index loops over multi-indices) and (2) a float64 gradcheck with
// the default tolerances. Set MINITRAX_GRADCHECK_REPORT=1 to print the error ratio
// of every gradcheck.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "core/ops.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
using autodiff::VarList;
using core::Trans;

namespace {

using Idx = std::vector<std::size_t>;

Idx unravel(std::size_t flat, const Shape& s) {
  Idx idx(s.size());
  for (std::size_t a = s.size(); a-- > 0;) {
    idx[a] = flat % s[a];
    flat /= s[a];
  }
  return idx;
}

std::size_t ravel(const Idx& idx, const Shape& s) {
  std::size_t flat = 0;
  for (std::size_t a = 0; a < s.size(); ++a) flat = flat * s[a] + idx[a];
  return flat;
}

// Deterministic values in [lo, hi) from a small LCG (independent of core/rng).
Tensor rnd(const Shape& shape, std::uint64_t seed = 1, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape, DType::f64);
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 12345;
  double* p = t.data<double>();
  for (std::size_t i = 0; i < t.size(); ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = lo + (hi - lo) * static_cast<double>(s >> 11) / 9007199254740992.0;
  }
  return t;
}

// 0, 1, 2, ... in the given shape (float64): every element tells where it came from.
Tensor iota(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::f64);
  for (std::size_t i = 0; i < t.size(); ++i) t.data<double>()[i] = static_cast<double>(i);
  return t;
}

// out[idx] = f(idx) for every multi-index of `shape`, as float64.
template <class F>
Tensor naive(const Shape& shape, F f) {
  Tensor t = Tensor::empty(shape, DType::f64);
  for (std::size_t j = 0; j < t.size(); ++j) t.data<double>()[j] = f(unravel(j, shape));
  return t;
}

double get(const Tensor& t, const Idx& idx) {
  return t.flat(ravel(idx, t.shape()));
}

Tensor ids(const Shape& shape, const std::vector<std::int64_t>& v, DType dtype = DType::i64) {
  return Tensor::from<std::int64_t>(shape, v).astype(dtype);
}

Tensor f64(const Shape& shape, const std::vector<double>& v) {
  return Tensor::from<double>(shape, v);
}

void check_grad(const std::string& name, const autodiff::Fn& f, const std::vector<Tensor>& xs,
                const GradcheckOptions& opt = {}) {
  const auto r = autodiff::gradcheck(f, xs, opt);
  INFO("gradcheck of " << name);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.n_checked > 0);
  if (std::getenv("MINITRAX_GRADCHECK_REPORT")) {
    std::printf("gradcheck %-55s ratio %.3g (%zu elements)\n", name.c_str(), r.error_ratio,
                r.n_checked);
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// The shape-error message must name the op and the shapes involved.
#define CHECK_ERROR_NAMES(Type, expr, ...)                                   \
  do {                                                                       \
    CHECK_THROWS_AS(expr, Type);                                             \
    const std::string msg_ = error_of([&] { (void)(expr); });                \
    for (const std::string& want_ : std::vector<std::string>{__VA_ARGS__}) { \
      CHECK_MESSAGE(has(msg_, want_), "'" << want_ << "' not in: " << msg_); \
    }                                                                        \
  } while (0)

}  // namespace

// =====================================================================================
// transpose, expand_dims, squeeze, broadcast_to
// =====================================================================================

TEST_CASE("fastmath::transpose: values against a naive permutation") {
  const Tensor x = iota({2, 3, 4});
  const std::vector<std::vector<std::size_t>> perms = {{2, 0, 1}, {1, 0, 2}, {0, 2, 1}, {0, 1, 2}};
  for (const std::vector<std::size_t>& perm : perms) {
    Shape out_shape;
    for (std::size_t p : perm) out_shape.push_back(x.shape()[p]);
    const Tensor want = naive(out_shape, [&](const Idx& o) {
      Idx xi(3);
      for (std::size_t a = 0; a < 3; ++a) xi[perm[a]] = o[a];
      return get(x, xi);
    });
    CHECK(core::equal(fm::transpose(x, perm).value(), want));
  }
  // An empty perm reverses the axes.
  const Tensor want_rev = naive({4, 3, 2}, [&](const Idx& o) {
    return get(x, {o[2], o[1], o[0]});
  });
  CHECK(core::equal(fm::transpose(x).value(), want_rev));
  // Hand-written, rank 2, int32.
  const Tensor m = Tensor::from<std::int32_t>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(core::equal(fm::transpose(m).value(),
                    Tensor::from<std::int32_t>({3, 2}, {1, 4, 2, 5, 3, 6})));
}

TEST_CASE("fastmath::transpose: gradcheck, one node per call") {
  const std::vector<std::vector<std::size_t>> perms = {{2, 0, 1}, {1, 2, 0}, {0, 2, 1}, {}};
  for (const std::vector<std::size_t>& perm : perms) {
    check_grad("transpose [2,3,4] perm size " + std::to_string(perm.size()),
               [perm](const VarList& v) { return VarList{fm::transpose(v[0], perm)}; },
               {rnd({2, 3, 4}, 1)});
  }
  check_grad("transpose [2,1,3,2] perm {3,1,0,2}",
             [](const VarList& v) {
               return VarList{fm::transpose(v[0], {3, 1, 0, 2})};
             },
             {rnd({2, 1, 3, 2}, 2)});
  Tape tape;
  Var x = tape.watch(rnd({2, 3}));
  Var y = fm::transpose(x);
  CHECK(tape.size() == 2);
  CHECK(tape.node(1).op == "transpose");
  CHECK(tape.node(1).saved.empty());
  CHECK(y.shape() == Shape{3, 2});
}

TEST_CASE("fastmath::expand_dims and squeeze: values and gradcheck") {
  const Tensor x = iota({2, 3});
  struct Case {
    long axis;
    Shape want;
  };
  for (const Case& c : {Case{0, {1, 2, 3}}, Case{1, {2, 1, 3}}, Case{2, {2, 3, 1}},
                        Case{-1, {2, 3, 1}}, Case{-2, {2, 1, 3}}, Case{-3, {1, 2, 3}}}) {
    INFO("axis " << c.axis);
    const Tensor y = fm::expand_dims(x, c.axis).value();
    CHECK(y.shape() == c.want);
    CHECK(y.to_vector<double>() == x.to_vector<double>());
    check_grad("expand_dims axis " + std::to_string(c.axis),
               [a = c.axis](const VarList& v) { return VarList{fm::expand_dims(v[0], a)}; },
               {rnd({2, 3}, 3)});
  }

  const Tensor z = iota({1, 3, 1, 2});
  struct SqCase {
    std::vector<long> axes;
    Shape want;
  };
  for (const SqCase& c : {SqCase{{}, {3, 2}}, SqCase{{0}, {3, 1, 2}}, SqCase{{-2}, {1, 3, 2}},
                          SqCase{{0, -2}, {3, 2}}, SqCase{{2}, {1, 3, 2}}}) {
    INFO("squeeze axes " << c.axes.size());
    const Tensor y = fm::squeeze(z, c.axes).value();
    CHECK(y.shape() == c.want);
    CHECK(y.to_vector<double>() == z.to_vector<double>());
    check_grad("squeeze [1,3,1,2] " + std::to_string(c.axes.size()) + " axes",
               [a = c.axes](const VarList& v) { return VarList{fm::squeeze(v[0], a)}; },
               {rnd({1, 3, 1, 2}, 4)});
  }
}

TEST_CASE("fastmath::broadcast_to: values against naive indexing, gradcheck sums back") {
  struct Case {
    Shape from, to;
  };
  for (const Case& c : {Case{{3, 1}, {2, 3, 4}}, Case{{4}, {2, 3, 4}}, Case{{}, {2, 2}},
                        Case{{1, 3, 1}, {2, 3, 5}}, Case{{2, 3}, {2, 3}}}) {
    INFO("from " << core::shape_str(c.from) << " to " << core::shape_str(c.to));
    const Tensor x = iota(c.from);
    const Tensor want = naive(c.to, [&](const Idx& o) {
      Idx xi(c.from.size());
      const std::size_t lead = c.to.size() - c.from.size();
      for (std::size_t a = 0; a < c.from.size(); ++a) xi[a] = c.from[a] == 1 ? 0 : o[lead + a];
      return get(x, xi);
    });
    CHECK(core::equal(fm::broadcast_to(x, c.to).value(), want));
    check_grad("broadcast_to " + core::shape_str(c.from) + " -> " + core::shape_str(c.to),
               [to = c.to](const VarList& v) { return VarList{fm::broadcast_to(v[0], to)}; },
               {rnd(c.from, 5)});
  }
  // The gradient of sum(broadcast_to(x)) counts the copies of each element.
  Tape tape;
  Var x = tape.watch(rnd({3, 1}));
  Var y = fm::sum(fm::broadcast_to(x, {2, 3, 4}));
  CHECK(core::equal(tape.gradient(y, x), Tensor::full({3, 1}, 8.0, DType::f64)));
}

// =====================================================================================
// concatenate and split
// =====================================================================================

TEST_CASE("fastmath::concatenate: hand-written values") {
  const Tensor a = f64({2, 2}, {1, 2, 3, 4});
  const Tensor b = f64({2, 1}, {5, 6});
  const Tensor c = f64({1, 2}, {7, 8});
  CHECK(core::equal(fm::concatenate({a, b}, 1).value(), f64({2, 3}, {1, 2, 5, 3, 4, 6})));
  CHECK(core::equal(fm::concatenate({a, b}, -1).value(), f64({2, 3}, {1, 2, 5, 3, 4, 6})));
  CHECK(core::equal(fm::concatenate({a, c}, 0).value(), f64({3, 2}, {1, 2, 3, 4, 7, 8})));
  CHECK(core::equal(fm::concatenate({c, a, c}, -2).value(), f64({4, 2}, {7, 8, 1, 2, 3, 4, 7, 8})));
  CHECK(core::equal(fm::concatenate({a}, 0).value(), a));
}

TEST_CASE("fastmath::concatenate: gradcheck on several axes, one node with n inputs") {
  check_grad("concatenate 3 inputs axis 1",
             [](const VarList& v) {
               return VarList{fm::concatenate({v[0], v[1], v[2]}, 1)};
             },
             {rnd({2, 1, 3}, 1), rnd({2, 2, 3}, 2), rnd({2, 3, 3}, 3)});
  check_grad("concatenate 2 inputs axis -1",
             [](const VarList& v) {
               return VarList{fm::concatenate({v[0], v[1]}, -1)};
             },
             {rnd({2, 3, 1}, 4), rnd({2, 3, 4}, 5)});
  check_grad("concatenate 2 inputs axis 0",
             [](const VarList& v) {
               return VarList{fm::concatenate({v[0], v[1]}, 0)};
             },
             {rnd({1, 3}, 6), rnd({3, 3}, 7)});
  check_grad("concatenate [x, const, x] axis -2",
             [](const VarList& v) {
               return VarList{fm::concatenate({v[0], Var(rnd({1, 2}, 9)), v[0]}, -2)};
             },
             {rnd({2, 2}, 8)});
  Tape tape;
  Var x = tape.watch(rnd({2, 2}));
  Var y = tape.watch(rnd({2, 3}));
  Var z = fm::concatenate({x, rnd({2, 1}), y, x}, 1);
  CHECK(z.shape() == Shape{2, 8});
  CHECK(tape.size() == 3);
  CHECK(tape.node(2).inputs.size() == 4);
  // sum over everything: x appears twice, so its gradient is 2.
  const auto g = tape.gradient(fm::sum(z), {x, y});
  CHECK(core::equal(g[0], Tensor::full({2, 2}, 2.0, DType::f64)));
  CHECK(core::equal(g[1], Tensor::full({2, 3}, 1.0, DType::f64)));
}

TEST_CASE("fastmath::split: hand-written values, both forms") {
  const Tensor x = iota({2, 6});
  const VarList p = fm::split(x, std::vector<std::size_t>{1, 3, 2}, -1);
  REQUIRE(p.size() == 3);
  CHECK(core::equal(p[0].value(), f64({2, 1}, {0, 6})));
  CHECK(core::equal(p[1].value(), f64({2, 3}, {1, 2, 3, 7, 8, 9})));
  CHECK(core::equal(p[2].value(), f64({2, 2}, {4, 5, 10, 11})));
  const VarList q = fm::split(x, std::size_t{2}, 0);
  REQUIRE(q.size() == 2);
  CHECK(core::equal(q[0].value(), f64({1, 6}, {0, 1, 2, 3, 4, 5})));
  CHECK(core::equal(q[1].value(), f64({1, 6}, {6, 7, 8, 9, 10, 11})));
  const VarList r = fm::split(x, std::size_t{3}, 1);
  REQUIRE(r.size() == 3);
  CHECK(core::equal(r[2].value(), f64({2, 2}, {4, 5, 10, 11})));
}

TEST_CASE("fastmath::split: one multi-output node; unused outputs get zero cotangents") {
  check_grad("split sizes {1,3,2} axis 1, all outputs",
             [](const VarList& v) {
               return fm::split(v[0], std::vector<std::size_t>{1, 3, 2}, 1);
             },
             {rnd({2, 6, 2}, 1)});
  check_grad("split sizes {2,1,3} axis -2, outputs 0 and 2 only",
             [](const VarList& v) {
               VarList p = fm::split(v[0], std::vector<std::size_t>{2, 1, 3}, -2);
               return VarList{fm::multiply(p[0], 2.0), p[2]};
             },
             {rnd({2, 6, 2}, 2)});
  check_grad("split n=3 axis 0, output 1 only",
             [](const VarList& v) { return VarList{fm::split(v[0], std::size_t{3}, 0)[1]}; },
             {rnd({3, 2, 2}, 3)});
  check_grad("split n=2 axis -1, outputs reversed",
             [](const VarList& v) {
               VarList p = fm::split(v[0], std::size_t{2}, -1);
               return VarList{p[1], p[0]};
             },
             {rnd({3, 4}, 4)});

  Tape tape;
  Var x = tape.watch(rnd({2, 6}));
  VarList p = fm::split(x, std::vector<std::size_t>{1, 3, 2}, 1);
  CHECK(tape.size() == 2);  // the leaf and one split node
  CHECK(tape.node(1).output_shapes.size() == 3);
  CHECK(p[1].node_id() == 1);
  CHECK(p[1].output_index() == 1);
  // Only the middle piece is used: gradient 1 there, 0 elsewhere.
  const Tensor g = tape.gradient(fm::sum(p[1]), x);
  CHECK(core::equal(g,
                    naive({2, 6}, [](const Idx& i) { return i[1] >= 1 && i[1] < 4 ? 1.0 : 0.0; })));
}

// =====================================================================================
// slice, pad, roll
// =====================================================================================

TEST_CASE("fastmath::slice: values against a naive strided copy, gradcheck") {
  const Tensor x = iota({4, 7});
  struct Case {
    long axis, start, stop, step;
    std::size_t first, count;  // the resolved start and length
  };
  for (const Case& c : {Case{1, 1, 4, 1, 1, 3}, Case{1, 0, 7, 2, 0, 4}, Case{-1, -3, -1, 1, 4, 2},
                        Case{0, 1, 4, 2, 1, 2}, Case{-2, -4, 4, 3, 0, 2}, Case{1, 2, 2, 1, 2, 0}}) {
    INFO("axis " << c.axis << " [" << c.start << ":" << c.stop << ":" << c.step << "]");
    const std::size_t ax =
        c.axis < 0 ? static_cast<std::size_t>(c.axis + 2) : static_cast<std::size_t>(c.axis);
    Shape out_shape = x.shape();
    out_shape[ax] = c.count;
    const Tensor want = naive(out_shape, [&](const Idx& o) {
      Idx xi = o;
      xi[ax] = c.first + o[ax] * static_cast<std::size_t>(c.step);
      return get(x, xi);
    });
    CHECK(core::equal(fm::slice(x, c.axis, c.start, c.stop, c.step).value(), want));
    if (c.count > 0) {
      check_grad("slice axis " + std::to_string(c.axis) + " [" + std::to_string(c.start) + ":" +
                     std::to_string(c.stop) + ":" + std::to_string(c.step) + "]",
                 [c](const VarList& v) {
                   return VarList{fm::slice(v[0], c.axis, c.start, c.stop, c.step)};
                 },
                 {rnd({4, 7}, 7)});
    }
  }
  // Python semantics: out-of-range start/stop are clipped to the extent.
  CHECK(core::equal(fm::slice(x, 1, 5, 100).value(), fm::slice(x, 1, 5, 7).value()));
  CHECK(core::equal(fm::slice(x, 0, -100, 2).value(), fm::slice(x, 0, 0, 2).value()));
  check_grad("slice clipped [-100:100:3]",
             [](const VarList& v) { return VarList{fm::slice(v[0], -1, -100, 100, 3)}; },
             {rnd({4, 7}, 9)});
  check_grad("slice rank 3 middle axis",
             [](const VarList& v) { return VarList{fm::slice(v[0], 1, 1, 3)}; },
             {rnd({2, 4, 3}, 8)});
}

TEST_CASE("fastmath::pad: values against naive indexing, asymmetric pads, gradcheck") {
  const Tensor x = f64({2, 3}, {1, 2, 3, 4, 5, 6});
  // Hand-written: one row before, two columns after.
  CHECK(core::equal(fm::pad(x, {{1, 0}, {0, 2}}).value(),
                    f64({3, 5}, {0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 4, 5, 6, 0, 0})));
  using Pads = std::vector<std::pair<std::size_t, std::size_t>>;
  const Tensor z = iota({2, 3, 2});
  const Pads pads = {{0, 1}, {2, 0}, {1, 3}};
  const Tensor want = naive({3, 5, 6}, [&](const Idx& o) {
    Idx xi(3);
    for (std::size_t a = 0; a < 3; ++a) {
      if (o[a] < pads[a].first || o[a] >= pads[a].first + z.shape()[a]) return -1.5;
      xi[a] = o[a] - pads[a].first;
    }
    return get(z, xi);
  });
  CHECK(core::equal(fm::pad(z, pads, -1.5).value(), want));

  check_grad("pad [2,3,2] {(0,1),(2,0),(1,3)}",
             [pads](const VarList& v) { return VarList{fm::pad(v[0], pads, 0.25)}; },
             {rnd({2, 3, 2}, 1)});
  check_grad("pad [3,4] {(2,1),(0,0)}",
             [](const VarList& v) {
               return VarList{fm::pad(v[0], {{2, 1}, {0, 0}})};
             },
             {rnd({3, 4}, 2)});
  check_grad("pad [3] no padding",
             [](const VarList& v) {
               return VarList{fm::pad(v[0], {{0, 0}})};
             },
             {rnd({3}, 3)});
}

TEST_CASE("fastmath::roll: values against naive modular indexing, gradcheck with negative shifts") {
  const Tensor x = iota({3, 5});
  CHECK(core::equal(fm::roll(f64({4}, {1, 2, 3, 4}), 1, 0).value(), f64({4}, {4, 1, 2, 3})));
  CHECK(core::equal(fm::roll(f64({4}, {1, 2, 3, 4}), -1, 0).value(), f64({4}, {2, 3, 4, 1})));
  struct Case {
    long shift, axis;
  };
  for (const Case& c :
       {Case{2, 1}, Case{-1, -1}, Case{7, 1}, Case{-3, 0}, Case{-8, -2}, Case{0, 0}, Case{5, 1}}) {
    INFO("shift " << c.shift << " axis " << c.axis);
    const std::size_t ax =
        c.axis < 0 ? static_cast<std::size_t>(c.axis + 2) : static_cast<std::size_t>(c.axis);
    const long n = static_cast<long>(x.shape()[ax]);
    const Tensor want = naive(x.shape(), [&](const Idx& o) {
      // out[i] = x[(i - shift) mod n]
      Idx xi = o;
      xi[ax] = static_cast<std::size_t>((((static_cast<long>(o[ax]) - c.shift) % n) + n) % n);
      return get(x, xi);
    });
    CHECK(core::equal(fm::roll(x, c.shift, c.axis).value(), want));
    check_grad("roll shift " + std::to_string(c.shift) + " axis " + std::to_string(c.axis),
               [c](const VarList& v) { return VarList{fm::roll(v[0], c.shift, c.axis)}; },
               {rnd({3, 5}, 4)});
  }
  check_grad("roll rank 3 middle axis shift -2",
             [](const VarList& v) { return VarList{fm::roll(v[0], -2, 1)}; }, {rnd({2, 3, 2}, 5)});
}

// =====================================================================================
// take, take_along_axis
// =====================================================================================

TEST_CASE("fastmath::take: values against naive gathers (axis 0, middle, last)") {
  const Tensor x = iota({4, 3});
  // Hand-written, axis 0, repeated rows.
  CHECK(core::equal(fm::take(x, ids({4}, {2, 0, 2, 2}), 0).value(),
                    f64({4, 3}, {6, 7, 8, 0, 1, 2, 6, 7, 8, 6, 7, 8})));
  // Middle axis of a rank-3 tensor, 2-D int32 indices.
  const Tensor z = iota({2, 4, 3});
  const Tensor idx = ids({2, 2}, {3, 0, 0, 0}, DType::i32);
  const Tensor want = naive({2, 2, 2, 3}, [&](const Idx& o) {
    return get(z, {o[0], static_cast<std::size_t>(idx.at({o[1], o[2]})), o[3]});
  });
  CHECK(core::equal(fm::take(z, idx, 1).value(), want));
  // Last axis via -1.
  const Tensor idx2 = ids({3}, {2, 2, 1});
  const Tensor want2 = naive({2, 4, 3}, [&](const Idx& o) {
    return get(z, {o[0], o[1], static_cast<std::size_t>(idx2.flat(o[2]))});
  });
  CHECK(core::equal(fm::take(z, idx2, -1).value(), want2));
  // Rank-0 indices drop the axis.
  CHECK(core::equal(fm::take(x, ids({}, {1}), 0).value(), f64({3}, {3, 4, 5})));
}

TEST_CASE("fastmath::take: gradcheck with repeated indices; scatter-add; saves only indices") {
  const Tensor rep = ids({5}, {1, 3, 1, 1, 0});
  check_grad("take axis 0 repeated",
             [rep](const VarList& v) { return VarList{fm::take(v[0], rep, 0)}; }, {rnd({4, 3}, 1)});
  const Tensor rep2 = ids({2, 3}, {3, 0, 3, 3, 2, 0}, DType::i32);
  check_grad("take axis 1 (middle) repeated, 2-D indices",
             [rep2](const VarList& v) { return VarList{fm::take(v[0], rep2, 1)}; },
             {rnd({2, 4, 3}, 2)});
  check_grad("take axis -1 repeated",
             [rep](const VarList& v) { return VarList{fm::take(v[0], rep, -1)}; },
             {rnd({2, 4}, 3)});

  Tape tape;
  Var x = tape.watch(rnd({4, 2}));
  const Tensor idx = ids({4}, {1, 1, 1, 0});
  Var y = fm::take(x, idx, 0);
  const autodiff::Node& node = tape.node(1);
  CHECK(node.op == "take");
  REQUIRE(node.saved.size() == 1);
  CHECK(node.saved[0].shares_storage(idx));
  CHECK(node.inputs.size() == 2);
  CHECK_FALSE(node.inputs[1].flows);
  // Row 1 was taken three times, row 0 once, rows 2 and 3 never.
  const Tensor g = tape.gradient(fm::sum(y), x);
  CHECK(core::equal(g, f64({4, 2}, {1, 1, 3, 3, 0, 0, 0, 0})));
}

TEST_CASE("fastmath::take_along_axis: values against naive gathers, gradcheck") {
  const Tensor x = iota({3, 4});
  const Tensor idx = ids({3, 2}, {3, 3, 0, 1, 2, 0});
  CHECK(core::equal(fm::take_along_axis(x, idx, 1).value(), f64({3, 2}, {3, 3, 4, 5, 10, 8})));
  const Tensor idx0 = ids({2, 4}, {2, 0, 1, 2, 2, 2, 0, 0}, DType::i32);
  const Tensor want0 = naive({2, 4}, [&](const Idx& o) {
    return get(x, {static_cast<std::size_t>(idx0.at({o[0], o[1]})), o[1]});
  });
  CHECK(core::equal(fm::take_along_axis(x, idx0, 0).value(), want0));
  const Tensor z = iota({2, 3, 4});
  const Tensor idx3 = ids({2, 3, 5}, {0, 3, 3, 1, 2, 1, 1, 1, 0, 0, 2, 3, 0, 1, 3,
                                      3, 3, 3, 3, 3, 0, 1, 2, 3, 0, 2, 2, 2, 1, 1});
  const Tensor want3 = naive({2, 3, 5}, [&](const Idx& o) {
    return get(z, {o[0], o[1], static_cast<std::size_t>(idx3.at({o[0], o[1], o[2]}))});
  });
  CHECK(core::equal(fm::take_along_axis(z, idx3, -1).value(), want3));

  check_grad("take_along_axis axis 1 repeated",
             [idx](const VarList& v) { return VarList{fm::take_along_axis(v[0], idx, 1)}; },
             {rnd({3, 4}, 1)});
  check_grad("take_along_axis axis 0",
             [idx0](const VarList& v) { return VarList{fm::take_along_axis(v[0], idx0, 0)}; },
             {rnd({3, 4}, 2)});
  check_grad("take_along_axis axis -1 rank 3",
             [idx3](const VarList& v) { return VarList{fm::take_along_axis(v[0], idx3, -1)}; },
             {rnd({2, 3, 4}, 3)});
  Tape tape;
  Var xv = tape.watch(rnd({3, 4}));
  Var y = fm::take_along_axis(xv, idx, 1);
  CHECK(tape.node(1).saved.size() == 1);
  const Tensor g = tape.gradient(fm::sum(y), xv);
  CHECK(core::equal(g, f64({3, 4}, {0, 0, 0, 2, 1, 1, 0, 0, 1, 0, 1, 0})));
}

// =====================================================================================
// one_hot, argmax, argsort: constants
// =====================================================================================

TEST_CASE("fastmath::one_hot, argmax, argsort: values, and they are constants") {
  const Tensor oh = fm::one_hot(ids({2, 2}, {0, 2, 1, 1}, DType::i32), 3, DType::f64).value();
  CHECK(core::equal(oh, f64({2, 2, 3}, {1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0})));
  CHECK(fm::one_hot(ids({2}, {0, 1}), 2).dtype() == DType::f32);

  const Tensor x = f64({2, 4}, {0.5, 3, -1, 3, 2, 2, 7, -4});
  // ties: the first maximum
  CHECK(core::equal(fm::argmax(x).value(), ids({2}, {1, 2})));
  CHECK(core::equal(fm::argmax(x, 0).value(), ids({4}, {1, 0, 1, 0})));
  CHECK(core::equal(fm::argmax(x, -2).value(), ids({4}, {1, 0, 1, 0})));
  // stable: equal keys keep their order
  CHECK(core::equal(fm::argsort(x).value(), ids({2, 4}, {2, 0, 1, 3, 3, 0, 1, 2})));
  CHECK(core::equal(fm::argsort(x, 0).value(), ids({2, 4}, {0, 1, 0, 1, 1, 0, 1, 0})));

  Tape tape;
  Var v = tape.watch(x);
  CHECK_FALSE(fm::argmax(v).on_tape());
  CHECK_FALSE(fm::argsort(v, -1).on_tape());
  CHECK_FALSE(fm::one_hot(fm::argmax(v), 4).on_tape());
  CHECK(tape.size() == 1);  // nothing recorded
}

TEST_CASE("fastmath: gradients through argmax/argsort indices (max and sort as gathers)") {
  // max via argmax: take_along_axis(x, expand_dims(argmax(x))); the index is a constant.
  check_grad("max via argmax + take_along_axis",
             [](const VarList& v) {
               Var i = fm::expand_dims(fm::argmax(v[0], 1), 1);
               return VarList{fm::take_along_axis(v[0], i, 1)};
             },
             {rnd({3, 5}, 1)});
  check_grad(
      "sort via argsort + take_along_axis (axis 0)",
      [](const VarList& v) { return VarList{fm::take_along_axis(v[0], fm::argsort(v[0], 0), 0)}; },
      {rnd({4, 3}, 2)});
  check_grad("x * one_hot(argmax(x))",
             [](const VarList& v) {
               return VarList{fm::multiply(v[0], fm::one_hot(fm::argmax(v[0]), 5, DType::f64))};
             },
             {rnd({3, 5}, 3)});
  check_grad("argmax alone (zero gradient)",
             [](const VarList& v) { return VarList{fm::argmax(v[0])}; }, {rnd({3, 5}, 4)});
}

// =====================================================================================
// shape errors: the message names the op and the shapes
// =====================================================================================

TEST_CASE("fastmath shape ops: errors name the op and the shapes") {
  const Tensor x = rnd({2, 3});
  CHECK_ERROR_NAMES(Error, fm::transpose(x, {0, 0}), "transpose");
  CHECK_ERROR_NAMES(Error, fm::transpose(x, {0, 1, 2}), "transpose", "[2, 3]");
  CHECK_ERROR_NAMES(Error, fm::expand_dims(x, 3), "expand_dims");
  CHECK_ERROR_NAMES(Error, fm::squeeze(x, {0}), "squeeze", "[2, 3]");
  CHECK_ERROR_NAMES(ShapeError, fm::broadcast_to(x, {3, 3}), "[2, 3]", "[3, 3]");
  CHECK_ERROR_NAMES(ShapeError, fm::concatenate({x, rnd({3, 2})}, 1), "concatenate", "[3, 2]",
                    "[2, *]");
  CHECK_ERROR_NAMES(Error, fm::concatenate({x, x}, 2), "concatenate", "axis 2");
  CHECK_ERROR_NAMES(DTypeError, fm::concatenate({x, rnd({2, 3}).astype(DType::f32)}, 0),
                    "concatenate", "float32", "float64");
  CHECK_ERROR_NAMES(ValueError, fm::concatenate({}, 0), "concatenate");
  CHECK_ERROR_NAMES(Error, fm::split(x, std::vector<std::size_t>{1, 1}, 1), "split", "[2, 3]");
  CHECK_ERROR_NAMES(Error, fm::split(x, std::size_t{2}, 1), "split", "[2, 3]");
  CHECK_ERROR_NAMES(Error, fm::split(x, std::size_t{0}, 1), "split");
  CHECK_ERROR_NAMES(Error, fm::slice(x, 2, 0, 1), "slice");
  CHECK_ERROR_NAMES(Error, fm::slice(x, 1, 0, 2, 0), "slice", "step");
  CHECK_ERROR_NAMES(Error, fm::pad(x, {{1, 1}}), "pad", "[2, 3]");
  CHECK_ERROR_NAMES(Error, fm::roll(x, 1, -3), "roll");
  CHECK_ERROR_NAMES(ValueError, fm::take(x, ids({2}, {0, 3}), 1), "take", "3");
  CHECK_ERROR_NAMES(DTypeError, fm::take(x, x, 0), "take");
  CHECK_ERROR_NAMES(ShapeError, fm::take_along_axis(x, ids({3, 1}, {0, 0, 0}), 1),
                    "take_along_axis", "[3, 1]", "[2, 3]");
  CHECK_ERROR_NAMES(Error, fm::argmax(x, 2), "argmax");
  CHECK_ERROR_NAMES(DTypeError, fm::one_hot(x, 3), "one_hot");
}

// =====================================================================================
// fastmath_arith.cpp: + - * / negation, exp, sum, reshape, scalar operators
// =====================================================================================

TEST_CASE("fastmath arithmetic: values with broadcasting against naive loops") {
  const Tensor a = rnd({2, 3, 4}, 1);
  const Tensor b = rnd({3, 1}, 2, 0.5, 1.5);
  auto bcast = [&](auto op) {
    return naive({2, 3, 4}, [&](const Idx& i) { return op(get(a, i), get(b, {i[1], 0})); });
  };
  CHECK(core::allclose(fm::add(a, b).value(), bcast([](double p, double q) { return p + q; }),
                       1e-15, 0));
  CHECK(core::allclose(fm::subtract(a, b).value(), bcast([](double p, double q) { return p - q; }),
                       1e-15, 0));
  CHECK(core::allclose(fm::multiply(a, b).value(), bcast([](double p, double q) { return p * q; }),
                       1e-15, 0));
  CHECK(core::allclose(fm::divide(a, b).value(), bcast([](double p, double q) { return p / q; }),
                       1e-15, 0));
  CHECK(core::allclose((Var(a) + Var(b)).value(), fm::add(a, b).value(), 0, 0));
  CHECK(core::allclose(fm::negative(a).value(),
                       naive(a.shape(), [&](const Idx& i) { return -get(a, i); }), 0, 0));
  CHECK(core::allclose(fm::exp(a).value(),
                       naive(a.shape(), [&](const Idx& i) { return std::exp(get(a, i)); }), 1e-14,
                       0));
  CHECK(core::allclose((2.0 - Var(b)).value(),
                       naive(b.shape(), [&](const Idx& i) { return 2 - get(b, i); }), 1e-15, 0));
  CHECK(core::allclose((2.0 / Var(b)).value(),
                       naive(b.shape(), [&](const Idx& i) { return 2 / get(b, i); }), 1e-15, 0));
  CHECK(core::allclose((Var(b) / 4.0).value(),
                       naive(b.shape(), [&](const Idx& i) { return get(b, i) / 4; }), 1e-15, 0));
  const Tensor s = fm::sum(a, {0, -1}).value();
  CHECK(s.shape() == Shape{3});
  for (std::size_t j = 0; j < 3; ++j) {
    double acc = 0;
    for (std::size_t i = 0; i < 2; ++i)
      for (std::size_t k = 0; k < 4; ++k) acc += get(a, {i, j, k});
    CHECK(s.flat(j) == doctest::Approx(acc).epsilon(1e-14));
  }
  CHECK(fm::sum(a, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(fm::reshape(a, {4, -1}).shape() == Shape{4, 6});
}

TEST_CASE("fastmath arithmetic: gradcheck with broadcasting") {
  using Bin = Var (*)(const Var&, const Var&);
  struct Case {
    const char* name;
    Bin op;
  };
  const Case ops[] = {{"add", fm::add},
                      {"subtract", fm::subtract},
                      {"multiply", fm::multiply},
                      {"divide", fm::divide}};
  struct Shapes {
    Shape a, b;
  };
  for (const Case& c : ops) {
    for (const Shapes& s :
         {Shapes{{2, 3, 4}, {3, 1}}, Shapes{{4}, {2, 3, 4}}, Shapes{{2, 3}, {2, 3}},
          Shapes{{}, {2, 2}}, Shapes{{2, 1, 4}, {1, 3, 1}}}) {
      // Denominators stay away from zero.
      check_grad(std::string(c.name) + " " + core::shape_str(s.a) + " with " + core::shape_str(s.b),
                 [op = c.op](const VarList& v) { return VarList{op(v[0], v[1])}; },
                 {rnd(s.a, 1), rnd(s.b, 2, 0.5, 1.5)});
    }
    // The same Var on both sides.
    check_grad(std::string(c.name) + " (x, x)",
               [op = c.op](const VarList& v) { return VarList{op(v[0], v[0])}; },
               {rnd({2, 3}, 3, 0.5, 1.5)});
    // A constant on one side.
    check_grad(std::string(c.name) + " (x, const)",
               [op = c.op](const VarList& v) { return VarList{op(v[0], rnd({3}, 4, 0.5, 1.5))}; },
               {rnd({2, 3}, 5)});
    check_grad(std::string(c.name) + " (const, x)",
               [op = c.op](const VarList& v) {
                 return VarList{op(rnd({2, 3}, 4), v[0])};
               },
               {rnd({3}, 6, 0.5, 1.5)});
  }
  check_grad("negative", [](const VarList& v) { return VarList{fm::negative(v[0])}; },
             {rnd({2, 3}, 7)});
  check_grad("exp", [](const VarList& v) { return VarList{fm::exp(v[0])}; }, {rnd({2, 3}, 8)});
  check_grad("exp(x) * x", [](const VarList& v) { return VarList{fm::exp(v[0]) * v[0]}; },
             {rnd({2, 3}, 9)});
}

TEST_CASE("fastmath scalar operators, sum, reshape: gradcheck") {
  const Tensor x = rnd({2, 3}, 1, 0.5, 1.5);
  using F = std::function<Var(const Var&)>;
  const std::pair<const char*, F> cases[] = {
      {"x + 2", [](const Var& v) { return v + 2.0; }},
      {"2 + x", [](const Var& v) { return 2.0 + v; }},
      {"x - 2", [](const Var& v) { return v - 2.0; }},
      {"2 - x", [](const Var& v) { return 2.0 - v; }},
      {"x * 3", [](const Var& v) { return v * 3.0; }},
      {"3 * x", [](const Var& v) { return 3.0 * v; }},
      {"x / 4", [](const Var& v) { return v / 4.0; }},
      {"4 / x", [](const Var& v) { return 4.0 / v; }},
      {"-x", [](const Var& v) { return -v; }},
      {"x + x * x - x / x", [](const Var& v) { return v + v * v - v / v; }},
      {"fm::add(x, 0.5)", [](const Var& v) { return fm::add(v, 0.5); }},
      {"fm::multiply(x, -1.5)", [](const Var& v) { return fm::multiply(v, -1.5); }},
  };
  for (const auto& [name, f] : cases) {
    check_grad(name, [f = f](const VarList& v) { return VarList{f(v[0])}; }, {x});
  }
  // Values of the scalar operators.
  CHECK(core::allclose((4.0 / Var(x)).value(),
                       naive(x.shape(), [&](const Idx& i) { return 4 / get(x, i); }), 1e-15, 0));
  CHECK(core::allclose((2.0 - Var(x)).value(),
                       naive(x.shape(), [&](const Idx& i) { return 2 - get(x, i); }), 1e-15, 0));

  const Tensor z = rnd({2, 3, 4}, 2);
  struct SumCase {
    std::vector<long> axes;
    bool keepdims;
  };
  for (const SumCase& c : {SumCase{{}, false}, SumCase{{}, true}, SumCase{{0, -1}, false},
                           SumCase{{1}, true}, SumCase{{-2}, false}}) {
    check_grad(
        "sum " + std::to_string(c.axes.size()) + " axes keepdims " + std::to_string(c.keepdims),
        [c](const VarList& v) { return VarList{fm::sum(v[0], c.axes, c.keepdims)}; }, {z});
  }
  check_grad("reshape [2,3,4] -> [4,-1]",
             [](const VarList& v) {
               return VarList{fm::reshape(v[0], {4, -1})};
             },
             {z});
  check_grad("reshape [2,3,4] -> [24] then * itself",
             [](const VarList& v) {
               Var r = fm::reshape(v[0], {24});
               return VarList{r * r};
             },
             {z});
}

// =====================================================================================
// fastmath_arith.cpp: matmul and dense
// =====================================================================================

namespace {

// op(a) @ op(b), batched over leading axes (b may be rank 2 and shared), by loops.
Tensor naive_matmul(const Tensor& a, const Tensor& b, Trans ta, Trans tb) {
  const bool shared = b.ndim() == 2 && a.ndim() > 2;
  const std::size_t r = a.ndim();
  const std::size_t m = ta == Trans::N ? a.shape()[r - 2] : a.shape()[r - 1];
  const std::size_t k = ta == Trans::N ? a.shape()[r - 1] : a.shape()[r - 2];
  const std::size_t n = tb == Trans::N ? b.shape()[b.ndim() - 1] : b.shape()[b.ndim() - 2];
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  out_shape.push_back(m);
  out_shape.push_back(n);
  return naive(out_shape, [&](const Idx& o) {
    const std::size_t i = o[r - 2], j = o[r - 1];
    double acc = 0;
    for (std::size_t p = 0; p < k; ++p) {
      Idx ai = o, bi = shared ? Idx{0, 0} : o;
      ai[r - 2] = ta == Trans::N ? i : p;
      ai[r - 1] = ta == Trans::N ? p : i;
      bi[bi.size() - 2] = tb == Trans::N ? p : j;
      bi[bi.size() - 1] = tb == Trans::N ? j : p;
      acc += get(a, ai) * get(b, bi);
    }
    return acc;
  });
}

Shape mat_shape(Shape batch, std::size_t rows, std::size_t cols, Trans t) {
  batch.push_back(t == Trans::N ? rows : cols);
  batch.push_back(t == Trans::N ? cols : rows);
  return batch;
}

const char* tname(Trans t) {
  return t == Trans::N ? "N" : "T";
}

}  // namespace

TEST_CASE("fastmath::matmul: values and gradcheck for every transpose combination") {
  // m = 3, k = 4, n = 5
  for (Trans ta : {Trans::N, Trans::T}) {
    for (Trans tb : {Trans::N, Trans::T}) {
      struct Batch {
        Shape a, b;
        const char* what;
      };
      for (const Batch& bt :
           {Batch{{}, {}, "rank 2"}, Batch{{2}, {2}, "batched [2]"},
            Batch{{2, 2}, {2, 2}, "batched [2,2]"}, Batch{{2}, {}, "shared b, batched a"},
            Batch{{2, 3}, {}, "shared b, batch [2,3]"}}) {
        const Tensor a = rnd(mat_shape(bt.a, 3, 4, ta), 11);
        const Tensor b = rnd(mat_shape(bt.b, 4, 5, tb), 12);
        const std::string name = std::string("matmul ") + tname(ta) + tname(tb) + " " + bt.what +
                                 " " + core::shape_str(a.shape()) + " x " +
                                 core::shape_str(b.shape());
        INFO(name);
        const Tensor y = fm::matmul(a, b, ta, tb).value();
        CHECK(core::allclose(y, naive_matmul(a, b, ta, tb), 1e-13, 1e-14));
        check_grad(name,
                   [ta, tb](const VarList& v) { return VarList{fm::matmul(v[0], v[1], ta, tb)}; },
                   {a, b});
        check_grad(name + " (a only)",
                   [ta, tb, b](const VarList& v) { return VarList{fm::matmul(v[0], b, ta, tb)}; },
                   {a});
        check_grad(name + " (b only)",
                   [ta, tb, a](const VarList& v) { return VarList{fm::matmul(a, v[0], ta, tb)}; },
                   {b});
      }
    }
  }
  // The same Var on both sides: x @ x^T, x^T @ x.
  check_grad("matmul(x, x, N, T)",
             [](const VarList& v) { return VarList{fm::matmul(v[0], v[0], Trans::N, Trans::T)}; },
             {rnd({3, 4}, 13)});
  check_grad("matmul(x, x, T, N) batched",
             [](const VarList& v) { return VarList{fm::matmul(v[0], v[0], Trans::T, Trans::N)}; },
             {rnd({2, 3, 4}, 14)});
  // A gradient accumulated from two uses (grad_buffer with beta = 1 on top of another cotangent).
  check_grad("matmul(a, b) + a @ c",
             [](const VarList& v) {
               return VarList{fm::add(fm::matmul(v[0], v[1]), fm::matmul(v[0], v[2]))};
             },
             {rnd({2, 3, 4}, 15), rnd({2, 4, 5}, 16), rnd({4, 5}, 17)});
}

TEST_CASE("fastmath::matmul: shape errors") {
  CHECK_ERROR_NAMES(ShapeError, fm::matmul(rnd({3, 4}), rnd({5, 6})), "matmul", "[3, 4]", "[5, 6]");
  CHECK_THROWS_AS(fm::matmul(rnd({2, 3, 4}), rnd({3, 4, 5})), ShapeError);
  CHECK_THROWS_AS(fm::matmul(rnd({4}), rnd({4, 5})), ShapeError);
  CHECK_THROWS_AS(fm::matmul(rnd({3, 4}), rnd({4, 5}).astype(DType::f32)), DTypeError);
}

TEST_CASE("fastmath::dense: values and gradcheck with and without bias") {
  const Tensor w = rnd({4, 5}, 2);
  const Tensor bias = rnd({5}, 3);
  for (const Shape& xs : {Shape{2, 3, 4}, Shape{3, 4}, Shape{4}}) {
    const Tensor x = rnd(xs, 1);
    Shape out_shape = xs;
    out_shape.back() = 5;
    const std::size_t r = xs.size();
    auto want = [&](bool with_bias) {
      return naive(out_shape, [&](const Idx& o) {
        double acc = with_bias ? bias.flat(o[r - 1]) : 0.0;
        for (std::size_t p = 0; p < 4; ++p) {
          Idx xi = o;
          xi[r - 1] = p;
          acc += get(x, xi) * w.at({p, o[r - 1]});
        }
        return acc;
      });
    };
    CHECK(core::allclose(fm::dense(x, w, bias).value(), want(true), 1e-13, 1e-14));
    CHECK(core::allclose(fm::dense(x, w).value(), want(false), 1e-13, 1e-14));
    check_grad("dense with bias x " + core::shape_str(xs),
               [](const VarList& v) { return VarList{fm::dense(v[0], v[1], v[2])}; }, {x, w, bias});
    check_grad("dense without bias x " + core::shape_str(xs),
               [](const VarList& v) { return VarList{fm::dense(v[0], v[1])}; }, {x, w});
  }
  CHECK_ERROR_NAMES(ShapeError, fm::dense(rnd({2, 4}), rnd({4})), "dense", "[4]");
  CHECK_ERROR_NAMES(ShapeError, fm::dense(rnd({2, 3}), w), "dense", "[2, 3]", "[4, 5]");
  CHECK_ERROR_NAMES(ShapeError, fm::dense(rnd({2, 4}), w, rnd({4})), "dense", "[5]", "[4]");
}

TEST_CASE("fastmath arithmetic: broadcast errors name the op and the shapes") {
  CHECK_ERROR_NAMES(ShapeError, fm::add(rnd({2, 3}), rnd({4})), "[2, 3]", "[4]");
  CHECK_ERROR_NAMES(ShapeError, fm::multiply(rnd({2, 3}), rnd({3, 2})), "[2, 3]", "[3, 2]");
  CHECK_ERROR_NAMES(DTypeError, fm::add(rnd({2}), rnd({2}).astype(DType::f32)), "float32",
                    "float64");
  CHECK_ERROR_NAMES(ShapeError, fm::reshape(rnd({2, 3}), {4, -1}), "[2, 3]");
}
