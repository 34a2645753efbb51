// minitrax/models/checks_internal.hpp (internal): argument checks the model builders share.
#pragma once

#include <functional>
#include <source_location>
#include <sstream>
#include <string>

#include "core/error.hpp"
#include "layers/base.hpp"

namespace minitrax::models::detail {

inline void check_positive(const char* who, const char* what, long v) {
  if (v <= 0) {
    throw core::ValueError(std::string(who) + ": " + what + " must be positive, got " +
                           std::to_string(v));
  }
}

inline void check_rate(const char* who, double rate, const char* what = "dropout") {
  if (!(rate >= 0.0 && rate < 1.0)) {
    std::ostringstream os;
    os << who << ": " << what << " must be in [0, 1), got " << rate;
    throw core::ValueError(os.str());
  }
}

/// Calls the activation factory and checks it made a one-in, one-out layer. Called
/// inside a model factory's base::CreationSite, which gives the layer its site.
inline base::LayerPtr make_activation(
    const char* who, const std::function<base::LayerPtr(std::source_location)>& activation) {
  if (!activation) throw core::ValueError(std::string(who) + ": ff_activation is empty");
  base::LayerPtr layer = activation(std::source_location::current());
  if (!layer) throw core::ValueError(std::string(who) + ": ff_activation returned a null layer");
  if (layer->n_in() != 1 || layer->n_out() != 1) {
    throw core::ValueError(std::string(who) +
                           ": ff_activation must make a one-input, one-output layer, got " +
                           layer->name() + " with n_in = " + std::to_string(layer->n_in()) +
                           ", n_out = " + std::to_string(layer->n_out()));
  }
  return layer;
}

}  // namespace minitrax::models::detail
