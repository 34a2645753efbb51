// minitrax/training/loop.cpp
#include "training/loop.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "autodiff/tape.hpp"
#include "core/format.hpp"
#include "core/npy.hpp"
#include "training/checkpoint.hpp"

namespace minitrax::training {

namespace fs = std::filesystem;
using base::Stack;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lds", s);
  }
  return buf;
}

// The shortest text that reads back (strtod) to exactly `v`, so that values reloaded
// on resume are the values an uninterrupted run holds; null for NaN and infinities.
std::string json_number(double v) {
  return std::isfinite(v) ? core::shortest(v) : "null";
}

// One line of metrics.jsonl: a JSON object with "step" (an integer >= 0) and "task" (a
// string); every other member that is a number (or null: NaN) is a value, members of
// other types are ignored. A CR before the line's end (a file edited on Windows) is
// allowed. False if the line is not such an object.
bool parse_metrics_line(std::string_view line, MetricsRecord& r) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // Deeply nested text is not a record; refuse it before the parser recurses.
  long depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : line) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  if (max_depth > 16) return false;
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  const auto step = j.find("step");
  const auto task = j.find("task");
  if (step == j.end() || task == j.end() || !task->is_string()) return false;
  if (!step->is_number_integer()) return false;
  if (step->is_number_unsigned()) {
    if (step->get<unsigned long long>() >
        static_cast<unsigned long long>(std::numeric_limits<long>::max())) {
      return false;
    }
  } else if (step->get<long long>() < 0) {
    return false;
  }
  r = MetricsRecord{};
  r.step = step->get<long>();
  r.task = task->get<std::string>();
  for (const auto& [key, value] : j.items()) {
    if (key == "step" || key == "task") continue;
    if (value.is_number()) {
      r.values[key] = value.get<double>();
    } else if (value.is_null()) {
      r.values[key] = NAN;
    }
  }
  return true;
}

// A JSON string literal (invalid UTF-8 replaced, not thrown on).
std::string json_string(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A line of text for a message: at most 80 characters, control characters as '?'.
std::string excerpt(std::string_view line) {
  std::string s(line.substr(0, 80));
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 32) c = '?';
  }
  return "\"" + s + (line.size() > 80 ? "...\"" : "\"");
}

}  // namespace

Loop::Loop(base::LayerPtr model, TrainTask train, std::vector<EvalTask> evals, LoopOptions options,
           core::Key rng)
    : model_(std::move(model)),
      train_(std::move(train)),
      evals_(std::move(evals)),
      options_(std::move(options)),
      rng_(rng) {
  if (!model_) throw ValueError("Loop: the model is null");
  if (!train_.stream) throw ValueError("Loop: the training task has no stream");
  if (!train_.loss) throw ValueError("Loop: the training task has no loss layer");
  if (!train_.optimizer) throw ValueError("Loop: the training task has no optimizer");
  if (train_.loss->n_in() != 3 || train_.loss->n_out() != 1) {
    throw ValueError("Loop: the loss layer " + train_.loss->name() +
                     " must take (output, targets, weights) and give one value; it has n_in " +
                     std::to_string(train_.loss->n_in()) + ", n_out " +
                     std::to_string(train_.loss->n_out()));
  }
  if (model_->n_in() != 1 || model_->n_out() < 1) {
    throw ValueError("Loop: the model must take one input (the batch's inputs); " + model_->name() +
                     " has n_in " + std::to_string(model_->n_in()));
  }
  for (const EvalTask& e : evals_) {
    if (!e.stream) throw ValueError("Loop: eval task '" + e.name + "' has no stream");
    if (e.n_batches < 1) throw ValueError("Loop: eval task '" + e.name + "' needs n_batches >= 1");
    for (const auto& [name, m] : e.metrics) {
      if (!m || m->n_in() != 3 || m->n_out() != 1) {
        throw ValueError("Loop: metric '" + name + "' of eval task '" + e.name +
                         "' must be a layer taking (output, targets, weights) to one value");
      }
    }
  }
  if (options_.eval_every < 0 || options_.checkpoint_every < 0 || options_.log_every < 1) {
    throw ValueError("Loop: eval_every and checkpoint_every must be >= 0, log_every >= 1");
  }
  if (!options_.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options_.output_dir, ec);
    if (ec || !fs::is_directory(options_.output_dir)) {
      throw FileError("Loop: cannot create the output folder '" + options_.output_dir +
                      "': " + (ec ? ec.message() : std::string("not a folder")));
    }
    lock_ = RunLock::acquire(options_.output_dir);
  }
  switch (options_.progress) {
    case Progress::automatic:
      bar_ = ::isatty(STDOUT_FILENO) && options_.out == nullptr;
      break;
    case Progress::bar:
      bar_ = true;
      break;
    default:
      bar_ = false;
      break;
  }
}

