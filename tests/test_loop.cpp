// The training loop: loss falls, metrics are written, and a resumed run ends bit
// for bit where an uninterrupted one ends.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "test_util.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"

using namespace minitrax;
using testutil::without_timing;
namespace tl = minitrax::layers;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("minitrax_loop_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

base::LayerPtr small_model() {
  return tl::Serial({tl::Embedding(8, 16), tl::Dropout(0.1), tl::Dense(32), tl::Relu(),
                     tl::Dense(8), tl::LogSoftmax()});
}

training::Loop make_loop(const std::string& dir, std::ostream* out) {
  auto stream = training::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  training::AdamOptions adam;
  adam.learning_rate = 0.01;
  training::TrainTask task{stream, training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(adam), training::constant(0.01)};
  training::EvalTask eval;
  eval.stream = stream;
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = 2;
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 5;
  options.checkpoint_every = 5;
  options.progress = training::Progress::lines;
  options.out = out;
  return training::Loop(small_model(), task, {eval}, options, core::key_from_seed(11));
}

}  // namespace

TEST_CASE("loop: the loss falls and metrics.jsonl gets train and eval lines") {
  TempDir dir("falls");
  std::ostringstream log;
  auto loop = make_loop(dir.path.string(), &log);
  loop.run(60);
  CHECK(loop.step() == 60);
  const auto& h = loop.history();
  double first = 0, last = 0;
  for (const auto& r : h) {
    if (r.task != "train") continue;
    if (r.step == 1) first = r.values.at("loss");
    if (r.step == 60) last = r.values.at("loss");
  }
  CHECK(last < 0.7 * first);
  std::ifstream f(dir.path / "metrics.jsonl");
  std::string line;
  int train_lines = 0, eval_lines = 0;
  while (std::getline(f, line)) {
    if (line.find("\"task\": \"train\"") != std::string::npos) ++train_lines;
    if (line.find("\"task\": \"eval\"") != std::string::npos) ++eval_lines;
  }
  CHECK(train_lines == 60);
  CHECK(eval_lines == 12);
  CHECK(log.str().find("step 50/60: loss") != std::string::npos);
  CHECK(training::list_checkpoints(dir.path.string()).size() == 3);  // keep_checkpoints
}

TEST_CASE("loop: train 2N == train N, stop, resume, train N (bit for bit)") {
  TempDir a("a"), b("b");
  std::ostringstream sink;
  auto straight = make_loop(a.path.string(), &sink);
  straight.run(20);

  {
    auto first_half = make_loop(b.path.string(), &sink);
    first_half.run(10);
  }
  auto resumed = make_loop(b.path.string(), &sink);
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 10);
  resumed.run(20);

  const auto wa = straight.model()->flat_weights();
  const auto wb = resumed.model()->flat_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    INFO(wa[i].name);
    CHECK(core::equal(wa[i].value, wb[i].value));
  }
  CHECK(*straight.last_loss() == *resumed.last_loss());
}

TEST_CASE("loop: bad configurations say what is wrong") {
  auto stream = training::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  training::TrainTask no_opt{stream, training::WeightedCategoryCrossEntropy(), nullptr, {}};
  CHECK_THROWS_WITH_AS(training::Loop(small_model(), no_opt, {}),
                       "Loop: the training task has no optimizer", ValueError);
  training::TrainTask bad_loss{stream, tl::Relu(), std::make_shared<training::SGD>(), {}};
  CHECK_THROWS_WITH_AS(training::Loop(small_model(), bad_loss, {}),
                       doctest::Contains("must take (output, targets, weights)"), ValueError);
}

TEST_CASE("loop: a non-finite loss stops training and names the op, layer path and shapes") {
  TempDir dir("nan");
  auto stream = training::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  // log(0) deep inside: Serial > Serial(Dense, Poison) > ...; Poison = log(0 * x).
  auto poison = tl::Fn("Poison", [](const Var& x) { return fastmath::log(x * 0.0); });
  auto model = tl::Serial(
      {tl::Embedding(8, 16), tl::Serial({tl::Dense(16), poison}), tl::Dense(8), tl::LogSoftmax()});
  training::TrainTask task{stream, training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(training::AdamOptions{}),
                           training::constant(0.01)};
  training::LoopOptions options;
  options.output_dir = dir.path.string();
  options.checkpoint_every = 1;
  options.progress = training::Progress::none;
  training::Loop loop(model, task, {}, options, core::key_from_seed(1));
  std::string msg;
  try {
    loop.run(3);
  } catch (const autodiff::NonFiniteError& e) {
    msg = e.what();
  }
  CAPTURE(msg);
  CHECK(testutil::contains(msg, "training stopped: the loss is"));
  CHECK(testutil::contains(msg, "at step 1"));
  CHECK(testutil::contains(msg, "op 'log'"));
  CHECK(testutil::contains(msg, "Poison"));
  CHECK(testutil::contains(msg, "[4, 8, 16] float32"));
  CHECK(loop.step() == 0);
  CHECK(training::list_checkpoints(dir.path.string()).empty());
}

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("loop: resume cuts metrics.jsonl back to the checkpoint, as if never killed") {
  TempDir a("ma"), b("mb");
  std::ostringstream sink;
  auto straight = make_loop(a.path.string(), &sink);
  straight.run(20);

  {
    auto killed = make_loop(b.path.string(), &sink);
    killed.run(13);  // checkpoints at 5, 10 and 13 (the end of run)
  }
  // As if killed after step 13's metrics but before its checkpoint, halfway through
  // appending a line: drop checkpoint 13, leave a half line.
  fs::remove(training::checkpoint_path(b.path.string(), 13));
  std::ofstream(b.path / "metrics.jsonl", std::ios::app) << "{\"step\": 14, \"task\": \"tr";
  auto resumed = make_loop(b.path.string(), &sink);
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 10);
  // The file now holds exactly the lines of steps 1..10 (10 train, 2 eval lines), and
  // history() is those lines.
  const std::string cut = read_text(b.path / "metrics.jsonl");
  CHECK(std::count(cut.begin(), cut.end(), '\n') == 12);
  CHECK(cut.find("\"step\": 11") == std::string::npos);
  REQUIRE(resumed.history().size() == 12);
  CHECK(resumed.history().front().step == 1);
  CHECK(resumed.history().back().step == 10);
  CHECK(resumed.history().back().task == "eval");
  const double first_loss = straight.history()[0].values.at("loss");
  CHECK(resumed.history()[0].values.at("loss") == doctest::Approx(first_loss).epsilon(1e-8));
  resumed.run(20);
  CHECK(without_timing(read_text(b.path / "metrics.jsonl")) ==
        without_timing(read_text(a.path / "metrics.jsonl")));
  CHECK(resumed.history().size() == straight.history().size());
  // Nothing else was left in the folder.
  for (const auto& e : fs::directory_iterator(b.path)) {
    CHECK(e.path().filename().string().find(".minitrax-tmp.") == std::string::npos);
  }
}

TEST_CASE("loop: resume without a checkpoint starts over and drops the old lines") {
  TempDir d("mnone");
  std::ostringstream sink;
  // A run killed before its first checkpoint leaves metrics lines and nothing else.
  fs::create_directories(d.path);
  std::ofstream(d.path / "metrics.jsonl") << "{\"step\": 1, \"task\": \"train\", \"loss\": 2}\n";
  auto loop = make_loop(d.path.string(), &sink);
  CHECK_FALSE(loop.resume());
  CHECK(loop.step() == 0);
  CHECK(read_text(d.path / "metrics.jsonl").empty());
  CHECK(loop.history().empty());
}
