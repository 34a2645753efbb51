// examples/duplication/config.cpp: settings table, JSON and flag parsing, validation,
// reading a config file safely, and the settings of a resumed run.
#include "duplication/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
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
      {"ff_activation", &C::ff_activation,
       "feed-forward non-linearity: relu, gelu, fast_gelu, sigmoid or tanh"},
      {"n_layers", &C::n_layers, "decoder blocks, 1..64 (a multiple of the attention pattern)"},
      {"n_heads", &C::n_heads, "attention heads, 1..64"},
      {"d_attention_key", &C::d_attention_key, "per-head query/key width, 1..1024"},
      {"d_attention_value", &C::d_attention_value, "per-head value width, 1..1024"},
      {"dropout", &C::dropout, "dropout rate, 0 <= x < 1"},
      {"attention", &C::attention, "attention per layer, cycled: a list of lsh / self"},
      {"n_hashes", &C::n_hashes, "LSH hash rounds in training, 1..64"},
      {"n_buckets", &C::n_buckets, "LSH buckets per round, even, 2..65536"},
      {"chunk_len", &C::chunk_len, "LSH chunk length, 1..length, dividing length"},
      {"n_chunks_before", &C::n_chunks_before, "LSH chunks attended before each chunk, 0..8"},
      {"ff_chunk_size", &C::ff_chunk_size, "feed-forward chunk (positions), 0 = none, 0..length"},
      {"reversible", &C::reversible, "reversible backward pass (true) or plain backprop (false)"},
      {"batch", &C::batch, "training batch size, 1..4096"},
      {"steps", &C::steps, "training steps, 1..10000000"},
      {"lr", &C::lr, "peak learning rate, 0 < x <= 1"},
      {"warmup_steps", &C::warmup_steps,
       "linear warm-up steps, 0..steps, or auto = min(100, steps/10)"},
      {"schedule", &C::schedule, "learning-rate schedule: cosine, rsqrt or constant"},
      {"seed", &C::seed, "random seed, 0..2147483647"},
      {"eval_every", &C::eval_every, "steps between evaluations, 0 = only at the end"},
      {"eval_batches", &C::eval_batches, "held-out batches per evaluation, 1..1000"},
      {"eval_batch", &C::eval_batch, "held-out batch size, 1..4096"},
      {"checkpoint_every", &C::checkpoint_every, "steps between checkpoints, 0 = only at the end"},
      {"eval_n_hashes", &C::eval_n_hashes, "n_hashes values of the final LSH evaluation, 1..64"},
      {"output_dir", &C::output_dir, "folder for checkpoints, metrics.jsonl and the plot"},
      {"progress", &C::progress, "progress display: auto, bar, lines or none"},
  };
  return table;
}

const char* const kActivations[] = {"relu", "gelu", "fast_gelu", "sigmoid", "tanh"};

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

// ---- values in messages ----

constexpr std::size_t kShownBytes = 60;

// `text` whole if short, else its first 60 bytes (not cutting a UTF-8 character) and
// its size: a huge value never fills the message.
std::string shorten(const std::string& text) {
  if (text.size() <= kShownBytes) return text;
  std::size_t n = kShownBytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n) + "... (" + std::to_string(text.size()) + " bytes)";
}

// The shortest text that reads back as the same double (1e-09, 0.002, 2.5).
std::string number_text(double x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string shown_json(const json& j) {
  return shorten(j.dump());
}

// ---- text values (flags) ----

long parse_long(const std::string& what, const std::string& v) {
  long x = 0;
  const char* first = v.data();
  const char* last = v.data() + v.size();
  if (v.size() > 1 && v[0] == '+' && v[1] != '-') ++first;  // "+5", as strtol took it
  const auto r = std::from_chars(first, last, x);
  if (v.empty() || r.ec != std::errc() || r.ptr != last) {
    throw ConfigError(what + " must be an integer, got '" + shorten(v) + "'");
  }
  return x;
}

double parse_double(const std::string& what, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x)) {
    throw ConfigError(what + " must be a finite number, got '" + shorten(v) + "'");
  }
  return x;
}

