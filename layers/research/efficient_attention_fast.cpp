// minitrax/layers/research/efficient_attention_fast.cpp: the memory-lean path of the
// efficient attention layers (EfficientAttentionBase::forward_memory_lean), and the
// batched forward_group of SelfAttention and LSHSelfAttention that it runs.
//
// Read efficient_attention.cpp first: this file computes the same function as the
// reference loop there, faster and with less memory, and the tests pin the two together.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/parallel.hpp"
#include "layers/chunked_attention.hpp"
#include "layers/research/efficient_attention.hpp"
#include "layers/research/efficient_attention_internal.hpp"
#include "layers/research/lsh_kernels.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using autodiff::VarList;
using core::ShapeError;
using core::ValueError;
using namespace detail;

// ---- the batched group path ---------------------------------------------------------------
//
// forward_group for SelfAttention and LSHSelfAttention, batched over the slices of a group:
// the same function as forward_unbatched per (example, head), written with a leading slice
// axis n_slices so that every step is ONE op over all the group's heads (one batched gemm for the
// projections, one for q k^T over [n_slices * n_chunks, chunk, window] blocks, one for the
// probabilities times v, one for the output projection) instead of n_slices times many small ops.
// Memory per head stays O(seq_len * window) when chunked. Each step matches attend's and
// forward_unbatched's arithmetic, so the results equal the reference path's within
// rounding (the test file pins them together).

