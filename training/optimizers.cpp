// minitrax/training/optimizers.cpp
//
// Each optimizer's rule is a template over the element type T (float or double),
// written as tight loops over raw pointers. Scalars that do not depend on the
// element (learning rate, bias corrections, decay rates, norms) are computed once
// in double and converted to T before the loop.
#include "training/optimizers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "core/ops.hpp"

namespace minitrax::training {

using core::DType;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

template <class T>
double sum_squares(const T* p, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * static_cast<double>(p[i]);
  return s;
}

double sum_squares(const Tensor& t, std::string_view who) {
  return core::dispatch_floating(t.dtype(), who, [&](auto tag) {
    using T = decltype(tag);
    return sum_squares(t.data<T>(), t.size());
  });
}

}  // namespace

// ---- norms and clipping ----------------------------------------------------------------------

double l2_norm(const std::vector<Tensor>& tensors) {
  double s = 0;
  for (const Tensor& t : tensors) {
    if (!t.defined()) throw ValueError("l2_norm: a tensor is undefined");
    s += sum_squares(t, "l2_norm");
  }
  return std::sqrt(s);
}

std::vector<Tensor> clip_grads(const std::vector<Tensor>& grads, double max_norm) {
  if (!(max_norm > 0) || std::isinf(max_norm)) {
    throw ValueError("clip_grads: max_norm must be in (0, inf), got " + num(max_norm));
  }
  const double norm = l2_norm(grads);
  if (norm < max_norm) return grads;
  std::vector<Tensor> out;
  out.reserve(grads.size());
  for (const Tensor& g : grads) out.push_back(core::mul(g, max_norm / norm));
  return out;
}

// ---- Optimizer ---------------------------------------------------------------------------------

Optimizer::Optimizer(std::string name, std::vector<Hyper> hypers,
                     std::optional<double> clip_grad_norm)
    : name_(std::move(name)), hypers_(std::move(hypers)) {
  for (const Hyper& h : hypers_) check_hyper(h, h.value);
  set_clip_grad_norm(clip_grad_norm);
}

void Optimizer::check_hyper(const Hyper& h, double value) const {
  const bool ok = std::isfinite(value) && (h.lo_open ? value > h.lo : value >= h.lo) &&
                  (h.hi_open ? value < h.hi : value <= h.hi);
  if (ok) return;
  const std::string range = std::string(h.lo_open ? "(" : "[") + num(h.lo) + ", " + num(h.hi) +
                            (h.hi_open || std::isinf(h.hi) ? ")" : "]");
  throw ValueError(name_ + ": " + h.name + " must be in " + range + ", got " + num(value));
}

std::size_t Optimizer::hyper_index(std::string_view name) const {
  for (std::size_t i = 0; i < hypers_.size(); ++i) {
    if (hypers_[i].name == name) return i;
  }
  std::string names;
  for (const Hyper& h : hypers_) names += (names.empty() ? "" : ", ") + h.name;
  throw ValueError(name_ + ": no hyperparameter '" + std::string(name) + "'; it has " + names);
}

double Optimizer::hyperparameter(std::string_view name) const {
  return hypers_[hyper_index(name)].value;
}

void Optimizer::set_hyperparameter(std::string_view name, double value) {
  Hyper& h = hypers_[hyper_index(name)];
  check_hyper(h, value);
  h.value = value;
}

std::vector<std::pair<std::string, double>> Optimizer::hyperparameters() const {
  std::vector<std::pair<std::string, double>> out;
  for (const Hyper& h : hypers_) out.emplace_back(h.name, h.value);
  return out;
}

void Optimizer::set_clip_grad_norm(std::optional<double> max_norm) {
  if (max_norm && (!(*max_norm > 0) || std::isinf(*max_norm))) {
    throw ValueError(name_ + ": clip_grad_norm must be in (0, inf) or unset, got " +
                     num(*max_norm));
  }
  clip_grad_norm_ = max_norm;
}

