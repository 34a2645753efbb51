// minitrax/data/lm.cpp: token stores, LM windows and chunks, lm_text_data.
#include "data/lm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <utility>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "data/data_internal.hpp"
#include "data/sources.hpp"

namespace minitrax::data {

using core::Tensor;
using core::ValueError;

// ============================================================================
// TokenStore
// ============================================================================

TokenStore::TokenStore(std::int64_t vocab_size) : vocab_(vocab_size) {
  if (vocab_size < 1) {
    throw ValueError("TokenStore: vocab_size must be >= 1, got " + std::to_string(vocab_size));
  }
  width_ = vocab_size <= 256 ? 1 : vocab_size <= 65536 ? 2 : 4;
}

void TokenStore::append(const std::vector<std::int32_t>& ids) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_) {
      throw ValueError("TokenStore: id " + std::to_string(ids[i]) + " is outside [0, " +
                       std::to_string(vocab_) + ") (the tokenizer's vocab_size)");
    }
  }
  switch (width_) {
    case 1:
      b1_.insert(b1_.end(), ids.begin(), ids.end());
      break;
    case 2:
      b2_.insert(b2_.end(), ids.begin(), ids.end());
      break;
    default:
      b4_.insert(b4_.end(), ids.begin(), ids.end());
  }
  n_ += ids.size();
}

std::int32_t TokenStore::operator[](std::size_t i) const {
  return width_ == 1 ? b1_[i] : width_ == 2 ? b2_[i] : b4_[i];
}

void TokenStore::copy(std::size_t begin, std::size_t n, std::int32_t* out) const {
  if (begin > n_ || n > n_ - begin) {
    throw ValueError("TokenStore::copy: tokens [" + std::to_string(begin) + ", " +
                     std::to_string(begin + n) + ") are outside the " + std::to_string(n_) +
                     " tokens held");
  }
  if (width_ == 1) {
    std::copy_n(b1_.data() + begin, n, out);
  } else if (width_ == 2) {
    std::copy_n(b2_.data() + begin, n, out);
  } else {
    std::copy_n(b4_.data() + begin, n, out);
  }
}

std::string TokenStore::describe() const {
  char buf[160];
  const char* type = width_ == 1 ? "uint8" : width_ == 2 ? "uint16" : "int32";
  std::snprintf(buf, sizeof buf, "%zu tokens as %s (%.1f MB)", n_, type,
                static_cast<double>(n_ * width_) / 1e6);
  return buf;
}

namespace {

core::Key window_key(core::Key key, std::uint64_t w) {
  return core::fold_in(core::fold_in(key, static_cast<std::uint32_t>(w >> 32)),
                       static_cast<std::uint32_t>(w & 0xffffffffu));
}

void check_range(const TokenStore& t, std::size_t begin, std::size_t end, std::size_t length,
                 std::size_t batch, const char* what) {
  if (length == 0) throw ValueError(std::string(what) + ": length must be >= 1, got 0");
  if (batch == 0) throw ValueError(std::string(what) + ": batch_size must be >= 1, got 0");
  if (begin > end || end > t.size()) {
    throw ValueError(std::string(what) + ": the range [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") is not inside the " + std::to_string(t.size()) +
                     " tokens held");
  }
}

class Windows final : public BatchStream {
 public:
  Windows(std::shared_ptr<const TokenStore> t, std::size_t begin, std::size_t end, std::size_t len,
          std::size_t b, std::int64_t seed, std::string desc)
      : t_(std::move(t)),
        begin_(begin),
        end_(end),
        len_(len),
        b_(b),
        seed_(seed),
        key_(core::key_from_seed(seed)),
        desc_(std::move(desc)) {
    if (!t_) throw ValueError("lm_windows: the token store is null");
    check_range(*t_, begin, end, len, b, "lm_windows");
    if (end - begin < len) {
      throw ValueError("lm_windows: the range [" + std::to_string(begin) + ", " +
                       std::to_string(end) + ") holds " + std::to_string(end - begin) +
                       " tokens, fewer than one window of " + std::to_string(len));
    }
  }
  Batch next() override {
    Tensor x = Tensor::empty({b_, len_}, core::DType::i32, "lm_windows");
    std::int32_t* p = x.data<std::int32_t>();
    const std::uint64_t starts = end_ - begin_ - len_ + 1;
    for (std::size_t r = 0; r < b_; ++r) {
      const std::uint64_t w = static_cast<std::uint64_t>(step_) * b_ + r;
      std::uint64_t bits = 0;
      core::random_bits64(window_key(key_, w), &bits, 1);
      t_->copy(begin_ + static_cast<std::size_t>(bits % starts), len_, p + r * len_);
    }
    ++step_;
    return Batch{x, x, Tensor::ones({b_, len_}, core::DType::f32, "lm_windows")};
  }
  std::vector<std::int64_t> position() const override { return {step_}; }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, true, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the batch index must be >= 0");
    step_ = p[0];
  }
  void reset() override { step_ = 0; }
  std::string describe() const override {
    return "LM windows of " + std::to_string(len_) + " tokens (batch " + std::to_string(b_) +
           ", seed " + std::to_string(seed_) + ") of tokens [" + std::to_string(begin_) + ", " +
           std::to_string(end_) + ")" + (desc_.empty() ? "" : " of " + desc_);
  }

 private:
  std::shared_ptr<const TokenStore> t_;
  std::size_t begin_, end_, len_, b_;
  std::int64_t seed_;
  core::Key key_;
  std::string desc_;
  std::int64_t step_ = 0;
};

