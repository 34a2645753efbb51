// tests/test_decoding.cpp: sampling (greedy and temperature) and autoregressive generation
// in predict mode, checked against eval-mode models run on the whole sequence.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/tape.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/layer_gradcheck.hpp"
#include "models/decoding.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"

using namespace minitrax;
using autodiff::Var;
using base::DType;
using base::Mode;
using core::key_from_seed;
using core::Tensor;

namespace {

// Greedy continuation by the eval-mode model: each step runs the whole sequence
// [start, prompt, generated...] and takes the argmax at the last position.
// With pad_to > 0 every run is padded with zeros to that length (for layers that
// need a fixed length; causal models ignore what comes after).
Tensor greedy_by_recompute(base::Layer& eval_model, const Tensor& prompt, long n_new,
                           std::size_t pad_to = 0) {
  autodiff::NoRecord quiet;
  const std::size_t batch = prompt.dim(0), p = prompt.dim(1);
  std::vector<std::vector<int>> seqs(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t j = 0; j < p; ++j) seqs[b].push_back(static_cast<int>(prompt.at({b, j})));
  }
  for (long step = 0; step < n_new; ++step) {
    const std::size_t len = seqs[0].size() + 1;
    const std::size_t run_len = std::max(len, pad_to);
    std::vector<std::int32_t> ids;
    for (std::size_t b = 0; b < batch; ++b) {
      ids.insert(ids.end(), seqs[b].begin(), seqs[b].end());
      // a placeholder for the position being predicted (causal), then padding
      ids.resize(ids.size() + run_len - seqs[b].size(), 0);
    }
    const Tensor x = Tensor::from<std::int32_t>({batch, run_len}, ids);
    const Tensor logp = eval_model(Var(x)).value();
    for (std::size_t b = 0; b < batch; ++b) {
      double best = -1e300;
      int arg = 0;
      for (std::size_t v = 0; v < logp.dim(2); ++v) {
        const double s = logp.at({b, len - 1, v});
        if (s > best) best = s, arg = static_cast<int>(v);
      }
      seqs[b].push_back(arg);
    }
  }
  std::vector<std::int32_t> flat;
  for (const auto& s : seqs) flat.insert(flat.end(), s.begin(), s.end());
  return Tensor::from<std::int32_t>({batch, p + static_cast<std::size_t>(n_new)}, flat);
}

}  // namespace

TEST_CASE("decoding: sample_tokens is argmax at temperature 0 and follows softmax above it") {
  const Tensor logp = Tensor::from<float>({2, 3}, {std::log(0.2f), std::log(0.5f), std::log(0.3f),
                                                   std::log(0.7f), std::log(0.1f), std::log(0.2f)});
  const Tensor greedy = models::sample_tokens(logp, 0.0, key_from_seed(0));
  CHECK(greedy.to_vector<std::int32_t>() == std::vector<std::int32_t>{1, 0});
  // Frequencies of 20000 draws at temperature 1 against the probabilities (4 sigma).
  std::vector<double> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    counts[static_cast<std::size_t>(
        models::sample_tokens(logp, 1.0,
                              core::fold_in(key_from_seed(1), static_cast<std::uint32_t>(i)))
            .flat(0))] += 1;
  }
  const double p[3] = {0.2, 0.5, 0.3};
  for (int k = 0; k < 3; ++k) {
    const double sigma = std::sqrt(n * p[k] * (1 - p[k]));
    CHECK(std::abs(counts[static_cast<std::size_t>(k)] - n * p[k]) < 4 * sigma);
  }
  // A high temperature flattens the distribution: the rare token gets more draws.
  double rare = 0;
  for (int i = 0; i < n; ++i) {
    rare += models::sample_tokens(logp, 5.0,
                                  core::fold_in(key_from_seed(2), static_cast<std::uint32_t>(i)))
                .flat(0) == 0;
  }
  CHECK(rare / n > 0.28);
  CHECK(testutil::contains(
      testutil::error_message([&] { (void)models::sample_tokens(logp, -1.0, key_from_seed(0)); }),
      "temperature must be finite and >= 0"));
}

