/// @file
/// Memory-efficient multi-head
/// self-attention and LSH self-attention (Trax 1.3.4's
/// trax/layers/research/efficient_attention.py: EfficientAttentionBase, SelfAttention,
/// LSHSelfAttention).
///
/// The structure is Trax's: a base class owns the multi-head bookkeeping, a subclass
/// says what ONE head does to ONE example (`forward_unbatched`):
///
/// @code{.unparsed}
///   EfficientAttentionBase         x [B, L, d_model] (, mask [B, L]) -> [B, L, d_model]
///     weights: each leaf stacked on a leading n_heads axis (w_q [H, d_model, d_qk], ...)
///     state:   each leaf stacked on a leading B*H axis, row example * H + head
///     output:  the SUM over heads of forward_unbatched's [L, d_model] outputs
///   SelfAttentionLayer             q/k/v projections, (chunked) dot-product attention,
///                                  output projection; no state
///   LSHSelfAttentionLayer          shared-QK attention within LSH buckets; state per
///                                  (example, head): (buckets, hash rng)
/// @endcode
///
/// Two ways to run the same function (use_reference_code):
///   * reference: a plain loop over (example, head) that slices one example and one
///     head's weights and calls forward_unbatched, recorded op by op on the ordinary
///     tape. Written to be read and stepped through in gdb.
///   * memory-lean (default): the whole layer call is ONE node on the caller's tape
///     (autodiff::custom_vjp) whose residuals are only the inputs, the weights and the
///     new state. Its backward pass walks the (example, head) slices again, group by
///     group (n_parallel_heads slices at a time), recomputing each group's forward on a
///     private tape with update_state = false (so LSH reuses the buckets the forward
///     pass stored) and differentiating it at once: Trax's forward_and_or_backward,
///     "[FW-BW-1]" order. One exception to "only the inputs": attention whose window
///     spans >= 1024 keys (unchunked SelfAttention at L >= 1024) also keeps its core's
///     output and logsumexps (O(L * d_v) per head) for the recomputation, which then
///     skips the core, the most expensive part. Both paths give the same outputs, state
///     and gradients, dropout included, for the same rng (tests pin them together).
///     Its attention kernels deal independent items (row tiles, slices) to
///     core::num_threads() threads (core/parallel.hpp); results are bitwise the same for
///     any thread count.
///
/// Randomness, as in Trax: the SAME layer rng goes to every (example, head), so dropout
/// masks are shared by all heads and examples; forward_unbatched splits it into
/// (attention dropout, output dropout). LSH's per-head randomness (the hash rotations)
/// comes from a key kept in the state, split afresh on every state-updating call.
///
/// @code
/// auto attn = research::SelfAttention({.n_heads = 4, .d_qk = 16, .d_v = 16,
///                                      .causal = true, .chunk_len = 64,
///                                      .n_chunks_before = 1});
/// attn->init({2, 1024, 64}, DType::f32, core::key_from_seed(0));
/// Var y = (*attn)(x);
///
/// auto lsh = research::LSHSelfAttention({.n_heads = 4, .d_qk = 16, .d_v = 16,
///                                        .causal = true, .chunk_len = 64,
///                                        .n_hashes = 2, .n_buckets = {32}});
/// @endcode
///
/// Deliberate differences from Trax 1.3.4:
///   * Predict mode (fast autoregressive inference: Trax's use_predict_mem and
///     incremental_forward_unbatched, predict_mem_len/predict_drop_len) is in
///     efficient_attention_predict.cpp; its differences from Trax are listed there and in
///     docs/efficient_attention.md. use_python_loop does not exist (there is no jitted
///     loop to replace).
///   * Dropout rates are taken as given in train mode and as 0 otherwise at CALL time
///     (Trax zeroes them at construction), so set_mode(eval) switches dropout off.
///   * LSHSelfAttention requires chunk_len (Trax's default None with n_chunks_before = 1
///     trips an assertion inside attend); every n_buckets factor must be even and >= 2
///     (Trax: an assert). Errors say what to change: "sequence length 444 is not a
///     multiple of chunk_len 64; pad to 448".
///   * The hash rng in the state is an int64 [B*H, 2] tensor holding the two uint32
///     words of the key (minitrax has no uint32 dtype; checkpoints store keys the same
///     way). Buckets are int32 [B*H, n_hashes * L] as in Trax.
///   * n_parallel_heads only groups the work of the memory-lean path; when B*H is not
///     a multiple of it the last group is smaller (Trax asserts).
///   * The mask is an integer tensor [B, L], nonzero = valid (Trax: bool).
///   * forward_unbatched also receives the head index (for per-head fixed rotations,
///     see LSHSelfAttentionLayer::set_fixed_rotations); Trax's does not need it.
///   * set_update_state(false) runs forward passes that reuse the stored state (LSH
///     buckets) instead of updating it: what Trax's backward and the reversible layers
///     do internally, exposed for gradient checks and recomputation.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <source_location>
#include <string>
#include <utility>
#include <vector>

