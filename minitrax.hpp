// minitrax.hpp: everything a user of minitrax needs, in one include.
#pragma once

#include "core/error.hpp"
#include "core/tensor.hpp"
