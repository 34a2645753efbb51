// Tests of the conveniences that let models read like Trax (issue 14):
//   * Layer::init from an example tensor/Var or a shape (long, vector<long>, Shape),
//     each giving exactly the weights of the Signature form;
//   * base::CreationSite: layers built under it record the outer site;
//   * Dense(n)'s defaults (Trax 1.3.4: GlorotUniform, RandomNormal(1e-6), bias);
//   * ReversibleSerial(blocks, {.reversible_backward}) and ReformerLM's option;
//   * signed sizes: negative extents and copy-task sizes are errors naming them.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.hpp"
#include "data/synthetic.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/initializers.hpp"
#include "layers/reversible.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
using base::LayerPtr;
using base::Signature;
using core::DType;
using core::key_from_seed;
using core::Shape;
using core::Tensor;
using minitrax::testutil::contains;

namespace {

// Bitwise equality of two models' flat weights (names, shapes, dtypes, bytes).
void check_same_weights(const base::Layer& a, const base::Layer& b) {
  const auto wa = a.flat_weights();
  const auto wb = b.flat_weights();
  REQUIRE(wa.size() == wb.size());
  REQUIRE(!wa.empty());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    CAPTURE(wa[i].name);
    CHECK(wa[i].name == wb[i].name);
    REQUIRE(wa[i].value.shape() == wb[i].value.shape());
    REQUIRE(wa[i].value.dtype() == wb[i].value.dtype());
    CHECK(std::memcmp(wa[i].value.raw_data(), wb[i].value.raw_data(), wa[i].value.nbytes()) == 0);
  }
}

LayerPtr small_mlp() {
  return tl::Serial({tl::Dense(16), tl::Relu(), tl::Dense(4), tl::LogSoftmax()});
}

LayerPtr small_lm() {
  return models::TransformerLM(
      {.vocab_size = 20, .d_model = 16, .d_ff = 32, .n_layers = 1, .n_heads = 2, .dropout = 0.0});
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// "tests/test_init_overloads.cpp:<line>", as Layer::where() shows a site.
std::string here(int line) {
  return "tests/test_init_overloads.cpp:" + std::to_string(line);
}

// Checks that `model` and every layer under it were created at `line`; returns how many.
int check_all_created_at(const base::Layer& model, const std::string& site) {
  std::vector<const base::Layer*> todo{&model};
  int n = 0;
  while (!todo.empty()) {
    const base::Layer* l = todo.back();
    todo.pop_back();
    CAPTURE(l->name());
    CHECK(l->where() == site);
    ++n;
    for (const LayerPtr& s : l->sublayers()) todo.push_back(s.get());
  }
  return n;
}

LayerPtr small_reformer(bool reversible = true) {
  return models::ReformerLM({.vocab_size = 16,
                             .d_model = 8,
                             .d_ff = 16,
                             .d_attention_key = 4,
                             .d_attention_value = 4,
                             .n_layers = 1,
                             .n_heads = 2,
                             .reversible = reversible});
}

}  // namespace

TEST_CASE("init from an example tensor or Var gives the Signature form's weights") {
  const auto key = key_from_seed(11);
  const Tensor x = Tensor::zeros({3, 8}, DType::f32);
  auto by_sig = small_mlp();
  by_sig->init({{{3, 8}, DType::f32}}, key);
  auto by_tensor = small_mlp();
  by_tensor->init(x, key);
  auto by_var = small_mlp();
  by_var->init(autodiff::Var(x), key);
  check_same_weights(*by_sig, *by_tensor);
  check_same_weights(*by_sig, *by_var);
  // The key matters (a check that can fail): another key, other weights.
  auto other = small_mlp();
  other->init(x, key_from_seed(12));
  CHECK(std::memcmp(other->flat_weights()[0].value.raw_data(),
                    by_sig->flat_weights()[0].value.raw_data(),
                    by_sig->flat_weights()[0].value.nbytes()) != 0);

  // Integer ids: the example's dtype is used (the model's weights stay float32).
  const Tensor ids = Tensor::zeros({2, 6}, DType::i32);
  auto lm_sig = small_lm();
  lm_sig->init({{{2, 6}, DType::i32}}, key);
  auto lm_ex = small_lm();
  lm_ex->init(ids, key);
  check_same_weights(*lm_sig, *lm_ex);
  CHECK(lm_ex->flat_weights()[0].value.dtype() == DType::f32);
}