#include "layers/base.hpp"
#include "layers/research/attention_ops.hpp"

namespace minitrax::layers::research {

using base::LayerPtr;
using base::Mode;
using base::Signature;
using base::Stack;
using base::State;
using core::DType;
using core::Shape;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

/// Multi-head bookkeeping shared by the efficient attention layers (Trax's
/// EfficientAttentionBase): per-head weights, per-(example, head) state, the
/// reference loop and the memory-lean recomputing path. Input x [B, L, d_model]
/// (and mask [B, L] when masked), output [B, L, d_model]. Subclasses say what one
/// head does to one example: create_weights_unbatched(), forward_unbatched().
class EfficientAttentionBase : public base::Layer {
 public:
  /// n_in is 1, or 2 for (x, mask). n_parallel_heads, when given, must be a multiple or
  /// a divisor of n_heads (ValueError otherwise, as Trax).
  EfficientAttentionBase(std::string name, long n_heads, int n_in,
                         std::optional<long> n_parallel_heads, bool use_reference_code, Mode mode,
                         SrcLoc where);

  /// The number of heads.
  long n_heads() const { return n_heads_; }
  /// How many (example, head) slices the memory-lean path runs at a time, if set.
  std::optional<long> n_parallel_heads() const { return n_parallel_heads_; }
  /// Whether the reference loop runs instead of the memory-lean path.
  bool use_reference_code() const { return use_reference_code_; }
  /// Switches between the reference loop and the memory-lean path (same function).
  void set_use_reference_code(bool on) { use_reference_code_ = on; }
  /// true (default): every forward pass updates the state (LSH rehashes with a fresh
  /// key). false: forward passes reuse the stored state and leave it unchanged.
  bool update_state() const { return update_state_; }
  /// Sets update_state() (see there).
  void set_update_state(bool on) { update_state_ = on; }
  /// apply() with update_state() false for the call: the stored state (LSH buckets) is
  /// reused and left unchanged (what reversible layers' backward passes need).
  Stack recompute(const Stack& inputs, Key rng) override;

  // ---- the per-(example, head) hooks (public so they can be called one by one) ----

  /// What one head of one example produces: out [L, d_model] and its new state.
  struct UnbatchedResult {
    Var out;                    ///< [L, d_model] (predict mode: [q_len, d_model])
    std::vector<Tensor> state;  ///< the new state of this (example, head)
  };
  /// The weights of one head, drawn from `rng`, as float32 tensors (the base class
  /// stacks them over heads and casts them to the input's floating dtype).
  /// `input_signature` is unbatched: [L, d_model] (and [L] for a mask).
  virtual std::vector<Tensor> create_weights_unbatched(const Signature& input_signature,
                                                       Key rng) = 0;
  /// The state of one (example, head); default: none.
  virtual std::vector<Tensor> create_state_unbatched(const Signature& input_signature, Key rng);
  /// One example x [L, d_model], its mask [L] (int32, nonzero = valid; undefined
  /// when the layer is not masked), one head's weights and one (example, head)'s
  /// state. `rng` is the layer's rng (the same for every example and head).
  virtual UnbatchedResult forward_unbatched(const Var& x, const Tensor& mask,
                                            const std::vector<Var>& weights,
                                            const std::vector<Tensor>& state, Key rng,
                                            bool update_state, long head) = 0;

  /// Predict mode (efficient_attention_predict.cpp): what one head of one example
  /// produces for the q_len new positions starting at q_start of x (x is the whole input
  /// memory [mem_len, d_model], or the prompt itself when a prompt starts the sequence):
  /// out [q_len, d_model] and the new per-slice state. Default: ValueError (no predict).
  virtual UnbatchedResult incremental_forward_unbatched(const Var& x, long q_start, long q_len,
                                                        const std::vector<Var>& weights,
                                                        const std::vector<Tensor>& state, Key rng,
                                                        long head);
  /// Predict mode's (predict_mem_len, predict_drop_len), defaults resolved. ValueError
  /// naming the layer when the options do not allow predict mode. Default: not supported.
  virtual std::pair<long, long> predict_lengths() const;

