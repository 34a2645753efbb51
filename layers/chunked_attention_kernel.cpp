// minitrax/layers/chunked_attention_kernel.cpp: the chunked attention kernel: the steps
// of a tile (windows, masks, softmax with logsumexp, dropout multiplier, the softmax's
// backward) and the two drivers that feed it rows, in place (CoreKernel: SelfAttention,
// dense Attention / CausalAttention) or through the LSH sort (LshKernel). The custom-VJP
// nodes around them are in chunked_attention.cpp.
#include "layers/chunked_attention_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/tape.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/parallel.hpp"
#include "core/vmath.hpp"

namespace minitrax::layers::kernels::detail {

namespace fm = minitrax::fastmath;

namespace {

long as_long(std::size_t v) {
  return static_cast<long>(v);
}

// ---- the steps of a tile, shared by both kernels -------------------------------------------
//
// A slice's rows (seq_len rows in place, or n_slots slots sorted by bucket for LSH) are
// cut into n_chunks chunks of `chunk` rows. Chunk ci attends to the keys of its window,
// the n_window chunks ci - before .. ci + after: window = n_window * chunk keys. The
// query rows of a chunk are taken tile_rows at a time; a tile's scores are a block
// S [n, window] (n <= tile_rows rows, row stride window), of which the first `width`
// columns are live (causal dense attention skips the rest, see CoreKernel::live_keys).

// The chunks of one slice and their windows.
struct Windows {
  long chunk, before, after, n_chunks, n_window, window;
  Windows(long n_rows, long chunk_rows, long n_before, long n_after)
      : chunk(chunk_rows),
        before(n_before),
        after(n_after),
        n_chunks(n_rows / chunk_rows),
        n_window(1 + n_before + n_after),
        window((1 + n_before + n_after) * chunk_rows) {}
  // The chunk at place j (0 <= j < n_window) of chunk ci's window: ci + j - before,
  // wrapping around the slice; a neighbour a whole slice or more away is ci itself.
  long chunk_at(long ci, long j) const {
    const long a = j - before;
    return (a == 0 || a >= n_chunks || -a >= n_chunks)
               ? ci
               : ((ci + a) % n_chunks + n_chunks) % n_chunks;
  }
};

// Which scores a tile masks (Trax's constants), and how.
struct MaskRule {
  bool causal = false;        // the key's position is after the query's: -1e9
  bool exclude_self = false;  // the key is the query's own position: -1e5
  bool padding = false;       // the key's info is negative: -1e9
  bool replace = false;       // dense attention: masked scores BECOME -1e9 (see replace_masked)
};

// Masks the scores S [n, window] (columns [0, width)) of the tile of rows [r0, r0 + n) of
// chunk ci: q_pos [n_rows] holds the positions of the slice's rows (in chunk order),
// key_info [n_rows] its keys' positions (negative: padding). Subtracting (SelfAttention
// and LSH: causal, self, padding in Trax's order), or replacing (dense attention: a row
// whose keys are all masked becomes all 0, the uniform softmax of an all -1e9 row with a
// logsumexp that float32 can carry; all_masked[i], when given, says so).
template <class T>
void mask_scores(const MaskRule& rule, const Windows& win, const std::int32_t* q_pos,
                 const std::int32_t* key_info, long ci, long r0, long n, long width, T* S,
                 unsigned char* all_masked) {
  const bool causal = rule.causal, self = rule.exclude_self, padding = rule.padding;
  for (long i = 0; i < n; ++i) {
    const std::int32_t qp = q_pos[ci * win.chunk + r0 + i];
    T* srow = S + i * win.window;
    long kept = 0;
    for (long j = 0; j < win.n_window; ++j) {
      const std::int32_t* kc = key_info + win.chunk_at(ci, j) * win.chunk;
      T* sj = srow + j * win.chunk;
      const long cols = std::min(win.chunk, width - j * win.chunk);
      if (rule.replace) {
        for (long w = 0; w < cols; ++w) {
          const std::int32_t kp = kc[w];
          const bool drop = (causal && qp < kp) || (padding && kp < 0);
          sj[w] = drop ? T(-1e9) : sj[w];
          kept += drop ? 0 : 1;
        }
        continue;
      }
      // Branch-free (vectorisable); s - 0 is exact, so unmasked scores are unchanged.
      for (long w = 0; w < cols; ++w) {
        const std::int32_t kp = kc[w];
        T sub = T(0);
        sub = causal && qp < kp ? T(1e9) : sub;
        sub = self && qp == kp ? T(1e5) : sub;
        sub = padding && kp < 0 ? T(1e9) : sub;
        sj[w] -= sub;
      }
    }
    if (!rule.replace) continue;
    if (kept == 0) std::fill(srow, srow + width, T(0));
    if (all_masked != nullptr) all_masked[i] = kept == 0 ? 1 : 0;
  }
}

// Probabilities P = exp(S - lse) in place, S [n, stride] over columns [0, width); the
// logsumexps lse [n] are computed first when `compute_lse` (the forward pass), given
// otherwise (the backward pass recomputes P from the saved ones).
template <class T>
void softmax_rows(T* S, long n, long width, long stride, T* lse, bool compute_lse,
                  std::vector<T>& scratch) {
  const auto w_ = static_cast<std::size_t>(width);
  if (compute_lse) scratch.resize(w_);
  for (long i = 0; i < n; ++i) {
    T* srow = S + i * stride;
    if (compute_lse) {
      // lse = max + log(sum(exp(s - max))), as logsumexp computes it
      const T m = core::vmax(srow, w_);
      lse[i] =
          std::isfinite(m) ? m + std::log(core::vexp_shift_sum(srow, scratch.data(), w_, m)) : m;
    }
    // p = exp(s - lse), not exp(s - max) / sum: near the -1e5 self mask lse is rounded
    // to float32's 0.008 steps and the reference's probabilities carry that rounding.
    for (long w = 0; w < width; ++w) srow[w] -= lse[i];
    core::vexp(srow, srow, w_);
  }
}

// P *= M element by element: P, M [n, stride], columns [0, width) (the dropout multiplier).
template <class T>
void multiply_rows(T* P, const T* M, long n, long width, long stride) {
  for (long i = 0; i < n; ++i) {
    T* prow = P + i * stride;
    const T* mrow = M + i * stride;
    for (long w = 0; w < width; ++w) prow[w] *= mrow[w];
  }
}

// The scores' gradient from the probabilities' (the softmax's VJP), in place:
// D [n, stride] = P * (D - sum(D * P) + dlse) over columns [0, width), with dlse [n]
// the logsumexps' cotangents (nullptr: 0). all_masked (nullptr: none) marks rows of
// constant scores (replace_masked): their gradient is 0.
template <class T>
void softmax_backward_rows(T* D, const T* P, long n, long width, long stride, const T* dlse,
                           const unsigned char* all_masked) {
  for (long i = 0; i < n; ++i) {
    T* drow = D + i * stride;
    const T* prow = P + i * stride;
    T dotp = 0;
    for (long w = 0; w < width; ++w) dotp += drow[w] * prow[w];
    const T dl = dlse != nullptr ? dlse[i] : T(0);
    for (long w = 0; w < width; ++w) drow[w] = prow[w] * (drow[w] - dotp + dl);
    if (all_masked != nullptr && all_masked[i] != 0) std::fill(drow, drow + width, T(0));
  }
}

// ---- rows in place: SelfAttention, dense Attention / CausalAttention -------------------------
//
// Block by block: for each slice s, chunk ci and tile of query rows, the scores against
// the window's chunks (read in place: no look_adjacent copies), the masks computed on
// the fly, the softmax with its logsumexp, the dropout multiplier, and the product with
// the values. Only a [tile_rows, window] scratch is alive at a time (O(seq_len * window)
// per slice in total, no [seq_len, seq_len] for unchunked attention either). The backward
// pass recomputes each block's probabilities from the saved logsumexp. Same arithmetic
// as attend's steps (dots - constant, logsumexp, exp(dots - lse), * keep / keep_prob, @ v)
// up to rounding.
template <class T>
struct CoreKernel {
  // q, k [n_slices, seq_len, d_qk], v [n_slices, seq_len, d_v]; spec.q_info / kv_info
  // [n_info_rows, seq_len] (slice s uses row s / (n_slices / n_info_rows)).
  const ChunkedAttentionSpec& sp;
  Windows win;
  MaskRule rule;
  long n_slices, seq_len, d_qk, d_v, n_chunks, n_window, window, n_info_rows, tile_rows;
  CoreKernel(const ChunkedAttentionSpec& spec, long slices, long rows, long dq, long dvv)
      : sp(spec),
        win(rows, spec.chunk, spec.before, spec.after),
        rule{spec.causal, spec.exclude_self, spec.masked, spec.replace_masked},
        n_slices(slices),
        seq_len(rows),
        d_qk(dq),
        d_v(dvv) {
    n_chunks = win.n_chunks;
    n_window = win.n_window;
    window = win.window;
    n_info_rows = sp.q_info.defined() ? as_long(sp.q_info.dim(0)) : 1;
    tile_rows = sp.chunk <= 512 ? sp.chunk : 256;  // attend's chunk as one tile when small
    // Causal in position order up to 1024 rows: tiles of 128 rows, so that live_keys()
    // skips the future from seq_len = 256 on (measured: 512 rows 18% faster fwd+bwd, 1024 the
    // same, 4096 7% slower than with 256-row tiles, which then stay).
    if (sp.causal && sp.ordered && n_window == 1 && sp.chunk <= 1024)
      tile_rows = std::min(sp.chunk, 128L);
  }
  long window_chunk(long ci, long j) const { return win.chunk_at(ci, j); }
  // How many leading columns of the [n, window] block of rows [r0, r0 + n) of chunk ci can be
  // nonzero. Causal attention in position order with a window of the chunk alone (dense
  // attention, or chunks without neighbours): the keys at offsets >= r0 + n are in the
  // future of every row of the tile, masked by -1e9, so their probabilities are exactly
  // 0 (exp underflows) and they add exactly nothing to the max, the logsumexp, the
  // output or any gradient: they are skipped, about half of the work.
  long live_keys(long r0, long n) const {
    return sp.causal && sp.ordered && n_window == 1 ? std::min(window, r0 + n) : window;
  }
  // Scores of rows [r0, r0 + n) of chunk ci of slice s, masked: S [n, width] (row stride window).
  // The window's keys are gathered into one [window, d_qk] block first, so that the scores
  // come from one gemm of attend's shape (the same rounding: LSH's round weights depend
  // on logsumexps near -1e5, where float32 steps are 0.008).
  // With replace_masked, all_masked[i] (when given) tells whether row i has no unmasked
  // key: its scores are then all 0 (uniform, as where() leaves every score at -1e9).
  void scores(const T* q, const T* k, long s, long ci, long r0, long n, long width, T* S,
              std::vector<T>& kbuf, unsigned char* all_masked = nullptr) const {
    const T* qt = q + (s * seq_len + ci * sp.chunk + r0) * d_qk;
    const T* kw = k + (s * seq_len + window_chunk(ci, 0) * sp.chunk) * d_qk;
    if (n_window > 1) {
      kbuf.resize(static_cast<std::size_t>(window * d_qk));
      for (long j = 0; j < n_window; ++j) {
        const T* kj = k + (s * seq_len + window_chunk(ci, j) * sp.chunk) * d_qk;
        std::copy(kj, kj + sp.chunk * d_qk, kbuf.data() + j * sp.chunk * d_qk);
      }
      kw = kbuf.data();
    }
    core::gemm(core::Trans::N, core::Trans::T, n, width, d_qk, T(1), qt, d_qk, kw, d_qk, T(0), S,
               window);
    if (all_masked != nullptr) std::fill(all_masked, all_masked + n, static_cast<unsigned char>(0));
    if (!sp.q_info.defined()) return;
    const long row = s / (n_slices / n_info_rows);
    const std::int32_t* qi = sp.q_info.data<std::int32_t>() + row * seq_len;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + row * seq_len;
    mask_scores(rule, win, qi, ki, ci, r0, n, width, S, all_masked);
  }
  bool has_dropout() const { return sp.multiplier.defined() || sp.element_dropout > 0.0; }
  // The dropout multiplier of rows [r0, r0 + n) of chunk ci of slice s, columns [0, width):
  // M [n, width] (row stride window), keep / keep_prob (element_dropout only).
  void element_multiplier(long s, long ci, long r0, long n, long width, T* M) const {
    const double keep = 1.0 - sp.element_dropout;
    const T scale = static_cast<T>(1.0 / keep);  // fm::dropout's mask * (1 / keep_prob)
    const auto total = static_cast<std::size_t>(n_slices * seq_len * seq_len);
    std::vector<std::int32_t> bits(static_cast<std::size_t>(width));
    for (long i = 0; i < n; ++i) {
      const long row = ci * sp.chunk + r0 + i;
      core::bernoulli_range(sp.element_dropout_rng, keep, total,
                            static_cast<std::size_t>((s * seq_len + row) * seq_len),
                            static_cast<std::size_t>(width), bits.data());
      T* mrow = M + i * window;
      for (long w = 0; w < width; ++w)
        mrow[w] = bits[static_cast<std::size_t>(w)] != 0 ? scale : T(0);
    }
  }
  // P [n, window] *= the dropout multiplier of rows [r0, r0 + n) of chunk ci of slice s.
  void apply_multiplier(T* P, long s, long ci, long r0, long n, long width) const {
    if (sp.element_dropout > 0.0) {
      std::vector<T> M(static_cast<std::size_t>(n * window));
      element_multiplier(s, ci, r0, n, width, M.data());
      multiply_rows(P, M.data(), n, width, window);
      return;
    }
    if (!sp.multiplier.defined()) return;
    multiply_rows(P, sp.multiplier.data<T>() + r0 * window, n, width, window);
  }
  // Every tile of rows writes its own rows of out and lse: the tiles of all slices are
  // dealt to the threads (core::parallel_for), each with its own scratch.
  void forward(const T* q, const T* k, const T* v, T* out, T* lse_out) const {
    const long tiles = (sp.chunk + tile_rows - 1) / tile_rows;
    const long items = n_slices * n_chunks * tiles;
    // work per tile: the scores and the product with the values, [rows, window] each
    const double flops = 2.0 * static_cast<double>(tile_rows * window * (d_qk + d_v));
    const auto workers = static_cast<std::size_t>(core::parallel_workers(items, flops));
    std::vector<std::vector<T>> S(workers), kbuf(workers), scratch(workers);
    core::parallel_for(items, flops, [&](long item, int worker) {
      const long s = item / (n_chunks * tiles), ci = item / tiles % n_chunks,
                 r0 = item % tiles * tile_rows;
      std::vector<T>& Sw = S[static_cast<std::size_t>(worker)];
      Sw.resize(static_cast<std::size_t>(tile_rows * window));
      const long n = std::min(tile_rows, sp.chunk - r0);
      const long width = live_keys(r0, n);
      scores(q, k, s, ci, r0, n, width, Sw.data(), kbuf[static_cast<std::size_t>(worker)]);
      T* lse = lse_out + s * seq_len + ci * sp.chunk + r0;
      softmax_rows(Sw.data(), n, width, window, lse, true,
                   scratch[static_cast<std::size_t>(worker)]);
      apply_multiplier(Sw.data(), s, ci, r0, n, width);
      T* ot = out + (s * seq_len + ci * sp.chunk + r0) * d_v;
      for (long j = 0; j * sp.chunk < width; ++j) {
        const T* vj = v + (s * seq_len + window_chunk(ci, j) * sp.chunk) * d_v;
        const long cols = std::min(sp.chunk, width - j * sp.chunk);
        core::gemm(core::Trans::N, core::Trans::N, n, d_v, cols, T(1), Sw.data() + j * sp.chunk,
                   window, vj, d_v, j == 0 ? T(0) : T(1), ot, d_v);
      }
    });
  }
  void backward(const T* q, const T* k, const T* v, const T* lse_all, const T* dout,
                const T* dlse_all, T* dq, T* dk, T* dv_out) const {
    // A slice's tiles all add into its dk and d_v: the slices (not the tiles) are dealt to
    // the threads, each with its own scratch.
    const bool dropout = has_dropout(), per_element = sp.element_dropout > 0.0;
    // work per slice: five [rows, window] x d products per tile
    const double flops = 5.0 * static_cast<double>(seq_len * window * std::max(d_qk, d_v));
    core::parallel_for(n_slices, flops, [&](long s, int) {
      std::vector<T> P(static_cast<std::size_t>(tile_rows * window)),
          D(static_cast<std::size_t>(tile_rows * window)), Pd;
      std::vector<T> lse(static_cast<std::size_t>(tile_rows)), kbuf, M, scratch;
      std::vector<unsigned char> all_masked(static_cast<std::size_t>(tile_rows));
      if (per_element) M.resize(static_cast<std::size_t>(tile_rows * window));
      for (long ci = 0; ci < n_chunks; ++ci) {
        for (long r0 = 0; r0 < sp.chunk; r0 += tile_rows) {
          const long n = std::min(tile_rows, sp.chunk - r0);
          const long width = live_keys(r0, n);
          const long base = s * seq_len + ci * sp.chunk + r0;
          scores(q, k, s, ci, r0, n, width, P.data(), kbuf, all_masked.data());
          std::copy(lse_all + base, lse_all + base + n, lse.begin());
          softmax_rows(P.data(), n, width, window, lse.data(), false, scratch);  // before dropout
          const T* dot = dout + base * d_v;
          // D = dO @ V_window^T (the gradient of the dropped-out probabilities)
          for (long j = 0; j * sp.chunk < width; ++j) {
            const T* vj = v + (s * seq_len + window_chunk(ci, j) * sp.chunk) * d_v;
            const long cols = std::min(sp.chunk, width - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::T, n, cols, d_v, T(1), dot, d_v, vj, d_v, T(0),
                       D.data() + j * sp.chunk, window);
          }
          // dV_window += (P * mult)^T @ dO, then D *= mult; P stays pre-dropout
          // (per-element dropout: the tile's multiplier drawn once, for both)
          if (per_element) element_multiplier(s, ci, r0, n, width, M.data());
          const T* pv = P.data();
          if (dropout) {
            Pd.assign(P.begin(), P.begin() + n * window);
            if (per_element) {
              multiply_rows(Pd.data(), M.data(), n, width, window);
            } else {
              apply_multiplier(Pd.data(), s, ci, r0, n, width);
            }
            pv = Pd.data();
          }
          for (long j = 0; j * sp.chunk < width; ++j) {
            T* dvj = dv_out + (s * seq_len + window_chunk(ci, j) * sp.chunk) * d_v;
            const long cols = std::min(sp.chunk, width - j * sp.chunk);
            core::gemm(core::Trans::T, core::Trans::N, cols, d_v, n, T(1), pv + j * sp.chunk,
                       window, dot, d_v, T(1), dvj, d_v);
          }
          if (per_element) {
            multiply_rows(D.data(), M.data(), n, width, window);
          } else if (dropout) {
            apply_multiplier(D.data(), s, ci, r0, n, width);
          }
          // dS = P * (D - sum(D * P) + dlse), into D
          softmax_backward_rows(D.data(), P.data(), n, width, window,
                                dlse_all != nullptr ? dlse_all + base : nullptr, all_masked.data());
          // dQ += dS @ K_window; dK_window += dS^T @ Q
          const T* qt = q + base * d_qk;
          T* dqt = dq + base * d_qk;
          for (long j = 0; j * sp.chunk < width; ++j) {
            const long off = (s * seq_len + window_chunk(ci, j) * sp.chunk) * d_qk;
            const long cols = std::min(sp.chunk, width - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::N, n, d_qk, cols, T(1), D.data() + j * sp.chunk,
                       window, k + off, d_qk, T(1), dqt, d_qk);
            core::gemm(core::Trans::T, core::Trans::N, cols, d_qk, n, T(1), D.data() + j * sp.chunk,
                       window, qt, d_qk, T(1), dk + off, d_qk);
          }
        }
      }
    });
  }
};

// ---- rows through the LSH sort, the rounds combined: LSHSelfAttention -----------------
//
// LSH attends over the positions sorted by bucket (all hash rounds as one sequence of
// n_slots = n_hashes * seq_len slots). Gathering q, the normalised keys and v into sorted copies
// ([n_slices, n_slots, d] each, all kept on the tape), permuting the outputs back and combining the
// rounds with ordinary ops costs several times the memory of q itself. This node reads
// rows through the sort instead: for sorted chunk ci it gathers the chunk's query rows
// and its window's key and value rows into small buffers, attends (attend's arithmetic:
// one [rows, window] score gemm, the masks, logsumexp, exp(s - lse), the dropout
// multiplier, one gemm with the values) and writes each output row and logsumexp to its
// unsorted place (row sticker[t] = round * seq_len + position). Then it combines the rounds
// position by position: out = sum_r o_r exp(lse_r - logsumexp_r(lse)).
//
// q and v are read, and the combined output written, in the layout the projections
// produce: [n_examples, seq_len, heads * d] (example, position, then the group's heads side by
// side), so that no transposes are needed around it. Residuals: q, v, the output, the logsumexps
// and (n_hashes > 1) the per-round outputs. The backward pass gathers the same rows again
// and scatter-adds the gradients (a position occurs once per round, so they add up),
// then takes the keys' gradient back through the length normalisation.
// Shared keys as attend makes them, length_normalized(q) / sqrt(d_qk), for one slice:
// its rows copied out of the [n_examples, seq_len, heads * d_qk] layout into [1, seq_len, d_qk].
template <class T>
Tensor lsh_slice_keys(const T* qs, long seq_len, long stride, long d_qk) {
  Tensor q = Tensor::empty({1, static_cast<std::size_t>(seq_len), static_cast<std::size_t>(d_qk)},
                           core::dtype_of<T>());
  T* p = q.data<T>();
  for (long t = 0; t < seq_len; ++t)
    std::copy(qs + t * stride, qs + t * stride + d_qk, p + t * d_qk);
  autodiff::NoRecord no_record;
  // length_normalized (attention_ops.hpp) with its epsilon 1e-6, op for op
  const Var x(q);
  const Var k = x / fm::sqrt(fm::mean(fm::square(x), {-1}, true) + 1e-6);
  return fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(d_qk)), q.dtype())).value();
}

