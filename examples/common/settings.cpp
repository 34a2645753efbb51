// examples/common/settings.cpp: the non-template parts of the config machinery
// (settings.hpp): values in messages, flag and JSON values, checks, reading a config
// file safely.
#include "common/settings.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace minitrax::app {

using settings::json;
using settings::shorten;

namespace {

constexpr std::size_t kShownBytes = 60;

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

}  // namespace

namespace settings {

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

std::string flag_of(const std::string& key) {
  std::string f = "--" + key;
  std::replace(f.begin(), f.end(), '_', '-');
  return f;
}

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
  throw ConfigError(what + " must be an integer, got " + std::string(j.type_name()) + " " +
                    shown_json(j));
}

double json_double(const std::string& what, const json& j) {
  if (!j.is_number()) {
    throw ConfigError(what + " must be a number, got " + std::string(j.type_name()) + " " +
                      shown_json(j));
  }
  return j.get<double>();
}

bool json_bool(const std::string& what, const json& j) {
  if (!j.is_boolean()) throw ConfigError(what + " must be true or false, got " + shown_json(j));
  return j.get<bool>();
}

std::string json_string(const std::string& what, const json& j) {
  if (!j.is_string()) {
    throw ConfigError(what + " must be a string, got " + std::string(j.type_name()) + " " +
                      shown_json(j));
  }
  return j.get<std::string>();
}

std::vector<std::string> json_strings(const std::string& what, const json& j) {
  std::vector<std::string> xs;
  if (j.is_string()) {
    xs.push_back(j.get<std::string>());
  } else if (j.is_array()) {
    for (const json& e : j) {
      if (!e.is_string()) throw ConfigError(what + " must list strings, got " + shown_json(e));
      xs.push_back(e.get<std::string>());
    }
  } else {
    throw ConfigError(what + " must be a list of strings, got " + shown_json(j));
  }
  return xs;
}

std::vector<long> json_longs(const std::string& what, const json& j) {
  std::vector<long> xs;
  if (j.is_number()) {
    xs.push_back(json_long(what, j));  // 4 is the list [4], as for flags
  } else if (j.is_array()) {
    for (const json& e : j) xs.push_back(json_long(what + " item", e));
  } else {
    throw ConfigError(what + " must be a list of integers, got " + shown_json(j));
  }
  return xs;
}

long json_warmup(const std::string& what, const json& j) {
  if (j.is_string()) {
    if (j.get<std::string>() != "auto") {
      throw ConfigError(what + " must be \"auto\" or an integer, got " + shown_json(j));
    }
    return kAutoWarmup;
  }
  const long x = json_long(what, j);
  if (x < 0) {
    throw ConfigError(what + " must be \"auto\" or in [0, steps], got " + std::to_string(x));
  }
  return x;
}

json parse_object(const std::string& json_text, const std::string& source) {
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
                      std::string(j.type_name()));
  }
  return j;
}

void check_range(const char* key, long v, long lo, long hi) {
  if (v < lo || v > hi) {
    throw ConfigError(std::string(key) + " must be in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "], got " + std::to_string(v));
  }
}

template <typename List>
void check_one_of_list(const char* key, const std::string& v, const List& ok) {
  std::string list;
  for (const char* o : ok) {
    if (v == o) return;
    list += (list.empty() ? "\"" : ", \"") + std::string(o) + "\"";
  }
  throw ConfigError(std::string(key) + " must be one of " + list + ", got \"" + shorten(v) + "\"");
}

void check_one_of(const char* key, const std::string& v, std::initializer_list<const char*> ok) {
  check_one_of_list(key, v, ok);
}

void check_one_of(const char* key, const std::string& v, const std::vector<const char*>& ok) {
  check_one_of_list(key, v, ok);
}

void check_real(const char* key, double x, double lo, double hi, bool open_lo, bool closed_hi) {
  const bool lo_ok = open_lo ? x > lo : x >= lo;
  const bool hi_ok = closed_hi ? x <= hi : x < hi;
  if (!(lo_ok && hi_ok)) {
    throw ConfigError(std::string(key) + " must be in " + (open_lo ? "(" : "[") + number_text(lo) +
                      ", " + number_text(hi) + (closed_hi ? "]" : ")") + ", got " + number_text(x));
  }
}

void check_output_dir(const std::string& dir) {
  if (dir.empty()) throw ConfigError("output_dir must not be empty");
  if (const std::size_t at = bad_utf8_at(dir); at != std::string::npos) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(dir[at]));
    throw ConfigError("output_dir must be UTF-8 text (config.json stores it), byte " +
                      std::to_string(at) + " is " + byte);
  }
}

}  // namespace settings

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

}  // namespace minitrax::app
