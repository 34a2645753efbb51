/// @file
/// Deterministic synthetic data: the copy (duplication) task of the Reformer paper and
/// Trax 1.3.4's sequence_copy_inputs.
///
/// A step-indexed stream is a function of (key, step): batch k is drawn from
/// fold_in(key, k), so the stream needs no state, any batch can be recomputed, and a
/// resumed run sees exactly the batches an uninterrupted run would have seen. Batches are
/// data::Batch tuples (inputs, targets, weights): arrays 0, 1 and 2.
///
/// Sizes are signed (long, as in a config): a negative one is a ValueError naming it,
/// never a wrapped-around huge size.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "data/stream.hpp"

namespace minitrax::data {

/// Batch number `step` of a stream that needs no state (the training Loop asks for
/// batch `step` at each step, and for batches 0 .. n-1 at each evaluation).
using StepStream = std::function<Batch(long step)>;

/// Sequences "0 w 0 w" of total length `length` (even, >= 4): w has length/2 - 1
/// symbols drawn uniformly from [1, vocab_size - 2] (Trax's randint(1, vocab - 1)),
/// loss weights are 1 on the second w only, and inputs == targets (the model shifts
/// them right itself). With `reverse`, the second w is reversed. Sequences are
/// padded with zeros (weight 0) to a multiple of `pad_to_multiple`. The batch is
/// (inputs int32 [B, L], targets int32 [B, L], weights float32 [B, L]).
/// @code
/// data::Batch b = data::copy_task_batch(core::key_from_seed(0), 8, 64, 64);   // b[0]: int32 [8,
/// 64]
/// @endcode
Batch copy_task_batch(core::Key key, long batch_size, long length, long vocab_size,
                      bool reverse = false, long pad_to_multiple = 1);

/// A stream of copy-task batches of one fixed length (batch k from fold_in(key, k)).
/// @code
/// data::StepStream train = data::copy_task_stream(core::key_from_seed(1), 16, 64, 64);
/// data::Batch b = train(0);                                       // the same batch every time
/// @endcode
StepStream copy_task_stream(core::Key key, long batch_size, long length, long vocab_size,
                            bool reverse = false, long pad_to_multiple = 1);

/// Trax 1.3.4's sequence_copy_inputs: training batches have a length drawn per
/// batch from {4, 6, ..., 2 * train_length}, eval batches from
/// {2 (eval_min_length + 1), ..., 2 eval_max_length}; padded to pad_to_multiple.
struct CopyInputs {
  StepStream train;  ///< training batches (lengths 4 .. 2 * train_length)
  StepStream eval;   ///< eval batches (longer, for generalisation in length)
};
/// The streams of Trax 1.3.4's sequence_copy_inputs (see CopyInputs).
CopyInputs sequence_copy_inputs(core::Key key, long vocab_size, long batch_size, long train_length,
                                long eval_min_length, long eval_max_length, bool reverse = false,
                                long pad_to_multiple = 32);

}  // namespace minitrax::data
