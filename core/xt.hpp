/// @file
/// Tensor to and from xtensor, for .cpp files that do element-wise work.
///
/// Include this only where xtensor expressions are used: it pulls in xtensor,
/// which is heavy to compile. `xt_of<T>(t)` is an xtensor adaptor over the tensor's
/// own memory (no copy), so `xt::noalias(xt_of<float>(out)) = xt::exp(xt_of<float>(x))`
/// writes straight into `out`.
///
/// @code
/// Tensor x = Tensor::from<float>({2, 2}, {1, 2, 3, 4});
/// Tensor y = to_tensor<float>(xt::square(xt_of<float>(x)) + 1.0f);  // [2, 2]: 2, 5, 10, 17
/// @endcode
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>

#include "core/tensor.hpp"

namespace minitrax::core {

/// An xtensor adaptor (dynamic rank, row-major, same shape) over the tensor's buffer:
/// writes through it change the tensor. T must be the tensor's C++ element type
/// (DTypeError otherwise).
template <class T>
auto xt_of(Tensor& t) {
  return xt::adapt(t.data<T>(), t.size(), xt::no_ownership(), t.shape());
}
/// A read-only xtensor adaptor over the tensor's buffer (same shape, no copy).
template <class T>
auto xt_of(const Tensor& t) {
  return xt::adapt(t.data<T>(), t.size(), xt::no_ownership(), t.shape());
}

/// Evaluates an xtensor expression into a new Tensor of element type T, with the
/// expression's shape.
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
