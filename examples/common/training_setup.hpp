// examples/common/training_setup.hpp: how the example programs turn their config's
// names into the Loop's pieces, written once: the optimizer (Adam with gradient
// clipping), the learning-rate schedule by name, the progress display by name.
#pragma once

#include <algorithm>
#include <memory>
#include <string>

#include "training/loop.hpp"
#include "training/optimizers.hpp"
#include "training/schedules.hpp"

namespace minitrax::app {

/// Adam at learning rate `lr`, no weight decay, gradients clipped to norm 1.
inline std::shared_ptr<training::Optimizer> clipped_adam(double lr) {
  training::AdamOptions adam;
  adam.learning_rate = lr;
  adam.weight_decay_rate = 0.0;
  adam.clip_grad_norm = 1.0;
  return std::make_shared<training::Adam>(adam);
}

/// The schedule a config names: "cosine" (from lr down to lr / 20 over `steps`, after a
/// linear warm-up), "rsqrt" (linear warm-up, then lr * sqrt(warmup / step)) or
/// "constant".
inline training::Schedule schedule_by_name(const std::string& name, double lr, long steps,
                                           long warmup_steps) {
  if (name == "cosine") return training::cosine(lr, steps, lr / 20, warmup_steps);
  if (name == "rsqrt") return training::warmup_and_rsqrt_decay(std::max<long>(warmup_steps, 1), lr);
  return training::constant(lr);
}

/// The progress display a config names: "bar", "lines", "none", else automatic.
inline training::Progress progress_by_name(const std::string& name) {
  return name == "bar"     ? training::Progress::bar
         : name == "lines" ? training::Progress::lines
         : name == "none"  ? training::Progress::none
                           : training::Progress::automatic;
}

}  // namespace minitrax::app
