// The Loop with data::BatchStreams (positions in checkpoints, bit-for-bit resume), models
// with more than one input, callbacks, early stopping, the best checkpoint and the time
// budget, each also across a resume.
#include <doctest/doctest.h>

#include <unistd.h>

#include <csignal>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autodiff/fastmath.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "data/synthetic.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "test_util.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/stop_signals.hpp"

using namespace minitrax;
using testutil::without_timing;
namespace tl = minitrax::layers;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("minitrax_loopcb_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A BatchStream with state: batch k (k = an internal counter) is the copy-task batch
// drawn from fold_in(key, k), so it gives the batches copy_task_stream(key, ...) gives
// for steps 0, 1, 2, ... Its position is {k, tag}.
class CounterStream : public data::BatchStream {
 public:
  explicit CounterStream(std::uint32_t seed, long n_batches = -1)
      : key_(core::key_from_seed(seed)), n_batches_(n_batches) {}
  data::Batch next() override {
    if (n_batches_ >= 0 && k_ >= n_batches_) {
      throw ValueError("counter stream: no more batches after " + std::to_string(n_batches_));
    }
    ++reads;
    return data::copy_task_batch(core::fold_in(key_, static_cast<std::uint32_t>(k_++)), 4, 8, 8);
  }
  std::vector<std::int64_t> position() const override { return {k_, kTag}; }
  void seek(const std::vector<std::int64_t>& p) override {
    if (p.size() != 2 || p[1] != kTag || p[0] < 0) {
      throw ValueError("counter stream: not a position of this stream");
    }
    k_ = p[0];
  }
  void reset() override { k_ = 0; }
  std::string describe() const override { return "'counter stream'"; }
  long reads = 0;

 private:
  static constexpr std::int64_t kTag = 4242;
  core::Key key_;
  long n_batches_;
  std::int64_t k_ = 0;
};

base::LayerPtr small_model() {
  return tl::Serial({tl::Embedding(8, 16), tl::Dropout(0.1), tl::Dense(32), tl::Relu(),
                     tl::Dense(8), tl::LogSoftmax()});
}

training::LoopOptions quiet_options(const std::string& dir, std::ostream* out) {
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 5;
  options.checkpoint_every = 5;
  options.progress = training::Progress::lines;
  options.out = out;
  return options;
}

training::TrainTask train_task(training::BatchSource stream) {
  training::AdamOptions adam;
  adam.learning_rate = 0.01;
  return {std::move(stream), training::WeightedCategoryCrossEntropy(),
          std::make_shared<training::Adam>(adam), training::constant(0.01)};
}

training::EvalTask eval_task(training::BatchSource stream) {
  training::EvalTask eval;
  eval.stream = std::move(stream);
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = 2;
  return eval;
}

// The same run, fed by a step-indexed stream or by CounterStreams.
training::Loop counter_loop(const std::string& dir, std::ostream* out, bool batch_streams) {
  training::BatchSource train, eval;
  if (batch_streams) {
    train = std::make_shared<CounterStream>(5);
    eval = std::make_shared<CounterStream>(6);
  } else {
    train = data::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
    eval = data::copy_task_stream(core::key_from_seed(6), 4, 8, 8);
  }
  return training::Loop(small_model(), train_task(train), {eval_task(eval)},
                        quiet_options(dir, out), core::key_from_seed(11));
}

void check_same_weights(const training::Loop& a, const training::Loop& b) {
  const auto wa = a.model()->flat_weights(), wb = b.model()->flat_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    INFO(wa[i].name);
    CHECK(core::to_npy_bytes(wa[i].value) == core::to_npy_bytes(wb[i].value));
  }
}

}  // namespace

// ---- BatchStreams --------------------------------------------------------------------

TEST_CASE("loop: a BatchStream trains exactly as the step-indexed stream of the same batches") {
  TempDir a("idx"), b("bs");
  std::ostringstream sink;
  auto indexed = counter_loop(a.str(), &sink, false);
  indexed.run(12);
  auto streamed = counter_loop(b.str(), &sink, true);
  streamed.run(12);
  check_same_weights(indexed, streamed);
  CHECK(without_timing(read_text(a.path / "metrics.jsonl")) ==
        without_timing(read_text(b.path / "metrics.jsonl")));
  // The newest checkpoint holds the stream's position: 12 batches read.
  const auto c = training::load_checkpoint(training::checkpoint_path(b.str(), 12));
  REQUIRE(c.loop.size() == 1);
  CHECK(c.loop[0].name == "train_stream");
  CHECK(c.loop[0].value.to_vector<std::int64_t>() == std::vector<std::int64_t>{12, 4242});
  // A step-indexed run stores no position (its checkpoints are as before).
  CHECK(training::load_checkpoint(training::checkpoint_path(a.str(), 12)).loop.empty());
}

