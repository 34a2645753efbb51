// examples/copy_transformer.cpp: a TransformerLM learns to copy ("0 w 0 w").
//
// The whole life of a small model: define it in a few lines, train it with the
// Loop (progress, eval, checkpoints), reload the checkpoint into a fresh model,
// measure second-half accuracy on held-out sequences, and complete "0 w 0" by
// greedy sampling. docs/tutorial.md walks through this file.
//
//   copy_transformer [--steps N] [--length L] [--vocab V] [--d-model D] [--layers N]
//                    [--heads H] [--batch B] [--lr X] [--seed S] [--output-dir DIR]
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "autodiff/tape.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "layers/combinators.hpp"
#include "models/transformer.hpp"
#include "training/checkpoint.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"

using namespace minitrax;

namespace {

struct Config {
  long steps = 400;
  long length = 64;  // total sequence length: "0 w 0 w" with |w| = length/2 - 1
  long vocab = 32;
  long d_model = 128;
  long layers = 2;
  long heads = 4;
  long batch = 16;
  double lr = 2e-3;
  long seed = 0;
  std::string output_dir = "runs/copy_transformer";
};

[[noreturn]] void usage(const std::string& msg) {
  std::cerr << "copy_transformer: " << msg << "\n"
            << "flags: --steps N (1..1000000), --length L (even, 4..2048), --vocab V (3..65536),\n"
               "       --d-model D (1..4096, a multiple of --heads), --layers N (0..64),\n"
               "       --heads H (1..64), --batch B (1..4096), --lr X (0 < X <= 1), --seed S,\n"
               "       --output-dir DIR\n";
  std::exit(2);
}

long int_flag(const std::string& flag, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi) {
    usage(flag + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
          "], got '" + v + "'");
  }
  return x;
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--help" || f == "-h") usage("trains a TransformerLM on the copy task");
    if (i + 1 >= argc) usage("missing value after " + f);
    const std::string v = argv[++i];
    if (f == "--steps")
      c.steps = int_flag(f, v, 1, 1000000);
    else if (f == "--length")
      c.length = int_flag(f, v, 4, 2048);
    else if (f == "--vocab")
      c.vocab = int_flag(f, v, 3, 65536);
    else if (f == "--d-model")
      c.d_model = int_flag(f, v, 1, 4096);
    else if (f == "--layers")
      c.layers = int_flag(f, v, 0, 64);
    else if (f == "--heads")
      c.heads = int_flag(f, v, 1, 64);
    else if (f == "--batch")
      c.batch = int_flag(f, v, 1, 4096);
    else if (f == "--seed")
      c.seed = int_flag(f, v, 0, 2147483647);
    else if (f == "--output-dir")
      c.output_dir = v;
    else if (f == "--lr") {
      char* end = nullptr;
      c.lr = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(c.lr > 0 && c.lr <= 1)) usage("--lr must be in (0, 1]");
    } else {
      usage("unknown flag '" + f + "'");
    }
  }
  if (c.length % 2 != 0) usage("--length must be even, got " + std::to_string(c.length));
  if (c.d_model % c.heads != 0) usage("--d-model must be a multiple of --heads");
  return c;
}

// Greedy completion of "0 w 0": feeds the prefix, appends the argmax token, repeats.
std::vector<int> complete(base::Layer& model, std::vector<int> prefix, std::size_t total) {
  autodiff::NoRecord quiet;
  while (prefix.size() < total) {
    std::vector<std::int32_t> ids(prefix.begin(), prefix.end());
    ids.resize(total, 0);  // pad: positions after the prefix do not affect it (causal)
    Tensor x = Tensor::from<std::int32_t>({1, total}, ids);
    Tensor logp = model(Var(x)).value();
    const Tensor next = core::argmax(logp, -1, DType::i32);
    prefix.push_back(static_cast<int>(next.flat(prefix.size())));
  }
  return prefix;
}

}  // namespace

