// bench/libtorch/transformer_libtorch.cpp: minitrax's TransformerLM (Trax 1.3.4's) written
// in LibTorch, trained with the same step as bench/bench_transformer.cpp, with the same
// flags and the same JSON output, for a side-by-side comparison
// (bench/run_transformer_bench.sh).
//
//   transformer_libtorch [--layers N] [--d-model D] [--heads H] [--d-ff F] [--vocab V]
//                        [--length L] [--batch B] [--warmup W] [--steps S] [--threads T]
//
// The model, layer for layer as models::TransformerLM with dropout 0:
//
//   ShiftRight(1)                                 ids [B, L] -> [0, ids[:, :L-1]]
//   Embedding(vocab, d)                           N(0, 1) init
//   + pe                                          sinusoidal, [1, L, d], a trainable weight
//                                                 as in Trax 1.3.4 / minitrax (counted, and
//                                                 updated by Adam)
//   n_layers x [ x + Attn(LN(x)),  x + Dense(ReLU(Dense(LN(x)))) ]
//      Attn: Dense q, k, v (d -> d, with bias), split into heads, softmax(q k^T / sqrt(dh)
//            masked causally with where(mask, dots, -1e9)) v, merge heads, Dense (d -> d)
//   LayerNorm(eps 1e-6), Dense(d -> vocab), log_softmax
//   loss = sum(w * nll) / sum(w)   (weights all 1)
//
// One step: zero_grad, forward, loss, loss.item(), backward, Adam step (lr 1e-4, b1 0.9,
// b2 0.999, eps 1e-5, no weight decay: the same update as minitrax's Adam). The
// attention is written out (matmul, masked_fill, softmax, matmul) as minitrax computes
// it, the full L x L product with a mask; LibTorch 1.13 has no fused CPU attention.
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Config {
  long layers = 2, d_model = 256, heads = 4, d_ff = 1024, vocab = 256, length = 512, batch = 8;
  long warmup = 3, steps = 10, threads = 2;
};

long flag_value(const std::string& f, const char* v) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || x < 0) {
    std::cerr << "transformer_libtorch: " << f << " needs a non-negative integer, got '" << v
              << "'\n";
    std::exit(2);
  }
  return x;
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "usage: transformer_libtorch [--layers N] [--d-model D] [--heads H] [--d-ff F]"
                   " [--vocab V] [--length L] [--batch B] [--warmup W] [--steps S] [--threads T]\n";
      std::exit(2);
    }
    const long v = flag_value(f, argv[++i]);
    if (f == "--layers") c.layers = v;
    else if (f == "--d-model") c.d_model = v;
    else if (f == "--heads") c.heads = v;
    else if (f == "--d-ff") c.d_ff = v;
    else if (f == "--vocab") c.vocab = v;
    else if (f == "--length") c.length = v;
    else if (f == "--batch") c.batch = v;
    else if (f == "--warmup") c.warmup = v;
    else if (f == "--steps") c.steps = v;
    else if (f == "--threads") c.threads = v;
    else {
      std::cerr << "transformer_libtorch: unknown flag " << f << "\n";
      std::exit(2);
    }
  }
  if (c.steps < 1) c.steps = 1;
  return c;
}

// Dense as minitrax/Trax initialise it: Glorot-uniform kernel, N(0, 1e-6) bias.
torch::nn::Linear dense(long in, long out) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(true));
  torch::NoGradGuard g;
  const double limit = std::sqrt(6.0 / static_cast<double>(in + out));
  l->weight.uniform_(-limit, limit);
  l->bias.normal_(0.0, 1e-6);
  return l;
}

torch::nn::LayerNorm layer_norm(long d) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(1e-6));
}

struct DecoderBlockImpl : torch::nn::Module {
  long heads, d_head;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, ff1{nullptr}, ff2{nullptr};

  DecoderBlockImpl(long d, long d_ff, long n_heads) : heads(n_heads), d_head(d / n_heads) {
    ln1 = register_module("ln1", layer_norm(d));
    q = register_module("q", dense(d, d));
    k = register_module("k", dense(d, d));
    v = register_module("v", dense(d, d));
    o = register_module("o", dense(d, d));
    ln2 = register_module("ln2", layer_norm(d));
    ff1 = register_module("ff1", dense(d, d_ff));
    ff2 = register_module("ff2", dense(d_ff, d));
  }

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask) {
    const long B = x.size(0), L = x.size(1), d = x.size(2);
    auto split = [&](const torch::Tensor& t) {  // [B, L, d] -> [B, H, L, dh]
      return t.view({B, L, heads, d_head}).transpose(1, 2);
    };
    torch::Tensor h = ln1(x);
    torch::Tensor qh = split(q(h)), kh = split(k(h)), vh = split(v(h));
    const double scale = 1.0 / std::sqrt(static_cast<double>(d_head));
    torch::Tensor dots = torch::matmul(qh * scale, kh.transpose(-2, -1));  // [B, H, L, L]
    dots = dots.masked_fill(mask, -1e9);  // mask: true above the diagonal
    torch::Tensor w = torch::softmax(dots, -1);
    torch::Tensor att = torch::matmul(w, vh).transpose(1, 2).reshape({B, L, d});
    x = x + o(att);
    x = x + ff2(torch::relu(ff1(ln2(x))));
    return x;
  }
};
TORCH_MODULE(DecoderBlock);

