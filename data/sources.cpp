// minitrax/data/sources.cpp: files, text (mapped or inflated), lines, arrays, step functions.
#include "data/sources.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <system_error>
#include <utility>

#include "core/error.hpp"
#include "core/npy.hpp"
#include "core/rng.hpp"
#include "data/data_internal.hpp"

namespace minitrax::data {

namespace {

using core::FileError;
using core::ValueError;

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw FileError(path + ": " + msg);
}

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

bool has_glob_chars(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Opens a file for reading: FileError for a missing file or a folder.
int open_for_reading(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, "cannot read: " + errno_text(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, "cannot read: it is a folder");
  }
  return fd;
}

// A gzip stream (one or more members) inflated with zlib, counting the text it gives so
// that errors can say how far it got.
class GzipFile {
 public:
  explicit GzipFile(const std::string& path) : path_(path), fd_(open_for_reading(path)) {
    if (::inflateInit2(&zs_, 15 + 16) != Z_OK) fail(path, "cannot inflate: out of memory");
  }
  ~GzipFile() { ::inflateEnd(&zs_); }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;

  // Up to n bytes of text into out; 0 at the end. FileError for corrupt or truncated data.
  std::size_t read(char* out, std::size_t n) {
    if (done_ || n == 0) return 0;
    zs_.next_out = reinterpret_cast<Bytef*>(out);
    zs_.avail_out = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    const uInt asked = zs_.avail_out;
    while (zs_.avail_out > 0) {
      if (zs_.avail_in < 2 && !in_eof_) refill();
      const int rc = ::inflate(&zs_, Z_NO_FLUSH);
      const std::size_t got = total_ + (asked - zs_.avail_out);
      if (rc == Z_STREAM_END) {
        // Another member may follow (as `cat a.gz b.gz` makes); anything else is ignored.
        if (zs_.avail_in < 2 && !in_eof_) refill();
        if (zs_.avail_in >= 2 && zs_.next_in[0] == 0x1f && zs_.next_in[1] == 0x8b) {
          ::inflateReset(&zs_);
          continue;
        }
        done_ = true;
        break;
      }
      if (rc == Z_BUF_ERROR && zs_.avail_in == 0 && in_eof_) {
        fail(path_, "truncated gzip data: the compressed stream ends after " + std::to_string(got) +
                        " bytes of text (unexpected end of file)");
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
        fail(path_, "corrupt gzip data after " + std::to_string(got) + " bytes of text (" +
                        (zs_.msg != nullptr ? zs_.msg : "needs a preset dictionary") + ")");
      }
      if (rc == Z_MEM_ERROR) fail(path_, "cannot inflate: out of memory");
    }
    const std::size_t produced = asked - zs_.avail_out;
    total_ += produced;
    return produced;
  }

 private:
  // Moves the unread input to the front of the buffer and reads more after it.
  void refill() {
    const std::size_t keep = zs_.avail_in;
    if (keep > 0) std::memmove(in_.data(), zs_.next_in, keep);
    std::size_t have = keep;
    while (have < in_.size()) {
      const ssize_t got = ::read(fd_.fd, in_.data() + have, in_.size() - have);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail(path_, "cannot read: " + errno_text(errno));
      if (got == 0) {
        in_eof_ = true;
        break;
      }
      have += static_cast<std::size_t>(got);
    }
    zs_.next_in = in_.data();
    zs_.avail_in = static_cast<uInt>(have);
  }

  std::string path_;
  Fd fd_;
  z_stream zs_{};
  std::vector<unsigned char> in_ = std::vector<unsigned char>(std::size_t{1} << 18);
  bool in_eof_ = false, done_ = false;
  std::size_t total_ = 0;
};

// Where to cut `s` (more text may follow) so that the piece is at most `limit` bytes and
// ends after a '\n', or, for a longer line, at the end of a UTF-8 character.
std::size_t cut_point(std::string_view s, std::size_t limit) {
  const std::size_t n = std::min(s.size(), limit);
  const std::size_t nl = s.substr(0, n).rfind('\n');
  if (nl != std::string_view::npos) return nl + 1;
  std::size_t cut = n;
  for (int back = 0; back < 3 && cut > 1; ++back) {
    if ((static_cast<unsigned char>(s[cut]) & 0xC0) != 0x80) break;  // s[cut] starts a char
    --cut;
  }
  return (static_cast<unsigned char>(s[cut]) & 0xC0) != 0x80 ? cut : n;
}

}  // namespace

