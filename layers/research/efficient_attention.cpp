// minitrax/layers/research/efficient_attention.cpp: EfficientAttentionBase, SelfAttention
// and LSHSelfAttention (Trax 1.3.4's efficient_attention.py classes), in Trax's reading
// order: the base class's bookkeeping, the reference loop over (example, head), then each
// class's forward_unbatched, what one head does to one example.
//
// The other files of these layers:
//   efficient_attention_fast.cpp     the memory-lean path: forward_group batched over a
//                                    group's heads, and the custom-VJP node that
//                                    recomputes group by group in the backward pass
//   layers/chunked_attention.cpp     the attention kernels that path runs
//   efficient_attention_predict.cpp  predict mode (incremental decoding)
#include "layers/research/efficient_attention.hpp"

#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "layers/research/efficient_attention_internal.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using base::ShapeDtype;
using core::DTypeError;
using core::ShapeError;
using core::ValueError;
using namespace detail;

namespace {

void require_rate(const std::string& who, const char* what, double rate) {
  if (!(rate >= 0.0 && rate < 1.0)) {
    throw ValueError(who + ": " + what + " must be in [0, 1), got " + num(rate));
  }
}

}  // namespace

Tensor key_to_tensor(Key key) {
  return Tensor::from<std::int64_t>(
      {2}, {static_cast<std::int64_t>(key.hi), static_cast<std::int64_t>(key.lo)});
}

Key key_from_tensor(const Tensor& t) {
  if (t.dtype() != DType::i64 || t.size() != 2) {
    throw DTypeError("a key in a state must be int64 [2] (its two uint32 words), got " +
                     core::shape_str(t.shape()) + " " + std::string(core::dtype_name(t.dtype())));
  }
  const std::int64_t* p = t.data<std::int64_t>();
  return Key{static_cast<std::uint32_t>(p[0]), static_cast<std::uint32_t>(p[1])};
}
// =============================================================================================
// EfficientAttentionBase
// =============================================================================================

EfficientAttentionBase::EfficientAttentionBase(std::string name, long n_heads, int n_in,
                                               std::optional<long> n_parallel_heads,
                                               bool use_reference_code, Mode mode, SrcLoc where)
    : base::Layer(n_in, 1, std::move(name), where),
      n_heads_(n_heads),
      n_parallel_heads_(n_parallel_heads),
      use_reference_code_(use_reference_code) {
  require_positive(this->name(), "n_heads", n_heads);
  if (n_parallel_heads) {
    const long p = *n_parallel_heads;
    require_positive(this->name(), "n_parallel_heads", p);
    if ((p > n_heads && p % n_heads != 0) || (p < n_heads && n_heads % p != 0)) {
      throw ValueError(this->name() + ": n_parallel_heads must be a multiple or fraction of " +
                       "n_heads, got n_parallel_heads " + str(p) + " with n_heads " + str(n_heads));
    }
  }
  set_mode(mode);  // predict mode: the subclasses check their options (predict_lengths)
}

std::vector<Tensor> EfficientAttentionBase::create_state_unbatched(const Signature&, Key) {
  return {};
}

void EfficientAttentionBase::check_inputs(const Signature& sig, bool against_weights) const {
  const ShapeDtype& x = sig.at(0);
  if (x.shape.size() != 3) {
    throw ShapeError("expected x of shape [batch, length, d_model], got " +
                     core::shape_str(x.shape));
  }
  if (!core::is_floating(x.dtype)) {
    throw DTypeError("expected a float32 or float64 x, got " +
                     std::string(core::dtype_name(x.dtype)));
  }
  if (x.shape[1] == 0) throw ShapeError("the sequence length must be positive, got 0");
  if (n_in() == 2) {
    const ShapeDtype& m = sig.at(1);
    if (m.shape != Shape{x.shape[0], x.shape[1]}) {
      throw ShapeError("expected a mask of shape [batch, length] = " +
                       core::shape_str({x.shape[0], x.shape[1]}) + " (nonzero = valid), got " +
                       core::shape_str(m.shape));
    }
    if (core::is_floating(m.dtype)) {
      throw DTypeError("expected an integer mask (nonzero = valid token), got " +
                       std::string(core::dtype_name(m.dtype)));
    }
  }
  if (against_weights && initialized() && own_weights().size() > 0) {
    const std::size_t d_model = weights_d_model();
    if (x.shape[2] != d_model) {
      throw ShapeError("expected d_model " + std::to_string(d_model) +
                       " (the weights were made for it), got x " + core::shape_str(x.shape));
    }
    if (x.dtype != weight(0).dtype()) {
      throw DTypeError("the input is " + std::string(core::dtype_name(x.dtype)) +
                       " but the weights are " + std::string(core::dtype_name(weight(0).dtype())) +
                       " (init with " + std::string(core::dtype_name(x.dtype)) +
                       " inputs, or convert the layer with base::cast_layer)");
    }
  }
}

