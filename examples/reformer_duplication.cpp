// examples/reformer_duplication.cpp: the main job. A toy Reformer (LSH attention and
// reversible layers) learns the Reformer paper's duplication task "0 w 0 w".
//
// What it does, in order (every step prints what it did):
//   1. reads the config (defaults < --config FILE < flags; --help lists them all)
//   2. builds ReformerLM with LSH attention and trains it with the Loop: progress bar,
//      an eval line every eval_every steps, metrics.jsonl, checkpoints, --resume
//   3. evaluates second-half accuracy on held-out sequences with full attention and
//      with LSH at each of eval_n_hashes (a row of the paper's Table 2)
//   4. completes a held-out "0 w 0" greedily and checks the copy
//   5. writes results.json, curves.svg (loss and accuracy against steps) and table2.svg
//      (the Table 2 row as bars)
//
//   reformer_duplication [--config FILE] [--resume] [--KEY VALUE ...]   (--help)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/tape.hpp"
#include "common/run_start.hpp"
#include "common/training_setup.hpp"
#include "core/format.hpp"
#include "core/kernels.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "duplication/charts.hpp"
#include "duplication/config.hpp"
#include "duplication/model_choice.hpp"
#include "models/decoding.hpp"
#include "models/reformer.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/run_folder.hpp"
#include "training/stop_signals.hpp"

using namespace minitrax;
namespace fs = std::filesystem;

namespace {

// How the attention layers are set up: as trained, or switched for evaluation.
struct AttentionChoice {
  bool full = false;  // every layer full (shared-QK) attention
  long n_hashes = 1;  // for LSH layers
};

models::ReformerLMOptions model_options(const app::DuplicationConfig& c, AttentionChoice choice,
                                        base::Mode mode) {
  models::ReformerLMOptions o = app::reformer_options(c, c.vocab, mode);
  o.reversible = c.reversible;
  const long mem = c.length;  // predict mode keeps the whole sequence
  for (const std::string& a : c.attention) {
    if (a == "lsh" && !choice.full) {
      o.attention_type.push_back(app::lsh_attention(c, choice.n_hashes, c.n_buckets));
    } else {
      // Full attention over the whole sequence; an LSH layer's weights (w_q, w_v,
      // w_o, queries shared with keys) fit SelfAttention with share_qk.
      o.attention_type.push_back(models::self_attention({.share_qk = (a == "lsh"),
                                                         .predict_mem_len = mem,
                                                         .predict_drop_len = mem,
                                                         .attention_dropout = c.dropout}));
    }
  }
  return o;
}

std::string attention_name(const app::DuplicationConfig& c, AttentionChoice choice) {
  if (choice.full) return "Full";
  bool any_lsh = false;
  for (const std::string& a : c.attention) any_lsh |= a == "lsh";
  return any_lsh ? "LSH-" + std::to_string(choice.n_hashes) : "Full";
}

// Second-half accuracy of `model` (eval mode) on held-out batches.
double accuracy(base::Layer& model, const training::Stream& stream, long first, long n) {
  autodiff::NoRecord quiet;
  double correct = 0, total = 0;
  for (long b = first; b < first + n; ++b) {
    const training::Batch batch = stream(b);
    const Tensor logp = model.apply({Var(batch[0])}, core::key_from_seed(b)).at(0).value();
    const Tensor pred = core::argmax(logp, -1, DType::i32);
    for (std::size_t i = 0; i < pred.size(); ++i) {
      const double w = batch[2].flat(i);
      correct += w * (pred.flat(i) == batch[1].flat(i) ? 1.0 : 0.0);
      total += w;
    }
  }
  return total > 0 ? correct / total : 0.0;
}

// A model for evaluation with the trained weights (same order, same shapes).
base::LayerPtr eval_model(const app::DuplicationConfig& c, AttentionChoice choice,
                          const std::vector<base::NamedTensor>& trained, long batch,
                          base::Mode mode = base::Mode::eval) {
  auto model = models::ReformerLM(model_options(c, choice, mode));
  const long length = mode == base::Mode::predict ? 1 : c.length;
  model->init({batch, length}, DType::i32, core::key_from_seed(c.seed));
  const auto mine = model->flat_weights();
  if (mine.size() != trained.size()) {
    throw core::ValueError("evaluation model has " + std::to_string(mine.size()) +
                           " weights, the trained one " + std::to_string(trained.size()));
  }
  std::vector<Tensor> values;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (mine[i].value.shape() != trained[i].value.shape()) {
      throw core::ShapeError("evaluation weight " + mine[i].name + " has shape " +
                             core::shape_str(mine[i].value.shape()) + ", trained " +
                             trained[i].name + " " + core::shape_str(trained[i].value.shape()));
    }
    values.push_back(trained[i].value);
  }
  model->set_flat_weights(values);
  return model;
}

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * x);
  return buf;
}

