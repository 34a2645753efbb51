// minitrax/autodiff/gradcheck.cpp
#include "autodiff/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/rng.hpp"

namespace minitrax::autodiff {

namespace {

// s(x) = sum_k <u_k, f_k(x)>, evaluated without recording.
double project(const Fn& f, const std::vector<Tensor>& xs, const std::vector<Tensor>& us) {
  NoRecord quiet;
  VarList in(xs.begin(), xs.end());
  VarList out = f(in);
  double s = 0;
  for (std::size_t k = 0; k < out.size(); ++k) {
    const Tensor y = out[k].value().astype(DType::f64);
    const double* py = y.data<double>();
    const double* pu = us[k].data<double>();
    for (std::size_t j = 0; j < y.size(); ++j) s += py[j] * pu[j];
  }
  return s;
}

std::vector<std::size_t> unravel(std::size_t flat, const Shape& shape) {
  std::vector<std::size_t> idx(shape.size());
  for (std::size_t a = shape.size(); a-- > 0;) {
    idx[a] = flat % shape[a];
    flat /= shape[a];
  }
  return idx;
}

}  // namespace

GradcheckResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
  std::vector<bool> check = options.check;
  if (check.empty()) {
    for (const Tensor& x : inputs) check.push_back(core::is_floating(x.dtype()));
  }
  if (check.size() != inputs.size()) {
    throw ValueError("gradcheck: `check` has " + std::to_string(check.size()) + " flags for " +
                     std::to_string(inputs.size()) + " inputs");
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (check[i] && inputs[i].dtype() != DType::f64) {
      throw DTypeError("gradcheck: input " + std::to_string(i) + " is " +
                       std::string(core::dtype_name(inputs[i].dtype())) +
                       "; gradient checks need float64 inputs (use astype(DType::f64))");
    }
  }

  // Analytic side: one pullback of random cotangents.
  VjpResult r = vjp(f, inputs);
  std::vector<Tensor> us, cts;
  core::Key key = core::key_from_seed(static_cast<std::int64_t>(options.seed));
  for (std::size_t k = 0; k < r.outputs.size(); ++k) {
    const Tensor& y = r.outputs[k];
    Tensor u =
        core::normal(core::fold_in(key, static_cast<std::uint32_t>(k)), y.shape(), DType::f64);
    us.push_back(u);
    cts.push_back(core::is_floating(y.dtype()) ? u.astype(y.dtype())
                                               : Tensor::zeros(y.shape(), y.dtype()));
  }
  std::vector<Tensor> analytic = r.pullback(cts);

  // Numeric side: central differences, element by element.
  GradcheckResult res;
  std::vector<Tensor> xs;
  for (const Tensor& x : inputs) xs.push_back(x.clone());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!check[i]) continue;
    double* p = xs[i].data<double>();
    const Tensor a64 = analytic[i].astype(DType::f64);
    const double* pa = a64.data<double>();
    for (std::size_t j = 0; j < xs[i].size(); ++j) {
      const double x0 = p[j];
      p[j] = x0 + options.eps;
      const double s_plus = project(f, xs, us);
      p[j] = x0 - options.eps;
      const double s_minus = project(f, xs, us);
      p[j] = x0;
      const double numeric = (s_plus - s_minus) / (2 * options.eps);
      const double a = pa[j];
      const double tol = options.atol + options.rtol * std::max(std::abs(a), std::abs(numeric));
      const double ratio = std::isfinite(a) && std::isfinite(numeric)
                               ? std::abs(a - numeric) / tol
                               : std::numeric_limits<double>::infinity();
      ++res.n_checked;
      if (res.n_checked == 1 || ratio > res.error_ratio) {
        res.error_ratio = ratio;
        res.input = i;
        res.index = unravel(j, xs[i].shape());
        res.analytic = a;
        res.numeric = numeric;
      }
    }
  }
  res.ok = res.error_ratio <= 1.0;
  std::ostringstream msg;
  msg.precision(10);
  msg << (res.ok ? "gradcheck passed" : "gradcheck FAILED") << " (" << res.n_checked
      << " elements); worst: input " << res.input << " at " << core::shape_str(res.index)
      << ": analytic " << res.analytic << ", numeric " << res.numeric << ", |diff| "
      << std::abs(res.analytic - res.numeric) << " = " << res.error_ratio << " x tolerance (rtol "
      << options.rtol << ", atol " << options.atol << ")";
  res.message = msg.str();
  return res;
}

}  // namespace minitrax::autodiff
