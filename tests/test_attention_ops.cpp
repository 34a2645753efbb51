// Tests of the efficient-attention helpers (layers/research/attention_ops.hpp).
//
// Every value is checked against an independent computation: naive loops in
// double (length normalisation, the masks, look_adjacent's index formula, chunked
// attention with adjacent chunks, masks and shared-QK keys), hand-made rotations
// for hashing, and the deterministic expected outputs of the course lab
// "Reformer Efficient Attention" (sort step, dot-and-softmax step, softmax, and
// our_simple_attend with JAX's uniform draws). Gradients: float64 gradcheck, and
// the permutations' VJPs against the inverse permutation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/gradcheck.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/research/attention_ops.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
namespace ea = minitrax::layers::research;
using autodiff::VarList;
using core::key_from_seed;
using core::Shape;

namespace {

using Vec = std::vector<double>;
using IVec = std::vector<std::int64_t>;

Tensor randn(const Shape& shape, std::int64_t seed, DType dtype = DType::f64) {
  return core::normal(key_from_seed(seed), shape, dtype);
}
Vec vals(const Tensor& t) {
  return t.to_vector<double>();
}
Vec vals(const Var& v) {
  return v.value().to_vector<double>();
}
IVec ivals(const Tensor& t) {
  return t.to_vector<std::int64_t>();
}
Tensor i32(const IVec& v) {
  std::vector<std::int32_t> w(v.begin(), v.end());
  return Tensor::from<std::int32_t>(Shape{v.size()}, w);
}

double max_diff(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// ---- naive reference implementations (double, loops) ------------------------------------

// The chunk a query chunk c sees at offset i, with Python slicing: a shift of at
// least n_chunks (either way) is the identity.
long adjacent_source(long c, long i, long n_chunks) {
  if (i >= n_chunks || -i >= n_chunks) return c;
  return ((c + i) % n_chunks + n_chunks) % n_chunks;
}

struct NaiveConfig {
  long q_chunk = 0;  // 0: no chunking
  long kv_chunk = 0;
  long before = 0, after = 0;
  bool causal = false, exclude_self = false, masked = false;
  IVec q_info, kv_info;    // empty: defaults
  Vec dropout_multiplier;  // [q_chunk, window] keep/keep_prob, empty: none
};

struct NaiveResult {
  Vec out, lse;
};

// Chunked attention, written from the definition: query i in chunk c attends to
// the keys of chunks c-before .. c+after (Python-slice wrap), masked additively.
NaiveResult naive_attend(const Vec& q, const Vec* k_in, const Vec& v, long q_len, long kv_len,
                         long d, long dv, const NaiveConfig& cfg) {
  const bool share = k_in == nullptr;
  Vec k(static_cast<std::size_t>(kv_len * d));
  for (long j = 0; j < kv_len; ++j) {
    double scale = 1.0;
    if (share) {
      double ms = 0;
      for (long f = 0; f < d; ++f) ms += q[j * d + f] * q[j * d + f];
      scale = 1.0 / std::sqrt(ms / static_cast<double>(d) + 1e-6);
    }
    for (long f = 0; f < d; ++f) {
      const double x = share ? q[j * d + f] : (*k_in)[j * d + f];
      k[j * d + f] = x * scale / std::sqrt(static_cast<double>(d));
    }
  }
  IVec q_info = cfg.q_info, kv_info = cfg.kv_info;
  if (q_info.empty()) {
    for (long i = 0; i < q_len; ++i) q_info.push_back(i);
  }
  if (kv_info.empty()) {
    if (share) {
      kv_info = q_info;
    } else {
      for (long j = 0; j < kv_len; ++j) kv_info.push_back(j);
    }
  }
  const long qc = cfg.q_chunk ? cfg.q_chunk : q_len;
  const long kc = cfg.q_chunk ? (share ? cfg.q_chunk : cfg.kv_chunk) : kv_len;
  const long n_chunks = q_len / qc;
  NaiveResult r;
  r.out.assign(static_cast<std::size_t>(q_len * dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(q_len), 0.0);
  for (long i = 0; i < q_len; ++i) {
    const long c = i / qc;
    std::vector<long> window;
    for (long o = -cfg.before; o <= cfg.after; ++o) {
      const long src = adjacent_source(c, o, n_chunks);
      for (long j = 0; j < kc; ++j) window.push_back(src * kc + j);
    }
    Vec dots;
    for (long j : window) {
      double s = 0;
      for (long f = 0; f < d; ++f) s += q[i * d + f] * k[j * d + f];
      const auto qi = q_info[static_cast<std::size_t>(i)];
      const auto kj = kv_info[static_cast<std::size_t>(j)];
      if (cfg.causal && qi < kj) s -= 1e9;
      if (cfg.exclude_self && qi == kj) s -= 1e5;
      if (cfg.masked && kj < 0) s -= 1e9;
      dots.push_back(s);
    }
    const double m = *std::max_element(dots.begin(), dots.end());
    double z = 0;
    for (double s : dots) z += std::exp(s - m);
    const double lse = m + std::log(z);
    r.lse[static_cast<std::size_t>(i)] = lse;
    for (std::size_t w = 0; w < window.size(); ++w) {
      double p = std::exp(dots[w] - lse);
      if (!cfg.dropout_multiplier.empty()) {
        p *= cfg.dropout_multiplier[static_cast<std::size_t>(i % qc) * window.size() + w];
      }
      for (long f = 0; f < dv; ++f) r.out[i * dv + f] += p * v[window[w] * dv + f];
    }
  }
  return r;
}

// ---- attend under a test configuration ---------------------------------------------------

struct Case {
  std::string name;
  long q_len = 8, kv_len = 8, d = 3, dv = 2;
  bool share = false;
  NaiveConfig cfg;
  double dropout = 0.0;
};

ea::AttendOptions options_of(const Case& c) {
  ea::AttendOptions o;
  if (c.cfg.q_chunk) {
    o.q_chunk_len = c.cfg.q_chunk;
    if (!c.share) o.kv_chunk_len = c.cfg.kv_chunk;
  }
  o.n_chunks_before = c.cfg.before;
  o.n_chunks_after = c.cfg.after;
  const bool causal = c.cfg.causal, self = c.cfg.exclude_self, masked = c.cfg.masked;
  if (causal || self || masked) {
    o.mask_fn = [=](const Var& dots, const Tensor& qi, const Tensor& kvi) {
      return ea::mask_self_attention(dots, qi, kvi, causal, self, masked);
    };
  }
  if (!c.cfg.q_info.empty()) o.q_info = i32(c.cfg.q_info);
  if (!c.cfg.kv_info.empty()) o.kv_info = i32(c.cfg.kv_info);
  o.dropout = c.dropout;
  o.rng = key_from_seed(77);
  return o;
}

std::vector<Case> attend_cases() {
  std::vector<Case> cases;
  {
    Case c;
    c.name = "unchunked, separate keys";
    c.kv_len = 6;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "unchunked, shared QK, self mask";
    c.share = true;
    c.cfg.exclude_self = true;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "chunked, before=1";
    c.cfg.q_chunk = 2;
    c.cfg.kv_chunk = 2;
    c.cfg.before = 1;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "chunked, before=1 after=1, shared QK";
    c.share = true;
    c.cfg.q_chunk = 2;
    c.cfg.before = 1;
    c.cfg.after = 1;
    c.cfg.exclude_self = true;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "chunked causal, before=1";
    c.cfg.q_chunk = 4;
    c.cfg.kv_chunk = 4;
    c.cfg.before = 1;
    c.cfg.causal = true;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "shared QK causal with sorted (LSH-like) positions";
    c.share = true;
    c.q_len = c.kv_len = 12;
    c.cfg.q_chunk = 4;
    c.cfg.before = 1;
    c.cfg.causal = true;
    c.cfg.exclude_self = true;
    // two "hash rounds" of 6 positions, sorted differently: chunks straddle rounds
    c.cfg.q_info = {0, 3, 1, 5, 2, 4, 1, 0, 4, 2, 5, 3};
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "masked (negative kv_info), causal, chunked";
    c.cfg.q_chunk = 4;
    c.cfg.kv_chunk = 4;
    c.cfg.before = 1;
    c.cfg.causal = true;
    c.cfg.masked = true;
    c.cfg.kv_info = {0, 1, 2, 3, -4, 5, -6, -7};  // positions 4, 6, 7 are padding
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "masked, shared QK, unchunked, padded position 0 not masked";
    c.share = true;
    c.q_len = c.kv_len = 6;
    c.cfg.exclude_self = true;
    c.cfg.masked = true;
    c.cfg.kv_info = {0, 1, 2, -3, 4, -5};
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "window wider than the chunks (before=3, 2 chunks)";
    c.q_len = c.kv_len = 4;
    c.cfg.q_chunk = 2;
    c.cfg.kv_chunk = 2;
    c.cfg.before = 3;
    cases.push_back(c);
  }
  return cases;
}

struct AttendInputs {
  Tensor q, k, v;
};

AttendInputs inputs_of(const Case& c, DType dtype, std::int64_t seed = 1) {
  AttendInputs in;
  in.q = randn({static_cast<std::size_t>(c.q_len), static_cast<std::size_t>(c.d)}, seed, dtype);
  if (!c.share) {
    in.k =
        randn({static_cast<std::size_t>(c.kv_len), static_cast<std::size_t>(c.d)}, seed + 1, dtype);
  }
  in.v =
      randn({static_cast<std::size_t>(c.kv_len), static_cast<std::size_t>(c.dv)}, seed + 2, dtype);
  return in;
}

// The keep mask attend draws, as naive multipliers keep / keep_prob.
Vec dropout_multipliers(const Case& c) {
  const long qc = c.cfg.q_chunk ? c.cfg.q_chunk : c.q_len;
  const long kc = c.cfg.q_chunk ? (c.share ? c.cfg.q_chunk : c.cfg.kv_chunk) : c.kv_len;
  const long window = kc * (1 + c.cfg.before + c.cfg.after);
  const Tensor keep =
      core::bernoulli(key_from_seed(77), 1.0 - c.dropout,
                      {static_cast<std::size_t>(qc), static_cast<std::size_t>(window)});
  Vec m = vals(keep);
  for (double& x : m) x /= (1.0 - c.dropout);
  return m;
}

void check_attend_against_naive(const Case& c, DType dtype, double tol) {
  CAPTURE(c.name);
  const AttendInputs in = inputs_of(c, dtype);
  const auto r = ea::attend(in.q, c.share ? Var() : Var(in.k), in.v, options_of(c));
  NaiveConfig cfg = c.cfg;
  if (c.dropout > 0) cfg.dropout_multiplier = dropout_multipliers(c);
  const Vec kq = vals(in.q), kk = c.share ? Vec{} : vals(in.k), kv = vals(in.v);
  const NaiveResult n =
      naive_attend(kq, c.share ? nullptr : &kk, kv, c.q_len, c.kv_len, c.d, c.dv, cfg);
  CHECK(r.out.shape() == Shape{static_cast<std::size_t>(c.q_len), static_cast<std::size_t>(c.dv)});
  CHECK(r.logsumexp.shape() == Shape{static_cast<std::size_t>(c.q_len)});
  CHECK(r.out.dtype() == dtype);
  CHECK(max_diff(vals(r.out), n.out) < tol);
  // lse carries the mask constants (up to 1e9): compare relative to its size.
  const Vec lse = vals(r.logsumexp);
  for (std::size_t i = 0; i < lse.size(); ++i) {
    CHECK(std::abs(lse[i] - n.lse[i]) < tol * std::max(1.0, std::abs(n.lse[i])));
  }
}

// In float32, a row whose only visible keys carry the -1e5 self mask (position 0
// under causal masking, duplicated positions in LSH rounds) computes its softmax
// on values near -1e5, whose spacing is 2^-7: weights are then only good to ~1e-3,
// in Trax as here (docs/efficient_attention.md). Other rows keep 2e-5.
double f32_tolerance(const Case& c) {
  return c.cfg.causal && c.cfg.exclude_self ? 5e-3 : 2e-5;
}

autodiff::Fn attend_fn(const Case& c) {
  return [c](const VarList& x) {
    const auto r = c.share ? ea::attend(x[0], Var(), x[1], options_of(c))
                           : ea::attend(x[0], x[1], x[2], options_of(c));
    return VarList{r.out, r.logsumexp};
  };
}

std::vector<Tensor> attend_primals(const Case& c) {
  const AttendInputs in = inputs_of(c, DType::f64, 5);
  if (c.share) return {in.q, in.v};
  return {in.q, in.k, in.v};
}

}  // namespace

// ==== length_normalized ====================================================================

TEST_CASE("length_normalized: x / sqrt(mean(x^2) + eps) per row, vs loops; gradcheck") {
  const Tensor x = randn({3, 4, 5}, 3);
  const Vec xv = vals(x);
  for (double eps : {1e-6, 0.5}) {
    const Vec got = vals(ea::length_normalized(x, eps));
    Vec want(xv.size());
    for (std::size_t row = 0; row < 12; ++row) {
      double ms = 0;
      for (std::size_t f = 0; f < 5; ++f) ms += xv[row * 5 + f] * xv[row * 5 + f];
      const double s = 1.0 / std::sqrt(ms / 5.0 + eps);
      for (std::size_t f = 0; f < 5; ++f) want[row * 5 + f] = xv[row * 5 + f] * s;
    }
    CHECK(max_diff(got, want) < 1e-12);
  }
  // float32 as well
  const Tensor x32 = x.astype(DType::f32);
  CHECK(max_diff(vals(ea::length_normalized(x32)), vals(ea::length_normalized(x))) < 1e-5);
  CHECK(gradcheck([](const VarList& v) { return VarList{ea::length_normalized(v[0])}; }, {x}).ok);
  CHECK_THROWS_AS(ea::length_normalized(Tensor::ones({3}, DType::i32)), DTypeError);
}

// ==== look_adjacent ========================================================================

TEST_CASE("look_adjacent: chunk c sees c-before..c+after (mod n_chunks), Python slicing") {
  const std::size_t n_chunks = 3, chunk = 2, d = 2;
  const Tensor x = randn({n_chunks, chunk, d}, 4);
  const Vec xv = vals(x);
  struct Window {
    long before, after;
  };
  for (const Window w : {Window{0, 0}, Window{1, 0}, Window{0, 1}, Window{1, 1}, Window{2, 1},
                         Window{3, 0}, Window{4, 2}, Window{0, 5}}) {
    CAPTURE(w.before);
    CAPTURE(w.after);
    const Tensor y = ea::look_adjacent(Var(x), w.before, w.after).value();
    const long n_off = 1 + w.before + w.after;
    REQUIRE(y.shape() == Shape{n_chunks, static_cast<std::size_t>(n_off) * chunk, d});
    const Vec yv = vals(y);
    for (long c = 0; c < 3; ++c) {
      for (long o = 0; o < n_off; ++o) {
        const long src = adjacent_source(c, o - w.before, 3);
        for (long j = 0; j < 2; ++j) {
          for (long f = 0; f < 2; ++f) {
            const double got = yv[static_cast<std::size_t>(((c * n_off + o) * 2 + j) * 2 + f)];
            const double want = xv[static_cast<std::size_t>((src * 2 + j) * 2 + f)];
            CHECK(got == want);
          }
        }
      }
    }
  }
  // Wider than the sequence: offsets -3 and +3 of 3 chunks are the identity
  // (x[-3:] is all of x), so chunk c appears three times in its window.
  const Tensor info = Tensor::arange(6, DType::i32).reshape(std::vector<long>{3, 2});
  const Tensor wide = ea::look_adjacent(info, 3, 0);
  // Offsets -3 (identity), -2, -1, 0:
  CHECK(ivals(wide) == IVec{0, 1, 2, 3, 4, 5, 0, 1,    // chunk 0 sees chunks 0, 1, 2, 0
                            2, 3, 4, 5, 0, 1, 2, 3,    // chunk 1 sees chunks 1, 2, 0, 1
                            4, 5, 0, 1, 2, 3, 4, 5});  // chunk 2 sees chunks 2, 0, 1, 2
  CHECK(wide.dtype() == DType::i32);
  // Two chunks, before = after = 1: chunk 0 sees 1, 0, 1 (duplicates kept).
  const Tensor two = Tensor::arange(4, DType::i32).reshape(std::vector<long>{2, 2});
  CHECK(ivals(ea::look_adjacent(two, 1, 1)) == IVec{2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
  // differentiable: gradcheck through the Var form
  CHECK(gradcheck([](const VarList& v) { return VarList{ea::look_adjacent(v[0], 2, 1)}; }, {x}).ok);
  CHECK_THROWS_AS(ea::look_adjacent(Tensor::arange(4), 1, 0), ShapeError);
  CHECK_THROWS_AS(ea::look_adjacent(x, -1, 0), ValueError);
}

// ==== mask_self_attention ================================================================

TEST_CASE("mask_self_attention: additive -1e9 causal, -1e5 self, -1e9 padding, vs loops") {
  const Tensor dots = randn({2, 3, 6}, 5);
  const IVec qinfo = {0, 1, 2, 3, 4, 5};
  const IVec kvinfo = {0, -1, 2, 3, -4, 5, 6, 7, -8, 9, 10, -11};
  Tensor q_info = i32(qinfo).reshape(std::vector<long>{2, 3, 1});
  Tensor kv_info = i32(kvinfo).reshape(std::vector<long>{2, 1, 6});
  const Vec dv = vals(dots);
  for (int flags = 0; flags < 8; ++flags) {
    const bool causal = flags & 1, self = flags & 2, masked = flags & 4;
    CAPTURE(flags);
    for (DType dtype : {DType::f64, DType::f32}) {
      const Var got =
          ea::mask_self_attention(dots.astype(dtype), q_info, kv_info, causal, self, masked);
      CHECK(got.dtype() == dtype);
      const Vec g = vals(got);
      for (std::size_t n = 0; n < 2; ++n) {
        for (std::size_t i = 0; i < 3; ++i) {
          for (std::size_t j = 0; j < 6; ++j) {
            const std::size_t at = (n * 3 + i) * 6 + j;
            const auto qi = qinfo[n * 3 + i], kj = kvinfo[n * 6 + j];
            double want =
                dtype == DType::f32 ? static_cast<double>(static_cast<float>(dv[at])) : dv[at];
            if (causal && qi < kj) want -= 1e9;
            if (self && qi == kj) want -= 1e5;
            if (masked && kj < 0) want -= 1e9;
            const double tol = dtype == DType::f32 ? 1e-7 * std::max(1.0, std::abs(want)) : 1e-9;
            CHECK(std::abs(g[at] - want) <= tol);
          }
        }
      }
    }
  }
  CHECK_THROWS_AS(
      ea::mask_self_attention(dots, Tensor::arange(4).reshape(std::vector<long>{4, 1}), kv_info),
      ShapeError);
}

// ==== attend =================================================================================

TEST_CASE("attend: matches naive chunked attention (float64 and float32)") {
  for (const Case& c : attend_cases()) {
    check_attend_against_naive(c, DType::f64, 1e-10);
    check_attend_against_naive(c, DType::f32, f32_tolerance(c));
  }
}

TEST_CASE("attend: attention dropout, one [q_chunk, window] mask for every chunk") {
  for (Case c : attend_cases()) {
    c.dropout = 0.3;
    check_attend_against_naive(c, DType::f64, 1e-10);
    check_attend_against_naive(c, DType::f32, f32_tolerance(c));
  }
  // Same rng, same output; another rng, another output.
  Case c = attend_cases()[2];
  c.dropout = 0.5;
  const AttendInputs in = inputs_of(c, DType::f32);
  auto o1 = options_of(c), o2 = options_of(c);
  o2.rng = key_from_seed(78);
  const Tensor a = ea::attend(in.q, in.k, in.v, o1).out.value();
  const Tensor b = ea::attend(in.q, in.k, in.v, o1).out.value();
  const Tensor d = ea::attend(in.q, in.k, in.v, o2).out.value();
  CHECK(core::equal(a, b));
  CHECK_FALSE(core::equal(a, d));
  // keep_prob is tied to the activations, as Trax's tie_in(dots, 1 - dropout).
  Tape tape;
  Var q = tape.watch(in.q);
  (void)ea::attend(q, in.k, in.v, o1);
  CHECK(tape.dump().find("tie_in(%") != std::string::npos);
}

TEST_CASE("attend: gradcheck (float64) over q, k, v in every configuration") {
  GradcheckOptions opt;
  opt.eps = 1e-6;
  opt.rtol = 1e-5;
  opt.atol = 1e-6;
  for (Case c : attend_cases()) {
    CAPTURE(c.name);
    // With the -1e5 self mask, an lse near -1e5 loses ~1e-11 to rounding: FD step 1e-4.
    GradcheckOptions o = opt;
    if (c.cfg.exclude_self) o.eps = 1e-4;
    const auto r = gradcheck(attend_fn(c), attend_primals(c), o);
    CHECK_MESSAGE(r.ok, r.message);
    c.dropout = 0.25;
    const auto rd = gradcheck(attend_fn(c), attend_primals(c), o);
    CHECK_MESSAGE(rd.ok, rd.message);
  }
}

TEST_CASE(
    "attend: a fully padded row: float32 sums the values, float64 ignores the shift (as Trax)") {
  // Separate keys, every kv_info negative: every key of every row is padding.
  const Tensor q = randn({2, 3}, 30), k = randn({4, 3}, 31), v = randn({4, 2}, 32);
  ea::AttendOptions o;
  o.kv_info = i32({-1, -2, -3, -4});
  o.mask_fn = [](const Var& dots, const Tensor& qi, const Tensor& kvi) {
    return ea::mask_self_attention(dots, qi, kvi, false, false, true);
  };
  const Vec vv = vals(v);
  const Vec sum = {vv[0] + vv[2] + vv[4] + vv[6], vv[1] + vv[3] + vv[5] + vv[7]};
  const Vec out64 = vals(ea::attend(q, k, v, o).out);
  const Vec unmasked64 = vals(ea::attend(q, k, v, {}).out);
  const Vec out32 =
      vals(ea::attend(q.astype(DType::f32), k.astype(DType::f32), v.astype(DType::f32), o).out);
  for (std::size_t i = 0; i < 2; ++i) {
    for (std::size_t f = 0; f < 2; ++f) {
      CHECK(std::abs(out64[i * 2 + f] - unmasked64[i * 2 + f]) < 1e-6);
      CHECK(std::abs(out32[i * 2 + f] - sum[f]) < 1e-5);
    }
  }
}

TEST_CASE("attend: errors name the problem") {
  const Tensor q = randn({10, 3}, 1), v = randn({10, 2}, 2);
  ea::AttendOptions o;
  o.q_chunk_len = 4;
  try {
    (void)ea::attend(q, Var(), v, o);
    FAIL("no error");
  } catch (const ValueError& e) {
    CHECK(std::string(e.what()).find("pad it to 12") != std::string::npos);
  }
  ea::AttendOptions o2;
  o2.n_chunks_before = 1;
  CHECK_THROWS_AS(ea::attend(q, Var(), v, o2), ValueError);
  ea::AttendOptions o3;
  o3.q_chunk_len = 5;
  o3.kv_chunk_len = 2;
  CHECK_THROWS_AS(ea::attend(q, Var(), v, o3), ValueError);
  CHECK_THROWS_AS(ea::attend(q, q, v, o3), ValueError);  // 2 and 5 chunks
  ea::AttendOptions o4;
  o4.dropout = 1.0;
  CHECK_THROWS_AS(ea::attend(q, Var(), v, o4), ValueError);
  ea::AttendOptions o5;
  o5.q_info = Tensor::arange(9);
  CHECK_THROWS_AS(ea::attend(q, Var(), v, o5), ShapeError);
  CHECK_THROWS_AS(ea::attend(q, Var(), randn({9, 2}, 3), {}), ShapeError);
}

// ==== apply_broadcasted_dropout ================================================================

TEST_CASE("apply_broadcasted_dropout: one [d] keep mask, scaled by 1/keep_prob") {
  const Tensor x = randn({4, 6}, 8);
  CHECK(core::equal(ea::apply_broadcasted_dropout(x, 0.0, key_from_seed(1)).value(), x));
  const Key rng = key_from_seed(9);
  const Tensor got = ea::apply_broadcasted_dropout(x, 0.4, rng).value();
  const Vec keep = vals(core::bernoulli(rng, 0.6, {6}));
  const Vec xv = vals(x), g = vals(got);
  int dropped = 0;
  for (std::size_t r = 0; r < 4; ++r) {
    for (std::size_t c = 0; c < 6; ++c) {
      CHECK(g[r * 6 + c] == doctest::Approx(xv[r * 6 + c] * keep[c] / 0.6).epsilon(1e-14));
    }
  }
  for (double k : keep) dropped += k == 0.0;
  CHECK(dropped > 0);
  CHECK(dropped < 6);
  CHECK(gradcheck(
            [rng](const VarList& v) {
              return VarList{ea::apply_broadcasted_dropout(v[0], 0.4, rng)};
            },
            {x})
            .ok);
  CHECK_THROWS_AS(ea::apply_broadcasted_dropout(x, -0.1, rng), ValueError);
}

// ==== permutations ===========================================================================

TEST_CASE("permute_via_gather: take by the permutation; VJP = gather by the inverse") {
  const IVec perm = {2, 0, 3, 1, 4};
  IVec inv(5);
  for (std::size_t i = 0; i < 5; ++i) inv[static_cast<std::size_t>(perm[i])] = static_cast<long>(i);
  const Tensor x = randn({3, 5}, 10);
  const Vec xv = vals(x);
  // axis 1
  const Var y = ea::permute_via_gather(x, i32(perm), i32(inv), 1);
  const Vec yv = vals(y);
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t c = 0; c < 5; ++c) CHECK(yv[r * 5 + c] == xv[r * 5 + perm[c]]);
  }
  // The VJP of a seed g is g gathered by the inverse permutation.
  Tape tape;
  Var xw = tape.watch(x);
  Var yw = ea::permute_via_gather(xw, i32(perm), i32(inv), -1);
  CHECK(tape.node(static_cast<std::size_t>(yw.node_id())).op == "permute_via_gather");
  const Tensor seed = randn({3, 5}, 11);
  const Vec gx = vals(tape.gradient(yw, xw, seed)), sv = vals(seed);
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t c = 0; c < 5; ++c) CHECK(gx[r * 5 + c] == sv[r * 5 + inv[c]]);
  }
  // gradcheck along axis 0 too
  const Tensor x0 = randn({5, 2}, 12);
  CHECK(gradcheck(
            [&](const VarList& v) {
              return VarList{ea::permute_via_gather(v[0], i32(perm), i32(inv), 0)};
            },
            {x0})
            .ok);
  CHECK_THROWS_AS(ea::permute_via_gather(x, i32(perm), i32(perm), 1), ValueError);
  CHECK_THROWS_AS(ea::permute_via_gather(x, i32({0, 1}), i32({0, 1}), 1), ShapeError);
}

