// minitrax/layers/stack_internal.hpp (internal): the small stack helpers combinators and
// reversible layers share. Not installed.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "layers/base.hpp"

namespace minitrax::layers::detail {

// Serial's arity: one fold over the sublayers, as Trax computes it. The running
// total is how many items the layers so far have taken beyond what they pushed.
inline std::pair<int, int> serial_arity(const std::vector<base::LayerPtr>& layers) {
  if (layers.empty()) return {1, 1};
  int running_max = 0, running_total = 0;
  for (const base::LayerPtr& l : layers) {
    running_total += l->n_in();
    running_max = std::max(running_max, running_total);
    running_total -= l->n_out();
  }
  return {running_max, running_max - running_total};
}

inline std::vector<base::LayerPtr> checked(std::vector<base::LayerPtr> layers, const char* who) {
  for (const base::LayerPtr& l : layers) {
    if (!l) throw core::ValueError(std::string(who) + ": a sublayer is null");
  }
  return layers;
}

// Takes the top n items of the stack.
template <class T>
std::vector<T> top(const std::vector<T>& stack, int n) {
  return std::vector<T>(stack.begin(), stack.begin() + n);
}

// Replaces the top n items of the stack by `outputs`.
template <class T>
std::vector<T> replace_top(const std::vector<T>& stack, int n, std::vector<T> outputs) {
  outputs.insert(outputs.end(), stack.begin() + n, stack.end());
  return outputs;
}

}  // namespace minitrax::layers::detail
