// fuzz/fuzz_config_json.cpp: libFuzzer target for the main job's JSON config
// (app::apply_json, then app::validate).
//
// Allowed outcome: success or app::ConfigError (never another exception, e.g. one of
// nlohmann::json's own). A config that applies and validates must round-trip:
// apply_json(defaults, to_json(c)) gives c again.
#include <string>

#include "duplication/config.hpp"
#include "fuzz_util.hpp"

using namespace minitrax;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(fuzz::as_bytes(data, size));
  app::DuplicationConfig c;
  try {
    app::apply_json(c, text, "fuzz.json");
    app::validate(c);
  } catch (const app::ConfigError&) {
    return 0;
  }
  const std::string json = app::to_json(c);
  app::DuplicationConfig d;
  app::apply_json(d, json, "round trip");
  app::validate(d);
  if (app::to_json(d) != json) fuzz::invariant_failed("apply_json(to_json(c)) differs from c");
  return 0;
}
