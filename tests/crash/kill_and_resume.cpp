// tests/crash/kill_and_resume.cpp: crash safety of the main job (issue 7, point 3).
//
//   kill_and_resume REFORMER_DUPLICATION WORKDIR [--kills N] [--seed S]
//
// Runs examples/reformer_duplication on a tiny config once without interruption (the
// reference), then in fresh run folders ("scenarios") starts it, SIGKILLs it at a
// random moment, checks the folder, starts it again with --resume, kills it again, ...
// and finally lets it finish. The first scenario kills at fixed points (the windows
// random timing rarely hits, see `opening`); the others draw theirs from a seeded
// generator (the same list every time; where a timed kill lands depends on the
// machine's speed):
//   - "timed": SIGKILL after a random delay in [0, the reference's run time times
//     the part of the run left to do, and 0.3 for the start and the final evaluation);
//   - "in write": MINITRAX_TEST_KILL_IN_WRITE=n:PART, the process kills itself halfway
//     through the n-th atomic write of a file whose path contains PART (a checkpoint,
//     metrics.jsonl when resume rewrites it, config.json, results.json), before the
//     rename (core/npy.cpp);
//   - "after write": MINITRAX_TEST_KILL_AFTER_WRITE=n:ckpt_, killed right after the
//     n-th checkpoint's rename, before pruning.
// After every kill: every ckpt_*.npz in the folder loads (training::load_checkpoint).
// After every finished scenario: no temporaries are left; the folder holds the same
// files as the reference's; the checkpoints, config.json, results.json and curves.svg
// are byte-identical (config.json but for the folder's name); metrics.jsonl is identical but for
// the step_seconds fields; the printed Table 2 row and sample are identical. Scenarios alternate
// --checkpoint-every 3 and 1 (one reference for each; the two references' final checkpoints must be
// identical too). Exit 0 on success, 1 on a failure (with what differed), 2 on a usage error.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../test_util.hpp"
#include "core/npy.hpp"
#include "training/checkpoint.hpp"

using namespace minitrax;
using testutil::without_timing;
namespace fs = std::filesystem;

namespace {

constexpr long kSteps = 40;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "FAILED: " << msg << std::endl;
  std::exit(1);
}

std::string slurp(const fs::path& p) {
  try {
    return core::read_file(p.string());
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

std::vector<std::string> job_args(const std::string& dir, long checkpoint_every, bool resume) {
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"--length", "16"},
      {"--vocab", "8"},
      {"--d-model", "16"},
      {"--d-ff", "32"},
      {"--n-heads", "2"},
      {"--d-attention-key", "8"},
      {"--d-attention-value", "8"},
      {"--chunk-len", "4"},
      {"--n-buckets", "4"},
      {"--n-hashes", "2"},
      {"--batch", "4"},
      {"--steps", std::to_string(kSteps)},
      {"--warmup-steps", "5"},
      {"--eval-every", "10"},
      {"--eval-batches", "1"},
      {"--eval-batch", "8"},
      {"--eval-n-hashes", "1,2"},
      {"--progress", "none"},
      {"--checkpoint-every", std::to_string(checkpoint_every)},
      {"--output-dir", dir}};
  std::vector<std::string> a;
  for (const auto& [flag, value] : flags) {
    a.push_back(flag);
    a.push_back(value);
  }
  if (resume) a.push_back("--resume");
  return a;
}

struct Outcome {
  bool killed = false;  // ended by SIGKILL (ours or its own)
  int died_of = 0;      // ended by this other signal (a second SIGINT)
  int exit_code = -1;   // if it exited
  double seconds = 0;
};

