// minitrax/autodiff/tape.cpp: recording, the backward loop, dumps.
#include "autodiff/tape.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <unordered_set>

#include "core/ops.hpp"

namespace minitrax::autodiff {

namespace {

// This thread's tapes, innermost last. A nullptr entry is a NoRecord scope.
thread_local std::vector<TapeCore*> t_stack;
// This thread's name scopes, innermost last (each holds the full path).
thread_local std::vector<std::shared_ptr<const std::string>> t_scopes;
thread_local bool t_debug_nans = false;

std::atomic<std::uint64_t> g_next_serial{1};

bool tape_alive(std::uint64_t serial) {
  for (const TapeCore* t : t_stack) {
    if (t && t->serial() == serial) return true;
  }
  return false;
}

std::string shapes_str(const std::vector<Shape>& shapes) {
  std::string s;
  for (std::size_t i = 0; i < shapes.size(); ++i) s += (i ? ", " : "") + core::shape_str(shapes[i]);
  return s;
}

}  // namespace

// ---- Tape, NoRecord, NameScope ------------------------------------------------

TapeCore* recording_tape() {
  if (t_stack.empty()) return nullptr;
  TapeCore* top = t_stack.back();
  return (top && top->recording()) ? top : nullptr;
}

Tape::Tape() : core_(std::make_shared<TapeCore>()) {
  t_stack.push_back(core_.get());
}

Tape::~Tape() {
  if (t_stack.empty() || t_stack.back() != core_.get()) {
    // Tapes are scopes: the innermost must end first. Anything else is a bug in
    // the caller that would corrupt every later recording on this thread.
    std::fputs("minitrax: a Tape was destroyed while an inner Tape or NoRecord was alive\n",
               stderr);
    std::abort();
  }
  t_stack.pop_back();
  core_->set_recording(false);
}

std::vector<Tensor> Tape::gradient(const Var& y, const VarList& xs, const Tensor& seed) {
  return core_->backward({y}, {seed}, xs);
}

Tensor Tape::gradient(const Var& y, const Var& x, const Tensor& seed) {
  return core_->backward({y}, {seed}, {x}).at(0);
}

NoRecord::NoRecord() {
  t_stack.push_back(nullptr);
}
NoRecord::~NoRecord() {
  t_stack.pop_back();
}

NameScope::NameScope(const std::string& name) {
  const std::string& parent = current_scope();
  t_scopes.push_back(
      std::make_shared<const std::string>(parent.empty() ? name : parent + "/" + name));
}
NameScope::~NameScope() {
  t_scopes.pop_back();
}

const std::string& current_scope() {
  static const std::string empty;
  return t_scopes.empty() ? empty : *t_scopes.back();
}

void set_debug_nans(bool on) {
  t_debug_nans = on;
}
bool debug_nans() {
  return t_debug_nans;
}

// ---- recording ------------------------------------------------------------------

TapeCore::TapeCore() : serial_(g_next_serial.fetch_add(1)) {}

Var TapeCore::leaf(const Tensor& x, std::string op) {
  if (!x.defined()) throw TapeError("Tape::watch: the tensor is undefined");
  Node node;
  node.op = std::move(op);
  return push(std::move(node), {x}).at(0);
}

VarList TapeCore::push(Node node, std::vector<Tensor> outputs) {
  const int id = static_cast<int>(nodes_.size());
  node.output_shapes.reserve(outputs.size());
  node.output_dtypes.reserve(outputs.size());
  for (const Tensor& t : outputs) {
    node.output_shapes.push_back(t.shape());
    node.output_dtypes.push_back(t.dtype());
  }
  if (!t_scopes.empty()) node.scope = t_scopes.back();
  nodes_.push_back(std::move(node));
  VarList vars;
  vars.reserve(outputs.size());
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    Var v(std::move(outputs[i]));
    v.tape_serial_ = serial_;
    v.node_ = id;
    v.output_ = static_cast<int>(i);
    vars.push_back(std::move(v));
  }
  return vars;
}

