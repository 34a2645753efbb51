// minitrax/training/loop.cpp
#include "training/loop.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
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
  if (model_->n_in() < 1 || model_->n_out() < 1) {
    throw ValueError("Loop: the model " + model_->name() +
                     " must take at least one input and give at least one output; it has n_in " +
                     std::to_string(model_->n_in()) + ", n_out " + std::to_string(model_->n_out()));
  }
  // As in Trax's Serial(model, loss): the loss takes the model's outputs and then the
  // batch's arrays after the model's inputs (usually targets and weights).
  if (train_.loss->n_in() <= model_->n_out() || train_.loss->n_out() != 1) {
    throw ValueError("Loop: the loss layer " + train_.loss->name() +
                     " must take (output, targets, weights) and give one value; it has n_in " +
                     std::to_string(train_.loss->n_in()) + ", n_out " +
                     std::to_string(train_.loss->n_out()) + " (it takes the model's " +
                     std::to_string(model_->n_out()) +
                     " output(s), then the batch's arrays after the model's inputs)");
  }
  loss_extra_ = static_cast<std::size_t>(train_.loss->n_in() - model_->n_out());
  for (const EvalTask& e : evals_) {
    if (!e.stream) throw ValueError("Loop: eval task '" + e.name + "' has no stream");
    if (e.n_batches < 1) throw ValueError("Loop: eval task '" + e.name + "' needs n_batches >= 1");
    if (e.stream.batch_stream() && e.stream.batch_stream() == train_.stream.batch_stream()) {
      throw ValueError("Loop: eval task '" + e.name +
                       "' reads the training stream object itself; every evaluation reset()s "
                       "its stream, which would rewind training: give it a stream of its own");
    }
    for (const auto& [name, m] : e.metrics) {
      if (!m || m->n_in() <= model_->n_out() || m->n_out() != 1) {
        throw ValueError("Loop: metric '" + name + "' of eval task '" + e.name +
                         "' must be a layer taking (output, targets, weights) to one value" +
                         (m ? " (it takes the model's " + std::to_string(model_->n_out()) +
                                  " output(s), then the batch's arrays after the model's inputs; " +
                                  m->name() + " has n_in " + std::to_string(m->n_in()) +
                                  ", n_out " + std::to_string(m->n_out()) + ")"
                            : std::string(" (it is null)")));
      }
    }
  }
  for (const auto& cb : options_.callbacks) {
    if (!cb) throw ValueError("Loop: a callback in LoopOptions::callbacks is null");
  }
  auto check_metric = [&](const std::string& what, const std::string& task,
                          const std::string& metric) {
    std::string names;
    for (const EvalTask& e : evals_) {
      names += (names.empty() ? "" : ", ") + ("'" + e.name + "'");
      if (e.name != task) continue;
      std::string metrics;
      for (const auto& [name, m] : e.metrics) {
        if (name == metric) return;
        metrics += (metrics.empty() ? "" : ", ") + ("'" + name + "'");
      }
      throw ValueError(
          "Loop: " + what + " watches metric '" + metric + "' of eval task '" + task +
          "', which has no such metric (it has: " + (metrics.empty() ? "none" : metrics) + ")");
    }
    throw ValueError(
        "Loop: " + what + " watches eval task '" + task +
        "', but there is no such eval task (there are: " + (names.empty() ? "none" : names) + ")");
  };
  if (options_.early_stopping) {
    const EarlyStopping& es = *options_.early_stopping;
    check_metric("early stopping", es.task, es.metric);
    if (es.patience < 1 || !(es.min_delta >= 0) || !std::isfinite(es.min_delta)) {
      throw ValueError(
          "Loop: early stopping needs patience >= 1 and a finite min_delta >= 0, got "
          "patience " +
          std::to_string(es.patience) + ", min_delta " + core::shortest(es.min_delta));
    }
  }
  if (options_.keep_best) {
    check_metric("keep_best", options_.keep_best->task, options_.keep_best->metric);
    if (options_.output_dir.empty()) {
      throw ValueError(
          "Loop: keep_best writes ckpt_best.npz into the output folder; give an "
          "output_dir");
    }
  }
  if (!(options_.time_budget_seconds >= 0) || !std::isfinite(options_.time_budget_seconds)) {
    throw ValueError("Loop: time_budget_seconds must be a finite number >= 0 (0: no budget), got " +
                     core::shortest(options_.time_budget_seconds));
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

void Loop::check_batch(const Batch& batch, std::size_t extra, const std::string& what) const {
  const std::size_t n_in = static_cast<std::size_t>(model_->n_in());
  if (batch.size() == n_in + extra) return;
  throw ValueError("Loop: " + what + " has " + std::to_string(batch.size()) + " array" +
                   (batch.size() == 1 ? "" : "s") + "; the model " + model_->name() + " takes " +
                   std::to_string(n_in) + " and the loss layer " + train_.loss->name() + " " +
                   std::to_string(extra) + " more (after the model's " +
                   std::to_string(model_->n_out()) + " output" + (model_->n_out() == 1 ? "" : "s") +
                   "): " + std::to_string(n_in + extra) + " expected");
}

Batch Loop::next_train_batch() {
  if (const auto& s = train_.stream.batch_stream()) return s->next();
  return train_.stream.indexed()(step_);
}

Batch Loop::peek_train_batch(long step) {
  if (const auto& s = train_.stream.batch_stream()) {
    const auto pos = s->position();
    Batch b = s->next();
    s->seek(pos);
    return b;
  }
  return train_.stream.indexed()(step);
}

void Loop::ensure_initialized(const Batch& batch) {
  if (!model_->initialized()) {
    const std::size_t n_in = static_cast<std::size_t>(model_->n_in());
    if (batch.size() < n_in) {
      throw ValueError("Loop: a batch has " + std::to_string(batch.size()) + " arrays; the model " +
                       model_->name() + " takes " + std::to_string(n_in));
    }
    base::Signature sig;
    for (std::size_t i = 0; i < n_in; ++i) sig.push_back({batch[i].shape(), batch[i].dtype()});
    model_->init(sig, core::fold_in(rng_, 0xffffffffu));
  }
  if (weights_.empty()) {
    for (const auto& w : model_->flat_weights()) weights_.push_back(w.value);
  }
  if (!train_.optimizer->initialized()) train_.optimizer->init(model_->flat_weights());
}

double Loop::train_step() {
  const long step_number = step_ + 1;  // 1-based, as Trax's Loop counts
  const auto& bs = train_.stream.batch_stream();
  const std::vector<std::int64_t> position_before =
      bs ? bs->position() : std::vector<std::int64_t>{};
  // A step that fails leaves the stream where it was, as it leaves the weights.
  auto rewind = [&] {
    if (bs) bs->seek(position_before);
  };
  Batch batch;
  try {
    batch = next_train_batch();
    check_batch(batch, loss_extra_, "the training batch of step " + std::to_string(step_number));
    ensure_initialized(batch);
  } catch (...) {
    rewind();
    throw;
  }
  const std::size_t n_in = static_cast<std::size_t>(model_->n_in());
  const auto keys = core::split(core::fold_in(rng_, static_cast<std::uint32_t>(step_)), 2);
  const base::State state_before = model_->state();

  // The forward pass and the loss, recorded on `tape` (the weights watched on it).
  auto forward = [&](autodiff::Tape& tape, std::vector<Var>& ws) {
    ws.clear();
    ws.reserve(weights_.size());
    for (const Tensor& w : weights_) ws.push_back(tape.watch(w));
    model_->set_flat_weights(ws);
    Stack in;
    for (std::size_t i = 0; i < n_in; ++i) in.emplace_back(batch[i]);
    Stack stack = model_->apply(in, keys[0]);
    for (std::size_t i = n_in; i < batch.size(); ++i) stack.emplace_back(batch[i]);
    return train_.loss->apply(stack, keys[1])[0];
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
      rewind();
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
    rewind();
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
  auto values = evaluate_task(task);
  record({step_, task.name, values});
  after_eval(task.name, values, /*write=*/true);
  return values;
}

std::map<std::string, double> Loop::evaluate_task(const EvalTask& task) {
  if (!weights_.empty()) model_->set_flat_weights(weights_);
  const std::size_t n_in = static_cast<std::size_t>(model_->n_in());
  std::size_t extra = 0;
  for (const auto& [name, metric] : task.metrics) {
    extra = std::max(extra, static_cast<std::size_t>(metric->n_in() - model_->n_out()));
  }
  const auto& bs = task.stream.batch_stream();
  const base::Mode mode = model_->mode();
  const base::State saved_state = model_->state();
  model_->set_mode(base::Mode::eval);
  std::map<std::string, double> sums;
  try {
    autodiff::NoRecord quiet;
    if (bs) bs->reset();
    for (long b = 0; b < task.n_batches; ++b) {
      Batch batch;
      if (bs) {
        try {
          batch = bs->next();
        } catch (const ValueError& e) {
          throw ValueError("Loop: eval task '" + task.name + "' reads " +
                           std::to_string(task.n_batches) + " batches per evaluation; batch " +
                           std::to_string(b + 1) + " failed: " + e.what());
        }
      } else {
        batch = task.stream.indexed()(b);
      }
      if (batch.size() != n_in + extra) {
        std::string who;
        for (const auto& [name, metric] : task.metrics) {
          if (static_cast<std::size_t>(metric->n_in() - model_->n_out()) == extra) {
            who = "metric '" + name + "' (" + metric->name() + ")";
            break;
          }
        }
        throw ValueError(
            "Loop: batch " + std::to_string(b + 1) + " of eval task '" + task.name + "' has " +
            std::to_string(batch.size()) + " array" + (batch.size() == 1 ? "" : "s") +
            "; the model " + model_->name() + " takes " + std::to_string(n_in) + " and " + who +
            " " + std::to_string(extra) + " more (after the model's " +
            std::to_string(model_->n_out()) + " output" + (model_->n_out() == 1 ? "" : "s") +
            "): " + std::to_string(n_in + extra) + " expected");
      }
      ensure_initialized(batch);
      const core::Key key =
          core::fold_in(core::fold_in(rng_, 0xfffffffeu), static_cast<std::uint32_t>(b));
      Stack in;
      for (std::size_t i = 0; i < n_in; ++i) in.emplace_back(batch[i]);
      const Stack out = model_->apply(in, key);
      for (const auto& [name, metric] : task.metrics) {
        metric->set_mode(base::Mode::eval);
        Stack stack = out;
        const std::size_t take = static_cast<std::size_t>(metric->n_in() - model_->n_out());
        for (std::size_t i = 0; i < take; ++i) stack.emplace_back(batch[n_in + i]);
        Var v = metric->apply(stack, key)[0];
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
  double eta = rate > 0 ? static_cast<double>(target - step_) / rate : NAN;
  if (options_.time_budget_seconds > 0) {
    // A run with a time budget ends with the budget if not before.
    const double left = std::max(0.0, options_.time_budget_seconds - trained_seconds());
    eta = std::isnan(eta) ? left : std::min(eta, left);
  }
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
  end_reason_ = EndReason::signal;
  std::string msg = "stopped by " + signal_name(signal) + " after step " + std::to_string(step_) +
                    " of " + std::to_string(target);
  msg += path.empty() ? " (no output_dir: nothing was saved)"
                      : "; checkpoint " + path + " written, metrics.jsonl up to date";
  out() << std::flush;
  throw Stopped(signal, step_, path, msg);
}

void Loop::eval_all() {
  const double t0 = now_seconds();
  for (const EvalTask& e : evals_) {
    const auto values = evaluate(e);
    if (options_.progress == Progress::none) continue;
    if (bar_) out() << "\n";
    out() << "  eval '" << e.name << "' at step " << step_ << ":";
    for (const auto& [k, v] : values) out() << "  " << k << " " << v;
    out() << "\n" << std::flush;
  }
  max_eval_seconds_ = std::max(max_eval_seconds_, now_seconds() - t0);
}

namespace {

bool beats(double v, double best, Better mode, double delta) {
  return mode == Better::min ? v < best - delta : v > best + delta;
}

}  // namespace

void Loop::after_eval(const std::string& task, const std::map<std::string, double>& values,
                      bool write) {
  if (const auto& es = options_.early_stopping; es && es->task == task) {
    if (const auto it = values.find(es->metric); it != values.end()) {
      const double v = it->second;
      if (!std::isnan(v) && (!es_has_best_ || beats(v, es_best_, es->mode, es->min_delta))) {
        es_best_ = v;
        es_best_step_ = step_;
        es_has_best_ = true;
        es_bad_ = 0;
      } else if (!early_stopped() && ++es_bad_ >= es->patience) {
        early_stop_step_ = step_;
      }
    }
  }
  if (const auto& kb = options_.keep_best; kb && kb->task == task) {
    if (const auto it = values.find(kb->metric); it != values.end()) {
      const double v = it->second;
      if (!std::isnan(v) && (!has_best_ || beats(v, best_value_, kb->mode, 0.0))) {
        best_value_ = v;
        has_best_ = true;
        if (write) write_best();
      }
    }
  }
}

void Loop::write_best() {
  const KeepBest& kb = *options_.keep_best;
  const fs::path dir(options_.output_dir);
  training::save_checkpoint((dir / "ckpt_best.npz").string(), make_checkpoint());
  std::ostringstream j;
  j << "{\"step\": " << step_ << ", \"task\": " << json_string(kb.task)
    << ", \"metric\": " << json_string(kb.metric) << ", \"mode\": \""
    << (kb.mode == Better::min ? "min" : "max") << "\", \"value\": " << json_number(best_value_)
    << "}\n";
  core::write_file_atomic((dir / "ckpt_best.json").string(), j.str());
}

void Loop::replay_history() {
  es_has_best_ = has_best_ = false;
  es_best_ = best_value_ = 0;
  es_bad_ = 0;
  es_best_step_ = early_stop_step_ = -1;
  const long step = step_;
  for (const MetricsRecord& r : history_) {
    if (r.task == "train") continue;
    step_ = r.step;
    after_eval(r.task, r.values, /*write=*/false);
  }
  step_ = step;
}

void Loop::call_callbacks(bool begin, long step) {
  for (const auto& cb : options_.callbacks) {
    if (!cb->call_at(step)) continue;
    // A callback may run the model (sampling, in eval mode): the training run goes on
    // with the mode, state and weights it had.
    base::RestoreGuard restore(*model_, base::RestoreGuard::weights | base::RestoreGuard::state |
                                            base::RestoreGuard::mode);
    if (begin) {
      cb->on_step_begin(*this, step);
    } else {
      cb->on_step_end(*this, step);
    }
  }
}

std::optional<std::map<std::string, double>> Loop::latest_metrics(const std::string& task) const {
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    if (it->task == task) return it->values;
  }
  return std::nullopt;
}

double Loop::trained_seconds() const {
  return seconds_before_ + (running_ ? now_seconds() - run_start_ : 0.0);
}

void Loop::finish(EndReason reason, const std::string& message) {
  end_reason_ = reason;
  end_message_ = message;
  if (options_.progress != Progress::none && !message.empty()) {
    out() << message << "\n" << std::flush;
  }
}

void Loop::run(long n_steps) {
  if (n_steps < step_) {
    throw ValueError("Loop::run: asked to run until step " + std::to_string(n_steps) +
                     " but the loop is already at step " + std::to_string(step_));
  }
  check_folder_is_new();
  end_reason_ = EndReason::none;
  end_message_.clear();
  const auto& es = options_.early_stopping;
  auto early_message = [&](bool now) {
    std::string m =
        "early stopping: eval '" + es->task + "' " + es->metric + " has not improved" +
        (es->min_delta > 0 ? " by more than " + core::shortest(es->min_delta) : "") + " for " +
        std::to_string(es->patience) + " evaluation" + (es->patience == 1 ? "" : "s") + " (best " +
        (es_has_best_ ? core::shortest(es_best_) + " at step " + std::to_string(es_best_step_)
                      : std::string("none")) +
        "); ";
    if (now) {
      m += "stopped after step " + std::to_string(step_) + " of " + std::to_string(n_steps);
      if (!options_.output_dir.empty()) {
        m += "; checkpoint " + checkpoint_path(options_.output_dir, step_) + " written";
      }
    } else {
      m += "the run stopped at step " + std::to_string(early_stop_step_) + "; not training further";
    }
    return m;
  };
  if (early_stopped()) {
    finish(EndReason::early_stopped, early_message(false));
    return;
  }
  const double budget = options_.time_budget_seconds;
  if (budget > 0 && seconds_before_ >= budget) {
    finish(EndReason::time_budget, "time budget of " + core::shortest(budget) +
                                       " s already used (" + core::shortest(seconds_before_) +
                                       " s trained) at step " + std::to_string(step_) +
                                       "; not training further (raise time_budget_seconds to "
                                       "continue)");
    return;
  }
  std::optional<StopSignals> graceful;
  if (options_.graceful_stop) graceful.emplace();
  run_start_ = now_seconds();
  run_start_step_ = step_;
  last_log_ = 0;
  running_ = true;
  budget_stop_ = false;
  struct Stopwatch {
    Loop& loop;
    ~Stopwatch() {
      loop.seconds_before_ += now_seconds() - loop.run_start_;
      loop.running_ = false;
    }
  } stopwatch{*this};
  bool stepped = false;
  while (step_ < n_steps) {
    call_callbacks(/*begin=*/true, step_ + 1);
    const double t0 = now_seconds();
    const double loss = train_step();
    const double dt = now_seconds() - t0;
    last_step_seconds_ = dt;
    stepped = true;
    record({step_,
            "train",
            {{"loss", loss},
             {"learning_rate", train_.optimizer->learning_rate()},
             {"step_seconds", dt}}});
    const bool last = step_ == n_steps;
    // The budget: stop now if one more step and the final evaluation and checkpoint
    // could end past it (judged with room to spare: twice the last step, the slowest
    // evaluation and checkpoint so far, a checkpoint's fsync varies).
    const bool over_budget =
        budget > 0 && !last &&
        trained_seconds() + 2 * last_step_seconds_ + max_eval_seconds_ + 1.5 * max_save_seconds_ >
            budget;
    budget_stop_ = over_budget;
    progress(n_steps, loss, last || over_budget);
    if ((options_.eval_every > 0 && step_ % options_.eval_every == 0) || last || over_budget) {
      eval_all();
    }
    const bool stop_early = early_stopped();
    // After the step's evaluation, before its checkpoint: a checkpoint of step n
    // follows every metrics line and callback of step n (see restore_metrics).
    call_callbacks(/*begin=*/false, step_);
    const bool ending = last || over_budget || stop_early;
    bool saved = false;
    if (!options_.output_dir.empty() &&
        (ending || (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0))) {
      save_checkpoint();
      saved = true;
    }
    if (stop_early) {
      finish(EndReason::early_stopped, early_message(true));
      return;
    }
    if (over_budget) {
      char trained[32];
      std::snprintf(trained, sizeof trained, "%.1f", trained_seconds());
      std::string m = "time budget of " + core::shortest(budget) + " s: stopped after step " +
                      std::to_string(step_) + " of " + std::to_string(n_steps) + " (" + trained +
                      " s trained; one more step could pass the budget)";
      if (saved) m += "; checkpoint " + checkpoint_path(options_.output_dir, step_) + " written";
      finish(EndReason::time_budget, m);
      return;
    }
    // A stop asked for by a signal: at this step boundary every line of the step is
    // written; the checkpoint makes it the point a resumed run continues from.
    if (graceful && !last) {
      if (const int sig = StopSignals::requested(); sig != 0) stop(sig, n_steps, saved);
    }
  }
  if (!stepped) {
    // Already at n_steps: evaluate and checkpoint the step again, as before.
    eval_all();
    if (!options_.output_dir.empty()) save_checkpoint();
  }
  end_reason_ = EndReason::completed;
  end_message_ = "completed step " + std::to_string(step_) + " of " + std::to_string(n_steps);
}

Checkpoint Loop::make_checkpoint() const {
  Checkpoint c;
  c.step = step_;
  c.weights = model_->flat_weights();
  c.state = model_->flat_state();
  if (train_.optimizer->initialized()) c.slots = train_.optimizer->slots();
  c.keys = {{"loop", rng_}};
  if (const auto& bs = train_.stream.batch_stream()) {
    const auto pos = bs->position();
    c.loop.push_back({"train_stream", Tensor::from<std::int64_t>({pos.size()}, pos)});
  }
  if (options_.time_budget_seconds > 0) {
    // A run stopped by its budget has used it up (it stops a little before it ends).
    const double used = budget_stop_ ? std::max(trained_seconds(), options_.time_budget_seconds)
                                     : trained_seconds();
    c.loop.push_back({"seconds", Tensor::scalar(used, DType::f64)});
  }
  return c;
}

void Loop::save_checkpoint() {
  if (options_.output_dir.empty()) {
    throw ValueError("Loop::save_checkpoint: no output_dir was given");
  }
  const double t0 = now_seconds();
  const Checkpoint c = make_checkpoint();
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
  max_save_seconds_ = std::max(max_save_seconds_, now_seconds() - t0);
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
    replay_history();
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
  if (!model_->initialized()) ensure_initialized(peek_train_batch(c.step));
  if (!train_.optimizer->initialized()) train_.optimizer->init(model_->flat_weights());
  // Check everything before changing anything.
  check_matches(model_->flat_weights(), c.weights, "weight", path);
  check_matches(model_->flat_state(), c.state, "state", path);
  check_matches(train_.optimizer->slots(), c.slots, "optimizer slot", path);
  double seconds = 0;
  for (const NamedTensor& t : c.loop) {
    if (t.name == "seconds" && t.value.size() == 1) seconds = t.value.item<double>();
  }
  if (const auto& bs = train_.stream.batch_stream()) {
    const NamedTensor* pos = nullptr;
    for (const NamedTensor& t : c.loop) {
      if (t.name == "train_stream") pos = &t;
    }
    if (pos == nullptr) {
      throw CheckpointError(path +
                            ": holds no position of the training stream (loop/train_stream), so "
                            "the stream " +
                            bs->describe() +
                            " cannot continue where the run stopped (the checkpoint was written "
                            "with a step-indexed stream). Nothing was changed.");
    }
    if (pos->value.dtype() != DType::i64 || pos->value.shape().size() != 1) {
      throw CheckpointError(path + ": loop/train_stream must be int64 1-D, got " +
                            std::string(core::dtype_name(pos->value.dtype())) + " " +
                            core::shape_str(pos->value.shape()) + ". Nothing was changed.");
    }
    try {
      bs->seek(pos->value.to_vector<std::int64_t>());
    } catch (const core::Error& e) {
      throw CheckpointError(path + ": the training stream " + bs->describe() +
                            " cannot go to the saved position: " + e.what() +
                            ". Nothing was changed.");
    }
  }
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
  seconds_before_ = seconds;
  replay_history();
  return true;
}

}  // namespace minitrax::training