bool parse_bool(const std::string& what, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw ConfigError(what + " must be true or false, got '" + shorten(v) + "'");
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\n\r");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\n\r") - first + 1);
}

// A list flag's items: "4", "1,2,4", "[1, 2, 4]", "lsh,self", "[\"lsh\", \"self\"]".
// Inside brackets, items are trimmed and one pair of double quotes is dropped.
std::vector<std::string> split_list(const std::string& what, const std::string& v) {
  std::string body = v;
  bool bracketed = false;
  const std::string t = trim(v);
  if (!t.empty() && t.front() == '[') {
    if (t.size() < 2 || t.back() != ']') {
      throw ConfigError(what + ": a list that starts with '[' must end with ']', got '" +
                        shorten(v) + "'");
    }
    bracketed = true;
    body = t.substr(1, t.size() - 2);
    if (trim(body).empty()) return {};
  }
  std::vector<std::string> out;
  std::size_t start = 0;
  if (body.empty()) return out;
  for (;;) {
    const std::size_t comma = body.find(',', start);
    std::string item = body.substr(start, comma == std::string::npos ? comma : comma - start);
    if (bracketed) {
      item = trim(item);
      if (item.size() >= 2 && item.front() == '"' && item.back() == '"') {
        item = item.substr(1, item.size() - 2);
      }
    }
    out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// warmup_steps: "auto" or a count >= 0 (validate checks the upper bound).
long parse_warmup(const std::string& what, const std::string& v) {
  if (v == "auto") return kAutoWarmup;
  const long x = parse_long(what, v);
  if (x < 0) throw ConfigError(what + " must be auto or in [0, steps], got " + std::to_string(x));
  return x;
}

void set_from_text(DuplicationConfig& c, const Setting& st, const std::string& v) {
  const std::string what = flag_of(st.key);
  if (std::string(st.key) == "warmup_steps") {
    c.warmup_steps = parse_warmup(what, v);
    return;
  }
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
          c.*m = split_list(what, v);
        } else {
          std::vector<long> xs;
          for (const std::string& s : split_list(what, v)) {
            xs.push_back(parse_long(what + " item", s));
          }
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
      throw ConfigError(what + " is too large, got " + shown_json(j));
    }
    return j.get<long>();
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 1e15) return static_cast<long>(d);
    throw ConfigError(what + " must be an integer, got " + shown_json(j));
  }
  throw ConfigError(what + " must be an integer, got " + type_name(j) + " " + shown_json(j));
}

void set_from_json(DuplicationConfig& c, const Setting& st, const json& j,
                   const std::string& source) {
  const std::string what = source + ": \"" + st.key + "\"";
  if (std::string(st.key) == "warmup_steps") {
    if (j.is_string()) {
      if (j.get<std::string>() != "auto") {
        throw ConfigError(what + " must be \"auto\" or an integer, got " + shown_json(j));
      }
      c.warmup_steps = kAutoWarmup;
      return;
    }
    const long x = json_long(what, j);
    if (x < 0) {
      throw ConfigError(what + " must be \"auto\" or in [0, steps], got " + std::to_string(x));
    }
    c.warmup_steps = x;
    return;
  }
  std::visit(
      [&](auto m) {
        using T = std::remove_reference_t<decltype(c.*m)>;
        if constexpr (std::is_same_v<T, long>) {
          c.*m = json_long(what, j);
        } else if constexpr (std::is_same_v<T, double>) {
          if (!j.is_number()) {
            throw ConfigError(what + " must be a number, got " + type_name(j) + " " +
                              shown_json(j));
          }
          c.*m = j.get<double>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!j.is_boolean()) {
            throw ConfigError(what + " must be true or false, got " + shown_json(j));
          }
          c.*m = j.get<bool>();
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!j.is_string()) {
            throw ConfigError(what + " must be a string, got " + type_name(j) + " " +
                              shown_json(j));
          }
          c.*m = j.get<std::string>();
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::vector<std::string> xs;
          if (j.is_string()) {
            xs.push_back(j.get<std::string>());
          } else if (j.is_array()) {
            for (const json& e : j) {
              if (!e.is_string()) {
                throw ConfigError(what + " must list strings, got " + shown_json(e));
              }
              xs.push_back(e.get<std::string>());
            }
          } else {
            throw ConfigError(what + " must be a list of strings, got " + shown_json(j));
          }
          c.*m = xs;
        } else {
          std::vector<long> xs;
          if (j.is_number()) {
            xs.push_back(json_long(what, j));  // 4 is the list [4], as for flags
          } else if (j.is_array()) {
            for (const json& e : j) xs.push_back(json_long(what + " item", e));
          } else {
            throw ConfigError(what + " must be a list of integers, got " + shown_json(j));
          }
          c.*m = xs;
        }
      },
      st.member);
}

