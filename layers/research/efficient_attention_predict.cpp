// minitrax/layers/research/efficient_attention_predict.cpp: predict mode (fast
// autoregressive inference) of SelfAttention and LSHSelfAttention, after Trax 1.3.4's
// EfficientAttentionBase.use_predict_mem and the two incremental_forward_unbatched methods.
//
// The state in predict mode is Trax's triple
//
//   (mem_end int32 [],  (memory [B, predict_mem_len, d_model],),  per-slice state [B*H, ...])
//
// The memory holds the layer's INPUTS x of the last positions (keys and values are
// recomputed from it at every call, as Trax does); mem_end counts the positions in it.
// SelfAttention has no per-slice state; LSHSelfAttention keeps, per (example, head),
// (buckets int32 [n_hashes * predict_mem_len] (round h at [h * mem_len, (h + 1) * mem_len)),
// buckets_idx int32 [], hash key int64 [2]).
//
// A call with n new positions x [B, n, d_model] (use_predict_mem):
//   * short (n <= predict_drop_len and n < predict_mem_len; one token per call is this):
//     if mem_end + n > predict_mem_len the memory is rolled left by predict_drop_len
//     (zeros come in at the end) and mem_end -= predict_drop_len; x is written at
//     [mem_end, mem_end + n); the heads then see the WHOLE memory as their input, with the
//     queries at q_start = mem_end; mem_end += n.
//   * long (a prompt: n > predict_drop_len, or n == predict_mem_len): it must start the
//     sequence (mem_end == 0; otherwise a ValueError, where Trax fills the outputs with
//     NaNs). The heads see the prompt itself, q_start = 0; the memory keeps the prompt's
//     last predict_mem_len positions (zero-padded), mem_end = min(n, predict_mem_len).
//
// SelfAttention per (example, head) (incremental_forward_unbatched):
//   q = x[q_start : q_start + n] w_q;  k = x w_k (share_qk: length_normalized(x w_q));
//   v = x w_v;  q_info = q_start + arange(n);  kv_info = arange(len(x));
//   n > chunk_len (a prompt): the chunked attend of eval mode over the prompt (it must
//   fill whole chunks), else one unchunked attend over all of x; the causal mask removes
//   future and empty memory slots. With the defaults predict_mem_len = chunk_len * (1 +
//   n_chunks_before) and predict_drop_len = chunk_len, the memory always holds exactly
//   the window of chunked eval-mode attention, so one token per call gives eval's outputs.
//
// LSHSelfAttention per (example, head): see incremental_forward_unbatched below.
#include "layers/research/efficient_attention.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "layers/research/efficient_attention_internal.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using namespace detail;
using base::ShapeDtype;
using core::ShapeError;
using core::ValueError;

namespace {

// Is s a predict-mode state: (mem_end int32 [], (memory,), (per-slice leaves...))?
bool is_predict_state(const State& s) {
  if (s.is_leaf() || s.size() != 3 || !s[0].is_leaf() || s[1].is_leaf() || s[2].is_leaf()) {
    return false;
  }
  const Tensor& end = s[0].leaf();
  return end.defined() && end.ndim() == 0 && end.dtype() == DType::i32 && s[1].size() == 1 &&
         s[1][0].is_leaf();
}

// Trax's roll_mem: buf[:, drop:] followed by zeros, along `axis`.
Tensor roll_left(const Tensor& buf, long axis, long drop) {
  const long n = as_long(buf.dim(static_cast<std::size_t>(axis)));
  Shape zero_shape = buf.shape();
  zero_shape[static_cast<std::size_t>(axis)] = static_cast<std::size_t>(std::min(drop, n));
  if (drop >= n) return Tensor::zeros(buf.shape(), buf.dtype());
  return core::concatenate(
      {core::slice(buf, axis, drop, n), Tensor::zeros(zero_shape, buf.dtype())}, axis);
}

Tensor int32_range(long start, long n) {
  Tensor t = Tensor::empty({static_cast<std::size_t>(n)}, DType::i32);
  std::int32_t* p = t.data<std::int32_t>();
  for (long i = 0; i < n; ++i) p[i] = static_cast<std::int32_t>(start + i);
  return t;
}

}  // namespace