void EfficientAttentionBase::init_weights_and_state(const Signature& input_signature) {
  check_inputs(input_signature, false);
  // The per-example signature: the batch axis dropped.
  Signature unbatched;
  for (const ShapeDtype& s : input_signature) {
    unbatched.push_back({Shape(s.shape.begin() + 1, s.shape.end()), s.dtype});
  }
  const long batch = as_long(input_signature[0].shape[0]);
  const DType dtype = input_signature[0].dtype;

  // Weights: one key per head, each head's weights drawn on their own, stacked on axis 0.
  const std::vector<Key> weight_rngs = core::split(rng_, static_cast<std::size_t>(n_heads_));
  std::vector<std::vector<Tensor>> per_head;
  for (long h = 0; h < n_heads_; ++h) {
    per_head.push_back(
        create_weights_unbatched(unbatched, weight_rngs[static_cast<std::size_t>(h)]));
  }
  std::vector<Tensor> weights = stack_rows(per_head);
  for (Tensor& w : weights) {
    if (core::is_floating(w.dtype()) && w.dtype() != dtype) w = w.astype(dtype);
  }
  set_own_weights(std::move(weights));

  // State: one key per (example, head), from the same layer key (as Trax), row e * H + h.
  const std::vector<Key> state_rngs = core::split(rng_, static_cast<std::size_t>(n_heads_ * batch));
  std::vector<std::vector<Tensor>> per_slice;
  for (long i = 0; i < n_heads_ * batch; ++i) {
    per_slice.push_back(create_state_unbatched(unbatched, state_rngs[static_cast<std::size_t>(i)]));
  }
  state_ = state_of(stack_rows(per_slice));
  // Predict mode: (mem_end, (memory,), per-slice state), as Trax (efficient_attention_predict.cpp).
  if (mode_ == Mode::predict) state_ = predict_state(input_signature, state_);
}

Signature EfficientAttentionBase::forward_signature(const Signature& input_signature) {
  check_inputs(input_signature, true);
  return {{input_signature[0].shape, input_signature[0].dtype}};
}

std::vector<Var> EfficientAttentionBase::head_weights(long head) const {
  std::vector<Var> ws;
  for (std::size_t i = 0; i < own_weights().size(); ++i) {
    const Var& w = weight(i);
    std::vector<long> rest(w.shape().begin() + 1, w.shape().end());
    ws.push_back(fm::reshape(fm::slice(w, 0, head, head + 1), rest));
  }
  return ws;
}

std::vector<Tensor> EfficientAttentionBase::state_row(long index) const {
  std::vector<Tensor> row;
  for (const Tensor& leaf : state_.flatten()) row.push_back(row_of(leaf, index));
  return row;
}

long EfficientAttentionBase::group_size(long batch) const {
  long p = batch * n_heads_;
  if (n_parallel_heads_ && *n_parallel_heads_ < p) p = *n_parallel_heads_;
  return p;
}

Stack EfficientAttentionBase::forward(const Stack& inputs) {
  if (mode_ == Mode::predict) return {forward_predict(inputs.at(0))};  // see the _predict.cpp
  check_inputs(base::signature_of(inputs), true);
  const Var& x = inputs[0];
  const Tensor mask = n_in() == 2 ? inputs[1].value().astype(DType::i32) : Tensor();
  const long batch = as_long(x.dim(0));
  if (update_state_ && !state_.flatten().empty() &&
      as_long(state_.flatten().front().dim(0)) != batch * n_heads_) {
    // A state-updating call with another batch size than init's (an eval batch, say):
    // fresh per-(example, head) state for this batch, its keys split from the call's rng
    // as init splits the init key. A recomputation (update_state = false) must match.
    Signature unbatched;
    for (const Var& in : inputs) {
      unbatched.push_back({Shape(in.shape().begin() + 1, in.shape().end()), in.dtype()});
    }
    const std::vector<Key> state_rngs =
        core::split(rng_, static_cast<std::size_t>(n_heads_ * batch));
    std::vector<std::vector<Tensor>> per_slice;
    for (long i = 0; i < n_heads_ * batch; ++i) {
      per_slice.push_back(
          create_state_unbatched(unbatched, state_rngs[static_cast<std::size_t>(i)]));
    }
    state_ = state_of(stack_rows(per_slice));
  }
  for (const Tensor& leaf : state_.flatten()) {
    if (as_long(leaf.dim(0)) != batch * n_heads_) {
      throw ShapeError("the state has " + std::to_string(leaf.dim(0)) +
                       " rows (one per example and head, from init); this call has batch " +
                       str(batch) + " x " + str(n_heads_) + " heads = " + str(batch * n_heads_) +
                       ": a recomputation (update_state = false) must use the batch of the "
                       "forward pass that made the state");
    }
  }
  return {use_reference_code_ ? forward_reference(x, mask) : forward_memory_lean(x, mask)};
}