template <class T>
struct LshKernel {
  // q [n_examples, seq_len, heads * d_qk], v [n_examples, seq_len, heads * d_v]
  // (n_slices = n_examples * heads); spec.pos / kv_info / row [n_slices, n_slots],
  // n_slots = n_hashes * seq_len sorted slots per slice.
  const LshAttentionSpec& sp;
  Windows win;
  MaskRule rule;
  long n_slices, seq_len, n_slots, d_qk, d_v, n_chunks, n_window, window, heads;
  long q_stride, v_stride;  // the row strides of q and v: heads * d
  LshKernel(const LshAttentionSpec& spec, long slices, long rows, long dq, long dvv)
      : sp(spec),
        win(spec.n_hashes * rows, spec.chunk, spec.before, spec.after),
        rule{spec.causal, true, spec.masked, false},  // shared QK: a query never attends to itself
        n_slices(slices),
        seq_len(rows),
        d_qk(dq),
        d_v(dvv) {
    n_slots = sp.n_hashes * seq_len;
    n_chunks = win.n_chunks;
    n_window = win.n_window;
    window = win.window;
    heads = sp.heads;
    q_stride = heads * d_qk;
    v_stride = heads * d_v;
  }
  // Slice s's first row in a [n_examples, seq_len, heads * d] tensor.
  long offset(long s, long d) const { return ((s / heads) * seq_len * heads + s % heads) * d; }
  long window_chunk(long ci, long j) const { return win.chunk_at(ci, j); }
  // dst[i] = src[pos[t0 + i]] for n rows of d values; src rows `stride` apart.
  static void gather_rows(const T* src, long stride, const std::int32_t* pos, long t0, long n,
                          long d, T* dst) {
    for (long i = 0; i < n; ++i) {
      const T* r = src + static_cast<long>(pos[t0 + i]) * stride;
      T* o = dst + i * d;
      for (long c = 0; c < d; ++c) o[c] = r[c];
    }
  }
  static void scatter_add_rows(const T* src, const std::int32_t* pos, long t0, long n, long d,
                               T* dst, long stride) {
    for (long i = 0; i < n; ++i) {
      T* r = dst + static_cast<long>(pos[t0 + i]) * stride;
      const T* a = src + i * d;
      for (long c = 0; c < d; ++c) r[c] += a[c];
    }
  }
  void gather_window(const T* src, long stride, const std::int32_t* pos, long ci, long d,
                     T* dst) const {
    for (long j = 0; j < n_window; ++j) {
      gather_rows(src, stride, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                  dst + j * sp.chunk * d);
    }
  }
  void scatter_window(const T* src, const std::int32_t* pos, long ci, long d, T* dst,
                      long stride) const {
    for (long j = 0; j < n_window; ++j) {
      scatter_add_rows(src + j * sp.chunk * d, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                       dst, stride);
    }
  }
  // Scores of the rows [r0, r0 + n) of sorted chunk ci: S [n, window] = qbuf kbuf^T, masked
  // with Trax's constants in order (causal -1e9, self -1e5, padding -1e9).
  void scores(const T* qbuf, const T* kbuf, long s, long ci, long r0, long n, T* S) const {
    core::gemm(core::Trans::N, core::Trans::T, n, window, d_qk, T(1), qbuf, d_qk, kbuf, d_qk, T(0),
               S, window);
    const std::int32_t* qi = sp.pos.data<std::int32_t>() + s * n_slots;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + s * n_slots;
    mask_scores(rule, win, qi, ki, ci, r0, n, window, S, static_cast<unsigned char*>(nullptr));
  }
  // P [n, window] *= the shared dropout multiplier's rows [r0, r0 + n).
  void apply_multiplier(T* P, long r0, long n) const {
    if (sp.multiplier.defined()) {
      multiply_rows(P, sp.multiplier.data<T>() + r0 * window, n, window, window);
    }
  }
  long rows_per_tile() const { return sp.chunk <= 512 ? sp.chunk : 256; }
  // The rounds' weights of position t of slice s: w[r] = exp(lse_r - logsumexp_r(lse_r)),
  // as the reference computes them (max, then log of the sum of exp).
  void round_weights(const T* lse_s, long t, T* w) const {
    T m = lse_s[t];
    for (long r = 1; r < sp.n_hashes; ++r) m = std::max(m, lse_s[r * seq_len + t]);
    T total = 0;
    for (long r = 0; r < sp.n_hashes; ++r) total += std::exp(lse_s[r * seq_len + t] - m);
    const T lse_all = std::isfinite(m) ? m + std::log(total) : m;
    for (long r = 0; r < sp.n_hashes; ++r) w[r] = std::exp(lse_s[r * seq_len + t] - lse_all);
  }

