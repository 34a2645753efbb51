// minitrax/autodiff/transforms.cpp: the functional transforms over the tape.
#include "autodiff/transforms.hpp"

namespace minitrax::autodiff {

namespace {

bool on(const Var& v, const TapeCore& tape) {
  return v.on_tape() && v.tape_serial() == tape.serial();
}

// Backward over `ys` with `seeds`, skipping outputs that never touched the tape
// (constant outputs carry no gradient), with respect to `xs`.
std::vector<Tensor> pull(TapeCore& tape, const VarList& ys, const std::vector<Tensor>& seeds,
                         const VarList& xs) {
  VarList live;
  std::vector<Tensor> live_seeds;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    if (on(ys[i], tape)) {
      live.push_back(ys[i]);
      live_seeds.push_back(seeds[i]);
    }
  }
  if (live.empty()) {
    std::vector<Tensor> zeros;
    for (const Var& x : xs) zeros.push_back(Tensor::zeros(x.shape(), x.dtype()));
    return zeros;
  }
  return tape.backward(live, live_seeds, xs);
}

void check_scalar(const Var& y, const char* who) {
  if (!y.defined() || y.size() != 1) {
    throw TapeError(std::string(who) + ": the function must return a scalar, it returned shape " +
                    (y.defined() ? core::shape_str(y.shape()) : std::string("<undefined>")));
  }
}

}  // namespace

VjpResult vjp(const Fn& f, const std::vector<Tensor>& primals) {
  std::shared_ptr<TapeCore> core;
  VarList xs, ys;
  {
    Tape tape;
    for (const Tensor& p : primals) xs.push_back(tape.watch(p));
    ys = f(xs);
    core = tape.core();
  }
  VjpResult result;
  for (const Var& y : ys) result.outputs.push_back(y.value());
  result.pullback = [core, xs, ys](const std::vector<Tensor>& cts) {
    if (cts.size() != ys.size()) {
      throw TapeError("vjp pullback: " + std::to_string(cts.size()) + " cotangents given for " +
                      std::to_string(ys.size()) + " outputs");
    }
    for (std::size_t i = 0; i < cts.size(); ++i) {
      if (!cts[i].defined() || cts[i].shape() != ys[i].shape() || cts[i].dtype() != ys[i].dtype()) {
        throw TapeError("vjp pullback: cotangent " + std::to_string(i) + " has shape " +
                        (cts[i].defined() ? core::shape_str(cts[i].shape()) + " " +
                                                std::string(core::dtype_name(cts[i].dtype()))
                                          : std::string("<undefined>")) +
                        ", the output has shape " + core::shape_str(ys[i].shape()) + " " +
                        std::string(core::dtype_name(ys[i].dtype())));
      }
    }
    return pull(*core, ys, cts, xs);
  };
  return result;
}

std::pair<Tensor, std::vector<Tensor>> value_and_grad(const ScalarFn& f,
                                                      const std::vector<Tensor>& xs) {
  Tape tape;
  VarList vs;
  for (const Tensor& x : xs) vs.push_back(tape.watch(x));
  Var y = f(vs);
  check_scalar(y, "value_and_grad");
  return {y.value(), pull(*tape.core(), {y}, {Tensor()}, vs)};
}

std::vector<Tensor> grad(const ScalarFn& f, const std::vector<Tensor>& xs) {
  return value_and_grad(f, xs).second;
}

std::pair<Tensor, core::Tree<Tensor>> value_and_grad(const TreeFn& f,
                                                     const core::Tree<Tensor>& xs) {
  Tape tape;
  VarList vs;
  for (const Tensor& x : xs.flatten()) vs.push_back(tape.watch(x));
  Var y = f(core::Tree<Var>::unflatten(xs, vs));
  check_scalar(y, "value_and_grad");
  std::vector<Tensor> g = pull(*tape.core(), {y}, {Tensor()}, vs);
  return {y.value(), core::Tree<Tensor>::unflatten(xs, g)};
}

