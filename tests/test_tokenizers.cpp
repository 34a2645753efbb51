// Tokenizers (data/tokenizers.hpp): bytes, characters, SentencePiece subwords. Round trips
// on ASCII and non-ASCII UTF-8, ids against independent computations (a naive UTF-8
// decoder written here, memcmp of bytes, SentencePiece's pieces put together by hand),
// incremental vocabularies, save/load, determinism, and every bad input with its message.
//
// MINITRAX_PRINT_ERRORS=1 ./test_tokenizers prints each observed message (the temporary
// folder shown as <tmp>): what docs/errors_tokenizers.md shows.
#include <doctest/doctest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.hpp"
#include "data/tokenizers.hpp"
#include "test_util.hpp"

using namespace minitrax;
using namespace minitrax::data;
namespace fs = std::filesystem;

namespace {

// -- independent helpers ------------------------------------------------------------

/// A naive UTF-8 decoder (valid input only): the number of leading 1 bits of the first
/// byte is the length; the rest are 6-bit groups.
std::vector<char32_t> naive_code_points(const std::string& s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    int len = 0;
    while (len < 8 && (b & (0x80 >> len))) ++len;
    if (len == 0) {
      out.push_back(b);
      ++i;
      continue;
    }
    char32_t c = b & (0xFF >> (len + 1));
    for (int k = 1; k < len; ++k) c = c * 64 + (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(c);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

/// Texts every tokenizer must round-trip.
std::vector<std::string> sample_texts() {
  return {
      "",
      "Hello, world! 0123456789 ~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
      "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m gr\u00f6\u00dfe \u0153uvre",          // accents
      "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e\u306e\u6587",                     // CJK
      "\U0001F600\U0001F680\U0001F44D\U0001F3FD family \U0001F468\u200D\U0001F469",  // emoji
      "e\u0301 a\u0308 n\u0303 \u0915\u094D\u0937",  // combining marks
      "line one\r\nline two\r\n\r\n",
      "\ttab\t\tseparated\t",
      "a  b   c    d     e",
      "   leading and trailing   ",
      "\n\n\nnewlines only at the start",
      "mixed: \u00e9\u4e2d\U0001F600\r\n\t  x \u2581 y\u2581\u2581z",  // U+2581 is SentencePiece's
                                                                       // space
      std::string("nul\0byte", 8),
      " ",
      "\u00a0non-breaking\u00a0space \u3000ideographic space",
  };
}

/// All sample texts joined (a training text containing every character of them).
std::string all_samples() {
  std::string all;
  for (const auto& t : sample_texts()) all += t;
  return all;
}

/// A deterministic training text for SentencePiece: lines of made-up words (syllables drawn
/// with an LCG) and a few real ones, ASCII and not.
std::string training_text(std::size_t lines) {
  const std::vector<std::string> syllables = {
      "ka", "to", "ri", "men",  "sa", "lo", "ve", "dar", "in", "qu", "ell", "ion", "st", "pra",
      "ne", "gu", "bo", "ther", "al", "um", "é",  "ö",   "中", "文", "ñu",  "ça",  "zy", "ph"};
  const std::vector<std::string> words = {"the", "of",   "and",   "a",     "to",   "in",
                                          "is",  "café", "naïve", "größe", "über", "transformer"};
  std::uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::size_t>(state >> 33);
  };
  std::string text;
  for (std::size_t l = 0; l < lines; ++l) {
    const std::size_t n = 3 + next() % 10;
    for (std::size_t w = 0; w < n; ++w) {
      if (w) text += next() % 8 == 0 ? "  " : " ";
      if (next() % 2 == 0) {
        text += words[next() % words.size()];
      } else {
        const std::size_t k = 1 + next() % 3;
        for (std::size_t s = 0; s < k; ++s) text += syllables[next() % syllables.size()];
      }
    }
    text += next() % 4 == 0 ? ".\n" : "\n";
  }
  return text;
}

/// A fresh temporary folder for this test program.
fs::path temp_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("minitrax_tok_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The temporary folder's root shown as <tmp> (for the printed catalogue).
std::string printable(const std::string& s) {
  const std::string root =
      (fs::temp_directory_path() / ("minitrax_tok_" + std::to_string(::getpid()))).string();
  std::string out = s;
  for (std::size_t p; (p = out.find(root)) != std::string::npos;)
    out.replace(p, root.size(), "<tmp>");
  return out;
}

/// Runs f, which must throw exactly type E with exactly `message`.
template <class E, class F>
void check_error(const std::string& id, F&& f, const std::string& message) {
  const testutil::Observed o = testutil::observe(id, f, printable);
  CHECK_MESSAGE(o.thrown, id);
  CHECK_MESSAGE(o.type == testutil::type_name(typeid(E)), id);
  CHECK_MESSAGE(o.what == message, id);
}

/// Runs f, which must throw type E with a message that starts with `prefix`; returns it.
template <class E, class F>
std::string check_error_prefix(const std::string& id, F&& f, const std::string& prefix) {
  const testutil::Observed o = testutil::observe(id, f, printable);
  CHECK_MESSAGE(o.thrown, id);
  CHECK_MESSAGE(o.type == testutil::type_name(typeid(E)), id);
  CHECK_MESSAGE(o.what.rfind(prefix, 0) == 0, id << ": " << o.what);
  return o.what;
}

/// Checks the contract every tokenizer keeps on `text`: ids in [2, vocab), never the
/// reserved ones, and decode(encode(text)) == text byte for byte.
void check_round_trip(const Tokenizer& t, const std::string& text) {
  const std::vector<std::int32_t> ids = t.encode(text);
  for (const std::int32_t id : ids) {
    REQUIRE(id >= 2);
    REQUIRE(id < t.vocab_size());
  }
  const std::string back = t.decode(ids);
  REQUIRE(back.size() == text.size());
  CHECK(std::memcmp(back.data(), text.data(), text.size()) == 0);
}

}  // namespace

// ============================================================================
// bytes
// ============================================================================

TEST_CASE("ByteTokenizer: byte b is id b + 2 and every byte string round-trips") {
  ByteTokenizer t;
  CHECK(t.vocab_size() == 258);
  CHECK(t.kind() == "bytes");
  std::vector<std::string> texts = sample_texts();
  std::string every_byte;
  for (int b = 255; b >= 0; --b) every_byte += static_cast<char>(b);
  texts.push_back(every_byte);
  texts.push_back("\xff\xfe not UTF-8 \xc0\xaf \xed\xa0\x80");
  for (const auto& text : texts) {
    CAPTURE(text);
    const auto ids = t.encode(text);
    REQUIRE(ids.size() == text.size());
    for (std::size_t i = 0; i < text.size(); ++i)
      CHECK(ids[i] == static_cast<unsigned char>(text[i]) + 2);
    check_round_trip(t, text);
  }
  // pad and EOS decode to nothing.
  CHECK(t.decode({pad_id, 'h' + 2, eos_id, 'i' + 2, pad_id}) == "hi");
}

TEST_CASE("ByteTokenizer: an id outside the vocabulary") {
  ByteTokenizer t;
  check_error<core::ValueError>(
      "bytes: decode an id outside the vocabulary",
      [&] {
        t.decode({'a' + 2, 258});
      },
      "decode: id 258 at position 1 is outside the vocabulary [0, 258) of the byte tokenizer");
  check_error<core::ValueError>(
      "bytes: decode a negative id", [&] { t.decode({-1}); },
      "decode: id -1 at position 0 is outside the vocabulary [0, 258) of the byte tokenizer");
}

// ============================================================================
// UTF-8
// ============================================================================

TEST_CASE("decode_utf8 / encode_utf8 agree with a naive decoder") {
  for (const auto& text : sample_texts()) {
    CAPTURE(text);
    const auto cps = decode_utf8(text);
    CHECK(cps == naive_code_points(text));
    CHECK(encode_utf8(cps) == text);
  }
  // The boundaries of each length.
  const std::vector<char32_t> edges = {0x0,    0x7F,   0x80,   0x7FF,   0x800,
                                       0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF};
  const std::string bytes = encode_utf8(edges);
  CHECK(bytes.size() == 2 * 1 + 2 * 2 + 4 * 3 + 2 * 4);
  CHECK(naive_code_points(bytes) == edges);
  CHECK(decode_utf8(bytes) == edges);
  CHECK(describe_char(U'\u00e9') == "'\u00e9' (U+00E9)");
  CHECK(describe_char(U'\n') == "'\\n' (U+000A)");
  CHECK(describe_char(7) == "(U+0007)");
  CHECK(describe_char(U'\U0001F600') == "'\U0001F600' (U+1F600)");
}

TEST_CASE("invalid UTF-8: each kind named, with its byte offset") {
  struct Case {
    std::string bytes, why;
  };
  const std::vector<Case> cases = {
      {"ab\xff", "at byte 2 (byte 0xFF cannot start a character)"},
      {"\xc0\xaf", "at byte 0 (byte 0xC0 cannot start a character)"},
      {"x\x9c", "at byte 1 (byte 0x9C continues a character that did not start)"},
      {"\xe4\xb8X",
       "at byte 0 (byte 0xE4 starts a 3-byte character but byte 0x58 at 2 does not "
       "continue it)"},
      {"ok\xe4\xb8",
       "at byte 2 (byte 0xE4 starts a 3-byte character but the text ends after 2 "
       "of its bytes)"},
      {"\xe0\x80\xaf", "at byte 0 (an overlong encoding of U+002F)"},
      {"\xed\xa0\x80", "at byte 0 (U+D800 is a UTF-16 surrogate, not a character)"},
      {"\xf4\x90\x80\x80", "at byte 0 (U+110000 is beyond U+10FFFF)"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.why);
    check_error<core::ValueError>(
        "utf8", [&] { decode_utf8(c.bytes, "in.txt"); },
        "in.txt: invalid UTF-8 " + c.why + ": the data looks binary, not UTF-8 text");
  }
  check_error<core::ValueError>(
      "encode_utf8: a surrogate",
      [] {
        encode_utf8({U'a', 0xD800});
      },
      "encode_utf8: code point 1 is U+D800, not a Unicode character (a surrogate or beyond "
      "U+10FFFF)");
}

TEST_CASE("repair_utf8: stray bytes become U+FFFD, valid text is unchanged") {
  for (const auto& text : sample_texts()) CHECK(repair_utf8(text) == text);
  std::uint64_t n = 99;
  // dict-gcide's three stray Windows-1252 bytes, in their context.
  CHECK(repair_utf8("the stock market\x92s drop", &n) == "the stock market\uFFFDs drop");
  CHECK(n == 1);
  CHECK(repair_utf8("fa\xe7"
                    "ade and haven\xb9t",
                    &n) == "fa\uFFFDade and haven\uFFFDt");
  CHECK(n == 2);
  // Each byte of a bad sequence is replaced; the valid characters around it are kept.
  CHECK(repair_utf8("\xe4\xb8X\u00e9", &n) == "\uFFFD\uFFFDX\u00e9");
  CHECK(n == 2);
  CHECK(repair_utf8("ok\xf0\x9f\x98", &n) == "ok\uFFFD\uFFFD\uFFFD");
  CHECK(n == 3);
  std::string nine_replacements;
  for (int k = 0; k < 9; ++k) nine_replacements += "\uFFFD";
  CHECK(repair_utf8("\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf", &n) == nine_replacements);
  CHECK(n == 9);
  // Whatever the bytes, the result is valid UTF-8.
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
  const std::string fixed = repair_utf8(every_byte, &n);
  CHECK(n == 128);
  CHECK(decode_utf8(fixed).size() == 256);
}

// ============================================================================
// characters
// ============================================================================

TEST_CASE("CharTokenizer: vocabulary sorted by code point, ids from 2, round trips") {
  const std::string all = all_samples();
  const CharTokenizer t = CharTokenizer::build(all);
  // The vocabulary is the sorted set of the naive decoder's code points.
  const auto naive = naive_code_points(all);
  const std::set<char32_t> set(naive.begin(), naive.end());
  const std::vector<char32_t> expected(set.begin(), set.end());
  CHECK(t.characters() == expected);
  CHECK(t.vocab_size() == static_cast<std::int32_t>(expected.size()) + 2);
  CHECK(t.kind() == "chars");
  for (const auto& text : sample_texts()) {
    CAPTURE(text);
    const auto ids = t.encode(text);
    const auto cps = naive_code_points(text);
    REQUIRE(ids.size() == cps.size());
    for (std::size_t i = 0; i < cps.size(); ++i) {
      const auto at = std::lower_bound(expected.begin(), expected.end(), cps[i]) - expected.begin();
      CHECK(ids[i] == at + 2);
    }
    check_round_trip(t, text);
  }
  CHECK(t.decode({pad_id, t.id_of(U'a'), eos_id}) == "a");
  CHECK(t.id_of(U'\u2603') == -1);
  // Deterministic: the same characters in any order give the same tokenizer.
  std::string reversed;
  for (auto it = naive.rbegin(); it != naive.rend(); ++it) reversed += encode_utf8({*it});
  CHECK(CharTokenizer::build(reversed).characters() == t.characters());
}

TEST_CASE("CharVocabBuilder: pieces of any size (splitting characters) give the same vocabulary") {
  const std::string all = all_samples() + training_text(50);
  const CharTokenizer whole = CharTokenizer::build(all);
  const auto naive = naive_code_points(all);
  for (const std::size_t size : {1, 2, 3, 5, 7, 64, 100000}) {
    CAPTURE(size);
    CharVocabBuilder b;
    for (std::size_t p = 0; p < all.size(); p += size) b.add(std::string_view(all).substr(p, size));
    CHECK(b.bytes_seen() == all.size());
    CHECK(b.chars_seen() == naive.size());
    CHECK(b.finish().characters() == whole.characters());
  }
  // A file read in chunks of 3 bytes, which cut most multi-byte characters.
  const fs::path dir = temp_dir("builder");
  write_bytes(dir / "text.txt", all);
  CHECK(CharTokenizer::build_from_file((dir / "text.txt").string(), 3).characters() ==
        whole.characters());
  CharVocabBuilder b2("two files");
  b2.add_file((dir / "text.txt").string(), 5);
  b2.add_file((dir / "text.txt").string(), 1 << 20);
  CHECK(b2.chars_seen() == 2 * naive.size());
  CHECK(b2.finish().characters() == whole.characters());
  CHECK(CharTokenizer::build_from_file((dir / "text.txt").string()).source() ==
        (dir / "text.txt").string());
}

TEST_CASE("CharTokenizer: save writes readable JSON atomically - load and load_tokenizer read it") {
  const fs::path dir = temp_dir("save");
  const CharTokenizer t = CharTokenizer::build(all_samples(), "book.txt");
  const std::string path = (dir / "tokenizer.json").string();
  t.save(path);
  // Only the file itself is left (the temporary was renamed over it).
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++files;
  CHECK(files == 1);
  const std::string json = read_bytes(path);
  CHECK(testutil::contains(json, "\"kind\": \"chars\""));
  CHECK(testutil::contains(json, "\"source\": \"book.txt\""));
  CHECK(testutil::contains(json, "\u00e9"));  // characters as themselves, not escaped
  const CharTokenizer u = CharTokenizer::load(path);
  CHECK(u.characters() == t.characters());
  CHECK(u.source() == "book.txt");
  const auto any = load_tokenizer(path);
  CHECK(any->kind() == "chars");
  CHECK(any->vocab_size() == t.vocab_size());
  for (const auto& text : sample_texts()) {
    CHECK(any->encode(text) == t.encode(text));
    check_round_trip(*any, text);
  }
  // Saving again gives the same bytes.
  u.save(path);
  CHECK(read_bytes(path) == json);
  // The byte tokenizer too.
  ByteTokenizer().save((dir / "bytes.json").string());
  const auto bytes = load_tokenizer((dir / "bytes.json").string());
  CHECK(bytes->kind() == "bytes");
  CHECK(bytes->encode("\xff") == std::vector<std::int32_t>{257});
}

TEST_CASE("CharTokenizer: bad inputs") {
  const fs::path dir = temp_dir("char_errors");
  const std::string hint =
      ": the data looks binary, not UTF-8 text; a character vocabulary needs UTF-8 text (the "
      "byte tokenizer takes any bytes)";
  check_error<core::ValueError>(
      "chars: binary data for a vocabulary",
      [] { CharTokenizer::build(std::string("PK\x03\x04\x14\x00\x08\x08\xa5", 9)); },
      "the training text: invalid UTF-8 at byte 8 (byte 0xA5 continues a character that did "
      "not start)" +
          hint);
  // In a file read in chunks of 4 bytes, the offset counts from the start of the file.
  const std::string bin = (dir / "data.bin").string();
  write_bytes(bin, std::string("0123456789\xff") + "rest");
  check_error<core::ValueError>(
      "chars: a binary file", [&] { CharTokenizer::build_from_file(bin, 4); },
      bin + ": invalid UTF-8 at byte 10 (byte 0xFF cannot start a character)" + hint);
  // A character split across two chunks whose second part is wrong.
  check_error<core::ValueError>(
      "chars: a bad character across two chunks",
      [] {
        CharVocabBuilder b;
        b.add("ab\xe4");
        b.add("\xb8X");
      },
      "the training text: invalid UTF-8 at byte 2 (byte 0xE4 starts a 3-byte character but "
      "byte 0x58 at 4 does not continue it)" +
          hint);
  check_error<core::ValueError>(
      "chars: the text ends inside a character",
      [] {
        CharVocabBuilder b;
        b.add("ab\xe4");
        b.add("\xb8");
        b.finish();
      },
      "the training text: invalid UTF-8 at byte 2 (byte 0xE4 starts a 3-byte character but "
      "the text ends after 2 of its bytes)" +
          hint);
  const std::string cut = (dir / "cut.txt").string();
  write_bytes(cut, "abc\xf0\x9f\x98");
  check_error<core::ValueError>(
      "chars: a file that ends inside a character", [&] { CharTokenizer::build_from_file(cut, 2); },
      cut +
          ": invalid UTF-8 at byte 3 (byte 0xF0 starts a 4-byte character but the text ends "
          "after 3 of its bytes)" +
          hint);
  check_error<core::ValueError>(
      "chars: an empty training text", [] { CharTokenizer::build(""); },
      "the training text: the text is empty: a character vocabulary needs at least one "
      "character");
  const std::string empty = (dir / "empty.txt").string();
  write_bytes(empty, "");
  check_error<core::ValueError>(
      "chars: an empty file", [&] { CharTokenizer::build_from_file(empty); },
      empty + ": the text is empty: a character vocabulary needs at least one character");
  check_error<core::FileError>(
      "chars: a missing file", [&] { CharTokenizer::build_from_file((dir / "nope.txt").string()); },
      (dir / "nope.txt").string() + ": cannot open: No such file or directory");

  // Characters outside the vocabulary: named, printable and as U+XXXX, with their position.
  const CharTokenizer t = CharTokenizer::build("abc de");
  check_error<core::ValueError>(
      "chars: a prompt character outside the vocabulary", [&] { t.encode("a ca\u00e9", "prompt"); },
      "prompt character 4 '\u00e9' (U+00E9) is not in the vocabulary of 6 characters built from "
      "the training text");
  check_error<core::ValueError>(
      "chars: a tab outside the vocabulary", [&] { t.encode("ab\tc"); },
      "text character 2 '\\t' (U+0009) is not in the vocabulary of 6 characters built from the "
      "training text");
  check_error<core::ValueError>(
      "chars: an emoji outside a vocabulary built from a file",
      [&] {
        CharTokenizer({U'a', U'b'}, "data/book.txt").encode("ab\U0001F600");
      },
      "text character 2 '\U0001F600' (U+1F600) is not in the vocabulary of 2 characters built "
      "from data/book.txt");
  check_error<core::ValueError>(
      "chars: invalid UTF-8 in a text to encode", [&] { t.encode("ab\xff", "prompt"); },
      "prompt: invalid UTF-8 at byte 2 (byte 0xFF cannot start a character)" + hint);
  check_error<core::ValueError>(
      "chars: decode an id outside the vocabulary",
      [&] {
        t.decode({2, 3, 8});
      },
      "decode: id 8 at position 2 is outside the vocabulary [0, 8) of the character tokenizer");
  check_error<core::ValueError>(
      "chars: a repeated character",
      [] {
        CharTokenizer({U'a', U'b', U'a'});
      },
      "CharTokenizer: character 'a' (U+0061) is repeated");

  // Vocabulary files that are not.
  const std::string missing = (dir / "missing.json").string();
  check_error<core::FileError>(
      "chars: load a missing vocabulary", [&] { CharTokenizer::load(missing); },
      missing + ": cannot open: No such file or directory");
  const std::string text = (dir / "text.json").string();
  write_bytes(text, "hello");
  check_error_prefix<core::FileError>(
      "chars: load a file that is not JSON", [&] { CharTokenizer::load(text); },
      text + ": not a minitrax tokenizer file: it is not valid JSON (");
  const std::string bytes = (dir / "bytes.json").string();
  ByteTokenizer().save(bytes);
  check_error<core::FileError>(
      "chars: load a byte tokenizer's file as characters", [&] { CharTokenizer::load(bytes); },
      bytes + ": holds a \"bytes\" tokenizer, not a character vocabulary (\"chars\")");
  const std::string edited = (dir / "edited.json").string();
  t.save(edited);
  std::string json = read_bytes(edited);
  json.replace(json.find("\"vocab_size\": 8"), 15, "\"vocab_size\": 9");
  write_bytes(edited, json);
  check_error<core::FileError>(
      "chars: a vocabulary file whose vocab_size disagrees", [&] { CharTokenizer::load(edited); },
      edited +
          ": not a minitrax tokenizer file: \"vocab_size\" is 9 but \"characters\" has 6 "
          "characters (+2 reserved ids = 8)");
}

// ============================================================================
// SentencePiece
// ============================================================================

namespace {

/// The text of ids put together from SentencePiece's pieces by hand: "▁" is a space,
/// "<0xAB>" is a byte, control pieces are nothing.
std::string pieces_text(const SentencePieceTokenizer& t, const std::vector<std::int32_t>& ids) {
  std::string out;
  for (const std::int32_t id : ids) {
    std::string p = t.piece(id);
    if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>') {
      out += static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16));
      continue;
    }
    for (std::size_t k; (k = p.find("\u2581")) != std::string::npos;) p.replace(k, 3, " ");
    out += p;
  }
  return out;
}

