// data/: sources (files, globs, mmap, gzip, lines, arrays), transforms, LM windows and
// chunks, lm_text_data; determinism and bitwise resume of every stream.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>

#include "core/npy.hpp"
#include "core/rng.hpp"
#include "data/lm.hpp"
#include "data/sources.hpp"
#include "data/transforms.hpp"
#include "data_test_util.hpp"

using namespace minitrax;
using namespace minitrax::datatest;
using data::Batch;
using data::Example;

namespace {

std::shared_ptr<data::ExampleStream> numbers(std::size_t n, std::size_t len_mod = 1) {
  // example i: field 0 = [i+2, i+2, ...] of length 1 + i % len_mod
  std::vector<Example> ex;
  for (std::size_t i = 0; i < n; ++i) {
    Example e;
    e.fields.push_back(data::Sequence(1 + i % len_mod, static_cast<std::int32_t>(i + 2)));
    ex.push_back(e);
  }
  return data::from_examples(ex, "numbers");
}

std::vector<std::int32_t> drain_ids(std::shared_ptr<data::ExampleStream> s) {
  std::vector<std::int32_t> ids;
  while (auto e = s->next()) ids.push_back(e->fields[0][0]);
  return ids;
}

std::vector<std::int32_t> flat(const core::Tensor& t) {
  return t.to_vector<std::int32_t>();
}

}  // namespace

// ---------------------------------------------------------------------------
// files
// ---------------------------------------------------------------------------

TEST_CASE("list_files: a folder and a glob give sorted regular files; a file is itself") {
  TempDir d;
  for (const char* n : {"b.txt", "a.txt", "c.txt", "B.txt", "a.md", ".hidden"})
    write_bytes(d / n, n);
  fs::create_directory(d.path / "sub.txt");  // a folder that matches the glob: skipped
  write_bytes(d / "sub.txt/x.txt", "x");
  CHECK(data::list_files(d.path.string()) ==
        std::vector<std::string>{d / "B.txt", d / "a.md", d / "a.txt", d / "b.txt", d / "c.txt"});
  CHECK(data::list_files(d / "*.txt") ==
        std::vector<std::string>{d / "B.txt", d / "a.txt", d / "b.txt", d / "c.txt"});
  CHECK(data::list_files(d / "a.md") == std::vector<std::string>{d / "a.md"});
  CHECK(data::list_files(std::vector<std::string>{d / "c.txt", d / "[ab].*"}) ==
        std::vector<std::string>{d / "c.txt", d / "a.md", d / "a.txt", d / "b.txt"});
}

TEST_CASE("gzip equals plain: whole, in chunks and line by line") {
  TempDir d;
  const std::string text = sample_text(20000) + "no newline at the end ü";
  REQUIRE(text.size() > 500000);
  write_bytes(d / "t.txt", text);
  write_gzip(d / "t.txt.gz", text);
  write_gzip(d / "t.dz", text);  // the name does not matter: the magic bytes do
  CHECK_FALSE(data::is_gzip_file(d / "t.txt"));
  CHECK(data::is_gzip_file(d / "t.dz"));
  CHECK(fs::file_size(d / "t.txt.gz") < text.size() / 2);
  const auto want_lines = split_lines(text);
  for (const std::string& p : {d / "t.txt", d / "t.txt.gz", d / "t.dz"}) {
    CAPTURE(p);
    CHECK(data::read_text(p) == text);
    for (const std::size_t chunk : {std::size_t{7}, std::size_t{1000}, std::size_t{1} << 16}) {
      std::string joined;
      std::size_t pieces = 0;
      bool ok = true;
      data::for_each_text_chunk(
          p,
          [&](std::string_view s) {
            ++pieces;
            // every piece but the last fits the size and ends a line or a UTF-8 character
            if (joined.size() + s.size() < text.size()) {
              ok = ok && s.size() <= chunk && !s.empty();
              const auto next = static_cast<unsigned char>(text[joined.size() + s.size()]);
              ok = ok && (s.back() == '\n' || (next & 0xC0) != 0x80);
            }
            joined.append(s);
          },
          chunk);
      CHECK(ok);
      CHECK(joined == text);
      CHECK(pieces >= text.size() / chunk);
    }
    data::LineReader r(p);
    std::vector<std::string> lines;
    std::string line;
    while (r.next(line)) lines.push_back(line);
    CHECK(lines == want_lines);
    CHECK(r.lines_read() == static_cast<std::int64_t>(want_lines.size()));
  }
  // two gzip members one after the other (cat a.gz b.gz) are one text
  write_gzip(d / "second.gz", "second member\n");
  write_bytes(d / "both.gz", read_bytes(d / "t.txt.gz") + read_bytes(d / "second.gz"));
  CHECK(data::read_text(d / "both.gz") == text + "second member\n");
}

