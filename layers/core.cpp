// minitrax/layers/core.cpp: Dense, Embedding, Dropout, LayerNorm, PositionalEncoding,
// the activations, ShiftRight, Mean and Flatten.
#include "layers/core.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <utility>

#include "autodiff/fastmath.hpp"

namespace minitrax::layers {

namespace fm = minitrax::fastmath;
using base::ShapeDtype;
using base::Var;

namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::size_t positive(const char* layer, const char* what, long v) {
  if (v <= 0) {
    throw ValueError(std::string(layer) + ": " + what + " must be positive, got " +
                     std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

std::size_t non_negative(const char* layer, const char* what, long v) {
  if (v < 0) {
    throw ValueError(std::string(layer) + ": " + what + " must be >= 0, got " + std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

double checked_rate(const char* layer, const char* what, double rate) {
  if (!(rate >= 0.0 && rate < 1.0)) {
    throw ValueError(std::string(layer) + ": " + what + " must be in [0, 1), got " + num(rate));
  }
  return rate;
}

init::Initializer checked_init(const char* layer, const char* what, init::Initializer f) {
  if (!f) throw ValueError(std::string(layer) + ": the " + what + " initializer is empty");
  return f;
}

void require_floating(DType dtype) {
  if (!core::is_floating(dtype)) {
    throw DTypeError("expected a float32 or float64 input, got " +
                     std::string(core::dtype_name(dtype)));
  }
}

void require_rank_at_least(const Shape& shape, std::size_t rank, const char* form) {
  if (shape.size() < rank) {
    throw ShapeError("expected an input of rank >= " + std::to_string(rank) + " " + form +
                     ", got shape " + core::shape_str(shape));
  }
}

void require_weight_dtype(DType input, DType weights) {
  if (input != weights) {
    throw DTypeError("the input is " + std::string(core::dtype_name(input)) +
                     " but the weights are " + std::string(core::dtype_name(weights)) +
                     " (init with " + std::string(core::dtype_name(input)) +
                     " inputs, or convert the layer with base::cast_layer)");
  }
}

// The dtype new weights take for an input signature: its own if floating, else float32.
DType weight_dtype(DType input) {
  return core::is_floating(input) ? input : DType::f32;
}

// Calls an initializer and checks that it kept its promise.
Tensor draw(const init::Initializer& f, const char* what, Key key, const Shape& shape,
            DType dtype) {
  Tensor t = f(key, shape, dtype);
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype) {
    throw ValueError(
        std::string("the ") + what + " initializer returned " +
        (t.defined() ? core::shape_str(t.shape()) + " " + std::string(core::dtype_name(t.dtype()))
                     : std::string("an undefined tensor")) +
        ", expected " + core::shape_str(shape) + " " + std::string(core::dtype_name(dtype)));
  }
  return t;
}

std::vector<long> as_longs(const Shape& shape) {
  return {shape.begin(), shape.end()};
}

}  // namespace

// ---- Dense ---------------------------------------------------------------------------------

DenseLayer::DenseLayer(long n_units, init::Initializer kernel_init, init::Initializer bias_init,
                       bool use_bias, SrcLoc where)
    : base::Layer(1, 1, "Dense", where),
      n_units_(positive("Dense", "n_units", n_units)),
      kernel_init_(checked_init("Dense", "kernel", std::move(kernel_init))),
      bias_init_(use_bias ? checked_init("Dense", "bias", std::move(bias_init))
                          : std::move(bias_init)),
      use_bias_(use_bias) {}

std::string DenseLayer::label() const {
  return "Dense_" + std::to_string(n_units_);
}

std::vector<std::string> DenseLayer::weight_names() const {
  if (use_bias_) return {"w", "b"};
  return {"w"};
}

void DenseLayer::check_input(const Shape& shape, DType dtype) const {
  require_floating(dtype);
  require_rank_at_least(shape, 1, "[..., d_in]");
  if (own_weights().size() == 0) return;  // not initialised: nothing to compare with
  const Var& w = weight(0);
  if (shape.back() != w.dim(0)) {
    throw ShapeError("expected an input [..., " + std::to_string(w.dim(0)) +
                     "] (d_in of the weights w " + core::shape_str(w.shape()) + "), got " +
                     core::shape_str(shape));
  }
  require_weight_dtype(dtype, w.dtype());
}

void DenseLayer::init_weights_and_state(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  require_floating(in.dtype);
  require_rank_at_least(in.shape, 1, "[..., d_in]");
  const DType dtype = weight_dtype(in.dtype);
  const auto keys = core::split(rng_, 2);  // as Trax: rng_w, rng_b
  std::vector<Tensor> ws;
  ws.push_back(draw(kernel_init_, "kernel", keys[0], {in.shape.back(), n_units_}, dtype));
  if (use_bias_) ws.push_back(draw(bias_init_, "bias", keys[1], {n_units_}, dtype));
  set_own_weights(std::move(ws));
  state_ = base::State();
}

Signature DenseLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  Shape out = in.shape;
  out.back() = n_units_;
  return {{out, in.dtype}};
}

Stack DenseLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  check_input(x.shape(), x.dtype());
  return {fm::dense(x, weight(0), use_bias_ ? weight(1) : Var())};
}

// ---- Embedding -----------------------------------------------------------------------------

EmbeddingLayer::EmbeddingLayer(long vocab_size, long d_feature, init::Initializer init,
                               SrcLoc where)
    : base::Layer(1, 1, "Embedding", where),
      vocab_size_(positive("Embedding", "vocab_size", vocab_size)),
      d_feature_(positive("Embedding", "d_feature", d_feature)),
      init_(checked_init("Embedding", "embedding", std::move(init))) {}

std::string EmbeddingLayer::label() const {
  return "Embedding_" + std::to_string(vocab_size_) + "_" + std::to_string(d_feature_);
}

std::vector<std::string> EmbeddingLayer::weight_names() const {
  return {"embeddings"};
}

namespace {
void require_ids(DType dtype) {
  if (dtype != DType::i32 && dtype != DType::i64) {
    throw DTypeError("expected int32 or int64 token ids, got " +
                     std::string(core::dtype_name(dtype)));
  }
}
}  // namespace

void EmbeddingLayer::init_weights_and_state(const Signature& input_signature) {
  require_ids(input_signature.at(0).dtype);
  // As Trax: the layer's rng, unsplit, draws the table; float32 whatever the ids are.
  set_own_weights({draw(init_, "embedding", rng_, {vocab_size_, d_feature_}, DType::f32)});
  state_ = base::State();
}

Signature EmbeddingLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  require_ids(in.dtype);
  Shape out = in.shape;
  out.push_back(d_feature_);
  const DType dtype = own_weights().size() ? weight(0).dtype() : DType::f32;
  return {{out, dtype}};
}

Stack EmbeddingLayer::forward(const Stack& inputs) {
  const Var& ids = inputs[0];
  require_ids(ids.dtype());
  const Var& table = weight(0);
  if (table.ndim() != 2 || table.dim(0) != vocab_size_ || table.dim(1) != d_feature_) {
    throw ShapeError("the embeddings weight must have shape " +
                     core::shape_str({vocab_size_, d_feature_}) + ", got " +
                     core::shape_str(table.shape()));
  }
  core::dispatch_integer(ids.dtype(), "Embedding", [&](auto tag) {
    using T = decltype(tag);
    const T* p = ids.value().data<T>();
    const auto vocab = static_cast<std::int64_t>(vocab_size_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto id = static_cast<std::int64_t>(p[i]);
      if (id < 0 || id >= vocab) {
        throw ValueError("token id " + std::to_string(id) + " (at flat position " +
                         std::to_string(i) + ") is out of range for vocab_size " +
                         std::to_string(vocab_size_) + ": ids must be in [0, " +
                         std::to_string(vocab_size_) + ")");
      }
    }
  });
  return {fm::take(table, ids, 0)};
}

// ---- LayerNorm -----------------------------------------------------------------------------

LayerNormLayer::LayerNormLayer(double epsilon, SrcLoc where)
    : base::Layer(1, 1, "LayerNorm", where), epsilon_(epsilon) {
  if (!(epsilon >= 0.0) || !std::isfinite(epsilon)) {
    throw ValueError("LayerNorm: epsilon must be a finite number >= 0, got " + num(epsilon));
  }
}

std::vector<std::string> LayerNormLayer::weight_names() const {
  return {"scale", "bias"};
}

void LayerNormLayer::check_input(const Shape& shape, DType dtype) const {
  require_floating(dtype);
  require_rank_at_least(shape, 1, "[..., d]");
  if (own_weights().size() == 0) return;
  const Var& scale = weight(0);
  if (shape.back() != scale.dim(0)) {
    throw ShapeError("expected an input [..., " + std::to_string(scale.dim(0)) +
                     "] (the size of the weights scale and bias), got " + core::shape_str(shape));
  }
  require_weight_dtype(dtype, scale.dtype());
}

void LayerNormLayer::init_weights_and_state(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  require_floating(in.dtype);
  require_rank_at_least(in.shape, 1, "[..., d]");
  const Shape d{in.shape.back()};
  set_own_weights({Tensor::ones(d, in.dtype), Tensor::zeros(d, in.dtype)});
  state_ = base::State();
}

Signature LayerNormLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  return {in};
}

Stack LayerNormLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  check_input(x.shape(), x.dtype());
  return {fm::layer_norm(x, weight(0), weight(1), epsilon_)};
}

