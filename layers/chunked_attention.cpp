// minitrax/layers/chunked_attention.cpp: the chunked attention kernels and their
// custom-VJP nodes (see chunked_attention.hpp).
#include "layers/chunked_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/parallel.hpp"
#include "core/vmath.hpp"

namespace minitrax::layers::kernels {

namespace fm = minitrax::fastmath;
using autodiff::VarList;

namespace {

long as_long(std::size_t v) {
  return static_cast<long>(v);
}

// The attention core as ONE custom-VJP node, processed block by block: for each slice s,
// chunk ci and tile of query rows, the scores against the window's chunks (one gemm per
// window chunk, read in place: no look_adjacent copies), the masks computed on the fly,
// the softmax with its logsumexp, the shared dropout multiplier, and the product with the
// values. Only a [rows, window] scratch is alive at a time (O(L * window) per head in
// total, no [L, L] for unchunked attention either). The backward pass recomputes each
// block's probabilities from the saved logsumexp. Same arithmetic as attend's steps
// (dots - constant, logsumexp, exp(dots - lse), * keep / keep_prob, @ v) up to rounding.
template <class T>
struct CoreKernel {
  const ChunkedAttentionSpec& sp;
  long G, L, dqk, dv, nc, nw, W, R, rb;
  CoreKernel(const ChunkedAttentionSpec& spec, long g, long l, long dq, long dvv)
      : sp(spec), G(g), L(l), dqk(dq), dv(dvv) {
    nc = L / sp.chunk;
    nw = 1 + sp.before + sp.after;
    W = nw * sp.chunk;
    R = sp.q_info.defined() ? as_long(sp.q_info.dim(0)) : 1;
    rb = sp.chunk <= 512 ? sp.chunk : 256;  // attend's chunk as one tile when small
    // Causal in position order up to 1024 rows: tiles of 128 rows, so that width()
    // skips the future from L = 256 on (measured: 512 rows 18% faster fwd+bwd, 1024 the
    // same, 4096 7% slower than with 256-row tiles, which then stay).
    if (sp.causal && sp.ordered && nw == 1 && sp.chunk <= 1024) rb = std::min(sp.chunk, 128L);
  }
  long window_chunk(long ci, long j) const {
    const long a = j - sp.before;
    return (a == 0 || a >= nc || -a >= nc) ? ci : ((ci + a) % nc + nc) % nc;
  }
  // How many leading columns of the [n, W] block of rows [r0, r0 + n) of chunk ci can be
  // nonzero. Causal attention in position order with a window of the chunk alone (dense
  // attention, or chunks without neighbours): the keys at offsets >= r0 + n are in the
  // future of every row of the tile, masked by -1e9, so their probabilities are exactly
  // 0 (exp underflows) and they add exactly nothing to the max, the logsumexp, the
  // output or any gradient: they are skipped, about half of the work.
  long width(long r0, long n) const {
    return sp.causal && sp.ordered && nw == 1 ? std::min(W, r0 + n) : W;
  }
  // Scores of rows [r0, r0 + n) of chunk ci of slice s, masked: S [n, We] (row stride W).
  // The window's keys are gathered into one [W, d_qk] block first, so that the scores
  // come from one gemm of attend's shape (the same rounding: LSH's round weights depend
  // on logsumexps near -1e5, where float32 steps are 0.008).
  // With replace_masked, all_masked[i] (when given) tells whether row i has no unmasked
  // key: its scores are then all 0 (uniform, as where() leaves every score at -1e9).
  void scores(const T* q, const T* k, long s, long ci, long r0, long n, long We, T* S,
              std::vector<T>& kbuf, unsigned char* all_masked = nullptr) const {
    const T* qt = q + (s * L + ci * sp.chunk + r0) * dqk;
    const T* kw = k + (s * L + window_chunk(ci, 0) * sp.chunk) * dqk;
    if (nw > 1) {
      kbuf.resize(static_cast<std::size_t>(W * dqk));
      for (long j = 0; j < nw; ++j) {
        const T* kj = k + (s * L + window_chunk(ci, j) * sp.chunk) * dqk;
        std::copy(kj, kj + sp.chunk * dqk, kbuf.data() + j * sp.chunk * dqk);
      }
      kw = kbuf.data();
    }
    core::gemm(core::Trans::N, core::Trans::T, n, We, dqk, T(1), qt, dqk, kw, dqk, T(0), S, W);
    if (all_masked != nullptr) std::fill(all_masked, all_masked + n, static_cast<unsigned char>(0));
    if (!sp.q_info.defined()) return;
    const long row = s / (G / R);
    const std::int32_t* qi = sp.q_info.data<std::int32_t>() + row * L;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + row * L;
    if (sp.replace_masked) {
      replace_masked_scores(qi, ki, ci, r0, n, We, S, all_masked);
      return;
    }
    for (long i = 0; i < n; ++i) {
      const std::int32_t qp = qi[ci * sp.chunk + r0 + i];
      T* srow = S + i * W;
      for (long j = 0; j < nw; ++j) {
        const std::int32_t* kc = ki + window_chunk(ci, j) * sp.chunk;
        T* sj = srow + j * sp.chunk;
        const long cols = std::min(sp.chunk, We - j * sp.chunk);
        // Branch-free (vectorisable); s - 0 is exact, so unmasked scores are unchanged.
        const bool causal = sp.causal, self = sp.exclude_self, masked = sp.masked;
        for (long w = 0; w < cols; ++w) {
          const std::int32_t kp = kc[w];
          T sub = T(0);
          sub = causal && qp < kp ? T(1e9) : sub;
          sub = self && qp == kp ? T(1e5) : sub;
          sub = masked && kp < 0 ? T(1e9) : sub;
          sj[w] -= sub;
        }
      }
    }
  }
  // Dense attention's masks (replace_masked): a masked score becomes -1e9; a row with
  // every key masked becomes all 0 (the same uniform softmax as all -1e9, with a
  // logsumexp of log(We) that float32 can carry).
  void replace_masked_scores(const std::int32_t* qi, const std::int32_t* ki, long ci, long r0,
                             long n, long We, T* S, unsigned char* all_masked) const {
    const bool causal = sp.causal, masked = sp.masked;
    for (long i = 0; i < n; ++i) {
      const std::int32_t qp = qi[ci * sp.chunk + r0 + i];
      T* srow = S + i * W;
      long kept = 0;
      for (long j = 0; j < nw; ++j) {
        const std::int32_t* kc = ki + window_chunk(ci, j) * sp.chunk;
        T* sj = srow + j * sp.chunk;
        const long cols = std::min(sp.chunk, We - j * sp.chunk);
        for (long w = 0; w < cols; ++w) {
          const std::int32_t kp = kc[w];
          const bool drop = (causal && qp < kp) || (masked && kp < 0);
          sj[w] = drop ? T(-1e9) : sj[w];
          kept += drop ? 0 : 1;
        }
      }
      if (kept == 0) std::fill(srow, srow + We, T(0));
      if (all_masked != nullptr) all_masked[i] = kept == 0 ? 1 : 0;
    }
  }
  // P = exp(S - lse) per row over We columns (lse computed when `compute_lse`).
  void softmax_rows(T* S, long n, long We, T* lse, bool compute_lse) const {
    std::vector<T> scratch(compute_lse ? static_cast<std::size_t>(We) : 0);
    const std::size_t w_ = static_cast<std::size_t>(We);
    for (long i = 0; i < n; ++i) {
      T* srow = S + i * W;
      if (compute_lse) {
        // lse = max + log(sum(exp(s - max))), as logsumexp computes it
        const T m = core::vmax(srow, w_);
        lse[i] =
            std::isfinite(m) ? m + std::log(core::vexp_shift_sum(srow, scratch.data(), w_, m)) : m;
      }
      // p = exp(s - lse), not exp(s - max) / sum: near the -1e5 self mask lse is rounded
      // to float32's 0.008 steps and the reference's probabilities carry that rounding.
      for (long w = 0; w < We; ++w) srow[w] -= lse[i];
      core::vexp(srow, srow, w_);
    }
  }
  bool has_dropout() const { return sp.multiplier.defined() || sp.element_dropout > 0.0; }
  // The dropout multiplier of rows [r0, r0 + n) of chunk ci of slice s, columns [0, We):
  // M [n, We] (row stride W), keep / keep_prob (element_dropout only).
  void element_multiplier(long s, long ci, long r0, long n, long We, T* M) const {
    const double keep = 1.0 - sp.element_dropout;
    const T scale = static_cast<T>(1.0 / keep);  // fm::dropout's mask * (1 / keep_prob)
    const auto total = static_cast<std::size_t>(G * L * L);
    std::vector<std::int32_t> bits(static_cast<std::size_t>(We));
    for (long i = 0; i < n; ++i) {
      const long row = ci * sp.chunk + r0 + i;
      core::bernoulli_range(sp.element_dropout_rng, keep, total,
                            static_cast<std::size_t>((s * L + row) * L),
                            static_cast<std::size_t>(We), bits.data());
      T* mrow = M + i * W;
      for (long w = 0; w < We; ++w) mrow[w] = bits[static_cast<std::size_t>(w)] != 0 ? scale : T(0);
    }
  }
  static void multiply(T* P, const T* M, long n, long We, long stride) {
    for (long i = 0; i < n; ++i) {
      for (long w = 0; w < We; ++w) P[i * stride + w] *= M[i * stride + w];
    }
  }
  void apply_multiplier(T* P, long s, long ci, long r0, long n, long We) const {
    if (sp.element_dropout > 0.0) {
      std::vector<T> M(static_cast<std::size_t>(n * W));
      element_multiplier(s, ci, r0, n, We, M.data());
      multiply(P, M.data(), n, We, W);
      return;
    }
    if (!sp.multiplier.defined()) return;
    const T* mu = sp.multiplier.data<T>();
    for (long i = 0; i < n; ++i) {
      T* prow = P + i * W;
      const T* mrow = mu + (r0 + i) * W;
      for (long w = 0; w < We; ++w) prow[w] *= mrow[w];
    }
  }
  // Every tile of rows writes its own rows of out and lse: the tiles of all slices are
  // dealt to the threads (core::parallel_for), each with its own scratch.
  void forward(const T* q, const T* k, const T* v, T* out, T* lse_out) const {
    const long tiles = (sp.chunk + rb - 1) / rb;
    const long items = G * nc * tiles;
    // work per tile: the scores and the product with the values, [rows, window] each
    const double flops = 2.0 * static_cast<double>(rb * W * (dqk + dv));
    const auto workers = static_cast<std::size_t>(core::parallel_workers(items, flops));
    std::vector<std::vector<T>> S(workers), kbuf(workers);
    core::parallel_for(items, flops, [&](long item, int worker) {
      const long s = item / (nc * tiles), ci = item / tiles % nc, r0 = item % tiles * rb;
      std::vector<T>& Sw = S[static_cast<std::size_t>(worker)];
      Sw.resize(static_cast<std::size_t>(rb * W));
      const long n = std::min(rb, sp.chunk - r0);
      const long We = width(r0, n);
      scores(q, k, s, ci, r0, n, We, Sw.data(), kbuf[static_cast<std::size_t>(worker)]);
      T* lse = lse_out + s * L + ci * sp.chunk + r0;
      softmax_rows(Sw.data(), n, We, lse, true);
      apply_multiplier(Sw.data(), s, ci, r0, n, We);
      T* ot = out + (s * L + ci * sp.chunk + r0) * dv;
      for (long j = 0; j * sp.chunk < We; ++j) {
        const T* vj = v + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
        const long cols = std::min(sp.chunk, We - j * sp.chunk);
        core::gemm(core::Trans::N, core::Trans::N, n, dv, cols, T(1), Sw.data() + j * sp.chunk, W,
                   vj, dv, j == 0 ? T(0) : T(1), ot, dv);
      }
    });
  }
  void backward(const T* q, const T* k, const T* v, const T* lse_all, const T* dout,
                const T* dlse_all, T* dq, T* dk, T* dv_out) const {
    // A slice's tiles all add into its dk and dv: the slices (not the tiles) are dealt to
    // the threads, each with its own scratch.
    const bool dropout = has_dropout(), per_element = sp.element_dropout > 0.0;
    // work per slice: five [rows, window] x d products per tile
    const double flops = 5.0 * static_cast<double>(L * W * std::max(dqk, dv));
    core::parallel_for(G, flops, [&](long s, int) {
      std::vector<T> P(static_cast<std::size_t>(rb * W)), D(static_cast<std::size_t>(rb * W)), Pd;
      std::vector<T> lse(static_cast<std::size_t>(rb)), kbuf, M;
      std::vector<unsigned char> all_masked(static_cast<std::size_t>(rb));
      if (per_element) M.resize(static_cast<std::size_t>(rb * W));
      for (long ci = 0; ci < nc; ++ci) {
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long We = width(r0, n);
          const long base = s * L + ci * sp.chunk + r0;
          scores(q, k, s, ci, r0, n, We, P.data(), kbuf, all_masked.data());
          std::copy(lse_all + base, lse_all + base + n, lse.begin());
          softmax_rows(P.data(), n, We, lse.data(), false);  // P: probabilities before dropout
          const T* dot = dout + base * dv;
          // D = dO @ V_window^T (the gradient of the dropped-out probabilities)
          for (long j = 0; j * sp.chunk < We; ++j) {
            const T* vj = v + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::T, n, cols, dv, T(1), dot, dv, vj, dv, T(0),
                       D.data() + j * sp.chunk, W);
          }
          // dV_window += (P * mult)^T @ dO, then D *= mult; P stays pre-dropout
          // (per-element dropout: the tile's multiplier drawn once, for both)
          if (per_element) element_multiplier(s, ci, r0, n, We, M.data());
          const T* pv = P.data();
          if (dropout) {
            Pd.assign(P.begin(), P.begin() + n * W);
            if (per_element) {
              multiply(Pd.data(), M.data(), n, We, W);
            } else {
              apply_multiplier(Pd.data(), s, ci, r0, n, We);
            }
            pv = Pd.data();
          }
          for (long j = 0; j * sp.chunk < We; ++j) {
            T* dvj = dv_out + (s * L + window_chunk(ci, j) * sp.chunk) * dv;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::T, core::Trans::N, cols, dv, n, T(1), pv + j * sp.chunk, W, dot,
                       dv, T(1), dvj, dv);
          }
          if (per_element) {
            multiply(D.data(), M.data(), n, We, W);
          } else if (dropout) {
            apply_multiplier(D.data(), s, ci, r0, n, We);
          }
          // dS = P * (D - sum(D * P) + dlse), into D
          for (long i = 0; i < n; ++i) {
            T* drow = D.data() + i * W;
            const T* prow = P.data() + i * W;
            T dotp = 0;
            for (long w = 0; w < We; ++w) dotp += drow[w] * prow[w];
            const T dl = dlse_all != nullptr ? dlse_all[base + i] : T(0);
            for (long w = 0; w < We; ++w) drow[w] = prow[w] * (drow[w] - dotp + dl);
            // replace_masked: a row with every key masked has constant scores, no gradient
            if (all_masked[static_cast<std::size_t>(i)] != 0) std::fill(drow, drow + We, T(0));
          }
          // dQ += dS @ K_window; dK_window += dS^T @ Q
          const T* qt = q + base * dqk;
          T* dqt = dq + base * dqk;
          for (long j = 0; j * sp.chunk < We; ++j) {
            const long off = (s * L + window_chunk(ci, j) * sp.chunk) * dqk;
            const long cols = std::min(sp.chunk, We - j * sp.chunk);
            core::gemm(core::Trans::N, core::Trans::N, n, dqk, cols, T(1), D.data() + j * sp.chunk,
                       W, k + off, dqk, T(1), dqt, dqk);
            core::gemm(core::Trans::T, core::Trans::N, cols, dqk, n, T(1), D.data() + j * sp.chunk,
                       W, qt, dqk, T(1), dk + off, dqk);
          }
        }
      }
    });
  }
};

