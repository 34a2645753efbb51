// minitrax/training/loop.hpp: the training loop (Trax's supervised.training.Loop).
//
//   training::Loop loop(model,
//                       {.stream = train_stream, .loss = WeightedCategoryCrossEntropy(),
//                        .optimizer = std::make_shared<training::Adam>(...),
//                        .lr_schedule = training::warmup_and_rsqrt_decay(100, 1e-3)},
//                       {{.stream = eval_stream, .metrics = {{"loss", ...}, {"accuracy", ...}}}},
//                       {.output_dir = "run1", .eval_every = 100});
//   loop.resume();      // continues from the newest checkpoint in run1/, if any
//   loop.run(2000);     // trains until step 2000
//
// One training step: batch = stream(step); the flat weights are watched on a
// fresh tape and installed in the model; loss = loss_layer(model(inputs), targets,
// weights); gradients by one backward pass; the optimizer updates the weights.
// Randomness (dropout, LSH hashing) comes from fold_in(loop key, step), and batches
// from stream(step), so a run resumed from a checkpoint continues bit for bit.
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
#include "training/schedules.hpp"

namespace minitrax::training {

struct TrainTask {
  Stream stream;
  /// (model output, targets, weights) -> scalar loss.
  base::LayerPtr loss;
  std::shared_ptr<Optimizer> optimizer;
  /// Learning rate per step (1-based); empty: the optimizer's own, constant.
  Schedule lr_schedule;
};

struct EvalTask {
  Stream stream;
  /// Named metric layers: (model output, targets, weights) -> scalar.
  std::vector<std::pair<std::string, base::LayerPtr>> metrics;
  /// Batches 0 .. n_batches-1 of the stream, the same ones at every evaluation.
  long n_batches = 1;
  std::string name = "eval";
};

enum class Progress { automatic, bar, lines, none };

struct LoopOptions {
  /// Folder for checkpoints and metrics.jsonl; empty: no files.
  std::string output_dir;
  long eval_every = 100;      // 0: evaluate only at the end of run()
  long checkpoint_every = 0;  // 0: checkpoint only at the end of run()
  std::size_t keep_checkpoints = 3;
  long log_every = 50;                      // plain log lines (when not drawing a bar)
  Progress progress = Progress::automatic;  // bar on a terminal, lines otherwise
  std::ostream* out = nullptr;              // default std::cout
};

/// One line of metrics.jsonl.
struct MetricsRecord {
  long step;
  std::string task;  // "train" or the eval task's name
  std::map<std::string, double> values;
};

class Loop {
 public:
  /// The model is initialised from the first training batch if it is not yet.
  Loop(base::LayerPtr model, TrainTask train, std::vector<EvalTask> evals, LoopOptions options = {},
       core::Key rng = core::key_from_seed(0));

  /// Completed training steps.
  long step() const { return step_; }
  /// Trains until step() == n_steps (evaluating and checkpointing on the way).
  void run(long n_steps);
  /// One training step; returns the loss.
  double train_step();
  /// Runs one eval task now (eval mode, nothing recorded); returns metric -> mean.
  std::map<std::string, double> evaluate(const EvalTask& task);
  /// Writes a checkpoint of the current step into output_dir (atomically) and
  /// prunes old ones.
  void save_checkpoint();
  /// Restores the newest checkpoint of output_dir (weights, state, optimizer
  /// slots, step, rng). False if there is none; errors if it does not fit.
  bool resume();

  const base::LayerPtr& model() const { return model_; }
  const std::vector<MetricsRecord>& history() const { return history_; }
  std::optional<double> last_loss() const { return last_loss_; }

 private:
  void ensure_initialized(const Batch& batch);
  void record(const MetricsRecord& r);
  std::ostream& out() const;
  void progress(long target, double loss, bool force);

  base::LayerPtr model_;
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
