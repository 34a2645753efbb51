// Trustworthy runs of the training Loop: one writer per folder (a lock the kernel drops
// when the holder dies), no second run appended to a folder's metrics, a graceful stop
// on SIGTERM / SIGINT that resumes bit for bit, metrics.jsonl read back tolerantly and
// exactly, and resume refusing damaged or out-of-range checkpoints before it changes
// anything.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/format.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "test_util.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/run_folder.hpp"
#include "training/stop_signals.hpp"

using namespace minitrax;
using testutil::without_timing;
namespace tl = minitrax::layers;
namespace fs = std::filesystem;
using testutil::contains;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() / ("minitrax_safety_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// A training stream that can run an action before handing out a given step's batch
// (to send a signal in the middle of a run).
training::Stream stream_with_hook(long at_step, std::function<void()> hook) {
  auto base = training::copy_task_stream(core::key_from_seed(5), 4, 8, 8);
  return [base, at_step, hook](long step) {
    if (step == at_step && hook) hook();
    return base(step);
  };
}

training::Loop make_loop(const std::string& dir, std::ostream* out, long hook_step = -1,
                         std::function<void()> hook = {}, long checkpoint_every = 5) {
  training::AdamOptions adam;
  adam.learning_rate = 0.01;
  training::TrainTask task{stream_with_hook(hook_step, std::move(hook)),
                           training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(adam), training::constant(0.01)};
  training::EvalTask eval;
  eval.stream = training::copy_task_stream(core::key_from_seed(6), 4, 8, 8);
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = 2;
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = 5;
  options.checkpoint_every = checkpoint_every;
  options.progress = training::Progress::lines;
  options.out = out;
  auto model = tl::Serial({tl::Embedding(8, 16), tl::Dropout(0.1), tl::Dense(32), tl::Relu(),
                           tl::Dense(8), tl::LogSoftmax()});
  return training::Loop(model, task, {eval}, options, core::key_from_seed(11));
}

void check_same_weights(const training::Loop& a, const training::Loop& b) {
  const auto wa = a.model()->flat_weights(), wb = b.model()->flat_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    INFO(wa[i].name);
    CHECK(core::to_npy_bytes(wa[i].value) == core::to_npy_bytes(wb[i].value));
  }
}

std::vector<std::string> checkpoint_names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& [step, path] : training::list_checkpoints(dir)) {
    out.push_back(fs::path(path).filename().string());
  }
  return out;
}

}  // namespace

TEST_CASE(
    "run folder: a second process is refused while the first holds the lock; kill -9 frees it") {
  TempDir d("lock");
  int to_parent[2], to_child[2];
  REQUIRE(::pipe(to_parent) == 0);
  REQUIRE(::pipe(to_child) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The holder: takes the lock, says so, then waits to be killed.
    auto lock = training::RunLock::acquire(d.str());
    char ok = 'k';
    if (::write(to_parent[1], &ok, 1) != 1) ::_exit(3);
    char wait;
    (void)::read(to_child[0], &wait, 1);
    ::_exit(0);
  }
  char got = 0;
  REQUIRE(::read(to_parent[0], &got, 1) == 1);
  // In this process: the lock is held elsewhere.
  const std::string msg = testutil::error_message([&] { training::RunLock::acquire(d.str()); });
  CAPTURE(msg);
  CHECK(contains(msg, "the run folder '" + d.str() + "' is in use by another process (pid " +
                          std::to_string(child) + " on "));
  CHECK(contains(msg, "use another output folder"));
  CHECK_THROWS_AS(training::RunLock::acquire(d.str()), training::RunLockedError);
  // A Loop into that folder is refused the same way, before it writes anything.
  std::ostringstream sink;
  CHECK_THROWS_AS(make_loop(d.str(), &sink), training::RunLockedError);
  CHECK_FALSE(fs::exists(d.path / "metrics.jsonl"));
  // kill -9: the kernel drops the lock with the process; no stale lock remains.
  ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(fs::exists(d.path / training::RunLock::kFileName));  // the file may stay ...
  auto lock = training::RunLock::acquire(d.str());           // ... the lock does not
  CHECK(lock != nullptr);
  // Within one process the lock is shared, not refused (the main job and its Loop).
  auto again = training::RunLock::acquire(d.str());
  CHECK(again.get() == lock.get());
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) ::close(fd);
}