TEST_CASE("permute_via_sort: the lab's unsort of logits; VJP = the inverse permutation") {
  // LSH's use: logits = permute_via_sort(slogits, sticker, buckets_and_t), i.e. slogits[undo_sort]
  const Tensor buckets = i32({0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7});
  const ea::SortedBuckets s = ea::sort_buckets(buckets, 8, 2);
  const Tensor slogits = randn({16}, 13);
  const Var logits = ea::permute_via_sort(slogits, s.sticker, s.buckets_and_t);
  CHECK(core::equal(logits.value(), core::take(slogits, s.undo_sort)));
  // VJP: the gradient sorted by buckets_and_t = gathered by sticker (the inverse of undo_sort)
  Tape tape;
  Var x = tape.watch(slogits);
  Var y = ea::permute_via_sort(x, s.sticker, s.buckets_and_t);
  const Tensor seed = randn({16}, 14);
  CHECK(core::equal(tape.gradient(y, x, seed), core::take(seed, s.sticker)));
  CHECK(gradcheck(
            [&](const VarList& v) {
              return VarList{ea::permute_via_sort(v[0], s.sticker, s.buckets_and_t)};
            },
            {slogits})
            .ok);
  // Rows of a matrix sorted by 1-D keys along axis 0, and keys of val's own shape.
  const Tensor m = randn({16, 3}, 15);
  const Var pm = ea::permute_via_sort(m, s.sticker, s.buckets_and_t, 0);
  CHECK(core::equal(pm.value(), core::take(m, s.undo_sort, 0)));
  CHECK(gradcheck(
            [&](const VarList& v) {
              return VarList{ea::permute_via_sort(v[0], s.sticker, s.buckets_and_t, 0)};
            },
            {m})
            .ok);
  const Tensor keys2 = Tensor::from<std::int32_t>({2, 3}, {2, 0, 1, 0, 2, 1});
  const Tensor ikeys2 = Tensor::from<std::int32_t>({2, 3}, {1, 2, 0, 0, 2, 1});
  const Tensor v2 = Tensor::from<double>({2, 3}, {10, 11, 12, 20, 21, 22});
  CHECK(vals(ea::permute_via_sort(v2, keys2, ikeys2, 1)) == Vec{11, 12, 10, 20, 22, 21});
  CHECK(gradcheck(
            [&](const VarList& v) { return VarList{ea::permute_via_sort(v[0], keys2, ikeys2, 1)}; },
            {v2})
            .ok);
  CHECK_THROWS_AS(ea::permute_via_sort(m, s.sticker, Tensor::arange(3), 0), ShapeError);
}

