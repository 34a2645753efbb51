/// @file
/// The n-dimensional array every floor passes around: Tensor, DType, Shape, and the
/// shape and dtype checks and dispatchers that go with them.
///
/// A Tensor is a contiguous, row-major block of float32, float64, int32 or int64
/// values with a shape. Its storage is an xtensor container (`xt::uvector` with an
/// aligned allocator, see tensor.cpp); core/xt.hpp turns a Tensor into an xtensor
/// expression for element-wise work. This header does not include xtensor, so code
/// that only moves tensors around compiles quickly.
///
/// Copying a Tensor is cheap: copies share one buffer, as `torch::Tensor` and
/// numpy views do. `clone()` makes an independent copy. The autodiff tape relies on
/// this: a node keeps the tensors its VJP reads without duplicating their memory.
/// Ops never write into their inputs; code that writes through `data<T>()` must own
/// the buffer (a fresh result of `empty`, `zeros`, `clone`, ...).
///
/// The element type is a run-time property (`dtype()`), not a template parameter.
/// Why: layers and models stay ordinary classes compiled once, yet the same model
/// can be cast to float64 for gradient checks (see docs/architecture.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"

namespace minitrax::core {

/// Element types a Tensor can hold.
enum class DType : std::uint8_t {
  f32,  ///< float32 (C++ `float`), the default for weights and activations
  f64,  ///< float64 (C++ `double`), for gradient checks
  i32,  ///< int32 (`std::int32_t`): token ids, comparison results, LSH buckets
  i64   ///< int64 (`std::int64_t`): indices from argsort and argmax
};

/** @{ */
/// The dtype of a C++ element type (float, double, int32_t, int64_t), at compile time:
/// `dtype_of<float>() == DType::f32`. Other types do not compile.
template <class T>
constexpr DType dtype_of();
/// DType::f32.
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
/// DType::f64.
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
/// DType::i32.
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::i32;
}
/// DType::i64.
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::i64;
}
/** @} */

/// numpy's name of a dtype: "float32", "float64", "int32", "int64".
std::string_view dtype_name(DType dtype);
/// Bytes per element: 4 for f32 and i32, 8 for f64 and i64.
std::size_t dtype_size(DType dtype);
/// True for f32 and f64.
inline bool is_floating(DType d) {
  return d == DType::f32 || d == DType::f64;
}

/// A shape: the extent of each axis, outermost first.
using Shape = std::vector<std::size_t>;

/// Number of elements of a shape (1 for a scalar shape `{}`). ShapeError if the product
/// does not fit in a std::size_t.
std::size_t shape_size(const Shape& shape);
/// The largest byte size of a tensor's elements: PTRDIFF_MAX (pointer differences
/// within one buffer must be representable).
inline constexpr std::size_t kMaxTensorBytes = static_cast<std::size_t>(PTRDIFF_MAX);
/// Number of elements of `shape`, checked for a tensor of `dtype` (default: the widest,
/// 8 bytes): ShapeError naming `what` and the shape unless the product of its nonzero
/// extents, times the item size, is at most kMaxTensorBytes. Extents of 0 are not
/// skipped blindly: [2^40, 2^40, 0] is refused too (as numpy does), so that strides
/// computed from any tensor's shape never overflow. Every tensor's storage goes
/// through this check (Tensor::empty); ops call it with their own name.
/// @code
/// checked_size({1ull << 32, 1ull << 32}, "my_op", DType::f32);
/// // ShapeError: "my_op: shape [4294967296, 4294967296] is too large for a float32
/// // tensor: its 4-byte elements would take more than 9223372036854775807 bytes (PTRDIFF_MAX)"
/// @endcode
std::size_t checked_size(const Shape& shape, std::string_view what, DType dtype = DType::f64);
/// a + b for extents, with a ShapeError naming `what` if the sum overflows.
std::size_t checked_add(std::size_t a, std::size_t b, std::string_view what);
/// A shape as text, as in error messages: `shape_str({2, 3, 4}) == "[2, 3, 4]"`, `"[]"` for a
/// scalar.
std::string shape_str(const Shape& shape);
/// Normalises a possibly negative axis against `ndim` (-1 is the last axis):
/// `normalize_axis(-1, 3, "sum") == 2`. Throws ValueError naming `op` if the axis is
/// outside [-ndim, ndim).
std::size_t normalize_axis(long axis, std::size_t ndim, std::string_view op);

