/// @file
/// Gradcheck a whole layer, over its inputs and its weights.
#pragma once

#include "autodiff/gradcheck.hpp"
#include "layers/base.hpp"

namespace minitrax::base {

/// Casts every floating weight and state tensor of the layer to `dtype` (float64
/// for gradient checks; float32 to go back).
void cast_layer(Layer& layer, DType dtype);

/// Checks the VJP of `layer` with respect to its floating inputs and all its weights
/// against finite differences (autodiff::gradcheck), with the layer's current
/// weights (cast them to float64 first with cast_layer), its current state and a
/// fixed rng, so that dropout masks are the same in every evaluation.
/// @code
/// auto layer = Dense(4);
/// layer->init({2, 3}, DType::f64);
/// auto result = gradcheck_layer(*layer, {x});   // x float64 [2, 3]
/// if (!result.ok) std::cerr << result.message;
/// @endcode
autodiff::GradcheckResult gradcheck_layer(Layer& layer, const std::vector<Tensor>& inputs,
                                          Key rng = core::key_from_seed(0),
                                          const autodiff::GradcheckOptions& options = {});

}  // namespace minitrax::base