  /// One head's weights as differentiable slices of the stacked weights.
  std::vector<Var> head_weights(long head) const;
  /// Row `index` (= example * n_heads + head) of the current state, leaves unstacked.
  std::vector<Tensor> state_row(long index) const;

  /// What a group of slices produced.
  struct GroupResult {
    std::vector<long> examples;               ///< the examples touched, ascending
    std::vector<Var> outputs;                 ///< per example: sum over the group's heads
    std::vector<std::vector<Tensor>> states;  ///< per slice (idx_lo .. idx_hi - 1)
  };
  /// The outputs (out, logsumexp) of wide attention cores (a window of >= 1024 keys:
  /// unchunked SelfAttention at L >= 1024), kept by the forward pass so that the
  /// recomputation in the backward pass need not run them again. The memory-lean path
  /// carries them as residuals of its custom-VJP node; groups record them in order
  /// (replay = false) and take them back in the same order (replay = true).
  struct KeptCores {
    std::vector<Tensor> tensors;  ///< out, logsumexp, out, logsumexp, ...
    std::size_t next = 0;         ///< the next pair to replay
    bool replay = false;          ///< false: record; true: replay
  };
  /// One call of forward_group: the slices idx in [idx_lo, idx_hi) (idx = example *
  /// n_heads + head). x_of(example) gives that example's [L, d_model] input, weights_of(head)
  /// that head's weights, as Vars (constants in the forward pass, watched on a private
  /// tape in the backward pass). `state` and `mask` are the stacked tensors.
  struct GroupCall {
    long idx_lo = 0;                                   ///< the first slice
    long idx_hi = 0;                                   ///< one past the last slice
    std::function<Var(long)> x_of;                     ///< example -> x [L, d_model]
    std::function<std::vector<Var>(long)> weights_of;  ///< head -> its weights
    Tensor mask;                                       ///< [B, L] int32, or undefined
    std::vector<Tensor> state;                         ///< the stacked state leaves
    Key rng;                          ///< the layer's rng (the same for every slice)
    bool update_state = true;         ///< see update_state()
    KeptCores* kept_cores = nullptr;  ///< where wide cores record / replay (may be null)
  };
  /// Runs the slices of `call`: the unit of work of the memory-lean path (Trax's
  /// run_inner). This default loops over the slices calling forward_unbatched.
  /// SelfAttentionLayer and LSHSelfAttentionLayer override it with their batched version
  /// of forward_unbatched (all the group's heads in one op each; per_head_path = true
  /// turns that off). A subclass that changes forward_unbatched and wants the memory-lean
  /// path to run it should override forward_group to call this one.
  virtual GroupResult forward_group(const GroupCall& call);

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;

  /// Checks the inputs (subclasses add their length rules); with against_weights, also
  /// that d_model and the dtype match the weights. Throws ShapeError / DTypeError /
  /// ValueError saying what was expected.
  virtual void check_inputs(const Signature& input_signature, bool against_weights) const;
  /// The model width the weights were made for (0 before init).
  virtual std::size_t weights_d_model() const = 0;

  /// The reference implementation: plain loops over (example, head).
  Var forward_reference(const Var& x, const Tensor& mask);
  /// Predict mode: Trax's use_predict_mem (the memory of inputs, rolled by
  /// predict_drop_len when full), then incremental_forward_unbatched per (example, head).
  Var forward_predict(const Var& x);
  /// Predict mode's state (mem_end, (memory,), per-slice state) for this input signature
  /// around the stacked per-slice state `inner`.
  State predict_state(const Signature& input_signature, const State& inner) const;
  /// The memory-lean implementation: one custom-VJP node, recomputation per group.
  Var forward_memory_lean(const Var& x, const Tensor& mask);

  /// How many slices the memory-lean path processes at a time for a batch of B.
  long group_size(long batch) const;

  /// Dropout rates at call time: the given rate in train mode, 0 otherwise.
  double effective_rate(double rate) const { return mode_ == Mode::train ? rate : 0.0; }

