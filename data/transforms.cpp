// minitrax/data/transforms.cpp: the composable stream transforms.
#include "data/transforms.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "data/data_internal.hpp"

namespace minitrax::data {

using core::Tensor;
using core::ValueError;

// ============================================================================
// composition
// ============================================================================

std::shared_ptr<ExampleStream> operator|(std::shared_ptr<ExampleStream> in,
                                         const ExampleTransform& t) {
  if (!in) throw ValueError("pipeline: the stream of examples is null");
  return t.apply(std::move(in));
}
std::shared_ptr<BatchStream> operator|(std::shared_ptr<ExampleStream> in, const Batcher& b) {
  if (!in) throw ValueError("pipeline: the stream of examples is null");
  return b.apply(std::move(in));
}
std::shared_ptr<BatchStream> operator|(std::shared_ptr<BatchStream> in, const BatchTransform& t) {
  if (!in) throw ValueError("pipeline: the stream of batches is null");
  return t.apply(std::move(in));
}
ExampleTransform operator|(ExampleTransform a, ExampleTransform b) {
  return {[a, b](std::shared_ptr<ExampleStream> in) { return b.apply(a.apply(std::move(in))); }};
}
Batcher operator|(ExampleTransform a, Batcher b) {
  return {[a, b](std::shared_ptr<ExampleStream> in) { return b.apply(a.apply(std::move(in))); }};
}
Batcher operator|(Batcher a, BatchTransform b) {
  return {[a, b](std::shared_ptr<ExampleStream> in) { return b.apply(a.apply(std::move(in))); }};
}
BatchTransform operator|(BatchTransform a, BatchTransform b) {
  return {[a, b](std::shared_ptr<BatchStream> in) { return b.apply(a.apply(std::move(in))); }};
}

namespace {

// A uniform draw in [0, 1) that is a pure function of (key, i), for any 64-bit i.
double hash_uniform(core::Key key, std::uint64_t i) {
  const core::Key k = core::fold_in(core::fold_in(key, static_cast<std::uint32_t>(i >> 32)),
                                    static_cast<std::uint32_t>(i & 0xffffffffu));
  std::uint32_t bits = 0;
  core::random_bits(k, &bits, 1);
  return bits / 4294967296.0;
}

// A random permutation of 0..n-1 drawn from `key` (Fisher-Yates on 64-bit words).
std::vector<std::size_t> permutation(core::Key key, std::size_t n) {
  std::vector<std::size_t> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = i;
  if (n < 2) return p;
  const auto bits = core::random_bits64(key, n);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[bits[i - 1] % i]);
  return p;
}

// A stream that sits on another one and keeps no state of its own between examples.
class ExampleMap : public ExampleStream {
 public:
  ExampleMap(std::shared_ptr<ExampleStream> in, std::string what)
      : in_(std::move(in)), what_(std::move(what)) {}
  std::vector<std::int64_t> position() const override { return in_->position(); }
  void seek(const std::vector<std::int64_t>& p) override { in_->seek(p); }
  void reset() override { in_->reset(); }
  std::string describe() const override { return in_->describe() + " | " + what_; }

 protected:
  std::shared_ptr<ExampleStream> in_;
  std::string what_;
};

class Repeat final : public ExampleStream {
 public:
  explicit Repeat(std::shared_ptr<ExampleStream> in) : in_(std::move(in)) {}
  std::optional<Example> next() override {
    auto ex = in_->next();
    if (ex) return ex;
    in_->reset();
    ++epoch_;
    ex = in_->next();
    if (!ex) throw ValueError("repeat: " + in_->describe() + " has no examples to repeat");
    return ex;
  }
  std::vector<std::int64_t> position() const override {
    return detail::join({epoch_}, in_->position());
  }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, false, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the epoch must be >= 0");
    in_->seek(detail::tail(p, 1));
    epoch_ = p[0];
  }
  void reset() override {
    in_->reset();
    epoch_ = 0;
  }
  std::string describe() const override { return in_->describe() + " | repeat"; }

 private:
  std::shared_ptr<ExampleStream> in_;
  std::int64_t epoch_ = 0;
};

