// data/: every bad input gives a clear error: the exception type and the exact message
// (docs/errors_data.md lists them; MINITRAX_PRINT_ERRORS=1 prints them).
#include <doctest/doctest.h>

#include "core/npy.hpp"
#include "data/lm.hpp"
#include "data/sources.hpp"
#include "data/transforms.hpp"
#include "data_test_util.hpp"
#include "test_util.hpp"

using namespace minitrax;
using namespace minitrax::datatest;
using testutil::observe;

namespace {

// Runs f, prints the message with the temporary folder shown as <tmp>, and checks the
// exception type and the message.
template <class E, class F>
void expect(const std::string& id, const TempDir& d, F&& f, const std::string& message) {
  const std::string tmp = d.path.string();
  auto o = observe(id, std::forward<F>(f), [&](std::string s) {
    for (std::size_t p; (p = s.find(tmp)) != std::string::npos;) s.replace(p, tmp.size(), "<tmp>");
    return s;
  });
  CAPTURE(id);
  REQUIRE(o.thrown);
  CHECK(o.type == testutil::type_name(typeid(E)));
  CHECK(o.what == message);
}

std::shared_ptr<data::ExampleStream> examples(std::vector<std::size_t> lengths) {
  std::vector<data::Example> ex;
  for (const auto n : lengths) ex.push_back(data::Example{{data::Sequence(n, 7)}});
  return data::from_examples(ex, "examples");
}

}  // namespace

TEST_CASE("D01 files: a missing path, a glob that matches nothing, an empty folder, a folder") {
  TempDir d;
  expect<core::FileError>(
      "D01a", d, [&] { data::list_files(d / "none.txt"); },
      d / "none.txt" + ": cannot open: No such file or directory");
  expect<core::FileError>(
      "D01b", d, [&] { data::list_files(d / "*.none"); },
      "glob '" + d / "*.none" + "' matches no file");
  fs::create_directory(d.path / "empty");
  expect<core::FileError>(
      "D01c", d, [&] { data::list_files(d / "empty"); },
      "folder '" + d / "empty" + "' holds no regular file");
  expect<core::FileError>(
      "D01d", d, [&] { data::read_text(d / "empty"); },
      d / "empty" + ": cannot read: it is a folder");
}

TEST_CASE("D02 gzip: truncated, corrupt, a bad checksum") {
  TempDir d;
  const std::string text = sample_text(3000);
  write_gzip(d / "t.gz", text);
  const std::string gz = read_bytes(d / "t.gz");
  // cut after the 10-byte header: no text at all
  write_bytes(d / "header.gz", gz.substr(0, 10));
  expect<core::FileError>(
      "D02a", d, [&] { data::read_text(d / "header.gz"); },
      d / "header.gz" +
          ": truncated gzip data: the compressed stream ends after 0 bytes of "
          "text (unexpected end of file)");
  // cut in the middle: some text, then the end
  write_bytes(d / "half.gz", gz.substr(0, gz.size() / 2));
  const std::string tmp = d.path.string();
  auto o = observe(
      "D02b", [&] { data::read_text(d / "half.gz"); },
      [&](std::string s) { return s.replace(s.find(tmp), tmp.size(), "<tmp>"); });
  REQUIRE(o.thrown);
  CHECK(o.type == "minitrax::core::FileError");
  const std::string head =
      d / "half.gz" + ": truncated gzip data: the compressed stream ends after ";
  const std::string tail = " bytes of text (unexpected end of file)";
  REQUIRE(o.what.size() > head.size() + tail.size());
  CHECK(o.what.substr(0, head.size()) == head);
  CHECK(o.what.substr(o.what.size() - tail.size()) == tail);
  const std::size_t n = std::stoul(o.what.substr(head.size()));
  CHECK(n > 0);
  CHECK(n < text.size());
  // the CRC-32 of the trailer flipped: all text read, then the check fails
  std::string bad_crc = gz;
  bad_crc[gz.size() - 8] = static_cast<char>(bad_crc[gz.size() - 8] ^ 0x55);
  write_bytes(d / "crc.gz", bad_crc);
  expect<core::FileError>(
      "D02c", d, [&] { data::read_text(d / "crc.gz"); },
      d / "crc.gz" + ": corrupt gzip data after " + std::to_string(text.size()) +
          " bytes of text (incorrect data check)");
  // a gzip header followed by bytes that are not deflate data
  write_bytes(d / "junk.gz", gz.substr(0, 10) + std::string("\xff\xff\xff\xff\xff\xff", 6));
  expect<core::FileError>(
      "D02d", d, [&] { data::read_text(d / "junk.gz"); },
      d / "junk.gz" + ": corrupt gzip data after 0 bytes of text (invalid block type)");
  // the same through the line reader and lm_text_data
  ByteTok tok;
  expect<core::FileError>(
      "D02e", d, [&] { data::lm_text_data({d / "crc.gz"}, tok, 8, 2, 0.1, 0); },
      d / "crc.gz" + ": corrupt gzip data after " + std::to_string(text.size()) +
          " bytes of text (incorrect data check)");
  auto lines = data::text_lines({d / "header.gz"}, std::make_shared<ByteTok>());
  expect<core::FileError>(
      "D02f", d, [&] { lines->next(); },
      d / "header.gz" +
          ": truncated gzip data: the compressed stream ends after 0 bytes of "
          "text (unexpected end of file)");
}