TEST_CASE("dict-gcide's gcide.dict.dz reads as gzip -dc gives it") {
  const std::string dz = "/usr/share/dictd/gcide.dict.dz";
  if (!fs::exists(dz) || std::system("gzip --version > /dev/null 2>&1") != 0) {
    MESSAGE("skipped: needs " << dz << " (apt-get install dict-gcide) and gzip");
    return;
  }
  TempDir d;
  REQUIRE(std::system(("gzip -dc " + dz + " > " + d / "gcide.txt").c_str()) == 0);
  const std::string want = read_bytes(d / "gcide.txt");
  REQUIRE(want.size() > 30'000'000);
  std::size_t at = 0;
  bool same = true;
  data::for_each_text_chunk(dz, [&](std::string_view s) {
    same = same && want.compare(at, s.size(), s) == 0;
    at += s.size();
  });
  CHECK(same);
  CHECK(at == want.size());
}

TEST_CASE("a plain file of 12 MB is memory-mapped: same bytes, lines and chunks") {
  TempDir d;
  std::string text;
  while (text.size() < (12u << 20))
    text += sample_text(5000, static_cast<std::uint32_t>(text.size()));
  write_bytes(d / "big.txt", text);
  data::MappedFile m(d / "big.txt");
  REQUIRE(m.bytes().size() == text.size());
  CHECK(m.bytes() == text);
  data::LineReader r(d / "big.txt");
  std::string line;
  std::int64_t n = 0;
  while (r.next(line)) ++n;
  CHECK(n == static_cast<std::int64_t>(std::count(text.begin(), text.end(), '\n')));
  std::size_t total = 0;
  data::for_each_text_chunk(d / "big.txt", [&](std::string_view s) { total += s.size(); });
  CHECK(total == text.size());
  data::MappedFile empty((write_bytes(d / "empty", ""), d / "empty"));
  CHECK(empty.bytes().empty());
}

TEST_CASE("text_lines: lines of several files (plain and gzip), resumable anywhere") {
  TempDir d;
  const std::string t1 = sample_text(40, 1), t2 = sample_text(30, 2);
  write_bytes(d / "1.txt", t1);
  write_gzip(d / "2.txt.gz", t2);
  auto tok = std::make_shared<ByteTok>();
  auto make = [&] { return data::text_lines({d / "1.txt", d / "2.txt.gz"}, tok, true); };
  // naive: the non-empty lines, encoded, + EOS
  std::vector<data::Sequence> want;
  for (const auto* t : {&t1, &t2}) {
    for (const auto& l : split_lines(*t)) {
      if (l.empty()) continue;
      auto ids = tok->encode(l);
      ids.push_back(data::eos_id);
      want.push_back(ids);
    }
  }
  auto s = make();
  std::vector<data::Sequence> got;
  while (auto e = s->next()) got.push_back(e->fields.at(0));
  CHECK(got == want);
  check_example_resume(make, want.size() + 2);
  // without skipping empty lines, every line is an example
  auto all = data::text_lines({d / "1.txt"}, tok, false, false);
  std::size_t n = 0;
  while (all->next()) ++n;
  CHECK(n == split_lines(t1).size());
}

// ---------------------------------------------------------------------------
// transforms
// ---------------------------------------------------------------------------

