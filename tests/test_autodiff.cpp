// The tape itself: recording, backward, stop_gradient, tie_in, custom_vjp,
// checkpoint, nested tapes, misuse errors, dumps, and gradcheck's ability to fail.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
using autodiff::TapeError;
using autodiff::VarList;

namespace {

Tensor vec(std::vector<double> v) {
  const std::size_t n = v.size();
  return Tensor::from<double>({n}, std::move(v));
}

}  // namespace

TEST_CASE("tape: ops only compute when no tape records") {
  Var x = vec({1, 2});
  Var y = fm::exp(x);
  CHECK_FALSE(y.on_tape());
  CHECK(y.value().flat(1) == doctest::Approx(std::exp(2.0)));
}

TEST_CASE("tape: gradient of a small expression against its closed form") {
  // f(x, y) = sum(x * y + exp(x)),  df/dx = y + exp(x),  df/dy = x
  Tape tape;
  Var x = tape.watch(vec({0.5, -1.0, 2.0}));
  Var y = tape.watch(vec({3.0, 4.0, -5.0}));
  Var f = fm::sum(x * y + fm::exp(x));
  auto g = tape.gradient(f, {x, y});
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(g[0].flat(i) == doctest::Approx(y.value().flat(i) + std::exp(x.value().flat(i))));
    CHECK(g[1].flat(i) == doctest::Approx(x.value().flat(i)));
  }
  CHECK(tape.size() == 6);  // two leaves, multiply, exp, add, sum
}

TEST_CASE("tape: a value used twice accumulates its cotangent") {
  // f = sum(x * x) => 2x; the shared cotangent buffer must not be written through
  Tape tape;
  Var x = tape.watch(vec({1.5, -2.0}));
  Var s = x + x;           // add passes the same cotangent to both inputs
  Var f = fm::sum(s * x);  // f = 2 x^2 => 4x
  Tensor g = tape.gradient(f, x);
  CHECK(g.flat(0) == doctest::Approx(6.0));
  CHECK(g.flat(1) == doctest::Approx(-8.0));
}

TEST_CASE("tape: gradients only flow to what was asked for, zeros where no path") {
  Tape tape;
  Var x = tape.watch(vec({1.0}));
  Var unused = tape.watch(vec({7.0, 8.0}));
  Var f = fm::sum(x * 3.0);
  auto g = tape.gradient(f, {x, unused});
  CHECK(g[0].flat(0) == doctest::Approx(3.0));
  CHECK(g[1].shape() == Shape{2});
  CHECK(g[1].flat(0) == 0.0);
}

TEST_CASE("stop_gradient: same value, no gradient, a visible node") {
  // f = sum(x * stop_gradient(x)) => df/dx = x (not 2x)
  Tape tape;
  Var x = tape.watch(vec({2.0, -3.0}));
  Var sx = stop_gradient(x);
  CHECK(core::equal(sx.value(), x.value()));
  Var f = fm::sum(x * sx);
  Tensor g = tape.gradient(f, x);
  CHECK(g.flat(0) == doctest::Approx(2.0));
  CHECK(g.flat(1) == doctest::Approx(-3.0));
  CHECK(tape.node(static_cast<std::size_t>(sx.node_id())).op == "stop_gradient");
  CHECK(tape.dump().find("stop_gradient(%0 (no grad))") != std::string::npos);
  // Through the functional API: the gradient of stop_gradient alone is zero.
  auto gz =
      grad([](const VarList& v) { return fm::sum(stop_gradient(v[0]) * 5.0); }, {vec({1.0, 2.0})});
  CHECK(gz[0].flat(0) == 0.0);
  CHECK(gz[0].flat(1) == 0.0);
}