 private:
  long n_heads_;
  std::optional<long> n_parallel_heads_;
  bool use_reference_code_;
  bool update_state_ = true;
};

// ---- SelfAttention ----------------------------------------------------------------------

/// Trax 1.3.4's SelfAttention arguments and defaults (use_python_loop is not supported).
struct SelfAttentionOptions {
  long n_heads = 2;       ///< attention heads
  long d_qk = 64;         ///< query/key width per head
  long d_v = 64;          ///< value width per head
  bool share_qk = false;  ///< keys = length-normalised queries; the self mask (-1e5) is on
  bool causal = false;    ///< each position attends to itself and earlier ones only
  bool masked = false;    ///< inputs (x, mask [B, L]) instead of x
  std::optional<long> chunk_len = std::nullopt;  ///< none: full attention
  long n_chunks_before = 0;  ///< chunks before each chunk to attend to (wrapping)
  long n_chunks_after = 0;   ///< chunks after each chunk to attend to (wrapping)
  bool bias = false;         ///< biases on q, k, v
  Mode mode = Mode::train;   ///< train, eval or predict
  /// Predict mode: input positions kept in memory (default chunk_len * (1 +
  /// n_chunks_before); required without chunk_len) and how many of them are dropped when
  /// it is full (default chunk_len). Checked when the layer runs in predict mode.
  std::optional<long> predict_mem_len = std::nullopt;
  std::optional<long> predict_drop_len = std::nullopt;  ///< see predict_mem_len
  double attention_dropout = 0.0;  ///< dropout on the attention weights (train mode)
  double output_dropout = 0.0;     ///< dropout on the output (train mode)
  std::optional<long> n_parallel_heads = std::nullopt;  ///< slices per group (memory-lean path)
  bool use_reference_code = false;  ///< run the plain (example, head) loop instead
  /// The memory-lean path calls forward_unbatched head by head instead of its batched
  /// group kernels (same function; for comparisons and benchmarks).
  bool per_head_path = false;
};

/// SelfAttention's weight layout in one place: per head (or stacked over heads) the
/// leaves w_q, w_k (not if share_qk), w_v, w_o, then with bias b_q, b_k (not if
/// share_qk), b_v. Leaf is Var or Tensor; absent leaves are undefined.
template <class Leaf>
struct AttentionWeightsOf {
  Leaf w_q;  ///< [d_model, d_qk]
  Leaf w_k;  ///< [d_model, d_qk]; undefined if share_qk
  Leaf w_v;  ///< [d_model, d_v]
  Leaf w_o;  ///< [d_v, d_model]
  Leaf b_q;  ///< [d_qk]; undefined without bias
  Leaf b_k;  ///< [d_qk]; undefined without bias or if share_qk
  Leaf b_v;  ///< [d_v]; undefined without bias

