// minitrax/layers/base.cpp: the Layer contract.
#include "layers/base.hpp"

#include <algorithm>
#include <filesystem>

namespace minitrax::base {

namespace {

bool is_marker(const VarTree& t) {
  return t.is_leaf() && !t.leaf().defined();
}
bool is_marker(const Tree<Tensor>& t) {
  return t.is_leaf() && !t.leaf().defined();
}

bool contains(const std::vector<const Layer*>& seen, const Layer* l) {
  return std::find(seen.begin(), seen.end(), l) != seen.end();
}

// "[2, -1, 64]" for error messages about shapes given as signed integers.
std::string long_list_str(const std::vector<long>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string signature_str(const Signature& sig) {
  std::string s;
  for (std::size_t i = 0; i < sig.size(); ++i) {
    if (i) s += ", ";
    s += core::shape_str(sig[i].shape);
    s += ' ';
    s += core::dtype_name(sig[i].dtype);
  }
  return sig.empty() ? "no inputs" : s;
}

Signature signature_of(const Stack& xs) {
  Signature sig;
  sig.reserve(xs.size());
  for (const Var& x : xs) sig.push_back({x.shape(), x.dtype()});
  return sig;
}

Stack zeros_of(const Signature& sig) {
  Stack xs;
  xs.reserve(sig.size());
  for (const ShapeDtype& s : sig) xs.emplace_back(Tensor::zeros(s.shape, s.dtype));
  return xs;
}

std::string_view mode_name(Mode mode) {
  switch (mode) {
    case Mode::train:
      return "train";
    case Mode::eval:
      return "eval";
    case Mode::predict:
      return "predict";
  }
  return "unknown";
}

// ---- CreationSite ----------------------------------------------------------------------

namespace {

// The outermost open CreationSite of this thread, if any.
struct OpenSite {
  bool open = false;
  std::source_location where;
};
thread_local OpenSite open_site;

}  // namespace

CreationSite::CreationSite(std::source_location where) : outermost_(!open_site.open) {
  if (outermost_) open_site = {true, where};
}

CreationSite::~CreationSite() {
  if (outermost_) open_site = {};
}

std::source_location CreationSite::resolve(std::source_location own) {
  return open_site.open ? open_site.where : own;
}

// ---- Layer -------------------------------------------------------------------------------

Layer::Layer(int n_in, int n_out, std::string name, std::source_location where)
    : n_in_(n_in), n_out_(n_out), name_(std::move(name)), where_(CreationSite::resolve(where)) {
  if (n_in < 0 || n_out < 0) {
    throw core::ValueError("Layer " + name_ + ": n_in and n_out must be >= 0, got " +
                           std::to_string(n_in) + " and " + std::to_string(n_out));
  }
}

std::string Layer::where() const {
  // The last two path components are enough to find the line and short to read.
  std::filesystem::path p(where_.file_name());
  std::string file = p.filename().string();
  if (p.has_parent_path() && p.parent_path().has_filename()) {
    file = p.parent_path().filename().string() + "/" + file;
  }
  return file + ":" + std::to_string(where_.line());
}

std::string Layer::repr() const {
  std::string s = label();
  if (n_in_ != 1) s += "_in" + std::to_string(n_in_);
  if (n_out_ != 1) s += "_out" + std::to_string(n_out_);
  if (sublayers_.empty()) return s;
  s += "[";
  for (const LayerPtr& l : sublayers_) {
    std::string sub = l->repr();
    std::string indented = "\n  ";
    for (char c : sub) {
      indented += c;
      if (c == '\n') indented += "  ";
    }
    s += indented;
  }
  return s + "\n]";
}

void Layer::set_sublayers(std::vector<LayerPtr> sublayers) {
  for (const LayerPtr& l : sublayers) {
    if (!l) throw core::ValueError(name_ + ": a sublayer is null");
  }
  sublayers_ = std::move(sublayers);
}

// ---- initialisation -------------------------------------------------------------

std::pair<Weights, State> Layer::init(const Signature& input_signature, Key rng, bool use_cache) {
  if (initialized_ && init_cached_ && use_cache) {
    return {Weights(Tensor()), State(Tensor())};
  }
  try {
    if (static_cast<int>(input_signature.size()) != n_in_) {
      throw ShapeError("init: expected " + std::to_string(n_in_) + " input signatures, got " +
                       std::to_string(input_signature.size()) + " (" +
                       signature_str(input_signature) + ")");
    }
    set_rng(rng);
    init_weights_and_state(input_signature);
    initialized_ = true;
  } catch (const std::exception&) {
    rethrow_in_frame(layer_frame(*this, " init with inputs " + signature_str(input_signature)));
  }
  if (use_cache) {
    init_cached_ = true;
  } else {
    clear_init_cache();
  }
  return {weights(), state()};
}

std::pair<Weights, State> Layer::init(const Tensor& example, Key rng) {
  if (!example.defined()) {
    throw core::ValueError(name_ + " (created at " + where() +
                           ") init: the example tensor is undefined (default-constructed)");
  }
  return init(Signature{{example.shape(), example.dtype()}}, rng);
}

std::pair<Weights, State> Layer::init(const Var& example, Key rng) {
  return init(example.value(), rng);
}

std::pair<Weights, State> Layer::init(const std::vector<long>& shape, DType dtype, Key rng) {
  Shape extents;
  extents.reserve(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      throw core::ValueError(name_ + " (created at " + where() + ") init: shape[" +
                             std::to_string(i) + "] is " + std::to_string(shape[i]) +
                             ", extents must be >= 0 (shape " + long_list_str(shape) + ")");
    }
    extents.push_back(static_cast<std::size_t>(shape[i]));
  }
  return init(Signature{{std::move(extents), dtype}}, rng);
}

std::pair<Weights, State> Layer::init(std::initializer_list<long> shape, DType dtype, Key rng) {
  if (shape.size() == 0) return init(Signature{}, rng);  // init({}): no inputs, as before
  return init(std::vector<long>(shape), dtype, rng);
}

std::pair<Weights, State> Layer::init(const Shape& shape, DType dtype, Key rng) {
  return init(Signature{{shape, dtype}}, rng);
}

void Layer::clear_init_cache() {
  init_cached_ = false;
  for (const LayerPtr& l : sublayers_) l->clear_init_cache();
}

void Layer::init_weights_and_state(const Signature&) {}

std::vector<std::string> Layer::weight_names() const {
  std::vector<std::string> names;
  if (weights_.is_leaf()) return names;
  for (std::size_t i = 0; i < weights_.size(); ++i) names.push_back(std::to_string(i));
  return names;
}

void Layer::set_own_weights(std::vector<Tensor> ws) {
  VarTree t;
  for (Tensor& w : ws) t.push_back(VarTree(Var(std::move(w))));
  weights_ = std::move(t);
}

const Var& Layer::weight(std::size_t i) const {
  if (weights_.size() == 0) {  // a leaf (marker) or an empty list: never given weights
    throw core::ValueError(layer_frame(*this) +
                           " has no weights: it was called before init(); call init with the "
                           "input signature first (or set its weights)");
  }
  if (i >= weights_.size()) {
    throw core::ValueError(name_ + ": weight " + std::to_string(i) +
                           " does not exist (the layer has " + std::to_string(weights_.size()) +
                           " weights)");
  }
  return weights_[i].leaf();
}

// The first leaf at or under this layer that names weights but holds none: it was
// never initialised and no weights were set. Layers without weights name none.
const Layer* Layer::first_without_weights() const {
  if (sublayers_.empty()) {
    if (weights_.size() > 0) return nullptr;
    return weight_names().empty() ? nullptr : this;
  }
  for (const LayerPtr& l : sublayers_) {
    if (const Layer* missing = l->first_without_weights()) return missing;
  }
  return nullptr;
}

// ---- weights and state trees -------------------------------------------------------

VarTree Layer::weights_tree(std::vector<const Layer*>& seen) const {
  if (contains(seen, this)) return VarTree(Var());
  seen.push_back(this);
  if (sublayers_.empty()) return weights_;
  VarTree t;
  for (const LayerPtr& l : sublayers_) t.push_back(l->weights_tree(seen));
  return t;
}

VarTree Layer::weight_vars() const {
  std::vector<const Layer*> seen;
  return weights_tree(seen);
}

Weights Layer::weights() const {
  return weight_vars().map([](const Var& v) { return v.value(); });
}

void Layer::set_weights(const Weights& weights) {
  set_weights(weights.map([](const Tensor& t) { return Var(t); }));
}

void Layer::set_weights(const VarTree& w) {
  if (is_marker(w)) return;
  if (w.is_leaf()) {
    throw core::ValueError(name_ + ": set_weights expects a list of weights, got a single leaf");
  }
  if (!sublayers_.empty()) {
    if (w.size() != sublayers_.size()) {
      throw core::ValueError(name_ + ": set_weights got " + std::to_string(w.size()) +
                             " weight elements for " + std::to_string(sublayers_.size()) +
                             " sublayers");
    }
    for (std::size_t i = 0; i < sublayers_.size(); ++i) sublayers_[i]->set_weights(w[i]);
    return;
  }
  if (initialized_ && !weights_.is_leaf() && weights_.n_leaves() != w.n_leaves()) {
    throw core::ValueError(name_ + ": set_weights got " + std::to_string(w.n_leaves()) +
                           " weights, the layer has " + std::to_string(weights_.n_leaves()));
  }
  if (initialized_ && !weights_.is_leaf()) {
    const auto old_leaves = weights_.flatten();
    const auto new_leaves = w.flatten();
    const auto names = weight_names();
    for (std::size_t i = 0; i < old_leaves.size(); ++i) {
      if (old_leaves[i].shape() != new_leaves[i].shape()) {
        throw ShapeError(name_ + ": weight '" + (i < names.size() ? names[i] : std::to_string(i)) +
                         "' has shape " + core::shape_str(old_leaves[i].shape()) +
                         ", set_weights got " + core::shape_str(new_leaves[i].shape()));
      }
    }
  }
  weights_ = w;
}

State Layer::state_tree(std::vector<const Layer*>& seen) const {
  if (contains(seen, this)) return State(Tensor());
  seen.push_back(this);
  if (sublayers_.empty()) return state_;
  State t;
  for (const LayerPtr& l : sublayers_) t.push_back(l->state_tree(seen));
  return t;
}

State Layer::state() const {
  std::vector<const Layer*> seen;
  return state_tree(seen);
}

void Layer::set_state(const State& s) {
  if (is_marker(s)) return;
  if (!sublayers_.empty()) {
    if (s.is_leaf() || s.size() != sublayers_.size()) {
      throw core::ValueError(
          name_ + ": set_state got " +
          (s.is_leaf() ? std::string("a leaf") : std::to_string(s.size()) + " state elements") +
          " for " + std::to_string(sublayers_.size()) + " sublayers");
    }
    for (std::size_t i = 0; i < sublayers_.size(); ++i) sublayers_[i]->set_state(s[i]);
    return;
  }
  state_ = s;
}

// ---- flat, named views -------------------------------------------------------------

void Layer::collect_flat_weights(const std::string& prefix, std::vector<NamedTensor>& out,
                                 std::vector<const Layer*>& seen) const {
  if (contains(seen, this)) return;
  seen.push_back(this);
  if (sublayers_.empty()) {
    const auto leaves = weights_.flatten();
    const auto names = weight_names();
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      out.push_back(
          {prefix + "/" + (i < names.size() ? names[i] : std::to_string(i)), leaves[i].value()});
    }
    return;
  }
  for (std::size_t i = 0; i < sublayers_.size(); ++i) {
    sublayers_[i]->collect_flat_weights(
        prefix + "/" + sublayers_[i]->name() + "_" + std::to_string(i), out, seen);
  }
}

std::vector<NamedTensor> Layer::flat_weights() const {
  std::vector<NamedTensor> out;
  std::vector<const Layer*> seen;
  collect_flat_weights(name_, out, seen);
  return out;
}

std::vector<Var> Layer::flat_weight_vars() const {
  return weight_vars().flatten();
}

void Layer::assign_flat_weights(const std::vector<Var>& flat, std::size_t& pos,
                                std::vector<const Layer*>& seen) {
  if (contains(seen, this)) return;
  seen.push_back(this);
  if (sublayers_.empty()) {
    const std::size_t n = weights_.is_leaf() ? 0 : weights_.n_leaves();
    if (pos + n > flat.size()) {
      throw core::ValueError("set_flat_weights: ran out of values at layer " + name_ + " (" +
                             std::to_string(flat.size()) + " given)");
    }
    std::vector<Var> mine(flat.begin() + static_cast<long>(pos),
                          flat.begin() + static_cast<long>(pos + n));
    pos += n;
    VarTree t;
    for (Var& v : mine) t.push_back(VarTree(std::move(v)));
    set_weights(t);
    return;
  }
  for (const LayerPtr& l : sublayers_) l->assign_flat_weights(flat, pos, seen);
}

void Layer::set_flat_weights(const std::vector<Var>& flat) {
  std::size_t pos = 0;
  std::vector<const Layer*> seen;
  assign_flat_weights(flat, pos, seen);
  if (pos != flat.size()) {
    throw core::ValueError("set_flat_weights: " + name_ + " has " + std::to_string(pos) +
                           " weights, " + std::to_string(flat.size()) + " were given");
  }
}

void Layer::set_flat_weights(const std::vector<Tensor>& flat) {
  set_flat_weights(std::vector<Var>(flat.begin(), flat.end()));
}

void Layer::collect_flat_state(const std::string& prefix, std::vector<NamedTensor>& out,
                               std::vector<const Layer*>& seen) const {
  if (contains(seen, this)) return;
  seen.push_back(this);
  if (sublayers_.empty()) {
    const auto leaves = state_.flatten();
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      out.push_back({prefix + "/state_" + std::to_string(i), leaves[i]});
    }
    return;
  }
  for (std::size_t i = 0; i < sublayers_.size(); ++i) {
    sublayers_[i]->collect_flat_state(
        prefix + "/" + sublayers_[i]->name() + "_" + std::to_string(i), out, seen);
  }
}

