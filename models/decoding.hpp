/// @file
/// Autoregressive sampling from a language model in predict mode (Trax's
/// trax.supervised.decoding.autoregressive_sample).
///
/// @code
/// auto lm = models::ReformerLM({... .mode = Mode::predict});
/// lm->init({{{1, 1}, DType::i32}});
/// lm->set_weights(trained->weights());
/// Tensor out = models::autoregressive_sample(*lm, prompt, /*n_new=*/31);
/// @endcode
///
/// In predict mode a model keeps its past (attention keys and values, positions) in
/// its state and takes one position per call; ShiftRight is the identity, so the
/// caller feeds the shifted stream: start_id, then the prompt, then each new token.
/// The log-probs it gives at each position equal the eval-mode model's on the whole
/// sequence (tests/test_decoding.cpp).
#pragma once

#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "layers/base.hpp"

namespace minitrax::models {

/// How autoregressive_sample picks tokens.
struct SampleOptions {
  /// 0: greedy (the most likely token); > 0: sample from softmax(log_probs / temperature).
  double temperature = 0.0;
  /// The key of the draws (temperature > 0): the token at position p is drawn with
  /// fold_in(rng, p). Also the rng each model call gets.
  core::Key rng = core::key_from_seed(0);
  /// The token fed before the prompt (what ShiftRight puts in front in training).
  int start_id = 0;
};

/// Feeds start_id and the prompt [B, P] (int32) one position at a time to
/// `predict_model` (mode predict, initialised for batch B), then generates n_new
/// tokens. Returns [B, P + n_new] int32: the prompt followed by the new tokens. The
/// model's state is reset to its state at the call (so it can be called again).
/// @code
/// Tensor prompt = Tensor::from<std::int32_t>({1, 3}, {0, 5, 7});
/// Tensor out = autoregressive_sample(*lm, prompt, 4, {.temperature = 0.5});   // int32 [1, 7]
/// @endcode
core::Tensor autoregressive_sample(base::Layer& predict_model, const core::Tensor& prompt,
                                   long n_new, const SampleOptions& options = {});

/// The next token for each row of log_probs [B, vocab]: argmax when temperature is
/// 0, else a draw from softmax(log_probs / temperature) (Gumbel-max). int32 [B].
core::Tensor sample_tokens(const core::Tensor& log_probs, double temperature, core::Key rng);

}  // namespace minitrax::models