// ---- PositionalEncoding --------------------------------------------------------------------

PositionalEncodingLayer::PositionalEncodingLayer(long max_len, double dropout, Mode mode,
                                                 std::vector<long> dropout_broadcast_dims,
                                                 SrcLoc where)
    : base::Layer(1, 1, "PositionalEncoding", where),
      max_len_(positive("PositionalEncoding", "max_len", max_len)),
      dropout_(checked_rate("PositionalEncoding", "dropout", dropout)),
      broadcast_dims_(std::move(dropout_broadcast_dims)) {
  for (long a : broadcast_dims_) {
    if (a < -3 || a > 2) {
      throw ValueError(
          "PositionalEncoding: dropout_broadcast_dims must be axes of [1, L, d] "
          "(-3 to 2), got " +
          std::to_string(a));
    }
  }
  mode_ = mode;
}

std::vector<std::string> PositionalEncodingLayer::weight_names() const {
  return {"pe"};
}

void PositionalEncodingLayer::check_input(const Shape& shape, DType dtype) const {
  require_floating(dtype);
  if (shape.size() != 3) {
    throw ShapeError("expected an input [batch, length, d_feature] of rank 3, got shape " +
                     core::shape_str(shape));
  }
  if (shape[1] > max_len_) {
    throw ShapeError("the sequence length " + std::to_string(shape[1]) + " exceeds max_len " +
                     std::to_string(max_len_));
  }
  if (own_weights().size() == 0) return;
  const Var& pe = weight(0);
  if (pe.ndim() != 3 || pe.dim(0) != 1 || pe.dim(1) != max_len_) {
    throw ShapeError("the weight pe must have shape [1, " + std::to_string(max_len_) +
                     ", d_feature], got " + core::shape_str(pe.shape()));
  }
  if (shape[2] != pe.dim(2)) {
    throw ShapeError("expected an input [batch, length, " + std::to_string(pe.dim(2)) +
                     "] (d_feature of the weight pe " + core::shape_str(pe.shape()) + "), got " +
                     core::shape_str(shape));
  }
  require_weight_dtype(dtype, pe.dtype());
}

