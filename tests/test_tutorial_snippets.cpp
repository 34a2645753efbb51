// tests/test_tutorial_snippets.cpp: every C++ snippet of docs/tutorial.md, compiled and
// run here, and checked to be word for word what the tutorial shows (the first test
// reads docs/tutorial.md and finds each ```cpp block in this file, line by line, leading
// and trailing spaces aside). The snippets sit between "clang-format off/on" so that
// formatting this file keeps them as written.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.hpp"

// clang-format off
#include "minitrax.hpp"
using namespace minitrax;

Tensor train_save_load_sample(const std::string& dir, const Tensor& prompts) {
  models::TransformerLMOptions lm{.vocab_size = 16, .d_model = 64, .d_ff = 128, .n_layers = 2,
                                  .n_heads = 4, .dropout = 0.0, .max_len = 32};
  training::Loop loop(models::TransformerLM(lm),
                      {.stream = training::copy_task_stream(core::key_from_seed(1), 16, 32, 16),
                       .loss = training::WeightedCategoryCrossEntropy(),
                       .optimizer = std::make_shared<training::Adam>(),
                       .lr_schedule = training::constant(3e-3)},
                      {}, {.output_dir = dir});
  loop.run(300);                                    // ends with dir/ckpt_000000300.npz
  lm.mode = base::Mode::predict;                    // one position per call, with caches
  auto sampler = models::TransformerLM(lm);
  sampler->init({{{prompts.dim(0), 1}, DType::i32}});
  training::load_weights(*sampler, dir);            // the newest checkpoint's weights
  return models::autoregressive_sample(*sampler, prompts, 32 - static_cast<long>(prompts.dim(1)));
}
// clang-format on

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  const auto b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(trim(line));
  return out;
}

// The fenced blocks of a Markdown text whose info string is `lang` ("" for none).
std::vector<std::string> fenced_blocks(const std::string& md, const std::string& lang) {
  std::vector<std::string> blocks;
  std::istringstream in(md);
  std::string line, block;
  bool inside = false, wanted = false;
  while (std::getline(in, line)) {
    if (line.rfind("```", 0) == 0) {
      if (!inside) {
        inside = true;
        wanted = trim(line.substr(3)) == lang;
        block.clear();
      } else {
        inside = false;
        if (wanted) blocks.push_back(block);
      }
    } else if (inside) {
      block += line + "\n";
    }
  }
  return blocks;
}

// Whether `needle`'s lines occur consecutively among `hay`'s (both trimmed).
bool contains_lines(const std::vector<std::string>& hay, const std::vector<std::string>& needle) {
  if (needle.empty()) return true;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (std::equal(needle.begin(), needle.end(), hay.begin() + static_cast<long>(i))) return true;
  }
  return false;
}

// "(created at any/path.cpp:123)" -> "(created at FILE:LINE)". (By hand: GCC 12's
// <regex> gives -Wmaybe-uninitialized false positives under the sanitizers.)
std::string without_places(const std::string& s) {
  static const std::string open = "(created at ";
  std::string out;
  std::size_t at = 0;
  for (std::size_t p = s.find(open); p != std::string::npos; p = s.find(open, at)) {
    const std::size_t close = s.find(')', p);
    if (close == std::string::npos) break;
    out += s.substr(at, p - at) + open + "FILE:LINE)";
    at = close + 1;
  }
  return out + s.substr(at);
}

// Runs a test body in a fresh temporary folder as the working directory (the tutorial's
// runs/copy is relative), and goes back and removes it afterwards.
struct InTempDir {
  fs::path old, dir;
  explicit InTempDir(const std::string& tag) {
    old = fs::current_path();
    dir =
        fs::temp_directory_path() / ("minitrax_tutorial_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::current_path(dir);
  }
  ~InTempDir() {
    fs::current_path(old);
    fs::remove_all(dir);
  }
};

// Sends std::cout to a string while it lives (the Loop's progress lines).
struct CaptureCout {
  std::ostringstream text;
  std::streambuf* old;
  CaptureCout() : old(std::cout.rdbuf(text.rdbuf())) {}
  ~CaptureCout() { std::cout.rdbuf(old); }
  CaptureCout(const CaptureCout&) = delete;
  CaptureCout& operator=(const CaptureCout&) = delete;
};

const std::string kTutorial = std::string(MINITRAX_SOURCE_DIR) + "/docs/tutorial.md";

}  // namespace

TEST_CASE("tutorial: every cpp block of docs/tutorial.md is in this file, word for word") {
  const auto blocks = fenced_blocks(read_text(kTutorial), "cpp");
  CHECK(blocks.size() >= 8);
  const auto here =
      lines_of(read_text(std::string(MINITRAX_SOURCE_DIR) + "/tests/test_tutorial_snippets.cpp"));
  for (const std::string& block : blocks) {
    CAPTURE(block);
    CHECK(contains_lines(here, lines_of(block)));
  }
}