std::ostream& Loop::out() const {
  return options_.out ? *options_.out : std::cout;
}

void Loop::ensure_initialized(const Batch& batch) {
  if (!model_->initialized()) {
    model_->init({{batch.inputs.shape(), batch.inputs.dtype()}}, core::fold_in(rng_, 0xffffffffu));
  }
  if (weights_.empty()) {
    for (const auto& w : model_->flat_weights()) weights_.push_back(w.value);
  }
  if (!train_.optimizer->initialized()) train_.optimizer->init(model_->flat_weights());
}

double Loop::train_step() {
  const long step_number = step_ + 1;  // 1-based, as Trax's Loop counts
  const Batch batch = train_.stream(step_);
  ensure_initialized(batch);
  const auto keys = core::split(core::fold_in(rng_, static_cast<std::uint32_t>(step_)), 2);
  const base::State state_before = model_->state();

  // The forward pass and the loss, recorded on `tape` (the weights watched on it).
  auto forward = [&](autodiff::Tape& tape, std::vector<Var>& ws) {
    ws.clear();
    ws.reserve(weights_.size());
    for (const Tensor& w : weights_) ws.push_back(tape.watch(w));
    model_->set_flat_weights(ws);
    Stack out = model_->apply({Var(batch.inputs)}, keys[0]);
    return train_.loss->apply({out.at(0), Var(batch.targets), Var(batch.weights)}, keys[1])[0];
  };

  std::vector<Tensor> grads;
  double loss = 0;
  {
    autodiff::Tape tape;
    std::vector<Var> ws;
    try {
      Var l = forward(tape, ws);
      loss = l.value().item<double>();
      if (std::isfinite(loss)) grads = tape.gradient(l, ws);
    } catch (...) {
      model_->set_flat_weights(weights_);
      throw;
    }
  }
  if (!std::isfinite(loss)) {
    // Stop instead of training on garbage, and say where the first NaN or Inf came
    // from: the same step once more with every op's output checked (debug_nans).
    std::string where = "(the replay with debug_nans found no non-finite op output)";
    model_->set_state(state_before);
    const bool was_on = autodiff::debug_nans();
    autodiff::set_debug_nans(true);
    try {
      autodiff::Tape tape;
      std::vector<Var> ws;
      (void)forward(tape, ws);
    } catch (const autodiff::NonFiniteError& e) {
      where = e.what();
    } catch (const base::LayerError& e) {
      where = e.what();
    } catch (const std::exception& e) {
      where = std::string("(the replay failed: ") + e.what() + ")";
    }
    autodiff::set_debug_nans(was_on);
    model_->set_state(state_before);
    model_->set_flat_weights(weights_);
    throw autodiff::NonFiniteError(
        "training stopped: the loss is " + std::string(std::isnan(loss) ? "NaN" : "infinite") +
        " at step " + std::to_string(step_number) +
        "; nothing was updated or saved. The first non-finite value: " + where);
  }
  if (train_.lr_schedule) train_.optimizer->set_learning_rate(train_.lr_schedule(step_number));
  train_.optimizer->update(step_, grads, weights_);
  model_->set_flat_weights(weights_);
  step_ = step_number;
  last_loss_ = loss;
  return loss;
}

