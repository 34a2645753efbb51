// minitrax/training/losses.cpp
#include "training/losses.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/kernels.hpp"

namespace minitrax::training {

namespace fm = minitrax::fastmath;
using base::Signature;
using base::Stack;
using core::DType;
using core::Shape;

namespace {

std::vector<long> as_long(const Shape& s) {
  return std::vector<long>(s.begin(), s.end());
}

void check_defined(const std::string& who, const Tensor& t, const char* what) {
  if (!t.defined()) throw ValueError(who + ": the " + what + " tensor is undefined");
}

// The model output is float [..., n_classes]; targets are integer ids of shape [...].
void check_output_and_targets(const std::string& who, const Tensor& out, const Tensor& targets) {
  check_defined(who, out, "model output");
  check_defined(who, targets, "targets");
  core::check_floating(who, out);
  if (out.ndim() == 0) {
    throw core::ShapeError(who +
                           ": the model output needs a class axis (shape [..., n_classes]), "
                           "got a scalar");
  }
  if (targets.dtype() != DType::i32 && targets.dtype() != DType::i64) {
    throw core::DTypeError(who + ": targets must be int32 or int64 class ids, got " +
                           std::string(core::dtype_name(targets.dtype())));
  }
  const Shape expected(out.shape().begin(), out.shape().end() - 1);
  if (targets.shape() != expected) {
    throw core::ShapeError(who +
                           ": targets must have the model output's shape without its "
                           "class axis: model output " +
                           core::shape_str(out.shape()) + ", so targets " +
                           core::shape_str(expected) + ", got " + core::shape_str(targets.shape()));
  }
}

void check_weights(const std::string& who, const Tensor& targets, const Tensor& weights) {
  check_defined(who, weights, "weights");
  if (weights.shape() != targets.shape()) {
    throw core::ShapeError(who + ": weights must have the targets' shape " +
                           core::shape_str(targets.shape()) + ", got " +
                           core::shape_str(weights.shape()));
  }
}

// Weights in the dtype of the values they weigh (differentiably, if float to float).
Var weights_as(const Var& weights, DType dtype) {
  return weights.dtype() == dtype ? weights : fm::astype(weights, dtype);
}

Var nll_impl(const std::string& who, const Var& log_probs, const Var& targets) {
  check_output_and_targets(who, log_probs.value(), targets.value());
  Shape index_shape = targets.shape();
  index_shape.push_back(1);
  // log_probs[..., t] for each position: a gather of one element per row.
  Var picked = fm::take_along_axis(log_probs, Var(targets.value().reshape(index_shape)), -1);
  return fm::negative(fm::reshape(picked, as_long(targets.shape())));
}

// sum(w * log_probs[..., t]), the weighted sum of the picked log-probabilities.
Var weighted_log_likelihood(const std::string& who, const Var& log_probs, const Var& targets,
                            const Var& weights) {
  check_output_and_targets(who, log_probs.value(), targets.value());
  check_weights(who, targets.value(), weights.value());
  Shape index_shape = targets.shape();
  index_shape.push_back(1);
  Var picked = fm::take_along_axis(log_probs, Var(targets.value().reshape(index_shape)), -1);
  picked = fm::reshape(picked, as_long(targets.shape()));
  return fm::sum(fm::multiply(picked, weights_as(weights, log_probs.dtype())));
}

Var weighted_cross_entropy_impl(const std::string& who, const Var& log_probs, const Var& targets,
                                const Var& weights) {
  Var ll = weighted_log_likelihood(who, log_probs, targets, weights);
  // -(sum w * log p) / sum w: negating the scalar is exact, so this equals Trax's
  // sum((-log p) * w) / sum(w) bit for bit in the sum's order.
  return fm::divide(fm::negative(ll), fm::sum(weights_as(weights, log_probs.dtype())));
}

// Hits and weights summed in double; returns (sum w * hit, sum w).
std::pair<double, double> weighted_hits(const std::string& who, const Tensor& output,
                                        const Tensor& targets, const Tensor* weights) {
  check_output_and_targets(who, output, targets);
  if (weights) check_weights(who, targets, *weights);
  const Tensor predicted = core::argmax(output, -1, DType::i64);
  const std::int64_t* p = predicted.data<std::int64_t>();
  const std::size_t n = targets.size();
  const Tensor w = weights ? weights->astype(DType::f64) : Tensor();
  const double* wp = weights ? w.data<double>() : nullptr;
  return core::dispatch_integer(targets.dtype(), who, [&](auto tag) {
    using I = decltype(tag);
    const I* t = targets.data<I>();
    double hits = 0, total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double wi = wp ? wp[i] : 1.0;
      if (p[i] == static_cast<std::int64_t>(t[i])) hits += wi;
      total += wi;
    }
    return std::pair<double, double>(hits, total);
  });
}

// ---- the layer ---------------------------------------------------------------------------
// A loss or metric: n_in inputs, one scalar out. Its output signature comes from a
// rule, not from running it on zeros (zero weights would give NaN, and with
// debug_nans on, an error).
class MetricLayer : public base::Layer {
 public:
  using Function = std::function<Var(const std::string& who, const Stack&)>;
  MetricLayer(std::string name, int n_in, Function f, std::size_t dtype_from, SrcLoc where)
      : base::Layer(n_in, 1, std::move(name), where), f_(std::move(f)), dtype_from_(dtype_from) {}

