// tests/test_reversible.cpp: reversible layers (the course lab's values, reverse(forward(x)) = x,
// gradients equal to plain backprop with dropout and LSH, what the outer tape keeps).
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/layer_gradcheck.hpp"
#include "layers/research/efficient_attention.hpp"
#include "layers/reversible.hpp"
#include "test_util.hpp"

using namespace minitrax;
using namespace minitrax::layers;
using autodiff::Var;
using autodiff::VarList;
using base::DType;
using core::key_from_seed;
using core::Tensor;

namespace {

LayerPtr times(const char* name, double c) {
  return Fn(name, [c](const Var& x) { return x * c; });
}

Tensor scalar1(double v) {
  return Tensor::from<float>({1}, {static_cast<float>(v)});
}

Tensor uniform(std::int64_t seed, const core::Shape& shape, DType dtype = DType::f32) {
  return core::uniform(key_from_seed(seed), shape, dtype);
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(b.flat(i)));
    diff = std::max(diff, std::abs(a.flat(i) - b.flat(i)));
  }
  return diff / std::max(scale, 1e-30);
}

// A Reformer-style block list: [HalfResidual(LayerNorm, attention), Swap,
// HalfResidual(feed-forward with dropout), Swap] x n_blocks.
std::vector<LayerPtr> reformer_blocks(int n_blocks, long d_model, long n_hashes, double dropout,
                                      bool lsh = true) {
  std::vector<LayerPtr> blocks;
  for (int i = 0; i < n_blocks; ++i) {
    LayerPtr attention;
    if (lsh) {
      attention = research::LSHSelfAttention({.n_heads = 2,
                                              .d_qk = 4,
                                              .d_v = 4,
                                              .causal = true,
                                              .chunk_len = 4,
                                              .n_chunks_before = 1,
                                              .n_hashes = n_hashes,
                                              .n_buckets = {4},
                                              .attention_dropout = dropout,
                                              .output_dropout = dropout,
                                              .n_parallel_heads = 2});
    } else {
      attention = research::SelfAttention(
          {.n_heads = 2, .d_qk = 4, .d_v = 4, .causal = true, .output_dropout = dropout});
    }
    blocks.push_back(ReversibleHalfResidual({LayerNorm()}, attention));
    blocks.push_back(ReversibleSwap());
    blocks.push_back(
        ReversibleHalfResidual({LayerNorm(), Dense(2 * d_model), Dropout(dropout, {-2}), Relu(),
                                Dense(d_model), Dropout(dropout, {-2})}));
    blocks.push_back(ReversibleSwap());
  }
  return blocks;
}

struct Run {
  std::vector<Tensor> outputs, input_cts, weight_cts;
};

// Outputs and the gradients of sum(outputs * cts) with respect to the inputs and the
// flat weights; the layer's weights and state are left as they were.
Run differentiate(base::Layer& layer, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& cts, core::Key rng) {
  const base::State state = layer.state();
  const std::vector<Var> installed = layer.flat_weight_vars();
  std::vector<Tensor> primals = inputs;
  for (const auto& w : layer.flat_weights()) primals.push_back(w.value);
  const std::size_t n = inputs.size();
  auto result = autodiff::vjp(
      [&](const VarList& v) {
        layer.set_flat_weights(std::vector<Var>(v.begin() + static_cast<long>(n), v.end()));
        return layer.apply(VarList(v.begin(), v.begin() + static_cast<long>(n)), rng);
      },
      primals);
  std::vector<Tensor> all = result.pullback(cts);
  layer.set_flat_weights(installed);
  layer.set_state(state);
  Run r;
  r.outputs = result.outputs;
  r.input_cts.assign(all.begin(), all.begin() + static_cast<long>(n));
  r.weight_cts.assign(all.begin() + static_cast<long>(n), all.end());
  return r;
}

}  // namespace