namespace {

// The slices [idx_lo, idx_hi) as n_examples examples of n_group_heads consecutive heads each (a
// group is part of one example's heads, or whole examples: group_size's rule guarantees it).
struct GroupLayout {
  long n_examples = 0;     // examples in the group
  long n_group_heads = 0;  // consecutive heads of each example in the group
  long example_lo = 0;
  long head_lo = 0;
  bool ok = false;
};

GroupLayout layout_of(long idx_lo, long idx_hi, long n_heads) {
  GroupLayout g;
  const long n = idx_hi - idx_lo;
  if (n <= 0) return g;
  g.example_lo = idx_lo / n_heads;
  g.head_lo = idx_lo % n_heads;
  const long example_hi = (idx_hi - 1) / n_heads;
  g.n_examples = example_hi - g.example_lo + 1;
  if (g.n_examples == 1) {
    g.n_group_heads = n;
    g.ok = true;
  } else if (idx_lo % n_heads == 0 && idx_hi % n_heads == 0) {
    g.n_group_heads = n_heads;
    g.ok = true;
  }
  return g;
}

// The group's examples' inputs: [n_examples, seq_len, d_model].
Var group_examples(const GroupLayout& lay, const std::function<Var(long)>& x_of) {
  VarList parts;
  for (long e = 0; e < lay.n_examples; ++e) {
    const Var xe = x_of(lay.example_lo + e);
    parts.push_back(fm::reshape(xe, {1, as_long(xe.dim(0)), as_long(xe.dim(1))}));
  }
  return parts.size() == 1 ? parts[0] : fm::concatenate(parts, 0);
}

// Weight leaf i of each of the group's heads (each head once), stacked: [n_group_heads, ...].
std::vector<Var> group_head_weights(const GroupLayout& lay, long n_heads,
                                    const std::function<std::vector<Var>(long)>& weights_of) {
  std::vector<VarList> per_leaf;
  for (long j = 0; j < lay.n_group_heads; ++j) {
    const std::vector<Var> ws = weights_of((lay.head_lo + j) % n_heads);
    if (per_leaf.empty()) per_leaf.resize(ws.size());
    for (std::size_t i = 0; i < ws.size(); ++i) {
      std::vector<long> s{1};
      for (std::size_t a = 0; a < ws[i].ndim(); ++a) s.push_back(as_long(ws[i].dim(a)));
      per_leaf[i].push_back(fm::reshape(ws[i], s));
    }
  }
  std::vector<Var> out;
  for (const VarList& parts : per_leaf) {
    out.push_back(parts.size() == 1 ? parts[0] : fm::concatenate(parts, 0));
  }
  return out;
}

// X [n_examples, seq_len, d_model] projected by every head's w [n_group_heads, d_model, d] (+ b
// [n_group_heads, d]) in ONE gemm against the heads' matrices side by side ([d_model, n_group_heads
// * d]): [n_examples, seq_len, n_group_heads * d].
Var project_side_by_side(const Var& X, const Var& w, const Var& b) {
  const long d_model = as_long(X.dim(2));
  const long n_group_heads = as_long(w.dim(0)), d = as_long(w.dim(2));
  const Var wc = n_group_heads == 1
                     ? fm::reshape(w, {d_model, d})
                     : fm::reshape(fm::transpose(w, {1, 0, 2}), {d_model, n_group_heads * d});
  Var y = fm::matmul(X, wc);
  if (b.defined()) y = y + fm::reshape(b, {1, 1, n_group_heads * d});
  return y;
}

// The same split into slices: [n_slices = n_examples * n_group_heads, seq_len, d].
Var project_heads(const Var& X, const Var& w, const Var& b) {
  const long n_examples = as_long(X.dim(0)), seq_len = as_long(X.dim(1));
  const long n_group_heads = as_long(w.dim(0)), d = as_long(w.dim(2));
  const Var y = project_side_by_side(X, w, b);
  if (n_group_heads == 1) return y;
  return fm::reshape(
      fm::transpose(fm::reshape(y, {n_examples, seq_len, n_group_heads, d}), {0, 2, 1, 3}),
      {n_examples * n_group_heads, seq_len, d});
}

// Attention whose window spans at least this many keys keeps its outputs for the
// recomputation (KeptCores): O(seq_len * d_v) per slice, as much as the queries.
constexpr long kKeepCoresWindow = 1024;

// attend for n_slices slices at once: q [n_slices, len, d_qk], k (undefined: shared with q) and v
// [n_slices, len, d_v]; masks from q_info / kv_info (int32 [R, len], slice s uses row
// s / (n_slices / R); undefined: no mask). Returns out [n_slices, len, d_v] and logsumexp
// [n_slices, len].
struct BatchedAttend {
  Var out, logsumexp;
};

BatchedAttend attend_batched(const Var& q, const Var& k_in, const Var& v, std::optional<long> chunk,
                             long before, long after, const Tensor& q_info, const Tensor& kv_info,
                             bool causal, bool exclude_self, bool masked, double dropout, Key rng,
                             EfficientAttentionBase::KeptCores* kept) {
  const long len = as_long(q.dim(1));
  const long d_qk = as_long(q.dim(2));
  // Keys: RMS-normalised when shared with the queries, then / sqrt(d_qk).
  Var k = k_in.defined() ? k_in : length_normalized(q);
  k = fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(d_qk)), k.dtype()));
  kernels::ChunkedAttentionSpec spec;
  spec.chunk = chunk.value_or(len);
  spec.before = before;
  spec.after = after;
  spec.causal = causal;
  spec.exclude_self = exclude_self;
  spec.masked = masked;
  spec.ordered = true;  // its caller, SelfAttention, passes positions in order
  spec.q_info = q_info;
  spec.kv_info = kv_info;
  if (dropout > 0.0) {
    const long window = (1 + before + after) * spec.chunk;
    spec.multiplier = kernels::dropout_multiplier(
        dropout, rng, Shape{static_cast<std::size_t>(spec.chunk), static_cast<std::size_t>(window)},
        q.dtype());
  }
  // A wide window (unchunked attention: the whole sequence) costs as much to recompute
  // as the forward pass: its outputs are kept (recorded, then replayed), see KeptCores.
  const bool wide = (1 + before + after) * spec.chunk >= kKeepCoresWindow;
  if (wide && kept != nullptr && kept->replay) {
    if (kept->next + 2 > kept->tensors.size()) {
      throw core::ValueError("efficient attention: internal: no kept attention outputs to replay");
    }
    const std::pair<Tensor, Tensor> saved{kept->tensors[kept->next], kept->tensors[kept->next + 1]};
    kept->next += 2;
    const kernels::AttentionOutputs r = kernels::chunked_attention(q, k, v, spec, &saved);
    return {r.out, r.logsumexp};
  }
  const kernels::AttentionOutputs r = kernels::chunked_attention(q, k, v, spec);
  if (wide && kept != nullptr) {
    kept->tensors.push_back(r.out.value());
    kept->tensors.push_back(r.logsumexp.value());
  }
  return {r.out, r.logsumexp};
}