class Shuffle final : public ExampleStream {
 public:
  Shuffle(std::shared_ptr<ExampleStream> in, std::size_t size, std::int64_t seed)
      : in_(std::move(in)), size_(size), seed_(seed), key_(core::key_from_seed(seed)) {}
  std::optional<Example> next() override {
    if (loaded_ && idx_ >= buf_.size()) {
      ++block_;
      loaded_ = false;
    }
    if (!loaded_) {
      fill();
      if (buf_.empty()) {
        loaded_ = false;
        return std::nullopt;
      }
    }
    return std::move(buf_[perm_[idx_++]]);
  }
  std::vector<std::int64_t> position() const override {
    if (!loaded_ || idx_ >= buf_.size())
      return detail::join({block_ + (loaded_ ? 1 : 0), 0}, in_->position());
    return detail::join({block_, static_cast<std::int64_t>(idx_)}, start_);
  }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 2, false, describe());
    if (p[0] < 0 || p[1] < 0 || p[1] >= static_cast<std::int64_t>(size_)) {
      detail::bad_position(
          p, describe(),
          "the block must be >= 0 and the index in [0, " + std::to_string(size_) + ")");
    }
    in_->seek(detail::tail(p, 2));
    block_ = p[0];
    loaded_ = false;
    buf_.clear();
    idx_ = 0;
    if (p[1] > 0) {
      fill();
      if (static_cast<std::size_t>(p[1]) > buf_.size()) {
        detail::bad_position(p, describe(),
                             "the block holds only " + std::to_string(buf_.size()) + " examples");
      }
      idx_ = static_cast<std::size_t>(p[1]);
    }
  }
  void reset() override {
    in_->reset();
    block_ = 0;
    loaded_ = false;
    buf_.clear();
    idx_ = 0;
  }
  std::string describe() const override {
    return in_->describe() + " | shuffle(" + std::to_string(size_) + ", seed " +
           std::to_string(seed_) + ")";
  }

 private:
  void fill() {
    start_ = in_->position();
    buf_.clear();
    while (buf_.size() < size_) {
      auto ex = in_->next();
      if (!ex) break;
      buf_.push_back(std::move(*ex));
    }
    perm_ = permutation(core::fold_in(key_, static_cast<std::uint32_t>(block_)), buf_.size());
    idx_ = 0;
    loaded_ = true;
  }

  std::shared_ptr<ExampleStream> in_;
  std::size_t size_;
  std::int64_t seed_;
  core::Key key_;
  std::int64_t block_ = 0;
  bool loaded_ = false;
  std::vector<std::int64_t> start_;
  std::vector<Example> buf_;
  std::vector<std::size_t> perm_;
  std::size_t idx_ = 0;
};

class Filter final : public ExampleMap {
 public:
  Filter(std::shared_ptr<ExampleStream> in, std::size_t lo, std::size_t hi)
      : ExampleMap(std::move(in),
                   "filter_by_length(" + std::to_string(lo) + ", " + std::to_string(hi) + ")"),
        lo_(lo),
        hi_(hi) {}
  std::optional<Example> next() override {
    while (auto ex = in_->next()) {
      const std::size_t n = ex->length();
      if (n >= lo_ && n <= hi_) return ex;
    }
    return std::nullopt;
  }

 private:
  std::size_t lo_, hi_;
};

class Truncate final : public ExampleMap {
 public:
  Truncate(std::shared_ptr<ExampleStream> in, std::size_t n)
      : ExampleMap(std::move(in), "truncate(" + std::to_string(n) + ")"), n_(n) {}
  std::optional<Example> next() override {
    auto ex = in_->next();
    if (ex) {
      for (auto& f : ex->fields) {
        if (f.size() > n_) f.resize(n_);
      }
    }
    return ex;
  }

 private:
  std::size_t n_;
};