std::vector<NamedTensor> Layer::flat_state() const {
  std::vector<NamedTensor> out;
  std::vector<const Layer*> seen;
  collect_flat_state(name_, out, seen);
  return out;
}

void Layer::assign_flat_state(const std::vector<Tensor>& flat, std::size_t& pos,
                              std::vector<const Layer*>& seen) {
  if (contains(seen, this)) return;
  seen.push_back(this);
  if (sublayers_.empty()) {
    const std::size_t n = state_.n_leaves();
    if (state_.is_leaf() && !state_.leaf().defined()) return;
    if (pos + n > flat.size()) {
      throw core::ValueError("set_flat_state: ran out of values at layer " + name_);
    }
    std::vector<Tensor> mine(flat.begin() + static_cast<long>(pos),
                             flat.begin() + static_cast<long>(pos + n));
    pos += n;
    state_ = State::unflatten(state_, mine);
    return;
  }
  for (const LayerPtr& l : sublayers_) l->assign_flat_state(flat, pos, seen);
}

void Layer::set_flat_state(const std::vector<Tensor>& flat) {
  std::size_t pos = 0;
  std::vector<const Layer*> seen;
  assign_flat_state(flat, pos, seen);
  if (pos != flat.size()) {
    throw core::ValueError("set_flat_state: " + name_ + " has " + std::to_string(pos) +
                           " state tensors, " + std::to_string(flat.size()) + " were given");
  }
}

