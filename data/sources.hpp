/// @file
/// Where data comes from: files (a path, a folder or a glob), text read whole, in chunks or
/// line by line (plain or gzip-compressed), .npy/.npz arrays, and the step-indexed
/// synthetic tasks. Also the stream of examples (ExampleStream) that the transforms of
/// data/transforms.hpp work on before examples become batches.
///
/// Plain files are memory-mapped, never copied whole; gzip files (any name: the two
/// magic bytes 1f 8b decide, so dictd's .dz files work) are decompressed as a stream.
/// Every file error is a core::FileError naming the file.
///
/// @code
/// // the lines of every .txt file of a folder, as token ids, read lazily
/// auto tok = std::make_shared<MyTokenizer>();
/// std::shared_ptr<data::ExampleStream> lines = data::text_lines({"corpus/*.txt"}, tok);
/// while (auto ex = lines->next()) use(ex->fields[0]);
///
/// // arrays: rows of x.npy and y.npy in batches of 32, reshuffled every epoch, endless
/// auto arrays = data::array_batches({core::load_npy("x.npy"), core::load_npy("y.npy")}, 32,
///                                   /*shuffle_seed=*/0, /*repeat=*/true);
/// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.hpp"
#include "data/stream.hpp"
#include "data/tokenizer.hpp"