void Optimizer::init(const std::vector<Tensor>& weights, std::vector<std::string> names) {
  if (names.empty()) {
    for (std::size_t i = 0; i < weights.size(); ++i) names.push_back(std::to_string(i));
  }
  if (names.size() != weights.size()) {
    throw ValueError(name_ + ".init: " + std::to_string(weights.size()) + " weights but " +
                     std::to_string(names.size()) + " names");
  }
  std::map<std::string, std::size_t> seen;
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  std::vector<std::vector<Tensor>> slots;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const Tensor& w = weights[i];
    if (!seen.emplace(names[i], i).second) {
      throw ValueError(name_ + ".init: two weights are named '" + names[i] + "'");
    }
    if (!w.defined()) throw ValueError(name_ + ".init: weight '" + names[i] + "' is undefined");
    core::check_floating(name_ + ".init: weight '" + names[i] + "'", w);
    shapes.push_back(w.shape());
    dtypes.push_back(w.dtype());
    std::vector<Tensor> s;
    for (const SlotSpec& spec : slot_specs(w.shape()))
      s.push_back(Tensor::zeros(spec.shape, w.dtype()));
    slots.push_back(std::move(s));
  }
  shapes_ = std::move(shapes);
  dtypes_ = std::move(dtypes);
  names_ = std::move(names);
  slots_ = std::move(slots);
  initialized_ = true;
}

void Optimizer::init(const std::vector<NamedTensor>& weights) {
  std::vector<Tensor> ws;
  std::vector<std::string> names;
  for (const NamedTensor& nt : weights) {
    ws.push_back(nt.value);
    names.push_back(nt.name);
  }
  init(ws, std::move(names));
}

std::vector<NamedTensor> Optimizer::slots() const {
  std::vector<NamedTensor> out;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const auto specs = slot_specs(shapes_[i]);
    for (std::size_t k = 0; k < specs.size(); ++k) {
      out.push_back({names_[i] + "/" + specs[k].name, slots_[i][k].clone()});
    }
  }
  return out;
}

void Optimizer::set_slots(const std::vector<NamedTensor>& given) {
  if (!initialized_) {
    throw ValueError(name_ +
                     ".set_slots: call init(weights) first, so the slots' shapes are known");
  }
  // Where each expected slot lives: name -> (weight, slot).
  std::map<std::string, std::pair<std::size_t, std::size_t>> where;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const auto specs = slot_specs(shapes_[i]);
    for (std::size_t k = 0; k < specs.size(); ++k) where[names_[i] + "/" + specs[k].name] = {i, k};
  }
  std::vector<std::string> problems;
  std::map<std::string, const Tensor*> found;
  for (const NamedTensor& nt : given) {
    auto it = where.find(nt.name);
    if (it == where.end()) {
      problems.push_back("unexpected slot '" + nt.name + "'");
      continue;
    }
    if (!found.emplace(nt.name, &nt.value).second) {
      problems.push_back("slot '" + nt.name + "' given twice");
      continue;
    }
    const Tensor& want = slots_[it->second.first][it->second.second];
    if (!nt.value.defined() || nt.value.shape() != want.shape() ||
        nt.value.dtype() != want.dtype()) {
      problems.push_back("slot '" + nt.name + "': expected " + core::shape_str(want.shape()) + " " +
                         std::string(core::dtype_name(want.dtype())) + ", got " +
                         (nt.value.defined() ? core::shape_str(nt.value.shape()) + " " +
                                                   std::string(core::dtype_name(nt.value.dtype()))
                                             : std::string("an undefined tensor")));
    }
  }
  for (const auto& [name, pos] : where) {
    if (!found.count(name)) problems.push_back("missing slot '" + name + "'");
  }
  if (!problems.empty()) {
    std::string msg = name_ + ".set_slots: the slots do not fit the weights given to init:";
    for (const std::string& p : problems) msg += "\n  " + p;
    throw ValueError(msg);
  }
  for (const auto& [name, t] : found) {
    const auto [i, k] = where.at(name);
    slots_[i][k] = t->clone();
  }
}