TEST_CASE("tutorial 1-2: the task, the model by hand and as TransformerLM, init and apply") {
  const Key key = core::key_from_seed(0);
  // clang-format off
auto train_stream = training::copy_task_stream(key, /*batch=*/16, /*length=*/64, /*vocab=*/32);
training::Batch b = train_stream(0);   // b[0] inputs, b[1] targets (== inputs), b[2] weights
  // clang-format on
  CHECK(b[0].shape() == Shape{16, 64});
  {
    // clang-format off
namespace tl = minitrax::layers;

auto block = [](long d_model, long d_ff, long heads) {
  return std::vector<base::LayerPtr>{
      tl::Residual({tl::LayerNorm(), tl::CausalAttention(d_model, heads)}),
      tl::Residual({tl::LayerNorm(), tl::Dense(d_ff), tl::Relu(), tl::Dense(d_model)})};
};
std::vector<base::LayerPtr> layers = {tl::ShiftRight(), tl::Embedding(32, 128),
                                      tl::PositionalEncoding(64)};
for (int i = 0; i < 2; ++i) for (auto& l : block(128, 256, 4)) layers.push_back(l);
for (auto l : {tl::LayerNorm(), tl::Dense(32), tl::LogSoftmax()}) layers.push_back(l);
auto model = tl::Serial(layers);
    // clang-format on
    model->init({{{2, 64}, DType::i32}}, key);
    CHECK((*model)(Var(b[0])).shape() == Shape{16, 64, 32});
  }
  auto captured = std::make_unique<CaptureCout>();
  // clang-format off
models::TransformerLMOptions opts;
opts.vocab_size = 32; opts.d_model = 128; opts.d_ff = 256;
opts.n_layers = 2; opts.n_heads = 4; opts.dropout = 0.0; opts.max_len = 64;
auto model = models::TransformerLM(opts);
std::cout << model->repr() << "\n";   // Serial[ ShiftRight(1) Embedding_32_128 ... ], a layer a line
                      // clang-format on
                      // clang-format off
model->init({{{16, 64}, DType::i32}}, core::key_from_seed(0));
for (auto& w : model->flat_weights()) std::cout << w.name << " " << core::shape_str(w.value.shape()) << "\n";
// Serial/Embedding_1/embeddings [32, 128]
// Serial/PositionalEncoding_3/pe [1, 64, 128]
// ...
Var logp = (*model)(Var(b[0]));        // [16, 64, 32] log-probabilities
  // clang-format on
  const std::string out = captured->text.str();
  captured.reset();
  CHECK(logp.shape() == Shape{16, 64, 32});
  // What the comments say is printed.
  CHECK(out.rfind("Serial[\n  ShiftRight(1)\n  Embedding_32_128\n  Dropout", 0) == 0);
  CHECK(testutil::contains(out, "ShiftRight(1)"));
  CHECK(testutil::contains(out, "Embedding_32_128"));
  CHECK(testutil::contains(out, "\nSerial/Embedding_1/embeddings [32, 128]\n"));
  CHECK(testutil::contains(out, "\nSerial/PositionalEncoding_3/pe [1, 64, 128]\n"));
}

TEST_CASE("tutorial 2: the quoted error message is the real one") {
  namespace tl = minitrax::layers;
  std::string message;
  try {
    // clang-format off
auto head = tl::Serial({tl::Dense(32), tl::LogSoftmax()});   // my_model.cpp, line 12
head->init({{{16, 64, 128}, DType::f32}});
Var out = (*head)(Var(Tensor::zeros({16, 64, 100})));         // throws base::LayerError
    // clang-format on
    FAIL("no error");
  } catch (const base::LayerError& e) {
    message = e.what();
  }
  // The tutorial's plain (non-cpp) block after that snippet is the message, with the
  // places of the user's file.
  const auto quoted = fenced_blocks(read_text(kTutorial), "");
  bool found = false;
  for (const std::string& q : quoted) {
    if (q.rfind("Dense", 0) == 0) {
      found = true;
      CHECK(without_places(trim(q.substr(0, q.size() - 1))) == without_places(message));
    }
  }
  CHECK(found);
  CHECK(testutil::contains(message, "my_model.cpp") == false);  // the places are this file's
}

