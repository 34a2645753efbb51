/// @file
/// The tape, its nodes, and Var: reverse-mode automatic differentiation.
///
/// Reverse-mode automatic differentiation with a tape (a Wengert list):
///
///   * A `Tape` records, in creation order, one `Node` per op applied to values that
///     are on it. Backward is then a single loop over the nodes in reverse.
///   * A `Var` is what flows through code that may be differentiated: a value (a
///     Tensor) plus, while a tape records, the id of the node that produced it.
///     When no tape records, ops only compute and a Var is just its value.
///   * A node keeps its inputs' ids (edges), its outputs' shapes, the tensors its VJP
///     rule reads (`saved`), and the rule itself. The rule reads stored values through
///     the node (tensors are shared handles: saving one costs no copy).
///
/// Tapes nest: each thread has a stack of tapes, and ops record on the innermost one.
/// A private tape inside a backward pass (checkpoint, custom VJPs, reversible
/// layers) records while the outer tape waits. Values that belong to an outer tape
/// are constants to an inner one. See docs/architecture.md, "The life of a Var".
///
/// @code
/// Tape tape;                                  // records while it lives
/// Var x = tape.watch(x0);                     // a leaf, x0 a float tensor
/// Var f = fastmath::sum(fastmath::exp(x) * x);
/// Tensor dx = tape.gradient(f, x);            // x0's shape: exp(x0) * (1 + x0)
/// std::cout << tape.dump();                   // one line per node
/// @endcode
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/tensor.hpp"

namespace minitrax::autodiff {

using core::DType;
using core::Shape;
using core::Tensor;

/// Misuse of the tape: backward from a non-scalar without a seed, a Var from a
/// finished tape, a cotangent of the wrong shape, ...
class TapeError : public core::Error {
 public:
  using core::Error::Error;
};

/// A non-finite value produced while the NaN check is on (see set_debug_nans).
class NonFiniteError : public core::Error {
 public:
  using core::Error::Error;
};

class TapeCore;
class VjpContext;

/// A value that can be differentiated: a Tensor plus, while recorded, its node.
///
/// Vars are what the differentiable ops (fastmath) take and return. A Tensor converts
/// to a constant Var implicitly; `Tape::watch` makes a leaf that gradients can be
/// taken with respect to; an op on a recorded Var returns a recorded Var.
/// @code
/// Tape tape;
/// Var w = tape.watch(Tensor::ones({3, 2}));
/// Var y = fastmath::matmul(x, w);        // x: a [4, 3] Tensor, a constant
/// bool rec = y.on_tape();                // true; y.shape() == Shape{4, 2}
/// @endcode
class Var {
 public:
  /// An undefined Var (no value).
  Var() = default;
  /// A constant (never differentiated): implicit, so Tensors can be passed to ops.
  Var(Tensor value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  /// The value.
  const Tensor& value() const { return value_; }
  /// The value's shape.
  const Shape& shape() const { return value_.shape(); }
  /// The value's dtype.
  DType dtype() const { return value_.dtype(); }
  /// The value's rank.
  std::size_t ndim() const { return value_.ndim(); }
  /// The value's number of elements.
  std::size_t size() const { return value_.size(); }
  /// The extent of one axis of the value; negative counts from the end.
  std::size_t dim(long axis) const { return value_.dim(axis); }
  /// False for a default-constructed Var.
  bool defined() const { return value_.defined(); }

  /// True if the Var was produced on a tape (a leaf or an op's output).
  bool on_tape() const { return tape_serial_ != 0; }
  /// The id of its node on the tape, -1 if it is a constant.
  int node_id() const { return node_; }
  /// Which output of its node it is.
  int output_index() const { return output_; }
  /// The serial number of its tape (0 for a constant).
  std::uint64_t tape_serial() const { return tape_serial_; }

 private:
  friend class TapeCore;
  Tensor value_;
  std::uint64_t tape_serial_ = 0;
  int node_ = -1;
  int output_ = 0;
};

/// Several Vars: the inputs and outputs of multi-input, multi-output functions.
using VarList = std::vector<Var>;

/// An edge from a node to one of its inputs.
struct Edge {
  int node = -1;      ///< producing node on the same tape; -1 for a constant
  int output = 0;     ///< which output of that node
  bool flows = true;  ///< false: recorded for show, receives no cotangent (tie_in's x)
};

/// The VJP rule of a node: reads the node's saved tensors and output cotangents,
/// accumulates into its inputs' cotangents.
using VjpRule = std::function<void(VjpContext&)>;

/// One recorded op.
struct Node {
  std::string op;                            ///< "add", "matmul", "input", a custom name, ...
  std::vector<Edge> inputs;                  ///< in argument order
  std::vector<Shape> input_shapes;           ///< the inputs' shapes, in argument order
  std::vector<Shape> output_shapes;          ///< one per output
  std::vector<DType> output_dtypes;          ///< one per output
  std::vector<Tensor> saved;                 ///< what the VJP reads
  VjpRule vjp;                               ///< empty for leaves
  std::shared_ptr<const std::string> scope;  ///< layer path active when recorded
};

/// Counts of what a tape keeps alive (for memory tests: checkpoint keeps fewer values).
struct TapeStats {
  std::size_t nodes = 0;          ///< nodes on the tape (leaves included)
  std::size_t saved_tensors = 0;  ///< entries in all nodes' `saved`
  std::size_t saved_buffers = 0;  ///< distinct buffers among them
  std::size_t saved_bytes = 0;    ///< bytes of the distinct buffers
};

/// What the VJP rule of a node sees during backward.
///
/// A rule reads the forward's saved tensors and the output cotangents, and adds the
/// input cotangents. The rule of y = exp(x), which saved y:
/// @code
/// [](VjpContext& c) { c.accumulate(0, core::mul(c.ct(), c.saved(0))); }
/// @endcode
class VjpContext {
 public:
  /// The node being differentiated.
  const Node& node() const { return *node_; }
  /// Saved tensor `i` of the node (as passed to `record`; bounds-checked).
  const Tensor& saved(std::size_t i) const { return node_->saved.at(i); }
  /// Number of outputs of the node.
  std::size_t n_outputs() const { return node_->output_shapes.size(); }
  /// The cotangent of output `i`: zeros of the output's shape if none arrived.
  Tensor ct(std::size_t i = 0) const;
  /// True if a cotangent reached output `i`.
  bool has_ct(std::size_t i = 0) const;
  /// True if input `i` needs a cotangent (it is on the tape, the edge flows, and a
  /// requested gradient depends on it). Rules skip work for inputs that don't.
  bool needs(std::size_t i) const;
  /// Adds `g` into input `i`'s cotangent. If `g` is larger than the input (the
  /// input was broadcast), it is summed down first. No-op if !needs(i).
  void accumulate(std::size_t i, const Tensor& g);
  /// The cotangent buffer of input `i`, zero-filled on first use, to accumulate
  /// into in place (e.g. gemm with beta = 1). Only valid if needs(i).
  Tensor& grad_buffer(std::size_t i);