// ============================================================================
// files
// ============================================================================

std::vector<std::string> list_files(const std::string& spec) {
  std::vector<std::string> out;
  if (has_glob_chars(spec)) {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), GLOB_ERR, nullptr, &g);
    if (rc == 0) {
      for (std::size_t i = 0; i < g.gl_pathc; ++i) {
        struct stat st {};
        if (::stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode)) out.emplace_back(g.gl_pathv[i]);
      }
    }
    ::globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH) {
      throw FileError("glob '" + spec + "': cannot read a folder on the way (" +
                      (rc == GLOB_ABORTED ? "read error" : "out of memory") + ")");
    }
    if (out.empty()) throw FileError("glob '" + spec + "' matches no file");
    std::sort(out.begin(), out.end());
    return out;
  }
  struct stat st {};
  if (::stat(spec.c_str(), &st) != 0) fail(spec, "cannot open: " + errno_text(errno));
  if (!S_ISDIR(st.st_mode)) return {spec};
  DIR* dir = ::opendir(spec.c_str());
  if (dir == nullptr) fail(spec, "cannot open: " + errno_text(errno));
  const std::string prefix = spec.back() == '/' ? spec : spec + "/";
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string p = prefix + e->d_name;
    struct stat fst {};
    if (::stat(p.c_str(), &fst) == 0 && S_ISREG(fst.st_mode)) out.push_back(p);
  }
  ::closedir(dir);
  if (out.empty()) throw FileError("folder '" + spec + "' holds no regular file");
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> list_files(const std::vector<std::string>& specs) {
  if (specs.empty()) throw ValueError("list_files: no path given");
  std::vector<std::string> out;
  for (const auto& s : specs) {
    auto files = list_files(s);
    out.insert(out.end(), files.begin(), files.end());
  }
  return out;
}

bool is_gzip_file(const std::string& path) {
  Fd fd(open_for_reading(path));
  unsigned char magic[2] = {0, 0};
  std::size_t have = 0;
  while (have < 2) {
    const ssize_t got = ::read(fd.fd, magic + have, 2 - have);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path, "cannot read: " + errno_text(errno));
    if (got == 0) break;
    have += static_cast<std::size_t>(got);
  }
  return have == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  Fd fd(open_for_reading(path));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(path, "cannot read: " + errno_text(errno));
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (p == MAP_FAILED) fail(path, "cannot map into memory: " + errno_text(errno));
  data_ = static_cast<const char*>(p);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
}

void for_each_text_chunk(const std::string& path, const std::function<void(std::string_view)>& f,
                         std::size_t chunk_bytes) {
  if (chunk_bytes < 4) throw ValueError("for_each_text_chunk: chunk_bytes must be >= 4");
  if (!is_gzip_file(path)) {
    MappedFile m(path);
    std::string_view s = m.bytes();
    while (s.size() > chunk_bytes) {
      const std::size_t cut = cut_point(s, chunk_bytes);
      f(s.substr(0, cut));
      s.remove_prefix(cut);
    }
    if (!s.empty()) f(s);
    return;
  }
  GzipFile gz(path);
  std::string buf(2 * chunk_bytes, '\0');
  std::size_t have = 0;
  for (;;) {
    const std::size_t got = gz.read(buf.data() + have, buf.size() - have);
    have += got;
    std::string_view s(buf.data(), have);
    while (s.size() > chunk_bytes) {
      const std::size_t cut = cut_point(s, chunk_bytes);
      f(s.substr(0, cut));
      s.remove_prefix(cut);
    }
    if (got == 0) {
      if (!s.empty()) f(s);
      return;
    }
    std::memmove(buf.data(), s.data(), s.size());
    have = s.size();
  }
}

std::string read_text(const std::string& path) {
  std::string out;
  for_each_text_chunk(path, [&](std::string_view s) { out.append(s); });
  return out;
}

// ============================================================================
// LineReader
// ============================================================================

struct LineReader::Impl {
  std::unique_ptr<MappedFile> mapped;  // plain files
  std::size_t pos = 0;
  std::unique_ptr<GzipFile> gz;  // gzip files
  std::string buf;
  std::size_t buf_pos = 0;
  bool eof = false;
};

