// The tokenizers: bytes, characters and SentencePiece subwords (data/tokenizers.hpp).
#include "data/tokenizers.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <utility>

#include "core/error.hpp"
#include "core/npy.hpp"  // read_file, write_file_atomic

namespace minitrax::data {

using core::FileError;
using core::ValueError;

namespace {

constexpr std::string_view kCharsHint =
    "; a character vocabulary needs UTF-8 text (the byte tokenizer takes any bytes)";
constexpr std::string_view kSentencePieceHint =
    "; SentencePiece needs UTF-8 text (the byte tokenizer takes any bytes)";
constexpr const char* kFileFormat = "minitrax-tokenizer";
constexpr int kFileVersion = 1;
constexpr char32_t kMaxCodePoint = 0x10FFFF;

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", static_cast<unsigned>(b));
  return buf;
}

std::string u_plus(char32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
  return buf;
}

bool is_scalar_value(char32_t c) {
  return c <= kMaxCodePoint && (c < 0xD800 || c > 0xDFFF);
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

[[noreturn]] void utf8_fail(std::string_view what, std::uint64_t offset, const std::string& why,
                            std::string_view hint) {
  throw ValueError(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(offset) + " (" +
                   why + "): the data looks binary, not UTF-8 text" + std::string(hint));
}

/// Decodes `s` strictly, calling emit(code point) for each character. `base` is the offset
/// of s[0] in the whole text (for messages). If `final` is false and `s` ends inside a
/// character that is valid so far, stops before it; returns the number of bytes decoded.
template <class Emit>
std::size_t decode_utf8_into(std::string_view s, std::uint64_t base, bool final,
                             std::string_view what, std::string_view hint, Emit&& emit) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      emit(static_cast<char32_t>(b0));
      ++i;
      continue;
    }
    std::size_t len;
    char32_t c, least;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2, c = b0 & 0x1F, least = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3, c = b0 & 0x0F, least = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4, c = b0 & 0x07, least = 0x10000;
    } else if (b0 <= 0xBF) {
      utf8_fail(what, base + i,
                "byte " + hex_byte(b0) + " continues a character that did not start", hint);
    } else {
      utf8_fail(what, base + i, "byte " + hex_byte(b0) + " cannot start a character", hint);
    }
    for (std::size_t k = 1; k < len; ++k) {
      if (i + k >= n) {
        if (!final) return i;
        utf8_fail(what, base + i,
                  "byte " + hex_byte(b0) + " starts a " + std::to_string(len) +
                      "-byte character but the text ends after " + std::to_string(k) +
                      " of its bytes",
                  hint);
      }
      const auto bk = static_cast<unsigned char>(s[i + k]);
      if ((bk & 0xC0) != 0x80) {
        utf8_fail(what, base + i,
                  "byte " + hex_byte(b0) + " starts a " + std::to_string(len) +
                      "-byte character but byte " + hex_byte(bk) + " at " +
                      std::to_string(base + i + k) + " does not continue it",
                  hint);
      }
      c = (c << 6) | (bk & 0x3F);
    }
    if (c < least) utf8_fail(what, base + i, "an overlong encoding of " + u_plus(c), hint);
    if (c >= 0xD800 && c <= 0xDFFF)
      utf8_fail(what, base + i, u_plus(c) + " is a UTF-16 surrogate, not a character", hint);
    if (c > kMaxCodePoint) utf8_fail(what, base + i, u_plus(c) + " is beyond U+10FFFF", hint);
    emit(c);
    i += len;
  }
  return i;
}

/// The length of the UTF-8 sequence a (valid) lead byte starts.
std::size_t sequence_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/// A text for messages: control characters escaped, the rest as it is.
std::string escaped_text(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto b = static_cast<unsigned char>(ch);
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\r')
      out += "\\r";
    else if (ch == '\t')
      out += "\\t";
    else if (ch == '"' || ch == '\\')
      (out += '\\') += ch;
    else if (b < 0x20 || b == 0x7F)
      out += "\\x" + hex_byte(b).substr(2);
    else
      out += ch;
  }
  return out + "\"";
}

std::string plural(std::size_t n, std::string_view word) {
  return std::to_string(n) + " " + std::string(word) + (n == 1 ? "" : "s");
}