SentencePieceOptions small_options(const std::string& type) {
  SentencePieceOptions o;
  o.vocab_size = 400;
  o.model_type = type;
  return o;
}

/// An independent protobuf walk of a ModelProto's top level: (offset, field number) of
/// each member (all of them are messages: length-delimited).
std::vector<std::pair<std::size_t, int>> top_level_fields(const std::string& b) {
  std::vector<std::pair<std::size_t, int>> out;
  std::size_t i = 0;
  auto varint = [&] {
    std::uint64_t v = 0;
    for (int s = 0;; s += 7) {
      const auto c = static_cast<unsigned char>(b.at(i++));
      v |= std::uint64_t(c & 0x7F) << s;
      if (!(c & 0x80)) return v;
    }
  };
  while (i < b.size()) {
    const std::size_t at = i;
    const std::uint64_t key = varint();
    REQUIRE((key & 7) == 2);
    out.emplace_back(at, static_cast<int>(key >> 3));
    i += varint();
  }
  return out;
}

}  // namespace

TEST_CASE("SentencePiece: unigram and BPE models round-trip any UTF-8 text") {
  const std::string train = training_text(1500);
  for (const std::string type : {"unigram", "bpe"}) {
    CAPTURE(type);
    const SentencePieceTokenizer t =
        SentencePieceTokenizer::train_on_text(train, small_options(type));
    CHECK(t.vocab_size() == 400);
    CHECK(t.kind() == "sentencepiece");
    CHECK(t.piece(0) == "<pad>");
    CHECK(t.piece(1) == "</s>");
    std::vector<std::string> texts = sample_texts();
    texts.push_back(train.substr(0, train.find('\n', 2000) + 1));
    for (const auto& text : texts) {
      CAPTURE(text);
      const auto ids = t.encode(text);
      for (const auto id : ids) CHECK(id != 2);  // never the unknown piece (byte fallback)
      check_round_trip(t, text);
      CHECK(pieces_text(t, ids) == text);
    }
    // Real subwords: the training text takes far fewer ids than bytes.
    const std::string sample = train.substr(0, train.find('\n', 5000) + 1);
    const auto ids = t.encode(sample);
    CHECK(ids.size() * 2 < sample.size());
    CHECK(t.decode({pad_id, eos_id}).empty());
  }
}