Stack EfficientAttentionBase::recompute(const Stack& inputs, Key rng) {
  const bool previous = update_state_;
  update_state_ = false;
  struct Reset {
    bool& flag;
    bool value;
    ~Reset() { flag = value; }
  } reset{update_state_, previous};
  return apply(inputs, rng);
}

// ---- the reference implementation --------------------------------------------------------
//
// Read this first: it is what the layer computes. Every (example, head) pair is one call of
// forward_unbatched, and the layer's output for an example is the sum of its heads.

Var EfficientAttentionBase::forward_reference(const Var& x, const Tensor& mask) {
  const long batch = as_long(x.dim(0));
  const long seqlen = as_long(x.dim(1));
  const long d_model = as_long(x.dim(2));

  std::vector<Var> outputs;                         // one [1, L, d_model] per example
  std::vector<std::vector<Tensor>> new_state_rows;  // one per (example, head)
  for (long example = 0; example < batch; ++example) {
    // x_example = x[example]: [L, d_model]. A slice, so gradients flow back into x.
    const Var x_example = fm::reshape(fm::slice(x, 0, example, example + 1), {seqlen, d_model});
    // mask_example = mask[example]: [L], nonzero = valid (undefined if not masked).
    const Tensor mask_example = mask.defined() ? row_of(mask, example) : Tensor();

    Var sum_over_heads;  // [L, d_model]: the heads' outputs add up
    for (long head = 0; head < n_heads_; ++head) {
      // weights_head = (w_q[head], ...): slices of the stacked weights.
      const std::vector<Var> weights_head = head_weights(head);
      // state_slice = state[example * n_heads + head] (e.g. LSH buckets and hash key).
      const long slice_index = example * n_heads_ + head;
      const std::vector<Tensor> state_slice = state_row(slice_index);
      // One head attending over one example. The SAME layer rng for every pair.
      UnbatchedResult head_result = forward_unbatched(x_example, mask_example, weights_head,
                                                      state_slice, rng_, update_state_, head);
      sum_over_heads =
          sum_over_heads.defined() ? sum_over_heads + head_result.out : head_result.out;
      new_state_rows.push_back(std::move(head_result.state));
    }
    outputs.push_back(fm::reshape(sum_over_heads, {1, seqlen, d_model}));
  }
  // output = stack(outputs): [B, L, d_model].
  Var output = outputs.size() == 1 ? outputs[0] : fm::concatenate(outputs, 0);
  // The new state, restacked (kept as it was if a slice has no state).
  if (update_state_ && !new_state_rows.empty() && !new_state_rows[0].empty()) {
    state_ = state_of(stack_rows(new_state_rows));
  }
  return output;
}

// ---- the default group: head by head ------------------------------------------------------
//
// The memory-lean path (efficient_attention_fast.cpp) runs the slices group by group;
// this is a group's default, forward_unbatched per slice. SelfAttention and
// LSHSelfAttention override it with the same function batched over the group's heads.

EfficientAttentionBase::GroupResult EfficientAttentionBase::forward_group(const GroupCall& call) {
  GroupResult g;
  for (long idx = call.idx_lo; idx < call.idx_hi; ++idx) {
    const long example = idx / n_heads_;
    const long head = idx % n_heads_;
    if (g.examples.empty() || g.examples.back() != example) {
      g.examples.push_back(example);
      g.outputs.emplace_back();
    }
    const Tensor mask_example = call.mask.defined() ? row_of(call.mask, example) : Tensor();
    std::vector<Tensor> state_slice;
    for (const Tensor& leaf : call.state) state_slice.push_back(row_of(leaf, idx));
    UnbatchedResult r = forward_unbatched(call.x_of(example), mask_example, call.weights_of(head),
                                          state_slice, call.rng, call.update_state, head);
    Var& acc = g.outputs.back();
    acc = acc.defined() ? acc + r.out : r.out;
    g.states.push_back(std::move(r.state));
  }
  return g;
}