// ==== hashing =============================================================================

TEST_CASE("hash_vectors: the lab's check (ones(8,5), 4 buckets, 3 hashes, get_prng(1))") {
  const Tensor vecs = Tensor::ones({8, 5}, DType::f32);
  const Tensor buckets = ea::hash_vectors(vecs, key_from_seed(1), {4}, 3);
  REQUIRE(buckets.shape() == Shape{24});
  CHECK(buckets.dtype() == DType::i32);
  const IVec b = ivals(buckets);
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t t = 0; t < 8; ++t) {
      CHECK(b[r * 8 + t] == b[r * 8]);  // identical vectors share a bucket in every round
      CHECK(b[r * 8 + t] >= static_cast<long>(4 * r));
      CHECK(b[r * 8 + t] <= static_cast<long>(4 * r + 3));
    }
  }
  // With JAX's normal draws (ours match them to a few ulp) the lab printed, on the
  // JAX backend, [3 x8, 5 x8, 11 x8].
  CHECK(b[0] == 3);
  CHECK(b[8] == 5);
  CHECK(b[16] == 11);
  // The rotations are [d, n_hashes, rot_size/2], float32, and hash_vectors uses them.
  const Tensor rot = ea::hash_rotations(key_from_seed(1), 5, {4}, 3);
  CHECK(rot.shape() == Shape{5, 3, 2});
  CHECK(rot.dtype() == DType::f32);
  CHECK(core::equal(ea::hash_vectors_with(vecs, rot, {4}, 3), buckets));
  CHECK_THROWS_AS(ea::hash_vectors(vecs, key_from_seed(1), {5}, 3), ValueError);
  CHECK_THROWS_AS(ea::hash_vectors(vecs, key_from_seed(1), {4, 3}, 3), ValueError);
  CHECK_THROWS_AS(ea::hash_vectors_with(vecs, rot, {4}, 2), ShapeError);
}

