// minitrax.hpp: everything a user of minitrax needs, in one include.
//
// The floors, bottom up: core/ (tensors, kernels, rng, files), autodiff/ (the tape
// and the differentiable ops), layers/ (base::Layer, combinators, core layers,
// attention), models/ (whole models), training/ (losses, optimizers, schedules,
// data, the Loop, checkpoints). Each header can also be included on its own.
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

#include "models/transformer.hpp"

#include "training/checkpoint.hpp"
#include "training/data.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"
#include "training/schedules.hpp"