class Pad final : public ExampleMap {
 public:
  Pad(std::shared_ptr<ExampleStream> in, std::size_t n)
      : ExampleMap(std::move(in), "pad(" + std::to_string(n) + ")"), n_(n) {}
  std::optional<Example> next() override {
    auto ex = in_->next();
    if (ex) {
      for (auto& f : ex->fields) {
        if (f.size() > n_) {
          throw ValueError("pad: an example of " + std::to_string(f.size()) +
                           " tokens is longer than the padded length " + std::to_string(n_) +
                           " (from " + in_->describe() + "); truncate(" + std::to_string(n_) +
                           ") first");
        }
        f.resize(n_, pad_id);
      }
    }
    return ex;
  }

 private:
  std::size_t n_;
};

class Split final : public ExampleStream {
 public:
  Split(std::shared_ptr<ExampleStream> in, Part part, double fraction, std::int64_t seed)
      : in_(std::move(in)),
        part_(part),
        fraction_(fraction),
        seed_(seed),
        key_(core::key_from_seed(seed)) {}
  std::optional<Example> next() override {
    while (auto ex = in_->next()) {
      const bool is_eval = hash_uniform(key_, static_cast<std::uint64_t>(read_++)) < fraction_;
      if (is_eval == (part_ == Part::eval)) return ex;
    }
    return std::nullopt;
  }
  std::vector<std::int64_t> position() const override {
    return detail::join({read_}, in_->position());
  }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, false, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the example count must be >= 0");
    in_->seek(detail::tail(p, 1));
    read_ = p[0];
  }
  void reset() override {
    in_->reset();
    read_ = 0;
  }
  std::string describe() const override {
    return in_->describe() + " | split(" + (part_ == Part::train ? "train" : "eval") + ", " +
           detail::number_str(fraction_) + ", seed " + std::to_string(seed_) + ")";
  }

 private:
  std::shared_ptr<ExampleStream> in_;
  Part part_;
  double fraction_;
  std::int64_t seed_;
  core::Key key_;
  std::int64_t read_ = 0;
};

class ConcatChunk final : public ExampleStream {
 public:
  ConcatChunk(std::shared_ptr<ExampleStream> in, std::size_t length, bool add_eos)
      : in_(std::move(in)), len_(length), eos_(add_eos) {}
  std::optional<Example> next() override {
    Sequence out;
    out.reserve(len_);
    while (out.size() < len_) {
      if (!have_ || off_ >= cur_.size()) {
        if (!read_one()) break;
        continue;
      }
      const std::size_t take = std::min(len_ - out.size(), cur_.size() - off_);
      out.insert(out.end(), cur_.begin() + static_cast<std::ptrdiff_t>(off_),
                 cur_.begin() + static_cast<std::ptrdiff_t>(off_ + take));
      off_ += take;
    }
    if (out.empty()) return std::nullopt;
    Example ex;
    ex.fields.push_back(std::move(out));
    return ex;
  }
  std::vector<std::int64_t> position() const override {
    if (!have_ || off_ >= cur_.size()) return detail::join({0}, in_->position());
    return detail::join({static_cast<std::int64_t>(off_)}, start_);
  }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, false, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the offset must be >= 0");
    in_->seek(detail::tail(p, 1));
    have_ = false;
    cur_.clear();
    off_ = 0;
    if (p[0] > 0) {
      if (!read_one() || static_cast<std::size_t>(p[0]) > cur_.size()) {
        detail::bad_position(p, describe(), "the example there is shorter than the offset");
      }
      off_ = static_cast<std::size_t>(p[0]);
    }
  }
  void reset() override {
    in_->reset();
    have_ = false;
    cur_.clear();
    off_ = 0;
  }
  std::string describe() const override {
    return in_->describe() + " | concatenate_and_chunk(" + std::to_string(len_) + ")";
  }

 private:
  bool read_one() {
    auto pos = in_->position();
    auto ex = in_->next();
    if (!ex) {
      have_ = false;
      return false;
    }
    cur_ = ex->fields.empty() ? Sequence{} : std::move(ex->fields[0]);
    if (eos_) cur_.push_back(eos_id);
    start_ = std::move(pos);
    off_ = 0;
    have_ = true;
    return true;
  }

  std::shared_ptr<ExampleStream> in_;
  std::size_t len_;
  bool eos_;
  bool have_ = false;
  Sequence cur_;
  std::size_t off_ = 0;
  std::vector<std::int64_t> start_;
};

