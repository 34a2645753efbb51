// Combinators against Trax 1.3.4's combinators_test.py and the course lab's values.
#include <doctest/doctest.h>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace fm = minitrax::fastmath;
using base::Stack;

namespace {

Tensor vec(std::vector<double> v) {
  const std::size_t n = v.size();
  return Tensor::from<double>({n}, std::move(v));
}

std::vector<double> vals(const Var& v) {
  return v.value().to_vector<double>();
}

base::LayerPtr DivideBy(double d) {
  return tl::Fn("DivideBy", [d](const Var& x) { return x / d; });
}

base::LayerPtr Scale(const std::string& name, double s) {
  return tl::Fn(name, [s](const Var& x) { return x * s; });
}

}  // namespace

TEST_CASE("Serial: arity from the fold, Trax's examples") {
  CHECK(tl::Serial({})->n_in() == 1);
  CHECK(tl::Serial({})->n_out() == 1);
  auto s = tl::Serial({DivideBy(2.0), DivideBy(5.0)});
  CHECK(vals((*s)(Var(vec({10, 20, 30})))) == std::vector<double>{1, 2, 3});
  auto dd = tl::Serial({tl::Dup(), tl::Dup()});
  CHECK(dd->n_in() == 1);
  CHECK(dd->n_out() == 3);
  Stack ys = (*dd)(Stack{Var(vec({1, 2, 3}))});
  REQUIRE(ys.size() == 3);
  for (const Var& y : ys) CHECK(vals(y) == std::vector<double>{1, 2, 3});
  // Serial(Drop, Drop) takes two, gives none; Serial(Swap, Drop) takes 2, gives 1
  CHECK(tl::Serial({tl::Drop(), tl::Drop()})->n_in() == 2);
  CHECK(tl::Serial({tl::Drop(), tl::Drop()})->n_out() == 0);
  auto sd = tl::Serial({tl::Swap(), tl::Drop()});
  CHECK(sd->n_in() == 2);
  CHECK(sd->n_out() == 1);
  CHECK(vals((*sd)(Stack{Var(vec({1})), Var(vec({2}))})[0]) == std::vector<double>{1});
  CHECK(s->repr() == "Serial[\n  DivideBy\n  DivideBy\n]");
  CHECK(tl::Serial({tl::Dup(), tl::Dup()}, "Branch")->repr().rfind("Branch_out3[", 0) == 0);
}

TEST_CASE("Parallel and Select") {
  auto p = tl::Parallel({DivideBy(0.5), DivideBy(3.0)});
  CHECK(p->n_in() == 2);
  CHECK(p->n_out() == 2);
  Stack ys = (*p)(Stack{Var(vec({1, 2})), Var(vec({30, 60}))});
  CHECK(vals(ys[0]) == std::vector<double>{2, 4});
  CHECK(vals(ys[1]) == std::vector<double>{10, 20});
  auto sel = tl::Select({0, 0, 1});
  CHECK(sel->n_in() == 2);
  CHECK(sel->n_out() == 3);
  Stack zs = (*sel)(Stack{Var(vec({1})), Var(vec({2}))});
  CHECK(vals(zs[2]) == std::vector<double>{2});
  CHECK(tl::Select({2}, 3)->n_in() == 3);
  CHECK_THROWS_AS(tl::Select({3}, 2), ValueError);
}

