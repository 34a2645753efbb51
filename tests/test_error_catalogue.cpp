// tests/test_error_catalogue.cpp: the catalogue of bad inputs (docs/errors.md). One
// TEST_CASE per entry, "E01 ..." to "Enn ...": each feeds minitrax one kind of bad input
// and checks the exception type, the message the user sees, and, for files, that
// nothing that was on disk before has changed.
//
// MINITRAX_PRINT_ERRORS=1 ./test_error_catalogue prints every observed message (with the
// temporary folder shown as <tmp>, a temporary file's suffix as .minitrax-tmp.<pid>.<n>): what
// docs/errors.md shows.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "duplication/config.hpp"
#include "layers/attention.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/research/efficient_attention.hpp"
#include "layers/research/position_encodings.hpp"
#include "layers/reversible.hpp"
#include "models/reformer.hpp"
#include "test_util.hpp"
#include "training/checkpoint.hpp"
#include "training/data.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace ea = minitrax::layers::research;
namespace fm = minitrax::fastmath;
namespace fs = std::filesystem;
using autodiff::Var;
using base::Stack;
using core::DType;
using core::Shape;
using core::Tensor;
using testutil::contains;

namespace {

// ---- observing an error ---------------------------------------------------------------

/// The root of this process's temporary folders (shown as <tmp> in printed messages).
fs::path temp_root() {
  static const fs::path root =
      fs::temp_directory_path() / ("minitrax_errcat_" + std::to_string(::getpid()));
  return root;
}

/// A fresh folder under temp_root(), removed at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) : path(temp_root() / tag) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
    fs::remove(temp_root(), ec);  // only if empty
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// What the catalogue prints: the temporary folder as <tmp>, an atomic write's
// temporary as .minitrax-tmp.<pid>.<n>.
std::string printable(const std::string& what) {
  std::string text = replace_all(what, temp_root().string(), "<tmp>");
  return std::regex_replace(
      text, std::regex("\\.minitrax-tmp\\." + std::to_string(::getpid()) + "\\.[0-9]+"),
      ".minitrax-tmp.<pid>.<n>");
}

using testutil::Observed;

template <class F>
Observed observe(const std::string& id, F&& f) {
  return testutil::observe(id, std::forward<F>(f), printable);
}

// ---- files ------------------------------------------------------------------------------

std::string read_bytes(const std::string& path) {
  return core::read_file(path);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The names in a folder, sorted.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

/// Lowers the file-size limit (as a full disk would stop writes) while it lives.
/// Writes past `bytes` fail with EFBIG; SIGXFSZ is ignored so they fail instead of
/// killing the process. Nothing may be printed while it lives (a log redirected to a
/// file would fail too), so it lives inside the function that observe() runs.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    std::cout.flush();
    std::cerr.flush();
    if (::getrlimit(RLIMIT_FSIZE, &saved_) != 0) throw std::runtime_error("getrlimit failed");
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    if (::setrlimit(RLIMIT_FSIZE, &lowered) != 0) {
      ::signal(SIGXFSZ, old_handler_);
      throw std::runtime_error("setrlimit(RLIMIT_FSIZE) failed");
    }
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  sighandler_t old_handler_ = SIG_DFL;
};

// ---- models and checkpoints ----------------------------------------------------------------

Tensor uniform(std::uint32_t seed, const Shape& shape) {
  return core::uniform(core::key_from_seed(seed), shape, DType::f32, -1.0, 1.0);
}

std::vector<Tensor> weight_values(const base::Layer& m) {
  std::vector<Tensor> out;
  for (const auto& w : m.flat_weights()) out.push_back(w.value.clone());
  return out;
}

bool same_weights(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!core::equal(a[i], b[i])) return false;
  }
  return true;
}

training::Checkpoint snapshot(const base::Layer& m, long step) {
  training::Checkpoint c;
  c.step = step;
  c.weights = m.flat_weights();
  c.state = m.flat_state();
  return c;
}

/// An MLP on [2, 5] inputs; `hidden` changes its shapes (a "different model").
base::LayerPtr mlp(long hidden) {
  auto m = tl::Serial({tl::Dense(hidden), tl::Relu(), tl::Dense(3)});
  m->init({{{2, 5}, DType::f32}}, core::key_from_seed(1));
  return m;
}

/// A language model for the copy task (vocab 8); `hidden` changes its shapes.
base::LayerPtr lm(long hidden) {
  return tl::Serial({tl::Embedding(8, hidden), tl::Dense(8), tl::LogSoftmax()});
}

training::Stream copy_stream() {
  return training::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
}

training::Loop make_loop(base::LayerPtr model, const std::string& dir, double lr, std::ostream* out,
                         long checkpoint_every = 0) {
  training::TrainTask task{copy_stream(), training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::SGD>(training::SGDOptions{lr}),
                           training::constant(lr)};
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 0;
  options.checkpoint_every = checkpoint_every;
  options.progress = training::Progress::none;
  options.out = out;
  return training::Loop(std::move(model), task, {}, options, core::key_from_seed(3));
}