  /// The names of the leaves, in order.
  static std::vector<std::string> names(bool share_qk, bool bias) {
    std::vector<std::string> n{"w_q"};
    if (!share_qk) n.push_back("w_k");
    n.push_back("w_v");
    n.push_back("w_o");
    if (bias) {
      n.push_back("b_q");
      if (!share_qk) n.push_back("b_k");
      n.push_back("b_v");
    }
    return n;
  }
  /// The leaves by name; ValueError if there are not as many as names() says.
  static AttentionWeightsOf unpack(const std::vector<Leaf>& leaves, bool share_qk, bool bias) {
    const std::size_t want = names(share_qk, bias).size();
    if (leaves.size() != want) {
      throw core::ValueError("attention weights: expected " + std::to_string(want) +
                             " leaves (w_q, [w_k], w_v, w_o[, biases]), got " +
                             std::to_string(leaves.size()));
    }
    AttentionWeightsOf w;
    std::size_t i = 0;
    w.w_q = leaves[i++];
    if (!share_qk) w.w_k = leaves[i++];
    w.w_v = leaves[i++];
    w.w_o = leaves[i++];
    if (bias) {
      w.b_q = leaves[i++];
      if (!share_qk) w.b_k = leaves[i++];
      w.b_v = leaves[i++];
    }
    return w;
  }
  /// The defined leaves in names() order.
  std::vector<Leaf> pack() const {
    std::vector<Leaf> out;
    for (const Leaf* l : {&w_q, &w_k, &w_v, &w_o, &b_q, &b_k, &b_v}) {
      if (l->defined()) out.push_back(*l);
    }
    return out;
  }
};
/// One head's (or a group's) weights as Vars.
using AttentionWeights = AttentionWeightsOf<Var>;

/// Multi-head self-attention, one head at a time (Trax's SelfAttention).
/// Weights per head (stacked on a leading n_heads axis), in this order:
/// @code{.unparsed}
///   w_q [d_model, d_qk], w_k [d_model, d_qk] (not if share_qk), w_v [d_model, d_v],
///   w_o [d_v, d_model], then with bias: b_q [d_qk], b_k [d_qk] (not if share_qk), b_v [d_v].
/// @endcode
/// Kernels are uniform(-lim, lim) with lim = sqrt(6 / (d_model + d * n_heads)) (Glorot
/// over all heads), drawn from split(head_rng, 4) = (q, k, v, o); w_o is the transpose
/// of a [d_model, d_v] draw; biases are zeros. Same draws as Trax for the same key.
///
/// forward_unbatched (one example, one head):
/// @code{.unparsed}
///   attend_rng, output_rng = split(rng)
///   q = x w_q (+ b_q);  k = x w_k (+ b_k) unless share_qk;  v = x w_v (+ b_v)
///   q_info = kv_info = arange(L);  masked: kv_info = arange(L) * where(mask, 1, -1)
///   o = attend(q, k, v, chunk_len, n_chunks_before/after,
///              mask_self_attention(causal, exclude_self = share_qk, masked), dropout)
///   out = dropout_broadcast(o w_o, output_dropout, output_rng)
/// @endcode
///
/// Made by SelfAttention().
class SelfAttentionLayer : public EfficientAttentionBase {
 public:
  /// See SelfAttention(); `name` lets subclasses (LSHSelfAttention) name themselves.
  SelfAttentionLayer(const SelfAttentionOptions& options, SrcLoc where,
                     std::string name = "SelfAttention");
  /// The options the layer was made with.
  const SelfAttentionOptions& options() const { return opt_; }

  std::vector<Tensor> create_weights_unbatched(const Signature& input_signature, Key rng) override;
  UnbatchedResult forward_unbatched(const Var& x, const Tensor& mask,
                                    const std::vector<Var>& weights,
                                    const std::vector<Tensor>& state, Key rng, bool update_state,
                                    long head) override;
  UnbatchedResult incremental_forward_unbatched(const Var& x, long q_start, long q_len,
                                                const std::vector<Var>& weights,
                                                const std::vector<Tensor>& state, Key rng,
                                                long head) override;
  std::pair<long, long> predict_lengths() const override;

 protected:
  /// The batched forward_unbatched over a group's heads (efficient_attention_fast.cpp).
  GroupResult forward_group(const GroupCall& call) override;
  /// @copydoc minitrax::base::Layer::weight_names
  std::vector<std::string> weight_names() const override;
  void check_inputs(const Signature& input_signature, bool against_weights) const override;
  std::size_t weights_d_model() const override;
  /// Trax's _kernel_initializer: float32 uniform(-lim, lim), lim over all heads.
  Tensor kernel_init(const Shape& shape, Key rng) const;