std::map<std::string, double> Loop::evaluate(const EvalTask& task) {
  if (!weights_.empty()) model_->set_flat_weights(weights_);
  const base::Mode mode = model_->mode();
  const base::State saved_state = model_->state();
  model_->set_mode(base::Mode::eval);
  std::map<std::string, double> sums;
  try {
    autodiff::NoRecord quiet;
    for (long b = 0; b < task.n_batches; ++b) {
      const Batch batch = task.stream(b);
      ensure_initialized(batch);
      const core::Key key =
          core::fold_in(core::fold_in(rng_, 0xfffffffeu), static_cast<std::uint32_t>(b));
      Stack out = model_->apply({Var(batch.inputs)}, key);
      for (const auto& [name, metric] : task.metrics) {
        metric->set_mode(base::Mode::eval);
        Var v = metric->apply({out.at(0), Var(batch.targets), Var(batch.weights)}, key)[0];
        sums[name] += v.value().item<double>();
      }
    }
  } catch (...) {
    model_->set_mode(mode);
    model_->set_state(saved_state);
    throw;
  }
  model_->set_mode(mode);
  model_->set_state(saved_state);  // evaluation leaves the training state as it was
  for (auto& [name, v] : sums) v /= static_cast<double>(task.n_batches);
  record({step_, task.name, sums});
  return sums;
}

void Loop::record(const MetricsRecord& r) {
  history_.push_back(r);
  if (options_.output_dir.empty()) return;
  std::ostringstream line;
  line << "{\"step\": " << r.step << ", \"task\": " << json_string(r.task);
  for (const auto& [k, v] : r.values) {
    line << ", " << json_string(k) << ": " << json_number(v);
  }
  line << "}\n";
  // One write on an O_APPEND descriptor; a short write (a full disk) is undone, so the
  // file never ends in half a line.
  const fs::path path = fs::path(options_.output_dir) / "metrics.jsonl";
  const std::string text = line.str();
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw FileError(path.string() + ": cannot open for appending: " + std::strerror(errno));
  }
  const off_t old_size = ::lseek(fd, 0, SEEK_END);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      if (old_size >= 0 && ::ftruncate(fd, old_size) != 0) {
        // nothing more to do: the error below is what matters
      }
      ::close(fd);
      throw FileError(path.string() + ": cannot append: " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    throw FileError(path.string() + ": cannot append: " + std::strerror(errno));
  }
}

void Loop::progress(long target, double loss, bool force) {
  if (options_.progress == Progress::none) return;
  const double t = now_seconds();
  const double elapsed = t - run_start_;
  const long done = step_ - run_start_step_;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(target - step_) / rate : NAN;
  char stats[160];
  std::snprintf(stats, sizeof stats, "loss %.4f | %.2f steps/s | ETA %s", loss, rate,
                format_duration(eta).c_str());
  if (bar_) {
    if (!force && t - last_log_ < 0.1) return;
    last_log_ = t;
    const int width = 30;
    const int filled = target > 0 ? static_cast<int>(width * step_ / target) : width;
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    out() << "\r  step " << step_ << "/" << target << " [" << bar << "] " << stats << "   "
          << std::flush;
    if (force) out() << "\n";
    return;
  }
  if (force || step_ % options_.log_every == 0) {
    out() << "step " << step_ << "/" << target << ": " << stats << "\n" << std::flush;
  }
}

void Loop::check_folder_is_new() {
  if (folder_checked_ || options_.output_dir.empty()) return;
  const std::string held = describe_run(options_.output_dir);
  if (!held.empty()) {
    throw RunExistsError("Loop: the folder '" + options_.output_dir + "' already holds a run (" +
                         held +
                         "); call resume() to continue it, or give another output_dir "
                         "(nothing was changed)");
  }
  folder_checked_ = true;
}

void Loop::stop(int signal, long target, bool checkpoint_written) {
  std::string path;
  if (!options_.output_dir.empty()) {
    if (!checkpoint_written) save_checkpoint();
    path = checkpoint_path(options_.output_dir, step_);
  }
  if (bar_) out() << "\n";
  std::string msg = "stopped by " + signal_name(signal) + " after step " + std::to_string(step_) +
                    " of " + std::to_string(target);
  msg += path.empty() ? " (no output_dir: nothing was saved)"
                      : "; checkpoint " + path + " written, metrics.jsonl up to date";
  out() << std::flush;
  throw Stopped(signal, step_, path, msg);
}

