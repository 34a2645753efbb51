// bench/bench_transformer.cpp: training speed and memory of one TransformerLM configuration.
//
// A plain program (not a Google Benchmark one): each run is one configuration in its
// own process, so that its peak RSS (getrusage ru_maxrss) belongs to it alone.
// bench/libtorch/transformer_libtorch.cpp is the same model and the same step in
// LibTorch, with the same flags and the same output; bench/run_transformer_bench.sh
// runs the two alternately and makes the table in docs/performance.md.
//
//   bench_transformer [--layers N] [--d-model D] [--heads H] [--d-ff F] [--vocab V]
//                     [--length L] [--batch B] [--warmup W] [--steps S] [--threads T]
//
// One training step is what training::Loop::train_step does: watch the flat weights
// on a Tape, set_flat_weights, model->apply, loss->apply (weighted cross-entropy),
// tape.gradient, Adam update, set_flat_weights. Dropout is 0 (the model is built with
// dropout = 0.0, so no Dropout layer draws a mask). The batch is fixed (random token
// ids, all weights 1), made before timing: data generation is not timed.
//
// Output: a human line on stderr, one JSON object on stdout:
//   {"impl": "minitrax", "layers": 2, ..., "params": N, "step_s_median": ..., "steps_per_s":
//    ..., "tokens_per_s": ..., "max_rss_mib": ..., "minflt_per_step": ..., ...}
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/kernels.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "models/transformer.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"

using namespace minitrax;

namespace {

struct Config {
  long layers = 2, d_model = 256, heads = 4, d_ff = 1024, vocab = 256, length = 512, batch = 8;
  long warmup = 3, steps = 10, threads = 2;
};

long flag_value(const std::string& f, const char* v) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || x < 0) {
    std::cerr << "bench_transformer: " << f << " needs a non-negative integer, got '" << v << "'\n";
    std::exit(2);
  }
  return x;
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "usage: bench_transformer [--layers N] [--d-model D] [--heads H] [--d-ff F]"
                   " [--vocab V] [--length L] [--batch B] [--warmup W] [--steps S] [--threads T]\n";
      std::exit(2);
    }
    const long v = flag_value(f, argv[++i]);
    if (f == "--layers")
      c.layers = v;
    else if (f == "--d-model")
      c.d_model = v;
    else if (f == "--heads")
      c.heads = v;
    else if (f == "--d-ff")
      c.d_ff = v;
    else if (f == "--vocab")
      c.vocab = v;
    else if (f == "--length")
      c.length = v;
    else if (f == "--batch")
      c.batch = v;
    else if (f == "--warmup")
      c.warmup = v;
    else if (f == "--steps")
      c.steps = v;
    else if (f == "--threads")
      c.threads = v;
    else {
      std::cerr << "bench_transformer: unknown flag " << f << "\n";
      std::exit(2);
    }
  }
  if (c.steps < 1) c.steps = 1;
  return c;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Usage {
  double max_rss_mib;
  long minflt, majflt;
};
Usage usage() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {static_cast<double>(u.ru_maxrss) / 1024.0, u.ru_minflt, u.ru_majflt};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  core::set_blas_num_threads(static_cast<int>(c.threads));

  models::TransformerLMOptions o;
  o.vocab_size = c.vocab;
  o.d_model = c.d_model;
  o.d_ff = c.d_ff;
  o.n_layers = c.layers;
  o.n_heads = c.heads;
  o.dropout = 0.0;
  o.max_len = c.length;  // the positional-encoding weight is [1, length, d_model]
  auto model = models::TransformerLM(o);
  auto loss_layer = training::WeightedCategoryCrossEntropy();

  const auto B = static_cast<std::size_t>(c.batch), L = static_cast<std::size_t>(c.length);
  auto keys = core::split(core::key_from_seed(0), 2);
  const Tensor ids = core::randint(keys[0], {B, L}, 0, c.vocab, DType::i32);
  const Tensor weights = Tensor::ones({B, L}, DType::f32);
  model->init({{ids.shape(), ids.dtype()}}, keys[1]);

  training::AdamOptions adam_opts;
  adam_opts.learning_rate = 1e-4;
  adam_opts.weight_decay_rate = 0.0;  // LibTorch's Adam with weight_decay 0: the same update
  adam_opts.eps = 1e-5;
  training::Adam adam(adam_opts);
  adam.init(model->flat_weights());

  std::vector<Tensor> ws;
  long params = 0;
  for (const auto& nt : model->flat_weights()) {
    ws.push_back(nt.value);
    params += static_cast<long>(nt.value.size());
  }

  long step = 0;
  double last_loss = 0;
  auto train_step = [&] {
    std::vector<Tensor> grads;
    {
      autodiff::Tape tape;
      std::vector<Var> vs;
      vs.reserve(ws.size());
      for (const Tensor& w : ws) vs.push_back(tape.watch(w));
      model->set_flat_weights(vs);
      base::Stack out = model->apply({Var(ids)}, keys[1]);
      Var l = loss_layer->apply({out.at(0), Var(ids), Var(weights)}, keys[1])[0];
      last_loss = l.value().item<double>();
      grads = tape.gradient(l, vs);
    }
    adam.update(step, grads, ws);
    model->set_flat_weights(ws);
    ++step;
  };

  for (long i = 0; i < c.warmup; ++i) train_step();
  const Usage before = usage();
  std::vector<double> times;
  const double t_all = now();
  for (long i = 0; i < c.steps; ++i) {
    const double t0 = now();
    train_step();
    times.push_back(now() - t0);
  }
  const double total = now() - t_all;
  const Usage after = usage();

  const double step_s = median(times);
  const double tokens = static_cast<double>(c.batch * c.length);
  const std::string core_name = core::blas_core_name();
  std::fprintf(
      stderr,
      "minitrax: %ld layers, %ld params, BLAS %s (%d threads): %.3f s/step (median of %ld), "
      "%.3f steps/s, %.0f tokens/s, max RSS %.0f MiB, %.0f minor faults/step, loss %.4f\n",
      c.layers, params, core_name.c_str(), core::num_threads(), step_s, c.steps, 1.0 / step_s,
      tokens / step_s, after.max_rss_mib,
      static_cast<double>(after.minflt - before.minflt) / static_cast<double>(c.steps), last_loss);
  std::printf(
      "{\"impl\": \"minitrax\", \"layers\": %ld, \"d_model\": %ld, \"heads\": %ld, \"d_ff\": %ld, "
      "\"vocab\": %ld, \"length\": %ld, \"batch\": %ld, \"warmup\": %ld, \"steps\": %ld, "
      "\"threads\": %d, \"blas\": \"OpenBLAS %s\", \"params\": %ld, \"step_s_median\": %.6f, "
      "\"step_s_min\": %.6f, \"step_s_mean\": %.6f, \"steps_per_s\": %.6f, \"tokens_per_s\": %.1f, "
      "\"max_rss_mib\": %.1f, \"minflt_per_step\": %.1f, \"majflt\": %ld, \"minflt_total\": %ld, "
      "\"loss\": %.6f}\n",
      c.layers, c.d_model, c.heads, c.d_ff, c.vocab, c.length, c.batch, c.warmup, c.steps,
      core::num_threads(), core_name.c_str(), params, step_s,
      *std::min_element(times.begin(), times.end()), total / static_cast<double>(c.steps),
      1.0 / step_s, tokens / step_s, after.max_rss_mib,
      static_cast<double>(after.minflt - before.minflt) / static_cast<double>(c.steps),
      after.majflt, after.minflt, last_loss);
  return 0;
}
