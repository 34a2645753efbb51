// bench/bench_data.cpp: throughput of the data/ pipeline in tokens (bytes) per second, on
// the GNU Collaborative International Dictionary of English (Debian's dict-gcide:
// /usr/share/dictd/gcide.dict.dz, 13.5 MB of gzip, about 40 MB of text), against what the
// models consume (about 14,000 tokens/s for the TransformerLM bench model of
// docs/performance.md, less for ReformerLM).
//
// Run: ./build/release/bench/bench_data [--benchmark_filter=...]
// Another text: MINITRAX_BENCH_TEXT=/path/to/file.gz ./build/release/bench/bench_data
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "data/lm.hpp"
#include "data/sources.hpp"
#include "data/transforms.hpp"

using namespace minitrax;

namespace {

// Byte b is id b + 2 (ids 0 and 1 are pad and EOS), the byte-level tokenizer's scheme.
class Bytes final : public data::Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]) + 2;
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::string s;
    for (const auto id : ids) {
      if (id >= 2) s.push_back(static_cast<char>(id - 2));
    }
    return s;
  }
  std::int32_t vocab_size() const override { return 258; }
  std::string kind() const override { return "bytes"; }
  void save(const std::string&) const override {}
};

std::string text_path() {
  const char* p = std::getenv("MINITRAX_BENCH_TEXT");
  return p != nullptr ? p : "/usr/share/dictd/gcide.dict.dz";
}

bool have_text(benchmark::State& state) {
  if (std::filesystem::exists(text_path())) return true;
  state.SkipWithError(("no text at " + text_path() + " (apt-get install dict-gcide)").c_str());
  return false;
}

// The text decompressed once into a plain file in the temporary folder (for mmap).
const std::string& plain_copy() {
  static const std::string path = [] {
    const std::string p =
        (std::filesystem::temp_directory_path() / "minitrax-bench-gcide.txt").string();
    if (!std::filesystem::exists(p)) {
      std::ofstream out(p, std::ios::binary);
      data::for_each_text_chunk(text_path(), [&](std::string_view s) {
        out.write(s.data(), static_cast<std::streamsize>(s.size()));
      });
    }
    return p;
  }();
  return path;
}

// The LM data of the whole text, built once (tokenizing 40 MB takes a moment).
const data::LMTextData& lm_data() {
  static const data::LMTextData d = [] {
    Bytes tok;
    return data::lm_text_data({text_path()}, tok, 2048, 8, 0.01, 0);
  }();
  return d;
}

// Source reading: the text in chunks (gzip inflated as a stream, or a mapped plain file).
void BM_ReadChunks(benchmark::State& state, bool gzip) {
  if (!have_text(state)) return;
  const std::string path = gzip ? text_path() : plain_copy();
  std::size_t bytes = 0, lines = 0;
  for (auto _ : state) {
    bytes = lines = 0;
    data::for_each_text_chunk(path, [&](std::string_view s) {
      bytes += s.size();
      for (const char c : s) lines += c == '\n';
    });
    benchmark::DoNotOptimize(lines);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(bytes) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
  state.counters["MB"] = static_cast<double>(bytes) / 1e6;
}
BENCHMARK_CAPTURE(BM_ReadChunks, gzip, true)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK_CAPTURE(BM_ReadChunks, plain_mmap, false)->Unit(benchmark::kMillisecond)->Iterations(2);

// lm_text_data: reading, tokenizing (bytes) and storing the whole text once.
void BM_LMTextDataBuild(benchmark::State& state) {
  if (!have_text(state)) return;
  Bytes tok;
  std::int64_t tokens = 0;
  for (auto _ : state) {
    auto d = data::lm_text_data({text_path()}, tok, 2048, 8, 0.01, 0);
    tokens = d.train_tokens + d.eval_tokens;
    state.SetLabel(d.held);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LMTextDataBuild)->Unit(benchmark::kMillisecond)->Iterations(1);

// The training stream: random windows of 2048 tokens, 8 per batch (the lead's LM trainer).
void BM_LMWindows(benchmark::State& state) {
  if (!have_text(state)) return;
  const auto& d = lm_data();
  const auto L = static_cast<std::size_t>(state.range(0)),
             B = static_cast<std::size_t>(state.range(1));
  auto s = data::lm_windows(d.tokens, 0, static_cast<std::size_t>(d.train_tokens), L, B, 1);
  for (auto _ : state) benchmark::DoNotOptimize(s->next());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * L) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LMWindows)->Args({2048, 8})->Args({512, 8})->Args({64, 32});

// The eval stream: consecutive chunks of the held-out part.
void BM_LMChunks(benchmark::State& state) {
  if (!have_text(state)) return;
  const auto& d = lm_data();
  std::int64_t tokens = 0;
  for (auto _ : state) {
    d.eval->reset();
    for (std::int64_t k = 0; k < d.eval_batches; ++k) benchmark::DoNotOptimize(d.eval->next());
    tokens += d.eval_tokens;
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LMChunks)->Unit(benchmark::kMillisecond);

// A line pipeline on the gzip text: lines | repeat | shuffle | truncate | bucket | targets |
// weights (tokens counted are real tokens, not padding).
void BM_LinePipeline(benchmark::State& state) {
  if (!have_text(state)) return;
  auto tok = std::make_shared<Bytes>();
  auto s = data::text_lines({text_path()}, tok, true) | data::repeat() | data::shuffle(4096, 0) |
           data::truncate(256) | data::bucket_by_length({32, 64, 128, 256}, {64, 32, 16, 8}) |
           data::lm_targets() | data::add_loss_weights();
  double tokens = 0;
  for (auto _ : state) {
    data::Batch b = s->next();
    const float* w = b[2].data<float>();
    for (std::size_t i = 0; i < b[2].size(); ++i) tokens += w[i];
  }
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinePipeline)->Unit(benchmark::kMicrosecond)->MinTime(2.0);

// Resume cost: seek the line pipeline to where it was after 2000 batches.
void BM_LinePipelineSeek(benchmark::State& state) {
  if (!have_text(state)) return;
  auto tok = std::make_shared<Bytes>();
  auto make = [&] {
    return data::text_lines({text_path()}, tok, true) | data::repeat() | data::shuffle(4096, 0) |
           data::truncate(256) | data::bucket_by_length({32, 64, 128, 256}, {64, 32, 16, 8});
  };
  auto a = make();
  for (int i = 0; i < 2000; ++i) a->next();
  const auto pos = a->position();
  auto b = make();
  for (auto _ : state) b->seek(pos);
}
BENCHMARK(BM_LinePipelineSeek)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