// What a batched group produced (EfficientAttentionBase::GroupResult's fields).
struct GroupOut {
  std::vector<long> examples;
  std::vector<Var> outputs;
  std::vector<std::vector<Tensor>> states;
};

// The group's result from the heads' outputs side by side, o [n_examples, seq_len, n_group_heads *
// d_v]: the output projection summed over each example's heads as ONE gemm against w_o
// [n_group_heads * d_v, d_model], broadcast output dropout.
void finish_side_by_side(const GroupLayout& lay, const Var& o, const Var& w_o, double rate,
                         Key output_rng, GroupOut& g) {
  const long n_examples = lay.n_examples, n_group_heads = lay.n_group_heads;
  const long seq_len = as_long(o.dim(1)), dv = as_long(w_o.dim(1)), d_model = as_long(w_o.dim(2));
  Var out = fm::matmul(
      o, fm::reshape(w_o, {n_group_heads * dv, d_model}));  // [n_examples, seq_len, d_model]
  if (rate > 0.0) {
    out = out * Var(kernels::dropout_multiplier(rate, output_rng, Shape{out.dim(2)}, out.dtype()));
  }
  for (long e = 0; e < n_examples; ++e) {
    g.examples.push_back(lay.example_lo + e);
    g.outputs.push_back(n_examples == 1
                            ? fm::reshape(out, {seq_len, d_model})
                            : fm::reshape(fm::slice(out, 0, e, e + 1), {seq_len, d_model}));
  }
}

// The same from out [n_slices, seq_len, d_v] (slices first): the heads put side by side first.
void finish_group(const GroupLayout& lay, const Var& attended, const Var& w_o, double rate,
                  Key output_rng, GroupOut& g) {
  const long n_examples = lay.n_examples, n_group_heads = lay.n_group_heads;
  const long seq_len = as_long(attended.dim(1)), dv = as_long(attended.dim(2));
  const Var o =
      n_group_heads == 1
          ? attended
          : fm::reshape(
                fm::transpose(fm::reshape(attended, {n_examples, n_group_heads, seq_len, dv}),
                              {0, 2, 1, 3}),
                {n_examples, seq_len, n_group_heads * dv});
  finish_side_by_side(lay, o, w_o, rate, output_rng, g);
}

