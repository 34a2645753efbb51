// Learning-rate schedules (training/schedules.cpp): values at chosen steps against
// the closed forms of Trax 1.3.4's lr_schedules.py, multifactor parsing, errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <string>

#include "core/error.hpp"
#include "training/schedules.hpp"

using namespace minitrax;
namespace tr = minitrax::training;

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no ValueError";
}
}  // namespace

TEST_CASE("constant, warmup, warmup_and_rsqrt_decay: Trax's _BodyAndTail") {
  const auto c = tr::constant(0.25);
  CHECK(c(0) == 0.0);  // Trax: a ramp from (0, 0) to (1, value)
  CHECK(c(1) == 0.25);
  CHECK(c(123456) == 0.25);

  const auto w = tr::warmup(10, 2.0);
  CHECK(w(0) == 0.0);
  CHECK(w(5) == doctest::Approx(5.0 / 11.0 * 2.0).epsilon(1e-15));
  CHECK(w(10) == doctest::Approx(10.0 / 11.0 * 2.0).epsilon(1e-15));
  CHECK(w(11) == 2.0);
  CHECK(w(100000) == 2.0);

  const auto r = tr::warmup_and_rsqrt_decay(10, 2.0);
  CHECK(r(5) == doctest::Approx(5.0 / 11.0 * 2.0).epsilon(1e-15));
  CHECK(r(11) == doctest::Approx(2.0).epsilon(1e-15));
  CHECK(r(44) == doctest::Approx(1.0).epsilon(1e-15));  // 2 * sqrt(11) / sqrt(44)
  CHECK(r(1100) == doctest::Approx(2.0 * std::sqrt(11.0 / 1100.0)).epsilon(1e-15));
  // no warmup: rsqrt from step 1
  const auto r0 = tr::warmup_and_rsqrt_decay(0, 1.0);
  CHECK(r0(0) == 0.0);
  CHECK(r0(1) == 1.0);
  CHECK(r0(4) == 0.5);

  CHECK(error_of([] { tr::constant(-1.0); }) == "constant: value must be finite and >= 0, got -1");
  CHECK(error_of([] { tr::warmup(-1, 1.0); }) == "warmup: n_warmup_steps must be >= 0, got -1");
  CHECK(error_of([] { tr::warmup_and_rsqrt_decay(5, std::nan("")); }).find("max_value") !=
        std::string::npos);
  CHECK(error_of([&] { c(-1); }) == "constant: the step must be >= 0, got -1");
}

TEST_CASE("multifactor: Trax's default 'constant * linear_warmup * rsqrt_decay'") {
  const auto f = tr::multifactor();
  for (long s : {0L, 1L, 200L, 399L, 400L, 401L, 1600L, 1000000L}) {
    const double want = 0.1 * std::min(1.0, s / 400.0) / std::sqrt(std::max(s, 400L));
    CHECK(f(s) == doctest::Approx(want).epsilon(1e-15));
  }
  CHECK(f(1600) == doctest::Approx(0.1 / 40.0).epsilon(1e-15));
  CHECK(f(400) == doctest::Approx(0.1 / 20.0).epsilon(1e-15));
  // the positional form gives the same function
  const auto g = tr::multifactor("constant * linear_warmup * rsqrt_decay", 0.1, 400);
  CHECK(g(777) == f(777));
}