json member_json(const DuplicationConfig& c, const Setting& st) {
  if (std::string(st.key) == "warmup_steps") return effective_warmup_steps(c);
  return std::visit([&](auto m) { return json(c.*m); }, st.member);
}

json config_json(const DuplicationConfig& c) {
  json j = json::object();
  for (const Setting& st : settings()) j[st.key] = member_json(c, st);
  return j;
}

// A value as a flag would take it: 0.002, true, lsh,self, 1,2,4,8, runs/duplication.
std::string flag_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) return number_text(j.get<double>());
  if (j.is_array()) {
    std::string s;
    for (const json& e : j) s += (s.empty() ? "" : ",") + flag_text(e);
    return s;
  }
  return j.dump();
}

// ---- checks ----

void check_range(const char* key, long v, long lo, long hi) {
  if (v < lo || v > hi) {
    throw ConfigError(std::string(key) + " must be in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "], got " + std::to_string(v));
  }
}

template <typename List>
void check_one_of(const char* key, const std::string& v, const List& ok) {
  std::string list;
  for (const char* o : ok) {
    if (v == o) return;
    list += (list.empty() ? "\"" : ", \"") + std::string(o) + "\"";
  }
  throw ConfigError(std::string(key) + " must be one of " + list + ", got \"" + shorten(v) + "\"");
}

void check_one_of(const char* key, const std::string& v, std::initializer_list<const char*> ok) {
  check_one_of<std::initializer_list<const char*>>(key, v, ok);
}

// The offset of the first byte that is not part of valid UTF-8, or npos.
std::size_t bad_utf8_at(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    unsigned long cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return i;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return i;
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    const unsigned long min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n + 1;
  }
  return std::string::npos;
}

// Refuses text nested deeper than kMaxConfigDepth, before any parser sees it (a deep
// value would overflow the stack when printed or copied). Counts [ and { outside
// strings; a malformed text is left to the parser.
void check_nesting(const std::string& text, const std::string& source) {
  int depth = 0;
  bool in_string = false;
  long line = 1, column = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    ++column;
    if (ch == '\n') {
      ++line;
      column = 0;
    }
    if (in_string) {
      if (ch == '\\') {
        ++i;  // the escaped character, which cannot end the string
        ++column;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxConfigDepth) {
        throw ConfigError(source + ": nested deeper than " + std::to_string(kMaxConfigDepth) +
                          " levels of [ ] and { } (line " + std::to_string(line) + ", column " +
                          std::to_string(column) +
                          "); a config is one object of numbers, strings and lists");
      }
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
}

std::string size_limit_text() {
  return std::to_string(kMaxConfigBytes) + "-byte (1 MiB) limit";
}

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void not_regular(const std::string& path, mode_t mode) {
  throw ConfigError("config file '" + shorten(path) + "' is not a regular file: it is " +
                    file_kind(mode));
}

// Closes a descriptor on every path out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The keys `text` sets (apply_json's work, returning them).
std::vector<std::string> apply_json_keys(DuplicationConfig& config, const std::string& json_text,
                                         const std::string& source) {
  if (json_text.size() > kMaxConfigBytes) {
    throw ConfigError(source + ": " + std::to_string(json_text.size()) +
                      " bytes of JSON, over the " + size_limit_text());
  }
  check_nesting(json_text, source);
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
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) {
    const Setting* st = find_setting(key);
    if (!st) {
      throw ConfigError(source + ": unknown key \"" + shorten(key) +
                        "\"; the keys are: " + all_keys());
    }
    set_from_json(c, *st, value, source);
    keys.push_back(key);
  }
  config = c;
  return keys;
}

