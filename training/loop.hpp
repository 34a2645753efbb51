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
/// One training step: batch = stream(step); the flat weights are watched on a
/// fresh tape and installed in the model; loss = loss_layer(model(inputs), targets,
/// weights); gradients by one backward pass; the optimizer updates the weights.
/// Randomness (dropout, LSH hashing) comes from fold_in(loop key, step), and batches
/// from stream(step), so a run resumed from a checkpoint continues bit for bit.
#pragma once

#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "layers/base.hpp"
#include "training/data.hpp"
#include "training/optimizers.hpp"
#include "training/run_folder.hpp"
#include "training/schedules.hpp"
#include "training/stop_signals.hpp"

namespace minitrax::training {

/// What to train: the data, the loss layer, the optimizer and the learning rate.
struct TrainTask {
  /// Training batches: batch `step` for each step.
  Stream stream;
  /// (model output, targets, weights) -> scalar loss.
  base::LayerPtr loss;
  /// The optimizer (the Loop initialises its slots from the model's flat weights).
  std::shared_ptr<Optimizer> optimizer;
  /// Learning rate per step (1-based); empty: the optimizer's own, constant.
  Schedule lr_schedule;
};

/// What to evaluate: a stream and named metric layers, averaged over n_batches.
struct EvalTask {
  /// Eval batches (batches 0 .. n_batches-1 are used).
  Stream stream;
  /// Named metric layers: (model output, targets, weights) -> scalar.
  std::vector<std::pair<std::string, base::LayerPtr>> metrics;
  /// Batches 0 .. n_batches-1 of the stream, the same ones at every evaluation.
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
  /// Trains until step() == n_steps (evaluating and checkpointing on the way).
  /// RunExistsError if output_dir already holds a run and resume() was not called;
  /// Stopped after a graceful stop (LoopOptions::graceful_stop).
  void run(long n_steps);
  /// One training step; returns the loss.
  double train_step();
  /// Runs one eval task now (eval mode, nothing recorded); returns metric -> mean.
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

 private:
  void ensure_initialized(const Batch& batch);
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
};

}  // namespace minitrax::training