// ---- running -------------------------------------------------------------------------

Stack Layer::apply(const Stack& inputs, Key rng) {
  const std::string frame =
      layer_frame(*this, " with inputs " + signature_str(signature_of(inputs)));
  if (static_cast<int>(inputs.size()) != n_in_) {
    const std::string msg = "expected " + std::to_string(n_in_) + " input" +
                            (n_in_ == 1 ? "" : "s") + ", got " + std::to_string(inputs.size());
    throw LayerError(frame + ": " + msg, msg);
  }
  if (!initialized_) {  // after init() this costs one test
    if (const Layer* missing = first_without_weights()) {
      // Inputs that are wrong whatever the weights are reported as such (shape rules need
      // no weights); only inputs the layer would accept get the init message.
      (void)output_signature(signature_of(inputs));
      std::string msg = layer_frame(*this) +
                        " was called before init(): call init with the input signature first "
                        "(or set its weights)";
      if (missing != this) msg += "; its sublayer " + layer_frame(*missing) + " has no weights";
      throw LayerError(msg, msg);
    }
  }
  rng_ = rng;
  autodiff::NameScope scope(name_);
  try {
    Stack out = forward(inputs);
    if (static_cast<int>(out.size()) != n_out_) {
      throw core::ValueError("forward returned " + std::to_string(out.size()) + " output" +
                             (out.size() == 1 ? "" : "s") +
                             ", the layer promises n_out = " + std::to_string(n_out_));
    }
    return out;
  } catch (const std::exception&) {
    rethrow_in_frame(frame);
  }
}

