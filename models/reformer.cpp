// minitrax/models/reformer.cpp: ReformerLM and its blocks.
#include "models/reformer.hpp"

#include <string>
#include <utility>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "layers/combinators.hpp"
#include "layers/research/position_encodings.hpp"
#include "layers/reversible.hpp"
#include "models/checks_internal.hpp"

namespace minitrax::models {

namespace tl = minitrax::layers;
namespace research = minitrax::layers::research;
using autodiff::Var;
using autodiff::VarList;
using detail::check_positive;
using detail::check_rate;
using detail::make_activation;

// ---- attention factories -------------------------------------------------------------------

AttentionFactory self_attention(research::SelfAttentionOptions options) {
  return [options](const AttentionArgs& a, SrcLoc where) -> LayerPtr {
    research::SelfAttentionOptions o = options;
    o.n_heads = a.n_heads;
    o.d_qk = a.d_qk;
    o.d_v = a.d_v;
    o.causal = a.causal;
    o.output_dropout = a.output_dropout;
    o.mode = a.mode;
    return research::SelfAttention(o, where);
  };
}

AttentionFactory lsh_self_attention(research::LSHSelfAttentionOptions options) {
  return [options](const AttentionArgs& a, SrcLoc where) -> LayerPtr {
    research::LSHSelfAttentionOptions o = options;
    o.n_heads = a.n_heads;
    o.d_qk = a.d_qk;
    o.d_v = a.d_v;
    o.causal = a.causal;
    o.output_dropout = a.output_dropout;
    o.mode = a.mode;
    return research::LSHSelfAttention(o, where);
  };
}

// ---- ChunkedFeedForward ------------------------------------------------------------------------

ChunkedFeedForwardLayer::ChunkedFeedForwardLayer(std::vector<LayerPtr> feed_forward,
                                                 long chunk_size, SrcLoc where)
    : base::Layer(1, 1, "ChunkedFeedForward", where), chunk_size_(chunk_size) {
  if (chunk_size < 0) {
    throw core::ValueError("ChunkedFeedForward: chunk_size must be >= 0 (0: no chunking), got " +
                           std::to_string(chunk_size));
  }
  LayerPtr ff = tl::Serial(std::move(feed_forward), where);
  if (ff->n_in() != 1 || ff->n_out() != 1) {
    throw core::ValueError(
        "ChunkedFeedForward: the feed-forward layers must take one input "
        "and give one output, they take " +
        std::to_string(ff->n_in()) + " and give " + std::to_string(ff->n_out()));
  }
  set_sublayers({std::move(ff)});
}

void ChunkedFeedForwardLayer::init_weights_and_state(const base::Signature& input_signature) {
  const LayerPtr& ff = sublayers()[0];
  ff->init(input_signature, ff->rng(), /*use_cache=*/true);
}

base::Signature ChunkedFeedForwardLayer::forward_signature(const base::Signature& input_signature) {
  if (input_signature[0].shape.size() != 3) {
    throw core::ShapeError(name() + ": expected an input [batch, length, d_model], got " +
                           core::shape_str(input_signature[0].shape));
  }
  return sublayers()[0]->output_signature(input_signature);
}

base::Stack ChunkedFeedForwardLayer::forward(const base::Stack& inputs) {
  const Var& x = inputs[0];
  if (x.ndim() != 3) {
    throw core::ShapeError("expected an input [batch, length, d_model], got " +
                           core::shape_str(x.shape()));
  }
  const LayerPtr& ff = sublayers()[0];
  // Every chunk gets this layer's rng as the whole block would: the dropout masks
  // (shared along the length axis) are then the same as without chunking.
  const core::Key rng = core::split(rng_, 1)[0];
  const long length = static_cast<long>(x.dim(1));
  if (chunk_size_ <= 0 || chunk_size_ >= length) return ff->apply({x}, rng);

  const bool recording = autodiff::recording_tape() != nullptr;
  const std::vector<Var> weights = ff->flat_weight_vars();
  VarList outputs;
  for (long start = 0; start < length; start += chunk_size_) {
    const long stop = std::min(length, start + chunk_size_);
    const Var chunk = fastmath::slice(x, 1, start, stop);
    if (!recording) {
      outputs.push_back(ff->apply({chunk}, rng).at(0));
      continue;
    }
    // Rematerialised: the tape keeps the chunk and the weights; the chunk's
    // activations are recomputed in the backward pass.
    VarList args{chunk};
    args.insert(args.end(), weights.begin(), weights.end());
    LayerPtr layer = ff;
    const VarList out = autodiff::checkpoint(
        [layer, rng](const VarList& v) {
          base::RestoreGuard restore(*layer, base::RestoreGuard::weights);
          layer->set_flat_weights(std::vector<Var>(v.begin() + 1, v.end()));
          return layer->apply({v[0]}, rng);
        },
        args, "ChunkedFeedForward");
    outputs.push_back(out.at(0));
  }
  return {fastmath::concatenate(outputs, 1)};
}

std::vector<LayerPtr> ReformerFeedForward(long d_model, long d_ff, double dropout,
                                          const Activation& activation, double act_dropout,
                                          Mode mode, SrcLoc where) {
  base::CreationSite site(where);
  const char* who = "ReformerFeedForward";
  check_positive(who, "d_model", d_model);
  check_positive(who, "d_ff", d_ff);
  check_rate(who, dropout);
  check_rate(who, act_dropout, "act_dropout");
  return {tl::LayerNorm(),
          tl::Dense(d_ff),
          tl::Dropout(act_dropout, {-2}, mode),
          make_activation(who, activation),
          tl::Dense(d_model),
          tl::Dropout(dropout, {-2}, mode)};
}

LayerPtr ChunkedFeedForward(long d_model, long d_ff, double dropout, const Activation& activation,
                            double act_dropout, long chunk_size, Mode mode, SrcLoc where) {
  base::CreationSite site(where);
  return std::make_shared<ChunkedFeedForwardLayer>(
      ReformerFeedForward(d_model, d_ff, dropout, activation, act_dropout, mode), chunk_size,
      where);
}

// ---- DecoderBlock and ReformerLM ------------------------------------------------------------

std::vector<LayerPtr> ReformerDecoderBlock(long d_model, long d_ff, long d_attention_key,
                                           long d_attention_value, long n_heads,
                                           const AttentionFactory& attention_type, double dropout,
                                           const Activation& ff_activation, long ff_chunk_size,
                                           Mode mode, SrcLoc where) {
  base::CreationSite site(where);
  if (!attention_type) throw core::ValueError("ReformerDecoderBlock: attention_type is empty");
  LayerPtr attention = attention_type(
      AttentionArgs{n_heads, d_attention_key, d_attention_value, true, dropout, mode}, where);
  if (!attention) throw core::ValueError("ReformerDecoderBlock: attention_type made a null layer");
  return {tl::ReversibleHalfResidual({tl::LayerNorm()}, std::move(attention)), tl::ReversibleSwap(),
          tl::ReversibleHalfResidual({ChunkedFeedForward(d_model, d_ff, dropout, ff_activation,
                                                         dropout, ff_chunk_size, mode)}),
          tl::ReversibleSwap()};
}

LayerPtr ReformerLM(const ReformerLMOptions& o, SrcLoc where) {
  base::CreationSite site(where);
  const char* who = "ReformerLM";
  check_positive(who, "vocab_size", o.vocab_size);
  check_positive(who, "d_model", o.d_model);
  check_positive(who, "d_ff", o.d_ff);
  check_positive(who, "d_attention_key", o.d_attention_key);
  check_positive(who, "d_attention_value", o.d_attention_value);
  check_positive(who, "n_heads", o.n_heads);
  check_positive(who, "max_len", o.max_len);
  check_rate(who, o.dropout);
  if (o.n_layers < 0) {
    throw core::ValueError(std::string(who) + ": n_layers must be >= 0, got " +
                           std::to_string(o.n_layers));
  }
  if (o.ff_chunk_size < 0) {
    throw core::ValueError(std::string(who) +
                           ": ff_chunk_size must be >= 0 (0: no chunking), got " +
                           std::to_string(o.ff_chunk_size));
  }
  if (!o.axial_pos_shape.empty()) {
    if (o.axial_pos_shape.size() != o.d_axial_pos_embs.size()) {
      throw core::ValueError(std::string(who) + ": axial_pos_shape has " +
                             std::to_string(o.axial_pos_shape.size()) +
                             " axes but d_axial_pos_embs has " +
                             std::to_string(o.d_axial_pos_embs.size()) + " entries");
    }
    long sum = 0;
    std::string list;
    for (long d : o.d_axial_pos_embs) {
      sum += d;
      list += (list.empty() ? "" : ", ") + std::to_string(d);
    }
    if (sum != o.d_model) {
      throw core::ValueError(std::string(who) + ": d_axial_pos_embs must sum to d_model (" +
                             std::to_string(o.d_model) + "), got sum([" + list +
                             "]) = " + std::to_string(sum));
    }
  }
  std::vector<AttentionFactory> attention_types = o.attention_type;
  if (attention_types.empty()) attention_types.push_back(self_attention());
  if (o.n_layers % static_cast<long>(attention_types.size()) != 0) {
    throw core::ValueError(std::string(who) + ": n_layers (" + std::to_string(o.n_layers) +
                           ") must be a multiple of the number of attention types (" +
                           std::to_string(attention_types.size()) + ")");
  }

  LayerPtr positional_encoding;
  if (o.axial_pos_shape.empty()) {
    positional_encoding = tl::PositionalEncoding(o.max_len, o.dropout, o.mode);
  } else {
    std::vector<long> broadcast_dims;
    for (std::size_t i = 1; i <= o.axial_pos_shape.size(); ++i) {
      broadcast_dims.push_back(static_cast<long>(i));
    }
    positional_encoding = research::AxialPositionalEncoding(o.axial_pos_shape, o.d_axial_pos_embs,
                                                            tl::init::RandomNormal(1.0), o.dropout,
                                                            broadcast_dims, o.mode);
  }

  std::vector<LayerPtr> blocks;
  for (long i = 0; i < o.n_layers; ++i) {
    const AttentionFactory& attention =
        attention_types[static_cast<std::size_t>(i) % attention_types.size()];
    for (LayerPtr& l :
         ReformerDecoderBlock(o.d_model, o.d_ff, o.d_attention_key, o.d_attention_value, o.n_heads,
                              attention, o.dropout, o.ff_activation, o.ff_chunk_size, o.mode)) {
      blocks.push_back(std::move(l));
    }
  }
  LayerPtr model =
      tl::Serial({tl::ShiftRight(1, o.mode), tl::Embedding(o.vocab_size, o.d_model),
                  tl::Dropout(o.dropout, {-2}, o.mode), positional_encoding, tl::Dup(),
                  tl::ReversibleSerial(std::move(blocks), {.reversible_backward = o.reversible}),
                  tl::Concatenate(), tl::LayerNorm(), tl::Dropout(o.dropout, {-2}, o.mode),
                  tl::Dense(o.vocab_size), tl::LogSoftmax()},
                 "ReformerLM");
  model->set_mode(o.mode);
  return model;
}

}  // namespace minitrax::models
