// minitrax/models/decoding.cpp
#include "models/decoding.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>

#include "autodiff/tape.hpp"
#include "core/error.hpp"
#include "core/ops.hpp"
#include "layers/attention.hpp"
#include "layers/core.hpp"
#include "layers/research/position_encodings.hpp"

namespace minitrax::models {

using core::DType;
using core::Tensor;

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

void check_options(const SampleOptions& o, const char* who) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    throw core::ValueError(std::string(who) + ": temperature must be finite and >= 0, got " +
                           std::to_string(o.temperature));
  }
  if (o.top_k < 0) {
    throw core::ValueError(std::string(who) + ": top_k must be >= 0 (0: no limit), got " +
                           std::to_string(o.top_k));
  }
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) {
    throw core::ValueError(std::string(who) + ": top_p must be in (0, 1] (1: no limit), got " +
                           std::to_string(o.top_p));
  }
}

// One row: log_probs -> the kept distribution's log-probs (see filter_log_probs).
// `lp` holds vocab values; `out` gets vocab values.
// `who` and `row` name the row in errors.
void filter_row(const double* lp, std::size_t vocab, const SampleOptions& o, double* out,
                const char* who, std::size_t row) {
  std::fill(out, out + vocab, kNegInf);
  if (vocab == 0) return;
  bool any_finite = false;
  for (std::size_t v = 0; v < vocab; ++v) {
    if (std::isnan(lp[v]) || lp[v] == std::numeric_limits<double>::infinity()) {
      throw core::ValueError(std::string(who) + ": row " + std::to_string(row) +
                             " of the log-probs holds " + std::to_string(lp[v]) + " at token " +
                             std::to_string(v) + " (the model's output is not finite)");
    }
    any_finite = any_finite || std::isfinite(lp[v]);
  }
  if (!any_finite) {
    throw core::ValueError(std::string(who) + ": row " + std::to_string(row) +
                           " of the log-probs is -inf everywhere (no token is possible)");
  }
  if (o.temperature == 0.0) {
    std::size_t arg = 0;
    for (std::size_t v = 1; v < vocab; ++v) {
      if (lp[v] > lp[arg]) arg = v;
    }
    out[arg] = 0.0;
    return;
  }
  // Tempered scores; tokens sorted by score (descending), then id.
  // (Shifted by the maximum first, so a tiny temperature cannot overflow to +inf.)
  const double lp_max = *std::max_element(lp, lp + vocab);
  std::vector<double> score(vocab);
  for (std::size_t v = 0; v < vocab; ++v) score[v] = (lp[v] - lp_max) / o.temperature;
  std::size_t kept = vocab;
  if (o.top_k > 0) kept = std::min(kept, static_cast<std::size_t>(o.top_k));
  if (kept == vocab && o.top_p >= 1.0) {  // nothing to cut: no sorting
    double sum = 0.0;
    for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(score[v]);  // exp(-inf) = 0
    const double log_z = std::log(sum);
    for (std::size_t v = 0; v < vocab; ++v) {
      if (std::isfinite(score[v])) out[v] = score[v] - log_z;
    }
    return;
  }
  // Sorted by score, descending, then by id: a total order, so a partial sort (top-k
  // alone) gives the same first k as a full one.
  std::vector<std::size_t> order(vocab);
  std::iota(order.begin(), order.end(), std::size_t{0});
  auto before_in_order = [&](std::size_t a, std::size_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  };
  if (o.top_p >= 1.0) {
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(kept), order.end(),
                      before_in_order);
  } else {
    std::sort(order.begin(), order.end(), before_in_order);
  }
  // Tokens of probability 0 (score -inf) are never kept; the first is finite (0).
  std::size_t finite = 1;
  while (finite < kept && std::isfinite(score[order[finite]])) ++finite;
  kept = finite;
  const double top = score[order[0]];
  auto normalise = [&](std::size_t n) {  // log-sum-exp of the first n, relative to top
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += std::exp(score[order[i]] - top);
    return s;
  };
  if (o.top_p < 1.0) {
    const double total = normalise(kept);
    double before = 0.0;  // probability of the tokens ahead of the i-th
    std::size_t n = 0;
    while (n < kept && before < o.top_p) {
      before += std::exp(score[order[n]] - top) / total;
      ++n;
    }
    kept = n;
  }
  const double log_z = top + std::log(normalise(kept));
  for (std::size_t i = 0; i < kept; ++i) out[order[i]] = score[order[i]] - log_z;
}

// One token from a row of log-probs: the argmax (temperature 0) or a Gumbel-max draw
// over the kept tokens with the uniform noise of `key`.
std::int32_t sample_row(const double* lp, std::size_t vocab, const SampleOptions& o, core::Key key,
                        const char* who, std::size_t row) {
  std::vector<double> kept(vocab);
  filter_row(lp, vocab, o, kept.data(), who, row);
  const Tensor u = o.temperature > 0 ? core::uniform(key, {vocab}, DType::f64) : Tensor();
  double best = kNegInf;
  std::size_t arg = 0;
  bool any = false;
  for (std::size_t v = 0; v < vocab; ++v) {
    if (kept[v] == kNegInf) continue;
    double s = kept[v];
    if (o.temperature > 0) {
      // Gumbel-max: argmax(logp + g), g = -log(-log(u)), u uniform in (0, 1).
      const double uu = std::min(std::max(u.flat(v), 1e-300), 1.0 - 1e-16);
      s -= std::log(-std::log(uu));
    }
    if (!any || s > best) {
      best = s;
      arg = v;
      any = true;
    }
  }
  return static_cast<std::int32_t>(arg);
}