namespace {

[[noreturn]] void throw_non_finite(std::string_view op, std::span<const Var> inputs,
                                   std::size_t output) {
  std::ostringstream msg;
  msg << "non-finite value (NaN or Inf) in output " << output << " of op '" << op << "'";
  const std::string& scope = current_scope();
  msg << " in " << (scope.empty() ? std::string("<top level>") : scope) << "; inputs:";
  if (inputs.empty()) msg << " none";
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& v = inputs[i].value();
    msg << (i ? ", " : " ") << core::shape_str(v.shape()) << ' ' << core::dtype_name(v.dtype());
    if (core::is_floating(v.dtype()) && !core::all_finite(v)) msg << " (already non-finite)";
  }
  throw NonFiniteError(msg.str());
}

}  // namespace

VarList record(std::string_view op, std::span<const Var> inputs, std::vector<Tensor> outputs,
               std::vector<Tensor> saved, VjpRule vjp, std::vector<bool> flows) {
  if (t_debug_nans) {
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (core::is_floating(outputs[i].dtype()) && !core::all_finite(outputs[i])) {
        throw_non_finite(op, inputs, i);
      }
    }
  }
  TapeCore* tape = recording_tape();
  bool on_this_tape = false;
  if (tape) {
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const Var& v = inputs[i];
      if (!v.on_tape()) continue;
      if (v.tape_serial() == tape->serial()) {
        on_this_tape = true;
      } else if (!tape_alive(v.tape_serial())) {
        throw TapeError("op '" + std::string(op) + "': input " + std::to_string(i) + " (shape " +
                        core::shape_str(v.shape()) +
                        ") is a Var from a finished tape; pass its value (var.value()) or "
                        "stop_gradient(var) to use it as a constant");
      }
    }
  }
  if (!on_this_tape) {
    VarList out;
    out.reserve(outputs.size());
    for (Tensor& t : outputs) out.emplace_back(std::move(t));
    return out;
  }
  Node node;
  node.op = std::string(op);
  node.inputs.resize(inputs.size());
  node.input_shapes.reserve(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Var& v = inputs[i];
    if (v.on_tape() && v.tape_serial() == tape->serial()) {
      node.inputs[i].node = v.node_id();
      node.inputs[i].output = v.output_index();
    }
    node.inputs[i].flows = flows.empty() ? true : flows.at(i);
    node.input_shapes.push_back(v.shape());
  }
  node.saved = std::move(saved);
  node.vjp = std::move(vjp);
  return tape->push(std::move(node), std::move(outputs));
}

Var record1(std::string_view op, std::span<const Var> inputs, Tensor output,
            std::vector<Tensor> saved, VjpRule vjp) {
  std::vector<Tensor> outs;
  outs.push_back(std::move(output));
  return std::move(record(op, inputs, std::move(outs), std::move(saved), std::move(vjp))[0]);
}

// ---- the backward pass ------------------------------------------------------------

TapeCore::Slot& TapeCore::slot(int node, int output) {
  auto& slots = cts_[static_cast<std::size_t>(node)];
  if (slots.empty()) slots.resize(nodes_[static_cast<std::size_t>(node)].output_shapes.size());
  return slots[static_cast<std::size_t>(output)];
}

void TapeCore::add_to_slot(int node, int output, const Tensor& g) {
  Slot& s = slot(node, output);
  if (!s.t.defined()) {
    s.t = g;  // shared until someone adds into it (copy on write)
    s.owned = false;
    return;
  }
  if (!s.owned) {
    s.t = s.t.clone();
    s.owned = true;
  }
  core::add_inplace(s.t, g);
}

Tensor VjpContext::ct(std::size_t i) const {
  auto& slots = tape_->cts_[static_cast<std::size_t>(id_)];
  if (i < slots.size() && slots[i].t.defined()) return slots[i].t;
  return Tensor::zeros(node_->output_shapes.at(i), node_->output_dtypes.at(i));
}

bool VjpContext::has_ct(std::size_t i) const {
  auto& slots = tape_->cts_[static_cast<std::size_t>(id_)];
  return i < slots.size() && slots[i].t.defined();
}

