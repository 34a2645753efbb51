/// @file
/// Batches and resumable streams of batches: the contract between data/ (which makes
/// them) and training/ (whose Loop consumes them).
///
/// A Batch is a tuple of arrays, as in Trax: the model takes the first n_in of them
/// (e.g. inputs, or inputs and a padding mask), and the loss layer takes the model's
/// outputs followed by the rest (targets, then loss weights).
///
/// A BatchStream is a deterministic sequence of batches that can report where it is
/// (position(), a short list of int64 values) and go back there (seek()). The Loop
/// saves the training stream's position in every checkpoint, so that a resumed run sees
/// exactly the batches an uninterrupted run would have seen.
///
/// data/ is a floor beside training/ and below it: it knows nothing of layers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::data {

/// One batch: any number of arrays, in the order the model and then the loss take them
/// (most often inputs int32 [B, L], targets int32 [B, L], weights float32 [B, L]).
/// @code
/// data::Batch b{inputs, targets, weights};
/// const core::Tensor& x = b[0];
/// @endcode
struct Batch {
  std::vector<core::Tensor> arrays;  ///< the arrays, model inputs first

  Batch() = default;
  /// A batch of the given arrays, in order.
  Batch(std::initializer_list<core::Tensor> a) : arrays(a) {}
  /// A batch of the given arrays, in order.
  explicit Batch(std::vector<core::Tensor> a) : arrays(std::move(a)) {}

  /// How many arrays the batch holds.
  std::size_t size() const { return arrays.size(); }
  /// Array i (bounds-checked: std::out_of_range past the end).
  core::Tensor& operator[](std::size_t i) { return arrays.at(i); }
  /// Array i (bounds-checked: std::out_of_range past the end).
  const core::Tensor& operator[](std::size_t i) const { return arrays.at(i); }
};

/// A deterministic, resumable stream of batches.
///
/// Contract: two streams built the same way (same sources, seed and settings) give the
/// same batches; after `b.seek(a.position())`, `b.next()` returns what `a.next()` would
/// (bitwise). Endless streams (training) never run out; a finite stream throws
/// core::ValueError from next() once it has no more batches, naming the stream.
class BatchStream {
 public:
  virtual ~BatchStream() = default;
  /// The next batch.
  virtual Batch next() = 0;
  /// Where the stream is: a few int64 values (stored in checkpoints).
  virtual std::vector<std::int64_t> position() const = 0;
  /// Goes to a position that position() of a stream built the same way returned;
  /// core::ValueError if it cannot belong to this stream.
  virtual void seek(const std::vector<std::int64_t>& position) = 0;
  /// Back to the beginning (the same as seek(position()) of a fresh stream).
  virtual void reset() = 0;
  /// A one-line description for messages and logs (e.g. "LM windows of 2048 tokens
  /// from 'gcide.dict.dz'").
  virtual std::string describe() const = 0;
};

}  // namespace minitrax::data