TEST_CASE("shuffle: each block is a permutation of its examples; seeded; resumable") {
  auto make = [](std::int64_t seed) { return numbers(95) | data::shuffle(10, seed); };
  const auto a = drain_ids(make(1)), b = drain_ids(make(1)), c = drain_ids(make(2));
  REQUIRE(a.size() == 95);
  CHECK(a == b);
  CHECK(a != c);
  for (std::size_t k = 0; k < 10; ++k) {
    std::vector<std::int32_t> block(
        a.begin() + static_cast<long>(10 * k),
        a.begin() + static_cast<long>(std::min<std::size_t>(95, 10 * k + 10)));
    std::vector<std::int32_t> sorted = block;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::int32_t> want(sorted.size());
    std::iota(want.begin(), want.end(), static_cast<std::int32_t>(10 * k + 2));
    CHECK(sorted == want);
  }
  std::vector<std::int32_t> identity(95);
  std::iota(identity.begin(), identity.end(), 2);
  CHECK(a != identity);
  check_example_resume([&] { return make(1); }, 100);
  // over epochs: repeat below shuffle, blocks span epoch ends, every epoch is complete
  auto rep = [] { return numbers(23) | data::repeat() | data::shuffle(10, 5); };
  check_example_resume(rep, 80);
  auto r = rep();
  std::map<std::int32_t, int> count;
  for (int i = 0; i < 230; ++i) ++count[r->next()->fields[0][0]];
  CHECK(count.size() == 23);
  for (const auto& [id, n] : count) CHECK(n == 10);
}

TEST_CASE("filter_by_length, truncate, pad, batch: contents as computed by hand") {
  // lengths 1..5 cyclic, example i is [i+2] * (1 + i % 5)
  auto s = numbers(20, 5) | data::filter_by_length(2, 4) | data::truncate(3);
  std::vector<data::Sequence> got;
  while (auto e = s->next()) got.push_back(e->fields[0]);
  std::vector<data::Sequence> want;
  for (std::size_t i = 0; i < 20; ++i) {
    const std::size_t len = 1 + i % 5;
    if (len >= 2 && len <= 4)
      want.emplace_back(std::min<std::size_t>(len, 3), static_cast<std::int32_t>(i + 2));
  }
  CHECK(got == want);

  auto padded = numbers(4, 5) | data::pad(6);
  while (auto e = padded->next()) {
    REQUIRE(e->fields[0].size() == 6);
  }
  // batch: pad to the longest (rounded to a multiple of 4), last batch smaller
  auto b = numbers(7, 5) | data::batch(3, 0, 4) | data::lm_targets() | data::add_loss_weights() |
           data::add_padding_mask();
  Batch b0 = b->next();
  REQUIRE(b0.size() == 4);  // inputs, mask, targets, weights
  CHECK(b0[0].shape() == Shape{3, 4});
  CHECK(flat(b0[0]) == std::vector<std::int32_t>{2, 0, 0, 0, 3, 3, 0, 0, 4, 4, 4, 0});
  CHECK(flat(b0[1]) == std::vector<std::int32_t>{1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0});
  CHECK(core::equal(b0[2], b0[0]));
  CHECK(b0[3].dtype() == DType::f32);
  CHECK(b0[3].to_vector<float>() == std::vector<float>{1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0});
  Batch b1 = b->next();
  CHECK(b1[0].shape() == Shape{3, 8});  // lengths 4, 5, 1 -> 5 -> 8
  Batch b2 = b->next();
  CHECK(b2[0].shape() == Shape{1, 4});  // what is left: one example of length 2
  CHECK_THROWS_AS(b->next(), core::ValueError);
  b->reset();
  CHECK(same_batch(b->next(), b0));
  auto fixed = numbers(6, 5) | data::batch(2, 5, 1, true);
  CHECK(fixed->next()[0].shape() == Shape{2, 5});
}

TEST_CASE("split: train and eval are disjoint, cover the stream, and keep their share") {
  const std::size_t n = 2000;
  auto part = [&](data::Part p, std::int64_t seed) {
    return drain_ids(numbers(n) | data::split(p, 0.2, seed));
  };
  const auto tr = part(data::Part::train, 3), ev = part(data::Part::eval, 3);
  std::set<std::int32_t> all(tr.begin(), tr.end());
  for (const auto id : ev) CHECK(all.insert(id).second);  // disjoint
  CHECK(all.size() == n);                                 // covering
  CHECK(ev.size() > 340);
  CHECK(ev.size() < 460);
  CHECK(std::is_sorted(tr.begin(), tr.end()));  // order kept
  CHECK(part(data::Part::eval, 3) == ev);       // deterministic
  CHECK(part(data::Part::eval, 4) != ev);       // the seed matters
  check_example_resume([] { return numbers(50) | data::split(data::Part::eval, 0.3, 1); }, 20);
}