// =============================================================================================
// EfficientAttentionBase: the memory (Trax's use_predict_mem) and the loop over slices
// =============================================================================================

EfficientAttentionBase::UnbatchedResult EfficientAttentionBase::incremental_forward_unbatched(
    const Var&, long, long, const std::vector<Var>&, const std::vector<Tensor>&, Key, long) {
  throw ValueError(name() + ": predict mode (fast inference) is not implemented for this layer");
}

std::pair<long, long> EfficientAttentionBase::predict_lengths() const {
  throw ValueError(name() + ": predict mode (fast inference) is not implemented for this layer");
}

State EfficientAttentionBase::predict_state(const Signature& input_signature,
                                            const State& inner) const {
  const long mem_len = predict_lengths().first;
  const ShapeDtype& x = input_signature.at(0);
  const Shape mem_shape{x.shape.at(0), static_cast<std::size_t>(mem_len), x.shape.at(2)};
  State memory;
  memory.push_back(State(Tensor::zeros(mem_shape, x.dtype)));
  State s;
  s.push_back(State(Tensor::scalar(0, DType::i32)));  // mem_end
  s.push_back(std::move(memory));
  s.push_back(inner);
  return s;
}

Var EfficientAttentionBase::forward_predict(const Var& x) {
  const auto [mem_len, drop_len] = predict_lengths();  // ValueError naming the layer
  EfficientAttentionBase::check_inputs(base::signature_of(Stack{x}), true);
  const long batch = as_long(x.dim(0));
  const long n = as_long(x.dim(1));
  const long d_model = as_long(x.dim(2));
  const long n_slices = batch * n_heads_;
  const std::string who = name() + ": predict mode: ";

  // The state; one from another mode (initialised in train/eval, then switched) starts an
  // empty memory, keeping the per-slice hash keys when it has them.
  State st = state_;
  if (!is_predict_state(st)) {
    const std::vector<Tensor> old = st.flatten();
    const bool old_keys = !old.empty() && old.back().dtype() == DType::i64 &&
                          old.back().shape() == Shape{static_cast<std::size_t>(n_slices), 2};
    const std::vector<Key> keys = core::split(rng_, static_cast<std::size_t>(n_slices));
    const Signature unbatched{
        {{static_cast<std::size_t>(n), static_cast<std::size_t>(d_model)}, x.dtype()}};
    std::vector<std::vector<Tensor>> rows;
    for (long i = 0; i < n_slices; ++i) {
      const Key k =
          old_keys ? key_from_tensor(row_of(old.back(), i)) : keys[static_cast<std::size_t>(i)];
      rows.push_back(create_state_unbatched(unbatched, k));
    }
    st = predict_state({{x.shape(), x.dtype()}}, state_of(stack_rows(rows)));
  }

  // Check the memory and the per-slice state against this call.
  Tensor mem = st[1][0].leaf();
  if (mem.ndim() != 3 || as_long(mem.dim(1)) != mem_len || as_long(mem.dim(2)) != d_model ||
      mem.dtype() != x.dtype()) {
    throw ShapeError(who + "expected a memory [batch, predict_mem_len = " + str(mem_len) +
                     ", d_model = " + str(d_model) + "] " +
                     std::string(core::dtype_name(x.dtype())) + " in the state, got " +
                     core::shape_str(mem.shape()) + " " +
                     std::string(core::dtype_name(mem.dtype())));
  }
  if (as_long(mem.dim(0)) != batch) {
    throw ValueError(who + "this call has batch " + str(batch) +
                     " but the memory was made for batch " + std::to_string(mem.dim(0)) +
                     " (init the layer in predict mode with the batch it is called with)");
  }
  const std::vector<Tensor> inner = st[2].flatten();
  for (const Tensor& leaf : inner) {
    if (leaf.ndim() == 0 || as_long(leaf.dim(0)) != n_slices) {
      throw ValueError(who + "the per-(example, head) state has " +
                       (leaf.ndim() == 0 ? std::string("no") : std::to_string(leaf.dim(0))) +
                       " rows; this call has batch " + str(batch) + " x " + str(n_heads_) +
                       " heads = " + str(n_slices) +
                       " (init the layer in predict mode with the batch it is called with)");
    }
  }
  long mem_end = st[0].leaf().item<std::int32_t>();
  if (mem_end < 0 || mem_end > mem_len) {
    throw ValueError(who + "mem_end " + str(mem_end) +
                     " is outside [0, predict_mem_len = " + str(mem_len) + "]");
  }

  // Trax's use_predict_mem: where the new positions go, and what the heads see.
  Var heads_input;  // [B, len, d_model]: the whole memory, or the prompt itself
  long q_start = 0;
  Tensor new_mem;
  long new_mem_end = 0;
  if (n <= drop_len && n < mem_len) {
    if (mem_end + n > mem_len) {  // full: forget the oldest predict_drop_len positions
      mem = roll_left(mem, 1, drop_len);
      mem_end -= drop_len;
    }
    std::vector<Var> parts;
    if (mem_end > 0) parts.push_back(Var(core::slice(mem, 1, 0, mem_end)));
    parts.push_back(x);
    if (mem_end + n < mem_len) parts.push_back(Var(core::slice(mem, 1, mem_end + n, mem_len)));
    heads_input = fm::concatenate(parts, 1);
    new_mem = heads_input.value();
    q_start = mem_end;
    new_mem_end = mem_end + n;
  } else {
    if (mem_end != 0) {
      throw ValueError(who + "a call of " + str(n) + " positions (more than predict_drop_len = " +
                       str(drop_len) + ", or all predict_mem_len = " + str(mem_len) +
                       ") is a prompt and must start the sequence, but the memory already " +
                       "holds " + str(mem_end) +
                       " positions; the memory would overflow "
                       "without predict_drop_len handling: feed at most predict_drop_len "
                       "positions per call after the prompt");
    }
    if (n >= mem_len) {
      new_mem = core::slice(x.value(), 1, n - mem_len, n);
    } else {
      new_mem = core::concatenate({x.value(), Tensor::zeros({static_cast<std::size_t>(batch),
                                                             static_cast<std::size_t>(mem_len - n),
                                                             static_cast<std::size_t>(d_model)},
                                                            x.dtype())},
                                  1);
    }
    heads_input = x;
    q_start = 0;
    new_mem_end = std::min(n, mem_len);
  }

  // The heads, one (example, head) at a time, as forward_reference does.
  const long in_len = as_long(heads_input.dim(1));
  std::vector<Var> outputs;
  std::vector<std::vector<Tensor>> new_rows;
  for (long example = 0; example < batch; ++example) {
    const Var x_example =
        fm::reshape(fm::slice(heads_input, 0, example, example + 1), {in_len, d_model});
    Var sum_over_heads;
    for (long head = 0; head < n_heads_; ++head) {
      std::vector<Tensor> slice_state;
      for (const Tensor& leaf : inner)
        slice_state.push_back(row_of(leaf, example * n_heads_ + head));
      UnbatchedResult r = incremental_forward_unbatched(x_example, q_start, n, head_weights(head),
                                                        slice_state, rng_, head);
      sum_over_heads = sum_over_heads.defined() ? sum_over_heads + r.out : r.out;
      new_rows.push_back(std::move(r.state));
    }
    outputs.push_back(fm::reshape(sum_over_heads, {1, n, d_model}));
  }
  Var output = outputs.size() == 1 ? outputs[0] : fm::concatenate(outputs, 0);

  State memory;
  memory.push_back(State(new_mem));
  State new_state;
  new_state.push_back(State(Tensor::scalar(static_cast<double>(new_mem_end), DType::i32)));
  new_state.push_back(std::move(memory));
  new_state.push_back(!new_rows.empty() && !new_rows[0].empty() ? state_of(stack_rows(new_rows))
                                                                : st[2]);
  state_ = std::move(new_state);
  return output;
}