LineReader::LineReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  if (is_gzip_file(path)) {
    impl_->gz = std::make_unique<GzipFile>(path);
  } else {
    impl_->mapped = std::make_unique<MappedFile>(path);
  }
}

LineReader::~LineReader() = default;

bool LineReader::next(std::string& line) {
  Impl& m = *impl_;
  if (m.mapped) {
    const std::string_view s = m.mapped->bytes();
    if (m.pos >= s.size()) return false;
    const std::size_t nl = s.find('\n', m.pos);
    const std::size_t end = nl == std::string_view::npos ? s.size() : nl;
    line.assign(s.data() + m.pos, end - m.pos);
    m.pos = nl == std::string_view::npos ? s.size() : nl + 1;
    ++lines_;
    return true;
  }
  for (;;) {
    const std::size_t nl = m.buf.find('\n', m.buf_pos);
    if (nl != std::string::npos) {
      line.assign(m.buf, m.buf_pos, nl - m.buf_pos);
      m.buf_pos = nl + 1;
      ++lines_;
      return true;
    }
    if (m.eof) {
      if (m.buf_pos >= m.buf.size()) return false;
      line.assign(m.buf, m.buf_pos);
      m.buf_pos = m.buf.size();
      ++lines_;
      return true;
    }
    m.buf.erase(0, m.buf_pos);
    m.buf_pos = 0;
    const std::size_t old = m.buf.size();
    m.buf.resize(old + (1 << 16));
    const std::size_t got = m.gz->read(m.buf.data() + old, 1 << 16);
    m.buf.resize(old + got);
    if (got == 0) m.eof = true;
  }
}

// ============================================================================
// examples
// ============================================================================

std::size_t Example::length() const {
  std::size_t n = 0;
  for (const auto& f : fields) n = std::max(n, f.size());
  return n;
}

namespace {

class TextLines final : public ExampleStream {
 public:
  TextLines(std::vector<std::string> files, std::shared_ptr<const Tokenizer> tok, bool add_eos,
            bool skip_empty)
      : files_(std::move(files)), tok_(std::move(tok)), add_eos_(add_eos), skip_empty_(skip_empty) {
    if (!tok_) throw ValueError("text_lines: the tokenizer is null");
  }

  std::optional<Example> next() override {
    std::string line;
    while (file_ < files_.size()) {
      if (!reader_) reader_ = std::make_unique<LineReader>(files_[file_]);
      if (!reader_->next(line)) {
        reader_.reset();
        ++file_;
        continue;
      }
      if (skip_empty_ && line.empty()) continue;
      Sequence ids = tok_->encode(line);
      if (add_eos_) ids.push_back(eos_id);
      Example ex;
      ex.fields.push_back(std::move(ids));
      return ex;
    }
    return std::nullopt;
  }

  std::vector<std::int64_t> position() const override {
    return {static_cast<std::int64_t>(file_), reader_ ? reader_->lines_read() : 0};
  }

  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 2, true, describe());
    if (p[0] < 0 || p[0] > static_cast<std::int64_t>(files_.size()) || p[1] < 0 ||
        (p[0] == static_cast<std::int64_t>(files_.size()) && p[1] != 0)) {
      detail::bad_position(p, describe(),
                           "the file index must be in [0, " + std::to_string(files_.size()) +
                               "] and the line count >= 0");
    }
    reader_.reset();
    file_ = static_cast<std::size_t>(p[0]);
    if (p[1] == 0) return;
    reader_ = std::make_unique<LineReader>(files_[file_]);
    std::string line;
    while (reader_->lines_read() < p[1]) {
      if (!reader_->next(line)) {
        detail::bad_position(
            p, describe(),
            files_[file_] + " has only " + std::to_string(reader_->lines_read()) + " lines");
      }
    }
  }

  void reset() override {
    reader_.reset();
    file_ = 0;
  }

  std::string describe() const override {
    std::string s = "lines of ";
    if (files_.size() == 1) return s + "'" + files_[0] + "'";
    return s + std::to_string(files_.size()) + " files ('" + files_.front() + "' .. '" +
           files_.back() + "')";
  }

 private:
  std::vector<std::string> files_;
  std::shared_ptr<const Tokenizer> tok_;
  bool add_eos_, skip_empty_;
  std::size_t file_ = 0;
  std::unique_ptr<LineReader> reader_;
};

