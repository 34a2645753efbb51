/// @file
/// Learning-rate schedules, step -> learning rate.
///
/// As in Trax 1.3.4 (trax/supervised/lr_schedules.py), a schedule is a function of
/// the step number. Trax's training Loop counts steps from 1 and asks the schedule
/// for the rate of the step it is about to take; the Trax schedules below are
/// written for that (see `constant`).
///
/// Every factory checks its arguments (ValueError saying what is allowed) and every
/// schedule throws ValueError for a negative step.
#pragma once

#include <functional>
#include <string>

namespace minitrax::training {

/// A learning-rate schedule: step (>= 0) -> learning rate.
/// @code
/// Schedule lr = warmup_and_rsqrt_decay(100, 1e-3);
/// double rate = lr(50);   // 50 / 101 * 1e-3
/// @endcode
using Schedule = std::function<double(long step)>;

/// Trax's `constant(value)`: value from step 1 on. Like Trax (its body starts at
/// step 1, with a linear ramp from (0, 0) before it), step 0 gives 0.
Schedule constant(double value);

/// Trax's `warmup(n_warmup_steps, max_value)`: step / (n + 1) * max_value for
/// step <= n, then max_value. (Trax's docstring says the ramp reaches max_value at
/// step n; its code reaches it at n + 1, which we follow.)
Schedule warmup(long n_warmup_steps, double max_value);

/// Trax's `warmup_and_rsqrt_decay(n, max_value)`: the same ramp for step <= n, then
/// max_value * sqrt(n + 1) / sqrt(step).
Schedule warmup_and_rsqrt_decay(long n_warmup_steps, double max_value);

/// Trax's `multifactor`: the product of the factors named in `factors`, separated
/// by '*' (spaces around names are ignored). The factors, at step s:
/// @code{.unparsed}
///   constant                 constant
///   linear_warmup            min(1, s / warmup_steps)                 (warmup_steps >= 1)
///   rsqrt_decay              1 / sqrt(max(s, warmup_steps))
///   rsqrt_normalized_decay   sqrt(warmup_steps) / sqrt(max(s, warmup_steps))
///   decay_every              decay_factor ^ floor(s / steps_per_decay)  (steps_per_decay >= 1)
///   cosine_decay             0.5 (1 + cos(pi * frac(max(0, (s - warmup_steps) /
///                            steps_per_cycle))))                      (steps_per_cycle >= 1)
/// @endcode
/// An unknown or empty factor name is a ValueError listing the allowed names, raised
/// here (Trax raises it at the first call). Like Trax, rsqrt_decay with
/// warmup_steps = 0 gives inf at step 0.
struct MultifactorOptions {
  std::string factors = "constant * linear_warmup * rsqrt_decay";  ///< factor names joined by '*'
  double constant = 0.1;          ///< the value of the constant factor
  long warmup_steps = 400;        ///< linear_warmup length; rsqrt decay starts there
  double decay_factor = 0.5;      ///< decay_every's factor
  long steps_per_decay = 20000;   ///< decay_every's period
  long steps_per_cycle = 100000;  ///< cosine_decay's period
};
/// The multifactor schedule of these options (see MultifactorOptions).
/// @code
/// Schedule lr = multifactor({.constant = 1.0, .warmup_steps = 1000});   // Trax's default factors
/// @endcode
Schedule multifactor(const MultifactorOptions& options = {});
/// The same with Trax's positional arguments and defaults.
Schedule multifactor(const std::string& factors, double constant = 0.1, long warmup_steps = 400,
                     double decay_factor = 0.5, long steps_per_decay = 20000,
                     long steps_per_cycle = 100000);

/// Cosine decay to a floor, with an optional linear warmup (minitrax's own):
/// @code{.unparsed}
///   s < warmup_steps:  max_value * s / warmup_steps
///   otherwise:         p = min(1, (s - warmup_steps) / decay_steps)
///                      min_value + (max_value - min_value) * 0.5 * (1 + cos(pi p))
/// @endcode
/// so it starts at max_value when warmup ends, reaches min_value decay_steps later
/// and stays there. decay_steps >= 1, warmup_steps >= 0, 0 <= min_value <= max_value.
Schedule cosine(double max_value, long decay_steps, double min_value = 0.0, long warmup_steps = 0);

}  // namespace minitrax::training
