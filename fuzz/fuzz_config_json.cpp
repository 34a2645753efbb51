// fuzz/fuzz_config_json.cpp: libFuzzer target for the main job's JSON config
// (app::apply_json, then app::validate; and app::resolve_resume with the input as the
// run's saved config.json).
//
// Allowed outcome: success or app::ConfigError (never another exception, e.g. one of
// nlohmann::json's own, nor a stack overflow on deep nesting: -max_len=300000 in the
// seeded run lets inputs nest 100,000 levels deep). A config that applies and validates
// must round-trip: apply_json(defaults, to_json(c)) gives c again.
#include <string>

#include "config_round_trip.hpp"
#include "duplication/config.hpp"
#include "fuzz_util.hpp"

using namespace minitrax;
using fuzz::check_round_trip;


extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(fuzz::as_bytes(data, size));
  app::DuplicationConfig c;
  bool valid = true;
  try {
    app::apply_json(c, text, "fuzz.json");
    app::validate(c);
  } catch (const app::ConfigError&) {
    valid = false;
  }
  if (valid) check_round_trip(c);  // a ConfigError here is a finding (it escapes)

  // The same text as a saved run's config.json, resumed with a few flags.
  static const app::CommandLine cl = app::parse_command_line(
      {"--resume", "--steps", "2000", "--eval-every", "5", "--n-hashes", "2"});
  app::DuplicationConfig resumed;
  try {
    resumed = app::resolve_resume(text, "saved.json", cl);
  } catch (const app::ConfigError&) {
    return 0;
  }
  check_round_trip(resumed);
  return 0;
}
