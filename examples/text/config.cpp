// examples/text/config.cpp: the text trainer's settings table, validation, and which
// settings a resumed run may change (the machinery is common/settings.hpp's).
#include "text/config.hpp"

#include <set>
#include <string>
#include <vector>

namespace minitrax::app {

namespace {

using namespace settings;

std::vector<Setting<TextConfig>> settings_table() {
  using C = TextConfig;
  return {
      {"data", &C::data, "text file (plain, .gz or .dz), folder or glob of files"},
      {"tokenizer", &C::tokenizer, "tokens: chars, bytes or sentencepiece"},
      {"sp_vocab_size", &C::sp_vocab_size, "SentencePiece vocabulary size, 16..65536"},
      {"sp_model_type", &C::sp_model_type, "SentencePiece model: unigram or bpe"},
      {"eval_fraction", &C::eval_fraction, "held-out tail of the text, 0 < x < 0.5"},
      {"length", &C::length, "tokens per training window, 2..65536"},
      {"model", &C::model, "reformer (reversible, LSH attention) or transformer"},
      {"d_model", &C::d_model, "model width, 1..4096"},
      {"d_ff", &C::d_ff, "feed-forward hidden width, 1..16384"},
      {"ff_activation", &C::ff_activation,
       "feed-forward non-linearity: relu, gelu, fast_gelu, sigmoid or tanh"},
      {"n_layers", &C::n_layers, "decoder blocks, 1..64"},
      {"n_heads", &C::n_heads, "attention heads, 1..64"},
      {"d_attention_key", &C::d_attention_key, "reformer: per-head query/key width, 1..1024"},
      {"d_attention_value", &C::d_attention_value, "reformer: per-head value width, 1..1024"},
      {"dropout", &C::dropout, "dropout rate, 0 <= x < 1"},
      {"attention", &C::attention, "reformer: attention per layer, cycled: lsh / self"},
      {"n_hashes", &C::n_hashes, "LSH hash rounds, 1..64"},
      {"n_buckets", &C::n_buckets, "LSH buckets per round, even, or 0 = 2 * length / chunk_len"},
      {"chunk_len", &C::chunk_len, "LSH chunk length, dividing length"},
      {"n_chunks_before", &C::n_chunks_before, "LSH chunks attended before each chunk, 0..8"},
      {"ff_chunk_size", &C::ff_chunk_size, "reformer: feed-forward chunk, 0 = none"},
      {"batch", &C::batch, "training windows per step, 1..4096"},
      {"steps", &C::steps, "training steps, 1..100000000"},
      {"lr", &C::lr, "peak learning rate, 0 < x <= 1"},
      {"warmup_steps", &C::warmup_steps,
       "linear warm-up steps, 0..steps, or auto = min(100, steps/10)"},
      {"schedule", &C::schedule, "learning-rate schedule: rsqrt, constant or cosine"},
      {"seed", &C::seed, "random seed, 0..2147483647"},
      {"time_budget", &C::time_budget, "seconds of training, then checkpoint and stop; 0 = none"},
      {"eval_every", &C::eval_every, "steps between evaluations, 0 = only at the end"},
      {"eval_batches", &C::eval_batches, "held-out batches per evaluation, 1..1000"},
      {"checkpoint_every", &C::checkpoint_every, "steps between checkpoints, 0 = only at the end"},
      {"early_stop_patience", &C::early_stop_patience,
       "stop after this many evaluations without a better eval loss, 0 = never"},
      {"sample_every", &C::sample_every, "steps between samples shown in training, 0 = none"},
      {"sample_prompt", &C::sample_prompt, "text the samples continue"},
      {"sample_length", &C::sample_length, "tokens per sample, 1..65536"},
      {"sample_temperature", &C::sample_temperature, "sampling temperature, 0 = greedy, 0..10"},
      {"sample_top_k", &C::sample_top_k, "sample from the k most likely tokens, 0 = all"},
      {"sample_top_p", &C::sample_top_p, "sample from the smallest set of mass p, 0 < p <= 1"},
      {"output_dir", &C::output_dir, "folder for checkpoints, metrics.jsonl and plots"},
      {"progress", &C::progress, "progress display: auto, bar, lines or none"},
  };
}

const std::vector<const char*> kActivations = {"relu", "gelu", "fast_gelu", "sigmoid", "tanh"};

// Keys that change neither the training computation nor what metrics.jsonl means.
const std::set<std::string> kResumeSafe = {
    "eval_every",   "checkpoint_every", "progress",           "output_dir",
    "time_budget",  "sample_every",     "sample_prompt",      "sample_length",
    "sample_top_k", "sample_top_p",     "sample_temperature", "early_stop_patience",
};

bool resume_safe(const std::string& key, const TextConfig& saved) {
  if (key == "steps") return saved.schedule != "cosine";
  return kResumeSafe.count(key) > 0;
}

std::string why_fixed(const std::string& key, const TextConfig& saved) {
  if (key == "data" || key == "tokenizer" || key == "sp_vocab_size" || key == "sp_model_type" ||
      key == "eval_fraction" || key == "length") {
    return "defines the data and the vocabulary";
  }
  if (key == "batch" || key == "lr" || key == "warmup_steps" || key == "schedule" ||
      key == "seed") {
    return "defines the training";
  }
  if (key == "steps") {
    return "with schedule \"" + saved.schedule +
           "\" the learning rate of each step depends on steps";
  }
  if (key == "eval_batches") return "the evaluations already in metrics.jsonl used the saved value";
  return "defines the model";
}

const ConfigTable<TextConfig>& make_table() {
  static const ConfigTable<TextConfig> t{.table = settings_table(),
                                         .validate = [](const TextConfig& c) { validate(c); },
                                         .resume_safe = resume_safe,
                                         .why_fixed = why_fixed,
                                         .saved_run_defaults = [] { return TextConfig{}; },
                                         .extra_flags = {{"sample-from", true}, {"prompt", true}}};
  return t;
}

}  // namespace

const ConfigTable<TextConfig>& text_config_table() {
  return make_table();
}

void validate(const TextConfig& c) {
  if (c.data.empty()) throw ConfigError("data must name a text file, folder or glob");
  check_one_of("tokenizer", c.tokenizer, {"chars", "bytes", "sentencepiece"});
  check_range("sp_vocab_size", c.sp_vocab_size, 16, 65536);
  check_one_of("sp_model_type", c.sp_model_type, {"unigram", "bpe"});
  check_real("eval_fraction", c.eval_fraction, 0, 0.5, true, false);
  check_range("length", c.length, 2, 65536);
  check_one_of("model", c.model, {"reformer", "transformer"});
  check_range("d_model", c.d_model, 1, 4096);
  check_range("d_ff", c.d_ff, 1, 16384);
  check_one_of("ff_activation", c.ff_activation, kActivations);
  check_range("n_layers", c.n_layers, 1, 64);
  check_range("n_heads", c.n_heads, 1, 64);
  if (c.model == "transformer" && c.d_model % c.n_heads != 0) {
    throw ConfigError("model transformer: d_model (" + std::to_string(c.d_model) +
                      ") must be a multiple of n_heads (" + std::to_string(c.n_heads) + ")");
  }
  check_range("d_attention_key", c.d_attention_key, 1, 1024);
  check_range("d_attention_value", c.d_attention_value, 1, 1024);
  check_real("dropout", c.dropout, 0, 1, false, false);
  if (c.attention.empty()) {
    throw ConfigError("attention must list at least one of \"lsh\", \"self\"");
  }
  for (const std::string& a : c.attention) check_one_of("attention", a, {"lsh", "self"});
  if (c.n_layers % static_cast<long>(c.attention.size()) != 0) {
    throw ConfigError("n_layers (" + std::to_string(c.n_layers) +
                      ") must be a multiple of the attention pattern's length (" +
                      std::to_string(c.attention.size()) + ")");
  }
  check_range("n_hashes", c.n_hashes, 1, 64);
  check_range("n_buckets", c.n_buckets, 0, 65536);
  if (c.n_buckets % 2 != 0) {
    throw ConfigError("n_buckets must be even (LSH takes argmax over [xR, -xR]) or 0 (auto), got " +
                      std::to_string(c.n_buckets));
  }
  check_range("chunk_len", c.chunk_len, 1, c.length);
  if (c.model == "reformer" && c.length % c.chunk_len != 0) {
    const long up = (c.length / c.chunk_len + 1) * c.chunk_len;
    throw ConfigError("chunk_len (" + std::to_string(c.chunk_len) + ") must divide length (" +
                      std::to_string(c.length) + "): use length " + std::to_string(up) +
                      " or a chunk_len that divides " + std::to_string(c.length));
  }
  check_range("n_chunks_before", c.n_chunks_before, 0, 8);
  check_range("ff_chunk_size", c.ff_chunk_size, 0, c.length);
  check_range("batch", c.batch, 1, 4096);
  check_range("steps", c.steps, 1, 100000000);
  check_real("lr", c.lr, 0, 1, true, true);
  if (c.warmup_steps != kAutoWarmup && (c.warmup_steps < 0 || c.warmup_steps > c.steps)) {
    throw ConfigError("warmup_steps must be in [0, " + std::to_string(c.steps) +
                      "] (at most steps) or auto, got " + std::to_string(c.warmup_steps));
  }
  check_one_of("schedule", c.schedule, {"rsqrt", "constant", "cosine"});
  check_range("seed", c.seed, 0, 2147483647);
  check_real("time_budget", c.time_budget, 0, 1e9, false, false);
  check_range("eval_every", c.eval_every, 0, 100000000);
  check_range("eval_batches", c.eval_batches, 1, 1000);
  check_range("checkpoint_every", c.checkpoint_every, 0, 100000000);
  check_range("early_stop_patience", c.early_stop_patience, 0, 1000000);
  check_range("sample_every", c.sample_every, 0, 100000000);
  check_range("sample_length", c.sample_length, 1, 65536);
  check_real("sample_temperature", c.sample_temperature, 0, 10, false, true);
  check_range("sample_top_k", c.sample_top_k, 0, 1 << 30);
  check_real("sample_top_p", c.sample_top_p, 0, 1, true, true);
  check_output_dir(c.output_dir);
  check_one_of("progress", c.progress, {"auto", "bar", "lines", "none"});
}

long effective_n_buckets(const TextConfig& c) {
  if (c.n_buckets > 0) return c.n_buckets;
  long n = 2 * c.length / c.chunk_len;
  if (n < 2) n = 2;
  return n + (n % 2);
}

TextCommandLine parse_text_command_line(const std::vector<std::string>& args) {
  // With --sample-from, the run's saved config gives the model: the flags are only
  // checked for their form here (as with --resume).
  bool sampling = false;
  for (const std::string& a : args) {
    sampling |= a == "--sample-from" || a.rfind("--sample-from=", 0) == 0;
  }
  if (!sampling) return make_table().parse_command_line(args);
  std::vector<std::string> with_resume = args;
  with_resume.push_back("--resume");  // parse without validating the whole
  TextCommandLine cl = make_table().parse_command_line(with_resume);
  cl.resume = false;
  for (const std::string& a : args) cl.resume |= a == "--resume";
  return cl;
}

std::string to_json(const TextConfig& c) {
  return make_table().to_json(c);
}

void apply_json(TextConfig& config, const std::string& json_text, const std::string& source) {
  (void)make_table().apply_json_keys(config, json_text, source);
}

TextConfig resolve_resume(const std::string& saved_json, const std::string& saved_path,
                          const TextCommandLine& cl) {
  return make_table().resolve_resume(saved_json, saved_path, cl);
}

TextConfig resolve_new_run(const TextCommandLine& cl) {
  return make_table().resolve_new_run(cl);
}

std::string text_usage() {
  return "text_lm: trains a language model (ReformerLM with LSH attention and reversible\n"
         "layers, or TransformerLM) on any text, reports bits per character on held-out\n"
         "text, samples while training, and samples from a saved run.\n\n"
         "usage: text_lm [--config FILE] [--resume] [--KEY VALUE | --KEY=VALUE ...]\n"
         "       text_lm --sample-from RUN_DIR [--prompt TEXT ...] [--sample-KEY VALUE ...]\n\n"
         "  --config FILE      a JSON object of the keys below (flags given too override it)\n"
         "  --resume           continue the run in output_dir with its saved config.json; only\n"
         "                     eval_every, checkpoint_every, progress, output_dir, time_budget,\n"
         "                     early_stop_patience, the sample_* keys (and steps, unless the\n"
         "                     schedule is cosine) may differ from it\n"
         "  --sample-from DIR  sample from the run in DIR (its best checkpoint if it kept one,\n"
         "                     else its newest) instead of training\n"
         "  --prompt TEXT      a prompt to continue (give several for a batch); default the\n"
         "                     run's sample_prompt\n"
         "  --help             this text\n\n"
         "keys (JSON) / flags (same name, dashes for underscores), with their defaults:\n" +
         make_table().keys_usage();
}

}  // namespace minitrax::app
