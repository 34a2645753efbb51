/// @file
/// SGD, Momentum, Adam and Adafactor on flat lists of weights.
///
/// As in Trax 1.3.4 (trax/optimizers/), an optimizer updates each weight array on its
/// own, with per-weight "slots" (Adam's moments, Adafactor's factored second
/// moments), and hyperparameters that may change between steps (the learning rate
/// from a schedule). The model side is flat: `model->flat_weights()` gives the
/// weights in a fixed order with their names, and the gradients come in that order.
///
/// @code
/// training::Adam opt({.learning_rate = 1e-3, .clip_grad_norm = 1.0});
/// opt.init(model->flat_weights());                      // creates the slots
/// for (long step = 1; ...; ++step) {
///   opt.set_learning_rate(schedule(step));
///   std::vector<Tensor> ws = ...current weights..., gs = ...gradients...;
///   opt.update(step, gs, ws);                           // ws now holds the new weights
///   model->set_flat_weights(ws);
/// }
/// @endcode
///
/// Decision: `update` is functional for weights and in place for slots. Each new
/// weight is a fresh tensor stored into `weights[i]`; the buffer it replaces is never
/// written to, so anything still holding the old weights (a tape, a checkpoint being
/// written, the model until set_flat_weights) keeps seeing the old values. Slots
/// belong to the optimizer and are updated in place (they never leave it:
/// `slots()` returns copies and `set_slots()` copies in). Every update is one or
/// two tight loops over raw float/double pointers; nothing is allocated per element.
///
/// Trax 1.3.4 semantics, kept here:
///   * The step is the caller's counter, passed to every update. Adam's bias
///     correction uses step + 1 and Adafactor's decay uses t = step + 1, as Trax
///     does (Trax's Loop counts steps from 1, its older Trainer from 0).
///   * Weight decay is decoupled and NOT scaled by the learning rate:
///     w <- (1 - weight_decay_rate) * w - (the optimizer's step). SGD has none.
///   * Gradient clipping by global norm (base Optimizer.tree_update): with
///     n = sqrt(sum over all gradients of sum(g^2)), each g becomes g * (c / n)
///     unless n < c. It is applied before any optimizer's own rule.
///   * Defaults are Trax 1.3.4's (Adam's eps is 1e-5, weight_decay_rate 1e-5, ...).
///
/// Differences: element-wise work is done in the weights' dtype (float or double)
/// with scalars (bias corrections, decay rates, norms) computed in double; Trax
/// computes everything in float32. Adafactor's factored slots have the weights'
/// dtype (Trax: always float32). Hyperparameters are checked (ValueError naming the
/// allowed range); Trax checks none.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "layers/base.hpp"

namespace minitrax::training {

using base::NamedTensor;
using core::Shape;
using core::Tensor;

/// What Trax's tree_update reports each step.
struct OptimizerMetrics {
  double gradients_l2 = 0;  ///< global norm of the gradients, before clipping
  double weights_l2 = 0;    ///< global norm of the weights, before the update
};

/// sqrt of the sum of squares of every element of every tensor (accumulated in double).
double l2_norm(const std::vector<Tensor>& tensors);
/// Trax's clip_grads: all gradients scaled by max_norm / l2_norm(grads), unless that
/// norm is below max_norm (then returned as they are). max_norm > 0.
std::vector<Tensor> clip_grads(const std::vector<Tensor>& grads, double max_norm);

/// The base of the optimizers: hyperparameters, gradient clipping, per-weight slots
/// and the update loop over flat weights; subclasses give slot_specs() and
/// update_one(). See the file documentation of optimizers.hpp for a training step.
/// @code
/// SGD opt({.learning_rate = 0.1});
/// opt.init(model->flat_weights());
/// opt.update(step, grads, weights);   // weights[i] replaced by weights[i] - 0.1 * grads[i]
/// @endcode
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;  // slots are updated in place: no sharing
  Optimizer& operator=(const Optimizer&) = delete;

  /// "SGD", "Momentum", "Adam", "Adafactor".
  const std::string& name() const { return name_; }

  // ---- hyperparameters (Trax's opt_params) --------------------------------------------
  /// The current learning rate.
  double learning_rate() const { return hyperparameter("learning_rate"); }
  /// Sets the learning rate (checked like set_hyperparameter).
  void set_learning_rate(double value) { set_hyperparameter("learning_rate", value); }
  /// ValueError listing the names if `name` is not one of this optimizer's.
  double hyperparameter(std::string_view name) const;
  /// Checked: a ValueError names the allowed range ("Adam: b1 must be in [0, 1), got 1.5").
  void set_hyperparameter(std::string_view name, double value);
  /// All of them, in a fixed order.
  std::vector<std::pair<std::string, double>> hyperparameters() const;
  /// The global gradient norm clipped to, if any.
  std::optional<double> clip_grad_norm() const { return clip_grad_norm_; }
  /// nullopt: no clipping; otherwise > 0.
  void set_clip_grad_norm(std::optional<double> max_norm);

