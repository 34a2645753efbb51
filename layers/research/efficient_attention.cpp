// minitrax/layers/research/efficient_attention.cpp: EfficientAttentionBase,
// SelfAttention and LSHSelfAttention (Trax 1.3.4's efficient_attention.py classes).
#include "layers/research/efficient_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <typeinfo>
#include <utility>

// GCC 12 reports a false "may be used uninitialized" inside the AVX-512 intrinsics that
// xsimd's max/min inline (as core/vmath.cpp notes); silenced for the header's lines only.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/parallel.hpp"
#include "core/vmath.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using base::ShapeDtype;
using core::DTypeError;
using core::ShapeError;
using core::ValueError;

namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string str(long v) {
  return std::to_string(v);
}

long as_long(std::size_t v) {
  return static_cast<long>(v);
}

void require_positive(const std::string& who, const char* what, long v) {
  if (v <= 0) throw ValueError(who + ": " + what + " must be positive, got " + str(v));
}

void require_rate(const std::string& who, const char* what, double rate) {
  if (!(rate >= 0.0 && rate < 1.0)) {
    throw ValueError(who + ": " + what + " must be in [0, 1), got " + num(rate));
  }
}

// Row i of a tensor stacked on axis 0, with that axis dropped (a copy).
Tensor row_of(const Tensor& stacked, long i) {
  Shape rest(stacked.shape().begin() + 1, stacked.shape().end());
  return core::slice(stacked, 0, i, i + 1).reshape(rest);
}

// Tensors of one shape and dtype stacked on a new leading axis.
Tensor stack0(const std::vector<Tensor>& rows) {
  std::vector<Tensor> parts;
  parts.reserve(rows.size());
  for (const Tensor& r : rows) {
    Shape s = r.shape();
    s.insert(s.begin(), 1);
    parts.push_back(r.reshape(s));
  }
  return core::concatenate(parts, 0);
}

// rows[slice][leaf] -> one stacked tensor per leaf.
std::vector<Tensor> stack_rows(const std::vector<std::vector<Tensor>>& rows) {
  std::vector<Tensor> leaves;
  if (rows.empty()) return leaves;
  for (std::size_t j = 0; j < rows[0].size(); ++j) {
    std::vector<Tensor> column;
    column.reserve(rows.size());
    for (const auto& r : rows) column.push_back(r.at(j));
    leaves.push_back(stack0(column));
  }
  return leaves;
}

// A state tree (a flat list) from its leaves.
State state_of(const std::vector<Tensor>& leaves) {
  State s;
  for (const Tensor& t : leaves) s.push_back(State(t));
  return s;
}

// full[i, ...] += part, for full [N, ...] (contiguous, freshly allocated).
void add_block(Tensor& full, long i, const Tensor& part) {
  const std::size_t inner = full.size() / full.dim(0);
  if (part.size() != inner || part.dtype() != full.dtype()) {
    throw ShapeError("efficient attention: internal: block of " + core::shape_str(part.shape()) +
                     " does not fit a row of " + core::shape_str(full.shape()));
  }
  core::dispatch_floating(full.dtype(), "add_block", [&](auto tag) {
    using T = decltype(tag);
    T* dst = full.data<T>() + static_cast<std::size_t>(i) * inner;
    const T* src = part.data<T>();
    for (std::size_t k = 0; k < inner; ++k) dst[k] += src[k];
  });
}

// The smallest length >= seqlen with n_hashes * length a multiple of chunk_len.
long padded_length(long seqlen, long n_hashes, long chunk_len) {
  const long step = chunk_len / std::gcd(chunk_len, n_hashes);
  return (seqlen + step - 1) / step * step;
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

// ---- the batched group path ---------------------------------------------------------------
//
// forward_group for SelfAttention and LSHSelfAttention, batched over the slices of a group:
// the same function as forward_unbatched per (example, head), written with a leading slice
// axis G so that every step is ONE op over all the group's heads (one batched gemm for the
// projections, one for q k^T over [G * n_chunks, chunk, window] blocks, one for the
// probabilities times v, one for the output projection) instead of G times many small ops.
// Memory per head stays O(L * window) when chunked. Each step matches attend's and
// forward_unbatched's arithmetic, so the results equal the reference path's within
// rounding (the test file pins them together).

namespace {

using autodiff::VarList;

// MINITRAX_EFFICIENT_ATTENTION_PER_HEAD=1 switches the batched group path off (the
// memory-lean path then calls forward_unbatched head by head, as before): for comparisons.
bool batched_groups_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MINITRAX_EFFICIENT_ATTENTION_PER_HEAD");
    return v == nullptr || std::string(v).empty() || std::string(v) == "0";
  }();
  return enabled;
}

// The slices [idx_lo, idx_hi) as E examples of Hg consecutive heads each (a group is part
// of one example's heads, or whole examples: group_size's rule guarantees it).
struct GroupLayout {
  long n_examples = 0;  // E
  long heads_per = 0;   // Hg
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
    g.heads_per = n;
    g.ok = true;
  } else if (idx_lo % n_heads == 0 && idx_hi % n_heads == 0) {
    g.heads_per = n_heads;
    g.ok = true;
  }
  return g;
}

// The group's examples' inputs: [E, L, d_model].
Var group_examples(const GroupLayout& lay, const std::function<Var(long)>& x_of) {
  VarList parts;
  for (long e = 0; e < lay.n_examples; ++e) {
    const Var xe = x_of(lay.example_lo + e);
    parts.push_back(fm::reshape(xe, {1, as_long(xe.dim(0)), as_long(xe.dim(1))}));
  }
  return parts.size() == 1 ? parts[0] : fm::concatenate(parts, 0);
}