TEST_CASE("reversible: ReversibleSwap swaps (Trax's reversible_test)") {
  auto swap = ReversibleSwap();
  const Tensor a = Tensor::from<float>({2}, {1, 2});
  const Tensor b = Tensor::from<float>({2}, {10, 20});
  base::Stack out = (*swap)({Var(a), Var(b)});
  CHECK(out[0].value().to_vector<float>() == std::vector<float>{10, 20});
  CHECK(out[1].value().to_vector<float>() == std::vector<float>{1, 2});
}

TEST_CASE("reversible: the course lab's values (HalfResidual(F) on [1, 1]; [65, 681])") {
  auto half = ReversibleHalfResidual({times("F", 2.0)});
  CHECK(half->n_in() == 2);
  CHECK(half->n_out() == 2);
  half->init({{{1}, DType::f32}, {{1}, DType::f32}});
  base::Stack out = (*half)({Var(scalar1(1)), Var(scalar1(1))});
  CHECK(out[0].value().flat(0) == 3.0);
  CHECK(out[1].value().flat(0) == 1.0);

  std::vector<LayerPtr> blocks;
  for (int round = 0; round < 2; ++round) {
    blocks.push_back(ReversibleHalfResidual({times("F", 2.0)}));
    blocks.push_back(ReversibleSwap());
    blocks.push_back(ReversibleHalfResidual({times("G", 10.0)}));
    blocks.push_back(ReversibleSwap());
  }
  auto model = Serial({Dup(), ReversibleSerial(blocks), Concatenate()});
  model->init({{{1}, DType::f32}});
  const Tensor y = (*model)(Var(scalar1(1))).value();
  CHECK(y.to_vector<float>() == std::vector<float>{65, 681});
}

TEST_CASE("reversible: reverse(forward(x)) = x for LSH and feed-forward blocks with dropout") {
  const long d_model = 8;
  auto stack = ReversibleSerial(reformer_blocks(2, d_model, /*n_hashes=*/2, /*dropout=*/0.1));
  auto* rs = static_cast<ReversibleSerialLayer*>(stack.get());
  const base::Signature sig{{{2, 16, d_model}, DType::f32}, {{2, 16, d_model}, DType::f32}};
  stack->init(sig, key_from_seed(1));
  const Tensor x1 = uniform(2, {2, 16, d_model}), x2 = uniform(3, {2, 16, d_model});
  const base::State before = stack->state();
  const core::Key rng = key_from_seed(7);
  base::Stack out = stack->apply({Var(x1), Var(x2)}, rng);
  const base::State after = stack->state();
  const std::vector<Tensor> back =
      rs->reverse({out[0].value(), out[1].value()}, before, after, rng);
  CHECK(max_rel_diff(back[0], x1) < 1e-5);
  CHECK(max_rel_diff(back[1], x2) < 1e-5);
  // The outputs really differ from the inputs (the test is not trivially true).
  CHECK(max_rel_diff(out[0].value(), x1) > 1e-2);
}

TEST_CASE("reversible: gradients equal plain backprop (LSH n_hashes 1 and 4, dropout on)") {
  const long d_model = 8;
  for (long n_hashes : {1L, 4L}) {
    CAPTURE(n_hashes);
    auto stack = ReversibleSerial(reformer_blocks(2, d_model, n_hashes, /*dropout=*/0.2));
    auto* rs = static_cast<ReversibleSerialLayer*>(stack.get());
    const base::Signature sig{{{2, 16, d_model}, DType::f32}, {{2, 16, d_model}, DType::f32}};
    stack->init(sig, key_from_seed(11));
    const std::vector<Tensor> inputs{uniform(12, {2, 16, d_model}), uniform(13, {2, 16, d_model})};
    const std::vector<Tensor> cts{uniform(14, {2, 16, d_model}), uniform(15, {2, 16, d_model})};
    const core::Key rng = key_from_seed(16);

    rs->set_reversible_backward(false);
    const Run plain = differentiate(*stack, inputs, cts, rng);
    rs->set_reversible_backward(true);
    const Run rev = differentiate(*stack, inputs, cts, rng);

    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(max_rel_diff(rev.outputs[i], plain.outputs[i]) == 0.0);
      CHECK(max_rel_diff(rev.input_cts[i], plain.input_cts[i]) < 1e-5);
    }
    REQUIRE(rev.weight_cts.size() == plain.weight_cts.size());
    REQUIRE(rev.weight_cts.size() == stack->flat_weights().size());
    for (std::size_t k = 0; k < rev.weight_cts.size(); ++k) {
      CAPTURE(stack->flat_weights()[k].name);
      CHECK(max_rel_diff(rev.weight_cts[k], plain.weight_cts[k]) < 1e-5);
    }
  }
}