class InMemoryExamples final : public ExampleStream {
 public:
  InMemoryExamples(std::vector<Example> ex, std::string desc)
      : ex_(std::move(ex)), desc_(std::move(desc)) {}
  std::optional<Example> next() override {
    if (i_ >= ex_.size()) return std::nullopt;
    return ex_[i_++];
  }
  std::vector<std::int64_t> position() const override { return {static_cast<std::int64_t>(i_)}; }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, true, describe());
    if (p[0] < 0 || p[0] > static_cast<std::int64_t>(ex_.size())) {
      detail::bad_position(p, describe(),
                           "the index must be in [0, " + std::to_string(ex_.size()) + "]");
    }
    i_ = static_cast<std::size_t>(p[0]);
  }
  void reset() override { i_ = 0; }
  std::string describe() const override { return desc_; }

 private:
  std::vector<Example> ex_;
  std::string desc_;
  std::size_t i_ = 0;
};

class StepFunctionStream final : public BatchStream {
 public:
  StepFunctionStream(std::function<Batch(long)> f, std::string desc)
      : f_(std::move(f)), desc_(std::move(desc)) {
    if (!f_) throw ValueError("from_step_function: the function is empty");
  }
  Batch next() override { return f_(static_cast<long>(step_++)); }
  std::vector<std::int64_t> position() const override { return {step_}; }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, true, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the step must be >= 0");
    step_ = p[0];
  }
  void reset() override { step_ = 0; }
  std::string describe() const override { return desc_; }

 private:
  std::function<Batch(long)> f_;
  std::string desc_;
  std::int64_t step_ = 0;
};

class ArrayBatches final : public BatchStream {
 public:
  ArrayBatches(std::vector<core::Tensor> arrays, std::size_t batch_size,
               std::optional<std::int64_t> seed, bool repeat)
      : arrays_(std::move(arrays)), batch_(batch_size), repeat_(repeat) {
    if (arrays_.empty()) throw ValueError("array_batches: no arrays given");
    if (batch_ == 0) throw ValueError("array_batches: batch_size must be >= 1");
    for (std::size_t i = 0; i < arrays_.size(); ++i) {
      if (!arrays_[i].defined() || arrays_[i].ndim() == 0) {
        throw core::ShapeError("array_batches: array " + std::to_string(i) +
                               " has no first axis to batch (a scalar or undefined tensor)");
      }
      if (arrays_[i].dim(0) != arrays_[0].dim(0)) {
        throw core::ShapeError(
            "array_batches: the arrays must share their first extent: array 0 is " +
            core::shape_str(arrays_[0].shape()) + ", array " + std::to_string(i) + " is " +
            core::shape_str(arrays_[i].shape()));
      }
    }
    rows_ = arrays_[0].dim(0);
    if (rows_ == 0) throw ValueError("array_batches: the arrays have no rows");
    if (repeat_ && rows_ < batch_) {
      throw ValueError("array_batches: " + std::to_string(rows_) +
                       " rows are fewer than one batch of " + std::to_string(batch_) +
                       " (repeat drops partial batches); use a batch_size of at most " +
                       std::to_string(rows_));
    }
    if (seed) key_ = core::key_from_seed(*seed);
    shuffle_ = seed.has_value();
  }