int main(int argc, char** argv) try {
  const Config cfg = parse(argc, argv);
  const long L = cfg.length;

  // 1. The model: Trax's TransformerLM, small.
  models::TransformerLMOptions opts;
  opts.vocab_size = cfg.vocab;
  opts.d_model = cfg.d_model;
  opts.d_ff = 2 * cfg.d_model;
  opts.n_layers = cfg.layers;
  opts.n_heads = cfg.heads;
  opts.dropout = 0.0;
  opts.max_len = cfg.length;
  auto model = models::TransformerLM(opts);

  // 2. Data: copy-task batches for training, a different key for held-out eval.
  auto keys = core::split(core::key_from_seed(cfg.seed), 3);
  auto train_stream = training::copy_task_stream(keys[0], cfg.batch, L, cfg.vocab);
  auto eval_stream = training::copy_task_stream(keys[1], 64, L, cfg.vocab);

  // 3. Training: weighted cross-entropy (only the second w counts), Adam, warmup.
  training::AdamOptions adam;
  adam.learning_rate = cfg.lr;
  adam.weight_decay_rate = 0.0;
  adam.clip_grad_norm = 1.0;
  training::TrainTask task{train_stream, training::WeightedCategoryCrossEntropy(),
                           std::make_shared<training::Adam>(adam),
                           training::cosine(cfg.lr, cfg.steps, cfg.lr / 20, cfg.steps / 10)};
  training::EvalTask eval;
  eval.stream = eval_stream;
  eval.metrics = {{"loss", training::WeightedCategoryCrossEntropy()},
                  {"accuracy", training::WeightedCategoryAccuracy()}};
  eval.n_batches = 2;
  training::LoopOptions options;
  options.output_dir = cfg.output_dir;
  options.eval_every = std::max<long>(cfg.steps / 5, 1);
  options.checkpoint_every = std::max<long>(cfg.steps / 5, 1);

  std::cout << "minitrax: TransformerLM on the copy task, length " << L << ", vocab " << cfg.vocab
            << ", d_model " << cfg.d_model << ", " << cfg.layers << " layers, " << cfg.heads
            << " heads, batch " << cfg.batch << ", " << cfg.steps
            << " steps (BLAS kernels: " << core::blas_core_name() << ")\n";
  training::Loop loop(model, task, {eval}, options, keys[2]);
  if (loop.resume()) std::cout << "resumed from step " << loop.step() << "\n";
  loop.run(cfg.steps);

  // 4. Reload the last checkpoint into a fresh model.
  const auto path = training::latest_checkpoint(cfg.output_dir);
  opts.mode = base::Mode::eval;
  auto reloaded = models::TransformerLM(opts);
  reloaded->init({1, L}, DType::i32);
  training::restore_model(*reloaded, training::load_checkpoint(*path), *path);
  std::cout << "reloaded " << *path << "\n";

  // 5. Held-out accuracy on the second half (fresh sequences), from the reloaded model.
  double correct = 0, total = 0;
  {
    autodiff::NoRecord quiet;
    for (long b = 100; b < 104; ++b) {
      const training::Batch batch = eval_stream(b);
      const Tensor pred = core::argmax((*reloaded)(Var(batch[0])).value(), -1, DType::i32);
      for (std::size_t i = 0; i < pred.size(); ++i) {
        const double w = batch[2].flat(i);
        correct += w * (pred.flat(i) == batch[1].flat(i));
        total += w;
      }
    }
  }
  std::printf("held-out second-half accuracy: %.2f%% (%.0f tokens)\n", 100 * correct / total,
              total);

  // 6. Sample: complete "0 w 0" greedily.
  const training::Batch b = eval_stream(999);
  const long half = L / 2;
  const std::vector<std::int32_t> first = core::slice(b[0], 0, 0, 1).to_vector<std::int32_t>();
  const std::vector<int> prefix(first.begin(), first.begin() + half + 1);
  const std::vector<int> out = complete(*reloaded, prefix, cfg.length);
  std::cout << "prompt: ";
  for (long j = 0; j < half + 1; ++j) std::cout << out[j] << ' ';
  std::cout << "\nsample: ";
  int ok = 0;
  for (long j = half + 1; j < L; ++j) {
    std::cout << out[j] << ' ';
    ok += out[j] == out[j - half];
  }
  std::cout << "\n(" << ok << "/" << (L - half - 1) << " symbols copied correctly)\n";
  return 0;
} catch (const std::exception& e) {
  // minitrax reports bad input and failed files with exceptions (core/error.hpp): say
  // what went wrong and exit 1, as the main job does, instead of std::terminate.
  std::cerr << "copy_transformer: error: " << e.what() << "\n";
  return 1;
}
