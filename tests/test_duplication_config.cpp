// tests/test_duplication_config.cpp: the main job's config (JSON file and flags): defaults
// validate, precedence, and every kind of bad input gives a message that names it; limits
// on the config text and file; the settings of a resumed run (resolve_resume).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "duplication/config.hpp"
#include "duplication/model_choice.hpp"
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
  CHECK(error_of({"--steps", "+-5"}) == "--steps must be an integer, got '+-5'");
  CHECK(error_of({"--steps", "+"}) == "--steps must be an integer, got '+'");
  CHECK(error_of({"--steps", " 5"}) == "--steps must be an integer, got ' 5'");
  CHECK(parse_command_line({"--steps", "+50"}).config.steps == 50);
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

// ---- issue 12, part 7: limits on the config text and file, and the messages ----------------

namespace {

std::string apply_error(const std::string& text, const std::string& source = "run.json") {
  app::DuplicationConfig c;
  try {
    app::apply_json(c, text, source);
  } catch (const ConfigError& e) {
    CHECK(c.n_hashes == app::DuplicationConfig{}.n_hashes);  // untouched
    return e.what();
  }
  return "";
}

std::string nested(const std::string& key, std::size_t depth, const std::string& open = "[",
                   const std::string& inner = "", const std::string& close = "]") {
  std::string s = "{\"" + key + "\": ";
  for (std::size_t i = 0; i < depth; ++i) s += open;
  s += inner;
  for (std::size_t i = 0; i < depth; ++i) s += close;
  return s + "}";
}

struct TempPath {
  std::filesystem::path path;
  explicit TempPath(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("minitrax_cfg_" + std::to_string(::getpid()) + "_" + name)) {
    std::filesystem::remove_all(path);
  }
  ~TempPath() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

}  // namespace

TEST_CASE("duplication config: JSON nested deeper than 64 levels is refused before parsing") {
  // 100,000 levels used to overflow the stack while the error message printed the value.
  CHECK(apply_error(nested("attention", 100000)) ==
        "run.json: nested deeper than 64 levels of [ ] and { } (line 1, column 78); a config "
        "is one object of numbers, strings and lists");
  CHECK(apply_error(nested("n_hashes", 100000, "{\"a\": ", "1", "}")) ==
        "run.json: nested deeper than 64 levels of [ ] and { } (line 1, column 392); a config "
        "is one object of numbers, strings and lists");
  // Brackets inside strings do not count, escaped quotes do not end a string.
  std::string in_string = "{\"output_dir\": \"" + std::string(1000, '[') + "\\\"[[[\"}";
  app::DuplicationConfig c;
  app::apply_json(c, in_string);
  CHECK(c.output_dir == std::string(1000, '[') + "\"[[[");
  // 64 levels (the object and 63 lists) reach the parser; the type is then wrong.
  const std::string deep64 = nested("eval_n_hashes", 63, "[", "1", "]");
  CHECK(testutil::contains(apply_error(deep64),
                           "run.json: \"eval_n_hashes\" item must be an integer, got array [[[["));
  // The line and column point at the 65th opening bracket.
  CHECK(apply_error("{\n\"attention\":\n" + std::string(70, '[')) ==
        "run.json: nested deeper than 64 levels of [ ] and { } (line 3, column 64); a config "
        "is one object of numbers, strings and lists");
}

TEST_CASE("duplication config: a huge value is shortened in the message, a huge text refused") {
  const std::string big(50000, 'x');
  const std::string msg = apply_error("{\"n_hashes\": \"" + big + "\"}");
  CHECK(msg == "run.json: \"n_hashes\" must be an integer, got string \"" + std::string(59, 'x') +
                   "... (50002 bytes)");
  // UTF-8 is not cut in the middle of a character: é is 2 bytes, 30 of them are 60 bytes.
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\xc3\xa9";
  CHECK(apply_error("{\"schedule\": 1, \"progress\": \"" + accents + "\"}") ==
        "run.json: \"schedule\" must be a string, got number 1");
  CHECK(error_of({"--progress", "a" + accents}) ==
        "progress must be one of \"auto\", \"bar\", \"lines\", \"none\", got \"a" +
            accents.substr(0, 58) + "... (81 bytes)\"");
  const std::string too_big(app::kMaxConfigBytes + 1, ' ');
  CHECK(apply_error(too_big) ==
        "run.json: 1048577 bytes of JSON, over the 1048576-byte (1 MiB) limit");
  CHECK(error_of({"--n-hashes", std::string(5000, '7')}) ==
        "--n-hashes must be an integer, got '" + std::string(60, '7') + "... (5000 bytes)'");
  CHECK(error_of({"--" + std::string(100, 'q'), "1"})
            .rfind("unknown flag '--" + std::string(58, 'q') + "... (102 bytes)'; the flags are: ",
                   0) == 0);
}

TEST_CASE("duplication config: --config must name a regular, readable, small, non-empty file") {
  using testutil::contains;
  CHECK(error_of({"--config", ""}) == "--config needs a file name, got an empty one");
  CHECK(error_of({"--config="}) == "--config needs a file name, got an empty one");
  CHECK(error_of({"--config", "/nonexistent/minitrax.json"}) ==
        "cannot open config file '/nonexistent/minitrax.json': No such file or directory");

  TempPath dir("dir");
  std::filesystem::create_directories(dir.path);
  CHECK(error_of({"--config", dir.str()}) ==
        "config file '" + dir.str() + "' is not a regular file: it is a directory");

  // A FIFO with no writer: opening it for reading would block forever.
  TempPath fifo("fifo");
  REQUIRE(::mkfifo(fifo.str().c_str(), 0600) == 0);
  CHECK(error_of({"--config", fifo.str()}) ==
        "config file '" + fifo.str() + "' is not a regular file: it is a FIFO (named pipe)");

  CHECK(error_of({"--config", "/dev/zero"}) ==
        "config file '/dev/zero' is not a regular file: it is a character device");
  CHECK(error_of({"--config", "/dev/null"}) ==
        "config file '/dev/null' is not a regular file: it is a character device");
  // /proc/self/mem says it is a regular file of 0 bytes; reading offset 0 fails.
  CHECK(error_of({"--config", "/proc/self/mem"}) ==
        "cannot read config file '/proc/self/mem': Input/output error");

  TempPath empty("empty.json");
  std::ofstream(empty.path).close();
  CHECK(error_of({"--config", empty.str()}) ==
        "config file '" + empty.str() +
            "' is empty; a config is a JSON object such as {\"steps\": 100}");

  TempPath big("big.json");
  {
    std::ofstream f(big.path);
    f << "{\"output_dir\": \"" << std::string(app::kMaxConfigBytes, 'd') << "\"}";
  }
  CHECK(error_of({"--config", big.str()}) ==
        "config file '" + big.str() + "' is 1048594 bytes, over the 1048576-byte (1 MiB) limit");

  // read_config_file is what the main job uses for a saved config.json too.
  CHECK(testutil::error_message([&] { (void)app::read_config_file(dir.str()); }) ==
        "config file '" + dir.str() + "' is not a regular file: it is a directory");
  TempPath ok("ok.json");
  std::ofstream(ok.path) << "{\"steps\": 7}";
  CHECK(app::read_config_file(ok.str()) == "{\"steps\": 7}");
}

TEST_CASE("duplication config: numbers in messages are printed as they read back") {
  CHECK(error_of({"--lr", "-1e-9"}) == "lr must be in (0, 1], got -1e-09");
  CHECK(error_of({"--lr", "1.5"}) == "lr must be in (0, 1], got 1.5");
  CHECK(error_of({"--dropout", "0.99999999999"}) == "");
  CHECK(error_of({"--dropout", "-0.125"}) == "dropout must be in [0, 1), got -0.125");
  CHECK(apply_error(R"({"lr": 2.5})") == "");
  app::DuplicationConfig c;
  app::apply_json(c, R"({"lr": 2.5})");
  CHECK(testutil::error_message([&] { app::validate(c); }) == "lr must be in (0, 1], got 2.5");
}

TEST_CASE("duplication config: --resume takes no value, --help wins wherever it stands") {
  CHECK(error_of({"--resume=yes"}) ==
        "--resume takes no value, got '--resume=yes' (write --resume alone to continue the run "
        "in output_dir)");
  CHECK(parse_command_line({"--no-such-flag", "1", "--help"}).help);
  CHECK(parse_command_line({"--lr", "--help"}).help);
  CHECK(parse_command_line({"--help", "--lr", "nan"}).help);
  CHECK(parse_command_line({"-h", "--config", "/nonexistent"}).help);
  CHECK(parse_command_line({"positional", "--help=1"}).help);
  CHECK(!parse_command_line({"--steps", "5"}).help);
  CHECK(error_of({"--"}) == "unexpected argument '--' (flags start with --; try --help)");
}

TEST_CASE(
    "duplication config: list flags take 4, 1,2,4 or a bracketed list, help shows defaults so") {
  using V = std::vector<long>;
  using S = std::vector<std::string>;
  CHECK(parse_command_line({"--eval-n-hashes", "4"}).config.eval_n_hashes == V{4});
  CHECK(parse_command_line({"--eval-n-hashes", "1,2,4"}).config.eval_n_hashes == V{1, 2, 4});
  CHECK(parse_command_line({"--eval-n-hashes", "[4]"}).config.eval_n_hashes == V{4});
  CHECK(parse_command_line({"--eval-n-hashes=[1, 2, 4]"}).config.eval_n_hashes == V{1, 2, 4});
  CHECK(parse_command_line({"--attention", R"(["lsh", "self"])"}).config.attention ==
        S{"lsh", "self"});
  CHECK(parse_command_line({"--attention", "[lsh,self]"}).config.attention == S{"lsh", "self"});
  CHECK(parse_command_line({"--attention", "self"}).config.attention == S{"self"});
  CHECK(error_of({"--eval-n-hashes", "[1,2"}) ==
        "--eval-n-hashes: a list that starts with '[' must end with ']', got '[1,2'");
  CHECK(error_of({"--eval-n-hashes", "[]"}) == "eval_n_hashes must list at least one value");
  CHECK(error_of({"--eval-n-hashes", "1,,2"}) == "--eval-n-hashes item must be an integer, got ''");
  CHECK(error_of({"--attention", "[]"}) == "attention must list at least one of \"lsh\", \"self\"");
  // JSON takes a single number for a list of integers too.
  app::DuplicationConfig c;
  app::apply_json(c, R"({"eval_n_hashes": 4})");
  CHECK(c.eval_n_hashes == V{4});

  const std::string help = app::usage();
  using testutil::contains;
  CHECK(contains(help,
                 "--eval-n-hashes  n_hashes values of the final LSH evaluation, 1..64 "
                 "(default 1,2,4,8)\n"));
  CHECK(contains(help,
                 "--attention  attention per layer, cycled: a list of lsh / self "
                 "(default lsh)\n"));
  CHECK(contains(help, "(default cosine)\n"));
  CHECK(contains(help, "--lr  peak learning rate, 0 < x <= 1 (default 0.002)\n"));
  CHECK(contains(help,
                 "--warmup-steps  linear warm-up steps, 0..steps, or auto = min(100, "
                 "steps/10) (default auto)\n"));
  CHECK(contains(help,
                 "--ff-activation  feed-forward non-linearity: relu, gelu, fast_gelu, "
                 "sigmoid or tanh (default relu)\n"));
  CHECK(!contains(help, "[[1"));
  // Every default shown in the help reads back through its flag as the default.
  const app::DuplicationConfig d;
  std::vector<std::string> args;
  std::istringstream lines(help);
  for (std::string line; std::getline(lines, line);) {
    const auto flag_at = line.find("  --");
    const auto def_at = line.rfind(" (default ");
    if (flag_at != 0 || def_at == std::string::npos || line.back() != ')') continue;
    const std::string flag = line.substr(2, line.find(' ', 2) - 2);
    args.push_back(flag + "=" + line.substr(def_at + 10, line.size() - def_at - 11));
  }
  CHECK(args.size() == 30);
  const auto cl = parse_command_line(args);
  CHECK(app::to_json(cl.config) == app::to_json(app::resolve_new_run(app::CommandLine{})));
}

TEST_CASE("duplication config: the warm-up default fits the steps, an explicit one must") {
  CHECK(parse_command_line({}).config.warmup_steps == 100);
  CHECK(parse_command_line({"--steps", "50"}).config.warmup_steps == 5);
  CHECK(parse_command_line({"--steps", "1"}).config.warmup_steps == 0);
  CHECK(parse_command_line({"--steps", "5000"}).config.warmup_steps == 100);
  CHECK(parse_command_line({"--steps", "50", "--warmup-steps", "auto"}).config.warmup_steps == 5);
  CHECK(parse_command_line({"--steps", "50", "--warmup-steps", "50"}).config.warmup_steps == 50);
  CHECK(error_of({"--steps", "50", "--warmup-steps", "100"}) ==
        "warmup_steps must be in [0, 50] (at most steps) or auto, got 100");
  CHECK(error_of({"--warmup-steps", "-1"}) ==
        "--warmup-steps must be auto or in [0, steps], got -1");
  CHECK(apply_error(R"({"warmup_steps": -1})") ==
        "run.json: \"warmup_steps\" must be \"auto\" or in [0, steps], got -1");
  CHECK(apply_error(R"({"warmup_steps": "soon"})") ==
        "run.json: \"warmup_steps\" must be \"auto\" or an integer, got \"soon\"");
  // to_json writes the number the run uses, never "auto".
  app::DuplicationConfig c;
  app::apply_json(c, R"({"warmup_steps": "auto", "steps": 300})");
  CHECK(c.warmup_steps == app::kAutoWarmup);
  CHECK(testutil::contains(app::to_json(c), "\"warmup_steps\": 30"));
}

TEST_CASE("duplication config: ff_activation names a layer") {
  CHECK(app::DuplicationConfig{}.ff_activation == "relu");
  CHECK(parse_command_line({"--ff-activation", "gelu"}).config.ff_activation == "gelu");
  CHECK(error_of({"--ff-activation", "swish"}) ==
        "ff_activation must be one of \"relu\", \"gelu\", \"fast_gelu\", \"sigmoid\", \"tanh\", "
        "got \"swish\"");
  // Each name makes the layer it says: compare outputs with the function itself.
  const Tensor x = Tensor::from<float>({5}, {-2.0f, -0.5f, 0.0f, 0.5f, 2.0f});
  auto out = [&](const std::string& name) {
    auto layer = app::ff_activation_layer(name)(std::source_location::current());
    layer->init({{x.shape(), DType::f32}});
    return (*layer)(Var(x)).value();
  };
  const std::vector<std::pair<std::string, std::function<double(double)>>> expect = {
      {"relu", [](double v) { return std::max(v, 0.0); }},
      {"gelu", [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }},
      {"fast_gelu",
       [](double v) {
         return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
       }},
      {"sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); }},
      {"tanh", [](double v) { return std::tanh(v); }},
  };
  for (const auto& [name, f] : expect) {
    CAPTURE(name);
    const Tensor y = out(name);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CHECK(y.flat(i) == doctest::Approx(f(x.flat(i))).epsilon(1e-6));
    }
  }
  CHECK(testutil::error_message([] { (void)app::ff_activation_layer("swish"); }) ==
        "ff_activation must be one of \"relu\", \"gelu\", \"fast_gelu\", \"sigmoid\", \"tanh\", "
        "got \"swish\"");
}

TEST_CASE("duplication config: given_keys lists what --config and the flags set") {
  TempPath file("given.json");
  std::ofstream(file.path) << R"({"steps": 10, "n_hashes": 2})";
  const auto cl = parse_command_line({"--config", file.str(), "--lr", "0.01", "--n-hashes=2"});
  CHECK(cl.given_keys == std::set<std::string>{"steps", "n_hashes", "lr"});
  CHECK(parse_command_line({}).given_keys.empty());
  CHECK(parse_command_line({"--resume"}).given_keys.empty());
}

TEST_CASE("duplication config: output_dir must be UTF-8 (config.json stores it)") {
  CHECK(error_of({"--output-dir", "runs/\xff"}) ==
        "output_dir must be UTF-8 text (config.json stores it), byte 5 is 0xff");
  CHECK(error_of({"--output-dir", "runs/\xc3"}) ==
        "output_dir must be UTF-8 text (config.json stores it), byte 5 is 0xc3");
  CHECK(error_of({"--output-dir", "runs/\xed\xa0\x80"}) ==
        "output_dir must be UTF-8 text (config.json stores it), byte 5 is 0xed");
  CHECK(parse_command_line({"--output-dir", "runs/\xc3\xa9t\xc3\xa9"}).config.output_dir ==
        "runs/\xc3\xa9t\xc3\xa9");
}

// ---- issue 12, part 2: a resumed run takes its saved config; the command line may only
// change what does not alter the run -------------------------------------------------------

namespace {

// The config.json a run started with `args` would save.
std::string saved_by(const std::vector<std::string>& args) {
  return app::to_json(parse_command_line(args).config);
}

app::DuplicationConfig resumed(const std::string& saved, std::vector<std::string> args) {
  args.push_back("--resume");
  return app::resolve_resume(saved, "runs/a/config.json", parse_command_line(args));
}

std::string resume_error(const std::string& saved, std::vector<std::string> args) {
  try {
    (void)resumed(saved, std::move(args));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const char* const kHowToGoOn =
    "\nto continue the run, drop these settings or give the saved values; to train with the "
    "new ones, start a new run in another folder (--output-dir DIR, without --resume)";

}  // namespace

TEST_CASE("resume: the saved config is the run's truth, not the defaults") {
  const std::string saved =
      saved_by({"--steps", "300", "--n-hashes", "2", "--length", "128", "--chunk-len", "32",
                "--ff-activation", "tanh", "--lr", "0.01", "--output-dir", "runs/a"});
  const app::DuplicationConfig c = resumed(saved, {"--output-dir", "runs/a"});
  CHECK(c.steps == 300);
  CHECK(c.n_hashes == 2);
  CHECK(c.length == 128);
  CHECK(c.chunk_len == 32);
  CHECK(c.ff_activation == "tanh");
  CHECK(c.lr == 0.01);
  CHECK(c.warmup_steps == 30);
  CHECK(c.output_dir == "runs/a");
  CHECK(app::to_json(c) == saved);
  // Without --output-dir the default folder is where the run is now.
  CHECK(resumed(saved, {}).output_dir == "runs/duplication");
  // A chunk_len valid only for the saved length is fine (no check against the defaults).
  CHECK(resumed(saved, {"--chunk-len", "32", "--length", "128"}).chunk_len == 32);
}

TEST_CASE("resume: given values equal to the saved ones are fine, wherever they come from") {
  const std::string saved = saved_by({"--steps", "300", "--n-hashes", "2"});
  CHECK(resumed(saved, {"--n-hashes", "2", "--steps=300", "--lr", "2e-3"}).n_hashes == 2);
  CHECK(resumed(saved, {"--warmup-steps", "30"}).warmup_steps == 30);
  CHECK(resumed(saved, {"--warmup-steps", "auto"}).warmup_steps == 30);  // auto of 300 steps
  CHECK(resumed(saved, {"--attention", "[lsh]", "--eval-batch", "32"}).attention ==
        std::vector<std::string>{"lsh"});
  // The saved file itself given as --config: every key given, all equal.
  const std::string path =
      (std::filesystem::temp_directory_path() / "minitrax_resume_same.json").string();
  std::ofstream(path) << saved;
  CHECK(app::to_json(resumed(saved, {"--config", path})) == saved);
  std::filesystem::remove(path);
}

TEST_CASE("resume: resume-safe settings may change and are applied") {
  const std::string saved = saved_by({"--steps", "300"});
  const app::DuplicationConfig c =
      resumed(saved, {"--eval-every", "7", "--checkpoint-every", "0", "--eval-n-hashes", "[2]",
                      "--progress", "none", "--output-dir", "moved/here"});
  CHECK(c.eval_every == 7);
  CHECK(c.checkpoint_every == 0);
  CHECK(c.eval_n_hashes == std::vector<long>{2});
  CHECK(c.progress == "none");
  CHECK(c.output_dir == "moved/here");
  CHECK(c.steps == 300);
  // An applied value is still validated.
  CHECK(resume_error(saved, {"--eval-every", "-1"}) ==
        "eval_every must be in [0, 10000000], got -1");
  CHECK(resume_error(saved, {"--eval-n-hashes", "65"}) ==
        "eval_n_hashes item must be in [1, 64], got 65");
}

TEST_CASE("resume: steps may change unless the schedule is cosine") {
  for (const char* schedule : {"rsqrt", "constant"}) {
    CAPTURE(schedule);
    const std::string saved = saved_by({"--steps", "300", "--schedule", schedule});
    const app::DuplicationConfig c = resumed(saved, {"--steps", "900"});
    CHECK(c.steps == 900);
    CHECK(c.warmup_steps == 30);  // as saved, not auto for 900 steps
    CHECK(resumed(saved, {"--steps", "100"}).steps == 100);
  }
  const std::string cosine = saved_by({"--steps", "300"});
  CHECK(resume_error(cosine, {"--steps", "900"}) ==
        std::string("--resume: these settings differ from the run saved in "
                    "'runs/a/config.json', and a resumed run cannot change them:\n"
                    "  steps: saved 300, given 900 (with schedule \"cosine\" the learning rate "
                    "of each step depends on steps)") +
            kHowToGoOn);
  // Changing the schedule itself (to make steps free) is refused too.
  CHECK(resume_error(cosine, {"--steps", "900", "--schedule", "constant"}) ==
        std::string("--resume: these settings differ from the run saved in "
                    "'runs/a/config.json', and a resumed run cannot change them:\n"
                    "  steps: saved 300, given 900 (with schedule \"cosine\" the learning rate "
                    "of each step depends on steps)\n"
                    "  schedule: saved \"cosine\", given \"constant\" (defines the training)") +
            kHowToGoOn);
}

TEST_CASE("resume: every changed setting that defines the run is listed in one message") {
  const std::string saved = saved_by({"--steps", "300"});
  const std::string msg =
      resume_error(saved, {"--n-hashes",     "8",    "--attention",     "lsh,self",
                           "--lr",           "1e-3", "--eval-batch",    "8",
                           "--eval-batches", "3",    "--ff-activation", "gelu",
                           "--seed",         "5",    "--eval-every",    "10",
                           "--dropout",      "0.1",  "--warmup-steps",  "3",
                           "--length",       "32",   "--reversible",    "false"});
  CHECK(msg == std::string("--resume: these settings differ from the run saved in "
                           "'runs/a/config.json', and a resumed run cannot change them:\n"
                           "  length: saved 64, given 32 (defines the task and the model)\n"
                           "  ff_activation: saved \"relu\", given \"gelu\" (defines the model)\n"
                           "  dropout: saved 0.0, given 0.1 (defines the model)\n"
                           "  attention: saved [\"lsh\"], given [\"lsh\",\"self\"] (defines the "
                           "model)\n"
                           "  n_hashes: saved 4, given 8 (defines the model)\n"
                           "  reversible: saved true, given false (defines the model)\n"
                           "  lr: saved 0.002, given 0.001 (defines the training)\n"
                           "  warmup_steps: saved 30, given 3 (defines the training)\n"
                           "  seed: saved 0, given 5 (defines the training)\n"
                           "  eval_batches: saved 2, given 3 (the evaluations already in "
                           "metrics.jsonl used the saved value)\n"
                           "  eval_batch: saved 32, given 8 (the evaluations already in "
                           "metrics.jsonl used the saved value)") +
                   kHowToGoOn);
  // Keys from a --config file are given keys too.
  const std::string path =
      (std::filesystem::temp_directory_path() / "minitrax_resume_other.json").string();
  std::ofstream(path) << R"({"batch": 4, "eval_every": 10})";
  CHECK(resume_error(saved, {"--config", path}) ==
        std::string("--resume: these settings differ from the run saved in "
                    "'runs/a/config.json', and a resumed run cannot change them:\n"
                    "  batch: saved 16, given 4 (defines the training)") +
            kHowToGoOn);
  std::filesystem::remove(path);
  // A long value is shortened: the given list is 105 bytes of JSON.
  const std::string saved_long = saved_by({"--attention", "lsh,self,lsh,self", "--n-layers", "4"});
  std::string sixteen;
  for (int i = 0; i < 8; ++i) sixteen += std::string(i ? "," : "") + "self,lsh";
  CHECK(resume_error(saved_long, {"--attention", sixteen}) ==
        std::string("--resume: these settings differ from the run saved in "
                    "'runs/a/config.json', and a resumed run cannot change them:\n"
                    "  attention: saved [\"lsh\",\"self\",\"lsh\",\"self\"], given "
                    "[\"self\",\"lsh\",\"self\",\"lsh\",\"self\",\"lsh\",\"self\",\"lsh\",\"self\","
                    "... (105 bytes) (defines the model)") +
            kHowToGoOn);
}

TEST_CASE("resume: a saved config from before ff_activation existed takes relu") {
  std::string old = saved_by({"--steps", "300"});
  const auto at = old.find("  \"ff_activation\": \"relu\",\n");
  REQUIRE(at != std::string::npos);
  old.erase(at, std::string("  \"ff_activation\": \"relu\",\n").size());
  CHECK(!testutil::contains(old, "ff_activation"));
  CHECK(resumed(old, {}).ff_activation == "relu");
  CHECK(resume_error(old, {"--ff-activation", "gelu"}) ==
        std::string("--resume: these settings differ from the run saved in "
                    "'runs/a/config.json', and a resumed run cannot change them:\n"
                    "  ff_activation: saved \"relu\", given \"gelu\" (defines the model)") +
            kHowToGoOn);
  // A file that says only {} is the old code's defaults (warm-up 100 then).
  const app::DuplicationConfig c = resumed("{}", {});
  CHECK(c.warmup_steps == 100);
  CHECK(c.steps == 1200);
}

TEST_CASE("resume: a bad saved config is an error naming the file") {
  CHECK(resume_error(R"({"steps": 3,)", {}) ==
        "saved config 'runs/a/config.json': not valid JSON ([json.exception.parse_error.101] "
        "parse error at line 1, column 13: syntax error while parsing object key - unexpected "
        "end of input; expected string literal)");
  CHECK(testutil::contains(resume_error(R"({"steps": 3, "n_hash": 2})", {}),
                           "saved config 'runs/a/config.json': unknown key \"n_hash\"; the keys "
                           "are: length, vocab, "));
  CHECK(resume_error(R"({"steps": 3, "chunk_len": 12})", {}) ==
        "saved config 'runs/a/config.json': chunk_len (12) must divide length (64): use length "
        "72 or a chunk_len that divides 64");
  CHECK(resume_error(R"({"steps": 3})", {}) ==
        "saved config 'runs/a/config.json': warmup_steps must be in [0, 3] (at most steps) or "
        "auto, got 100");
  CHECK(resume_error("[1]", {}) ==
        "saved config 'runs/a/config.json': must be a JSON object {\"key\": value, ...}, got "
        "array");
}

TEST_CASE("resume: without a saved config, resolve_new_run validates the command line") {
  const auto cl = parse_command_line({"--resume", "--steps", "40"});
  CHECK(cl.resume);
  CHECK(cl.config.warmup_steps == app::kAutoWarmup);  // not resolved yet
  CHECK(app::resolve_new_run(cl).warmup_steps == 4);
  const auto bad = parse_command_line({"--resume", "--chunk-len", "12"});
  CHECK(testutil::error_message([&] { (void)app::resolve_new_run(bad); }) ==
        "chunk_len (12) must divide length (64): use length 72 or a chunk_len that divides 64");
  CHECK(error_of({"--resume", "--output-dir", ""}) == "output_dir must not be empty");
  CHECK(error_of({"--resume", "--n-hashes", "x"}) == "--n-hashes must be an integer, got 'x'");
}

TEST_CASE("resume: resume_safe names exactly the settings that keep the computation") {
  app::DuplicationConfig cosine, constant;
  constant.schedule = "constant";
  std::vector<std::string> safe_cosine, safe_constant;
  for (const char* k : {"length",
                        "vocab",
                        "d_model",
                        "d_ff",
                        "ff_activation",
                        "n_layers",
                        "n_heads",
                        "d_attention_key",
                        "d_attention_value",
                        "dropout",
                        "attention",
                        "n_hashes",
                        "n_buckets",
                        "chunk_len",
                        "n_chunks_before",
                        "ff_chunk_size",
                        "reversible",
                        "batch",
                        "steps",
                        "lr",
                        "warmup_steps",
                        "schedule",
                        "seed",
                        "eval_every",
                        "eval_batches",
                        "eval_batch",
                        "checkpoint_every",
                        "eval_n_hashes",
                        "output_dir",
                        "progress",
                        "no_such_key"}) {
    if (app::resume_safe(k, cosine)) safe_cosine.push_back(k);
    if (app::resume_safe(k, constant)) safe_constant.push_back(k);
  }
  CHECK(safe_cosine == std::vector<std::string>{"eval_every", "checkpoint_every", "eval_n_hashes",
                                                "output_dir", "progress"});
  CHECK(safe_constant == std::vector<std::string>{"steps", "eval_every", "checkpoint_every",
                                                  "eval_n_hashes", "output_dir", "progress"});
}
