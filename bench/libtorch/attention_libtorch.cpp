// bench/libtorch/attention_libtorch.cpp: LibTorch's dense causal attention, next to
// minitrax's dense SelfAttention (bench/bench_efficient_attention.cpp, dense/...), for
// bench/run_attention_bench.sh.
//
//   attention_libtorch [--length L] [--heads H] [--d-head D] [--batch B] [--proj 0|1]
//                      [--backward 0|1] [--warmup W] [--steps S] [--threads T]
//
// --proj 0 (the core): q, k, v [B, H, L, D] given (leaves requiring grad when
//   --backward 1), y = softmax(q k^T / sqrt(D) masked causally) v, the mask applied as
//   masked_fill(~tril, -1e9) as minitrax does (LibTorch 1.13 has no fused CPU attention).
// --proj 1 (the whole layer, what minitrax's SelfAttention computes): x [B, L, H*D],
//   q/k/v = x Wq/Wk/Wv (no bias, as Trax's efficient attention), the core above, merge
//   heads, output projection Wo; gradients w.r.t. x and the four weights.
// --backward 1: each step also runs sum(y).backward() (forward + backward), otherwise
//   the forward runs under NoGradGuard.
// Prints one JSON line: median step time (wall, and process CPU time) over --steps timed
// steps after --warmup, and the process's max RSS.
#include <sys/resource.h>
#include <time.h>
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
  long length = 1024, heads = 4, d_head = 64, batch = 1, proj = 0, backward = 0;
  long warmup = 2, steps = 10, threads = 2;
};

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; i += 2) {
    const std::string f = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "attention_libtorch: " << f << " needs a value\n";
      std::exit(2);
    }
    char* end = nullptr;
    const long v = std::strtol(argv[i + 1], &end, 10);
    if (*argv[i + 1] == '\0' || *end != '\0' || v < 0) {
      std::cerr << "attention_libtorch: " << f << " needs a non-negative integer\n";
      std::exit(2);
    }
    if (f == "--length") c.length = v;
    else if (f == "--heads") c.heads = v;
    else if (f == "--d-head") c.d_head = v;
    else if (f == "--batch") c.batch = v;
    else if (f == "--proj") c.proj = v;
    else if (f == "--backward") c.backward = v;
    else if (f == "--warmup") c.warmup = v;
    else if (f == "--steps") c.steps = v;
    else if (f == "--threads") c.threads = v;
    else {
      std::cerr << "attention_libtorch: unknown flag " << f << "\n";
      std::exit(2);
    }
  }
  return c;
}

torch::Tensor core(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                   const torch::Tensor& future, double scale) {
  auto dots = torch::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, L, L]
  dots = dots.masked_fill(future, -1e9);
  return torch::matmul(torch::softmax(dots, -1), v);
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  torch::set_num_threads(static_cast<int>(c.threads));
  torch::manual_seed(0);
  const long B = c.batch, H = c.heads, L = c.length, D = c.d_head, dm = H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const bool bwd = c.backward != 0;
  // future[i, j] = j > i: the positions a causal query must not see.
  const auto future = torch::ones({L, L}, torch::kBool).triu(1);

  torch::Tensor x, wq, wk, wv, wo, q, k, v;
  if (c.proj) {
    x = torch::rand({B, L, dm}).set_requires_grad(bwd);
    const double s = 1.0 / std::sqrt(static_cast<double>(dm));
    wq = (torch::randn({dm, dm}) * s).set_requires_grad(bwd);
    wk = (torch::randn({dm, dm}) * s).set_requires_grad(bwd);
    wv = (torch::randn({dm, dm}) * s).set_requires_grad(bwd);
    wo = (torch::randn({dm, dm}) * s).set_requires_grad(bwd);
  } else {
    q = torch::randn({B, H, L, D}).set_requires_grad(bwd);
    k = torch::randn({B, H, L, D}).set_requires_grad(bwd);
    v = torch::randn({B, H, L, D}).set_requires_grad(bwd);
  }
  auto step = [&] {
    torch::Tensor y;
    auto heads = [&](const torch::Tensor& t) {  // [B, L, dm] -> [B, H, L, D]
      return t.view({B, L, H, D}).transpose(1, 2);
    };
    if (c.proj) {
      auto o = core(heads(torch::matmul(x, wq)), heads(torch::matmul(x, wk)),
                    heads(torch::matmul(x, wv)), future, scale);
      y = torch::matmul(o.transpose(1, 2).reshape({B, L, dm}), wo);
    } else {
      y = core(q, k, v, future, scale);
    }
    if (bwd) {
      y.sum().backward();
    }
    return y;
  };
  // Process CPU time (all threads, user + system): with one thread, the work itself,
  // robust on a shared machine where wall time also counts waiting for a busy core.
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  std::vector<double> times, cpu_times;
  for (long i = 0; i < c.warmup + c.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_now();
    if (bwd) {
      for (auto* t : {&x, &wq, &wk, &wv, &wo, &q, &k, &v})
        if (t->defined() && t->grad().defined()) t->mutable_grad().reset();
      step();
    } else {
      torch::NoGradGuard ng;
      step();
    }
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cdt = cpu_now() - c0;
    if (i >= c.warmup) {
      times.push_back(dt);
      cpu_times.push_back(cdt);
    }
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double med = times.empty() ? 0.0 : times[times.size() / 2];
  const double cpu_med = cpu_times.empty() ? 0.0 : cpu_times[cpu_times.size() / 2];
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  std::printf(
      "{\"impl\": \"libtorch\", \"what\": \"%s\", \"pass\": \"%s\", \"L\": %ld, \"batch\": %ld, "
      "\"heads\": %ld, \"d_head\": %ld, \"threads\": %d, \"step_ms_median\": %.3f, "
      "\"cpu_ms_median\": %.3f, \"us_per_token\": %.3f, \"steps\": %ld, \"max_rss_kb\": %ld}\n",
      c.proj ? "layer" : "core", bwd ? "fwdbwd" : "fwd", L, B, H, D, torch::get_num_threads(),
      med * 1e3, cpu_med * 1e3, med * 1e6 / static_cast<double>(B * L), c.steps, u.ru_maxrss);
  return 0;
}