TEST_CASE("tie_in: value of y, an edge from x on the tape, zero cotangent to x") {
  Tape tape;
  Var x = tape.watch(vec({1.0, 2.0}));
  Var y = tape.watch(vec({10.0, 20.0, 30.0}));
  Var t = tie_in(x, y);
  CHECK(core::equal(t.value(), y.value()));
  const auto& node = tape.node(static_cast<std::size_t>(t.node_id()));
  CHECK(node.op == "tie_in");
  REQUIRE(node.inputs.size() == 2);
  CHECK(node.inputs[0].node == x.node_id());
  CHECK_FALSE(node.inputs[0].flows);
  CHECK(node.inputs[1].node == y.node_id());
  CHECK(node.inputs[1].flows);
  Var f = fm::sum(t * 2.0);
  auto g = tape.gradient(f, {x, y});
  CHECK(g[0].flat(0) == 0.0);
  CHECK(g[0].flat(1) == 0.0);
  CHECK(g[1].flat(2) == doctest::Approx(2.0));
  // The edge is in the dump and in the DOT graph (dashed).
  CHECK(tape.dump().find("tie_in(%0 (no grad), %1)") != std::string::npos);
  CHECK(tape.to_dot().find("n0 -> n2 [style=dashed, label=\"tie_in (no grad)\"]") !=
        std::string::npos);
}

TEST_CASE("custom_vjp: same gradient as the plain computation, one node on the tape") {
  // g(x) = x^3 with a hand-written backward: 3 x^2
  auto cube_fwd = [](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    res.push_back(in[0]);
    return std::vector<Tensor>{core::mul(core::mul(in[0], in[0]), in[0])};
  };
  auto cube_bwd = [](const std::vector<Tensor>& res, const std::vector<Tensor>& ct) {
    return std::vector<Tensor>{core::mul(ct[0], core::mul(core::mul(res[0], res[0]), 3.0))};
  };
  auto custom = [&](const VarList& v) {
    return VarList{fm::sum(autodiff::custom_vjp("cube", {v[0]}, cube_fwd, cube_bwd)[0] * v[1])};
  };
  auto plain = [](const VarList& v) { return VarList{fm::sum(v[0] * v[0] * v[0] * v[1])}; };
  const std::vector<Tensor> xs = {vec({0.5, -1.5, 2.0}), vec({1.0, 2.0, 3.0})};
  auto a = vjp(custom, xs).pullback({Tensor::scalar(1.0, DType::f64)});
  auto b = vjp(plain, xs).pullback({Tensor::scalar(1.0, DType::f64)});
  for (int i = 0; i < 2; ++i) CHECK(core::max_abs_diff(a[i], b[i]) < 1e-12);
  CHECK(gradcheck(custom, xs).ok);

  Tape tape;
  Var x = tape.watch(xs[0]);
  VarList y = autodiff::custom_vjp("cube", {x}, cube_fwd, cube_bwd);
  CHECK(tape.size() == 2);  // the leaf and one custom node
  CHECK(tape.node(1).op == "cube");
}

TEST_CASE("gradcheck fails on a wrong VJP and names the worst element") {
  // A VJP off by a factor of 2.
  auto twice_wrong = [](const VarList& v) {
    return autodiff::custom_vjp(
        "bad_square", {v[0]},
        [](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
          res.push_back(in[0]);
          return std::vector<Tensor>{core::mul(in[0], in[0])};
        },
        [](const std::vector<Tensor>& res, const std::vector<Tensor>& ct) {
          return std::vector<Tensor>{core::mul(core::mul(ct[0], res[0]), 4.0)};  // should be 2
        });
  };
  auto r = gradcheck(twice_wrong, {vec({1.0, 2.0, 3.0})});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("gradcheck FAILED") != std::string::npos);
  CHECK(r.analytic == doctest::Approx(2.0 * r.numeric));

  // A matrix product whose VJP forgets to transpose: d/dx (W x) should be W^T g.
  const Tensor w = Tensor::from<double>({2, 2}, {1, 2, 3, 4});
  auto transposed_wrong = [w](const VarList& v) {
    return autodiff::custom_vjp(
        "bad_matvec", {v[0]},
        [w](const std::vector<Tensor>& in, std::vector<Tensor>&) {
          return std::vector<Tensor>{core::matmul(w, in[0])};
        },
        [w](const std::vector<Tensor>&, const std::vector<Tensor>& ct) {
          return std::vector<Tensor>{core::matmul(w, ct[0])};  // should be w^T @ ct
        });
  };
  auto r2 = gradcheck(transposed_wrong, {Tensor::from<double>({2, 1}, {0.3, -0.7})});
  CHECK_FALSE(r2.ok);

  // And the right one passes.
  auto right = [w](const VarList& v) { return VarList{fm::matmul(w, v[0])}; };
  CHECK(gradcheck(right, {Tensor::from<double>({2, 1}, {0.3, -0.7})}).ok);
}