namespace {
// Naive angular LSH with given rotations: per round and factor, argmax over
// [xR, -xR] of that factor's columns (first maximum), combined as mixed radix.
IVec naive_hash(const Vec& x, std::size_t L, std::size_t d, const Vec& R, std::size_t n_hashes,
                const std::vector<long>& factors, const IVec* mask) {
  std::size_t half = 0;
  long total = 1;
  for (long f : factors) {
    half += static_cast<std::size_t>(f / 2);
    total *= f;
  }
  const long per_round = mask ? total + 1 : total;
  IVec out(n_hashes * L);
  for (std::size_t h = 0; h < n_hashes; ++h) {
    for (std::size_t t = 0; t < L; ++t) {
      long bucket = 0, radix = 1;
      std::size_t col = 0;
      for (long f : factors) {
        const std::size_t nf = static_cast<std::size_t>(f / 2);
        double best = -1e300;
        long best_i = 0;
        for (std::size_t s = 0; s < 2; ++s) {
          for (std::size_t b = 0; b < nf; ++b) {
            double r = 0;
            for (std::size_t k = 0; k < d; ++k)
              r += x[t * d + k] * R[(k * n_hashes + h) * half + col + b];
            if (s == 1) r = -r;
            if (r > best) {
              best = r;
              best_i = static_cast<long>(s * nf + b);
            }
          }
        }
        bucket += radix * best_i;
        radix *= f;
        col += nf;
      }
      if (mask && (*mask)[t] == 0) bucket = total;
      out[h * L + t] = bucket + static_cast<long>(h) * per_round;
    }
  }
  return out;
}
}  // namespace

