// examples/duplication/config.hpp: the configuration of the main job (a toy Reformer
// on the duplication task "0 w 0 w"), from a JSON file and command-line flags.
//
// Every setting has a JSON key and a flag: key "n_hashes" is flag --n-hashes.
// Precedence: defaults < --config FILE < the other flags (in any order).
// Validation names the setting and says what is allowed; unknown keys and flags
// are errors that list what exists.
//
// How the main job uses this file:
//
//   CommandLine cl = parse_command_line(args);       // ConfigError on bad input
//   if (cl.help) { print usage(); exit 0 }            // nothing else was checked
//   DuplicationConfig c;
//   if (!cl.resume) {
//     c = cl.config;                                  // validated, warm-up resolved
//   } else if (<output_dir>/config.json exists) {
//     const std::string path = cl.config.output_dir + "/config.json";
//     c = resolve_resume(read_config_file(path), path, cl);
//   } else {
//     c = resolve_new_run(cl);                        // nothing saved: a fresh start
//   }
//   write to_json(c) as <output_dir>/config.json     // the run's truth (a resumed run
//                                                    // may have changed a safe key)
//   model options: o.ff_activation = ff_activation_layer(c.ff_activation)
//                                                    // duplication/model_choice.hpp
//
// The returned config is always complete: validated, warmup_steps a number. Every
// function throws ConfigError only (never nlohmann's exceptions, never a crash on deep
// or huge input: the fuzzers fuzz_config_json and fuzz_cli check this).
#pragma once

#include <string>
#include <vector>

#include "common/settings.hpp"

namespace minitrax::app {

struct DuplicationConfig {
  // task
  long length = 64;  // total sequence length L: "0 w 0 w" with |w| = L/2 - 1
  long vocab = 64;   // symbols 0 .. vocab-1; w uses 1 .. vocab-2
  // model
  long d_model = 128;
  long d_ff = 256;
  /// The feed-forward non-linearity: "relu", "gelu", "fast_gelu", "sigmoid" or "tanh"
  /// (model_choice.hpp maps it to the layer). Runs saved before this setting existed
  /// used relu.
  std::string ff_activation = "relu";
  long n_layers = 2;
  long n_heads = 4;
  long d_attention_key = 32;
  long d_attention_value = 32;
  double dropout = 0.0;
  /// Attention per layer, cycled: "lsh" or "self" (full attention).
  std::vector<std::string> attention = {"lsh"};
  long n_hashes = 4;
  long n_buckets = 4;
  long chunk_len = 16;
  long n_chunks_before = 1;
  long ff_chunk_size = 0;
  bool reversible = true;
  // training
  long batch = 16;
  long steps = 1200;
  double lr = 2e-3;
  /// kAutoWarmup ("auto") until resolved: parse_command_line, resolve_resume and
  /// resolve_new_run return it as a number; to_json always writes the number.
  long warmup_steps = kAutoWarmup;
  std::string schedule = "cosine";  // "cosine", "rsqrt", "constant"
  long seed = 0;
  // evaluation, output
  long eval_every = 100;
  long eval_batches = 2;
  long eval_batch = 32;
  long checkpoint_every = 200;
  std::vector<long> eval_n_hashes = {1, 2, 4, 8};
  std::string output_dir = "runs/duplication";
  std::string progress = "auto";  // "auto", "bar", "lines", "none"
};

/// What the command line asked for (common/settings.hpp).
using CommandLine = CommandLineOf<DuplicationConfig>;

/// The settings table and its machinery (common/settings.hpp's ConfigTable).
const ConfigTable<DuplicationConfig>& duplication_config_table();

/// Parses argv without the program name (flags and --config FILE); throws ConfigError.
/// --help or -h anywhere wins: the result has help = true and nothing else is read.
CommandLine parse_command_line(const std::vector<std::string>& args);

/// Applies a JSON object's keys on top of `config`; throws ConfigError, leaving `config`
/// unchanged. `source` names the text in messages (a file name). Text over
/// kMaxConfigBytes or nested deeper than kMaxConfigDepth is refused before parsing.
/// A key absent from the text keeps its value in `config`. "warmup_steps" may be "auto".
void apply_json(DuplicationConfig& config, const std::string& json_text,
                const std::string& source = "config");

/// Checks ranges and the cross-setting rules; throws ConfigError. warmup_steps may be
/// kAutoWarmup (it is then min(100, steps / 10), always valid).
void validate(const DuplicationConfig& config);

/// The config as a JSON object (what --config accepts), pretty-printed; every key, with
/// warmup_steps as a number (effective_warmup_steps).
std::string to_json(const DuplicationConfig& config);

/// The settings of the run saved at `saved_path` (its config.json, whose text is
/// `saved_json`), continued with the command line `cl` (which has resume = true).
///
/// - The saved text is applied over the defaults of the code that wrote old runs (a
///   key missing from it, e.g. ff_activation in runs saved before it existed, takes the
///   value that code used: "relu"). Bad JSON, an unknown key or an invalid saved config
///   is a ConfigError whose message starts with "saved config '<saved_path>': ".
/// - output_dir is always cl.config.output_dir: where the run's files are now (a
///   moved folder keeps working).
/// - Each key in cl.given_keys whose value equals the saved one is fine. One that
///   differs is applied if it is resume-safe: it does not change the training
///   computation nor the meaning of what is already in metrics.jsonl: eval_every,
///   checkpoint_every, eval_n_hashes, progress, output_dir, and steps unless the saved
///   schedule is "cosine" (the cosine decay spans steps, so a new steps value would
///   change the learning rate of every remaining step; "rsqrt" and "constant" do not
///   depend on steps, so there steps may grow or shrink). Every other differing key
///   (the task, the model, batch, lr, warmup_steps, schedule, seed, and eval_batch /
///   eval_batches, whose saved values produced the evaluations already in
///   metrics.jsonl) is collected, and if there is any, ONE ConfigError lists them all:
///   key, saved value, given value (as JSON), why, and how to go on.
/// - The result is validated (ConfigError) and returned with warmup_steps a number.
DuplicationConfig resolve_resume(const std::string& saved_json, const std::string& saved_path,
                                 const CommandLine& cl);

/// cl.config validated and with warmup_steps resolved: for --resume in a folder that
/// has no saved config (a new run). Throws ConfigError.
DuplicationConfig resolve_new_run(const CommandLine& cl);

/// Whether changing `key` when resuming a run saved with `saved` keeps its computation
/// (see resolve_resume). Unknown keys are not safe.
bool resume_safe(const std::string& key, const DuplicationConfig& saved);

/// The --help text.
std::string usage();

}  // namespace minitrax::app
