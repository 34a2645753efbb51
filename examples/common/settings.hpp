// examples/common/settings.hpp: the JSON-config-plus-flags machinery the example
// programs share (the main job's DuplicationConfig, the text trainer's TextConfig).
//
// A program describes its config as a table of settings (key, member pointer, help);
// ConfigTable<C> then gives, for any such struct C:
//   - flags: --n-hashes 4 or --n-hashes=4 (dashes for underscores), --config FILE,
//     --resume, --help, plus any program-specific extra flags;
//   - JSON: apply a config file's keys, write the whole config (config.json);
//   - resume: the saved config.json is the run's truth; flags may change only the keys
//     the program calls resume-safe, and one message lists every other difference.
// Every function throws ConfigError only (never nlohmann's exceptions, never a crash on
// deep or huge input: the fuzzers fuzz_config_json and fuzz_cli check this for the
// main job's config).
//
// A config struct must have `long steps` and `long warmup_steps` (which may be "auto":
// kAutoWarmup, resolved to min(100, steps / 10)) and `std::string output_dir`.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace minitrax::app {

/// A bad config value, flag or file; the message says what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// warmup_steps' "auto": min(100, steps / 10), resolved once steps is known.
inline constexpr long kAutoWarmup = -1;
/// The largest config text (a file or a string given to apply_json), in bytes.
inline constexpr std::size_t kMaxConfigBytes = 1 << 20;
/// The deepest nesting of [ ] and { } a config may have (a config needs 2).
inline constexpr int kMaxConfigDepth = 64;

/// Reads a config file: a regular file (not a directory, FIFO or device: checked before
/// opening and again on the open descriptor, which is opened non-blocking so a FIFO
/// swapped in never blocks), non-empty, at most kMaxConfigBytes. Throws ConfigError
/// naming the file.
std::string read_config_file(const std::string& path);

// ---- the non-template pieces (settings.cpp) ----
namespace settings {

using json = nlohmann::json;

/// `text` whole if short, else its first 60 bytes (not cutting a UTF-8 character) and
/// its size: a huge value never fills a message.
std::string shorten(const std::string& text);
/// The shortest text that reads back as the same double (1e-09, 0.002, 2.5).
std::string number_text(double x);
/// A JSON value as shown in messages (shortened).
std::string shown_json(const json& j);
/// "--n-hashes" for "n_hashes".
std::string flag_of(const std::string& key);
/// A value as a flag would take it: 0.002, true, lsh,self, 1,2,4,8, runs/duplication.
std::string flag_text(const json& j);

long parse_long(const std::string& what, const std::string& v);
double parse_double(const std::string& what, const std::string& v);
bool parse_bool(const std::string& what, const std::string& v);
/// A list flag's items: "4", "1,2,4", "[1, 2, 4]", "lsh,self", "[\"lsh\", \"self\"]".
std::vector<std::string> split_list(const std::string& what, const std::string& v);
/// warmup_steps as a flag: "auto" or a count >= 0.
long parse_warmup(const std::string& what, const std::string& v);

long json_long(const std::string& what, const json& j);
double json_double(const std::string& what, const json& j);
bool json_bool(const std::string& what, const json& j);
std::string json_string(const std::string& what, const json& j);
std::vector<std::string> json_strings(const std::string& what, const json& j);
std::vector<long> json_longs(const std::string& what, const json& j);
/// warmup_steps in JSON: "auto" or an integer >= 0.
long json_warmup(const std::string& what, const json& j);

/// Parses a config text: size limit, nesting limit, valid JSON, an object.
json parse_object(const std::string& json_text, const std::string& source);

/// ConfigError "<key> must be in [lo, hi], got v" unless lo <= v <= hi.
void check_range(const char* key, long v, long lo, long hi);
/// ConfigError listing the allowed values unless v is one of them.
void check_one_of(const char* key, const std::string& v, std::initializer_list<const char*> ok);
/// The same for a list of allowed names.
void check_one_of(const char* key, const std::string& v, const std::vector<const char*>& ok);
/// ConfigError unless x is in [lo, hi) (or [lo, hi] with closed_hi).
void check_real(const char* key, double x, double lo, double hi, bool open_lo, bool closed_hi);
/// output_dir: not empty, UTF-8 (config.json stores it).
void check_output_dir(const std::string& dir);

}  // namespace settings

/// One setting of a config struct C: its key, where it lives in C, a one-line help.
template <typename C>
struct Setting {
  using Member = std::variant<long C::*, double C::*, bool C::*, std::string C::*,
                              std::vector<std::string> C::*, std::vector<long> C::*>;
  const char* key;
  Member member;
  const char* help;
};

