// minitrax/core/xt.hpp: Tensor <-> xtensor, for .cpp files that do element-wise work.
//
// Include this only where xtensor expressions are used: it pulls in xtensor,
// which is heavy to compile. `xt_of<T>(t)` is an xtensor adaptor over the tensor's
// own memory (no copy), so `xt::noalias(xt_of<float>(out)) = xt::exp(xt_of<float>(x))`
// writes straight into `out`.
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>

#include "core/tensor.hpp"

namespace minitrax::core {

/// An xtensor adaptor (dynamic rank, row-major) over the tensor's buffer.
template <class T>
auto xt_of(Tensor& t) {
  return xt::adapt(t.data<T>(), t.size(), xt::no_ownership(), t.shape());
}
template <class T>
auto xt_of(const Tensor& t) {
  return xt::adapt(t.data<T>(), t.size(), xt::no_ownership(), t.shape());
}

/// Evaluates an xtensor expression into a new Tensor of element type T.
template <class T, class E>
Tensor to_tensor(const xt::xexpression<E>& expr) {
  const auto& e = expr.derived_cast();
  Shape shape(e.shape().begin(), e.shape().end());
  Tensor out = Tensor::empty(shape, dtype_of<T>());
  auto view = xt_of<T>(out);
  xt::noalias(view) = e;
  return out;
}

}  // namespace minitrax::core
