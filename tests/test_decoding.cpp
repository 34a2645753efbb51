// tests/test_decoding.cpp: sampling (greedy and temperature) and autoregressive generation
// in predict mode, checked against eval-mode models run on the whole sequence.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/tape.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "models/decoding.hpp"
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
Tensor greedy_by_recompute(base::Layer& eval_model, const Tensor& prompt, long n_new) {
  autodiff::NoRecord quiet;
  const std::size_t batch = prompt.dim(0), p = prompt.dim(1);
  std::vector<std::vector<int>> seqs(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t j = 0; j < p; ++j) seqs[b].push_back(static_cast<int>(prompt.at({b, j})));
  }
  for (long step = 0; step < n_new; ++step) {
    const std::size_t len = seqs[0].size() + 1;
    std::vector<std::int32_t> ids;
    for (std::size_t b = 0; b < batch; ++b) {
      ids.insert(ids.end(), seqs[b].begin(), seqs[b].end());
      ids.push_back(0);  // a placeholder for the position being predicted (causal)
    }
    const Tensor x = Tensor::from<std::int32_t>({batch, len}, ids);
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
        models::sample_tokens(logp, 1.0, core::fold_in(key_from_seed(1), static_cast<std::uint32_t>(i)))
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
    rare += models::sample_tokens(logp, 5.0, core::fold_in(key_from_seed(2), static_cast<std::uint32_t>(i)))
                .flat(0) == 0;
  }
  CHECK(rare / n > 0.28);
  CHECK(testutil::contains(testutil::error_message([&] {
                             (void)models::sample_tokens(logp, -1.0, key_from_seed(0));
                           }),
                           "temperature must be finite and >= 0"));
}

TEST_CASE("decoding: predict-mode greedy generation equals eval-mode recomputation (TransformerLM)") {
  models::TransformerLMOptions o{.vocab_size = 11, .d_model = 16, .d_ff = 32, .n_layers = 2,
                                 .n_heads = 2, .dropout = 0.0, .max_len = 32};
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
  CHECK(testutil::contains(testutil::error_message([&] {
                             (void)models::autoregressive_sample(*eval_model, prompt, 2);
                           }),
                           "must be in predict mode"));
}