TEST_CASE("Branch and Residual: the lab's values") {
  auto add1 = tl::Fn("add1", [](const Var& x) { return x + 1.0; });
  auto addab = tl::Fn(
      "addab", [](const Stack& xs) { return Stack{xs[0] + xs[1]}; }, 2, 1);
  auto rep3x = tl::Fn(
      "rep3x",
      [](const Stack& xs) {
        return Stack{xs[0], xs[0], xs[0]};
      },
      1, 3);
  auto br = tl::Branch({add1, addab, rep3x});
  CHECK(br->n_in() == 2);
  CHECK(br->n_out() == 5);
  // Branch(add1, addab, rep3x)([1, 3, n, m]) -> (2, 4, 1, 1, 1, n, m): the stack
  // items below the inputs (here 7 and 8 for 'n' and 'm') pass through.
  Stack ys = tl::Serial({tl::Parallel({br, nullptr, nullptr})})
                 ->
                 operator()(Stack{Var(vec({1})), Var(vec({3})), Var(vec({7})), Var(vec({8}))});
  std::vector<double> got;
  for (const Var& y : ys) got.push_back(vals(y)[0]);
  CHECK(got == std::vector<double>{2, 4, 1, 1, 1, 7, 8});
  // MyResidual(add1)([1]) -> [3]
  CHECK(vals((*tl::Residual({add1}))(Var(vec({1})))) == std::vector<double>{3});
  // A plain residual chain F, G, F, G with F(x) = 2x, G(x) = 10x on x = 1 -> 1089.
  auto F = Scale("F", 2.0), G = Scale("G", 10.0);
  auto chain =
      tl::Serial({tl::Residual({F}), tl::Residual({G}), tl::Residual({F}), tl::Residual({G})});
  CHECK(vals((*chain)(Var(vec({1}))))[0] == 1089.0);
  CHECK(vals((*tl::Dup())(Stack{Var(vec({1}))})[1])[0] == 1.0);
}

TEST_CASE("Concatenate, Split, Add, SubtractTop, Multiply") {
  auto c = tl::Concatenate(3);
  Stack xs{Var(vec({1, 2})), Var(vec({3})), Var(vec({4, 5}))};
  CHECK(vals((*c)(xs)[0]) == std::vector<double>{1, 2, 3, 4, 5});
  auto sp = tl::Split(2);
  Stack halves = (*sp)(Stack{Var(vec({1, 2, 3, 4}))});
  CHECK(vals(halves[1]) == std::vector<double>{3, 4});
  CHECK(vals((*tl::SubtractTop())(Stack{Var(vec({1})), Var(vec({10}))})[0])[0] == 9.0);
  CHECK(vals((*tl::Multiply())(Stack{Var(vec({3})), Var(vec({10}))})[0])[0] == 30.0);
  CHECK(vals((*tl::Add())(Stack{Var(vec({3})), Var(vec({10}))})[0])[0] == 13.0);
}

TEST_CASE("a wrong number of inputs names the layer, where it was created and the counts") {
  auto s = tl::Serial({tl::Add()});
  try {
    (*s)(Stack{Var(vec({1}))});
    FAIL("no error");
  } catch (const base::LayerError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("Serial (created at tests/test_combinators.cpp:") == 0);
    CHECK(msg.find("with inputs [1] float64: expected 2 inputs, got 1") != std::string::npos);
  }
}

TEST_CASE("LayerError: innermost layer first, then each enclosing layer") {
  auto bad = tl::Fn("Bad", [](const Var& x) { return fm::matmul(x, x); });
  auto inner = tl::Serial({DivideBy(1.0), bad}, "Inner");
  auto outer = tl::Serial({tl::Dup(), tl::Parallel({inner, nullptr})}, "Outer");
  try {
    (*outer)(Stack{Var(Tensor::zeros({2, 3}, DType::f64))});
    FAIL("no error");
  } catch (const base::LayerError& e) {
    const std::string msg = e.what();
    INFO(msg);
    const auto p_bad = msg.find("Bad (created at tests/test_combinators.cpp:");
    const auto p_inner = msg.find("\n  in Inner (created at");
    const auto p_par = msg.find("\n  in Parallel (created at");
    const auto p_outer = msg.find("\n  in Outer (created at");
    CHECK(p_bad == 0);
    CHECK(p_bad < p_inner);
    CHECK(p_inner < p_par);
    CHECK(p_par < p_outer);
    CHECK(msg.find("with inputs [2, 3] float64: matmul") != std::string::npos);
    CHECK(e.original().find("matmul") == 0);
  }
}
