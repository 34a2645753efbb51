// examples/duplication/model_choice.cpp: config names to minitrax layers.
#include "duplication/model_choice.hpp"

#include "duplication/config.hpp"
#include "layers/core.hpp"

namespace minitrax::app {

std::function<base::LayerPtr(std::source_location)> ff_activation_layer(const std::string& name) {
  if (name == "relu") return layers::Relu;
  if (name == "gelu") return layers::Gelu;
  if (name == "fast_gelu") return layers::FastGelu;
  if (name == "sigmoid") return layers::Sigmoid;
  if (name == "tanh") return layers::Tanh;
  throw ConfigError(
      "ff_activation must be one of \"relu\", \"gelu\", \"fast_gelu\", \"sigmoid\", "
      "\"tanh\", got \"" +
      name.substr(0, 60) + "\"");
}

}  // namespace minitrax::app
