/// @file
/// The tokenizers: bytes, characters (a vocabulary built from the data) and SentencePiece
/// subwords, all behind data::Tokenizer (data/tokenizer.hpp).
///
/// Every tokenizer reserves id 0 (padding) and id 1 (EOS), never produces them from
/// encode(), decodes them to nothing, and round-trips: decode(encode(text)) == text for
/// every text it accepts (any bytes for ByteTokenizer; any UTF-8 text for
/// SentencePieceTokenizer; any UTF-8 text made of the vocabulary's characters for
/// CharTokenizer). docs/tokenizers.md describes them; docs/errors_tokenizers.md lists
/// their error messages.
///
/// @code
/// using namespace minitrax::data;
/// CharTokenizer chars = CharTokenizer::build_from_file("book.txt");  // read in chunks
/// std::vector<std::int32_t> ids = chars.encode("Hello");
/// chars.save("runs/x/tokenizer.json");           // atomically; readable JSON
/// std::unique_ptr<Tokenizer> t = load_tokenizer("runs/x/tokenizer.json");
///
/// SentencePieceOptions o;
/// o.vocab_size = 2000;
/// SentencePieceTokenizer sp = SentencePieceTokenizer::train("book.txt", o);
/// sp.save("runs/x/tokenizer.model");             // a SentencePiece .model file
/// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.hpp"

namespace minitrax::data {

// -- UTF-8 --------------------------------------------------------------------------
/// The code points of a UTF-8 text, decoded strictly (no overlong forms, no surrogates,
/// nothing beyond U+10FFFF, no truncated sequence). core::ValueError otherwise:
/// `"<what>: invalid UTF-8 at byte <offset> (<why>): the data looks binary, not UTF-8 text"`.
std::vector<char32_t> decode_utf8(std::string_view text, std::string_view what = "text");
/// The UTF-8 bytes of code points; core::ValueError for a value that is not a Unicode
/// scalar value (a surrogate or beyond U+10FFFF).
std::string encode_utf8(const std::vector<char32_t>& code_points);
/// `text` with every byte that is not part of a valid UTF-8 character replaced by U+FFFD
/// (so that decode_utf8 accepts it); valid text comes back unchanged. For a text with a few
/// stray bytes of another encoding: dict-gcide's 40 MB dictionary, for one, holds three
/// Windows-1252 bytes. `replaced`, if given, receives the number of bytes replaced. A text
/// repaired in pieces must be cut at line ends, not inside a character.
std::string repair_utf8(std::string_view text, std::uint64_t* replaced = nullptr);
/// How a character is named in messages: `'é' (U+00E9)`, `'\n' (U+000A)`, `(U+0007)`.
std::string describe_char(char32_t c);

// -- bytes --------------------------------------------------------------------------
/// The bytes of a text: byte b is id b + 2 (vocab_size() == 258). Any byte string,
/// UTF-8 or not, round-trips.
class ByteTokenizer final : public Tokenizer {
 public:
  /// The id of byte 0.
  static constexpr std::int32_t first_byte_id = 2;

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t vocab_size() const override { return 258; }
  std::string kind() const override { return "bytes"; }
  /// Writes a small JSON file (`{"format": "minitrax-tokenizer", "kind": "bytes", ...}`).
  void save(const std::string& path) const override;
};

// -- characters ---------------------------------------------------------------------
/// Unicode code points, with a vocabulary built from the data: the distinct characters
/// sorted by code point get ids 2, 3, ... (so the same text always gives the same ids).
class CharTokenizer final : public Tokenizer {
 public:
  /// A tokenizer of these characters (any order; sorted here). core::ValueError if one is
  /// repeated or is not a Unicode scalar value, or if there are none. `source` names where
  /// they came from in messages ("... built from <source>").
  explicit CharTokenizer(std::vector<char32_t> characters,
                         std::string source = "the training text");
  /// The vocabulary of a whole text (see CharVocabBuilder for large texts).
  static CharTokenizer build(std::string_view text, std::string source = "the training text");
  /// The vocabulary of a UTF-8 text file, read in chunks of `chunk_bytes` (not whole).
  static CharTokenizer build_from_file(const std::string& path,
                                       std::size_t chunk_bytes = std::size_t{1} << 20);
  /// Reads what save() wrote; core::FileError if it cannot be read or is not a character
  /// vocabulary.
  static CharTokenizer load(const std::string& path);