namespace minitrax::data {

// -- files ------------------------------------------------------------------------

/// The files a path names, in a deterministic order: a regular file is itself; a folder
/// gives its regular files (not recursive; names starting with '.' skipped), sorted
/// bytewise by name; a pattern with `*`, `?` or `[` is a glob(3) whose regular-file
/// matches are sorted bytewise. core::FileError for a missing path ("<p>: cannot open:
/// No such file or directory"), a glob that matches nothing ("glob '<p>' matches no
/// file") or a folder without files ("folder '<p>' holds no regular file").
/// @code
/// auto files = data::list_files("books/*.txt.gz");   // ["books/a.txt.gz", "books/b.txt.gz"]
/// @endcode
std::vector<std::string> list_files(const std::string& path_folder_or_glob);
/// list_files of each entry, concatenated in the order given.
std::vector<std::string> list_files(const std::vector<std::string>& paths_folders_or_globs);

/// True if the file starts with gzip's magic bytes 1f 8b. core::FileError if it cannot
/// be opened.
bool is_gzip_file(const std::string& path);

/// A read-only memory map of a whole file (an empty file maps to an empty view).
/// The pages are read by the kernel on demand, so a large file costs no copy.
class MappedFile {
 public:
  /// Maps `path`; core::FileError "<path>: cannot open: <reason>" on failure.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  /// The file's bytes.
  std::string_view bytes() const { return {data_, size_}; }
  /// The path it was opened with.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Calls `f` on the text of a file (plain or gzip) in order, in pieces of about
/// `chunk_bytes` that end just after a '\n' (a line longer than `chunk_bytes` is cut at
/// the end of a UTF-8 character instead; the last piece may lack the '\n'). The pieces
/// concatenated are the file's text exactly. Plain files are mapped, gzip files inflated
/// `chunk_bytes` at a time, so memory stays O(chunk_bytes). core::FileError for an
/// unreadable file or corrupt / truncated gzip data, naming the file.
void for_each_text_chunk(const std::string& path, const std::function<void(std::string_view)>& f,
                         std::size_t chunk_bytes = std::size_t{1} << 20);

/// The whole text of a file (plain or gzip) in memory. Errors as for_each_text_chunk.
std::string read_text(const std::string& path);

/// Reads a text file (plain or gzip) line by line: lines without their '\n'.
/// @code
/// data::LineReader r("words.txt.gz");
/// std::string line;
/// while (r.next(line)) std::cout << r.lines_read() << ": " << line << "\n";
/// @endcode
class LineReader {
 public:
  /// Opens `path`; core::FileError if it cannot be read.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  /// The next line into `line` (without '\n'); false at the end of the file. A final
  /// line without '\n' counts; an empty file has no lines.
  bool next(std::string& line);
  /// How many lines next() has returned.
  std::int64_t lines_read() const { return lines_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t lines_ = 0;
};

// -- examples: what the transforms of data/transforms.hpp work on --------------------

/// A sequence of token ids.
using Sequence = std::vector<std::int32_t>;

/// One example: one or more token sequences (e.g. a line of text; or inputs and targets).
struct Example {
  std::vector<Sequence> fields;  ///< the sequences, as many as the source gives
  /// The longest field's length (what filter_by_length, truncate and buckets look at).
  std::size_t length() const;
};

/// A deterministic, resumable stream of examples: the same contract as BatchStream
/// (position() / seek() / reset() / describe()), but next() gives one example, and an
/// empty optional at the end of a finite stream.
class ExampleStream {
 public:
  virtual ~ExampleStream() = default;
  /// The next example, or std::nullopt at the end.
  virtual std::optional<Example> next() = 0;
  /// Where the stream is (a few int64 values).
  virtual std::vector<std::int64_t> position() const = 0;
  /// Goes back to a position position() returned; core::ValueError if it cannot belong
  /// to this stream.
  virtual void seek(const std::vector<std::int64_t>& position) = 0;
  /// Back to the beginning.
  virtual void reset() = 0;
  /// A one-line description for messages and logs.
  virtual std::string describe() const = 0;
};

/// The lines of the files that `paths` name (see list_files; plain or gzip), in order,
/// each encoded by `tokenizer` as a one-field Example (+ eos_id if `add_eos`). Empty
/// lines are skipped when `skip_empty`. Finite: one pass; compose with repeat() for
/// more. Position: {file index, lines read in that file}; seek reopens that file and
/// skips lines (a scan of a mapped plain file, or inflating a gzip file up to there).
/// @code
/// auto ex = data::text_lines({"a.txt", "b.txt.gz"}, tok, /*add_eos=*/true);
/// @endcode
std::shared_ptr<ExampleStream> text_lines(const std::vector<std::string>& paths,
                                          std::shared_ptr<const Tokenizer> tokenizer,
                                          bool add_eos = false, bool skip_empty = true);

/// A finite stream of examples held in memory (small data sets and tests).
/// Position: {index of the next example}.
std::shared_ptr<ExampleStream> from_examples(std::vector<Example> examples,
                                             std::string description = "examples in memory");

// -- batches straight from a source ----------------------------------------------

/// Any step-indexed stream (batch k = f(k), e.g. the copy task of training/data.hpp)
/// as an endless BatchStream. Position: {step}.
/// @code
/// auto copy = data::from_step_function([key](long step) {
///   return make_copy_batch(core::fold_in(key, step));
/// }, "copy task, length 64");
/// @endcode
std::shared_ptr<BatchStream> from_step_function(std::function<Batch(long step)> f,
                                                std::string description);

/// The arrays of a .npy file (one array) or an .npz archive (its members in archive
/// order, or the members `names` in that order: core::ValueError naming a missing one
/// and the ones there are). core::FileError for unreadable files (core/npy.hpp).
std::vector<core::Tensor> load_arrays(const std::string& path,
                                      const std::vector<std::string>& names = {});

/// Batches of rows of arrays that share their first extent N: batch k holds rows
/// [k B, (k+1) B) of each array (of any dtype and rank), in order. With a shuffle seed,
/// each epoch visits the rows in its own permutation (drawn from fold_in(key, epoch),
/// so any batch is found without replay). With `repeat` the stream is endless
/// (epochs follow each other, a last partial batch is skipped); without it, it ends
/// after one epoch, whose last batch may be smaller. Position: {batch index}.
/// core::ShapeError if the first extents differ; core::ValueError for batch_size 0,
/// no arrays, or N == 0.
std::shared_ptr<BatchStream> array_batches(std::vector<core::Tensor> arrays, std::size_t batch_size,
                                           std::optional<std::int64_t> shuffle_seed = {},
                                           bool repeat = false);

}  // namespace minitrax::data