TEST_CASE(
    "decoding: predict-mode greedy generation equals eval-mode recomputation (TransformerLM)") {
  models::TransformerLMOptions o{.vocab_size = 11,
                                 .d_model = 16,
                                 .d_ff = 32,
                                 .n_layers = 2,
                                 .n_heads = 2,
                                 .dropout = 0.0,
                                 .max_len = 32};
  auto trained = models::TransformerLM(o);
  trained->init({{{2, 12}, DType::i32}}, key_from_seed(3));
  o.mode = Mode::eval;
  auto eval_model = models::TransformerLM(o);
  eval_model->init({{{2, 12}, DType::i32}});
  eval_model->set_weights(trained->weights());
  o.mode = Mode::predict;
  auto predict = models::TransformerLM(o);
  predict->init({{{2, 1}, DType::i32}});
  predict->set_weights(trained->weights());

  const Tensor prompt = Tensor::from<std::int32_t>({2, 4}, {0, 3, 5, 7, 0, 9, 2, 2});
  const Tensor fast = models::autoregressive_sample(*predict, prompt, 8);
  // The eval model sees [start = 0, prompt, ...] through its own ShiftRight.
  const Tensor slow = greedy_by_recompute(*eval_model, prompt, 8);
  CHECK(fast.to_vector<std::int32_t>() == slow.to_vector<std::int32_t>());
  // Called again, the same result (the state was reset).
  CHECK(models::autoregressive_sample(*predict, prompt, 8).to_vector<std::int32_t>() ==
        fast.to_vector<std::int32_t>());
  CHECK(testutil::contains(
      testutil::error_message([&] { (void)models::autoregressive_sample(*eval_model, prompt, 2); }),
      "must be in predict mode"));
}

namespace {

// Log-probs of the predict-mode model fed [start = 0, ids[:, :-1]] one position per
// call, stacked to [B, L, vocab] like the eval model's output on ids.
Tensor predict_log_probs(base::Layer& predict, const Tensor& ids) {
  autodiff::NoRecord quiet;
  const std::size_t batch = ids.dim(0), length = ids.dim(1);
  std::vector<Tensor> steps;
  for (std::size_t t = 0; t < length; ++t) {
    std::vector<std::int32_t> col;
    for (std::size_t b = 0; b < batch; ++b) {
      col.push_back(t == 0 ? 0 : static_cast<std::int32_t>(ids.at({b, t - 1})));
    }
    steps.push_back(predict(Var(Tensor::from<std::int32_t>({batch, 1}, col))).value());
  }
  return core::concatenate(steps, 1);
}

models::ReformerLMOptions reformer_for_predict(Mode mode) {
  // Layer 1: full SelfAttention. Layer 2: LSH whose eval windows cover the whole
  // hashed sequence (n_hashes * L / chunk_len = 1 + n_chunks_before), the setting in
  // which Trax's predict-mode LSH equals eval (docs/efficient_attention.md).
  return {.vocab_size = 11,
          .d_model = 16,
          .d_ff = 32,
          .d_attention_key = 8,
          .d_attention_value = 8,
          .n_layers = 2,
          .n_heads = 2,
          .dropout = 0.0,
          .max_len = 32,
          .attention_type = {models::self_attention({.predict_mem_len = 32, .predict_drop_len = 8}),
                             models::lsh_self_attention({.chunk_len = 12,
                                                         .n_chunks_before = 1,
                                                         .n_hashes = 2,
                                                         .n_buckets = {4}})},
          .mode = mode};
}

}  // namespace

