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
#include <sstream>

#include "autodiff/tape.hpp"
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

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Parses one line of metrics.jsonl as record() writes it:
// {"step": 12, "task": "train", "loss": 1.5, "x": null}. False if it is not one
// (e.g. the half line a killed process may leave at the end).
bool parse_metrics_line(const std::string& line, MetricsRecord& r) {
  std::size_t i = 0;
  auto space = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  };
  auto eat = [&](char c) {
    space();
    if (i >= line.size() || line[i] != c) return false;
    ++i;
    return true;
  };
  auto string = [&](std::string& out) {
    if (!eat('"')) return false;
    const std::size_t end = line.find('"', i);
    if (end == std::string::npos) return false;
    out = line.substr(i, end - i);
    i = end + 1;
    return true;
  };
  if (!eat('{')) return false;
  bool has_step = false, has_task = false;
  r = MetricsRecord{};
  for (;;) {
    std::string key;
    if (!string(key) || !eat(':')) return false;
    space();
    if (key == "task") {
      if (!string(r.task)) return false;
      has_task = true;
    } else if (line.compare(i, 4, "null") == 0) {
      r.values[key] = NAN;
      i += 4;
    } else {
      const char* begin = line.c_str() + i;
      char* end = nullptr;
      const double v = std::strtod(begin, &end);
      if (end == begin) return false;
      i += static_cast<std::size_t>(end - begin);
      if (key == "step") {
        if (v != std::floor(v) || v < 0) return false;
        r.step = static_cast<long>(v);
        has_step = true;
      } else {
        r.values[key] = v;
      }
    }
    if (eat(',')) continue;
    if (!eat('}')) return false;
    break;
  }
  space();
  return i == line.size() && has_step && has_task;
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
  line << "{\"step\": " << r.step << ", \"task\": \"" << r.task << "\"";
  for (const auto& [k, v] : r.values) line << ", \"" << k << "\": " << json_number(v);
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

void Loop::run(long n_steps) {
  if (n_steps < step_) {
    throw ValueError("Loop::run: asked to run until step " + std::to_string(n_steps) +
                     " but the loop is already at step " + std::to_string(step_));
  }
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
    if (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0 &&
        step_ != n_steps && !options_.output_dir.empty()) {
      save_checkpoint();
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
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t nl = text.find('\n', begin);
    if (nl == std::string::npos) break;  // a half line at the end: a killed append
    const std::string line = text.substr(begin, nl - begin);
    begin = nl + 1;
    MetricsRecord r;
    if (!parse_metrics_line(line, r) || r.step > step) continue;
    kept += line + "\n";
    kept_records.push_back(std::move(r));
  }
  // Atomically, so that a kill now leaves either the old file or the new one.
  if (kept != text) core::write_file_atomic(path.string(), kept);
  history_ = std::move(kept_records);
}

bool Loop::resume() {
  if (options_.output_dir.empty()) return false;
  const auto path = latest_checkpoint(options_.output_dir);
  if (!path) {
    // Starting over: lines of a run killed before its first checkpoint are dropped,
    // and what its killed atomic writes left (temporaries of dead processes).
    restore_metrics(0);
    remove_stale_temporaries(options_.output_dir);
    return false;
  }
  const Checkpoint c = load_checkpoint(*path);
  if (!model_->initialized()) ensure_initialized(train_.stream(c.step));
  if (!train_.optimizer->initialized()) train_.optimizer->init(model_->flat_weights());
  // Check everything before changing anything.
  check_matches(model_->flat_weights(), c.weights, "weight", *path);
  check_matches(model_->flat_state(), c.state, "state", *path);
  check_matches(train_.optimizer->slots(), c.slots, "optimizer slot", *path);
  // metrics.jsonl back to the checkpoint's step (lines written after it, before a
  // kill, are dropped; they will be written again).
  restore_metrics(c.step);
  // And what a killed run may have left undone: temporaries of its atomic writes, and
  // the pruning after its last checkpoint (killed between the two).
  remove_stale_temporaries(options_.output_dir);
  prune_checkpoints(options_.output_dir, options_.keep_checkpoints);
  restore_model(*model_, c, *path);
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