TEST_CASE("checkpoint: equal gradients, fewer values kept on the tape") {
  // A chain of element-wise ops: plain recording keeps every intermediate the
  // VJPs read; checkpoint keeps only its inputs.
  auto body = [](const VarList& v) {
    Var h = v[0];
    for (int i = 0; i < 6; ++i) h = fm::exp(h * 0.5) * v[1];
    return VarList{h};
  };
  const Tensor x = vec({0.1, 0.2, -0.3, 0.4});
  const Tensor s = vec({0.9, 1.1, 0.8, 1.0});

  Tape plain;
  Var px = plain.watch(x), ps = plain.watch(s);
  Var pf = fm::sum(body({px, ps})[0]);
  auto g_plain = plain.gradient(pf, {px, ps});
  const auto plain_stats = plain.stats();

  Tape ckpt;
  Var cx = ckpt.watch(x), cs = ckpt.watch(s);
  Var cf = fm::sum(checkpoint(body, {cx, cs})[0]);
  auto g_ckpt = ckpt.gradient(cf, {cx, cs});
  const auto ckpt_stats = ckpt.stats();

  CHECK(core::max_abs_diff(g_plain[0], g_ckpt[0]) < 1e-12);
  CHECK(core::max_abs_diff(g_plain[1], g_ckpt[1]) < 1e-12);
  CHECK(ckpt_stats.nodes == 4);           // two leaves, checkpoint, sum
  CHECK(ckpt_stats.saved_buffers == 2);   // x and s only
  CHECK(plain_stats.saved_buffers == 7);  // six exp outputs and s
  MESSAGE("values kept: plain " << plain_stats.saved_buffers << " buffers / "
                                << plain_stats.saved_bytes << " B; checkpoint "
                                << ckpt_stats.saved_buffers << " / " << ckpt_stats.saved_bytes
                                << " B");
  CHECK(gradcheck([&](const VarList& v) { return checkpoint(body, v); }, {x, s}).ok);
}

TEST_CASE("nested private tapes: a backward that differentiates on its own tape") {
  // custom_vjp whose backward runs vjp() of the forward on a private tape, the
  // way a reversible block recomputes and differentiates itself.
  auto f = [](const VarList& v) { return VarList{fm::tanh(v[0] * v[0])}; };
  auto nested = [&](const VarList& v) {
    return autodiff::custom_vjp(
        "recompute", {v[0]},
        [&](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
          res.push_back(in[0]);
          VarList c(in.begin(), in.end());
          return std::vector<Tensor>{f(c)[0].value()};
        },
        [&](const std::vector<Tensor>& res, const std::vector<Tensor>& ct) {
          return vjp(f, {res[0]}).pullback(ct);
        });
  };
  auto outer = [&](const VarList& v) { return VarList{fm::sum(nested(v)[0] * 3.0)}; };
  CHECK(gradcheck(outer, {vec({0.3, -0.8, 1.1})}).ok);
}