TEST_CASE("concatenate_and_chunk: consecutive pieces of the concatenation, resumable") {
  auto make = [] { return numbers(30, 7) | data::concatenate_and_chunk(5, true); };
  data::Sequence all;
  for (std::size_t i = 0; i < 30; ++i) {
    all.insert(all.end(), 1 + i % 7, static_cast<std::int32_t>(i + 2));
    all.push_back(data::eos_id);
  }
  auto s = make();
  data::Sequence joined;
  std::size_t pieces = 0;
  while (auto e = s->next()) {
    const auto& f = e->fields[0];
    CHECK((f.size() == 5 || joined.size() + f.size() == all.size()));
    joined.insert(joined.end(), f.begin(), f.end());
    ++pieces;
  }
  CHECK(joined == all);
  CHECK(pieces == (all.size() + 4) / 5);
  check_example_resume(make, pieces + 1);
}

TEST_CASE("bucket_by_length: every example once, in the right bucket, resumable") {
  // 103 examples of lengths 1..20
  auto make = [](std::size_t block) {
    return numbers(103, 20) | data::bucket_by_length({4, 10, 20}, {5, 3, 2}, block) |
           data::lm_targets() | data::add_loss_weights();
  };
  for (const std::size_t block : {std::size_t{1}, std::size_t{17}, std::size_t{1000}}) {
    CAPTURE(block);
    auto s = make(block);
    std::multiset<std::int32_t> seen;
    for (;;) {
      Batch b;
      try {
        b = s->next();
      } catch (const core::ValueError&) {
        break;
      }
      const std::size_t L = b[0].dim(1), rows = b[0].dim(0);
      REQUIRE((L == 4 || L == 10 || L == 20));
      const std::size_t lo = L == 4 ? 1 : L == 10 ? 5 : 11;
      CHECK(rows <= (L == 4 ? 5u : L == 10 ? 3u : 2u));
      const auto w = b[2].to_vector<float>();
      for (std::size_t r = 0; r < rows; ++r) {
        const std::int32_t id = b[0].data<std::int32_t>()[r * L];
        seen.insert(id);
        const std::size_t len = 1 + static_cast<std::size_t>(id - 2) % 20;
        CHECK(len >= lo);
        CHECK(len <= L);
        for (std::size_t j = 0; j < L; ++j) CHECK(w[r * L + j] == (j < len ? 1.0f : 0.0f));
      }
    }
    CHECK(seen.size() == 103);
    CHECK(std::set<std::int32_t>(seen.begin(), seen.end()).size() == 103);
  }
  auto endless = [] {
    return numbers(41, 20) | data::repeat() | data::shuffle(16, 9) |
           data::bucket_by_length({4, 10, 20}, {5, 3, 2}, 25);
  };
  check_batch_resume(endless, 60);
}

TEST_CASE("a whole text pipeline resumes bitwise at every step, across epochs") {
  TempDir d;
  write_bytes(d / "a.txt", sample_text(60, 7));
  write_gzip(d / "b.txt.gz", sample_text(50, 8));
  auto tok = std::make_shared<ByteTok>();
  auto make = [&] {
    return data::text_lines({d / "*.txt*"}, tok, true) | data::split(data::Part::train, 0.1, 1) |
           data::repeat() | data::shuffle(8, 2) | data::filter_by_length(2, 200) |
           data::truncate(40) | data::batch(4, 0, 8) | data::lm_targets() |
           data::add_loss_weights();
  };
  check_batch_resume(make, 70);  // about 3 epochs
  // another seed: other batches
  auto other = data::text_lines({d / "*.txt*"}, tok, true) | data::repeat() | data::shuffle(8, 3) |
               data::truncate(40) | data::batch(4, 0, 8);
  auto same = data::text_lines({d / "*.txt*"}, tok, true) | data::repeat() | data::shuffle(8, 2) |
              data::truncate(40) | data::batch(4, 0, 8);
  CHECK_FALSE(same_batch(other->next(), same->next()));
}

TEST_CASE("composition: pieces of pipeline compose with | before they meet a stream") {
  const data::ExampleTransform prep = data::shuffle(5, 1) | data::truncate(2);
  const data::Batcher to_batches = prep | data::batch(4) | data::lm_targets();
  auto a = numbers(12, 4) | to_batches;
  auto b = numbers(12, 4) | data::shuffle(5, 1) | data::truncate(2) | data::batch(4) |
           data::lm_targets();
  for (int i = 0; i < 3; ++i) CHECK(same_batch(a->next(), b->next()));
  CHECK(a->describe() == "numbers | shuffle(5, seed 1) | truncate(2) | batch(4) | lm_targets");
}