// Runs the job; `env` is added to the child's environment; `kill_after` > 0 sends
// `signal` (SIGKILL unless told) after that many seconds if it is still running, and
// `repeat` > 0 sends it once more that many seconds later (Ctrl-C pressed twice).
Outcome run_job(const std::string& binary, const std::vector<std::string>& args,
                const std::vector<std::pair<std::string, std::string>>& env, double kill_after,
                const fs::path& log, double hang_limit, int signal = SIGKILL, double repeat = 0) {
  const double t0 = now();
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork failed");
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    std::perror("execv");
    std::_Exit(127);
  }
  int status = 0;
  bool sent = false, resent = false;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    const double t = now() - t0;
    if (t >= hang_limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      fail("the job ran longer than " + std::to_string(hang_limit) + " s (log: " + log.string() +
           ")");
    }
    if (!sent && kill_after > 0 && t >= kill_after) {
      ::kill(pid, signal);
      sent = true;
    }
    if (sent && !resent && repeat > 0 && t >= kill_after + repeat) {
      ::kill(pid, signal);
      resent = true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  Outcome o;
  o.seconds = now() - t0;
  if (WIFSIGNALED(status) && signal != SIGKILL && sent && WTERMSIG(status) == signal) {
    // A second signal ends the process at once, as it should; so does one that comes
    // before the program has installed its handlers (in its first milliseconds).
    o.died_of = signal;
  } else if (WIFSIGNALED(status)) {
    if (WTERMSIG(status) != SIGKILL) {
      fail("the job died of signal " + std::to_string(WTERMSIG(status)) + " (log: " + log.string() +
           "):\n" + slurp(log));
    }
    o.killed = true;
  } else if (WIFEXITED(status)) {
    o.exit_code = WEXITSTATUS(status);
  }
  return o;
}

// "<name>.minitrax-tmp.<pid>.<n>", as core::write_file_atomic names its temporaries.
bool is_temporary(const std::string& name) {
  auto digits = [](const std::string& t) {
    return !t.empty() &&
           std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::size_t last = name.rfind('.');
  if (last == std::string::npos || last == 0) return false;
  const std::size_t pid = name.rfind('.', last - 1);
  const std::string marker = ".minitrax-tmp";
  if (pid == std::string::npos || pid <= marker.size() ||
      name.compare(pid - marker.size(), marker.size(), marker) != 0) {
    return false;
  }
  return digits(name.substr(pid + 1, last - pid - 1)) && digits(name.substr(last + 1));
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  if (!fs::is_directory(dir)) return names;  // killed before it made the folder
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

// Every ckpt_*.npz must load; returns the newest step (0 if none).
long check_checkpoints_load(const fs::path& dir, const std::string& when) {
  long newest = 0;
  for (const auto& [step, path] : training::list_checkpoints(dir.string())) {
    try {
      const training::Checkpoint c = training::load_checkpoint(path);
      if (c.step != step) fail(when + ": " + path + " holds step " + std::to_string(c.step));
    } catch (const std::exception& e) {
      fail(when + ": an unreadable checkpoint on disk: " + e.what());
    }
    newest = std::max(newest, step);
  }
  return newest;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
    s.replace(p, from.size(), to);
  }
  return s;
}

// The lines of the job's output that must not depend on interruptions: the Table 2
// row and the greedy sample.
std::string result_lines(const std::string& out) {
  std::istringstream in(out);
  std::string line, keep;
  bool sample = false;
  while (std::getline(in, line)) {
    if (line.rfind("| ", 0) == 0 || line.rfind("|---", 0) == 0) keep += line + "\n";
    if (line.rfind("greedy sample", 0) == 0) sample = true;
    if (sample && line.rfind("wrote ", 0) == 0) sample = false;
    if (sample && !line.empty()) keep += line + "\n";
  }
  return keep;
}

// Says which member of two checkpoints differs (for the failure message).
std::string checkpoint_difference(const fs::path& a, const fs::path& b) {
  const auto ea = core::load_npz(a.string()), eb = core::load_npz(b.string());
  std::map<std::string, std::string> ma, mb;
  for (const auto& [n, t] : ea) ma[n] = core::to_npy_bytes(t);
  for (const auto& [n, t] : eb) mb[n] = core::to_npy_bytes(t);
  std::string out;
  for (const auto& [n, bytes] : ma) {
    if (!mb.count(n))
      out += " missing '" + n + "';";
    else if (mb[n] != bytes)
      out += " '" + n + "' differs;";
  }
  for (const auto& [n, bytes] : mb) {
    if (!ma.count(n)) out += " extra '" + n + "';";
  }
  return out.empty() ? " (same members and values; the archives' bytes differ)" : out;
}

// Every file of a folder with its bytes (to check that a refused job changed nothing);
// the lock file only by name (it records the pid of whoever locked the folder last).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const std::string& n : listing(dir)) out[n] = n == ".minitrax.lock" ? "" : slurp(dir / n);
  return out;
}