namespace detail {
struct Buffer;  // defined in tensor.cpp: an xt::uvector of the right element type
}

/// A contiguous, row-major n-dimensional array of float32, float64, int32 or int64.
///
/// Copies share one buffer (cheap, like numpy views); `clone()` copies the elements.
/// Shape and dtype are run-time properties. Element access goes through `data<T>()`
/// with T the C++ type of the dtype (a mismatch is a DTypeError). The plain array ops
/// are free functions in core/ops.hpp and core/kernels.hpp; the differentiable ones,
/// on Vars, in autodiff/fastmath.hpp.
///
/// @code
/// Tensor x = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});  // [2, 3] float32
/// Tensor y = x.reshape(std::vector<long>{3, -1});            // [3, 2], same buffer
/// float first = x.data<float>()[0];                            // 1
/// Tensor z = core::add(x, Tensor::ones({3}));                  // broadcasts: [2, 3]
/// Tensor w = x.astype(DType::f64);                             // a float64 copy
/// std::cout << z << "\n";  // numpy-style text with dtype and shape
/// @endcode
class Tensor {
 public:
  /// An undefined tensor (no storage). `defined()` is false.
  Tensor() = default;

  // -- factories ----------------------------------------------------------
  /// Uninitialised storage of the given shape and dtype (for results that are then
  /// written in full). `what` names the op in errors (default "Tensor::empty", "Tensor::zeros",
  /// ...): a shape too large to address is a ShapeError (checked_size), memory the system refuses
  /// an AllocationError ("cannot allocate 4.0 GiB for a float32 tensor [32768, 32768]").
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, std::string_view what = {});
  /// All zeros: `Tensor::zeros({2, 3})` is a [2, 3] float32 tensor of 0. Errors as empty.
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, std::string_view what = {});
  /// All ones. Errors as empty.
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, std::string_view what = {});
  /// Every element `value`, converted to `dtype`: `Tensor::full({4}, -1e9)`. Errors as empty.
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     std::string_view what = {});
  /// A rank-0 tensor holding `value`.
  static Tensor scalar(double value, DType dtype = DType::f32);
  /// 0, 1, ..., n-1 as a rank-1 tensor of shape [n] (int32 by default). ValueError if
  /// n - 1 is not representable in an integer `dtype` (n > 2^31 for int32).
  static Tensor arange(std::size_t n, DType dtype = DType::i32);
  /// Copies `values` (row-major) into a new tensor of dtype `dtype_of<T>()`; the sizes
  /// must agree (ShapeError otherwise): `Tensor::from<float>({2, 2}, {1, 2, 3, 4})`.
  template <class T>
  static Tensor from(const Shape& shape, const std::vector<T>& values);
  /// The same from a braced list of values.
  template <class T>
  static Tensor from(const Shape& shape, std::initializer_list<T> values) {
    return from<T>(shape, std::vector<T>(values));
  }
  /// A same-shape, same-dtype tensor of zeros.
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }

  // -- properties -----------------------------------------------------------
  /// False for a default-constructed tensor (no storage); ops refuse those.
  bool defined() const { return buffer_ != nullptr; }
  /// The element type.
  DType dtype() const { return dtype_; }
  /// The extent of each axis, outermost first ({} for a scalar).
  const Shape& shape() const { return shape_; }
  /// The rank: number of axes (0 for a scalar).
  std::size_t ndim() const { return shape_.size(); }
  /// Number of elements (the product of the shape; 1 for a scalar).
  std::size_t size() const { return size_; }
  /// Bytes of the elements: size() * dtype_size(dtype()).
  std::size_t nbytes() const { return size_ * dtype_size(dtype_); }
  /// Extent of one axis; negative counts from the end.
  std::size_t dim(long axis) const;

  // -- element access -------------------------------------------------------
  /// Pointer to the first element; throws DTypeError if T is not the dtype.
  /// Write through it only into a tensor you own (a fresh result): copies share it.
  template <class T>
  T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(ptr_);
  }
  /// Read-only pointer to the first element; throws DTypeError if T is not the dtype.
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(ptr_);
  }
  /// Untyped pointer to the first element (for byte-level I/O), nullptr if undefined.
  void* raw_data() { return ptr_; }
  /// Untyped read-only pointer to the first element, nullptr if undefined.
  const void* raw_data() const { return ptr_; }

  /// The single element of a size-1 tensor, converted to T.
  template <class T>
  T item() const;
  /// Element at a multi-index (bounds-checked), converted to double: `t.at({1, 2})`.
  double at(std::initializer_list<std::size_t> index) const;
  /// Element at a flat row-major position (bounds-checked), converted to double.
  double flat(std::size_t i) const;
  /// All elements, converted to T.
  template <class T>
  std::vector<T> to_vector() const;

  // -- conversions ----------------------------------------------------------
  /// An independent deep copy.
  Tensor clone() const;
  /// A copy converted to another dtype (a plain copy if the dtype is the same).
  Tensor astype(DType dtype) const;
  /// Same elements, new shape; shares storage. One extent may be -1 (inferred):
  /// a [2, 3] tensor reshaped to {3, -1} is [3, 2]. ShapeError if the sizes differ.
  Tensor reshape(const std::vector<long>& shape) const;
  /// Same elements, new shape (all extents given); shares storage.
  Tensor reshape(const Shape& shape) const;

  /// True if both tensors use the same buffer.
  bool shares_storage(const Tensor& other) const { return buffer_ && buffer_ == other.buffer_; }
  /// Identity of the buffer (for counting distinct stored values).
  const void* storage_id() const { return buffer_.get(); }

  /// numpy-style text: dtype, shape and values (long rows are elided).
  std::string str(std::size_t edge_items = 3) const;

 private:
  void check_dtype(DType want) const;

  std::shared_ptr<detail::Buffer> buffer_;
  void* ptr_ = nullptr;
  Shape shape_;
  std::size_t size_ = 0;
  DType dtype_ = DType::f32;
};