// =============================================================================================
// SelfAttention
// =============================================================================================

namespace {

void validate_chunking(const std::string& who, const std::optional<long>& chunk_len,
                       long n_chunks_before, long n_chunks_after) {
  if (chunk_len) require_positive(who, "chunk_len", *chunk_len);
  if (n_chunks_before < 0 || n_chunks_after < 0) {
    throw ValueError(who + ": n_chunks_before and n_chunks_after must be >= 0, got " +
                     str(n_chunks_before) + " and " + str(n_chunks_after));
  }
  if (!chunk_len && (n_chunks_before != 0 || n_chunks_after != 0)) {
    throw ValueError(who + ": n_chunks_before/n_chunks_after (" + str(n_chunks_before) + "/" +
                     str(n_chunks_after) + ") need chunk_len; set chunk_len or use 0 and 0");
  }
}

// forward_unbatched's inputs: x [L, d], mask [L] (integer) iff masked.
void check_unbatched(const Var& x, const Tensor& mask, bool masked, std::size_t seqlen) {
  if (x.ndim() != 2) {
    throw ShapeError("forward_unbatched: expected x of shape [length, d_model], got " +
                     core::shape_str(x.shape()));
  }
  if (masked != mask.defined()) {
    throw ValueError(std::string("forward_unbatched: ") +
                     (masked ? "the layer is masked: pass a mask [length]"
                             : "the layer is not masked: pass no mask"));
  }
  if (masked && (mask.shape() != Shape{seqlen} || core::is_floating(mask.dtype()))) {
    throw ShapeError("forward_unbatched: expected an integer mask of shape [" +
                     std::to_string(seqlen) + "], got " + core::shape_str(mask.shape()) + " " +
                     std::string(core::dtype_name(mask.dtype())));
  }
}

}  // namespace

SelfAttentionLayer::SelfAttentionLayer(const SelfAttentionOptions& options, SrcLoc where,
                                       std::string name)
    : EfficientAttentionBase(std::move(name), options.n_heads, options.masked ? 2 : 1,
                             options.n_parallel_heads, options.use_reference_code, options.mode,
                             where),
      opt_(options) {
  require_positive(this->name(), "d_qk", opt_.d_qk);
  require_positive(this->name(), "d_v", opt_.d_v);
  require_rate(this->name(), "attention_dropout", opt_.attention_dropout);
  require_rate(this->name(), "output_dropout", opt_.output_dropout);
  validate_chunking(this->name(), opt_.chunk_len, opt_.n_chunks_before, opt_.n_chunks_after);
  if (opt_.mode == Mode::predict) SelfAttentionLayer::predict_lengths();  // checks the options
}

Tensor SelfAttentionLayer::kernel_init(const Shape& shape, Key rng) const {
  // Glorot uniform over the total width of all heads. As in JAX: the ratio in double,
  // then the square root in float32.
  const float ratio = static_cast<float>(
      6.0 / static_cast<double>(shape[0] + shape[1] * static_cast<std::size_t>(n_heads())));
  const float lim = std::sqrt(ratio);
  return core::uniform(rng, shape, DType::f32, -static_cast<double>(lim), static_cast<double>(lim));
}

std::vector<Tensor> SelfAttentionLayer::create_weights_unbatched(const Signature& sig, Key rng) {
  const std::size_t d_model = sig.at(0).shape.back();
  const std::size_t d_qk = static_cast<std::size_t>(opt_.d_qk);
  const std::size_t d_v = static_cast<std::size_t>(opt_.d_v);
  const std::vector<Key> keys = core::split(rng, 4);  // q, k, v, o (k unused if share_qk)
  AttentionWeightsOf<Tensor> w;
  w.w_q = kernel_init({d_model, d_qk}, keys[0]);
  if (!opt_.share_qk) w.w_k = kernel_init({d_model, d_qk}, keys[1]);
  w.w_v = kernel_init({d_model, d_v}, keys[2]);
  w.w_o = core::transpose(kernel_init({d_model, d_v}, keys[3]));  // [d_v, d_model]
  if (opt_.bias) {
    w.b_q = Tensor::zeros({d_qk});
    if (!opt_.share_qk) w.b_k = Tensor::zeros({d_qk});
    w.b_v = Tensor::zeros({d_v});
  }
  return w.pack();
}

