// examples/text_lm.cpp: a language model on any text. The main job's sibling for real
// data: the same JSON config + flags, validation, progress, metrics.jsonl, checkpoints,
// --resume and charts, on a text file, folder or glob (plain, .gz or dictd's .dz).
//
// What it does, in order (every step prints what it did):
//   1. reads the config (defaults < --config FILE < flags; --help lists them all) and
//      takes the run folder (examples/common/run_start.hpp)
//   2. makes the tokenizer (bytes; characters of the text; or SentencePiece subwords
//      trained on the text) and saves it beside the run (tokenizer.json / .model)
//   3. tokenizes the text (data::lm_text_data): random windows of the first part for
//      training, the held-out tail for evaluation
//   4. trains ReformerLM (LSH attention, reversible layers) or TransformerLM with the
//      Loop: bits per character on the held-out text at every evaluation, a sample every
//      sample_every steps, the best checkpoint by eval loss kept (ckpt_best.npz), early
//      stopping and a wall-time budget if asked
//   5. writes curves.svg (loss and bits per character) and results.json
//
//   text_lm [--config FILE] [--resume] [--KEY VALUE ...]                    (--help)
//   text_lm --sample-from RUN_DIR [--prompt TEXT ...] [--sample-KEY VALUE ...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "common/plot.hpp"
#include "common/run_start.hpp"
#include "common/training_setup.hpp"
#include "core/format.hpp"
#include "core/kernels.hpp"
#include "core/npy.hpp"
#include "data/lm.hpp"
#include "data/sources.hpp"
#include "data/tokenizers.hpp"
#include "duplication/model_choice.hpp"
#include "layers/combinators.hpp"
#include "models/decoding.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"
#include "text/config.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/stop_signals.hpp"

using namespace minitrax;
namespace fs = std::filesystem;