// SelfAttentionLayer::forward_unbatched for the n_slices slices of a group at once.
GroupOut self_attention_group(const SelfAttentionOptions& opt, const GroupLayout& lay, long n_heads,
                              const std::function<Var(long)>& x_of,
                              const std::function<std::vector<Var>(long)>& weights_of,
                              const Tensor& mask, Key rng, double attention_rate,
                              double output_rate, EfficientAttentionBase::KeptCores* kept) {
  GroupOut g;
  // 1. Two keys (the same for every slice): attention dropout, output dropout.
  const std::vector<Key> rngs = core::split(rng, 2);
  // 2. Inputs [n_examples, seq_len, d_model] and the heads' weights stacked [n_group_heads, ...].
  const Var X = group_examples(lay, x_of);
  const AttentionWeights W = AttentionWeights::unpack(group_head_weights(lay, n_heads, weights_of),
                                                      opt.share_qk, opt.bias);
  const long seq_len = as_long(X.dim(1));
  // 3. Projections, one gemm each for all the group's heads: [n_slices, seq_len, d].
  const Var q = project_heads(X, W.w_q, W.b_q);
  const Var k = opt.share_qk ? Var() : project_heads(X, W.w_k, W.b_k);
  const Var v = project_heads(X, W.w_v, W.b_v);
  const long n_slices = as_long(q.dim(0));
  // 4. Masks: positions, padded keys negative (one row per example when masked).
  Tensor q_info, kv_info;
  if (opt.causal || opt.share_qk || opt.masked) {
    const long rows = opt.masked ? lay.n_examples : 1;
    q_info = Tensor::empty({static_cast<std::size_t>(rows), static_cast<std::size_t>(seq_len)},
                           DType::i32);
    kv_info = Tensor::empty(q_info.shape(), DType::i32);
    std::int32_t* qi = q_info.data<std::int32_t>();
    std::int32_t* ki = kv_info.data<std::int32_t>();
    for (long r = 0; r < rows; ++r) {
      const std::int32_t* m =
          opt.masked ? mask.data<std::int32_t>() + (lay.example_lo + r) * seq_len : nullptr;
      for (long t = 0; t < seq_len; ++t) {
        qi[r * seq_len + t] = static_cast<std::int32_t>(t);
        ki[r * seq_len + t] = static_cast<std::int32_t>(m == nullptr || m[t] != 0 ? t : -t);
      }
    }
  }
  // 5. Attention over [n_slices * n_chunks, chunk, window] blocks.
  const BatchedAttend att =
      attend_batched(q, k, v, opt.chunk_len, opt.n_chunks_before, opt.n_chunks_after, q_info,
                     kv_info, opt.causal, opt.share_qk, opt.masked, attention_rate, rngs[0], kept);
  // 6. Output projection, output dropout, sum over heads.
  finish_group(lay, att.out, W.w_o, output_rate, rngs[1], g);
  g.states.resize(static_cast<std::size_t>(n_slices));
  return g;
}