// Weight leaf i of each of the group's heads (each head once), stacked: [Hg, ...].
std::vector<Var> group_head_weights(const GroupLayout& lay, long n_heads,
                                    const std::function<std::vector<Var>(long)>& weights_of) {
  std::vector<VarList> per_leaf;
  for (long j = 0; j < lay.heads_per; ++j) {
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

// X [E, L, D] projected by every head's w [Hg, D, d] (+ b [Hg, d]) in ONE gemm against the
// heads' matrices side by side ([D, Hg * d]): [E, L, Hg * d].
Var project_side_by_side(const Var& X, const Var& w, const Var& b) {
  const long D = as_long(X.dim(2));
  const long Hg = as_long(w.dim(0)), d = as_long(w.dim(2));
  const Var wc =
      Hg == 1 ? fm::reshape(w, {D, d}) : fm::reshape(fm::transpose(w, {1, 0, 2}), {D, Hg * d});
  Var y = fm::matmul(X, wc);
  if (b.defined()) y = y + fm::reshape(b, {1, 1, Hg * d});
  return y;
}

// The same split into slices: [G = E * Hg, L, d].
Var project_heads(const Var& X, const Var& w, const Var& b) {
  const long E = as_long(X.dim(0)), L = as_long(X.dim(1));
  const long Hg = as_long(w.dim(0)), d = as_long(w.dim(2));
  const Var y = project_side_by_side(X, w, b);
  if (Hg == 1) return y;
  return fm::reshape(fm::transpose(fm::reshape(y, {E, L, Hg, d}), {0, 2, 1, 3}), {E * Hg, L, d});
}

// The keep multiplier of attend's and apply_broadcasted_dropout's dropout: keep / keep_prob
// for a bernoulli keep mask of `shape` (the same draws and arithmetic as the reference).
Tensor dropout_multiplier(double rate, Key rng, const Shape& shape, DType dtype) {
  const Tensor keep = core::bernoulli(rng, 1.0 - rate, shape);
  return core::div(keep.astype(dtype), Tensor::scalar(1.0 - rate, dtype));
}

// The attention core as ONE custom-VJP node, processed block by block: for each slice s,
// chunk ci and tile of query rows, the scores against the window's chunks (one gemm per
// window chunk, read in place: no look_adjacent copies), the masks computed on the fly,
// the softmax with its logsumexp, the shared dropout multiplier, and the product with the
// values. Only a [rows, window] scratch is alive at a time (O(L * window) per head in
// total, no [L, L] for unchunked attention either). The backward pass recomputes each
// block's probabilities from the saved logsumexp. Same arithmetic as attend's steps
// (dots - constant, logsumexp, exp(dots - lse), * keep / keep_prob, @ v) up to rounding.
struct CoreSpec {
  long chunk = 0, before = 0, after = 0;
  bool causal = false, exclude_self = false, masked = false;
  bool ordered = false;    // q_info = arange, |kv_info| = arange (SelfAttention): see width()
  Tensor q_info, kv_info;  // int32 [R, L]; slice s uses row s / (G / R); undefined: no mask
  Tensor multiplier;       // [chunk, window] or undefined
};

template <class T>
struct CoreKernel {
  const CoreSpec& sp;
  long G, L, dqk, dv, nc, nw, W, R, rb;
  CoreKernel(const CoreSpec& spec, long g, long l, long dq, long dvv)
      : sp(spec), G(g), L(l), dqk(dq), dv(dvv) {
    nc = L / sp.chunk;
    nw = 1 + sp.before + sp.after;
    W = nw * sp.chunk;
    R = sp.q_info.defined() ? as_long(sp.q_info.dim(0)) : 1;
    rb = sp.chunk <= 512 ? sp.chunk : 256;  // attend's chunk as one tile when small
    // Causal in position order up to 1024 rows: tiles of 128 rows, so that width()
    // skips the future from L = 256 on (measured: 512 rows 18% faster fwd+bwd, 1024 the
    // same, 4096 7% slower than with 256-row tiles, which then stay).
    if (sp.causal && sp.ordered && nw == 1 && sp.chunk <= 1024) rb = std::min(sp.chunk, 128L);
  }
  long window_chunk(long ci, long j) const {
    const long a = j - sp.before;
    return (a == 0 || a >= nc || -a >= nc) ? ci : ((ci + a) % nc + nc) % nc;
  }
  // How many leading columns of the [n, W] block of rows [r0, r0 + n) of chunk ci can be
  // nonzero. Causal attention in position order with a window of the chunk alone (dense
  // attention, or chunks without neighbours): the keys at offsets >= r0 + n are in the
  // future of every row of the tile, masked by -1e9, so their probabilities are exactly
  // 0 (exp underflows) and they add exactly nothing to the max, the logsumexp, the
  // output or any gradient: they are skipped, about half of the work.
  long width(long r0, long n) const {
    return sp.causal && sp.ordered && nw == 1 ? std::min(W, r0 + n) : W;
  }
  // Scores of rows [r0, r0 + n) of chunk ci of slice s, masked: S [n, We] (row stride W).
  // The window's keys are gathered into one [W, d_qk] block first, so that the scores
  // come from one gemm of attend's shape (the same rounding: LSH's round weights depend
  // on logsumexps near -1e5, where float32 steps are 0.008).
  void scores(const T* q, const T* k, long s, long ci, long r0, long n, long We, T* S,
              std::vector<T>& kbuf) const {
    const T* qt = q + (s * L + ci * sp.chunk + r0) * dqk;
    const T* kw = k + (s * L + window_chunk(ci, 0) * sp.chunk) * dqk;
    if (nw > 1) {
      kbuf.resize(static_cast<std::size_t>(W * dqk));
      for (long j = 0; j < nw; ++j) {
        const T* kj = k + (s * L + window_chunk(ci, j) * sp.chunk) * dqk;
        std::copy(kj, kj + sp.chunk * dqk, kbuf.data() + j * sp.chunk * dqk);
      }
      kw = kbuf.data();
    }
    core::gemm(core::Trans::N, core::Trans::T, n, We, dqk, T(1), qt, dqk, kw, dqk, T(0), S, W);
    if (!sp.q_info.defined()) return;
    const long row = s / (G / R);
    const std::int32_t* qi = sp.q_info.data<std::int32_t>() + row * L;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + row * L;
    for (long i = 0; i < n; ++i) {
      const std::int32_t qp = qi[ci * sp.chunk + r0 + i];
      T* srow = S + i * W;
      for (long j = 0; j < nw; ++j) {
        const std::int32_t* kc = ki + window_chunk(ci, j) * sp.chunk;
        T* sj = srow + j * sp.chunk;
        const long cols = std::min(sp.chunk, We - j * sp.chunk);
        // Branch-free (vectorisable); s - 0 is exact, so unmasked scores are unchanged.
        const bool causal = sp.causal, self = sp.exclude_self, masked = sp.masked;
        for (long w = 0; w < cols; ++w) {
          const std::int32_t kp = kc[w];
          T sub = T(0);
          sub = causal && qp < kp ? T(1e9) : sub;
          sub = self && qp == kp ? T(1e5) : sub;
          sub = masked && kp < 0 ? T(1e9) : sub;
          sj[w] -= sub;
        }
      }
    }
  }
  // P = exp(S - lse) per row over We columns (lse computed when `compute_lse`).
  void softmax_rows(T* S, long n, long We, T* lse, bool compute_lse) const {
    std::vector<T> scratch(compute_lse ? static_cast<std::size_t>(We) : 0);
    const std::size_t w_ = static_cast<std::size_t>(We);
    for (long i = 0; i < n; ++i) {
      T* srow = S + i * W;
      if (compute_lse) {
        // lse = max + log(sum(exp(s - max))), as logsumexp computes it
        const T m = core::vmax(srow, w_);
        lse[i] =
            std::isfinite(m) ? m + std::log(core::vexp_shift_sum(srow, scratch.data(), w_, m)) : m;
      }
      // p = exp(s - lse), not exp(s - max) / sum: near the -1e5 self mask lse is rounded
      // to float32's 0.008 steps and the reference's probabilities carry that rounding.
      for (long w = 0; w < We; ++w) srow[w] -= lse[i];
      core::vexp(srow, srow, w_);
    }
  }
  void apply_multiplier(T* P, long r0, long n, long We) const {
    if (!sp.multiplier.defined()) return;
    const T* mu = sp.multiplier.data<T>();
    for (long i = 0; i < n; ++i) {
      T* prow = P + i * W;
      const T* mrow = mu + (r0 + i) * W;
      for (long w = 0; w < We; ++w) prow[w] *= mrow[w];
    }
  }
  // Every tile of rows writes its own rows of out and lse: the tiles of all slices are
  // dealt to the threads (core::parallel_for), each with its own scratch.
  void forward(const T* q, const T* k, const T* v, T* out, T* lse_out) const {
    const long tiles = (sp.chunk + rb - 1) / rb;
    const long items = G * nc * tiles;
    // work per tile: the scores and the product with the values, [rows, window] each
    const double flops = 2.0 * static_cast<double>(rb * W * (dqk + dv));
    const auto workers = static_cast<std::size_t>(core::parallel_workers(items, flops));
    std::vector<std::vector<T>> S(workers), kbuf(workers);
    core::parallel_for(items, flops, [&](long item, int worker) {
      const long s = item / (nc * tiles), ci = item / tiles % nc, r0 = item % tiles * rb;
      std::vector<T>& Sw = S[static_cast<std::size_t>(worker)];
      Sw.resize(static_cast<std::size_t>(rb * W));
      const long n = std::min(rb, sp.chunk - r0);
      const long We = width(r0, n);
      scores(q, k, s, ci, r0, n, We, Sw.data(), kbuf[static_cast<std::size_t>(worker)]);
      T* lse = lse_out + s * L + ci * sp.chunk + r0;
      softmax_rows(Sw.data(), n, We, lse, true);
      apply_multiplier(Sw.data(), r0, n, We);
      T* ot = out + (s * L + ci * sp.chunk + r0) * dv;
      for (long j = 0; j * sp.chunk < We; ++j) {
        const T* vj = v + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
        const long cols = std::min(sp.chunk, We - j * sp.chunk);
        core::gemm(core::Trans::N, core::Trans::N, n, dv, cols, T(1), Sw.data() + j * sp.chunk, W,
                   vj, dv, j == 0 ? T(0) : T(1), ot, dv);
      }
    });
  }
  void backward(const T* q, const T* k, const T* v, const T* lse_all, const T* dout,
                const T* dlse_all, T* dq, T* dk, T* dv_out) const {
    // A slice's tiles all add into its dk and dv: the slices (not the tiles) are dealt to
    // the threads, each with its own scratch.
    const T* mu = sp.multiplier.defined() ? sp.multiplier.data<T>() : nullptr;
    // work per slice: five [rows, window] x d products per tile
    const double flops = 5.0 * static_cast<double>(L * W * std::max(dqk, dv));
    core::parallel_for(G, flops, [&](long s, int) {
      std::vector<T> P(static_cast<std::size_t>(rb * W)), D(static_cast<std::size_t>(rb * W)), Pd;
      std::vector<T> lse(static_cast<std::size_t>(rb)), kbuf;
      for (long ci = 0; ci < nc; ++ci) {
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long We = width(r0, n);
          const long base = s * L + ci * sp.chunk + r0;
          scores(q, k, s, ci, r0, n, We, P.data(), kbuf);
          std::copy(lse_all + base, lse_all + base + n, lse.begin());
          softmax_rows(P.data(), n, We, lse.data(), false);  // P: probabilities before dropout
          const T* dot = dout + base * dv;
          // D = dO @ V_window^T (the gradient of the dropped-out probabilities)
          for (long j = 0; j * sp.chunk < We; ++j) {
            const T* vj = v + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::T, n, cols, dv, T(1), dot, dv, vj, dv, T(0),
                       D.data() + j * sp.chunk, W);
          }
          // dV_window += (P * mult)^T @ dO, then D *= mult; P stays pre-dropout
          const T* pv = P.data();
          if (mu != nullptr) {
            Pd.assign(P.begin(), P.begin() + n * W);
            apply_multiplier(Pd.data(), r0, n, We);
            pv = Pd.data();
          }
          for (long j = 0; j * sp.chunk < We; ++j) {
            T* dvj = dv_out + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::T, core::Trans::N, cols, dv, n, T(1), pv + j * sp.chunk, W, dot,
                       dv, T(1), dvj, dv);
          }
          if (mu != nullptr) apply_multiplier(D.data(), r0, n, We);
          // dS = P * (D - sum(D * P) + dlse), into D
          for (long i = 0; i < n; ++i) {
            T* drow = D.data() + i * W;
            const T* prow = P.data() + i * W;
            T dotp = 0;
            for (long w = 0; w < We; ++w) dotp += drow[w] * prow[w];
            const T dl = dlse_all != nullptr ? dlse_all[base + i] : T(0);
            for (long w = 0; w < We; ++w) drow[w] = prow[w] * (drow[w] - dotp + dl);
          }
          // dQ += dS @ K_window; dK_window += dS^T @ Q
          const T* qt = q + base * dqk;
          T* dqt = dq + base * dqk;
          for (long j = 0; j * sp.chunk < We; ++j) {
            const long off = (s * L + window_chunk(ci, j) * sp.chunk) * dqk;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::N, n, dqk, cols, T(1), D.data() + j * sp.chunk,
                       W, k + off, dqk, T(1), dqt, dqk);
            core::gemm(core::Trans::T, core::Trans::N, cols, dqk, n, T(1), D.data() + j * sp.chunk,
                       W, qt, dqk, T(1), dk + off, dqk);
          }
        }
      }
    });
  }
};

