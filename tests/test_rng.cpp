// Tests for core/rng: Threefry known answers, JAX's published keys and draws,
// determinism, independence of split streams, distribution statistics and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "core/rng.hpp"

using namespace minitrax;
using core::bernoulli;
using core::erfinv;
using core::fold_in;
using core::key_from_seed;
using core::normal;
using core::randint;
using core::random_bits;
using core::random_bits64;
using core::split;
using core::threefry2x32;
using core::uniform;

namespace {

struct Moments {
  double mean = 0, var = 0, min = 0, max = 0;
};

Moments moments(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  Moments m;
  m.min = *std::min_element(v.begin(), v.end());
  m.max = *std::max_element(v.begin(), v.end());
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (double x : v) m.var += (x - m.mean) * (x - m.mean);
  m.var /= static_cast<double>(v.size() - 1);
  return m;
}

// Number of positions where two same-size tensors hold equal values.
std::size_t count_equal(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>();
  const auto y = b.to_vector<double>();
  std::size_t n = 0;
  for (std::size_t i = 0; i < x.size(); ++i) n += x[i] == y[i];
  return n;
}

constexpr std::size_t kN = 100000;

}  // namespace

// Random123's examples/kat_vectors, "threefry2x32 20" lines: counter, key -> output.
static_assert(threefry2x32(Key{0, 0}, 0, 0) ==
              std::pair<std::uint32_t, std::uint32_t>{0x6b200159u, 0x99ba4efeu});