OptimizerMetrics Optimizer::update(long step, const std::vector<Tensor>& grads,
                                   std::vector<Tensor>& weights) {
  if (!initialized_) throw ValueError(name_ + ".update: call init(weights) first");
  if (step < 0) throw ValueError(name_ + ".update: step must be >= 0, got " + std::to_string(step));
  const std::size_t n = shapes_.size();
  if (grads.size() != n || weights.size() != n) {
    throw ValueError(name_ + ".update: expected " + std::to_string(n) +
                     " gradients and weights (as given to init), got " +
                     std::to_string(grads.size()) + " gradients and " +
                     std::to_string(weights.size()) + " weights");
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::string who = name_ + ".update: weight '" + names_[i] + "'";
    const Tensor* pair[] = {&grads[i], &weights[i]};
    for (const Tensor* t : pair) {
      const char* what = t == pair[0] ? " gradient" : "";
      if (!t->defined()) throw ValueError(who + what + " is undefined");
      core::check_shape(who + what, shapes_[i], t->shape());
      core::check_dtype(who + what, dtypes_[i], t->dtype());
    }
  }
  OptimizerMetrics metrics;
  metrics.gradients_l2 = l2_norm(grads);
  metrics.weights_l2 = l2_norm(weights);
  double scale = 1.0;
  // Trax: where(norm < max_norm, g, g * (max_norm / norm)); a NaN norm scales too.
  if (clip_grad_norm_ && !(metrics.gradients_l2 < *clip_grad_norm_)) {
    scale = *clip_grad_norm_ / metrics.gradients_l2;
  }
  for (std::size_t i = 0; i < n; ++i) {
    Tensor out = Tensor::empty(shapes_[i], dtypes_[i]);
    update_one(step, grads[i], scale, weights[i], out, slots_[i]);
    weights[i] = std::move(out);
  }
  return metrics;
}

// ---- SGD ---------------------------------------------------------------------------------------

namespace {
enum SgdHp : std::size_t { kSgdLr };

template <class T>
void sgd_kernel(std::size_t n, T lr, T gs, const T* g, const T* w, T* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = w[i] - lr * (g[i] * gs);
}
}  // namespace

SGD::SGD(const SGDOptions& o)
    : Optimizer("SGD", {{"learning_rate", o.learning_rate, 0, kInf}}, o.clip_grad_norm) {}

std::vector<Optimizer::SlotSpec> SGD::slot_specs(const Shape&) const {
  return {};
}

void SGD::update_one(long, const Tensor& grad, double grad_scale, const Tensor& weight, Tensor& out,
                     std::vector<Tensor>&) {
  core::dispatch_floating(weight.dtype(), "SGD", [&](auto tag) {
    using T = decltype(tag);
    sgd_kernel<T>(weight.size(), static_cast<T>(hp(kSgdLr)), static_cast<T>(grad_scale),
                  grad.data<T>(), weight.data<T>(), out.data<T>());
  });
}

// ---- Momentum
// ------------------------------------------------------------------------------------

namespace {
enum MomentumHp : std::size_t { kMomLr, kMomMass, kMomWd };

template <class T>
void momentum_kernel(std::size_t n, bool nesterov, T lr, T mu, T keep, T gs, const T* g, const T* w,
                     T* v, T* out) {
  if (nesterov) {
    for (std::size_t i = 0; i < n; ++i) {
      const T gi = g[i] * gs;
      const T vi = mu * v[i] + gi;
      v[i] = vi;
      out[i] = keep * w[i] - lr * (mu * vi + gi);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const T vi = mu * v[i] + g[i] * gs;
      v[i] = vi;
      out[i] = keep * w[i] - lr * vi;
    }
  }
}
}  // namespace

Momentum::Momentum(const MomentumOptions& o)
    : Optimizer("Momentum",
                {{"learning_rate", o.learning_rate, 0, kInf},
                 {"mass", o.mass, 0, 1, false, true},
                 {"weight_decay_rate", o.weight_decay_rate, 0, 1, false, true}},
                o.clip_grad_norm),
      nesterov_(o.nesterov) {}

std::vector<Optimizer::SlotSpec> Momentum::slot_specs(const Shape& shape) const {
  return {{"velocity", shape}};
}