[[noreturn]] void id_out_of_range(std::int32_t id, std::size_t position, std::int32_t vocab,
                                  std::string_view tokenizer) {
  throw ValueError("decode: id " + std::to_string(id) + " at position " + std::to_string(position) +
                   " is outside the vocabulary [0, " + std::to_string(vocab) + ") of the " +
                   std::string(tokenizer));
}

/// Reads a file in chunks, calling f(chunk). FileError `"<path>: cannot ..."` on failure.
template <class F>
void read_in_chunks(const std::string& path, std::size_t chunk_bytes, F&& f) {
  if (chunk_bytes == 0) throw ValueError(path + ": chunk_bytes must be at least 1");
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) throw FileError(path + ": cannot open: " + std::strerror(errno));
  struct Close {
    std::FILE* f;
    ~Close() { std::fclose(f); }
  } close{file};
  std::string buf(chunk_bytes, '\0');
  while (true) {
    const std::size_t got = std::fread(buf.data(), 1, buf.size(), file);
    if (got > 0) f(std::string_view(buf.data(), got));
    if (got < buf.size()) {
      if (std::ferror(file)) throw FileError(path + ": cannot read: " + std::strerror(errno));
      break;
    }
  }
}

nlohmann::ordered_json file_header(std::string_view kind, std::int32_t vocab_size) {
  nlohmann::ordered_json j;
  j["format"] = kFileFormat;
  j["version"] = kFileVersion;
  j["kind"] = kind;
  j["vocab_size"] = vocab_size;
  j["pad_id"] = pad_id;
  j["eos_id"] = eos_id;
  return j;
}

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  core::write_file_atomic(path, j.dump(2, ' ', /*ensure_ascii=*/false) + "\n");
}

[[noreturn]] void bad_file(const std::string& path, const std::string& why) {
  throw FileError(path + ": not a minitrax tokenizer file: " + why);
}

/// Parses and checks the common part of our JSON tokenizer files; returns the JSON.
nlohmann::json parse_tokenizer_file(const std::string& path, std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    bad_file(path, std::string("it is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) bad_file(path, "it is not a JSON object");
  if (!j.contains("format") || j["format"] != kFileFormat)
    bad_file(path, "no \"format\": \"minitrax-tokenizer\" member");
  if (!j.contains("version") || !j["version"].is_number_integer())
    bad_file(path, "no integer \"version\" member");
  if (j["version"] != kFileVersion) {
    throw FileError(path + ": tokenizer file version " + j["version"].dump() +
                    " is not one this minitrax reads (" + std::to_string(kFileVersion) + ")");
  }
  if (!j.contains("kind") || !j["kind"].is_string()) bad_file(path, "no string \"kind\" member");
  if (!j.contains("vocab_size") || !j["vocab_size"].is_number_integer())
    bad_file(path, "no integer \"vocab_size\" member");
  if (!j.contains("pad_id") || j["pad_id"] != pad_id || !j.contains("eos_id") ||
      j["eos_id"] != eos_id) {
    bad_file(path, "\"pad_id\" and \"eos_id\" must be 0 and 1");
  }
  return j;
}

std::int64_t file_vocab_size(const nlohmann::json& j) {
  return j["vocab_size"].get<std::int64_t>();
}

}  // namespace

// ============================================================================
// UTF-8
// ============================================================================

std::vector<char32_t> decode_utf8(std::string_view text, std::string_view what) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  decode_utf8_into(text, 0, true, what, "", [&](char32_t c) { out.push_back(c); });
  return out;
}

std::string repair_utf8(std::string_view text, std::uint64_t* replaced) {
  // The length of the valid character at i, or 0 if the bytes there start none.
  auto valid_at = [&](std::size_t i) -> std::size_t {
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (b0 < 0x80) return 1;
    if (b0 < 0xC2 || b0 > 0xF4) return 0;
    const std::size_t len = sequence_length(b0);
    if (text.size() - i < len) return 0;
    char32_t c = b0 & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) {
      const auto bk = static_cast<unsigned char>(text[i + k]);
      if ((bk & 0xC0) != 0x80) return 0;
      c = (c << 6) | (bk & 0x3F);
    }
    const char32_t least = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    return c >= least && is_scalar_value(c) ? len : 0;
  };
  std::string out;
  out.reserve(text.size());
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = valid_at(i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++n;
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  if (replaced != nullptr) *replaced = n;
  return out;
}