TEST_CASE("loop: with a BatchStream, train 2N == train N, kill, resume, train N (bit for bit)") {
  TempDir a("sa"), b("sb");
  std::ostringstream sink;
  auto straight = counter_loop(a.str(), &sink, true);
  straight.run(20);
  {
    auto killed = counter_loop(b.str(), &sink, true);
    killed.run(13);  // checkpoints at 5, 10, 13
  }
  // Killed after step 13's lines, before its checkpoint: the resumed run goes back to
  // step 10 and to the stream position of step 10.
  fs::remove(training::checkpoint_path(b.str(), 13));
  auto resumed = counter_loop(b.str(), &sink, true);
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 10);
  resumed.run(20);
  check_same_weights(straight, resumed);
  CHECK(*straight.last_loss() == *resumed.last_loss());
  CHECK(without_timing(read_text(a.path / "metrics.jsonl")) ==
        without_timing(read_text(b.path / "metrics.jsonl")));
}

TEST_CASE("loop: a BatchStream eval task is reset and gives the same values every time") {
  std::ostringstream sink;
  auto eval_stream = std::make_shared<CounterStream>(6);
  training::EvalTask streamed = eval_task(eval_stream);
  training::EvalTask indexed = eval_task(data::copy_task_stream(core::key_from_seed(6), 4, 8, 8));
  training::Loop loop(small_model(),
                      train_task(data::copy_task_stream(core::key_from_seed(5), 4, 8, 8)),
                      {streamed}, quiet_options("", &sink), core::key_from_seed(1));
  loop.run(3);
  const auto a = loop.evaluate(streamed);
  const auto b = loop.evaluate(streamed);
  const auto c = loop.evaluate(indexed);  // the same batches, step-indexed
  CHECK(a == b);
  CHECK(a == c);
  CHECK(a.at("loss") > 0);
  // run(3) evaluated once at its end, then three evaluate()s: 2 batches each.
  CHECK(eval_stream->reads == 2 * 3);
}

TEST_CASE("loop: resuming a BatchStream run from a checkpoint without its position is refused") {
  TempDir d("nopos");
  std::ostringstream sink;
  {
    auto indexed = counter_loop(d.str(), &sink, false);
    indexed.run(5);
  }
  auto streamed = counter_loop(d.str(), &sink, true);
  const std::string msg = testutil::error_message([&] { (void)streamed.resume(); });
  CHECK(msg == training::checkpoint_path(d.str(), 5) +
                   ": holds no position of the training stream (loop/train_stream), so the "
                   "stream 'counter stream' cannot continue where the run stopped (the "
                   "checkpoint was written with a step-indexed stream). Nothing was changed.");
  CHECK_THROWS_AS((void)streamed.resume(), training::CheckpointError);
  CHECK(streamed.step() == 0);
}

TEST_CASE("loop: a finite eval stream that runs out, and an eval task sharing the train stream") {
  std::ostringstream sink;
  training::EvalTask short_eval = eval_task(std::make_shared<CounterStream>(6, 1));
  training::Loop loop(small_model(),
                      train_task(data::copy_task_stream(core::key_from_seed(5), 4, 8, 8)),
                      {short_eval}, quiet_options("", &sink), core::key_from_seed(1));
  CHECK_THROWS_WITH_AS(loop.run(1),
                       "Loop: eval task 'eval' reads 2 batches per evaluation; batch 2 failed: "
                       "counter stream: no more batches after 1",
                       ValueError);
  auto shared = std::make_shared<CounterStream>(5);
  CHECK_THROWS_WITH_AS(training::Loop(small_model(), train_task(shared), {eval_task(shared)}),
                       "Loop: eval task 'eval' reads the training stream object itself; every "
                       "evaluation reset()s its stream, which would rewind training: give it a "
                       "stream of its own",
                       ValueError);
}

// ---- models with more than one input ---------------------------------------------------