TEST_CASE("rng: threefry2x32_20 matches the Random123 known-answer vectors") {
  using P = std::pair<std::uint32_t, std::uint32_t>;
  CHECK(threefry2x32(Key{0, 0}, 0, 0) == P{0x6b200159u, 0x99ba4efeu});
  CHECK(threefry2x32(Key{0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu) ==
        P{0x1cb996fcu, 0xbb002be7u});
  CHECK(threefry2x32(Key{0x13198a2eu, 0x03707344u}, 0x243f6a88u, 0x85a308d3u) ==
        P{0xc4923a9cu, 0x483df7a0u});
}

TEST_CASE("rng: keys from seeds, printing and equality") {
  CHECK(key_from_seed(0) == Key{0, 0});
  CHECK(key_from_seed(42) == Key{0, 42});
  CHECK(key_from_seed(-1) == Key{0xffffffffu, 0xffffffffu});
  CHECK(key_from_seed((std::int64_t{3} << 32) + 5) == Key{3, 5});
  CHECK(key_from_seed(1) != key_from_seed(2));
  std::ostringstream os;
  os << Key{0, 42};
  CHECK(os.str() == "Key(0, 42)");
  CHECK(core::to_string(Key{7, 8}) == "Key(7, 8)");
}

TEST_CASE("rng: split and fold_in reproduce JAX's documented values") {
  const Key k0 = key_from_seed(0);
  // jax.random.split docs: split(PRNGKey(0)).
  CHECK(split(k0) == std::vector<Key>{{4146024105u, 967050713u}, {2718843009u, 1272950319u}});
  // JAX tests/random_test.py testPRNGValues.
  CHECK(split(k0, 4) == std::vector<Key>{{2285895361u, 1501764800u},
                                         {1518642379u, 4090693311u},
                                         {433833334u, 4221794875u},
                                         {839183663u, 3740430601u}});
  CHECK(fold_in(k0, 4) == Key{2285895361u, 433833334u});
  CHECK(split(k0, 1).size() == 1);
  CHECK(split(k0, 0).empty());
  // split(key, 3)'s keys are not a prefix of split(key, 4)'s: n changes the layout.
  CHECK(split(k0, 3)[0] != split(k0, 4)[0]);
  // fold_in with different data, and split children, are all distinct.
  std::set<std::pair<std::uint32_t, std::uint32_t>> seen;
  for (std::uint32_t d = 0; d < 1000; ++d) {
    const Key k = fold_in(k0, d);
    seen.insert({k.hi, k.lo});
  }
  for (const Key& k : split(k0, 1000)) seen.insert({k.hi, k.lo});
  CHECK(seen.size() == 2000);
}

TEST_CASE("rng: raw bits reproduce JAX's testRngRandomBits") {
  const Key k = key_from_seed(1701);
  CHECK(random_bits(k, 3) == std::vector<std::uint32_t>{56197195u, 4200222568u, 961309823u});
  CHECK(random_bits64(k, 3) == std::vector<std::uint64_t>{3982329540505020460ull,
                                                          16822122385914693683ull,
                                                          7882654074788531506ull});
  // The layout: word i < n/2 is the first output of counter pair (i, n/2 + i).
  const auto bits = random_bits(k, 8);
  for (std::uint32_t i = 0; i < 4; ++i) {
    const auto [a, b] = threefry2x32(k, i, 4 + i);
    CHECK(bits[i] == a);
    CHECK(bits[4 + i] == b);
  }
  CHECK(random_bits(k, 0).empty());
  // Same key, same bits.
  CHECK(random_bits(k, 1000) == random_bits(k, 1000));
}

TEST_CASE("rng: uniform and normal reproduce JAX's documented draws") {
  const Key k0 = key_from_seed(0);
  // jax.random docs (legacy threefry): uniform(key(0)) == 0.41845703, and 0.10536897 for
  // the second half of split(key(0)). The first is (0x6b200159 >> 9) / 2^23 exactly.
  const Tensor u = uniform(k0, {});
  CHECK(u.shape() == Shape{});
  CHECK(u.item<float>() == 3510272.0f / 8388608.0f);
  CHECK(u.item<float>() == doctest::Approx(0.41845703).epsilon(1e-7));
  CHECK(uniform(split(k0)[1], {}).item<float>() == doctest::Approx(0.10536897).epsilon(1e-7));

  // JAX quickstart: normal(PRNGKey(0), (10,)). The (3, 3) draw differs only at index 4,
  // where the odd count pads the counter array: that checks the padding layout.
  const std::vector<double> ten = {-0.3721109, 0.26423115,  -0.18252768, -0.7368197, -0.44030377,
                                   -0.1521442, -0.67135346, -0.5908641,  0.73168886, 0.5673026};
  const auto got10 = normal(k0, {10}).to_vector<float>();
  for (std::size_t i = 0; i < 10; ++i) CHECK(got10[i] == doctest::Approx(ten[i]).epsilon(1e-6));
  const std::vector<double> nine = {-0.3721109, 0.26423115,  -0.18252768, -0.7368197, 0.44973662,
                                    -0.1521442, -0.67135346, -0.5908641,  0.73168886};
  const Tensor n33 = normal(k0, {3, 3});
  CHECK(n33.shape() == Shape{3, 3});
  const auto got9 = n33.to_vector<float>();
  for (std::size_t i = 0; i < 9; ++i) CHECK(got9[i] == doctest::Approx(nine[i]).epsilon(1e-6));

  // JAX "Pseudo random numbers" tutorial: normal(PRNGKey(42)), then of split(PRNGKey(42)).
  const Key k42 = key_from_seed(42);
  CHECK(normal(k42, {}).item<float>() == doctest::Approx(-0.18471177).epsilon(1e-6));
  const auto kids = split(k42);
  CHECK(normal(kids[0], {}).item<float>() == doctest::Approx(0.13790321).epsilon(1e-6));
  CHECK(normal(kids[1], {}).item<float>() == doctest::Approx(1.3694694).epsilon(1e-6));
}

TEST_CASE("rng: randint and bernoulli reproduce JAX's values") {
  const Key k0 = key_from_seed(0);
  // JAX tests/random_test.py testPRNGValues.
  const Tensor r32 = randint(k0, {3, 3}, 0, 8);
  CHECK(r32.dtype() == DType::i32);
  CHECK(r32.to_vector<std::int32_t>() == std::vector<std::int32_t>{2, 1, 3, 6, 1, 5, 6, 3, 4});
  CHECK(randint(k0, {3, 3}, 0, 8, DType::i64).to_vector<std::int64_t>() ==
        std::vector<std::int64_t>{7, 2, 6, 2, 1, 0, 6, 7, 7});
  // JAX tests/random_test.py _RANDOM_VALUES_CASES: bernoulli(p=0.5, shape=(5,)) with seed
  // zlib.adler32(b"bernoullithreefry2x32") = 1612777541 -> [False, True, True, True, False].
  const Tensor b = bernoulli(key_from_seed(1612777541), 0.5, {5});
  CHECK(b.dtype() == DType::i32);
  CHECK(b.to_vector<std::int32_t>() == std::vector<std::int32_t>{0, 1, 1, 1, 0});
}

TEST_CASE("rng: determinism and independence of streams") {
  const Key k = key_from_seed(7);
  CHECK(equal(uniform(k, {1000}), uniform(k, {1000})));
  CHECK(equal(normal(k, {999}, DType::f64), normal(k, {999}, DType::f64)));
  CHECK(equal(randint(k, {1001}, -5, 5), randint(k, {1001}, -5, 5)));
  const auto kids = split(k, 3);
  const Tensor a = uniform(kids[0], {10000});
  const Tensor b = uniform(kids[1], {10000});
  const Tensor c = uniform(kids[2], {10000});
  const Tensor parent = uniform(k, {10000});
  // Two independent float32 streams coincide at a position with probability 2^-23.
  CHECK(count_equal(a, b) < 5);
  CHECK(count_equal(a, c) < 5);
  CHECK(count_equal(b, c) < 5);
  CHECK(count_equal(a, parent) < 5);
  CHECK(count_equal(uniform(fold_in(k, 1), {10000}), uniform(fold_in(k, 2), {10000})) < 5);
  // Draws of the same key at different sizes share no structure we rely on, but the
  // float64 stream must not be the float32 one widened.
  CHECK(count_equal(uniform(k, {1000}, DType::f64), uniform(k, {1000}).astype(DType::f64)) < 5);

  // Rng hands out split(key)[1] and keeps split(key)[0]; copies replay.
  core::Rng rng(7);
  CHECK(rng.key() == k);
  const Key first = rng.next();
  CHECK(first == split(k)[1]);
  CHECK(rng.key() == split(k)[0]);
  core::Rng copy = rng;
  CHECK(equal(rng.normal({5}), copy.normal({5})));
  CHECK(rng.next() != rng.next());
  core::Rng child = rng.split();
  CHECK(child.key() != rng.key());
}

TEST_CASE("rng: empty and scalar shapes") {
  const Key k = key_from_seed(3);
  CHECK(uniform(k, {0}).size() == 0);
  CHECK(normal(k, {2, 0}, DType::f64).shape() == Shape{2, 0});
  CHECK(randint(k, {0}, 0, 3, DType::i64).size() == 0);
  CHECK(bernoulli(k, 0.5, {0}).size() == 0);
  CHECK(randint(k, {}, 4, 5).item<std::int32_t>() == 4);
}

TEST_CASE("rng: uniform statistics") {
  const Key k = key_from_seed(2024);
  // Uniform[0, 1): mean 1/2, variance 1/12. Standard errors over 1e5 draws are 9.1e-4
  // for the mean and 2.4e-4 for the variance; tolerances are about 5 of them.
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor u = uniform(k, {kN}, dt);
    CHECK(u.dtype() == dt);
    const Moments m = moments(u);
    CHECK(m.min >= 0.0);
    CHECK(m.max < 1.0);
    CHECK(std::fabs(m.mean - 0.5) < 0.0046);
    CHECK(std::fabs(m.var - 1.0 / 12.0) < 0.0012);
  }
  // A shifted, scaled range: [-3, 5).
  const Moments m = moments(uniform(k, {kN}, DType::f32, -3.0, 5.0));
  CHECK(m.min >= -3.0);
  CHECK(m.max < 5.0);
  CHECK(std::fabs(m.mean - 1.0) < 8 * 0.0046);
  CHECK(std::fabs(m.var - 64.0 / 12.0) < 64 * 0.0012);
  // float64 draws really use more than float32's 24 bits.
  const auto d = uniform(k, {1000}, DType::f64).to_vector<double>();
  std::size_t fine = 0;
  for (double x : d) fine += static_cast<double>(static_cast<float>(x)) != x;
  CHECK(fine > 990);
}