// out [G, L, d_v], logsumexp [G, L] from q, k (scaled keys) [G, L, d_qk], v [G, L, d_v].
// The attention core's outputs handed from the layer's forward pass to the recomputation
// in its backward pass (forward_memory_lean), for cores whose window is wide (unchunked
// attention: the window is the whole sequence, and recomputing the core costs as much as
// the forward pass itself). Kept: out and logsumexp, O(L * d_v) per slice, as much as the
// queries. The forward pass appends them group by group to `record`; the backward pass
// recomputes the groups in the same order and takes them back from `replay` instead of
// running the core again (the same inputs give the same values: the recomputation is
// deterministic). Chunked cores (window < kHandoffWindow) are recomputed as before.
constexpr long kHandoffWindow = 1024;

struct CoreHandoff {
  std::vector<Tensor>* record = nullptr;
  const std::vector<Tensor>* replay = nullptr;
  std::size_t next = 0;
};
thread_local CoreHandoff* t_handoff = nullptr;

// Installs a handoff for the calls made while it lives (restores the previous one after).
class HandoffScope {
 public:
  explicit HandoffScope(CoreHandoff* h) : saved_(t_handoff) { t_handoff = h; }
  ~HandoffScope() { t_handoff = saved_; }
  HandoffScope(const HandoffScope&) = delete;
  HandoffScope& operator=(const HandoffScope&) = delete;

 private:
  CoreHandoff* saved_;
};

VarList attention_core(const Var& q, const Var& k, const Var& v, const CoreSpec& spec) {
  auto fwd = [spec](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &kv = in[1], &vv = in[2];
    const long G = as_long(qv.dim(0)), L = as_long(qv.dim(1));
    const Shape out_shape{qv.dim(0), qv.dim(1), vv.dim(2)}, lse_shape{qv.dim(0), qv.dim(1)};
    CoreHandoff* h =
        (1 + spec.before + spec.after) * spec.chunk >= kHandoffWindow ? t_handoff : nullptr;
    if (h != nullptr && h->replay != nullptr && h->next + 2 <= h->replay->size() &&
        (*h->replay)[h->next].shape() == out_shape && (*h->replay)[h->next].dtype() == qv.dtype()) {
      const Tensor out = (*h->replay)[h->next], lse = (*h->replay)[h->next + 1];
      h->next += 2;
      res = {qv, kv, vv, lse};
      return std::vector<Tensor>{out, lse};
    }
    Tensor out = Tensor::empty(out_shape, qv.dtype());
    Tensor lse = Tensor::empty(lse_shape, qv.dtype());
    core::dispatch_floating(qv.dtype(), "attention_core", [&](auto tag) {
      using T = decltype(tag);
      CoreKernel<T>(spec, G, L, as_long(qv.dim(2)), as_long(vv.dim(2)))
          .forward(qv.data<T>(), kv.data<T>(), vv.data<T>(), out.data<T>(), lse.data<T>());
    });
    if (h != nullptr && h->record != nullptr) {
      h->record->push_back(out);
      h->record->push_back(lse);
    }
    res = {qv, kv, vv, lse};
    return std::vector<Tensor>{out, lse};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &kv = res[1], &vv = res[2], &lse = res[3];
    const long G = as_long(qv.dim(0)), L = as_long(qv.dim(1));
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dk = Tensor::zeros(kv.shape(), kv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    const Tensor dout =
        cts.at(0).defined() ? cts[0] : Tensor::zeros({qv.dim(0), qv.dim(1), vv.dim(2)}, qv.dtype());
    core::dispatch_floating(qv.dtype(), "attention_core", [&](auto tag) {
      using T = decltype(tag);
      CoreKernel<T>(spec, G, L, as_long(qv.dim(2)), as_long(vv.dim(2)))
          .backward(qv.data<T>(), kv.data<T>(), vv.data<T>(), lse.data<T>(), dout.data<T>(),
                    cts.size() > 1 && cts[1].defined() ? cts[1].data<T>() : nullptr, dq.data<T>(),
                    dk.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dk, dvv};
  };
  return autodiff::custom_vjp("attention_core", {q, k, v}, fwd, bwd);
}

// attend for G slices at once: q [G, len, d_qk], k (undefined: shared with q) and v
// [G, len, d_v]; masks from q_info / kv_info (int32 [R, len], slice s uses row
// s / (G / R); undefined: no mask). Returns out [G, len, d_v] and logsumexp [G, len].
struct BatchedAttend {
  Var out, logsumexp;
};

BatchedAttend attend_batched(const Var& q, const Var& k_in, const Var& v, std::optional<long> chunk,
                             long before, long after, const Tensor& q_info, const Tensor& kv_info,
                             bool causal, bool exclude_self, bool masked, double dropout, Key rng) {
  const long len = as_long(q.dim(1));
  const long d_qk = as_long(q.dim(2));
  // Keys: RMS-normalised when shared with the queries, then / sqrt(d_qk).
  Var k = k_in.defined() ? k_in : length_normalized(q);
  k = fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(d_qk)), k.dtype()));
  CoreSpec spec;
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
    spec.multiplier = dropout_multiplier(
        dropout, rng, Shape{static_cast<std::size_t>(spec.chunk), static_cast<std::size_t>(window)},
        q.dtype());
  }
  const VarList r = attention_core(q, k, v, spec);
  return {r[0], r[1]};
}

// ---- LSH: sorted chunked attention and the round combination as ONE node -----------------
//
// LSH attends over the positions sorted by bucket (all hash rounds as one sequence of
// N = n_hashes * L slots). Gathering q, the normalised keys and v into sorted copies
// ([G, N, d] each, all kept on the tape), permuting the outputs back and combining the
// rounds with ordinary ops costs several times the memory of q itself. This node reads
// rows through the sort instead: for sorted chunk ci it gathers the chunk's query rows
// and its window's key and value rows into small buffers, attends (attend's arithmetic:
// one [rows, window] score gemm, the masks, logsumexp, exp(s - lse), the dropout
// multiplier, one gemm with the values) and writes each output row and logsumexp to its
// unsorted place (row sticker[t] = round * L + position). Then it combines the rounds
// position by position: out = sum_r o_r exp(lse_r - logsumexp_r(lse)).
//
// q and v are read, and the combined output written, in the layout the projections
// produce: [E, L, Hg * d] (example, position, then the group's heads side by side), so
// that no transposes are needed around it. Residuals: q, v, the output, the logsumexps
// and (n_hashes > 1) the per-round outputs. The backward pass gathers the same rows again
// and scatter-adds the gradients (a position occurs once per round, so they add up),
// then takes the keys' gradient back through the length normalisation.
struct LshSpec {
  long n_hashes = 1, chunk = 0, before = 0, after = 0, heads = 1;  // heads: Hg
  bool causal = false, masked = false;
  Tensor pos;         // int32 [G, N]: the position of sorted slot t (sticker % L)
  Tensor kv_info;     // int32 [G, N]: pos, or -pos where padded (masked only)
  Tensor row;         // int32 [G, N]: the unsorted row of sorted slot t (sticker)
  Tensor multiplier;  // [chunk, window] dropout multiplier, or undefined
};

// Shared keys as attend makes them, length_normalized(q) / sqrt(d_qk), for one slice:
// its rows copied out of the [E, L, Hg * d_qk] layout into [1, L, d_qk].
template <class T>
Tensor lsh_slice_keys(const T* qs, long L, long stride, long dqk) {
  Tensor q = Tensor::empty({1, static_cast<std::size_t>(L), static_cast<std::size_t>(dqk)},
                           core::dtype_of<T>());
  T* p = q.data<T>();
  for (long t = 0; t < L; ++t) std::copy(qs + t * stride, qs + t * stride + dqk, p + t * dqk);
  autodiff::NoRecord no_record;
  const Var k = length_normalized(Var(q));
  return fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(dqk)), q.dtype())).value();
}

