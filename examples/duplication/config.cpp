// examples/duplication/config.cpp: settings table, JSON and flag parsing, validation.
#include "duplication/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <variant>

namespace minitrax::app {

namespace {

using json = nlohmann::json;

// One setting: its key, a one-line description, and where it lives in the config.
using Member =
    std::variant<long DuplicationConfig::*, double DuplicationConfig::*, bool DuplicationConfig::*,
                 std::string DuplicationConfig::*, std::vector<std::string> DuplicationConfig::*,
                 std::vector<long> DuplicationConfig::*>;
struct Setting {
  const char* key;
  Member member;
  const char* help;
};

const std::vector<Setting>& settings() {
  using C = DuplicationConfig;
  static const std::vector<Setting> table = {
      {"length", &C::length, "total sequence length L, even, 4..65536 (w has L/2 - 1 symbols)"},
      {"vocab", &C::vocab, "vocabulary size, 3..65536 (w uses symbols 1..vocab-2)"},
      {"d_model", &C::d_model, "width of each of the two residual streams, 1..4096"},
      {"d_ff", &C::d_ff, "feed-forward hidden width, 1..16384"},
      {"n_layers", &C::n_layers, "decoder blocks, 1..64 (a multiple of the attention pattern)"},
      {"n_heads", &C::n_heads, "attention heads, 1..64"},
      {"d_attention_key", &C::d_attention_key, "per-head query/key width, 1..1024"},
      {"d_attention_value", &C::d_attention_value, "per-head value width, 1..1024"},
      {"dropout", &C::dropout, "dropout rate, 0 <= x < 1"},
      {"attention", &C::attention, "attention per layer, cycled: a list of \"lsh\" / \"self\""},
      {"n_hashes", &C::n_hashes, "LSH hash rounds in training, 1..64"},
      {"n_buckets", &C::n_buckets, "LSH buckets per round, even, 2..65536"},
      {"chunk_len", &C::chunk_len, "LSH chunk length, 1..length, dividing length"},
      {"n_chunks_before", &C::n_chunks_before, "LSH chunks attended before each chunk, 0..8"},
      {"ff_chunk_size", &C::ff_chunk_size, "feed-forward chunk (positions), 0 = none, 0..length"},
      {"reversible", &C::reversible, "reversible backward pass (true) or plain backprop (false)"},
      {"batch", &C::batch, "training batch size, 1..4096"},
      {"steps", &C::steps, "training steps, 1..10000000"},
      {"lr", &C::lr, "peak learning rate, 0 < x <= 1"},
      {"warmup_steps", &C::warmup_steps, "linear warm-up steps, 0..steps"},
      {"schedule", &C::schedule, "learning-rate schedule: \"cosine\", \"rsqrt\" or \"constant\""},
      {"seed", &C::seed, "random seed, 0..2147483647"},
      {"eval_every", &C::eval_every, "steps between evaluations, 0 = only at the end"},
      {"eval_batches", &C::eval_batches, "held-out batches per evaluation, 1..1000"},
      {"eval_batch", &C::eval_batch, "held-out batch size, 1..4096"},
      {"checkpoint_every", &C::checkpoint_every, "steps between checkpoints, 0 = only at the end"},
      {"eval_n_hashes", &C::eval_n_hashes, "n_hashes values of the final LSH evaluation, 1..64"},
      {"output_dir", &C::output_dir, "folder for checkpoints, metrics.jsonl and the plot"},
      {"progress", &C::progress, "progress display: \"auto\", \"bar\", \"lines\" or \"none\""},
  };
  return table;
}

std::string all_keys() {
  std::string s;
  for (const Setting& st : settings()) s += (s.empty() ? "" : ", ") + std::string(st.key);
  return s;
}

const Setting* find_setting(const std::string& key) {
  for (const Setting& st : settings()) {
    if (key == st.key) return &st;
  }
  return nullptr;
}

std::string flag_of(const std::string& key) {
  std::string f = "--" + key;
  std::replace(f.begin(), f.end(), '_', '-');
  return f;
}

// ---- text values (flags) ----

long parse_long(const std::string& what, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < std::numeric_limits<long>::min() ||
      x > std::numeric_limits<long>::max()) {
    throw ConfigError(what + " must be an integer, got '" + v + "'");
  }
  return static_cast<long>(x);
}

double parse_double(const std::string& what, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x)) {
    throw ConfigError(what + " must be a finite number, got '" + v + "'");
  }
  return x;
}

bool parse_bool(const std::string& what, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw ConfigError(what + " must be true or false, got '" + v + "'");
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(v);
  while (std::getline(is, item, ',')) out.push_back(item);
  if (!v.empty() && v.back() == ',') out.push_back("");
  return out;
}