TEST_CASE("run folder: a Loop refuses a folder that holds a run unless resumed") {
  TempDir d("exists");
  std::ostringstream sink;
  {
    auto first = make_loop(d.str(), &sink);
    first.run(7);
  }
  const std::string metrics = read_text(d.path / "metrics.jsonl");
  const auto ckpts = checkpoint_names(d.str());
  auto second = make_loop(d.str(), &sink);
  const std::string msg = testutil::error_message([&] { second.run(7); });
  CHECK(msg ==
        "Loop: the folder '" + d.str() +
            "' already holds a run (2 checkpoints (newest: step 7)); call resume() to continue "
            "it, or give another output_dir (nothing was changed)");
  CHECK_THROWS_AS(second.run(7), training::RunExistsError);
  CHECK(read_text(d.path / "metrics.jsonl") == metrics);  // no second "step 1..7"
  CHECK(checkpoint_names(d.str()) == ckpts);
  // Metrics alone (a run killed before its first checkpoint) count as a run too.
  TempDir m("exists_metrics");
  write_text(m.path / "metrics.jsonl", "{\"step\": 1, \"task\": \"train\", \"loss\": 2}\n");
  auto third = make_loop(m.str(), &sink);
  CHECK_THROWS_WITH_AS(third.run(3), doctest::Contains("already holds a run (metrics.jsonl ("),
                       training::RunExistsError);
  // resume() says "this is my run": then run() goes on.
  auto resumed = make_loop(d.str(), &sink);
  REQUIRE(resumed.resume());
  resumed.run(9);
  CHECK(resumed.step() == 9);
}

TEST_CASE("graceful stop: SIGTERM and SIGINT finish the step, checkpoint, and resume bit for bit") {
  TempDir ref("gref");
  std::ostringstream sink;
  auto straight = make_loop(ref.str(), &sink);
  straight.run(20);
  const std::string ref_metrics = without_timing(read_text(ref.path / "metrics.jsonl"));

  for (int sig : {SIGTERM, SIGINT}) {
    for (long at : {3L, 10L}) {  // off the checkpoint schedule, and on it (and an eval step)
      CAPTURE(sig);
      CAPTURE(at);
      TempDir d("g" + std::to_string(sig) + "_" + std::to_string(at));
      training::StopSignals::clear();
      std::ostringstream log;
      // The signal arrives while step `at` (1-based) is being computed: a real signal,
      // through the handler the Loop installs.
      auto loop = make_loop(d.str(), &log, at - 1, [sig] { ::raise(sig); });
      struct sigaction before {};
      ::sigaction(sig, nullptr, &before);
      long stopped_at = -1;
      std::string what, ckpt;
      int exit_status = 0;
      try {
        loop.run(20);
      } catch (const training::Stopped& s) {
        stopped_at = s.step();
        what = s.what();
        ckpt = s.checkpoint();
        exit_status = s.exit_status();
      }
      training::StopSignals::clear();
      CHECK(stopped_at == at);  // the step in progress was finished, not lost
      CHECK(exit_status == 128 + sig);
      CHECK(what == "stopped by " + training::signal_name(sig) + " after step " +
                        std::to_string(at) + " of 20; checkpoint " +
                        training::checkpoint_path(d.str(), at) +
                        " written, metrics.jsonl up to date");
      CHECK(ckpt == training::checkpoint_path(d.str(), at));
      CHECK(training::load_checkpoint(ckpt).step == at);
      // After the stop the handlers are the previous ones again.
      struct sigaction now {};
      ::sigaction(sig, nullptr, &now);
      CHECK(reinterpret_cast<void*>(now.sa_handler) == reinterpret_cast<void*>(before.sa_handler));

      auto resumed = make_loop(d.str(), &log);
      REQUIRE(resumed.resume());
      CHECK(resumed.step() == at);
      resumed.run(20);
      check_same_weights(straight, resumed);
      CHECK(without_timing(read_text(d.path / "metrics.jsonl")) == ref_metrics);
      // The stop's off-schedule checkpoint is gone once newer ones exist: the folder
      // ends as an uninterrupted run's.
      CHECK(checkpoint_names(d.str()) == checkpoint_names(ref.str()));
      CHECK(read_text(d.path / "ckpt_000000020.npz") == read_text(ref.path / "ckpt_000000020.npz"));
    }
  }
}