namespace {

const char* const kProgram = "text_lm";

// ---- the model ----

base::LayerPtr make_model(const app::TextConfig& c, long vocab_size, base::Mode mode) {
  if (c.model == "transformer") {
    models::TransformerLMOptions o;
    o.vocab_size = vocab_size;
    o.d_model = c.d_model;
    o.d_ff = c.d_ff;
    o.n_layers = c.n_layers;
    o.n_heads = c.n_heads;
    o.dropout = c.dropout;
    o.max_len = c.length;
    o.mode = mode;
    o.ff_activation = app::ff_activation_layer(c.ff_activation);
    return models::TransformerLM(o);
  }
  models::ReformerLMOptions o = app::reformer_options(c, vocab_size, mode);
  const long mem = c.length;  // predict mode (sampling) keeps the whole window
  for (const std::string& a : c.attention) {
    if (a == "lsh") {
      o.attention_type.push_back(app::lsh_attention(c, c.n_hashes, app::effective_n_buckets(c)));
    } else {
      o.attention_type.push_back(models::self_attention({.chunk_len = c.chunk_len,
                                                         .n_chunks_before = c.n_chunks_before,
                                                         .predict_mem_len = mem,
                                                         .predict_drop_len = mem,
                                                         .attention_dropout = c.dropout}));
    }
  }
  return models::ReformerLM(o);
}

std::string model_summary(const app::TextConfig& c) {
  std::ostringstream os;
  if (c.model == "transformer") {
    os << "TransformerLM, " << c.n_layers << " layers, d_model " << c.d_model << ", d_ff " << c.d_ff
       << ", " << c.n_heads << " heads (full causal attention)";
    return os.str();
  }
  os << "ReformerLM (reversible), " << c.n_layers << " layers, d_model " << c.d_model << ", d_ff "
     << c.d_ff << ", " << c.n_heads << " heads, attention [";
  for (std::size_t i = 0; i < c.attention.size(); ++i) os << (i ? ", " : "") << c.attention[i];
  os << "], LSH n_hashes " << c.n_hashes << ", n_buckets " << app::effective_n_buckets(c)
     << ", chunk_len " << c.chunk_len;
  return os.str();
}

// ---- the tokenizer ----

std::string tokenizer_file(const std::string& kind) {
  return kind == "sentencepiece" ? "tokenizer.model" : "tokenizer.json";
}

// Bytes that are not UTF-8, and all bytes, of the text read so far.
struct Utf8Count {
  std::uint64_t bad = 0, bytes = 0;
  // A text with a few stray bytes (dict-gcide has 3 in 40 MB) is text; one with more than
  // 1 in 1000 is not: a character or subword vocabulary of it would be meaningless.
  void check(const app::TextConfig& c) const {
    if (bad * 1000 > bytes) {
      throw core::ValueError(
          "'" + c.data + "' does not look like UTF-8 text: " + std::to_string(bad) + " of its " +
          std::to_string(bytes) + " bytes are not UTF-8; tokenizer " + c.tokenizer +
          " needs text (--tokenizer bytes takes any data)");
    }
  }
};

// The text of the files for SentencePiece's training: at most `limit` bytes, whole lines,
// stray bytes replaced.
std::string training_sample(const std::vector<std::string>& files, std::size_t limit,
                            Utf8Count& count) {
  std::string text;
  for (const std::string& f : files) {
    if (text.size() >= limit) break;
    data::for_each_text_chunk(f, [&](std::string_view chunk) {
      if (text.size() >= limit) return;
      std::uint64_t n = 0;
      text += data::repair_utf8(chunk, &n);
      count.bad += n;
      count.bytes += chunk.size();
    });
  }
  if (const std::size_t nl = text.rfind('\n'); nl != std::string::npos) text.resize(nl + 1);
  return text;
}

// A new tokenizer for the run's text; a text with more than a few bytes that are not
// UTF-8 is refused for characters and subwords.
std::shared_ptr<const data::Tokenizer> make_tokenizer(const app::TextConfig& c,
                                                      const std::vector<std::string>& files) {
  if (c.tokenizer == "bytes") return std::make_shared<data::ByteTokenizer>();
  Utf8Count count;
  if (c.tokenizer == "chars") {
    data::CharVocabBuilder builder(files.size() == 1 ? files[0] : c.data);
    for (const std::string& f : files) {
      data::for_each_text_chunk(f, [&](std::string_view chunk) {
        std::uint64_t n = 0;
        builder.add(data::repair_utf8(chunk, &n));
        count.bad += n;
        count.bytes += chunk.size();
      });
    }
    count.check(c);
    return std::make_shared<data::CharTokenizer>(builder.finish());
  }
  data::SentencePieceOptions o;
  o.vocab_size = static_cast<std::int32_t>(c.sp_vocab_size);
  o.model_type = c.sp_model_type;
  o.seed = static_cast<std::uint32_t>(c.seed) + 1;
  o.max_lines = 50000;  // lines sampled for training: SentencePiece's time grows with them
  const std::string sample = training_sample(files, std::size_t{16} << 20, count);
  count.check(c);
  return std::make_shared<data::SentencePieceTokenizer>(
      data::SentencePieceTokenizer::train_on_text(sample, o, c.data));
}

// ---- sampling ----

// A predict-mode copy of the model for `batch` prompts, with the given weights.
base::LayerPtr predict_model(const app::TextConfig& c, long vocab_size, std::size_t batch,
                             const training::Checkpoint& weights, const std::string& source) {
  auto model = make_model(c, vocab_size, base::Mode::predict);
  model->init(core::Shape{batch, 1}, DType::i32, core::key_from_seed(0));
  training::restore_weights(*model, weights, source);
  return model;
}

models::SampleOptions sample_options(const app::TextConfig& c, core::Key rng) {
  models::SampleOptions o;
  o.temperature = c.sample_temperature;
  o.top_k = c.sample_top_k;
  o.top_p = c.sample_top_p;
  o.rng = rng;
  return o;
}

// Samples a continuation of each prompt; returns the decoded new text of each.
std::vector<std::string> continue_prompts(base::Layer& predict, const data::Tokenizer& tok,
                                          const std::vector<std::string>& prompts,
                                          const app::TextConfig& c, core::Key rng) {
  std::vector<std::vector<int>> ids;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    std::vector<std::int32_t> p;
    if (auto* chars = dynamic_cast<const data::CharTokenizer*>(&tok)) {
      p = chars->encode(prompts[i], "prompt");
    } else {
      p = tok.encode(prompts[i]);
    }
    ids.emplace_back(p.begin(), p.end());
  }
  long n_new = c.sample_length;
  std::size_t longest = 0;
  for (const auto& p : ids) longest = std::max(longest, p.size());
  if (static_cast<long>(longest) + n_new > c.length) {
    n_new = std::max<long>(0, c.length - static_cast<long>(longest));
  }
  const core::Tensor out =
      models::autoregressive_sample(predict, ids, n_new, sample_options(c, rng));
  const std::size_t width = out.shape()[1];
  std::vector<std::string> texts;
  for (std::size_t b = 0; b < ids.size(); ++b) {
    std::vector<std::int32_t> new_ids;
    for (std::size_t j = ids[b].size(); j < width; ++j) {
      const auto id = static_cast<std::int32_t>(out.flat(b * width + j));
      if (id == data::pad_id) break;
      new_ids.push_back(id);
    }
    texts.push_back(tok.decode(new_ids));
  }
  return texts;
}

