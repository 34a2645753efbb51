// tests/test_duplication_config.cpp: the main job's config (JSON file and flags): defaults
// validate, precedence, and every kind of bad input gives a message that names it.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "duplication/config.hpp"
#include "duplication/plot.hpp"
#include "test_util.hpp"

using namespace minitrax;
using app::ConfigError;
using app::parse_command_line;

namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    (void)parse_command_line(args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

TEST_CASE("duplication config: the defaults are valid and make LSH matter") {
  const app::DuplicationConfig c;
  CHECK_NOTHROW(app::validate(c));
  // The issue's rule for the main job: chunk_len <= L / 4 and n_hashes >= 2.
  CHECK(c.chunk_len * 4 <= c.length);
  CHECK(c.n_hashes >= 2);
  CHECK(c.attention == std::vector<std::string>{"lsh"});
}

TEST_CASE("duplication config: flags, --key=value, and --config with flags on top") {
  auto cl = parse_command_line({"--n-hashes", "4", "--lr=0.002", "--attention", "self,lsh",
                                "--eval-n-hashes", "1,8", "--reversible", "false"});
  CHECK(cl.config.n_hashes == 4);
  CHECK(cl.config.lr == 0.002);
  CHECK(cl.config.attention == std::vector<std::string>{"self", "lsh"});
  CHECK(cl.config.eval_n_hashes == std::vector<long>{1, 8});
  CHECK(!cl.config.reversible);
  CHECK(!cl.resume);

  const std::string file = write_temp("minitrax_dup_config.json",
                                      R"({"n_hashes": 8, "length": 128, "attention": ["lsh"]})");
  cl = parse_command_line({"--n-hashes", "2", "--config", file, "--resume"});
  CHECK(cl.config.n_hashes == 2);  // the flag wins over the file, wherever it stands
  CHECK(cl.config.length == 128);
  CHECK(cl.resume);

  // to_json round-trips through apply_json.
  app::DuplicationConfig c;
  c.n_buckets = 16;
  c.output_dir = "x/y";
  app::DuplicationConfig back;
  app::apply_json(back, app::to_json(c));
  CHECK(back.n_buckets == 16);
  CHECK(back.output_dir == "x/y");
}

TEST_CASE("duplication config: bad flags and values say what is allowed") {
  using testutil::contains;
  CHECK(contains(error_of({"--n-hash", "2"}), "unknown flag '--n-hash'; the flags are:"));
  CHECK(contains(error_of({"--n-hashes"}), "missing value after --n-hashes"));
  CHECK(contains(error_of({"--n-hashes", "two"}), "--n-hashes must be an integer, got 'two'"));
  CHECK(contains(error_of({"--n-hashes", "0"}), "n_hashes must be in [1, 64], got 0"));
  CHECK(contains(error_of({"--n-buckets", "7"}), "n_buckets must be even"));
  CHECK(contains(error_of({"--length", "63"}), "length must be even"));
  CHECK(contains(error_of({"--chunk-len", "12"}),
                 "chunk_len (12) must divide length (64): use length 72"));
  CHECK(contains(error_of({"--attention", "lsh,dense"}),
                 "attention must be one of \"lsh\", \"self\", got \"dense\""));
  CHECK(contains(error_of({"--n-layers", "3", "--attention", "lsh,self"}),
                 "n_layers (3) must be a multiple of the attention pattern's length (2)"));
  CHECK(contains(error_of({"--lr", "0"}), "lr must be in (0, 1]"));
  CHECK(contains(error_of({"--lr", "nan"}), "--lr must be a finite number"));
  CHECK(contains(error_of({"--dropout", "1"}), "dropout must be in [0, 1)"));
  CHECK(contains(error_of({"--schedule", "linear"}),
                 "schedule must be one of \"cosine\", \"rsqrt\", \"constant\""));
  CHECK(contains(error_of({"--reversible", "maybe"}), "--reversible must be true or false"));
  CHECK(contains(error_of({"--steps", "99999999999999999999"}), "--steps must be an integer"));
  CHECK(contains(error_of({"positional"}), "unexpected argument 'positional'"));
  CHECK(contains(error_of({"--config", "/nonexistent/minitrax.json"}),
                 "cannot open config file '/nonexistent/minitrax.json'"));
  CHECK(contains(error_of({"--output-dir", ""}), "output_dir must not be empty"));
}

TEST_CASE("duplication config: bad JSON files name the file and the key") {
  using testutil::contains;
  const std::string bad = write_temp("minitrax_dup_bad.json", R"({"n_hashes": 2,)");
  CHECK(contains(error_of({"--config", bad}), "not valid JSON"));
  const std::string arr = write_temp("minitrax_dup_arr.json", "[1, 2]");
  CHECK(contains(error_of({"--config", arr}), "must be a JSON object"));
  const std::string unknown = write_temp("minitrax_dup_unknown.json", R"({"n_hash": 2})");
  CHECK(contains(error_of({"--config", unknown}), "unknown key \"n_hash\"; the keys are: length"));
  const std::string type = write_temp("minitrax_dup_type.json", R"({"n_hashes": "2"})");
  CHECK(contains(error_of({"--config", type}), "\"n_hashes\" must be an integer, got string"));
  const std::string frac = write_temp("minitrax_dup_frac.json", R"({"batch": 2.5})");
  CHECK(contains(error_of({"--config", frac}), "\"batch\" must be an integer, got 2.5"));
  const std::string list = write_temp("minitrax_dup_list.json", R"({"attention": [1]})");
  CHECK(contains(error_of({"--config", list}), "\"attention\" must list strings"));
  // A bad file changes nothing: the config given to apply_json is untouched.
  app::DuplicationConfig c;
  CHECK_THROWS_AS(app::apply_json(c, R"({"n_hashes": 4, "n_hash": 1})"), ConfigError);
  CHECK(c.n_hashes == app::DuplicationConfig{}.n_hashes);
}

TEST_CASE("duplication plot: an SVG with one polyline per series") {
  app::PlotSeries loss{"train loss", {0, 1, 2}, {4.0, 2.0, 0.5}, false};
  app::PlotSeries acc{"accuracy", {0, 2}, {0.1, 0.99}, true};
  const std::string svg = app::svg_chart("t<1>", "step", "loss", "accuracy", {loss, acc});
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(testutil::contains(svg, "t&lt;1&gt;"));
  std::size_t n = 0;
  for (std::size_t p = svg.find("<polyline"); p != std::string::npos;
       p = svg.find("<polyline", p + 1))
    ++n;
  CHECK(n == 2);
  CHECK(testutil::contains(svg, "(log scale)"));
}

// Found by fuzz/fuzz_config_json (fuzz/regressions/config_json/number_overflow): a number
// beyond double's range made nlohmann::json throw its out_of_range, not parse_error, so
// the exception escaped apply_json as something other than a ConfigError.
TEST_CASE("duplication config: a number too large for a double is a ConfigError") {
  using testutil::contains;
  app::DuplicationConfig c;
  try {
    app::apply_json(c, R"({"lr": 1e400})", "big.json");
    FAIL("no exception");
  } catch (const ConfigError& e) {
    CHECK(contains(e.what(), "big.json: not valid JSON ("));
    CHECK(contains(e.what(), "number overflow"));
  }
  CHECK(c.lr == app::DuplicationConfig{}.lr);
}