void Loop::run(long n_steps) {
  if (n_steps < step_) {
    throw ValueError("Loop::run: asked to run until step " + std::to_string(n_steps) +
                     " but the loop is already at step " + std::to_string(step_));
  }
  check_folder_is_new();
  std::optional<StopSignals> graceful;
  if (options_.graceful_stop) graceful.emplace();
  run_start_ = now_seconds();
  run_start_step_ = step_;
  last_log_ = 0;
  auto eval_all = [&] {
    for (const EvalTask& e : evals_) {
      const auto values = evaluate(e);
      if (options_.progress == Progress::none) continue;
      if (bar_) out() << "\n";
      out() << "  eval '" << e.name << "' at step " << step_ << ":";
      for (const auto& [k, v] : values) out() << "  " << k << " " << v;
      out() << "\n" << std::flush;
    }
  };
  while (step_ < n_steps) {
    const double t0 = now_seconds();
    const double loss = train_step();
    const double dt = now_seconds() - t0;
    record({step_,
            "train",
            {{"loss", loss},
             {"learning_rate", train_.optimizer->learning_rate()},
             {"step_seconds", dt}}});
    progress(n_steps, loss, step_ == n_steps);
    if (options_.eval_every > 0 && step_ % options_.eval_every == 0 && step_ != n_steps) {
      eval_all();
    }
    // Not at the last step: the final checkpoint comes after the final evaluation, so
    // that a checkpoint of step n always follows every metrics line of step n (a run
    // resumed from it has them all; see restore_metrics).
    bool saved = false;
    if (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0 &&
        step_ != n_steps && !options_.output_dir.empty()) {
      save_checkpoint();
      saved = true;
    }
    // A stop asked for by a signal: at this step boundary every line of the step is
    // written; the checkpoint makes it the point a resumed run continues from.
    if (graceful && step_ != n_steps) {
      if (const int sig = StopSignals::requested(); sig != 0) stop(sig, n_steps, saved);
    }
  }
  eval_all();
  if (!options_.output_dir.empty()) save_checkpoint();
}

void Loop::save_checkpoint() {
  if (options_.output_dir.empty()) {
    throw ValueError("Loop::save_checkpoint: no output_dir was given");
  }
  Checkpoint c;
  c.step = step_;
  c.weights = model_->flat_weights();
  c.state = model_->flat_state();
  if (train_.optimizer->initialized()) c.slots = train_.optimizer->slots();
  c.keys = {{"loop", rng_}};
  // The metrics lines up to this step reach the disk before the checkpoint does, so a
  // run resumed from it after a power cut finds them all (appends are not synced).
  const fs::path metrics = fs::path(options_.output_dir) / "metrics.jsonl";
  if (const int fd = ::open(metrics.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
    const int synced = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (synced != 0) {
      throw FileError(metrics.string() + ": cannot sync: " + std::strerror(err));
    }
  }
  training::save_checkpoint(checkpoint_path(options_.output_dir, c.step), c);
  prune();
}

void Loop::prune() {
  // Called right after the newest checkpoint was written or loaded, so it is intact.
  // A checkpoint off the checkpoint_every schedule (written at a graceful stop, or the
  // last one of an earlier run() to a smaller step) is only needed until a newer one
  // exists: dropping it leaves the folder as an uninterrupted run leaves it.
  const auto all = list_checkpoints(options_.output_dir);
  if (all.size() > 1 && options_.checkpoint_every > 0) {
    const long newest = all.back().first;
    for (const auto& [step, path] : all) {
      if (step < newest && step % options_.checkpoint_every != 0) {
        std::error_code ec;
        fs::remove(path, ec);
      }
    }
  }
  prune_checkpoints(options_.output_dir, options_.keep_checkpoints);
}

void Loop::restore_metrics(long step) {
  const fs::path path = fs::path(options_.output_dir) / "metrics.jsonl";
  std::vector<MetricsRecord> kept_records;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    history_.clear();
    return;
  }
  const std::string text = core::read_file(path.string());
  std::string kept;
  long dropped_later = 0, not_records = 0, first_not_record = 0;
  std::string first_not_record_text;
  std::size_t begin = 0;
  for (long line_no = 1; begin < text.size(); ++line_no) {
    const std::size_t nl = text.find('\n', begin);
    const bool finished = nl != std::string::npos;
    const std::string_view line(text.data() + begin, (finished ? nl : text.size()) - begin);
    begin = finished ? nl + 1 : text.size();
    MetricsRecord r;
    if (parse_metrics_line(line, r)) {
      if (r.step > step) {
        ++dropped_later;  // written after the checkpoint; the resumed run writes it again
        continue;
      }
      kept.append(line).append("\n");
      kept_records.push_back(std::move(r));
      continue;
    }
    if (!finished) {
      // Half a line at the end: an append cut short by a kill. It cannot be kept (the
      // next line would be glued to it); say what goes.
      out() << "resume: " << path.string() << ": dropped the unfinished last line (" << line.size()
            << " bytes, an append cut short): " << excerpt(line) << "\n";
      continue;
    }
    // Not a metrics record (edited by hand, another tool's line): kept as it is.
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      if (not_records++ == 0) {
        first_not_record = line_no;
        first_not_record_text = excerpt(line);
      }
    }
    kept.append(line).append("\n");
  }
  if (not_records > 0) {
    out() << "resume: " << path.string() << ": " << not_records << " line"
          << (not_records == 1 ? " is" : "s are")
          << " not a metrics record (an object with \"step\" and \"task\"); kept as "
          << (not_records == 1 ? "it is" : "they are") << ", left out of history() (line "
          << first_not_record << ": " << first_not_record_text << ")\n";
  }
  if (dropped_later > 0) {
    out() << "resume: " << path.string() << ": " << dropped_later << " line"
          << (dropped_later == 1 ? "" : "s") << " of steps after " << step
          << " dropped (the resumed run writes them again)\n";
  }
  // Atomically, so that a kill now leaves either the old file or the new one.
  if (kept != text) core::write_file_atomic(path.string(), kept);
  history_ = std::move(kept_records);
}

