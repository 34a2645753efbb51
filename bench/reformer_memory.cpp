// bench/reformer_memory.cpp: peak memory of one ReformerLM training step against depth,
// with reversible layers and without them (issue 5, point 5).
//
// A plain program (not a Google Benchmark one). Memory is counted exactly, in bytes
// that are live (allocated and not yet freed), not read from the RSS: this file
// replaces every allocation entry point of the process and keeps a running total of
// malloc_usable_size of each live block and its maximum. So glibc's caching (freed
// memory kept by the allocator, arenas, trimming) cannot change the figures.
//
// What is replaced, and why both levels:
//   * the global operator new / delete, every variant (plain, nothrow, sized,
//     aligned, arrays);
//   * the C allocator: malloc, calloc, realloc, free, posix_memalign, aligned_alloc,
//     memalign, valloc, pvalloc, forwarding to glibc's __libc_* functions. This level
//     is NOT optional: minitrax's tensor buffers come from xsimd's aligned_allocator,
//     which calls posix_memalign / free directly, so replacing operator new alone
//     would see the tape's bookkeeping but none of the tensors.
// Not seen: memory that OpenBLAS maps itself (mmap) for its per-thread buffers; it is
// allocated once, does not depend on the model, and is outside every figure here.
//
// Each configuration runs in its own process (the driver re-executes this program
// with --one), so nothing allocated by one configuration (caches, thread-local
// state, OpenBLAS's buffers) is in another's figures. In that process:
//   build ReformerLM, init it, init Adam on its flat weights, make the batch;
//   baseline = live bytes;
//   step 1: value_and_grad of the weighted cross-entropy over the flat weights,
//           then Adam's update and set_flat_weights (what training::Loop does);
//   peak    = the maximum of live bytes during step 1;
//   then 3 more steps, each timed (the median is reported) and each with its own
//   peak - baseline (the largest is reported as a check that step 1 is typical).
// W = bytes of the weights, S = bytes of Adam's slots (m and v: 2 W), state = bytes of
// the model's state (each LSH layer's buckets and hash key), G = W (one
// gradient per weight, alive at the end of the backward pass and during the update),
// activations ~= peak - baseline - G: what the tape and the backward pass keep
// besides the gradients (saved tensors, cotangents, temporaries).
//
//   reformer_memory [--layers 2,4,8,12] [--length 4096] [--batch 1] [--d-model 64]
//                   [--d-ff 128] [--heads 2] [--d-head 32] [--vocab 32] [--chunk-len 64]
//                   [--n-hashes 2] [--dropout 0.1] [--threads 2] [--csv FILE]
//
// Output: progress on stderr, a markdown table on stdout, the CSV in FILE
// (default reformer_memory.csv). --one LAYERS REVERSIBLE runs one configuration and
// prints its CSV row (no header) on stdout.
#include <cblas.h>
#include <errno.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "models/reformer.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"

// ---- exact accounting of live bytes -----------------------------------------------------------

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);
void* __libc_memalign(size_t, size_t);
}