// A sample shown on one screen: control characters made visible, at most ~6 lines.
std::string shown(const std::string& text) {
  std::string s;
  for (char ch : text) {
    if (ch == '\t') {
      s += "  ";
    } else if (static_cast<unsigned char>(ch) < 0x20 && ch != '\n') {
      s += '?';
    } else {
      s += ch;
    }
  }
  return s;
}

// The prompt of samples shown while training: sample_prompt, or else the first line of
// the held-out text.
std::string training_prompt(const app::TextConfig& c, const data::Tokenizer& tok,
                            const data::LMTextData& d) {
  if (!c.sample_prompt.empty()) return c.sample_prompt;
  const std::size_t begin = static_cast<std::size_t>(d.train_tokens);
  const std::size_t n = std::min<std::size_t>(64, d.tokens->size() - begin);
  std::vector<std::int32_t> ids(n);
  d.tokens->copy(begin, n, ids.data());
  std::string text = tok.decode(ids);
  if (const std::size_t nl = text.find('\n', 1); nl != std::string::npos) text.resize(nl + 1);
  return text;
}

// ---- charts and results ----

void write_curves(const std::string& dir, const std::string& title,
                  const std::vector<training::MetricsRecord>& history) {
  std::vector<double> tx, ty, ex, ey, bx, by;
  for (const training::MetricsRecord& r : history) {
    const auto loss = r.values.find("loss");
    if (r.task == "train" && loss != r.values.end()) {
      tx.push_back(static_cast<double>(r.step));
      ty.push_back(loss->second);
    } else if (r.task == "eval") {
      if (loss != r.values.end()) {
        ex.push_back(static_cast<double>(r.step));
        ey.push_back(loss->second);
      }
      if (auto bpc = r.values.find("bits_per_character"); bpc != r.values.end()) {
        bx.push_back(static_cast<double>(r.step));
        by.push_back(bpc->second);
      }
    }
  }
  plot::LineChart chart;
  chart.title = title;
  chart.x_label = "training step";
  plot::Panel loss_panel;
  loss_panel.y_label = "cross-entropy (nats per token)";
  loss_panel.y_scale = plot::Scale::log;
  auto train = plot::Series::train("train", tx, ty);
  if (tx.size() >= 100) train.smoothing = 0.8;
  loss_panel.series = {train, plot::Series::eval("held-out", ex, ey)};
  plot::Panel bpc_panel;
  bpc_panel.y_label = "held-out bits per character";
  bpc_panel.y_scale = plot::Scale::linear;
  bpc_panel.series = {plot::Series::eval("held-out", bx, by)};
  chart.panels = {loss_panel, bpc_panel};
  core::write_file_atomic((fs::path(dir) / "curves.svg").string(), plot::line_chart_svg(chart));
}