namespace {

// (inputs, mask): the mask (float32 [B, L]) scales each position's embedding.
base::LayerPtr masked_model() {
  auto mask_axis = tl::Fn("MaskAxis", [](const Var& m) { return fastmath::expand_dims(m, -1); });
  return tl::Serial({tl::Parallel({tl::Embedding(8, 16), mask_axis}), tl::Multiply(), tl::Dense(32),
                     tl::Relu(), tl::Dense(8), tl::LogSoftmax()});
}

// A mask hiding position 1 of every sequence.
Tensor mask_for(const Tensor& inputs) {
  Tensor m = Tensor::ones(inputs.shape(), DType::f32);
  for (std::size_t i = 0; i < inputs.dim(0); ++i) m.data<float>()[i * inputs.dim(1) + 1] = 0.0f;
  return m;
}

// (inputs, mask, targets, weights), batch k from fold_in(key, k).
training::Stream masked_stream(std::uint32_t seed) {
  auto base = data::copy_task_stream(core::key_from_seed(seed), 4, 8, 8);
  return [base](long step) {
    const data::Batch b = base(step);
    return data::Batch{b[0], mask_for(b[0]), b[1], b[2]};
  };
}

}  // namespace

TEST_CASE("loop: a model taking (inputs, mask) trains; the loss gets (output, targets, weights)") {
  std::ostringstream sink;
  auto model = masked_model();
  const auto train = masked_stream(5);
  model->init({{{4, 8}, DType::i32}, {{4, 8}, DType::f32}}, core::key_from_seed(2));
  // The first step's loss and an evaluation, computed by hand from the initial weights.
  const data::Batch b0 = train(0);
  auto loss_layer = training::WeightedCategoryCrossEntropy();
  const double expected_loss =
      loss_layer
          ->apply({model->apply({Var(b0[0]), Var(b0[1])}, core::key_from_seed(0))[0], Var(b0[2]),
                   Var(b0[3])},
                  core::key_from_seed(0))[0]
          .value()
          .item<double>();
  training::EvalTask eval;
  eval.stream = masked_stream(6);
  eval.metrics = {{"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = 2;
  training::LoopOptions options = quiet_options("", &sink);
  options.eval_every = 0;
  // Lambdas are step-indexed streams too.
  training::Loop loop(model, train_task([train](long step) { return train(step); }), {eval},
                      options, core::key_from_seed(3));
  const auto before = loop.evaluate(eval);
  double acc = 0;
  for (long k = 0; k < 2; ++k) {
    const data::Batch b = masked_stream(6)(k);
    model->set_mode(base::Mode::eval);
    const Var out = model->apply({Var(b[0]), Var(b[1])}, core::key_from_seed(0))[0];
    model->set_mode(base::Mode::train);
    acc += training::WeightedCategoryAccuracy()
               ->apply({out, Var(b[2]), Var(b[3])}, core::key_from_seed(0))[0]
               .value()
               .item<double>();
  }
  CHECK(before.at("accuracy") == doctest::Approx(acc / 2).epsilon(1e-12));
  loop.run(60);
  const auto& h = loop.history();
  REQUIRE(h.size() >= 2);
  CHECK(h[1].task == "train");
  CHECK(h[1].values.at("loss") == doctest::Approx(expected_loss).epsilon(1e-6));
  CHECK(*loop.last_loss() < 0.7 * expected_loss);
  CHECK(loop.latest_metrics("eval")->at("accuracy") > before.at("accuracy"));
  // The mask is used: hiding position 1 differently changes the output.
  const data::Batch b = train(0);
  const Tensor with = model->apply({Var(b[0]), Var(b[1])}, core::key_from_seed(0))[0].value();
  const Tensor ones = model
                          ->apply({Var(b[0]), Var(Tensor::ones(b[1].shape(), DType::f32))},
                                  core::key_from_seed(0))[0]
                          .value();
  CHECK_FALSE(core::equal(with, ones));
}

TEST_CASE("loop: a batch with too few or too many arrays names the model and the loss") {
  std::ostringstream sink;
  auto three = data::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  training::Loop loop(masked_model(), train_task(three), {}, quiet_options("", &sink));
  CHECK_THROWS_WITH_AS(loop.run(1),
                       "Loop: the training batch of step 1 has 3 arrays; the model Serial takes 2 "
                       "and the loss layer WeightedCategoryCrossEntropy 2 more (after the model's "
                       "1 output): 4 expected",
                       ValueError);
  CHECK(loop.step() == 0);
  training::Loop one_input(small_model(), train_task(masked_stream(5)), {},
                           quiet_options("", &sink));
  CHECK_THROWS_WITH_AS(one_input.run(1),
                       "Loop: the training batch of step 1 has 4 arrays; the model Serial takes 1 "
                       "and the loss layer WeightedCategoryCrossEntropy 2 more (after the model's "
                       "1 output): 3 expected",
                       ValueError);
  training::EvalTask eval;
  eval.stream = three;
  eval.metrics = {{"accuracy", training::WeightedCategoryAccuracy()}};
  training::Loop bad_eval(masked_model(), train_task(masked_stream(5)), {eval},
                          quiet_options("", &sink));
  CHECK_THROWS_WITH_AS(bad_eval.run(1),
                       "Loop: batch 1 of eval task 'eval' has 3 arrays; the model Serial takes 2 "
                       "and metric 'accuracy' (WeightedCategoryAccuracy) 2 more (after the "
                       "model's 1 output): 4 expected",
                       ValueError);
}

// ---- callbacks -----------------------------------------------------------------------------

namespace {

// Records the steps it is called at (before and after), and what it sees then.
struct Recorder : training::Callback {
  long n;
  std::vector<long> begins, ends, seen_steps, eval_steps;
  explicit Recorder(long every) : n(every) {}
  bool call_at(long step) const override { return step % n == 0; }
  void on_step_begin(training::Loop& loop, long step) override {
    begins.push_back(step);
    seen_steps.push_back(loop.step());
  }
  void on_step_end(training::Loop& loop, long step) override {
    ends.push_back(step);
    seen_steps.push_back(loop.step());
    eval_steps.push_back(loop.history().back().step);
  }
};

training::Loop callback_loop(const std::string& dir, std::ostream* out,
                             std::vector<std::shared_ptr<training::Callback>> callbacks) {
  training::LoopOptions options = quiet_options(dir, out);
  options.callbacks = std::move(callbacks);
  return training::Loop(small_model(),
                        train_task(data::copy_task_stream(core::key_from_seed(5), 4, 8, 8)),
                        {eval_task(data::copy_task_stream(core::key_from_seed(6), 4, 8, 8))},
                        options, core::key_from_seed(11));
}

}  // namespace

TEST_CASE("callbacks: called at exactly the chosen steps, seeing the step's metrics") {
  TempDir d("cb");
  std::ostringstream sink;
  auto rec = std::make_shared<Recorder>(5);
  std::vector<long> every3;
  auto loop =
      callback_loop(d.str(), &sink, {rec, training::every(3, [&](training::Loop& l, long step) {
                                       CHECK(l.step() == step);
                                       every3.push_back(step);
                                     })});
  loop.run(16);
  CHECK(rec->begins == std::vector<long>{5, 10, 15});
  CHECK(rec->ends == std::vector<long>{5, 10, 15});
  CHECK(rec->seen_steps == std::vector<long>{4, 5, 9, 10, 14, 15});
  // After the step's evaluation (eval_every 5): its eval line is the newest record.
  CHECK(rec->eval_steps == std::vector<long>{5, 10, 15});
  CHECK(every3 == std::vector<long>{3, 6, 9, 12, 15});
  CHECK_THROWS_WITH_AS(training::every(0, [](training::Loop&, long) {}),
                       "training::every: n must be >= 1 (call every n steps), got 0", ValueError);
}

TEST_CASE("callbacks: across a resume, the steps of an uninterrupted run (repeated after a kill)") {
  TempDir a("cba"), b("cbb");
  std::ostringstream sink;
  auto straight_rec = std::make_shared<Recorder>(3);
  auto straight = callback_loop(a.str(), &sink, {straight_rec});
  straight.run(20);
  CHECK(straight_rec->ends == std::vector<long>{3, 6, 9, 12, 15, 18});

  auto first_rec = std::make_shared<Recorder>(3);
  {
    auto first = callback_loop(b.str(), &sink, {first_rec});
    first.run(10);  // checkpoints at 5 and 10
  }
  auto second_rec = std::make_shared<Recorder>(3);
  auto second = callback_loop(b.str(), &sink, {second_rec});
  REQUIRE(second.resume());
  second.run(14);
  CHECK(first_rec->ends == std::vector<long>{3, 6, 9});
  CHECK(second_rec->ends == std::vector<long>{12});
  // Killed after step 14's callbacks and lines, before its checkpoint: resumed from
  // step 10, the calls after it come again.
  second_rec->ends.clear();
  fs::remove(training::checkpoint_path(b.str(), 14));
  auto third_rec = std::make_shared<Recorder>(3);
  auto third = callback_loop(b.str(), &sink, {third_rec});
  REQUIRE(third.resume());
  CHECK(third.step() == 10);
  third.run(20);
  CHECK(third_rec->ends == std::vector<long>{12, 15, 18});
  check_same_weights(straight, third);
}

TEST_CASE("callbacks: a callback that runs the model in eval mode does not change the run") {
  TempDir a("ma"), b("mb");
  std::ostringstream sink;
  auto plain = callback_loop(a.str(), &sink, {});
  plain.run(12);
  auto meddler = training::every(2, [](training::Loop& loop, long) {
    loop.model()->set_mode(base::Mode::eval);
    autodiff::NoRecord quiet;
    (void)loop.model()->apply({Var(Tensor::zeros({1, 8}, DType::i32))}, core::key_from_seed(9));
  });
  auto meddled = callback_loop(b.str(), &sink, {meddler});
  meddled.run(12);
  check_same_weights(plain, meddled);
  CHECK(meddled.model()->mode() == base::Mode::train);
}

// ---- early stopping, the best checkpoint ------------------------------------------------

namespace {

// A metric whose value at the evaluation of step s is script.at(s): the step comes from
// a callback called before every step.
struct Script {
  std::map<long, double> values;
  long step = 0;
};

struct StepTracker : training::Callback {
  std::shared_ptr<Script> script;
  explicit StepTracker(std::shared_ptr<Script> s) : script(std::move(s)) {}
  bool call_at(long) const override { return true; }
  void on_step_begin(training::Loop&, long step) override { script->step = step; }
};

training::Loop scripted_loop(const std::string& dir, std::ostream* out,
                             const std::map<long, double>& values,
                             std::optional<training::EarlyStopping> es,
                             std::optional<training::KeepBest> best,
                             std::vector<std::shared_ptr<training::Callback>> extra = {}) {
  auto script = std::make_shared<Script>();
  script->values = values;
  auto metric = tl::Fn(
      "Scripted",
      [script](const base::Stack&) -> base::Stack {
        return {Var(Tensor::scalar(script->values.at(script->step), DType::f32))};
      },
      3, 1);
  training::EvalTask eval;
  eval.stream = data::copy_task_stream(core::key_from_seed(6), 4, 8, 8);
  eval.metrics = {{"score", metric}};
  training::LoopOptions options = quiet_options(dir, out);
  options.eval_every = 2;
  options.early_stopping = es;
  options.keep_best = best;
  options.callbacks = {std::make_shared<StepTracker>(script)};
  for (auto& cb : extra) options.callbacks.push_back(cb);
  return training::Loop(small_model(),
                        train_task(data::copy_task_stream(core::key_from_seed(5), 4, 8, 8)), {eval},
                        options, core::key_from_seed(11));
}

// Values exactly representable in float32, so the hand computation is exact.
const std::map<long, double> kStopScript = {{2, 1.0},        {4, 0.75},  {6, 0.71875}, {8, 0.6875},
                                            {10, 0.6796875}, {12, 0.7},  {14, 0.125},  {16, 0.125},
                                            {18, 0.125},     {20, 0.125}};

}  // namespace

TEST_CASE("early stopping: stops after `patience` evaluations without an improvement > min_delta") {
  // By hand, mode min, min_delta 0.05, patience 2:
  //   step 2: 1.0 best | 4: 0.75 < 0.95, best | 6: 0.71875 >= 0.70, 1 bad
  //   8: 0.6875 < 0.70, best | 10: 0.6796875 >= 0.6375, 1 bad | 12: 0.7, 2 bad: stop.
  TempDir d("es");
  std::ostringstream log;
  const training::EarlyStopping es{
      .metric = "score", .mode = training::Better::min, .patience = 2, .min_delta = 0.05};
  auto loop = scripted_loop(d.str(), &log, kStopScript, es, std::nullopt);
  loop.run(20);
  CHECK(loop.step() == 12);
  CHECK(loop.end_reason() == training::EndReason::early_stopped);
  const std::string line =
      "early stopping: eval 'eval' score has not improved by more than 0.05 for 2 evaluations "
      "(best 0.6875 at step 8); stopped after step 12 of 20; checkpoint " +
      training::checkpoint_path(d.str(), 12) + " written";
  CHECK(loop.end_message() == line);
  CHECK(testutil::contains(log.str(), line + "\n"));
  REQUIRE(training::latest_checkpoint(d.str()));
  CHECK(*training::latest_checkpoint(d.str()) == training::checkpoint_path(d.str(), 12));

  // Resuming the stopped run trains no further.
  std::ostringstream log2;
  auto resumed = scripted_loop(d.str(), &log2, kStopScript, es, std::nullopt);
  REQUIRE(resumed.resume());
  resumed.run(20);
  CHECK(resumed.step() == 12);
  CHECK(resumed.end_reason() == training::EndReason::early_stopped);
  CHECK(testutil::contains(log2.str(), "the run stopped at step 12; not training further"));

  // Without min_delta, 0.6796875 improves on 0.6875: stops at 14 + ... no: 12 bad 1,
  // 14: 0.125 best, 16, 18: 2 bad: stop at 18.
  TempDir d2("es2");
  auto no_delta =
      scripted_loop(d2.str(), &log, kStopScript,
                    training::EarlyStopping{.metric = "score", .patience = 2}, std::nullopt);
  no_delta.run(20);
  CHECK(no_delta.step() == 18);
  // Max mode: 1.0 at step 2 is never beaten: evaluations 4 and 6 are bad, stop at 6.
  TempDir d3("es3");
  auto max_mode = scripted_loop(
      d3.str(), &log, kStopScript,
      training::EarlyStopping{.metric = "score", .mode = training::Better::max, .patience = 2},
      std::nullopt);
  max_mode.run(20);
  CHECK(max_mode.step() == 6);
}

TEST_CASE("early stopping: a run killed and resumed stops where an uninterrupted one stops") {
  TempDir a("esa"), b("esb");
  std::ostringstream sink;
  const training::EarlyStopping es{.metric = "score", .patience = 2, .min_delta = 0.05};
  auto straight = scripted_loop(a.str(), &sink, kStopScript, es, std::nullopt);
  straight.run(20);
  REQUIRE(straight.step() == 12);
  {
    auto killed = scripted_loop(b.str(), &sink, kStopScript, es, std::nullopt);
    killed.run(8);  // checkpoints at 5 and 8
  }
  fs::remove(training::checkpoint_path(b.str(), 8));  // killed before the checkpoint of 8
  auto resumed = scripted_loop(b.str(), &sink, kStopScript, es, std::nullopt);
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 5);
  resumed.run(20);
  CHECK(resumed.step() == 12);
  CHECK(resumed.end_message() ==
        straight.end_message().substr(0, straight.end_message().find(";")) +
            resumed.end_message().substr(resumed.end_message().find(";")));
  check_same_weights(straight, resumed);
  CHECK(without_timing(read_text(a.path / "metrics.jsonl")) ==
        without_timing(read_text(b.path / "metrics.jsonl")));
}

namespace {

// Captures the weights (as bytes) after the given steps.
struct WeightTaker : training::Callback {
  std::map<long, std::vector<std::string>> taken;
  bool call_at(long) const override { return true; }
  void on_step_end(training::Loop& loop, long step) override {
    auto& bytes = taken[step];
    for (const auto& w : loop.model()->flat_weights()) bytes.push_back(core::to_npy_bytes(w.value));
  }
};

const std::map<long, double> kBestScript = {{2, 0.125}, {4, 0.5},   {6, 0.25},  {8, 0.375},
                                            {10, 0.5},  {12, 0.25}, {14, 0.25}, {16, 0.25}};

void check_best(const std::string& dir, const WeightTaker& taker, long step, double value) {
  const auto c = training::load_checkpoint(dir + "/ckpt_best.npz");
  CHECK(c.step == step);
  const auto& want = taker.taken.at(step);
  REQUIRE(c.weights.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO(c.weights[i].name);
    CHECK(core::to_npy_bytes(c.weights[i].value) == want[i]);
  }
  const auto j = nlohmann::json::parse(read_text(fs::path(dir) / "ckpt_best.json"));
  CHECK(j.at("step").get<long>() == step);
  CHECK(j.at("value").get<double>() == value);
  CHECK(j.at("metric").get<std::string>() == "score");
  CHECK(j.at("task").get<std::string>() == "eval");
  CHECK(j.at("mode").get<std::string>() == "max");
}

}  // namespace

TEST_CASE("keep_best: ckpt_best.npz holds the best step's weights, is never pruned or listed") {
  TempDir d("best");
  std::ostringstream sink;
  auto taker = std::make_shared<WeightTaker>();
  const training::KeepBest best{.metric = "score", .mode = training::Better::max};
  auto loop = scripted_loop(d.str(), &sink, kBestScript, std::nullopt, best, {taker});
  loop.run(16);
  // 0.5 at step 4 is the best; step 10 only equals it.
  check_best(d.str(), *taker, 4, 0.5);
  const auto listed = training::list_checkpoints(d.str());
  REQUIRE(listed.size() == 3);  // keep_checkpoints: 10, 15, 16
  CHECK(listed.front().first == 10);
  CHECK(listed.back().first == 16);
  CHECK(*training::latest_checkpoint(d.str()) == training::checkpoint_path(d.str(), 16));
  // And the best checkpoint restores into the model.
  auto model = small_model();
  model->init({{{4, 8}, DType::i32}}, core::key_from_seed(0));
  training::restore_model(*model, training::load_checkpoint(d.str() + "/ckpt_best.npz"), "best");
}

TEST_CASE("keep_best: a killed and resumed run keeps the same best checkpoint") {
  TempDir d("bestr");
  std::ostringstream sink;
  const training::KeepBest best{.metric = "score", .mode = training::Better::max};
  auto taker = std::make_shared<WeightTaker>();
  {
    auto first = scripted_loop(d.str(), &sink, kBestScript, std::nullopt, best, {taker});
    first.run(6);  // checkpoints at 5, 6; best at 4
  }
  fs::remove(training::checkpoint_path(d.str(), 6));
  auto resumed = scripted_loop(d.str(), &sink, kBestScript, std::nullopt, best, {taker});
  REQUIRE(resumed.resume());
  CHECK(resumed.step() == 5);
  resumed.run(16);  // 0.25, 0.375, 0.5 (equal): not better than the replayed 0.5
  check_best(d.str(), *taker, 4, 0.5);
  // Min mode on the same script: 0.125 at step 2.
  TempDir d2("bestmin");
  auto taker2 = std::make_shared<WeightTaker>();
  auto min_loop = scripted_loop(d2.str(), &sink, kBestScript, std::nullopt,
                                training::KeepBest{.metric = "score"}, {taker2});
  min_loop.run(8);
  const auto c = training::load_checkpoint(d2.str() + "/ckpt_best.npz");
  CHECK(c.step == 2);
}

// ---- the time budget ------------------------------------------------------------------------

TEST_CASE("time budget: run() ends within it with a checkpoint; a resumed run trains no further") {
  TempDir d("budget");
  std::ostringstream log;
  const double budget = 1.5;
  auto make = [&](double b) {
    training::LoopOptions options = quiet_options(d.str(), &log);
    options.time_budget_seconds = b;
    options.eval_every = 50;
    options.checkpoint_every = 100;
    return training::Loop(small_model(),
                          train_task(data::copy_task_stream(core::key_from_seed(5), 4, 8, 8)),
                          {eval_task(data::copy_task_stream(core::key_from_seed(6), 4, 8, 8))},
                          options, core::key_from_seed(11));
  };
  auto loop = make(budget);
  const auto t0 = std::chrono::steady_clock::now();
  loop.run(100000000);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CAPTURE(wall);
  CAPTURE(loop.end_message());
  CHECK(loop.end_reason() == training::EndReason::time_budget);
  CHECK(loop.step() > 10);
  CHECK(loop.step() < 100000000);
  // Within the budget; the slack is for a loaded machine, where a step can take much
  // longer than the one before it (2 cores shared by several builds).
  CHECK(loop.trained_seconds() <= budget + 0.2);
  CHECK(wall <= budget + 0.25);
  CHECK(wall > 0.5 * budget);
  const long stopped_at = loop.step();
  CHECK(*training::latest_checkpoint(d.str()) == training::checkpoint_path(d.str(), stopped_at));
  CHECK(testutil::contains(loop.end_message(), "time budget of 1.5 s: stopped after step " +
                                                   std::to_string(stopped_at) + " of 100000000 ("));
  CHECK(testutil::contains(log.str(), loop.end_message()));
  // The final evaluation of the stopped step is in the history.
  CHECK(loop.history().back().task == "eval");
  CHECK(loop.history().back().step == stopped_at);
  // The budget is for the whole run: resumed, it is used up.
  {
    auto resumed = make(budget);
    REQUIRE(resumed.resume());
    CHECK(resumed.trained_seconds() == budget);  // used up
    resumed.run(100000000);
    CHECK(resumed.step() == stopped_at);
    CHECK(resumed.end_reason() == training::EndReason::time_budget);
    CHECK(testutil::contains(resumed.end_message(), "already used"));
  }
  // A larger budget continues the run.
  auto more = make(budget + 0.5);
  REQUIRE(more.resume());
  more.run(100000000);
  CHECK(more.step() > stopped_at);
  CHECK(more.end_reason() == training::EndReason::time_budget);
  CHECK(more.trained_seconds() <= budget + 0.5 + 0.2);
}

TEST_CASE("loop: callback and stopping options with mistakes say what is wrong") {
  std::ostringstream sink;
  auto stream = data::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  auto make = [&](training::LoopOptions o) {
    o.out = &sink;
    return training::Loop(small_model(), train_task(stream), {eval_task(stream)}, o);
  };
  training::LoopOptions o;
  o.early_stopping = training::EarlyStopping{.metric = "acc"};
  CHECK_THROWS_WITH_AS(make(o),
                       "Loop: early stopping watches metric 'acc' of eval task 'eval', which has "
                       "no such metric (it has: 'loss', 'accuracy')",
                       ValueError);
  o.early_stopping = training::EarlyStopping{.metric = "loss", .task = "valid"};
  CHECK_THROWS_WITH_AS(make(o),
                       "Loop: early stopping watches eval task 'valid', but there is no such eval "
                       "task (there are: 'eval')",
                       ValueError);
  o.early_stopping = training::EarlyStopping{.metric = "loss", .patience = 0};
  CHECK_THROWS_WITH_AS(make(o),
                       "Loop: early stopping needs patience >= 1 and a finite min_delta >= 0, got "
                       "patience 0, min_delta 0",
                       ValueError);
  o.early_stopping.reset();
  o.keep_best = training::KeepBest{.metric = "loss"};
  CHECK_THROWS_WITH_AS(
      make(o), "Loop: keep_best writes ckpt_best.npz into the output folder; give an output_dir",
      ValueError);
  o.keep_best.reset();
  o.time_budget_seconds = -1;
  CHECK_THROWS_WITH_AS(
      make(o), "Loop: time_budget_seconds must be a finite number >= 0 (0: no budget), got -1",
      ValueError);
  o.time_budget_seconds = 0;
  o.callbacks = {nullptr};
  CHECK_THROWS_WITH_AS(make(o), "Loop: a callback in LoopOptions::callbacks is null", ValueError);
}

TEST_CASE("loop: a signal stop is not a budget stop; a BatchStream resumes from it") {
  TempDir a("siga"), b("sigb");
  std::ostringstream sink;
  auto straight = counter_loop(a.str(), &sink, true);
  straight.run(12);
  training::LoopOptions options = quiet_options(b.str(), &sink);
  options.callbacks = {training::every(7, [](training::Loop&, long) { ::raise(SIGTERM); })};
  training::Loop stopped(small_model(), train_task(std::make_shared<CounterStream>(5)),
                         {eval_task(std::make_shared<CounterStream>(6))}, options,
                         core::key_from_seed(11));
  CHECK_THROWS_AS(stopped.run(12), training::Stopped);
  training::StopSignals::clear();  // handled: the next run goes on
  CHECK(stopped.step() == 7);
  CHECK(stopped.end_reason() == training::EndReason::signal);
  const auto c = training::load_checkpoint(training::checkpoint_path(b.str(), 7));
  REQUIRE(c.loop.size() == 1);
  CHECK(c.loop[0].value.to_vector<std::int64_t>() == std::vector<std::int64_t>{7, 4242});
  auto resumed = counter_loop(b.str(), &sink, true);
  REQUIRE(resumed.resume());
  resumed.run(12);
  CHECK(resumed.end_reason() == training::EndReason::completed);
  check_same_weights(straight, resumed);
}

TEST_CASE("loop: a step that fails leaves the BatchStream where it was") {
  std::ostringstream sink;
  auto stream = std::make_shared<CounterStream>(5);
  auto poison = tl::Fn("Poison", [](const Var& x) { return fastmath::log(x * 0.0); });
  auto model = tl::Serial({tl::Embedding(8, 16), poison, tl::Dense(8), tl::LogSoftmax()});
  training::Loop loop(model, train_task(stream), {}, quiet_options("", &sink));
  CHECK_THROWS_AS(loop.run(3), autodiff::NonFiniteError);
  CHECK(stream->position() == std::vector<std::int64_t>{0, 4242});
  CHECK(loop.step() == 0);
}

TEST_CASE("loop: a saved stream position the stream refuses, or of the wrong type") {
  TempDir d("badpos");
  std::ostringstream sink;
  {
    auto first = counter_loop(d.str(), &sink, true);
    first.run(5);
  }
  const std::string path = training::checkpoint_path(d.str(), 5);
  auto c = training::load_checkpoint(path);
  REQUIRE(c.loop.size() == 1);
  c.loop[0].value = Tensor::from<std::int64_t>({2}, {5, 7});  // another stream's tag
  training::save_checkpoint(path, c);
  auto resumed = counter_loop(d.str(), &sink, true);
  CHECK_THROWS_WITH_AS(
      (void)resumed.resume(),
      (path + ": the training stream 'counter stream' cannot go to the saved position: "
              "counter stream: not a position of this stream. Nothing was changed.")
          .c_str(),
      training::CheckpointError);
  c.loop[0].value = Tensor::from<float>({2}, {5, 4242});
  training::save_checkpoint(path, c);
  auto resumed2 = counter_loop(d.str(), &sink, true);
  CHECK_THROWS_WITH_AS(
      (void)resumed2.resume(),
      (path + ": loop/train_stream must be int64 1-D, got float32 [2]. Nothing was changed.")
          .c_str(),
      training::CheckpointError);
  CHECK(resumed2.step() == 0);
}