// ---- LSH: sorted chunked attention and the round combination as ONE node -----------------
//
// LSH attends over the positions sorted by bucket (all hash rounds as one sequence of
// N = n_hashes * L slots). Gathering q, the normalised keys and v into sorted copies
// ([G, N, d] each, all kept on the tape), permuting the outputs back and combining the
// rounds with ordinary ops costs several times the memory of q itself. This node reads
// rows through the sort instead: for sorted chunk ci it gathers the chunk's query rows
// and its window's key and value rows into small buffers, attends (attend's arithmetic:
// one [rows, window] score gemm, the masks, logsumexp, exp(s - lse), the dropout
// multiplier, one gemm with the values) and writes each output row and logsumexp to its
// unsorted place (row sticker[t] = round * L + position). Then it combines the rounds
// position by position: out = sum_r o_r exp(lse_r - logsumexp_r(lse)).
//
// q and v are read, and the combined output written, in the layout the projections
// produce: [E, L, Hg * d] (example, position, then the group's heads side by side), so
// that no transposes are needed around it. Residuals: q, v, the output, the logsumexps
// and (n_hashes > 1) the per-round outputs. The backward pass gathers the same rows again
// and scatter-adds the gradients (a position occurs once per round, so they add up),
// then takes the keys' gradient back through the length normalisation.
// Shared keys as attend makes them, length_normalized(q) / sqrt(d_qk), for one slice:
// its rows copied out of the [E, L, Hg * d_qk] layout into [1, L, d_qk].
template <class T>
Tensor lsh_slice_keys(const T* qs, long L, long stride, long dqk) {
  Tensor q = Tensor::empty({1, static_cast<std::size_t>(L), static_cast<std::size_t>(dqk)},
                           core::dtype_of<T>());
  T* p = q.data<T>();
  for (long t = 0; t < L; ++t) std::copy(qs + t * stride, qs + t * stride + dqk, p + t * dqk);
  autodiff::NoRecord no_record;
  // length_normalized (attention_ops.hpp) with its epsilon 1e-6, op for op
  const Var x(q);
  const Var k = x / fm::sqrt(fm::mean(fm::square(x), {-1}, true) + 1e-6);
  return fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(dqk)), q.dtype())).value();
}