TEST_CASE("rng: normal statistics") {
  const Key k = key_from_seed(99);
  // Standard errors over 1e5 draws: mean 3.2e-3, variance 4.5e-3, P(|x| > 1.96) 6.9e-4.
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor z = normal(k, {kN}, dt);
    CHECK(z.dtype() == dt);
    const Moments m = moments(z);
    CHECK(std::fabs(m.mean) < 0.016);
    CHECK(std::fabs(m.var - 1.0) < 0.023);
    CHECK(std::isfinite(m.min));
    CHECK(std::isfinite(m.max));
    std::size_t tail = 0;
    for (double x : z.to_vector<double>()) tail += std::fabs(x) > 1.959963984540054;
    CHECK(std::fabs(static_cast<double>(tail) / kN - 0.05) < 0.0035);
  }
}

TEST_CASE("rng: bernoulli frequencies") {
  const Key k = key_from_seed(5);
  const Tensor b = bernoulli(k, 0.3, {kN});
  CHECK(b.dtype() == DType::i32);
  const auto v = b.to_vector<std::int32_t>();
  CHECK(std::all_of(v.begin(), v.end(), [](std::int32_t x) { return x == 0 || x == 1; }));
  // Standard error sqrt(0.21 / 1e5) = 1.45e-3.
  CHECK(std::fabs(moments(b).mean - 0.3) < 0.0073);
  CHECK(moments(bernoulli(k, 0.0, {1000})).max == 0.0);
  CHECK(moments(bernoulli(k, 1.0, {1000})).min == 1.0);

  // Per-element probabilities: columns with p = 0.1 and p = 0.9, in both float dtypes.
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor p = Tensor::empty({kN / 2, 2}, dt);
    for (std::size_t i = 0; i < kN; ++i) {
      dispatch_floating(dt, "test", [&](auto tag) {
        p.data<decltype(tag)>()[i] = static_cast<decltype(tag)>(i % 2 ? 0.9 : 0.1);
      });
    }
    const Tensor bp = bernoulli(k, p);
    CHECK(bp.shape() == p.shape());
    const auto w = bp.to_vector<std::int32_t>();
    double ones[2] = {0, 0};
    for (std::size_t i = 0; i < kN; ++i) ones[i % 2] += w[i];
    // Standard error sqrt(0.09 / 5e4) = 1.3e-3.
    CHECK(std::fabs(ones[0] / (kN / 2) - 0.1) < 0.0067);
    CHECK(std::fabs(ones[1] / (kN / 2) - 0.9) < 0.0067);
  }
}