std::string encode_utf8(const std::vector<char32_t>& code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (std::size_t i = 0; i < code_points.size(); ++i) {
    const char32_t c = code_points[i];
    if (!is_scalar_value(c)) {
      throw ValueError("encode_utf8: code point " + std::to_string(i) + " is " + u_plus(c) +
                       ", not a Unicode character (a surrogate or beyond U+10FFFF)");
    }
    append_utf8(out, c);
  }
  return out;
}

std::string describe_char(char32_t c) {
  if (c == '\n') return "'\\n' (U+000A)";
  if (c == '\r') return "'\\r' (U+000D)";
  if (c == '\t') return "'\\t' (U+0009)";
  if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || !is_scalar_value(c)) return "(" + u_plus(c) + ")";
  std::string s = "'";
  append_utf8(s, c);
  return s + "' (" + u_plus(c) + ")";
}

// ============================================================================
// bytes
// ============================================================================

std::vector<std::int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids(text.size());
  for (std::size_t i = 0; i < text.size(); ++i)
    ids[i] = static_cast<unsigned char>(text[i]) + first_byte_id;
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::size_t p = 0; p < ids.size(); ++p) {
    const std::int32_t id = ids[p];
    if (id < 0 || id >= vocab_size()) id_out_of_range(id, p, vocab_size(), "byte tokenizer");
    if (id >= first_byte_id)
      out += static_cast<char>(static_cast<unsigned char>(id - first_byte_id));
  }
  return out;
}

void ByteTokenizer::save(const std::string& path) const {
  write_json(path, file_header(kind(), vocab_size()));
}

// ============================================================================
// characters
// ============================================================================

CharTokenizer::CharTokenizer(std::vector<char32_t> characters, std::string source)
    : chars_(std::move(characters)), source_(std::move(source)), ascii_(128, -1) {
  if (chars_.empty()) {
    throw ValueError("CharTokenizer: no characters (built from " + source_ +
                     "): a vocabulary needs at least one");
  }
  std::sort(chars_.begin(), chars_.end());
  for (std::size_t i = 0; i < chars_.size(); ++i) {
    if (!is_scalar_value(chars_[i])) {
      throw ValueError("CharTokenizer: " + u_plus(chars_[i]) +
                       " is not a Unicode character (a surrogate or beyond U+10FFFF)");
    }
    if (i > 0 && chars_[i] == chars_[i - 1])
      throw ValueError("CharTokenizer: character " + describe_char(chars_[i]) + " is repeated");
    if (chars_[i] < 128) ascii_[chars_[i]] = static_cast<std::int32_t>(i) + 2;
  }
}

CharTokenizer CharTokenizer::build(std::string_view text, std::string source) {
  CharVocabBuilder b(std::move(source));
  b.add(text);
  return b.finish();
}

CharTokenizer CharTokenizer::build_from_file(const std::string& path, std::size_t chunk_bytes) {
  CharVocabBuilder b(path);
  b.add_file(path, chunk_bytes);
  return b.finish();
}

CharTokenizer CharTokenizer::load(const std::string& path) {
  const nlohmann::json j = parse_tokenizer_file(path, core::read_file(path));
  if (j["kind"] != "chars") {
    throw FileError(path + ": holds a " + j["kind"].dump() +
                    " tokenizer, not a character vocabulary (\"chars\")");
  }
  if (!j.contains("characters") || !j["characters"].is_string())
    bad_file(path, "no string \"characters\" member");
  std::vector<char32_t> chars;
  try {
    chars = decode_utf8(j["characters"].get_ref<const std::string&>(), "\"characters\"");
  } catch (const ValueError& e) {
    bad_file(path, e.what());
  }
  const std::string source = j.contains("source") && j["source"].is_string()
                                 ? j["source"].get<std::string>()
                                 : std::string("the training text");
  std::optional<CharTokenizer> t;
  try {
    t.emplace(std::move(chars), source);
  } catch (const ValueError& e) {
    bad_file(path, e.what());
  }
  if (file_vocab_size(j) != t->vocab_size()) {
    bad_file(path, "\"vocab_size\" is " + j["vocab_size"].dump() + " but \"characters\" has " +
                       plural(t->characters().size(), "character") +
                       " (+2 reserved ids = " + std::to_string(t->vocab_size()) + ")");
  }
  return std::move(*t);
}