// =============================================================================================
// SelfAttention
// =============================================================================================

std::pair<long, long> SelfAttentionLayer::predict_lengths() const {
  const std::string who = name() + ": predict mode";
  if (!opt_.causal) {
    throw ValueError(who + " needs causal = true (only causal attention decodes incrementally)");
  }
  if (opt_.masked) {
    throw ValueError(who + " does not support masked = true (Trax 1.3.4's incremental path " +
                     "ignores the mask); run the masked layer in eval mode");
  }
  if (!opt_.chunk_len && (!opt_.predict_mem_len || !opt_.predict_drop_len)) {
    throw ValueError(who + " without chunk_len needs predict_mem_len and predict_drop_len");
  }
  const long mem_len =
      opt_.predict_mem_len ? *opt_.predict_mem_len : *opt_.chunk_len * (1 + opt_.n_chunks_before);
  const long drop_len = opt_.predict_drop_len ? *opt_.predict_drop_len : *opt_.chunk_len;
  if (!(0 < drop_len && drop_len <= mem_len)) {
    throw ValueError(who + " needs 0 < predict_drop_len <= predict_mem_len, got predict_mem_len " +
                     str(mem_len) + " and predict_drop_len " + str(drop_len));
  }
  return {mem_len, drop_len};
}

EfficientAttentionBase::UnbatchedResult SelfAttentionLayer::incremental_forward_unbatched(
    const Var& x, long q_start, long q_len, const std::vector<Var>& weights,
    const std::vector<Tensor>& state, Key rng, long /*head*/) {
  if (x.ndim() != 2 || q_start < 0 || q_len < 1 || q_start + q_len > as_long(x.dim(0))) {
    throw ShapeError(name() + ": incremental_forward_unbatched: expected x [length, d_model] " +
                     "holding positions [q_start, q_start + q_len) = [" + str(q_start) + ", " +
                     str(q_start + q_len) + "), got x " + core::shape_str(x.shape()));
  }
  const long x_len = as_long(x.dim(0));
  // 1. Two keys: attention-dropout masks, output-dropout mask (rates are 0 in predict mode).
  const std::vector<Key> rngs = core::split(rng, 2);

  // 2. This head's weights (biases too, which Trax's incremental path cannot unpack).
  const AttentionWeights w = AttentionWeights::unpack(weights, opt_.share_qk, opt_.bias);
  const Var &w_q = w.w_q, &w_k = w.w_k, &w_v = w.w_v, &w_o = w.w_o;
  const Var &b_q = w.b_q, &b_k = w.b_k, &b_v = w.b_v;

  // 3. Queries for the new positions only; keys and values for every position of x.
  const Var x_new = q_start == 0 && q_len == x_len ? x : fm::slice(x, 0, q_start, q_start + q_len);
  const Var q = fm::dense(x_new, w_q, b_q);
  const Var k = opt_.share_qk ? length_normalized(fm::dense(x, w_q, b_q)) : fm::dense(x, w_k, b_k);
  const Var v = fm::dense(x, w_v, b_v);

  // 4. Positions are memory slots: the causal mask removes later (and empty) slots.
  AttendOptions o;
  o.mask_fn = [exclude_self = opt_.share_qk](const Var& dots, const Tensor& q_info,
                                             const Tensor& kv) {
    return mask_self_attention(dots, q_info, kv, /*causal=*/true, exclude_self, /*masked=*/false);
  };
  o.q_info = int32_range(q_start, q_len);
  o.kv_info = int32_range(0, x_len);
  o.dropout = effective_rate(opt_.attention_dropout);
  o.rng = rngs[0];

  // 5. More positions than a chunk (a prompt): chunked, as eval mode; else one attend.
  if (opt_.chunk_len && q_len > *opt_.chunk_len) {
    const long chunk = *opt_.chunk_len;
    if (q_start != 0 || q_len != x_len || q_len % chunk != 0) {
      throw ValueError(name() + ": predict mode: " + str(q_len) + " new positions at position " +
                       str(q_start) + " are more than chunk_len " + str(chunk) +
                       "; they are attended chunk by chunk, which needs a prompt that starts " +
                       "the sequence, is longer than predict_drop_len and fills whole chunks " +
                       "(pad it to " + str((q_len + chunk - 1) / chunk * chunk) +
                       "), or feed at most chunk_len positions per call");
    }
    o.q_chunk_len = chunk;
    o.kv_chunk_len = chunk;
    o.n_chunks_before = opt_.n_chunks_before;
    o.n_chunks_after = opt_.n_chunks_after;
  }
  const AttendResult attended = attend(q, k, v, o);

  // 6. Output projection and (rate 0) output dropout.
  Var out = fm::matmul(attended.out, w_o);
  out = apply_broadcasted_dropout(out, effective_rate(opt_.output_dropout), rngs[1]);
  return {out, state};
}