TEST_CASE("rng: randint bounds, coverage and uniformity") {
  const Key k = key_from_seed(11);
  for (DType dt : {DType::i32, DType::i64}) {
    const Tensor r = randint(k, {kN}, -3, 7, dt);
    CHECK(r.dtype() == dt);
    std::vector<std::size_t> counts(10, 0);
    bool in_range = true;
    for (double x : r.to_vector<double>()) {
      if (x < -3 || x >= 7) {
        in_range = false;
      } else {
        ++counts[static_cast<std::size_t>(x + 3)];
      }
    }
    CHECK(in_range);
    // Each of the 10 values: expected 0.1, standard error 9.5e-4.
    for (std::size_t c : counts) CHECK(std::fabs(static_cast<double>(c) / kN - 0.1) < 0.0048);
  }
  // The full int32 range and wide int64 ranges stay in bounds.
  constexpr std::int64_t i32min = std::numeric_limits<std::int32_t>::min();
  constexpr std::int64_t i32end = std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1;
  const Moments full = moments(randint(k, {kN}, i32min, i32end));
  CHECK(full.min >= static_cast<double>(i32min));
  CHECK(full.max < static_cast<double>(i32end));
  CHECK(std::fabs(full.mean) < 0.02 * 2147483648.0);
  constexpr std::int64_t i64min = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t i64max = std::numeric_limits<std::int64_t>::max();
  const auto wide = randint(k, {1000}, i64min, i64max, DType::i64).to_vector<std::int64_t>();
  CHECK(*std::max_element(wide.begin(), wide.end()) < i64max);
  std::size_t negative = 0;
  for (std::int64_t x : wide) negative += x < 0;
  CHECK(negative > 400);
  CHECK(negative < 600);
  const auto big = randint(k, {1000}, 1000, i64max, DType::i64).to_vector<std::int64_t>();
  CHECK(*std::min_element(big.begin(), big.end()) >= 1000);

  // A span of 3 * 2^30: reducing a single 32-bit word would make the lowest third
  // twice as likely as the others (JAX's int32 randint does that above spans of 2^16,
  // see docs/rng.md). With two words per draw each third gets 1/3 +- 1.5e-3.
  const auto third =
      randint(k, {kN}, i32min, i32min + 3 * (std::int64_t{1} << 30)).to_vector<std::int64_t>();
  std::size_t low = 0;
  for (std::int64_t x : third) low += x < i32min + (std::int64_t{1} << 30);
  CHECK(std::fabs(static_cast<double>(low) / kN - 1.0 / 3.0) < 0.0075);
}

