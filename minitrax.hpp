// minitrax.hpp: everything a user of minitrax needs, in one include.
//
// The floors, bottom up: core/ (tensors, kernels, rng, files) and autodiff/ (the
// tape and the differentiable ops). Each header can also be included on its own.
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