TEST_CASE("decoding: ReformerLM in predict mode equals eval mode position by position") {
  const Tensor ids = Tensor::from<std::int32_t>(
      {2, 12}, {0, 3, 5, 7, 1, 0, 3, 5, 7, 1, 2, 9, 0, 9, 2, 2, 4, 0, 9, 2, 2, 4, 6, 8});
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(core::dtype_name(dtype));
    auto eval_model = models::ReformerLM(reformer_for_predict(Mode::eval));
    eval_model->init({{{2, 12}, DType::i32}}, key_from_seed(21));
    base::cast_layer(*eval_model, dtype);
    auto predict = models::ReformerLM(reformer_for_predict(Mode::predict));
    predict->init({{{2, 1}, DType::i32}}, key_from_seed(21));
    base::cast_layer(*predict, dtype);
    predict->set_weights(eval_model->weights());

    const Tensor full = eval_model->apply({Var(ids)}, key_from_seed(0)).at(0).value();
    const Tensor incremental = predict_log_probs(*predict, ids);
    REQUIRE(full.shape() == incremental.shape());
    // float32: position 0 of an LSH layer with 2 rounds sees only itself under the
    // -1e5 self mask, and eval combines its two copies only to ~1e-2 (Trax too); that
    // reaches later positions through the next layer, so float32 is checked loosely
    // and float64 (where the combination is exact to ~1e-11) tightly.
    const double tol = dtype == DType::f64 ? 1e-8 : 5e-2;
    CHECK(core::max_abs_diff(full, incremental) < tol);
  }
}

TEST_CASE("decoding: ReformerLM predict-mode sampling equals eval-mode greedy recomputation") {
  auto eval_model = models::ReformerLM(reformer_for_predict(Mode::eval));
  eval_model->init({{{1, 12}, DType::i32}}, key_from_seed(22));
  base::cast_layer(*eval_model, DType::f64);
  auto predict = models::ReformerLM(reformer_for_predict(Mode::predict));
  predict->init({{{1, 1}, DType::i32}}, key_from_seed(22));
  base::cast_layer(*predict, DType::f64);
  predict->set_weights(eval_model->weights());
  const Tensor prompt = Tensor::from<std::int32_t>({1, 5}, {0, 4, 8, 2, 0});
  const Tensor fast = models::autoregressive_sample(*predict, prompt, 6);
  const Tensor slow = greedy_by_recompute(*eval_model, prompt, 6, /*pad_to=*/12);
  CHECK(fast.to_vector<std::int32_t>() == slow.to_vector<std::int32_t>());
}

TEST_CASE("decoding: ReformerLM with SelfAttention, predict = eval within 1e-5 in float32") {
  models::ReformerLMOptions o = reformer_for_predict(Mode::eval);
  o.attention_type = {models::self_attention({.predict_mem_len = 32, .predict_drop_len = 8})};
  auto eval_model = models::ReformerLM(o);
  eval_model->init({{{2, 12}, DType::i32}}, key_from_seed(23));
  o.mode = Mode::predict;
  auto predict = models::ReformerLM(o);
  predict->init({{{2, 1}, DType::i32}}, key_from_seed(23));
  predict->set_weights(eval_model->weights());
  const Tensor ids = Tensor::from<std::int32_t>(
      {2, 12}, {0, 3, 5, 7, 1, 0, 3, 5, 7, 1, 2, 9, 0, 9, 2, 2, 4, 0, 9, 2, 2, 4, 6, 8});
  const Tensor full = eval_model->apply({Var(ids)}, key_from_seed(0)).at(0).value();
  const Tensor incremental = predict_log_probs(*predict, ids);
  CHECK(core::max_abs_diff(full, incremental) < 1e-5);
}

namespace {

std::vector<std::int32_t> row_of(const Tensor& t, std::size_t r) {
  const auto all = t.to_vector<std::int32_t>();
  const std::size_t w = t.dim(1);
  return {all.begin() + static_cast<long>(r * w), all.begin() + static_cast<long>((r + 1) * w)};
}

// Samples `prompts` as one batch with `batch_model`, then each prompt alone with
// `single` (the same weights, batch 1) and row key fold_in(rng, b); the rows must agree
// (row b alone is [prompt b, new tokens, pad] without the batch's extra padding).
void check_batch_equals_alone(base::Layer& batch_model, base::Layer& single,
                              const std::vector<std::vector<int>>& prompts, long n_new,
                              const models::SampleOptions& options) {
  const Tensor batch = models::autoregressive_sample(batch_model, prompts, n_new, options);
  std::size_t p_max = 0;
  for (const auto& p : prompts) p_max = std::max(p_max, p.size());
  REQUIRE(batch.shape() == core::Shape{prompts.size(), p_max + static_cast<std::size_t>(n_new)});
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    CAPTURE(b);
    models::SampleOptions alone_opts = options;
    alone_opts.row_keys = {core::fold_in(options.rng, static_cast<std::uint32_t>(b))};
    const Tensor alone = models::autoregressive_sample(single, {prompts[b]}, n_new, alone_opts);
    auto want = row_of(alone, 0);
    want.resize(p_max + static_cast<std::size_t>(n_new), options.pad_id);
    CHECK(row_of(batch, b) == want);
  }
}

}  // namespace