TEST_CASE("hash_vectors_with: factorised buckets combine as mixed radix, padding bucket") {
  const std::size_t L = 12, d = 3, n_hashes = 2;
  const Tensor x = randn({L, d}, 20);
  for (const std::vector<long>& factors :
       {std::vector<long>{8}, std::vector<long>{2, 4}, std::vector<long>{4, 2, 6}}) {
    long rot = 0;
    for (long f : factors) rot += f;
    const Tensor R = randn({d, n_hashes, static_cast<std::size_t>(rot / 2)}, 21, DType::f32);
    const Tensor got = ea::hash_vectors_with(x, R, factors, static_cast<long>(n_hashes));
    CHECK(ivals(got) == naive_hash(vals(x), L, d, vals(R), n_hashes, factors, nullptr));
    // padding: mask 0 -> the extra bucket n_buckets; n_buckets + 1 ids per round
    const IVec mask = {1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0};
    const Tensor m = i32(mask);
    const Tensor gm = ea::hash_vectors_with(x, R, factors, static_cast<long>(n_hashes), &m);
    CHECK(ivals(gm) == naive_hash(vals(x), L, d, vals(R), n_hashes, factors, &mask));
  }
  // An explicit case: factors {2, 4}; factor 0 uses column 0, factor 1 columns 1-2.
  // x = [1, 0]: column values (r0, r1, r2) = R's first row per round.
  const Tensor one = Tensor::from<double>({1, 2}, {1, 0});
  const Tensor R =
      Tensor::from<float>({2, 2, 3}, {-1, 0.5f, -2,  // round 0: b0 = 1 (-r0), b1 = 3 (-r2)
                                      2, 1, 3,       // round 1: b0 = 0, b1 = 1 (r2)
                                      0, 0, 0, 0, 0, 0});
  // round 0: 1 + 2 * 3 = 7; round 1: 0 + 2 * 1 + 8 = 10
  CHECK(ivals(ea::hash_vectors_with(one, R, {2, 4}, 2)) == IVec{7, 10});
}