void Momentum::update_one(long, const Tensor& grad, double grad_scale, const Tensor& weight,
                          Tensor& out, std::vector<Tensor>& slots) {
  core::dispatch_floating(weight.dtype(), "Momentum", [&](auto tag) {
    using T = decltype(tag);
    momentum_kernel<T>(weight.size(), nesterov_, static_cast<T>(hp(kMomLr)),
                       static_cast<T>(hp(kMomMass)), static_cast<T>(1.0 - hp(kMomWd)),
                       static_cast<T>(grad_scale), grad.data<T>(), weight.data<T>(),
                       slots[0].data<T>(), out.data<T>());
  });
}

// ---- Adam
// ------------------------------------------------------------------------------------------

namespace {
enum AdamHp : std::size_t { kAdamLr, kAdamWd, kAdamB1, kAdamB2, kAdamEps };

struct AdamScalars {
  double lr, keep, b1, b2, eps, c1, c2;  // c1, c2: the bias corrections 1 - b^(step+1)
};

template <class T>
void adam_kernel(std::size_t n, const AdamScalars& s, T gs, const T* g, const T* w, T* m, T* v,
                 T* out) {
  const T lr = static_cast<T>(s.lr), keep = static_cast<T>(s.keep);
  const T b1 = static_cast<T>(s.b1), b2 = static_cast<T>(s.b2), eps = static_cast<T>(s.eps);
  const T one_b1 = static_cast<T>(1.0 - s.b1), one_b2 = static_cast<T>(1.0 - s.b2);
  const T c1 = static_cast<T>(s.c1), c2 = static_cast<T>(s.c2);
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = g[i] * gs;
    const T mi = one_b1 * gi + b1 * m[i];
    const T vi = one_b2 * (gi * gi) + b2 * v[i];
    m[i] = mi;
    v[i] = vi;
    const T mhat = mi / c1;
    const T vhat = vi / c2;
    out[i] = keep * w[i] - lr * mhat / (std::sqrt(vhat) + eps);
  }
}
}  // namespace

Adam::Adam(const AdamOptions& o)
    : Optimizer("Adam",
                {{"learning_rate", o.learning_rate, 0, kInf},
                 {"weight_decay_rate", o.weight_decay_rate, 0, 1, false, true},
                 {"b1", o.b1, 0, 1, false, true},
                 {"b2", o.b2, 0, 1, false, true},
                 {"eps", o.eps, 0, kInf, true, true}},
                o.clip_grad_norm) {}

std::vector<Optimizer::SlotSpec> Adam::slot_specs(const Shape& shape) const {
  return {{"m", shape}, {"v", shape}};
}

void Adam::update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                      Tensor& out, std::vector<Tensor>& slots) {
  const double t = static_cast<double>(step) + 1.0;
  const AdamScalars s{hp(kAdamLr),
                      1.0 - hp(kAdamWd),
                      hp(kAdamB1),
                      hp(kAdamB2),
                      hp(kAdamEps),
                      1.0 - std::pow(hp(kAdamB1), t),
                      1.0 - std::pow(hp(kAdamB2), t)};
  core::dispatch_floating(weight.dtype(), "Adam", [&](auto tag) {
    using T = decltype(tag);
    adam_kernel<T>(weight.size(), s, static_cast<T>(grad_scale), grad.data<T>(), weight.data<T>(),
                   slots[0].data<T>(), slots[1].data<T>(), out.data<T>());
  });
}

// ---- Adafactor
// -------------------------------------------------------------------------------------

