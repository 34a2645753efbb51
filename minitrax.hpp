/// @file
/// Everything a user of minitrax needs, in one include.
///
/// The floors, bottom up: core/ (tensors, kernels, rng, files), autodiff/ (the tape
/// and the differentiable ops), layers/ (base::Layer, combinators, core layers,
/// attention), models/ (whole models), training/ (losses, optimizers, schedules,
/// data, the Loop, checkpoints). Each header can also be included on its own.
///
/// @code
/// #include "minitrax.hpp"
/// using namespace minitrax;
/// Tensor x = Rng(0).normal({4, 8});
/// auto [loss, grads] = value_and_grad(
///     [](const autodiff::VarList& v) { return fastmath::sum(fastmath::square(v[0])); }, {x});
/// @endcode
#pragma once

#include "core/error.hpp"
#include "core/kernels.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "core/tree.hpp"

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "autodiff/tape.hpp"
#include "autodiff/transforms.hpp"

#include "layers/attention.hpp"
#include "layers/base.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/initializers.hpp"
#include "layers/layer_gradcheck.hpp"
#include "layers/research/attention_ops.hpp"
#include "layers/research/efficient_attention.hpp"
#include "layers/research/position_encodings.hpp"
#include "layers/reversible.hpp"

#include "data/lm.hpp"
#include "data/sources.hpp"
#include "data/stream.hpp"
#include "data/synthetic.hpp"
#include "data/tokenizer.hpp"
#include "data/tokenizers.hpp"
#include "data/transforms.hpp"
#include "models/decoding.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"

#include "training/callbacks.hpp"
#include "training/checkpoint.hpp"
#include "training/data.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"
#include "training/schedules.hpp"