/// Writes `t.str()`.
std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Bitwise equality of dtype, shape and every element.
bool equal(const Tensor& a, const Tensor& b);

/// Throws ShapeError "op: expected shape [..], got [..]" when the shapes differ.
void check_shape(std::string_view op, const Shape& expected, const Shape& actual);
/// Throws DTypeError "op: expected float32, got int32" when the dtypes differ.
void check_dtype(std::string_view op, DType expected, DType actual);
/// Throws DTypeError unless `t` is float32 or float64.
void check_floating(std::string_view op, const Tensor& t);

/// Calls `f(T{})` with T the C++ type of a floating dtype; DTypeError otherwise.
/// Returns what f returns. The usual way to write one kernel for float and double:
/// @code
/// dispatch_floating(x.dtype(), "my_op", [&](auto zero) {
///   using T = decltype(zero);
///   const T* p = x.data<T>();
///   // ...
/// });
/// @endcode
template <class F>
decltype(auto) dispatch_floating(DType dtype, std::string_view op, F&& f) {
  switch (dtype) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    default:
      break;
  }
  check_dtype(op, DType::f32, dtype);
  return f(float{});  // unreachable: check_dtype throws
}

/// Calls `f(T{})` with T the C++ type of any dtype; returns what f returns.
template <class F>
decltype(auto) dispatch_all(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    case DType::i32:
      return f(std::int32_t{});
    case DType::i64:
      return f(std::int64_t{});
  }
  return f(float{});
}

/// Calls `f(T{})` with T the C++ type of an integer dtype; DTypeError otherwise.
template <class F>
decltype(auto) dispatch_integer(DType dtype, std::string_view op, F&& f) {
  switch (dtype) {
    case DType::i32:
      return f(std::int32_t{});
    case DType::i64:
      return f(std::int64_t{});
    default:
      break;
  }
  check_dtype(op, DType::i64, dtype);
  return f(std::int64_t{});  // unreachable
}

}  // namespace minitrax::core

namespace minitrax {
using core::DType;
using core::Shape;
using core::Tensor;
}  // namespace minitrax
