// minitrax/core/rng.cpp: keys, raw bits and distributions on top of Threefry-2x32.
//
// Layout of the bits (the same as JAX's threefry_2x32 of an iota count array):
// for n words, let h = ceil(n / 2). Counter pair i (0 <= i < h) is (i, h + i), with
// the second counter of the last pair replaced by 0 when n is odd (JAX pads the
// count array with one zero). The pair's two output words go to positions i and
// h + i; the padding word is dropped. Every loop below walks the pairs once and
// writes results straight into the output, so there is no scratch array and no
// per-element allocation.
#include "core/rng.hpp"

#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

namespace minitrax::core {

namespace {

// JAX hashes at most 2^32 - 2 counters in one block (uint32 counters, one pad).
constexpr std::size_t kMaxWords = 0xFFFFFFFEu;

// A double as "%g" would print it: 0.5, 1e-09, inf.
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

void check_word_count(std::string_view op, std::size_t words) {
  if (words > kMaxWords) {
    throw ValueError(std::string(op) + ": " + std::to_string(words) +
                     " random 32-bit words requested in one draw; at most " +
                     std::to_string(kMaxWords) + " are supported");
  }
}

// Calls sink(index, word) for each of the n 32-bit words of the hash of 0..n-1.
template <class Sink>
inline void for_each_word(Key key, std::size_t n, Sink&& sink) {
  const std::size_t half = (n + 1) / 2;
  const std::size_t pairs = n / 2;  // pairs whose second word is kept
  const auto h = static_cast<std::uint32_t>(half);
  for (std::size_t i = 0; i < pairs; ++i) {
    const auto c = static_cast<std::uint32_t>(i);
    const auto [a, b] = threefry2x32(key, c, h + c);
    sink(i, a);
    sink(half + i, b);
  }
  if (n % 2 == 1) {  // the last pair holds the padding zero as its second counter
    sink(half - 1, threefry2x32(key, static_cast<std::uint32_t>(half - 1), 0u).first);
  }
}

// Calls sink(i, word) for the n 64-bit words JAX builds from 2n 32-bit words:
// word i = (b[i] << 32) | b[n + i], which is exactly the output of pair (i, n + i).
template <class Sink>
inline void for_each_word64(Key key, std::size_t n, Sink&& sink) {
  const auto m = static_cast<std::uint32_t>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::uint32_t>(i);
    const auto [a, b] = threefry2x32(key, c, m + c);
    sink(i, (static_cast<std::uint64_t>(a) << 32) | b);
  }
}

// The two keys of split(key, 2), without a vector.
inline std::pair<Key, Key> split2(Key key) {
  // Counters 0..3: pairs (0, 2) and (1, 3); words [a0, a1, b0, b1] -> keys (a0, a1), (b0, b1).
  const auto [a0, b0] = threefry2x32(key, 0u, 2u);
  const auto [a1, b1] = threefry2x32(key, 1u, 3u);
  return {Key{a0, a1}, Key{b0, b1}};
}

// Uniform in [1, 2) minus 1, i.e. [0, 1), from the top mantissa bits of a word.
inline float unit_float(std::uint32_t bits) {
  return std::bit_cast<float>((bits >> 9) | 0x3F800000u) - 1.0f;
}
inline double unit_double(std::uint64_t bits) {
  return std::bit_cast<double>((bits >> 12) | 0x3FF0000000000000ull) - 1.0;
}

// Fills p[0..n) with lo + u * span (u uniform in [0, 1)), clamped below at lo, in
// T arithmetic as JAX does. The product and the sum are separate statements so no
// compiler fuses them into an FMA (which would change the last bit).
template <class T>
void fill_uniform(Key key, T* p, std::size_t n, T lo, T span) {
  auto place = [=](std::size_t i, T u) {
    const T scaled = u * span;
    const T v = scaled + lo;
    p[i] = v < lo ? lo : v;
  };
  if constexpr (std::is_same_v<T, float>) {
    check_word_count("uniform", n);
    for_each_word(key, n, [&](std::size_t i, std::uint32_t w) { place(i, unit_float(w)); });
  } else {
    check_word_count("uniform", 2 * n);
    for_each_word64(key, n, [&](std::size_t i, std::uint64_t w) { place(i, unit_double(w)); });
  }
}

DType require_floating(std::string_view op, DType dtype) {
  if (!is_floating(dtype)) {
    throw DTypeError(std::string(op) + ": dtype must be float32 or float64, got " +
                     std::string(dtype_name(dtype)));
  }
  return dtype;
}

// erfinv of a in (0, 1), in double.
double erfinv_positive(double a) {
  const double w = -std::log((1.0 - a) * (1.0 + a));
  double y;
  if (w < 16.0) {
    // First guess: M. Giles' single-precision polynomials ("Approximating the erfinv
    // function", GPU Computing Gems, 2011); relative error about 1e-7 on this range.
    double p;
    if (w < 5.0) {
      const double t = w - 2.5;
      p = 2.81022636e-08;
      p = 3.43273939e-07 + p * t;
      p = -3.5233877e-06 + p * t;
      p = -4.39150654e-06 + p * t;
      p = 0.00021858087 + p * t;
      p = -0.00125372503 + p * t;
      p = -0.00417768164 + p * t;
      p = 0.246640727 + p * t;
      p = 1.50140941 + p * t;
    } else {
      const double t = std::sqrt(w) - 3.0;
      p = -0.000200214257;
      p = 0.000100950558 + p * t;
      p = 0.00134934322 + p * t;
      p = -0.00367342844 + p * t;
      p = 0.00573950773 + p * t;
      p = -0.0076224613 + p * t;
      p = 0.00943887047 + p * t;
      p = 1.00167406 + p * t;
      p = 2.83297682 + p * t;
    }
    y = p * a;
  } else {
    // Far tail (1 - a < ~1e-7, only reachable in double): erfc(y) ~ exp(-y^2) / (y sqrt(pi)),
    // so y^2 ~ -log(1 - a) - log(y sqrt(pi)); two fixed-point steps give a few digits.
    const double l = -std::log(1.0 - a);
    y = std::sqrt(l);
    for (int k = 0; k < 2; ++k) y = std::sqrt(l - std::log(y * 1.7724538509055160273));
  }
  // Halley's method on f(y) = erf(y) - a. f' = (2/sqrt(pi)) exp(-y^2), f'' = -2y f', so the
  // step is f / (f' + y f). Above a = 0.5 we write f = (1 - a) - erfc(y): 1 - a is exact
  // there and erfc keeps full relative accuracy in the tail. One step from a 1e-7 guess
  // leaves an error far below double rounding; the far tail needs a few.
  constexpr double two_over_sqrt_pi = 1.1283791670955125739;
  for (int it = 0; it < 12; ++it) {
    const double f = a <= 0.5 ? std::erf(y) - a : (1.0 - a) - std::erfc(y);
    const double d = two_over_sqrt_pi * std::exp(-y * y);
    const double step = f / (d + y * f);
    y -= step;
    if (std::fabs(step) <= 1e-6 * y) break;
  }
  return y;
}

}  // namespace