void PositionalEncodingLayer::init_weights_and_state(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  const std::size_t d = in.shape[2];
  // pe[p, j] = sin(p * f) for even j, cos(p * f) for odd j, f = exp(-(j - j % 2) ln(1e4) / d):
  // Trax's div_term, computed in double as numpy does, then stored in the weights' dtype.
  Tensor pe = Tensor::empty({1, max_len_, d}, DType::f64, "PositionalEncoding");
  double* out = pe.data<double>();
  const double k = -std::log(10000.0) / static_cast<double>(d);
  for (std::size_t p = 0; p < max_len_; ++p) {
    for (std::size_t j = 0; j < d; ++j) {
      const double freq = std::exp(static_cast<double>(j - j % 2) * k);
      const double angle = static_cast<double>(p) * freq;
      out[p * d + j] = j % 2 == 0 ? std::sin(angle) : std::cos(angle);
    }
  }
  set_own_weights({pe.astype(weight_dtype(in.dtype))});
  if (mode_ == Mode::predict) {
    state_ = base::State(Tensor::zeros({in.shape[0]}, DType::i32));
  } else {
    state_ = base::State();
  }
}

Signature PositionalEncodingLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  return {in};
}

Stack PositionalEncodingLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  check_input(x.shape(), x.dtype());
  const Var& pe = weight(0);
  const std::size_t batch = x.dim(0), len = x.dim(1), d = x.dim(2);
  if (mode_ != Mode::predict) {
    Var px = fm::slice(pe, 1, 0, static_cast<long>(len));  // [1, L, d]
    if (mode_ == Mode::train && dropout_ > 0.0) {
      Shape noise{1, len, d};
      for (long a : broadcast_dims_) noise[core::normalize_axis(a, 3, "PositionalEncoding")] = 1;
      const double keep = 1.0 - dropout_;
      px = fm::dropout(px, core::bernoulli(rng_, keep, noise), keep);
    }
    return {x + px};
  }
  // predict: each sequence continues from its own position.
  Tensor pos;
  if (state_.is_leaf() && state_.leaf().defined()) {
    pos = state_.leaf();
    if (pos.dtype() != DType::i32 || pos.shape() != Shape{batch}) {
      throw ShapeError("predict mode: the state must hold int32 positions of shape " +
                       core::shape_str({batch}) + " for this batch, got " +
                       core::shape_str(pos.shape()) + " " +
                       std::string(core::dtype_name(pos.dtype())));
    }
  } else {
    pos = Tensor::zeros({batch}, DType::i32);  // initialised in another mode: start at 0
  }
  const std::int32_t* s = pos.data<std::int32_t>();
  Tensor idx = Tensor::empty({batch, len}, DType::i32);
  Tensor next = Tensor::empty({batch}, DType::i32);
  std::int32_t* ip = idx.data<std::int32_t>();
  for (std::size_t b = 0; b < batch; ++b) {
    if (s[b] < 0 || static_cast<std::size_t>(s[b]) + len > max_len_) {
      throw ValueError("predict mode: sequence " + std::to_string(b) + " is at position " +
                       std::to_string(s[b]) + "; " + std::to_string(len) +
                       " more position(s) would pass max_len " + std::to_string(max_len_));
    }
    for (std::size_t l = 0; l < len; ++l) ip[b * len + l] = s[b] + static_cast<std::int32_t>(l);
    next.data<std::int32_t>()[b] = s[b] + static_cast<std::int32_t>(len);
  }
  Var table = fm::reshape(pe, {static_cast<long>(max_len_), static_cast<long>(d)});
  Var y = x + fm::take(table, idx, 0);  // [B, L, d]
  state_ = base::State(next);
  return {y};
}