template <class T>
struct LshKernel {
  const LshAttentionSpec& sp;
  long G, L, N, dqk, dv, nc, nw, W, Hg, sq, sv;  // sq, sv: row strides of q and v
  LshKernel(const LshAttentionSpec& spec, long g, long l, long dq, long dvv)
      : sp(spec), G(g), L(l), dqk(dq), dv(dvv) {
    N = sp.n_hashes * L;
    nc = N / sp.chunk;
    nw = 1 + sp.before + sp.after;
    W = nw * sp.chunk;
    Hg = sp.heads;
    sq = Hg * dqk;
    sv = Hg * dv;
  }
  // Slice s's first row in a [E, L, Hg * d] tensor.
  long offset(long s, long d) const { return ((s / Hg) * L * Hg + s % Hg) * d; }
  long window_chunk(long ci, long j) const {
    const long a = j - sp.before;
    return (a == 0 || a >= nc || -a >= nc) ? ci : ((ci + a) % nc + nc) % nc;
  }
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
    for (long j = 0; j < nw; ++j) {
      gather_rows(src, stride, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                  dst + j * sp.chunk * d);
    }
  }
  void scatter_window(const T* src, const std::int32_t* pos, long ci, long d, T* dst,
                      long stride) const {
    for (long j = 0; j < nw; ++j) {
      scatter_add_rows(src + j * sp.chunk * d, pos, window_chunk(ci, j) * sp.chunk, sp.chunk, d,
                       dst, stride);
    }
  }
  // Scores of the rows [r0, r0 + n) of sorted chunk ci: S [n, W] = qbuf kbuf^T, masked
  // with Trax's constants in order (causal -1e9, self -1e5, padding -1e9).
  void scores(const T* qbuf, const T* kbuf, long s, long ci, long r0, long n, T* S) const {
    core::gemm(core::Trans::N, core::Trans::T, n, W, dqk, T(1), qbuf, dqk, kbuf, dqk, T(0), S, W);
    const std::int32_t* qi = sp.pos.data<std::int32_t>() + s * N;
    const std::int32_t* ki = sp.kv_info.data<std::int32_t>() + s * N;
    const bool causal = sp.causal, masked = sp.masked;
    for (long i = 0; i < n; ++i) {
      const std::int32_t qp = qi[ci * sp.chunk + r0 + i];
      T* srow = S + i * W;
      for (long j = 0; j < nw; ++j) {
        const std::int32_t* kc = ki + window_chunk(ci, j) * sp.chunk;
        T* sj = srow + j * sp.chunk;
        for (long w = 0; w < sp.chunk; ++w) {
          const std::int32_t kp = kc[w];
          T sub = T(0);
          sub = causal && qp < kp ? T(1e9) : sub;
          sub = qp == kp ? T(1e5) : sub;
          sub = masked && kp < 0 ? T(1e9) : sub;
          sj[w] -= sub;
        }
      }
    }
  }
  void softmax_rows(T* S, long n, T* lse, bool compute_lse, std::vector<T>& scratch) const {
    scratch.resize(static_cast<std::size_t>(W));
    for (long i = 0; i < n; ++i) {
      T* srow = S + i * W;
      if (compute_lse) {
        const T m = core::vmax(srow, static_cast<std::size_t>(W));
        lse[i] = std::isfinite(m) ? m + std::log(core::vexp_shift_sum(
                                            srow, scratch.data(), static_cast<std::size_t>(W), m))
                                  : m;
      }
      for (long w = 0; w < W; ++w) srow[w] -= lse[i];
      core::vexp(srow, srow, static_cast<std::size_t>(W));
    }
  }
  void apply_multiplier(T* P, long r0, long n) const {
    if (!sp.multiplier.defined()) return;
    const T* mu = sp.multiplier.data<T>();
    for (long i = 0; i < n; ++i) {
      T* prow = P + i * W;
      const T* mrow = mu + (r0 + i) * W;
      for (long w = 0; w < W; ++w) prow[w] *= mrow[w];
    }
  }
  long tile_rows() const { return sp.chunk <= 512 ? sp.chunk : 256; }
  // The rounds' weights of position t of slice s: w[r] = exp(lse_r - logsumexp_r(lse_r)),
  // as the reference computes them (max, then log of the sum of exp).
  void round_weights(const T* lse_s, long t, T* w) const {
    T m = lse_s[t];
    for (long r = 1; r < sp.n_hashes; ++r) m = std::max(m, lse_s[r * L + t]);
    T total = 0;
    for (long r = 0; r < sp.n_hashes; ++r) total += std::exp(lse_s[r * L + t] - m);
    const T lse_all = std::isfinite(m) ? m + std::log(total) : m;
    for (long r = 0; r < sp.n_hashes; ++r) w[r] = std::exp(lse_s[r * L + t] - lse_all);
  }

  // out [E, L, Hg * dv] (rounds combined); o_rounds [G, N, dv] (unsorted rows; may be the
  // scratch of one slice when not kept) and lse [G, N].
  void forward(const T* q, const T* v, T* out, T* o_rounds, bool keep_rounds, T* lse_out) const {
    const long rb = tile_rows();
    // One slice per item (core::parallel_for); each thread has its own scratch, and its
    // own rows for the per-round outputs when they are not kept.
    struct Scratch {
      std::vector<T> S, qbuf, kbuf, vbuf, obuf, lse, scratch, w, rounds;
    };
    // work per slice: the scores and the product with the values of every sorted slot
    const double flops = 2.0 * static_cast<double>(N * W * (dqk + dv));
    std::vector<Scratch> scratches(static_cast<std::size_t>(core::parallel_workers(G, flops)));
    core::parallel_for(G, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.S.empty()) {
        sc.S.resize(static_cast<std::size_t>(rb * W));
        sc.qbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.kbuf.resize(static_cast<std::size_t>(W * dqk));
        sc.vbuf.resize(static_cast<std::size_t>(W * dv));
        sc.obuf.resize(static_cast<std::size_t>(rb * dv));
        sc.lse.resize(static_cast<std::size_t>(rb));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
        if (!keep_rounds) sc.rounds.resize(static_cast<std::size_t>(N * dv));
      }
      std::vector<T>&S = sc.S, &qbuf = sc.qbuf, &kbuf = sc.kbuf, &vbuf = sc.vbuf, &obuf = sc.obuf,
      &lse = sc.lse, &scratch = sc.scratch, &w = sc.w;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * N;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * N;
      const T* qs = q + offset(s, dqk);
      const T* vs = v + offset(s, dv);
      const Tensor kn = lsh_slice_keys<T>(qs, L, sq, dqk);
      const T* ks = kn.data<T>();
      T* os = keep_rounds ? o_rounds + s * N * dv : sc.rounds.data();
      T* ls = lse_out + s * N;
      for (long ci = 0; ci < nc; ++ci) {
        gather_window(ks, dqk, pos, ci, dqk, kbuf.data());
        gather_window(vs, sv, pos, ci, dv, vbuf.data());
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, sq, pos, t0, n, dqk, qbuf.data());
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, S.data());
          softmax_rows(S.data(), n, lse.data(), true, scratch);
          apply_multiplier(S.data(), r0, n);
          // o rows = P V_window, copied to their unsorted rows
          core::gemm(core::Trans::N, core::Trans::N, n, dv, W, T(1), S.data(), W, vbuf.data(), dv,
                     T(0), obuf.data(), dv);
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            std::copy(obuf.data() + i * dv, obuf.data() + (i + 1) * dv, os + r * dv);
            ls[r] = lse[static_cast<std::size_t>(i)];
          }
        }
      }
      // Combine the rounds into the output rows of this slice.
      T* outs = out + offset(s, dv);
      for (long t = 0; t < L; ++t) {
        T* o = outs + t * sv;
        if (sp.n_hashes == 1) {
          std::copy(os + t * dv, os + (t + 1) * dv, o);
          continue;
        }
        round_weights(ls, t, w.data());
        for (long c = 0; c < dv; ++c) o[c] = os[t * dv + c] * w[0];
        for (long r = 1; r < sp.n_hashes; ++r) {
          const T* orow = os + (r * L + t) * dv;
          for (long c = 0; c < dv; ++c) o[c] += orow[c] * w[static_cast<std::size_t>(r)];
        }
      }
    });
  }

  // Gradients w.r.t. q (through the queries and the normalised keys) and v, given the
  // output's cotangent dout [E, L, Hg * dv].
  void backward(const T* q, const T* v, const T* out, const T* o_rounds, const T* lse_all,
                const T* dout, T* dq, T* dv_out) const {
    const long rb = tile_rows();
    const std::size_t wq = static_cast<std::size_t>(W * dqk), wv = static_cast<std::size_t>(W * dv);
    // One slice per item (a slice's gradients touch only its own rows of dq and dv); each
    // thread has its own scratch.
    struct Scratch {
      std::vector<T> P, D, Pd, qbuf, kbuf, vbuf, dobuf, lse, dqbuf, dkbuf, dvbuf, scratch;
      std::vector<T> dkn;           // the normalised keys' gradient, [L, d_qk]
      std::vector<T> wgt, dlse, w;  // per slot (unsorted row r * L + t): round weight, d lse
    };
    // work per slice: five [slots, window] x d products
    const double flops = 5.0 * static_cast<double>(N * W * std::max(dqk, dv));
    std::vector<Scratch> scratches(static_cast<std::size_t>(core::parallel_workers(G, flops)));
    const T* mu = sp.multiplier.defined() ? sp.multiplier.data<T>() : nullptr;
    core::parallel_for(G, flops, [&](long s, int worker) {
      Scratch& sc = scratches[static_cast<std::size_t>(worker)];
      if (sc.P.empty()) {
        sc.P.resize(static_cast<std::size_t>(rb * W));
        sc.D.resize(static_cast<std::size_t>(rb * W));
        sc.qbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.kbuf.resize(wq);
        sc.vbuf.resize(wv);
        sc.dobuf.resize(static_cast<std::size_t>(rb * dv));
        sc.lse.resize(static_cast<std::size_t>(rb));
        sc.dqbuf.resize(static_cast<std::size_t>(rb * dqk));
        sc.dkbuf.resize(wq);
        sc.dvbuf.resize(wv);
        sc.dkn.resize(static_cast<std::size_t>(L * dqk));
        sc.wgt.resize(static_cast<std::size_t>(N));
        sc.dlse.resize(static_cast<std::size_t>(N));
        sc.w.resize(static_cast<std::size_t>(sp.n_hashes));
      }
      std::vector<T>&P = sc.P, &D = sc.D, &Pd = sc.Pd, &qbuf = sc.qbuf, &kbuf = sc.kbuf,
      &vbuf = sc.vbuf, &dobuf = sc.dobuf, &lse = sc.lse, &dqbuf = sc.dqbuf, &dkbuf = sc.dkbuf,
      &dvbuf = sc.dvbuf, &scratch = sc.scratch, &dkn = sc.dkn, &wgt = sc.wgt, &dlse = sc.dlse,
      &w = sc.w;
      const std::int32_t* pos = sp.pos.data<std::int32_t>() + s * N;
      const std::int32_t* row = sp.row.data<std::int32_t>() + s * N;
      const T* qs = q + offset(s, dqk);
      const T* vs = v + offset(s, dv);
      const T* dos = dout + offset(s, dv);
      const T* ls = lse_all + s * N;
      T* dqs = dq + offset(s, dqk);
      T* dvs = dv_out + offset(s, dv);
      const Tensor kn = lsh_slice_keys<T>(qs, L, sq, dqk);
      const T* ks = kn.data<T>();
      // out = sum_r w_r o_r with w = softmax_r(lse): d o_r = w_r dout,
      // d lse_r = w_r (dout . o_r - dout . out).
      if (sp.n_hashes == 1) {
        std::fill(wgt.begin(), wgt.end(), T(1));
        std::fill(dlse.begin(), dlse.end(), T(0));
      } else {
        const T* os = o_rounds + s * N * dv;
        const T* outs = out + offset(s, dv);
        for (long t = 0; t < L; ++t) {
          round_weights(ls, t, w.data());
          const T* g = dos + t * sv;
          T g_out = 0;
          for (long c = 0; c < dv; ++c) g_out += g[c] * outs[t * sv + c];
          for (long r = 0; r < sp.n_hashes; ++r) {
            const T* orow = os + (r * L + t) * dv;
            T g_o = 0;
            for (long c = 0; c < dv; ++c) g_o += g[c] * orow[c];
            const std::size_t i = static_cast<std::size_t>(r * L + t);
            wgt[i] = w[static_cast<std::size_t>(r)];
            dlse[i] = w[static_cast<std::size_t>(r)] * (g_o - g_out);
          }
        }
      }
      std::fill(dkn.begin(), dkn.end(), T(0));
      for (long ci = 0; ci < nc; ++ci) {
        gather_window(ks, dqk, pos, ci, dqk, kbuf.data());
        gather_window(vs, sv, pos, ci, dv, vbuf.data());
        std::fill(dkbuf.begin(), dkbuf.end(), T(0));
        std::fill(dvbuf.begin(), dvbuf.end(), T(0));
        for (long r0 = 0; r0 < sp.chunk; r0 += rb) {
          const long n = std::min(rb, sp.chunk - r0);
          const long t0 = ci * sp.chunk + r0;
          gather_rows(qs, sq, pos, t0, n, dqk, qbuf.data());
          for (long i = 0; i < n; ++i) {
            const long r = row[t0 + i];
            lse[static_cast<std::size_t>(i)] = ls[r];
            const T* g = dos + (r % L) * sv;
            const T wr = wgt[static_cast<std::size_t>(r)];
            for (long c = 0; c < dv; ++c) dobuf[static_cast<std::size_t>(i * dv + c)] = g[c] * wr;
          }
          scores(qbuf.data(), kbuf.data(), s, ci, r0, n, P.data());
          softmax_rows(P.data(), n, lse.data(), false, scratch);  // before dropout
          // D = dO V_window^T: the gradient of the dropped-out probabilities
          core::gemm(core::Trans::N, core::Trans::T, n, W, dv, T(1), dobuf.data(), dv, vbuf.data(),
                     dv, T(0), D.data(), W);
          // dV_window += (P * mult)^T dO; then D *= mult
          const T* pv = P.data();
          if (mu != nullptr) {
            Pd.assign(P.begin(), P.begin() + n * W);
            apply_multiplier(Pd.data(), r0, n);
            pv = Pd.data();
          }
          core::gemm(core::Trans::T, core::Trans::N, W, dv, n, T(1), pv, W, dobuf.data(), dv, T(1),
                     dvbuf.data(), dv);
          if (mu != nullptr) apply_multiplier(D.data(), r0, n);
          // dS = P * (D - sum(D * P) + dlse)
          for (long i = 0; i < n; ++i) {
            T* drow = D.data() + i * W;
            const T* prow = P.data() + i * W;
            T dotp = 0;
            for (long c = 0; c < W; ++c) dotp += drow[c] * prow[c];
            const T dl = dlse[static_cast<std::size_t>(row[t0 + i])];
            for (long c = 0; c < W; ++c) drow[c] = prow[c] * (drow[c] - dotp + dl);
          }
          // dQ_rows = dS K_window; dK_window += dS^T Q_rows
          core::gemm(core::Trans::N, core::Trans::N, n, dqk, W, T(1), D.data(), W, kbuf.data(), dqk,
                     T(0), dqbuf.data(), dqk);
          scatter_add_rows(dqbuf.data(), pos, t0, n, dqk, dqs, sq);
          core::gemm(core::Trans::T, core::Trans::N, W, dqk, n, T(1), D.data(), W, qbuf.data(), dqk,
                     T(1), dkbuf.data(), dqk);
        }
        scatter_window(dkbuf.data(), pos, ci, dqk, dkn.data(), dqk);
        scatter_window(dvbuf.data(), pos, ci, dv, dvs, sv);
      }
      // Keys k = q a / c with a = (mean(q^2) + eps)^(-1/2), c = sqrt(d_qk):
      // dq += (a / c) dk - (a^3 / (c d_qk)) (dk . q) q, row by row.
      const T c = static_cast<T>(std::sqrt(static_cast<double>(dqk)));
      for (long t = 0; t < L; ++t) {
        const T* x = qs + t * sq;
        const T* g = dkn.data() + t * dqk;
        T ss = 0, gx = 0;
        for (long f = 0; f < dqk; ++f) {
          ss += x[f] * x[f];
          gx += g[f] * x[f];
        }
        const T a = T(1) / std::sqrt(ss / static_cast<T>(dqk) + static_cast<T>(1e-6));
        const T c1 = a / c, c2 = a * a * a / (c * static_cast<T>(dqk)) * gx;
        T* o = dqs + t * sq;
        for (long f = 0; f < dqk; ++f) o[f] += c1 * g[f] - c2 * x[f];
      }
    });
  }
};

}  // namespace