 protected:
  Stack forward(const Stack& inputs) override { return Stack{f_(name(), inputs)}; }
  Signature forward_signature(const Signature& in) override {
    return Signature{{Shape{}, in.at(dtype_from_).dtype}};
  }

 private:
  Function f_;
  std::size_t dtype_from_;  // which input's dtype the scalar has
};

LayerPtr metric(std::string name, int n_in, MetricLayer::Function f, SrcLoc where,
                std::size_t dtype_from = 0) {
  return std::make_shared<MetricLayer>(std::move(name), n_in, std::move(f), dtype_from, where);
}

}  // namespace

// ---- functions -----------------------------------------------------------------------------

Var nll_per_position(const Var& log_probs, const Var& targets) {
  return nll_impl("nll_per_position", log_probs, targets);
}

Var cross_entropy(const Var& log_probs, const Var& targets) {
  return fm::mean(nll_impl("cross_entropy", log_probs, targets));
}

Var weighted_cross_entropy(const Var& log_probs, const Var& targets, const Var& weights) {
  return weighted_cross_entropy_impl("weighted_cross_entropy", log_probs, targets, weights);
}

Var cross_entropy_sum(const Var& log_probs, const Var& targets, const Var& weights) {
  return fm::negative(weighted_log_likelihood("cross_entropy_sum", log_probs, targets, weights));
}

Tensor accuracy(const Tensor& output, const Tensor& targets) {
  const auto [hits, total] = weighted_hits("accuracy", output, targets, nullptr);
  return Tensor::scalar(hits / total, output.dtype());
}

Tensor weighted_accuracy(const Tensor& output, const Tensor& targets, const Tensor& weights) {
  const auto [hits, total] = weighted_hits("weighted_accuracy", output, targets, &weights);
  return Tensor::scalar(hits / total, output.dtype());
}

Var l2_loss(const Var& output, const Var& targets, const Var& weights) {
  const std::string who = "l2_loss";
  check_defined(who, output.value(), "model output");
  check_defined(who, targets.value(), "targets");
  check_defined(who, weights.value(), "weights");
  core::check_floating(who, output.value());
  if (targets.shape() != output.shape() || weights.shape() != output.shape()) {
    throw core::ShapeError(who + ": model output, targets and weights must have one shape, got " +
                           core::shape_str(output.shape()) + ", " +
                           core::shape_str(targets.shape()) + " and " +
                           core::shape_str(weights.shape()));
  }
  const Var w = weights_as(weights, output.dtype());
  const Var diff = fm::subtract(output, weights_as(targets, output.dtype()));
  return fm::divide(fm::sum(fm::multiply(w, fm::square(diff))), fm::sum(w));
}

// ---- layers ----------------------------------------------------------------------------------

LayerPtr CrossEntropyLoss(SrcLoc where) {
  return metric(
      "CrossEntropyLoss", 3,
      [](const std::string& who, const Stack& xs) {
        return weighted_cross_entropy_impl(who, xs[0], xs[1], xs[2]);
      },
      where);
}

LayerPtr WeightedCategoryCrossEntropy(bool from_logits, SrcLoc where) {
  return metric(
      "WeightedCategoryCrossEntropy", 3,
      [from_logits](const std::string& who, const Stack& xs) {
        const Var lp = from_logits ? fm::log_softmax(xs[0]) : xs[0];
        return weighted_cross_entropy_impl(who, lp, xs[1], xs[2]);
      },
      where);
}

LayerPtr CrossEntropy(SrcLoc where) {
  return metric(
      "CrossEntropy", 2,
      [](const std::string& who, const Stack& xs) { return fm::mean(nll_impl(who, xs[0], xs[1])); },
      where);
}

LayerPtr CrossEntropySum(SrcLoc where) {
  return metric(
      "CrossEntropySum", 3,
      [](const std::string& who, const Stack& xs) {
        return fm::negative(weighted_log_likelihood(who, xs[0], xs[1], xs[2]));
      },
      where);
}

namespace {
LayerPtr weighted_accuracy_layer(std::string name, SrcLoc where) {
  return metric(
      std::move(name), 3,
      [](const std::string& who, const Stack& xs) {
        const auto [hits, total] = weighted_hits(who, xs[0].value(), xs[1].value(), &xs[2].value());
        return Var(Tensor::scalar(hits / total, xs[0].dtype()));
      },
      where);
}
}  // namespace

LayerPtr Accuracy(SrcLoc where) {
  return weighted_accuracy_layer("Accuracy", where);
}

LayerPtr WeightedCategoryAccuracy(SrcLoc where) {
  return weighted_accuracy_layer("WeightedCategoryAccuracy", where);
}

LayerPtr CategoryAccuracy(SrcLoc where) {
  return metric(
      "CategoryAccuracy", 2,
      [](const std::string& who, const Stack& xs) {
        const auto [hits, total] = weighted_hits(who, xs[0].value(), xs[1].value(), nullptr);
        return Var(Tensor::scalar(hits / total, xs[0].dtype()));
      },
      where);
}

LayerPtr L2Loss(SrcLoc where) {
  return metric(
      "L2Loss", 3, [](const std::string&, const Stack& xs) { return l2_loss(xs[0], xs[1], xs[2]); },
      where);
}

LayerPtr SumOfWeights(SrcLoc where) {
  return metric(
      "SumOfWeights", 3, [](const std::string&, const Stack& xs) { return fm::sum(xs[2]); }, where,
      /*dtype_from=*/2);
}

}  // namespace minitrax::training