 private:
  friend class TapeCore;
  VjpContext(TapeCore& tape, const Node& node, int id) : tape_(&tape), node_(&node), id_(id) {}
  TapeCore* tape_;
  const Node* node_;
  int id_;
};

/// The storage of a tape: its nodes, and the backward pass over them. Shared
/// between the `Tape` that records it and any pullback that outlives the recording.
class TapeCore : public std::enable_shared_from_this<TapeCore> {
 public:
  /// An empty tape with a new serial number, recording.
  TapeCore();
  /// The tape's serial number (unique per process; Vars carry it).
  std::uint64_t serial() const { return serial_; }
  /// True while ops on its Vars record.
  bool recording() const { return recording_; }
  /// Turns recording on or off.
  void set_recording(bool on) { recording_ = on; }

  /// Number of nodes recorded.
  std::size_t size() const { return nodes_.size(); }
  /// Node `i` (bounds-checked).
  const Node& node(std::size_t i) const { return nodes_.at(i); }
  /// What the tape keeps alive: nodes, saved tensors and their distinct buffers.
  TapeStats stats() const;

  /// Adds a leaf node for `x` and returns it as a Var on this tape.
  Var leaf(const Tensor& x, std::string op = "input");
  /// Appends a node; returns its outputs as Vars on this tape.
  VarList push(Node node, std::vector<Tensor> outputs);

  /// Runs backward from `outputs` seeded with `seeds` (one per output; an undefined
  /// seed means ones for a scalar output). Only cotangents of nodes on which one of
  /// `wrt` depends are computed (all, if `wrt` is empty). Returns the cotangents of
  /// `wrt` (zeros where no path exists).
  std::vector<Tensor> backward(const VarList& outputs, const std::vector<Tensor>& seeds,
                               const VarList& wrt);

  /// Text dump: one line per node (id, op, inputs, shapes, saved count, scope).
  std::string dump() const;
  /// Graphviz DOT: nodes with op and shapes, edges from inputs; tie_in edges dashed.
  std::string to_dot() const;

  /// Cotangent bookkeeping of the running backward pass (used by VjpContext).
  struct Slot {
    Tensor t;            ///< the cotangent accumulated so far (undefined: none yet)
    bool owned = false;  ///< true once the buffer is ours to write into
  };

 private:
  friend class VjpContext;
  Slot& slot(int node, int output);
  void add_to_slot(int node, int output, const Tensor& g);