  SelfAttentionOptions opt_;  ///< the options (LSHSelfAttentionLayer sets the shared ones)
};

// ---- LSHSelfAttention ---------------------------------------------------------------------

/// Trax 1.3.4's LSHSelfAttention arguments and defaults (chunk_len required here;
/// use_python_loop is not supported).
struct LSHSelfAttentionOptions {
  long n_heads = 2;     ///< attention heads
  long d_qk = 64;       ///< shared query/key width per head
  long d_v = 64;        ///< value width per head
  bool causal = false;  ///< each position attends to itself and earlier ones only
  bool masked = false;  ///< inputs (x, mask [B, L]) instead of x
  std::optional<long> chunk_len = std::nullopt;  ///< required; n_hashes * L a multiple of it
  long n_chunks_before = 1;  ///< earlier chunks (in sorted order) each chunk attends to
  long n_chunks_after = 0;   ///< later chunks (in sorted order) each chunk attends to
  long n_hashes = 1;         ///< hashing rounds (more: better recall, more work)
  /// {n}: n buckets per round (n even); {f0, f1, ...}: factorised hashing with
  /// f0 * f1 * ... buckets (each factor even).
  std::vector<long> n_buckets = {256};
  Mode mode = Mode::train;  ///< train, eval or predict
  /// Predict mode: input positions kept in memory and dropped when it is full (Trax's
  /// defaults; nullopt means SelfAttention's defaults, chunk_len * (1 + n_chunks_before)
  /// and chunk_len).
  std::optional<long> predict_mem_len = 2048;
  std::optional<long> predict_drop_len = 256;  ///< see predict_mem_len
  double attention_dropout = 0.0;              ///< dropout on the attention weights (train mode)
  double output_dropout = 0.0;                 ///< dropout on the output (train mode)
  std::optional<long> n_parallel_heads = 1;    ///< slices per group (memory-lean path)
  bool use_reference_code = false;             ///< run the plain (example, head) loop instead
  bool per_head_path = false;                  ///< see SelfAttentionOptions::per_head_path
  /// If set, the buckets in the state are zero-padded to n_hashes * this length, so the
  /// state keeps one shape for all sequence lengths up to it.
  std::optional<long> max_length_for_buckets = std::nullopt;
};

/// LSH self-attention (Trax's LSHSelfAttention): queries and keys shared, attention
/// restricted to chunks of positions sorted by their hash bucket.
/// Weights per head: w_q [d_model, d_qk], w_v [d_model, d_v], w_o [d_v, d_model]
/// (SelfAttention's with share_qk, same draws). State per (example, head):
/// @code{.unparsed}
///   buckets int32 [n_hashes * L] (or n_hashes * max_length_for_buckets), and the hash
///   key as int64 [2] (its two uint32 words); stacked [B*H, ...] with B the init batch.
/// @endcode
///
/// forward_unbatched (one example, one head):
/// @code{.unparsed}
///   attend_rng, output_rng = split(rng);  q = x w_q;  v = x w_v
///   update_state: hash_rng, hash_subrng = split(state key)
///                 buckets = hash_vectors(q, hash_subrng, n_buckets, n_hashes, mask)
///                 new state = (buckets, hash_rng)
///   otherwise:    buckets = the stored ones (state unchanged)
///   sticker, undo_sort = sort_buckets(buckets);  st = sticker % L
///   so, slogits = attend(q[st], shared keys, v[st], chunk_len, before/after,
///                        mask_self_attention(causal, exclude_self = true, masked),
///                        q_info = st, kv_info = st (masked: st * where(mask[st], 1, -1)))
///   o = permute_via_gather(so, undo_sort, sticker)
///   logits = permute_via_sort(slogits, sticker, buckets_and_t)
///   n_hashes > 1: o = sum over rounds of o_r * exp(logits_r - logsumexp_r(logits))
///   out = dropout_broadcast(o w_o, output_dropout, output_rng)
/// @endcode
///
/// Made by LSHSelfAttention().
class LSHSelfAttentionLayer : public SelfAttentionLayer {
 public:
  /// See LSHSelfAttention().
  LSHSelfAttentionLayer(const LSHSelfAttentionOptions& options, SrcLoc where);
  /// The options the layer was made with.
  const LSHSelfAttentionOptions& lsh_options() const { return lsh_; }

  /// Hash with these rotations instead of drawing them from the state's key (to
  /// compare with other implementations): [d_qk, n_hashes, rot_size / 2] for all heads,
  /// or [n_heads, d_qk, n_hashes, rot_size / 2] per head, rot_size = sum of the
  /// n_buckets factors. The state's key is still split on every update, so the state
  /// keeps its meaning. An undefined tensor goes back to random rotations.
  void set_fixed_rotations(const Tensor& rotations);
  /// The rotations set by set_fixed_rotations (undefined: random rotations).
  const Tensor& fixed_rotations() const { return fixed_rotations_; }

  std::vector<Tensor> create_state_unbatched(const Signature& input_signature, Key rng) override;
  UnbatchedResult forward_unbatched(const Var& x, const Tensor& mask,
                                    const std::vector<Var>& weights,
                                    const std::vector<Tensor>& state, Key rng, bool update_state,
                                    long head) override;
  /// Predict mode (Trax's incremental_forward_unbatched): a prompt starting the sequence
  /// runs forward_unbatched on it with buckets hashed by the state's key; single positions
  /// attend to the memory positions sharing a bucket with them (see the .cpp). State per
  /// slice: (buckets int32 [n_hashes * predict_mem_len], buckets_idx int32, hash key).
  UnbatchedResult incremental_forward_unbatched(const Var& x, long q_start, long q_len,
                                                const std::vector<Var>& weights,
                                                const std::vector<Tensor>& state, Key rng,
                                                long head) override;
  std::pair<long, long> predict_lengths() const override;