core::Tree<Tensor> grad(const TreeFn& f, const core::Tree<Tensor>& xs) {
  return value_and_grad(f, xs).second;
}

Var stop_gradient(const Var& x) {
  // Recorded (when x is on the tape) as a node with a non-flowing edge: the dump
  // shows where the gradient stops, and backward treats the node as a leaf.
  const Var inputs[] = {x};
  return std::move(record("stop_gradient", inputs, {x.value()}, {}, VjpRule{}, {false})[0]);
}

Var tie_in(const Var& x, const Var& y) {
  const Var inputs[] = {x, y};
  return std::move(record("tie_in", inputs, {y.value()}, {},
                          [](VjpContext& ctx) { ctx.accumulate(1, ctx.ct(0)); }, {false, true})[0]);
}

VarList custom_vjp(const std::string& name, const VarList& inputs, const CustomForward& forward,
                   const CustomBackward& backward) {
  std::vector<Tensor> in_values;
  in_values.reserve(inputs.size());
  for (const Var& v : inputs) in_values.push_back(v.value());
  std::vector<Tensor> residuals;
  std::vector<Tensor> outputs;
  {
    NoRecord quiet;
    outputs = forward(in_values, residuals);
  }
  const std::size_t n_in = inputs.size();
  VjpRule rule = [backward, name, n_in](VjpContext& ctx) {
    std::vector<Tensor> cts;
    for (std::size_t i = 0; i < ctx.n_outputs(); ++i) cts.push_back(ctx.ct(i));
    std::vector<Tensor> in_cts = backward(ctx.node().saved, cts);
    if (in_cts.size() != n_in) {
      throw TapeError("custom_vjp '" + name + "': backward returned " +
                      std::to_string(in_cts.size()) + " cotangents for " + std::to_string(n_in) +
                      " inputs");
    }
    for (std::size_t i = 0; i < n_in; ++i) {
      if (!in_cts[i].defined() || !ctx.needs(i)) continue;
      const Shape& want = ctx.node().input_shapes[i];
      if (in_cts[i].shape() != want) {
        throw TapeError("custom_vjp '" + name + "': backward returned a cotangent of shape " +
                        core::shape_str(in_cts[i].shape()) + " for input " + std::to_string(i) +
                        " of shape " + core::shape_str(want));
      }
      ctx.accumulate(i, in_cts[i]);
    }
  };
  return record(name, inputs, std::move(outputs), std::move(residuals), std::move(rule));
}

VarList checkpoint(const Fn& f, const VarList& inputs, const std::string& name) {
  std::vector<Tensor> in_values;
  in_values.reserve(inputs.size());
  for (const Var& v : inputs) in_values.push_back(v.value());
  std::vector<Tensor> outputs;
  {
    NoRecord quiet;
    VarList consts(in_values.begin(), in_values.end());
    for (const Var& y : f(consts)) outputs.push_back(y.value());
  }
  VjpRule rule = [f](VjpContext& ctx) {
    // Recompute f on a private tape from the saved inputs, then differentiate it.
    Tape tape;
    VarList xs;
    for (const Tensor& x : ctx.node().saved) xs.push_back(tape.watch(x));
    VarList ys = f(xs);
    if (ys.size() != ctx.n_outputs()) {
      throw TapeError("checkpoint: the recomputation returned " + std::to_string(ys.size()) +
                      " outputs, the forward pass " + std::to_string(ctx.n_outputs()));
    }
    VarList wrt;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (ctx.needs(i)) {
        wrt.push_back(xs[i]);
        which.push_back(i);
      }
    }
    if (wrt.empty()) return;
    std::vector<Tensor> seeds;
    for (std::size_t i = 0; i < ys.size(); ++i) seeds.push_back(ctx.ct(i));
    std::vector<Tensor> g = pull(*tape.core(), ys, seeds, wrt);
    for (std::size_t k = 0; k < which.size(); ++k) ctx.accumulate(which[k], g[k]);
  };
  return record(name, inputs, std::move(outputs), std::move(in_values), std::move(rule));
}

}  // namespace minitrax::autodiff