// The defaults of the code that wrote the runs saved so far: a saved config.json lacking
// a key takes the value that code used.
DuplicationConfig saved_run_defaults() {
  DuplicationConfig c;
  c.ff_activation = "relu";  // before ff_activation existed, the model used relu
  c.warmup_steps = 100;      // before "auto", the default was 100
  return c;
}

// Why a key that is not resume-safe cannot change (for resolve_resume's message).
std::string why_fixed(const std::string& key, const DuplicationConfig& saved) {
  if (key == "length" || key == "vocab") return "defines the task and the model";
  if (key == "batch" || key == "lr" || key == "warmup_steps" || key == "schedule" ||
      key == "seed") {
    return "defines the training";
  }
  if (key == "steps") {
    return "with schedule \"" + saved.schedule +
           "\" the learning rate of each step depends on steps";
  }
  if (key == "eval_batch" || key == "eval_batches") {
    return "the evaluations already in metrics.jsonl used the saved value";
  }
  return "defines the model";
}

}  // namespace

std::string read_config_file(const std::string& path) {
  if (path.empty()) throw ConfigError("--config needs a file name, got an empty one");
  const std::string shown = "config file '" + shorten(path) + "'";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ConfigError("cannot open " + shown + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  // O_NONBLOCK: if a FIFO took the file's place since stat, open returns at once.
  Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (f.fd < 0) throw ConfigError("cannot open " + shown + ": " + std::strerror(errno));
  if (::fstat(f.fd, &st) != 0) {
    throw ConfigError("cannot read " + shown + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) not_regular(path, st.st_mode);
  if (static_cast<unsigned long long>(st.st_size) > kMaxConfigBytes) {
    throw ConfigError(shown + " is " + std::to_string(st.st_size) + " bytes, over the " +
                      size_limit_text());
  }
  // Read to the end, but never past the limit: files under /proc say they are empty.
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(f.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw ConfigError("cannot read " + shown + ": " + std::strerror(errno));
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      throw ConfigError(shown + " holds more than " + std::to_string(kMaxConfigBytes) +
                        " bytes, over the " + size_limit_text());
    }
  }
  if (text.empty()) {
    throw ConfigError(shown + " is empty; a config is a JSON object such as {\"steps\": 100}");
  }
  return text;
}

void apply_json(DuplicationConfig& config, const std::string& json_text,
                const std::string& source) {
  (void)apply_json_keys(config, json_text, source);
}

long effective_warmup_steps(const DuplicationConfig& c) {
  if (c.warmup_steps != kAutoWarmup) return c.warmup_steps;
  return std::min<long>(100, std::max<long>(c.steps, 0) / 10);
}

void validate(const DuplicationConfig& c) {
  check_range("length", c.length, 4, 65536);
  if (c.length % 2 != 0) {
    throw ConfigError("length must be even (\"0 w 0 w\"), got " + std::to_string(c.length));
  }
  check_range("vocab", c.vocab, 3, 65536);
  check_range("d_model", c.d_model, 1, 4096);
  check_range("d_ff", c.d_ff, 1, 16384);
  check_one_of("ff_activation", c.ff_activation, kActivations);
  check_range("n_layers", c.n_layers, 1, 64);
  check_range("n_heads", c.n_heads, 1, 64);
  check_range("d_attention_key", c.d_attention_key, 1, 1024);
  check_range("d_attention_value", c.d_attention_value, 1, 1024);
  if (!(c.dropout >= 0 && c.dropout < 1)) {
    throw ConfigError("dropout must be in [0, 1), got " + number_text(c.dropout));
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
  if (!(c.lr > 0 && c.lr <= 1)) throw ConfigError("lr must be in (0, 1], got " + number_text(c.lr));
  if (c.warmup_steps != kAutoWarmup && (c.warmup_steps < 0 || c.warmup_steps > c.steps)) {
    throw ConfigError("warmup_steps must be in [0, " + std::to_string(c.steps) +
                      "] (at most steps) or auto, got " + std::to_string(c.warmup_steps));
  }
  check_one_of("schedule", c.schedule, {"cosine", "rsqrt", "constant"});
  check_range("seed", c.seed, 0, 2147483647);
  check_range("eval_every", c.eval_every, 0, 10000000);
  check_range("eval_batches", c.eval_batches, 1, 1000);
  check_range("eval_batch", c.eval_batch, 1, 4096);
  check_range("checkpoint_every", c.checkpoint_every, 0, 10000000);
  if (c.eval_n_hashes.empty()) throw ConfigError("eval_n_hashes must list at least one value");
  for (long h : c.eval_n_hashes) check_range("eval_n_hashes item", h, 1, 64);
  if (c.output_dir.empty()) throw ConfigError("output_dir must not be empty");
  if (const std::size_t at = bad_utf8_at(c.output_dir); at != std::string::npos) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(c.output_dir[at]));
    throw ConfigError("output_dir must be UTF-8 text (config.json stores it), byte " +
                      std::to_string(at) + " is " + byte);
  }
  check_one_of("progress", c.progress, {"auto", "bar", "lines", "none"});
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  // --help anywhere wins, even after a bad flag or before a bad value.
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h" || a.rfind("--help=", 0) == 0) {
      cl.help = true;
      return cl;
    }
  }
  // Pass 1: split flags and values; --config FILE goes under the other flags.
  std::vector<std::pair<std::string, std::string>> flags;
  bool has_config = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--resume") {
      cl.resume = true;
      continue;
    }
    if (a.rfind("--resume=", 0) == 0) {
      throw ConfigError("--resume takes no value, got '" + shorten(a) +
                        "' (write --resume alone to continue the run in output_dir)");
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      throw ConfigError("unexpected argument '" + shorten(a) +
                        "' (flags start with --; try --help)");
    }
    std::string value;
    const std::size_t eq = a.find('=');
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) throw ConfigError("missing value after " + shorten(a));
      value = args[++i];
    }
    if (a == "--config") {
      if (has_config) throw ConfigError("--config given twice");
      if (value.empty()) throw ConfigError("--config needs a file name, got an empty one");
      has_config = true;
      cl.config_file = value;
      continue;
    }
    std::string key = a.substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    if (!find_setting(key)) {
      std::string list;
      for (const Setting& s : settings()) list += (list.empty() ? "" : ", ") + flag_of(s.key);
      throw ConfigError("unknown flag '" + shorten(a) +
                        "'; the flags are: --config, --resume, --help, " + list);
    }
    flags.emplace_back(key, value);
  }
  // Pass 2: the file, then the flags on top.
  if (has_config) {
    for (const std::string& key :
         apply_json_keys(cl.config, read_config_file(cl.config_file), cl.config_file)) {
      cl.given_keys.insert(key);
    }
  }
  for (const auto& [key, value] : flags) {
    set_from_text(cl.config, *find_setting(key), value);
    cl.given_keys.insert(key);
  }
  if (cl.resume) {
    // The saved config fills in the rest (resolve_resume); output_dir locates it.
    if (cl.config.output_dir.empty()) throw ConfigError("output_dir must not be empty");
    return cl;
  }
  validate(cl.config);
  cl.config.warmup_steps = effective_warmup_steps(cl.config);
  return cl;
}

