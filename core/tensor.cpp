// minitrax/core/tensor.cpp: storage, factories, conversions and printing of Tensor.
#include "core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <iterator>
#include <new>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <variant>

#include <xsimd/xsimd.hpp>
#include <xtensor/xstorage.hpp>

namespace minitrax::core {

namespace detail {

// The storage of a Tensor: an xtensor container, aligned for SIMD loads.
template <class T>
using Storage = xt::uvector<T, xsimd::aligned_allocator<T>>;

struct Buffer {
  std::variant<Storage<float>, Storage<double>, Storage<std::int32_t>, Storage<std::int64_t>> data;
  void* ptr() {
    return std::visit([](auto& s) -> void* { return s.data(); }, data);
  }
};

}  // namespace detail

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::i32:
      return "int32";
    case DType::i64:
      return "int64";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
  }
  return 0;
}

std::size_t shape_size(const Shape& shape) {
  std::size_t n = 1;
  bool overflow = false;
  for (std::size_t d : shape) {
    if (d == 0) return 0;
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  if (overflow) {
    throw ShapeError("shape_size: shape " + shape_str(shape) +
                     " has more elements than a 64-bit count holds");
  }
  return n;
}

std::size_t checked_size(const Shape& shape, std::string_view what, DType dtype) {
  // The product of the nonzero extents, times the item size, must stay within
  // kMaxTensorBytes; the element count is 0 if any extent is 0.
  std::size_t bytes = dtype_size(dtype);
  bool overflow = false, empty = false;
  for (std::size_t d : shape) {
    if (d == 0) {
      empty = true;
    } else {
      overflow |= __builtin_mul_overflow(bytes, d, &bytes);
    }
  }
  if (overflow || bytes > kMaxTensorBytes) {
    const std::string item = std::to_string(dtype_size(dtype)) + "-byte";
    const std::string limit = std::to_string(kMaxTensorBytes) + " bytes (PTRDIFF_MAX)";
    throw ShapeError(std::string(what.empty() ? std::string_view("Tensor") : what) + ": shape " +
                     shape_str(shape) + " is too large for " +
                     (dtype_name(dtype)[0] == 'i' ? "an " : "a ") + std::string(dtype_name(dtype)) +
                     " tensor: " +
                     (empty ? "its nonzero extents times " + item + " elements exceed " + limit +
                                  ", even though an extent is 0"
                            : "its " + item + " elements would take more than " + limit));
  }
  return empty ? 0 : bytes / dtype_size(dtype);
}

std::size_t checked_add(std::size_t a, std::size_t b, std::string_view what) {
  std::size_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    throw ShapeError(std::string(what) + ": the extent " + std::to_string(a) + " + " +
                     std::to_string(b) + " overflows a 64-bit count");
  }
  return r;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::size_t normalize_axis(long axis, std::size_t ndim, std::string_view op) {
  const long n = static_cast<long>(ndim);
  if (axis < -n || axis >= n) {
    throw ValueError(std::string(op) + ": axis " + std::to_string(axis) +
                     " is out of range for a tensor of rank " + std::to_string(ndim) +
                     " (allowed: " + std::to_string(-n) + " to " + std::to_string(n - 1) + ")");
  }
  return static_cast<std::size_t>(axis < 0 ? axis + n : axis);
}

namespace {

/// "4.0 GiB", "512 bytes".
std::string byte_str(std::size_t bytes) {
  static const char* const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double v = static_cast<double>(bytes) / 1024.0;
  std::size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(units)) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, std::string_view what) {
  if (what.empty()) what = "Tensor::empty";
  Tensor t;
  t.size_ = checked_size(shape, what, dtype);
  t.shape_ = shape;
  t.dtype_ = dtype;
  try {
    t.buffer_ = std::make_shared<detail::Buffer>();
    dispatch_all(dtype, [&](auto tag) {
      using T = decltype(tag);
      t.buffer_->data = detail::Storage<T>(t.size_);
    });
  } catch (const std::bad_alloc&) {
    throw AllocationError(std::string(what) + ": cannot allocate " +
                          byte_str(t.size_ * dtype_size(dtype)) + " for a " +
                          std::string(dtype_name(dtype)) + " tensor " + shape_str(shape) +
                          " (out of memory)");
  } catch (const std::length_error&) {
    throw AllocationError(std::string(what) + ": cannot allocate " +
                          byte_str(t.size_ * dtype_size(dtype)) + " for a " +
                          std::string(dtype_name(dtype)) + " tensor " + shape_str(shape) +
                          " (larger than the allocator allows)");
  }
  t.ptr_ = t.buffer_->ptr();
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, std::string_view what) {
  Tensor t = empty(shape, dtype, what.empty() ? std::string_view("Tensor::zeros") : what);
  if (t.size_ > 0) std::memset(t.ptr_, 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, std::string_view what) {
  Tensor t = empty(shape, dtype, what.empty() ? std::string_view("Tensor::full") : what);
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    std::fill_n(static_cast<T*>(t.ptr_), t.size_, static_cast<T>(value));
  });
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, std::string_view what) {
  return full(shape, 1.0, dtype, what.empty() ? std::string_view("Tensor::ones") : what);
}