TEST_CASE("init from a shape: braced longs, vector<long>, Shape") {
  const auto key = key_from_seed(5);
  auto by_sig = small_lm();
  by_sig->init({{{2, 6}, DType::i32}}, key);

  const long batch = 2, length = 6;
  auto braced = small_lm();
  braced->init({batch, length}, DType::i32, key);
  check_same_weights(*by_sig, *braced);

  const std::vector<long> dims{2, 6};
  auto vec = small_lm();
  vec->init(dims, DType::i32, key);
  check_same_weights(*by_sig, *vec);

  auto shape = small_lm();
  shape->init(Shape{2, 6}, DType::i32, key);
  check_same_weights(*by_sig, *shape);

  // Defaults: float32 and key_from_seed(0), as the Signature form's default key.
  auto mlp_sig = small_mlp();
  mlp_sig->init({{{4, 8}, DType::f32}});
  auto mlp_shape = small_mlp();
  mlp_shape->init({4, 8});
  check_same_weights(*mlp_sig, *mlp_shape);
  CHECK(mlp_shape->output_signature({{{4, 8}, DType::f32}})[0].shape == Shape{4, 4});

  // The installed weights are the returned ones.
  auto returned = small_mlp();
  const auto [w, s] = returned->init({4, 8});
  CHECK(w.n_leaves() == returned->weights().n_leaves());
}

TEST_CASE("init: a negative extent is a ValueError naming it; init({}) still means no inputs") {
  const int line = __LINE__ + 1;
  auto dense = tl::Dense(4);
  const std::string expected = "Dense (created at " + here(line) +
                               ") init: shape[1] is -3, extents must be >= 0 (shape [2, -3])";
  CHECK_THROWS_WITH_AS(dense->init({2, -3}), expected.c_str(), core::ValueError);
  CHECK_THROWS_WITH_AS(dense->init(std::vector<long>{2, -3}), expected.c_str(), core::ValueError);
  CHECK_FALSE(dense->initialized());

  // An empty list is the empty Signature (zero inputs): the same error as before.
  const std::string empty_list = what_of([&] { dense->init({}); });
  const std::string empty_sig = what_of([&] { dense->init(Signature{}); });
  CHECK(empty_list == empty_sig);
  CHECK(empty_list == "Dense (created at " + here(line) +
                          ") init with inputs no inputs: init: expected 1 input signatures, got 0 "
                          "(no inputs)");

  // A scalar input is Shape{} (here wrong for Dense, which needs a feature axis).
  CHECK_THROWS_AS(dense->init(Shape{}), base::LayerError);

  // An undefined example tensor.
  CHECK_THROWS_WITH_AS(dense->init(Tensor()),
                       ("Dense (created at " + here(line) +
                        ") init: the example tensor is undefined (default-constructed)")
                           .c_str(),
                       core::ValueError);
}

TEST_CASE("CreationSite: layers built under it record the outer site, the outermost wins") {
  const int outer_line = __LINE__ + 1;
  const auto outer = std::source_location::current();
  LayerPtr inner_made, nested_made, after;
  {
    base::CreationSite site(outer);
    inner_made = tl::Dense(3);
    {
      base::CreationSite nested;  // an inner scope changes nothing
      nested_made = tl::Serial({tl::LayerNorm(), tl::Relu()});
    }
    CHECK(inner_made->where() == here(outer_line));
    CHECK(nested_made->where() == here(outer_line));
    CHECK(nested_made->sublayers()[0]->where() == here(outer_line));
    // Another thread does not see this thread's scope.
    std::string other_thread;
    std::thread t([&] {
      const int line = __LINE__ + 1;
      auto l = tl::Relu();
      other_thread = l->where() == here(line) ? "own" : l->where();
    });
    t.join();
    CHECK(other_thread == "own");
  }
  const int after_line = __LINE__ + 1;
  after = tl::Dense(3);
  CHECK(after->where() == here(after_line));

  // A scope left by an exception is closed.
  try {
    base::CreationSite site(outer);
    throw std::runtime_error("leave");
  } catch (const std::runtime_error&) {
  }
  const int line2 = __LINE__ + 1;
  auto again = tl::Relu();
  CHECK(again->where() == here(line2));
}

TEST_CASE("models name the user's line for every layer, and in their errors") {
  const int line = __LINE__ + 1;
  auto lm = models::TransformerLM(
      {.vocab_size = 20, .d_model = 16, .d_ff = 32, .n_layers = 1, .n_heads = 2, .dropout = 0.0});
  // Every layer under the model, depth first, was created at the user's line (not
  // at a line of models/transformer.cpp or of a layer factory).
  CHECK(check_all_created_at(*lm, here(line)) > 10);

  auto reformer = models::ReformerLM(
      {.vocab_size = 16,
       .d_model = 8,
       .d_attention_key = 4,
       .d_attention_value = 4,
       .n_layers = 2,
       .n_heads = 2,
       .attention_type = {models::lsh_self_attention({.chunk_len = 4, .n_buckets = {2}}),
                          models::self_attention()},
       .ff_chunk_size = 2});
  CHECK(contains(reformer->where(), "tests/test_init_overloads.cpp:"));
  CHECK(check_all_created_at(*reformer, reformer->where()) > 20);

  // A wrong input: the message's frames name this file's line.
  lm->init({2, 6}, DType::i32);
  const std::string msg = what_of([&] { (*lm)(autodiff::Var(Tensor::zeros({2, 6, 3}))); });
  CHECK(contains(msg, "(created at " + here(line) + ")"));
}

