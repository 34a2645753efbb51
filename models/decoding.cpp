// minitrax/models/decoding.cpp
#include "models/decoding.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "autodiff/tape.hpp"
#include "core/error.hpp"
#include "core/ops.hpp"

namespace minitrax::models {

using core::DType;
using core::Tensor;

Tensor sample_tokens(const Tensor& log_probs, double temperature, core::Key rng) {
  if (log_probs.ndim() != 2) {
    throw core::ShapeError("sample_tokens: expected log-probs [batch, vocab], got " +
                           core::shape_str(log_probs.shape()));
  }
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    throw core::ValueError("sample_tokens: temperature must be finite and >= 0, got " +
                           std::to_string(temperature));
  }
  const std::size_t batch = log_probs.dim(0), vocab = log_probs.dim(1);
  Tensor out = Tensor::zeros({batch}, DType::i32);
  const Tensor u = temperature > 0 ? core::uniform(rng, {batch, vocab}, DType::f64) : Tensor();
  for (std::size_t b = 0; b < batch; ++b) {
    double best = -std::numeric_limits<double>::infinity();
    std::size_t arg = 0;
    for (std::size_t v = 0; v < vocab; ++v) {
      double score = log_probs.flat(b * vocab + v);
      if (temperature > 0) {
        // Gumbel-max: argmax(logp / T + g), g = -log(-log(u)), u uniform in (0, 1).
        const double uu = std::min(std::max(u.flat(b * vocab + v), 1e-300), 1.0 - 1e-16);
        score = score / temperature - std::log(-std::log(uu));
      }
      if (score > best) {
        best = score;
        arg = v;
      }
    }
    out.data<std::int32_t>()[b] = static_cast<std::int32_t>(arg);
  }
  return out;
}

Tensor autoregressive_sample(base::Layer& model, const Tensor& prompt, long n_new,
                             const SampleOptions& options) {
  if (model.mode() != base::Mode::predict) {
    throw core::ValueError(
        "autoregressive_sample: the model must be in predict mode (made with "
        "mode = predict, or set_mode(Mode::predict) before init), it is in " +
        std::string(base::mode_name(model.mode())) + " mode");
  }
  if (prompt.ndim() != 2) {
    throw core::ShapeError("autoregressive_sample: expected a prompt [batch, length], got " +
                           core::shape_str(prompt.shape()));
  }
  if (n_new < 0) throw core::ValueError("autoregressive_sample: n_new must be >= 0");
  const Tensor ids = prompt.astype(DType::i32);
  const std::size_t batch = ids.dim(0), p_len = ids.dim(1);
  const std::size_t total = p_len + static_cast<std::size_t>(n_new);
  Tensor out = Tensor::zeros({batch, total}, DType::i32);
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t j = 0; j < p_len; ++j) {
      out.data<std::int32_t>()[b * total + j] = ids.data<std::int32_t>()[b * p_len + j];
    }
  }
  autodiff::NoRecord quiet;
  const base::State saved = model.state();
  try {
    Tensor token = Tensor::full({batch, 1}, options.start_id, DType::i32);
    for (std::size_t pos = 0; pos < total; ++pos) {
      const Tensor logp = model.apply({autodiff::Var(token)}, options.rng).at(0).value();
      if (logp.ndim() != 3 || logp.dim(0) != batch || logp.dim(1) != 1) {
        throw core::ShapeError("autoregressive_sample: the model gave " +
                               core::shape_str(logp.shape()) + " for one position, expected [" +
                               std::to_string(batch) + ", 1, vocab]");
      }
      Tensor next;
      if (pos < p_len) {
        next = Tensor::zeros({batch}, DType::i32);
        for (std::size_t b = 0; b < batch; ++b) {
          next.data<std::int32_t>()[b] = out.data<std::int32_t>()[b * total + pos];
        }
      } else {
        next = sample_tokens(logp.reshape(std::vector<long>{static_cast<long>(batch), -1}),
                             options.temperature,
                             core::fold_in(options.rng, static_cast<std::uint32_t>(pos)));
        for (std::size_t b = 0; b < batch; ++b) {
          out.data<std::int32_t>()[b * total + pos] = next.data<std::int32_t>()[b];
        }
      }
      token = next.reshape(std::vector<long>{static_cast<long>(batch), 1});
    }
  } catch (...) {
    model.set_state(saved);
    throw;
  }
  model.set_state(saved);
  return out;
}

}  // namespace minitrax::models
