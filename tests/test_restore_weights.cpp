// tests/test_restore_weights.cpp: trained weights into a model in any mode
// (training::restore_weights, load_weights). A model trained by the Loop in train
// mode is saved, loaded into eval- and predict-mode models, and the predict model's
// per-position log-probs are compared with the eval model's on the whole sequence.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "autodiff/tape.hpp"
#include "core/ops.hpp"
#include "layers/layer_gradcheck.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"

using namespace minitrax;
using autodiff::Var;
using base::DType;
using base::Mode;
using core::key_from_seed;
using core::Tensor;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("minitrax_restore_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// name -> tensor, for comparisons that do not depend on the order.
std::map<std::string, Tensor> by_name(const std::vector<base::NamedTensor>& ts) {
  std::map<std::string, Tensor> m;
  for (const auto& t : ts) m[t.name] = t.value;
  return m;
}

bool all_bitwise_equal(const std::vector<base::NamedTensor>& a,
                       const std::vector<base::NamedTensor>& b) {
  const auto ma = by_name(a), mb = by_name(b);
  if (ma.size() != mb.size() || ma.size() != a.size()) return false;
  for (const auto& [name, t] : ma) {
    auto it = mb.find(name);
    if (it == mb.end() || !bitwise_equal(t, it->second)) return false;
  }
  return true;
}

std::vector<std::string> names(const base::Layer& model) {
  std::vector<std::string> out;
  for (const auto& t : model.flat_weights()) out.push_back(t.name);
  return out;
}

constexpr std::size_t kVocab = 11, kLength = 12, kBatch = 4;

// A Loop training `model` (train mode) on the copy task in `dir`, with a checkpoint
// every `every` steps (0: only at the end of run()).
training::Loop make_loop(base::LayerPtr model, const std::string& dir, long every = 0) {
  auto stream = training::copy_task_stream(key_from_seed(5), kBatch, kLength, kVocab);
  training::AdamOptions adam;
  adam.learning_rate = 0.01;
  training::TrainTask task{stream, training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(adam), training::constant(0.01)};
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 0;
  options.checkpoint_every = every;
  options.progress = training::Progress::none;
  return training::Loop(std::move(model), task, {}, options, key_from_seed(11));
}

// Log-probs of the predict-mode model fed [start = 0, ids[:, :-1]] one position per
// call, stacked to [B, L, vocab] like the eval model's output on ids.
Tensor predict_log_probs(base::Layer& predict, const Tensor& ids) {
  autodiff::NoRecord quiet;
  const std::size_t batch = ids.dim(0), length = ids.dim(1);
  std::vector<Tensor> steps;
  for (std::size_t t = 0; t < length; ++t) {
    std::vector<std::int32_t> col;
    for (std::size_t b = 0; b < batch; ++b) {
      col.push_back(t == 0 ? 0 : static_cast<std::int32_t>(ids.at({b, t - 1})));
    }
    steps.push_back(predict(Var(Tensor::from<std::int32_t>({batch, 1}, col))).value());
  }
  return core::concatenate(steps, 1);
}

models::TransformerLMOptions transformer(Mode mode) {
  return {.vocab_size = static_cast<long>(kVocab),
          .d_model = 16,
          .d_ff = 32,
          .n_layers = 2,
          .n_heads = 2,
          .dropout = 0.1,  // dropout in training: eval and predict must drop nothing
          .max_len = 32,
          .mode = mode};
}

// Layer 1: full SelfAttention; layer 2: LSH attention whose eval windows cover the
// whole hashed sequence (n_hashes * L / chunk_len = 1 + n_chunks_before), the setting
// in which predict-mode LSH equals eval (docs/efficient_attention.md). Reversible.
models::ReformerLMOptions reformer(Mode mode) {
  return {.vocab_size = static_cast<long>(kVocab),
          .d_model = 16,
          .d_ff = 32,
          .d_attention_key = 8,
          .d_attention_value = 8,
          .n_layers = 2,
          .n_heads = 2,
          .dropout = 0.0,
          .max_len = 32,
          .attention_type = {models::self_attention({.predict_mem_len = 32, .predict_drop_len = 8}),
                             models::lsh_self_attention({.chunk_len = 12,
                                                         .n_chunks_before = 1,
                                                         .n_hashes = 2,
                                                         .n_buckets = {4}})},
          .mode = mode};
}

// The whole story for one model: train, save, load into eval and predict models,
// compare. tol32: predict vs eval in float32 (the weights as trained); tol64: the
// same two models cast to float64 after loading.
template <class Make>
void train_save_load_predict(Make make, const std::string& tag, double tol32, double tol64) {
  TempDir dir(tag);
  auto trained_model = make(Mode::train);
  training::Loop loop = make_loop(trained_model, dir.str());
  loop.run(6);
  // Training changed the weights (so matching them below means something).
  auto fresh = make(Mode::train);
  fresh->init({{{kBatch, kLength}, DType::i32}}, key_from_seed(0));
  CHECK_FALSE(all_bitwise_equal(fresh->flat_weights(), loop.model()->flat_weights()));

  // The checkpoint holds the trained weights bit for bit.
  const auto path = training::latest_checkpoint(dir.str());
  REQUIRE(path);
  const training::Checkpoint ckpt = training::load_checkpoint(*path);
  CHECK(ckpt.step == 6);
  CHECK(all_bitwise_equal(ckpt.weights, loop.model()->flat_weights()));

  auto eval_model = make(Mode::eval);
  eval_model->init({{{2, kLength}, DType::i32}}, key_from_seed(77));
  auto predict = make(Mode::predict);
  predict->init({{{2, 1}, DType::i32}}, key_from_seed(78));
  // The flat names are the same in every mode (restore_weights matches by name).
  CHECK(names(*predict) == names(*loop.model()));
  CHECK(names(*eval_model) == names(*loop.model()));
  // restore_model wants the state too, which differs in predict mode (caches, positions).
  CHECK(testutil::contains(
      testutil::error_message([&] { training::restore_model(*predict, ckpt, *path); }),
      "missing state"));
  CHECK(training::load_weights(*predict, dir.str()) == *path);
  CHECK(training::load_weights(*eval_model, *path) == *path);
  CHECK(all_bitwise_equal(predict->flat_weights(), loop.model()->flat_weights()));
  CHECK(all_bitwise_equal(eval_model->flat_weights(), loop.model()->flat_weights()));

  const Tensor ids = training::copy_task_stream(key_from_seed(99), 2, kLength, kVocab)(0)[0];
  {
    const Tensor full = eval_model->apply({Var(ids)}, key_from_seed(0)).at(0).value();
    const Tensor incremental = predict_log_probs(*predict, ids);
    REQUIRE(full.shape() == incremental.shape());
    CAPTURE(core::max_abs_diff(full, incremental));
    CHECK(core::max_abs_diff(full, incremental) < tol32);
  }
  // The same weights in float64: the two computations agree to rounding.
  auto predict64 = make(Mode::predict);
  predict64->init({{{2, 1}, DType::i32}}, key_from_seed(79));
  training::restore_weights(*predict64, ckpt, *path);
  base::cast_layer(*predict64, DType::f64);
  base::cast_layer(*eval_model, DType::f64);
  const Tensor full = eval_model->apply({Var(ids)}, key_from_seed(0)).at(0).value();
  const Tensor incremental = predict_log_probs(*predict64, ids);
  CAPTURE(core::max_abs_diff(full, incremental));
  CHECK(core::max_abs_diff(full, incremental) < tol64);
  // ... and the trained model itself, switched to eval mode, gives the eval outputs
  // (to rounding: the Reformer's differ by ~2e-15, the Transformer's not at all).
  loop.model()->set_mode(Mode::eval);
  base::cast_layer(*loop.model(), DType::f64);
  CHECK(core::max_abs_diff(loop.model()->apply({Var(ids)}, key_from_seed(0)).at(0).value(), full) <
        1e-12);
}

}  // namespace