int run(const app::CommandLine& cl, const std::string& program) {
  const auto started = std::chrono::steady_clock::now();

  // ---- output folder: one writer, and nothing written before every check passed ----
  // (examples/common/run_start.hpp: the lock, a folder holding a run needs --resume,
  // the saved config.json is the run's truth)
  app::StartedRun<app::DuplicationConfig> started_run =
      app::start_run(app::duplication_config_table(), cl);
  app::DuplicationConfig c = started_run.config;
  const std::optional<std::string>& saved = started_run.saved_config;
  const long L = c.length;

  // ---- model, data, training ----
  const AttentionChoice trained_choice{false, c.n_hashes};
  auto model = models::ReformerLM(model_options(c, trained_choice, base::Mode::train));
  const auto keys = core::split(core::key_from_seed(c.seed), 3);
  const auto train_stream = training::copy_task_stream(keys[0], c.batch, L, c.vocab);
  const auto eval_stream = training::copy_task_stream(keys[1], c.eval_batch, L, c.vocab);

  training::TrainTask task{train_stream, training::WeightedCategoryCrossEntropy(),
                           app::clipped_adam(c.lr),
                           app::schedule_by_name(c.schedule, c.lr, c.steps, c.warmup_steps)};
  training::EvalTask eval;
  eval.stream = eval_stream;
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = c.eval_batches;
  training::LoopOptions options;
  options.output_dir = c.output_dir;
  options.eval_every = c.eval_every;
  options.checkpoint_every = c.checkpoint_every;
  options.progress = app::progress_by_name(c.progress);

  std::cout << "minitrax: toy Reformer on the duplication task \"0 w 0 w\"\n"
            << "  task: length " << c.length << " (|w| = " << c.length / 2 - 1 << "), vocab "
            << c.vocab << ", accuracy on the second w\n"
            << "  model: ReformerLM, " << c.n_layers << " layers, d_model " << c.d_model
            << ", d_ff " << c.d_ff << ", " << c.n_heads << " heads, attention [";
  for (std::size_t i = 0; i < c.attention.size(); ++i) {
    std::cout << (i ? ", " : "") << c.attention[i];
  }
  std::cout << "], LSH n_hashes " << c.n_hashes << ", n_buckets " << c.n_buckets << ", chunk_len "
            << c.chunk_len << ", " << (c.reversible ? "reversible" : "plain") << " backward\n"
            << "  training: batch " << c.batch << ", " << c.steps << " steps, Adam lr " << c.lr
            << " (" << c.schedule << ", warmup " << c.warmup_steps << "), seed " << c.seed
            << "\n  output: " << c.output_dir << "/ (config.json, metrics.jsonl, checkpoints, "
            << "results.json, curves.svg, table2.svg); BLAS kernels: " << core::blas_core_name()
            << "\n";

  training::Loop loop(model, task, {eval}, options, keys[2]);
  if (cl.resume) {
    // Every check (the checkpoint loads, fits the model and is not beyond c.steps)
    // comes before the first change to the folder.
    if (loop.resume(c.steps)) {
      std::cout << "resumed from step " << loop.step() << "\n";
    } else {
      std::cout << "--resume: no checkpoint in " << c.output_dir << ", starting at step 0\n";
    }
  }
  app::write_config_if_changed(c.output_dir, saved, app::to_json(c) + "\n");
  auto resume_hint = [&] {
    return "to continue: " + program + " --resume --output-dir " + c.output_dir;
  };
  // SIGTERM (preemption) and SIGINT (Ctrl-C): the Loop finishes its step and writes a
  // checkpoint; a second signal ends the process at once.
  training::StopSignals graceful;
  try {
    if (loop.step() < c.steps) loop.run(c.steps);
  } catch (const training::Stopped& stop) {
    std::cout << std::flush;
    std::cerr << "reformer_duplication: " << stop.what() << "\n" << resume_hint() << "\n";
    return stop.exit_status();
  }
  // A stop asked for after training: the final checkpoint is written, so the run is
  // safe; the evaluations below are repeated by --resume.
  auto stopped_after_training = [&]() -> int {
    const int sig = training::StopSignals::requested();
    if (sig == 0) return 0;
    std::cout << std::flush;
    std::cerr << "reformer_duplication: stopped by " << training::signal_name(sig)
              << " after training (step " << loop.step()
              << ", checkpointed) during the final evaluation\n"
              << resume_hint() << " (it repeats the evaluation)\n";
    return 128 + sig;
  };
  if (int status = stopped_after_training()) return status;

  // ---- Table 2 row: full attention and LSH with several n_hashes ----
  const std::vector<base::NamedTensor> trained = model->flat_weights();
  const long final_batches = std::max<long>(c.eval_batches, 4);
  std::vector<AttentionChoice> choices{{true, 0}};
  std::vector<long> hs = c.eval_n_hashes;
  std::sort(hs.rbegin(), hs.rend());  // the paper's column order: LSH-8, LSH-4, ...
  bool any_lsh = false;
  for (const std::string& a : c.attention) any_lsh |= a == "lsh";
  if (any_lsh) {
    for (long h : hs) choices.push_back({false, h});
  }
  std::map<std::string, double> table;
  std::vector<std::string> columns;
  for (const AttentionChoice& ch : choices) {
    if (int status = stopped_after_training()) return status;
    auto m = eval_model(c, ch, trained, c.eval_batch);
    const std::string name = attention_name(c, ch);
    table[name] = accuracy(*m, eval_stream, 1000, final_batches);
    columns.push_back(name);
  }
  const std::string row = "trained with " + attention_name(c, trained_choice);
  std::cout << "\nsecond-half accuracy on " << final_batches * c.eval_batch
            << " held-out sequences (the paper's Table 2, one row):\n\n"
            << "| train \\ eval | ";
  for (const std::string& col : columns) std::cout << col << " | ";
  std::cout << "\n|---|";
  for (std::size_t i = 0; i < columns.size(); ++i) std::cout << "---|";
  std::cout << "\n| " << row << " | ";
  for (const std::string& col : columns) std::cout << percent(table[col]) << " | ";
  std::cout << "\n";

  // ---- a greedy sample ----
  const AttentionChoice sample_choice =
      any_lsh ? AttentionChoice{false, hs.front()} : AttentionChoice{true, 0};
  // Fast sampling: the model in predict mode takes one token per call and keeps the
  // past in its attention memories (models/decoding.hpp).
  auto sampler = eval_model(c, sample_choice, trained, 1, base::Mode::predict);
  const training::Batch held_out = eval_stream(999);
  const long half = L / 2;
  // The prompt "0 w 0": the first half + 1 ids of the first held-out sequence, int32 [1, half + 1].
  const Tensor prompt = core::slice(core::slice(held_out[0], 0, 0, 1), 1, 0, half + 1);
  const Tensor sampled = models::autoregressive_sample(*sampler, prompt, L - half - 1);
  const std::vector<std::int32_t> out = sampled.to_vector<std::int32_t>();
  long copied = 0;
  std::ostringstream prompt_text, sample_text;
  for (long j = 0; j < half + 1; ++j) prompt_text << out[j] << ' ';
  for (long j = half + 1; j < L; ++j) {
    sample_text << out[j] << ' ';
    copied += out[j] == out[j - half] ? 1 : 0;
  }
  std::cout << "\ngreedy sample (" << attention_name(c, sample_choice)
            << ", predict mode), prompt \"0 w 0\":\n  " << prompt_text.str() << "\ncompletion:\n  "
            << sample_text.str() << "\n  " << copied << "/" << (L - half - 1)
            << " symbols of w copied correctly"
            << (copied == L - half - 1 ? " (a correct copy)" : "") << "\n";

  if (int status = stopped_after_training()) return status;

  // ---- results.json and the charts ----
  const std::string svg_path = (fs::path(c.output_dir) / "curves.svg").string();
  core::write_file_atomic(
      svg_path,
      app::curves_svg("ReformerLM on the duplication task (" + attention_name(c, trained_choice) +
                          ", length " + std::to_string(c.length) + ")",
                      loop.history()));
  std::vector<std::pair<std::string, double>> bars;
  for (const std::string& col : columns) bars.emplace_back(col, table[col]);
  core::write_file_atomic(
      (fs::path(c.output_dir) / "table2.svg").string(),
      app::table2_svg(attention_name(c, trained_choice), bars, final_batches * c.eval_batch));
  std::ostringstream results;
  results << "{\n  \"trained_with\": \"" << attention_name(c, trained_choice) << "\",\n"
          << "  \"steps\": " << loop.step()
          << ",\n  \"held_out_sequences\": " << final_batches * c.eval_batch
          << ",\n  \"accuracy\": {";
  for (std::size_t i = 0; i < columns.size(); ++i) {
    results << (i ? ", " : "") << "\"" << columns[i] << "\": " << core::shortest(table[columns[i]]);
  }
  results << "},\n  \"sample_copied\": " << copied << ",\n  \"sample_length\": " << (L - half - 1)
          << "\n}\n";
  core::write_file_atomic((fs::path(c.output_dir) / "results.json").string(), results.str());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("\nwrote %s/results.json, %s and table2.svg (%.0f s in all)\n", c.output_dir.c_str(),
              svg_path.c_str(), seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  app::CommandLine cl;
  try {
    // With --resume, only the values' types are checked here: run() reads the saved
    // config (resolve_resume) under the folder's lock.
    cl = app::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const app::ConfigError& e) {
    std::cerr << "reformer_duplication: " << e.what() << "\n(try --help)\n";
    return 2;
  }
  if (cl.help) {
    std::cout << app::usage();
    return 0;
  }
  try {
    return run(cl, argv[0]);
  } catch (const app::ConfigError& e) {
    std::cerr << "reformer_duplication: " << e.what() << "\n";
    return 2;
  } catch (const app::RunRefused& e) {
    std::cerr << "reformer_duplication: " << e.what() << "\n";
    return e.status();
  } catch (const training::RunLockedError& e) {
    std::cerr << "reformer_duplication: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "reformer_duplication: error: " << e.what() << "\n";
    return 1;
  }
}
