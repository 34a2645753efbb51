// minitrax/autodiff/op_helpers.cpp
#include "autodiff/op_helpers.hpp"

#include <string>

namespace minitrax::autodiff::detail {

core::Shape kept_shape(const core::Shape& shape, const std::vector<long>& axes,
                       std::string_view op) {
  core::Shape out = shape;
  if (axes.empty()) {
    for (auto& d : out) d = 1;
    return out;
  }
  std::vector<bool> seen(shape.size(), false);
  for (long a : axes) {
    const std::size_t ax = core::normalize_axis(a, shape.size(), op);
    if (seen[ax]) {
      throw core::ValueError(std::string(op) + ": axis " + std::to_string(a) +
                             " is repeated in the list of axes");
    }
    seen[ax] = true;
    out[ax] = 1;
  }
  return out;
}

}  // namespace minitrax::autodiff::detail