TEST_CASE("rng: erfinv inverts erf in double and float") {
  CHECK(erfinv(0.5) == doctest::Approx(0.47693627620446987338).epsilon(1e-15));
  CHECK(erfinv(-0.9) == doctest::Approx(-1.1630871536766740867).epsilon(1e-15));
  CHECK(erfinv(1.0) == std::numeric_limits<double>::infinity());
  CHECK(erfinv(-1.0f) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(erfinv(1.5)));
  CHECK(std::isnan(erfinv(std::numeric_limits<double>::quiet_NaN())));
  CHECK(std::signbit(erfinv(-0.0)));
  CHECK(erfinv(0.0f) == 0.0f);

  // Over the whole range, erf(erfinv(u)) gives u back to within rounding: an error of a
  // few ulp in y moves erf(y) by about f'(y) * y * 2^-52.
  double worst = 0;
  for (int i = -10000; i <= 10000; ++i) {
    const double u = std::tanh(i / 2000.0);  // crowds points towards +-1
    if (std::fabs(u) >= 1.0) continue;
    const double y = erfinv(u);
    CHECK(erfinv(-u) == -y);
    const double slope = 1.1283791670955126 * std::exp(-y * y);
    const double scale = slope * std::fabs(y) * 0x1p-52 + std::fabs(u) * 0x1p-52;
    const double err = std::fabs(u) > 0.5 ? std::fabs(std::erfc(std::fabs(y)) - (1 - std::fabs(u)))
                                          : std::fabs(std::erf(y) - u);
    worst = std::max(worst, err / scale);
  }
  CHECK(worst < 4.0);
  // Deep tails: relative accuracy of the complement 1 - u.
  for (int e = 1; e <= 52; ++e) {
    const double t = std::ldexp(1.0, -e);
    const double y = erfinv(1.0 - t);
    CHECK(std::erfc(y) == doctest::Approx(t).epsilon(1e-13));
  }
  // float: within one float ulp of the true value everywhere we sample, and tiny inputs.
  for (int i = 1; i < (1 << 12); ++i) {
    const float u = static_cast<float>(i) / (1 << 12);
    const float y = erfinv(u);
    const double exact = erfinv(static_cast<double>(u));
    CHECK(std::fabs(y - exact) <= std::fabs(exact) * 0x1p-24);
  }
  CHECK(erfinv(1e-30f) == doctest::Approx(0.88622692545275801 * 1e-30).epsilon(1e-6));
  CHECK(std::isfinite(erfinv(std::nextafter(1.0f, 0.0f))));
  CHECK(std::isfinite(erfinv(std::nextafter(1.0, 0.0))));
}

TEST_CASE("rng: errors say what is allowed") {
  const Key k = key_from_seed(0);
  CHECK_THROWS_WITH_AS(uniform(k, {2}, DType::i32),
                       "uniform: dtype must be float32 or float64, got int32", DTypeError);
  CHECK_THROWS_AS(normal(k, {2}, DType::i64), DTypeError);
  CHECK_THROWS_AS(uniform(k, {2}, DType::f32, 1.0, 1.0), ValueError);
  CHECK_THROWS_WITH_AS(uniform(k, {2}, DType::f32, 2.0, 1.0),
                       "uniform: need finite minval < maxval (as float32), got minval 2, maxval 1",
                       ValueError);
  // 1 and 1 + 1e-9 are the same float32.
  CHECK_THROWS_AS(uniform(k, {2}, DType::f32, 1.0, 1.0 + 1e-9), ValueError);
  CHECK_NOTHROW(uniform(k, {2}, DType::f64, 1.0, 1.0 + 1e-9));
  CHECK_THROWS_AS(uniform(k, {2}, DType::f64, 0.0, std::numeric_limits<double>::infinity()),
                  ValueError);
  CHECK_THROWS_WITH_AS(bernoulli(k, 1.5, {2}), "bernoulli: p must be in [0, 1], got 1.5",
                       ValueError);
  CHECK_THROWS_AS(bernoulli(k, -0.1, {2}), ValueError);
  CHECK_THROWS_AS(bernoulli(k, std::nan(""), {2}), ValueError);
  CHECK_THROWS_AS(bernoulli(k, Tensor::from<float>({2}, {0.5f, 2.0f})), ValueError);
  CHECK_THROWS_AS(bernoulli(k, Tensor::from<std::int32_t>({1}, {1})), DTypeError);
  CHECK_THROWS_WITH_AS(randint(k, {2}, 5, 5),
                       "randint: need minval < maxval, got minval 5, maxval 5", ValueError);
  CHECK_THROWS_AS(randint(k, {2}, 0, 4, DType::f32), DTypeError);
  CHECK_THROWS_AS(randint(k, {2}, 0, std::int64_t{1} << 40), ValueError);
  CHECK_NOTHROW(randint(k, {2}, 0, std::int64_t{1} << 40, DType::i64));
}