TEST_CASE("restore_weights: TransformerLM trained, saved, loaded into predict mode") {
  train_save_load_predict([](Mode m) { return models::TransformerLM(transformer(m)); },
                          "transformer", 1e-5, 1e-10);
}

TEST_CASE("restore_weights: ReformerLM (LSH, reversible) trained, saved, loaded into predict") {
  // float32: an LSH layer with 2 rounds combines position 0's two copies in eval only
  // to ~1e-2 (tests/test_decoding.cpp explains); float64 is exact to rounding.
  train_save_load_predict([](Mode m) { return models::ReformerLM(reformer(m)); }, "reformer", 5e-2,
                          1e-8);
}

TEST_CASE("restore_weights: ReformerLM with LSH attention in every layer, into predict mode") {
  train_save_load_predict(
      [](Mode m) {
        models::ReformerLMOptions o = reformer(m);
        o.attention_type = {o.attention_type.back()};  // LSH in both layers
        return models::ReformerLM(o);
      },
      "reformer_lsh", 5e-2, 1e-8);
}

TEST_CASE("LW01 restore_weights: mismatches are all reported and nothing changes") {
  TempDir dir("mismatch");
  make_loop(models::TransformerLM(transformer(Mode::train)), dir.str()).run(2);
  const std::string path = *training::latest_checkpoint(dir.str());
  const training::Checkpoint ckpt = training::load_checkpoint(path);

  // A wider model: every weight whose shape depends on d_model is mis-shaped.
  auto o = transformer(Mode::predict);
  o.d_model = 8;
  auto wider = models::TransformerLM(o);
  wider->init({{{1, 1}, DType::i32}}, key_from_seed(1));
  const auto before = wider->flat_weights();
  const std::string msg =
      testutil::error_message([&] { training::restore_weights(*wider, ckpt, path); });
  CHECK(testutil::contains(msg, path + ": the checkpoint does not match ("));
  CHECK(testutil::contains(msg,
                           "weight 'Serial/Embedding_1/embeddings': the model has [11, 8] "
                           "float32, the checkpoint [11, 16] float32"));
  CHECK(all_bitwise_equal(wider->flat_weights(), before));

  // One layer fewer: the second block's weights are extra, and reported together.
  o = transformer(Mode::predict);
  o.n_layers = 1;
  auto shallower = models::TransformerLM(o);
  shallower->init({{{1, 1}, DType::i32}}, key_from_seed(1));
  const auto before2 = shallower->flat_weights();
  const std::string msg2 =
      testutil::error_message([&] { training::restore_weights(*shallower, ckpt, path); });
  CHECK(testutil::contains(msg2, "extra weight '"));
  CHECK(testutil::contains(msg2, "(not in the model)"));
  // Each checkpoint name the model lacks is one "extra" line, each model name the
  // checkpoint lacks one "missing" line (the final layers' numbers shift with the
  // shorter layer list, so there are both).
  auto count = [&](const std::string& what) {
    std::size_t n = 0;
    for (std::size_t at = msg2.find(what); at != std::string::npos; at = msg2.find(what, at + 1)) {
      ++n;
    }
    return n;
  };
  const auto model_names = names(*shallower);
  std::size_t not_in_model = 0, not_in_ckpt = 0;
  for (const auto& t : ckpt.weights) {
    not_in_model += std::find(model_names.begin(), model_names.end(), t.name) == model_names.end();
  }
  for (const auto& n : model_names) not_in_ckpt += by_name(ckpt.weights).count(n) == 0;
  CHECK(not_in_model > 0);
  CHECK(not_in_ckpt > 0);
  CHECK(count("\n  extra weight '") == not_in_model);
  CHECK(count("\n  missing weight '") == not_in_ckpt);
  CHECK(all_bitwise_equal(shallower->flat_weights(), before2));
  // A missing weight: the checkpoint without its embedding.
  training::Checkpoint cut = ckpt;
  cut.weights.erase(cut.weights.begin());
  auto full_model = models::TransformerLM(transformer(Mode::predict));
  full_model->init({{{1, 1}, DType::i32}}, key_from_seed(1));
  CHECK((testutil::error_message([&] { training::restore_weights(*full_model, cut, "cut.npz"); }) ==
         "cut.npz: the checkpoint does not match (1 problem):\n  missing weight "
         "'Serial/Embedding_1/embeddings' [11, 16]"));
  CHECK(ckpt.weights.front().name == "Serial/Embedding_1/embeddings");
}

