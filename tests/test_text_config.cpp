// tests/test_text_config.cpp: the text trainer's config (examples/text/config.hpp) on the
// shared machinery (examples/common/settings.hpp): defaults valid, flags and extra flags,
// messages of bad input, the resume rules, and sampling flags checked only for form.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "text/config.hpp"

using namespace minitrax;
using app::ConfigError;

namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    (void)app::parse_text_command_line(args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("text config: the defaults are valid, a char-level ReformerLM at length 2048") {
  const app::TextConfig c;
  CHECK_NOTHROW(app::validate(c));
  CHECK(c.model == "reformer");
  CHECK(c.tokenizer == "chars");
  CHECK(c.length >= 2048);
  CHECK(app::effective_n_buckets(c) == 2 * 2048 / 64);
}

TEST_CASE("text config: flags, extra flags in any place, warm-up resolved") {
  auto cl = app::parse_text_command_line(
      {"--prompt", "The ", "--length=256", "--chunk-len", "32", "--steps", "50", "--prompt=A b"});
  CHECK(cl.config.length == 256);
  CHECK(cl.config.chunk_len == 32);
  CHECK(cl.config.warmup_steps == 5);  // auto: min(100, 50 / 10)
  REQUIRE(cl.extra.size() == 2);
  CHECK(cl.extra[0] == std::pair<std::string, std::string>{"prompt", "The "});
  CHECK(cl.extra[1] == std::pair<std::string, std::string>{"prompt", "A b"});
  CHECK(cl.given_keys == std::set<std::string>{"length", "chunk_len", "steps"});
}

TEST_CASE("text config: bad values name the setting and what is allowed") {
  CHECK(error_of({"--tokenizer", "words"}) ==
        "tokenizer must be one of \"chars\", \"bytes\", \"sentencepiece\", got \"words\"");
  CHECK(error_of({"--length", "2000"}) ==
        "chunk_len (64) must divide length (2000): use length 2048 or a chunk_len that divides "
        "2000");
  CHECK(error_of({"--eval-fraction", "0.5"}) == "eval_fraction must be in (0, 0.5), got 0.5");
  CHECK(error_of({"--sample-top-p", "0"}) == "sample_top_p must be in (0, 1], got 0");
  CHECK(error_of({"--model", "transformer", "--d-model", "10", "--n-heads", "3"}) ==
        "model transformer: d_model (10) must be a multiple of n_heads (3)");
  CHECK(error_of({"--n-buckets", "3"}) ==
        "n_buckets must be even (LSH takes argmax over [xR, -xR]) or 0 (auto), got 3");
  const std::string unknown = error_of({"--prompts", "x"});
  CHECK(unknown.rfind("unknown flag '--prompts'; the flags are: --config, --resume, "
                      "--sample-from, --prompt, --help, --data, --tokenizer",
                      0) == 0);
  CHECK(error_of({"--prompt"}) == "missing value after --prompt");
}

TEST_CASE("text config: --sample-from checks flags for form only; the run gives the rest") {
  // A length that the defaults' chunk_len does not divide is not an error here: the
  // saved run's config decides the model.
  auto cl = app::parse_text_command_line({"--sample-from", "runs/x", "--sample-top-k", "5"});
  CHECK(!cl.resume);
  CHECK(cl.config.sample_top_k == 5);
  REQUIRE(cl.extra.size() == 1);
  CHECK(cl.extra[0].second == "runs/x");
  CHECK(error_of({"--sample-from", "runs/x", "--sample-top-k", "many"}) ==
        "--sample-top-k must be an integer, got 'many'");
}

TEST_CASE("text config: a resumed run may change only what keeps its computation") {
  app::TextConfig saved;
  saved.steps = 400;
  saved.warmup_steps = 40;
  const std::string saved_json = app::to_json(saved);
  auto ok = app::parse_text_command_line(
      {"--resume", "--time-budget", "60", "--sample-every", "0", "--steps", "800"});
  const app::TextConfig c = app::resolve_resume(saved_json, "runs/t/config.json", ok);
  CHECK(c.time_budget == 60);
  CHECK(c.sample_every == 0);
  CHECK(c.steps == 800);  // rsqrt: the learning rate does not depend on steps
  CHECK(c.warmup_steps == 40);

  auto bad = app::parse_text_command_line({"--resume", "--tokenizer", "bytes", "--d-model", "64"});
  try {
    (void)app::resolve_resume(saved_json, "runs/t/config.json", bad);
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    CHECK(m.find("tokenizer: saved \"chars\", given \"bytes\" (defines the data and the "
                 "vocabulary)") != std::string::npos);
    CHECK(m.find("d_model: saved 128, given 64 (defines the model)") != std::string::npos);
  }
}
