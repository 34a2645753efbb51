// tests/test_reformer.cpp: ReformerLM (structure, shapes, causality, chunked feed-forward =
// unchunked, reversible gradients = plain backprop through the whole model).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "models/reformer.hpp"
#include "test_util.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"

using namespace minitrax;
using autodiff::Var;
using autodiff::VarList;
using base::DType;
using core::key_from_seed;
using core::Tensor;

namespace {

Tensor tokens(std::int64_t seed, long batch, long length, long vocab) {
  return core::randint(key_from_seed(seed),
                       {static_cast<std::size_t>(batch), static_cast<std::size_t>(length)}, 1,
                       vocab, DType::i32);
}

double max_abs(const Tensor& a) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a.flat(i)));
  return d;
}

models::ReformerLMOptions small_lsh(long n_hashes, double dropout, long lsh_chunk_len = 4) {
  return {.vocab_size = 12,
          .d_model = 16,
          .d_ff = 32,
          .d_attention_key = 8,
          .d_attention_value = 8,
          .n_layers = 2,
          .n_heads = 2,
          .dropout = dropout,
          .max_len = 64,
          .attention_type = {models::self_attention({.chunk_len = 8, .n_chunks_before = 1}),
                             models::lsh_self_attention({.chunk_len = lsh_chunk_len,
                                                         .n_chunks_before = 1,
                                                         .n_hashes = n_hashes,
                                                         .n_buckets = {4},
                                                         .attention_dropout = dropout,
                                                         .n_parallel_heads = 2})}};
}

struct LossGrads {
  Tensor loss;
  std::vector<Tensor> grads;
};

// Mean log-likelihood of the targets and its gradient over the flat weights.
LossGrads loss_and_grads(base::Layer& model, const Tensor& ids, core::Key rng) {
  const base::State state = model.state();
  std::vector<Tensor> ws;
  for (const auto& w : model.flat_weights()) ws.push_back(w.value);
  const std::vector<Var> installed = model.flat_weight_vars();
  auto [loss, grads] = autodiff::value_and_grad(
      [&](const VarList& v) {
        model.set_flat_weights(v);
        const Var logp = model.apply({Var(ids)}, rng).at(0);
        const Var picked =
            fastmath::take_along_axis(logp, Var(core::expand_dims(ids, -1).astype(DType::i64)), -1);
        return fastmath::mean(picked * -1.0);
      },
      ws);
  model.set_flat_weights(installed);
  model.set_state(state);
  return {loss, grads};
}

}  // namespace

TEST_CASE("reformer: Trax's forward shape test and the model's structure") {
  auto model = models::ReformerLM({.vocab_size = 16,
                                   .d_model = 32,
                                   .d_ff = 64,
                                   .d_attention_key = 16,
                                   .d_attention_value = 16,
                                   .n_layers = 1,
                                   .n_heads = 2,
                                   .max_len = 16});
  model->init({{{1, 8}, DType::i32}});
  const Tensor y = (*model)(Var(Tensor::ones({1, 8}, DType::i32))).value();
  CHECK(y.shape() == core::Shape{1, 8, 16});
  const std::string repr = model->repr();
  for (const char* part :
       {"ShiftRight", "Embedding_16_32", "Dropout", "PositionalEncoding", "Dup", "ReversibleSerial",
        "ReversibleHalfResidual", "SelfAttention", "ReversibleSwap", "ChunkedFeedForward",
        "Concatenate", "LayerNorm", "Dense_16", "LogSoftmax"}) {
    CAPTURE(part);
    CHECK(testutil::contains(repr, part));
  }
}

TEST_CASE("reformer: log-probs are normalised and causal (LSH and chunked attention)") {
  // LSH with chunk_len < length is causal in what each position attends to, but the
  // chunk a position lands in depends on every bucket, later ones included; with one
  // chunk per hash round (chunk_len = length) no output depends on a later token.
  auto model = models::ReformerLM(small_lsh(2, 0.0, /*lsh_chunk_len=*/16));
  model->set_mode(base::Mode::eval);
  model->init({{{2, 16}, DType::i32}}, key_from_seed(1));
  Tensor ids = tokens(2, 2, 16, 12);
  const Tensor y = (*model)(Var(ids)).value();
  for (std::size_t row = 0; row < 2 * 16; ++row) {
    double s = 0;
    for (std::size_t v = 0; v < 12; ++v) s += std::exp(y.flat(row * 12 + v));
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
  }
  // Output at position i depends on tokens 0 .. i-1 only.
  const long t = 9;
  Tensor changed = ids.clone();
  changed.data<std::int32_t>()[t] = (ids.data<std::int32_t>()[t] % 11) + 1;
  const Tensor y2 = (*model)(Var(changed)).value();
  double before = 0, after = 0;
  for (long i = 0; i < 16; ++i) {
    for (long v = 0; v < 12; ++v) {
      const double d =
          std::abs(y.at({0, static_cast<std::size_t>(i), static_cast<std::size_t>(v)}) -
                   y2.at({0, static_cast<std::size_t>(i), static_cast<std::size_t>(v)}));
      (i <= t ? before : after) = std::max(i <= t ? before : after, d);
    }
  }
  // Not bitwise: LSH's sorted order, which the changed token moves, reorders the sums
  // (a few float32 ulps of log-probs ~2.5, 9.5e-7 measured); a leak of the later token
  // would show at the scale of `after`.
  CHECK(before < 1e-5);
  CHECK(after > 1e-4);
}