// Int32 arrays [n, length], one per field, padded with pad_id.
Batch make_batch(const std::vector<Example>& exs, std::size_t length, const std::string& where) {
  const std::size_t n = exs.size(), nf = exs[0].fields.size();
  Batch b;
  for (std::size_t f = 0; f < nf; ++f) {
    Tensor t = Tensor::zeros({n, length}, core::DType::i32, "batch");
    std::int32_t* p = t.data<std::int32_t>();
    for (std::size_t i = 0; i < n; ++i) {
      if (exs[i].fields.size() != nf) {
        throw ValueError(where + ": examples of one batch must have the same number of fields: " +
                         std::to_string(nf) + " and " + std::to_string(exs[i].fields.size()));
      }
      const Sequence& s = exs[i].fields[f];
      if (s.size() > length) {
        throw ValueError(where + ": an example of " + std::to_string(s.size()) +
                         " tokens is longer than the padded length " + std::to_string(length) +
                         "; truncate(" + std::to_string(length) + ") or filter_by_length first");
      }
      std::copy(s.begin(), s.end(), p + i * length);
    }
    b.arrays.push_back(std::move(t));
  }
  return b;
}

class Batching final : public BatchStream {
 public:
  Batching(std::shared_ptr<ExampleStream> in, std::size_t b, std::size_t pad_length,
           std::size_t multiple, bool drop)
      : in_(std::move(in)), b_(b), pad_(pad_length), mult_(multiple), drop_(drop) {}
  Batch next() override {
    std::vector<Example> exs;
    while (exs.size() < b_) {
      auto ex = in_->next();
      if (!ex) break;
      exs.push_back(std::move(*ex));
    }
    if (exs.empty() || (drop_ && exs.size() < b_)) {
      throw ValueError(describe() +
                       ": no more batches (the examples ran out); reset() to start again");
    }
    std::size_t len = pad_;
    if (len == 0) {
      for (const auto& e : exs) len = std::max(len, e.length());
      len = std::max<std::size_t>(1, (len + mult_ - 1) / mult_) * mult_;
    }
    return make_batch(exs, len, "batch");
  }
  std::vector<std::int64_t> position() const override { return in_->position(); }
  void seek(const std::vector<std::int64_t>& p) override { in_->seek(p); }
  void reset() override { in_->reset(); }
  std::string describe() const override {
    return in_->describe() + " | batch(" + std::to_string(b_) + ")";
  }

 private:
  std::shared_ptr<ExampleStream> in_;
  std::size_t b_, pad_, mult_;
  bool drop_;
};

