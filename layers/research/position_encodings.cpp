// minitrax/layers/research/position_encodings.cpp: AxialPositionalEncoding.
#include "layers/research/position_encodings.hpp"

#include <cstdint>
#include <limits>
#include <sstream>
#include <utility>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using base::ShapeDtype;
using base::Var;
using core::DTypeError;
using core::ShapeError;
using core::ValueError;

namespace {

constexpr const char* kName = "AxialPositionalEncoding";

std::string list_str(const std::vector<long>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  return s + "]";
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Every entry > 0, as sizes; a ValueError naming the list otherwise.
Shape positive_sizes(const char* what, const std::vector<long>& v) {
  Shape out;
  for (long e : v) {
    if (e <= 0) {
      throw ValueError(std::string(kName) + ": every " + what + " entry must be positive, got " +
                       what + " " + list_str(v));
    }
    out.push_back(static_cast<std::size_t>(e));
  }
  return out;
}

std::string dtype_str(DType d) {
  return std::string(core::dtype_name(d));
}

}  // namespace

AxialPositionalEncodingLayer::AxialPositionalEncodingLayer(
    std::vector<long> shape, std::vector<long> d_embs, init::Initializer kernel_init,
    double dropout, std::vector<long> dropout_broadcast_dims, Mode mode, SrcLoc where)
    : base::Layer(1, 1, kName, where),
      kernel_init_(std::move(kernel_init)),
      dropout_(dropout),
      broadcast_dims_(std::move(dropout_broadcast_dims)) {
  const std::string me = std::string(kName) + ": ";
  if (shape.size() != d_embs.size()) {
    throw ValueError(me + "shape and d_embs must have one entry per axis each, got shape " +
                     list_str(shape) + " (" + std::to_string(shape.size()) + " axes) and d_embs " +
                     list_str(d_embs) + " (" + std::to_string(d_embs.size()) + " entries)");
  }
  if (shape.empty()) throw ValueError(me + "shape must have at least one axis, got []");
  shape_ = positive_sizes("shape", shape);
  d_embs_ = positive_sizes("d_embs", d_embs);
  // Positions are int32 in predict mode's state: the grid must fit.
  const auto limit = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  for (std::size_t s : shape_) {
    if (max_len_ > limit / s) {
      throw ValueError(me + "prod(shape) must be at most " + std::to_string(limit) +
                       " (positions are int32), got shape " + list_str(shape));
    }
    max_len_ *= s;
  }
  for (std::size_t d : d_embs_) d_feature_ += d;
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw ValueError(me + "dropout must be in [0, 1), got " + num(dropout));
  }
  const long rank = static_cast<long>(shape_.size()) + 2;
  for (long a : broadcast_dims_) {
    if (a < -rank || a >= rank) {
      const std::string grid = list_str(shape);  // "[64, 64, 3]" -> "64, 64, 3"
      throw ValueError(me + "dropout_broadcast_dims must be axes of the embedding [batch, " +
                       grid.substr(1, grid.size() - 2) + ", d_feature] (" + std::to_string(-rank) +
                       " to " + std::to_string(rank - 1) + "), got " + std::to_string(a));
    }
  }
  if (!kernel_init_) throw ValueError(me + "the kernel initializer is empty");
  mode_ = mode;
}

std::vector<std::string> AxialPositionalEncodingLayer::weight_names() const {
  std::vector<std::string> names;
  for (std::size_t a = 0; a < shape_.size(); ++a) names.push_back("ax" + std::to_string(a));
  return names;
}

void AxialPositionalEncodingLayer::check_input(const Shape& shape, DType dtype) const {
  if (!core::is_floating(dtype)) {
    throw DTypeError("expected a float32 or float64 input, got " + dtype_str(dtype));
  }
  if (shape.size() != 3) {
    throw ShapeError("expected an input [batch, length, d_feature] of rank 3, got shape " +
                     core::shape_str(shape));
  }
  if (shape[2] != d_feature_) {
    throw ValueError("sum(d_embs) must equal d_feature, the input's last axis: sum(" +
                     core::shape_str(d_embs_) + ") = " + std::to_string(d_feature_) +
                     ", got an input " + core::shape_str(shape));
  }
  if (shape[1] > max_len_) {
    throw ShapeError("the sequence length " + std::to_string(shape[1]) +
                     " exceeds prod(shape) = " + std::to_string(max_len_) + " (shape " +
                     core::shape_str(shape_) + "), the number of positions encoded");
  }
}

void AxialPositionalEncodingLayer::check_weights(DType input_dtype) const {
  const std::vector<std::string> names = weight_names();
  for (std::size_t a = 0; a < shape_.size(); ++a) {
    Shape want(shape_.size() + 2, 1);
    want[a + 1] = shape_[a];
    want.back() = d_embs_[a];
    const Var& w = weight(a);
    if (w.shape() != want) {
      throw ShapeError("the weight " + names[a] + " must have shape " + core::shape_str(want) +
                       ", got " + core::shape_str(w.shape()));
    }
    if (w.dtype() != input_dtype) {
      throw DTypeError("the input is " + dtype_str(input_dtype) + " but the weight " + names[a] +
                       " is " + dtype_str(w.dtype()) + " (init with " + dtype_str(input_dtype) +
                       " inputs, or convert the layer with base::cast_layer)");
    }
  }
}