struct TransformerLMImpl : torch::nn::Module {
  torch::nn::Embedding embed{nullptr};
  torch::Tensor pe;
  std::vector<DecoderBlock> blocks;
  torch::nn::LayerNorm ln_f{nullptr};
  torch::nn::Linear out{nullptr};
  torch::Tensor mask;

  TransformerLMImpl(long vocab, long d, long d_ff, long n_layers, long n_heads, long max_len) {
    embed = register_module("embed", torch::nn::Embedding(vocab, d));
    {
      torch::NoGradGuard g;
      embed->weight.normal_(0.0, 1.0);
    }
    // pe[p, j] = sin(p f) (j even), cos(p f) (j odd), f = exp(-(j - j % 2) ln(1e4) / d).
    std::vector<float> table(static_cast<std::size_t>(max_len * d));
    const double kf = -std::log(10000.0) / static_cast<double>(d);
    for (long p = 0; p < max_len; ++p) {
      for (long j = 0; j < d; ++j) {
        const double angle = static_cast<double>(p) * std::exp(static_cast<double>(j - j % 2) * kf);
        table[static_cast<std::size_t>(p * d + j)] =
            static_cast<float>(j % 2 == 0 ? std::sin(angle) : std::cos(angle));
      }
    }
    pe = register_parameter("pe", torch::from_blob(table.data(), {1, max_len, d}).clone());
    for (long i = 0; i < n_layers; ++i) {
      blocks.push_back(register_module("block" + std::to_string(i), DecoderBlock(d, d_ff, n_heads)));
    }
    ln_f = register_module("ln_f", layer_norm(d));
    out = register_module("out", dense(d, vocab));
    mask = torch::ones({max_len, max_len}, torch::kBool).triu(1);  // true: masked out
  }

  torch::Tensor forward(const torch::Tensor& ids) {
    const long L = ids.size(1);
    // ShiftRight(1): a 0 in front, the last position dropped.
    torch::Tensor shifted = torch::constant_pad_nd(ids, {1, 0}, 0).slice(1, 0, L);
    torch::Tensor x = embed(shifted) + pe.slice(1, 0, L);
    const torch::Tensor m = mask.slice(0, 0, L).slice(1, 0, L);
    for (auto& b : blocks) x = b(x, m);
    return torch::log_softmax(out(ln_f(x)), -1);
  }
};
TORCH_MODULE(TransformerLM);

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
  torch::set_num_threads(static_cast<int>(c.threads));  // OpenMP (intra-op) threads
  torch::manual_seed(0);
  if (std::getenv("TORCH_SHOW_CONFIG")) {
    std::cerr << at::show_config() << "\n" << at::get_parallel_info() << "\n";
  }

  TransformerLM model(c.vocab, c.d_model, c.d_ff, c.layers, c.heads, c.length);
  long params = 0;
  for (const auto& p : model->parameters()) params += p.numel();

  const torch::Tensor ids = torch::randint(0, c.vocab, {c.batch, c.length}, torch::kLong);
  const torch::Tensor weights = torch::ones({c.batch, c.length});
  torch::optim::Adam adam(model->parameters(),
                          torch::optim::AdamOptions(1e-4).betas({0.9, 0.999}).eps(1e-5).weight_decay(0));

  double last_loss = 0;
  auto train_step = [&] {
    adam.zero_grad();
    torch::Tensor logp = model->forward(ids);                          // [B, L, vocab]
    torch::Tensor nll = -logp.gather(2, ids.unsqueeze(2)).squeeze(2);  // [B, L]
    torch::Tensor loss = (nll * weights).sum() / weights.sum();
    last_loss = loss.item<double>();
    loss.backward();
    adam.step();
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
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  const std::string blas = std::string("OpenBLAS ") + (core ? core : "default");
  std::fprintf(stderr,
               "libtorch %s: %ld layers, %ld params, BLAS %s, %d threads: %.3f s/step (median of "
               "%ld), %.3f steps/s, %.0f tokens/s, max RSS %.0f MiB, %.0f minor faults/step, "
               "loss %.4f\n",
               TORCH_VERSION, c.layers, params, blas.c_str(), torch::get_num_threads(), step_s,
               c.steps, 1.0 / step_s, tokens / step_s, after.max_rss_mib,
               static_cast<double>(after.minflt - before.minflt) / static_cast<double>(c.steps),
               last_loss);
  std::printf(
      "{\"impl\": \"libtorch\", \"layers\": %ld, \"d_model\": %ld, \"heads\": %ld, \"d_ff\": %ld, "
      "\"vocab\": %ld, \"length\": %ld, \"batch\": %ld, \"warmup\": %ld, \"steps\": %ld, "
      "\"threads\": %d, \"blas\": \"%s\", \"params\": %ld, \"step_s_median\": %.6f, "
      "\"step_s_min\": %.6f, \"step_s_mean\": %.6f, \"steps_per_s\": %.6f, \"tokens_per_s\": %.1f, "
      "\"max_rss_mib\": %.1f, \"minflt_per_step\": %.1f, \"majflt\": %ld, \"minflt_total\": %ld, "
      "\"loss\": %.6f}\n",
      c.layers, c.d_model, c.heads, c.d_ff, c.vocab, c.length, c.batch, c.warmup, c.steps,
      torch::get_num_threads(), blas.c_str(), params, step_s,
      *std::min_element(times.begin(), times.end()), total / static_cast<double>(c.steps),
      1.0 / step_s, tokens / step_s, after.max_rss_mib,
      static_cast<double>(after.minflt - before.minflt) / static_cast<double>(c.steps),
      after.majflt, after.minflt, last_loss);
  return 0;
}