TEST_CASE("Dense(n) has Trax 1.3.4's defaults: GlorotUniform kernel, RandomNormal(1e-6) bias") {
  auto plain = tl::Dense(32);
  auto spelled = tl::Dense(32, tl::init::GlorotUniform(), tl::init::RandomNormal(1e-6), true);
  const auto key = key_from_seed(3);
  plain->init({64, 48}, DType::f32, key);
  spelled->init({64, 48}, DType::f32, key);
  check_same_weights(*plain, *spelled);
  // Independently: Glorot uniform bounds sqrt(6 / (fan_in + fan_out)), a bias of size 1e-6.
  const auto w = plain->flat_weights();
  REQUIRE(w.size() == 2);
  CHECK(w[0].name == "Dense/w");
  CHECK(w[1].name == "Dense/b");
  const double limit = std::sqrt(6.0 / (48.0 + 32.0));
  double max_w = 0, max_b = 0;
  for (double v : w[0].value.to_vector<double>()) max_w = std::max(max_w, std::abs(v));
  for (double v : w[1].value.to_vector<double>()) max_b = std::max(max_b, std::abs(v));
  CHECK(max_w <= limit);
  CHECK(max_w > 0.8 * limit);  // 1536 uniform draws reach near the bound
  CHECK(max_b > 0.0);
  CHECK(max_b < 1e-5);
}

TEST_CASE("ReversibleSerial options and ReformerLM's reversible option set the backward") {
  auto blocks = [] {
    return std::vector<LayerPtr>{tl::ReversibleHalfResidual({tl::Relu()}), tl::ReversibleSwap()};
  };
  auto deflt = std::dynamic_pointer_cast<tl::ReversibleSerialLayer>(tl::ReversibleSerial(blocks()));
  auto plain = std::dynamic_pointer_cast<tl::ReversibleSerialLayer>(
      tl::ReversibleSerial(blocks(), {.reversible_backward = false}));
  REQUIRE(deflt);
  REQUIRE(plain);
  CHECK(deflt->reversible_backward());
  CHECK_FALSE(plain->reversible_backward());

  for (bool reversible : {true, false}) {
    auto model = small_reformer(reversible);
    auto rs = std::dynamic_pointer_cast<tl::ReversibleSerialLayer>(model->sublayers()[5]);
    REQUIRE(rs);
    CHECK(rs->reversible_backward() == reversible);
  }
}

TEST_CASE("copy task sizes are signed: negatives are errors naming them") {
  const auto key = key_from_seed(0);
  CHECK_THROWS_WITH_AS(data::copy_task_stream(key, -1, 8, 8),
                       "copy task: batch_size must be >= 1, got -1", core::ValueError);
  CHECK_THROWS_WITH_AS(
      data::copy_task_stream(key, 2, -8, 8),
      "copy task: length must be even and >= 4 (\"0 w 0 w\" with |w| >= 1), got -8",
      core::ValueError);
  CHECK_THROWS_WITH_AS(
      data::copy_task_batch(key, 2, 8, -5),
      "copy task: vocab_size must be >= 3 (0 separates, symbols are 1..vocab-2), got -5",
      core::ValueError);
  CHECK_THROWS_WITH_AS(data::copy_task_batch(key, 2, 8, 8, false, -2),
                       "copy task: pad_to_multiple must be >= 1, got -2", core::ValueError);
  CHECK_THROWS_WITH_AS(data::sequence_copy_inputs(key, 8, 2, 5, 0, 6),
                       "sequence_copy_inputs: eval_min_length must be >= 1 (eval lengths are 2 "
                       "(n + 1) >= 4 for n from eval_min_length), got 0",
                       core::ValueError);
  CHECK_THROWS_WITH_AS(data::sequence_copy_inputs(key, 8, -2, 5, 3, 6),
                       "copy task: batch_size must be >= 1, got -2", core::ValueError);
  // Signed sizes give the same batches as before (a long is what a config holds).
  const long batch = 3, length = 8, vocab = 10;
  const data::Batch b = data::copy_task_stream(key, batch, length, vocab)(4);
  CHECK(b[0].shape() == Shape{3, 8});
  const data::Batch direct = data::copy_task_batch(core::fold_in(key, 4), 3, 8, 10);
  CHECK(b[0].to_vector<int>() == direct[0].to_vector<int>());
}