TEST_CASE("tutorial 3-4: training with the Loop, restoring the checkpoint (small sizes)") {
  InTempDir here("train");
  // The tutorial's snippets verbatim, around a model and streams small enough for a test.
  models::TransformerLMOptions opts;
  opts.vocab_size = 32;
  opts.d_model = 8;
  opts.d_ff = 16;
  opts.n_layers = 1;
  opts.n_heads = 2;
  opts.dropout = 0.0;
  opts.max_len = 64;
  auto model = models::TransformerLM(opts);
  auto train_stream = training::copy_task_stream(core::key_from_seed(1), 2, 8, 32);
  auto eval_stream = training::copy_task_stream(core::key_from_seed(2), 2, 8, 32);
  auto captured = std::make_unique<CaptureCout>();
  // clang-format off
training::AdamOptions adam;
adam.learning_rate = 2e-3;
adam.clip_grad_norm = 1.0;
training::TrainTask task{train_stream, training::WeightedCategoryCrossEntropy(),
                         std::make_shared<training::Adam>(adam),
                         training::cosine(2e-3, /*decay_steps=*/400, 1e-4, /*warmup=*/40)};
training::EvalTask eval;
eval.stream = eval_stream;
eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                {"accuracy", training::WeightedCategoryAccuracy()}};
training::LoopOptions options;
options.output_dir = "runs/copy";   // checkpoints and metrics.jsonl
options.eval_every = 80;
training::Loop loop(model, task, {eval}, options);
loop.resume();      // continue from runs/copy if a checkpoint is there
loop.run(400);
  // clang-format on
  captured.reset();
  CHECK(loop.step() == 400);
  CHECK(fs::exists("runs/copy/metrics.jsonl"));
  // clang-format off
auto reloaded = models::TransformerLM(opts);
reloaded->init({{{1, 64}, DType::i32}});
auto path = training::latest_checkpoint("runs/copy");
training::restore_model(*reloaded, training::load_checkpoint(*path), *path);
  // clang-format on
  CHECK(*path == training::checkpoint_path("runs/copy", 400));
  const auto a = reloaded->flat_weights(), w = loop.model()->flat_weights();
  REQUIRE(a.size() == w.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(core::max_abs_diff(a[i].value, w[i].value) == 0);
}

TEST_CASE("tutorial 5: gradients of your own layers") {
  auto layer = layers::Dense(3);
  layer->init({{{2, 4}, DType::f32}}, core::key_from_seed(3));
  const Tensor x64 = core::normal(core::key_from_seed(4), {2, 4}, DType::f64);
  // clang-format off
base::cast_layer(*layer, DType::f64);                 // float64 weights
auto r = base::gradcheck_layer(*layer, {x64});        // inputs and weights vs finite differences
CHECK_MESSAGE(r.ok, r.message);
  // clang-format on
}

TEST_CASE("tutorial 6: train, save, load into a predict-mode model, sample") {
  InTempDir here("sample");
  // Prompts "0 w 0" from held-out copy-task sequences; the model should copy w.
  const training::Batch held_out =
      training::copy_task_stream(core::key_from_seed(99), 2, 32, 16)(0);
  const Tensor prompts = core::slice(held_out[0], 1, 0, 17);
  auto captured = std::make_unique<CaptureCout>();
  const Tensor out = train_save_load_sample("runs/tutorial", prompts);
  captured.reset();
  REQUIRE(out.shape() == Shape{2, 32});
  // The prompt is kept, and the second w is (mostly) a copy of the first.
  std::size_t copied = 0;
  for (std::size_t r = 0; r < 2; ++r) {
    for (std::size_t j = 0; j < 17; ++j) CHECK(out.at({r, j}) == held_out[0].at({r, j}));
    for (std::size_t j = 17; j < 32; ++j) copied += out.at({r, j}) == held_out[0].at({r, j});
  }
  MESSAGE("copied " << copied << " of 30 tokens");
  CHECK(copied >= 27);  // chance is 1/14 per token

  // The options snippet, with the trained sampler (batch 2).
  models::TransformerLMOptions lm{.vocab_size = 16,
                                  .d_model = 64,
                                  .d_ff = 128,
                                  .n_layers = 2,
                                  .n_heads = 4,
                                  .dropout = 0.0,
                                  .max_len = 32,
                                  .mode = base::Mode::predict};
  auto sampler = models::TransformerLM(lm);
  sampler->init({{{2, 1}, DType::i32}});
  training::load_weights(*sampler, "runs/tutorial");
  // clang-format off
models::SampleOptions opts{.temperature = 0.8, .top_k = 8, .top_p = 0.95,
                           .rng = core::key_from_seed(7), .stop_id = 1};
Tensor some = models::autoregressive_sample(*sampler, prompts, 15, opts);
// prompts of different lengths: each row reads its own, then samples; [2, 3 + 15]
Tensor ragged = models::autoregressive_sample(*sampler, {{0, 3, 4}, {0}}, 15, opts);
  // clang-format on
  CHECK(some.shape() == Shape{2, 32});
  CHECK(ragged.shape() == Shape{2, 18});
  // What the text after it says: row b alone with row_keys = {fold_in(rng, b)}.
  lm.mode = base::Mode::predict;
  auto single = models::TransformerLM(lm);
  single->init({{{1, 1}, DType::i32}});
  training::load_weights(*single, "runs/tutorial");
  models::SampleOptions alone = opts;
  alone.row_keys = {core::fold_in(opts.rng, 1)};
  const Tensor row1 = models::autoregressive_sample(*single, {{0}}, 15, alone);
  for (std::size_t j = 0; j < 16; ++j) CHECK(row1.at({0, j}) == ragged.at({1, j}));
}
