// Trax 1.3.4's combinators_test.py, case by case, in minitrax: weights and state
// trees, weight sharing (the cache marker), rng recursion, Parallel, Concatenate, Branch.
#include <doctest/doctest.h>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
using base::Stack;

namespace {

Tensor ivec(std::vector<float> v) {
  const std::size_t n = v.size();
  return Tensor::from<float>({n}, std::move(v));
}

bool is_marker(const base::Weights& w) {
  return w.is_leaf() && !w.leaf().defined();
}

base::Signature sig(std::initializer_list<Shape> shapes) {
  base::Signature s;
  for (const Shape& sh : shapes) s.push_back({sh, DType::f32});
  return s;
}

std::vector<std::vector<double>> as_list(const Stack& ys) {
  std::vector<std::vector<double>> out;
  for (const Var& y : ys) out.push_back(y.value().to_vector<double>());
  return out;
}

}  // namespace

TEST_CASE("Serial: weights and state are tuples of the sublayers'") {
  auto model = tl::Serial({tl::Dense(4), tl::Dense(5), tl::Dense(7)});
  model->init(sig({{2, 3}}));
  CHECK(model->weights().size() == 3);
  CHECK(model->state().size() == 3);
}

TEST_CASE("Serial: flat weights and state (2 dense layers -> 4 weights, no state)") {
  auto model = tl::Serial({tl::Dup(), tl::Dense(5), tl::Serial({tl::Dense(7), tl::Dup()})});
  model->init(sig({{2, 3}}));
  auto flat = model->flat_weights();
  CHECK(flat.size() == 4);
  CHECK(model->flat_state().empty());
  // The weights move into a model of another structure with the same flat layout.
  auto model2 = tl::Serial({tl::Dense(5), tl::Dup(), tl::Dense(7)});
  model2->init(sig({{2, 3}}));
  std::vector<Tensor> values;
  for (auto& w : flat) values.push_back(w.value);
  model2->set_flat_weights(values);
  CHECK(model2->weights().size() == 3);
  CHECK(core::equal(model2->weights()[0][0].leaf(), model->weights()[1][0].leaf()));
  CHECK(core::equal(model2->weights()[2][1].leaf(), model->weights()[2][0][1].leaf()));
}

TEST_CASE("Serial: a shared layer's weights are flattened once") {
  auto shared = tl::Dense(5);
  auto model = tl::Serial({tl::Dense(5), shared, tl::Serial({shared, tl::Dup()})});
  model->init(sig({{2, 3}}));
  CHECK(model->flat_weights().size() == 4);
}

TEST_CASE("Serial: assigning a sublayer's weights shows in the model's weights") {
  auto layer = tl::Dense(5, layers::init::GlorotUniform(), layers::init::Zeros(), false);
  auto model = tl::Serial({tl::Serial({layer, tl::Dense(6)}), tl::Dense(7)});
  model->init(sig({{5}}));
  Tensor fresh = core::uniform(core::key_from_seed(4), model->weights()[0][0][0].leaf().shape());
  layer->set_weights(base::Weights::list({base::Weights(fresh)}));
  CHECK(model->weights()[0][0][0].leaf().shares_storage(fresh));
}

TEST_CASE("Serial: shared weights give the cache marker, nested too") {
  {
    auto layer = tl::Dense(5);
    auto model = tl::Serial({layer, layer});
    auto [w, s] = model->init(sig({{5}}));
    CHECK(is_marker(w[1]));
    CHECK_FALSE(is_marker(w[0]));
  }
  {
    auto layer = tl::Dense(5);
    auto model = tl::Serial({layer, tl::Serial({layer})});
    auto [w, s] = model->init(sig({{5}}));
    CHECK(is_marker(w[1][0]));
  }
  {
    auto layer = tl::Dense(5);
    auto model = tl::Serial({tl::Serial({layer}), tl::Serial({layer})});
    auto [w, s] = model->init(sig({{5}}));
    CHECK(is_marker(w[1][0]));
  }
  {
    auto layer = tl::Serial({tl::Dense(5), tl::Dense(5)});
    auto model = tl::Serial({layer, layer});
    auto [w, s] = model->init(sig({{5}}));
    CHECK_FALSE(is_marker(w[0]));
    CHECK(is_marker(w[1]));
    Var y = (*model)(Var(ivec({1, 2, 3, 4, 5})));
    CHECK(y.shape() == Shape{5});
  }
}