TEST_CASE("SentencePiece: training is deterministic - a file and the same text in memory agree") {
  const fs::path dir = temp_dir("sp_det");
  const std::string train = training_text(1500) + all_samples() + "\n";
  write_bytes(dir / "train.txt", train);
  for (const std::string type : {"unigram", "bpe"}) {
    CAPTURE(type);
    const auto a = SentencePieceTokenizer::train((dir / "train.txt").string(), small_options(type));
    const auto b = SentencePieceTokenizer::train((dir / "train.txt").string(), small_options(type));
    const auto c = SentencePieceTokenizer::train_on_text(train, small_options(type));
    CHECK(a.serialized_model() == b.serialized_model());
    CHECK(a.serialized_model() == c.serialized_model());
  }
  // Sampling a subset of the lines follows the seed.
  auto sampled = small_options("unigram");
  sampled.max_lines = 500;
  const auto d = SentencePieceTokenizer::train_on_text(train, sampled);
  const auto e = SentencePieceTokenizer::train_on_text(train, sampled);
  CHECK(d.serialized_model() == e.serialized_model());
  for (const auto& text : sample_texts()) check_round_trip(d, text);
}

TEST_CASE("SentencePiece: exact_vocab_size = false lets a small text make a smaller vocabulary") {
  auto o = small_options("bpe");
  o.exact_vocab_size = false;
  const auto t = SentencePieceTokenizer::train_on_text("a few words\nand a few more\n", o);
  CHECK(t.vocab_size() > 259);
  CHECK(t.vocab_size() < 400);
  for (const auto& text : sample_texts()) check_round_trip(t, text);
}

