/// @file
/// Language-model data: a long stream of token ids held compactly in memory, random
/// windows of it (training), consecutive chunks of it (evaluation), and lm_text_data,
/// which makes both from text files and a tokenizer in one call.
///
/// Batches are (inputs int32 [B, L], targets int32 [B, L] == inputs, weights float32
/// [B, L]): the models shift their inputs right themselves (the start token is pad_id 0),
/// as for the copy task in training/data.hpp.
///
/// @code
/// using namespace minitrax;
/// auto tok = std::make_shared<data::ByteTokenizer>();          // data/tokenizers.hpp
/// data::LMTextData d = data::lm_text_data({"/usr/share/dictd/gcide.dict.dz"}, *tok,
///                                         /*window=*/2048, /*batch_size=*/8,
///                                         /*eval_fraction=*/0.01, /*seed=*/0);
/// data::Batch b = d.train->next();          // endless random windows of the first 99%
/// for (std::int64_t i = 0; i < d.eval_batches; ++i) evaluate(d.eval->next());
/// d.eval->reset();                          // the same eval batches next time
/// double bpc = d.bits_per_character(eval_nats_per_token);
/// std::cout << d.held << "\n";              // what is held in memory
/// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/stream.hpp"
#include "data/tokenizer.hpp"

namespace minitrax::data {

/// Token ids held in memory in the narrowest type their vocabulary allows: 1 byte per
/// token for vocabularies of at most 256 ids, 2 for at most 65536, else 4.
class TokenStore {
 public:
  /// An empty store for ids in [0, vocab_size); core::ValueError unless vocab_size >= 1.
  explicit TokenStore(std::int64_t vocab_size);
  /// Appends ids; core::ValueError for an id outside [0, vocab_size).
  void append(const std::vector<std::int32_t>& ids);
  /// Number of tokens held.
  std::size_t size() const { return n_; }
  /// Token i (unchecked).
  std::int32_t operator[](std::size_t i) const;
  /// Copies tokens [begin, begin + n) into out (core::ValueError past the end).
  void copy(std::size_t begin, std::size_t n, std::int32_t* out) const;
  /// Bytes per token: 1, 2 or 4.
  std::size_t bytes_per_token() const { return width_; }
  /// "40.1 M tokens as uint8 (40.1 MB)".
  std::string describe() const;

 private:
  std::int64_t vocab_;
  std::size_t width_, n_ = 0;
  std::vector<std::uint8_t> b1_;
  std::vector<std::uint16_t> b2_;
  std::vector<std::int32_t> b4_;
};

/// Endless random windows of tokens [begin, end) of `tokens`: batch k holds windows
/// k B .. k B + B - 1, and window w starts at a position drawn uniformly from
/// [begin, end - length] with fold_in(key_from_seed(seed), w), so any batch is computed
/// directly (position: {batch index}; seek is O(1)). Batches: inputs, targets (== inputs)
/// int32 [B, length], weights float32 [B, length] of ones.
/// core::ValueError if the range holds fewer than `length` tokens, for length or
/// batch_size 0, or a range outside the store.
std::shared_ptr<BatchStream> lm_windows(std::shared_ptr<const TokenStore> tokens, std::size_t begin,
                                        std::size_t end, std::size_t length, std::size_t batch_size,
                                        std::int64_t seed, std::string description = "");

/// Tokens [begin, end) cut into consecutive chunks of `length` (the last one padded with
/// pad_id, weight 0), B chunks per batch (the last batch may hold fewer rows): a finite
/// stream of ceil(ceil((end - begin) / length) / B) batches, the same ones after every
/// reset(); next() past the end throws core::ValueError. Position: {batch index}.
std::shared_ptr<BatchStream> lm_chunks(std::shared_ptr<const TokenStore> tokens, std::size_t begin,
                                       std::size_t end, std::size_t length, std::size_t batch_size,
                                       std::string description = "");

/// What lm_text_data returns: the two streams and the counts behind bits per character.
struct LMTextData {
  std::shared_ptr<BatchStream> train;        ///< endless random windows of the training part
  std::shared_ptr<BatchStream> eval;         ///< finite chunks of the held-out part (lm_chunks)
  std::int64_t eval_batches = 0;             ///< batches in one pass of `eval`
  std::int64_t eval_tokens = 0;              ///< real (weight 1) tokens in one pass of `eval`
  std::int64_t eval_characters = 0;          ///< UTF-8 characters of the held-out text
  std::int64_t eval_bytes = 0;               ///< bytes of the held-out text
  std::int64_t train_tokens = 0;             ///< tokens of the training part
  std::int64_t total_characters = 0;         ///< UTF-8 characters of all the text
  std::vector<std::string> files;            ///< the files read, in order
  std::shared_ptr<const TokenStore> tokens;  ///< all tokens (train part, then held-out part)
  std::string held;  ///< what is held in memory, e.g. "40.1 M tokens as uint8 (40.1 MB)"

  /// Bits per character from the eval loss in nats per token (the weighted mean over
  /// one pass of `eval`): nats_per_token * eval_tokens / eval_characters / ln 2.
  double bits_per_character(double nats_per_token) const;
};

/// Language-model data from text, in one call.
///
/// `paths` name files, folders or globs (list_files), plain or gzip (any mix); their texts
/// are tokenized in order, line by line (each line with its '\n'; a line longer than
/// 4096 bytes in pieces cut after a space), with eos_id between files. Plain files are
/// memory-mapped and gzip files inflated as a stream; only the token ids are kept (TokenStore: 1
/// byte per token when vocab_size <= 256). The last `eval_fraction` of the tokens, from a line
/// start, is held out:
/// - `train`: lm_windows of the first part (window tokens, batch_size rows, `seed`);
/// - `eval`: lm_chunks of the held-out part (the same batches after every reset()).
///
/// Errors (core::FileError naming the file, or core::ValueError): a missing file, a glob
/// matching nothing, an empty file, unreadable / corrupt / truncated gzip, text that
/// holds fewer tokens than one window, and a held-out or training part smaller than one
/// window (the message gives the sizes and the eval_fraction or window that would work);
/// window or batch_size 0, eval_fraction outside (0, 1).
LMTextData lm_text_data(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                        std::size_t window, std::size_t batch_size, double eval_fraction,
                        std::int64_t seed);

}  // namespace minitrax::data