class Chunks final : public BatchStream {
 public:
  Chunks(std::shared_ptr<const TokenStore> t, std::size_t begin, std::size_t end, std::size_t len,
         std::size_t b, std::string desc)
      : t_(std::move(t)), begin_(begin), end_(end), len_(len), b_(b), desc_(std::move(desc)) {
    if (!t_) throw ValueError("lm_chunks: the token store is null");
    check_range(*t_, begin, end, len, b, "lm_chunks");
    chunks_ = (end - begin + len - 1) / len;
    batches_ = (chunks_ + b - 1) / b;
  }
  Batch next() override {
    if (step_ >= static_cast<std::int64_t>(batches_)) {
      throw ValueError(describe() + ": no more batches after " + std::to_string(batches_) +
                       "; reset() to start again");
    }
    const std::size_t first = static_cast<std::size_t>(step_) * b_;
    const std::size_t rows = std::min(b_, chunks_ - first);
    Tensor x = Tensor::zeros({rows, len_}, core::DType::i32, "lm_chunks");
    Tensor w = Tensor::zeros({rows, len_}, core::DType::f32, "lm_chunks");
    std::int32_t* px = x.data<std::int32_t>();
    float* pw = w.data<float>();
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t s = begin_ + (first + r) * len_;
      const std::size_t n = std::min(len_, end_ - s);
      t_->copy(s, n, px + r * len_);
      std::fill_n(pw + r * len_, n, 1.0f);
    }
    ++step_;
    return Batch{x, x, w};
  }
  std::vector<std::int64_t> position() const override { return {step_}; }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, true, describe());
    if (p[0] < 0 || p[0] > static_cast<std::int64_t>(batches_)) {
      detail::bad_position(p, describe(),
                           "the batch index must be in [0, " + std::to_string(batches_) + "]");
    }
    step_ = p[0];
  }
  void reset() override { step_ = 0; }
  std::string describe() const override {
    return "LM chunks of " + std::to_string(len_) + " tokens (batch " + std::to_string(b_) +
           ") of tokens [" + std::to_string(begin_) + ", " + std::to_string(end_) + ")" +
           (desc_.empty() ? "" : " of " + desc_);
  }

 private:
  std::shared_ptr<const TokenStore> t_;
  std::size_t begin_, end_, len_, b_;
  std::string desc_;
  std::size_t chunks_ = 0, batches_ = 0;
  std::int64_t step_ = 0;
};

// A place where the text can be split: the counts before a line start.
struct Mark {
  std::size_t tokens, bytes, chars;
};

