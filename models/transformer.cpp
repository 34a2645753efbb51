// minitrax/models/transformer.cpp: TransformerLM and its blocks.
#include "models/transformer.hpp"

#include <sstream>
#include <string>
#include <utility>

#include "layers/combinators.hpp"
#include "models/checks_internal.hpp"

namespace minitrax::models {

namespace tl = minitrax::layers;

using detail::check_positive;
using detail::check_rate;
using detail::make_activation;

std::vector<LayerPtr> FeedForwardBlock(long d_model, long d_ff, double dropout,
                                       const std::vector<long>& dropout_shared_axes, Mode mode,
                                       const Activation& activation, SrcLoc where) {
  base::CreationSite site(where);
  check_positive("FeedForwardBlock", "d_model", d_model);
  check_positive("FeedForwardBlock", "d_ff", d_ff);
  check_rate("FeedForwardBlock", dropout);
  return {tl::LayerNorm(),
          tl::Dense(d_ff),
          make_activation("FeedForwardBlock", activation),
          tl::Dropout(dropout, dropout_shared_axes, mode),
          tl::Dense(d_model),
          tl::Dropout(dropout, dropout_shared_axes, mode)};
}

std::vector<LayerPtr> DecoderBlock(long d_model, long d_ff, long n_heads, double dropout,
                                   const std::vector<long>& dropout_shared_axes, Mode mode,
                                   const Activation& ff_activation, long max_len, SrcLoc where) {
  base::CreationSite site(where);
  LayerPtr attention =
      tl::Residual({tl::LayerNorm(), tl::CausalAttention(d_model, n_heads, dropout, mode, max_len),
                    tl::Dropout(dropout, dropout_shared_axes, mode)});
  LayerPtr feed_forward = tl::Residual(
      FeedForwardBlock(d_model, d_ff, dropout, dropout_shared_axes, mode, ff_activation));
  return {std::move(attention), std::move(feed_forward)};
}

LayerPtr TransformerLM(const TransformerLMOptions& o, SrcLoc where) {
  base::CreationSite site(where);
  const char* who = "TransformerLM";
  check_positive(who, "vocab_size", o.vocab_size);
  check_positive(who, "d_model", o.d_model);
  check_positive(who, "d_ff", o.d_ff);
  check_positive(who, "n_heads", o.n_heads);
  check_positive(who, "max_len", o.max_len);
  if (o.n_layers < 0) {
    throw ValueError(std::string(who) + ": n_layers must be >= 0, got " +
                     std::to_string(o.n_layers));
  }
  if (o.d_model % o.n_heads != 0) {
    throw ValueError(std::string(who) + ": d_model (" + std::to_string(o.d_model) +
                     ") must be a multiple of n_heads (" + std::to_string(o.n_heads) + ")");
  }
  check_rate(who, o.dropout);
  if (!o.ff_activation) throw ValueError(std::string(who) + ": ff_activation is empty");

  std::vector<LayerPtr> layers{tl::ShiftRight(1, o.mode), tl::Embedding(o.vocab_size, o.d_model),
                               tl::Dropout(o.dropout, o.dropout_shared_axes, o.mode),
                               tl::PositionalEncoding(o.max_len, 0.0, o.mode)};
  for (long i = 0; i < o.n_layers; ++i) {
    for (LayerPtr& l : DecoderBlock(o.d_model, o.d_ff, o.n_heads, o.dropout, o.dropout_shared_axes,
                                    o.mode, o.ff_activation, o.max_len)) {
      layers.push_back(std::move(l));
    }
  }
  layers.push_back(tl::LayerNorm());
  layers.push_back(tl::Dense(o.vocab_size));
  layers.push_back(tl::LogSoftmax());
  LayerPtr model = tl::Serial(std::move(layers));
  model->set_mode(o.mode);
  return model;
}

LayerPtr TransformerLM(long vocab_size, long d_model, long d_ff, long n_layers, long n_heads,
                       double dropout, long max_len, Mode mode, Activation ff_activation,
                       SrcLoc where) {
  TransformerLMOptions o;
  o.vocab_size = vocab_size;
  o.d_model = d_model;
  o.d_ff = d_ff;
  o.n_layers = n_layers;
  o.n_heads = n_heads;
  o.dropout = dropout;
  o.max_len = max_len;
  o.mode = mode;
  o.ff_activation = std::move(ff_activation);
  return TransformerLM(o, where);
}

}  // namespace minitrax::models