  // ---- slots --------------------------------------------------------------------------------
  /// Creates zero slots for these weights (float32 or float64), forgetting any
  /// previous ones. Names (default "0", "1", ...) name the slots: "<weight name>/<slot>".
  void init(const std::vector<Tensor>& weights, std::vector<std::string> names = {});
  /// The same from `model->flat_weights()`.
  void init(const std::vector<NamedTensor>& weights);
  /// Whether init() has run.
  bool initialized() const { return initialized_; }
  /// How many weight tensors init() was given.
  std::size_t n_weights() const { return shapes_.size(); }
  /// Copies of all slots, weight by weight, named "<weight name>/<slot name>" (e.g.
  /// "Serial/Dense_1/w/m"). Empty for SGD.
  std::vector<NamedTensor> slots() const;
  /// Restores slots saved by slots() after init with the same weights: every name,
  /// shape and dtype must match (ValueError listing missing, extra and mismatched
  /// entries; nothing changes on error). Values are copied.
  void set_slots(const std::vector<NamedTensor>& slots);

  // ---- the update ------------------------------------------------------------------------------
  /// One step: clips the gradients (if set), then replaces each weights[i] by a new
  /// tensor with the updated values and updates the slots. grads and weights must
  /// match the shapes and dtypes given to init. step >= 0.
  OptimizerMetrics update(long step, const std::vector<Tensor>& grads,
                          std::vector<Tensor>& weights);

 protected:
  /// A hyperparameter and its allowed range [lo, hi] (ends open if said).
  struct Hyper {
    std::string name;                       ///< e.g. "learning_rate"
    double value;                           ///< the current value
    double lo, hi;                          ///< the upper end of the allowed range
    bool lo_open = false, hi_open = false;  ///< whether hi itself is excluded
    /// @var lo
    /// The lower end of the allowed range.
    /// @var lo_open
    /// Whether lo itself is excluded.
  };
  /// One slot of a weight: its name ("m", "v_row", ...) and shape.
  struct SlotSpec {
    std::string name;  ///< the slot name, the last part of slots() names
    Shape shape;       ///< the slot's shape (dtype: the weight's)
  };
  /// An optimizer called `name` with these hyperparameters (checked against their
  /// ranges) and gradient clipping (nullopt: none).
  Optimizer(std::string name, std::vector<Hyper> hypers, std::optional<double> clip_grad_norm);

  /// The slots a weight of this shape gets (same dtype as the weight).
  virtual std::vector<SlotSpec> slot_specs(const Shape& weight_shape) const = 0;
  /// Writes the new weight into `out` (fresh, same shape and dtype) and updates
  /// `slots` in place; the gradient is grad * grad_scale (clipping).
  virtual void update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                          Tensor& out, std::vector<Tensor>& slots) = 0;
  /// Hyperparameter i, in the order given to the constructor (fast, no lookup).
  double hp(std::size_t i) const { return hypers_[i].value; }

 private:
  void check_hyper(const Hyper& h, double value) const;
  std::size_t hyper_index(std::string_view name) const;

  std::string name_;
  std::vector<Hyper> hypers_;
  std::optional<double> clip_grad_norm_;
  bool initialized_ = false;
  std::vector<Shape> shapes_;
  std::vector<core::DType> dtypes_;
  std::vector<std::string> names_;
  std::vector<std::vector<Tensor>> slots_;
};

// ---- SGD -----------------------------------------------------------------------------------
/// SGD's settings (Trax 1.3.4's defaults).
struct SGDOptions {
  double learning_rate = 0.01;                          ///< > 0
  std::optional<double> clip_grad_norm = std::nullopt;  ///< global-norm clipping; none by default
};
/// w <- w - lr * g. No slots, no weight decay (as Trax 1.3.4's SGD).
class SGD : public Optimizer {
 public:
  /// @code
  /// SGD opt({.learning_rate = 0.1});
  /// @endcode
  explicit SGD(const SGDOptions& options = {});

 protected:
  std::vector<SlotSpec> slot_specs(const Shape& weight_shape) const override;
  void update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                  Tensor& out, std::vector<Tensor>& slots) override;
};

// ---- Momentum ------------------------------------------------------------------------------
/// Momentum's settings (Trax 1.3.4's defaults).
struct MomentumOptions {
  double learning_rate = 0.01;                          ///< > 0
  double mass = 0.9;                                    ///< in [0, 1)
  double weight_decay_rate = 1e-5;                      ///< in [0, 1)
  bool nesterov = true;                                 ///< Nesterov's look-ahead
  std::optional<double> clip_grad_norm = std::nullopt;  ///< global-norm clipping; none by default
};
/// SGD with momentum (Trax 1.3.4's Momentum), per weight:
/// @code{.unparsed}
/// v <- mass * v + g;  u = nesterov ? mass * v + g : v;
/// w <- (1 - weight_decay_rate) * w - lr * u.   Slot: "velocity".
/// @endcode
class Momentum : public Optimizer {
 public:
  /// @code
  /// Momentum opt({.learning_rate = 0.05, .mass = 0.9});
  /// @endcode
  explicit Momentum(const MomentumOptions& options = {});
  /// Whether the update uses Nesterov's look-ahead.
  bool nesterov() const { return nesterov_; }