Tensor Tensor::scalar(double value, DType dtype) {
  return full({}, value, dtype);
}

Tensor Tensor::arange(std::size_t n, DType dtype) {
  if (dtype == DType::i32 && n > std::size_t{1} << 31) {
    throw ValueError("Tensor::arange: n = " + std::to_string(n) +
                     " counts past the largest int32 (2147483647); use DType::i64");
  }
  Tensor t = empty({n}, dtype, "Tensor::arange");
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(t.ptr_);
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return t;
}

template <class T>
Tensor Tensor::from(const Shape& shape, const std::vector<T>& values) {
  const std::size_t n = checked_size(shape, "Tensor::from", dtype_of<T>());
  if (n != values.size()) {
    throw ShapeError("Tensor::from: shape " + shape_str(shape) + " holds " + std::to_string(n) +
                     " elements, but " + std::to_string(values.size()) + " values were given");
  }
  Tensor t = empty(shape, dtype_of<T>(), "Tensor::from");
  std::copy(values.begin(), values.end(), static_cast<T*>(t.ptr_));
  return t;
}
template Tensor Tensor::from<float>(const Shape&, const std::vector<float>&);
template Tensor Tensor::from<double>(const Shape&, const std::vector<double>&);
template Tensor Tensor::from<std::int32_t>(const Shape&, const std::vector<std::int32_t>&);
template Tensor Tensor::from<std::int64_t>(const Shape&, const std::vector<std::int64_t>&);

std::size_t Tensor::dim(long axis) const {
  return shape_[normalize_axis(axis, ndim(), "Tensor::dim")];
}

void Tensor::check_dtype(DType want) const {
  if (!defined()) throw ValueError("Tensor: access to an undefined tensor");
  if (want != dtype_) {
    throw DTypeError("Tensor::data: the tensor holds " + std::string(dtype_name(dtype_)) +
                     ", not " + std::string(dtype_name(want)));
  }
}

double Tensor::flat(std::size_t i) const {
  if (!defined()) throw ValueError("Tensor::flat: undefined tensor");
  if (i >= size_) {
    throw ValueError("Tensor::flat: index " + std::to_string(i) + " out of range for " +
                     std::to_string(size_) + " elements");
  }
  return dispatch_all(dtype_, [&](auto tag) -> double {
    using T = decltype(tag);
    return static_cast<double>(static_cast<const T*>(ptr_)[i]);
  });
}

double Tensor::at(std::initializer_list<std::size_t> index) const {
  if (index.size() != ndim()) {
    throw ValueError("Tensor::at: " + std::to_string(index.size()) +
                     " indices for a tensor of shape " + shape_str(shape_));
  }
  std::size_t offset = 0, axis = 0;
  for (std::size_t i : index) {
    if (i >= shape_[axis]) {
      throw ValueError("Tensor::at: index " + std::to_string(i) + " out of range on axis " +
                       std::to_string(axis) + " of shape " + shape_str(shape_));
    }
    offset = offset * shape_[axis] + i;
    ++axis;
  }
  return flat(offset);
}

