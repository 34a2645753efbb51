// examples/duplication/config.cpp: the main job's settings table, validation, and which
// settings a resumed run may change (the machinery is common/settings.hpp's).
#include "duplication/config.hpp"

#include <string>
#include <vector>

namespace minitrax::app {

namespace {

using namespace settings;

std::vector<Setting<DuplicationConfig>> settings_table() {
  using C = DuplicationConfig;
  return {
      {"length", &C::length, "total sequence length L, even, 4..65536 (w has L/2 - 1 symbols)"},
      {"vocab", &C::vocab, "vocabulary size, 3..65536 (w uses symbols 1..vocab-2)"},
      {"d_model", &C::d_model, "width of each of the two residual streams, 1..4096"},
      {"d_ff", &C::d_ff, "feed-forward hidden width, 1..16384"},
      {"ff_activation", &C::ff_activation,
       "feed-forward non-linearity: relu, gelu, fast_gelu, sigmoid or tanh"},
      {"n_layers", &C::n_layers, "decoder blocks, 1..64 (a multiple of the attention pattern)"},
      {"n_heads", &C::n_heads, "attention heads, 1..64"},
      {"d_attention_key", &C::d_attention_key, "per-head query/key width, 1..1024"},
      {"d_attention_value", &C::d_attention_value, "per-head value width, 1..1024"},
      {"dropout", &C::dropout, "dropout rate, 0 <= x < 1"},
      {"attention", &C::attention, "attention per layer, cycled: a list of lsh / self"},
      {"n_hashes", &C::n_hashes, "LSH hash rounds in training, 1..64"},
      {"n_buckets", &C::n_buckets, "LSH buckets per round, even, 2..65536"},
      {"chunk_len", &C::chunk_len, "LSH chunk length, 1..length, dividing length"},
      {"n_chunks_before", &C::n_chunks_before, "LSH chunks attended before each chunk, 0..8"},
      {"ff_chunk_size", &C::ff_chunk_size, "feed-forward chunk (positions), 0 = none, 0..length"},
      {"reversible", &C::reversible, "reversible backward pass (true) or plain backprop (false)"},
      {"batch", &C::batch, "training batch size, 1..4096"},
      {"steps", &C::steps, "training steps, 1..10000000"},
      {"lr", &C::lr, "peak learning rate, 0 < x <= 1"},
      {"warmup_steps", &C::warmup_steps,
       "linear warm-up steps, 0..steps, or auto = min(100, steps/10)"},
      {"schedule", &C::schedule, "learning-rate schedule: cosine, rsqrt or constant"},
      {"seed", &C::seed, "random seed, 0..2147483647"},
      {"eval_every", &C::eval_every, "steps between evaluations, 0 = only at the end"},
      {"eval_batches", &C::eval_batches, "held-out batches per evaluation, 1..1000"},
      {"eval_batch", &C::eval_batch, "held-out batch size, 1..4096"},
      {"checkpoint_every", &C::checkpoint_every, "steps between checkpoints, 0 = only at the end"},
      {"eval_n_hashes", &C::eval_n_hashes, "n_hashes values of the final LSH evaluation, 1..64"},
      {"output_dir", &C::output_dir, "folder for checkpoints, metrics.jsonl and the plot"},
      {"progress", &C::progress, "progress display: auto, bar, lines or none"},
  };
}

const std::vector<const char*> kActivations = {"relu", "gelu", "fast_gelu", "sigmoid", "tanh"};

// The defaults of the code that wrote the runs saved so far: a saved config.json lacking
// a key takes the value that code used.
DuplicationConfig saved_run_defaults() {
  DuplicationConfig c;
  c.ff_activation = "relu";  // before ff_activation existed, the model used relu
  c.warmup_steps = 100;      // before "auto", the default was 100
  return c;
}

// Why a key that is not resume-safe cannot change (for resolve_resume's message).
std::string why_fixed(const std::string& key, const DuplicationConfig& saved) {
  if (key == "length" || key == "vocab") return "defines the task and the model";
  if (key == "batch" || key == "lr" || key == "warmup_steps" || key == "schedule" ||
      key == "seed") {
    return "defines the training";
  }
  if (key == "steps") {
    return "with schedule \"" + saved.schedule +
           "\" the learning rate of each step depends on steps";
  }
  if (key == "eval_batch" || key == "eval_batches") {
    return "the evaluations already in metrics.jsonl used the saved value";
  }
  return "defines the model";
}

const ConfigTable<DuplicationConfig>& table() {
  static const ConfigTable<DuplicationConfig> t{
      .table = settings_table(),
      .validate = [](const DuplicationConfig& c) { validate(c); },
      .resume_safe = [](const std::string& key,
                        const DuplicationConfig& saved) { return resume_safe(key, saved); },
      .why_fixed = why_fixed,
      .saved_run_defaults = saved_run_defaults,
      .extra_flags = {}};
  return t;
}

}  // namespace

const ConfigTable<DuplicationConfig>& duplication_config_table() {
  return table();
}

void apply_json(DuplicationConfig& config, const std::string& json_text,
                const std::string& source) {
  (void)table().apply_json_keys(config, json_text, source);
}

void validate(const DuplicationConfig& c) {
  check_range("length", c.length, 4, 65536);
  if (c.length % 2 != 0) {
    throw ConfigError("length must be even (\"0 w 0 w\"), got " + std::to_string(c.length));
  }
  check_range("vocab", c.vocab, 3, 65536);
  check_range("d_model", c.d_model, 1, 4096);
  check_range("d_ff", c.d_ff, 1, 16384);
  check_one_of("ff_activation", c.ff_activation, kActivations);
  check_range("n_layers", c.n_layers, 1, 64);
  check_range("n_heads", c.n_heads, 1, 64);
  check_range("d_attention_key", c.d_attention_key, 1, 1024);
  check_range("d_attention_value", c.d_attention_value, 1, 1024);
  if (!(c.dropout >= 0 && c.dropout < 1)) {
    throw ConfigError("dropout must be in [0, 1), got " + number_text(c.dropout));
  }
  if (c.attention.empty())
    throw ConfigError("attention must list at least one of \"lsh\", \"self\"");
  for (const std::string& a : c.attention) check_one_of("attention", a, {"lsh", "self"});
  if (c.n_layers % static_cast<long>(c.attention.size()) != 0) {
    throw ConfigError("n_layers (" + std::to_string(c.n_layers) +
                      ") must be a multiple of the attention pattern's length (" +
                      std::to_string(c.attention.size()) + ")");
  }
  check_range("n_hashes", c.n_hashes, 1, 64);
  check_range("n_buckets", c.n_buckets, 2, 65536);
  if (c.n_buckets % 2 != 0) {
    throw ConfigError("n_buckets must be even (LSH takes argmax over [xR, -xR]), got " +
                      std::to_string(c.n_buckets));
  }
  check_range("chunk_len", c.chunk_len, 1, c.length);
  if (c.length % c.chunk_len != 0) {
    const long up = (c.length / c.chunk_len + 1) * c.chunk_len;
    throw ConfigError("chunk_len (" + std::to_string(c.chunk_len) + ") must divide length (" +
                      std::to_string(c.length) + "): use length " + std::to_string(up) +
                      " or a chunk_len that divides " + std::to_string(c.length));
  }
  check_range("n_chunks_before", c.n_chunks_before, 0, 8);
  check_range("ff_chunk_size", c.ff_chunk_size, 0, c.length);
  check_range("batch", c.batch, 1, 4096);
  check_range("steps", c.steps, 1, 10000000);
  if (!(c.lr > 0 && c.lr <= 1)) throw ConfigError("lr must be in (0, 1], got " + number_text(c.lr));
  if (c.warmup_steps != kAutoWarmup && (c.warmup_steps < 0 || c.warmup_steps > c.steps)) {
    throw ConfigError("warmup_steps must be in [0, " + std::to_string(c.steps) +
                      "] (at most steps) or auto, got " + std::to_string(c.warmup_steps));
  }
  check_one_of("schedule", c.schedule, {"cosine", "rsqrt", "constant"});
  check_range("seed", c.seed, 0, 2147483647);
  check_range("eval_every", c.eval_every, 0, 10000000);
  check_range("eval_batches", c.eval_batches, 1, 1000);
  check_range("eval_batch", c.eval_batch, 1, 4096);
  check_range("checkpoint_every", c.checkpoint_every, 0, 10000000);
  if (c.eval_n_hashes.empty()) throw ConfigError("eval_n_hashes must list at least one value");
  for (long h : c.eval_n_hashes) check_range("eval_n_hashes item", h, 1, 64);
  check_output_dir(c.output_dir);
  check_one_of("progress", c.progress, {"auto", "bar", "lines", "none"});
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  return table().parse_command_line(args);
}

std::string to_json(const DuplicationConfig& c) {
  return table().to_json(c);
}

bool resume_safe(const std::string& key, const DuplicationConfig& saved) {
  if (key == "steps") return saved.schedule != "cosine";
  return key == "eval_every" || key == "checkpoint_every" || key == "eval_n_hashes" ||
         key == "progress" || key == "output_dir";
}

DuplicationConfig resolve_resume(const std::string& saved_json, const std::string& saved_path,
                                 const CommandLine& cl) {
  return table().resolve_resume(saved_json, saved_path, cl);
}

DuplicationConfig resolve_new_run(const CommandLine& cl) {
  return table().resolve_new_run(cl);
}

std::string usage() {
  std::ostringstream os;
  os << "reformer_duplication: trains a toy Reformer (LSH attention, reversible layers) on the\n"
        "duplication task \"0 w 0 w\", then evaluates it with full attention and LSH at several\n"
        "n_hashes (the paper's Table 2 row), samples a completion and plots the curves.\n\n"
        "usage: reformer_duplication [--config FILE] [--resume] [--KEY VALUE | --KEY=VALUE ...]\n\n"
        "  --config FILE   a JSON object of the keys below (flags given too override it)\n"
        "  --resume        continue the run in output_dir with its saved config.json; only\n"
        "                  eval_every, checkpoint_every, eval_n_hashes, progress, output_dir\n"
        "                  (and steps, unless the schedule is cosine) may differ from it\n"
        "  --help          this text (wherever it stands on the command line)\n\n"
        "keys (JSON) / flags (same name, dashes for underscores), defaults as a flag takes them;\n"
        "a list is written 1,2,4 or [1,2,4] or 4 (one item) in a flag, [1, 2, 4] or\n"
        "[\"lsh\", \"self\"] in JSON:\n";
  os << table().keys_usage();
  return os.str();
}

}  // namespace minitrax::app