  /// The ids of `text`. core::ValueError for invalid UTF-8 or a character outside the
  /// vocabulary: `"<what> character 3 'é' (U+00E9) is not in the vocabulary of 71
  /// characters built from the training text"` (character positions count from 0).
  std::vector<std::int32_t> encode(std::string_view text, std::string_view what) const;
  std::vector<std::int32_t> encode(std::string_view text) const override {
    return encode(text, "text");
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t vocab_size() const override { return static_cast<std::int32_t>(chars_.size()) + 2; }
  std::string kind() const override { return "chars"; }
  /// Writes the vocabulary as readable JSON (UTF-8), atomically (temporary + rename).
  void save(const std::string& path) const override;

  /// The characters, sorted; characters()[i] has id i + 2.
  const std::vector<char32_t>& characters() const { return chars_; }
  /// Where the vocabulary was built from (e.g. the training file's path).
  const std::string& source() const { return source_; }
  /// The id of a character, or -1 if it is not in the vocabulary.
  std::int32_t id_of(char32_t c) const;

 private:
  std::vector<char32_t> chars_;
  std::string source_;
  std::vector<std::int32_t> ascii_;  // ids of code points 0..127 (-1: absent)
};

/// Builds a character vocabulary from a text fed in pieces of any size (a chunk may end
/// inside a character; the next one continues it), so a large file need not be one string.
/// The result equals CharTokenizer::build of the whole text.
class CharVocabBuilder {
 public:
  /// `source` names the text in messages (e.g. its path).
  explicit CharVocabBuilder(std::string source = "the training text");
  /// Adds the next piece of the text. core::ValueError on invalid UTF-8, with the byte
  /// offset counted from the start of the whole text.
  void add(std::string_view chunk);
  /// Adds a whole UTF-8 file, read in chunks; errors name the file and the offset in it.
  /// core::FileError if it cannot be read.
  void add_file(const std::string& path, std::size_t chunk_bytes = std::size_t{1} << 20);
  /// The vocabulary. core::ValueError if the text ended inside a character or had none.
  CharTokenizer finish() const;
  /// Characters (code points) added so far.
  std::uint64_t chars_seen() const { return chars_seen_; }
  /// Bytes added so far.
  std::uint64_t bytes_seen() const { return bytes_seen_; }

 private:
  void add_piece(std::string_view chunk, std::string_view what, std::uint64_t& offset,
                 std::string& carry);
  std::string source_;
  std::vector<bool> seen_;        // one flag per code point
  std::string carry_;             // the start of a character split across chunks
  std::uint64_t add_offset_ = 0;  // bytes of add()'s text decoded so far
  std::uint64_t bytes_seen_ = 0, chars_seen_ = 0;
};

// -- SentencePiece ------------------------------------------------------------------
/// How SentencePieceTokenizer::train trains a model. Whatever these say, the model keeps
/// the text as it is (identity normalization, no dummy prefix, no whitespace removal),
/// falls back to bytes for characters it has not seen, and has padding at id 0, EOS at
/// id 1 and the unknown piece at id 2 (which encode never produces).
struct SentencePieceOptions {
  /// Number of ids, the reserved ones and the 256 byte pieces included (so > 259).
  std::int32_t vocab_size = 8000;
  /// "unigram" or "bpe".
  std::string model_type = "unigram";
  /// Share of the characters of the text that get their own pieces (the rarest others are
  /// bytes). SentencePiece's default.
  double character_coverage = 0.9995;
  /// Train on at most this many lines, sampled with `seed` (0: every line).
  std::int64_t max_lines = 0;
  /// Lines longer than this (in bytes) are left out of training (SentencePiece's default).
  std::int32_t max_line_bytes = 4192;
  /// Training threads. 1 by default: with more, unigram training sums in a different order
  /// and its model can differ from run to run in the last digits of the scores.
  std::int32_t num_threads = 1;
  /// true: training fails if the text cannot fill vocab_size ids ("Vocabulary size too
  /// high"); false: the vocabulary may come out smaller (SentencePiece's hard_vocab_limit).
  bool exact_vocab_size = true;
  /// Seed of SentencePiece's sampling of lines (SentencePiece keeps it in a global: training
  /// sets it for every SentencePiece user of the process).
  std::uint32_t seed = 1;
  /// Let SentencePiece print its training log to stderr.
  bool verbose = false;
};

/// Subwords with SentencePiece (Debian's libsentencepiece-dev), trained here or loaded
/// from a .model file. Its headers are not needed to use this class.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  /// Trains a model on a UTF-8 text file, one line at a time (lines are read in chunks; an
  /// empty line is skipped). Deterministic for a given file and options (with
  /// num_threads == 1). core::ValueError for an empty text, invalid UTF-8, bad options or
  /// a vocab_size the text cannot fill; core::FileError if the file cannot be read.
  static SentencePieceTokenizer train(const std::string& text_path,
                                      const SentencePieceOptions& options = {});
  /// The same on a text in memory; `source` names it in messages.
  static SentencePieceTokenizer train_on_text(std::string_view text,
                                              const SentencePieceOptions& options = {},
                                              std::string_view source = "the training text");
  /// Loads a .model file. core::FileError if it is missing, empty, truncated or not a
  /// SentencePiece model, if its ids 0 and 1 are not padding and EOS, or if it does not
  /// round-trip text (trained with normalization or without byte fallback).
  static SentencePieceTokenizer load(const std::string& model_path);
  /// The same on the bytes of a .model file; `what` names it in messages.
  static SentencePieceTokenizer from_serialized(std::string_view model_bytes,
                                                std::string_view what = "<memory>");