  // out [n_examples, seq_len, heads * d_v] (rounds combined); o_rounds [n_slices, n_slots, d_v]
  // (unsorted rows; may be the scratch of one slice when not kept) and lse [n_slices, n_slots].
  void forward(const T* q, const T* v, T* out, T* o_rounds, bool keep_rounds, T* lse_out) const {
    const long tile_rows = rows_per_tile();
    // One slice per item (core::parallel_for); each thread has its own scratch, and its
    // own rows for the per-round outputs when they are not kept.
    struct Scratch {
      std::vector<T> S, qbuf, kbuf, vbuf, obuf, lse, scratch, w, rounds;
    };
    // work per slice: the scores and the product with the values of every sorted slot
    const double flops = 2.0 * static_cast<double>(n_slots * window * (d_qk + d_v));
    std::vector<Scratch> scratches(
        static_cast<std::size_t>(core::parallel_workers(n_slices, flops)));
    core::parallel_for(n_slices, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.S.empty()) {
        sc.S.resize(static_cast<std::size_t>(tile_rows * window));
        sc.qbuf.resize(static_cast<std::size_t>(tile_rows * d_qk));
        sc.kbuf.resize(static_cast<std::size_t>(window * d_qk));
        sc.vbuf.resize(static_cast<std::size_t>(window * d_v));
        sc.obuf.resize(static_cast<std::size_t>(tile_rows * d_v));
        sc.lse.resize(static_cast<std::size_t>(tile_rows));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
        if (!keep_rounds) sc.rounds.resize(static_cast<std::size_t>(n_slots * d_v));
      }
      std::vector<T>&S = sc.S, &qbuf = sc.qbuf, &kbuf = sc.kbuf, &vbuf = sc.vbuf, &obuf = sc.obuf,
      &lse = sc.lse, &scratch = sc.scratch, &w = sc.w;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * n_slots;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * n_slots;
      const T* qs = q + offset(s, d_qk);
      const T* vs = v + offset(s, d_v);
      const Tensor kn = lsh_slice_keys<T>(qs, seq_len, q_stride, d_qk);
      const T* ks = kn.data<T>();
      T* os = keep_rounds ? o_rounds + s * n_slots * d_v : sc.rounds.data();
      T* ls = lse_out + s * n_slots;
      for (long ci = 0; ci < n_chunks; ++ci) {
        gather_window(ks, d_qk, pos, ci, d_qk, kbuf.data());
        gather_window(vs, v_stride, pos, ci, d_v, vbuf.data());
        for (long r0 = 0; r0 < sp.chunk; r0 += tile_rows) {
          const long n = std::min(tile_rows, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, q_stride, pos, t0, n, d_qk, qbuf.data());
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, S.data());
          softmax_rows(S.data(), n, window, window, lse.data(), true, scratch);
          apply_multiplier(S.data(), r0, n);
          // o rows = P V_window, copied to their unsorted rows
          core::gemm(core::Trans::N, core::Trans::N, n, d_v, window, T(1), S.data(), window,
                     vbuf.data(), d_v, T(0), obuf.data(), d_v);
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            std::copy(obuf.data() + i * d_v, obuf.data() + (i + 1) * d_v, os + r * d_v);
            ls[r] = lse[static_cast<std::size_t>(i)];
          }
        }
      }
      // Combine the rounds into the output rows of this slice.
      T* outs = out + offset(s, d_v);
      for (long t = 0; t < seq_len; ++t) {
        T* o = outs + t * v_stride;
        if (sp.n_hashes == 1) {
          std::copy(os + t * d_v, os + (t + 1) * d_v, o);
          continue;
        }
        round_weights(ls, t, w.data());
        for (long c = 0; c < d_v; ++c) o[c] = os[t * d_v + c] * w[0];
        for (long r = 1; r < sp.n_hashes; ++r) {
          const T* orow = os + (r * seq_len + t) * d_v;
          for (long c = 0; c < d_v; ++c) o[c] += orow[c] * w[static_cast<std::size_t>(r)];
        }
      }
    });
  }

  // Gradients w.r.t. q (through the queries and the normalised keys) and v, given the
  // output's cotangent dout [n_examples, seq_len, heads * d_v].
  void backward(const T* q, const T* v, const T* out, const T* o_rounds, const T* lse_all,
                const T* dout, T* dq, T* dv_out) const {
    const long tile_rows = rows_per_tile();
    const std::size_t wq = static_cast<std::size_t>(window * d_qk),
                      wv = static_cast<std::size_t>(window * d_v);
    // One slice per item (a slice's gradients touch only its own rows of dq and d_v); each
    // thread has its own scratch.
    struct Scratch {
      std::vector<T> P, D, Pd, qbuf, kbuf, vbuf, dobuf, lse, dqbuf, dkbuf, dvbuf, scratch;
      std::vector<T> dkn;           // the normalised keys' gradient, [seq_len, d_qk]
      std::vector<T> wgt, dlse, w;  // per slot (unsorted row r * seq_len + t): round weight, d lse
      std::vector<T> dl;            // d lse of the tile's rows
    };
    // work per slice: five [slots, window] x d products
    const double flops = 5.0 * static_cast<double>(n_slots * window * std::max(d_qk, d_v));
    std::vector<Scratch> scratches(
        static_cast<std::size_t>(core::parallel_workers(n_slices, flops)));
    const T* mu = sp.multiplier.defined() ? sp.multiplier.data<T>() : nullptr;
    core::parallel_for(n_slices, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.P.empty()) {
        sc.P.resize(static_cast<std::size_t>(tile_rows * window));
        sc.D.resize(static_cast<std::size_t>(tile_rows * window));
        sc.qbuf.resize(static_cast<std::size_t>(tile_rows * d_qk));
        sc.kbuf.resize(wq);
        sc.vbuf.resize(wv);
        sc.dobuf.resize(static_cast<std::size_t>(tile_rows * d_v));
        sc.lse.resize(static_cast<std::size_t>(tile_rows));
        sc.dqbuf.resize(static_cast<std::size_t>(tile_rows * d_qk));
        sc.dkbuf.resize(wq);
        sc.dvbuf.resize(wv);
        sc.dkn.resize(static_cast<std::size_t>(seq_len * d_qk));
        sc.wgt.resize(static_cast<std::size_t>(n_slots));
        sc.dlse.resize(static_cast<std::size_t>(n_slots));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
        sc.dl.resize(static_cast<std::size_t>(tile_rows));
      }
      std::vector<T>&P = sc.P, &D = sc.D, &Pd = sc.Pd, &qbuf = sc.qbuf, &kbuf = sc.kbuf,
      &vbuf = sc.vbuf, &dobuf = sc.dobuf, &lse = sc.lse, &dqbuf = sc.dqbuf, &dkbuf = sc.dkbuf,
      &dvbuf = sc.dvbuf, &scratch = sc.scratch, &dkn = sc.dkn, &wgt = sc.wgt, &dlse = sc.dlse,
      &w = sc.w, &dl = sc.dl;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * n_slots;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * n_slots;
      const T* qs = q + offset(s, d_qk);
      const T* vs = v + offset(s, d_v);
      const T* dos = dout + offset(s, d_v);
      const T* ls = lse_all + s * n_slots;
      T* dqs = dq + offset(s, d_qk);
      T* dvs = dv_out + offset(s, d_v);
      const Tensor kn = lsh_slice_keys<T>(qs, seq_len, q_stride, d_qk);
      const T* ks = kn.data<T>();
      // out = sum_r w_r o_r with w = softmax_r(lse): d o_r = w_r dout,
      // d lse_r = w_r (dout . o_r - dout . out).
      if (sp.n_hashes == 1) {
        std::fill(wgt.begin(), wgt.end(), T(1));
        std::fill(dlse.begin(), dlse.end(), T(0));
      } else {
        const T* os = o_rounds + s * n_slots * d_v;
        const T* outs = out + offset(s, d_v);
        for (long t = 0; t < seq_len; ++t) {
          round_weights(ls, t, w.data());
          const T* g = dos + t * v_stride;
          T g_out = 0;
          for (long c = 0; c < d_v; ++c) g_out += g[c] * outs[t * v_stride + c];
          for (long r = 0; r < sp.n_hashes; ++r) {
            const T* orow = os + (r * seq_len + t) * d_v;
            T g_o = 0;
            for (long c = 0; c < d_v; ++c) g_o += g[c] * orow[c];
            const std::size_t i = static_cast<std::size_t>(r * seq_len + t);
            wgt[i] = w[static_cast<std::size_t>(r)];
            dlse[i] = w[static_cast<std::size_t>(r)] * (g_o - g_out);
          }
        }
      }
      std::fill(dkn.begin(), dkn.end(), T(0));
      for (long ci = 0; ci < n_chunks; ++ci) {
        gather_window(ks, d_qk, pos, ci, d_qk, kbuf.data());
        gather_window(vs, v_stride, pos, ci, d_v, vbuf.data());
        std::fill(dkbuf.begin(), dkbuf.end(), T(0));
        std::fill(dvbuf.begin(), dvbuf.end(), T(0));
        for (long r0 = 0; r0 < sp.chunk; r0 += tile_rows) {
          const long n = std::min(tile_rows, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, q_stride, pos, t0, n, d_qk, qbuf.data());
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            lse[static_cast<std::size_t>(i)] = ls[r];
            const T* g = dos + (r % seq_len) * v_stride;
            const T wr = wgt[static_cast<std::size_t>(r)];
            for (long c = 0; c < d_v; ++c) dobuf[static_cast<std::size_t>(i * d_v + c)] = g[c] * wr;
          }
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, P.data());
          softmax_rows(P.data(), n, window, window, lse.data(), false, scratch);  // before dropout
          // D = dO V_window^T: the gradient of the dropped-out probabilities
          core::gemm(core::Trans::N, core::Trans::T, n, window, d_v, T(1), dobuf.data(), d_v,
                     vbuf.data(), d_v, T(0), D.data(), window);
          // dV_window += (P * mult)^T dO; then D *= mult
          const T* pv = P.data();
          if (mu != nullptr) {
            Pd.assign(P.begin(), P.begin() + n * window);
            apply_multiplier(Pd.data(), r0, n);
            pv = Pd.data();
          }
          core::gemm(core::Trans::T, core::Trans::N, window, d_v, n, T(1), pv, window, dobuf.data(),
                     d_v, T(1), dvbuf.data(), d_v);
          if (mu != nullptr) apply_multiplier(D.data(), r0, n);
          // dS = P * (D - sum(D * P) + dlse)
          for (long i = 0; i < n; ++i)
            dl[static_cast<std::size_t>(i)] = dlse[static_cast<std::size_t>(row[t0 + i])];
          softmax_backward_rows(D.data(), P.data(), n, window, window, dl.data(),
                                static_cast<const unsigned char*>(nullptr));
          // dQ_rows = dS K_window; dK_window += dS^T Q_rows
          core::gemm(core::Trans::N, core::Trans::N, n, d_qk, window, T(1), D.data(), window,
                     kbuf.data(), d_qk, T(0), dqbuf.data(), d_qk);
          scatter_add_rows(dqbuf.data(), pos, t0, n, d_qk, dqs, q_stride);
          core::gemm(core::Trans::T, core::Trans::N, window, d_qk, n, T(1), D.data(), window,
                     qbuf.data(), d_qk, T(1), dkbuf.data(), d_qk);
        }
        scatter_window(dkbuf.data(), pos, ci, d_qk, dkn.data(), d_qk);
        scatter_window(dvbuf.data(), pos, ci, d_v, dvs, v_stride);
      }
      // Keys k = q a / c with a = (mean(q^2) + eps)^(-1/2), c = sqrt(d_qk):
      // dq += (a / c) dk - (a^3 / (c d_qk)) (dk . q) q, row by row.
      const T c = static_cast<T>(std::sqrt(static_cast<double>(d_qk)));
      for (long t = 0; t < seq_len; ++t) {
        const T* x = qs + t * q_stride;
        const T* g = dkn.data() + t * d_qk;
        T ss = 0, gx = 0;
        for (long f = 0; f < d_qk; ++f) {
          ss += x[f] * x[f];
          gx += g[f] * x[f];
        }
        const T a = T(1) / std::sqrt(ss / static_cast<T>(d_qk) + static_cast<T>(1e-6));
        const T c1 = a / c, c2 = a * a * a / (c * static_cast<T>(d_qk)) * gx;
        T* o = dqs + t * q_stride;
        for (long f = 0; f < d_qk; ++f) o[f] += c1 * g[f] - c2 * x[f];
      }
    });
  }
};

}  // namespace

