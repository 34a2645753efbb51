// minitrax/core/parallel.cpp: parallel_for over independent items (see parallel.hpp).
#include "core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/kernels.hpp"

// OpenBLAS's thread control (declared here: only gemm.cpp includes <cblas.h>, whose
// prototypes clash with xtensor-blas's).
extern "C" {
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
}

namespace minitrax::core {

namespace {

std::atomic<int> g_threads{0};  // 0: the default (environment, then OpenBLAS)
std::atomic<double> g_min_flops{kParallelMinFlops};
thread_local bool t_in_parallel = false;  // inside a parallel_for body: no nesting

int env_threads() {
  static const int from_env = [] {
    const char* s = std::getenv("MINITRAX_NUM_THREADS");
    if (s == nullptr || *s == '\0') return 0;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (*end != '\0' || v < 1 || v > 1024) {
      throw ValueError("MINITRAX_NUM_THREADS must be a positive integer (at most 1024), got '" +
                       std::string(s) + "'");
    }
    return static_cast<int>(v);
  }();
  return from_env;
}

// Restores OpenBLAS's thread count when the loop ends, exception or not.
class BlasThreadsScope {
 public:
  BlasThreadsScope() : saved_(openblas_get_num_threads()) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~BlasThreadsScope() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  BlasThreadsScope(const BlasThreadsScope&) = delete;
  BlasThreadsScope& operator=(const BlasThreadsScope&) = delete;

 private:
  int saved_;
};

}  // namespace

int blas_num_threads() {
  return openblas_get_num_threads();
}

void set_blas_num_threads(int n) {
  if (n < 1) {
    throw ValueError("set_blas_num_threads: the thread count must be >= 1, got " +
                     std::to_string(n));
  }
  openblas_set_num_threads(n);
}

int num_threads() {
  const int set = g_threads.load(std::memory_order_relaxed);
  if (set > 0) return set;
  const int env = env_threads();
  if (env > 0) return env;
  return std::max(1, openblas_get_num_threads());
}

void set_num_threads(int n) {
  if (n < 0) {
    throw ValueError("set_num_threads: the thread count must be >= 1 (0: the default), got " +
                     std::to_string(n));
  }
  g_threads.store(n, std::memory_order_relaxed);
}

double parallel_min_flops() {
  return g_min_flops.load(std::memory_order_relaxed);
}

void set_parallel_min_flops(double flops) {
  if (!(flops >= 0.0)) {
    throw ValueError("set_parallel_min_flops: the threshold must be >= 0, got " +
                     std::to_string(flops));
  }
  g_min_flops.store(flops, std::memory_order_relaxed);
}

namespace {

// Whether a loop runs as a parallel loop (on num_threads() workers, OpenBLAS held at one
// thread): a decision that does not depend on the thread count.
bool parallel_loop(long n_items, double flops_per_item) {
  if (t_in_parallel || n_items <= 1) return false;
  return static_cast<double>(n_items) * flops_per_item >= parallel_min_flops();
}

}  // namespace

int parallel_workers(long n_items, double flops_per_item) {
  if (!parallel_loop(n_items, flops_per_item)) return 1;
  return static_cast<int>(std::min<long>(num_threads(), n_items));
}

void parallel_for(long n_items, double flops_per_item,
                  const std::function<void(long item, int worker)>& body) {
  if (n_items <= 0) return;
  if (!parallel_loop(n_items, flops_per_item)) {
    // Serial whatever the thread count: the items see OpenBLAS as the code around does.
    for (long i = 0; i < n_items; ++i) body(i, 0);
    return;
  }
  // OpenBLAS at one thread for every item, also when this loop gets a single worker
  // (num_threads() == 1): a product split among OpenBLAS's threads rounds differently
  // from the same product on one (see parallel.hpp), so the items must not see a BLAS
  // thread count that depends on how many workers the loop has.
  const int workers = static_cast<int>(std::min<long>(num_threads(), n_items));
  BlasThreadsScope blas_single;
  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  const bool ftz = flush_denormals_enabled();
  auto work = [&](int worker) {
    set_flush_denormals(ftz);
    t_in_parallel = true;
    try {
      for (long i = next++; i < n_items && !failed.load(); i = next++) body(i, worker);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
    t_in_parallel = false;
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(workers - 1));
  try {
    for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
  } catch (...) {
    // Could not start a thread (resources): the threads already started and this one
    // finish the items.
  }
  work(0);
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace minitrax::core