// ---------------------------------------------------------------------------
// step functions and arrays
// ---------------------------------------------------------------------------

TEST_CASE("from_step_function: batch k is f(k); position is {k}") {
  const core::Key key = core::key_from_seed(4);
  auto make = [key] {
    return data::from_step_function(
        [key](long step) {
          return Batch{
              core::randint(core::fold_in(key, static_cast<std::uint32_t>(step)), {2, 8}, 2, 10)};
        },
        "random ids");
  };
  auto s = make();
  for (long k = 0; k < 4; ++k) {
    CHECK(s->position() == std::vector<std::int64_t>{k});
    CHECK(core::equal(s->next()[0], core::randint(core::fold_in(key, static_cast<std::uint32_t>(k)),
                                                  {2, 8}, 2, 10)));
  }
  check_batch_resume(make, 10);
}

TEST_CASE("array_batches from .npz: rows in order, or shuffled per epoch; resumable") {
  TempDir d;
  const std::size_t N = 10;
  std::vector<float> xs(N * 3);
  std::iota(xs.begin(), xs.end(), 0.0f);
  std::vector<std::int64_t> ys(N);
  std::iota(ys.begin(), ys.end(), 100);
  core::save_npz(d / "xy.npz", {{"x", core::Tensor::from<float>({N, 3}, xs)},
                                {"y", core::Tensor::from<std::int64_t>({N}, ys)}});
  const auto arrays = data::load_arrays(d / "xy.npz", {"y", "x"});
  REQUIRE(arrays.size() == 2);
  auto plain = data::array_batches(arrays, 4);
  Batch b0 = plain->next();
  CHECK(b0[0].to_vector<std::int64_t>() == std::vector<std::int64_t>{100, 101, 102, 103});
  CHECK(b0[1].shape() == Shape{4, 3});
  plain->next();
  Batch b2 = plain->next();
  CHECK(b2[0].to_vector<std::int64_t>() == std::vector<std::int64_t>{108, 109});
  CHECK_THROWS_AS(plain->next(), core::ValueError);

  auto make = [&] { return data::array_batches(arrays, 3, 7, true); };
  auto s = make();
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<std::int64_t> seen;
    for (int i = 0; i < 3; ++i) {  // 3 full batches of 3 per epoch of 10 rows
      Batch b = s->next();
      const auto y = b[0].to_vector<std::int64_t>();
      const auto x = b[1].to_vector<float>();
      for (std::size_t r = 0; r < 3; ++r) {
        CHECK(seen.insert(y[r]).second);
        CHECK(x[3 * r] == static_cast<float>(3 * (y[r] - 100)));  // rows stay together
      }
    }
  }
  check_batch_resume(make, 12);
  auto other = data::array_batches(arrays, 3, 8, true);
  CHECK_FALSE(same_batch(other->next(), make()->next()));
}

// ---------------------------------------------------------------------------
// language-model windows and chunks
// ---------------------------------------------------------------------------

TEST_CASE("TokenStore keeps ids in 1, 2 or 4 bytes by vocabulary size") {
  CHECK(data::TokenStore(256).bytes_per_token() == 1);
  CHECK(data::TokenStore(258).bytes_per_token() == 2);
  CHECK(data::TokenStore(65536).bytes_per_token() == 2);
  CHECK(data::TokenStore(65537).bytes_per_token() == 4);
  data::TokenStore t(300);
  t.append({0, 299, 5});
  std::vector<std::int32_t> out(3);
  t.copy(0, 3, out.data());
  CHECK(out == std::vector<std::int32_t>{0, 299, 5});
  CHECK(t.describe() == "3 tokens as uint16 (0.0 MB)");
}