template <class T>
struct LshKernel {
  const LshSpec& sp;
  long G, L, N, dqk, dv, nc, nw, W, Hg, sq, sv;  // sq, sv: row strides of q and v
  LshKernel(const LshSpec& spec, long g, long l, long dq, long dvv)
      : sp(spec), G(g), L(l), dqk(dq), dv(dvv) {
    N = sp.n_hashes * L;
    nc = N / sp.chunk;
    nw = 1 + sp.before + sp.after;
    W = nw * sp.chunk;
    Hg = sp.heads;
    sq = Hg * dqk;
    sv = Hg * dv;
  }
  // Slice s's first row in a [E, L, Hg * d] tensor.
  long offset(long s, long d) const { return ((s / Hg) * L * Hg + s % Hg) * d; }
  long window_chunk(long ci, long j) const {
    const long a = j - sp.before;
    return (a == 0 || a >= nc || -a >= nc) ? ci : ((ci + a) % nc + nc) % nc;
  }
  // dst[i] = src[pos[t0 + i]] for n rows of d values; src rows `stride` apart.
  static void gather_rows(const T* src, long stride, const std::int32_t* pos, long t0, long n,
                          long d, T* dst) {
    for (long i = 0; i < n; ++i) {
      const T* r = src + static_cast<long>(pos[t0 + i]) * stride;
      T* o = dst + i * d;
      for (long c = 0; c < d; ++c) o[c] = r[c];
    }
  }
  static void scatter_add_rows(const T* src, const std::int32_t* pos, long t0, long n, long d,
                               T* dst, long stride) {
    for (long i = 0; i < n; ++i) {
      T* r = dst + static_cast<long>(pos[t0 + i]) * stride;
      const T* a = src + i * d;
      for (long c = 0; c < d; ++c) r[c] += a[c];
    }
  }
  void gather_window(const T* src, long stride, const std::int32_t* pos, long ci, long d,
                     T* dst) const {
    for (long j = 0; j < nw; ++j) {
      gather_rows(src, stride, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                  dst + j * sp.chunk * d);
    }
  }
  void scatter_window(const T* src, const std::int32_t* pos, long ci, long d, T* dst,
                      long stride) const {
    for (long j = 0; j < nw; ++j) {
      scatter_add_rows(src + j * sp.chunk * d, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                       dst, stride);
    }
  }
  // Scores of the rows [r0, r0 + n) of sorted chunk ci: S [n, W] = qbuf kbuf^T, masked
  // with Trax's constants in order (causal -1e9, self -1e5, padding -1e9).
  void scores(const T* qbuf, const T* kbuf, long s, long ci, long r0, long n, T* S) const {
    core::gemm(core::Trans::N, core::Trans::T, n, W, dqk, T(1), qbuf, dqk, kbuf, dqk, T(0), S, W);
    const std::int32_t* qi = sp.pos.data<std::int32_t>() + s * N;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + s * N;
    const bool causal = sp.causal, masked = sp.masked;
    for (long i = 0; i < n; ++i) {
      const std::int32_t qp = qi[ci * sp.chunk + r0 + i];
      T* srow = S + i * W;
      for (long j = 0; j < nw; ++j) {
        const std::int32_t* kc = ki + window_chunk(ci, j) * sp.chunk;
        T* sj = srow + j * sp.chunk;
        for (long w = 0; w < sp.chunk; ++w) {
          const std::int32_t kp = kc[w];
          T sub = T(0);
          sub = causal && qp < kp ? T(1e9) : sub;
          sub = qp == kp ? T(1e5) : sub;
          sub = masked && kp < 0 ? T(1e9) : sub;
          sj[w] -= sub;
        }
      }
    }
  }
  void softmax_rows(T* S, long n, T* lse, bool compute_lse, std::vector<T>& scratch) const {
    scratch.resize(static_cast<std::size_t>(W));
    for (long i = 0; i < n; ++i) {
      T* srow = S + i * W;
      if (compute_lse) {
        const T m = core::vmax(srow, static_cast<std::size_t>(W));
        lse[i] = std::isfinite(m) ? m + std::log(core::vexp_shift_sum(
                                            srow, scratch.data(), static_cast<std::size_t>(W), m))
                                  : m;
      }
      for (long w = 0; w < W; ++w) srow[w] -= lse[i];
      core::vexp(srow, srow, static_cast<std::size_t>(W));
    }
  }
  void apply_multiplier(T* P, long r0, long n) const {
    if (!sp.multiplier.defined()) return;
    const T* mu = sp.multiplier.data<T>();
    for (long i = 0; i < n; ++i) {
      T* prow = P + i * W;
      const T* mrow = mu + (r0 + i) * W;
      for (long w = 0; w < W; ++w) prow[w] *= mrow[w];
    }
  }
  long tile_rows() const { return sp.chunk <= 512 ? sp.chunk : 256; }
  // The rounds' weights of position t of slice s: w[r] = exp(lse_r - logsumexp_r(lse_r)),
  // as the reference computes them (max, then log of the sum of exp).
  void round_weights(const T* lse_s, long t, T* w) const {
    T m = lse_s[t];
    for (long r = 1; r < sp.n_hashes; ++r) m = std::max(m, lse_s[r * L + t]);
    T total = 0;
    for (long r = 0; r < sp.n_hashes; ++r) total += std::exp(lse_s[r * L + t] - m);
    const T lse_all = std::isfinite(m) ? m + std::log(total) : m;
    for (long r = 0; r < sp.n_hashes; ++r) w[r] = std::exp(lse_s[r * L + t] - lse_all);
  }