template <class T>
T Tensor::item() const {
  if (size_ != 1) {
    throw ShapeError("Tensor::item: needs exactly one element, the shape is " + shape_str(shape_));
  }
  return static_cast<T>(flat(0));
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template std::int32_t Tensor::item<std::int32_t>() const;
template std::int64_t Tensor::item<std::int64_t>() const;

template <class T>
std::vector<T> Tensor::to_vector() const {
  if (!defined()) throw ValueError("Tensor::to_vector: undefined tensor");
  std::vector<T> out(size_);
  dispatch_all(dtype_, [&](auto tag) {
    using S = decltype(tag);
    const S* p = static_cast<const S*>(ptr_);
    for (std::size_t i = 0; i < size_; ++i) out[i] = static_cast<T>(p[i]);
  });
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<std::int32_t> Tensor::to_vector<std::int32_t>() const;
template std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;

Tensor Tensor::clone() const {
  if (!defined()) return Tensor();
  Tensor t = empty(shape_, dtype_, "Tensor::clone");
  if (size_ > 0) std::memcpy(t.ptr_, ptr_, nbytes());
  return t;
}

Tensor Tensor::astype(DType dtype) const {
  if (!defined()) throw ValueError("Tensor::astype: undefined tensor");
  if (dtype == dtype_) return clone();
  Tensor t = empty(shape_, dtype, "Tensor::astype");
  dispatch_all(dtype_, [&](auto src_tag) {
    using S = decltype(src_tag);
    dispatch_all(dtype, [&](auto dst_tag) {
      using D = decltype(dst_tag);
      const S* s = static_cast<const S*>(ptr_);
      D* d = static_cast<D*>(t.ptr_);
      for (std::size_t i = 0; i < size_; ++i) d[i] = static_cast<D>(s[i]);
    });
  });
  return t;
}

Tensor Tensor::reshape(const std::vector<long>& shape) const {
  Shape out(shape.size());
  long infer = -1;
  std::size_t known = 1;
  bool known_overflow = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw ValueError("Tensor::reshape: more than one extent is -1");
      infer = static_cast<long>(i);
    } else if (shape[i] < 0) {
      throw ValueError("Tensor::reshape: negative extent " + std::to_string(shape[i]));
    } else {
      out[i] = static_cast<std::size_t>(shape[i]);
      known_overflow |= __builtin_mul_overflow(known, out[i], &known);
    }
  }
  if (infer >= 0) {
    if (known_overflow || known == 0 || size_ % known != 0) {
      std::string want = "[";
      for (std::size_t i = 0; i < shape.size(); ++i) {
        want += (i ? ", " : "") + std::to_string(shape[i]);
      }
      throw ShapeError("Tensor::reshape: cannot reshape " + shape_str(shape_) + " (" +
                       std::to_string(size_) + " elements) into " + want + "]");
    }
    out[static_cast<std::size_t>(infer)] = size_ / known;
  }
  return reshape(out);
}

Tensor Tensor::reshape(const Shape& shape) const {
  const std::size_t n = checked_size(shape, "Tensor::reshape", dtype_);
  if (n != size_) {
    throw ShapeError("Tensor::reshape: cannot reshape " + shape_str(shape_) + " (" +
                     std::to_string(size_) + " elements) into " + shape_str(shape) + " (" +
                     std::to_string(n) + " elements)");
  }
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

namespace {

template <class T>
void print_value(std::ostream& os, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    os << std::setprecision(std::is_same_v<T, float> ? 6 : 10) << v;
  } else {
    os << v;
  }
}

template <class T>
void print_rec(std::ostream& os, const T* p, const Shape& shape, std::size_t axis, std::size_t edge,
               std::size_t indent) {
  const std::size_t n = shape[axis];
  std::size_t stride = 1;
  for (std::size_t a = axis + 1; a < shape.size(); ++a) stride *= shape[a];
  os << '[';
  const bool elide = n > 2 * edge;
  for (std::size_t i = 0; i < n; ++i) {
    if (elide && i == edge) {
      os << (axis + 1 == shape.size() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - edge;
    }
    if (axis + 1 == shape.size()) {
      print_value(os, p[i]);
    } else {
      print_rec(os, p + i * stride, shape, axis + 1, edge, indent + 1);
    }
    if (i + 1 < n) os << (axis + 1 == shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << ']';
}

}  // namespace

std::string Tensor::str(std::size_t edge_items) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype_) << ", shape=" << shape_str(shape_) << ", ";
  dispatch_all(dtype_, [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(ptr_);
    if (shape_.empty()) {
      print_value(os, p[0]);
    } else if (size_ == 0) {
      os << "[]";
    } else {
      print_rec(os, p, shape_, 0, edge_items, 7);
    }
  });
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << t.str();
}

bool equal(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  return a.size() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

void check_shape(std::string_view op, const Shape& expected, const Shape& actual) {
  if (expected != actual) {
    throw ShapeError(std::string(op) + ": expected shape " + shape_str(expected) + ", got " +
                     shape_str(actual));
  }
}

void check_dtype(std::string_view op, DType expected, DType actual) {
  if (expected != actual) {
    throw DTypeError(std::string(op) + ": expected " + std::string(dtype_name(expected)) +
                     ", got " + std::string(dtype_name(actual)));
  }
}

void check_floating(std::string_view op, const Tensor& t) {
  if (!t.defined()) throw ValueError(std::string(op) + ": the tensor is undefined");
  if (!is_floating(t.dtype())) {
    throw DTypeError(std::string(op) + ": needs a float32 or float64 tensor, got " +
                     std::string(dtype_name(t.dtype())) + " of shape " + shape_str(t.shape()));
  }
}

}  // namespace minitrax::core