// =============================================================================================
// LSHSelfAttention
// =============================================================================================

std::pair<long, long> LSHSelfAttentionLayer::predict_lengths() const {
  const std::pair<long, long> lengths = SelfAttentionLayer::predict_lengths();
  if (opt_.n_chunks_after != 0) {
    throw ValueError(name() + ": predict mode needs n_chunks_after = 0, got " +
                     str(opt_.n_chunks_after));
  }
  return lengths;
}

// Trax's LSHSelfAttention.incremental_forward_unbatched. The hash key in the state is
// used as it is (never split or advanced in predict mode): every position is hashed with
// the same rotations, once, when it is new, and its buckets are kept in the state.
//
//   * a prompt starting the sequence (q_start 0, q_len > 1, x the prompt): x is padded
//     with zeros to a multiple of chunk_len, hashed with the state's key, and run through
//     forward_unbatched with those buckets (eval-mode LSH attention over the prompt); the
//     first q_len outputs are kept, and the prompt's buckets (the last predict_mem_len of
//     them) are stored at slots [0, ...); buckets_idx = q_len.
//   * one position (incremental_one_position): see there.
//   * several positions in the memory (Trax asserts q_len == 1 here): one at a time,
//     which gives what feeding them one per call gives.
EfficientAttentionBase::UnbatchedResult LSHSelfAttentionLayer::incremental_forward_unbatched(
    const Var& x, long q_start, long q_len, const std::vector<Var>& weights,
    const std::vector<Tensor>& state, Key rng, long head) {
  if (x.ndim() != 2 || q_start < 0 || q_len < 1 || q_start + q_len > as_long(x.dim(0))) {
    throw ShapeError(name() + ": incremental_forward_unbatched: expected x [length, d_model] " +
                     "holding positions [q_start, q_start + q_len) = [" + str(q_start) + ", " +
                     str(q_start + q_len) + "), got x " + core::shape_str(x.shape()));
  }
  if (state.size() != 3 || state[0].dtype() != DType::i32 || state[0].ndim() != 1 ||
      state[0].size() % static_cast<std::size_t>(lsh_.n_hashes) != 0 ||
      state[1].dtype() != DType::i32 || state[1].size() != 1) {
    throw ValueError(name() + ": predict mode: expected a state of (buckets int32 [n_hashes * " +
                     "predict_mem_len], buckets_idx int32, hash key), got " +
                     std::to_string(state.size()) + " tensors");
  }
  const long x_len = as_long(x.dim(0));
  const long n_hashes = lsh_.n_hashes;
  const long mem_len = as_long(state[0].size()) / n_hashes;
  const Key hash_rng = key_from_tensor(state[2]);

  if (q_start == 0 && q_len > 1 && q_len == x_len) {  // the prompt
    const long chunk = *lsh_.chunk_len;
    const long padded = (q_len + chunk - 1) / chunk * chunk;
    const long d_model = as_long(x.dim(1));
    const Var x_padded =
        padded == q_len
            ? x
            : fm::concatenate({x, Var(Tensor::zeros({static_cast<std::size_t>(padded - q_len),
                                                     static_cast<std::size_t>(d_model)},
                                                    x.dtype()))},
                              0);
    const Tensor q = core::matmul(x_padded.value(), weights.at(0).value());
    const Tensor buckets_update = hash(q, hash_rng, Tensor(), head);  // [n_hashes * padded]
    UnbatchedResult r = forward_unbatched(x_padded, Tensor(), weights, {buckets_update, state[2]},
                                          rng, /*update_state=*/false, head);
    const Var out = padded == q_len ? r.out : fm::slice(r.out, 0, 0, q_len);
    // Store the prompt's buckets: per round its first q_len (the last mem_len of them).
    Tensor buckets = state[0].clone();
    std::int32_t* b = buckets.data<std::int32_t>();
    const std::int32_t* u = buckets_update.data<std::int32_t>();
    const long kept = std::min(q_len, mem_len);
    for (long h = 0; h < n_hashes; ++h) {
      for (long t = 0; t < kept; ++t) b[h * mem_len + t] = u[h * padded + (q_len - kept) + t];
    }
    const long idx = state[1].item<std::int32_t>() + q_len;
    return {out, {buckets, Tensor::scalar(static_cast<double>(idx), DType::i32), state[2]}};
  }
  if (mem_len != x_len) {
    throw ShapeError(name() + ": predict mode: the stored buckets cover " + str(mem_len) +
                     " memory positions, the memory has " + str(x_len));
  }
  if (q_len == 1) return incremental_one_position(x, q_start, weights, state, rng, head);
  std::vector<Var> outs;
  std::vector<Tensor> s = state;
  for (long j = 0; j < q_len; ++j) {
    UnbatchedResult r = incremental_one_position(x, q_start + j, weights, s, rng, head);
    outs.push_back(r.out);
    s = std::move(r.state);
  }
  return {fm::concatenate(outs, 0), s};
}