class Bucketing final : public BatchStream {
 public:
  Bucketing(std::shared_ptr<ExampleStream> in, std::vector<std::size_t> bounds,
            std::vector<std::size_t> sizes, std::size_t block)
      : in_(std::move(in)), bounds_(std::move(bounds)), sizes_(std::move(sizes)), block_(block) {}
  Batch next() override {
    if (!loaded_ || bi_ >= batches_.size()) {
      fill();
      if (batches_.empty()) {
        loaded_ = false;
        throw ValueError(describe() +
                         ": no more batches (the examples ran out); reset() to start again");
      }
    }
    const auto& [bucket, exs] = batches_[bi_++];
    return make_batch(exs, bounds_[bucket], "bucket_by_length");
  }
  std::vector<std::int64_t> position() const override {
    if (!loaded_ || bi_ >= batches_.size()) return detail::join({0}, in_->position());
    return detail::join({static_cast<std::int64_t>(bi_)}, start_);
  }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, false, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the batch index must be >= 0");
    in_->seek(detail::tail(p, 1));
    loaded_ = false;
    batches_.clear();
    bi_ = 0;
    if (p[0] > 0) {
      fill();
      if (static_cast<std::size_t>(p[0]) > batches_.size()) {
        detail::bad_position(
            p, describe(), "the block makes only " + std::to_string(batches_.size()) + " batches");
      }
      bi_ = static_cast<std::size_t>(p[0]);
    }
  }
  void reset() override {
    in_->reset();
    loaded_ = false;
    batches_.clear();
    bi_ = 0;
  }
  std::string describe() const override {
    std::string s = in_->describe() + " | bucket_by_length([";
    for (std::size_t i = 0; i < bounds_.size(); ++i)
      s += (i ? ", " : "") + std::to_string(bounds_[i]);
    return s + "])";
  }

 private:
  void fill() {
    start_ = in_->position();
    batches_.clear();
    bi_ = 0;
    std::vector<std::vector<Example>> open(bounds_.size());
    for (std::size_t n = 0; n < block_; ++n) {
      auto ex = in_->next();
      if (!ex) break;
      const std::size_t len = ex->length();
      const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), len);
      if (it == bounds_.end()) {
        throw ValueError("bucket_by_length: an example of " + std::to_string(len) +
                         " tokens is longer than the last boundary " +
                         std::to_string(bounds_.back()) + " (from " + in_->describe() +
                         "); truncate or filter_by_length first");
      }
      const auto b = static_cast<std::size_t>(it - bounds_.begin());
      open[b].push_back(std::move(*ex));
      if (open[b].size() == sizes_[b]) {
        batches_.emplace_back(b, std::move(open[b]));
        open[b].clear();
      }
    }
    for (std::size_t b = 0; b < open.size(); ++b) {
      if (!open[b].empty()) batches_.emplace_back(b, std::move(open[b]));
    }
    loaded_ = true;
  }

  std::shared_ptr<ExampleStream> in_;
  std::vector<std::size_t> bounds_, sizes_;
  std::size_t block_;
  bool loaded_ = false;
  std::vector<std::int64_t> start_;
  std::vector<std::pair<std::size_t, std::vector<Example>>> batches_;
  std::size_t bi_ = 0;
};

class BatchMap final : public BatchStream {
 public:
  BatchMap(std::shared_ptr<BatchStream> in, std::string what, std::function<void(Batch&)> f)
      : in_(std::move(in)), what_(std::move(what)), f_(std::move(f)) {}
  Batch next() override {
    Batch b = in_->next();
    f_(b);
    return b;
  }
  std::vector<std::int64_t> position() const override { return in_->position(); }
  void seek(const std::vector<std::int64_t>& p) override { in_->seek(p); }
  void reset() override { in_->reset(); }
  std::string describe() const override { return in_->describe() + " | " + what_; }

 private:
  std::shared_ptr<BatchStream> in_;
  std::string what_;
  std::function<void(Batch&)> f_;
};

// 1 (as T) where an integer array is not pad_id, 0 elsewhere.
template <class T>
Tensor not_padding(const Tensor& a, core::DType dtype, const char* what) {
  if (a.dtype() != core::DType::i32 && a.dtype() != core::DType::i64) {
    throw core::DTypeError(
        std::string(what) + ": expected an int32 or int64 array of token ids, got " +
        std::string(core::dtype_name(a.dtype())) + " " + core::shape_str(a.shape()));
  }
  Tensor out = Tensor::empty(a.shape(), dtype, what);
  T* o = out.data<T>();
  core::dispatch_integer(a.dtype(), what, [&](auto zero) {
    using I = decltype(zero);
    const I* p = a.data<I>();
    for (std::size_t i = 0; i < a.size(); ++i) o[i] = p[i] != pad_id ? T(1) : T(0);
  });
  return out;
}

void check_not_empty(const Batch& b, const char* what) {
  if (b.size() == 0) throw ValueError(std::string(what) + ": the batch holds no arrays");
}

}  // namespace

// ============================================================================
// factories
// ============================================================================

ExampleTransform repeat() {
  return {[](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Repeat>(std::move(in));
  }};
}

ExampleTransform shuffle(std::size_t buffer_size, std::int64_t seed) {
  if (buffer_size == 0) throw ValueError("shuffle: buffer_size must be >= 1, got 0");
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Shuffle>(std::move(in), buffer_size, seed);
  }};
}

ExampleTransform filter_by_length(std::size_t min_length, std::size_t max_length) {
  if (min_length > max_length) {
    throw ValueError("filter_by_length: min_length " + std::to_string(min_length) +
                     " exceeds max_length " + std::to_string(max_length));
  }
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Filter>(std::move(in), min_length, max_length);
  }};
}