std::size_t utf8_chars(std::string_view s) {
  std::size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Where the piece of a line to encode at once ends: the whole line (with its '\n') up to
// kMaxPiece bytes; a longer line is cut after its last space within kMaxPiece bytes, or
// else at the end of a UTF-8 character, so that the held-out part can start near where
// it should even in text without line ends.
constexpr std::size_t kMaxPiece = 4096;
std::size_t piece_end(std::string_view line) {
  if (line.size() <= kMaxPiece) return line.size();
  const std::size_t space = line.substr(0, kMaxPiece).rfind(' ');
  if (space != std::string_view::npos && space > 0) return space + 1;
  std::size_t cut = kMaxPiece;
  while (cut > kMaxPiece - 3 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  return (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80 ? kMaxPiece : cut;
}

std::string percent(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g%%", 100.0 * f);
  return buf;
}

std::string fraction(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", f);
  return buf;
}

}  // namespace

std::shared_ptr<BatchStream> lm_windows(std::shared_ptr<const TokenStore> tokens, std::size_t begin,
                                        std::size_t end, std::size_t length, std::size_t batch_size,
                                        std::int64_t seed, std::string description) {
  return std::make_shared<Windows>(std::move(tokens), begin, end, length, batch_size, seed,
                                   std::move(description));
}

std::shared_ptr<BatchStream> lm_chunks(std::shared_ptr<const TokenStore> tokens, std::size_t begin,
                                       std::size_t end, std::size_t length, std::size_t batch_size,
                                       std::string description) {
  return std::make_shared<Chunks>(std::move(tokens), begin, end, length, batch_size,
                                  std::move(description));
}

double LMTextData::bits_per_character(double nats_per_token) const {
  if (eval_characters <= 0) return 0.0;
  return nats_per_token * static_cast<double>(eval_tokens) / static_cast<double>(eval_characters) /
         std::numbers::ln2;
}

LMTextData lm_text_data(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                        std::size_t window, std::size_t batch_size, double eval_fraction,
                        std::int64_t seed) {
  if (window == 0) throw ValueError("lm_text_data: window must be >= 1 token, got 0");
  if (batch_size == 0) throw ValueError("lm_text_data: batch_size must be >= 1, got 0");
  if (!(eval_fraction > 0.0 && eval_fraction < 1.0)) {
    throw ValueError("lm_text_data: eval_fraction must be in (0, 1), got " +
                     fraction(eval_fraction));
  }
  LMTextData out;
  out.files = list_files(paths);
  const std::string what = out.files.size() == 1
                               ? "'" + out.files[0] + "'"
                               : "the " + std::to_string(out.files.size()) + " files ('" +
                                     out.files.front() + "' .. '" + out.files.back() + "')";

  auto store = std::make_shared<TokenStore>(tokenizer.vocab_size());
  // Split points at line starts, thinned to at most kMaxMarks (every `stride`-th line).
  constexpr std::size_t kMaxMarks = 1 << 16;
  std::vector<Mark> marks;
  std::size_t stride = 1, line = 0, bytes = 0, chars = 0;
  auto mark = [&] {
    if (line++ % stride != 0) return;
    marks.push_back({store->size(), bytes, chars});
    if (marks.size() > kMaxMarks) {
      std::size_t j = 0;
      for (std::size_t i = 0; i < marks.size(); i += 2) marks[j++] = marks[i];
      marks.resize(j);
      stride *= 2;
    }
  };
  for (std::size_t f = 0; f < out.files.size(); ++f) {
    const std::string& path = out.files[f];
    if (f > 0) store->append({eos_id});
    const std::size_t bytes_before = bytes;
    line = 0;  // always mark a file's start
    for_each_text_chunk(path, [&](std::string_view chunk) {
      while (!chunk.empty()) {
        const std::size_t nl = chunk.find('\n');
        const std::size_t n =
            piece_end(chunk.substr(0, nl == std::string_view::npos ? chunk.size() : nl + 1));
        const std::string_view text = chunk.substr(0, n);
        mark();
        store->append(tokenizer.encode(text));
        bytes += n;
        chars += utf8_chars(text);
        chunk.remove_prefix(n);
      }
    });
    if (bytes == bytes_before) {
      throw core::FileError(path +
                            ": the file holds no text (0 bytes); remove it or give other files");
    }
  }
  const std::size_t n = store->size();
  out.tokens = store;
  out.held = store->describe();
  out.total_characters = static_cast<std::int64_t>(chars);

  if (n < 2 * window) {
    throw ValueError("lm_text_data: " + what + " holds " + std::to_string(n) + " tokens (" +
                     std::to_string(bytes) +
                     " bytes of text), too few for a training part and a "
                     "held-out part of at least one window of " +
                     std::to_string(window) + " tokens each (" + std::to_string(2 * window) +
                     " tokens); use a window of at most " + std::to_string(n / 2) +
                     " tokens or more text");
  }
  const auto target =
      static_cast<std::size_t>(std::floor((1.0 - eval_fraction) * static_cast<double>(n)));
  auto it = std::lower_bound(marks.begin(), marks.end(), target,
                             [](const Mark& m, std::size_t t) { return m.tokens < t; });
  const Mark cut = it == marks.end() ? marks.back() : *it;
  const std::size_t train_n = cut.tokens, eval_n = n - cut.tokens;
  if (eval_n < window) {
    throw ValueError(
        "lm_text_data: the held-out part (the last " + percent(eval_fraction) + " of " + what +
        ", from a line start) holds " + std::to_string(eval_n) +
        " tokens, fewer than one window of " + std::to_string(window) +
        " tokens; use an eval_fraction of at least " +
        fraction(std::min(0.5, 1.05 * static_cast<double>(window) / static_cast<double>(n))) +
        " or a window of at most " + std::to_string(eval_n) + " tokens");
  }
  if (train_n < window) {
    throw ValueError(
        "lm_text_data: the training part (the first " + percent(1.0 - eval_fraction) + " of " +
        what + ", up to a line start) holds " + std::to_string(train_n) +
        " tokens, fewer than one window of " + std::to_string(window) +
        " tokens; use an eval_fraction of at most " +
        fraction(std::max(0.0, 1.0 - 1.05 * static_cast<double>(window) / static_cast<double>(n))) +
        " or a window of at most " + std::to_string(train_n) + " tokens");
  }
  out.train = lm_windows(store, 0, train_n, window, batch_size, seed, what + " (training part)");
  out.eval = lm_chunks(store, train_n, n, window, batch_size, what + " (held-out part)");
  out.train_tokens = static_cast<std::int64_t>(train_n);
  out.eval_tokens = static_cast<std::int64_t>(eval_n);
  out.eval_bytes = static_cast<std::int64_t>(bytes - cut.bytes);
  out.eval_characters = static_cast<std::int64_t>(chars - cut.chars);
  const std::size_t chunks = (eval_n + window - 1) / window;
  out.eval_batches = static_cast<std::int64_t>((chunks + batch_size - 1) / batch_size);
  return out;
}

}  // namespace minitrax::data