  // out [E, L, Hg * dv] (rounds combined); o_rounds [G, N, dv] (unsorted rows; may be the
  // scratch of one slice when not kept) and lse [G, N].
  void forward(const T* q, const T* v, T* out, T* o_rounds, bool keep_rounds, T* lse_out) const {
    const long rb = tile_rows();
    // One slice per item (core::parallel_for); each thread has its own scratch, and its
    // own rows for the per-round outputs when they are not kept.
    struct Scratch {
      std::vector<T> S, qbuf, kbuf, vbuf, obuf, lse, scratch, w, rounds;
    };
    // work per slice: the scores and the product with the values of every sorted slot
    const double flops = 2.0 * static_cast<double>(N * W * (dqk + dv));
    std::vector<Scratch> scratches(static_cast<std::size_t>(core::parallel_workers(G, flops)));
    core::parallel_for(G, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.S.empty()) {
        sc.S.resize(static_cast<std::size_t>(rb * W));
        sc.qbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.kbuf.resize(static_cast<std::size_t>(W * dqk));
        sc.vbuf.resize(static_cast<std::size_t>(W * dv));
        sc.obuf.resize(static_cast<std::size_t>(rb * dv));
        sc.lse.resize(static_cast<std::size_t>(rb));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
        if (!keep_rounds) sc.rounds.resize(static_cast<std::size_t>(N * dv));
      }
      std::vector<T>&S = sc.S, &qbuf = sc.qbuf, &kbuf = sc.kbuf, &vbuf = sc.vbuf, &obuf = sc.obuf,
      &lse = sc.lse, &scratch = sc.scratch, &w = sc.w;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * N;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * N;
      const T* qs = q + offset(s, dqk);
      const T* vs = v + offset(s, dv);
      const Tensor kn = lsh_slice_keys<T>(qs, L, sq, dqk);
      const T* ks = kn.data<T>();
      T* os = keep_rounds ? o_rounds + s * N * dv : sc.rounds.data();
      T* ls = lse_out + s * N;
      for (long ci = 0; ci < nc; ++ci) {
        gather_window(ks, dqk, pos, ci, dqk, kbuf.data());
        gather_window(vs, sv, pos, ci, dv, vbuf.data());
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, sq, pos, t0, n, dqk, qbuf.data());
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, S.data());
          softmax_rows(S.data(), n, lse.data(), true, scratch);
          apply_multiplier(S.data(), r0, n);
          // o rows = P V_window, copied to their unsorted rows
          core::gemm(core::Trans::N, core::Trans::N, n, dv, W, T(1), S.data(), W, vbuf.data(), dv,
                     T(0), obuf.data(), dv);
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            std::copy(obuf.data() + i * dv, obuf.data() + (i + 1) * dv, os + r * dv);
            ls[r] = lse[static_cast<std::size_t>(i)];
          }
        }
      }
      // Combine the rounds into the output rows of this slice.
      T* outs = out + offset(s, dv);
      for (long t = 0; t < L; ++t) {
        T* o = outs + t * sv;
        if (sp.n_hashes == 1) {
          std::copy(os + t * dv, os + (t + 1) * dv, o);
          continue;
        }
        round_weights(ls, t, w.data());
        for (long c = 0; c < dv; ++c) o[c] = os[t * dv + c] * w[0];
        for (long r = 1; r < sp.n_hashes; ++r) {
          const T* orow = os + (r * L + t) * dv;
          for (long c = 0; c < dv; ++c) o[c] += orow[c] * w[static_cast<std::size_t>(r)];
        }
      }
    });
  }

  // Gradients w.r.t. q (through the queries and the normalised keys) and v, given the
  // output's cotangent dout [E, L, Hg * dv].
  void backward(const T* q, const T* v, const T* out, const T* o_rounds, const T* lse_all,
                const T* dout, T* dq, T* dv_out) const {
    const long rb = tile_rows();
    const std::size_t wq = static_cast<std::size_t>(W * dqk), wv = static_cast<std::size_t>(W * dv);
    // One slice per item (a slice's gradients touch only its own rows of dq and dv); each
    // thread has its own scratch.
    struct Scratch {
      std::vector<T> P, D, Pd, qbuf, kbuf, vbuf, dobuf, lse, dqbuf, dkbuf, dvbuf, scratch;
      std::vector<T> dkn;           // the normalised keys' gradient, [L, d_qk]
      std::vector<T> wgt, dlse, w;  // per slot (unsorted row r * L + t): round weight, d lse
    };
    // work per slice: five [slots, window] x d products
    const double flops = 5.0 * static_cast<double>(N * W * std::max(dqk, dv));
    std::vector<Scratch> scratches(static_cast<std::size_t>(core::parallel_workers(G, flops)));
    const T* mu = sp.multiplier.defined() ? sp.multiplier.data<T>() : nullptr;
    core::parallel_for(G, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.P.empty()) {
        sc.P.resize(static_cast<std::size_t>(rb * W));
        sc.D.resize(static_cast<std::size_t>(rb * W));
        sc.qbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.kbuf.resize(wq);
        sc.vbuf.resize(wv);
        sc.dobuf.resize(static_cast<std::size_t>(rb * dv));
        sc.lse.resize(static_cast<std::size_t>(rb));
        sc.dqbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.dkbuf.resize(wq);
        sc.dvbuf.resize(wv);
        sc.dkn.resize(static_cast<std::size_t>(L * dqk));
        sc.wgt.resize(static_cast<std::size_t>(N));
        sc.dlse.resize(static_cast<std::size_t>(N));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
      }
      std::vector<T>&P = sc.P, &D = sc.D, &Pd = sc.Pd, &qbuf = sc.qbuf, &kbuf = sc.kbuf,
      &vbuf = sc.vbuf, &dobuf = sc.dobuf, &lse = sc.lse, &dqbuf = sc.dqbuf, &dkbuf = sc.dkbuf,
      &dvbuf = sc.dvbuf, &scratch = sc.scratch, &dkn = sc.dkn, &wgt = sc.wgt, &dlse = sc.dlse,
      &w = sc.w;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * N;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * N;
      const T* qs = q + offset(s, dqk);
      const T* vs = v + offset(s, dv);
      const T* dos = dout + offset(s, dv);
      const T* ls = lse_all + s * N;
      T* dqs = dq + offset(s, dqk);
      T* dvs = dv_out + offset(s, dv);
      const Tensor kn = lsh_slice_keys<T>(qs, L, sq, dqk);
      const T* ks = kn.data<T>();
      // out = sum_r w_r o_r with w = softmax_r(lse): d o_r = w_r dout,
      // d lse_r = w_r (dout . o_r - dout . out).
      if (sp.n_hashes == 1) {
        std::fill(wgt.begin(), wgt.end(), T(1));
        std::fill(dlse.begin(), dlse.end(), T(0));
      } else {
        const T* os = o_rounds + s * N * dv;
        const T* outs = out + offset(s, dv);
        for (long t = 0; t < L; ++t) {
          round_weights(ls, t, w.data());
          const T* g = dos + t * sv;
          T g_out = 0;
          for (long c = 0; c < dv; ++c) g_out += g[c] * outs[t * sv + c];
          for (long r = 0; r < sp.n_hashes; ++r) {
            const T* orow = os + (r * L + t) * dv;
            T g_o = 0;
            for (long c = 0; c < dv; ++c) g_o += g[c] * orow[c];
            const std::size_t i = static_cast<std::size_t>(r * L + t);
            wgt[i] = w[static_cast<std::size_t>(r)];
            dlse[i] = w[static_cast<std::size_t>(r)] * (g_o - g_out);
          }
        }
      }
      std::fill(dkn.begin(), dkn.end(), T(0));
      for (long ci = 0; ci < nc; ++ci) {
        gather_window(ks, dqk, pos, ci, dqk, kbuf.data());
        gather_window(vs, sv, pos, ci, dv, vbuf.data());
        std::fill(dkbuf.begin(), dkbuf.end(), T(0));
        std::fill(dvbuf.begin(), dvbuf.end(), T(0));
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, sq, pos, t0, n, dqk, qbuf.data());
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            lse[static_cast<std::size_t>(i)] = ls[r];
            const T* g = dos + (r % L) * sv;
            const T wr = wgt[static_cast<std::size_t>(r)];
            for (long c = 0; c < dv; ++c) dobuf[static_cast<std::size_t>(i * dv + c)] = g[c] * wr;
          }
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, P.data());
          softmax_rows(P.data(), n, lse.data(), false, scratch);  // before dropout
          // D = dO V_window^T: the gradient of the dropped-out probabilities
          core::gemm(core::Trans::N, core::Trans::T, n, W, dv, T(1), dobuf.data(), dv, vbuf.data(),
                     dv, T(0), D.data(), W);
          // dV_window += (P * mult)^T dO; then D *= mult
          const T* pv = P.data();
          if (mu != nullptr) {
            Pd.assign(P.begin(), P.begin() + n * W);
            apply_multiplier(Pd.data(), r0, n);
            pv = Pd.data();
          }
          core::gemm(core::Trans::T, core::Trans::N, W, dv, n, T(1), pv, W, dobuf.data(), dv, T(1),
                     dvbuf.data(), dv);
          if (mu != nullptr) apply_multiplier(D.data(), r0, n);
          // dS = P * (D - sum(D * P) + dlse)
          for (long i = 0; i < n; ++i) {
            T* drow = D.data() + i * W;
            const T* prow = P.data() + i * W;
            T dotp = 0;
            for (long c = 0; c < W; ++c) dotp += drow[c] * prow[c];
            const T dl = dlse[static_cast<std::size_t>(row[t0 + i])];
            for (long c = 0; c < W; ++c) drow[c] = prow[c] * (drow[c] - dotp + dl);
          }
          // dQ_rows = dS K_window; dK_window += dS^T Q_rows
          core::gemm(core::Trans::N, core::Trans::N, n, dqk, W, T(1), D.data(), W, kbuf.data(), dqk,
                     T(0), dqbuf.data(), dqk);
          scatter_add_rows(dqbuf.data(), pos, t0, n, dqk, dqs, sq);
          core::gemm(core::Trans::T, core::Trans::N, W, dqk, n, T(1), D.data(), W, qbuf.data(), dqk,
                     T(1), dkbuf.data(), dqk);
        }
        scatter_window(dkbuf.data(), pos, ci, dqk, dkn.data(), dqk);
        scatter_window(dvbuf.data(), pos, ci, dv, dvs, sv);
      }
      // Keys k = q a / c with a = (mean(q^2) + eps)^(-1/2), c = sqrt(d_qk):
      // dq += (a / c) dk - (a^3 / (c d_qk)) (dk . q) q, row by row.
      const T c = static_cast<T>(std::sqrt(static_cast<double>(dqk)));
      for (long t = 0; t < L; ++t) {
        const T* x = qs + t * sq;
        const T* g = dkn.data() + t * dqk;
        T ss = 0, gx = 0;
        for (long f = 0; f < dqk; ++f) {
          ss += x[f] * x[f];
          gx += g[f] * x[f];
        }
        const T a = T(1) / std::sqrt(ss / static_cast<T>(dqk) + static_cast<T>(1e-6));
        const T c1 = a / c, c2 = a * a * a / (c * static_cast<T>(dqk)) * gx;
        T* o = dqs + t * sq;
        for (long f = 0; f < dqk; ++f) o[f] += c1 * g[f] - c2 * x[f];
      }
    });
  }
};