bool finite_everywhere(const Tensor& t) {
  const Tensor f = t.astype(DType::f64);
  const double* p = f.data<double>();
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}

// ---- the main job's config ---------------------------------------------------------------

std::string config_error(const std::vector<std::string>& args) {
  (void)app::parse_command_line(args);
  return "";
}

}  // namespace

// =============================================================================================
// Shapes and arity, one layer kind at a time
// =============================================================================================

TEST_CASE("E01 Dense: input width differs from the width the weights were made for") {
  auto dense = tl::Dense(4);
  dense->init({{{2, 3}, DType::f32}});
  const Observed o = observe("E01", [&] { (*dense)(Var(uniform(1, {2, 5}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "expected an input [..., 3] (d_in of the weights w [3, 4]), got [2, 5]");
  CHECK(contains(o.what, "Dense (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E02 Embedding: float ids") {
  auto emb = tl::Embedding(10, 4);
  emb->init({{{2, 3}, DType::i32}});
  const Observed o = observe("E02", [&] { (*emb)(Var(uniform(2, {2, 3}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "expected int32 or int64 token ids, got float32");
  CHECK(contains(o.what, "Embedding (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E03 Embedding: an id outside the vocabulary") {
  auto emb = tl::Embedding(10, 4);
  emb->init({{{1, 3}, DType::i32}});
  const Observed o = observe("E03", [&] {
    (*emb)(Var(Tensor::from<std::int32_t>({1, 3}, {1, 12, 3})));
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(
      o.original ==
      "token id 12 (at flat position 1) is out of range for vocab_size 10: ids must be in [0, 10)");
  CHECK(contains(o.what, "Embedding (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E04 LayerNorm: feature size differs from its weights") {
  auto ln = tl::LayerNorm();
  ln->init({{{2, 4}, DType::f32}});
  const Observed o = observe("E04", [&] { (*ln)(Var(uniform(3, {2, 6}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "expected an input [..., 4] (the size of the weights scale and bias), got [2, 6]");
  CHECK(contains(o.what, "LayerNorm (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E05 Concatenate: shapes differ off the concatenation axis") {
  auto cat = tl::Concatenate(2, -1);
  const Observed o = observe("E05", [&] {
    (*cat)(Stack{Var(uniform(4, {2, 3, 4})), Var(uniform(5, {2, 5, 4}))});
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "concatenate: input 1 has shape [2, 5, 4], expected [2, 3, *] with rank 3 and matching "
        "extents except axis 2");
  CHECK(contains(o.what, "Concatenate (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E06 Add: two inputs that do not broadcast") {
  auto add = tl::Add();
  const Observed o = observe("E06", [&] {
    (*add)(Stack{Var(uniform(4, {2, 3})), Var(uniform(5, {2, 4}))});
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "add: cannot broadcast shapes [2, 3] and [2, 4]");
  CHECK(contains(o.what, "Add (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E07 Serial: fewer stack items than the layers need") {
  auto s = tl::Serial({tl::Dense(3), tl::Add()});
  const Observed o = observe("E07", [&] { (*s)(Var(uniform(6, {2, 3}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "expected 2 inputs, got 1");
  CHECK(contains(o.what, "Serial (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E08 Fn: the function returns fewer outputs than declared") {
  auto f = tl::Fn(
      "Halves", [](const Stack& xs) { return Stack{xs[0]}; }, 1, 2);
  const Observed o = observe("E08", [&] { (*f)(Stack{Var(uniform(7, {2, 2}))}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "forward returned 1 output, the layer promises n_out = 2");
  CHECK(contains(o.what, "Halves (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E09 Attention: d_feature not a multiple of n_heads") {
  const Observed o = observe("E09", [] { (void)tl::Attention(10, 3); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "Attention: d_feature (10) must be a multiple of n_heads (3)");
}

TEST_CASE("E10 CausalAttention: an input without a length axis") {
  auto attn = tl::CausalAttention(8, 2);
  const Observed o = observe("E10", [&] { attn->init({{{5, 8}, DType::f32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "CausalAttention: expected activations x [batch, length, width] of rank 3, got [5, 8]");
  CHECK(contains(o.what, "Serial (created at tests/test_error_catalogue.cpp:"));
  // GAP (reported): the frame names "Serial", not CausalAttention; see E63.
}

TEST_CASE("E11 CausalAttention: d_model differs from the weights") {
  auto attn = tl::CausalAttention(8, 2);
  attn->init({{{2, 4, 8}, DType::f32}});
  const Observed o = observe("E11", [&] { (*attn)(Var(uniform(8, {2, 4, 6}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "expected an input [..., 8] (d_in of the weights w [8, 8]), got [2, 4, 6]");
  CHECK(contains(o.what, "Dense (created at tests/test_error_catalogue.cpp:"));
  // GAP (reported): the frames are Serial/Parallel/Branch/Serial; none says CausalAttention.
}

// =============================================================================================
// Efficient attention: masks, LSH lengths, buckets, chunks
// =============================================================================================

TEST_CASE("E12 SelfAttention: a mask of the wrong shape") {
  auto sa = ea::SelfAttention({.n_heads = 1, .d_qk = 4, .d_v = 4, .masked = true});
  const Observed o = observe("E12", [&] {
    (*sa)(Stack{Var(uniform(9, {2, 8, 4})), Var(Tensor::ones({2, 9}, DType::i32))});
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "expected a mask of shape [batch, length] = [2, 8] (nonzero = valid), got [2, 9]");
  CHECK(contains(o.what, "SelfAttention (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E13 LSHSelfAttention: n_hashes * length not a multiple of chunk_len") {
  auto lsh = ea::LSHSelfAttention(
      {.n_heads = 1, .d_qk = 4, .d_v = 4, .chunk_len = 8, .n_hashes = 2, .n_buckets = {4}});
  const Observed o = observe("E13", [&] { lsh->init({{{1, 10, 4}, DType::f32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "sequence length 10 times n_hashes 2 (= 20) is not a multiple of chunk_len 8; pad to 12");
  CHECK(contains(o.what, "LSHSelfAttention (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E14 LSHSelfAttention: an odd n_buckets") {
  const Observed o =
      observe("E14", [] { (void)ea::LSHSelfAttention({.chunk_len = 8, .n_buckets = {5}}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what ==
        "LSHSelfAttention: n_buckets must be even and >= 2 (each factor of a factorised "
        "n_buckets too), got 5");
}

TEST_CASE("E15 LSHSelfAttention: n_buckets 0") {
  const Observed o =
      observe("E15", [] { (void)ea::LSHSelfAttention({.chunk_len = 8, .n_buckets = {0}}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what ==
        "LSHSelfAttention: n_buckets must be even and >= 2 (each factor of a factorised "
        "n_buckets too), got 0");
}

TEST_CASE("E16 SelfAttention: n_chunks_before without chunk_len") {
  const Observed o = observe("E16", [] { (void)ea::SelfAttention({.n_chunks_before = 1}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what ==
        "SelfAttention: n_chunks_before/n_chunks_after (1/0) need chunk_len; set chunk_len or "
        "use 0 and 0");
}

TEST_CASE("E17 SelfAttention: a length that is not a multiple of chunk_len") {
  auto sa = ea::SelfAttention({.n_heads = 1, .d_qk = 4, .d_v = 4, .chunk_len = 4});
  const Observed o = observe("E17", [&] { (*sa)(Var(uniform(10, {1, 10, 4}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "sequence length 10 is not a multiple of chunk_len 4; pad to 12");
  CHECK(contains(o.what, "SelfAttention (created at tests/test_error_catalogue.cpp:"));
}

TEST_CASE("E18 LSHSelfAttention: chunk_len 0") {
  const Observed o =
      observe("E18", [] { (void)ea::LSHSelfAttention({.chunk_len = 0, .n_buckets = {4}}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "LSHSelfAttention: chunk_len must be positive, got 0");
}

TEST_CASE("E19 SelfAttention predict mode: a batch other than the one the memory was made for") {
  auto pred = ea::SelfAttention({.n_heads = 2,
                                 .d_qk = 2,
                                 .d_v = 2,
                                 .causal = true,
                                 .chunk_len = 2,
                                 .n_chunks_before = 1,
                                 .mode = base::Mode::predict});
  pred->init({{{2, 1, 4}, DType::f32}});
  (*pred)(Var(uniform(11, {2, 1, 4})));
  const Observed o = observe("E19", [&] { (*pred)(Var(uniform(12, {3, 1, 4}))); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "SelfAttention: predict mode: this call has batch 3 but the memory was made for batch 2 "
        "(init the layer in predict mode with the batch it is called with)");
  CHECK(contains(o.what, "SelfAttention (created at tests/test_error_catalogue.cpp:"));
}

// =============================================================================================
// Reversible layers, ReformerLM, axial positions
// =============================================================================================

TEST_CASE("E20 ReversibleSerial: a layer that is not reversible") {
  const Observed o = observe("E20", [] {
    (void)tl::ReversibleSerial({tl::ReversibleSwap(), tl::Dense(3)});
  });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(contains(
      o.what, "ReversibleSerial: sublayer 1 (Dense, created at tests/test_error_catalogue.cpp:"));
  CHECK(contains(o.what,
                 ") is not reversible; allowed are ReversibleSwap, ReversibleHalfResidual, "
                 "ReversibleSerial and other ReversibleLayer subclasses"));
}

TEST_CASE("E21 ReversibleHalfResidual: the residual's shape differs from the accumulator's") {
  auto half = tl::ReversibleHalfResidual({tl::Dense(5)});
  const Observed o = observe("E21", [&] {
    half->init({{{2, 3}, DType::f32}, {{2, 3}, DType::f32}});
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "ReversibleHalfResidual: the residual has shape [2, 5] float32, the accumulator it is "
        "added to has [2, 3] float32");
  CHECK(contains(o.what, "ReversibleHalfResidual (created at tests/test_error_catalogue.cpp:"));
}

models::ReformerLMOptions small_reformer() {
  models::ReformerLMOptions o;
  o.vocab_size = 16;
  o.d_model = 8;
  o.d_ff = 16;
  o.d_attention_key = 4;
  o.d_attention_value = 4;
  o.n_layers = 2;
  o.n_heads = 2;
  o.dropout = 0.0;
  o.attention_type = {models::lsh_self_attention({.chunk_len = 4, .n_buckets = {4}})};
  return o;
}

TEST_CASE("E22 ReformerLM: n_layers not a multiple of the attention pattern") {
  models::ReformerLMOptions o = small_reformer();
  o.n_layers = 3;
  o.attention_type = {models::self_attention(), models::self_attention()};
  const Observed obs = observe("E22", [&] { (void)models::ReformerLM(o); });
  CHECK(obs.type == "minitrax::core::ValueError");
  CHECK(obs.what ==
        "ReformerLM: n_layers (3) must be a multiple of the number of attention types (2)");
}

TEST_CASE("E23 ReformerLM: axial embedding sizes that do not sum to d_model") {
  models::ReformerLMOptions o = small_reformer();
  o.axial_pos_shape = {4, 4};
  o.d_axial_pos_embs = {4, 2};
  const Observed obs = observe("E23", [&] { (void)models::ReformerLM(o); });
  CHECK(obs.type == "minitrax::core::ValueError");
  CHECK(obs.what == "ReformerLM: d_axial_pos_embs must sum to d_model (8), got sum([4, 2]) = 6");
}

TEST_CASE("E24 AxialPositionalEncoding: a sequence longer than the grid") {
  auto pe = ea::AxialPositionalEncoding({4, 4}, {4, 4});
  const Observed o = observe("E24", [&] { pe->init({{{1, 20, 8}, DType::f32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original ==
        "the sequence length 20 exceeds prod(shape) = 16 (shape [4, 4]), the number of positions "
        "encoded");
  CHECK(contains(o.what, "AxialPositionalEncoding (created at tests/test_error_catalogue.cpp:"));
}

// =============================================================================================
// The main job's configuration
// =============================================================================================

TEST_CASE("E25 config: an unknown JSON key") {
  app::DuplicationConfig c;
  const Observed o = observe("E25", [&] { app::apply_json(c, R"({"n_hash": 2})", "run.json"); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(contains(o.what, "run.json: unknown key \"n_hash\"; the keys are: length, vocab, "));
  CHECK(contains(o.what, ", n_hashes, "));
  CHECK(c.n_hashes == app::DuplicationConfig{}.n_hashes);
}

TEST_CASE("E26 config: a value out of range") {
  const Observed o = observe("E26", [] { config_error({"--n-hashes", "0"}); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(o.what == "n_hashes must be in [1, 64], got 0");
}

TEST_CASE("E27 config: a JSON value of the wrong type") {
  app::DuplicationConfig c;
  const Observed o =
      observe("E27", [&] { app::apply_json(c, R"({"n_hashes": "2"})", "run.json"); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(o.what == "run.json: \"n_hashes\" must be an integer, got string \"2\"");
}

TEST_CASE("E28 config: malformed JSON") {
  app::DuplicationConfig c;
  const Observed o = observe("E28", [&] { app::apply_json(c, R"({"n_hashes": 2,)", "run.json"); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(contains(o.what, "run.json: not valid JSON ("));
  CHECK(contains(o.what, "line 1, column 16"));
}

TEST_CASE("E29 config: an unknown flag") {
  const Observed o = observe("E29", [] { config_error({"--n-hash", "2"}); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(contains(o.what, "unknown flag '--n-hash'; the flags are: --config, --resume, "));
  CHECK(contains(o.what, " --n-hashes, "));
}

TEST_CASE("E30 config: chunk_len that does not divide the length") {
  const Observed o = observe("E30", [] { config_error({"--chunk-len", "12"}); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(o.what ==
        "chunk_len (12) must divide length (64): use length 72 or a chunk_len that "
        "divides 64");
}

TEST_CASE("E31 config: n_buckets odd") {
  const Observed o = observe("E31", [] { config_error({"--n-buckets", "7"}); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(o.what == "n_buckets must be even (LSH takes argmax over [xR, -xR]), got 7");
}

// =============================================================================================
// Checkpoints from a different model
// =============================================================================================

TEST_CASE("E32 restore_model: a checkpoint from a different model") {
  TempDir dir("e32");
  const std::string path = dir / "ckpt.npz";
  training::save_checkpoint(path, snapshot(*mlp(4), 7));
  const std::string bytes = read_bytes(path);
  auto other = mlp(6);
  const auto before = weight_values(*other);
  const Observed o = observe(
      "E32", [&] { training::restore_model(*other, training::load_checkpoint(path), path); });
  CHECK(o.type == "minitrax::training::CheckpointError");
  CHECK(o.what == path +
                      ": the checkpoint does not match (3 problems):\n"
                      "  weight 'Serial/Dense_0/w': the model has [5, 6] float32, the checkpoint "
                      "[5, 4] float32\n"
                      "  weight 'Serial/Dense_0/b': the model has [6] float32, the checkpoint [4] "
                      "float32\n"
                      "  weight 'Serial/Dense_2/w': the model has [6, 3] float32, the checkpoint "
                      "[4, 3] float32");
  CHECK(same_weights(weight_values(*other), before));
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E33 Loop::resume: a run folder from a different model") {
  TempDir dir("e33");
  std::ostringstream log;
  {
    auto first = make_loop(lm(16), dir.path.string(), 0.1, &log);
    first.run(2);
  }
  const auto files = listing(dir.path);
  const std::string ckpt = *training::latest_checkpoint(dir.path.string());
  const std::string bytes = read_bytes(ckpt);
  auto model = lm(12);
  model->init({{{4, 8}, DType::i32}}, core::key_from_seed(9));
  const auto before = weight_values(*model);
  auto second = make_loop(model, dir.path.string(), 0.1, &log);
  const Observed o = observe("E33", [&] { (void)second.resume(); });
  CHECK(o.type == "minitrax::training::CheckpointError");
  CHECK(o.what == ckpt +
                      ": the checkpoint does not match (2 problems):\n"
                      "  weight 'Serial/Embedding_0/embeddings': the model has [8, 12] float32, "
                      "the checkpoint [8, 16] float32\n"
                      "  weight 'Serial/Dense_1/w': the model has [12, 8] float32, the checkpoint "
                      "[16, 8] float32");
  CHECK(second.step() == 0);
  CHECK(same_weights(weight_values(*model), before));
  CHECK(listing(dir.path) == files);
  CHECK(read_bytes(ckpt) == bytes);
}

// =============================================================================================
// Truncated and corrupted files
// =============================================================================================

TEST_CASE("E34 load_npy: a truncated file") {
  TempDir dir("e34");
  const std::string path = dir / "x.npy";
  core::save_npy(path, uniform(13, {2, 3}));
  const std::string whole = read_bytes(path);
  write_bytes(path, whole.substr(0, whole.size() - 10));
  const std::string bytes = read_bytes(path);
  const Observed o = observe("E34", [&] { (void)core::load_npy(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": truncated: float32 shape (2, 3) needs 24 bytes of data, file has 14");
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E35 load_npy: a corrupted magic string") {
  TempDir dir("e35");
  const std::string path = dir / "x.npy";
  core::save_npy(path, uniform(14, {2, 3}));
  std::string bytes = read_bytes(path);
  bytes[1] = 'X';
  write_bytes(path, bytes);
  const Observed o = observe("E35", [&] { (void)core::load_npy(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": bad magic: not a .npy file");
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E36 load_npz: a truncated archive") {
  TempDir dir("e36");
  const std::string path = dir / "m.npz";
  core::save_npz(path, {{"w", uniform(15, {4, 4})}});
  const std::string whole = read_bytes(path);
  write_bytes(path, whole.substr(0, whole.size() / 2));
  const std::string bytes = read_bytes(path);
  const Observed o = observe("E36", [&] { (void)core::load_npz(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": truncated or corrupt: no zip end record");
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E37 load_npz: a flipped data byte (CRC mismatch)") {
  TempDir dir("e37");
  const std::string path = dir / "m.npz";
  core::save_npz(path, {{"w", uniform(16, {4, 4})}});
  std::string bytes = read_bytes(path);
  // the last byte of the member's data: the archive ends with the central directory
  // (1 entry) and the end records, so search the data for the tensor's last float.
  const Tensor w = uniform(16, {4, 4});
  const std::string last(reinterpret_cast<const char*>(w.data<float>()) + 15 * sizeof(float),
                         sizeof(float));
  const std::size_t at = bytes.find(last);
  REQUIRE(at != std::string::npos);
  bytes[at] = static_cast<char>(bytes[at] ^ 0x40);
  write_bytes(path, bytes);
  const Observed o = observe("E37", [&] { (void)core::load_npz(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(o.what, path + ": CRC mismatch in member 'w.npy' (the archive says 0x"));
  CHECK(contains(o.what, "): the file is corrupt"));
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E38 load_checkpoint: a truncated checkpoint") {
  TempDir dir("e38");
  const std::string path = dir / "ckpt.npz";
  training::save_checkpoint(path, snapshot(*mlp(4), 3));
  const std::string whole = read_bytes(path);
  write_bytes(path, whole.substr(0, whole.size() - 7));
  const std::string bytes = read_bytes(path);
  const Observed o = observe("E38", [&] { (void)training::load_checkpoint(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": truncated or corrupt: no zip end record");
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E39 load_checkpoint: a corrupted checkpoint (a byte of a weight flipped)") {
  TempDir dir("e39");
  const std::string path = dir / "ckpt.npz";
  auto m = mlp(4);
  training::save_checkpoint(path, snapshot(*m, 3));
  std::string bytes = read_bytes(path);
  const Tensor w = m->flat_weights()[0].value;
  const std::string first(reinterpret_cast<const char*>(w.data<float>()), sizeof(float));
  const std::size_t at = bytes.find(first);
  REQUIRE(at != std::string::npos);
  bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
  write_bytes(path, bytes);
  const Observed o = observe("E39", [&] { (void)training::load_checkpoint(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(o.what, path + ": CRC mismatch in member 'weights/Serial/Dense_0/w.npy' (the "
                                "archive says 0x"));
  CHECK(contains(o.what, "): the file is corrupt"));
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("E40 load_checkpoint: an .npz that is not a checkpoint") {
  TempDir dir("e40");
  const std::string path = dir / "w.npz";
  core::save_npz(path, {{"w", uniform(17, {2})}});
  const std::string bytes = read_bytes(path);
  const Observed o = observe("E40", [&] { (void)training::load_checkpoint(path); });
  CHECK(o.type == "minitrax::training::CheckpointError");
  CHECK(o.what == path +
                      ": unexpected member 'w' (a minitrax checkpoint holds step, weights/, "
                      "state/, slots/, keys/)");
  CHECK(read_bytes(path) == bytes);
}

// =============================================================================================
// Output folders
// =============================================================================================

TEST_CASE("E41 Loop: an output folder that cannot be created (its parent is a file)") {
  TempDir dir("e41");
  const std::string file = dir / "notes.txt";
  write_bytes(file, "not a folder\n");
  std::ostringstream log;
  const Observed o =
      observe("E41", [&] { (void)make_loop(lm(8), (fs::path(file) / "run").string(), 0.1, &log); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == "Loop: cannot create the output folder '" + file + "/run': Not a directory");
  CHECK(read_bytes(file) == "not a folder\n");
  CHECK(listing(dir.path) == std::vector<std::string>{"notes.txt"});
}

TEST_CASE("E42 save_checkpoint: a folder that does not exist") {
  TempDir dir("e42");
  const std::string path = (dir.path / "missing" / "ckpt.npz").string();
  const Observed o = observe("E42", [&] { training::save_checkpoint(path, snapshot(*mlp(4), 1)); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": cannot write: the folder '" + (dir.path / "missing").string() +
                      "' does not exist");
  CHECK(listing(dir.path).empty());
}

TEST_CASE("E43 save_npy: a folder whose parent is a regular file") {
  TempDir dir("e43");
  const std::string file = dir / "notes.txt";
  write_bytes(file, "x");
  const Observed o = observe(
      "E43", [&] { core::save_npy((fs::path(file) / "x.npy").string(), uniform(18, {2})); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(
      o.what, file + "/x.npy: cannot create the temporary file '" + file + "/x.npy.minitrax-tmp."));
  CHECK(contains(o.what, "': Not a directory"));
  CHECK(read_bytes(file) == "x");
  CHECK(listing(dir.path) == std::vector<std::string>{"notes.txt"});
}

TEST_CASE("E44 Loop: the output folder was removed during the run") {
  TempDir dir("e44");
  const std::string run = dir / "run";
  std::ostringstream log;
  auto loop = make_loop(lm(8), run, 0.1, &log);
  loop.run(1);
  fs::remove_all(run);
  const Observed o = observe("E44", [&] { loop.save_checkpoint(); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == training::checkpoint_path(run, 1) + ": cannot write: the folder '" + run +
                      "' does not exist");
  CHECK(!fs::exists(run));
}

// =============================================================================================
// A full disk (RLIMIT_FSIZE)
// =============================================================================================

TEST_CASE("E45 write_file_atomic: the disk fills up; the old file stays") {
  TempDir dir("e45");
  const std::string path = dir / "data.bin";
  const std::string old_bytes(1000, 'a');
  core::write_file_atomic(path, old_bytes);
  const std::string new_bytes(100000, 'b');
  const Observed o = observe("E45", [&] {
    FileSizeLimit limit(4096);
    core::write_file_atomic(path, new_bytes);
  });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(o.what, path + ": cannot write '" + path + ".minitrax-tmp."));
  CHECK(contains(o.what, "': File too large"));
  CHECK(read_bytes(path) == old_bytes);
  CHECK(listing(dir.path) == std::vector<std::string>{"data.bin"});
}

TEST_CASE("E46 save_checkpoint: the disk fills up; the previous checkpoint stays") {
  TempDir dir("e46");
  const std::string path = dir / "ckpt.npz";
  training::save_checkpoint(path, snapshot(*mlp(4), 1));
  const std::string old_bytes = read_bytes(path);
  auto bigger = mlp(64);
  const Observed o = observe("E46", [&] {
    FileSizeLimit limit(old_bytes.size());
    training::save_checkpoint(path, snapshot(*bigger, 2));
  });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(o.what, path + ": cannot write '" + path + ".minitrax-tmp."));
  CHECK(contains(o.what, "': File too large"));
  CHECK(read_bytes(path) == old_bytes);
  CHECK(listing(dir.path) == std::vector<std::string>{"ckpt.npz"});
}

TEST_CASE("E47 Loop::run: the disk fills up at a checkpoint; earlier checkpoints stay") {
  TempDir dir("e47");
  std::ostringstream log;
  auto loop = make_loop(lm(16), dir.path.string(), 0.1, &log, 1);
  loop.run(2);
  const auto files = listing(dir.path);
  std::vector<std::string> bytes;
  for (const auto& f : files) bytes.push_back(read_bytes((dir.path / f).string()));
  const Observed o = observe("E47", [&] {
    FileSizeLimit limit(1024);  // room for a metrics line, not for a checkpoint
    loop.run(3);
  });
  CHECK(o.type == "minitrax::core::FileError");
  const std::string ckpt3 = training::checkpoint_path(dir.path.string(), 3);
  CHECK(contains(o.what, ckpt3 + ": cannot write '" + ckpt3 + ".minitrax-tmp."));
  CHECK(contains(o.what, "': File too large"));
  REQUIRE(listing(dir.path) == files);
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i] == "metrics.jsonl") continue;  // an append-only log
    CHECK(read_bytes((dir.path / files[i]).string()) == bytes[i]);
  }
}

// =============================================================================================
// A NaN loss
// =============================================================================================

TEST_CASE("E48 Loop: a model whose output is the log of a negative number (NaN loss)") {
  TempDir dir("e48");
  auto model = tl::Serial({tl::Embedding(8, 8), tl::Dense(8), tl::LogSoftmax(),
                           tl::Fn("LogOfLogProbs", [](const Var& x) { return fm::log(x); })});
  model->init({{{4, 8}, DType::i32}}, core::key_from_seed(4));
  const auto before = weight_values(*model);
  std::ostringstream log;
  auto loop = make_loop(model, dir.path.string(), 0.1, &log, 1);
  const auto files = listing(dir.path);
  const Observed o = observe("E48", [&] { loop.run(3); });
  CHECK(o.type == "minitrax::autodiff::NonFiniteError");
  // The loop replays the step with debug_nans on and names the first non-finite op.
  CHECK(contains(o.what,
                 "training stopped: the loss is NaN at step 1; nothing was updated or "
                 "saved. The first non-finite value: LogOfLogProbs (created at"));
  CHECK(contains(o.what,
                 "non-finite value (NaN or Inf) in output 0 of op 'log' in "
                 "Serial/LogOfLogProbs; inputs: [4, 8, 8] float32"));
  CHECK(loop.step() == 0);
  CHECK(same_weights(weight_values(*model), before));
  CHECK(listing(dir.path) == files);
}

TEST_CASE("E49 Loop: a learning rate that blows the weights up; no checkpoint of garbage") {
  TempDir dir("e49");
  std::ostringstream log;
  auto loop = make_loop(lm(8), dir.path.string(), 1e38, &log, 1);
  const Observed o = observe("E49", [&] { loop.run(20); });
  CHECK(o.type == "minitrax::autodiff::NonFiniteError");
  CHECK(contains(o.what,
                 "training stopped: the loss is NaN at step 2; nothing was updated or "
                 "saved. The first non-finite value: Dense (created at"));
  CHECK(contains(o.what, "of op 'matmul' in Serial/Dense"));
  CHECK(loop.step() == 1);
  // the checkpoint of step 1 (finite weights) is there; none of the failed step 2
  const auto ckpts = training::list_checkpoints(dir.path.string());
  REQUIRE(ckpts.size() == 1);
  CHECK(ckpts[0].first == 1);
  for (const auto& [step, path] : training::list_checkpoints(dir.path.string())) {
    CAPTURE(path);
    const training::Checkpoint c = training::load_checkpoint(path);
    for (const auto& w : c.weights) {
      CAPTURE(w.name);
      CHECK(finite_everywhere(w.value));
    }
  }
}

// =============================================================================================
// More options that cannot work, misuse of the API
// =============================================================================================

TEST_CASE("E50 LSHSelfAttention: n_hashes 0") {
  const Observed o = observe(
      "E50", [] { (void)ea::LSHSelfAttention({.chunk_len = 8, .n_hashes = 0, .n_buckets = {4}}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "LSHSelfAttention: n_hashes must be positive, got 0");
}

TEST_CASE("E51 SelfAttention: a negative n_chunks_before") {
  const Observed o =
      observe("E51", [] { (void)ea::SelfAttention({.chunk_len = 4, .n_chunks_before = -1}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "SelfAttention: n_chunks_before and n_chunks_after must be >= 0, got -1 and 0");
}

TEST_CASE("E52 ReformerLM: a negative ff_chunk_size") {
  models::ReformerLMOptions o = small_reformer();
  o.ff_chunk_size = -5;
  const Observed obs = observe("E52", [&] { (void)models::ReformerLM(o); });
  CHECK(obs.type == "minitrax::core::ValueError");
  CHECK(obs.what == "ReformerLM: ff_chunk_size must be >= 0 (0: no chunking), got -5");
}

TEST_CASE("E53 ReformerLM: a length LSH cannot chunk (with the length to pad to)") {
  auto model = models::ReformerLM(small_reformer());
  const Observed o = observe("E53", [&] { model->init({{{1, 6}, DType::i32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "sequence length 6 is not a multiple of chunk_len 4; pad to 8");
  CHECK(contains(o.what, "LSHSelfAttention (created at tests/test_error_catalogue.cpp:"));
  CHECK(contains(o.what, "\n  in ReversibleSerial (created at"));
  CHECK(contains(o.what, "\n  in ReformerLM (created at"));
}

TEST_CASE("E54 Loop::run: a target step behind the loop") {
  std::ostringstream log;
  auto loop = make_loop(lm(8), "", 0.1, &log);
  loop.run(2);
  const auto before = weight_values(*loop.model());
  const Observed o = observe("E54", [&] { loop.run(1); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "Loop::run: asked to run until step 1 but the loop is already at step 2");
  CHECK(loop.step() == 2);
  CHECK(same_weights(weight_values(*loop.model()), before));
}

TEST_CASE("E55 load_npy: a file that does not exist") {
  TempDir dir("e55");
  const std::string path = dir / "x.npy";
  const Observed o = observe("E55", [&] { (void)core::load_npy(path); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == path + ": cannot open: No such file or directory");
  CHECK(listing(dir.path).empty());
}

TEST_CASE("E56 set_flat_weights: a weight of the wrong shape") {
  auto dense = tl::Dense(3);
  dense->init({{{2, 4}, DType::f32}});
  const auto before = weight_values(*dense);
  const Observed o = observe("E56", [&] {
    dense->set_flat_weights(std::vector<Tensor>{Tensor::zeros({5, 3}), Tensor::zeros({3})});
  });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what == "Dense: weight 'w' has shape [4, 3], set_weights got [5, 3]");
  CHECK(same_weights(weight_values(*dense), before));
}

TEST_CASE("E57 Embedding: called before init") {
  const std::string made_at = "tests/test_error_catalogue.cpp:" + std::to_string(__LINE__ + 1);
  auto emb = tl::Embedding(10, 4);
  const Observed o = observe("E57", [&] {
    (*emb)(Var(Tensor::from<std::int32_t>({1, 2}, {1, 2})));
  });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.original == "Embedding (created at " + made_at +
                          ") was called before init(): call init with the input signature "
                          "first (or set its weights)");
  CHECK(contains(o.what, "Embedding (created at " + made_at + ")"));
}

TEST_CASE("E58 save_checkpoint: a folder stands where the file should go") {
  TempDir dir("e58");
  const std::string path = dir / "ckpt.npz";
  fs::create_directories(path);
  const Observed o = observe("E58", [&] { training::save_checkpoint(path, snapshot(*mlp(4), 1)); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(contains(o.what, path + ": cannot rename '" + path + ".minitrax-tmp."));
  CHECK(contains(o.what, "' to it: Is a directory"));
  CHECK(listing(dir.path) == std::vector<std::string>{"ckpt.npz"});
  CHECK(fs::is_directory(path));
  CHECK(fs::is_empty(path));
}

TEST_CASE("E59 config: n_chunks_before out of range") {
  const Observed o = observe("E59", [] { config_error({"--n-chunks-before", "-1"}); });
  CHECK(o.type == "minitrax::app::ConfigError");
  CHECK(o.what == "n_chunks_before must be in [0, 8], got -1");
}

// =============================================================================================
// Former gaps, fixed: a NaN loss is a NonFiniteError, ReformerLM checks its axial sizes,
// a failed metrics append is an error, CausalAttention's errors name it
// =============================================================================================

TEST_CASE("E60 Loop: a NaN loss is a named error") {
  auto model = tl::Serial({tl::Embedding(8, 8), tl::Dense(8), tl::LogSoftmax(),
                           tl::Fn("LogOfLogProbs", [](const Var& x) { return fm::log(x); })});
  std::ostringstream log;
  auto loop = make_loop(model, "", 0.1, &log);
  const Observed o = observe("E60", [&] { loop.run(1); });
  CHECK(o.type == "minitrax::autodiff::NonFiniteError");
}

TEST_CASE("E61 ReformerLM: axial sizes are checked with the options") {
  models::ReformerLMOptions o = small_reformer();
  o.axial_pos_shape = {4, 4};
  o.d_axial_pos_embs = {4, 2};
  const Observed obs = observe("E61", [&] { (void)models::ReformerLM(o); });
  CHECK(obs.type == "minitrax::core::ValueError");
  CHECK(contains(obs.what, "d_axial_pos_embs"));
}

TEST_CASE("E62 Loop: a metrics line that cannot be written is an error") {
  TempDir dir("e62");
  std::ostringstream log;
  auto loop = make_loop(lm(16), dir.path.string(), 0.1, &log);
  loop.run(1);
  const std::string metrics = dir / "metrics.jsonl";
  const std::string before = read_bytes(metrics);
  const Observed o = observe("E62", [&] {
    FileSizeLimit limit(before.size() + 8);  // not even one more line fits
    loop.run(2);
  });
  CHECK(o.type == "minitrax::core::FileError");
  // One write on an O_APPEND descriptor; a short write is truncated back.
  CHECK(contains(o.what, "metrics.jsonl"));
  CHECK(read_bytes(metrics) == before);
}

TEST_CASE("E63 CausalAttention: its errors name it") {
  auto attn = tl::CausalAttention(8, 2);
  const Observed o = observe("E63", [&] { attn->init({{{5, 8}, DType::f32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(contains(o.what, "CausalAttention"));
}
