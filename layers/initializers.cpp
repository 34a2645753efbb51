// minitrax/layers/initializers.cpp
#include "layers/initializers.hpp"

#include <cmath>
#include <sstream>
#include <string>

#include "core/ops.hpp"

namespace minitrax::layers::init {

namespace {

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void require_floating(const char* who, DType dtype) {
  if (!core::is_floating(dtype)) {
    throw DTypeError(std::string(who) + ": initial weights must be float32 or float64, got " +
                     std::string(core::dtype_name(dtype)));
  }
}

// Float32 values converted to `dtype` (a no-op for float32).
Tensor as(const Tensor& t, DType dtype) {
  return t.dtype() == dtype ? t : t.astype(dtype);
}

std::size_t axis_of(long dim, std::size_t rank, const char* what, const Shape& shape) {
  const long r = static_cast<long>(rank);
  const long a = dim < 0 ? dim + r : dim;
  if (a < 0 || a >= r) {
    throw ValueError(std::string("initializer: ") + what + " " + std::to_string(dim) +
                     " is out of range for a weight of shape " + core::shape_str(shape));
  }
  return static_cast<std::size_t>(a);
}

}  // namespace

Fans fans(const Shape& shape, long out_dim, long in_dim) {
  if (shape.size() >= 2) {
    const std::size_t o = axis_of(out_dim, shape.size(), "out_dim", shape);
    const std::size_t i = axis_of(in_dim, shape.size(), "in_dim", shape);
    return {static_cast<double>(shape[i]), static_cast<double>(shape[o])};
  }
  if (shape.size() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  return {1.0, 1.0};
}

Initializer VarianceScaling(double scale, FanMode mode, Distribution distribution, long out_dim,
                            long in_dim) {
  if (!(scale > 0.0) || !std::isfinite(scale)) {
    throw ValueError("VarianceScaling: scale must be a positive finite number, got " + num(scale));
  }
  return [=](Key key, const Shape& shape, DType dtype) {
    require_floating("VarianceScaling", dtype);
    const Fans f = fans(shape, out_dim, in_dim);
    if (core::shape_size(shape) == 0) return Tensor::zeros(shape, dtype);
    double fan = 0.0;
    switch (mode) {
      case FanMode::fan_in:
        fan = f.in;
        break;
      case FanMode::fan_out:
        fan = f.out;
        break;
      case FanMode::fan_avg:
        fan = (f.in + f.out) / 2.0;
        break;
    }
    const double gain = scale / fan;
    // Trax computes the scale factors as float32 (jnp.sqrt of a Python float) and
    // draws float32 numbers; we do the same, then convert.
    if (distribution == Distribution::normal) {
      const auto stddev = std::sqrt(static_cast<float>(gain));
      return as(core::mul(core::normal(key, shape, DType::f32), static_cast<double>(stddev)),
                dtype);
    }
    const auto lim = std::sqrt(static_cast<float>(3.0 * gain));
    return as(
        core::uniform(key, shape, DType::f32, -static_cast<double>(lim), static_cast<double>(lim)),
        dtype);
  };
}

Initializer GlorotUniform(long out_dim, long in_dim, double scale) {
  return VarianceScaling(scale, FanMode::fan_avg, Distribution::uniform, out_dim, in_dim);
}
Initializer GlorotNormal(long out_dim, long in_dim, double scale) {
  return VarianceScaling(scale, FanMode::fan_avg, Distribution::normal, out_dim, in_dim);
}
Initializer LeCunUniform(long out_dim, long in_dim, double scale) {
  return VarianceScaling(scale, FanMode::fan_in, Distribution::uniform, out_dim, in_dim);
}
Initializer LeCunNormal(long out_dim, long in_dim, double scale) {
  return VarianceScaling(scale, FanMode::fan_in, Distribution::normal, out_dim, in_dim);
}
Initializer HeUniform(long out_dim, long in_dim, double param) {
  return VarianceScaling(2.0 / std::sqrt(1.0 + param * param), FanMode::fan_in,
                         Distribution::uniform, out_dim, in_dim);
}
Initializer HeNormal(long out_dim, long in_dim, double param) {
  return VarianceScaling(2.0 / std::sqrt(1.0 + param * param), FanMode::fan_in,
                         Distribution::normal, out_dim, in_dim);
}

Initializer RandomNormal(double stddev) {
  if (!(stddev >= 0.0) || !std::isfinite(stddev)) {
    throw ValueError("RandomNormal: stddev must be a finite number >= 0, got " + num(stddev));
  }
  return [stddev](Key key, const Shape& shape, DType dtype) {
    require_floating("RandomNormal", dtype);
    return as(core::mul(core::normal(key, shape, DType::f32), stddev), dtype);
  };
}

Initializer RandomUniform(double lim) {
  if (!(lim > 0.0) || !std::isfinite(lim)) {
    throw ValueError("RandomUniform: lim must be a positive finite number, got " + num(lim));
  }
  return [lim](Key key, const Shape& shape, DType dtype) {
    require_floating("RandomUniform", dtype);
    return as(core::uniform(key, shape, DType::f32, -lim, lim), dtype);
  };
}

Initializer Zeros() {
  return [](Key, const Shape& shape, DType dtype) {
    require_floating("Zeros", dtype);
    return Tensor::zeros(shape, dtype);
  };
}

Initializer Ones() {
  return [](Key, const Shape& shape, DType dtype) {
    require_floating("Ones", dtype);
    return Tensor::ones(shape, dtype);
  };
}

}  // namespace minitrax::layers::init