std::int32_t CharTokenizer::id_of(char32_t c) const {
  if (c < 128) return ascii_[c];
  const auto it = std::lower_bound(chars_.begin(), chars_.end(), c);
  if (it == chars_.end() || *it != c) return -1;
  return static_cast<std::int32_t>(it - chars_.begin()) + 2;
}

std::vector<std::int32_t> CharTokenizer::encode(std::string_view text,
                                                std::string_view what) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size());
  decode_utf8_into(text, 0, true, what, kCharsHint, [&](char32_t c) {
    const std::int32_t id = id_of(c);
    if (id < 0) {
      throw ValueError(std::string(what) + " character " + std::to_string(ids.size()) + " " +
                       describe_char(c) + " is not in the vocabulary of " +
                       plural(chars_.size(), "character") + " built from " + source_);
    }
    ids.push_back(id);
  });
  return ids;
}

std::string CharTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (std::size_t p = 0; p < ids.size(); ++p) {
    const std::int32_t id = ids[p];
    if (id < 0 || id >= vocab_size()) id_out_of_range(id, p, vocab_size(), "character tokenizer");
    if (id >= 2) append_utf8(out, chars_[static_cast<std::size_t>(id - 2)]);
  }
  return out;
}

void CharTokenizer::save(const std::string& path) const {
  nlohmann::ordered_json j = file_header(kind(), vocab_size());
  j["source"] = source_;
  j["characters"] = encode_utf8(chars_);
  write_json(path, j);
}

// -- the incremental builder ----------------------------------------------------------

CharVocabBuilder::CharVocabBuilder(std::string source)
    : source_(std::move(source)), seen_(kMaxCodePoint + 1, false) {}

void CharVocabBuilder::add_piece(std::string_view chunk, std::string_view what,
                                 std::uint64_t& offset, std::string& carry) {
  auto emit = [&](char32_t c) {
    seen_[c] = true;
    ++chars_seen_;
  };
  bytes_seen_ += chunk.size();
  if (!carry.empty()) {  // finish the character the last chunk ended in
    const std::size_t need = sequence_length(static_cast<unsigned char>(carry[0]));
    const std::size_t take = std::min(need - carry.size(), chunk.size());
    carry.append(chunk.substr(0, take));
    chunk.remove_prefix(take);
    if (carry.size() < need) {  // still not whole: check what there is
      decode_utf8_into(carry, offset, false, what, kCharsHint, emit);
      return;
    }
    decode_utf8_into(carry, offset, true, what, kCharsHint, emit);
    offset += carry.size();
    carry.clear();
  }
  const std::size_t used = decode_utf8_into(chunk, offset, false, what, kCharsHint, emit);
  offset += used;
  carry.assign(chunk.substr(used));
}

void CharVocabBuilder::add(std::string_view chunk) {
  add_piece(chunk, source_, add_offset_, carry_);
}

void CharVocabBuilder::add_file(const std::string& path, std::size_t chunk_bytes) {
  std::uint64_t offset = 0;
  std::string carry;
  read_in_chunks(path, chunk_bytes,
                 [&](std::string_view chunk) { add_piece(chunk, path, offset, carry); });
  if (!carry.empty()) decode_utf8_into(carry, offset, true, path, kCharsHint, [](char32_t) {});
}

CharTokenizer CharVocabBuilder::finish() const {
  if (!carry_.empty())
    decode_utf8_into(carry_, add_offset_, true, source_, kCharsHint, [](char32_t) {});
  std::vector<char32_t> chars;
  for (char32_t c = 0; c <= kMaxCodePoint; ++c)
    if (seen_[c]) chars.push_back(c);
  if (chars.empty()) {
    throw ValueError(source_ + ": the text is empty: a character vocabulary needs at least " +
                     "one character");
  }
  return CharTokenizer(std::move(chars), source_);
}

// ============================================================================
// SentencePiece
// ============================================================================