/// What a command line asked for.
template <typename C>
struct CommandLineOf {
  /// Defaults < --config FILE < flags. Without --resume: validated, warmup_steps
  /// resolved. With --resume: each value is well-formed (type, syntax) but the whole
  /// is not validated yet (the saved config fills in what was not given): call
  /// resolve_resume or resolve_new_run. With --help: the defaults, nothing checked.
  C config;
  bool resume = false;      ///< --resume: continue from the newest checkpoint in output_dir
  bool help = false;        ///< --help (or -h) anywhere: print usage(), nothing else parsed
  std::string config_file;  ///< --config FILE (already applied)
  /// The keys set by --config FILE or by a flag (JSON names, e.g. "n_hashes").
  std::set<std::string> given_keys;
  /// The program's extra flags (ConfigTable::extra_flags), as given: --prompt X gives
  /// ("prompt", "X"); a flag taking no value gives ("name", "").
  std::vector<std::pair<std::string, std::string>> extra;
};

/// warmup_steps as a number: kAutoWarmup becomes min(100, steps / 10).
template <typename C>
long effective_warmup_steps(const C& c) {
  if (c.warmup_steps != kAutoWarmup) return c.warmup_steps;
  return std::min<long>(100, std::max<long>(c.steps, 0) / 10);
}

/// The settings table of a config struct C and everything built on it.
template <typename C>
struct ConfigTable {
  /// The settings, in the order usage() and config.json list them.
  std::vector<Setting<C>> table;
  /// Checks ranges and cross-setting rules (ConfigError).
  std::function<void(const C&)> validate;
  /// Keys a resumed run may change (their values do not change the training).
  std::function<bool(const std::string& key, const C& saved)> resume_safe;
  /// Why a key that is not resume-safe cannot change, for the message.
  std::function<std::string(const std::string& key, const C& saved)> why_fixed;
  /// The defaults of the code that wrote the runs saved so far (a saved config.json
  /// lacking a key takes the value that code used).
  std::function<C()> saved_run_defaults = [] { return C{}; };
  /// Extra flags of the program (without "--"): name -> whether it takes a value.
  std::vector<std::pair<std::string, bool>> extra_flags;

  const Setting<C>* find(const std::string& key) const {
    for (const Setting<C>& st : table) {
      if (key == st.key) return &st;
    }
    return nullptr;
  }

  std::string all_keys() const {
    std::string s;
    for (const Setting<C>& st : table) s += (s.empty() ? "" : ", ") + std::string(st.key);
    return s;
  }

