/// @file
/// Training callbacks (Trax's training callbacks): code the Loop runs around chosen steps.
///
/// A Callback says at which steps it wants to run (call_at, a function of the step only)
/// and is called before the step (on_step_begin) and after it (on_step_end: after the
/// step's evaluation, if any, and before its checkpoint). Steps are numbered from 1, as
/// the Loop counts them: step s is the s-th update. Inside a call the callback sees the
/// Loop: the model with the current weights, step(), history(), last_loss(),
/// latest_metrics(task), output_dir(). The Loop saves the model's mode and state before
/// a call and restores them after, so a callback may run the model (e.g. in eval mode)
/// without changing the training run.
///
/// @code
/// // Every 100 steps: print the latest eval accuracy.
/// options.callbacks.push_back(training::every(100, [](training::Loop& loop, long step) {
///   if (auto m = loop.latest_metrics("eval")) std::cout << step << " " << m->at("accuracy") <<
///   "\n";
/// }));
///
/// // The same as a class, the way Trax writes them.
/// struct Sampler : training::Callback {
///   bool call_at(long step) const override { return step % 500 == 0; }
///   void on_step_end(training::Loop& loop, long step) override { ... loop.model() ... }
/// };
/// options.callbacks.push_back(std::make_shared<Sampler>());
/// @endcode
///
/// Resuming: call_at depends on the step only, so a resumed run calls a callback at the
/// steps an uninterrupted one would after the checkpoint it resumed from. A callback
/// that keeps state between calls keeps it where a resumed run finds it: recomputed
/// from loop.history() (metrics.jsonl, cut back to the checkpoint on resume) or in files
/// of loop.output_dir(). Calls of steps after the newest checkpoint are made again
/// when a killed run is resumed (at least once, never skipped).
#pragma once

#include <functional>
#include <memory>

namespace minitrax::training {

class Loop;

/// Code run by the Loop around the steps call_at() selects (see callbacks.hpp).
class Callback {
 public:
  virtual ~Callback() = default;
  /// Whether to call on_step_begin / on_step_end for step `step` (>= 1). A function of
  /// the step only.
  virtual bool call_at(long step) const = 0;
  /// Before step `step` runs (loop.step() == step - 1).
  virtual void on_step_begin(Loop& loop, long step) {
    (void)loop;
    (void)step;
  }
  /// After step `step` (loop.step() == step), its evaluation and metrics lines, before
  /// its checkpoint.
  virtual void on_step_end(Loop& loop, long step) {
    (void)loop;
    (void)step;
  }
};

/// A callback that calls `fn(loop, step)` after every step that is a multiple of `n`
/// (n >= 1; ValueError otherwise, or if fn is empty).
/// @code
/// auto cb = training::every(50, [](training::Loop& loop, long step) { ... });
/// @endcode
std::shared_ptr<Callback> every(long n, std::function<void(Loop& loop, long step)> fn);

}  // namespace minitrax::training
