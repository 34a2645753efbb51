/// @file
/// minitrax's own loop parallelism: `parallel_for` deals independent items (one attention
/// slice, one tile of rows) to a few threads, each item computed whole by one thread.
///
/// Why not just OpenBLAS's threads: the attention kernels call gemm on small tiles
/// ([128, 1024] x [1024, 64] and smaller), where OpenBLAS's fork/join costs about as much
/// as it saves, and the softmax, masks and gathers between the gemms run on one thread.
/// Splitting the independent items across threads instead, with OpenBLAS held at one
/// thread inside the loop, keeps both cores busy for the whole kernel.
///
/// Since core::gemm cuts large products into blocks itself (core/gemm.cpp), all of
/// minitrax's threads are these: OpenBLAS always runs on one thread.
///
/// Determinism: results are bitwise the same whatever the thread settings: minitrax's
/// thread count (num_threads(), MINITRAX_NUM_THREADS), OpenBLAS's requested count
/// (OPENBLAS_NUM_THREADS, set_blas_num_threads, openblas_set_num_threads) and the work
/// threshold (parallel_min_flops()), under every OpenBLAS kernel family. Why:
/// - OpenBLAS never runs on more than one thread: it is set to one when the library is
///   loaded, and before every product and parallel loop (a direct openblas_set_num_threads
///   call is taken as the requested count and undone). OpenBLAS's threads split a product
///   into parts whose shapes depend on its thread count, and its kernels round an element
///   differently depending on the part that holds it: measured with OpenBLAS 0.3.21,
///   most products large enough to be threaded give other bits on 2 threads than on 1,
///   under the Haswell and the Prescott kernels alike (tools/openblas_split_rounding.c);
/// - work is cut into items whose boundaries depend only on the sizes (a slice, a tile of
///   a fixed number of rows, a block of C fixed by (m, n, k) in core::gemm), never on the
///   thread count or the threshold, so every BLAS call has the same operands and sizes
///   whatever runs it; an item's result does not depend on which thread computes it
///   (items write disjoint outputs, scratch is fully rewritten);
/// - the thread count and the threshold only decide how many threads deal out the items.
/// Results differ between kernel families (OPENBLAS_CORETYPE): each family sums in its
/// own order (its own blocking, unrolling, FMA or not). The workers take the calling
/// thread's flush-to-zero setting.
#pragma once

#include <functional>

namespace minitrax::core {

/// The thread count OpenBLAS was asked for: OPENBLAS_NUM_THREADS or the number of cores
/// (what OpenBLAS chose at load), or the last set_blas_num_threads (or a direct
/// openblas_set_num_threads call, noticed at the next product). OpenBLAS itself always
/// runs on one thread; this count is only the default of num_threads().
int blas_num_threads();

/// Sets the count blas_num_threads() reports (n >= 1); OpenBLAS stays at one thread.
/// minitrax's thread count follows it unless set_num_threads or MINITRAX_NUM_THREADS
/// set one.
void set_blas_num_threads(int n);

/// The number of threads parallel_for uses: set_num_threads's value if one was set, else
/// MINITRAX_NUM_THREADS from the environment if set (a positive integer), else
/// blas_num_threads() (OPENBLAS_NUM_THREADS, or the number of cores).
int num_threads();

/// Sets the thread count for parallel_for (n >= 1; 0 returns to the default above).
/// blas_num_threads() is not changed.
void set_num_threads(int n);

/// Loops with less work than this in total (floating-point operations, roughly) run on
/// the calling thread: handing items to other threads costs microseconds to tens of
/// microseconds (the threads are kept between loops, but must be woken and joined),
/// about what a few million operations take (measured, when threads were still started
/// per loop, on the toy Reformer of the main job, whose attention calls are a few MFLOP
/// each and were slower threaded).
inline constexpr double kParallelMinFlops = 3e7;

/// The current threshold (kParallelMinFlops unless set).
double parallel_min_flops();
/// Sets the threshold (>= 0; 0 threads every loop with more than one item, as the tests
/// do to exercise the threaded code on small inputs). Like the thread count, it never
/// changes the bits of a result, only whether a loop's items run on one thread or several.
void set_parallel_min_flops(double flops);

/// How many threads parallel_for(n_items, flops_per_item, ...) uses: 1 when the loop is
/// serial (at most one item, less than parallel_min_flops() of work in total, or inside a
/// parallel_for body: no nesting); otherwise min(num_threads(), n_items). Size
/// per-thread scratch with it.
int parallel_workers(long n_items, double flops_per_item);

/// Runs body(item, worker) once for every item in [0, n_items), on
/// parallel_workers(n_items, flops_per_item) threads (the calling thread is worker 0, the
/// others come from a pool started on first use and kept; loops started at the same time
/// from several threads of the caller's take turns);
/// items are handed out in order as threads become free. A serial loop (see
/// parallel_workers) is a plain loop. OpenBLAS runs single-threaded in both. The first
/// exception a body throws stops the hand-out and is rethrown in the calling thread after all
/// threads end. flops_per_item is an estimate of each item's work, used only for the decision
/// above.
void parallel_for(long n_items, double flops_per_item,
                  const std::function<void(long item, int worker)>& body);

namespace detail {
/// Keeps OpenBLAS at one thread: if something set OpenBLAS's thread count directly
/// (openblas_set_num_threads), takes that count as blas_num_threads() and sets OpenBLAS
/// back to one. Called before every product (core::gemm) and parallel loop.
void blas_single_thread();
}  // namespace detail

}  // namespace minitrax::core