namespace {

namespace spm = sentencepiece;

/// U+2581 (the "▁" SentencePiece writes for a space): in a text it would decode as a space,
/// so encode() spells it with byte pieces instead.
constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";

/// A text to check that a model round-trips: runs of spaces, tabs, CR LF, characters no
/// small model has seen, a combining mark and SentencePiece's own space symbol.
constexpr std::string_view kProbe =
    "  a\t\tb\r\n  \xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80 e\xCC\x81 \xE2\x96\x81x  ";

/// Checks that `b` is a well-formed protobuf message with the members of a SentencePiece
/// ModelProto (pieces = 1, trainer_spec = 2, normalizer_spec = 3), so that a file cut at a
/// member boundary (which protobuf would accept) is refused. Returns what is wrong, or "".
std::string check_model_structure(std::string_view b) {
  std::size_t i = 0;
  auto varint = [&](std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (i >= b.size()) return false;
      const auto byte = static_cast<unsigned char>(b[i++]);
      v |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  };
  bool pieces = false, trainer = false, normalizer = false;
  while (i < b.size()) {
    const std::size_t at = i;
    std::uint64_t key, v;
    if (!varint(key)) return "a field key at byte " + std::to_string(at) + " is cut off";
    const std::uint64_t field = key >> 3, wire = key & 7;
    if (field == 0) return "field number 0 at byte " + std::to_string(at);
    if (wire == 0) {
      if (!varint(v)) return "a number at byte " + std::to_string(at) + " is cut off";
    } else if (wire == 1 || wire == 5) {
      const std::size_t n = wire == 1 ? 8 : 4;
      if (b.size() - i < n) return "a number at byte " + std::to_string(at) + " is cut off";
      i += n;
    } else if (wire == 2) {
      if (!varint(v) || v > b.size() - i) {
        return "field " + std::to_string(field) + " at byte " + std::to_string(at) +
               " runs past the end of the file (" + std::to_string(b.size()) + " bytes)";
      }
      i += static_cast<std::size_t>(v);
    } else {
      return "unexpected wire type " + std::to_string(wire) + " at byte " + std::to_string(at);
    }
    pieces |= field == 1;
    trainer |= field == 2;
    normalizer |= field == 3;
  }
  if (!pieces) return "it has no pieces";
  if (!trainer || !normalizer) return "it ends after its pieces, without its settings";
  return "";
}

/// Lines of a text for SentencePiece's trainer, checked as UTF-8; an error stops the
/// iteration and is thrown by the caller after Train returns.
class LineIterator : public spm::SentenceIterator {
 public:
  LineIterator(std::string source, std::int32_t max_line_bytes)
      : source_(std::move(source)), max_line_bytes_(max_line_bytes) {}
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  spm::util::Status status() const override {
    if (error_.empty()) return {};
    return spm::util::Status(spm::util::StatusCode::kInvalidArgument, error_);
  }
  const std::string& error() const { return error_; }
  std::uint64_t lines() const { return lines_; }
  std::uint64_t usable_lines() const { return usable_; }

 protected:
  /// Puts the next raw line (without '\n') into `line_`; false at the end of the text.
  virtual bool next_raw_line() = 0;
  /// Starts the iteration (subclasses call it once they can read).
  void advance() {
    while (!done_) {
      const std::uint64_t start = offset_;
      if (!next_raw_line()) {
        done_ = true;
        return;
      }
      offset_ += line_.size() + 1;
      try {
        decode_utf8_into(line_, start, true, source_, kSentencePieceHint, [](char32_t) {});
      } catch (const ValueError& e) {
        error_ = e.what();
        done_ = true;
        return;
      }
      if (line_.empty()) continue;
      ++lines_;
      if (line_.size() <= static_cast<std::size_t>(max_line_bytes_)) ++usable_;
      return;
    }
  }
  std::string source_, line_, error_;

 private:
  std::int32_t max_line_bytes_;
  bool done_ = false;
  std::uint64_t offset_ = 0, lines_ = 0, usable_ = 0;
};

class TextLines final : public LineIterator {
 public:
  TextLines(std::string_view text, std::string source, std::int32_t max_line_bytes)
      : LineIterator(std::move(source), max_line_bytes), text_(text) {
    advance();
  }

