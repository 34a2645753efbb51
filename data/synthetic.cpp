// minitrax/data/synthetic.cpp
#include "data/synthetic.hpp"

#include <string>

#include "core/error.hpp"

namespace minitrax::data {

using core::DType;
using core::Key;
using core::Tensor;
using core::ValueError;

Batch copy_task_batch(Key key, long batch_size_arg, long length_arg, long vocab_size, bool reverse,
                      long pad_to_multiple_arg) {
  if (length_arg < 4 || length_arg % 2 != 0) {
    throw ValueError("copy task: length must be even and >= 4 (\"0 w 0 w\" with |w| >= 1), got " +
                     std::to_string(length_arg));
  }
  if (vocab_size < 3) {
    throw ValueError(
        "copy task: vocab_size must be >= 3 (0 separates, symbols are 1..vocab-2), "
        "got " +
        std::to_string(vocab_size));
  }
  if (batch_size_arg < 1) {
    throw ValueError("copy task: batch_size must be >= 1, got " + std::to_string(batch_size_arg));
  }
  if (pad_to_multiple_arg < 1) {
    throw ValueError("copy task: pad_to_multiple must be >= 1, got " +
                     std::to_string(pad_to_multiple_arg));
  }
  // Checked positive above: the sizes of the arrays.
  const auto batch_size = static_cast<std::size_t>(batch_size_arg);
  const auto length = static_cast<std::size_t>(length_arg);
  const auto pad_to_multiple = static_cast<std::size_t>(pad_to_multiple_arg);
  const std::size_t w_len = length / 2 - 1;
  const std::size_t padded = (length + pad_to_multiple - 1) / pad_to_multiple * pad_to_multiple;
  const Tensor w = core::randint(key, {batch_size, w_len}, 1, vocab_size - 1, DType::i32);
  Tensor inputs = Tensor::zeros({batch_size, padded}, DType::i32);
  Tensor weights = Tensor::zeros({batch_size, padded}, DType::f32);
  const std::int32_t* pw = w.data<std::int32_t>();
  std::int32_t* px = inputs.data<std::int32_t>();
  float* pl = weights.data<float>();
  for (std::size_t i = 0; i < batch_size; ++i) {
    std::int32_t* row = px + i * padded;
    const std::int32_t* wi = pw + i * w_len;
    // layout: [0, w_1..w_n, 0, w_1..w_n (or reversed), padding zeros]
    for (std::size_t j = 0; j < w_len; ++j) {
      row[1 + j] = wi[j];
      row[2 + w_len + j] = reverse ? wi[w_len - 1 - j] : wi[j];
      pl[i * padded + 2 + w_len + j] = 1.0f;
    }
  }
  // (inputs, targets, weights); targets share the inputs' buffer, as before.
  const Tensor targets = inputs;
  return Batch{inputs, targets, weights};
}

StepStream copy_task_stream(Key key, long batch_size, long length, long vocab_size, bool reverse,
                            long pad_to_multiple) {
  // Check the arguments now, not at the first batch.
  copy_task_batch(key, 1, length, vocab_size, reverse, pad_to_multiple);
  if (batch_size < 1) {
    throw ValueError("copy task: batch_size must be >= 1, got " + std::to_string(batch_size));
  }
  return [=](long step) {
    return copy_task_batch(core::fold_in(key, static_cast<std::uint32_t>(step)), batch_size, length,
                           vocab_size, reverse, pad_to_multiple);
  };
}

CopyInputs sequence_copy_inputs(Key key, long vocab_size, long batch_size, long train_length,
                                long eval_min_length, long eval_max_length, bool reverse,
                                long pad_to_multiple) {
  if (train_length < 2) {
    throw ValueError("sequence_copy_inputs: train_length must be >= 2, got " +
                     std::to_string(train_length));
  }
  if (eval_min_length < 1) {
    throw ValueError(
        "sequence_copy_inputs: eval_min_length must be >= 1 (eval lengths are 2 (n + 1) >= 4 "
        "for n from eval_min_length), got " +
        std::to_string(eval_min_length));
  }
  if (eval_max_length <= eval_min_length) {
    throw ValueError("sequence_copy_inputs: eval_max_length must exceed eval_min_length, got " +
                     std::to_string(eval_max_length) + " and " + std::to_string(eval_min_length));
  }
  // The rest as copy_task_stream checks them: now, not at the first batch.
  copy_task_stream(key, batch_size, 4, vocab_size, reverse, pad_to_multiple);
  std::vector<long> train_lengths, eval_lengths;
  for (long i = 0; i + 1 < train_length; ++i) train_lengths.push_back(2 * (i + 2));
  for (long i = eval_min_length; i < eval_max_length; ++i) eval_lengths.push_back(2 * (i + 1));
  auto make = [=](Key k, std::vector<long> lengths) -> StepStream {
    return [=](long step) {
      const auto keys = core::split(core::fold_in(k, static_cast<std::uint32_t>(step)), 2);
      const Tensor pick =
          core::randint(keys[0], {1}, 0, static_cast<std::int64_t>(lengths.size()), DType::i64);
      const long len = lengths[static_cast<std::size_t>(pick.flat(0))];
      return copy_task_batch(keys[1], batch_size, len, vocab_size, reverse, pad_to_multiple);
    };
  };
  const auto keys = core::split(key, 2);
  return {make(keys[0], train_lengths), make(keys[1], eval_lengths)};
}

}  // namespace minitrax::data