std::string to_json(const DuplicationConfig& c) {
  return config_json(c).dump(2);
}

bool resume_safe(const std::string& key, const DuplicationConfig& saved) {
  if (key == "steps") return saved.schedule != "cosine";
  return key == "eval_every" || key == "checkpoint_every" || key == "eval_n_hashes" ||
         key == "progress" || key == "output_dir";
}

DuplicationConfig resolve_resume(const std::string& saved_json, const std::string& saved_path,
                                 const CommandLine& cl) {
  const std::string source = "saved config '" + shorten(saved_path) + "'";
  DuplicationConfig saved = saved_run_defaults();
  apply_json(saved, saved_json, source);
  try {
    validate(saved);
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
  saved.warmup_steps = effective_warmup_steps(saved);

  // What the command line says, with "auto" resolved for the steps the run will have.
  DuplicationConfig given = cl.config;
  if (given.warmup_steps == kAutoWarmup) {
    DuplicationConfig auto_for;  // warmup_steps auto, for the steps the run will have
    auto_for.steps = cl.given_keys.count("steps") ? given.steps : saved.steps;
    given.warmup_steps = effective_warmup_steps(auto_for);
  }
  const json saved_j = config_json(saved);
  const json given_j = config_json(given);

  DuplicationConfig out = saved;
  std::string refused;
  for (const Setting& st : settings()) {
    const std::string key = st.key;
    if (key == "output_dir" || !cl.given_keys.count(key)) continue;
    if (saved_j[key] == given_j[key]) continue;
    if (resume_safe(key, saved)) {
      std::visit([&](auto m) { out.*m = given.*m; }, st.member);
    } else {
      refused += "\n  " + key + ": saved " + shown_json(saved_j[key]) + ", given " +
                 shown_json(given_j[key]) + " (" + why_fixed(key, saved) + ")";
    }
  }
  if (!refused.empty()) {
    throw ConfigError(
        "--resume: these settings differ from the run saved in '" + shorten(saved_path) +
        "', and a resumed run cannot change them:" + refused +
        "\nto continue the run, drop these settings or give the saved values; to train with "
        "the new ones, start a new run in another folder (--output-dir DIR, without "
        "--resume)");
  }
  out.output_dir = cl.config.output_dir;  // where the run's files are now
  validate(out);
  return out;
}

DuplicationConfig resolve_new_run(const CommandLine& cl) {
  DuplicationConfig c = cl.config;
  validate(c);
  c.warmup_steps = effective_warmup_steps(c);
  return c;
}

std::string usage() {
  std::ostringstream os;
  os << "reformer_duplication: trains a toy Reformer (LSH attention, reversible layers) on the\n"
        "duplication task \"0 w 0 w\", then evaluates it with full attention and LSH at several\n"
        "n_hashes (the paper's Table 2 row), samples a completion and plots the curves.\n\n"
        "usage: reformer_duplication [--config FILE] [--resume] [--KEY VALUE | --KEY=VALUE ...]\n\n"
        "  --config FILE   a JSON object of the keys below (flags given too override it)\n"
        "  --resume        continue the run in output_dir with its saved config.json; only\n"
        "                  eval_every, checkpoint_every, eval_n_hashes, progress, output_dir\n"
        "                  (and steps, unless the schedule is cosine) may differ from it\n"
        "  --help          this text (wherever it stands on the command line)\n\n"
        "keys (JSON) / flags (same name, dashes for underscores), defaults as a flag takes them;\n"
        "a list is written 1,2,4 or [1,2,4] or 4 (one item) in a flag, [1, 2, 4] or\n"
        "[\"lsh\", \"self\"] in JSON:\n";
  const DuplicationConfig defaults;
  for (const Setting& st : settings()) {
    const std::string shown =
        std::string(st.key) == "warmup_steps" ? "auto" : flag_text(member_json(defaults, st));
    os << "  " << flag_of(st.key) << "  " << st.help << " (default " << shown << ")\n";
  }
  return os.str();
}

}  // namespace minitrax::app
