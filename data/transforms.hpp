/// @file
/// Transforms that compose into input pipelines, in the spirit of trax.data's Serial of
/// stream functions: each takes a stream and gives a new stream, and `|` chains them.
///
/// Three kinds, by what they take and give:
/// - ExampleTransform: examples to examples (repeat, shuffle, filter_by_length,
///   truncate, pad, split, concatenate_and_chunk);
/// - Batcher: examples to batches (batch, bucket_by_length);
/// - BatchTransform: batches to batches (lm_targets, add_loss_weights, add_padding_mask).
///
/// Every stream a pipeline builds is deterministic (its seeds are explicit) and
/// resumable: its position() is its own few counters followed by the position of the
/// stream it reads, and seek() puts the whole chain back. Transforms without buffers
/// seek in O(1) (plus what the source needs); shuffle and bucket_by_length work in
/// blocks, so a seek re-reads at most one block from the stream below.
///
/// @code
/// using namespace minitrax;
/// auto tok = std::make_shared<MyTokenizer>();
/// std::shared_ptr<data::BatchStream> train =
///     data::text_lines({"corpus/"}, tok, /*add_eos=*/true)
///     | data::split(data::Part::train, /*eval_fraction=*/0.1, /*seed=*/7)
///     | data::repeat()
///     | data::shuffle(/*buffer=*/4096, /*seed=*/1)
///     | data::filter_by_length(1, 100000)
///     | data::truncate(256)
///     | data::bucket_by_length({32, 64, 128, 256}, {64, 32, 16, 8})
///     | data::lm_targets()           // (inputs, targets = inputs)
///     | data::add_loss_weights();    // (inputs, targets, weights: 1 on tokens, 0 on padding)
/// data::Batch b = train->next();     // int32 [64, 32], int32 [64, 32], float32 [64, 32]
/// auto where = train->position();    // store it; later: train->seek(where)
/// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "data/sources.hpp"
#include "data/stream.hpp"