TEST_CASE("D03 lm_text_data: empty files, too little text, parts smaller than a window") {
  TempDir d;
  ByteTok tok;
  write_bytes(d / "empty.txt", "");
  expect<core::FileError>(
      "D03a", d, [&] { data::lm_text_data({d / "empty.txt"}, tok, 8, 2, 0.1, 0); },
      d / "empty.txt" + ": the file holds no text (0 bytes); remove it or give other files");
  write_gzip(d / "empty.gz", "");
  write_bytes(d / "some.txt", "some text\n");
  expect<core::FileError>(
      "D03b", d,
      [&] {
        data::lm_text_data({d / "some.txt", d / "empty.gz"}, tok, 2, 1, 0.5, 0);
      },
      d / "empty.gz" + ": the file holds no text (0 bytes); remove it or give other files");
  write_bytes(d / "small.txt", std::string(100, 'a'));
  expect<core::ValueError>(
      "D03c", d, [&] { data::lm_text_data({d / "small.txt"}, tok, 2048, 8, 0.1, 0); },
      "lm_text_data: '" + d / "small.txt" +
          "' holds 100 tokens (100 bytes of text), too few for a training part and a held-out "
          "part of at least one window of 2048 tokens each (4096 tokens); use a window of at most "
          "50 tokens or more text");
  // 1000 lines of 9 characters + '\n': 10000 tokens
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "abcdefghi\n";
  write_bytes(d / "lines.txt", text);
  expect<core::ValueError>(
      "D03d", d, [&] { data::lm_text_data({d / "lines.txt"}, tok, 2048, 8, 0.05, 0); },
      "lm_text_data: the held-out part (the last 5% of '" + d / "lines.txt" +
          "', from a line start) holds 500 tokens, fewer than one window of 2048 tokens; use an "
          "eval_fraction of at least 0.215 or a window of at most 500 tokens");
  expect<core::ValueError>(
      "D03e", d, [&] { data::lm_text_data({d / "lines.txt"}, tok, 2048, 8, 0.9, 0); },
      "lm_text_data: the training part (the first 10% of '" + d / "lines.txt" +
          "', up to a line start) holds 1000 tokens, fewer than one window of 2048 tokens; use "
          "an eval_fraction of at most 0.785 or a window of at most 1000 tokens");
  expect<core::ValueError>(
      "D03f", d, [&] { data::lm_text_data({d / "lines.txt"}, tok, 0, 8, 0.1, 0); },
      "lm_text_data: window must be >= 1 token, got 0");
  expect<core::ValueError>(
      "D03g", d, [&] { data::lm_text_data({d / "lines.txt"}, tok, 64, 8, 1.5, 0); },
      "lm_text_data: eval_fraction must be in (0, 1), got 1.5");
  expect<core::FileError>(
      "D03h", d, [&] { data::lm_text_data({d / "*.none"}, tok, 64, 8, 0.1, 0); },
      "glob '" + d / "*.none" + "' matches no file");
}

