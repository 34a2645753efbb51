// tests/data_test_util.hpp: helpers for the data/ tests: a byte tokenizer, temporary
// folders, gzip writing (with zlib directly), and resume checks for any stream.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "data/sources.hpp"
#include "data/stream.hpp"
#include "data/tokenizer.hpp"

namespace minitrax::datatest {

namespace fs = std::filesystem;

/// A tiny tokenizer for the tests: byte b is id b + 2 (ids 0 and 1 are pad and EOS).
class ByteTok final : public data::Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]) + 2;
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::string s;
    for (const auto id : ids) {
      if (id < 0 || id >= 258) throw core::ValueError("ByteTok: bad id " + std::to_string(id));
      if (id >= 2) s.push_back(static_cast<char>(id - 2));
    }
    return s;
  }
  std::int32_t vocab_size() const override { return 258; }
  std::string kind() const override { return "bytes"; }
  void save(const std::string& path) const override { std::ofstream(path) << "bytes\n"; }
};

/// A fresh temporary folder, removed with its contents at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "minitrax-data-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// Writes `text` gzip-compressed with zlib's gzwrite.
inline void write_gzip(const std::string& path, const std::string& text) {
  gzFile g = ::gzopen(path.c_str(), "wb9");
  REQUIRE(g != nullptr);
  if (!text.empty()) {
    REQUIRE(::gzwrite(g, text.data(), static_cast<unsigned>(text.size())) ==
            static_cast<int>(text.size()));
  }
  REQUIRE(::gzclose(g) == Z_OK);
}

/// Text of `lines` lines of varied length with some multi-byte UTF-8, from a simple LCG.
inline std::string sample_text(std::size_t lines, std::uint32_t seed = 1) {
  static const char* words[] = {"the", "dictionary", "of", "English", "naïve", "café",   "λόγος",
                                "a",   "word",       "to", "define",  "—",     "ümlaut", "z"};
  std::string s;
  std::uint32_t x = seed;
  for (std::size_t i = 0; i < lines; ++i) {
    x = x * 1664525u + 1013904223u;
    const std::size_t n = (x >> 24) % 12;  // 0..11 words: some lines are empty
    for (std::size_t j = 0; j < n; ++j) {
      x = x * 1664525u + 1013904223u;
      if (j) s += ' ';
      s += words[(x >> 16) % 14];
    }
    s += '\n';
  }
  return s;
}

/// The lines of a text (without '\n'); a last line without '\n' counts.
inline std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t p = 0;
  while (p < s.size()) {
    const std::size_t nl = s.find('\n', p);
    if (nl == std::string::npos) {
      out.push_back(s.substr(p));
      break;
    }
    out.push_back(s.substr(p, nl - p));
    p = nl + 1;
  }
  return out;
}

inline bool same_batch(const data::Batch& a, const data::Batch& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!core::equal(a[i], b[i])) return false;
  }
  return true;
}

inline bool same_example(const std::optional<data::Example>& a,
                         const std::optional<data::Example>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || a->fields == b->fields;
}

/// Resume check for a BatchStream: runs `steps` batches of a fresh stream, recording the
/// position before each; then for every `every`-th step, a new stream seeks there and must
/// give the same next `horizon` batches, bitwise; and the first stream, sought back
/// there, too.
template <class Make>
void check_batch_resume(Make make, std::size_t steps, std::size_t every = 1,
                        std::size_t horizon = 3) {
  auto a = make();
  std::vector<std::vector<std::int64_t>> pos;
  std::vector<data::Batch> out;
  for (std::size_t i = 0; i < steps + horizon; ++i) {
    pos.push_back(a->position());
    out.push_back(a->next());
  }
  for (std::size_t i = 0; i < steps; i += every) {
    auto b = make();
    b->seek(pos[i]);
    for (std::size_t j = 0; j < horizon; ++j) {
      CHECK(b->position() == pos[i + j]);
      CHECK(same_batch(b->next(), out[i + j]));
    }
    a->seek(pos[i]);
    CHECK(same_batch(a->next(), out[i]));
  }
  a->reset();
  CHECK(same_batch(a->next(), out[0]));
}

/// The same for an ExampleStream (also across its end: nullopt must repeat).
template <class Make>
void check_example_resume(Make make, std::size_t steps, std::size_t every = 1,
                          std::size_t horizon = 3) {
  auto a = make();
  std::vector<std::vector<std::int64_t>> pos;
  std::vector<std::optional<data::Example>> out;
  for (std::size_t i = 0; i < steps + horizon; ++i) {
    pos.push_back(a->position());
    out.push_back(a->next());
  }
  for (std::size_t i = 0; i < steps; i += every) {
    auto b = make();
    b->seek(pos[i]);
    for (std::size_t j = 0; j < horizon; ++j) CHECK(same_example(b->next(), out[i + j]));
    a->seek(pos[i]);
    CHECK(same_example(a->next(), out[i]));
  }
  a->reset();
  CHECK(same_example(a->next(), out[0]));
}

}  // namespace minitrax::datatest