// ---- training ----

int train(const app::TextCommandLine& cl) {
  const auto started_at = std::chrono::steady_clock::now();
  app::StartedRun<app::TextConfig> run = app::start_run(app::text_config_table(), cl);
  const app::TextConfig& c = run.config;
  const std::string dir = c.output_dir;

  // ---- tokenizer and data ----
  const std::vector<std::string> files = data::list_files(c.data);
  const fs::path tok_path = fs::path(dir) / tokenizer_file(c.tokenizer);
  std::shared_ptr<const data::Tokenizer> tok;
  const bool tokenizer_saved = cl.resume && fs::exists(tok_path);
  std::cout << "minitrax text_lm: a language model on " << c.data << " (" << files.size()
            << (files.size() == 1 ? " file" : " files") << ")\n";
  if (tokenizer_saved) {
    tok = data::load_tokenizer(tok_path.string());
    std::cout << "  tokens: " << tok->kind() << ", " << tok->vocab_size() << " ids (from "
              << tok_path.string() << ")\n";
  } else {
    tok = make_tokenizer(c, files);
    std::cout << "  tokens: " << tok->kind() << ", " << tok->vocab_size() << " ids (built from "
              << "the text)\n";
  }
  std::cout << std::flush;
  // Characters and subwords see valid UTF-8 only (the few stray bytes a text may have
  // become U+FFFD; make_tokenizer refused anything more).
  std::shared_ptr<const data::Tokenizer> encoder = tok;
  if (tok->kind() != "bytes") encoder = std::make_shared<data::Utf8Repairing>(tok);
  const data::LMTextData d =
      data::lm_text_data({c.data}, *encoder, static_cast<std::size_t>(c.length),
                         static_cast<std::size_t>(c.batch), c.eval_fraction, c.seed);
  if (auto* r = dynamic_cast<const data::Utf8Repairing*>(encoder.get()); r && r->replaced() > 0) {
    std::cout << "  note: " << r->replaced() << " bytes of the text are not UTF-8; each reads as "
              << "U+FFFD\n";
  }
  const long eval_batches = std::min<long>(c.eval_batches, d.eval_batches);
  const double tokens_per_char = static_cast<double>(d.eval_tokens) /
                                 static_cast<double>(std::max<std::int64_t>(d.eval_characters, 1));
  std::cout << "  text: " << d.total_characters << " characters, " << d.held << "; "
            << d.train_tokens << " tokens for training, " << d.eval_tokens << " held out (the last "
            << core::shortest(100 * c.eval_fraction) << "%; " << eval_batches << " of its "
            << d.eval_batches << " batches per evaluation)\n"
            << "  model: " << model_summary(c) << ", windows of " << c.length << " tokens\n"
            << "  training: batch " << c.batch << ", up to " << c.steps << " steps"
            << (c.time_budget > 0 ? " or " + core::shortest(c.time_budget) + " s" : "")
            << ", Adam lr " << c.lr << " (" << c.schedule << ", warmup " << c.warmup_steps
            << "), seed " << c.seed << "\n  output: " << dir << "/ (config.json, "
            << tokenizer_file(c.tokenizer)
            << ", metrics.jsonl, checkpoints, ckpt_best.npz, results.json, curves.svg); BLAS "
               "kernels: "
            << core::blas_core_name() << "\n";

  // ---- model and loop ----
  auto model = make_model(c, tok->vocab_size(), base::Mode::train);
  const auto keys = core::split(core::key_from_seed(c.seed), 3);
  training::TrainTask task{d.train, training::WeightedCategoryCrossEntropy(),
                           app::clipped_adam(c.lr),
                           app::schedule_by_name(c.schedule, c.lr, c.steps, c.warmup_steps)};
  // Bits per token and per character from the same cross-entropy (nats per token).
  const double ln2 = std::log(2.0);
  auto scaled = [](std::string name, double k) {
    std::function<base::Var(const base::Var&)> times_k = [k](const base::Var& x) {
      return fastmath::multiply(x, k);
    };
    return layers::Serial(
        {training::WeightedCategoryCrossEntropy(), layers::Fn(std::move(name), times_k)});
  };
  training::EvalTask eval;
  eval.stream = d.eval;
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()},
                  {"bits_per_token", scaled("BitsPerToken", 1 / ln2)},
                  {"bits_per_character", scaled("BitsPerCharacter", tokens_per_char / ln2)}};
  eval.n_batches = eval_batches;
  training::LoopOptions options;
  options.output_dir = dir;
  options.eval_every = c.eval_every;
  options.checkpoint_every = c.checkpoint_every;
  options.progress = app::progress_by_name(c.progress);
  options.keep_best = training::KeepBest{.metric = "loss"};
  if (c.early_stop_patience > 0) {
    options.early_stopping =
        training::EarlyStopping{.metric = "loss", .patience = c.early_stop_patience};
  }
  options.time_budget_seconds = c.time_budget;
  const std::string prompt = training_prompt(c, *tok, d);
  if (c.sample_every > 0) {
    const data::Tokenizer* t = tok.get();
    options.callbacks.push_back(
        training::every(c.sample_every, [&c, t, prompt](training::Loop& loop, long step) {
          training::Checkpoint now;
          now.weights = loop.model()->flat_weights();
          auto p = predict_model(c, t->vocab_size(), 1, now,
                                 "the model at step " + std::to_string(step));
          const auto text = continue_prompts(
              *p, *t, {prompt}, c,
              core::fold_in(core::key_from_seed(c.seed), static_cast<std::uint32_t>(step)));
          std::cout << "\nsample at step " << step << " (temperature "
                    << core::shortest(c.sample_temperature) << "):\n"
                    << shown(prompt) << "|" << shown(text[0]) << "\n"
                    << std::flush;
        }));
  }

  training::Loop loop(model, task, {eval}, options, keys[2]);
  if (cl.resume) {
    if (loop.resume(c.steps)) {
      std::cout << "resumed from step " << loop.step() << "\n";
    } else {
      std::cout << "--resume: no checkpoint in " << dir << ", starting at step 0\n";
    }
  }
  // Every check has passed: the run's files.
  if (!tokenizer_saved) tok->save(tok_path.string());
  app::write_config_if_changed(dir, run.saved_config, app::text_config_table().to_json(c) + "\n");

  training::StopSignals graceful;
  try {
    if (loop.step() < c.steps) loop.run(c.steps);
  } catch (const training::Stopped& stop) {
    std::cout << std::flush;
    std::cerr << kProgram << ": " << stop.what() << "\nto continue: " << kProgram
              << " --resume --output-dir " << dir << "\n";
    return stop.exit_status();
  }

  // ---- results ----
  const auto last = loop.latest_metrics("eval");
  write_curves(dir,
               std::string(c.model == "reformer" ? "ReformerLM" : "TransformerLM") + " on " +
                   fs::path(c.data).filename().string() + " (" + c.tokenizer + ", windows of " +
                   std::to_string(c.length) + ")",
               loop.history());
  std::ostringstream results;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count();
  const double trained = loop.trained_seconds();
  const double tokens_per_second =
      trained > 0
          ? static_cast<double>(loop.step()) * static_cast<double>(c.batch * c.length) / trained
          : 0.0;
  results << "{\n  \"steps\": " << loop.step()
          << ",\n  \"trained_seconds\": " << core::shortest(trained)
          << ",\n  \"training_tokens_per_second\": "
          << core::shortest(std::round(tokens_per_second)) << ",\n  \"end\": \""
          << loop.end_message() << "\"";
  if (last) {
    for (const auto& [k, v] : *last) results << ",\n  \"eval_" << k << "\": " << core::shortest(v);
  }
  results << "\n}\n";
  core::write_file_atomic((fs::path(dir) / "results.json").string(), results.str());
  std::printf("\n%ld steps in %.0f s of training (%.0f tokens/s)", loop.step(), trained,
              tokens_per_second);
  if (last && last->count("bits_per_character")) {
    std::printf("; held-out bits per character %.3f", last->at("bits_per_character"));
  }
  std::printf("\nwrote %s/results.json and %s/curves.svg (%.0f s in all)\n", dir.c_str(),
              dir.c_str(), seconds);
  std::printf("to sample: %s --sample-from %s --prompt \"...\"\n", kProgram, dir.c_str());
  return 0;
}