TEST_CASE("D04 transforms: lengths that do not fit, bad settings, finite streams that end") {
  TempDir d;
  expect<core::ValueError>(
      "D04a", d,
      [&] {
        (examples({3, 30}) | data::bucket_by_length({8, 16}, {2, 2}))->next();
      },
      "bucket_by_length: an example of 30 tokens is longer than the last boundary 16 (from "
      "examples); truncate or filter_by_length first");
  expect<core::ValueError>(
      "D04b", d,
      [&] {
        data::bucket_by_length({8, 16}, {2});
      },
      "bucket_by_length: 2 boundaries but 1 batch sizes (one per bucket)");
  expect<core::ValueError>(
      "D04c", d,
      [&] {
        data::bucket_by_length({16, 8}, {2, 2});
      },
      "bucket_by_length: boundaries must be positive and increasing, got "
      "[16, 8]");
  expect<core::ValueError>(
      "D04d", d,
      [&] {
        (examples({3, 12}) | data::batch(2, 8))->next();
      },
      "batch: an example of 12 tokens is longer than the padded length 8; "
      "truncate(8) or filter_by_length first");
  expect<core::ValueError>(
      "D04e", d, [&] { (examples({12}) | data::pad(8))->next(); },
      "pad: an example of 12 tokens is longer than the padded length 8 (from "
      "examples); truncate(8) first");
  auto s = examples({3}) | data::batch(2);
  s->next();
  expect<core::ValueError>(
      "D04f", d, [&] { s->next(); },
      "examples | batch(2): no more batches (the examples ran out); reset() to "
      "start again");
  expect<core::ValueError>(
      "D04g", d, [&] { (examples({}) | data::repeat())->next(); },
      "repeat: examples has no examples to repeat");
  expect<core::ValueError>(
      "D04h", d, [&] { data::shuffle(0, 1); }, "shuffle: buffer_size must be >= 1, got 0");
  expect<core::ValueError>(
      "D04i", d, [&] { data::split(data::Part::eval, 1.0, 1); },
      "split: eval_fraction must be in (0, 1), got 1");
  expect<core::ValueError>(
      "D04j", d, [&] { data::filter_by_length(5, 2); },
      "filter_by_length: min_length 5 exceeds max_length 2");
  auto store = std::make_shared<data::TokenStore>(10);
  store->append({2, 3, 4, 5, 6});
  auto chunks = data::lm_chunks(store, 0, 5, 4, 2);
  chunks->next();
  expect<core::ValueError>(
      "D04k", d, [&] { chunks->next(); },
      "LM chunks of 4 tokens (batch 2) of tokens [0, 5): no more batches "
      "after 1; reset() to start again");
  expect<core::ValueError>(
      "D04l", d, [&] { data::lm_windows(store, 0, 5, 8, 2, 0); },
      "lm_windows: the range [0, 5) holds 5 tokens, fewer than one window of 8");
  expect<core::ValueError>(
      "D04m", d, [&] { store->append({10}); },
      "TokenStore: id 10 is outside [0, 10) (the tokenizer's vocab_size)");
}

TEST_CASE("D05 seek to a position that cannot belong to the stream") {
  TempDir d;
  auto s = examples({1, 2, 3}) | data::shuffle(4, 1) | data::batch(2);
  expect<core::ValueError>(
      "D05a", d, [&] { s->seek({0}); },
      "seek: position [0] does not belong to examples | shuffle(4, seed 1): "
      "expected at least 2 values, got 1");
  expect<core::ValueError>(
      "D05b", d,
      [&] {
        s->seek({0, 0, 9});
      },
      "seek: position [9] does not belong to examples: the index must be in "
      "[0, 3]");
  auto store = std::make_shared<data::TokenStore>(10);
  store->append({2, 3, 4, 5, 6});
  auto w = data::lm_windows(store, 0, 5, 2, 2, 0);
  expect<core::ValueError>(
      "D05c", d, [&] { w->seek({-1}); },
      "seek: position [-1] does not belong to LM windows of 2 tokens (batch 2, "
      "seed 0) of tokens [0, 5): the batch index must be >= 0");
  write_bytes(d / "two.txt", "a\nb\n");
  auto lines = data::text_lines({d / "two.txt"}, std::make_shared<ByteTok>());
  expect<core::ValueError>(
      "D05d", d,
      [&] {
        lines->seek({0, 5});
      },
      "seek: position [0, 5] does not belong to lines of '" + d / "two.txt" +
          "': " + d / "two.txt" + " has only 2 lines");
}

TEST_CASE("D06 arrays: a missing member, first extents that differ") {
  TempDir d;
  core::save_npz(d / "a.npz",
                 {{"x", core::Tensor::zeros({4, 2})}, {"y", core::Tensor::zeros({3})}});
  expect<core::ValueError>(
      "D06a", d, [&] { data::load_arrays(d / "a.npz", {"z"}); },
      "load_arrays: " + d / "a.npz" + " has no array 'z' (it holds 'x', 'y')");
  expect<core::ShapeError>(
      "D06b", d, [&] { data::array_batches(data::load_arrays(d / "a.npz"), 2); },
      "array_batches: the arrays must share their first extent: array 0 is "
      "[4, 2], array 1 is [3]");
}