namespace {
enum AdafactorHp : std::size_t { kAfLr, kAfBeta1, kAfDecay, kAfClip, kAfWd, kAfEps1, kAfEps2 };

struct AdafactorScalars {
  double decay, mix;  // decay = 1 - t^-decay_rate, mix = 1 - decay
  double eps1;
  double update_scale;  // lr, times max(rms(w), eps2) with parameter scaling
  double clip;          // clipping threshold, or 0 for none
  double beta1;         // momentum, if `m` is given
  double keep;          // 1 - weight_decay_rate
};

// The final pass shared by both forms: y -> the new weight (and momentum).
template <class T>
inline T adafactor_apply(T y, T denom, T scale, T beta1, T one_beta1, T keep, T w, T* m) {
  T sub = scale * (y / denom);
  if (m) {
    sub = beta1 * *m + one_beta1 * sub;
    *m = sub;
  }
  return keep * w - sub;
}

template <class T>
void adafactor_factored(const Shape& shape, const AdafactorScalars& s, T gs, const T* g, const T* w,
                        T* v_row, T* v_col, T* m, T* out) {
  const std::size_t cols = shape[shape.size() - 1], rows = shape[shape.size() - 2];
  const std::size_t plane = rows * cols;
  const std::size_t batch = plane == 0 ? 0 : core::shape_size(shape) / plane;
  if (batch == 0) return;
  const T decay = static_cast<T>(s.decay), mix = static_cast<T>(s.mix);
  const T eps1 = static_cast<T>(s.eps1);
  std::vector<T> row_factor(batch * rows), col_factor(batch * cols);
  std::vector<double> col_sum(cols);
  double y_sq = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const T* gb = g + b * plane;
    T* vr = v_row + b * rows;
    T* vc = v_col + b * cols;
    // Row and column means of g^2 + eps1; the second moments move towards them.
    std::fill(col_sum.begin(), col_sum.end(), 0.0);
    double vr_sum = 0;
    for (std::size_t r = 0; r < rows; ++r) {
      const T* gr = gb + r * cols;
      double row_sum = 0;
      for (std::size_t c = 0; c < cols; ++c) {
        const T gi = gr[c] * gs;
        const T g2 = gi * gi + eps1;
        row_sum += g2;
        col_sum[c] += g2;
      }
      vr[r] = decay * vr[r] + mix * static_cast<T>(row_sum / static_cast<double>(cols));
      vr_sum += vr[r];
    }
    for (std::size_t c = 0; c < cols; ++c) {
      vc[c] = decay * vc[c] + mix * static_cast<T>(col_sum[c] / static_cast<double>(rows));
    }
    const T row_col_mean = static_cast<T>(vr_sum / static_cast<double>(rows));
    T* rf = row_factor.data() + b * rows;
    T* cf = col_factor.data() + b * cols;
    for (std::size_t r = 0; r < rows; ++r) rf[r] = T(1) / std::sqrt(vr[r] / row_col_mean);
    for (std::size_t c = 0; c < cols; ++c) cf[c] = T(1) / std::sqrt(vc[c]);
    if (s.clip > 0) {
      for (std::size_t r = 0; r < rows; ++r) {
        const T* gr = gb + r * cols;
        for (std::size_t c = 0; c < cols; ++c) {
          const T y = gr[c] * gs * rf[r] * cf[c];
          y_sq += static_cast<double>(y) * static_cast<double>(y);
        }
      }
    }
  }
  const double n = static_cast<double>(batch * plane);
  const T denom = static_cast<T>(s.clip > 0 ? std::max(1.0, std::sqrt(y_sq / n) / s.clip) : 1.0);
  const T scale = static_cast<T>(s.update_scale), keep = static_cast<T>(s.keep);
  const T beta1 = static_cast<T>(s.beta1), one_beta1 = static_cast<T>(1.0 - s.beta1);
  for (std::size_t b = 0; b < batch; ++b) {
    const T* rf = row_factor.data() + b * rows;
    const T* cf = col_factor.data() + b * cols;
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t base = b * plane + r * cols;
      for (std::size_t c = 0; c < cols; ++c) {
        const std::size_t i = base + c;
        const T y = g[i] * gs * rf[r] * cf[c];
        out[i] =
            adafactor_apply(y, denom, scale, beta1, one_beta1, keep, w[i], m ? m + i : nullptr);
      }
    }
  }
}