// ---- Dropout -------------------------------------------------------------------------------

DropoutLayer::DropoutLayer(double rate, std::vector<long> shared_axes, Mode mode, SrcLoc where)
    : base::Layer(1, 1, "Dropout", where),
      rate_(checked_rate("Dropout", "rate", rate)),
      shared_axes_(std::move(shared_axes)) {
  mode_ = mode;
}

Shape DropoutLayer::mask_shape(const Shape& x_shape) const {
  Shape m = x_shape;
  for (long a : shared_axes_) {
    const long r = static_cast<long>(x_shape.size());
    if (a < -r || a >= r) {
      throw ShapeError("shared axis " + std::to_string(a) +
                       " is out of range for an input of rank " + std::to_string(r) + " (shape " +
                       core::shape_str(x_shape) + ")");
    }
    m[static_cast<std::size_t>(a < 0 ? a + r : a)] = 1;
  }
  return m;
}

void DropoutLayer::init_weights_and_state(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  require_floating(in.dtype);
  (void)mask_shape(in.shape);
  state_ = base::State(Tensor::scalar(rate_, DType::f32));  // as Trax: jnp.array(rate)
}

Signature DropoutLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  require_floating(in.dtype);
  (void)mask_shape(in.shape);
  return {in};
}

Stack DropoutLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  require_floating(x.dtype());
  const Shape m = mask_shape(x.shape());
  if (mode_ != Mode::train || rate_ == 0.0) return {x};
  const double keep = 1.0 - rate_;
  return {fm::dropout(x, core::bernoulli(rng_, keep, m), keep)};
}

