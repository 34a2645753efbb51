// minitrax/training/schedules.cpp
#include "training/schedules.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <vector>

#include "core/error.hpp"

namespace minitrax::training {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_value(const char* who, const char* what, double v) {
  if (!std::isfinite(v) || v < 0) {
    throw ValueError(std::string(who) + ": " + what + " must be finite and >= 0, got " + num(v));
  }
}

void check_count(const char* who, const char* what, long v, long min) {
  if (v < min) {
    throw ValueError(std::string(who) + ": " + what + " must be >= " + std::to_string(min) +
                     ", got " + std::to_string(v));
  }
}

void check_step(const char* who, long step) {
  if (step < 0) {
    throw ValueError(std::string(who) + ": the step must be >= 0, got " + std::to_string(step));
  }
}

// Trax's _BodyAndTail: a linear ramp from (0, 0) to (body_start, value), the
// constant value, then (if tail_start > 0) value * sqrt(tail_start) / sqrt(step).
Schedule body_and_tail(const char* who, double value, long body_start, long tail_start) {
  return [who, value, body_start, tail_start](long step) {
    check_step(who, step);
    if (step < body_start) {
      return static_cast<double>(step) / static_cast<double>(body_start) * value;
    }
    if (tail_start > 0 && step >= tail_start) {
      return value *
             (std::sqrt(static_cast<double>(tail_start)) / std::sqrt(static_cast<double>(step)));
    }
    return value;
  };
}

enum class Factor {
  constant,
  linear_warmup,
  rsqrt_decay,
  rsqrt_normalized_decay,
  decay_every,
  cosine_decay
};

constexpr const char* kFactorNames[] = {"constant",    "linear_warmup",
                                        "rsqrt_decay", "rsqrt_normalized_decay",
                                        "decay_every", "cosine_decay"};

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\n\r");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\n\r");
  return s.substr(first, last - first + 1);
}

std::vector<Factor> parse_factors(const std::string& factors) {
  std::vector<Factor> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t star = factors.find('*', start);
    const std::string name =
        trim(factors.substr(start, star == std::string::npos ? std::string::npos : star - start));
    bool known = false;
    for (std::size_t k = 0; k < std::size(kFactorNames); ++k) {
      if (name == kFactorNames[k]) {
        out.push_back(static_cast<Factor>(k));
        known = true;
      }
    }
    if (!known) {
      std::string allowed;
      for (const char* n : kFactorNames) allowed += std::string(allowed.empty() ? "" : ", ") + n;
      throw ValueError(
          "multifactor: " +
          (name.empty() ? std::string("an empty factor name") : "unknown factor '" + name + "'") +
          " in \"" + factors + "\"; the factors are names joined by '*', from: " + allowed);
    }
    if (star == std::string::npos) break;
    start = star + 1;
  }
  return out;
}

bool uses(const std::vector<Factor>& fs, Factor f) {
  return std::find(fs.begin(), fs.end(), f) != fs.end();
}

}  // namespace

Schedule constant(double value) {
  check_value("constant", "value", value);
  return body_and_tail("constant", value, 1, 0);
}

Schedule warmup(long n_warmup_steps, double max_value) {
  check_count("warmup", "n_warmup_steps", n_warmup_steps, 0);
  check_value("warmup", "max_value", max_value);
  return body_and_tail("warmup", max_value, n_warmup_steps + 1, 0);
}

Schedule warmup_and_rsqrt_decay(long n_warmup_steps, double max_value) {
  check_count("warmup_and_rsqrt_decay", "n_warmup_steps", n_warmup_steps, 0);
  check_value("warmup_and_rsqrt_decay", "max_value", max_value);
  return body_and_tail("warmup_and_rsqrt_decay", max_value, n_warmup_steps + 1, n_warmup_steps + 1);
}

Schedule multifactor(const MultifactorOptions& o) {
  const std::vector<Factor> factors = parse_factors(o.factors);
  const char* who = "multifactor";
  if (!std::isfinite(o.constant)) {
    throw ValueError(std::string(who) + ": constant must be finite, got " + num(o.constant));
  }
  check_count(who, "warmup_steps", o.warmup_steps, uses(factors, Factor::linear_warmup) ? 1 : 0);
  if (uses(factors, Factor::decay_every)) {
    check_count(who, "steps_per_decay (with decay_every)", o.steps_per_decay, 1);
    if (!std::isfinite(o.decay_factor)) {
      throw ValueError(std::string(who) + ": decay_factor must be finite, got " +
                       num(o.decay_factor));
    }
  }
  if (uses(factors, Factor::cosine_decay)) {
    check_count(who, "steps_per_cycle (with cosine_decay)", o.steps_per_cycle, 1);
  }
  return [o, factors, who](long step) {
    check_step(who, step);
    const double s = static_cast<double>(step);
    const double warm = static_cast<double>(o.warmup_steps);
    double ret = 1.0;
    for (Factor f : factors) {
      switch (f) {
        case Factor::constant:
          ret *= o.constant;
          break;
        case Factor::linear_warmup:
          ret *= std::min(1.0, s / warm);
          break;
        case Factor::rsqrt_decay:
          ret /= std::sqrt(std::max(s, warm));
          break;
        case Factor::rsqrt_normalized_decay:
          ret *= std::sqrt(warm);
          ret /= std::sqrt(std::max(s, warm));
          break;
        case Factor::decay_every:
          ret *= std::pow(o.decay_factor, static_cast<double>(step / o.steps_per_decay));
          break;
        case Factor::cosine_decay: {
          const double progress =
              std::max(0.0, (s - warm) / static_cast<double>(o.steps_per_cycle));
          ret *= 0.5 * (1.0 + std::cos(std::numbers::pi * std::fmod(progress, 1.0)));
          break;
        }
      }
    }
    return ret;
  };
}

Schedule multifactor(const std::string& factors, double constant, long warmup_steps,
                     double decay_factor, long steps_per_decay, long steps_per_cycle) {
  return multifactor(MultifactorOptions{factors, constant, warmup_steps, decay_factor,
                                        steps_per_decay, steps_per_cycle});
}

Schedule cosine(double max_value, long decay_steps, double min_value, long warmup_steps) {
  const char* who = "cosine";
  check_value(who, "max_value", max_value);
  check_value(who, "min_value", min_value);
  if (min_value > max_value) {
    throw ValueError(std::string(who) + ": min_value must be <= max_value, got " + num(min_value) +
                     " > " + num(max_value));
  }
  check_count(who, "decay_steps", decay_steps, 1);
  check_count(who, "warmup_steps", warmup_steps, 0);
  return [=](long step) {
    check_step(who, step);
    if (step < warmup_steps) {
      return max_value * static_cast<double>(step) / static_cast<double>(warmup_steps);
    }
    const double p =
        std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
    return min_value + (max_value - min_value) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  };
}

}  // namespace minitrax::training