std::vector<std::string> SelfAttentionLayer::weight_names() const {
  return AttentionWeights::names(opt_.share_qk, opt_.bias);
}

std::size_t SelfAttentionLayer::weights_d_model() const {
  return own_weights().size() > 0 ? weight(0).dim(1) : 0;
}

void SelfAttentionLayer::check_inputs(const Signature& sig, bool against_weights) const {
  EfficientAttentionBase::check_inputs(sig, against_weights);
  if (mode_ == Mode::predict) return;  // predict mode: forward_predict checks the lengths
  const long seqlen = as_long(sig[0].shape[1]);
  if (opt_.chunk_len && seqlen % *opt_.chunk_len != 0) {
    throw ValueError("sequence length " + str(seqlen) + " is not a multiple of chunk_len " +
                     str(*opt_.chunk_len) + "; pad to " +
                     str(padded_length(seqlen, 1, *opt_.chunk_len)));
  }
}

EfficientAttentionBase::UnbatchedResult SelfAttentionLayer::forward_unbatched(
    const Var& x, const Tensor& mask, const std::vector<Var>& weights,
    const std::vector<Tensor>& state, Key rng, bool /*update_state*/, long /*head*/) {
  const std::size_t seqlen = x.dim(0);
  check_unbatched(x, mask, opt_.masked, seqlen);
  // 1. Two keys: attention-dropout masks, output-dropout mask.
  const std::vector<Key> rngs = core::split(rng, 2);
  const Key attend_rng = rngs[0];
  const Key output_rng = rngs[1];

  // 2. This head's weights by name (w_q, w_k, w_v, w_o and the biases).
  const AttentionWeights w = AttentionWeights::unpack(weights, opt_.share_qk, opt_.bias);

  // 3. Projections: q [L, d_qk], k [L, d_qk] (none when shared with q), v [L, d_v].
  const Var q = fm::dense(x, w.w_q, w.b_q);
  const Var k = opt_.share_qk ? Var() : fm::dense(x, w.w_k, w.b_k);
  const Var v = fm::dense(x, w.w_v, w.b_v);

  // 4. Masking metadata: positions (tied to x, as Trax), padded keys made negative.
  const Tensor positions = autodiff::tie_in(x, Var(Tensor::arange(seqlen, DType::i32))).value();
  Tensor kv_info = positions;
  if (opt_.masked) {
    const Tensor ones = autodiff::tie_in(x, Var(Tensor::ones({seqlen}, DType::i32))).value();
    kv_info = core::mul(positions, core::where(mask, ones, core::neg(ones)));
  }

  // 5. (Chunked) dot-product attention.
  AttendOptions o;
  o.q_chunk_len = opt_.chunk_len;
  o.kv_chunk_len = opt_.chunk_len;
  o.n_chunks_before = opt_.n_chunks_before;
  o.n_chunks_after = opt_.n_chunks_after;
  o.mask_fn = [causal = opt_.causal, exclude_self = opt_.share_qk, masked = opt_.masked](
                  const Var& dots, const Tensor& q_info, const Tensor& kv) {
    return mask_self_attention(dots, q_info, kv, causal, exclude_self, masked);
  };
  o.q_info = positions;
  o.kv_info = kv_info;
  o.dropout = effective_rate(opt_.attention_dropout);
  o.rng = attend_rng;
  const AttendResult attended = attend(q, k, v, o);

  // 6. Output projection [L, d_model] and broadcast output dropout.
  Var out = fm::matmul(attended.out, w.w_o);
  out = apply_broadcasted_dropout(out, effective_rate(opt_.output_dropout), output_rng);
  return {out, state};
}

// =============================================================================================
// LSHSelfAttention
// =============================================================================================