bool VjpContext::needs(std::size_t i) const {
  const Edge& e = node_->inputs.at(i);
  return e.node >= 0 && e.flows && tape_->needed_[static_cast<std::size_t>(e.node)];
}

void VjpContext::accumulate(std::size_t i, const Tensor& g) {
  if (!needs(i)) return;
  const Edge& e = node_->inputs[i];
  const Shape& want = node_->input_shapes[i];
  const Node& producer = tape_->nodes_[static_cast<std::size_t>(e.node)];
  const DType want_dtype = producer.output_dtypes[static_cast<std::size_t>(e.output)];
  if (g.dtype() != want_dtype) {
    throw TapeError("VJP of '" + node_->op + "': cotangent of input " + std::to_string(i) + " is " +
                    std::string(core::dtype_name(g.dtype())) + ", the input is " +
                    std::string(core::dtype_name(want_dtype)));
  }
  if (g.shape() == want) {
    tape_->add_to_slot(e.node, e.output, g);
  } else {
    tape_->add_to_slot(e.node, e.output, core::sum_to(g, want));
  }
}

Tensor& VjpContext::grad_buffer(std::size_t i) {
  if (!needs(i)) {
    throw TapeError("VJP of '" + node_->op + "': grad_buffer(" + std::to_string(i) +
                    ") asked for an input that needs no cotangent");
  }
  const Edge& e = node_->inputs[i];
  TapeCore::Slot& s = tape_->slot(e.node, e.output);
  if (!s.t.defined()) {
    const Node& producer = tape_->nodes_[static_cast<std::size_t>(e.node)];
    s.t = Tensor::zeros(node_->input_shapes[i],
                        producer.output_dtypes[static_cast<std::size_t>(e.output)]);
    s.owned = true;
  } else if (!s.owned) {
    s.t = s.t.clone();
    s.owned = true;
  }
  return s.t;
}

std::vector<Tensor> TapeCore::backward(const VarList& outputs, const std::vector<Tensor>& seeds,
                                       const VarList& wrt) {
  const std::size_t n = nodes_.size();
  if (outputs.size() != seeds.size()) {
    throw TapeError("backward: " + std::to_string(outputs.size()) + " outputs but " +
                    std::to_string(seeds.size()) + " seeds");
  }
  auto check_on_tape = [&](const Var& v, const char* what, std::size_t k) {
    if (v.tape_serial() != serial_ || v.node_id() < 0 ||
        static_cast<std::size_t>(v.node_id()) >= n) {
      throw TapeError(std::string("backward: ") + what + " " + std::to_string(k) + " (shape " +
                      core::shape_str(v.shape()) + ") is not on this tape" +
                      (v.on_tape() ? " (it comes from another tape)" : " (it is a constant)"));
    }
  };
  for (std::size_t k = 0; k < wrt.size(); ++k) check_on_tape(wrt[k], "input", k);
  for (std::size_t k = 0; k < outputs.size(); ++k) check_on_tape(outputs[k], "output", k);

  // Which nodes lead to a requested gradient: one forward sweep over the edges.
  needed_.assign(n, wrt.empty() ? 1 : 0);
  if (!wrt.empty()) {
    for (const Var& w : wrt) needed_[static_cast<std::size_t>(w.node_id())] = 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (needed_[i]) continue;
      for (const Edge& e : nodes_[i].inputs) {
        if (e.node >= 0 && e.flows && needed_[static_cast<std::size_t>(e.node)]) {
          needed_[i] = 1;
          break;
        }
      }
    }
  }
  std::vector<char> keep(n, 0);
  for (const Var& w : wrt) keep[static_cast<std::size_t>(w.node_id())] = 1;

  cts_.assign(n, {});
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const Var& y = outputs[k];
    Tensor seed = seeds[k];
    if (!seed.defined()) {
      if (y.size() != 1) {
        throw TapeError("backward: output " + std::to_string(k) + " has shape " +
                        core::shape_str(y.shape()) +
                        "; a non-scalar output needs a seed (a cotangent of that shape)");
      }
      seed = Tensor::ones(y.shape(), y.dtype());
    } else if (seed.shape() != y.shape() || seed.dtype() != y.dtype()) {
      throw TapeError("backward: the seed of output " + std::to_string(k) + " has shape " +
                      core::shape_str(seed.shape()) + " " +
                      std::string(core::dtype_name(seed.dtype())) + ", the output has shape " +
                      core::shape_str(y.shape()) + " " + std::string(core::dtype_name(y.dtype())));
    }
    add_to_slot(y.node_id(), y.output_index(), seed);
  }

  {
    NoRecord quiet;  // rules compute on tensors; nothing they do records here
    const bool was_recording = recording_;
    recording_ = false;
    try {
      for (std::size_t i = n; i-- > 0;) {
        Node& node = nodes_[i];
        if (!node.vjp || !needed_[i] || cts_[i].empty()) continue;
        VjpContext ctx(*this, node, static_cast<int>(i));
        node.vjp(ctx);
        if (!keep[i]) cts_[i].clear();  // done with this node's cotangents
      }
    } catch (...) {
      recording_ = was_recording;
      cts_.clear();
      throw;
    }
    recording_ = was_recording;
  }

  std::vector<Tensor> result;
  result.reserve(wrt.size());
  for (const Var& w : wrt) {
    auto& slots = cts_[static_cast<std::size_t>(w.node_id())];
    const std::size_t o = static_cast<std::size_t>(w.output_index());
    if (o < slots.size() && slots[o].t.defined()) {
      result.push_back(slots[o].owned ? slots[o].t : slots[o].t.clone());
    } else {
      result.push_back(Tensor::zeros(w.shape(), w.dtype()));
    }
  }
  cts_.clear();
  needed_.clear();
  return result;
}