// LSHSelfAttentionLayer::forward_unbatched for the n_slices slices of a group at once.
GroupOut lsh_group(const LSHSelfAttentionLayer& layer, const GroupLayout& lay, long n_heads,
                   const std::function<Var(long)>& x_of,
                   const std::function<std::vector<Var>(long)>& weights_of, const Tensor& mask,
                   const std::vector<Tensor>& state, Key rng, bool update_state,
                   double attention_rate, double output_rate) {
  const LSHSelfAttentionOptions& o = layer.lsh_options();
  if (state.size() != 2) {
    throw ValueError("LSHSelfAttention: expected a state of (buckets, hash key), got " +
                     std::to_string(state.size()) + " tensors");
  }
  GroupOut g;
  const std::vector<Key> rngs = core::split(rng, 2);
  // 1. q and v of every slice, one gemm each for all the group's heads: [n_slices, seq_len, d].
  const Var X = group_examples(lay, x_of);
  const std::vector<Var> W = group_head_weights(lay, n_heads, weights_of);
  //    Kept side by side, [n_examples, seq_len, n_group_heads * d]: the attention node reads that
  //    layout.
  const Var q = project_side_by_side(X, W.at(0), Var());
  const Var v = project_side_by_side(X, W.at(1), Var());
  const long n_group_heads = lay.n_group_heads, n_slices = lay.n_examples * n_group_heads,
             seq_len = as_long(q.dim(1));
  const long n_hashes = o.n_hashes;
  const long n_slots = n_hashes * seq_len;
  const long d_qk = as_long(q.dim(2)) / n_group_heads;
  const Tensor qv = q.value();

  // 2. Hash and sort each slice (integer work, no gradient), straight into the index
  //    tables of the attention node: positions, key infos and unsorted rows per sorted slot.
  const Shape gn{static_cast<std::size_t>(n_slices), static_cast<std::size_t>(n_slots)};
  Tensor pos_all = Tensor::empty(gn, DType::i32);
  Tensor kv_all = o.masked ? Tensor::empty(gn, DType::i32) : pos_all;
  Tensor row_all = Tensor::empty(gn, DType::i32);
  std::int32_t* ppos = pos_all.data<std::int32_t>();
  std::int32_t* pkv = kv_all.data<std::int32_t>();
  std::int32_t* prow = row_all.data<std::int32_t>();
  long per_round = 1;
  for (long f : o.n_buckets) per_round *= f;
  if (o.masked) per_round += 1;
  //    One slice per item (core::parallel_for); the states are collected in slice order.
  g.states.resize(static_cast<std::size_t>(n_slices));
  //    Work per slice: the rotations (when hashing) and the counting sort.
  long rot_size = 0;
  for (long f : o.n_buckets) rot_size += f;
  const double hash_flops =
      static_cast<double>(n_slots) * (update_state ? static_cast<double>(d_qk * rot_size) : 0.0) +
      10.0 * static_cast<double>(n_slots);
  core::parallel_for(n_slices, hash_flops, [&](long s, int) {
    std::vector<std::int32_t> undo(static_cast<std::size_t>(n_slots));
    std::vector<long> count;
    const long example = lay.example_lo + s / lay.n_group_heads;
    const long head = lay.head_lo + s % lay.n_group_heads;
    const long idx = example * n_heads + head;
    const std::int32_t* m =
        mask.defined() ? mask.data<std::int32_t>() + example * seq_len : nullptr;
    const LSHSelfAttentionLayer::CallBuckets call = layer.buckets_of_call(
        {row_of(state[0], idx), row_of(state[1], idx)}, update_state, seq_len, head, qv.dtype(),
        [&](const Tensor& rotations) {
          Tensor buckets = Tensor::empty({static_cast<std::size_t>(n_slots)}, DType::i32);
          hash_rows(qv,
                    static_cast<std::size_t>(
                        ((s / n_group_heads) * seq_len * n_group_heads + s % n_group_heads) * d_qk),
                    n_group_heads * d_qk, seq_len, d_qk, rotations, o.n_buckets, n_hashes, m,
                    buckets.data<std::int32_t>());
          return buckets;
        });
    const Tensor& buckets = call.buckets;
    g.states[static_cast<std::size_t>(s)] = call.state;
    std::int32_t* sk = prow + s * n_slots;  // the sticker, written in place
    const Tensor b32 = buckets.astype(DType::i32);
    if (!counting_sort_buckets(b32.data<std::int32_t>(), seq_len, n_hashes, per_round, sk,
                               undo.data(), count)) {
      const SortedBuckets sorted = sort_buckets(buckets, seq_len, n_hashes);
      std::copy_n(sorted.sticker.data<std::int32_t>(), n_slots, sk);
    }
    for (long t = 0; t < n_slots; ++t) {
      const std::int32_t p = static_cast<std::int32_t>(sk[t] % seq_len);
      ppos[s * n_slots + t] = p;
      if (o.masked) pkv[s * n_slots + t] = m[p] != 0 ? p : -p;
    }
  });

  // 3. Shared-QK chunked attention over the sorted slots, read through the sort, and the
  //    hash rounds combined (each weighted by its share of the softmax mass): one node,
  //    [n_examples, seq_len, n_group_heads * d_v].
  kernels::LshAttentionSpec spec;
  spec.n_hashes = n_hashes;
  spec.heads = n_group_heads;
  spec.chunk = *o.chunk_len;
  spec.before = o.n_chunks_before;
  spec.after = o.n_chunks_after;
  spec.causal = o.causal;
  spec.masked = o.masked;
  spec.pos = pos_all;
  spec.kv_info = kv_all;
  spec.row = row_all;
  if (attention_rate > 0.0) {
    const long window = (1 + spec.before + spec.after) * spec.chunk;
    spec.multiplier = kernels::dropout_multiplier(
        attention_rate, rngs[0],
        Shape{static_cast<std::size_t>(spec.chunk), static_cast<std::size_t>(window)}, q.dtype());
  }
  const Var combined = kernels::lsh_chunked_attention(q, v, spec);
  // 4. Output projection summed over heads, output dropout.
  finish_side_by_side(lay, combined, W.at(2), output_rate, rngs[1], g);
  return g;
}

}  // namespace