TEST_CASE("graceful stop: a second signal while a stop is pending ends the process at once") {
  TempDir d("twice");
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::ostringstream sink;
    auto loop = make_loop(d.str(), &sink, 2, [] {
      ::raise(SIGINT);
      ::raise(SIGINT);
    });
    try {
      loop.run(20);
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);
}

TEST_CASE(
    "metrics.jsonl: numbers read back to the same double; resumed history equals the original") {
  for (double v : {0.1, 1.0 / 3.0, 361.611, 361.61099999999999, 2.5e-300, -1e-9, 6.02214076e23,
                   std::nextafter(1.0, 2.0), 4.9e-324}) {
    CAPTURE(v);
    const std::string s = core::shortest(v);
    CHECK(std::strtod(s.c_str(), nullptr) == v);
    CHECK(s.size() <= 24);
  }
  CHECK(core::shortest(0.1) == "0.1");
  CHECK(core::shortest(361.611) == "361.611");

  TempDir d("exact");
  std::ostringstream sink;
  std::vector<training::MetricsRecord> original;
  {
    auto loop = make_loop(d.str(), &sink);
    loop.run(10);
    original = loop.history();
  }
  auto resumed = make_loop(d.str(), &sink);
  REQUIRE(resumed.resume());
  REQUIRE(resumed.history().size() == original.size());
  for (std::size_t i = 0; i < original.size(); ++i) {
    CHECK(resumed.history()[i].step == original[i].step);
    CHECK(resumed.history()[i].task == original[i].task);
    for (const auto& [k, v] : original[i].values) {
      CAPTURE(k);
      const double back = resumed.history()[i].values.at(k);
      CHECK(std::memcmp(&back, &v, sizeof v) == 0);  // bit for bit, not approximately
    }
  }
}

TEST_CASE(
    "metrics.jsonl: resume reads tolerantly, keeps what it does not understand, and says so") {
  TempDir d("tolerant");
  std::ostringstream sink;
  {
    auto loop = make_loop(d.str(), &sink);
    loop.run(5);
  }
  const std::string written = read_text(d.path / "metrics.jsonl");
  // The same lines with CRLF ends, members reordered on one line, an extra member of a
  // non-number type, a line without "loss", a hand-written note, a line of a later step,
  // and half a line at the end.
  std::istringstream in(written);
  std::string line, edited;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (n == 2) {
      edited +=
          "{\"task\": \"train\", \"loss\": 1.5, \"step\": 2, \"note\": \"by hand\", "
          "\"tags\": [1, 2]}\r\n";
    } else {
      edited += line + "\r\n";
    }
  }
  edited += "{\"step\": 5, \"task\": \"train\", \"learning_rate\": 0.01}\r\n";
  edited += "# a comment somebody added\n";
  edited += "{\"step\": 6, \"task\": \"train\", \"loss\": 1.25}\n";
  edited += "{\"step\": 7, \"task\": \"tr";
  write_text(d.path / "metrics.jsonl", edited);

  std::ostringstream log;
  auto loop = make_loop(d.str(), &log);
  REQUIRE(loop.resume());
  CHECK(loop.step() == 5);
  const std::string said = log.str();
  CAPTURE(said);
  CHECK(contains(said,
                 "metrics.jsonl: dropped the unfinished last line (23 bytes, an append cut "
                 "short): \"{\"step\": 7, \"task\": \"tr\""));
  CHECK(contains(said,
                 "metrics.jsonl: 1 line is not a metrics record (an object with \"step\" "
                 "and \"task\"); kept as it is, left out of history() (line " +
                     std::to_string(n + 2) + ": \"# a comment somebody added\")"));
  CHECK(contains(said, "metrics.jsonl: 1 line of steps after 5 dropped"));
  const std::string kept = read_text(d.path / "metrics.jsonl");
  // Everything up to step 5 is kept byte for byte (CRLF included), the comment too.
  CHECK(kept.substr(0, edited.find("{\"step\": 6")) ==
        edited.substr(0, edited.find("{\"step\": 6")));
  CHECK_FALSE(contains(kept, "\"step\": 6"));
  CHECK_FALSE(contains(kept, "\"step\": 7"));
  // history(): every record, the hand-edited one with its numbers, the one without loss.
  REQUIRE(loop.history().size() == static_cast<std::size_t>(n + 1));
  CHECK(loop.history()[1].values.at("loss") == 1.5);
  CHECK(loop.history()[1].values.count("note") == 0);
  CHECK(loop.history().back().values.count("loss") == 0);
  loop.run(8);  // training goes on from there
  CHECK(loop.step() == 8);
}

