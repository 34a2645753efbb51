/// @file
/// Numbers as text that reads back exactly.
#pragma once

#include <string>

namespace minitrax::core {

/// The shortest decimal text that reads back (strtod, any JSON parser) to exactly `v`:
/// 0.1 is "0.1", 1e-9 is "1e-09", 361.611 stays "361.611". "nan", "inf" and "-inf" for
/// the non-finite values (JSON writers decide themselves what to write for those).
std::string shortest(double v);

}  // namespace minitrax::core
