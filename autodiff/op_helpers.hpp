// minitrax/autodiff/op_helpers.hpp: small shared pieces of the ops' VJP rules
// (internal to autodiff/*.cpp; not installed as public API).
#pragma once

#include <string_view>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::autodiff::detail {

/// The shape of a reduction over `axes` with keepdims (reduced axes become 1);
/// empty `axes` means all. Negative axes allowed; duplicates are a ValueError.
core::Shape kept_shape(const core::Shape& shape, const std::vector<long>& axes,
                       std::string_view op);

}  // namespace minitrax::autodiff::detail
