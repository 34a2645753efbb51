// fuzz/source_location_compat.hpp: std::source_location for clang 14 with libstdc++ 12.
//
// libstdc++ 12 defines std::source_location only when the compiler has
// __builtin_source_location (GCC 11+, clang 15+). Debian 12's libFuzzer comes with
// clang 14, so the fuzz build force-includes this header (-include, see the top-level
// CMakeLists.txt): where the library's own type is missing it supplies one with the
// same interface, built on the __builtin_FILE/LINE/... that clang 14 does have. With
// any other compiler or standard library it does nothing.
#pragma once

#include <version>

#if !defined(__cpp_lib_source_location)
#include <cstdint>

namespace std {
struct source_location {
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           std::uint_least32_t line = __builtin_LINE(),
                                           std::uint_least32_t column = __builtin_COLUMN()) noexcept {
    source_location s;
    s.file_ = file;
    s.function_ = function;
    s.line_ = line;
    s.column_ = column;
    return s;
  }
  constexpr source_location() noexcept = default;
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return column_; }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};
}  // namespace std
#endif