namespace {

SelfAttentionOptions self_attention_options(const LSHSelfAttentionOptions& o) {
  if (!o.chunk_len) {
    throw ValueError(
        "LSHSelfAttention: chunk_len is required (e.g. 64; n_hashes * length must "
        "be a multiple of it)");
  }
  SelfAttentionOptions s;
  s.n_heads = o.n_heads;
  s.d_qk = o.d_qk;
  s.d_v = o.d_v;
  s.share_qk = true;
  s.causal = o.causal;
  s.masked = o.masked;
  s.chunk_len = o.chunk_len;
  s.n_chunks_before = o.n_chunks_before;
  s.n_chunks_after = o.n_chunks_after;
  s.bias = false;
  s.mode = o.mode;
  s.predict_mem_len = o.predict_mem_len;
  s.predict_drop_len = o.predict_drop_len;
  s.attention_dropout = o.attention_dropout;
  s.output_dropout = o.output_dropout;
  s.n_parallel_heads = o.n_parallel_heads;
  s.use_reference_code = o.use_reference_code;
  s.per_head_path = o.per_head_path;
  return s;
}

long rotation_size(const std::vector<long>& n_buckets) {
  return std::accumulate(n_buckets.begin(), n_buckets.end(), 0L);
}

}  // namespace

LSHSelfAttentionLayer::LSHSelfAttentionLayer(const LSHSelfAttentionOptions& options, SrcLoc where)
    : SelfAttentionLayer(self_attention_options(options), where, "LSHSelfAttention"),
      lsh_(options) {
  require_positive(name(), "n_hashes", lsh_.n_hashes);
  if (lsh_.n_buckets.empty()) {
    throw ValueError(name() +
                     ": n_buckets must be even and >= 2 (or a list of such factors), "
                     "got an empty list");
  }
  for (long f : lsh_.n_buckets) {
    if (f < 2 || f % 2 != 0) {
      throw ValueError(name() +
                       ": n_buckets must be even and >= 2 (each factor of a "
                       "factorised n_buckets too), got " +
                       str(f));
    }
  }
  if (lsh_.max_length_for_buckets) {
    require_positive(name(), "max_length_for_buckets", *lsh_.max_length_for_buckets);
  }
  if (lsh_.mode == Mode::predict) LSHSelfAttentionLayer::predict_lengths();  // checks the options
}

void LSHSelfAttentionLayer::set_fixed_rotations(const Tensor& rotations) {
  if (!rotations.defined()) {
    fixed_rotations_ = Tensor();
    return;
  }
  const Shape one{static_cast<std::size_t>(lsh_.d_qk), static_cast<std::size_t>(lsh_.n_hashes),
                  static_cast<std::size_t>(rotation_size(lsh_.n_buckets) / 2)};
  Shape per_head = one;
  per_head.insert(per_head.begin(), static_cast<std::size_t>(lsh_.n_heads));
  if (rotations.shape() != one && rotations.shape() != per_head) {
    throw ShapeError(name() + ": set_fixed_rotations expects [d_qk, n_hashes, rot_size / 2] = " +
                     core::shape_str(one) + " or per head " + core::shape_str(per_head) + ", got " +
                     core::shape_str(rotations.shape()));
  }
  if (!core::is_floating(rotations.dtype())) {
    throw DTypeError(name() + ": rotations must be float32 or float64, got " +
                     std::string(core::dtype_name(rotations.dtype())));
  }
  fixed_rotations_ = rotations;
}

std::vector<Tensor> LSHSelfAttentionLayer::create_state_unbatched(const Signature& sig, Key rng) {
  if (mode_ == Mode::predict) {  // Trax: (buckets over the memory, buckets_idx, hash rng)
    const long mem_len = predict_lengths().first;
    return {Tensor::zeros({static_cast<std::size_t>(lsh_.n_hashes * mem_len)}, DType::i32),
            Tensor::scalar(0, DType::i32), key_to_tensor(rng)};
  }
  const long length = lsh_.max_length_for_buckets.value_or(as_long(sig.at(0).shape.at(0)));
  return {Tensor::zeros({static_cast<std::size_t>(lsh_.n_hashes * length)}, DType::i32),
          key_to_tensor(rng)};
}

void LSHSelfAttentionLayer::check_inputs(const Signature& sig, bool against_weights) const {
  EfficientAttentionBase::check_inputs(sig, against_weights);
  if (mode_ == Mode::predict) return;  // predict mode: forward_predict checks the lengths
  const long seqlen = as_long(sig[0].shape[1]);
  const long chunk = *lsh_.chunk_len;
  const long n_hashes = lsh_.n_hashes;
  if ((n_hashes * seqlen) % chunk != 0) {
    const long to = padded_length(seqlen, n_hashes, chunk);
    if (n_hashes == 1) {
      throw ValueError("sequence length " + str(seqlen) + " is not a multiple of chunk_len " +
                       str(chunk) + "; pad to " + str(to));
    }
    throw ValueError("sequence length " + str(seqlen) + " times n_hashes " + str(n_hashes) +
                     " (= " + str(n_hashes * seqlen) + ") is not a multiple of chunk_len " +
                     str(chunk) + "; pad to " + str(to));
  }
  if (lsh_.max_length_for_buckets && seqlen > *lsh_.max_length_for_buckets) {
    throw ValueError("sequence length " + str(seqlen) + " exceeds max_length_for_buckets " +
                     str(*lsh_.max_length_for_buckets));
  }
}

