// minitrax/layers/attention.cpp: dense multi-head attention, Trax 1.3.4's structure.
#include "layers/attention.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <type_traits>
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "layers/chunked_attention.hpp"
#include "layers/combinators.hpp"

namespace minitrax::layers {

namespace fm = minitrax::fastmath;
using base::ShapeDtype;

namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string shape_str(const Shape& s) {
  return core::shape_str(s);
}
std::string dtype_str(DType d) {
  return std::string(core::dtype_name(d));
}

std::size_t positive(const char* who, const char* what, long v) {
  if (v <= 0) {
    throw ValueError(std::string(who) + ": " + what + " must be positive, got " +
                     std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

double checked_rate(const char* who, double rate) {
  if (!(rate >= 0.0 && rate < 1.0)) {
    throw ValueError(std::string(who) + ": dropout must be in [0, 1), got " + num(rate));
  }
  return rate;
}

// d_feature and n_heads positive, d_feature a multiple of n_heads.
void check_heads(const char* who, long d_feature, long n_heads) {
  positive(who, "d_feature", d_feature);
  positive(who, "n_heads", n_heads);
  if (d_feature % n_heads != 0) {
    throw ValueError(std::string(who) + ": d_feature (" + std::to_string(d_feature) +
                     ") must be a multiple of n_heads (" + std::to_string(n_heads) + ")");
  }
}

void require_floating(const char* what, DType dtype) {
  if (!core::is_floating(dtype)) {
    throw DTypeError(std::string("expected float32 or float64 ") + what + ", got " +
                     dtype_str(dtype));
  }
}

// q, k and v share one floating dtype.
void check_qkv_dtypes(DType q, DType k, DType v) {
  require_floating("queries", q);
  if (k != q || v != q) {
    throw DTypeError("q, k and v must have one dtype, got q " + dtype_str(q) + ", k " +
                     dtype_str(k) + ", v " + dtype_str(v));
  }
}

// The mask must broadcast to the logits' shape without enlarging them.
void check_mask(const Shape& mask, const Shape& logits, const char* form) {
  Shape b;
  try {
    b = core::broadcast_shapes(mask, logits, "attention mask");
  } catch (const ShapeError&) {
    b.clear();
  }
  if (mask.size() > logits.size() || b != logits) {
    throw ShapeError("expected a mask that broadcasts to the attention logits " +
                     std::string(form) + " = " + shape_str(logits) +
                     " (e.g. [batch, 1, 1, keys] from PaddingMask)" + ", got " + shape_str(mask));
  }
}

std::vector<long> as_longs(const Shape& s) {
  return {s.begin(), s.end()};
}

// dot_product_attention's computation through the chunked attention kernel
// (layers/chunked_attention.hpp), without [G, L, L] scores: q, k [G, L, d], v [G, L, dv]
// with G = batch * heads slices in order (b * heads + h); kv_info int32 [R, L] (slice s
// uses row s / (G / R)), negative where a key is masked out, or undefined (no padding
// mask); `causal`: query i attends to keys j <= i (tiles of the future are skipped).
// The same arithmetic as dot_product_attention up to rounding: (q / sqrt(d)) k^T,
// masked scores REPLACED by -1e9 (a fully masked row attends uniformly), softmax, the
// per-element dropout mask of bernoulli(rng, 1 - rate, [G, L, L]) (train mode only),
// times v. Returns [G, L, dv].
Var kernel_attention(const Var& q, const Var& k, const Var& v, const Tensor& kv_info, bool causal,
                     double dropout, Mode mode, core::Key rng) {
  const std::size_t len = q.dim(1);
  kernels::ChunkedAttentionSpec spec;
  spec.chunk = static_cast<long>(len);
  spec.replace_masked = true;
  if (causal) {
    Tensor positions = Tensor::empty({1, len}, DType::i32);
    std::int32_t* p = positions.data<std::int32_t>();
    for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<std::int32_t>(i);
    spec.causal = true;
    spec.ordered = true;  // q_info = kv_info = arange: the future of a tile is skipped
    spec.q_info = positions;
    spec.kv_info = positions;
  } else if (kv_info.defined()) {
    spec.masked = true;
    spec.q_info = Tensor::zeros(kv_info.shape(), DType::i32);
    spec.kv_info = kv_info;
  }
  if (mode == Mode::train && dropout > 0.0) {
    spec.element_dropout = dropout;
    spec.element_dropout_rng = rng;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.dim(-1)));
  return kernels::chunked_attention(q * scale, k, v, spec).out;
}

// A key-padding mask for kernel_attention: the mask (validated by check_mask against
// [batch, n_heads, L, L]) as int32 [R, L] (R = 1 or batch), 0 where a key may be
// attended and -1 where not. Undefined when the mask has another form (it varies over
// heads or queries): the caller then keeps the materialising path.
Tensor padding_rows(const Tensor& mask, std::size_t batch, std::size_t len) {
  const Shape& m = mask.shape();
  const std::size_t r = m.size();
  for (std::size_t a = 0; a + 1 < r; ++a) {
    const bool batch_axis = r == 4 && a == 0 && m[a] == batch;
    if (m[a] != 1 && !batch_axis) return Tensor();
  }
  const std::size_t rows = r == 4 ? m[0] : 1;
  if (r == 0 || m[r - 1] != len) {  // a scalar or a key axis of 1: broadcast over keys
    return Tensor();
  }
  const std::vector<double> values = mask.astype(DType::f64).to_vector<double>();
  Tensor info = Tensor::empty({rows, len}, DType::i32);
  std::int32_t* p = info.data<std::int32_t>();
  for (std::size_t i = 0; i < rows * len; ++i) p[i] = values[i] != 0.0 ? 0 : -1;
  return info;
}

}  // namespace

// ---- the attention computation -----------------------------------------------------------

Tensor causal_mask(std::size_t n_queries, std::size_t n_keys) {
  if (n_queries > n_keys) {
    throw ValueError("causal_mask: n_queries (" + std::to_string(n_queries) +
                     ") must not exceed n_keys (" + std::to_string(n_keys) + ")");
  }
  Tensor m = Tensor::empty({1, n_queries, n_keys}, DType::i32, "causal_mask");
  std::int32_t* p = m.data<std::int32_t>();
  const std::size_t offset = n_keys - n_queries;
  for (std::size_t i = 0; i < n_queries; ++i) {
    for (std::size_t j = 0; j < n_keys; ++j) p[i * n_keys + j] = j <= offset + i ? 1 : 0;
  }
  return m;
}

Var dot_product_attention(const Var& q, const Var& k, const Var& v, const Var& mask, double dropout,
                          Mode mode, core::Key rng) {
  check_qkv_dtypes(q.dtype(), k.dtype(), v.dtype());
  const std::size_t r = q.ndim();
  bool ok =
      r >= 2 && k.ndim() == r && v.ndim() == r && k.dim(-1) == q.dim(-1) && v.dim(-2) == k.dim(-2);
  for (std::size_t a = 0; ok && a + 2 < r; ++a) {  // the leading (batch, head) axes
    ok = k.shape()[a] == q.shape()[a] && v.shape()[a] == q.shape()[a];
  }
  if (!ok) {
    throw ShapeError(
        "dot_product_attention: expected q [..., Lq, d], k [..., Lk, d], v [..., Lk, "
        "dv] with the same leading axes, got q " +
        shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()));
  }
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw ValueError("dot_product_attention: dropout must be in [0, 1), got " + num(dropout));
  }
  Shape logits = q.shape();
  logits.back() = k.dim(-2);
  if (mask.defined()) check_mask(mask.shape(), logits, "[..., Lq, Lk]");