// -- keys and bits ------------------------------------------------------------------

std::string to_string(const Key& key) {
  return "Key(" + std::to_string(key.hi) + ", " + std::to_string(key.lo) + ")";
}

std::ostream& operator<<(std::ostream& os, const Key& key) {
  return os << to_string(key);
}

std::vector<Key> split(Key key, std::size_t n) {
  check_word_count("split", 2 * n);
  std::vector<Key> keys(n);
  // Word j of the 2n bits is word (j % 2) of key j / 2.
  for_each_word(key, 2 * n, [&](std::size_t j, std::uint32_t w) {
    if (j % 2 == 0) {
      keys[j / 2].hi = w;
    } else {
      keys[j / 2].lo = w;
    }
  });
  return keys;
}

Key fold_in(Key key, std::uint32_t data) {
  const auto [a, b] = threefry2x32(key, 0u, data);
  return Key{a, b};
}

void random_bits(Key key, std::uint32_t* out, std::size_t n) {
  check_word_count("random_bits", n);
  for_each_word(key, n, [out](std::size_t i, std::uint32_t w) { out[i] = w; });
}

std::vector<std::uint32_t> random_bits(Key key, std::size_t n) {
  std::vector<std::uint32_t> out(n);
  random_bits(key, out.data(), n);
  return out;
}

void random_bits64(Key key, std::uint64_t* out, std::size_t n) {
  check_word_count("random_bits64", 2 * n);
  for_each_word64(key, n, [out](std::size_t i, std::uint64_t w) { out[i] = w; });
}

std::vector<std::uint64_t> random_bits64(Key key, std::size_t n) {
  std::vector<std::uint64_t> out(n);
  random_bits64(key, out.data(), n);
  return out;
}

// -- distributions ----------------------------------------------------------------

Tensor uniform(Key key, const Shape& shape, DType dtype, double minval, double maxval) {
  require_floating("uniform", dtype);
  Tensor out = Tensor::empty(shape, dtype, "uniform");
  dispatch_floating(dtype, "uniform", [&](auto tag) {
    using T = decltype(tag);
    const T lo = static_cast<T>(minval);
    const T hi = static_cast<T>(maxval);
    const T span = hi - lo;
    if (!(lo < hi) || !std::isfinite(span)) {
      throw ValueError("uniform: need finite minval < maxval (as " +
                       std::string(dtype_name(dtype)) + "), got minval " + num(minval) +
                       ", maxval " + num(maxval));
    }
    fill_uniform<T>(key, out.data<T>(), out.size(), lo, span);
  });
  return out;
}