// One new position at slot q_start of the memory x [mem_len, d_model] (Trax's one-token
// path):
//   1. if buckets_idx > q_start the memory was rolled since the last call: roll the stored
//      buckets left by buckets_idx - q_start (at most predict_drop_len, as jax's
//      dynamic_slice clamps), zeros coming in;
//   2. q = x[q_start] w_q, hashed with the state's key; its buckets are stored at q_start;
//   3. is_valid_target[t] = the slot shares a bucket with q in at least one round;
//      kv_priorities[t] = (t > q_start + 1 ? -(mem_len + t) : t) + mem_len * is_valid_target[t]
//      (Trax's rule, `>` included: slot q_start + 1 counts as a past slot here, and the causal
//      mask removes it later);
//   4. attend to the n_hashes * chunk_len * (1 + n_chunks_before) slots of highest priority
//      (all slots if there are fewer): same-bucket slots first, the latest first, then the
//      latest other slots; keys length_normalized(x[kv] w_q), values x[kv] w_v, ONE softmax
//      (no per-round outputs), masks causal, self (1e5) and padding on the slot indices;
//   5. out = o w_o; buckets_idx = q_start + 1; the hash key is unchanged.
EfficientAttentionBase::UnbatchedResult LSHSelfAttentionLayer::incremental_one_position(
    const Var& x, long q_start, const std::vector<Var>& weights, const std::vector<Tensor>& state,
    Key rng, long head) {
  const long n_hashes = lsh_.n_hashes;
  const long len = as_long(x.dim(0));
  const long drop_len = predict_lengths().second;
  const Key hash_rng = key_from_tensor(state[2]);

  // 1. Roll the stored buckets as the memory was rolled.
  Tensor buckets = state[0].clone();
  std::int32_t* b = buckets.data<std::int32_t>();
  const long buckets_idx = state[1].item<std::int32_t>();
  if (buckets_idx > q_start) {
    const long shift = std::min(buckets_idx - q_start, drop_len);
    for (long h = 0; h < n_hashes; ++h) {
      std::int32_t* round = b + h * len;
      for (long t = 0; t < len; ++t) round[t] = t + shift < len ? round[t + shift] : 0;
    }
  }

  // 2. The query and its buckets, one per round (with the round offsets).
  const std::vector<Key> rngs = core::split(rng, 2);
  const Var& w_q = weights.at(0);
  const Var& w_v = weights.at(1);
  const Var& w_o = weights.at(2);
  const Var q = fm::matmul(fm::slice(x, 0, q_start, q_start + 1), w_q);  // [1, d_qk]
  const Tensor q_buckets = hash(q.value(), hash_rng, Tensor(), head);    // [n_hashes]
  const std::int32_t* qb = q_buckets.data<std::int32_t>();
  for (long h = 0; h < n_hashes; ++h) b[h * len + q_start] = qb[h];

  // 3. Priorities: same-bucket slots above all others, later slots above earlier ones,
  //    slots after q_start + 1 below everything.
  std::vector<long> priority(static_cast<std::size_t>(len));
  for (long t = 0; t < len; ++t) {
    bool valid = false;
    for (long h = 0; h < n_hashes; ++h) valid = valid || b[h * len + t] == qb[h];
    priority[static_cast<std::size_t>(t)] = (t > q_start + 1 ? -(len + t) : t) + (valid ? len : 0);
  }
  std::vector<long> order(static_cast<std::size_t>(len));
  std::iota(order.begin(), order.end(), 0L);
  std::stable_sort(order.begin(), order.end(), [&](long a, long c) {
    return priority[static_cast<std::size_t>(a)] < priority[static_cast<std::size_t>(c)];
  });
  const long n_kv = std::min(len, n_hashes * *lsh_.chunk_len * (1 + lsh_.n_chunks_before));
  Tensor kv_indices = Tensor::empty({static_cast<std::size_t>(n_kv)}, DType::i32);
  std::int32_t* kv = kv_indices.data<std::int32_t>();
  for (long j = 0; j < n_kv; ++j)
    kv[j] = static_cast<std::int32_t>(order[static_cast<std::size_t>(len - n_kv + j)]);

  // 4. Attend to the chosen slots.
  const Var x_kv = fm::take(x, Var(kv_indices), 0);
  const Var k = length_normalized(fm::matmul(x_kv, w_q));
  const Var v = fm::matmul(x_kv, w_v);
  AttendOptions o;
  o.mask_fn = [](const Var& dots, const Tensor& q_info, const Tensor& kv_info) {
    return mask_self_attention(dots, q_info, kv_info, /*causal=*/true, /*exclude_self=*/true,
                               /*masked=*/true);
  };
  o.q_info = int32_range(q_start, 1);
  o.kv_info = kv_indices;
  o.dropout = effective_rate(lsh_.attention_dropout);
  o.rng = rngs[0];
  const AttendResult attended = attend(q, k, v, o);

  // 5. Output projection and (rate 0) output dropout.
  Var out = fm::matmul(attended.out, w_o);
  out = apply_broadcasted_dropout(out, effective_rate(lsh_.output_dropout), rngs[1]);
  return {out, {buckets, Tensor::scalar(static_cast<double>(q_start + 1), DType::i32), state[2]}};
}

}  // namespace minitrax::layers::research
