/// @file
/// Counter-based, splittable random numbers (JAX-style PRNG).
///
/// This module keeps no hidden generator state. Randomness comes from a
/// Key, a pair of 32-bit words, and every draw is a pure function of (key, shape,
/// parameters): the same key always gives the same numbers. To get fresh numbers,
/// derive new keys with `split` (n independent children) or `fold_in` (a child
/// named by an integer, e.g. a step or layer index) and never use a key twice for
/// two different purposes.
///
/// The bits are the Threefry-2x32 block cipher (20 rounds, Salmon et al., "Parallel
/// random numbers: as easy as 1, 2, 3", SC'11) applied to a counter array, laid out
/// exactly as jax.random does with its "threefry2x32" implementation, so
/// keys, split, fold_in, raw bits, uniform and randint for small ranges reproduce
/// JAX's legacy (non-partitionable) stream bit for bit. normal agrees with JAX to
/// a few float ulp. docs/rng.md explains the layout, how each distribution is
/// made from bits, and the places where we deliberately differ.
///
/// `Rng` is a small convenience holder for a key that hands out subkeys; it is an
/// ordinary value owned by the caller, not global state.
///
/// @code
/// Key key = key_from_seed(0);                        // jax.random.PRNGKey(0)
/// std::vector<Key> ks = split(key);                  // two children
/// Tensor w = normal(ks[0], {16, 32});                // [16, 32] float32, N(0, 1)
/// Tensor u = uniform(ks[1], {8}, DType::f64, -1, 1); // [8] float64 in [-1, 1)
/// Tensor mask = bernoulli(fold_in(key, 7), 0.9, {4, 4});  // int32 0/1
///
/// Rng rng(42);                                       // hands out fresh subkeys
/// Tensor ids = rng.randint({2, 64}, 1, 64);          // int32 in [1, 64)
/// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::core {

/// A PRNG key: the two uint32 words [k0, k1] of a JAX PRNGKey (`hi` is k0).
struct Key {
  std::uint32_t hi = 0;  ///< the first word, k0 (the seed's high 32 bits)
  std::uint32_t lo = 0;  ///< the second word, k1 (the seed's low 32 bits)
  friend constexpr bool operator==(const Key&, const Key&) = default;
};

/// The key as text: `to_string(key_from_seed(42)) == "Key(0, 42)"`.
std::string to_string(const Key& key);
/// Writes `to_string(key)`.
std::ostream& operator<<(std::ostream& os, const Key& key);

/// The key of an integer seed, as jax.random.PRNGKey(seed): [seed >> 32, seed & 0xffffffff].
constexpr Key key_from_seed(std::int64_t seed) {
  const auto u = static_cast<std::uint64_t>(seed);  // two's complement bit pattern
  return Key{static_cast<std::uint32_t>(u >> 32), static_cast<std::uint32_t>(u & 0xffffffffu)};
}

namespace detail {
constexpr std::uint32_t rotl32(std::uint32_t v, unsigned r) {
  return (v << r) | (v >> (32u - r));
}
}  // namespace detail

/// The Threefry-2x32 block function with 20 rounds: encrypts the counter (x0, x1)
/// under `key`. Matches Random123's threefry2x32_20 and JAX's threefry_2x32.
constexpr std::pair<std::uint32_t, std::uint32_t> threefry2x32(Key key, std::uint32_t x0,
                                                               std::uint32_t x1) noexcept {
  // Key schedule: the two key words and their parity word.
  const std::uint32_t ks[3] = {key.hi, key.lo, key.hi ^ key.lo ^ 0x1BD11BDAu};
  // Rotation distances: even groups of four rounds use the first four, odd the last.
  constexpr unsigned rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
  x0 += ks[0];
  x1 += ks[1];
  for (unsigned group = 0; group < 5; ++group) {  // 5 groups of 4 rounds = 20 rounds
    for (unsigned r = 0; r < 4; ++r) {
      x0 += x1;
      x1 = detail::rotl32(x1, rot[(group % 2) * 4 + r]);
      x1 ^= x0;
    }
    // Key injection s = group + 1: rotated key words, plus s on the second word.
    const unsigned s = group + 1;
    x0 += ks[s % 3];
    x1 += ks[(s + 1) % 3] + s;
  }
  return {x0, x1};
}

// -- keys ---------------------------------------------------------------------

/// `n` new keys, as jax.random.split: the bits of the counters 0..2n-1, taken in
/// consecutive pairs. The children are independent of each other and of `key`.
std::vector<Key> split(Key key, std::size_t n = 2);

/// A new key derived from `key` and an integer, as jax.random.fold_in: the hash of
/// the counter pair [0, data] under `key`.
Key fold_in(Key key, std::uint32_t data);

// -- raw bits -------------------------------------------------------------------

/// Writes n random 32-bit words to `out`: the JAX hash of the counters 0..n-1.
/// Throws ValueError for n >= 2^32 - 1 (JAX switches to a blocked layout there,
/// which minitrax does not implement).
void random_bits(Key key, std::uint32_t* out, std::size_t n);
/// The same n words as a vector (jax.random.bits with dtype uint32, flattened).
std::vector<std::uint32_t> random_bits(Key key, std::size_t n);

