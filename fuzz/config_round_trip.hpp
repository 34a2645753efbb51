// fuzz/config_round_trip.hpp: the invariant both config fuzz targets check.
#pragma once

#include <string>

#include "duplication/config.hpp"
#include "fuzz_util.hpp"

namespace minitrax::fuzz {

/// A config that applies and validates must round-trip: apply_json(defaults,
/// to_json(c)) gives c again (a ConfigError here is a finding: it escapes).
inline void check_round_trip(const app::DuplicationConfig& c) {
  const std::string json = app::to_json(c);
  app::DuplicationConfig d;
  app::apply_json(d, json, "round trip");
  app::validate(d);
  if (app::to_json(d) != json) invariant_failed("apply_json(to_json(c)) differs from c");
}

}  // namespace minitrax::fuzz
