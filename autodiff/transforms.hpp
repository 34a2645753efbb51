/// @file
/// vjp, grad, value_and_grad, stop_gradient, tie_in, custom_vjp and checkpoint.
///
/// These are the functional face of the tape, named as in JAX and Trax's fastmath:
///
///     auto f = [](const VarList& x) { return fastmath::sum(fastmath::exp(x[0])); };
///     auto [value, grads] = value_and_grad(f, {x0});
///
/// Each transform records on a fresh tape of its own, so transforms nest inside
/// recordings of the caller (a reversible layer's backward calls vjp on a private
/// tape while the outer backward waits).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/tree.hpp"

namespace minitrax::autodiff {

/// A differentiable function of several inputs with several outputs.
using Fn = std::function<VarList(const VarList&)>;
/// A differentiable function of several inputs with one (scalar, for grad) output.
using ScalarFn = std::function<Var(const VarList&)>;
/// A differentiable scalar function of a tree of inputs (weights, for example).
using TreeFn = std::function<Var(const core::Tree<Var>&)>;

/// The outputs of f at `primals`, and its pullback: output cotangents -> input cotangents.
/// The pullback may be called any number of times; it keeps the recording alive.
struct VjpResult {
  /// f's outputs at the primals.
  std::vector<Tensor> outputs;
  /// Maps one cotangent per output (each of that output's shape and dtype; TapeError
  /// otherwise) to one cotangent per primal, of the primal's shape.
  std::function<std::vector<Tensor>(const std::vector<Tensor>& output_cts)> pullback;
};
/// Evaluates f at `primals` on a private tape and returns its outputs and pullback,
/// as jax.vjp.
/// @code
/// Fn f = [](const VarList& v) { return VarList{fastmath::tanh(v[0]) * v[1]}; };
/// VjpResult r = vjp(f, {x, y});                        // r.outputs[0]: f(x, y)
/// const Tensor& out = r.outputs[0];
/// std::vector<Tensor> cts = r.pullback({Tensor::ones(out.shape(), out.dtype())});
/// // cts[0]: d/dx of sum(f), x's shape; cts[1]: d/dy, y's shape
/// @endcode
VjpResult vjp(const Fn& f, const std::vector<Tensor>& primals);

/// Gradient of a scalar function with respect to each input: one tensor per input, of
/// that input's shape. TapeError if f does not return a scalar.
/// @code
/// ScalarFn loss = [](const VarList& v) { return fastmath::sum(fastmath::square(v[0])); };
/// std::vector<Tensor> g = grad(loss, {x});   // g[0] == 2 * x
/// @endcode
std::vector<Tensor> grad(const ScalarFn& f, const std::vector<Tensor>& xs);
/// The value of a scalar function and its gradient with respect to each input.
/// @code
/// auto [value, grads] = value_and_grad(loss, {x});  // value: a scalar Tensor
/// @endcode
std::pair<Tensor, std::vector<Tensor>> value_and_grad(const ScalarFn& f,
                                                      const std::vector<Tensor>& xs);
/// Tree forms: the gradient has the structure of `xs`.
core::Tree<Tensor> grad(const TreeFn& f, const core::Tree<Tensor>& xs);
/// Tree form of value_and_grad: the value and a gradient with the structure of `xs`.
std::pair<Tensor, core::Tree<Tensor>> value_and_grad(const TreeFn& f, const core::Tree<Tensor>& xs);

/// Same value, a new leaf: no cotangent flows back into x.
/// @code
/// Var target = stop_gradient(y);   // y's value, treated as a constant by backward
/// @endcode
Var stop_gradient(const Var& x);

/// The value of y, with an edge from x recorded on the tape (it shows in dumps)
/// and a zero cotangent to x. Trax 1.3.4 uses it (as jax.lax.tie_in) to tie
/// values created inside a layer (ranges, rng draws) to its inputs.
Var tie_in(const Var& x, const Var& y);

/// The forward of a custom_vjp: (inputs, residuals) -> outputs; it may push tensors
/// into `residuals` for the backward.
using CustomForward = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs,
                                                        std::vector<Tensor>& residuals)>;
/// The backward of a custom_vjp: (residuals, output cotangents) -> one cotangent per input
/// (of the input's shape; an undefined Tensor means zero).
using CustomBackward = std::function<std::vector<Tensor>(const std::vector<Tensor>& residuals,
                                                         const std::vector<Tensor>& output_cts)>;
/// A function given its own forward and backward.
///  forward(inputs, residuals) -> outputs; it may push tensors into `residuals`.
///  backward(residuals, output_cts) -> input cts (one per input; an undefined
///  Tensor means zero). Output cotangents that never arrived are passed as zeros.
/// The forward runs with recording off: the tape holds one node and the residuals.
/// Returns the forward's outputs as Vars (recorded as one node named `name`). A
/// backward returning the wrong number of cotangents or a wrong shape is a TapeError.
/// @code
/// // y = x^3 with a hand-written VJP: dx = 3 x^2 * dy
/// VarList y = custom_vjp(
///     "cube", {x},
///     [](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
///       res.push_back(in[0]);
///       return std::vector<Tensor>{core::pow(in[0], 3.0)};
///     },
///     [](const std::vector<Tensor>& res, const std::vector<Tensor>& ct) {
///       return std::vector<Tensor>{core::mul(core::mul(core::square(res[0]), 3.0), ct[0])};
///     });
/// @endcode
VarList custom_vjp(const std::string& name, const VarList& inputs, const CustomForward& forward,
                   const CustomBackward& backward);

/// Rematerialisation: applies f keeping only its inputs on the tape; the backward
/// pass recomputes f on a private tape and differentiates that. f must be a pure
/// function of its inputs (randomness from keys it is given, not drawn afresh).
/// Returns f's outputs; the tape holds one node named `name` for the whole of f.
/// @code
/// Fn block = [&](const VarList& v) { return VarList{fastmath::relu(fastmath::dense(v[0], w))}; };
/// Var h = checkpoint(block, {x})[0];   // f's intermediates are not kept on the tape
/// @endcode
VarList checkpoint(const Fn& f, const VarList& inputs, const std::string& name = "checkpoint");

}  // namespace minitrax::autodiff

namespace minitrax {
using autodiff::checkpoint;
using autodiff::custom_vjp;
using autodiff::grad;
using autodiff::stop_gradient;
using autodiff::tie_in;
using autodiff::value_and_grad;
using autodiff::vjp;
}  // namespace minitrax