Tensor normal(Key key, const Shape& shape, DType dtype) {
  require_floating("normal", dtype);
  Tensor out = Tensor::empty(shape, dtype, "normal");
  dispatch_floating(dtype, "normal", [&](auto tag) {
    using T = decltype(tag);
    // u uniform in [nextafter(-1, 0), 1): erfinv(u) is finite for every draw.
    const T lo = std::nextafter(T(-1), T(0));
    const T span = T(1) - lo;  // rounds to 2 in both precisions, as in JAX
    T* p = out.data<T>();
    fill_uniform<T>(key, p, out.size(), lo, span);
    const T sqrt2 = static_cast<T>(1.4142135623730950488);
    for (std::size_t i = 0; i < out.size(); ++i) p[i] = sqrt2 * erfinv(p[i]);
  });
  return out;
}

Tensor bernoulli(Key key, double p, const Shape& shape) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw ValueError("bernoulli: p must be in [0, 1], got " + num(p));
  }
  check_word_count("bernoulli", checked_size(shape, "bernoulli", DType::i32));
  Tensor out = Tensor::empty(shape, DType::i32, "bernoulli");
  std::int32_t* o = out.data<std::int32_t>();
  const auto pf = static_cast<float>(p);
  for_each_word(key, out.size(),
                [&](std::size_t i, std::uint32_t w) { o[i] = unit_float(w) < pf ? 1 : 0; });
  return out;
}

void bernoulli_range(Key key, double p, std::size_t n, std::size_t offset, std::size_t count,
                     std::int32_t* out) {
  if (!(p >= 0.0 && p <= 1.0)) {
    throw ValueError("bernoulli_range: p must be in [0, 1], got " + num(p));
  }
  check_word_count("bernoulli", n);
  if (offset > n || count > n - offset) {
    throw ValueError("bernoulli_range: elements [" + std::to_string(offset) + ", " +
                     std::to_string(offset) + " + " + std::to_string(count) +
                     ") are not within the " + std::to_string(n) + " elements of the draw");
  }
  // for_each_word's layout, element by element: word i < half is the first output of
  // counter pair (i, half + i) (of (i, 0) for the padded last pair when n is odd), word
  // i >= half the second output of pair (i - half, i).
  const std::size_t half = (n + 1) / 2, pairs = n / 2;
  const auto h = static_cast<std::uint32_t>(half);
  const auto pf = static_cast<float>(p);
  for (std::size_t j = 0; j < count; ++j) {
    const std::size_t i = offset + j;
    std::uint32_t w;
    if (i < half) {
      const auto c = static_cast<std::uint32_t>(i);
      w = threefry2x32(key, c, i < pairs ? h + c : 0u).first;
    } else {
      const auto c = static_cast<std::uint32_t>(i - half);
      w = threefry2x32(key, c, h + c).second;
    }
    out[j] = unit_float(w) < pf ? 1 : 0;
  }
}

Tensor bernoulli(Key key, const Tensor& p) {
  if (!p.defined()) throw ValueError("bernoulli: p is an undefined tensor");
  if (!is_floating(p.dtype())) {
    throw DTypeError("bernoulli: p must be float32 or float64, got " +
                     std::string(dtype_name(p.dtype())));
  }
  Tensor out = Tensor::empty(p.shape(), DType::i32, "bernoulli");
  std::int32_t* o = out.data<std::int32_t>();
  dispatch_floating(p.dtype(), "bernoulli", [&](auto tag) {
    using T = decltype(tag);
    const T* q = p.data<T>();
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (!(q[i] >= T(0) && q[i] <= T(1))) {
        throw ValueError("bernoulli: probabilities must be in [0, 1], got " +
                         num(static_cast<double>(q[i])) + " at flat index " + std::to_string(i));
      }
    }
    // Uniform draws in T go into `out`'s comparison directly, one pass.
    if constexpr (std::is_same_v<T, float>) {
      check_word_count("bernoulli", p.size());
      for_each_word(key, p.size(),
                    [&](std::size_t i, std::uint32_t w) { o[i] = unit_float(w) < q[i] ? 1 : 0; });
    } else {
      check_word_count("bernoulli", 2 * p.size());
      for_each_word64(key, p.size(), [&](std::size_t i, std::uint64_t w) {
        o[i] = unit_double(w) < q[i] ? 1 : 0;
      });
    }
  });
  return out;
}

namespace {
__extension__ typedef unsigned __int128 uint128;  // GCC/Clang; __extension__ keeps -Wpedantic quiet
}  // namespace

