// examples/duplication/model_choice.hpp: the layers that the main job's config names.
// Kept apart from config.hpp, which needs no minitrax header.
#pragma once

#include <functional>
#include <source_location>
#include <string>

#include "layers/base.hpp"
#include "models/reformer.hpp"

namespace minitrax::app {

/// The factory of the feed-forward non-linearity named by DuplicationConfig::ff_activation,
/// ready for models::ReformerLMOptions::ff_activation:
///   "relu" -> layers::Relu, "gelu" -> layers::Gelu, "fast_gelu" -> layers::FastGelu,
///   "sigmoid" -> layers::Sigmoid, "tanh" -> layers::Tanh.
/// Any other name is a ConfigError (validate() refuses it first).
std::function<base::LayerPtr(std::source_location)> ff_activation_layer(const std::string& name);

/// ReformerLMOptions from the settings both example programs share (d_model, d_ff,
/// d_attention_key/value, n_layers, n_heads, dropout, ff_chunk_size, ff_activation; the
/// length as max_len), without attention_type: the caller adds one factory per layer.
template <typename Config>
models::ReformerLMOptions reformer_options(const Config& c, long vocab_size, base::Mode mode) {
  models::ReformerLMOptions o;
  o.vocab_size = vocab_size;
  o.d_model = c.d_model;
  o.d_ff = c.d_ff;
  o.d_attention_key = c.d_attention_key;
  o.d_attention_value = c.d_attention_value;
  o.n_layers = c.n_layers;
  o.n_heads = c.n_heads;
  o.dropout = c.dropout;
  o.max_len = c.length;
  o.ff_chunk_size = c.ff_chunk_size;
  o.ff_activation = ff_activation_layer(c.ff_activation);
  o.mode = mode;
  return o;
}

/// The LSHSelfAttention factory of the shared settings (chunk_len, n_chunks_before,
/// dropout, n_heads) with n_hashes rounds of n_buckets; predict mode (sampling) keeps
/// the whole sequence (c.length) in its memory.
template <typename Config>
models::AttentionFactory lsh_attention(const Config& c, long n_hashes, long n_buckets) {
  return models::lsh_self_attention({.chunk_len = c.chunk_len,
                                     .n_chunks_before = c.n_chunks_before,
                                     .n_chunks_after = 0,
                                     .n_hashes = n_hashes,
                                     .n_buckets = {n_buckets},
                                     .predict_mem_len = c.length,
                                     .predict_drop_len = c.length,
                                     .attention_dropout = c.dropout,
                                     .n_parallel_heads = c.n_heads});
}

}  // namespace minitrax::app
