/// @file
/// The synthetic data streams under their former training:: names.
///
/// They live in data/synthetic.hpp (namespace minitrax::data) now, and a batch is a
/// data::Batch (data/stream.hpp): a tuple of arrays, (inputs, targets, weights) for the
/// copy task. This header keeps code written against training::copy_task_stream,
/// training::Batch and training::Stream compiling.
/// @code
/// training::Stream train = training::copy_task_stream(core::key_from_seed(1), 16, 64, 64);
/// training::Batch b = train(0);   // b[0] inputs, b[1] targets, b[2] weights
/// @endcode
#pragma once

#include "data/stream.hpp"
#include "data/synthetic.hpp"

namespace minitrax::training {

using data::Batch;
using data::copy_task_batch;
using data::copy_task_stream;
using data::CopyInputs;
using data::sequence_copy_inputs;
/// Batch number `step` of a step-indexed stream (data::StepStream).
using Stream = data::StepStream;

}  // namespace minitrax::training