 protected:
  std::vector<SlotSpec> slot_specs(const Shape& weight_shape) const override;
  void update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                  Tensor& out, std::vector<Tensor>& slots) override;

 private:
  bool nesterov_;
};

// ---- Adam ------------------------------------------------------------------------------------
/// Adam's settings (Trax 1.3.4's defaults).
struct AdamOptions {
  double learning_rate = 1e-4;                          ///< > 0
  double weight_decay_rate = 1e-5;                      ///< in [0, 1)
  double b1 = 0.9;                                      ///< in [0, 1)
  double b2 = 0.999;                                    ///< in [0, 1)
  double eps = 1e-5;                                    ///< > 0
  std::optional<double> clip_grad_norm = std::nullopt;  ///< global-norm clipping; none by default
};
/// Adam with decoupled weight decay (Trax 1.3.4's Adam), per weight:
/// @code{.unparsed}
/// m <- (1 - b1) g + b1 m;  v <- (1 - b2) g^2 + b2 v;
/// m^ = m / (1 - b1^(step+1));  v^ = v / (1 - b2^(step+1));
/// w <- (1 - weight_decay_rate) * w - lr * m^ / (sqrt(v^) + eps).   Slots: "m", "v".
/// @endcode
class Adam : public Optimizer {
 public:
  /// @code
  /// auto opt = std::make_shared<Adam>(AdamOptions{.learning_rate = 1e-3, .clip_grad_norm = 1.0});
  /// @endcode
  explicit Adam(const AdamOptions& options = {});

 protected:
  std::vector<SlotSpec> slot_specs(const Shape& weight_shape) const override;
  void update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                  Tensor& out, std::vector<Tensor>& slots) override;
};

// ---- Adafactor ---------------------------------------------------------------------------------
/// Adafactor's settings (Trax 1.3.4's defaults).
struct AdafactorOptions {
  double learning_rate = 0.05;              ///< > 0
  bool factored = true;                     ///< factored second moments for rank >= 2
  bool multiply_by_parameter_scale = true;  ///< step scaled by max(rms(w), epsilon2)
  bool do_clipping = true;                  ///< update clipping by rms (clipping_threshold)
  bool do_momentum = false;                 ///< first moment with beta1 (slot "m")
  double beta1 = 0.0;                       ///< in [0, 1)
  double decay_rate = 0.8;                  ///< exponent c of 1 - t^-c; >= 0
  double clipping_threshold = 1.0;          ///< > 0
  double weight_decay_rate = 1e-5;          ///< in [0, 1)
  double epsilon1 = 1e-30;                  ///< > 0, added to g^2
  double epsilon2 = 1e-3;                   ///< >= 0, floor of the parameter scale
  std::optional<double> clip_grad_norm = std::nullopt;  ///< global-norm clipping; none by default
};
/// Adafactor (Shazeer & Stern 2018) as Trax 1.3.4's adafactor.py, with t = step + 1:
/// @code{.unparsed}
///   decay = 1 - t^-decay_rate, g2 = g^2 + epsilon1
///   rank >= 2 and factored ([..., R, C]):
///     v_row <- decay v_row + (1 - decay) mean(g2, -1)     slot "v_row", shape [..., R]
///     v_col <- decay v_col + (1 - decay) mean(g2, -2)     slot "v_col", shape [..., C]
///     y = g * (v_row / mean(v_row, -1))^-1/2 [..., :, None] * v_col^-1/2 [..., None, :]
///   otherwise: v <- decay v + (1 - decay) g2 (slot "v");  y = g * v^-1/2
///   clipping:  y /= max(1, rms(y) / clipping_threshold)
///   scale = lr * (multiply_by_parameter_scale ? max(rms(w), epsilon2) : 1)
///   u = scale * y;  momentum: m <- beta1 m + (1 - beta1) u (slot "m"); u = m
///   w <- (1 - weight_decay_rate) * w - u
/// @endcode
class Adafactor : public Optimizer {
 public:
  /// @code
  /// Adafactor opt({.learning_rate = 0.01, .do_momentum = true, .beta1 = 0.9});
  /// @endcode
  explicit Adafactor(const AdafactorOptions& options = {});

 protected:
  std::vector<SlotSpec> slot_specs(const Shape& weight_shape) const override;
  void update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                  Tensor& out, std::vector<Tensor>& slots) override;

 private:
  bool factored_, multiply_by_parameter_scale_, do_clipping_, do_momentum_;
};

}  // namespace minitrax::training