Tensor LSHSelfAttentionLayer::rotations_of(long head, Key rng, DType dtype) const {
  // The fixed rotations if given, else drawn (float32, as Trax) from the key; then
  // converted to the queries' dtype (exactly), so a float64 layer hashes in float64.
  Tensor rotations;
  if (fixed_rotations_.defined()) {
    rotations = fixed_rotations_.ndim() == 4 ? row_of(fixed_rotations_, head) : fixed_rotations_;
  } else {
    rotations = hash_rotations(rng, lsh_.d_qk, lsh_.n_buckets, lsh_.n_hashes);
  }
  if (rotations.dtype() != dtype) rotations = rotations.astype(dtype);
  return rotations;
}

Tensor LSHSelfAttentionLayer::hash(const Tensor& q, Key rng, const Tensor& mask, long head) const {
  return hash_vectors_with(q, rotations_of(head, rng, q.dtype()), lsh_.n_buckets, lsh_.n_hashes,
                           mask.defined() ? &mask : nullptr);
}

LSHSelfAttentionLayer::CallBuckets LSHSelfAttentionLayer::buckets_of_call(
    const std::vector<Tensor>& state, bool update_state, long seqlen, long head, DType dtype,
    const std::function<Tensor(const Tensor&)>& hash_with) const {
  if (state.size() != 2) {
    throw ValueError("LSHSelfAttention: expected a state of (buckets, hash key), got " +
                     std::to_string(state.size()) + " tensors");
  }
  const long n_hashes = lsh_.n_hashes;
  CallBuckets call;
  if (update_state) {
    // A fresh key for the next call and one for this call's rotations.
    const std::vector<Key> hash_keys = core::split(key_from_tensor(state[1]), 2);
    const Key hash_rng = hash_keys[0];
    const Key hash_subrng = hash_keys[1];
    call.buckets = hash_with(rotations_of(head, hash_subrng, dtype));  // [n_hashes * L]
    Tensor stored = call.buckets;
    if (lsh_.max_length_for_buckets) {
      const long full = n_hashes * *lsh_.max_length_for_buckets;
      if (as_long(stored.size()) < full) {
        stored = core::concatenate(
            {stored, Tensor::zeros({static_cast<std::size_t>(full) - stored.size()}, DType::i32)},
            0);
      }
    }
    call.state = {stored, key_to_tensor(hash_rng)};
  } else {
    call.buckets = state[0];
    if (lsh_.max_length_for_buckets) {
      call.buckets = core::slice(call.buckets, 0, 0, n_hashes * seqlen);
    }
    call.state = state;
  }
  if (as_long(call.buckets.size()) != n_hashes * seqlen) {
    throw ShapeError("the stored buckets cover " + std::to_string(call.buckets.size()) +
                     " positions, this call needs n_hashes * length = " + str(n_hashes) + " x " +
                     str(seqlen) + " = " + str(n_hashes * seqlen) +
                     ": run a state-updating forward pass at this length first");
  }
  return call;
}

