/// @file
/// Tokenizers: text to token ids and back (bytes, characters, SentencePiece subwords).
///
/// Every tokenizer reserves two ids, as Trax's and tensor2tensor's text encoders do:
/// id 0 is padding (it is also the start token that the models' ShiftRight feeds in
/// front of a sequence) and id 1 is the end of a sequence (EOS). Every tokenizer
/// round-trips: decode(encode(text)) == text for any text it accepts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace minitrax::data {

/// The id of padding (and of the start token the models feed before a sequence).
inline constexpr std::int32_t pad_id = 0;
/// The id of the end of a sequence.
inline constexpr std::int32_t eos_id = 1;

/// Text to ids and back. Implementations: ByteTokenizer, CharTokenizer,
/// SentencePieceTokenizer (data/tokenizers.hpp).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// The ids of a text (no EOS added). core::ValueError if the text cannot be encoded
  /// (e.g. a character outside a character vocabulary: the message names it and where
  /// it is).
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  /// The text of ids; pad_id and eos_id decode to nothing. core::ValueError for an id
  /// outside [0, vocab_size()).
  virtual std::string decode(const std::vector<std::int32_t>& ids) const = 0;
  /// Number of ids, the reserved ones included.
  virtual std::int32_t vocab_size() const = 0;
  /// "bytes", "chars" or "sentencepiece".
  virtual std::string kind() const = 0;
  /// Writes what is needed to load the tokenizer again (the character vocabulary, the
  /// SentencePiece model) to `path`, atomically.
  virtual void save(const std::string& path) const = 0;
};

}  // namespace minitrax::data