TEST_CASE("misuse gets a clear exception") {
  SUBCASE("backward from a non-scalar without a seed") {
    Tape tape;
    Var x = tape.watch(vec({1, 2}));
    Var y = x * 2.0;
    CHECK_THROWS_WITH_AS(tape.gradient(y, x),
                         "backward: output 0 has shape [2]; a non-scalar output needs a seed (a "
                         "cotangent of that shape)",
                         TapeError);
    // with a seed it works
    Tensor g = tape.gradient(y, x, vec({1, 10}));
    CHECK(g.flat(1) == doctest::Approx(20.0));
  }
  SUBCASE("a seed (cotangent) of the wrong shape") {
    Tape tape;
    Var x = tape.watch(vec({1, 2}));
    Var y = x * 2.0;
    CHECK_THROWS_WITH_AS(tape.gradient(y, x, vec({1, 2, 3})),
                         "backward: the seed of output 0 has shape [3] float64, the output has "
                         "shape [2] float64",
                         TapeError);
    auto r = vjp([](const VarList& v) { return VarList{v[0] * 2.0}; }, {vec({1, 2})});
    CHECK_THROWS_AS(r.pullback({vec({1})}), TapeError);
  }
  SUBCASE("a Var from a finished tape") {
    Var old;
    {
      Tape t1;
      old = t1.watch(vec({1, 2})) * 2.0;
    }
    Tape t2;
    Var x = t2.watch(vec({3, 4}));
    CHECK_THROWS_WITH_AS(x * old,
                         "op 'multiply': input 1 (shape [2]) is a Var from a finished tape; pass "
                         "its value (var.value()) or stop_gradient(var) to use it as a constant",
                         TapeError);
    CHECK_NOTHROW(x * old.value());
  }
  SUBCASE("asking the gradient of a Var that is not on the tape") {
    Tape tape;
    Var x = tape.watch(vec({1}));
    Var c = vec({2});
    CHECK_THROWS_WITH_AS(tape.gradient(fm::sum(x * c), c),
                         "backward: input 0 (shape [1]) is not on this tape (it is a constant)",
                         TapeError);
  }
  SUBCASE("value_and_grad of a non-scalar function") {
    CHECK_THROWS_WITH_AS(value_and_grad([](const VarList& v) { return v[0] * 2.0; }, {vec({1, 2})}),
                         "value_and_grad: the function must return a scalar, it returned shape [2]",
                         TapeError);
  }
}

TEST_CASE("value_and_grad over a tree keeps the tree's structure") {
  Tree<Tensor> params = Tree<Tensor>::list(
      {Tree<Tensor>(vec({1.0, 2.0})), Tree<Tensor>::list({Tree<Tensor>(vec({3.0}))})});
  auto [value, g] = value_and_grad(
      [](const Tree<Var>& p) {
        const Var a = p[0].leaf(), b = p[1][0].leaf();
        return fm::sum(a * a) + fm::sum(b * 4.0);
      },
      params);
  CHECK(value.item<double>() == doctest::Approx(1 + 4 + 12));
  CHECK(g[0].leaf().flat(1) == doctest::Approx(4.0));
  CHECK(g[1][0].leaf().flat(0) == doctest::Approx(4.0));
}

TEST_CASE("debug_nans names the first op that produced a NaN, with its scope") {
  autodiff::set_debug_nans(true);
  Tape tape;
  Var x = tape.watch(vec({1.0, 0.0}));
  {
    autodiff::NameScope outer("Serial");
    autodiff::NameScope inner("Fn_log");
    Var zero = x * 0.0;
    CHECK_THROWS_WITH_AS(zero / zero,
                         "non-finite value (NaN or Inf) in output 0 of op 'divide' in "
                         "Serial/Fn_log; inputs: [2] float64, [2] float64",
                         autodiff::NonFiniteError);
  }
  autodiff::set_debug_nans(false);
}

TEST_CASE("NoRecord: nothing records inside it") {
  Tape tape;
  Var x = tape.watch(vec({1.0}));
  {
    NoRecord quiet;
    Var y = x * 2.0;
    CHECK_FALSE(y.on_tape());
  }
  Var z = x * 2.0;
  CHECK(z.on_tape());
}
