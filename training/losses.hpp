/// @file
/// Losses and metrics, as functions and as layers.
///
/// In Trax a loss or a metric is a layer: it takes the model output, the targets
/// and (usually) the weights from the stack and leaves one scalar. Trax 1.3.4
/// models for classification and language modelling end in LogSoftmax, so the
/// model output is log-probabilities [..., n_classes]; targets are integer class
/// ids of shape model_output.shape[:-1]; weights (a mask, 0 on padding) have the
/// targets' shape.
///
/// @code{.unparsed}
///   layer                          inputs                    value
///   CrossEntropyLoss()             log_probs, targets, w     sum(w * nll) / sum(w)   (Trax 1.3.4)
///   WeightedCategoryCrossEntropy() log_probs, targets, w     the same (Trax 1.3.7's name)
///   CrossEntropy()                 log_probs, targets        mean(nll)
///   CrossEntropySum()              log_probs, targets, w     sum(w * nll)            (Trax 1.3.4)
///   Accuracy()                     output, targets, w        sum(w * hit) / sum(w)   (Trax 1.3.4)
///   WeightedCategoryAccuracy()     output, targets, w        the same (Trax 1.3.7's name)
///   CategoryAccuracy()             output, targets           mean(hit)
///   L2Loss()                       output, targets, w        sum(w * (y - t)^2) / sum(w)
///   SumOfWeights()                 output, targets, w        sum(w)
/// @endcode
///
/// with nll = -log_probs[..., target] and hit = (argmax(output, -1) == target).
///
/// The cross entropies pick the target's log-probability with take_along_axis (a
/// gather, and a scatter-add in the VJP) instead of Trax's sum(one_hot * log_probs):
/// the forward touches one element per position instead of the whole vocabulary.
/// The value and the gradient are the same.
///
/// Weights that sum to zero give 0 / 0 = NaN, exactly as Trax 1.3.4's
/// `jnp.sum(values * weights) / jnp.sum(weights)` does (and so does the gradient).
///
/// Checks (Trax 1.3.4 has them commented out; we make them): targets must be
/// int32/int64 of shape log_probs.shape[:-1] (ShapeError / DTypeError), weights
/// must have the targets' shape; a target id outside [0, n_classes) is a ValueError.
/// Weights of another dtype (int masks, float32 weights for a float64 model) are
/// converted to the model output's dtype. Accuracy is not differentiable: its value
/// is a constant (no gradient reaches the model output).
#pragma once

#include <source_location>

#include "autodiff/tape.hpp"
#include "layers/base.hpp"

namespace minitrax::training {

using autodiff::Var;
using base::LayerPtr;
using core::Tensor;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

// ---- functions -------------------------------------------------------------------------
/// -log_probs[..., targets[...]] at every position: shape targets.shape.
Var nll_per_position(const Var& log_probs, const Var& targets);
/// mean(nll): the mean negative log-likelihood over all positions.
Var cross_entropy(const Var& log_probs, const Var& targets);
/// sum(w * nll) / sum(w) (Trax 1.3.4 CrossEntropyLoss; NaN if the weights sum to 0).
/// Differentiable in log_probs (and in weights, if they are on the tape).
/// log_probs [..., n_classes], targets and weights [...] -> a scalar.
/// @code
/// Var loss = weighted_cross_entropy(logp, Var(batch.targets), Var(batch.weights));
/// @endcode
Var weighted_cross_entropy(const Var& log_probs, const Var& targets, const Var& weights);
/// sum(w * nll) (Trax 1.3.4 CrossEntropySum).
Var cross_entropy_sum(const Var& log_probs, const Var& targets, const Var& weights);
/// mean(argmax(output, -1) == targets), a scalar of output's dtype.
Tensor accuracy(const Tensor& output, const Tensor& targets);
/// sum(w * hit) / sum(w) (Trax 1.3.4 Accuracy; NaN if the weights sum to 0).
Tensor weighted_accuracy(const Tensor& output, const Tensor& targets, const Tensor& weights);
/// sum(w * (output - targets)^2) / sum(w); all three of one shape (Trax's L2Loss).
Var l2_loss(const Var& output, const Var& targets, const Var& weights);

// ---- layers ------------------------------------------------------------------------------
/// (log_probs [..., n_classes], targets [...], weights [...]) -> scalar
/// sum(w * nll) / sum(w), as weighted_cross_entropy (Trax 1.3.4's CrossEntropyLoss).
/// @code
/// auto loss = Serial({model, CrossEntropyLoss()});   // (ids, targets, weights) -> loss
/// @endcode
LayerPtr CrossEntropyLoss(SrcLoc where = SrcLoc::current());
/// Trax 1.3.7+ takes logits here and applies log_softmax itself; minitrax takes
/// log-probabilities (Trax 1.3.4 models end in LogSoftmax). from_logits = true
/// gives the 1.3.7 behaviour (log_softmax first).
LayerPtr WeightedCategoryCrossEntropy(bool from_logits = false, SrcLoc where = SrcLoc::current());
/// (log_probs, targets) -> scalar mean(nll), as cross_entropy.
LayerPtr CrossEntropy(SrcLoc where = SrcLoc::current());
/// (log_probs, targets, weights) -> scalar sum(w * nll), as cross_entropy_sum.
LayerPtr CrossEntropySum(SrcLoc where = SrcLoc::current());
/// (output [..., n_classes], targets [...], weights [...]) -> scalar
/// sum(w * hit) / sum(w), as weighted_accuracy (Trax 1.3.4's Accuracy).
/// @code
/// EvalTask task{.stream = eval_stream, .metrics = {{"accuracy", Accuracy()}}};
/// @endcode
LayerPtr Accuracy(SrcLoc where = SrcLoc::current());
/// The same as Accuracy() (Trax 1.3.7's name).
LayerPtr WeightedCategoryAccuracy(SrcLoc where = SrcLoc::current());
/// (output, targets) -> scalar mean(hit), as accuracy.
LayerPtr CategoryAccuracy(SrcLoc where = SrcLoc::current());
/// (output, targets, weights), all of one shape -> scalar sum(w * (y - t)^2) / sum(w),
/// as l2_loss.
LayerPtr L2Loss(SrcLoc where = SrcLoc::current());
/// (output, targets, weights) -> scalar sum(w): how many positions count.
LayerPtr SumOfWeights(SrcLoc where = SrcLoc::current());

}  // namespace minitrax::training