 private:
  bool next_raw_line() override {
    if (pos_ > text_.size() || (pos_ == text_.size() && pos_ > 0 && text_.back() == '\n') ||
        text_.empty()) {
      return false;
    }
    const std::size_t end = std::min(text_.find('\n', pos_), text_.size());
    line_.assign(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  std::string_view text_;
  std::size_t pos_ = 0;
};

class FileLines final : public LineIterator {
 public:
  FileLines(const std::string& path, std::int32_t max_line_bytes)
      : LineIterator(path, max_line_bytes), buf_(std::size_t{1} << 20, '\0') {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) throw FileError(path + ": cannot open: " + std::strerror(errno));
    advance();
  }
  ~FileLines() override { std::fclose(file_); }
  FileLines(const FileLines&) = delete;
  FileLines& operator=(const FileLines&) = delete;
  const std::string& read_error() const { return read_error_; }

 private:
  bool next_raw_line() override {
    line_.clear();
    while (true) {
      const std::size_t nl = std::string_view(buf_).substr(begin_, end_ - begin_).find('\n');
      if (nl != std::string_view::npos) {
        line_.append(buf_, begin_, nl);
        begin_ += nl + 1;
        return true;
      }
      line_.append(buf_, begin_, end_ - begin_);
      begin_ = end_ = 0;
      if (eof_) return !line_.empty();
      end_ = std::fread(buf_.data(), 1, buf_.size(), file_);
      if (end_ < buf_.size()) {
        eof_ = true;
        if (std::ferror(file_)) {
          read_error_ = source_ + ": cannot read: " + std::strerror(errno);
          error_ = read_error_;
          return false;
        }
      }
    }
  }
  std::FILE* file_ = nullptr;
  std::string buf_;
  std::size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  std::string read_error_;
};

void check_options(const SentencePieceOptions& o) {
  auto bad = [](const std::string& why) { throw ValueError("SentencePieceOptions: " + why); };
  if (o.vocab_size < 260) {
    bad("vocab_size " + std::to_string(o.vocab_size) +
        " is too small: padding, EOS, the unknown piece and the 256 byte pieces take 259 ids, "
        "so it must be at least 260");
  }
  if (o.model_type != "unigram" && o.model_type != "bpe")
    bad("model_type " + escaped_text(o.model_type) + ": expected \"unigram\" or \"bpe\"");
  if (!(o.character_coverage > 0 && o.character_coverage <= 1))
    bad("character_coverage " + std::to_string(o.character_coverage) + ": expected (0, 1]");
  if (o.max_lines < 0) bad("max_lines " + std::to_string(o.max_lines) + ": expected >= 0");
  if (o.max_line_bytes < 1)
    bad("max_line_bytes " + std::to_string(o.max_line_bytes) + ": expected >= 1");
  if (o.num_threads < 1) bad("num_threads " + std::to_string(o.num_threads) + ": expected >= 1");
  if (o.seed == 0xFFFFFFFFu) bad("seed 4294967295 is reserved by SentencePiece");
}

std::unordered_map<std::string, std::string> trainer_args(const SentencePieceOptions& o) {
  char coverage[32];
  std::snprintf(coverage, sizeof coverage, "%.17g", o.character_coverage);
  return {
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      {"character_coverage", coverage},
      {"input_sentence_size", std::to_string(o.max_lines)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(o.max_line_bytes)},
      {"num_threads", std::to_string(o.num_threads)},
      {"hard_vocab_limit", o.exact_vocab_size ? "true" : "false"},
      // The text as it is: no Unicode normalization, no space added in front, runs of
      // spaces kept; characters without a piece of their own are spelled in bytes.
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"byte_fallback", "true"},
      {"pad_id", std::to_string(pad_id)},
      {"eos_id", std::to_string(eos_id)},
      {"unk_id", "2"},
      {"bos_id", "-1"},
      {"minloglevel", o.verbose ? "0" : "2"},
  };
}

SentencePieceTokenizer train_with(LineIterator& lines, std::string_view source,
                                  const SentencePieceOptions& o) {
  spm::SetRandomGeneratorSeed(o.seed);
  std::string model;
  const spm::util::Status status =
      spm::SentencePieceTrainer::Train(trainer_args(o), &lines, &model);
  if (!lines.error().empty()) {
    if (lines.error().find(": cannot read: ") != std::string::npos) throw FileError(lines.error());
    throw ValueError(lines.error());
  }
  if (lines.lines() == 0) {
    throw ValueError(std::string(source) +
                     ": no text to train on (it is empty or has only empty lines): "
                     "SentencePiece needs text to learn from");
  }
  if (lines.usable_lines() == 0) {
    throw ValueError(std::string(source) + ": every line is longer than max_line_bytes (" +
                     std::to_string(o.max_line_bytes) +
                     "), so SentencePiece has nothing to train on: split the text into lines "
                     "or raise max_line_bytes");
  }
  if (!status.ok()) {
    // "./src/trainer_interface.cc(660) [condition] what went wrong": keep what went wrong.
    std::string why = status.message();
    if (const std::size_t p = why.find(") ["); p != std::string::npos) {
      if (const std::size_t q = why.find("] ", p); q != std::string::npos) why.erase(0, q + 2);
    }
    throw ValueError(std::string(source) + ": SentencePiece training failed: " + why);
  }
  return SentencePieceTokenizer::from_serialized(model, source);
}

}  // namespace