void set_from_text(DuplicationConfig& c, const Setting& st, const std::string& v) {
  const std::string what = flag_of(st.key);
  std::visit(
      [&](auto m) {
        using T = std::remove_reference_t<decltype(c.*m)>;
        if constexpr (std::is_same_v<T, long>) {
          c.*m = parse_long(what, v);
        } else if constexpr (std::is_same_v<T, double>) {
          c.*m = parse_double(what, v);
        } else if constexpr (std::is_same_v<T, bool>) {
          c.*m = parse_bool(what, v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          c.*m = v;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          c.*m = split_list(v);
        } else {
          std::vector<long> xs;
          for (const std::string& s : split_list(v)) xs.push_back(parse_long(what + " item", s));
          c.*m = xs;
        }
      },
      st.member);
}

// ---- JSON values ----

std::string type_name(const json& j) {
  return j.type_name();
}

long json_long(const std::string& what, const json& j) {
  if (j.is_number_integer()) {
    if (j.is_number_unsigned() &&
        j.get<unsigned long long>() >
            static_cast<unsigned long long>(std::numeric_limits<long>::max())) {
      throw ConfigError(what + " is too large");
    }
    return j.get<long>();
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 1e15) return static_cast<long>(d);
    throw ConfigError(what + " must be an integer, got " + j.dump());
  }
  throw ConfigError(what + " must be an integer, got " + type_name(j) + " " + j.dump());
}

void set_from_json(DuplicationConfig& c, const Setting& st, const json& j,
                   const std::string& source) {
  const std::string what = source + ": \"" + st.key + "\"";
  std::visit(
      [&](auto m) {
        using T = std::remove_reference_t<decltype(c.*m)>;
        if constexpr (std::is_same_v<T, long>) {
          c.*m = json_long(what, j);
        } else if constexpr (std::is_same_v<T, double>) {
          if (!j.is_number()) {
            throw ConfigError(what + " must be a number, got " + type_name(j) + " " + j.dump());
          }
          c.*m = j.get<double>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!j.is_boolean()) {
            throw ConfigError(what + " must be true or false, got " + j.dump());
          }
          c.*m = j.get<bool>();
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!j.is_string()) {
            throw ConfigError(what + " must be a string, got " + type_name(j) + " " + j.dump());
          }
          c.*m = j.get<std::string>();
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::vector<std::string> xs;
          if (j.is_string()) {
            xs.push_back(j.get<std::string>());
          } else if (j.is_array()) {
            for (const json& e : j) {
              if (!e.is_string()) {
                throw ConfigError(what + " must list strings, got " + e.dump());
              }
              xs.push_back(e.get<std::string>());
            }
          } else {
            throw ConfigError(what + " must be a list of strings, got " + j.dump());
          }
          c.*m = xs;
        } else {
          if (!j.is_array())
            throw ConfigError(what + " must be a list of integers, got " + j.dump());
          std::vector<long> xs;
          for (const json& e : j) xs.push_back(json_long(what + " item", e));
          c.*m = xs;
        }
      },
      st.member);
}

void check_range(const char* key, long v, long lo, long hi) {
  if (v < lo || v > hi) {
    throw ConfigError(std::string(key) + " must be in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "], got " + std::to_string(v));
  }
}

void check_one_of(const char* key, const std::string& v, std::initializer_list<const char*> ok) {
  std::string list;
  for (const char* o : ok) {
    if (v == o) return;
    list += (list.empty() ? "\"" : ", \"") + std::string(o) + "\"";
  }
  throw ConfigError(std::string(key) + " must be one of " + list + ", got \"" + v + "\"");
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot open config file '" + path + "'");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read config file '" + path + "'");
  return os.str();
}

}  // namespace

void apply_json(DuplicationConfig& config, const std::string& json_text,
                const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw ConfigError(source + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) {
    throw ConfigError(source + ": must be a JSON object {\"key\": value, ...}, got " +
                      type_name(j));
  }
  DuplicationConfig c = config;
  for (const auto& [key, value] : j.items()) {
    const Setting* st = find_setting(key);
    if (!st) {
      throw ConfigError(source + ": unknown key \"" + key + "\"; the keys are: " + all_keys());
    }
    set_from_json(c, *st, value, source);
  }
  config = c;
}