TEST_CASE("LW02-LW05 load_weights: folders, damaged checkpoints, bad paths, no init") {
  TempDir dir("folder");
  make_loop(models::TransformerLM(transformer(Mode::train)), dir.str(), /*every=*/2).run(4);
  const auto all = training::list_checkpoints(dir.str());
  REQUIRE(all.size() == 2);
  // The newest one damaged (cut short): the folder's newest intact one is used.
  fs::resize_file(all[1].second, fs::file_size(all[1].second) / 2);
  auto predict = models::TransformerLM(transformer(Mode::predict));
  predict->init({{{1, 1}, DType::i32}}, key_from_seed(1));
  CHECK(training::load_weights(*predict, dir.str()) == all[0].second);
  CHECK(
      all_bitwise_equal(predict->flat_weights(), training::load_checkpoint(all[0].second).weights));
  // The damaged file asked for by name: its own error.
  CHECK_THROWS_AS(training::load_weights(*predict, all[1].second), core::FileError);
  // None intact: every file's error, in one FileError.
  fs::resize_file(all[0].second, 10);
  const std::string none = testutil::error_message([&] {
    try {
      training::load_weights(*predict, dir.str());
    } catch (const core::FileError&) {
      throw;
    } catch (...) {
      FAIL("not a FileError");
    }
  });
  CHECK(none == dir.str() + ": none of its 2 checkpoint(s) loads:\n  " + all[1].second +
                    ": truncated or corrupt: no zip end record\n  " + all[0].second +
                    ": truncated or corrupt: no zip end record");

  TempDir empty("empty");
  fs::create_directories(empty.path);
  CHECK(testutil::error_message([&] { training::load_weights(*predict, empty.str()); }) ==
        empty.str() +
            ": no checkpoint in this folder (expected files named ckpt_<9-digit step>.npz, as "
            "the Loop writes them)");
  CHECK(testutil::error_message([&] {
          training::load_weights(*predict, empty.str() + "/nothing.npz");
        }) == empty.str() + "/nothing.npz: no such checkpoint file or run folder");
  CHECK_THROWS_AS(training::load_weights(*predict, empty.str()), core::FileError);
  CHECK_THROWS_AS(training::load_weights(*predict, empty.str() + "/nothing.npz"), core::FileError);
  CHECK_THROWS_AS(training::restore_weights(*predict, training::Checkpoint{}, "x.npz"),
                  training::CheckpointError);
  auto uninitialised = models::TransformerLM(transformer(Mode::predict));
  CHECK_THROWS_AS(training::restore_weights(*uninitialised, training::Checkpoint{}, "x.npz"),
                  core::ValueError);
  CHECK(testutil::error_message(
            [&] { training::restore_weights(*uninitialised, training::Checkpoint{}, "x.npz"); }) ==
        "restore_weights: the model Serial is not initialised, so it has no weights to "
        "load x.npz into; call init(input_signature) first");
}