// ---- the batched groups of the two classes ------------------------------------------------

EfficientAttentionBase::GroupResult SelfAttentionLayer::forward_group(const GroupCall& call) {
  const GroupLayout lay = layout_of(call.idx_lo, call.idx_hi, n_heads());
  if (opt_.per_head_path || !lay.ok) return EfficientAttentionBase::forward_group(call);
  GroupOut o = self_attention_group(opt_, lay, n_heads(), call.x_of, call.weights_of, call.mask,
                                    call.rng, effective_rate(opt_.attention_dropout),
                                    effective_rate(opt_.output_dropout), call.kept_cores);
  return {std::move(o.examples), std::move(o.outputs), std::move(o.states)};
}

EfficientAttentionBase::GroupResult LSHSelfAttentionLayer::forward_group(const GroupCall& call) {
  const GroupLayout lay = layout_of(call.idx_lo, call.idx_hi, n_heads());
  if (lsh_.per_head_path || !lay.ok) return EfficientAttentionBase::forward_group(call);
  GroupOut o = lsh_group(*this, lay, n_heads(), call.x_of, call.weights_of, call.mask, call.state,
                         call.rng, call.update_state, effective_rate(lsh_.attention_dropout),
                         effective_rate(lsh_.output_dropout));
  return {std::move(o.examples), std::move(o.outputs), std::move(o.states)};
}

// ---- the memory-lean implementation --------------------------------------------------------

