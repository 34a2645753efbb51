// Tests of the Transformer language model (models/transformer.hpp): shapes, normalised
// log-probs, causality through ShiftRight and causal attention, Trax's structure and
// weight names, a float64 gradcheck of a tiny model, dropout replay, predict mode
// against eval mode, and a few SGD steps that lower the loss on a copy batch.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <source_location>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/combinators.hpp"
#include "layers/layer_gradcheck.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace fm = minitrax::fastmath;
using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using core::key_from_seed;
using models::TransformerLM;

namespace {
using minitrax::testutil::contains;
using minitrax::testutil::error_message;

using Vec = std::vector<double>;

Vec vals(const Tensor& t) {
  return t.to_vector<double>();
}
Vec vals(const Var& v) {
  return v.value().to_vector<double>();
}

Tensor ids_tensor(const Shape& shape, std::vector<std::int32_t> ids) {
  return Tensor::from<std::int32_t>(shape, std::move(ids));
}

// Largest |a - b| over position i of [B, L, V] outputs.
double position_diff(const Vec& a, const Vec& b, std::size_t B, std::size_t L, std::size_t V,
                     std::size_t i) {
  double d = 0;
  for (std::size_t bb = 0; bb < B; ++bb)
    for (std::size_t v = 0; v < V; ++v)
      d = std::max(d, std::abs(a[(bb * L + i) * V + v] - b[(bb * L + i) * V + v]));
  return d;
}

double max_diff(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

models::TransformerLMOptions tiny(Mode mode = Mode::train, double dropout = 0.0) {
  return {.vocab_size = 5,
          .d_model = 4,
          .d_ff = 8,
          .n_layers = 1,
          .n_heads = 2,
          .dropout = dropout,
          .max_len = 8,
          .mode = mode};
}

}  // namespace

TEST_CASE("TransformerLM: ids [B, L] -> log-probs [B, L, vocab], normalised") {
  auto model = TransformerLM({.vocab_size = 7,
                              .d_model = 16,
                              .d_ff = 32,
                              .n_layers = 2,
                              .n_heads = 4,
                              .dropout = 0.1,
                              .max_len = 32});
  const Tensor ids = core::randint(key_from_seed(1), {3, 10}, 0, 7);
  model->init({{ids.shape(), DType::i32}}, key_from_seed(2));
  CHECK(model->n_in() == 1);
  CHECK(model->n_out() == 1);
  const Signature predicted = model->output_signature({{ids.shape(), DType::i32}});
  Var logp = (*model)(Var(ids));
  CHECK(logp.shape() == Shape{3, 10, 7});
  CHECK(logp.dtype() == DType::f32);
  CHECK(predicted == Signature{{logp.shape(), logp.dtype()}});
  const Tensor lse = core::logsumexp(logp.value(), {-1});
  CHECK(lse.shape() == Shape{3, 10});
  for (double v : vals(lse)) CHECK(std::abs(v) < 1e-5);
  CHECK(core::all_finite(logp.value()));
  // int64 ids work too
  CHECK((*model)(Var(ids.astype(DType::i64))).shape() == Shape{3, 10, 7});
}

TEST_CASE("TransformerLM: the output at position i depends on tokens before i only") {
  auto model = TransformerLM({.vocab_size = 6,
                              .d_model = 8,
                              .d_ff = 16,
                              .n_layers = 2,
                              .n_heads = 2,
                              .dropout = 0.0,
                              .max_len = 16});
  const std::size_t B = 2, L = 6, V = 6;
  std::vector<std::int32_t> base_ids{1, 2, 3, 4, 5, 1, 5, 4, 3, 2, 1, 0};
  model->init({{{B, L}, DType::i32}});
  const Vec y = vals((*model)(Var(ids_tensor({B, L}, base_ids))));
  for (std::size_t t = 0; t < L; ++t) {
    CAPTURE(t);
    std::vector<std::int32_t> changed = base_ids;
    for (std::size_t b = 0; b < B; ++b) {
      auto& id = changed[b * L + t];
      id = (id + 3) % 6;
    }
    const Vec y2 = vals((*model)(Var(ids_tensor({B, L}, changed))));
    for (std::size_t i = 0; i < L; ++i) {
      CAPTURE(i);
      const double d = position_diff(y, y2, B, L, V, i);
      if (i <= t) {
        CHECK(d < 1e-6);  // token t is not seen at positions 0 .. t
      } else if (i == t + 1) {
        CHECK(d > 1e-4);  // position t + 1 is the first to see it
      }
    }
  }
}

TEST_CASE("TransformerLM: Trax's structure in repr, flat weight names") {
  auto model = TransformerLM(5, 4, 8, 1, 2, 0.0, 8);
  model->init({{{2, 3}, DType::i32}});
  std::vector<std::string> top;
  for (const auto& l : model->sublayers()) top.push_back(l->label());
  CHECK(top == std::vector<std::string>{"ShiftRight(1)", "Embedding_5_4", "Dropout",
                                        "PositionalEncoding", "Residual", "Residual", "LayerNorm",
                                        "Dense_5", "LogSoftmax"});
  const std::string r = model->repr();
  INFO(r);
  CHECK(r.rfind("Serial[\n  ShiftRight(1)\n  Embedding_5_4\n  Dropout\n  PositionalEncoding\n",
                0) == 0);
  CHECK(contains(r,
                 "        Serial[\n          LayerNorm\n          Serial[\n"
                 "            Branch_out3[\n"));
  CHECK(contains(r,
                 "                Serial[\n                  Dense_4\n"
                 "                  SplitIntoHeads\n                ]\n"));
  CHECK(contains(r,
                 "            DotProductCausalAttention_in3\n            MergeHeads\n"
                 "            Dense_4\n          ]\n          Dropout\n        ]\n"));
  CHECK(contains(r,
                 "        Serial[\n          LayerNorm\n          Dense_8\n          Relu\n"
                 "          Dropout\n          Dense_4\n          Dropout\n        ]\n"));
  CHECK(contains(r, "  LayerNorm\n  Dense_5\n  LogSoftmax\n]"));

  std::vector<std::string> names;
  for (const auto& w : model->flat_weights()) names.push_back(w.name);
  const std::string att = "Serial/Residual_4/Branch_0/Parallel_1/Serial_1/";
  const std::string ff = "Serial/Residual_5/Branch_0/Parallel_1/Serial_1/";
  CHECK(names == std::vector<std::string>{"Serial/Embedding_1/embeddings",
                                          "Serial/PositionalEncoding_3/pe",
                                          att + "LayerNorm_0/scale",
                                          att + "LayerNorm_0/bias",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_0/Dense_0/w",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_0/Dense_0/b",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_1/Dense_0/w",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_1/Dense_0/b",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_2/Dense_0/w",
                                          att + "Serial_1/Branch_0/Parallel_1/Serial_2/Dense_0/b",
                                          att + "Serial_1/Dense_3/w",
                                          att + "Serial_1/Dense_3/b",
                                          ff + "LayerNorm_0/scale",
                                          ff + "LayerNorm_0/bias",
                                          ff + "Dense_1/w",
                                          ff + "Dense_1/b",
                                          ff + "Dense_4/w",
                                          ff + "Dense_4/b",
                                          "Serial/LayerNorm_6/scale",
                                          "Serial/LayerNorm_6/bias",
                                          "Serial/Dense_7/w",
                                          "Serial/Dense_7/b"});
  const auto ws = model->flat_weights();
  CHECK(ws[0].value.shape() == Shape{5, 4});
  CHECK(ws[1].value.shape() == Shape{1, 8, 4});
  CHECK(ws[14].value.shape() == Shape{4, 8});
  CHECK(ws[16].value.shape() == Shape{8, 4});
  CHECK(ws[20].value.shape() == Shape{4, 5});
  // n_layers blocks of two residuals each; another activation
  auto deep = TransformerLM(5, 4, 8, 3, 2, 0.0, 8, Mode::train, tl::FastGelu);
  CHECK(deep->sublayers().size() == 4 + 2 * 3 + 3);
  CHECK(contains(deep->repr(), "          Dense_8\n          FastGelu\n"));
  CHECK(TransformerLM(5, 4, 8, 0, 2)->sublayers().size() == 7);
}

TEST_CASE("TransformerLM: gradcheck of a tiny model over all weights (float64)") {
  const Tensor ids = ids_tensor({2, 3}, {1, 4, 2, 0, 3, 3});
  SUBCASE("no dropout") {
    auto model = TransformerLM(tiny());
    model->init({{ids.shape(), DType::i32}}, key_from_seed(3));
    base::cast_layer(*model, DType::f64);
    const auto r = base::gradcheck_layer(*model, {ids});
    CHECK_MESSAGE(r.ok, r.message);
    CHECK(r.n_checked > 100);
  }
  SUBCASE("dropout 0.2 everywhere, with a fixed rng") {
    auto model = TransformerLM(tiny(Mode::train, 0.2));
    model->init({{ids.shape(), DType::i32}}, key_from_seed(4));
    base::cast_layer(*model, DType::f64);
    const auto r = base::gradcheck_layer(*model, {ids}, key_from_seed(5));
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("TransformerLM: dropout in train mode only, replayed by the same rng") {
  const Tensor ids = ids_tensor({2, 4}, {1, 2, 3, 4, 4, 3, 2, 1});
  auto with = TransformerLM(tiny(Mode::train, 0.3));
  auto without = TransformerLM(tiny(Mode::train, 0.0));
  with->init({{ids.shape(), DType::i32}}, key_from_seed(6));
  without->init({{ids.shape(), DType::i32}}, key_from_seed(6));
  auto run = [&](base::Layer& m, Key key) {
    return vals(m.pure_fn({Var(ids)}, m.weight_vars(), m.state(), key).first[0]);
  };
  const Vec ref = run(*without, key_from_seed(0));
  CHECK(run(*with, key_from_seed(7)) == run(*with, key_from_seed(7)));
  CHECK(run(*with, key_from_seed(7)) != run(*with, key_from_seed(8)));
  CHECK(max_diff(run(*with, key_from_seed(7)), ref) > 1e-3);
  with->set_mode(Mode::eval);
  CHECK(max_diff(run(*with, key_from_seed(7)), ref) < 1e-6);
}

TEST_CASE("TransformerLM predict mode: one token at a time gives the eval-mode log-probs") {
  const std::size_t B = 2, L = 6;
  const models::TransformerLMOptions opts{.vocab_size = 7,
                                          .d_model = 8,
                                          .d_ff = 16,
                                          .n_layers = 2,
                                          .n_heads = 2,
                                          .dropout = 0.1,
                                          .max_len = 8};
  auto eval_opts = opts, pred_opts = opts;
  eval_opts.mode = Mode::eval;
  pred_opts.mode = Mode::predict;
  auto eval = TransformerLM(eval_opts);
  auto pred = TransformerLM(pred_opts);
  const std::vector<std::int32_t> ids{3, 1, 4, 1, 5, 6, 2, 6, 5, 3, 5, 0};
  eval->init({{{B, L}, DType::i32}});
  pred->init({{{B, 1}, DType::i32}});
  std::vector<Tensor> ws;
  for (const auto& w : eval->flat_weights()) ws.push_back(w.value);
  pred->set_flat_weights(ws);
  const Vec want = vals((*eval)(Var(ids_tensor({B, L}, ids))));
  // the caller shifts: 0 first, then the previous token
  for (std::size_t t = 0; t < L; ++t) {
    CAPTURE(t);
    std::vector<std::int32_t> step(B);
    for (std::size_t b = 0; b < B; ++b) step[b] = t == 0 ? 0 : ids[b * L + t - 1];
    const Vec got = vals((*pred)(Var(ids_tensor({B, 1}, step))));
    Vec row;
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t v = 0; v < 7; ++v) row.push_back(want[(b * L + t) * 7 + v]);
    CHECK(max_diff(got, row) < 5e-5);
  }
}

TEST_CASE("TransformerLM: a few SGD steps lower the loss on a copy batch") {
  // Trax's copy task layout: 0 w 0 w, with w random tokens in [1, vocab).
  const std::size_t B = 8, n = 4, L = 2 * (n + 1), V = 6;
  const Tensor w = core::randint(key_from_seed(9), {B, n}, 1, long(V));
  std::vector<std::int32_t> seq;
  for (std::size_t b = 0; b < B; ++b) {
    for (int half = 0; half < 2; ++half) {
      seq.push_back(0);
      for (std::size_t j = 0; j < n; ++j) seq.push_back(std::int32_t(w.at({b, j})));
    }
  }
  const Tensor ids = ids_tensor({B, L}, seq);
  auto model = TransformerLM({.vocab_size = long(V),
                              .d_model = 16,
                              .d_ff = 32,
                              .n_layers = 1,
                              .n_heads = 2,
                              .dropout = 0.0,
                              .max_len = 16});
  model->init({{ids.shape(), DType::i32}}, key_from_seed(10));
  const Tensor targets = fm::one_hot(Var(ids), V).value();  // [B, L, V]
  auto loss_fn = [&](const autodiff::VarList& weights) {
    model->set_flat_weights(weights);
    Var logp = (*model)(Var(ids));
    return -fm::mean(fm::sum(logp * Var(targets), {-1}));
  };
  std::vector<Tensor> params;
  for (const auto& nw : model->flat_weights()) params.push_back(nw.value);
  std::vector<double> losses;
  const double lr = 0.5;
  for (int step = 0; step < 25; ++step) {
    auto [value, grads] = autodiff::value_and_grad(loss_fn, params);
    losses.push_back(value.item<double>());
    REQUIRE(grads.size() == params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      params[i] = core::sub(params[i], core::mul(grads[i], lr));
    }
  }
  model->set_flat_weights(params);
  INFO("first loss " << losses.front() << ", last " << losses.back());
  CHECK(std::isfinite(losses.front()));
  CHECK(losses.back() < 0.8 * losses.front());
  CHECK(losses[5] < losses.front());
}

TEST_CASE("TransformerLM: bad options are ValueErrors naming the argument") {
  CHECK(error_message([] { TransformerLM(0); }) ==
        "TransformerLM: vocab_size must be positive, got 0");
  CHECK(error_message([] { TransformerLM(5, 10, 8, 1, 4); }) ==
        "TransformerLM: d_model (10) must be a multiple of n_heads (4)");
  CHECK(error_message([] { TransformerLM(5, 8, 8, -1, 2); }) ==
        "TransformerLM: n_layers must be >= 0, got -1");
  CHECK(error_message([] { TransformerLM(5, 8, 8, 1, 2, 1.5); }) ==
        "TransformerLM: dropout must be in [0, 1), got 1.5");
  CHECK(error_message([] { TransformerLM(5, 8, 0, 1, 2); }) ==
        "TransformerLM: d_ff must be positive, got 0");
  CHECK(error_message([] { TransformerLM({.vocab_size = 5, .ff_activation = nullptr}); }) ==
        "TransformerLM: ff_activation is empty");
  CHECK(error_message([] {
          TransformerLM({.vocab_size = 5,
                         .d_model = 4,
                         .n_heads = 2,
                         .ff_activation = [](std::source_location) { return tl::Dup(); }});
        }) ==
        "FeedForwardBlock: ff_activation must make a one-input, one-output layer, got Dup "
        "with n_in = 1, n_out = 2");
  // inputs: float ids, too long a sequence
  auto model = TransformerLM(tiny());
  CHECK(contains(error_message([&] {
                   model->init({{{2, 3}, DType::f32}});
                 }),
                 "expected int32 or int64 token ids, got float32"));
  CHECK(contains(error_message([&] {
                   model->init({{{2, 9}, DType::i32}});
                 }),
                 "the sequence length 9 exceeds max_len 8"));
}