template <class T>
void core_forward(const ChunkedAttentionSpec& spec, long n_slices, long seq_len, long d_qk,
                  long d_v, const T* q, const T* k, const T* v, T* out, T* lse) {
  CoreKernel<T>(spec, n_slices, seq_len, d_qk, d_v).forward(q, k, v, out, lse);
}

template <class T>
void core_backward(const ChunkedAttentionSpec& spec, long n_slices, long seq_len, long d_qk,
                   long d_v, const T* q, const T* k, const T* v, const T* lse, const T* dout,
                   const T* dlse, T* dq, T* dk, T* dv) {
  CoreKernel<T>(spec, n_slices, seq_len, d_qk, d_v).backward(q, k, v, lse, dout, dlse, dq, dk, dv);
}

template <class T>
void lsh_forward(const LshAttentionSpec& spec, long n_slices, long seq_len, long d_qk, long d_v,
                 const T* q, const T* v, T* out, T* o_rounds, T* lse) {
  LshKernel<T>(spec, n_slices, seq_len, d_qk, d_v)
      .forward(q, v, out, o_rounds, o_rounds != nullptr, lse);
}

template <class T>
void lsh_backward(const LshAttentionSpec& spec, long n_slices, long seq_len, long d_qk, long d_v,
                  const T* q, const T* v, const T* out, const T* o_rounds, const T* lse,
                  const T* dout, T* dq, T* dv) {
  LshKernel<T>(spec, n_slices, seq_len, d_qk, d_v).backward(q, v, out, o_rounds, lse, dout, dq, dv);
}

#define MINITRAX_CHUNKED_ATTENTION_KERNELS(T)                                                   \
  template void core_forward<T>(const ChunkedAttentionSpec&, long, long, long, long, const T*,  \
                                const T*, const T*, T*, T*);                                    \
  template void core_backward<T>(const ChunkedAttentionSpec&, long, long, long, long, const T*, \
                                 const T*, const T*, const T*, const T*, const T*, T*, T*, T*); \
  template void lsh_forward<T>(const LshAttentionSpec&, long, long, long, long, const T*,       \
                               const T*, T*, T*, T*);                                           \
  template void lsh_backward<T>(const LshAttentionSpec&, long, long, long, long, const T*,      \
                                const T*, const T*, const T*, const T*, const T*, T*, T*);
MINITRAX_CHUNKED_ATTENTION_KERNELS(float)
MINITRAX_CHUNKED_ATTENTION_KERNELS(double)
#undef MINITRAX_CHUNKED_ATTENTION_KERNELS

}  // namespace minitrax::layers::kernels::detail
