// examples/duplication/config.hpp: the configuration of the main job (a toy Reformer
// on the duplication task "0 w 0 w"), from a JSON file and command-line flags.
//
// Every setting has a JSON key and a flag: key "n_hashes" is flag --n-hashes.
// Precedence: defaults < --config FILE < the other flags (in any order).
// Validation names the setting and says what is allowed; unknown keys and flags
// are errors that list what exists.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace minitrax::app {

/// A bad config value, flag or file; the message says what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DuplicationConfig {
  // task
  long length = 64;  // total sequence length L: "0 w 0 w" with |w| = L/2 - 1
  long vocab = 64;   // symbols 0 .. vocab-1; w uses 1 .. vocab-2
  // model
  long d_model = 128;
  long d_ff = 256;
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
  long warmup_steps = 100;
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

/// What the command line asked for.
struct CommandLine {
  DuplicationConfig config;
  bool resume = false;      // --resume: continue from the newest checkpoint in output_dir
  bool help = false;        // --help
  std::string config_file;  // --config FILE (already applied)
};

/// Parses argv (flags and --config FILE); throws ConfigError.
CommandLine parse_command_line(const std::vector<std::string>& args);
/// Applies a JSON object's keys on top of `config`; throws ConfigError.
void apply_json(DuplicationConfig& config, const std::string& json_text,
                const std::string& source = "config");
/// Checks ranges and the cross-setting rules; throws ConfigError.
void validate(const DuplicationConfig& config);
/// The config as a JSON object (what --config accepts), pretty-printed.
std::string to_json(const DuplicationConfig& config);
/// The --help text.
std::string usage();

}  // namespace minitrax::app