Stack Layer::recompute(const Stack& inputs, Key rng) {
  return apply(inputs, rng);
}

Stack Layer::operator()(const Stack& inputs) {
  return apply(inputs, rng_);
}

Var Layer::operator()(const Var& x) {
  if (n_out_ != 1) {
    throw core::ValueError(name_ + ": has " + std::to_string(n_out_) +
                           " outputs; call it with a Stack");
  }
  return apply({x}, rng_).at(0);
}

std::pair<Stack, State> Layer::pure_fn(const Stack& inputs, const VarTree& weights,
                                       const State& state, Key rng) {
  RestoreGuard restore(*this);
  set_weights(weights);
  set_state(state);
  Stack out = apply(inputs, rng);
  return {std::move(out), this->state()};
}

Signature Layer::forward_signature(const Signature& input_signature) {
  // Default: run the layer on zeros, recording nothing, and keep no state change.
  autodiff::NoRecord quiet;
  const State saved = state();
  Stack out;
  try {
    out = forward(zeros_of(input_signature));
  } catch (...) {
    set_state(saved);
    throw;
  }
  set_state(saved);
  return signature_of(out);
}

Signature Layer::output_signature(const Signature& input_signature) {
  if (static_cast<int>(input_signature.size()) != n_in_) {
    const std::string msg = "expected " + std::to_string(n_in_) + " input signatures, got " +
                            std::to_string(input_signature.size());
    throw LayerError(layer_frame(*this, " output_signature") + ": " + msg, msg);
  }
  try {
    return forward_signature(input_signature);
  } catch (const std::exception&) {
    rethrow_in_frame(layer_frame(*this, " with inputs " + signature_str(input_signature)));
  }
}