Tensor as_f64_rows(const Tensor& log_probs, const char* who) {
  if (log_probs.ndim() != 2) {
    throw core::ShapeError(std::string(who) + ": expected log-probs [batch, vocab], got " +
                           core::shape_str(log_probs.shape()));
  }
  if (!core::is_floating(log_probs.dtype())) {
    throw core::DTypeError(std::string(who) + ": expected floating log-probs, got " +
                           std::string(core::dtype_name(log_probs.dtype())));
  }
  return log_probs.astype(DType::f64);
}

// The most positions the model takes in predict mode: the smallest max_len of its
// positional encodings and causal attention caches; nullopt if it has none of them.
void find_max_len(const base::Layer& layer, std::optional<std::size_t>& best,
                  std::vector<const base::Layer*>& seen) {
  if (std::find(seen.begin(), seen.end(), &layer) != seen.end()) return;
  seen.push_back(&layer);
  const std::optional<std::size_t> mine = layer.predict_max_len();
  if (mine && (!best || *mine < *best)) best = mine;
  for (const base::LayerPtr& s : layer.sublayers()) {
    if (s) find_max_len(*s, best, seen);
  }
}

}  // namespace

Tensor filter_log_probs(const Tensor& log_probs, const SampleOptions& options) {
  check_options(options, "filter_log_probs");
  const Tensor lp = as_f64_rows(log_probs, "filter_log_probs");
  const std::size_t batch = lp.dim(0), vocab = lp.dim(1);
  Tensor out = Tensor::zeros({batch, vocab}, DType::f64);
  for (std::size_t b = 0; b < batch; ++b) {
    filter_row(lp.data<double>() + b * vocab, vocab, options, out.data<double>() + b * vocab,
               "filter_log_probs", b);
  }
  return out;
}

Tensor sample_tokens(const Tensor& log_probs, const SampleOptions& options, core::Key rng) {
  check_options(options, "sample_tokens");
  const Tensor lp = as_f64_rows(log_probs, "sample_tokens");
  const std::size_t batch = lp.dim(0), vocab = lp.dim(1);
  if (vocab == 0)
    throw core::ShapeError("sample_tokens: the vocabulary is empty (log-probs [" +
                           std::to_string(batch) + ", 0])");
  Tensor out = Tensor::zeros({batch}, DType::i32);
  for (std::size_t b = 0; b < batch; ++b) {
    out.data<std::int32_t>()[b] =
        sample_row(lp.data<double>() + b * vocab, vocab, options,
                   core::fold_in(rng, static_cast<std::uint32_t>(b)), "sample_tokens", b);
  }
  return out;
}

Tensor sample_tokens(const Tensor& log_probs, double temperature, core::Key rng) {
  SampleOptions o;
  o.temperature = temperature;
  return sample_tokens(log_probs, o, rng);
}

Tensor autoregressive_sample(base::Layer& model, const Tensor& prompt, long n_new,
                             const SampleOptions& options) {
  if (prompt.ndim() != 2) {
    throw core::ShapeError("autoregressive_sample: expected a prompt [batch, length], got " +
                           core::shape_str(prompt.shape()));
  }
  if (core::is_floating(prompt.dtype())) {
    throw core::DTypeError("autoregressive_sample: the prompt must hold integer token ids, got " +
                           std::string(core::dtype_name(prompt.dtype())));
  }
  const Tensor ids = prompt.astype(DType::i64);
  const std::size_t batch = ids.dim(0), p_len = ids.dim(1);
  std::vector<std::vector<int>> rows(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t j = 0; j < p_len; ++j) {
      const std::int64_t id = ids.data<std::int64_t>()[b * p_len + j];
      if (id < std::numeric_limits<int>::min() || id > std::numeric_limits<int>::max()) {
        throw core::ValueError("autoregressive_sample: prompt " + std::to_string(b) + " holds id " +
                               std::to_string(id) + " at position " + std::to_string(j) +
                               ", outside the int32 range");
      }
      rows[b].push_back(static_cast<int>(id));
    }
  }
  return autoregressive_sample(model, rows, n_new, options);
}