// ---- layers from a function and a shape rule ----------------------------------------------

ShapedFnLayer::ShapedFnLayer(std::string name, std::string label, Forward f, ShapeRule rule,
                             Mode mode, SrcLoc where)
    : base::Layer(1, 1, std::move(name), where),
      label_(std::move(label)),
      f_(std::move(f)),
      rule_(std::move(rule)) {
  mode_ = mode;
}

Stack ShapedFnLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  (void)rule_({x.shape(), x.dtype()});  // the same checks, the same messages
  return {f_(x, mode_)};
}

Signature ShapedFnLayer::forward_signature(const Signature& input_signature) {
  return {rule_(input_signature.at(0))};
}

namespace {

ShapeDtype same_floating(const ShapeDtype& in) {
  require_floating(in.dtype);
  return in;
}

LayerPtr elementwise(const char* name, Var (*f)(const Var&), SrcLoc where) {
  return std::make_shared<ShapedFnLayer>(
      name, name, [f](const Var& x, Mode) { return f(x); }, same_floating, Mode::train, where);
}

// Normalises an axis of a layer's input, with a ShapeError naming both.
std::size_t input_axis(long axis, const Shape& shape) {
  const long r = static_cast<long>(shape.size());
  if (axis < -r || axis >= r) {
    throw ShapeError("axis " + std::to_string(axis) + " is out of range for an input of rank " +
                     std::to_string(r) + " (shape " + core::shape_str(shape) + ")");
  }
  return static_cast<std::size_t>(axis < 0 ? axis + r : axis);
}

}  // namespace

// ---- factories -----------------------------------------------------------------------------

LayerPtr Dense(long n_units, init::Initializer kernel_init, init::Initializer bias_init,
               bool use_bias, SrcLoc where) {
  return std::make_shared<DenseLayer>(n_units, std::move(kernel_init), std::move(bias_init),
                                      use_bias, where);
}

LayerPtr Embedding(long vocab_size, long d_feature, init::Initializer init, SrcLoc where) {
  return std::make_shared<EmbeddingLayer>(vocab_size, d_feature, std::move(init), where);
}

LayerPtr Dropout(double rate, std::vector<long> shared_axes, Mode mode, SrcLoc where) {
  return std::make_shared<DropoutLayer>(rate, std::move(shared_axes), mode, where);
}

LayerPtr LayerNorm(double epsilon, SrcLoc where) {
  return std::make_shared<LayerNormLayer>(epsilon, where);
}

LayerPtr PositionalEncoding(long max_len, double dropout, Mode mode,
                            std::vector<long> dropout_broadcast_dims, SrcLoc where) {
  return std::make_shared<PositionalEncodingLayer>(max_len, dropout, mode,
                                                   std::move(dropout_broadcast_dims), where);
}