bool Loop::resume(long max_step) {
  folder_checked_ = true;  // the caller continues whatever the folder holds
  if (options_.output_dir.empty()) return false;
  const auto all = list_checkpoints(options_.output_dir);
  if (all.empty()) {
    // Starting over: lines of a run killed before its first checkpoint are dropped,
    // and what its killed atomic writes left (temporaries of dead processes).
    restore_metrics(0);
    remove_stale_temporaries(options_.output_dir);
    return false;
  }
  const std::string path = all.back().second;
  Checkpoint c;
  try {
    c = load_checkpoint(path);
  } catch (const core::Error& e) {
    // Offer the way out: the newest checkpoint that does load.
    std::string way_out;
    for (std::size_t i = all.size() - 1; i-- > 0;) {
      try {
        (void)load_checkpoint(all[i].second);
        way_out = "the newest intact checkpoint is " + all[i].second + " (step " +
                  std::to_string(all[i].first) +
                  "); to resume from it, move the damaged file aside (mv '" + path + "' '" + path +
                  ".damaged') and resume again";
        break;
      } catch (const core::Error&) {
        // damaged too: look further back
      }
    }
    if (way_out.empty()) {
      way_out = "no checkpoint in " + options_.output_dir +
                " loads; the run cannot be continued (start it anew in another folder)";
    }
    throw CheckpointError(std::string(e.what()) + "\nThe newest checkpoint is damaged; " + way_out +
                          ". Nothing was changed.");
  }
  if (max_step >= 0 && c.step > max_step) {
    throw CheckpointError(path + ": holds step " + std::to_string(c.step) + ", beyond the " +
                          std::to_string(max_step) +
                          " steps of this run; a run cannot go back (give at least " +
                          std::to_string(c.step) + " steps). Nothing was changed.");
  }
  if (!model_->initialized()) ensure_initialized(train_.stream(c.step));
  if (!train_.optimizer->initialized()) train_.optimizer->init(model_->flat_weights());
  // Check everything before changing anything.
  check_matches(model_->flat_weights(), c.weights, "weight", path);
  check_matches(model_->flat_state(), c.state, "state", path);
  check_matches(train_.optimizer->slots(), c.slots, "optimizer slot", path);
  // metrics.jsonl back to the checkpoint's step (lines written after it, before a
  // kill, are dropped; they will be written again).
  restore_metrics(c.step);
  // And what a killed run may have left undone: temporaries of its atomic writes, and
  // the pruning after its last checkpoint (killed between the two).
  remove_stale_temporaries(options_.output_dir);
  prune();
  restore_model(*model_, c, path);
  train_.optimizer->set_slots(c.slots);
  for (const auto& [name, key] : c.keys) {
    if (name == "loop") rng_ = key;
  }
  weights_.clear();
  for (const auto& w : model_->flat_weights()) weights_.push_back(w.value);
  step_ = c.step;
  return true;
}

}  // namespace minitrax::training