TEST_CASE("lm_windows: each row is a window of the range, found by a naive search") {
  // random ids in [2, 258): every window of 16 is unique
  const std::size_t n = 6000, L = 16, B = 4;
  const auto ids = core::randint(core::key_from_seed(0), {n}, 2, 258).to_vector<std::int32_t>();
  auto store = std::make_shared<data::TokenStore>(258);
  store->append(ids);
  const std::size_t begin = 1000, end = 5000;
  auto make = [&](std::int64_t seed) { return data::lm_windows(store, begin, end, L, B, seed); };
  auto s = make(3);
  std::size_t lo = n, hi = 0;
  std::set<std::size_t> starts;
  for (int k = 0; k < 200; ++k) {
    Batch b = s->next();
    REQUIRE(b.size() == 3);
    CHECK(b[0].shape() == Shape{B, L});
    CHECK(core::equal(b[0], b[1]));
    CHECK(b[2].to_vector<float>() == std::vector<float>(B * L, 1.0f));
    const auto x = flat(b[0]);
    for (std::size_t r = 0; r < B; ++r) {
      std::size_t found = n;
      for (std::size_t st = 0; st + L <= n; ++st) {
        if (std::equal(x.begin() + static_cast<long>(r * L),
                       x.begin() + static_cast<long>(r * L + L),
                       ids.begin() + static_cast<long>(st))) {
          found = st;
          break;
        }
      }
      REQUIRE(found < n);
      CHECK(found >= begin);
      CHECK(found + L <= end);
      lo = std::min(lo, found);
      hi = std::max(hi, found);
      starts.insert(found);
    }
  }
  CHECK(lo < begin + 100);  // 800 uniform draws reach both ends of the range
  CHECK(hi > end - L - 100);
  CHECK(starts.size() > 600);
  CHECK_FALSE(same_batch(make(3)->next(), make(4)->next()));
  check_batch_resume([&] { return make(3); }, 20);
  // random access: batch 1000 directly
  auto a = make(3), b = make(3);
  for (int k = 0; k < 1000; ++k) a->next();
  b->seek({1000});
  CHECK(same_batch(a->next(), b->next()));
}

TEST_CASE("lm_chunks: consecutive chunks, last one padded with weight 0, same after reset") {
  const std::size_t n = 107;
  std::vector<std::int32_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>(2 + i % 250);
  auto store = std::make_shared<data::TokenStore>(258);
  store->append(ids);
  auto s = data::lm_chunks(store, 7, n, 10, 4);  // 100 tokens: 10 chunks: batches of 4, 4, 2
  std::vector<std::int32_t> got;
  std::vector<Batch> first;
  std::size_t weight_sum = 0;
  for (int k = 0; k < 3; ++k) {
    Batch b = s->next();
    first.push_back(b);
    CHECK(b[0].dim(0) == (k < 2 ? 4u : 2u));
    const auto x = flat(b[0]);
    got.insert(got.end(), x.begin(), x.end());
    for (float w : b[2].to_vector<float>()) weight_sum += static_cast<std::size_t>(w);
  }
  CHECK(got == std::vector<std::int32_t>(ids.begin() + 7, ids.end()));
  CHECK(weight_sum == 100);
  CHECK_THROWS_AS(s->next(), core::ValueError);
  s->reset();
  for (int k = 0; k < 3; ++k) CHECK(same_batch(s->next(), first[static_cast<std::size_t>(k)]));
  // a partial last chunk: 103 tokens -> 11 chunks, the last of 3 tokens and 7 pads
  auto p = data::lm_chunks(store, 4, n, 10, 11);
  Batch b = p->next();
  const auto w = b[2].to_vector<float>();
  const auto x = flat(b[0]);
  for (std::size_t j = 0; j < 10; ++j) {
    CHECK(w[100 + j] == (j < 3 ? 1.0f : 0.0f));
    CHECK(x[100 + j] == (j < 3 ? ids[104 + j] : 0));
  }
}