LayerPtr Relu(SrcLoc where) {
  return elementwise("Relu", fm::relu, where);
}
LayerPtr Gelu(SrcLoc where) {
  return elementwise("Gelu", fm::gelu, where);
}
LayerPtr FastGelu(SrcLoc where) {
  return elementwise("FastGelu", fm::gelu_tanh, where);
}
LayerPtr Sigmoid(SrcLoc where) {
  return elementwise("Sigmoid", fm::sigmoid, where);
}
LayerPtr Tanh(SrcLoc where) {
  return elementwise("Tanh", fm::tanh, where);
}

LayerPtr LogSoftmax(long axis, SrcLoc where) {
  auto rule = [axis](const ShapeDtype& in) {
    require_floating(in.dtype);
    require_rank_at_least(in.shape, 1, "[..., n]");
    (void)input_axis(axis, in.shape);
    return in;
  };
  auto f = [axis](const Var& x, Mode) {
    const std::size_t a = input_axis(axis, x.shape());
    if (a + 1 == x.ndim()) return fm::log_softmax(x);  // the fused last-axis kernel
    return x - fm::logsumexp(x, {static_cast<long>(a)}, /*keepdims=*/true);
  };
  return std::make_shared<ShapedFnLayer>("LogSoftmax", "LogSoftmax", f, rule, Mode::train, where);
}

LayerPtr ShiftRight(long n_positions, Mode mode, SrcLoc where) {
  const std::size_t n = non_negative("ShiftRight", "n_positions", n_positions);
  auto rule = [](const ShapeDtype& in) {
    require_rank_at_least(in.shape, 2, "[batch, length, ...]");
    return in;
  };
  auto f = [n](const Var& x, Mode m) {
    if (m == Mode::predict || n == 0) return x;  // predict: one position at a time
    std::vector<std::pair<std::size_t, std::size_t>> pads(x.ndim(), {0, 0});
    pads[1] = {n, 0};
    return fm::slice(fm::pad(x, pads), 1, 0, static_cast<long>(x.dim(1)));
  };
  return std::make_shared<ShapedFnLayer>("ShiftRight", "ShiftRight(" + std::to_string(n) + ")", f,
                                         rule, mode, where);
}

LayerPtr Mean(long axis, bool keepdims, SrcLoc where) {
  auto rule = [axis, keepdims](const ShapeDtype& in) {
    require_floating(in.dtype);
    const std::size_t a = input_axis(axis, in.shape);
    ShapeDtype out = in;
    if (keepdims) {
      out.shape[a] = 1;
    } else {
      out.shape.erase(out.shape.begin() + static_cast<long>(a));
    }
    return out;
  };
  auto f = [axis, keepdims](const Var& x, Mode) { return fm::mean(x, {axis}, keepdims); };
  return std::make_shared<ShapedFnLayer>("Mean", "Mean", f, rule, Mode::train, where);
}

LayerPtr Flatten(long n_axes_to_keep, SrcLoc where) {
  const std::size_t keep = non_negative("Flatten", "n_axes_to_keep", n_axes_to_keep);
  auto rule = [keep](const ShapeDtype& in) {
    if (in.shape.size() <= keep) {
      throw ShapeError("the input rank (" + std::to_string(in.shape.size()) +
                       ") must exceed the number of axes to keep (" + std::to_string(keep) +
                       "), got shape " + core::shape_str(in.shape));
    }
    Shape out(in.shape.begin(), in.shape.begin() + static_cast<long>(keep));
    std::size_t rest = 1;
    for (std::size_t i = keep; i < in.shape.size(); ++i) rest *= in.shape[i];
    out.push_back(rest);
    return ShapeDtype{out, in.dtype};
  };
  auto f = [rule](const Var& x, Mode) {
    return fm::reshape(x, as_longs(rule({x.shape(), x.dtype()}).shape));
  };
  return std::make_shared<ShapedFnLayer>("Flatten", "Flatten_keep" + std::to_string(keep), f, rule,
                                         Mode::train, where);
}

}  // namespace minitrax::layers