// LSH attention for the G = E * Hg slices of q [E, L, Hg * d_qk] and v [E, L, Hg * d_v]
// (the projections' layout): the rounds combined, [E, L, Hg * d_v] in the same layout.
Var lsh_attention_core(const Var& q, const Var& v, const LshSpec& spec) {
  auto fwd = [spec](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &vv = in[1];
    const long E = as_long(qv.dim(0)), L = as_long(qv.dim(1)), G = E * spec.heads;
    const long dqk = as_long(qv.dim(2)) / spec.heads, dv = as_long(vv.dim(2)) / spec.heads;
    const long N = spec.n_hashes * L;
    const bool keep_rounds = spec.n_hashes > 1;
    Tensor out = Tensor::empty(vv.shape(), qv.dtype());
    Tensor lse =
        Tensor::empty({static_cast<std::size_t>(G), static_cast<std::size_t>(N)}, qv.dtype());
    // The per-round outputs, kept for the backward pass when there are several rounds
    // (one round: the kernel uses per-thread scratch rows).
    Tensor rounds = keep_rounds
                        ? Tensor::empty({static_cast<std::size_t>(G), static_cast<std::size_t>(N),
                                         static_cast<std::size_t>(dv)},
                                        qv.dtype())
                        : Tensor();
    core::dispatch_floating(qv.dtype(), "lsh_attention_core", [&](auto tag) {
      using T = decltype(tag);
      LshKernel<T>(spec, G, L, dqk, dv)
          .forward(qv.data<T>(), vv.data<T>(), out.data<T>(),
                   keep_rounds ? rounds.data<T>() : nullptr, keep_rounds, lse.data<T>());
    });
    res = {qv, vv, out, lse};
    if (keep_rounds) res.push_back(rounds);
    return std::vector<Tensor>{out};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &vv = res[1], &out = res[2], &lse = res[3];
    const long E = as_long(qv.dim(0)), L = as_long(qv.dim(1)), G = E * spec.heads;
    const long dqk = as_long(qv.dim(2)) / spec.heads, dv = as_long(vv.dim(2)) / spec.heads;
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    if (!cts.at(0).defined()) return std::vector<Tensor>{dq, dvv};
    core::dispatch_floating(qv.dtype(), "lsh_attention_core", [&](auto tag) {
      using T = decltype(tag);
      LshKernel<T>(spec, G, L, dqk, dv)
          .backward(qv.data<T>(), vv.data<T>(), out.data<T>(),
                    res.size() > 4 ? res[4].data<T>() : nullptr, lse.data<T>(), cts[0].data<T>(),
                    dq.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dvv};
  };
  return autodiff::custom_vjp("lsh_attention_core", {q, v}, fwd, bwd).at(0);
}

// The largest and smallest of x[0 .. n), n >= 1 (SIMD lanes, then the tail).
template <class T>
void max_min(const T* x, long n, T& mx, T& mn) {
  using B = xsimd::batch<T>;
  constexpr long w = static_cast<long>(B::size);
  long i = 0;
  mx = x[0];
  mn = x[0];
  if (n >= w) {
    B bmax = B::load_unaligned(x), bmin = bmax;
    for (i = w; i + w <= n; i += w) {
      const B b = B::load_unaligned(x + i);
      bmax = xsimd::max(bmax, b);
      bmin = xsimd::min(bmin, b);
    }
    alignas(64) T lanes[2][w];
    bmax.store_aligned(lanes[0]);
    bmin.store_aligned(lanes[1]);
    for (long j = 0; j < w; ++j) {
      mx = lanes[0][j] > mx ? lanes[0][j] : mx;
      mn = lanes[1][j] < mn ? lanes[1][j] : mn;
    }
  }
  for (; i < n; ++i) {
    mx = x[i] > mx ? x[i] : mx;
    mn = x[i] < mn ? x[i] : mn;
  }
}

// LSH hashing of one slice, hash_vectors_with's function without its temporaries:
// rotated = q R ([rows, n_hashes * rot_size / 2], one gemm per block of 128 positions, so
// that the block stays in cache however many buckets there are), then per round and
// factor the argmax over [rotated, -rotated] (first index on ties) read off the columns'
// max and min: the max is in the first half unless -min is larger.
template <class T>
void hash_slice(const T* q, long ldq, long L, long d, const Tensor& rotations,
                const std::vector<long>& factors, long n_hashes, const std::int32_t* mask,
                std::int32_t* buckets, std::vector<T>& rotated) {
  long rot = 0, per_round = 1;
  for (long f : factors) {
    rot += f / 2;
    per_round *= f;
  }
  if (mask != nullptr) per_round += 1;  // padding's own bucket
  const long cols = n_hashes * rot;
  const long block = 128;
  rotated.resize(static_cast<std::size_t>(std::min(block, L) * cols));
  for (long t0 = 0; t0 < L; t0 += block) {
    const long n = std::min(block, L - t0);
    core::gemm(core::Trans::N, core::Trans::N, n, cols, d, T(1), q + t0 * ldq, ldq,
               rotations.data<T>(), cols, T(0), rotated.data(), cols);
    for (long i = 0; i < n; ++i) {
      const long t = t0 + i;
      const T* r = rotated.data() + i * cols;
      for (long h = 0; h < n_hashes; ++h) {
        std::int32_t b = 0;
        if (mask != nullptr && mask[t] == 0) {
          b = static_cast<std::int32_t>(per_round - 1);
        } else {
          long c0 = h * rot, radix = 1;
          for (long f : factors) {
            const long half = f / 2;
            const T* rf = r + c0;
            T mx, mn;
            max_min(rf, half, mx, mn);
            // the first index holding the winning value
            const bool pos = mx >= -mn;
            const T want = pos ? mx : mn;
            long id = 0;
            while (id + 1 < half && rf[id] != want) ++id;  // (NaN: stops at the end)
            b += static_cast<std::int32_t>((pos ? id : half + id) * radix);
            radix *= f;
            c0 += half;
          }
        }
        buckets[h * L + t] = static_cast<std::int32_t>(b + h * per_round);
      }
    }
  }
}

// sort_buckets' sticker and undo_sort for buckets whose round h holds ids in
// [h * per_round, (h + 1) * per_round): a stable counting sort by bucket over the ticker
// order gives the order of buckets_and_t = L * bucket + position (within one bucket all
// tickers come from one round, so ticker order is position order). False (nothing
// written) if the buckets do not have that form; the caller then uses sort_buckets.
bool counting_sort_buckets(const std::int32_t* b, long L, long n_hashes, long per_round,
                           std::int32_t* sticker, std::int32_t* undo, std::vector<long>& count) {
  const long N = n_hashes * L, n_ids = n_hashes * per_round;
  if (static_cast<double>(L) * static_cast<double>(n_ids) >
      static_cast<double>(std::numeric_limits<std::int32_t>::max())) {
    return false;  // sort_buckets reports the int32 overflow of the keys
  }
  for (long t = 0; t < N; ++t) {
    if (b[t] < 0 || b[t] / per_round != t / L) return false;
  }
  count.assign(static_cast<std::size_t>(n_ids + 1), 0);
  for (long t = 0; t < N; ++t) ++count[static_cast<std::size_t>(b[t]) + 1];
  for (long i = 0; i < n_ids; ++i)
    count[static_cast<std::size_t>(i) + 1] += count[static_cast<std::size_t>(i)];
  for (long t = 0; t < N; ++t) {
    const long slot = count[static_cast<std::size_t>(b[t])]++;
    sticker[slot] = static_cast<std::int32_t>(t);
    undo[t] = static_cast<std::int32_t>(slot);
  }
  return true;
}

// What a batched group produced (EfficientAttentionBase::GroupResult's fields).
struct GroupOut {
  std::vector<long> examples;
  std::vector<Var> outputs;
  std::vector<std::vector<Tensor>> states;
};

// The group's result from the heads' outputs side by side, o [E, L, Hg * d_v]: the output
// projection summed over each example's heads as ONE gemm against w_o [Hg * d_v, D],
// broadcast output dropout.
void finish_side_by_side(const GroupLayout& lay, const Var& o, const Var& w_o, double rate,
                         Key output_rng, GroupOut& g) {
  const long E = lay.n_examples, Hg = lay.heads_per;
  const long L = as_long(o.dim(1)), dv = as_long(w_o.dim(1)), D = as_long(w_o.dim(2));
  Var out = fm::matmul(o, fm::reshape(w_o, {Hg * dv, D}));  // [E, L, D]
  if (rate > 0.0) {
    out = out * Var(dropout_multiplier(rate, output_rng, Shape{out.dim(2)}, out.dtype()));
  }
  for (long e = 0; e < E; ++e) {
    g.examples.push_back(lay.example_lo + e);
    g.outputs.push_back(E == 1 ? fm::reshape(out, {L, D})
                               : fm::reshape(fm::slice(out, 0, e, e + 1), {L, D}));
  }
}

// The same from out [G, L, d_v] (slices first): the heads put side by side first.
void finish_group(const GroupLayout& lay, const Var& attended, const Var& w_o, double rate,
                  Key output_rng, GroupOut& g) {
  const long E = lay.n_examples, Hg = lay.heads_per;
  const long L = as_long(attended.dim(1)), dv = as_long(attended.dim(2));
  const Var o =
      Hg == 1 ? attended
              : fm::reshape(fm::transpose(fm::reshape(attended, {E, Hg, L, dv}), {0, 2, 1, 3}),
                            {E, L, Hg * dv});
  finish_side_by_side(lay, o, w_o, rate, output_rng, g);
}

// SelfAttentionLayer::forward_unbatched for the G slices of a group at once.
GroupOut self_attention_group(const SelfAttentionOptions& opt, const GroupLayout& lay, long n_heads,
                              const std::function<Var(long)>& x_of,
                              const std::function<std::vector<Var>(long)>& weights_of,
                              const Tensor& mask, Key rng, double attention_rate,
                              double output_rate) {
  GroupOut g;
  // 1. Two keys (the same for every slice): attention dropout, output dropout.
  const std::vector<Key> rngs = core::split(rng, 2);
  // 2. Inputs [E, L, d_model] and the heads' weights stacked [Hg, ...].
  const Var X = group_examples(lay, x_of);
  const std::vector<Var> W = group_head_weights(lay, n_heads, weights_of);
  const long L = as_long(X.dim(1));
  std::size_t i = 0;
  const Var w_q = W.at(i++);
  const Var w_k = opt.share_qk ? Var() : W.at(i++);
  const Var w_v = W.at(i++);
  const Var w_o = W.at(i++);
  Var b_q, b_k, b_v;
  if (opt.bias) {
    b_q = W.at(i++);
    if (!opt.share_qk) b_k = W.at(i++);
    b_v = W.at(i++);
  }
  // 3. Projections, one gemm each for all the group's heads: [G, L, d].
  const Var q = project_heads(X, w_q, b_q);
  const Var k = opt.share_qk ? Var() : project_heads(X, w_k, b_k);
  const Var v = project_heads(X, w_v, b_v);
  const long G = as_long(q.dim(0));
  // 4. Masks: positions, padded keys negative (one row per example when masked).
  Tensor q_info, kv_info;
  if (opt.causal || opt.share_qk || opt.masked) {
    const long rows = opt.masked ? lay.n_examples : 1;
    q_info =
        Tensor::empty({static_cast<std::size_t>(rows), static_cast<std::size_t>(L)}, DType::i32);
    kv_info = Tensor::empty(q_info.shape(), DType::i32);
    std::int32_t* qi = q_info.data<std::int32_t>();
    std::int32_t* ki = kv_info.data<std::int32_t>();
    for (long r = 0; r < rows; ++r) {
      const std::int32_t* m =
          opt.masked ? mask.data<std::int32_t>() + (lay.example_lo + r) * L : nullptr;
      for (long t = 0; t < L; ++t) {
        qi[r * L + t] = static_cast<std::int32_t>(t);
        ki[r * L + t] = static_cast<std::int32_t>(m == nullptr || m[t] != 0 ? t : -t);
      }
    }
  }
  // 5. Attention over [G * n_chunks, chunk, window] blocks.
  const BatchedAttend att =
      attend_batched(q, k, v, opt.chunk_len, opt.n_chunks_before, opt.n_chunks_after, q_info,
                     kv_info, opt.causal, opt.share_qk, opt.masked, attention_rate, rngs[0]);
  // 6. Output projection, output dropout, sum over heads.
  finish_group(lay, att.out, w_o, output_rate, rngs[1], g);
  g.states.resize(static_cast<std::size_t>(G));
  return g;
}

// LSHSelfAttentionLayer::forward_unbatched for the G slices of a group at once.
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
  // 1. q and v of every slice, one gemm each for all the group's heads: [G, L, d].
  const Var X = group_examples(lay, x_of);
  const std::vector<Var> W = group_head_weights(lay, n_heads, weights_of);
  //    Kept side by side, [E, L, Hg * d]: the attention node reads that layout.
  const Var q = project_side_by_side(X, W.at(0), Var());
  const Var v = project_side_by_side(X, W.at(1), Var());
  const long Hg = lay.heads_per, G = lay.n_examples * Hg, L = as_long(q.dim(1));
  const long n_hashes = o.n_hashes;
  const long N = n_hashes * L;
  const long d_qk = as_long(q.dim(2)) / Hg;
  const Tensor qv = q.value();

  // 2. Hash and sort each slice (integer work, no gradient), straight into the index
  //    tables of the attention node: positions, key infos and unsorted rows per sorted slot.
  const Shape gn{static_cast<std::size_t>(G), static_cast<std::size_t>(N)};
  Tensor pos_all = Tensor::empty(gn, DType::i32);
  Tensor kv_all = o.masked ? Tensor::empty(gn, DType::i32) : pos_all;
  Tensor row_all = Tensor::empty(gn, DType::i32);
  std::int32_t* ppos = pos_all.data<std::int32_t>();
  std::int32_t* pkv = kv_all.data<std::int32_t>();
  std::int32_t* prow = row_all.data<std::int32_t>();
  const Tensor& fixed = layer.fixed_rotations();
  long per_round = 1;
  for (long f : o.n_buckets) per_round *= f;
  if (o.masked) per_round += 1;
  //    One slice per item (core::parallel_for); the states are collected in slice order.
  g.states.resize(static_cast<std::size_t>(G));
  //    Work per slice: the rotations (when hashing) and the counting sort.
  long rot_size = 0;
  for (long f : o.n_buckets) rot_size += f;
  const double hash_flops =
      static_cast<double>(N) * (update_state ? static_cast<double>(d_qk * rot_size) : 0.0) +
      10.0 * static_cast<double>(N);
  core::parallel_for(G, hash_flops, [&](long s, int) {
    std::vector<std::int32_t> undo(static_cast<std::size_t>(N));
    std::vector<long> count;
    const long example = lay.example_lo + s / lay.heads_per;
    const long head = lay.head_lo + s % lay.heads_per;
    const long idx = example * n_heads + head;
    const std::int32_t* m = mask.defined() ? mask.data<std::int32_t>() + example * L : nullptr;
    Tensor buckets;
    if (update_state) {
      const std::vector<Key> hash_keys = core::split(key_from_tensor(row_of(state[1], idx)), 2);
      Tensor rotations = fixed.defined()
                             ? (fixed.ndim() == 4 ? row_of(fixed, head) : fixed)
                             : hash_rotations(hash_keys[1], d_qk, o.n_buckets, n_hashes);
      if (rotations.dtype() != qv.dtype()) rotations = rotations.astype(qv.dtype());
      buckets = Tensor::empty({static_cast<std::size_t>(N)}, DType::i32);
      core::dispatch_floating(qv.dtype(), "LSHSelfAttention hash", [&](auto tag) {
        using T = decltype(tag);
        std::vector<T> rotated;
        hash_slice<T>(qv.data<T>() + ((s / Hg) * L * Hg + s % Hg) * d_qk, Hg * d_qk, L, d_qk,
                      rotations, o.n_buckets, n_hashes, m, buckets.data<std::int32_t>(), rotated);
      });
      Tensor stored = buckets;
      if (o.max_length_for_buckets) {
        const long full = n_hashes * *o.max_length_for_buckets;
        if (N < full) {
          stored = core::concatenate(
              {buckets, Tensor::zeros({static_cast<std::size_t>(full - N)}, DType::i32)}, 0);
        }
      }
      g.states[static_cast<std::size_t>(s)] = {stored, key_to_tensor(hash_keys[0])};
    } else {
      buckets = row_of(state[0], idx);
      if (o.max_length_for_buckets) buckets = core::slice(buckets, 0, 0, N);
      g.states[static_cast<std::size_t>(s)] = {row_of(state[0], idx), row_of(state[1], idx)};
    }
    if (as_long(buckets.size()) != N) {
      throw ShapeError("the stored buckets cover " + std::to_string(buckets.size()) +
                       " positions, this call needs n_hashes * length = " + str(n_hashes) + " x " +
                       str(L) + " = " + str(N) +
                       ": run a state-updating forward pass at this length first");
    }
    std::int32_t* sk = prow + s * N;  // the sticker, written in place
    const Tensor b32 = buckets.astype(DType::i32);
    if (!counting_sort_buckets(b32.data<std::int32_t>(), L, n_hashes, per_round, sk, undo.data(),
                               count)) {
      const SortedBuckets sorted = sort_buckets(buckets, L, n_hashes);
      std::copy_n(sorted.sticker.data<std::int32_t>(), N, sk);
    }
    for (long t = 0; t < N; ++t) {
      const std::int32_t p = static_cast<std::int32_t>(sk[t] % L);
      ppos[s * N + t] = p;
      if (o.masked) pkv[s * N + t] = m[p] != 0 ? p : -p;
    }
  });

  // 3. Shared-QK chunked attention over the sorted slots, read through the sort, and the
  //    hash rounds combined (each weighted by its share of the softmax mass): one node,
  //    [E, L, Hg * d_v].
  LshSpec spec;
  spec.n_hashes = n_hashes;
  spec.heads = Hg;
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
    spec.multiplier = dropout_multiplier(
        attention_rate, rngs[0],
        Shape{static_cast<std::size_t>(spec.chunk), static_cast<std::size_t>(window)}, q.dtype());
  }
  const Var combined = lsh_attention_core(q, v, spec);
  // 4. Output projection summed over heads, output dropout.
  finish_side_by_side(lay, combined, W.at(2), output_rate, rngs[1], g);
  return g;
}

}  // namespace

