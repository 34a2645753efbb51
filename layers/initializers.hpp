/// @file
/// How layers draw their initial weights.
///
/// An Initializer is a value: a function (key, shape, dtype) -> Tensor. Layers take
/// them as options, e.g. Dense(64, init::GlorotNormal(), init::Zeros()). The
/// formulas follow Trax 1.3.4 (trax/layers/initializers.py):
///
/// @code{.unparsed}
///   fans(shape):  rank >= 2: fan_in = shape[in_dim], fan_out = shape[out_dim]
///                 (defaults in_dim = -2, out_dim = -1: a Dense kernel [d_in, d_out]);
///                 rank 1: both = shape[0]; rank 0: both = 1.
///                 As in Trax, other axes (a convolution's receptive field) are NOT
///                 multiplied in.
///   variance scaling: gain = scale / fan, fan = fan_in, fan_out or (fan_in + fan_out) / 2;
///                 normal:  N(0, 1) * sqrt(gain)            (variance gain)
///                 uniform: U(-lim, lim), lim = sqrt(3 gain) (variance gain)
///   GlorotUniform / GlorotNormal: fan_avg, scale 1 (Trax's default for Dense kernels)
///   LeCunUniform / LeCunNormal:   fan_in,  scale 1
///   HeUniform / HeNormal:         fan_in,  scale 2 / sqrt(1 + param^2) (Trax's Kaiming*)
///   RandomNormal(stddev):         stddev * N(0, 1) (Trax's bias default: stddev 1e-6)
///   RandomUniform(lim):           U(-lim, lim)
///   Zeros, Ones
/// @endcode
///
/// Random draws are made in float32, exactly as Trax/JAX make them (core::uniform and
/// core::normal reproduce jax.random), and then converted to the requested dtype:
/// the same key gives the same numbers whatever the dtype, so a float64 copy of a
/// model for gradient checks starts from the float32 model's values. Requesting an
/// integer dtype is a DTypeError.
#pragma once

#include <functional>

#include "core/rng.hpp"
#include "core/tensor.hpp"

namespace minitrax::layers::init {

using core::DType;
using core::Key;
using core::Shape;
using core::Tensor;

/// (key, shape, dtype) -> initial values. Must be deterministic in the key.
/// @code
/// Tensor w = init::GlorotUniform()(core::key_from_seed(0), {32, 64}, DType::f32);
/// @endcode
using Initializer = std::function<Tensor(Key, const Shape&, DType)>;

/// Fan-in and fan-out of a weight shape, as Trax's _GetFans (see above). Throws
/// ValueError if in_dim or out_dim is out of range for a shape of rank >= 2.
struct Fans {
  double in = 1.0;   ///< fan_in
  double out = 1.0;  ///< fan_out
};
/// The fans of a weight of this shape (see Fans): fans({32, 64}) is {in 32, out 64}.
Fans fans(const Shape& shape, long out_dim = -1, long in_dim = -2);

/// Which fan the variance is divided by.
enum class FanMode {
  fan_in,   ///< fan_in
  fan_out,  ///< fan_out
  fan_avg   ///< (fan_in + fan_out) / 2
};
/// The distribution VarianceScaling draws from.
enum class Distribution {
  normal,  ///< N(0, 1) * sqrt(gain)
  uniform  ///< U(-lim, lim), lim = sqrt(3 gain)
};

/// Trax's ScaledInitializer: variance scale / fan. scale must be > 0 (ValueError).
Initializer VarianceScaling(double scale, FanMode mode, Distribution distribution,
                            long out_dim = -1, long in_dim = -2);

/// Glorot/Xavier uniform: variance scale / fan_avg (Trax's default for Dense kernels).
Initializer GlorotUniform(long out_dim = -1, long in_dim = -2, double scale = 1.0);
/// Glorot/Xavier normal: variance scale / fan_avg.
Initializer GlorotNormal(long out_dim = -1, long in_dim = -2, double scale = 1.0);
/// LeCun uniform: variance scale / fan_in.
Initializer LeCunUniform(long out_dim = -1, long in_dim = -2, double scale = 1.0);
/// LeCun normal: variance scale / fan_in.
Initializer LeCunNormal(long out_dim = -1, long in_dim = -2, double scale = 1.0);
/// Kaiming/He: variance 2 / sqrt(1 + param^2) / fan_in (2 / fan_in for ReLU, param = 0).
Initializer HeUniform(long out_dim = -1, long in_dim = -2, double param = 0.0);
/// Kaiming/He normal: the variance of HeUniform, normally distributed.
Initializer HeNormal(long out_dim = -1, long in_dim = -2, double param = 0.0);
/// stddev * N(0, 1). stddev must be >= 0 and finite (ValueError).
Initializer RandomNormal(double stddev = 1e-2);
/// U(-lim, lim). lim must be > 0 and finite (ValueError).
Initializer RandomUniform(double lim = 1.0);
/// All zeros, whatever the key.
Initializer Zeros();
/// All ones, whatever the key.
Initializer Ones();

}  // namespace minitrax::layers::init
