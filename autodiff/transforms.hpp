// minitrax/autodiff/transforms.hpp: vjp, grad, value_and_grad, stop_gradient,
// tie_in, custom_vjp and checkpoint.
//
// These are the functional face of the tape, named as in JAX and Trax's fastmath:
//
//     auto f = [](const VarList& x) { return fastmath::sum(fastmath::exp(x[0])); };
//     auto [value, grads] = value_and_grad(f, {x0});
//
// Each transform records on a fresh tape of its own, so transforms nest inside
// recordings of the caller (a reversible layer's backward calls vjp on a private
// tape while the outer backward waits).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/tree.hpp"

namespace minitrax::autodiff {

using Fn = std::function<VarList(const VarList&)>;
using ScalarFn = std::function<Var(const VarList&)>;
using TreeFn = std::function<Var(const core::Tree<Var>&)>;

/// The outputs of f at `primals`, and its pullback: output cotangents -> input cotangents.
/// The pullback may be called any number of times; it keeps the recording alive.
struct VjpResult {
  std::vector<Tensor> outputs;
  std::function<std::vector<Tensor>(const std::vector<Tensor>& output_cts)> pullback;
};
VjpResult vjp(const Fn& f, const std::vector<Tensor>& primals);

/// Gradient of a scalar function with respect to each input.
std::vector<Tensor> grad(const ScalarFn& f, const std::vector<Tensor>& xs);
/// The value of a scalar function and its gradient with respect to each input.
std::pair<Tensor, std::vector<Tensor>> value_and_grad(const ScalarFn& f,
                                                      const std::vector<Tensor>& xs);
/// Tree forms: the gradient has the structure of `xs`.
core::Tree<Tensor> grad(const TreeFn& f, const core::Tree<Tensor>& xs);
std::pair<Tensor, core::Tree<Tensor>> value_and_grad(const TreeFn& f, const core::Tree<Tensor>& xs);

/// Same value, a new leaf: no cotangent flows back into x.
Var stop_gradient(const Var& x);

/// The value of y, with an edge from x recorded on the tape (it shows in dumps)
/// and a zero cotangent to x. Trax 1.3.4 uses it (as jax.lax.tie_in) to tie
/// values created inside a layer (ranges, rng draws) to its inputs.
Var tie_in(const Var& x, const Var& y);

/// A function given its own forward and backward.
///  forward(inputs, residuals) -> outputs; it may push tensors into `residuals`.
///  backward(residuals, output_cts) -> input cts (one per input; an undefined
///  Tensor means zero). Output cotangents that never arrived are passed as zeros.
/// The forward runs with recording off: the tape holds one node and the residuals.
using CustomForward = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs,
                                                        std::vector<Tensor>& residuals)>;
using CustomBackward = std::function<std::vector<Tensor>(const std::vector<Tensor>& residuals,
                                                         const std::vector<Tensor>& output_cts)>;
VarList custom_vjp(const std::string& name, const VarList& inputs, const CustomForward& forward,
                   const CustomBackward& backward);

/// Rematerialisation: applies f keeping only its inputs on the tape; the backward
/// pass recomputes f on a private tape and differentiates that. f must be a pure
/// function of its inputs (randomness from keys it is given, not drawn afresh).
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