  /// The buckets of a call and the slice's new state (see buckets_of_call).
  struct CallBuckets {
    Tensor buckets;             ///< int32 [n_hashes * seqlen]
    std::vector<Tensor> state;  ///< (buckets, hash key) after the call
  };
  /// The buckets of one (example, head) for a call of length seqlen, and the slice's new
  /// state. update_state: the state's key is split into (hash_rng, hash_subrng); the
  /// rotations (the fixed ones of `head` if set, else drawn from hash_subrng, in `dtype`)
  /// go to hash_with, which returns int32 [n_hashes * seqlen]; the new state is (buckets,
  /// zero-padded to max_length_for_buckets if set, hash_rng). Otherwise the stored
  /// buckets (their first n_hashes * seqlen) and the state unchanged. ShapeError if the
  /// buckets do not cover n_hashes * seqlen positions; ValueError for a malformed state.
  CallBuckets buckets_of_call(const std::vector<Tensor>& state, bool update_state, long seqlen,
                              long head, DType dtype,
                              const std::function<Tensor(const Tensor&)>& hash_with) const;

 protected:
  /// The batched forward_unbatched over a group's heads (efficient_attention_fast.cpp).
  GroupResult forward_group(const GroupCall& call) override;
  void check_inputs(const Signature& input_signature, bool against_weights) const override;

 private:
  /// One position of predict mode (Trax's one-token path), at slot q_start of the memory.
  UnbatchedResult incremental_one_position(const Var& x, long q_start,
                                           const std::vector<Var>& weights,
                                           const std::vector<Tensor>& state, Key rng, long head);
  /// The hash rotations of `head`: the fixed ones if set, else drawn from rng; in dtype.
  Tensor rotations_of(long head, Key rng, DType dtype) const;
  /// Buckets of q [n, d_qk] (mask [n] or undefined) with rotations_of(head, rng, q's dtype).
  Tensor hash(const Tensor& q, Key rng, const Tensor& mask, long head) const;
  LSHSelfAttentionOptions lsh_;
  Tensor fixed_rotations_;
};

// ---- factories -----------------------------------------------------------------------------
// Invalid options are a ValueError naming the option (n_heads, d_qk, d_v > 0; dropout
// rates in [0, 1); chunk_len > 0; n_chunks_before/after >= 0 and only with chunk_len;
// n_parallel_heads a multiple or divisor of n_heads; n_buckets even and >= 2; in predict
// mode: causal, not masked, 0 < predict_drop_len <= predict_mem_len, see predict_lengths).

/// Multi-head self-attention (see SelfAttentionLayer): x [B, L, d_model] (and mask
/// [B, L] when masked) -> [B, L, d_model]. Full attention by default; with chunk_len,
/// each chunk attends to itself and n_chunks_before/after neighbours.
/// @code
/// auto attn = SelfAttention({.n_heads = 4, .d_qk = 16, .d_v = 16, .causal = true,
///                            .chunk_len = 64, .n_chunks_before = 1});
/// attn->init({2, 1024, 64});
/// Var y = (*attn)(x);                          // x [2, 1024, 64] -> y [2, 1024, 64]
/// @endcode
std::shared_ptr<SelfAttentionLayer> SelfAttention(const SelfAttentionOptions& options = {},
                                                  SrcLoc where = SrcLoc::current());
/// LSH self-attention (see LSHSelfAttentionLayer): x [B, L, d_model] (and mask [B, L]
/// when masked) -> [B, L, d_model]; chunk_len is required and n_hashes * L must be a
/// multiple of it (the error says which length to pad to).
/// @code
/// auto lsh = LSHSelfAttention({.n_heads = 4, .d_qk = 16, .d_v = 16, .causal = true,
///                              .chunk_len = 64, .n_hashes = 2, .n_buckets = {32}});
/// lsh->init({2, 1024, 64});
/// Var y = (*lsh)(x);                           // x [2, 1024, 64] -> y [2, 1024, 64]
/// @endcode
std::shared_ptr<LSHSelfAttentionLayer> LSHSelfAttention(const LSHSelfAttentionOptions& options,
                                                        SrcLoc where = SrcLoc::current());

/// A key as stored in LSH state: int64 [2] holding its two uint32 words (hi, lo).
Tensor key_to_tensor(Key key);
/// The key stored in a tensor of 2 int64 words (as key_to_tensor writes).
Key key_from_tensor(const Tensor& t);

}  // namespace minitrax::layers::research
