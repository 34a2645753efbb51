/// @file
/// The training loop (Trax's supervised.training.Loop).
///
/// @code
/// training::Loop loop(model,
///                     {.stream = train_stream, .loss = WeightedCategoryCrossEntropy(),
///                      .optimizer = std::make_shared<training::Adam>(...),
///                      .lr_schedule = training::warmup_and_rsqrt_decay(100, 1e-3)},
///                     {{.stream = eval_stream, .metrics = {{"loss", ...}, {"accuracy", ...}}}},
///                     {.output_dir = "run1", .eval_every = 100});
/// loop.resume();      // continues from the newest checkpoint in run1/, if any
/// loop.run(2000);     // trains until step 2000
/// @endcode
///
/// One training step: the next batch (a tuple of arrays, data::Batch); the flat weights
/// are watched on a fresh tape and installed in the model; the model takes the batch's
/// first model->n_in() arrays, the loss layer the model's outputs followed by the rest
/// (Trax's Serial(model, loss): e.g. (inputs, mask | targets, weights)); gradients by
/// one backward pass; the optimizer updates the weights. Randomness (dropout, LSH
/// hashing) comes from fold_in(loop key, step), and batches from stream(step) or from a
/// data::BatchStream whose position() is saved in every checkpoint, so a run resumed
/// from a checkpoint continues bit for bit.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/rng.hpp"
#include "data/stream.hpp"
#include "layers/base.hpp"
#include "training/callbacks.hpp"
#include "training/checkpoint.hpp"
#include "training/data.hpp"
#include "training/optimizers.hpp"
#include "training/run_folder.hpp"
#include "training/schedules.hpp"
#include "training/stop_signals.hpp"

namespace minitrax::training {

/// Where the Loop's batches come from: either a step-indexed stream (batch `k` is
/// `stream(k)`, a function without state, e.g. copy_task_stream) or a resumable
/// data::BatchStream (next(); its position() is saved in checkpoints and seek()'d on
/// resume). Converts implicitly from both, so `.stream = copy_task_stream(...)` and
/// `.stream = std::make_shared<MyStream>(...)` both work.
/// @code
/// training::TrainTask task{.stream = data::copy_task_stream(key, 16, 64, 64), ...};
/// std::shared_ptr<data::BatchStream> lm = ...;      // e.g. a data/ pipeline
/// training::TrainTask task2{.stream = lm, ...};
/// @endcode
class BatchSource {
 public:
  BatchSource() = default;
  /// A step-indexed stream (empty: no source).
  BatchSource(Stream stream) : indexed_(std::move(stream)) {}  // NOLINT: implicit on purpose
  /// Any callable Batch(long step), e.g. a lambda.
  template <class F>
  requires(std::is_invocable_r_v<Batch, F&, long> &&
           !std::is_same_v<std::remove_cvref_t<F>, Stream> &&
           !std::is_same_v<std::remove_cvref_t<F>, BatchSource>) BatchSource(F f)
      : indexed_(std::move(f)) {}  // NOLINT: implicit on purpose
  /// A resumable stream of batches (null: no source).
  template <std::derived_from<data::BatchStream> T>
  BatchSource(std::shared_ptr<T> stream)  // NOLINT: implicit on purpose
      : stream_(std::move(stream)) {}

  /// Whether there is a source.
  explicit operator bool() const { return stream_ != nullptr || static_cast<bool>(indexed_); }
  /// The step-indexed stream (empty if this is a BatchStream).
  const Stream& indexed() const { return indexed_; }
  /// The BatchStream (null if this is a step-indexed stream).
  const std::shared_ptr<data::BatchStream>& batch_stream() const { return stream_; }