Tensor autoregressive_sample(base::Layer& model, const std::vector<std::vector<int>>& prompts,
                             long n_new, const SampleOptions& options) {
  static const char* who = "autoregressive_sample";
  if (model.mode() != base::Mode::predict) {
    throw core::ValueError(
        "autoregressive_sample: the model must be in predict mode (made with "
        "mode = predict, or set_mode(Mode::predict) before init), it is in " +
        std::string(base::mode_name(model.mode())) + " mode");
  }
  check_options(options, who);
  if (n_new < 0) {
    throw core::ValueError("autoregressive_sample: n_new must be >= 0, got " +
                           std::to_string(n_new));
  }
  const std::size_t batch = prompts.size();
  if (batch == 0) throw core::ShapeError("autoregressive_sample: no prompts (a batch of 0)");
  if (!options.row_keys.empty() && options.row_keys.size() != batch) {
    throw core::ValueError("autoregressive_sample: row_keys has " +
                           std::to_string(options.row_keys.size()) + " keys for " +
                           std::to_string(batch) + " prompts (give one per prompt, or none)");
  }
  std::size_t p_max = 0;
  for (const auto& p : prompts) p_max = std::max(p_max, p.size());
  const std::size_t n = static_cast<std::size_t>(n_new);
  const std::size_t total = p_max + n;
  std::optional<std::size_t> max_len;
  std::vector<const base::Layer*> seen;
  find_max_len(model, max_len, seen);
  if (max_len) {
    for (std::size_t b = 0; b < batch; ++b) {
      if (prompts[b].size() > *max_len) {
        throw core::ValueError("autoregressive_sample: prompt " + std::to_string(b) + " has " +
                               std::to_string(prompts[b].size()) +
                               " tokens, more than the model's max_len " +
                               std::to_string(*max_len));
      }
    }
    if (n > 0 && total > *max_len) {
      throw core::ValueError("autoregressive_sample: the longest prompt (" + std::to_string(p_max) +
                             " tokens) + n_new " + std::to_string(n_new) + " = " +
                             std::to_string(total) + " positions, more than the model's max_len " +
                             std::to_string(*max_len) + " (at most " +
                             std::to_string(*max_len - p_max) + " new tokens fit)");
    }
  }

  // Row b: prompt, then new tokens, then pad.
  Tensor out = Tensor::full({batch, total}, options.pad_id, DType::i32);
  std::int32_t* o = out.data<std::int32_t>();
  for (std::size_t b = 0; b < batch; ++b) {
    std::copy(prompts[b].begin(), prompts[b].end(), o + b * total);
  }
  if (n == 0) return out;

  std::vector<core::Key> keys(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    keys[b] = options.row_keys.empty() ? core::fold_in(options.rng, static_cast<std::uint32_t>(b))
                                       : options.row_keys[b];
  }
  std::vector<std::size_t> made(batch, 0);  // new tokens so far
  std::vector<bool> done(batch, false);
  auto check_id = [&](long id, std::size_t vocab, const std::string& what) {
    if (id < 0 || static_cast<std::size_t>(id) >= vocab) {
      throw core::ValueError("autoregressive_sample: " + what + " is " + std::to_string(id) +
                             ", outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
    }
  };

  autodiff::NoRecord quiet;
  const base::State saved = model.state();
  try {
    std::vector<std::int32_t> feed(batch, options.start_id);
    for (std::size_t pos = 0; pos < total; ++pos) {
      const Tensor token = Tensor::from<std::int32_t>({batch, 1}, feed);
      const Tensor logp = model.apply({autodiff::Var(token)}, options.rng).at(0).value();
      if (logp.ndim() != 3 || logp.dim(0) != batch || logp.dim(1) != 1 || logp.dim(2) == 0) {
        throw core::ShapeError("autoregressive_sample: the model gave " +
                               core::shape_str(logp.shape()) + " for one position, expected [" +
                               std::to_string(batch) + ", 1, vocab]");
      }
      const std::size_t vocab = logp.dim(2);
      if (pos == 0) {  // now the vocabulary is known: check every id before going on
        for (std::size_t b = 0; b < batch; ++b) {
          for (std::size_t j = 0; j < prompts[b].size(); ++j) {
            check_id(prompts[b][j], vocab,
                     "prompt " + std::to_string(b) + "'s id at position " + std::to_string(j));
          }
        }
        if (options.stop_id != -1) check_id(options.stop_id, vocab, "stop_id (-1: none)");
        check_id(options.pad_id, vocab, "pad_id");
      }
      const Tensor lp = logp.astype(DType::f64);
      bool all_done = true;
      for (std::size_t b = 0; b < batch; ++b) {
        const std::size_t p_len = prompts[b].size();
        if (done[b]) {
          feed[b] = options.pad_id;
          continue;
        }
        if (pos < p_len) {  // still reading the prompt
          feed[b] = prompts[b][pos];
          all_done = false;
          continue;
        }
        const std::int32_t t =
            sample_row(lp.data<double>() + b * vocab, vocab, options,
                       core::fold_in(keys[b], static_cast<std::uint32_t>(made[b])), who, b);
        o[b * total + pos] = t;
        ++made[b];
        done[b] = made[b] == n || t == options.stop_id;
        feed[b] = done[b] ? options.pad_id : t;
        all_done = all_done && done[b];
      }
      if (all_done) break;
    }
  } catch (...) {
    model.set_state(saved);
    throw;
  }
  model.set_state(saved);
  return out;
}

}  // namespace minitrax::models