AttentionOutputs chunked_attention(const Var& q, const Var& k, const Var& v,
                                   const ChunkedAttentionSpec& spec,
                                   const std::pair<Tensor, Tensor>* saved) {
  std::pair<Tensor, Tensor> given;
  if (saved != nullptr) given = *saved;
  auto fwd = [spec, given](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &kv = in[1], &vv = in[2];
    const long G = as_long(qv.dim(0)), L = as_long(qv.dim(1));
    const Shape out_shape{qv.dim(0), qv.dim(1), vv.dim(2)}, lse_shape{qv.dim(0), qv.dim(1)};
    if (given.first.defined()) {
      if (given.first.shape() != out_shape || given.second.shape() != lse_shape ||
          given.first.dtype() != qv.dtype()) {
        throw core::ShapeError("chunked_attention: the saved outputs " +
                               core::shape_str(given.first.shape()) + " do not fit this call " +
                               core::shape_str(out_shape));
      }
      res = {qv, kv, vv, given.second};
      return std::vector<Tensor>{given.first, given.second};
    }
    if (spec.element_dropout > 0.0) {
      if (spec.chunk != L || spec.before != 0 || spec.after != 0) {
        throw core::ValueError(
            "chunked_attention: per-element dropout needs one chunk of the whole sequence (" +
            std::to_string(L) + " rows) and no neighbours, got chunk " +
            std::to_string(spec.chunk) + ", " + std::to_string(spec.before) + " before, " +
            std::to_string(spec.after) + " after");
      }
      // the draw's size is checked here, before the threads start (as bernoulli does)
      core::bernoulli_range(spec.element_dropout_rng, 1.0 - spec.element_dropout,
                            static_cast<std::size_t>(G * L * L), 0, 0, nullptr);
    }
    Tensor out = Tensor::empty(out_shape, qv.dtype());
    Tensor lse = Tensor::empty(lse_shape, qv.dtype());
    core::dispatch_floating(qv.dtype(), "chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      CoreKernel<T>(spec, G, L, as_long(qv.dim(2)), as_long(vv.dim(2)))
          .forward(qv.data<T>(), kv.data<T>(), vv.data<T>(), out.data<T>(), lse.data<T>());
    });
    res = {qv, kv, vv, lse};
    return std::vector<Tensor>{out, lse};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &kv = res[1], &vv = res[2], &lse = res[3];
    const long G = as_long(qv.dim(0)), L = as_long(qv.dim(1));
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dk = Tensor::zeros(kv.shape(), kv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    const Tensor dout =
        cts.at(0).defined() ? cts[0] : Tensor::zeros({qv.dim(0), qv.dim(1), vv.dim(2)}, qv.dtype());
    core::dispatch_floating(qv.dtype(), "chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      CoreKernel<T>(spec, G, L, as_long(qv.dim(2)), as_long(vv.dim(2)))
          .backward(qv.data<T>(), kv.data<T>(), vv.data<T>(), lse.data<T>(), dout.data<T>(),
                    cts.size() > 1 && cts[1].defined() ? cts[1].data<T>() : nullptr, dq.data<T>(),
                    dk.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dk, dvv};
  };
  const VarList r = autodiff::custom_vjp("chunked_attention", {q, k, v}, fwd, bwd);
  return {r[0], r[1]};
}

// LSH attention for the G = E * Hg slices of q [E, L, Hg * d_qk] and v [E, L, Hg * d_v]
// (the projections' layout): the rounds combined, [E, L, Hg * d_v] in the same layout.
Var lsh_chunked_attention(const Var& q, const Var& v, const LshAttentionSpec& spec) {
  auto fwd = [spec](const std::vector<Tensor>& in, std::vector<Tensor>& res) {
    const Tensor &qv = in[0], &vv = in[1];
    const long E = as_long(qv.dim(0)), L = as_long(qv.dim(1)), G = E * spec.heads;
    const long dqk = as_long(qv.dim(2)) / spec.heads, dv = as_long(vv.dim(2)) / spec.heads;
    const long N = spec.n_hashes * L;
    const bool keep_rounds = spec.n_hashes > 1;
    Tensor out = Tensor::empty(vv.shape(), qv.dtype());
    Tensor lse =
        Tensor::empty({static_cast<std::size_t>(G), static_cast<std::size_t>(N)}, qv.dtype());
    // The per-round outputs, kept for the backward pass when there are several rounds
    // (one round: the kernel uses per-thread scratch rows).
    Tensor rounds = keep_rounds
                        ? Tensor::empty({static_cast<std::size_t>(G), static_cast<std::size_t>(N),
                                         static_cast<std::size_t>(dv)},
                                        qv.dtype())
                        : Tensor();
    core::dispatch_floating(qv.dtype(), "lsh_chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      LshKernel<T>(spec, G, L, dqk, dv)
          .forward(qv.data<T>(), vv.data<T>(), out.data<T>(),
                   keep_rounds ? rounds.data<T>() : nullptr, keep_rounds, lse.data<T>());
    });
    res = {qv, vv, out, lse};
    if (keep_rounds) res.push_back(rounds);
    return std::vector<Tensor>{out};
  };
  auto bwd = [spec](const std::vector<Tensor>& res, const std::vector<Tensor>& cts) {
    const Tensor &qv = res[0], &vv = res[1], &out = res[2], &lse = res[3];
    const long E = as_long(qv.dim(0)), L = as_long(qv.dim(1)), G = E * spec.heads;
    const long dqk = as_long(qv.dim(2)) / spec.heads, dv = as_long(vv.dim(2)) / spec.heads;
    Tensor dq = Tensor::zeros(qv.shape(), qv.dtype());
    Tensor dvv = Tensor::zeros(vv.shape(), vv.dtype());
    if (!cts.at(0).defined()) return std::vector<Tensor>{dq, dvv};
    core::dispatch_floating(qv.dtype(), "lsh_chunked_attention", [&](auto tag) {
      using T = decltype(tag);
      LshKernel<T>(spec, G, L, dqk, dv)
          .backward(qv.data<T>(), vv.data<T>(), out.data<T>(),
                    res.size() > 4 ? res[4].data<T>() : nullptr, lse.data<T>(), cts[0].data<T>(),
                    dq.data<T>(), dvv.data<T>());
    });
    return std::vector<Tensor>{dq, dvv};
  };
  return autodiff::custom_vjp("lsh_chunked_attention", {q, v}, fwd, bwd).at(0);
}

Tensor dropout_multiplier(double rate, Key rng, const Shape& shape, DType dtype) {
  const Tensor keep = core::bernoulli(rng, 1.0 - rate, shape);
  return core::div(keep.astype(dtype), Tensor::scalar(1.0 - rate, dtype));
}

}  // namespace minitrax::layers::kernels