  void set_from_text(C& c, const Setting<C>& st, const std::string& v) const {
    using namespace settings;
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

  void set_from_json(C& c, const Setting<C>& st, const settings::json& j,
                     const std::string& source) const {
    using namespace settings;
    const std::string what = source + ": \"" + st.key + "\"";
    if (std::string(st.key) == "warmup_steps") {
      c.warmup_steps = json_warmup(what, j);
      return;
    }
    std::visit(
        [&](auto m) {
          using T = std::remove_reference_t<decltype(c.*m)>;
          if constexpr (std::is_same_v<T, long>) {
            c.*m = json_long(what, j);
          } else if constexpr (std::is_same_v<T, double>) {
            c.*m = json_double(what, j);
          } else if constexpr (std::is_same_v<T, bool>) {
            c.*m = json_bool(what, j);
          } else if constexpr (std::is_same_v<T, std::string>) {
            c.*m = json_string(what, j);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            c.*m = json_strings(what, j);
          } else {
            c.*m = json_longs(what, j);
          }
        },
        st.member);
  }

  settings::json member_json(const C& c, const Setting<C>& st) const {
    if (std::string(st.key) == "warmup_steps") return effective_warmup_steps(c);
    return std::visit([&](auto m) { return settings::json(c.*m); }, st.member);
  }

  settings::json config_json(const C& c) const {
    settings::json j = settings::json::object();
    for (const Setting<C>& st : table) j[st.key] = member_json(c, st);
    return j;
  }

  /// The config as a JSON object (what --config accepts), pretty-printed; every key,
  /// with warmup_steps as a number.
  std::string to_json(const C& c) const { return config_json(c).dump(2); }

  /// Applies a JSON object's keys on top of `config` and returns the keys it set;
  /// ConfigError leaves `config` unchanged.
  std::vector<std::string> apply_json_keys(C& config, const std::string& json_text,
                                           const std::string& source) const {
    const settings::json j = settings::parse_object(json_text, source);
    C c = config;
    std::vector<std::string> keys;
    for (const auto& [key, value] : j.items()) {
      const Setting<C>* st = find(key);
      if (!st) {
        throw ConfigError(source + ": unknown key \"" + settings::shorten(key) +
                          "\"; the keys are: " + all_keys());
      }
      set_from_json(c, *st, value, source);
      keys.push_back(key);
    }
    config = c;
    return keys;
  }

  /// Parses argv without the program name; --help or -h anywhere wins.
  CommandLineOf<C> parse_command_line(const std::vector<std::string>& args) const {
    using settings::shorten;
    CommandLineOf<C> cl;
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
      const std::size_t eq = a.find('=');
      const std::string name = a.substr(2, eq == std::string::npos ? eq : eq - 2);
      const bool* extra_takes_value = nullptr;
      for (const auto& [flag, takes_value] : extra_flags) {
        if (flag == name) extra_takes_value = &takes_value;
      }
      if (extra_takes_value && !*extra_takes_value) {
        if (eq != std::string::npos) {
          throw ConfigError("--" + name + " takes no value, got '" + shorten(a) + "'");
        }
        cl.extra.emplace_back(name, "");
        continue;
      }
      std::string value;
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
      } else {
        if (i + 1 >= args.size()) throw ConfigError("missing value after " + shorten(a));
        value = args[++i];
      }
      if (extra_takes_value) {
        cl.extra.emplace_back(name, value);
        continue;
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
      if (!find(key)) {
        std::string list;
        for (const Setting<C>& s : table) {
          list += (list.empty() ? "" : ", ") + settings::flag_of(s.key);
        }
        std::string extras;
        for (const auto& [flag, takes_value] : extra_flags) extras += "--" + flag + ", ";
        throw ConfigError("unknown flag '" + shorten(a) + "'; the flags are: --config, --resume, " +
                          extras + "--help, " + list);
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
      set_from_text(cl.config, *find(key), value);
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

  /// The settings of the run saved at `saved_path` (its config.json text `saved_json`)
  /// continued with the command line `cl` (resume = true): keys given with the saved
  /// value are fine; differing resume-safe keys are applied; every other difference is
  /// collected into ONE ConfigError (key, saved value, given value, why, how to go on).
  /// output_dir is always cl's (a moved folder keeps working). Validated; warmup_steps
  /// a number.
  C resolve_resume(const std::string& saved_json, const std::string& saved_path,
                   const CommandLineOf<C>& cl) const {
    using settings::shorten;
    using settings::shown_json;
    const std::string source = "saved config '" + shorten(saved_path) + "'";
    C saved = saved_run_defaults();
    (void)apply_json_keys(saved, saved_json, source);
    try {
      validate(saved);
    } catch (const ConfigError& e) {
      throw ConfigError(source + ": " + e.what());
    }
    saved.warmup_steps = effective_warmup_steps(saved);

    // What the command line says, with "auto" resolved for the steps the run will have.
    C given = cl.config;
    if (given.warmup_steps == kAutoWarmup) {
      C auto_for;  // warmup_steps auto, for the steps the run will have
      auto_for.warmup_steps = kAutoWarmup;
      auto_for.steps = cl.given_keys.count("steps") ? given.steps : saved.steps;
      given.warmup_steps = effective_warmup_steps(auto_for);
    }
    const settings::json saved_j = config_json(saved);
    const settings::json given_j = config_json(given);

    C out = saved;
    std::string refused;
    for (const Setting<C>& st : table) {
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

  /// cl.config validated and with warmup_steps resolved (--resume in a folder that has
  /// no saved config: a new run).
  C resolve_new_run(const CommandLineOf<C>& cl) const {
    C c = cl.config;
    validate(c);
    c.warmup_steps = effective_warmup_steps(c);
    return c;
  }

  /// Copies the settings named in `keys` from `from` into `to`.
  void copy_keys(C& to, const C& from, const std::set<std::string>& keys) const {
    for (const Setting<C>& st : table) {
      if (keys.count(st.key)) std::visit([&](auto m) { to.*m = from.*m; }, st.member);
    }
  }

  /// The list of keys for --help: "  --key  help (default value)" lines.
  std::string keys_usage() const {
    std::ostringstream os;
    const C defaults;
    for (const Setting<C>& st : table) {
      const std::string shown = std::string(st.key) == "warmup_steps"
                                    ? "auto"
                                    : settings::flag_text(member_json(defaults, st));
      os << "  " << settings::flag_of(st.key) << "  " << st.help << " (default " << shown << ")\n";
    }
    return os.str();
  }
};

}  // namespace minitrax::app
