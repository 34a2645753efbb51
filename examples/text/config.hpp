// examples/text/config.hpp: the configuration of the text trainer (examples/text_lm.cpp):
// a TransformerLM or ReformerLM language model on any text file, folder or glob, with
// byte, character or SentencePiece tokens; from a JSON file and command-line flags.
//
// The machinery (flags, JSON, --resume rules, --help) is common/settings.hpp's, the same
// as the main job's: key "n_hashes" is flag --n-hashes; defaults < --config FILE < flags;
// unknown keys and flags are errors that list what exists.
//
// Besides training, the program samples from a saved run:
//   text_lm --sample-from runs/text --prompt "The " [--prompt "A "] [--sample-length 300]
//           [--sample-temperature 0.8] [--sample-top-k 40] [--sample-top-p 0.95]
// (the run's config.json gives the model; the sample_* flags, how to sample).
#pragma once

#include <string>
#include <vector>

#include "common/settings.hpp"

namespace minitrax::app {

struct TextConfig {
  // data
  /// A text file (plain, or gzip-compressed: .gz or dictd's .dz), a folder, or a glob.
  std::string data = "/usr/share/dictd/gcide.dict.dz";
  std::string tokenizer = "chars";        ///< "chars", "bytes" or "sentencepiece"
  long sp_vocab_size = 2000;              ///< SentencePiece: vocabulary size to train
  std::string sp_model_type = "unigram";  ///< SentencePiece: "unigram" or "bpe"
  double eval_fraction = 0.01;            ///< the held-out tail of the text, 0 < x < 0.5
  long length = 2048;                     ///< tokens per training window
  // model
  std::string model = "reformer";  ///< "reformer" (reversible, LSH) or "transformer"
  long d_model = 128;
  long d_ff = 512;
  std::string ff_activation = "fast_gelu";
  long n_layers = 2;
  long n_heads = 2;
  long d_attention_key = 64;    ///< reformer only
  long d_attention_value = 64;  ///< reformer only
  double dropout = 0.0;
  std::vector<std::string> attention = {"lsh"};  ///< reformer: "lsh" or "self" per layer
  long n_hashes = 2;
  long n_buckets = 0;  ///< 0: auto, 2 * length / chunk_len (Trax's guidance)
  long chunk_len = 64;
  long n_chunks_before = 1;
  long ff_chunk_size = 0;
  // training
  long batch = 4;
  long steps = 100000;
  double lr = 4e-3;
  long warmup_steps = kAutoWarmup;
  std::string schedule = "rsqrt";  ///< "rsqrt", "constant" or "cosine"
  long seed = 0;
  double time_budget = 0;  ///< seconds of training (0: none); then checkpoint and stop
  // evaluation, samples, output
  long eval_every = 100;
  long eval_batches = 4;
  long checkpoint_every = 200;
  long early_stop_patience = 0;  ///< evaluations without a better eval loss; 0: never
  long sample_every = 100;       ///< steps between samples printed in training; 0: none
  std::string sample_prompt = "";
  long sample_length = 200;         ///< tokens to generate
  double sample_temperature = 0.8;  ///< 0: greedy
  long sample_top_k = 0;            ///< 0: all tokens
  double sample_top_p = 1.0;        ///< 1: all tokens
  std::string output_dir = "runs/text";
  std::string progress = "auto";
};

/// What the command line asked for (with the extra flags --sample-from and --prompt).
using TextCommandLine = CommandLineOf<TextConfig>;

/// The settings table and its machinery (common/settings.hpp's ConfigTable).
const ConfigTable<TextConfig>& text_config_table();

/// Parses argv without the program name; throws ConfigError.
TextCommandLine parse_text_command_line(const std::vector<std::string>& args);
/// Checks ranges and cross-setting rules; throws ConfigError.
void validate(const TextConfig& config);
/// n_buckets with 0 ("auto") resolved: 2 * length / chunk_len, at least 2, even.
long effective_n_buckets(const TextConfig& config);
/// The config as JSON (config.json), every key.
std::string to_json(const TextConfig& config);
/// The saved run's settings continued with the command line (see ConfigTable).
TextConfig resolve_resume(const std::string& saved_json, const std::string& saved_path,
                          const TextCommandLine& cl);
/// cl.config validated, warmup resolved.
TextConfig resolve_new_run(const TextCommandLine& cl);
/// Applies a JSON object's keys (a saved config.json) over `config`.
void apply_json(TextConfig& config, const std::string& json_text, const std::string& source);
/// The --help text.
std::string text_usage();

}  // namespace minitrax::app
