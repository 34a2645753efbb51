/// @file
/// Autoregressive sampling from a language model in predict mode (Trax's
/// trax.supervised.decoding.autoregressive_sample), with temperature, top-k, top-p
/// (nucleus), a stop token and a batch of prompts of different lengths.
///
/// @code
/// auto lm = models::TransformerLM({... .mode = Mode::predict});
/// lm->init({2, 1}, DType::i32);                           // a batch of 2 prompts
/// training::load_weights(*lm, "runs/copy");                // training/checkpoint.hpp
/// Tensor out = models::autoregressive_sample(*lm, {{0, 5, 7}, {0, 9}}, /*n_new=*/20,
///                                            {.temperature = 0.8, .top_k = 10,
///                                             .stop_id = 1});
/// @endcode
///
/// In predict mode a model keeps its past (attention keys and values, positions) in
/// its state and takes one position per call; ShiftRight is the identity, so the
/// caller feeds the shifted stream: start_id, then the prompt, then each new token.
/// The log-probs it gives at each position equal the eval-mode model's on the whole
/// sequence (tests/test_decoding.cpp, tests/test_restore_weights.cpp).
///
/// **Which token.** At each new position the model's log-probs over the vocabulary
/// are turned into a distribution in three steps, the order of Hugging Face's and
/// PyTorch users' samplers: (1) temperature: softmax(log_probs / temperature);
/// temperature 0 is greedy (the most likely token, lowest id on ties), whatever
/// top_k and top_p say; (2) top_k > 0 keeps the k most likely tokens (ties broken
/// by the lower id; k >= vocab keeps all); (3) top_p < 1 keeps, of what is left
/// renormalised, the smallest set of most likely tokens whose probabilities sum to
/// at least top_p (sorted by probability, then id; the most likely token is always
/// kept). The token is drawn from the kept set renormalised (filter_log_probs gives
/// that distribution).
///
/// **Randomness.** Row b of a batch has its own key: options.row_keys[b] if given,
/// else fold_in(options.rng, b). Its i-th new token (i = 0, 1, ...) is drawn with
/// fold_in(row key, i). So a row's sample depends only on its prompt and its key:
/// a batch gives each row what that prompt alone gives with `row_keys = {fold_in(rng,
/// b)}` (tested), and a fixed key always gives the same tokens.
///
/// **A batch of prompts.** Prompts may have different lengths. All rows advance one
/// position per model call; row b is fed its own prompt and starts sampling once its
/// prompt is consumed, so a shorter prompt starts earlier (no left padding: each row
/// sees exactly [start_id, its prompt, its tokens]). The result is [B, P_max + n_new]
/// int32 (P_max the longest prompt): row b holds its prompt, then its new tokens,
/// then pad_id up to the end.
///
/// **Stopping.** A row stops after n_new new tokens, or as soon as it emits stop_id
/// (kept in the output; the rest of the row is pad_id). The call ends when every row
/// has stopped. Rows that have stopped are fed pad_id while the others go on (their
/// outputs are ignored).
#pragma once

#include <vector>

#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "layers/base.hpp"

namespace minitrax::models {

/// How autoregressive_sample picks tokens and when it stops (see the file
/// documentation of decoding.hpp for the exact rules).
struct SampleOptions {
  /// 0: greedy (the most likely token); > 0: sample from softmax(log_probs / temperature).
  double temperature = 0.0;
  /// Keep only the k most likely tokens; 0: no limit (k > vocab is the same as all).
  long top_k = 0;
  /// Nucleus sampling: keep the most likely tokens whose probabilities sum to at least
  /// top_p, in (0, 1]; 1: keep all.
  double top_p = 1.0;
  /// The key of the draws; row b uses fold_in(rng, b) unless row_keys is given. Also
  /// the rng every model call gets.
  core::Key rng = core::key_from_seed(0);
  /// The token fed before the prompt (what ShiftRight puts in front in training).
  int start_id = 0;
  /// A row ends when it emits this token (kept; the rest of the row is pad_id); -1: none.
  int stop_id = -1;
  /// What fills a row after it stops (and after a shorter prompt's n_new tokens).
  int pad_id = 0;
  /// One key per row (size = batch) instead of fold_in(rng, b); empty: the default.
  std::vector<core::Key> row_keys = {};
};

/// Feeds start_id and the prompt [B, P] (integer ids) one position at a time to
/// `predict_model` (mode predict, initialised for batch B), then generates up to
/// n_new tokens per row. Returns [B, P + n_new] int32: the prompt followed by the new
/// tokens (and pad_id after a stop token). The model's state is reset to its state at
/// the call (so it can be called again), also when it throws.
/// @code
/// Tensor prompt = Tensor::from<std::int32_t>({1, 3}, {0, 5, 7});
/// Tensor out = autoregressive_sample(*lm, prompt, 4, {.temperature = 0.5});   // int32 [1, 7]
/// @endcode
/// Errors (before the first model call where possible): the model not in predict
/// mode; a prompt that is not [B, P] integer ids; n_new < 0; temperature < 0 or not
/// finite; top_k < 0; top_p outside (0, 1]; row_keys of the wrong size; a prompt
/// longer than the model's max_len, or prompt + n_new positions beyond it (the
/// max_len of its PositionalEncoding, AxialPositionalEncoding and causal attention
/// caches); prompt ids, stop_id or pad_id outside the model's vocabulary (the last
/// axis of its output).
core::Tensor autoregressive_sample(base::Layer& predict_model, const core::Tensor& prompt,
                                   long n_new, const SampleOptions& options = {});

/// The same for prompts of different lengths (see "A batch of prompts" in the file
/// documentation): returns [B, P_max + n_new] int32, row b = prompt b, its new tokens,
/// then pad_id. An empty prompt is allowed (sampling starts right after start_id).
/// @code
/// Tensor out = autoregressive_sample(*lm, {{0, 5, 7}, {0, 9}}, 4);   // int32 [2, 7]
/// @endcode
core::Tensor autoregressive_sample(base::Layer& predict_model,
                                   const std::vector<std::vector<int>>& prompts, long n_new,
                                   const SampleOptions& options = {});

/// The distribution tokens are drawn from: log_probs [B, vocab] after temperature,
/// top_k and top_p (options' other fields are ignored), as float64 log-probabilities
/// renormalised over the kept tokens, -inf elsewhere. Temperature 0 gives the point
/// mass on the argmax (0 there, -inf elsewhere).
core::Tensor filter_log_probs(const core::Tensor& log_probs, const SampleOptions& options);

/// The next token for each row of log_probs [B, vocab] under options' temperature,
/// top_k and top_p: row b is drawn with fold_in(rng, b) (Gumbel-max over the kept
/// tokens), the argmax when temperature is 0. int32 [B].
core::Tensor sample_tokens(const core::Tensor& log_probs, const SampleOptions& options,
                           core::Key rng);

/// sample_tokens with only a temperature (no top-k, no top-p).
core::Tensor sample_tokens(const core::Tensor& log_probs, double temperature, core::Key rng);

}  // namespace minitrax::models