namespace {

std::atomic<long> g_live{0};
std::atomic<long> g_peak{0};

inline void note_alloc(void* p) {
  if (!p) return;
  const long n = static_cast<long>(malloc_usable_size(p));
  const long live = g_live.fetch_add(n, std::memory_order_relaxed) + n;
  long peak = g_peak.load(std::memory_order_relaxed);
  while (live > peak && !g_peak.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}
inline void note_free(void* p) {
  if (p) g_live.fetch_sub(static_cast<long>(malloc_usable_size(p)), std::memory_order_relaxed);
}

inline void* tracked_malloc(size_t n) {
  void* p = __libc_malloc(n);
  note_alloc(p);
  return p;
}
inline void* tracked_memalign(size_t alignment, size_t n) {
  void* p = __libc_memalign(alignment, n);
  note_alloc(p);
  return p;
}
inline void tracked_free(void* p) {
  note_free(p);
  __libc_free(p);
}

long live_bytes() {
  return g_live.load(std::memory_order_relaxed);
}
long peak_bytes() {
  return g_peak.load(std::memory_order_relaxed);
}
/// Starts a new peak measurement from the current live bytes.
void reset_peak() {
  g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace

extern "C" {
void* malloc(size_t n) {
  return tracked_malloc(n);
}
void free(void* p) {
  tracked_free(p);
}
void* calloc(size_t count, size_t n) {
  void* p = __libc_calloc(count, n);
  note_alloc(p);
  return p;
}
void* realloc(void* p, size_t n) {
  if (!p) return tracked_malloc(n);
  const long old = static_cast<long>(malloc_usable_size(p));
  void* q = __libc_realloc(p, n);
  if (q) {  // p is gone (freed or moved); a failed realloc leaves p as it was
    g_live.fetch_sub(old, std::memory_order_relaxed);
    note_alloc(q);
  } else if (n == 0) {
    g_live.fetch_sub(old, std::memory_order_relaxed);
  }
  return q;
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = tracked_memalign(alignment, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void* aligned_alloc(size_t alignment, size_t n) {
  return tracked_memalign(alignment, n);
}
void* memalign(size_t alignment, size_t n) {
  return tracked_memalign(alignment, n);
}
void* valloc(size_t n) {
  return tracked_memalign(static_cast<size_t>(sysconf(_SC_PAGESIZE)), n);
}
void* pvalloc(size_t n) {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return tracked_memalign(page, (n + page - 1) / page * page);
}
}

namespace {
void* new_or_throw(size_t n) {
  if (n == 0) n = 1;
  void* p = tracked_malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
void* new_aligned_or_throw(size_t n, std::align_val_t a) {
  if (n == 0) n = 1;
  const auto al = std::max(static_cast<size_t>(a), sizeof(void*));
  void* p = tracked_memalign(al, n);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(size_t n) {
  return new_or_throw(n);
}
void* operator new[](size_t n) {
  return new_or_throw(n);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return tracked_malloc(n ? n : 1);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return tracked_malloc(n ? n : 1);
}
void* operator new(size_t n, std::align_val_t a) {
  return new_aligned_or_throw(n, a);
}
void* operator new[](size_t n, std::align_val_t a) {
  return new_aligned_or_throw(n, a);
}
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return tracked_memalign(std::max(static_cast<size_t>(a), sizeof(void*)), n ? n : 1);
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return tracked_memalign(std::max(static_cast<size_t>(a), sizeof(void*)), n ? n : 1);
}
void operator delete(void* p) noexcept {
  tracked_free(p);
}
void operator delete[](void* p) noexcept {
  tracked_free(p);
}
void operator delete(void* p, size_t) noexcept {
  tracked_free(p);
}
void operator delete[](void* p, size_t) noexcept {
  tracked_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  tracked_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  tracked_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  tracked_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  tracked_free(p);
}
void operator delete(void* p, size_t, std::align_val_t) noexcept {
  tracked_free(p);
}
void operator delete[](void* p, size_t, std::align_val_t) noexcept {
  tracked_free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  tracked_free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  tracked_free(p);
}

// ---- the benchmark ------------------------------------------------------------------------------

using namespace minitrax;

namespace {

struct Config {
  std::vector<long> layers = {2, 4, 8, 12};
  long length = 4096, batch = 1, d_model = 64, d_ff = 128, heads = 2, d_head = 32, vocab = 32;
  long chunk_len = 64, n_hashes = 2, threads = 2;
  double dropout = 0.1;
  std::string csv = "reformer_memory.csv";
  bool one = false;
  long one_layers = 0;
  bool one_reversible = true;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::cerr << "reformer_memory: " << why
            << "\nusage: reformer_memory [--layers 2,4,8,12] [--length L] [--batch B] [--d-model D]"
               " [--d-ff F] [--heads H] [--d-head K] [--vocab V] [--chunk-len C] [--n-hashes N]"
               " [--dropout P] [--threads T] [--csv FILE]\n";
  std::exit(2);
}

long to_long(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < 0)
    usage_error(flag + " needs a non-negative integer, got '" + v + "'");
  return x;
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--one") {
      if (i + 2 >= argc) usage_error("--one needs LAYERS REVERSIBLE");
      c.one = true;
      c.one_layers = to_long(f, argv[++i]);
      c.one_reversible = to_long(f, argv[++i]) != 0;
      continue;
    }
    if (i + 1 >= argc) usage_error(f + " needs a value");
    const std::string v = argv[++i];
    if (f == "--layers") {
      c.layers.clear();
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');) c.layers.push_back(to_long(f, item));
    } else if (f == "--length")
      c.length = to_long(f, v);
    else if (f == "--batch")
      c.batch = to_long(f, v);
    else if (f == "--d-model")
      c.d_model = to_long(f, v);
    else if (f == "--d-ff")
      c.d_ff = to_long(f, v);
    else if (f == "--heads")
      c.heads = to_long(f, v);
    else if (f == "--d-head")
      c.d_head = to_long(f, v);
    else if (f == "--vocab")
      c.vocab = to_long(f, v);
    else if (f == "--chunk-len")
      c.chunk_len = to_long(f, v);
    else if (f == "--n-hashes")
      c.n_hashes = to_long(f, v);
    else if (f == "--threads")
      c.threads = to_long(f, v);
    else if (f == "--dropout")
      c.dropout = std::strtod(v.c_str(), nullptr);
    else if (f == "--csv")
      c.csv = v;
    else
      usage_error("unknown flag " + f);
  }
  return c;
}

std::string flags_of(const Config& c) {
  std::ostringstream s;
  s << " --length " << c.length << " --batch " << c.batch << " --d-model " << c.d_model
    << " --d-ff " << c.d_ff << " --heads " << c.heads << " --d-head " << c.d_head << " --vocab "
    << c.vocab << " --chunk-len " << c.chunk_len << " --n-hashes " << c.n_hashes << " --dropout "
    << c.dropout << " --threads " << c.threads;
  return s.str();
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const char* kCsvHeader =
    "layers,reversible,params,weights_bytes,slots_bytes,baseline_bytes,peak_bytes,step_bytes,"
    "activation_bytes,fwd_kept_bytes,fwd_peak_bytes,after_step_bytes,later_step_bytes_max,"
    "step_s_median,loss,state_bytes";

// One configuration, in this process; returns its CSV row.
std::string run_one(const Config& c, long n_layers, bool reversible) {
  core::set_blas_num_threads(static_cast<int>(c.threads));
  models::ReformerLMOptions o;
  o.vocab_size = c.vocab;
  o.d_model = c.d_model;
  o.d_ff = c.d_ff;
  o.d_attention_key = c.d_head;
  o.d_attention_value = c.d_head;
  o.n_layers = n_layers;
  o.n_heads = c.heads;
  o.dropout = c.dropout;
  o.max_len = c.length;
  o.reversible = reversible;
  layers::research::LSHSelfAttentionOptions lsh;
  lsh.chunk_len = c.chunk_len;
  lsh.n_hashes = c.n_hashes;
  lsh.n_buckets = {std::max<long>(2, 2 * c.length / c.chunk_len)};
  o.attention_type = {models::lsh_self_attention(lsh)};
  base::LayerPtr model = models::ReformerLM(o);
  base::LayerPtr loss_layer = training::WeightedCategoryCrossEntropy();

  const auto B = static_cast<std::size_t>(c.batch), L = static_cast<std::size_t>(c.length);
  const auto keys = core::split(core::key_from_seed(0), 3);
  const Tensor ids = core::randint(keys[0], {B, L}, 0, c.vocab, DType::i32);
  const Tensor mask = Tensor::ones({B, L}, DType::f32);
  model->init({{ids.shape(), ids.dtype()}}, keys[1]);

  training::AdamOptions adam_options;
  adam_options.learning_rate = 1e-4;
  training::Adam adam(adam_options);
  adam.init(model->flat_weights());

  std::vector<Tensor> ws;
  long params = 0, weight_bytes = 0;
  for (const auto& nt : model->flat_weights()) {
    ws.push_back(nt.value);
    params += static_cast<long>(nt.value.size());
    weight_bytes += static_cast<long>(nt.value.nbytes());
  }
  long slot_bytes = 0;
  for (const auto& nt : adam.slots()) slot_bytes += static_cast<long>(nt.value.nbytes());
  long state_bytes = 0;  // the model's state: each LSH layer's buckets and hash key
  for (const auto& nt : model->flat_state()) state_bytes += static_cast<long>(nt.value.nbytes());

  long step = 0;
  double loss = 0;
  long fwd_live = 0, fwd_peak = 0;  // live bytes at the end of the forward pass, and its peak
  auto train_step = [&] {
    auto [value, grads] = autodiff::value_and_grad(
        [&](const autodiff::VarList& vs) {
          model->set_flat_weights(std::vector<Var>(vs.begin(), vs.end()));
          const base::Stack out = model->apply({Var(ids)}, core::fold_in(keys[2], step));
          Var l = loss_layer->apply({out.at(0), Var(ids), Var(mask)}, keys[2])[0];
          fwd_live = live_bytes();
          fwd_peak = peak_bytes();
          return l;
        },
        ws);
    loss = value.item<double>();
    adam.update(step, grads, ws);
    model->set_flat_weights(ws);
    ++step;
  };

  const long baseline = live_bytes();
  reset_peak();
  train_step();
  const long peak = peak_bytes();
  const long after = live_bytes();
  const long fwd_kept = fwd_live - baseline;
  const long fwd_peak_rel = fwd_peak - baseline;

  std::vector<double> times;
  long later_max = 0;
  for (int i = 0; i < 3; ++i) {
    const long b = live_bytes();
    reset_peak();
    const double t0 = now();
    train_step();
    times.push_back(now() - t0);
    later_max = std::max(later_max, peak_bytes() - b);
  }
  std::sort(times.begin(), times.end());

  const long step_bytes = peak - baseline;
  const long activations = step_bytes - weight_bytes;  // G = W
  std::ostringstream row;
  row << n_layers << "," << (reversible ? 1 : 0) << "," << params << "," << weight_bytes << ","
      << slot_bytes << "," << baseline << "," << peak << "," << step_bytes << "," << activations
      << "," << fwd_kept << "," << fwd_peak_rel << "," << after << "," << later_max << ","
      << times[1] << "," << loss << "," << state_bytes;
  return row.str();
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

double mib(const std::string& bytes) {
  return std::stod(bytes) / (1024.0 * 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  const Config c = parse(argc, argv);
  if (c.one) {
    try {
      std::cout << run_one(c, c.one_layers, c.one_reversible) << "\n";
    } catch (const std::exception& e) {
      std::cerr << "reformer_memory: " << e.what() << "\n";
      return 1;
    }
    return 0;
  }

  // Driver: each configuration in its own process.
  std::vector<std::vector<std::string>> rows;
  std::string exe = "/proc/self/exe";
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) exe.assign(path, static_cast<std::size_t>(n));
  for (long layers : c.layers) {
    for (int reversible : {1, 0}) {
      const std::string cmd = "'" + exe + "' --one " + std::to_string(layers) + " " +
                              std::to_string(reversible) + flags_of(c);
      std::cerr << "reformer_memory: " << layers << " layers, "
                << (reversible ? "reversible" : "plain backprop") << " ..." << std::flush;
      FILE* pipe = popen(cmd.c_str(), "r");
      if (!pipe) {
        std::cerr << " cannot run " << cmd << "\n";
        return 1;
      }
      std::string out;
      char buf[4096];
      while (std::fgets(buf, sizeof(buf), pipe)) out += buf;
      if (pclose(pipe) != 0 || out.empty()) {
        std::cerr << " failed: " << cmd << "\n";
        return 1;
      }
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      rows.push_back(split_csv(out));
      std::cerr << " step adds " << mib(rows.back()[7]) << " MiB, " << rows.back()[13] << " s\n";
    }
  }

  FILE* csv = std::fopen(c.csv.c_str(), "w");
  if (!csv) {
    std::cerr << "reformer_memory: cannot write " << c.csv << "\n";
    return 1;
  }
  std::fprintf(csv, "%s\n", kCsvHeader);
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i)
      std::fprintf(csv, "%s%s", i ? "," : "", r[i].c_str());
    std::fprintf(csv, "\n");
  }
  std::fclose(csv);

  // Markdown table, MiB. Columns: see the header of this file.
  std::printf(
      "ReformerLM, L = %ld, batch %ld, d_model %ld, d_ff %ld, %ld heads, d_head %ld, "
      "LSH chunk_len %ld, n_hashes %ld, n_buckets %ld, dropout %g, vocab %ld "
      "(MiB = 2^20 bytes)\n\n",
      c.length, c.batch, c.d_model, c.d_ff, c.heads, c.d_head, c.chunk_len, c.n_hashes,
      std::max<long>(2, 2 * c.length / c.chunk_len), c.dropout, c.vocab);
  std::printf(
      "| layers | backward | params | W weights | S slots | state | baseline | peak | "
      "peak − baseline | kept after forward | activations ≈ peak − baseline − G | "
      "peak − W − S | step s (median of 3) |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows) {
    const double w = mib(r[3]), s = mib(r[4]);
    std::printf(
        "| %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | "
        "%.3f |\n",
        r[0].c_str(), r[1] == "1" ? "reversible" : "plain", r[2].c_str(), w, s, mib(r[15]),
        mib(r[5]), mib(r[6]), mib(r[7]), mib(r[9]), mib(r[8]), mib(r[6]) - w - s, std::stod(r[13]));
  }
  // Growth from the smallest to the largest depth, and where it comes from.
  if (rows.size() >= 4) {
    auto beyond = [](const std::vector<std::string>& r) {
      return std::stod(r[6]) - std::stod(r[3]) - std::stod(r[4]);
    };
    const std::size_t last = rows.size() - 2;
    for (std::size_t k : {std::size_t{0}, std::size_t{1}}) {
      const auto& a = rows[k];
      const auto& b = rows[last + k];
      const double d = beyond(b) - beyond(a);
      std::printf(
          "\n%s: peak − W − S from %s to %s layers: %.2f -> %.2f MiB (%+.1f%%); of the "
          "%.2f MiB: gradients G %+.2f, baseline beyond W + S (state, batch, objects) "
          "%+.2f, activations %+.2f (%+.1f%%), of which kept after the forward %+.2f\n",
          k == 0 ? "reversible" : "plain", a[0].c_str(), b[0].c_str(), beyond(a) / 1048576.0,
          beyond(b) / 1048576.0, 100.0 * (beyond(b) / beyond(a) - 1.0), d / 1048576.0,
          mib(b[3]) - mib(a[3]),
          (mib(b[5]) - mib(b[3]) - mib(b[4])) - (mib(a[5]) - mib(a[3]) - mib(a[4])),
          mib(b[8]) - mib(a[8]), 100.0 * (std::stod(b[8]) / std::stod(a[8]) - 1.0),
          mib(b[9]) - mib(a[9]));
    }
  }
  std::printf("\n| layers | reversible / plain step time |\n|---:|---:|\n");
  for (std::size_t i = 0; i + 1 < rows.size(); i += 2) {
    std::printf("| %s | %.2f |\n", rows[i][0].c_str(),
                std::stod(rows[i][13]) / std::stod(rows[i + 1][13]));
  }
  std::fprintf(stderr, "reformer_memory: wrote %s\n", c.csv.c_str());
  return 0;
}
