// tests/test_util.hpp: small helpers shared by the test programs.
#pragma once

#include <exception>
#include <string>

#include "layers/base.hpp"

namespace minitrax::testutil {

/// The original message of the LayerError that f() throws ("" if none).
template <class F>
std::string layer_error(F&& f) {
  try {
    f();
  } catch (const base::LayerError& e) {
    return e.original();
  }
  return "";
}

/// The message of the exception that f() throws ("" if none).
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace minitrax::testutil
