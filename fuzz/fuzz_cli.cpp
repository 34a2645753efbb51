// fuzz/fuzz_cli.cpp: libFuzzer target for the main job's command line
// (app::parse_command_line, and app::resolve_resume for --resume).
//
// The input is split on NUL bytes: the first piece is the text of a config file, the
// others are the arguments (argv without the program name). Whatever the arguments
// say, --config only ever reads that one file: the value after an argument "--config"
// and the rest of an argument "--config=..." are replaced by the file's path (an empty
// value stays empty), so the fuzzer never opens a real file (nor /dev/stdin, nor
// /dev/zero). With --resume, the first piece is also the run's saved config.json, and
// the command line goes through resolve_resume.
//
// Allowed outcome: a CommandLine (and a resumed config) or app::ConfigError. A parsed
// or resumed config must validate and round-trip through to_json / apply_json.
#include <string>
#include <vector>

#include "config_round_trip.hpp"
#include "duplication/config.hpp"
#include "fuzz_util.hpp"

using namespace minitrax;
using fuzz::check_round_trip;


extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::TempFile file("fuzz_cli_config");
  const std::string_view in = fuzz::as_bytes(data, size);
  std::vector<std::string> pieces;
  for (std::size_t start = 0;;) {
    const std::size_t nul = in.find('\0', start);
    pieces.emplace_back(in.substr(start, nul - start));
    if (nul == std::string_view::npos) break;
    start = nul + 1;
  }
  file.write(pieces[0]);
  std::vector<std::string> args(pieces.begin() + 1, pieces.end());
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      if (!args[++i].empty()) args[i] = file.path();
    } else if (args[i].rfind("--config=", 0) == 0 && args[i].size() > 9) {
      args[i] = "--config=" + file.path();
    }
  }
  app::CommandLine cl;
  try {
    cl = app::parse_command_line(args);
  } catch (const app::ConfigError&) {
    return 0;
  }
  if (cl.help) return 0;  // nothing else was parsed
  if (!cl.resume) {
    check_round_trip(cl.config);
    return 0;
  }
  app::DuplicationConfig resumed;
  try {
    resumed = app::resolve_resume(pieces[0], "saved.json", cl);
  } catch (const app::ConfigError&) {
    return 0;
  }
  if (resumed.warmup_steps == app::kAutoWarmup) fuzz::invariant_failed("warmup_steps unresolved");
  if (resumed.output_dir != cl.config.output_dir) fuzz::invariant_failed("output_dir not kept");
  check_round_trip(resumed);
  return 0;
}