TEST_CASE(
    "resume: a damaged newest checkpoint names the intact one and the way out; nothing changes") {
  TempDir d("damaged");
  std::ostringstream sink;
  {
    auto loop = make_loop(d.str(), &sink);
    loop.run(12);  // checkpoints 5, 10, 12
  }
  const std::string newest = training::checkpoint_path(d.str(), 12);
  const std::string bytes = read_text(newest);
  write_text(newest, bytes.substr(0, bytes.size() / 2));
  const std::string metrics = read_text(d.path / "metrics.jsonl");
  auto loop = make_loop(d.str(), &sink);
  const std::string msg = testutil::error_message([&] { loop.resume(); });
  CAPTURE(msg);
  CHECK(contains(msg, newest));
  CHECK(contains(msg, "The newest checkpoint is damaged; the newest intact checkpoint is " +
                          training::checkpoint_path(d.str(), 10) +
                          " (step 10); to resume from it, move the damaged file aside (mv '" +
                          newest + "' '" + newest +
                          ".damaged') and resume again. Nothing was changed."));
  CHECK(read_text(d.path / "metrics.jsonl") == metrics);
  CHECK(training::list_checkpoints(d.str()).size() == 3);
  // Following the advice works.
  fs::rename(newest, newest + ".damaged");
  auto again = make_loop(d.str(), &sink);
  REQUIRE(again.resume());
  CHECK(again.step() == 10);
}

TEST_CASE("resume: a checkpoint beyond the run's steps, or with a negative step, is refused") {
  TempDir d("beyond");
  std::ostringstream sink;
  {
    auto loop = make_loop(d.str(), &sink);
    loop.run(10);
  }
  const std::string metrics = read_text(d.path / "metrics.jsonl");
  auto loop = make_loop(d.str(), &sink);
  CHECK_THROWS_WITH_AS(loop.resume(8),
                       (training::checkpoint_path(d.str(), 10) +
                        ": holds step 10, beyond the 8 steps of this run; a run cannot go back "
                        "(give at least 10 steps). Nothing was changed.")
                           .c_str(),
                       training::CheckpointError);
  CHECK(read_text(d.path / "metrics.jsonl") == metrics);
  CHECK(loop.step() == 0);
  // A negative step (a file made by hand or by another tool).
  training::Checkpoint c = training::load_checkpoint(training::checkpoint_path(d.str(), 10));
  c.step = -3;
  const std::string odd = training::checkpoint_path(d.str(), 11);
  training::save_checkpoint(odd, c);
  CHECK_THROWS_WITH_AS(training::load_checkpoint(odd),
                       (odd + ": 'step' is -3; a checkpoint's step is a count of completed "
                              "steps, >= 0")
                           .c_str(),
                       training::CheckpointError);
}
