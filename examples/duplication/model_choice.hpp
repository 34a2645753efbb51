// examples/duplication/model_choice.hpp: the layers that the main job's config names.
// Kept apart from config.hpp, which needs no minitrax header.
#pragma once

#include <functional>
#include <source_location>
#include <string>

#include "layers/base.hpp"

namespace minitrax::app {

/// The factory of the feed-forward non-linearity named by DuplicationConfig::ff_activation,
/// ready for models::ReformerLMOptions::ff_activation:
///   "relu" -> layers::Relu, "gelu" -> layers::Gelu, "fast_gelu" -> layers::FastGelu,
///   "sigmoid" -> layers::Sigmoid, "tanh" -> layers::Tanh.
/// Any other name is a ConfigError (validate() refuses it first).
std::function<base::LayerPtr(std::source_location)> ff_activation_layer(const std::string& name);

}  // namespace minitrax::app
