// tests/test_util.hpp: small helpers shared by the test programs.
#pragma once

#include <cxxabi.h>

#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <typeinfo>

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

/// What a bad input gave: the exception's dynamic type, what() and, for a LayerError,
/// the original message.
struct Observed {
  bool thrown = false;
  std::string type;      ///< e.g. "minitrax::core::ShapeError"
  std::string what;      ///< what the user sees
  std::string original;  ///< LayerError: the message of the exception inside
};

/// A type's readable name ("minitrax::core::ShapeError").
inline std::string type_name(const std::type_info& t) {
  int status = 0;
  char* name = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : t.name();
  std::free(name);
  return out;
}

/// Runs f and records what it throws. With MINITRAX_PRINT_ERRORS set it prints
/// "==== <id> | <type>" and the message (passed through `printable`, e.g. to hide a
/// temporary folder's name), which is what the docs' catalogues show.
template <class F>
Observed observe(const std::string& id, F&& f,
                 const std::function<std::string(const std::string&)>& printable = {}) {
  Observed o;
  try {
    f();
  } catch (const base::LayerError& e) {
    o = {true, type_name(typeid(e)), e.what(), e.original()};
  } catch (const std::exception& e) {
    o = {true, type_name(typeid(e)), e.what(), e.what()};
  }
  if (std::getenv("MINITRAX_PRINT_ERRORS")) {
    std::string text = o.thrown ? o.what : "(no error)";
    if (printable) text = printable(text);
    std::cerr << "==== " << id << " | " << (o.thrown ? o.type : "-") << "\n" << text << "\n";
  }
  return o;
}

/// metrics.jsonl without the timing field step_seconds, which differs between any two
/// runs.
inline std::string without_timing(const std::string& text) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t p = line.find(", \"step_seconds\": ");
    if (p != std::string::npos) line.erase(p, line.find_first_of(",}", p + 2) - p);
    out += line + "\n";
  }
  return out;
}

}  // namespace minitrax::testutil