// ---- mode and rng ------------------------------------------------------------------------

void Layer::set_mode(Mode mode) {
  mode_ = mode;
  for (const LayerPtr& l : sublayers_) l->set_mode(mode);
}

void Layer::set_rng(Key rng) {
  rng_ = rng;
  if (sublayers_.empty()) return;
  const auto keys = core::split(rng, sublayers_.size());
  for (std::size_t i = 0; i < sublayers_.size(); ++i) sublayers_[i]->set_rng(keys[i]);
}

// ---- restoring and error frames ------------------------------------------------------

RestoreGuard::RestoreGuard(Layer& layer, unsigned what)
    : layer_(layer),
      what_(what),
      initialized_(layer.initialized()),
      weights_(initialized_ && (what & weights) != 0 ? layer.weight_vars() : VarTree()),
      state_(initialized_ && (what & state) != 0 ? layer.state() : State()),
      rng_(layer.rng()),
      mode_(layer.mode()) {}

RestoreGuard::~RestoreGuard() {
  if (!active_) return;
  if ((what_ & mode) != 0) layer_.set_mode(mode_);  // sublayers too
  if (initialized_ && (what_ & weights) != 0) layer_.set_weights(weights_);
  if (initialized_ && (what_ & state) != 0) layer_.set_state(state_);
  if ((what_ & rng) != 0) layer_.rng_ = rng_;
}

std::string layer_frame(const Layer& layer, const std::string& doing) {
  return layer.name() + " (created at " + layer.where() + ")" + doing;
}

void rethrow_in_frame(const std::string& frame) {
  try {
    throw;
  } catch (const LayerError& e) {
    throw LayerError(std::string(e.what()) + "\n  in " + frame, e.original());
  } catch (const std::exception& e) {
    throw LayerError(frame + ": " + e.what(), e.what());
  }
}

}  // namespace minitrax::base