void validate(const DuplicationConfig& c) {
  check_range("length", c.length, 4, 65536);
  if (c.length % 2 != 0) {
    throw ConfigError("length must be even (\"0 w 0 w\"), got " + std::to_string(c.length));
  }
  check_range("vocab", c.vocab, 3, 65536);
  check_range("d_model", c.d_model, 1, 4096);
  check_range("d_ff", c.d_ff, 1, 16384);
  check_range("n_layers", c.n_layers, 1, 64);
  check_range("n_heads", c.n_heads, 1, 64);
  check_range("d_attention_key", c.d_attention_key, 1, 1024);
  check_range("d_attention_value", c.d_attention_value, 1, 1024);
  if (!(c.dropout >= 0 && c.dropout < 1)) {
    throw ConfigError("dropout must be in [0, 1), got " + std::to_string(c.dropout));
  }
  if (c.attention.empty())
    throw ConfigError("attention must list at least one of \"lsh\", \"self\"");
  for (const std::string& a : c.attention) check_one_of("attention", a, {"lsh", "self"});
  if (c.n_layers % static_cast<long>(c.attention.size()) != 0) {
    throw ConfigError("n_layers (" + std::to_string(c.n_layers) +
                      ") must be a multiple of the attention pattern's length (" +
                      std::to_string(c.attention.size()) + ")");
  }
  check_range("n_hashes", c.n_hashes, 1, 64);
  check_range("n_buckets", c.n_buckets, 2, 65536);
  if (c.n_buckets % 2 != 0) {
    throw ConfigError("n_buckets must be even (LSH takes argmax over [xR, -xR]), got " +
                      std::to_string(c.n_buckets));
  }
  check_range("chunk_len", c.chunk_len, 1, c.length);
  if (c.length % c.chunk_len != 0) {
    const long up = (c.length / c.chunk_len + 1) * c.chunk_len;
    throw ConfigError("chunk_len (" + std::to_string(c.chunk_len) + ") must divide length (" +
                      std::to_string(c.length) + "): use length " + std::to_string(up) +
                      " or a chunk_len that divides " + std::to_string(c.length));
  }
  check_range("n_chunks_before", c.n_chunks_before, 0, 8);
  check_range("ff_chunk_size", c.ff_chunk_size, 0, c.length);
  check_range("batch", c.batch, 1, 4096);
  check_range("steps", c.steps, 1, 10000000);
  if (!(c.lr > 0 && c.lr <= 1))
    throw ConfigError("lr must be in (0, 1], got " + std::to_string(c.lr));
  check_range("warmup_steps", c.warmup_steps, 0, c.steps);
  check_one_of("schedule", c.schedule, {"cosine", "rsqrt", "constant"});
  check_range("seed", c.seed, 0, 2147483647);
  check_range("eval_every", c.eval_every, 0, 10000000);
  check_range("eval_batches", c.eval_batches, 1, 1000);
  check_range("eval_batch", c.eval_batch, 1, 4096);
  check_range("checkpoint_every", c.checkpoint_every, 0, 10000000);
  if (c.eval_n_hashes.empty()) throw ConfigError("eval_n_hashes must list at least one value");
  for (long h : c.eval_n_hashes) check_range("eval_n_hashes item", h, 1, 64);
  if (c.output_dir.empty()) throw ConfigError("output_dir must not be empty");
  check_one_of("progress", c.progress, {"auto", "bar", "lines", "none"});
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  // Pass 1: --help and --config FILE (the file goes under the other flags).
  std::vector<std::pair<std::string, std::string>> flags;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--help" || a == "-h") {
      cl.help = true;
      continue;
    }
    if (a == "--resume") {
      cl.resume = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      throw ConfigError("unexpected argument '" + a + "' (flags start with --; try --help)");
    }
    std::string value;
    const std::size_t eq = a.find('=');
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) throw ConfigError("missing value after " + a);
      value = args[++i];
    }
    if (a == "--config") {
      if (!cl.config_file.empty()) throw ConfigError("--config given twice");
      cl.config_file = value;
    } else {
      flags.emplace_back(a, value);
    }
  }
  if (!cl.config_file.empty()) {
    apply_json(cl.config, read_text_file(cl.config_file), cl.config_file);
  }
  for (const auto& [flag, value] : flags) {
    std::string key = flag.substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    const Setting* st = find_setting(key);
    if (!st) {
      std::string list;
      for (const Setting& s : settings()) list += (list.empty() ? "" : ", ") + flag_of(s.key);
      throw ConfigError("unknown flag '" + flag + "'; the flags are: --config, --resume, --help, " +
                        list);
    }
    set_from_text(cl.config, *st, value);
  }
  validate(cl.config);
  return cl;
}

std::string to_json(const DuplicationConfig& c) {
  json j = json::object();
  for (const Setting& st : settings()) {
    std::visit([&](auto m) { j[st.key] = c.*m; }, st.member);
  }
  return j.dump(2);
}

std::string usage() {
  std::ostringstream os;
  os << "reformer_duplication: trains a toy Reformer (LSH attention, reversible layers) on the\n"
        "duplication task \"0 w 0 w\", then evaluates it with full attention and LSH at several\n"
        "n_hashes (the paper's Table 2 row), samples a completion and plots the curves.\n\n"
        "usage: reformer_duplication [--config FILE] [--resume] [--KEY VALUE | --KEY=VALUE ...]\n\n"
        "  --config FILE   a JSON object of the keys below (flags given too override it)\n"
        "  --resume        continue from the newest checkpoint in output_dir\n"
        "  --help          this text\n\n"
        "keys (JSON) / flags (same name, dashes for underscores), defaults in brackets:\n";
  const DuplicationConfig defaults;
  const json d = json::parse(to_json(defaults));
  for (const Setting& st : settings()) {
    os << "  " << flag_of(st.key) << "  " << st.help << " [" << d[st.key].dump() << "]\n";
  }
  return os.str();
}

}  // namespace minitrax::app