ExampleTransform truncate(std::size_t max_length) {
  if (max_length == 0) throw ValueError("truncate: max_length must be >= 1, got 0");
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Truncate>(std::move(in), max_length);
  }};
}

ExampleTransform pad(std::size_t length) {
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Pad>(std::move(in), length);
  }};
}

ExampleTransform split(Part part, double eval_fraction, std::int64_t seed) {
  if (!(eval_fraction > 0.0 && eval_fraction < 1.0)) {
    throw ValueError("split: eval_fraction must be in (0, 1), got " +
                     detail::number_str(eval_fraction));
  }
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<Split>(std::move(in), part, eval_fraction, seed);
  }};
}

ExampleTransform concatenate_and_chunk(std::size_t length, bool add_eos) {
  if (length == 0) throw ValueError("concatenate_and_chunk: length must be >= 1, got 0");
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<ExampleStream> {
    return std::make_shared<ConcatChunk>(std::move(in), length, add_eos);
  }};
}

Batcher batch(std::size_t batch_size, std::size_t pad_length, std::size_t pad_multiple,
              bool drop_remainder) {
  if (batch_size == 0) throw ValueError("batch: batch_size must be >= 1, got 0");
  if (pad_multiple == 0) throw ValueError("batch: pad_multiple must be >= 1, got 0");
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<BatchStream> {
    return std::make_shared<Batching>(std::move(in), batch_size, pad_length, pad_multiple,
                                      drop_remainder);
  }};
}

Batcher bucket_by_length(std::vector<std::size_t> boundaries, std::vector<std::size_t> batch_sizes,
                         std::size_t block_examples) {
  if (boundaries.empty()) throw ValueError("bucket_by_length: no boundaries given");
  if (boundaries.size() != batch_sizes.size()) {
    throw ValueError("bucket_by_length: " + std::to_string(boundaries.size()) + " boundaries but " +
                     std::to_string(batch_sizes.size()) + " batch sizes (one per bucket)");
  }
  for (std::size_t i = 0; i < boundaries.size(); ++i) {
    if (batch_sizes[i] == 0)
      throw ValueError("bucket_by_length: batch size " + std::to_string(i) + " is 0");
    if (boundaries[i] == 0 || (i > 0 && boundaries[i] <= boundaries[i - 1])) {
      throw ValueError("bucket_by_length: boundaries must be positive and increasing, got " +
                       detail::position_str({boundaries.begin(), boundaries.end()}));
    }
  }
  if (block_examples == 0) throw ValueError("bucket_by_length: block_examples must be >= 1, got 0");
  return {[=](std::shared_ptr<ExampleStream> in) -> std::shared_ptr<BatchStream> {
    return std::make_shared<Bucketing>(std::move(in), boundaries, batch_sizes, block_examples);
  }};
}

BatchTransform lm_targets() {
  return {[](std::shared_ptr<BatchStream> in) -> std::shared_ptr<BatchStream> {
    return std::make_shared<BatchMap>(std::move(in), "lm_targets", [](Batch& b) {
      check_not_empty(b, "lm_targets");
      b.arrays.push_back(b.arrays[0]);
    });
  }};
}

BatchTransform add_loss_weights() {
  return {[](std::shared_ptr<BatchStream> in) -> std::shared_ptr<BatchStream> {
    return std::make_shared<BatchMap>(std::move(in), "add_loss_weights", [](Batch& b) {
      check_not_empty(b, "add_loss_weights");
      b.arrays.push_back(not_padding<float>(b.arrays.back(), core::DType::f32, "add_loss_weights"));
    });
  }};
}

BatchTransform add_padding_mask() {
  return {[](std::shared_ptr<BatchStream> in) -> std::shared_ptr<BatchStream> {
    return std::make_shared<BatchMap>(std::move(in), "add_padding_mask", [](Batch& b) {
      check_not_empty(b, "add_padding_mask");
      b.arrays.insert(b.arrays.begin() + 1,
                      not_padding<std::int32_t>(b.arrays[0], core::DType::i32, "add_padding_mask"));
    });
  }};
}

}  // namespace minitrax::data