  Batch next() override {
    const std::size_t per_epoch = repeat_ ? rows_ / batch_ : (rows_ + batch_ - 1) / batch_;
    const std::size_t k = static_cast<std::size_t>(step_);
    if (!repeat_ && k >= per_epoch) {
      throw ValueError(describe() + ": no more batches after " + std::to_string(per_epoch) +
                       " (one pass over " + std::to_string(rows_) +
                       " rows; reset() to start again)");
    }
    const std::size_t epoch = k / per_epoch, j = k % per_epoch;
    const std::size_t first = j * batch_, n = std::min(batch_, rows_ - first);
    const std::vector<std::size_t>& order = permutation(epoch);
    Batch b;
    for (const auto& a : arrays_) {
      core::Shape shape = a.shape();
      shape[0] = n;
      core::Tensor out = core::Tensor::empty(shape, a.dtype(), "array_batches");
      const std::size_t row_bytes = a.nbytes() / rows_;
      const char* src = static_cast<const char*>(a.raw_data());
      char* dst = static_cast<char*>(out.raw_data());
      for (std::size_t r = 0; r < n; ++r) {
        const std::size_t row = shuffle_ ? order[first + r] : first + r;
        std::memcpy(dst + r * row_bytes, src + row * row_bytes, row_bytes);
      }
      b.arrays.push_back(out);
    }
    ++step_;
    return b;
  }
  std::vector<std::int64_t> position() const override { return {step_}; }
  void seek(const std::vector<std::int64_t>& p) override {
    detail::check_position_size(p, 1, true, describe());
    if (p[0] < 0) detail::bad_position(p, describe(), "the batch index must be >= 0");
    step_ = p[0];
  }
  void reset() override { step_ = 0; }
  std::string describe() const override {
    return "batches of " + std::to_string(batch_) + " rows of " + std::to_string(arrays_.size()) +
           " arrays [" + std::to_string(rows_) + ", ...]" + (shuffle_ ? ", shuffled" : "") +
           (repeat_ ? ", repeated" : "");
  }

 private:
  const std::vector<std::size_t>& permutation(std::size_t epoch) {
    if (!shuffle_ || epoch == perm_epoch_) return perm_;
    perm_.resize(rows_);
    for (std::size_t i = 0; i < rows_; ++i) perm_[i] = i;
    const auto bits =
        core::random_bits64(core::fold_in(key_, static_cast<std::uint32_t>(epoch)), rows_);
    for (std::size_t i = rows_; i > 1; --i) std::swap(perm_[i - 1], perm_[bits[i - 1] % i]);
    perm_epoch_ = epoch;
    return perm_;
  }

  std::vector<core::Tensor> arrays_;
  std::size_t batch_, rows_ = 0;
  bool repeat_, shuffle_ = false;
  core::Key key_{};
  std::int64_t step_ = 0;
  std::vector<std::size_t> perm_;
  std::size_t perm_epoch_ = static_cast<std::size_t>(-1);
};

}  // namespace

std::shared_ptr<ExampleStream> text_lines(const std::vector<std::string>& paths,
                                          std::shared_ptr<const Tokenizer> tokenizer, bool add_eos,
                                          bool skip_empty) {
  return std::make_shared<TextLines>(list_files(paths), std::move(tokenizer), add_eos, skip_empty);
}

std::shared_ptr<ExampleStream> from_examples(std::vector<Example> examples,
                                             std::string description) {
  return std::make_shared<InMemoryExamples>(std::move(examples), std::move(description));
}

std::shared_ptr<BatchStream> from_step_function(std::function<Batch(long)> f,
                                                std::string description) {
  return std::make_shared<StepFunctionStream>(std::move(f), std::move(description));
}

std::vector<core::Tensor> load_arrays(const std::string& path,
                                      const std::vector<std::string>& names) {
  const bool npz = path.size() >= 4 && path.compare(path.size() - 4, 4, ".npz") == 0;
  if (!npz) {
    if (!names.empty()) {
      throw ValueError("load_arrays: " + path +
                       " is a .npy file (one array): names cannot be chosen");
    }
    return {core::load_npy(path)};
  }
  const core::NpzEntries entries = core::load_npz(path);
  std::vector<core::Tensor> out;
  if (names.empty()) {
    for (const auto& [name, t] : entries) out.push_back(t);
    return out;
  }
  for (const auto& want : names) {
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const auto& e) { return e.first == want; });
    if (it == entries.end()) {
      std::string have;
      for (const auto& e : entries) have += (have.empty() ? "'" : ", '") + e.first + "'";
      throw ValueError("load_arrays: " + path + " has no array '" + want + "' (it holds " +
                       (have.empty() ? std::string("none") : have) + ")");
    }
    out.push_back(it->second);
  }
  return out;
}

std::shared_ptr<BatchStream> array_batches(std::vector<core::Tensor> arrays, std::size_t batch_size,
                                           std::optional<std::int64_t> shuffle_seed, bool repeat) {
  return std::make_shared<ArrayBatches>(std::move(arrays), batch_size, shuffle_seed, repeat);
}

}  // namespace minitrax::data
