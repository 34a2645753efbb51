// Checkpoints: round trip, every mismatch reported by name, corrupt files, the folder.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "autodiff/fastmath.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "training/checkpoint.hpp"

using namespace minitrax;
namespace tl = minitrax::layers;
namespace fs = std::filesystem;
using training::Checkpoint;
using training::CheckpointError;

namespace {

// A layer with one weight of a given shape and a counter in its state.
class Scale : public base::Layer {
 public:
  explicit Scale(std::size_t d) : base::Layer(1, 1, "Scale"), d_(d) {}

 protected:
  base::Stack forward(const base::Stack& x) override {
    state_ = base::State(core::add(state_.leaf(), 1.0));
    return {fastmath::multiply(x[0], fastmath::sum(weight(0)))};
  }
  void init_weights_and_state(const base::Signature&) override {
    set_own_weights({core::normal(rng_, {d_})});
    state_ = base::State(Tensor::scalar(0, DType::i32));
  }

 private:
  std::size_t d_;
};

base::LayerPtr model(std::size_t d1, std::size_t d2) {
  return tl::Serial({std::make_shared<Scale>(d1), std::make_shared<Scale>(d2)});
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("minitrax_ckpt_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

Checkpoint snapshot(const base::Layer& m, long step) {
  Checkpoint c;
  c.step = step;
  c.weights = m.flat_weights();
  c.state = m.flat_state();
  c.slots = {{"Serial/Scale_0/0/m", Tensor::ones({4})}};
  c.keys = {{"train", core::Key{1, 0xfffffffe}}};
  return c;
}

}  // namespace

TEST_CASE("checkpoint: round trip of weights, state, slots, step and keys") {
  TempDir dir;
  auto m = model(4, 4);
  m->init({{{2, 4}, DType::f32}}, core::key_from_seed(1));
  (*m)(Var(Tensor::ones({2, 4})));  // state counters become 1
  const std::string path = training::checkpoint_path(dir.path.string(), 12);
  CHECK(fs::path(path).filename() == "ckpt_000000012.npz");
  training::save_checkpoint(path, snapshot(*m, 12));

  Checkpoint c = training::load_checkpoint(path);
  CHECK(c.step == 12);
  REQUIRE(c.weights.size() == 2);
  CHECK(c.weights[0].name == "Serial/Scale_0/0");
  CHECK(core::equal(c.weights[1].value, m->flat_weights()[1].value));
  CHECK(c.state[0].value.item<int>() == 1);
  CHECK(c.slots[0].name == "Serial/Scale_0/0/m");
  CHECK(c.keys[0].second == core::Key{1, 0xfffffffe});

  auto m2 = model(4, 4);
  m2->init({{{2, 4}, DType::f32}}, core::key_from_seed(99));
  training::restore_model(*m2, c, path);
  CHECK(core::equal(m2->flat_weights()[0].value, m->flat_weights()[0].value));
  CHECK(m2->flat_state()[1].value.item<int>() == 1);
}

TEST_CASE("checkpoint: a different model gets every problem by name, and nothing changes") {
  TempDir dir;
  auto m = model(4, 4);
  m->init({{{2, 4}, DType::f32}}, core::key_from_seed(1));
  const std::string path = training::checkpoint_path(dir.path.string(), 1);
  training::save_checkpoint(path, snapshot(*m, 1));

  auto other = tl::Serial(
      {std::make_shared<Scale>(4), std::make_shared<Scale>(5), std::make_shared<Scale>(3)});
  other->init({{{2, 4}, DType::f32}}, core::key_from_seed(2));
  const Tensor before = other->flat_weights()[0].value.clone();
  try {
    training::restore_model(*other, training::load_checkpoint(path), path);
    FAIL("no error");
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("the checkpoint does not match (2 problems):") != std::string::npos);
    CHECK(msg.find("weight 'Serial/Scale_1/0': the model has [5] float32, the checkpoint [4] "
                   "float32") != std::string::npos);
    CHECK(msg.find("missing weight 'Serial/Scale_2/0' [3]") != std::string::npos);
  }
  CHECK(core::equal(other->flat_weights()[0].value, before));

  auto smaller = tl::Serial({std::make_shared<Scale>(4)});
  smaller->init({{{2, 4}, DType::f32}}, core::key_from_seed(2));
  CHECK_THROWS_WITH_AS(training::restore_model(*smaller, training::load_checkpoint(path), path),
                       doctest::Contains("extra weight 'Serial/Scale_1/0' [4] (not in the model)"),
                       CheckpointError);
}

TEST_CASE("checkpoint: truncated or foreign files are errors and the file stays") {
  TempDir dir;
  auto m = model(3, 3);
  m->init({{{1, 3}, DType::f32}}, core::key_from_seed(1));
  const std::string path = training::checkpoint_path(dir.path.string(), 5);
  training::save_checkpoint(path, snapshot(*m, 5));
  const std::string bytes = core::read_file(path);
  const std::string cut = (dir.path / "cut.npz").string();
  {
    std::ofstream f(cut, std::ios::binary);
    f.write(bytes.data(), static_cast<long>(bytes.size() / 2));
  }
  CHECK_THROWS_AS(training::load_checkpoint(cut), FileError);
  CHECK(core::read_file(path) == bytes);

  const std::string foreign = (dir.path / "foreign.npz").string();
  core::save_npz(foreign, {{"w", Tensor::ones({2})}});
  CHECK_THROWS_WITH_AS(training::load_checkpoint(foreign),
                       doctest::Contains("unexpected member 'w'"), CheckpointError);
}

TEST_CASE("checkpoint folder: list, latest, prune keeps the newest") {
  TempDir dir;
  auto m = model(2, 2);
  m->init({{{1, 2}, DType::f32}}, core::key_from_seed(1));
  for (long step : {10, 30, 20, 40}) {
    training::save_checkpoint(training::checkpoint_path(dir.path.string(), step),
                              snapshot(*m, step));
  }
  auto all = training::list_checkpoints(dir.path.string());
  REQUIRE(all.size() == 4);
  CHECK(all.front().first == 10);
  CHECK(*training::latest_checkpoint(dir.path.string()) ==
        training::checkpoint_path(dir.path.string(), 40));
  training::prune_checkpoints(dir.path.string(), 2);
  all = training::list_checkpoints(dir.path.string());
  REQUIRE(all.size() == 2);
  CHECK(all[0].first == 30);
  CHECK(all[1].first == 40);
  CHECK_FALSE(training::latest_checkpoint((dir.path / "none").string()).has_value());
}

TEST_CASE("checkpoint folder: pruning never deletes the newest readable checkpoint") {
  TempDir dir;
  const std::string d = dir.path.string();
  auto m = model(2, 2);
  m->init({{{1, 2}, DType::f32}}, core::key_from_seed(1));
  for (long step : {10, 20}) {
    training::save_checkpoint(training::checkpoint_path(d, step), snapshot(*m, step));
  }
  // Two newer files that do not load (a truncated archive, garbage).
  {
    const std::string good = core::read_file(training::checkpoint_path(d, 20));
    std::ofstream(training::checkpoint_path(d, 30), std::ios::binary)
        << good.substr(0, good.size() / 2);
    std::ofstream(training::checkpoint_path(d, 40), std::ios::binary) << "not a checkpoint";
  }
  training::prune_checkpoints(d, 2);
  auto all = training::list_checkpoints(d);
  REQUIRE(all.size() == 3);  // 10 went; 20, the newest readable one, stays
  CHECK(all[0].first == 20);
  CHECK(training::load_checkpoint(all[0].second).step == 20);
  // With keep 0 too; and if nothing loads, nothing is deleted.
  training::prune_checkpoints(d, 0);
  all = training::list_checkpoints(d);
  REQUIRE(all.size() == 1);
  CHECK(all[0].first == 20);
  std::ofstream(training::checkpoint_path(d, 20), std::ios::binary) << "garbage too";
  std::ofstream(training::checkpoint_path(d, 30), std::ios::binary) << "garbage";
  training::prune_checkpoints(d, 1);
  CHECK(training::list_checkpoints(d).size() == 2);
}

TEST_CASE("checkpoint folder: a killed write's temporary is never listed, and is cleaned up") {
  TempDir dir;
  const std::string d = dir.path.string();
  auto m = model(2, 2);
  m->init({{{1, 2}, DType::f32}}, core::key_from_seed(1));
  training::save_checkpoint(training::checkpoint_path(d, 10), snapshot(*m, 10));
  // A process that no longer runs: a child that has exited and been reaped.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const std::string dead = std::to_string(child), alive = std::to_string(::getpid());
  const std::string half = core::read_file(training::checkpoint_path(d, 10)).substr(0, 100);
  const std::vector<std::string> stale = {
      training::checkpoint_path(d, 20) + ".minitrax-tmp." + dead + ".3",
      (dir.path / ("metrics.jsonl.minitrax-tmp." + dead + ".0")).string()};
  const std::string live = training::checkpoint_path(d, 30) + ".minitrax-tmp." + alive + ".0";
  // A user's files: none is a temporary of minitrax's, whatever it looks like (the
  // second has the shape temporaries had before they were named .minitrax-tmp).
  const std::vector<std::string> users = {(dir.path / "notes.tmp.txt").string(),
                                          (dir.path / ("notes.tmp." + dead + ".1")).string(),
                                          (dir.path / "notes.tmp.99999.1").string()};
  for (const std::string& p : stale) std::ofstream(p) << half;
  std::ofstream(live) << half;
  for (const std::string& p : users) std::ofstream(p) << "mine";
  auto all = training::list_checkpoints(d);
  REQUIRE(all.size() == 1);
  CHECK(all[0].first == 10);
  CHECK(*training::latest_checkpoint(d) == training::checkpoint_path(d, 10));
  CHECK(training::remove_stale_temporaries(d) == 2);
  for (const std::string& p : stale) CHECK_FALSE(fs::exists(p));
  CHECK(fs::exists(live));  // a running process may still be writing it
  for (const std::string& p : users) CHECK(fs::exists(p));
  CHECK(training::list_checkpoints(d).size() == 1);
}