TEST_CASE("lm_text_data: a held-out tail from a line start, counts for bits per character") {
  TempDir d;
  const std::string t1 = sample_text(300, 11), t2 = sample_text(200, 12);
  write_bytes(d / "a.txt", t1);
  write_gzip(d / "b.txt.gz", t2);
  ByteTok tok;
  const std::size_t L = 64, B = 3;
  data::LMTextData lm = data::lm_text_data({d / "a.txt", d / "b.txt.gz"}, tok, L, B, 0.1, 5);
  CHECK(lm.files == std::vector<std::string>{d / "a.txt", d / "b.txt.gz"});
  // all tokens: text 1, EOS, text 2
  std::vector<std::int32_t> want = tok.encode(t1);
  want.push_back(data::eos_id);
  const auto e2 = tok.encode(t2);
  want.insert(want.end(), e2.begin(), e2.end());
  REQUIRE(lm.tokens->size() == want.size());
  std::vector<std::int32_t> all(want.size());
  lm.tokens->copy(0, all.size(), all.data());
  CHECK(all == want);
  CHECK(lm.held == std::to_string(want.size()) + " tokens as uint16 (" + [&] {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", want.size() * 2 / 1e6);
    return std::string(b);
  }() + " MB)");
  // the held-out part starts a line, near 90%, and its counts are its text's
  const std::size_t split = static_cast<std::size_t>(lm.train_tokens);
  CHECK(split + static_cast<std::size_t>(lm.eval_tokens) == want.size());
  CHECK(all[split - 1] == '\n' + 2);
  CHECK(std::abs(static_cast<double>(lm.eval_tokens) - 0.1 * want.size()) < 200);
  const std::string held = t2.substr(t2.size() - static_cast<std::size_t>(lm.eval_bytes));
  CHECK(tok.encode(held) ==
        std::vector<std::int32_t>(all.begin() + static_cast<long>(split), all.end()));
  std::size_t chars = 0;
  for (unsigned char c : held) chars += (c & 0xC0) != 0x80;
  CHECK(lm.eval_characters == static_cast<std::int64_t>(chars));
  CHECK(lm.eval_characters < lm.eval_bytes);  // the text has multi-byte characters
  CHECK(lm.bits_per_character(std::log(2.0)) ==
        doctest::Approx(static_cast<double>(lm.eval_tokens) / static_cast<double>(chars)));
  // eval: the held-out tokens in order, padded, the same after reset
  std::vector<std::int32_t> ev;
  double wsum = 0;
  std::vector<Batch> pass;
  for (std::int64_t k = 0; k < lm.eval_batches; ++k) {
    Batch b = lm.eval->next();
    pass.push_back(b);
    const auto x = flat(b[0]);
    const auto w = b[2].to_vector<float>();
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (w[i] > 0) ev.push_back(x[i]);
      wsum += w[i];
    }
  }
  CHECK_THROWS_AS(lm.eval->next(), core::ValueError);
  CHECK(ev == std::vector<std::int32_t>(all.begin() + static_cast<long>(split), all.end()));
  CHECK(wsum == static_cast<double>(lm.eval_tokens));
  lm.eval->reset();
  for (const auto& b : pass) CHECK(same_batch(lm.eval->next(), b));
  // train: windows inside the training part (every row found there)
  for (int k = 0; k < 20; ++k) {
    const auto x = flat(lm.train->next()[0]);
    for (std::size_t r = 0; r < B; ++r) {
      const auto it = std::search(all.begin(), all.begin() + static_cast<long>(split),
                                  x.begin() + static_cast<long>(r * L),
                                  x.begin() + static_cast<long>(r * L + L));
      CHECK(it != all.begin() + static_cast<long>(split));
    }
  }
  // the same call gives the same streams
  data::LMTextData again = data::lm_text_data({d / "*.tx*"}, tok, L, B, 0.1, 5);
  lm.train->reset();
  for (int k = 0; k < 5; ++k) CHECK(same_batch(again.train->next(), lm.train->next()));
  check_batch_resume(
      [&] {
        return data::lm_text_data({d / "a.txt", d / "b.txt.gz"}, tok, L, B, 0.1, 5).train;
      },
      8);
}

TEST_CASE("lm_text_data: text without line ends is still split near the fraction asked") {
  TempDir d;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += (i % 3 ? "ab " : "λx ");  // one line of 66 KB
  write_bytes(d / "one_line.txt", text);
  ByteTok tok;
  data::LMTextData lm = data::lm_text_data({d / "one_line.txt"}, tok, 256, 4, 0.2, 0);
  const double n = static_cast<double>(lm.train_tokens + lm.eval_tokens);
  CHECK(n == static_cast<double>(text.size()));
  CHECK(std::abs(static_cast<double>(lm.eval_tokens) - 0.2 * n) < 4096);
  // the held-out text starts after a space and its counts are its own
  const std::string held = text.substr(static_cast<std::size_t>(lm.train_tokens));
  CHECK(text[static_cast<std::size_t>(lm.train_tokens) - 1] == ' ');
  CHECK(lm.eval_bytes == static_cast<std::int64_t>(held.size()));
  std::size_t chars = 0;
  for (unsigned char c : held) chars += (c & 0xC0) != 0x80;
  CHECK(lm.eval_characters == static_cast<std::int64_t>(chars));
}