TEST_CASE("multifactor: each factor against its closed form") {
  tr::MultifactorOptions o;
  o.constant = 2.0;
  o.warmup_steps = 100;
  o.decay_factor = 0.5;
  o.steps_per_decay = 30;
  o.steps_per_cycle = 1000;

  o.factors = "constant";
  CHECK(tr::multifactor(o)(12345) == 2.0);

  o.factors = "linear_warmup";
  CHECK(tr::multifactor(o)(0) == 0.0);
  CHECK(tr::multifactor(o)(25) == 0.25);
  CHECK(tr::multifactor(o)(100) == 1.0);
  CHECK(tr::multifactor(o)(5000) == 1.0);

  o.factors = "rsqrt_decay";
  CHECK(tr::multifactor(o)(50) == doctest::Approx(0.1).epsilon(1e-15));  // 1 / sqrt(100)
  CHECK(tr::multifactor(o)(400) == doctest::Approx(0.05).epsilon(1e-15));

  o.factors = "rsqrt_normalized_decay";
  CHECK(tr::multifactor(o)(50) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(tr::multifactor(o)(400) == doctest::Approx(0.5).epsilon(1e-15));

  o.factors = "decay_every";
  CHECK(tr::multifactor(o)(29) == 1.0);
  CHECK(tr::multifactor(o)(30) == 0.5);
  CHECK(tr::multifactor(o)(95) == 0.125);

  o.factors = "cosine_decay";
  const auto cd = tr::multifactor(o);
  CHECK(cd(0) == 1.0);  // progress clamped at 0 before warmup ends
  CHECK(cd(100) == 1.0);
  CHECK(cd(600) == doctest::Approx(0.5).epsilon(1e-12));  // progress 0.5
  CHECK(cd(350) == doctest::Approx(0.5 * (1 + std::cos(std::numbers::pi * 0.25))).epsilon(1e-15));
  CHECK(cd(1100) == 1.0);  // a new cycle (progress 1.0 % 1 = 0)
  CHECK(cd(1099) < 1e-4);

  // factors multiply, in any order, with any spacing
  o.factors = " constant*decay_every *  linear_warmup ";
  CHECK(tr::multifactor(o)(50) == doctest::Approx(2.0 * 0.5 * 0.5).epsilon(1e-15));
  o.factors = "constant * constant";
  CHECK(tr::multifactor(o)(1) == 4.0);
}

TEST_CASE("multifactor: errors name the factor and list the allowed ones") {
  const std::string allowed =
      "from: constant, linear_warmup, rsqrt_decay, rsqrt_normalized_decay, decay_every, "
      "cosine_decay";
  CHECK(error_of([] { tr::multifactor("constant * linear_warmpu"); }) ==
        "multifactor: unknown factor 'linear_warmpu' in \"constant * linear_warmpu\"; the "
        "factors are names joined by '*', " +
            allowed);
  CHECK(error_of([] { tr::multifactor("constant *"); }).find("an empty factor name") !=
        std::string::npos);
  CHECK(error_of([] { tr::multifactor(""); }).find(allowed) != std::string::npos);
  CHECK(error_of([] { tr::multifactor("linear_warmup", 0.1, 0); }) ==
        "multifactor: warmup_steps must be >= 1, got 0");
  CHECK(error_of([] { tr::multifactor("rsqrt_decay", 0.1, -5); }) ==
        "multifactor: warmup_steps must be >= 0, got -5");
  CHECK(error_of([] { tr::multifactor("decay_every", 0.1, 400, 0.5, 0); }) ==
        "multifactor: steps_per_decay (with decay_every) must be >= 1, got 0");
  CHECK(error_of([] { tr::multifactor("cosine_decay", 0.1, 400, 0.5, 1, 0); }) ==
        "multifactor: steps_per_cycle (with cosine_decay) must be >= 1, got 0");
  // unused parameters are not checked (as Trax: they are not read)
  CHECK(tr::multifactor("constant", 0.1, 0, 0.5, 0, 0)(3) == 0.1);
  const auto f = tr::multifactor();
  CHECK(error_of([&] { f(-3); }) == "multifactor: the step must be >= 0, got -3");
}

TEST_CASE("cosine: warmup, cosine decay to a floor, then the floor") {
  const auto c = tr::cosine(1.0, 100, 0.1, 10);
  CHECK(c(0) == 0.0);
  CHECK(c(5) == 0.5);
  CHECK(c(10) == 1.0);
  CHECK(c(60) == doctest::Approx(0.1 + 0.9 * 0.5).epsilon(1e-15));
  CHECK(c(35) ==
        doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25))).epsilon(1e-15));
  CHECK(c(110) == doctest::Approx(0.1).epsilon(1e-15));
  CHECK(c(100000) == doctest::Approx(0.1).epsilon(1e-15));
  const auto nw = tr::cosine(2.0, 4);
  CHECK(nw(0) == 2.0);
  CHECK(nw(2) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(nw(4) == doctest::Approx(0.0));
  CHECK(error_of([] { tr::cosine(1.0, 0); }) == "cosine: decay_steps must be >= 1, got 0");
  CHECK(error_of([] { tr::cosine(1.0, 10, 2.0); }) ==
        "cosine: min_value must be <= max_value, got 2 > 1");
  CHECK(error_of([] { tr::cosine(1.0, 10, 0.0, -1); }) ==
        "cosine: warmup_steps must be >= 0, got -1");
  CHECK(error_of([] { tr::cosine(-1.0, 10, 0.0); }).find("max_value must be finite and >= 0") !=
        std::string::npos);
}
