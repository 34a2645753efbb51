// minitrax/core/parallel.cpp: parallel_for over independent items (see parallel.hpp).
#include "core/parallel.hpp"

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
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

// The thread count OpenBLAS chose for itself at load (OPENBLAS_NUM_THREADS, else the
// number of cores), taken once; OpenBLAS is then put at one thread for good.
int blas_threads_at_load() {
  static const int n = [] {
    const int v = std::max(1, openblas_get_num_threads());
    openblas_set_num_threads(1);
    return v;
  }();
  return n;
}

// Runs when the library is loaded (OpenBLAS, a shared library this one depends on, has
// set itself up by then), so no product ever sees OpenBLAS's own threads.
[[gnu::used]] const int g_blas_threads_at_load = blas_threads_at_load();

std::atomic<int> g_blas_request{0};  // 0: blas_threads_at_load()

}  // namespace

namespace detail {

void blas_single_thread() {
  (void)blas_threads_at_load();
  // Someone called openblas_set_num_threads(n) directly: take n as the request and put
  // OpenBLAS back at one thread.
  const int n = openblas_get_num_threads();
  if (n != 1) {
    g_blas_request.store(std::max(1, n), std::memory_order_relaxed);
    openblas_set_num_threads(1);
  }
}

}  // namespace detail

int blas_num_threads() {
  detail::blas_single_thread();
  const int requested = g_blas_request.load(std::memory_order_relaxed);
  return requested > 0 ? requested : blas_threads_at_load();
}

void set_blas_num_threads(int n) {
  if (n < 1) {
    throw ValueError("set_blas_num_threads: the thread count must be >= 1, got " +
                     std::to_string(n));
  }
  detail::blas_single_thread();
  g_blas_request.store(n, std::memory_order_relaxed);
}

int num_threads() {
  const int set = g_threads.load(std::memory_order_relaxed);
  if (set > 0) return set;
  const int env = env_threads();
  if (env > 0) return env;
  return blas_num_threads();
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

namespace {

// The threads parallel_for hands items to: started on first use and kept (a thread started
// per loop costs tens of microseconds, and OpenBLAS gives every new thread fresh packing
// buffers, which must be faulted in again). One loop at a time uses them (loops started
// from several threads of the caller's wait their turn); the calling thread is worker 0.
class Pool {
 public:
  // Runs work(w) for w in [0, workers): w = 0 on the calling thread, the others on pool
  // threads; returns when all have returned. work must not throw.
  void run(int workers, const std::function<void(int)>& work) {
    const std::lock_guard<std::mutex> one_loop(loop_mutex_);
    int helpers = workers - 1;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      try {
        while (static_cast<int>(threads_.size()) < helpers) {
          const int index = static_cast<int>(threads_.size()) + 1;
          threads_.emplace_back([this, index] { serve(index); });
          threads_.back().detach();
        }
      } catch (...) {
        // Could not start a thread (resources): the threads there are do the work.
      }
      helpers = std::min<int>(helpers, static_cast<int>(threads_.size()));
      work_ = &work;
      helpers_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    start_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    work_ = nullptr;
  }

 private:
  void serve(int index) {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index > helpers_) continue;
      const std::function<void(int)>* work = work_;
      lock.unlock();
      (*work)(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex loop_mutex_;  // one loop at a time
  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* work_ = nullptr;
  int helpers_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
};

// The pool's threads wait until the process ends (the pool is never destroyed). A child
// made by fork() has none of its parent's threads: it starts a pool of its own (the
// parent's is left alone, its memory copied and unused).
Pool& pool() {
  static std::mutex m;
  static Pool* p = nullptr;
  static pid_t owner = 0;
  const std::lock_guard<std::mutex> lock(m);
  const pid_t pid = getpid();
  if (p == nullptr || owner != pid) {
    p = new Pool;
    owner = pid;
  }
  return *p;
}

}  // namespace

void parallel_for(long n_items, double flops_per_item,
                  const std::function<void(long item, int worker)>& body) {
  if (n_items <= 0) return;
  if (!parallel_loop(n_items, flops_per_item)) {
    // Serial whatever the thread count; OpenBLAS is at one thread here as everywhere.
    for (long i = 0; i < n_items; ++i) body(i, 0);
    return;
  }
  // OpenBLAS stays at one thread (see parallel.hpp): a product split among OpenBLAS's
  // threads rounds differently from the same product on one.
  detail::blas_single_thread();
  const int workers = static_cast<int>(std::min<long>(num_threads(), n_items));
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
  pool().run(workers, work);
  if (error) std::rethrow_exception(error);
}

}  // namespace minitrax::core