  /// Movable (not copyable: load the .model again, or from_serialized(serialized_model())).
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  /// Movable.
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;
  ~SentencePieceTokenizer() override;

  /// The ids of a UTF-8 text; core::ValueError for invalid UTF-8 (named by `what`).
  std::vector<std::int32_t> encode(std::string_view text, std::string_view what) const;
  std::vector<std::int32_t> encode(std::string_view text) const override {
    return encode(text, "text");
  }
  /// Ids 0 and 1 decode to nothing; id 2 (unknown, never produced) to " ⁇ ".
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t vocab_size() const override;
  std::string kind() const override { return "sentencepiece"; }
  /// Writes the .model file (SentencePiece's own format; spm_encode reads it), atomically.
  void save(const std::string& path) const override;
  /// The bytes of the .model file.
  const std::string& serialized_model() const;
  /// The piece of an id (e.g. "▁the", "<0x0A>"); core::ValueError if out of range.
  std::string piece(std::int32_t id) const;

 private:
  struct Impl;
  explicit SentencePieceTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// -- texts with a few stray bytes ---------------------------------------------------
/// A tokenizer whose encode() first replaces bytes that are not UTF-8 by U+FFFD
/// (repair_utf8), for texts with a few stray bytes of another encoding (dict-gcide's
/// dictionary has three): the wrapped tokenizer then sees valid UTF-8 only. decode,
/// vocab_size, kind and save are the wrapped tokenizer's. Encoding with it never fails on
/// invalid UTF-8, so it is for data that was checked to be text (replaced() tells how
/// many bytes were replaced so far); for binary data use ByteTokenizer.
/// @code
/// auto chars = std::make_shared<data::CharTokenizer>(builder.finish());
/// data::Utf8Repairing tok(chars);
/// auto d = data::lm_text_data({"/usr/share/dictd/gcide.dict.dz"}, tok, 2048, 8, 0.01, 0);
/// std::cout << tok.replaced() << " bytes replaced\n";   // 3
/// @endcode
class Utf8Repairing final : public Tokenizer {
 public:
  /// Wraps `inner` (not null; core::ValueError otherwise).
  explicit Utf8Repairing(std::shared_ptr<const Tokenizer> inner);
  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t vocab_size() const override;
  std::string kind() const override;
  void save(const std::string& path) const override;
  /// Bytes replaced by encode() so far.
  std::uint64_t replaced() const { return replaced_; }

 private:
  std::shared_ptr<const Tokenizer> inner_;
  mutable std::uint64_t replaced_ = 0;
};

// -- any kind -----------------------------------------------------------------------
/// Loads what any tokenizer's save() wrote: the JSON file of ByteTokenizer or
/// CharTokenizer, or a SentencePiece .model file. core::FileError if it is none of them.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace minitrax::data