 private:
  Stream indexed_;
  std::shared_ptr<data::BatchStream> stream_;
};

/// What to train: the data, the loss layer, the optimizer and the learning rate.
struct TrainTask {
  /// Training batches: stream(step) before step step+1 for a step-indexed stream, or
  /// the next batch of a data::BatchStream (whose position goes into checkpoints).
  BatchSource stream;
  /// The loss layer: takes the model's outputs followed by the batch arrays after the
  /// model's inputs (usually (output, targets, weights)) and gives one scalar.
  base::LayerPtr loss;
  /// The optimizer (the Loop initialises its slots from the model's flat weights).
  std::shared_ptr<Optimizer> optimizer;
  /// Learning rate per step (1-based); empty: the optimizer's own, constant.
  Schedule lr_schedule = {};
};

/// What to evaluate: a stream and named metric layers, averaged over n_batches.
struct EvalTask {
  /// Eval batches: batches 0 .. n_batches-1 of a step-indexed stream, or a BatchStream
  /// reset() and then read n_batches times (the same batches at every evaluation).
  BatchSource stream;
  /// Named metric layers, each taking the model's outputs followed by the batch arrays
  /// after the model's inputs (usually (output, targets, weights)) to one scalar.
  std::vector<std::pair<std::string, base::LayerPtr>> metrics;
  /// Batches per evaluation (the same ones at every evaluation).
  long n_batches = 1;
  std::string name = "eval";  ///< the task name in metrics.jsonl and the log
};

/// How the Loop shows progress.
enum class Progress {
  automatic,  ///< a bar on a terminal, lines otherwise
  bar,        ///< a progress bar redrawn in place
  lines,      ///< a log line every log_every steps
  none        ///< nothing
};

/// Which way an eval metric is better.
enum class Better {
  min,  ///< smaller is better (a loss)
  max   ///< larger is better (an accuracy)
};

/// Early stopping: run() ends when the eval metric has not improved for `patience`
/// evaluations in a row. An evaluation improves if its value beats the best so far by
/// more than min_delta (below best - min_delta for Better::min, above best + min_delta
/// for Better::max); the first evaluation always does. NaN never improves.
/// The state is recomputed from history() on resume, so a resumed run stops where an
/// uninterrupted one would, and resuming a stopped run trains no further.
struct EarlyStopping {
  std::string metric;         ///< a metric name of the eval task, e.g. "loss"
  Better mode = Better::min;  ///< which way is better
  long patience = 3;          ///< evaluations without improvement before stopping (>= 1)
  double min_delta = 0;       ///< the least change that counts as an improvement (>= 0)
  std::string task = "eval";  ///< the eval task's name
};

/// Keeping the best checkpoint: after every evaluation whose metric beats the best so
/// far (strictly; NaN never does), the Loop writes `<output_dir>/ckpt_best.npz` (a full
/// checkpoint, atomically) and then `<output_dir>/ckpt_best.json` ({"step", "task",
/// "metric", "mode", "value"}). Neither is ever pruned, nor listed by list_checkpoints.
/// The best so far is recomputed from history() on resume.
struct KeepBest {
  std::string metric;         ///< a metric name of the eval task
  Better mode = Better::min;  ///< which way is better
  std::string task = "eval";  ///< the eval task's name
};

/// Why run() last returned (Loop::end_reason()).
enum class EndReason {
  none,           ///< run() has not returned yet
  completed,      ///< reached the step it was asked for
  early_stopped,  ///< EarlyStopping: the metric stopped improving (now or in an earlier run)
  time_budget,    ///< LoopOptions::time_budget_seconds was used up
  signal          ///< SIGTERM / SIGINT (run() threw training::Stopped)
};

/// Where the Loop writes and how often it evaluates, checkpoints and logs.
struct LoopOptions {
  /// Folder for checkpoints and metrics.jsonl; empty: no files.
  std::string output_dir;
  long eval_every = 100;                    ///< 0: evaluate only at the end of run()
  long checkpoint_every = 0;                ///< 0: checkpoint only at the end of run()
  std::size_t keep_checkpoints = 3;         ///< older checkpoints are pruned
  long log_every = 50;                      ///< plain log lines (when not drawing a bar)
  Progress progress = Progress::automatic;  ///< bar on a terminal, lines otherwise
  std::ostream* out = nullptr;              ///< default std::cout
  /// SIGTERM / SIGINT during run() finish the step, write a checkpoint (with an
  /// output_dir) and throw training::Stopped (training/stop_signals.hpp); false leaves
  /// the signals' handling to the program.
  bool graceful_stop = true;
  /// Callbacks (training/callbacks.hpp), called in this order.
  std::vector<std::shared_ptr<Callback>> callbacks = {};
  /// Stop when an eval metric stops improving (see EarlyStopping).
  std::optional<EarlyStopping> early_stopping = {};
  /// Keep the best checkpoint by an eval metric (see KeepBest; needs an output_dir).
  std::optional<KeepBest> keep_best = {};
  /// Wall-time budget in seconds for the whole run, summed over resumed runs (0: none).
  /// Before a step that could end past the budget (judged with room to spare by the
  /// last step's and the slowest evaluation's and checkpoint's durations), run()
  /// evaluates, writes a checkpoint (which counts the budget as used up) and returns
  /// (EndReason::time_budget); a run resumed with its budget used up trains no further
  /// unless given a larger one. Not an error: run() returns normally. Time is counted
  /// in checkpoints of runs with a budget only.
  double time_budget_seconds = 0;
};

/// One line of metrics.jsonl.
struct MetricsRecord {
  long step;                             ///< the step the values belong to
  std::string task;                      ///< "train" or the eval task's name
  std::map<std::string, double> values;  ///< metric name -> value
};

/// Trains a model on a TrainTask, evaluating EvalTasks, writing metrics.jsonl and
/// checkpoints to output_dir, and resuming bit for bit (see the file documentation of
/// loop.hpp for one step).
/// @code
/// Loop loop(models::TransformerLM({.vocab_size = 64, .d_model = 64, .d_ff = 128,
///                                   .n_layers = 2, .n_heads = 4}),
///           {.stream = copy_task_stream(core::key_from_seed(0), 16, 32, 64),
///            .loss = CrossEntropyLoss(),
///            .optimizer = std::make_shared<Adam>(AdamOptions{.learning_rate = 1e-3})},
///           {{.stream = copy_task_stream(core::key_from_seed(1), 16, 32, 64),
///             .metrics = {{"accuracy", Accuracy()}}}},
///           {.output_dir = "runs/copy", .eval_every = 100});
/// loop.resume();
/// loop.run(400);
/// @endcode
///
/// Multi-input models, BatchStreams, callbacks and stopping:
/// @code
/// std::shared_ptr<data::BatchStream> train = ..., valid = ...;   // (inputs, mask, targets,
/// weights) LoopOptions options{.output_dir = "runs/lm", .eval_every = 200, .checkpoint_every =
/// 1000}; options.callbacks = {every(1000, [](Loop& loop, long step) { /* sample from loop.model()
/// */ })}; options.early_stopping = EarlyStopping{.metric = "loss", .patience = 5, .min_delta =
/// 1e-3}; options.keep_best = KeepBest{.metric = "loss"};             // runs/lm/ckpt_best.npz
/// options.time_budget_seconds = 600;                          // ten minutes, over resumes too
/// Loop loop(model, {.stream = train, .loss = CrossEntropyLoss(), .optimizer = adam},
///           {{.stream = valid, .metrics = {{"loss", CrossEntropyLoss()}}, .n_batches = 8}},
///           options);
/// loop.resume();
/// loop.run(100000);
/// std::cout << loop.end_message() << "\n";   // completed, early stopping or time budget
/// @endcode
///
/// The output folder is one run's: the Loop locks it for its lifetime (RunLock; a
/// second process gets RunLockedError), run() refuses a folder that already holds a
/// run unless resume() was called first (RunExistsError), and a SIGTERM or SIGINT
/// during run() ends it cleanly at a step boundary with a checkpoint (Stopped).
class Loop {
 public:
  /// The model is initialised from the first training batch if it is not yet.
  /// With an output_dir, the folder is made if needed and locked (RunLockedError if
  /// another process holds it).
  Loop(base::LayerPtr model, TrainTask train, std::vector<EvalTask> evals, LoopOptions options = {},
       core::Key rng = core::key_from_seed(0));