  std::uint64_t serial_;
  bool recording_ = true;
  std::vector<Node> nodes_;
  // backward-pass state
  std::vector<std::vector<Slot>> cts_;
  std::vector<char> needed_;
};

/// The innermost tape of this thread that is recording, or nullptr.
TapeCore* recording_tape();

/// Records ops while it lives: the RAII handle of a TapeCore on this thread's stack.
///
///     Tape tape;
///     Var x = tape.watch(x0);
///     Var y = fastmath::sum(fastmath::exp(x));
///     Tensor dx = tape.gradient(y, x);
///
/// Tapes are not copyable; a tape must be destroyed on the thread that made it, in
/// reverse order of creation (it is a stack entry; anything else aborts).
class Tape {
 public:
  /// A new, empty tape, pushed on this thread's tape stack: ops record on it.
  Tape();
  /// Pops the tape off the stack; pullbacks that hold its core keep working.
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// A leaf: a Var on this tape that gradients can be taken with respect to.
  Var watch(const Tensor& x) { return core_->leaf(x); }
  /// d(seed . y)/dx for each x; `seed` may be omitted when y is a scalar. Each
  /// gradient has its x's shape (zeros where y does not depend on x).
  std::vector<Tensor> gradient(const Var& y, const VarList& xs, const Tensor& seed = {});
  /// d(seed . y)/dx for one x, of x's shape.
  Tensor gradient(const Var& y, const Var& x, const Tensor& seed = {});
  /// Stops recording (ops on its Vars then only compute).
  void stop() { core_->set_recording(false); }

  /// Number of nodes recorded.
  std::size_t size() const { return core_->size(); }
  /// Node `i` (bounds-checked).
  const Node& node(std::size_t i) const { return core_->node(i); }
  /// What the tape keeps alive (see TapeStats).
  TapeStats stats() const { return core_->stats(); }
  /// Text dump, one line per node (see TapeCore::dump).
  std::string dump() const { return core_->dump(); }
  /// Graphviz DOT of the recorded graph (see TapeCore::to_dot).
  std::string to_dot() const { return core_->to_dot(); }
  /// The shared storage (for pullbacks that outlive the Tape handle).
  const std::shared_ptr<TapeCore>& core() const { return core_; }

 private:
  std::shared_ptr<TapeCore> core_;
};

/// While it lives, nothing records on this thread (inference; forward of custom VJPs).
/// @code
/// { NoRecord no_tape; Var y = model_forward(x); }   // y is a constant
/// @endcode
class NoRecord {
 public:
  /// Pushes a "nothing records" marker on this thread's tape stack.
  NoRecord();
  /// Pops it: recording resumes as before.
  ~NoRecord();
  NoRecord(const NoRecord&) = delete;
  NoRecord& operator=(const NoRecord&) = delete;
};

/// Names the nodes recorded while it lives (nested: "Serial/Dense_1"). Layers push
/// their name; dumps and NaN reports show it.
class NameScope {
 public:
  /// Appends `name` to the current scope path ("Serial" then "Dense_1" gives
  /// "Serial/Dense_1").
  explicit NameScope(const std::string& name);
  /// Restores the scope path as it was.
  ~NameScope();
  NameScope(const NameScope&) = delete;
  NameScope& operator=(const NameScope&) = delete;
};
/// The current scope path ("" at top level).
const std::string& current_scope();

/// With the check on, every op's outputs are checked as they are computed, and
/// the first NaN or Inf throws NonFiniteError naming the op, the scope and the
/// input shapes (like JAX's debug_nans). Per thread; off by default.
void set_debug_nans(bool on);
/// True if the NaN/Inf check is on for this thread (see set_debug_nans).
bool debug_nans();

/// How every op ends: checks the outputs (debug_nans), and if a tape records and
/// one of `inputs` is on it, appends a node (op, edges, saved tensors, VJP rule).
/// Returns the outputs as Vars (on the tape if recorded, constants otherwise).
/// `flows[i] == false` records input i as an edge that receives no cotangent.
/// How a new differentiable op is written (forward with core/ ops, VJP beside it):
/// @code
/// Var my_exp(const Var& x) {
///   const Var in[] = {x};
///   Tensor y = core::exp(x.value());
///   return record1("my_exp", in, y, {y},
///                  [](VjpContext& c) { c.accumulate(0, core::mul(c.ct(), c.saved(0))); });
/// }
/// @endcode
VarList record(std::string_view op, std::span<const Var> inputs, std::vector<Tensor> outputs,
               std::vector<Tensor> saved, VjpRule vjp, std::vector<bool> flows = {});
/// Single-output convenience form.
Var record1(std::string_view op, std::span<const Var> inputs, Tensor output,
            std::vector<Tensor> saved, VjpRule vjp);

}  // namespace minitrax::autodiff

namespace minitrax {
using autodiff::NoRecord;
using autodiff::Tape;
using autodiff::Var;
}  // namespace minitrax