struct SentencePieceTokenizer::Impl {
  spm::SentencePieceProcessor processor;
  std::string model;
  std::vector<int> space_symbol_ids;  // the byte pieces of U+2581
};

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept =
    default;
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

SentencePieceTokenizer SentencePieceTokenizer::train(const std::string& text_path,
                                                     const SentencePieceOptions& options) {
  check_options(options);
  FileLines lines(text_path, options.max_line_bytes);
  return train_with(lines, text_path, options);
}

SentencePieceTokenizer SentencePieceTokenizer::train_on_text(std::string_view text,
                                                             const SentencePieceOptions& options,
                                                             std::string_view source) {
  check_options(options);
  TextLines lines(text, std::string(source), options.max_line_bytes);
  return train_with(lines, source, options);
}

SentencePieceTokenizer SentencePieceTokenizer::load(const std::string& model_path) {
  std::string bytes;
  try {
    bytes = core::read_file(model_path);
  } catch (const FileError& e) {
    std::string why = e.what();
    if (why.rfind(model_path + ": ", 0) == 0) why.erase(0, model_path.size() + 2);
    throw FileError(model_path + ": cannot load the SentencePiece model: " + why);
  }
  return from_serialized(bytes, model_path);
}

SentencePieceTokenizer SentencePieceTokenizer::from_serialized(std::string_view model_bytes,
                                                               std::string_view what) {
  const std::string prefix = std::string(what) + ": cannot load the SentencePiece model: ";
  if (model_bytes.empty()) throw FileError(prefix + "the file is empty");
  if (const std::string why = check_model_structure(model_bytes); !why.empty())
    throw FileError(prefix + "not a SentencePiece model, or truncated (" + why + ")");
  auto impl = std::make_unique<Impl>();
  impl->model.assign(model_bytes);
  if (const auto status = impl->processor.LoadFromSerializedProto(impl->model); !status.ok())
    throw FileError(prefix + "SentencePiece says: " + status.ToString());
  const spm::SentencePieceProcessor& sp = impl->processor;
  if (sp.pad_id() != pad_id || sp.eos_id() != eos_id) {
    throw FileError(std::string(what) + ": the SentencePiece model has padding at id " +
                    std::to_string(sp.pad_id()) + " and EOS at id " + std::to_string(sp.eos_id()) +
                    "; minitrax needs padding at id 0 and EOS at id 1 (train it with "
                    "SentencePieceTokenizer::train, or spm_train --pad_id=0 --eos_id=1 --unk_id=2 "
                    "--bos_id=-1 --byte_fallback=true --normalization_rule_name=identity "
                    "--add_dummy_prefix=false --remove_extra_whitespaces=false)");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const int id = sp.PieceToId(name);
    if (!sp.IsByte(id)) {
      throw FileError(std::string(what) +
                      ": the SentencePiece model has no byte pieces (it was trained without "
                      "byte fallback), so characters it has not seen would not round-trip; "
                      "train it with SentencePieceTokenizer::train (or spm_train "
                      "--byte_fallback=true)");
    }
  }
  // 0xE2 0x96 0x81 in that order.
  impl->space_symbol_ids = {sp.PieceToId("<0xE2>"), sp.PieceToId("<0x96>"), sp.PieceToId("<0x81>")};
  SentencePieceTokenizer t(std::move(impl));
  const std::string back = t.decode(t.encode(kProbe));
  if (back != kProbe) {
    throw FileError(std::string(what) +
                    ": the SentencePiece model does not round-trip text (it normalizes it, or "
                    "adds or removes spaces): " +
                    escaped_text(kProbe) + " decodes as " + escaped_text(back) +
                    "; train it with SentencePieceTokenizer::train (identity normalization, "
                    "no dummy prefix, no whitespace removal)");
  }
  return t;
}