namespace minitrax::data {

/// Examples to examples (e.g. shuffle(...)); apply with `stream | t`.
struct ExampleTransform {
  /// Builds the transformed stream on top of `in`.
  std::function<std::shared_ptr<ExampleStream>(std::shared_ptr<ExampleStream>)> apply;
};
/// Examples to batches (batch(...), bucket_by_length(...)); apply with `stream | b`.
struct Batcher {
  /// Builds the stream of batches on top of `in`.
  std::function<std::shared_ptr<BatchStream>(std::shared_ptr<ExampleStream>)> apply;
};
/// Batches to batches (add_loss_weights(), ...); apply with `stream | t`.
struct BatchTransform {
  /// Builds the transformed stream on top of `in`.
  std::function<std::shared_ptr<BatchStream>(std::shared_ptr<BatchStream>)> apply;
};

/// `in | t` is t.apply(in).
std::shared_ptr<ExampleStream> operator|(std::shared_ptr<ExampleStream> in,
                                         const ExampleTransform& t);
/// `in | b` is b.apply(in).
std::shared_ptr<BatchStream> operator|(std::shared_ptr<ExampleStream> in, const Batcher& b);
/// `in | t` is t.apply(in).
std::shared_ptr<BatchStream> operator|(std::shared_ptr<BatchStream> in, const BatchTransform& t);
/// Serial composition: `a | b` applies a, then b (a reusable piece of pipeline).
ExampleTransform operator|(ExampleTransform a, ExampleTransform b);
/// Serial composition: `a | b` is a Batcher that applies a, then b.
Batcher operator|(ExampleTransform a, Batcher b);
/// Serial composition: `a | b` is a Batcher that applies a, then b.
Batcher operator|(Batcher a, BatchTransform b);
/// Serial composition: `a | b` applies a, then b.
BatchTransform operator|(BatchTransform a, BatchTransform b);

// -- examples to examples -----------------------------------------------------------

/// Endless: when the stream below ends, reset it and go on (epoch after epoch).
/// core::ValueError at next() if the stream below has no example at all.
/// Position: {epoch, position below...}.
ExampleTransform repeat();

/// Seeded, buffered shuffle: reads `buffer_size` examples (a block), emits them in the
/// order of a permutation drawn from fold_in(key(seed), block index), then reads the next
/// block. Examples move at most one block from where they were. Position: {block, index
/// in block, position below where the block starts...}; seek re-reads one block.
/// Put repeat() before shuffle, not after: a reset starts the blocks (and their
/// permutations) again, so `shuffle | repeat` would give every epoch the same order.
/// core::ValueError for buffer_size 0.
ExampleTransform shuffle(std::size_t buffer_size, std::int64_t seed);

/// Keeps examples whose length (Example::length(), the longest field) is in
/// [min_length, max_length]. core::ValueError if min_length > max_length.
ExampleTransform filter_by_length(std::size_t min_length, std::size_t max_length);

/// Cuts every field to at most `max_length` tokens (its first ones).
/// core::ValueError for max_length 0.
ExampleTransform truncate(std::size_t max_length);

/// Pads every field with pad_id to exactly `length` tokens; core::ValueError at next()
/// for a longer field (the message says to truncate first).
ExampleTransform pad(std::size_t length);

/// Which part of a split.
enum class Part { train, eval };
/// A deterministic split of a stream: example i (counted from the start of the stream
/// below) belongs to the eval part when a hash of (seed, i) (Threefry, fold_in) falls
/// below `eval_fraction`, else to the train part. The two parts are disjoint and together
/// are the whole stream, whatever the order. Put it right after the source (before
/// shuffle or repeat): it counts what it reads. Position: {examples read, position
/// below...}. core::ValueError unless 0 < eval_fraction < 1.
ExampleTransform split(Part part, double eval_fraction, std::int64_t seed);

/// Concatenates the examples' first fields (with eos_id after each if `add_eos`) and cuts
/// the result into examples of exactly `length` tokens; a last shorter piece at the end
/// of a finite stream is given as it is. Position: {offset in the current example,
/// position below before it...}; seek re-reads one example. core::ValueError for
/// length 0.
ExampleTransform concatenate_and_chunk(std::size_t length, bool add_eos = false);

// -- examples to batches ----------------------------------------------------------

/// Batches of `batch_size` examples: one int32 array [B, L] per field, padded with
/// pad_id to L = `pad_length`, or, if pad_length is 0, to the longest field in the batch
/// rounded up to a multiple of `pad_multiple`. At the end of a finite stream the last
/// batch holds what is left (or nothing if `drop_remainder`), then next() throws
/// core::ValueError. Position: the position below (nothing is buffered between batches).
/// core::ValueError at next() for a field longer than pad_length.
Batcher batch(std::size_t batch_size, std::size_t pad_length = 0, std::size_t pad_multiple = 1,
              bool drop_remainder = false);

/// Batches of examples of similar length: an example of length n goes to the first
/// bucket with n <= boundaries[i]; a batch of bucket i holds batch_sizes[i] examples padded
/// to boundaries[i]. Works in blocks of `block_examples` examples: each block's examples
/// are grouped by bucket, and each bucket's batches are emitted in the order they fill;
/// what is left in a bucket at the end of a block is emitted as a smaller batch (so no
/// example is lost and a seek re-reads one block). Position: {batch index in block,
/// position below where the block starts...}. core::ValueError for empty, unsorted or
/// mismatched boundaries / batch sizes, a zero batch size, block_examples 0, and (at
/// next()) an example longer than the last boundary (filter or truncate first).
Batcher bucket_by_length(std::vector<std::size_t> boundaries, std::vector<std::size_t> batch_sizes,
                         std::size_t block_examples = 4096);

// -- batches to batches -------------------------------------------------------------

/// Appends a copy of the first array as targets: (inputs) -> (inputs, targets = inputs),
/// the language-model convention (the models shift their input right themselves).
BatchTransform lm_targets();

/// Appends float32 loss weights of the last array's shape: 1 where the last array
/// (the targets) is not pad_id, 0 on padding.
BatchTransform add_loss_weights();

/// Inserts after the first array an int32 padding mask of its shape (1 on tokens, 0 on
/// pad_id): (inputs, ...) -> (inputs, mask, ...), for models that take the mask as their
/// second input.
BatchTransform add_padding_mask();

}  // namespace minitrax::data
