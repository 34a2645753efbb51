/// @file
/// The exception types every floor throws.
///
/// Every error says what went wrong in words a user can act on: the op or layer,
/// what was expected and what was found. Nothing in minitrax reports an error by
/// printing and carrying on.
///
/// @code
/// try {
///   core::add(Tensor::zeros({2, 3}), Tensor::zeros({4}));
/// } catch (const ShapeError& e) {
///   std::cerr << e.what() << "\n";  // names the op and both shapes
/// }
/// @endcode
#pragma once

#include <stdexcept>
#include <string>

namespace minitrax::core {

/// Base of all minitrax errors (a `std::runtime_error`): catch this to catch them all.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Shapes that do not fit an op: the message names the op and both shapes.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An element type the op does not accept (for example an int tensor given to exp).
class DTypeError : public Error {
 public:
  using Error::Error;
};

/// A bad argument value (negative axis out of range, zero buckets, ...).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or written, is truncated, or is not what it claims.
class FileError : public Error {
 public:
  using Error::Error;
};

/// Memory for a tensor could not be allocated (the system refused it): the message names
/// what was being allocated, its dtype, shape and byte size, e.g. "matmul: cannot allocate
/// 4.0 GiB for a float32 tensor [32768, 32768] (out of memory)". Shapes too large to
/// address at all are a ShapeError instead (see core::checked_size).
class AllocationError : public Error {
 public:
  using Error::Error;
};

}  // namespace minitrax::core

namespace minitrax {
using core::AllocationError;
using core::DTypeError;
using core::Error;
using core::FileError;
using core::ShapeError;
using core::ValueError;
}  // namespace minitrax