std::vector<std::int32_t> SentencePieceTokenizer::encode(std::string_view text,
                                                         std::string_view what) const {
  decode_utf8_into(text, 0, true, what, kSentencePieceHint, [](char32_t) {});
  std::vector<std::int32_t> ids;
  std::vector<int> part;
  std::size_t start = 0;
  while (true) {
    const std::size_t at = text.find(kSpaceSymbol, start);
    const std::string_view segment =
        text.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start);
    if (!segment.empty()) {
      if (const auto status = impl_->processor.Encode(segment, &part); !status.ok()) {
        throw ValueError(std::string(what) +
                         ": SentencePiece cannot encode it: " + status.ToString());
      }
      ids.insert(ids.end(), part.begin(), part.end());
    }
    if (at == std::string_view::npos) break;
    ids.insert(ids.end(), impl_->space_symbol_ids.begin(), impl_->space_symbol_ids.end());
    start = at + kSpaceSymbol.size();
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  const std::int32_t n = vocab_size();
  std::vector<int> v(ids.size());
  for (std::size_t p = 0; p < ids.size(); ++p) {
    if (ids[p] < 0 || ids[p] >= n) id_out_of_range(ids[p], p, n, "SentencePiece tokenizer");
    v[p] = ids[p];
  }
  std::string out;
  if (const auto status = impl_->processor.Decode(v, &out); !status.ok())
    throw ValueError("decode: SentencePiece cannot decode the ids: " + status.ToString());
  return out;
}

std::int32_t SentencePieceTokenizer::vocab_size() const {
  return impl_->processor.GetPieceSize();
}

void SentencePieceTokenizer::save(const std::string& path) const {
  core::write_file_atomic(path, impl_->model);
}

const std::string& SentencePieceTokenizer::serialized_model() const {
  return impl_->model;
}

std::string SentencePieceTokenizer::piece(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw ValueError("piece: id " + std::to_string(id) + " is outside the vocabulary [0, " +
                     std::to_string(vocab_size()) + ")");
  }
  return impl_->processor.IdToPiece(id);
}

// ============================================================================
// any kind
// ============================================================================

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const std::string bytes = core::read_file(path);
  const std::size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{') {
    const nlohmann::json j = parse_tokenizer_file(path, bytes);
    if (j["kind"] == "bytes") {
      if (file_vocab_size(j) != 258)
        bad_file(path, "a byte tokenizer has vocab_size 258, not " + j["vocab_size"].dump());
      return std::make_unique<ByteTokenizer>();
    }
    if (j["kind"] == "chars") return std::make_unique<CharTokenizer>(CharTokenizer::load(path));
    bad_file(path, "unknown \"kind\" " + j["kind"].dump() +
                       " (expected \"bytes\" or \"chars\"; a SentencePiece tokenizer is "
                       "saved as its .model file)");
  }
  return std::make_unique<SentencePieceTokenizer>(
      SentencePieceTokenizer::from_serialized(bytes, path));
}

// ---- Utf8Repairing ----

Utf8Repairing::Utf8Repairing(std::shared_ptr<const Tokenizer> inner) : inner_(std::move(inner)) {
  if (!inner_) throw core::ValueError("Utf8Repairing: the tokenizer to wrap is null");
}

std::vector<std::int32_t> Utf8Repairing::encode(std::string_view text) const {
  std::uint64_t n = 0;
  const std::string fixed = repair_utf8(text, &n);
  replaced_ += n;
  return inner_->encode(fixed);
}

std::string Utf8Repairing::decode(const std::vector<std::int32_t>& ids) const {
  return inner_->decode(ids);
}

std::int32_t Utf8Repairing::vocab_size() const {
  return inner_->vocab_size();
}

std::string Utf8Repairing::kind() const {
  return inner_->kind();
}

void Utf8Repairing::save(const std::string& path) const {
  inner_->save(path);
}

}  // namespace minitrax::data