// ---- the memory-lean implementation --------------------------------------------------------

EfficientAttentionBase::GroupResult EfficientAttentionBase::forward_group(
    long idx_lo, long idx_hi, const std::function<Var(long)>& x_of,
    const std::function<std::vector<Var>(long)>& weights_of, const Tensor& mask,
    const std::vector<Tensor>& state, Key rng, bool update_state) {
  // SelfAttention and LSHSelfAttention themselves (not subclasses, whose
  // forward_unbatched may differ): all the group's heads at once.
  if (batched_groups_enabled()) {
    const GroupLayout lay = layout_of(idx_lo, idx_hi, n_heads_);
    if (lay.ok && typeid(*this) == typeid(LSHSelfAttentionLayer)) {
      const auto& layer = static_cast<const LSHSelfAttentionLayer&>(*this);
      GroupOut o = lsh_group(layer, lay, n_heads_, x_of, weights_of, mask, state, rng, update_state,
                             effective_rate(layer.options().attention_dropout),
                             effective_rate(layer.options().output_dropout));
      return {std::move(o.examples), std::move(o.outputs), std::move(o.states)};
    }
    if (lay.ok && typeid(*this) == typeid(SelfAttentionLayer)) {
      const auto& layer = static_cast<const SelfAttentionLayer&>(*this);
      GroupOut o = self_attention_group(layer.options(), lay, n_heads_, x_of, weights_of, mask, rng,
                                        effective_rate(layer.options().attention_dropout),
                                        effective_rate(layer.options().output_dropout));
      return {std::move(o.examples), std::move(o.outputs), std::move(o.states)};
    }
  }
  // Otherwise: head by head.
  GroupResult g;
  for (long idx = idx_lo; idx < idx_hi; ++idx) {
    const long example = idx / n_heads_;
    const long head = idx % n_heads_;
    if (g.examples.empty() || g.examples.back() != example) {
      g.examples.push_back(example);
      g.outputs.emplace_back();
    }
    const Tensor mask_example = mask.defined() ? row_of(mask, example) : Tensor();
    std::vector<Tensor> state_slice;
    for (const Tensor& leaf : state) state_slice.push_back(row_of(leaf, idx));
    UnbatchedResult r = forward_unbatched(x_of(example), mask_example, weights_of(head),
                                          state_slice, rng, update_state, head);
    Var& acc = g.outputs.back();
    acc = acc.defined() ? acc + r.out : r.out;
    g.states.push_back(std::move(r.state));
  }
  return g;
}

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

  // Wide attention cores hand their outputs to the backward pass's recomputation (see
  // CoreHandoff), only when a tape records (a backward pass may follow).
  auto handed = std::make_shared<std::vector<Tensor>>();
  CoreHandoff record;
  if (autodiff::recording_tape() != nullptr) record.record = handed.get();

  std::vector<Tensor> new_state = old_state;
  auto forward_fn = [&](const std::vector<Tensor>& in, std::vector<Tensor>& residuals) {
    HandoffScope handoff(&record);
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
      GroupResult g = forward_group(lo, hi, x_of, weights_of, mask, old_state, rng, update);
      for (std::size_t k = 0; k < g.examples.size(); ++k) {
        add_block(out, g.examples[k], g.outputs[k].value());
      }
      for (auto& s : g.states) rows.push_back(std::move(s));
    }
    if (update && !rows.empty() && !rows[0].empty()) new_state = stack_rows(rows);
    // Residuals: inputs, weights, mask, and the NEW state (what the recomputation reuses).
    residuals = in;
    if (has_mask) residuals.push_back(mask);
    residuals.insert(residuals.end(), new_state.begin(), new_state.end());
    return std::vector<Tensor>{out};
  };

  auto backward_fn = [keep, self, n_weights, has_mask, n_slices, group, rng, handed](
                         const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    (void)keep;  // held only to keep the layer alive until the backward pass
    CoreHandoff replay;
    replay.replay = handed.get();
    HandoffScope handoff(&replay);
    const Tensor& xv = res[0];
    const std::vector<Tensor> wv(res.begin() + 1, res.begin() + 1 + static_cast<long>(n_weights));
    std::size_t pos = 1 + n_weights;
    const Tensor mask_v = has_mask ? res[pos++] : Tensor();
    const std::vector<Tensor> state_v(res.begin() + static_cast<long>(pos), res.end());
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
      GroupResult g = self->forward_group(lo, hi, x_of, weights_of, mask_v, state_v, rng, false);
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
  std::vector<Tensor> ws;
  ws.push_back(kernel_init({d_model, d_qk}, keys[0]));
  if (!opt_.share_qk) ws.push_back(kernel_init({d_model, d_qk}, keys[1]));
  ws.push_back(kernel_init({d_model, d_v}, keys[2]));
  ws.push_back(core::transpose(kernel_init({d_model, d_v}, keys[3])));  // [d_v, d_model]
  if (opt_.bias) {
    ws.push_back(Tensor::zeros({d_qk}));
    if (!opt_.share_qk) ws.push_back(Tensor::zeros({d_qk}));
    ws.push_back(Tensor::zeros({d_v}));
  }
  return ws;
}