// ---- inspection ---------------------------------------------------------------------

TapeStats TapeCore::stats() const {
  TapeStats s;
  s.nodes = nodes_.size();
  std::unordered_set<const void*> seen;
  for (const Node& node : nodes_) {
    for (const Tensor& t : node.saved) {
      if (!t.defined()) continue;
      ++s.saved_tensors;
      if (seen.insert(t.storage_id()).second) {
        ++s.saved_buffers;
        s.saved_bytes += t.nbytes();
      }
    }
  }
  return s;
}

std::string TapeCore::dump() const {
  std::ostringstream os;
  os << "tape #" << serial_ << ": " << nodes_.size() << " nodes\n";
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const Node& node = nodes_[i];
    os << "  %" << i << " = " << node.op << '(';
    for (std::size_t k = 0; k < node.inputs.size(); ++k) {
      const Edge& e = node.inputs[k];
      if (k) os << ", ";
      if (e.node < 0) {
        os << "const" << core::shape_str(node.input_shapes[k]);
      } else {
        os << '%' << e.node;
        if (nodes_[static_cast<std::size_t>(e.node)].output_shapes.size() > 1)
          os << '.' << e.output;
        if (!e.flows) os << " (no grad)";
      }
    }
    os << ") -> " << shapes_str(node.output_shapes);
    if (!node.output_dtypes.empty()) os << ' ' << core::dtype_name(node.output_dtypes[0]);
    if (!node.saved.empty()) os << "  saved " << node.saved.size();
    if (node.scope) os << "  [" << *node.scope << ']';
    os << '\n';
  }
  return os.str();
}

std::string TapeCore::to_dot() const {
  std::ostringstream os;
  os << "digraph tape {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const Node& node = nodes_[i];
    os << "  n" << i << " [label=\"%" << i << " " << node.op << "\\n"
       << shapes_str(node.output_shapes) << "\"";
    if (!node.vjp) os << ", style=rounded";
    os << "];\n";
    for (std::size_t k = 0; k < node.inputs.size(); ++k) {
      const Edge& e = node.inputs[k];
      if (e.node < 0) continue;
      os << "  n" << e.node << " -> n" << i;
      if (!e.flows) os << " [style=dashed, label=\"" << node.op << " (no grad)\"]";
      os << ";\n";
    }
  }
  os << "}\n";
  return os.str();
}

}  // namespace minitrax::autodiff