// ---- sampling from a saved run ----

int sample_from(const app::TextCommandLine& cl) {
  std::string dir;
  std::vector<std::string> prompts;
  for (const auto& [flag, value] : cl.extra) {
    if (flag == "sample-from") {
      if (!dir.empty()) throw app::ConfigError("--sample-from given twice");
      dir = value;
    } else if (flag == "prompt") {
      prompts.push_back(value);
    }
  }
  if (dir.empty()) throw app::ConfigError("--sample-from needs a run folder, got an empty one");
  if (cl.resume) throw app::ConfigError("--sample-from and --resume do not go together");
  for (const std::string& key : cl.given_keys) {
    if (key.rfind("sample_", 0) != 0 && key != "seed") {
      throw app::ConfigError("--sample-from takes the model from the run in '" + dir +
                             "'; only the sample_* settings and seed may be given, got " +
                             app::settings::flag_of(key));
    }
  }
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) {
    throw app::ConfigError("--sample-from '" + dir +
                           "': no config.json there; is it a run folder of " + kProgram + "?");
  }
  app::TextConfig c;
  app::apply_json(c, app::read_config_file(config_path), "saved config '" + config_path + "'");
  app::text_config_table().copy_keys(c, cl.config, cl.given_keys);  // sample_*, seed
  app::validate(c);
  if (prompts.empty()) prompts.push_back(c.sample_prompt);
  const auto tok = data::load_tokenizer((fs::path(dir) / tokenizer_file(c.tokenizer)).string());
  const std::string best = (fs::path(dir) / "ckpt_best.npz").string();
  auto model = make_model(c, tok->vocab_size(), base::Mode::predict);
  model->init(core::Shape{prompts.size(), 1}, DType::i32, core::key_from_seed(0));
  const std::string loaded = training::load_weights(*model, fs::exists(best) ? best : dir);
  std::cout << "sampling from " << loaded << " (" << model_summary(c) << "), temperature "
            << core::shortest(c.sample_temperature) << ", top_k " << c.sample_top_k << ", top_p "
            << core::shortest(c.sample_top_p) << ", " << c.sample_length << " tokens\n";
  const auto texts = continue_prompts(*model, *tok, prompts, c, core::key_from_seed(c.seed));
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    std::cout << "\n--- prompt " << i + 1 << ": \"" << shown(prompts[i]) << "\"\n"
              << shown(prompts[i]) << shown(texts[i]) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  app::TextCommandLine cl;
  try {
    cl = app::parse_text_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const app::ConfigError& e) {
    std::cerr << kProgram << ": " << e.what() << "\n(try --help)\n";
    return 2;
  }
  if (cl.help) {
    std::cout << app::text_usage();
    return 0;
  }
  bool sampling = false;
  for (const auto& [flag, value] : cl.extra) sampling |= flag == "sample-from";
  try {
    return sampling ? sample_from(cl) : train(cl);
  } catch (const app::ConfigError& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    return 2;
  } catch (const app::RunRefused& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    return e.status();
  } catch (const training::RunLockedError& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << kProgram << ": error: " << e.what() << "\n";
    return 1;
  }
}