  /// Completed training steps.
  long step() const { return step_; }
  /// Trains until step() == n_steps (evaluating and checkpointing on the way), or until
  /// early stopping or the time budget ends it sooner (end_reason() says which; a log
  /// line says why). RunExistsError if output_dir already holds a run and resume() was
  /// not called; Stopped after a graceful stop (LoopOptions::graceful_stop).
  void run(long n_steps);
  /// One training step; returns the loss.
  double train_step();
  /// Runs one eval task now (eval mode; the model's state is left as it was); records
  /// the values in history() and metrics.jsonl, updates early stopping and keep_best
  /// (writing ckpt_best.npz if the value is the best), and returns metric -> mean.
  std::map<std::string, double> evaluate(const EvalTask& task);
  /// Writes a checkpoint of the current step into output_dir (atomically) and
  /// prunes old ones.
  void save_checkpoint();
  /// Restores the newest checkpoint of output_dir (weights, state, optimizer
  /// slots, step, rng). False if there is none; errors if it does not fit, if its step
  /// is beyond `max_step` (when >= 0), or if it is damaged (the message then names the
  /// newest intact checkpoint and how to resume from it). Every check comes before the
  /// first change to the folder.
  /// Made for continuing a killed run: it first deletes the temporaries of atomic
  /// writes that dead processes left in output_dir and prunes old checkpoints, as the
  /// killed run would have after its last checkpoint; it cuts metrics.jsonl back to
  /// the lines of steps <= the checkpoint's step (all of them if there is no
  /// checkpoint; rewritten atomically), and history() becomes those lines (values are
  /// written in the shortest form that reads back to the same double), so that a
  /// resumed run's metrics.jsonl and history are an uninterrupted run's (but for the
  /// timing field step_seconds). Lines it cannot read are kept as they are, and said so.
  bool resume(long max_step = -1);