TEST_CASE("SentencePiece: save writes the .model - load and load_tokenizer read it") {
  const fs::path dir = temp_dir("sp_save");
  const auto t =
      SentencePieceTokenizer::train_on_text(training_text(800), small_options("unigram"));
  const std::string path = (dir / "tokenizer.model").string();
  t.save(path);
  CHECK(read_bytes(path) == t.serialized_model());
  const auto u = SentencePieceTokenizer::load(path);
  const auto any = load_tokenizer(path);
  CHECK(any->kind() == "sentencepiece");
  for (const auto& text : sample_texts()) {
    CHECK(u.encode(text) == t.encode(text));
    CHECK(any->encode(text) == t.encode(text));
    check_round_trip(*any, text);
  }
}

TEST_CASE("SentencePiece: bad inputs") {
  const fs::path dir = temp_dir("sp_errors");
  const auto t = SentencePieceTokenizer::train_on_text(training_text(800), small_options("bpe"));
  const std::string model = t.serialized_model();

  // Model files that do not load.
  const std::string missing = (dir / "missing.model").string();
  check_error<core::FileError>(
      "sp: a missing model", [&] { SentencePieceTokenizer::load(missing); },
      missing + ": cannot load the SentencePiece model: cannot open: No such file or directory");
  const std::string empty = (dir / "empty.model").string();
  write_bytes(empty, "");
  check_error<core::FileError>(
      "sp: an empty model file", [&] { SentencePieceTokenizer::load(empty); },
      empty + ": cannot load the SentencePiece model: the file is empty");
  const std::string text = (dir / "text.model").string();
  write_bytes(text, "hello, this is not a model\n");
  check_error<core::FileError>(
      "sp: a text file as a model", [&] { SentencePieceTokenizer::load(text); },
      text +
          ": cannot load the SentencePiece model: not a SentencePiece model, or truncated "
          "(unexpected wire type 4 at byte 2)");
  check_error<core::FileError>(
      "sp: a text file through load_tokenizer", [&] { load_tokenizer(text); },
      text +
          ": cannot load the SentencePiece model: not a SentencePiece model, or truncated "
          "(unexpected wire type 4 at byte 2)");
  // Cut near the middle, inside a member (not at a boundary between two).
  const auto fields = top_level_fields(model);
  std::size_t cut = model.size() / 2, member = 0;
  for (const auto& [at, number] : fields) {
    if (at == cut) ++cut;
    if (at < cut) member = at;
  }
  const std::string half = (dir / "half.model").string();
  write_bytes(half, model.substr(0, cut));
  check_error<core::FileError>(
      "sp: a model cut in half", [&] { SentencePieceTokenizer::load(half); },
      half +
          ": cannot load the SentencePiece model: not a SentencePiece model, or truncated "
          "(field 1 at byte " +
          std::to_string(member) + " runs past the end of the file (" + std::to_string(cut) +
          " bytes))");
  // Cut exactly where the settings start: a valid protobuf message, but no model.
  const std::string pieces_only = (dir / "pieces_only.model").string();
  std::size_t settings = model.size();
  for (const auto& [at, number] : fields)
    if (number == 2 && settings == model.size()) settings = at;
  REQUIRE(settings < model.size());
  write_bytes(pieces_only, model.substr(0, settings));
  check_error<core::FileError>(
      "sp: a model cut where its settings start",
      [&] { SentencePieceTokenizer::load(pieces_only); },
      pieces_only +
          ": cannot load the SentencePiece model: not a SentencePiece model, or "
          "truncated (it ends after its pieces, without its settings)");

  // Models SentencePiece loads but that break the contract.
  const std::string train_path = (dir / "train.txt").string();
  write_bytes(train_path, training_text(800));
  auto spm_train = [&](std::unordered_map<std::string, std::string> args) {
    args["input"] = train_path;
    args["vocab_size"] = "320";
    args["minloglevel"] = "2";
    std::string out;
    const auto status = sentencepiece::SentencePieceTrainer::Train(args, nullptr, &out);
    REQUIRE_MESSAGE(status.ok(), status.ToString());
    return out;
  };
  const std::string defaults = (dir / "defaults.model").string();
  write_bytes(defaults, spm_train({}));
  check_error<core::FileError>(
      "sp: a model with SentencePiece's default ids",
      [&] { SentencePieceTokenizer::load(defaults); },
      defaults +
          ": the SentencePiece model has padding at id -1 and EOS at id 2; minitrax needs "
          "padding at id 0 and EOS at id 1 (train it with SentencePieceTokenizer::train, "
          "or spm_train --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --byte_fallback=true "
          "--normalization_rule_name=identity --add_dummy_prefix=false "
          "--remove_extra_whitespaces=false)");
  const std::unordered_map<std::string, std::string> our_ids = {
      {"pad_id", "0"}, {"eos_id", "1"}, {"unk_id", "2"}, {"bos_id", "-1"}};
  const std::string no_bytes = (dir / "no_bytes.model").string();
  write_bytes(no_bytes, spm_train(our_ids));
  check_error<core::FileError>(
      "sp: a model without byte fallback", [&] { SentencePieceTokenizer::load(no_bytes); },
      no_bytes +
          ": the SentencePiece model has no byte pieces (it was trained without byte "
          "fallback), so characters it has not seen would not round-trip; train it with "
          "SentencePieceTokenizer::train (or spm_train --byte_fallback=true)");
  auto normalizing_args = our_ids;
  normalizing_args["byte_fallback"] = "true";
  const std::string normalizing = (dir / "normalizing.model").string();
  write_bytes(normalizing, spm_train(normalizing_args));
  check_error_prefix<core::FileError>(
      "sp: a model that normalizes text", [&] { SentencePieceTokenizer::load(normalizing); },
      normalizing +
          ": the SentencePiece model does not round-trip text (it normalizes it, or "
          "adds or removes spaces): \"  a\\t\\tb\\r\\n  ");

  // Training texts and options that cannot work.
  check_error<core::ValueError>(
      "sp: an empty training text",
      [] { SentencePieceTokenizer::train_on_text("", small_options("unigram")); },
      "the training text: no text to train on (it is empty or has only empty lines): "
      "SentencePiece needs text to learn from");
  const std::string blank = (dir / "blank.txt").string();
  write_bytes(blank, "\n\n\n");
  check_error<core::ValueError>(
      "sp: a training file of empty lines",
      [&] { SentencePieceTokenizer::train(blank, small_options("unigram")); },
      blank +
          ": no text to train on (it is empty or has only empty lines): SentencePiece needs "
          "text to learn from");
  check_error<core::FileError>(
      "sp: a missing training file",
      [&] { SentencePieceTokenizer::train((dir / "nope.txt").string()); },
      (dir / "nope.txt").string() + ": cannot open: No such file or directory");
  const std::string bin = (dir / "binary.txt").string();
  write_bytes(bin, "first line\nsecond \xff line\n");
  check_error<core::ValueError>(
      "sp: binary data in the training text",
      [&] { SentencePieceTokenizer::train(bin, small_options("unigram")); },
      bin +
          ": invalid UTF-8 at byte 18 (byte 0xFF cannot start a character): the data looks "
          "binary, not UTF-8 text; SentencePiece needs UTF-8 text (the byte tokenizer takes "
          "any bytes)");
  const std::string tiny = (dir / "tiny.txt").string();
  write_bytes(tiny, "a few words\n");
  check_error<core::ValueError>(
      "sp: a vocab_size the text cannot fill",
      [&] { SentencePieceTokenizer::train(tiny, small_options("unigram")); },
      tiny +
          ": SentencePiece training failed: Vocabulary size too high (400). Please set it to "
          "a value <= 268.");
  auto long_lines = small_options("unigram");
  long_lines.max_line_bytes = 8;
  check_error<core::ValueError>(
      "sp: every line longer than max_line_bytes",
      [&] {
        SentencePieceTokenizer::train_on_text("a line of 22 bytes\nand one of 18\n", long_lines);
      },
      "the training text: every line is longer than max_line_bytes (8), so SentencePiece has "
      "nothing to train on: split the text into lines or raise max_line_bytes");
  auto options = small_options("unigram");
  options.vocab_size = 100;
  check_error<core::ValueError>(
      "sp: vocab_size too small for byte fallback",
      [&] { SentencePieceTokenizer::train_on_text("abc", options); },
      "SentencePieceOptions: vocab_size 100 is too small: padding, EOS, the unknown piece and the "
      "256 byte pieces take 259 ids, so it must be at least 260");
  check_error<core::ValueError>(
      "sp: an unknown model type",
      [&] { SentencePieceTokenizer::train_on_text("abc", small_options("word")); },
      "SentencePieceOptions: model_type \"word\": expected \"unigram\" or \"bpe\"");

  // Encoding and decoding.
  check_error<core::ValueError>(
      "sp: invalid UTF-8 to encode", [&] { t.encode("ok \xff", "prompt"); },
      "prompt: invalid UTF-8 at byte 3 (byte 0xFF cannot start a character): the data looks "
      "binary, not UTF-8 text; SentencePiece needs UTF-8 text (the byte tokenizer takes any "
      "bytes)");
  check_error<core::ValueError>(
      "sp: decode an id outside the vocabulary",
      [&] {
        t.decode({5, 400});
      },
      "decode: id 400 at position 1 is outside the vocabulary [0, 400) of the SentencePiece "
      "tokenizer");
}

TEST_CASE("tokenizers: Utf8Repairing replaces stray bytes, then encodes as the wrapped one") {
  auto chars =
      std::make_shared<data::CharTokenizer>(data::CharTokenizer::build("abc \xEF\xBF\xBD"));
  data::Utf8Repairing tok(chars);
  // "a\x92b": one Windows-1252 byte between two letters becomes U+FFFD.
  const std::vector<std::int32_t> ids = tok.encode(
      "a\x92"
      "b c");
  CHECK(ids == chars->encode("a\xEF\xBF\xBD"
                             "b c"));
  CHECK(tok.replaced() == 1);
  CHECK(tok.decode(ids) ==
        "a\xEF\xBF\xBD"
        "b c");
  CHECK(tok.encode("abc") == chars->encode("abc"));  // valid text: unchanged
  CHECK(tok.replaced() == 1);
  CHECK(tok.vocab_size() == chars->vocab_size());
  CHECK(tok.kind() == "chars");
  CHECK_THROWS_AS(data::Utf8Repairing(nullptr), core::ValueError);
}