void AxialPositionalEncodingLayer::init_weights_and_state(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  const std::size_t n = shape_.size();
  const auto keys = core::split(rng_, n);  // as Trax: one key per axis
  std::vector<Tensor> ws;
  for (std::size_t a = 0; a < n; ++a) {
    Shape s(n + 2, 1);  // [1, 1, .., shape[a], .., 1, d_embs[a]]
    s[a + 1] = shape_[a];
    s.back() = d_embs_[a];
    Tensor w = kernel_init_(keys[a], s, in.dtype);
    if (!w.defined() || w.shape() != s || w.dtype() != in.dtype) {
      throw ValueError("the kernel initializer returned " +
                       (w.defined() ? core::shape_str(w.shape()) + " " + dtype_str(w.dtype())
                                    : std::string("an undefined tensor")) +
                       ", expected " + core::shape_str(s) + " " + dtype_str(in.dtype));
    }
    ws.push_back(std::move(w));
  }
  set_own_weights(std::move(ws));
  if (mode_ == Mode::predict) {
    state_ = base::State(Tensor::scalar(0, DType::i32));
  } else {
    state_ = base::State();
  }
}

Signature AxialPositionalEncodingLayer::forward_signature(const Signature& input_signature) {
  const ShapeDtype& in = input_signature.at(0);
  check_input(in.shape, in.dtype);
  if (own_weights().size() != 0) check_weights(in.dtype);
  return {in};
}

Var AxialPositionalEncodingLayer::embedding(std::size_t start, std::size_t len) const {
  // Axis a's digit of position p is (p / stride_a) % shape[a], stride_a = prod(shape[a+1:]).
  const std::size_t n = shape_.size();
  std::vector<Var> parts;
  std::size_t stride = max_len_;
  for (std::size_t a = 0; a < n; ++a) {
    stride /= shape_[a];
    Tensor idx = Tensor::empty({len}, DType::i32);
    std::int32_t* ip = idx.data<std::int32_t>();
    for (std::size_t l = 0; l < len; ++l) {
      ip[l] = static_cast<std::int32_t>(((start + l) / stride) % shape_[a]);
    }
    const Var table =
        fm::reshape(weight(a), {static_cast<long>(shape_[a]), static_cast<long>(d_embs_[a])});
    parts.push_back(fm::take(table, idx, 0));  // [len, d_embs[a]]
  }
  const Var emb = n == 1 ? parts[0] : fm::concatenate(parts, -1);
  return fm::reshape(emb, {1, static_cast<long>(len), static_cast<long>(d_feature_)});
}

Stack AxialPositionalEncodingLayer::forward(const Stack& inputs) {
  const Var& x = inputs[0];
  check_input(x.shape(), x.dtype());
  check_weights(x.dtype());
  const std::size_t batch = x.dim(0), len = x.dim(1);

  if (mode_ == Mode::predict) {
    std::int32_t pos = 0;  // initialised in another mode: start at 0
    if (state_.is_leaf() && state_.leaf().defined()) {
      const Tensor& s = state_.leaf();
      if (s.dtype() != DType::i32 || !s.shape().empty()) {
        throw ShapeError(
            "predict mode: the state must be an int32 scalar (the next position), got " +
            core::shape_str(s.shape()) + " " + dtype_str(s.dtype()));
      }
      pos = s.item<std::int32_t>();
    }
    if (pos < 0 || static_cast<std::size_t>(pos) + len > max_len_) {
      throw ValueError("predict mode: at position " + std::to_string(pos) + ", " +
                       std::to_string(len) + " more position(s) would pass prod(shape) = " +
                       std::to_string(max_len_) + " (shape " + core::shape_str(shape_) + ")");
    }
    Var y = x + embedding(static_cast<std::size_t>(pos), len);
    state_ = base::State(
        Tensor::scalar(static_cast<double>(pos) + static_cast<double>(len), DType::i32));
    return {y};
  }

  Var emb = embedding(0, len);  // [1, L, d]
  if (mode_ == Mode::train && dropout_ > 0.0) {
    // The mask of the full embedding [batch, shape..., d] (broadcast dims 1), as
    // Trax draws it; its first L positions go with the first L rows.
    const std::size_t n = shape_.size();
    Shape noise{batch};
    noise.insert(noise.end(), shape_.begin(), shape_.end());
    noise.push_back(d_feature_);
    for (long a : broadcast_dims_) noise[core::normalize_axis(a, n + 2, kName)] = 1;
    const double keep = 1.0 - dropout_;
    Tensor mask = core::bernoulli(rng_, keep, noise);
    Shape full = noise;  // grid axes at full size, batch and features as drawn
    for (std::size_t a = 0; a < n; ++a) full[a + 1] = shape_[a];
    mask = core::broadcast_to(mask, full).reshape(Shape{noise[0], max_len_, noise.back()});
    if (len < max_len_) mask = core::slice(mask, 1, 0, static_cast<long>(len));
    emb = fm::dropout(emb, mask, keep);
  }
  return {x + emb};
}

LayerPtr AxialPositionalEncoding(std::vector<long> shape, std::vector<long> d_embs,
                                 init::Initializer kernel_init, double dropout,
                                 std::vector<long> dropout_broadcast_dims, Mode mode,
                                 SrcLoc where) {
  return std::make_shared<AxialPositionalEncodingLayer>(
      std::move(shape), std::move(d_embs), std::move(kernel_init), dropout,
      std::move(dropout_broadcast_dims), mode, where);
}

}  // namespace minitrax::layers::research