EfficientAttentionBase::UnbatchedResult LSHSelfAttentionLayer::forward_unbatched(
    const Var& x, const Tensor& mask_in, const std::vector<Var>& weights,
    const std::vector<Tensor>& state_in, Key rng, bool update_state, long head) {
  const long seqlen = as_long(x.dim(0));
  const long n_hashes = lsh_.n_hashes;
  check_unbatched(x, mask_in, lsh_.masked, x.dim(0));
  const Tensor mask = mask_in.defined() ? mask_in.astype(DType::i32) : Tensor();

  // 1. Two keys: attention-dropout masks, output-dropout mask.
  const std::vector<Key> rngs = core::split(rng, 2);
  const Key attend_rng = rngs[0];
  const Key output_rng = rngs[1];

  // 2. Shared query/key projection and value projection.
  const Var& w_q = weights.at(0);
  const Var& w_v = weights.at(1);
  const Var& w_o = weights.at(2);
  const Var q = fm::matmul(x, w_q);  // [L, d_qk]
  const Var v = fm::matmul(x, w_v);  // [L, d_v]

  // 3. Buckets: rehashed with a fresh key from the state (and kept in the new state), or
  //    the stored ones (recomputation in the backward pass). Hashing is not differentiated.
  const Var q_no_grad = autodiff::stop_gradient(q);
  const CallBuckets call = buckets_of_call(
      state_in, update_state, seqlen, head, q.dtype(), [&](const Tensor& rotations) {
        return hash_vectors_with(q_no_grad.value(), rotations, lsh_.n_buckets, n_hashes,
                                 mask.defined() ? &mask : nullptr);  // int32 [n_hashes * L]
      });
  const Tensor& buckets = call.buckets;
  const std::vector<Tensor>& new_state = call.state;

  // 4. Sort positions by (bucket, position), all hash rounds as one sequence.
  const SortedBuckets sorted = sort_buckets(buckets, seqlen, n_hashes);
  //    st = sticker % L: the original position of each sorted slot.
  Tensor st = Tensor::empty({sorted.sticker.size()}, DType::i32);
  {
    const std::int32_t* s = sorted.sticker.data<std::int32_t>();
    std::int32_t* p = st.data<std::int32_t>();
    for (std::size_t i = 0; i < st.size(); ++i) p[i] = static_cast<std::int32_t>(s[i] % seqlen);
  }

  // 5. Gather queries and values into sorted order: [n_hashes * L, d].
  const Var sq = fm::take(q, Var(st), 0);
  const Var sv = fm::take(v, Var(st), 0);

  // 6. Masking metadata: causal/self masks compare original positions; padded keys
  //    carry negative positions.
  Tensor kv_info;
  if (lsh_.masked) {
    kv_info = Tensor::empty(st.shape(), DType::i32);
    const std::int32_t* s = st.data<std::int32_t>();
    const std::int32_t* m = mask.data<std::int32_t>();
    std::int32_t* p = kv_info.data<std::int32_t>();
    for (std::size_t i = 0; i < st.size(); ++i) p[i] = m[s[i]] != 0 ? s[i] : -s[i];
  }

  // 7. Chunked shared-QK attention over the sorted sequence (self mask on).
  AttendOptions o;
  o.q_chunk_len = lsh_.chunk_len;
  o.n_chunks_before = lsh_.n_chunks_before;
  o.n_chunks_after = lsh_.n_chunks_after;
  o.mask_fn = [causal = lsh_.causal, masked = lsh_.masked](const Var& dots, const Tensor& q_info,
                                                           const Tensor& kv) {
    return mask_self_attention(dots, q_info, kv, causal, /*exclude_self=*/true, masked);
  };
  o.q_info = st;
  o.kv_info = kv_info;  // undefined when not masked: attend then uses q_info
  o.dropout = effective_rate(lsh_.attention_dropout);
  o.rng = attend_rng;
  const AttendResult attended = attend(sq, Var(), sv, o);

  // 8. Undo the sort: outputs [n_hashes * L, d_v] and their logsumexps [n_hashes * L].
  Var out_rounds = permute_via_gather(attended.out, sorted.undo_sort, sorted.sticker, 0);
  Var logits = permute_via_sort(attended.logsumexp, sorted.sticker, sorted.buckets_and_t, 0);

  // 9. Combine the hash rounds, each weighted by its share of the total softmax mass.
  Var combined = out_rounds;
  if (n_hashes > 1) {
    const long d_v = as_long(out_rounds.dim(1));
    out_rounds = fm::reshape(out_rounds, {n_hashes, seqlen, d_v});
    logits = fm::reshape(logits, {n_hashes, seqlen, 1});
    const Var probs = fm::exp(logits - fm::logsumexp(logits, {0}, true));
    combined = fm::sum(out_rounds * probs, {0});
  }

  // 10. Output projection and broadcast output dropout.
  Var out = fm::matmul(combined, w_o);
  out = apply_broadcasted_dropout(out, effective_rate(lsh_.output_dropout), output_rng);
  return {out, new_state};
}

// ---- factories ---------------------------------------------------------------------------------

std::shared_ptr<SelfAttentionLayer> SelfAttention(const SelfAttentionOptions& options,
                                                  SrcLoc where) {
  return std::make_shared<SelfAttentionLayer>(options, where);
}

std::shared_ptr<LSHSelfAttentionLayer> LSHSelfAttention(const LSHSelfAttentionOptions& options,
                                                        SrcLoc where) {
  return std::make_shared<LSHSelfAttentionLayer>(options, where);
}

}  // namespace minitrax::layers::research