/// n random 64-bit words, as JAX's 64-bit random bits (jax_enable_x64): word i is
/// (b[i] << 32) | b[n + i] where b are the 32-bit bits of the counters 0..2n-1.
void random_bits64(Key key, std::uint64_t* out, std::size_t n);
/// The same n 64-bit words as a vector.
std::vector<std::uint64_t> random_bits64(Key key, std::size_t n);

// -- distributions ----------------------------------------------------------------

/// Uniform floats in [minval, maxval) of the given shape, as jax.random.uniform. `dtype` must be
/// f32 (23 random mantissa bits) or f64 (52 bits). Throws DTypeError for integer dtypes and
/// ValueError unless minval < maxval (after rounding to `dtype`) with a finite difference.
Tensor uniform(Key key, const Shape& shape, DType dtype = DType::f32, double minval = 0.0,
               double maxval = 1.0);

/// Standard normal floats of the given shape, as jax.random.normal: sqrt(2) * erfinv(u) with u
/// uniform in (-1, 1). `dtype` must be f32 or f64 (DTypeError otherwise).
Tensor normal(Key key, const Shape& shape, DType dtype = DType::f32);

/// An int32 tensor of 0/1 of the given shape with P(1) = p, as jax.random.bernoulli (which returns
/// bool): 1 where a float32 uniform draw is < p (p is rounded to float32, as JAX
/// does for a Python float). Throws ValueError unless 0 <= p <= 1.
Tensor bernoulli(Key key, double p, const Shape& shape);
/// Element-wise probabilities: result has p's shape; the uniform draw uses p's
/// float dtype. Throws DTypeError for an integer p, ValueError for values outside [0, 1].
Tensor bernoulli(Key key, const Tensor& p);
/// Elements [offset, offset + count) of `bernoulli(key, p, {n})` (any shape of n
/// elements, flattened), written to out[0 .. count) as 0/1: the same draws, without
/// making the other elements (each element is one Threefry call, see rng.cpp's layout).
/// For kernels that consume a large mask tile by tile (dense attention's dropout).
/// Throws ValueError unless 0 <= p <= 1 and offset + count <= n, and for n >= 2^32 - 1
/// (as bernoulli does).
/// @code
/// std::int32_t row[4];
/// bernoulli_range(key, 0.9, 6 * 8, 2 * 8, 4, row);   // == bernoulli(key, 0.9, {6, 8})[2, 0:4]
/// @endcode
void bernoulli_range(Key key, double p, std::size_t n, std::size_t offset, std::size_t count,
                     std::int32_t* out);

/// Uniform integers in [minval, maxval) of the given shape, int32 or int64, from two independent
/// words per element reduced modulo the span (bias at most span / 2^64 for int32,
/// span / 2^128 for int64). Throws ValueError if maxval <= minval or, for int32,
/// if the range does not fit in int32; DTypeError for a float dtype.
Tensor randint(Key key, const Shape& shape, std::int64_t minval, std::int64_t maxval,
               DType dtype = DType::i32);

// -- inverse error function --------------------------------------------------------

/// The inverse of std::erf on [-1, 1]: erfinv(+-1) = +-inf, NaN outside [-1, 1].
/// Within 2 ulp in double (a polynomial first guess refined by Halley's method
/// against std::erf / std::erfc); the float version rounds the double result.
double erfinv(double x);
/// The inverse error function in float: the double result rounded.
float erfinv(float x);

// -- a key holder -------------------------------------------------------------------

/// Holds a key and hands out fresh subkeys: `next()` does
/// `key, sub = split(key)` and returns `sub`. Each draw method uses one `next()`.
/// Copying an Rng copies its key, so a copy repeats the original's future draws.
/// @code
/// Rng rng(0);
/// Tensor a = rng.normal({3, 3});   // uses one subkey
/// Tensor b = rng.normal({3, 3});   // another: different numbers
/// Rng child = rng.split();         // an independent stream, e.g. for one layer
/// @endcode
class Rng {
 public:
  /// Starts from `key`.
  explicit Rng(Key key) : key_(key) {}
  /// Starts from `key_from_seed(seed)`.
  explicit Rng(std::int64_t seed) : key_(key_from_seed(seed)) {}

  /// The current key (not advanced).
  Key key() const { return key_; }
  /// A fresh subkey; advances the held key.
  Key next();
  /// An independent Rng seeded with `next()`.
  Rng split() { return Rng(next()); }

  /// core::uniform with a fresh subkey: floats in [minval, maxval) of the given shape.
  Tensor uniform(const Shape& shape, DType dtype = DType::f32, double minval = 0.0,
                 double maxval = 1.0) {
    return core::uniform(next(), shape, dtype, minval, maxval);
  }
  /// core::normal with a fresh subkey: standard normal floats of the given shape.
  Tensor normal(const Shape& shape, DType dtype = DType::f32) {
    return core::normal(next(), shape, dtype);
  }
  /// core::bernoulli with a fresh subkey: int32 0/1 of the given shape with P(1) = p.
  Tensor bernoulli(double p, const Shape& shape) { return core::bernoulli(next(), p, shape); }
  /// core::randint with a fresh subkey: integers in [minval, maxval) of the given shape.
  Tensor randint(const Shape& shape, std::int64_t minval, std::int64_t maxval,
                 DType dtype = DType::i32) {
    return core::randint(next(), shape, minval, maxval, dtype);
  }

 private:
  Key key_;
};

}  // namespace minitrax::core

namespace minitrax {
using core::Key;
using core::Rng;
}  // namespace minitrax