  /// The model being trained (its weights are the current ones).
  const base::LayerPtr& model() const { return model_; }
  /// Every metrics record so far, as written to metrics.jsonl.
  const std::vector<MetricsRecord>& history() const { return history_; }
  /// The loss of the last training step, if any.
  std::optional<double> last_loss() const { return last_loss_; }
  /// The values of the newest record of `task` ("train" or an eval task's name) in
  /// history(), if any.
  std::optional<std::map<std::string, double>> latest_metrics(const std::string& task) const;
  /// The output folder ("" if none).
  const std::string& output_dir() const { return options_.output_dir; }
  /// Why run() last returned (EndReason::none before it has).
  EndReason end_reason() const { return end_reason_; }
  /// A sentence saying why run() last returned (the line it logged), "" before it has.
  const std::string& end_message() const { return end_message_; }
  /// Wall-time seconds spent in run(), summed over the runs this one resumed.
  double trained_seconds() const;

 private:
  void ensure_initialized(const Batch& batch);
  Batch next_train_batch();
  Batch peek_train_batch(long step);
  void check_batch(const Batch& batch, std::size_t extra, const std::string& what) const;
  std::map<std::string, double> evaluate_task(const EvalTask& task);
  void eval_all();
  void after_eval(const std::string& task, const std::map<std::string, double>& values, bool write);
  void write_best();
  Checkpoint make_checkpoint() const;
  void replay_history();
  bool early_stopped() const { return early_stop_step_ >= 0; }
  void call_callbacks(bool begin, long step);
  void finish(EndReason reason, const std::string& message);
  void check_folder_is_new();
  void prune();
  [[noreturn]] void stop(int signal, long target, bool checkpoint_written);
  void record(const MetricsRecord& r);
  void restore_metrics(long step);
  std::ostream& out() const;
  void progress(long target, double loss, bool force);

  base::LayerPtr model_;
  std::shared_ptr<RunLock> lock_;  // held while the Loop lives (with an output_dir)
  bool folder_checked_ = false;    // resume() was called, or run() found the folder new
  TrainTask train_;
  std::vector<EvalTask> evals_;
  LoopOptions options_;
  core::Key rng_;
  long step_ = 0;
  std::vector<Tensor> weights_;  // the flat weights, in the model's order
  std::vector<MetricsRecord> history_;
  std::optional<double> last_loss_;
  bool bar_ = false;
  double run_start_ = 0;  // seconds (steady clock) at the start of run()
  long run_start_step_ = 0;
  double last_log_ = 0;
  std::size_t loss_extra_ = 0;  // batch arrays the loss takes after the model's outputs
  double seconds_before_ = 0;   // trained_seconds() of the runs this one resumed
  bool running_ = false;
  EndReason end_reason_ = EndReason::none;
  std::string end_message_;
  // EarlyStopping and KeepBest state (replayed from history() on resume).
  double es_best_ = 0;
  bool es_has_best_ = false;
  long es_bad_ = 0;
  long es_best_step_ = -1;
  long early_stop_step_ = -1;
  double best_value_ = 0;
  bool has_best_ = false;
  // Durations of the last step, evaluation and checkpoint (for the time budget).
  double last_step_seconds_ = 0, max_eval_seconds_ = 0, max_save_seconds_ = 0;
  bool budget_stop_ = false;  // the current step ends run() for the time budget
};

}  // namespace minitrax::training