TEST_CASE("decoding: prompts of different lengths, greedy, equal eval-mode recomputation") {
  models::TransformerLMOptions o{.vocab_size = 11,
                                 .d_model = 16,
                                 .d_ff = 32,
                                 .n_layers = 2,
                                 .n_heads = 2,
                                 .dropout = 0.0,
                                 .max_len = 32,
                                 .mode = Mode::eval};
  auto eval_model = models::TransformerLM(o);
  eval_model->init({{{1, 12}, DType::i32}}, key_from_seed(31));
  o.mode = Mode::predict;
  auto predict = models::TransformerLM(o);
  predict->init({{{3, 1}, DType::i32}});
  predict->set_weights(eval_model->weights());
  const std::vector<std::vector<int>> prompts = {{3, 5, 7, 1}, {9}, {2, 2}};
  const Tensor fast = models::autoregressive_sample(*predict, prompts, 6);
  REQUIRE(fast.shape() == core::Shape{3, 10});
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    CAPTURE(b);
    const Tensor p = Tensor::from<std::int32_t>(
        {1, prompts[b].size()}, std::vector<std::int32_t>(prompts[b].begin(), prompts[b].end()));
    auto want = greedy_by_recompute(*eval_model, p, 6).to_vector<std::int32_t>();
    want.resize(10, 0);  // the shorter prompts' rows end with padding
    CHECK(row_of(fast, b) == want);
  }
}

TEST_CASE("decoding: a batch of prompts samples each row as that prompt alone (TransformerLM)") {
  models::TransformerLMOptions o{.vocab_size = 11,
                                 .d_model = 16,
                                 .d_ff = 32,
                                 .n_layers = 2,
                                 .n_heads = 2,
                                 .dropout = 0.0,
                                 .max_len = 32,
                                 .mode = Mode::predict};
  auto batch_model = models::TransformerLM(o);
  batch_model->init({{{4, 1}, DType::i32}}, key_from_seed(32));
  auto single = models::TransformerLM(o);
  single->init({{{1, 1}, DType::i32}});
  single->set_weights(batch_model->weights());
  const std::vector<std::vector<int>> prompts = {{3, 5, 7, 1}, {9}, {}, {2, 2, 4}};
  for (const models::SampleOptions& opts :
       {models::SampleOptions{}, models::SampleOptions{.temperature = 1.0, .rng = key_from_seed(1)},
        models::SampleOptions{.temperature = 0.7, .top_k = 4, .rng = key_from_seed(2)},
        models::SampleOptions{
            .temperature = 1.3, .top_p = 0.8, .rng = key_from_seed(3), .stop_id = 4},
        models::SampleOptions{
            .temperature = 2.0, .rng = key_from_seed(4), .stop_id = 2, .pad_id = 10}}) {
    CAPTURE(opts.temperature);
    check_batch_equals_alone(*batch_model, *single, prompts, 9, opts);
  }
}

TEST_CASE("decoding: a batch of prompts samples each row as that prompt alone (ReformerLM)") {
  auto batch_model = models::ReformerLM(reformer_for_predict(Mode::predict));
  batch_model->init({{{3, 1}, DType::i32}}, key_from_seed(33));
  auto single = models::ReformerLM(reformer_for_predict(Mode::predict));
  single->init({{{1, 1}, DType::i32}});
  single->set_weights(batch_model->weights());
  const std::vector<std::vector<int>> prompts = {{3, 5, 7, 1}, {9}, {2, 2}};
  for (const models::SampleOptions& opts :
       {models::SampleOptions{},
        models::SampleOptions{
            .temperature = 1.0, .top_k = 5, .top_p = 0.9, .rng = key_from_seed(5), .stop_id = 3}}) {
    check_batch_equals_alone(*batch_model, *single, prompts, 8, opts);
  }
}