TEST_CASE("reversible: the outer tape keeps one node whatever the depth") {
  const long d_model = 8;
  std::vector<std::size_t> nodes, saved_bytes;
  for (int n_blocks : {1, 2, 6}) {
    auto stack = ReversibleSerial(reformer_blocks(n_blocks, d_model, 2, 0.1));
    stack->init({{{1, 16, d_model}, DType::f32}, {{1, 16, d_model}, DType::f32}}, key_from_seed(3));
    autodiff::Tape tape;
    const Var x1 = tape.watch(uniform(4, {1, 16, d_model}));
    const Var x2 = tape.watch(uniform(5, {1, 16, d_model}));
    std::vector<Var> ws;
    for (const auto& w : stack->flat_weights()) ws.push_back(tape.watch(w.value));
    stack->set_flat_weights(ws);
    const std::size_t leaves = tape.size();
    (void)stack->apply({x1, x2}, key_from_seed(6));
    nodes.push_back(tape.size() - leaves);
    saved_bytes.push_back(tape.stats().saved_bytes);
  }
  CHECK(nodes == std::vector<std::size_t>{1, 1, 1});
  // What the node saves is the two outputs, whatever the number of blocks.
  CHECK(saved_bytes[0] == saved_bytes[2]);

  // Plain backprop through the same blocks records many nodes, growing with depth.
  auto plain = ReversibleSerial(reformer_blocks(2, d_model, 2, 0.1));
  static_cast<ReversibleSerialLayer*>(plain.get())->set_reversible_backward(false);
  plain->init({{{1, 16, d_model}, DType::f32}, {{1, 16, d_model}, DType::f32}});
  autodiff::Tape tape;
  const Var x1 = tape.watch(uniform(4, {1, 16, d_model}));
  (void)plain->apply({x1, x1}, key_from_seed(6));
  CHECK(tape.size() > 20);
}

TEST_CASE("reversible: float64 gradcheck through a reversible stack") {
  auto stack = ReversibleSerial({ReversibleHalfResidual({LayerNorm(), Dense(3)}), ReversibleSwap(),
                                 ReversibleHalfResidual({Dense(3), Tanh(), Dropout(0.3, {-2})}),
                                 ReversibleSwap()});
  stack->init({{{2, 4, 3}, DType::f64}, {{2, 4, 3}, DType::f64}}, key_from_seed(8));
  base::cast_layer(*stack, DType::f64);
  const auto r = base::gradcheck_layer(
      *stack, {uniform(9, {2, 4, 3}, DType::f64), uniform(10, {2, 4, 3}, DType::f64)});
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("reversible: clear errors") {
  const std::string msg = testutil::error_message([] {
    (void)ReversibleSerial({ReversibleSwap(), Dense(3)});
  });
  CHECK(testutil::contains(msg, "sublayer 1 (Dense"));
  CHECK(testutil::contains(msg, "is not reversible"));

  auto half = ReversibleHalfResidual({Dense(5)});
  const std::string shape_msg = testutil::error_message([&] {
    half->init({{{2, 3}, DType::f32}, {{2, 3}, DType::f32}});
  });
  CHECK(testutil::contains(shape_msg, "the residual has shape [2, 5]"));
  CHECK(testutil::contains(shape_msg, "accumulator it is added to has [2, 3]"));
}