std::vector<std::string> SelfAttentionLayer::weight_names() const {
  std::vector<std::string> names{"w_q"};
  if (!opt_.share_qk) names.push_back("w_k");
  names.push_back("w_v");
  names.push_back("w_o");
  if (opt_.bias) {
    names.push_back("b_q");
    if (!opt_.share_qk) names.push_back("b_k");
    names.push_back("b_v");
  }
  return names;
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

  // 2. This head's weights, in weight_names() order.
  std::size_t i = 0;
  const Var& w_q = weights.at(i++);
  const Var w_k = opt_.share_qk ? Var() : weights.at(i++);
  const Var& w_v = weights.at(i++);
  const Var& w_o = weights.at(i++);
  Var b_q, b_k, b_v;
  if (opt_.bias) {
    b_q = weights.at(i++);
    if (!opt_.share_qk) b_k = weights.at(i++);
    b_v = weights.at(i++);
  }

  // 3. Projections: q [L, d_qk], k [L, d_qk] (none when shared with q), v [L, d_v].
  const Var q = fm::dense(x, w_q, b_q);
  const Var k = opt_.share_qk ? Var() : fm::dense(x, w_k, b_k);
  const Var v = fm::dense(x, w_v, b_v);

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
  Var out = fm::matmul(attended.out, w_o);
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

Tensor LSHSelfAttentionLayer::hash(const Tensor& q, Key rng, const Tensor& mask, long head) const {
  // Rotations: the fixed ones if given, else drawn (float32, as Trax) from the key; then
  // converted to q's dtype (exactly), so a float64 layer hashes in float64.
  Tensor rotations;
  if (fixed_rotations_.defined()) {
    rotations = fixed_rotations_.ndim() == 4 ? row_of(fixed_rotations_, head) : fixed_rotations_;
  } else {
    rotations = hash_rotations(rng, as_long(q.dim(1)), lsh_.n_buckets, lsh_.n_hashes);
  }
  if (rotations.dtype() != q.dtype()) rotations = rotations.astype(q.dtype());
  return hash_vectors_with(q, rotations, lsh_.n_buckets, lsh_.n_hashes,
                           mask.defined() ? &mask : nullptr);
}

EfficientAttentionBase::UnbatchedResult LSHSelfAttentionLayer::forward_unbatched(
    const Var& x, const Tensor& mask_in, const std::vector<Var>& weights,
    const std::vector<Tensor>& state_in, Key rng, bool update_state, long head) {
  const long seqlen = as_long(x.dim(0));
  const long n_hashes = lsh_.n_hashes;
  check_unbatched(x, mask_in, lsh_.masked, x.dim(0));
  const Tensor mask = mask_in.defined() ? mask_in.astype(DType::i32) : Tensor();
  const std::vector<Tensor>& state = state_in;
  if (state.size() != 2) {
    throw ValueError("LSHSelfAttention: expected a state of (buckets, hash key), got " +
                     std::to_string(state.size()) + " tensors");
  }

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

  // 3. Buckets: rehash with a fresh key (and keep the buckets in the state), or reuse
  //    the stored ones (recomputation in the backward pass).
  Tensor buckets;
  std::vector<Tensor> new_state = state;
  if (update_state) {
    const std::vector<Key> hash_keys = core::split(key_from_tensor(state.at(1)), 2);
    const Key hash_rng = hash_keys[0];
    const Key hash_subrng = hash_keys[1];
    const Var q_no_grad = autodiff::stop_gradient(q);            // hashing is not differentiated
    buckets = hash(q_no_grad.value(), hash_subrng, mask, head);  // int32 [n_hashes * L]
    Tensor stored = buckets;
    if (lsh_.max_length_for_buckets) {
      const long full = n_hashes * *lsh_.max_length_for_buckets;
      if (as_long(buckets.size()) < full) {
        stored = core::concatenate(
            {buckets, Tensor::zeros({static_cast<std::size_t>(full) - buckets.size()}, DType::i32)},
            0);
      }
    }
    new_state = {stored, key_to_tensor(hash_rng)};
  } else {
    buckets = state.at(0);
    if (lsh_.max_length_for_buckets) buckets = core::slice(buckets, 0, 0, n_hashes * seqlen);
  }
  if (as_long(buckets.size()) != n_hashes * seqlen) {
    throw ShapeError("the stored buckets cover " + std::to_string(buckets.size()) +
                     " positions, this call needs n_hashes * length = " + str(n_hashes) + " x " +
                     str(seqlen) + " = " + str(n_hashes * seqlen) +
                     ": run a state-updating forward pass at this length first");
  }

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