// Runs the job on a copy of a finished run with extra flags; it must be refused with
// `code`, say each of `expected`, and leave every file as it was.
void expect_refused(const std::string& binary, const fs::path& dir,
                    const std::vector<std::string>& extra, int code,
                    const std::vector<std::string>& expected, const fs::path& log,
                    const std::string& what) {
  const auto before = snapshot(dir);
  std::vector<std::string> args = {"--resume", "--output-dir", dir.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  const Outcome o = run_job(binary, args, {}, 0, log, 120);
  const std::string said = slurp(log);
  if (o.exit_code != code) {
    fail(what + ": exit " + std::to_string(o.exit_code) + ", expected " + std::to_string(code) +
         ":\n" + said);
  }
  for (const std::string& e : expected) {
    if (said.find(e) == std::string::npos) fail(what + ": the message lacks '" + e + "':\n" + said);
  }
  if (snapshot(dir) != before) fail(what + ": the refused job changed the folder");
  std::cout << "  " << what << ": refused (exit " << code << "), nothing changed\n";
}

struct Reference {
  fs::path dir;
  std::string out;
  double seconds = 0;
};

void compare_with_reference(const fs::path& dir, const std::string& final_out, const Reference& ref,
                            const std::string& what) {
  const auto names = listing(dir), ref_names = listing(ref.dir);
  for (const std::string& n : names) {
    if (is_temporary(n)) fail(what + ": a temporary was left behind: " + n);
  }
  if (names != ref_names) {
    fail(what + ": the folder holds [" + join(names) + "], the reference's [" + join(ref_names) +
         "]");
  }
  for (const std::string& n : names) {
    if (n == ".minitrax.lock") continue;  // the pid of whoever held the folder last
    // The run folder's own name (config.json's output_dir) aside.
    const std::string a = replace_all(slurp(dir / n), dir.string(), "<dir>"),
                      b = replace_all(slurp(ref.dir / n), ref.dir.string(), "<dir>");
    if (n == "metrics.jsonl") {
      if (without_timing(a) != without_timing(b)) {
        fail(what +
             ": metrics.jsonl differs from the reference's (step_seconds aside):\n--- "
             "resumed:\n" +
             without_timing(a) + "--- reference:\n" + without_timing(b));
      }
    } else if (a != b) {
      std::string detail;
      if (n.rfind("ckpt_", 0) == 0) detail = checkpoint_difference(dir / n, ref.dir / n);
      fail(what + ": " + n + " is not byte-identical to the reference's" + detail);
    }
  }
  if (result_lines(final_out) != result_lines(ref.out)) {
    fail(what + ": the printed results differ:\n" + result_lines(final_out) + "--- reference:\n" +
         result_lines(ref.out));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: kill_and_resume REFORMER_DUPLICATION WORKDIR [--kills N] [--seed S]\n";
    return 2;
  }
  const std::string binary = argv[1];
  const fs::path work = argv[2];
  long target_kills = 30;
  unsigned seed = 7;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--kills") {
      target_kills = std::atol(argv[i + 1]);
    } else if (flag == "--seed") {
      seed = static_cast<unsigned>(std::atol(argv[i + 1]));
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  const double started = now();
  fs::remove_all(work);
  fs::create_directories(work / "logs");

  // ---- the references: uninterrupted runs ----
  std::map<long, Reference> refs;
  for (long every : {1L, 3L}) {
    Reference r;
    r.dir = work / ("reference_every" + std::to_string(every));
    const fs::path log = work / "logs" / ("reference_every" + std::to_string(every) + ".txt");
    const Outcome o = run_job(binary, job_args(r.dir.string(), every, false), {}, 0, log, 600);
    if (o.exit_code != 0) fail("the reference run failed:\n" + slurp(log));
    r.out = slurp(log);
    r.seconds = o.seconds;
    refs[every] = r;
    std::cout << "reference (checkpoint every " << every << "): " << kSteps << " steps in "
              << o.seconds << " s\n";
  }
  {
    const std::string last = fs::path(training::checkpoint_path("", kSteps)).filename().string();
    if (slurp(refs[1].dir / last) != slurp(refs[3].dir / last)) {
      fail("the references' final checkpoints differ with --checkpoint-every 1 and 3:" +
           checkpoint_difference(refs[1].dir / last, refs[3].dir / last));
    }
  }
  const double t_ref = std::max(refs[1].seconds, refs[3].seconds);

  // ---- one writer per folder: a second job into a running job's folder is refused ----
  {
    const fs::path dir = work / "concurrent";
    const fs::path log_a = work / "logs" / "concurrent_a.txt";
    const pid_t a = ::fork();
    if (a < 0) fail("fork failed");
    if (a == 0) {
      const int fd = ::open(log_a.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
      const auto args = job_args(dir.string(), 3, false);
      std::vector<char*> argv{const_cast<char*>(binary.c_str())};
      for (const std::string& x : args) argv.push_back(const_cast<char*>(x.c_str()));
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      std::_Exit(127);
    }
    // Wait until A holds the lock, then freeze it (SIGSTOP) so that it is surely still
    // running while B tries.
    const std::string holder = "pid " + std::to_string(a) + " ";
    const double t0 = now();
    for (;;) {
      std::ifstream f(dir / ".minitrax.lock");
      std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (text.rfind(holder, 0) == 0) break;
      if (now() - t0 > 60) fail("the first job never took its folder's lock");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::kill(a, SIGSTOP);
    const auto before = listing(dir);
    for (bool resume : {false, true}) {
      const fs::path log_b =
          work / "logs" / (std::string("concurrent_b") + (resume ? "_resume" : "") + ".txt");
      const Outcome b = run_job(binary, job_args(dir.string(), 3, resume), {}, 0, log_b, 60);
      const std::string said = slurp(log_b);
      if (b.exit_code != 2 ||
          said.find("is in use by another process (" + holder) == std::string::npos) {
        fail("a second job into a running job's folder was not refused (exit " +
             std::to_string(b.exit_code) + "):\n" + said);
      }
    }
    if (listing(dir) != before) fail("the refused second job changed the folder");
    ::kill(a, SIGCONT);
    int status = 0;
    ::waitpid(a, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail("the first job failed:\n" + slurp(log_a));
    compare_with_reference(dir, slurp(log_a), refs[3], "concurrent");
    std::cout << "concurrent: a second job (with and without --resume) into a running job's "
                 "folder was refused, naming its pid; the first ended identical to the reference\n";
  }

  // ---- --resume never guesses: refusals before any file is touched ----
  {
    const fs::path dir = work / "rules";
    fs::copy(refs[3].dir, dir, fs::copy_options::recursive);
    const fs::path logs = work / "logs";
    expect_refused(
        binary, dir, {"--d-model", "48", "--lr", "0.5", "--seed", "3", "--chunk-len", "8"}, 2,
        {"these settings differ from the run saved in", "d_model: saved 16, given 48",
         "lr: saved 0.002, given 0.5", "seed: saved 0, given 3", "chunk_len: saved 4, given 8"},
        logs / "rules_model.txt", "--resume with other model and training settings");
    expect_refused(
        binary, dir, {"--n-hashes", "1", "--batch", "8", "--steps", "60"}, 2,
        {"n_hashes: saved 2, given 1", "batch: saved 4, given 8", "steps: saved 40, given 60"},
        logs / "rules_hashes.txt", "--resume with other n_hashes, batch and steps");
    // The newest checkpoint damaged: the way out is named.
    const fs::path newest = training::checkpoint_path(dir.string(), kSteps);
    const fs::path older = training::checkpoint_path(dir.string(), 39);
    const std::string whole = slurp(newest);
    {
      std::ofstream(newest, std::ios::binary | std::ios::trunc)
          << whole.substr(0, whole.size() / 2);
    }
    expect_refused(binary, dir, {}, 1,
                   {"The newest checkpoint is damaged; the newest intact checkpoint is " +
                        older.string() + " (step 39)",
                    "mv '" + newest.string() + "' '" + newest.string() + ".damaged'"},
                   logs / "rules_damaged.txt", "--resume with the newest checkpoint damaged");
    fs::rename(newest, newest.string() + ".damaged");
    // A user's file shaped like the temporaries of old (and a dead pid's): never touched.
    { std::ofstream(dir / "notes.tmp.99999.1") << "mine"; }
    {
      const Outcome o = run_job(binary, {"--resume", "--output-dir", dir.string()}, {}, 0,
                                logs / "rules_after_mv.txt", 120);
      if (o.exit_code != 0 || slurp(newest) != slurp(refs[3].dir / newest.filename()) ||
          slurp(dir / "notes.tmp.99999.1") != "mine") {
        fail(
            "resuming from the older checkpoint after moving the damaged one aside did not "
            "end as the reference:\n" +
            slurp(logs / "rules_after_mv.txt"));
      }
      std::cout << "  following that advice: resumed from step 39, final checkpoint identical "
                   "to the reference's; the user's notes.tmp.99999.1 untouched\n";
    }
    // A checkpoint beyond the run's steps (copied from a longer run, say).
    training::Checkpoint c = training::load_checkpoint(newest.string());
    c.step = 50;
    const std::string beyond = training::checkpoint_path(dir.string(), 50);
    training::save_checkpoint(beyond, c);
    expect_refused(binary, dir, {}, 1,
                   {beyond + ": holds step 50, beyond the 40 steps of this run"},
                   logs / "rules_beyond.txt", "--resume from a checkpoint beyond the run's steps");
    fs::remove(beyond);
    c.step = -2;
    training::save_checkpoint(beyond, c);
    expect_refused(binary, dir, {}, 1, {beyond + ": 'step' is -2"}, logs / "rules_negative.txt",
                   "--resume from a checkpoint with a negative step");
    fs::remove(beyond);
    // Checkpoints but no config.json: the settings are unknown, nothing is guessed.
    fs::remove(dir / "config.json");
    expect_refused(binary, dir, {}, 2,
                   {"holds a run (", "but no config.json, so its settings are unknown"},
                   logs / "rules_no_config.txt", "--resume with checkpoints but no config.json");
    fs::remove_all(dir);
  }

  // ---- metrics.jsonl edited by hand or on Windows: read tolerantly ----
  {
    const fs::path dir = work / "metrics_edited";
    fs::copy(refs[3].dir, dir, fs::copy_options::recursive);
    fs::remove(dir / "results.json");  // as if killed during the final evaluation
    // CRLF line ends everywhere, and an extra member of another type on one line.
    std::istringstream lines(slurp(dir / "metrics.jsonl"));
    std::string line, edited;
    for (int i = 0; std::getline(lines, line); ++i) {
      if (i == 3) line.insert(line.size() - 1, ", \"note\": \"edited by hand\"");
      edited += line + "\r\n";
    }
    { std::ofstream(dir / "metrics.jsonl", std::ios::binary | std::ios::trunc) << edited; }
    const fs::path log = work / "logs" / "metrics_edited.txt";
    Outcome o = run_job(binary, {"--resume", "--output-dir", dir.string()}, {}, 0, log, 120);
    if (o.exit_code != 0 || slurp(dir / "curves.svg") != slurp(refs[3].dir / "curves.svg") ||
        slurp(dir / "metrics.jsonl") != edited) {
      fail(
          "a resume over a CRLF metrics.jsonl with an extra member did not keep it and plot "
          "the reference's curves:\n" +
          slurp(log));
    }
    // A train record without "loss": kept, left out of the loss curve, no crash.
    std::string no_loss = slurp(dir / "metrics.jsonl");
    const std::size_t at = no_loss.find("\"loss\": ", no_loss.find("\"step\": 2,"));
    no_loss.erase(at, no_loss.find(", ", at) + 2 - at);
    { std::ofstream(dir / "metrics.jsonl", std::ios::binary | std::ios::trunc) << no_loss; }
    fs::remove(dir / "results.json");
    o = run_job(binary, {"--resume", "--output-dir", dir.string()}, {}, 0, log, 120);
    if (o.exit_code != 0 || slurp(dir / "metrics.jsonl") != no_loss ||
        slurp(dir / "results.json") != slurp(refs[3].dir / "results.json")) {
      fail("a resume over a metrics.jsonl with a record without \"loss\" failed:\n" + slurp(log));
    }
    fs::remove_all(dir);
    std::cout << "metrics.jsonl with CRLF ends, an extra member, a record without \"loss\": "
                 "kept as written, resumed, curves as the reference's\n";
  }

  // ---- scenarios of kills and resumes ----
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  long kills = 0, timed = 0, in_write = 0, after_write = 0, in_ckpt_write = 0, resumes = 0;
  long timed_in_ckpt_write = 0;
  long graceful = 0, died_of_signal = 0;
  long scenarios = 0, max_kills_in_scenario = 0;
  std::map<std::string, long> landed;  // in-write kills by file
  // The first run's kill points (with --checkpoint-every 3), in order: halfway through
  // writing config.json (nothing else on disk yet); halfway through the first
  // checkpoint (step 3: metrics.jsonl has lines but there is no checkpoint, so the
  // resume starts over); halfway through the second (resumes from step 3 and cuts
  // metrics.jsonl back); halfway through that cut (resume's atomic rewrite of
  // metrics.jsonl); right after a checkpoint's rename, before pruning (four
  // checkpoints on disk); halfway through results.json (training done: the resume
  // only evaluates). Then it finishes; the other runs' kill points are random.
  const std::vector<std::pair<std::string, std::string>> opening = {
      {"MINITRAX_TEST_KILL_IN_WRITE", "1:config.json"},
      {"MINITRAX_TEST_KILL_IN_WRITE", "1:ckpt_"},
      {"MINITRAX_TEST_KILL_IN_WRITE", "2:ckpt_"},
      {"MINITRAX_TEST_KILL_IN_WRITE", "1:metrics.jsonl"},
      {"MINITRAX_TEST_KILL_AFTER_WRITE", "3:ckpt_"},
      {"MINITRAX_TEST_KILL_IN_WRITE", "1:results.json"},
  };
  while (kills < target_kills) {
    const long every = scenarios % 2 == 0 ? 3 : 1;
    const Reference& ref = refs[every];
    const std::string name = "run" + std::to_string(scenarios);
    const fs::path dir = work / name;
    long scenario_kills = 0;
    bool first = true;
    std::string final_out;
    for (int attempt = 0;; ++attempt) {
      const long newest = check_checkpoints_load(dir.string(), name);
      const bool last_attempt = scenario_kills >= 6 || (scenarios > 0 && kills >= target_kills);
      std::vector<std::pair<std::string, std::string>> env;
      double delay = 0, repeat = 0;
      int signal = SIGKILL;
      std::string kind = "finish";
      if (scenarios == 0 && attempt < static_cast<int>(opening.size())) {
        // The first run goes through the windows that random timing rarely hits.
        const auto& [var, value] = opening[static_cast<std::size_t>(attempt)];
        kind = (var == "MINITRAX_TEST_KILL_IN_WRITE" ? "in write " : "after write ") + value;
        env.emplace_back(var, value);
      } else if (!last_attempt) {
        const double u = unit(rng);
        const long left_ckpts = std::max<long>(1, (kSteps - newest) / every);
        // Over what is left of the run (a resumed job has fewer steps to go).
        const double left = 0.3 + 0.7 * static_cast<double>(kSteps - newest) / kSteps;
        if (u < 0.30) {
          kind = "timed";
          delay = unit(rng) * t_ref * left;
        } else if (u < 0.55) {
          // A graceful stop: preemption (SIGTERM) or Ctrl-C (SIGINT).
          signal = unit(rng) < 0.5 ? SIGTERM : SIGINT;
          kind = signal == SIGTERM ? "SIGTERM" : "SIGINT";
          delay = 0.02 + unit(rng) * t_ref * left;
        } else if (u < 0.62) {
          // Ctrl-C twice, 1 ms apart: the second ends the process at once.
          signal = SIGINT;
          kind = "SIGINT twice";
          delay = 0.02 + unit(rng) * t_ref * left;
          repeat = 0.001;
        } else if (u < 0.85) {
          // Halfway through a write: mostly checkpoints, sometimes the other files.
          const double v = unit(rng);
          std::string part = "ckpt_";
          long n = 1 + static_cast<long>(unit(rng) * static_cast<double>(left_ckpts));
          if (v > 0.93) {
            part = "results.json", n = 1;
          } else if (v > 0.86) {
            part = "config.json", n = 1;
          }
          kind = "in write " + std::to_string(n) + ":" + part;
          env.emplace_back("MINITRAX_TEST_KILL_IN_WRITE", std::to_string(n) + ":" + part);
        } else {
          const long n = 1 + static_cast<long>(unit(rng) * static_cast<double>(left_ckpts));
          kind = "after write " + std::to_string(n) + ":ckpt_";
          env.emplace_back("MINITRAX_TEST_KILL_AFTER_WRITE", std::to_string(n) + ":ckpt_");
        }
      }
      const fs::path log = work / "logs" / (name + "_" + std::to_string(attempt) + ".txt");
      const Outcome o = run_job(binary, job_args(dir.string(), every, !first), env, delay, log,
                                60 * t_ref + 60, signal, repeat);
      if (!first) ++resumes;
      first = false;
      if (signal != SIGKILL && o.exit_code == 128 + signal) {
        // Stopped gracefully: it says so and how to resume, left no temporary, and its
        // newest checkpoint holds the last step metrics.jsonl has a line of.
        ++graceful;
        ++scenario_kills;
        ++kills;
        const std::string said = slurp(log);
        if (said.find("stopped by " + kind.substr(0, 7)) == std::string::npos ||
            said.find("to continue: ") == std::string::npos) {
          fail(name + ": a graceful stop (" + kind + ") did not say so:\n" + said);
        }
        for (const std::string& n : listing(dir)) {
          if (is_temporary(n)) fail(name + ": a graceful stop left a temporary: " + n);
        }
        const long ckpt = check_checkpoints_load(dir.string(), name + " after a graceful stop");
        long last_train = 0;
        {
          std::istringstream lines(slurp(dir / "metrics.jsonl"));
          std::string line;
          while (std::getline(lines, line)) {
            if (line.find("\"task\": \"train\"") == std::string::npos) continue;
            last_train = std::atol(line.c_str() + line.find("\"step\": ") + 8);
          }
        }
        if (ckpt != last_train || ckpt == 0) {
          fail(name + ": after a graceful stop (" + kind + ") the newest checkpoint is step " +
               std::to_string(ckpt) + " but metrics.jsonl goes to step " +
               std::to_string(last_train));
        }
        std::cout << "  " << name << " stop " << scenario_kills << " (" << kind;
        std::printf(" %.3f s", delay);
        std::cout << "): exit " << o.exit_code << ", checkpoint " << ckpt << "\n";
        continue;
      }
      if (o.died_of != 0) {
        ++died_of_signal;
        ++kills;
        ++scenario_kills;
        std::cout << "  " << name << " kill " << scenario_kills << " (" << kind
                  << "): ended by the signal at once\n";
        check_checkpoints_load(dir.string(), name + " after " + kind);
        continue;
      }
      if (o.killed) {
        ++kills;
        ++scenario_kills;
        bool tmp_ckpt = false;
        std::string left;
        for (const std::string& n : listing(dir)) {
          if (is_temporary(n)) {
            left += " " + n;
            tmp_ckpt |= n.rfind("ckpt_", 0) == 0;
          }
        }
        if (kind == "timed") ++timed;
        if (kind.rfind("in write", 0) == 0) {
          ++in_write;
          ++landed[kind.substr(kind.find(':') + 1)];
        }
        if (kind.rfind("after write", 0) == 0) ++after_write;
        if (tmp_ckpt) ++in_ckpt_write;
        if (tmp_ckpt && kind == "timed") ++timed_in_ckpt_write;
        const long now_newest = check_checkpoints_load(dir.string(), name + " after a kill");
        std::cout << "  " << name << " kill " << scenario_kills << " (" << kind;
        if (kind == "timed") std::printf(" %.3f s", delay);
        std::cout << "): newest checkpoint " << now_newest << (left.empty() ? "" : ", left:" + left)
                  << "\n";
        if (scenarios == 0 && scenario_kills == 2) {
          // Killed before its first checkpoint: metrics.jsonl but no checkpoint. Without
          // --resume the job must refuse (exit 2) and change nothing.
          const auto before = listing(dir);
          const std::string metrics = slurp(dir / "metrics.jsonl");
          const fs::path log2 = work / "logs" / (name + "_no_resume.txt");
          const Outcome r =
              run_job(binary, job_args(dir.string(), every, false), {}, 0, log2, 60 * t_ref + 60);
          if (r.exit_code != 2 || listing(dir) != before ||
              slurp(dir / "metrics.jsonl") != metrics) {
            fail(name +
                 ": without --resume, a folder holding metrics.jsonl was not refused "
                 "untouched (exit " +
                 std::to_string(r.exit_code) + "):\n" + slurp(log2));
          }
          std::cout << "  " << name << ": without --resume: refused, nothing changed\n";
        }
        continue;
      }
      if (o.exit_code == 0 && kind != "finish") {
        std::cout << "  " << name << ": finished before the kill point (" << kind << ")\n";
      }
      if (o.exit_code != 0) {
        fail(name + ": the job exited with " + std::to_string(o.exit_code) + " (" + kind + "):\n" +
             slurp(log));
      }
      final_out = slurp(log);
      break;
    }
    check_checkpoints_load(dir.string(), name + " at the end");
    compare_with_reference(dir, final_out, ref, name);
    std::cout << name << " (checkpoint every " << every << "): " << scenario_kills
              << " kills, ends identical to the reference\n";
    max_kills_in_scenario = std::max(max_kills_in_scenario, scenario_kills);
    ++scenarios;
  }
  if (graceful == 0) fail("no graceful stop (SIGTERM/SIGINT) landed during the runs");
  std::cout << "\nkill_and_resume: " << kills << " kills (" << timed << " timed, of which "
            << timed_in_ckpt_write << " landed in a checkpoint write; " << in_write
            << " halfway through a write [";
  bool comma = false;
  for (const auto& [part, n] : landed) {
    std::cout << (comma ? ", " : "") << part << " " << n;
    comma = true;
  }
  std::cout << "], " << after_write << " right after a checkpoint's rename); " << in_ckpt_write
            << " in all left a checkpoint half-written; " << graceful
            << " graceful stops (SIGTERM/SIGINT: exit 143/130, checkpoint at the last step); "
            << died_of_signal << " ended at once by a second SIGINT (or before the handlers); "
            << resumes << " resumes over " << scenarios
            << " runs, each ending byte-identical to an uninterrupted run; every checkpoint on "
               "disk loaded after every kill; "
            << static_cast<long>(now() - started) << " s in all\n";
  fs::remove_all(work);
  return 0;
}
