/// @file
/// One gradient checker for every op and layer: gradcheck.
///
/// gradcheck(f, inputs) compares the VJP of f with central finite differences:
/// it draws a random cotangent u for each output, forms s(x) = sum_k <u_k, f_k(x)>,
/// and checks every element j of every floating input i:
///
///     analytic = (pullback(u))_i[j]         numeric = (s(x + h e_j) - s(x - h e_j)) / 2h
///
/// An element passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
/// The report names the worst element (input, multi-index, both values). Inputs
/// must be float64: in float32 the differences drown in rounding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/transforms.hpp"

namespace minitrax::autodiff {

/// Settings of gradcheck: step, tolerances, the seed of the random cotangents, and which
/// inputs to check.
struct GradcheckOptions {
  double eps = 1e-6;       ///< finite-difference step h
  double rtol = 1e-6;      ///< relative tolerance
  double atol = 1e-8;      ///< absolute tolerance (for elements whose gradient is ~0)
  std::uint64_t seed = 0;  ///< for the random output cotangents
  /// Which inputs to check (default: every floating input). Integer inputs are never checked.
  std::vector<bool> check;
};

/// What gradcheck found: the verdict, and the worst element with both of its values.
struct GradcheckResult {
  bool ok = true;             ///< true if every checked element passed
  std::size_t n_checked = 0;  ///< elements compared
  // the worst element (largest error relative to its tolerance)
  std::size_t input = 0;           ///< the worst element's input (argument index)
  std::vector<std::size_t> index;  ///< multi-index within that input
  /** @{ */
  /// The worst element's gradient from the VJP (analytic) and from finite differences
  /// (numeric).
  double analytic = 0, numeric = 0;
  /** @} */
  double error_ratio = 0;  ///< |a - n| / (atol + rtol * max(|a|, |n|)); <= 1 passes
  std::string message;     ///< a readable verdict with the worst element
  /// `ok`, so a result can be tested directly: `CHECK(gradcheck(f, xs))`.
  explicit operator bool() const { return ok; }
};

/// Checks f's VJP against central finite differences at `inputs` (float64 tensors; see
/// the file description for the test). f may have several inputs and outputs.
/// @code
/// Fn f = [](const VarList& v) { return VarList{fastmath::softmax(v[0]) * v[1]}; };
/// Rng rng(0);
/// GradcheckResult r = gradcheck(f, {rng.normal({3, 5}, DType::f64), rng.normal({5}, DType::f64)});
/// if (!r) std::cerr << r.message << "\n";   // names the worst element
/// @endcode
GradcheckResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace minitrax::autodiff

namespace minitrax {
using autodiff::gradcheck;
using autodiff::GradcheckOptions;
}  // namespace minitrax