TEST_CASE("reformer: chunked feed-forward equals the unchunked one (dropout on, gradients too)") {
  models::ReformerLMOptions o = small_lsh(2, 0.1);
  const Tensor ids = tokens(3, 2, 16, 12);
  auto plain = models::ReformerLM(o);
  o.ff_chunk_size = 5;  // chunks of 5, 5, 5, 1 positions
  auto chunked = models::ReformerLM(o);
  plain->init({{{2, 16}, DType::i32}}, key_from_seed(4));
  chunked->init({{{2, 16}, DType::i32}}, key_from_seed(4));
  const LossGrads a = loss_and_grads(*plain, ids, key_from_seed(5));
  const LossGrads b = loss_and_grads(*chunked, ids, key_from_seed(5));
  CHECK(a.loss.item<float>() == doctest::Approx(b.loss.item<float>()).epsilon(1e-6));
  REQUIRE(a.grads.size() == b.grads.size());
  for (std::size_t k = 0; k < a.grads.size(); ++k) {
    CAPTURE(plain->flat_weights()[k].name);
    CHECK(max_abs_diff(a.grads[k], b.grads[k]) <= 1e-6 * std::max(1.0, max_abs(a.grads[k])));
  }
}

TEST_CASE("reformer: reversible gradients equal plain backprop through the whole model") {
  for (long n_hashes : {1L, 4L}) {
    CAPTURE(n_hashes);
    models::ReformerLMOptions o = small_lsh(n_hashes, 0.1);
    auto rev = models::ReformerLM(o);
    o.reversible = false;
    auto plain = models::ReformerLM(o);
    rev->init({{{2, 16}, DType::i32}}, key_from_seed(6));
    plain->init({{{2, 16}, DType::i32}}, key_from_seed(6));
    const Tensor ids = tokens(7, 2, 16, 12);
    const LossGrads a = loss_and_grads(*rev, ids, key_from_seed(8));
    const LossGrads b = loss_and_grads(*plain, ids, key_from_seed(8));
    CHECK(a.loss.item<float>() == b.loss.item<float>());
    for (std::size_t k = 0; k < a.grads.size(); ++k) {
      CAPTURE(rev->flat_weights()[k].name);
      CHECK(max_abs_diff(a.grads[k], b.grads[k]) <= 1e-5 * std::max(1e-3, max_abs(b.grads[k])));
    }
  }
}

TEST_CASE("reformer: option errors name the option") {
  models::ReformerLMOptions o = small_lsh(1, 0.0);
  o.n_layers = 3;
  CHECK(testutil::contains(testutil::error_message([&] { (void)models::ReformerLM(o); }),
                           "n_layers (3) must be a multiple of the number of attention types (2)"));
  o = small_lsh(1, 0.0);
  o.vocab_size = 0;
  CHECK(testutil::contains(testutil::error_message([&] { (void)models::ReformerLM(o); }),
                           "vocab_size must be positive"));
  o = small_lsh(1, 0.0);
  o.dropout = 1.0;
  CHECK(testutil::contains(testutil::error_message([&] { (void)models::ReformerLM(o); }),
                           "dropout must be in [0, 1)"));
}

namespace {

training::Loop reformer_loop(const std::string& dir, std::ostream* out) {
  auto model = models::ReformerLM(small_lsh(2, 0.1));
  auto stream = training::copy_task_stream(key_from_seed(31), 2, 16, 12);
  training::AdamOptions adam;
  adam.learning_rate = 0.01;
  training::TrainTask task{stream, training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(adam), training::constant(0.01)};
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 0;
  options.checkpoint_every = 3;
  options.progress = training::Progress::none;
  options.out = out;
  return training::Loop(model, task, {}, options, key_from_seed(32));
}

}  // namespace

TEST_CASE("reformer: a resumed run continues bit for bit (LSH state, dropout, reversible)") {
  namespace fs = std::filesystem;
  const fs::path a =
      fs::temp_directory_path() / ("minitrax_reformer_a_" + std::to_string(::getpid()));
  const fs::path b =
      fs::temp_directory_path() / ("minitrax_reformer_b_" + std::to_string(::getpid()));
  fs::remove_all(a);
  fs::remove_all(b);
  std::ostringstream sink;
  auto straight = reformer_loop(a.string(), &sink);
  straight.run(6);
  {
    auto first = reformer_loop(b.string(), &sink);
    first.run(3);
  }
  auto resumed = reformer_loop(b.string(), &sink);
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 3);
  resumed.run(6);
  const auto wa = straight.model()->flat_weights();
  const auto wb = resumed.model()->flat_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    CAPTURE(wa[i].name);
    CHECK(core::max_abs_diff(wa[i].value, wb[i].value) == 0.0);
  }
  const auto sa = straight.model()->flat_state();
  const auto sb = resumed.model()->flat_state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i)
    CHECK(core::max_abs_diff(sa[i].value, sb[i].value) == 0.0);
  CHECK(*straight.last_loss() == *resumed.last_loss());
  fs::remove_all(a);
  fs::remove_all(b);
}