Var EfficientAttentionBase::forward_memory_lean(const Var& x, const Tensor& mask) {
  const long batch = as_long(x.dim(0));
  const long n_slices = batch * n_heads_;
  const long group = group_size(batch);
  const std::size_t n_weights = own_weights().size();
  const bool has_mask = mask.defined();
  const bool update = update_state_;
  const Key rng = rng_;
  const std::vector<Tensor> old_state = state_.flatten();
  // The backward pass may run after this call returns: keep the layer alive (when it is
  // owned by a shared_ptr, as factories make it). It reads only the layer's options.
  std::shared_ptr<EfficientAttentionBase> keep =
      std::static_pointer_cast<EfficientAttentionBase>(weak_from_this().lock());
  EfficientAttentionBase* self = this;

  autodiff::VarList inputs{x};
  for (std::size_t i = 0; i < n_weights; ++i) inputs.push_back(weight(i));

  // Wide attention cores keep their outputs for the backward pass's recomputation (see
  // KeptCores), only when a tape records (a backward pass may follow). They travel as
  // the node's last residuals.
  const bool keep_cores = autodiff::recording_tape() != nullptr;
  const std::size_t n_state = old_state.size();

  std::vector<Tensor> new_state = old_state;
  auto forward_fn = [&](const std::vector<Tensor>& in, std::vector<Tensor>& residuals) {
    KeptCores kept;
    const Tensor& xv = in[0];
    const std::vector<Tensor> wv(in.begin() + 1, in.end());
    Tensor out = Tensor::zeros(xv.shape(), xv.dtype());
    auto x_of = [&](long example) { return Var(row_of(xv, example)); };
    auto weights_of = [&](long head) {
      std::vector<Var> ws;
      for (const Tensor& w : wv) ws.emplace_back(row_of(w, head));
      return ws;
    };
    std::vector<std::vector<Tensor>> rows;
    for (long lo = 0; lo < n_slices; lo += group) {
      const long hi = std::min(lo + group, n_slices);
      GroupCall call{
          lo, hi, x_of, weights_of, mask, old_state, rng, update, keep_cores ? &kept : nullptr};
      GroupResult g = forward_group(call);
      for (std::size_t k = 0; k < g.examples.size(); ++k) {
        add_block(out, g.examples[k], g.outputs[k].value());
      }
      for (auto& s : g.states) rows.push_back(std::move(s));
    }
    if (update && !rows.empty() && !rows[0].empty()) new_state = stack_rows(rows);
    // Residuals: inputs, weights, mask, the NEW state (what the recomputation reuses),
    // then the kept outputs of wide attention cores.
    residuals = in;
    if (has_mask) residuals.push_back(mask);
    residuals.insert(residuals.end(), new_state.begin(), new_state.end());
    residuals.insert(residuals.end(), kept.tensors.begin(), kept.tensors.end());
    return std::vector<Tensor>{out};
  };

  auto backward_fn = [keep, self, n_weights, has_mask, n_state, n_slices, group, rng](
                         const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    (void)keep;  // held only to keep the layer alive until the backward pass
    const Tensor& xv = res[0];
    const std::vector<Tensor> wv(res.begin() + 1, res.begin() + 1 + static_cast<long>(n_weights));
    std::size_t pos = 1 + n_weights;
    const Tensor mask_v = has_mask ? res[pos++] : Tensor();
    const std::vector<Tensor> state_v(res.begin() + static_cast<long>(pos),
                                      res.begin() + static_cast<long>(pos + n_state));
    KeptCores kept;
    kept.tensors.assign(res.begin() + static_cast<long>(pos + n_state), res.end());
    kept.replay = true;
    const Tensor& ct = cts.at(0);

    Tensor gx = Tensor::zeros(xv.shape(), xv.dtype());
    std::vector<Tensor> gw;
    for (const Tensor& w : wv) gw.push_back(Tensor::zeros(w.shape(), w.dtype()));

    for (long lo = 0; lo < n_slices; lo += group) {
      const long hi = std::min(lo + group, n_slices);
      // Recompute this group on a private tape (reusing the stored state), then
      // differentiate it at once: only one group's intermediates are alive at a time.
      Tape tape;
      std::map<long, Var> xs;
      std::map<long, std::vector<Var>> ws;
      auto x_of = [&](long example) {
        auto it = xs.find(example);
        if (it == xs.end()) it = xs.emplace(example, tape.watch(row_of(xv, example))).first;
        return it->second;
      };
      auto weights_of = [&](long head) {
        auto it = ws.find(head);
        if (it == ws.end()) {
          std::vector<Var> w;
          for (const Tensor& t : wv) w.push_back(tape.watch(row_of(t, head)));
          it = ws.emplace(head, std::move(w)).first;
        }
        return it->second;
      };
      GroupResult g =
          self->forward_group({lo, hi, x_of, weights_of, mask_v, state_v, rng, false, &kept});
      std::vector<Tensor> seeds;
      for (long e : g.examples) seeds.push_back(row_of(ct, e));
      autodiff::VarList wrt;
      for (const auto& [e, v] : xs) wrt.push_back(v);
      for (const auto& [h, w] : ws) wrt.insert(wrt.end(), w.begin(), w.end());
      const std::vector<Tensor> grads = tape.core()->backward(g.outputs, seeds, wrt);
      std::size_t k = 0;
      for (const auto& [e, v] : xs) add_block(gx, e, grads[k++]);
      for (const auto& [h, w] : ws) {
        for (std::size_t i = 0; i < w.size(); ++i) add_block(gw[i], h, grads[k++]);
      }
    }
    std::vector<Tensor> out{gx};
    out.insert(out.end(), gw.begin(), gw.end());
    return out;
  };

  autodiff::VarList y =
      autodiff::custom_vjp(name() + "_attention", inputs, forward_fn, backward_fn);
  if (update) state_ = state_of(new_state);
  return y.at(0);
}

}  // namespace minitrax::layers::research
