// minitrax/autodiff/gradcheck.hpp: one gradient checker for every op and layer.
//
// gradcheck(f, inputs) compares the VJP of f with central finite differences:
// it draws a random cotangent u for each output, forms s(x) = sum_k <u_k, f_k(x)>,
// and checks every element j of every floating input i:
//
//     analytic = (pullback(u))_i[j]         numeric = (s(x + h e_j) - s(x - h e_j)) / 2h
//
// An element passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
// The report names the worst element (input, multi-index, both values). Inputs
// must be float64: in float32 the differences drown in rounding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/transforms.hpp"

namespace minitrax::autodiff {

struct GradcheckOptions {
  double eps = 1e-6;       // finite-difference step h
  double rtol = 1e-6;      // relative tolerance
  double atol = 1e-8;      // absolute tolerance (for elements whose gradient is ~0)
  std::uint64_t seed = 0;  // for the random output cotangents
  /// Which inputs to check (default: every floating input). Integer inputs are never checked.
  std::vector<bool> check;
};

struct GradcheckResult {
  bool ok = true;
  std::size_t n_checked = 0;  // elements compared
  // the worst element (largest error relative to its tolerance)
  std::size_t input = 0;
  std::vector<std::size_t> index;  // multi-index within that input
  double analytic = 0, numeric = 0;
  double error_ratio = 0;  // |a - n| / (atol + rtol * max(|a|, |n|)); <= 1 passes
  std::string message;     // a readable verdict with the worst element
  explicit operator bool() const { return ok; }
};

GradcheckResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace minitrax::autodiff

namespace minitrax {
using autodiff::gradcheck;
using autodiff::GradcheckOptions;
}  // namespace minitrax
