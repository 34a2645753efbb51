// minitrax/core/format.cpp
#include "core/format.hpp"

#include <charconv>
#include <cmath>

namespace minitrax::core {

std::string shortest(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace minitrax::core