template <class T>
void adafactor_full(std::size_t n, const AdafactorScalars& s, T gs, const T* g, const T* w, T* v,
                    T* m, T* out) {
  const T decay = static_cast<T>(s.decay), mix = static_cast<T>(s.mix);
  const T eps1 = static_cast<T>(s.eps1);
  double y_sq = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = g[i] * gs;
    const T vi = decay * v[i] + mix * (gi * gi + eps1);
    v[i] = vi;
    const T y = gi * (T(1) / std::sqrt(vi));
    y_sq += static_cast<double>(y) * static_cast<double>(y);
  }
  const T denom = static_cast<T>(
      s.clip > 0 ? std::max(1.0, std::sqrt(y_sq / static_cast<double>(n)) / s.clip) : 1.0);
  const T scale = static_cast<T>(s.update_scale), keep = static_cast<T>(s.keep);
  const T beta1 = static_cast<T>(s.beta1), one_beta1 = static_cast<T>(1.0 - s.beta1);
  for (std::size_t i = 0; i < n; ++i) {
    const T y = g[i] * gs * (T(1) / std::sqrt(v[i]));
    out[i] = adafactor_apply(y, denom, scale, beta1, one_beta1, keep, w[i], m ? m + i : nullptr);
  }
}
}  // namespace

Adafactor::Adafactor(const AdafactorOptions& o)
    : Optimizer("Adafactor",
                {{"learning_rate", o.learning_rate, 0, kInf},
                 {"beta1", o.beta1, 0, 1, false, true},
                 {"decay_rate", o.decay_rate, 0, kInf},
                 {"clipping_threshold", o.clipping_threshold, 0, kInf, true, true},
                 {"weight_decay_rate", o.weight_decay_rate, 0, 1, false, true},
                 {"epsilon1", o.epsilon1, 0, kInf, true, true},
                 {"epsilon2", o.epsilon2, 0, kInf}},
                o.clip_grad_norm),
      factored_(o.factored),
      multiply_by_parameter_scale_(o.multiply_by_parameter_scale),
      do_clipping_(o.do_clipping),
      do_momentum_(o.do_momentum) {}

std::vector<Optimizer::SlotSpec> Adafactor::slot_specs(const Shape& shape) const {
  std::vector<SlotSpec> specs;
  if (factored_ && shape.size() >= 2) {
    specs.push_back({"v_row", Shape(shape.begin(), shape.end() - 1)});
    Shape col(shape.begin(), shape.end() - 2);
    col.push_back(shape.back());
    specs.push_back({"v_col", col});
  } else {
    specs.push_back({"v", shape});
  }
  if (do_momentum_) specs.push_back({"m", shape});
  return specs;
}

void Adafactor::update_one(long step, const Tensor& grad, double grad_scale, const Tensor& weight,
                           Tensor& out, std::vector<Tensor>& slots) {
  const std::size_t n = weight.size();
  if (n == 0) return;
  AdafactorScalars s{};
  const double t = static_cast<double>(step) + 1.0;
  s.decay = 1.0 - std::pow(t, -hp(kAfDecay));
  s.mix = 1.0 - s.decay;
  s.eps1 = hp(kAfEps1);
  s.update_scale = hp(kAfLr);
  if (multiply_by_parameter_scale_) {
    const double rms = std::sqrt(sum_squares(weight, "Adafactor") / static_cast<double>(n));
    s.update_scale *= std::max(rms, hp(kAfEps2));
  }
  s.clip = do_clipping_ ? hp(kAfClip) : 0.0;
  s.beta1 = hp(kAfBeta1);
  s.keep = 1.0 - hp(kAfWd);
  const bool factored = factored_ && weight.ndim() >= 2;
  core::dispatch_floating(weight.dtype(), "Adafactor", [&](auto tag) {
    using T = decltype(tag);
    const T gs = static_cast<T>(grad_scale);
    T* m = do_momentum_ ? slots.back().data<T>() : nullptr;
    if (factored) {
      adafactor_factored<T>(weight.shape(), s, gs, grad.data<T>(), weight.data<T>(),
                            slots[0].data<T>(), slots[1].data<T>(), m, out.data<T>());
    } else {
      adafactor_full<T>(n, s, gs, grad.data<T>(), weight.data<T>(), slots[0].data<T>(), m,
                        out.data<T>());
    }
  });
}

}  // namespace minitrax::training
