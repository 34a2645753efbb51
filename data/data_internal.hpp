// minitrax/data/data_internal.hpp: helpers shared by the data/ sources (not installed).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace minitrax::data::detail {

/// A number as %g prints it ("0.25", "1").
inline std::string number_str(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// "[1, 2, 3]".
inline std::string position_str(const std::vector<std::int64_t>& p) {
  std::string s = "[";
  for (std::size_t i = 0; i < p.size(); ++i) s += (i ? ", " : "") + std::to_string(p[i]);
  return s + "]";
}

/// ValueError "seek: position [..] does not belong to <stream>: <why>".
[[noreturn]] inline void bad_position(const std::vector<std::int64_t>& p, const std::string& stream,
                                      const std::string& why) {
  throw core::ValueError("seek: position " + position_str(p) + " does not belong to " + stream +
                         ": " + why);
}

/// Checks that `p` has at least `n` values (exactly n if `exact`) and returns it.
inline void check_position_size(const std::vector<std::int64_t>& p, std::size_t n, bool exact,
                                const std::string& stream) {
  if (exact ? p.size() != n : p.size() < n) {
    bad_position(p, stream,
                 "expected " + std::string(exact ? "" : "at least ") + std::to_string(n) +
                     " value" + (n == 1 ? "" : "s") + ", got " + std::to_string(p.size()));
  }
}

/// The tail of a position after its first n values (the upstream stream's position).
inline std::vector<std::int64_t> tail(const std::vector<std::int64_t>& p, std::size_t n) {
  return {p.begin() + static_cast<std::ptrdiff_t>(n), p.end()};
}

/// {head..., tail...}.
inline std::vector<std::int64_t> join(std::vector<std::int64_t> head,
                                      const std::vector<std::int64_t>& rest) {
  head.insert(head.end(), rest.begin(), rest.end());
  return head;
}

}  // namespace minitrax::data::detail