  const double scale = 1.0 / std::sqrt(static_cast<double>(q.dim(-1)));
  Var dots = fm::matmul(q * scale, k, core::Trans::N, core::Trans::T);  // [..., Lq, Lk]
  if (mask.defined()) dots = fm::where(mask, dots, Tensor::scalar(kMaskValue, dots.dtype()));
  Var w = fm::softmax(dots);
  if (mode == Mode::train && dropout > 0.0) {
    const double keep = 1.0 - dropout;
    w = fm::dropout(w, core::bernoulli(rng, keep, w.shape()), keep);
  }
  return fm::matmul(w, v);
}

// ---- PureAttention -----------------------------------------------------------------------

PureAttentionLayer::PureAttentionLayer(long n_heads, double dropout, Mode mode, SrcLoc where)
    : base::Layer(4, 2, "PureAttention", where),
      n_heads_(positive("PureAttention", "n_heads", n_heads)),
      dropout_(checked_rate("PureAttention", dropout)) {
  mode_ = mode;
}

void PureAttentionLayer::check_inputs(const Signature& sig) const {
  const Shape &q = sig.at(0).shape, &k = sig.at(1).shape, &v = sig.at(2).shape;
  check_qkv_dtypes(sig[0].dtype, sig[1].dtype, sig[2].dtype);
  if (q.size() != 3 || k.size() != 3 || v.size() != 3 || k[0] != q[0] || v[0] != q[0] ||
      k[2] != q[2] || v[2] != q[2] || v[1] != k[1]) {
    throw ShapeError("expected q [batch, Lq, d], k [batch, Lk, d], v [batch, Lk, d], got q " +
                     shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
  }
  if (q[2] % n_heads_ != 0) {
    throw ShapeError("the feature width of q, k and v (" + std::to_string(q[2]) +
                     ") must be a multiple of n_heads (" + std::to_string(n_heads_) + ")");
  }
  check_mask(sig.at(3).shape, {q[0], n_heads_, q[1], k[1]}, "[batch, n_heads, Lq, Lk]");
}

Signature PureAttentionLayer::forward_signature(const Signature& input_signature) {
  check_inputs(input_signature);
  const ShapeDtype& q = input_signature[0];
  return {q, input_signature[3]};
}

Stack PureAttentionLayer::forward(const Stack& inputs) {
  check_inputs(base::signature_of(inputs));
  const Var &q = inputs[0], &k = inputs[1], &v = inputs[2], &mask = inputs[3];
  const auto batch = static_cast<long>(q.dim(0));
  const auto heads = static_cast<long>(n_heads_);
  const auto d = static_cast<long>(q.dim(2));
  const long d_head = d / heads;
  // [B, L, d] -> [B, H, L, d_head] and back, as Trax's _split_into_heads/_merge_heads.
  // The lengths are given, not inferred (-1): with batch 0 there is nothing to infer from.
  auto split = [&](const Var& x) {
    const auto len = static_cast<long>(x.dim(1));
    return fm::transpose(fm::reshape(x, {batch, len, heads, d_head}), {0, 2, 1, 3});
  };
  // Through the chunked kernel (no [B, H, L, L] scores) when the keys are the queries'
  // length and the mask is a key-padding mask ([B or 1, 1, 1, L], PaddingMask's form);
  // other masks (varying over heads or queries) and Lq != Lk keep the materialising
  // dot_product_attention.
  const std::size_t len = q.dim(1);
  const bool sized = batch > 0 && len > 0 && d_head > 0 && k.dim(1) == len;
  const Tensor kv_info = sized ? padding_rows(mask.value(), q.dim(0), len) : Tensor();
  Var out;
  if (kv_info.defined()) {
    auto slices = [&](const Var& x) {
      return fm::reshape(split(x), {batch * heads, static_cast<long>(len), d_head});
    };
    out = fm::reshape(
        kernel_attention(slices(q), slices(k), slices(v), kv_info, false, dropout_, mode_, rng_),
        {batch, heads, static_cast<long>(len), d_head});
  } else {
    out = dot_product_attention(split(q), split(k), split(v), mask, dropout_, mode_, rng_);
  }
  Var merged =
      fm::reshape(fm::transpose(out, {0, 2, 1, 3}), {batch, static_cast<long>(q.dim(1)), d});
  return {merged, mask};
}

// ---- DotProductCausalAttention -----------------------------------------------------------

DotProductCausalAttentionLayer::DotProductCausalAttentionLayer(double dropout, Mode mode,
                                                               long max_len, SrcLoc where)
    : base::Layer(3, 1, "DotProductCausalAttention", where),
      dropout_(checked_rate("DotProductCausalAttention", dropout)),
      max_len_(positive("DotProductCausalAttention", "max_len", max_len)) {
  mode_ = mode;
}

void DotProductCausalAttentionLayer::check_inputs(const Signature& sig) const {
  const Shape &q = sig.at(0).shape, &k = sig.at(1).shape, &v = sig.at(2).shape;
  check_qkv_dtypes(sig[0].dtype, sig[1].dtype, sig[2].dtype);
  if (q.size() != 3 || k.size() != 3 || v.size() != 3 || k[0] != q[0] || v[0] != q[0] ||
      k[1] != q[1] || v[1] != q[1] || k[2] != q[2]) {
    throw ShapeError(
        "expected q, k [batch * n_heads, L, d_head] and v [batch * n_heads, L, "
        "d_v] of one batch and length, got q " +
        shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
  }
}

void DotProductCausalAttentionLayer::init_weights_and_state(const Signature& input_signature) {
  check_inputs(input_signature);
  if (mode_ == Mode::predict) {
    const ShapeDtype &k = input_signature[1], &v = input_signature[2];
    base::State s;
    s.push_back(base::State(Tensor::zeros({k.shape[0], max_len_, k.shape[2]}, k.dtype)));
    s.push_back(base::State(Tensor::zeros({v.shape[0], max_len_, v.shape[2]}, v.dtype)));
    s.push_back(base::State(Tensor::scalar(0, DType::i32)));
    state_ = std::move(s);
  } else {
    state_ = base::State();
  }
}

Signature DotProductCausalAttentionLayer::forward_signature(const Signature& input_signature) {
  check_inputs(input_signature);
  ShapeDtype out = input_signature[0];
  out.shape[2] = input_signature[2].shape[2];
  return {out};
}

Stack DotProductCausalAttentionLayer::forward(const Stack& inputs) {
  check_inputs(base::signature_of(inputs));
  const Var &q = inputs[0], &k = inputs[1], &v = inputs[2];
  // Predict mode (the key/value cache) keeps the materialising dot_product_attention.
  if (mode_ == Mode::predict) return predict_forward(q, k, v);
  const std::size_t len = q.dim(1);
  if (q.size() == 0 || v.size() == 0) {  // nothing to attend: the materialising path's empties
    return {dot_product_attention(q, k, v, Var(causal_mask(len, len)), dropout_, mode_, rng_)};
  }
  // Through the chunked kernel: memory O(L * d) per slice, not [N, L, L] scores.
  return {kernel_attention(q, k, v, Tensor(), true, dropout_, mode_, rng_)};
}

Stack DotProductCausalAttentionLayer::predict_forward(const Var& q, const Var& k, const Var& v) {
  const std::size_t n = q.dim(0), len = q.dim(1);
  const Shape k_cache_shape{n, max_len_, k.dim(2)}, v_cache_shape{n, max_len_, v.dim(2)};
  Tensor k_cache, v_cache;
  std::size_t index = 0;
  const bool has_state = !state_.is_leaf() && state_.size() == 3;
  if (has_state) {
    k_cache = state_[0].leaf();
    v_cache = state_[1].leaf();
    const Tensor& idx = state_[2].leaf();
    if (k_cache.shape() != k_cache_shape || v_cache.shape() != v_cache_shape ||
        k_cache.dtype() != k.dtype() || v_cache.dtype() != v.dtype() || idx.size() != 1 ||
        idx.dtype() != DType::i32) {
      throw ShapeError("predict mode: the state must hold keys " + shape_str(k_cache_shape) +
                       ", values " + shape_str(v_cache_shape) + " (" + dtype_str(k.dtype()) +
                       ") and an int32 index for these inputs, got keys " +
                       shape_str(k_cache.shape()) + " " + dtype_str(k_cache.dtype()) + ", values " +
                       shape_str(v_cache.shape()) + ", index " + shape_str(idx.shape()) + " " +
                       dtype_str(idx.dtype()));
    }
    const auto i = idx.item<std::int32_t>();
    if (i < 0)
      throw ValueError("predict mode: the state's index is negative (" + std::to_string(i) + ")");
    index = static_cast<std::size_t>(i);
  } else {  // initialised in another mode: start an empty cache
    k_cache = Tensor::zeros(k_cache_shape, k.dtype());
    v_cache = Tensor::zeros(v_cache_shape, v.dtype());
  }
  if (index + len > max_len_) {
    throw ValueError("predict mode: the cache holds " + std::to_string(index) + " of " +
                     std::to_string(max_len_) + " positions; " + std::to_string(len) +
                     " more would pass max_len");
  }
  const auto lo = static_cast<long>(index), hi = static_cast<long>(index + len);
  // Attend over the cached past and the new positions (causally among themselves).
  auto with_past = [&](const Tensor& cache, const Var& x) {
    return index == 0 ? x : fm::concatenate({Var(core::slice(cache, 1, 0, lo)), x}, 1);
  };
  Var out = dot_product_attention(q, with_past(k_cache, k), with_past(v_cache, v),
                                  Var(causal_mask(len, index + len)), dropout_, mode_, rng_);
  // The new cache: the old one with the new keys and values written at [index, index + len).
  auto updated = [&](const Tensor& cache, const Var& x) {
    std::vector<Tensor> parts;
    if (index > 0) parts.push_back(core::slice(cache, 1, 0, lo));
    parts.push_back(x.value());
    if (index + len < max_len_) {
      parts.push_back(core::slice(cache, 1, hi, static_cast<long>(max_len_)));
    }
    return parts.size() == 1 ? parts[0].clone() : core::concatenate(parts, 1);
  };
  base::State s;
  s.push_back(base::State(updated(k_cache, k)));
  s.push_back(base::State(updated(v_cache, v)));
  s.push_back(base::State(Tensor::scalar(static_cast<double>(index + len), DType::i32)));
  state_ = std::move(s);
  return {out};
}

// ---- head splitting and masks ---------------------------------------------------------------

LayerPtr SplitIntoHeads(long n_heads, SrcLoc where) {
  const std::size_t h = positive("SplitIntoHeads", "n_heads", n_heads);
  auto rule = [h](const ShapeDtype& in) {
    if (in.shape.size() != 3 || in.shape[2] % h != 0) {
      throw ShapeError("expected an input [batch, length, d] with d a multiple of n_heads (" +
                       std::to_string(h) + "), got " + shape_str(in.shape));
    }
    return ShapeDtype{{in.shape[0] * h, in.shape[1], in.shape[2] / h}, in.dtype};
  };
  auto f = [h, rule](const Var& x, Mode) {
    const Shape out = rule({x.shape(), x.dtype()}).shape;
    const auto b = static_cast<long>(x.dim(0)), l = static_cast<long>(x.dim(1));
    const auto hh = static_cast<long>(h), dh = static_cast<long>(out[2]);
    // [B, L, d] -> [B, L, H, dh] -> [B, H, L, dh] -> [B * H, L, dh]
    return fm::reshape(fm::transpose(fm::reshape(x, {b, l, hh, dh}), {0, 2, 1, 3}), as_longs(out));
  };
  return std::make_shared<ShapedFnLayer>("SplitIntoHeads", "SplitIntoHeads", f, rule, Mode::train,
                                         where);
}

LayerPtr MergeHeads(long n_heads, SrcLoc where) {
  const std::size_t h = positive("MergeHeads", "n_heads", n_heads);
  auto rule = [h](const ShapeDtype& in) {
    if (in.shape.size() != 3 || in.shape[0] % h != 0) {
      throw ShapeError("expected an input [batch * n_heads, length, d_head] with n_heads = " +
                       std::to_string(h) + ", got " + shape_str(in.shape));
    }
    return ShapeDtype{{in.shape[0] / h, in.shape[1], in.shape[2] * h}, in.dtype};
  };
  auto f = [h, rule](const Var& x, Mode) {
    const Shape out = rule({x.shape(), x.dtype()}).shape;
    const auto l = static_cast<long>(x.dim(1)), dh = static_cast<long>(x.dim(2));
    // [B * H, L, dh] -> [B, H, L, dh] -> [B, L, H, dh] -> [B, L, H * dh]
    return fm::reshape(
        fm::transpose(fm::reshape(x, {static_cast<long>(out[0]), static_cast<long>(h), l, dh}),
                      {0, 2, 1, 3}),
        as_longs(out));
  };
  return std::make_shared<ShapedFnLayer>("MergeHeads", "MergeHeads", f, rule, Mode::train, where);
}

LayerPtr PaddingMask(long pad, SrcLoc where) {
  auto rule = [](const ShapeDtype& in) {
    if (in.shape.size() != 2) {
      throw ShapeError("expected ids [batch, length] of rank 2, got " + shape_str(in.shape));
    }
    return ShapeDtype{{in.shape[0], 1, 1, in.shape[1]}, DType::i32};
  };
  auto f = [pad, rule](const Var& x, Mode) {
    const Shape out = rule({x.shape(), x.dtype()}).shape;
    const Tensor is_pad =
        core::equal_to(x.value(), Tensor::scalar(static_cast<double>(pad), x.dtype()));
    return Var(core::add(core::neg(is_pad), 1.0).reshape(out));  // 1 - (x == pad)
  };
  return std::make_shared<ShapedFnLayer>("PaddingMask", "PaddingMask(" + std::to_string(pad) + ")",
                                         f, rule, Mode::train, where);
}

// ---- the composite layers ---------------------------------------------------------------

namespace {

LayerPtr dense(long n, SrcLoc where) {
  return Dense(n, init::GlorotUniform(), init::RandomNormal(1e-6), true, where);
}

// Attention and CausalAttention: a Serial (the same repr, names and weights) that first
// checks its activations, so a wrong input is reported in terms of x, not of the q, k
// and v it would have become.
class SelfAttentionSerial : public SerialLayer {
 public:
  // `kind` ("Attention", "CausalAttention") names the layer in errors; the repr and the
  // weight names stay Trax's ("Serial").
  SelfAttentionSerial(std::vector<LayerPtr> layers, std::string kind, SrcLoc where)
      : SerialLayer(std::move(layers), "Serial", where), kind_(std::move(kind)) {}

 protected:
  Stack forward(const Stack& inputs) override {
    return named([&] {
      check_x({inputs.at(0).shape(), inputs[0].dtype()});
      return SerialLayer::forward(inputs);
    });
  }
  void init_weights_and_state(const Signature& input_signature) override {
    named([&] {
      check_x(input_signature.at(0));
      SerialLayer::init_weights_and_state(input_signature);
      return 0;
    });
  }
  Signature forward_signature(const Signature& input_signature) override {
    return named([&] {
      check_x(input_signature.at(0));
      return SerialLayer::forward_signature(input_signature);
    });
  }

 private:
  // Runs f; errors get this layer's kind in front, so they read "CausalAttention: ...".
  template <class F>
  std::invoke_result_t<F> named(F&& f) {
    try {
      return f();
    } catch (const base::LayerError& e) {
      throw base::LayerError(kind_ + ": " + e.what(), e.original());
    } catch (const core::ShapeError& e) {
      throw ShapeError(kind_ + ": " + e.what());
    } catch (const core::DTypeError& e) {
      throw core::DTypeError(kind_ + ": " + e.what());
    }
  }
  static void check_x(const ShapeDtype& x) {
    require_floating("activations", x.dtype);
    if (x.shape.size() != 3) {
      throw ShapeError("expected activations x [batch, length, width] of rank 3, got " +
                       shape_str(x.shape));
    }
  }
  std::string kind_;
};

}  // namespace

LayerPtr PureAttention(long n_heads, double dropout, Mode mode, SrcLoc where) {
  return std::make_shared<PureAttentionLayer>(n_heads, dropout, mode, where);
}

LayerPtr DotProductCausalAttention(double dropout, Mode mode, long max_len, SrcLoc where) {
  return std::make_shared<DotProductCausalAttentionLayer>(dropout, mode, max_len, where);
}

LayerPtr AttentionQKV(long d_feature, long n_heads, double dropout, Mode mode, SrcLoc where) {
  check_heads("AttentionQKV", d_feature, n_heads);
  checked_rate("AttentionQKV", dropout);
  LayerPtr layer = Serial(
      {Parallel({dense(d_feature, where), dense(d_feature, where), dense(d_feature, where)}, where),
       PureAttention(n_heads, dropout, mode, where), dense(d_feature, where)},
      where);
  layer->set_mode(mode);
  return layer;
}

LayerPtr Attention(long d_feature, long n_heads, double dropout, Mode mode, SrcLoc where) {
  check_heads("Attention", d_feature, n_heads);
  checked_rate("Attention", dropout);
  LayerPtr layer = std::make_shared<SelfAttentionSerial>(
      std::vector<LayerPtr>{Dup(where), Dup(where),
                            AttentionQKV(d_feature, n_heads, dropout, mode, where)},
      "Attention", where);
  layer->set_mode(mode);
  return layer;
}

LayerPtr CausalAttention(long d_feature, long n_heads, double dropout, Mode mode, long max_len,
                         SrcLoc where) {
  check_heads("CausalAttention", d_feature, n_heads);
  checked_rate("CausalAttention", dropout);
  auto projected_heads = [&] {
    return Serial({dense(d_feature, where), SplitIntoHeads(n_heads, where)}, where);
  };
  LayerPtr layer = std::make_shared<SelfAttentionSerial>(
      std::vector<LayerPtr>{
          Branch({projected_heads(), projected_heads(), projected_heads()}, where),
          DotProductCausalAttention(dropout, mode, max_len, where), MergeHeads(n_heads, where),
          dense(d_feature, where)},
      "CausalAttention", where);
  layer->set_mode(mode);
  return layer;
}

}  // namespace minitrax::layers