TEST_CASE("Serial: init sets rngs recursively, so sibling layers differ") {
  auto d00 = tl::Dense(2), d01 = tl::Dense(2), d10 = tl::Dense(2), d11 = tl::Dense(2);
  auto layer = tl::Serial({tl::Serial({d00, d01}), tl::Serial({d10, d11})});
  layer->init(sig({{1, 2}}));
  auto w = layer->weights();
  CHECK_FALSE(core::equal(w[0][0][0].leaf(), w[0][1][0].leaf()));
  CHECK_FALSE(core::equal(w[0][0][1].leaf(), w[0][1][1].leaf()));
  CHECK_FALSE(core::equal(w[1][0][0].leaf(), w[1][1][0].leaf()));
  CHECK_FALSE(core::equal(w[1][0][1].leaf(), w[1][1][1].leaf()));
}

TEST_CASE("Parallel: Trax's cases") {
  CHECK(as_list((*tl::Parallel({tl::Dup(), tl::Dup()}))(
            Stack{Var(ivec({1, 2, 3})), Var(ivec({10, 20}))})) ==
        std::vector<std::vector<double>>{{1, 2, 3}, {1, 2, 3}, {10, 20}, {10, 20}});
  CHECK(as_list((*tl::Parallel({tl::Serial({}), nullptr}))(
            Stack{Var(ivec({1, 2, 3})), Var(ivec({10, 20}))})) ==
        std::vector<std::vector<double>>{{1, 2, 3}, {10, 20}});
  CHECK(tl::Parallel({tl::Dup(), tl::Dup()})->repr().find("Parallel") != std::string::npos);
  {
    auto model = tl::Parallel({tl::Dense(3), tl::Dense(5)});
    model->init(sig({{2}, {2}}));
    CHECK(model->weights().size() == 2);
    CHECK(model->state().size() == 2);
  }
  {
    auto layer = tl::Dense(5);
    auto model = tl::Parallel({layer, layer});
    auto [w, s] = model->init(sig({{5}, {5}}));
    CHECK(is_marker(w[1]));
  }
  {
    auto layer = tl::Dense(5);
    auto model =
        tl::Parallel({tl::Serial({layer, tl::Dense(2)}), tl::Serial({layer, tl::Dense(2)})});
    auto [w, s] = model->init(sig({{5}, {5}}));
    CHECK(is_marker(w[1][0]));
  }
  {
    auto layer = tl::Parallel({tl::Dense(5), tl::Dense(7)});
    auto model = tl::Parallel({layer, layer});
    auto [w, s] = model->init(sig({{3}, {3}, {3}, {3}}));
    CHECK_FALSE(is_marker(w[0]));
    CHECK(is_marker(w[1]));
    Stack ys = (*model)(Stack{Var(ivec({1, 2, 3})), Var(ivec({10, 20, 30})),
                              Var(ivec({100, 200, 300})), Var(ivec({1000, 2000, 3000}))});
    CHECK(ys[0].shape() == Shape{5});
    CHECK(ys[1].shape() == Shape{7});
    CHECK(ys[2].shape() == Shape{5});
    CHECK(ys[3].shape() == Shape{7});
  }
}

TEST_CASE("Concatenate: Trax's cases and repr") {
  const Tensor a = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = Tensor::from<float>({2, 3}, {10, 20, 30, 40, 50, 60});
  const Tensor c = Tensor::from<float>({2, 3}, {100, 200, 300, 400, 500, 600});
  auto cat = tl::Concatenate();
  CHECK(cat->n_in() == 2);
  CHECK(cat->n_out() == 1);
  CHECK((*cat)(Stack{Var(a), Var(b)})[0].value().to_vector<double>() ==
        std::vector<double>{1, 2, 3, 10, 20, 30, 4, 5, 6, 40, 50, 60});
  Var y0 = (*tl::Concatenate(2, 0))(Stack{Var(a), Var(b)})[0];
  CHECK(y0.shape() == Shape{4, 3});
  Var y3 = (*tl::Concatenate(3))(Stack{Var(a), Var(b), Var(c)})[0];
  CHECK(y3.shape() == Shape{2, 9});
  CHECK(y3.value().at({1, 8}) == 600);
  CHECK(tl::Concatenate()->repr() == "Concatenate_in2");
  CHECK(tl::Concatenate(2, 0)->repr() == "Concatenate_axis0_in2");
  CHECK(tl::Concatenate(2, 1)->repr() == "Concatenate_axis1_in2");
  CHECK(tl::Concatenate(3)->repr() == "Concatenate_in3");
}

TEST_CASE("Branch: Trax's cases") {
  CHECK(as_list((*tl::Branch({tl::Serial({}), tl::Dup()}))(Stack{Var(ivec({1, 2, 3}))})) ==
        std::vector<std::vector<double>>{{1, 2, 3}, {1, 2, 3}, {1, 2, 3}});
  auto div = tl::Fn("DivideBy", [](const Var& x) { return x / 0.5; });
  CHECK(as_list((*tl::Branch({tl::Add(), div}))(
            Stack{Var(ivec({1, 2, 3})), Var(ivec({10, 20, 30}))})) ==
        std::vector<std::vector<double>>{{11, 22, 33}, {2, 4, 6}});
}
