// minitrax/layers/research/lsh_kernels.cpp: LSH's hashing and counting sort (see
// lsh_kernels.hpp).
#include "layers/research/lsh_kernels.hpp"

#include <algorithm>
#include <limits>

// GCC 12 reports a false "may be used uninitialized" inside the AVX-512 intrinsics that
// xsimd's max/min inline (as core/vmath.cpp notes); silenced for the header's lines only.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include "core/kernels.hpp"
#include "core/ops.hpp"

namespace minitrax::layers::research::detail {

namespace {

// The largest and smallest of x[0 .. n), n >= 1 (SIMD lanes, then the tail).
template <class T>
void max_min(const T* x, long n, T& mx, T& mn) {
  using B = xsimd::batch<T>;
  constexpr long w = static_cast<long>(B::size);
  long i = 0;
  mx = x[0];
  mn = x[0];
  if (n >= w) {
    B bmax = B::load_unaligned(x), bmin = bmax;
    for (i = w; i + w <= n; i += w) {
      const B b = B::load_unaligned(x + i);
      bmax = xsimd::max(bmax, b);
      bmin = xsimd::min(bmin, b);
    }
    alignas(64) T lanes[2][w];
    bmax.store_aligned(lanes[0]);
    bmin.store_aligned(lanes[1]);
    for (long j = 0; j < w; ++j) {
      mx = lanes[0][j] > mx ? lanes[0][j] : mx;
      mn = lanes[1][j] < mn ? lanes[1][j] : mn;
    }
  }
  for (; i < n; ++i) {
    mx = x[i] > mx ? x[i] : mx;
    mn = x[i] < mn ? x[i] : mn;
  }
}

// LSH hashing of one slice, hash_vectors_with's function without its temporaries:
// rotated = q R ([rows, n_hashes * rot_size / 2], one gemm per block of 128 positions, so
// that the block stays in cache however many buckets there are), then per round and
// factor the argmax over [rotated, -rotated] (first index on ties) read off the columns'
// max and min: the max is in the first half unless -min is larger.
template <class T>
void hash_slice(const T* q, long ldq, long L, long d, const Tensor& rotations,
                const std::vector<long>& factors, long n_hashes, const std::int32_t* mask,
                std::int32_t* buckets, std::vector<T>& rotated) {
  long rot = 0, per_round = 1;
  for (long f : factors) {
    rot += f / 2;
    per_round *= f;
  }
  if (mask != nullptr) per_round += 1;  // padding's own bucket
  const long cols = n_hashes * rot;
  const long block = 128;
  rotated.resize(static_cast<std::size_t>(std::min(block, L) * cols));
  for (long t0 = 0; t0 < L; t0 += block) {
    const long n = std::min(block, L - t0);
    core::gemm(core::Trans::N, core::Trans::N, n, cols, d, T(1), q + t0 * ldq, ldq,
               rotations.data<T>(), cols, T(0), rotated.data(), cols);
    for (long i = 0; i < n; ++i) {
      const long t = t0 + i;
      const T* r = rotated.data() + i * cols;
      for (long h = 0; h < n_hashes; ++h) {
        std::int32_t b = 0;
        if (mask != nullptr && mask[t] == 0) {
          b = static_cast<std::int32_t>(per_round - 1);
        } else {
          long c0 = h * rot, radix = 1;
          for (long f : factors) {
            const long half = f / 2;
            const T* rf = r + c0;
            T mx, mn;
            max_min(rf, half, mx, mn);
            // the first index holding the winning value
            const bool pos = mx >= -mn;
            const T want = pos ? mx : mn;
            long id = 0;
            while (id + 1 < half && rf[id] != want) ++id;  // (NaN: stops at the end)
            b += static_cast<std::int32_t>((pos ? id : half + id) * radix);
            radix *= f;
            c0 += half;
          }
        }
        buckets[h * L + t] = static_cast<std::int32_t>(b + h * per_round);
      }
    }
  }
}

}  // namespace

void hash_rows(const core::Tensor& q, std::size_t first, long ldq, long seq_len, long d_qk,
               const core::Tensor& rotations, const std::vector<long>& n_buckets, long n_hashes,
               const std::int32_t* mask, std::int32_t* buckets) {
  core::dispatch_floating(q.dtype(), "LSHSelfAttention hash", [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> rotated;
    hash_slice<T>(q.data<T>() + first, ldq, seq_len, d_qk, rotations, n_buckets, n_hashes, mask,
                  buckets, rotated);
  });
}

// sort_buckets' sticker and undo_sort for buckets whose round h holds ids in
// [h * per_round, (h + 1) * per_round): a stable counting sort by bucket over the ticker
// order gives the order of buckets_and_t = L * bucket + position (within one bucket all
// tickers come from one round, so ticker order is position order). False (nothing
// written) if the buckets do not have that form; the caller then uses sort_buckets.
bool counting_sort_buckets(const std::int32_t* b, long L, long n_hashes, long per_round,
                           std::int32_t* sticker, std::int32_t* undo, std::vector<long>& count) {
  const long N = n_hashes * L, n_ids = n_hashes * per_round;
  if (static_cast<double>(L) * static_cast<double>(n_ids) >
      static_cast<double>(std::numeric_limits<std::int32_t>::max())) {
    return false;  // sort_buckets reports the int32 overflow of the keys
  }
  for (long t = 0; t < N; ++t) {
    if (b[t] < 0 || b[t] / per_round != t / L) return false;
  }
  count.assign(static_cast<std::size_t>(n_ids + 1), 0);
  for (long t = 0; t < N; ++t) ++count[static_cast<std::size_t>(b[t]) + 1];
  for (long i = 0; i < n_ids; ++i)
    count[static_cast<std::size_t>(i) + 1] += count[static_cast<std::size_t>(i)];
  for (long t = 0; t < N; ++t) {
    const long slot = count[static_cast<std::size_t>(b[t])]++;
    sticker[slot] = static_cast<std::int32_t>(t);
    undo[t] = static_cast<std::int32_t>(slot);
  }
  return true;
}

}  // namespace minitrax::layers::research::detail
