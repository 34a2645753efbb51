/// @file
/// Deterministic synthetic data streams.
///
/// A stream is a function of (key, step): batch k is drawn from fold_in(key, k), so
/// the stream needs no state, any batch can be recomputed, and a resumed run sees
/// exactly the batches an uninterrupted run would have seen.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "core/rng.hpp"
#include "core/tensor.hpp"

namespace minitrax::training {

using core::Key;
using core::Tensor;

/// One batch: model inputs, targets, and per-token loss weights (float32).
struct Batch {
  Tensor inputs;   ///< int32 [batch, length]
  Tensor targets;  ///< int32 [batch, length]
  Tensor weights;  ///< float32 [batch, length]
};

/// Batch number `step` of a stream.
using Stream = std::function<Batch(long step)>;

/// Sequences "0 w 0 w" of total length `length` (even, >= 4): w has length/2 - 1
/// symbols drawn uniformly from [1, vocab_size - 2] (Trax's randint(1, vocab - 1)),
/// loss weights are 1 on the second w only, and inputs == targets (the model shifts
/// them right itself). With `reverse`, the second w is reversed. Sequences are
/// padded with zeros (weight 0) to a multiple of `pad_to_multiple`.
/// @code
/// Batch b = copy_task_batch(core::key_from_seed(0), 8, 64, 64);   // inputs int32 [8, 64]
/// @endcode
Batch copy_task_batch(Key key, std::size_t batch_size, std::size_t length, std::size_t vocab_size,
                      bool reverse = false, std::size_t pad_to_multiple = 1);

/// A stream of copy-task batches of one fixed length (batch k from fold_in(key, k)).
/// @code
/// Stream train = copy_task_stream(core::key_from_seed(1), 16, 64, 64);
/// Batch b = train(0);                                             // the same batch every time
/// @endcode
Stream copy_task_stream(Key key, std::size_t batch_size, std::size_t length, std::size_t vocab_size,
                        bool reverse = false, std::size_t pad_to_multiple = 1);

/// Trax 1.3.4's sequence_copy_inputs: training batches have a length drawn per
/// batch from {4, 6, ..., 2 * train_length}, eval batches from
/// {2 (eval_min_length + 1), ..., 2 eval_max_length}; padded to pad_to_multiple.
struct CopyInputs {
  Stream train;  ///< training batches (lengths 4 .. 2 * train_length)
  Stream eval;   ///< eval batches (longer, for generalisation in length)
};
/// The streams of Trax 1.3.4's sequence_copy_inputs (see CopyInputs).
CopyInputs sequence_copy_inputs(Key key, std::size_t vocab_size, std::size_t batch_size,
                                std::size_t train_length, std::size_t eval_min_length,
                                std::size_t eval_max_length, bool reverse = false,
                                std::size_t pad_to_multiple = 32);

}  // namespace minitrax::training