Tensor randint(Key key, const Shape& shape, std::int64_t minval, std::int64_t maxval, DType dtype) {
  if (dtype != DType::i32 && dtype != DType::i64) {
    throw DTypeError("randint: dtype must be int32 or int64, got " +
                     std::string(dtype_name(dtype)));
  }
  if (maxval <= minval) {
    throw ValueError("randint: need minval < maxval, got minval " + std::to_string(minval) +
                     ", maxval " + std::to_string(maxval));
  }
  const std::size_t n = checked_size(shape, "randint", dtype);
  // Two independent words per element, one from each half of split(key): hi and lo.
  // The value is (hi * 2^w + lo) mod span (w = 32 or 64), computed exactly as
  // ((hi mod span) * (2^w mod span) + lo mod span) mod span. This is JAX's formula;
  // JAX evaluates it in w-bit arithmetic, where 2^w mod span overflows to 0 once
  // span > 2^(w/2), so JAX falls back to lo mod span there. We use wider arithmetic,
  // giving the same values for span <= 2^(w/2) and less biased ones above.
  const auto [k1, k2] = split2(key);
  Tensor out = Tensor::empty(shape, dtype, "randint");
  if (dtype == DType::i32) {
    constexpr std::int64_t lo32 = std::numeric_limits<std::int32_t>::min();
    constexpr std::int64_t hi32 = std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1;
    if (minval < lo32 || maxval > hi32) {
      throw ValueError("randint: for int32 the range [minval, maxval) must lie within [" +
                       std::to_string(lo32) + ", " + std::to_string(hi32) + "), got [" +
                       std::to_string(minval) + ", " + std::to_string(maxval) + ")");
    }
    check_word_count("randint", n);
    const auto span = static_cast<std::uint64_t>(maxval - minval);  // 1 .. 2^32
    const std::uint64_t mult = (std::uint64_t{1} << 32) % span;
    std::int32_t* o = out.data<std::int32_t>();
    const std::size_t half = (n + 1) / 2;
    const std::size_t pairs = n / 2;
    const auto h = static_cast<std::uint32_t>(half);
    auto value = [&](std::uint32_t hi, std::uint32_t lo) {
      const std::uint64_t r = ((hi % span) * mult + lo % span) % span;  // < 2^64: no overflow
      return static_cast<std::int32_t>(minval + static_cast<std::int64_t>(r));
    };
    // Same pair walk as for_each_word, over both keys at once.
    for (std::size_t i = 0; i < pairs; ++i) {
      const auto c = static_cast<std::uint32_t>(i);
      const auto [a1, b1] = threefry2x32(k1, c, h + c);
      const auto [a2, b2] = threefry2x32(k2, c, h + c);
      o[i] = value(a1, a2);
      o[half + i] = value(b1, b2);
    }
    if (n % 2 == 1) {
      const auto c = static_cast<std::uint32_t>(half - 1);
      o[half - 1] = value(threefry2x32(k1, c, 0u).first, threefry2x32(k2, c, 0u).first);
    }
  } else {
    check_word_count("randint", 2 * n);
    const std::uint64_t span =
        static_cast<std::uint64_t>(maxval) - static_cast<std::uint64_t>(minval);
    const std::uint64_t mult = (std::uint64_t{0} - span) % span;  // 2^64 mod span
    std::int64_t* o = out.data<std::int64_t>();
    const auto m = static_cast<std::uint32_t>(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto c = static_cast<std::uint32_t>(i);
      const auto [a1, b1] = threefry2x32(k1, c, m + c);
      const auto [a2, b2] = threefry2x32(k2, c, m + c);
      const std::uint64_t hi = (std::uint64_t{a1} << 32) | b1;
      const std::uint64_t lo = (std::uint64_t{a2} << 32) | b2;
      const uint128 t = uint128{hi % span} * mult + lo % span;
      const auto r = static_cast<std::uint64_t>(t % span);
      // minval + r <= maxval - 1: add in unsigned arithmetic, then reinterpret.
      o[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(minval) + r);
    }
  }
  return out;
}

// -- erfinv ----------------------------------------------------------------------------

double erfinv(double x) {
  if (std::isnan(x) || x < -1.0 || x > 1.0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 1.0) return std::numeric_limits<double>::infinity();
  if (x == -1.0) return -std::numeric_limits<double>::infinity();
  if (x == 0.0) return x;  // keeps the sign of zero
  const double y = erfinv_positive(std::fabs(x));
  return x < 0 ? -y : y;
}

float erfinv(float x) {
  // The double result is far more accurate than float, so rounding it is (nearly
  // always) the correctly rounded float answer.
  return static_cast<float>(erfinv(static_cast<double>(x)));
}

// -- Rng --------------------------------------------------------------------------------

Key Rng::next() {
  const auto [kept, sub] = split2(key_);
  key_ = kept;
  return sub;
}

}  // namespace minitrax::core