TEST_CASE("hash_vectors: argmax ties pick the first index") {
  // A zero vector ties everywhere: bucket 0 in every round (plus the offsets).
  const Tensor zeros = Tensor::zeros({2, 4}, DType::f32);
  CHECK(ivals(ea::hash_vectors(zeros, key_from_seed(3), {6}, 3)) == IVec{0, 0, 6, 6, 12, 12});
  // Two equal rotation columns: r0 == r1 > 0 picks 0; both < 0 picks 2 (-r0 before -r1).
  const Tensor R = Tensor::from<float>({1, 1, 2}, {1, 1});
  const Tensor x = Tensor::from<float>({2, 1}, {2, -3});
  CHECK(ivals(ea::hash_vectors_with(x, R, {4}, 1)) == IVec{0, 2});
}

// ==== the sort step: the lab's golden values ==================================================

TEST_CASE("sort_buckets: the lab's deterministic values (L 8, 2 hashes, 4 buckets)") {
  const Tensor buckets = i32({0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7});
  const ea::SortedBuckets s = ea::sort_buckets(buckets, 8, 2);
  CHECK(ivals(s.ticker) == IVec{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  CHECK(ivals(s.buckets_and_t) ==
        IVec{0, 9, 18, 27, 4, 13, 22, 31, 32, 41, 50, 59, 36, 45, 54, 63});
  CHECK(ivals(s.sbuckets_and_t) ==
        IVec{0, 4, 9, 13, 18, 22, 27, 31, 32, 36, 41, 45, 50, 54, 59, 63});
  CHECK(ivals(s.sticker) == IVec{0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15});
  CHECK(ivals(s.undo_sort) == IVec{0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15});
  for (const Tensor* t : {&s.ticker, &s.buckets_and_t, &s.sbuckets_and_t, &s.sticker, &s.undo_sort})
    CHECK(t->dtype() == DType::i32);
  // undo_sort inverts sticker
  CHECK(core::equal(core::take(s.sticker, s.undo_sort), s.ticker));
  CHECK_THROWS_AS(ea::sort_buckets(buckets, 8, 3), ShapeError);
  CHECK_THROWS_AS(ea::sort_buckets(i32({0, -1}), 2, 1), ValueError);
}

namespace {
// The lab's dotandv step, written with our helpers: chunked dots of the sorted
// queries with themselves (no scaling, no normalisation, no adjacent chunks),
// softmax with its logsumexp, unsort with permute_via_gather / permute_via_sort,
// then the rounds combined with weights from their logsumexps.
struct DotAndV {
  Var out, logits;
};
DotAndV dotandv(const Var& sq, const Var& sv, const ea::SortedBuckets& s, long kv_chunk_len,
                long n_hashes, long seqlen) {
  const long d = static_cast<long>(sq.dim(-1)), dv = static_cast<long>(sv.dim(-1));
  Var rsq = fm::reshape(sq, {-1, kv_chunk_len, d});
  Var rsv = fm::reshape(sv, {-1, kv_chunk_len, dv});
  Var dotlike = fm::matmul(rsq, rsq, core::Trans::N, core::Trans::T);
  Var dots_logsumexp = fm::logsumexp(dotlike, {-1}, true);
  dotlike = fm::exp(dotlike - dots_logsumexp);
  Var so = fm::reshape(fm::matmul(dotlike, rsv), {-1, dv});
  Var slogits = fm::reshape(dots_logsumexp, {-1});
  Var o = ea::permute_via_gather(so, s.undo_sort, s.sticker, 0);
  Var logits = ea::permute_via_sort(slogits, s.sticker, s.buckets_and_t, -1);
  DotAndV r{o, logits};
  if (n_hashes > 1) {
    o = fm::reshape(o, {n_hashes, seqlen, dv});
    Var lg = fm::reshape(logits, {n_hashes, seqlen, 1});
    Var probs = fm::exp(lg - fm::logsumexp(lg, {0}, true));
    r.out = fm::sum(o * probs, {0});
  }
  return r;
}
}  // namespace

TEST_CASE("the lab's dotandv step: logits = dot + ln 2, outputs 1") {
  // q row j = (j % 4) [1, 1, 1]; v = ones(8, 5); buckets from the sort test.
  std::vector<float> qv;
  for (int j = 0; j < 8; ++j)
    for (int f = 0; f < 3; ++f) qv.push_back(static_cast<float>(j % 4));
  const Tensor q = Tensor::from<float>({8, 3}, qv);
  const Tensor v = Tensor::ones({8, 5}, DType::f32);
  const ea::SortedBuckets s =
      ea::sort_buckets(i32({0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7}), 8, 2);
  // st = sticker % L; sq = take(q, st), sv = take(v, st)
  IVec st = ivals(s.sticker);
  for (auto& t : st) t %= 8;
  const Var sq = fm::take(q, i32(st), 0), sv = fm::take(v, i32(st), 0);
  const Vec sqv = vals(sq);
  const Vec rows = {0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3};
  for (std::size_t i = 0; i < 16; ++i) CHECK(sqv[i * 3] == rows[i]);
  const DotAndV r = dotandv(sq, sv, s, 2, 2, 8);
  const Vec logits = vals(r.logits);
  const Vec want = {0.6931472, 3.6931472, 12.693148, 27.693148};
  for (std::size_t i = 0; i < 16; ++i) CHECK(std::abs(logits[i] - want[i % 4]) < 1e-5);
  for (std::size_t i = 0; i < 16; ++i)
    CHECK(std::abs(logits[i] - want[i % 4]) <= 1e-6 * std::max(1.0, want[i % 4]));
  REQUIRE(r.out.shape() == Shape{8, 5});
  for (double x : vals(r.out)) CHECK(std::abs(x - 1.0) < 1e-6);
}

// ==== the lab's softmax and simple attention ================================================

TEST_CASE("the lab's our_softmax on [1, 2, 3, 4]") {
  const Tensor a = Tensor::from<float>({4}, {1, 2, 3, 4});
  const Var lse = fm::logsumexp(a, {-1}, true);
  const Var o = fm::exp(Var(a) - lse);
  const Vec want = {0.0320586, 0.0871443, 0.2368828, 0.6439143};
  for (std::size_t i = 0; i < 4; ++i)
    CHECK(std::abs(vals(o)[i] - want[i]) < 2e-7);  // 7 printed digits
  CHECK(std::abs(vals(lse)[0] - 4.4401897) < 1e-6);
}

TEST_CASE("the lab's our_simple_attend: q = k = uniform(get_prng(1), (8,3)), v from the same key") {
  const Tensor q = core::uniform(key_from_seed(1), {8, 3});
  const Tensor v = core::uniform(key_from_seed(1), {8, 4});
  const auto r = ea::attend(q, q, v, {});  // k passed explicitly: no normalisation, k / sqrt(3)
  const Vec o = vals(r.out), logits = vals(r.logsumexp);
  const Vec row0 = {0.5606324, 0.7290605, 0.5251243, 0.47101074};
  const Vec row7 = {0.57100445, 0.70785505, 0.5325362, 0.4590797};
  const Vec want_logits = {2.6512175, 2.1914332, 2.6630518, 2.7792363,
                           2.4583826, 2.5421977, 2.4145055, 2.5111294};
  for (std::size_t f = 0; f < 4; ++f) {
    CHECK(std::abs(o[f] - row0[f]) < 1e-6);
    CHECK(std::abs(o[28 + f] - row7[f]) < 1e-6);
  }
  for (std::size_t i = 0; i < 8; ++i) CHECK(std::abs(logits[i] - want_logits[i]) < 1e-6);
}
