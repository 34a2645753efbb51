// Tests of efficient attention (layers/research/efficient_attention.hpp):
// SelfAttention and LSHSelfAttention, reference loop and memory-lean path.
//
//   * Trax 1.3.4's tests (efficient_attention_test.py): shapes, the batching tests
//     (reference == memory-lean for n_parallel_heads 1, 3, 6, 12: outputs, state, input
//     and weight gradients, with attention and output dropout), LSH determinism, masked
//     non-causal LSH;
//   * values against an independent naive loop (full and chunked attention, causal,
//     padding, shared-QK with the self mask), the course lab's invariant (LSH with one
//     chunk per round = full shared-QK attention) and its numbers;
//   * float64 gradchecks through both layers and both paths; the tape kept by the
//     memory-lean path; causality; errors that say the fix.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "efficient_attention_test_util.hpp"
#include "layers/layer_gradcheck.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using base::Mode;
using base::Signature;
using base::Stack;
using core::key_from_seed;
using namespace minitrax::eatest;

namespace {

double max_abs(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  return core::max_abs_diff(a.astype(DType::f64), b.astype(DType::f64));
}

// ---- an independent naive multi-head self-attention --------------------------------------
//
// For each example and head, in double with explicit loops:
//   q = x w_q, k = x w_k (shared: k = q / rms(q)), v = x w_v
//   logit(i, j) = q_i . k_j / sqrt(d_qk) for every key slot j of query i's window,
//   minus 1e9 if causal and j > i, minus 1e5 if shared and j == i, minus 1e9 if key j is
//   padding and j > 0 (Trax's kv_info = -j), softmax, o = sum_j p_j v_j, out += o w_o.
// Windows: unchunked, all positions; chunked, the chunks c - before .. c + after
// (mod n_chunks, repeated if the window wraps onto itself), as look_adjacent.
struct NaiveSpec {
  bool share_qk = false, causal = false;
  long chunk_len = 0, before = 0, after = 0;
  const std::vector<std::int32_t>* mask = nullptr;  // [B * L] or null
};

Vec naive_self_attention(const Tensor& x_t, const std::vector<Tensor>& w, long n_heads,
                         const NaiveSpec& sp) {
  const Vec x = vals(x_t);
  const std::size_t B = x_t.dim(0), L = x_t.dim(1), D = x_t.dim(2);
  const std::size_t shared = sp.share_qk ? 1 : 0;
  const Tensor& wq_t = w[0];
  const Vec wq = vals(w[0]);
  const Vec wk = sp.share_qk ? Vec() : vals(w[1]);
  const Vec wv = vals(w[2 - shared]);
  const Vec wo = vals(w[3 - shared]);
  const std::size_t dqk = wq_t.dim(2), dv = w[2 - shared].dim(2);
  Vec out(B * L * D, 0.0);
  for (std::size_t b = 0; b < B; ++b) {
    for (long h = 0; h < n_heads; ++h) {
      auto proj = [&](const Vec& W, std::size_t dout) {
        Vec r(L * dout, 0.0);
        for (std::size_t t = 0; t < L; ++t)
          for (std::size_t o = 0; o < dout; ++o) {
            double s = 0;
            for (std::size_t i = 0; i < D; ++i)
              s += x[(b * L + t) * D + i] * W[(static_cast<std::size_t>(h) * D + i) * dout + o];
            r[t * dout + o] = s;
          }
        return r;
      };
      const Vec q = proj(wq, dqk);
      Vec k = sp.share_qk ? q : proj(wk, dqk);
      const Vec v = proj(wv, dv);
      if (sp.share_qk) {
        for (std::size_t t = 0; t < L; ++t) {
          double ms = 0;
          for (std::size_t o = 0; o < dqk; ++o) ms += k[t * dqk + o] * k[t * dqk + o];
          const double n = std::sqrt(ms / static_cast<double>(dqk) + 1e-6);
          for (std::size_t o = 0; o < dqk; ++o) k[t * dqk + o] /= n;
        }
      }
      for (std::size_t i = 0; i < L; ++i) {
        std::vector<std::size_t> keys;
        if (sp.chunk_len == 0) {
          for (std::size_t j = 0; j < L; ++j) keys.push_back(j);
        } else {
          const long n_chunks = static_cast<long>(L) / sp.chunk_len;
          const long c = static_cast<long>(i) / sp.chunk_len;
          for (long a = -sp.before; a <= sp.after; ++a) {
            // look_adjacent: a shift of at least n_chunks leaves the chunk as it is
            const long cc =
                std::abs(a) >= n_chunks ? c : ((c + a) % n_chunks + n_chunks) % n_chunks;
            for (long t = 0; t < sp.chunk_len; ++t)
              keys.push_back(static_cast<std::size_t>(cc * sp.chunk_len + t));
          }
        }
        Vec logit;
        double mx = -1e300;
        for (std::size_t j : keys) {
          double s = 0;
          for (std::size_t o = 0; o < dqk; ++o) s += q[i * dqk + o] * k[j * dqk + o];
          s /= std::sqrt(static_cast<double>(dqk));
          if (sp.causal && j > i) s -= 1e9;
          if (sp.share_qk && j == i) s -= 1e5;
          if (sp.mask && (*sp.mask)[b * L + j] == 0 && j > 0) s -= 1e9;
          logit.push_back(s);
          mx = std::max(mx, s);
        }
        double z = 0;
        for (double& l : logit) z += (l = std::exp(l - mx));
        Vec o(dv, 0.0);
        for (std::size_t n = 0; n < keys.size(); ++n)
          for (std::size_t e = 0; e < dv; ++e) o[e] += logit[n] / z * v[keys[n] * dv + e];
        for (std::size_t e = 0; e < D; ++e) {
          double s = 0;
          for (std::size_t f = 0; f < dv; ++f)
            s += o[f] * wo[(static_cast<std::size_t>(h) * dv + f) * D + e];
          out[(b * L + i) * D + e] += s;
        }
      }
    }
  }
  return out;
}

Tensor uniform(std::int64_t seed, const Shape& shape, DType dtype = DType::f32) {
  return core::uniform(key_from_seed(seed), shape, dtype);
}

}  // namespace

// =============================================================================================
// Trax 1.3.4's tests
// =============================================================================================

TEST_CASE("efficient attention: Trax shapes (SelfAttention and LSHSelfAttention, both paths)") {
  const Tensor x = Tensor::ones({3, 32, 8});
  for (bool reference : {true, false}) {
    CAPTURE(reference);
    auto sa = ea::SelfAttention({.n_heads = 5,
                                 .d_qk = 7,
                                 .d_v = 17,
                                 .share_qk = false,
                                 .causal = true,
                                 .chunk_len = 8,
                                 .n_chunks_before = 1,
                                 .n_chunks_after = 0,
                                 .mode = Mode::train,
                                 .attention_dropout = 0.0,
                                 .use_reference_code = reference});
    sa->init(sig_of({x}));
    CHECK(flat_values(*sa)[0].shape() == Shape{5, 8, 7});   // w_q [n_heads, d_model, d_qk]
    CHECK(flat_values(*sa)[3].shape() == Shape{5, 17, 8});  // w_o [n_heads, d_v, d_model]
    CHECK((*sa)(Var(x)).shape() == x.shape());
    CHECK(sa->output_signature(sig_of({x}))[0].shape == x.shape());

    auto lsh = ea::LSHSelfAttention({.n_heads = 5,
                                     .d_qk = 7,
                                     .d_v = 17,
                                     .causal = true,
                                     .chunk_len = 8,
                                     .n_chunks_before = 1,
                                     .n_chunks_after = 0,
                                     .n_hashes = 2,
                                     .n_buckets = {4},
                                     .mode = Mode::train,
                                     .attention_dropout = 0.0,
                                     .use_reference_code = reference});
    lsh->init(sig_of({x}));
    CHECK((*lsh)(Var(x)).shape() == x.shape());
    const auto st = lsh->flat_state();
    REQUIRE(st.size() == 2);
    CHECK(st[0].value.shape() == Shape{15, 64});  // buckets [B*H, n_hashes * L]
    CHECK(st[0].value.dtype() == DType::i32);
    CHECK(st[1].value.shape() == Shape{15, 2});  // hash keys
    CHECK(lsh->repr() == "LSHSelfAttention");
  }
}

namespace {

// Trax's _test_equivalence_to_reference_code: one reference model, then the memory-lean
// model for each n_parallel_heads, with the same weights, state and call rng.
template <class MakeLayer>
void check_equivalence_to_reference(const MakeLayer& make, const std::vector<Tensor>& inputs,
                                    double rtol, double atol, const std::string& what) {
  auto ref = make(true, std::optional<long>());
  const Key init_rng = key_from_seed(123);
  ref->init(sig_of(inputs), init_rng);
  const std::vector<Tensor> weights = flat_values(*ref);
  const RunResult r = run_forward_backward(*ref, inputs, weights, ref->state(), key_from_seed(0));
  for (long p : {1L, 3L, 6L, 12L}) {
    auto test = make(false, std::optional<long>(p));
    test->init(sig_of(inputs), init_rng);
    const RunResult t =
        run_forward_backward(*test, inputs, weights, test->state(), key_from_seed(0));
    check_same_run(r, t, rtol, atol, what + " n_parallel_heads " + std::to_string(p));
  }
}

}  // namespace

TEST_CASE("efficient attention: batching SelfAttention (reference == memory-lean, Trax test)") {
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor x = uniform(0, {2, 10, 13}, dtype);
    for (bool causal : {true, false}) {
      for (bool masked : {false, true}) {
        std::vector<Tensor> inputs{x};
        if (masked) inputs.push_back(suffix_mask({7, 10}, 10));
        auto make = [&](bool reference, std::optional<long> p) {
          return ea::SelfAttention({.n_heads = 6,
                                    .d_qk = 7,
                                    .d_v = 17,
                                    .share_qk = false,
                                    .causal = causal,
                                    .masked = masked,
                                    .chunk_len = 5,
                                    .n_chunks_before = 1,
                                    .n_chunks_after = 0,
                                    .mode = Mode::train,
                                    .attention_dropout = 0.2,
                                    .output_dropout = 0.1,
                                    .n_parallel_heads = p,
                                    .use_reference_code = reference});
        };
        const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
        check_equivalence_to_reference(make, inputs, tol, tol,
                                       std::string("SelfAttention ") +
                                           std::string(core::dtype_name(dtype)) +
                                           (causal ? " causal" : "") + (masked ? " masked" : ""));
      }
    }
  }
}

TEST_CASE("efficient attention: batching LSHSelfAttention (reference == memory-lean, Trax test)") {
  const Tensor x = uniform(0, {2, 10, 13});
  for (long n_hashes : {1L, 2L, 4L}) {
    for (bool causal : {true, false}) {
      for (bool masked : {false, true}) {
        std::vector<Tensor> inputs{x};
        if (masked) inputs.push_back(suffix_mask({6, 10}, 10));
        auto make = [&](bool reference, std::optional<long> p) {
          return ea::LSHSelfAttention({.n_heads = 6,
                                       .d_qk = 7,
                                       .d_v = 17,
                                       .causal = causal,
                                       .masked = masked,
                                       .chunk_len = 5,
                                       .n_chunks_before = 1,
                                       .n_chunks_after = 0,
                                       .n_hashes = n_hashes,
                                       .n_buckets = {4},
                                       .mode = Mode::train,
                                       .attention_dropout = 0.2,
                                       .output_dropout = 0.1,
                                       .n_parallel_heads = p,
                                       .use_reference_code = reference});
        };
        check_equivalence_to_reference(make, inputs, 1e-5, 1e-5,
                                       "LSHSelfAttention n_hashes " + std::to_string(n_hashes) +
                                           (causal ? " causal" : "") + (masked ? " masked" : ""));
      }
    }
  }
}

TEST_CASE("efficient attention: the batched fast path equals the reference for every option") {
  // The options the Trax batching tests leave out: shared QK, biases, no chunking, chunks
  // after, a length other than the init one; LSH with a factorised n_buckets, chunks after,
  // max_length_for_buckets. float32 and float64.
  for (DType dtype : {DType::f32, DType::f64}) {
    const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
    const Tensor x = uniform(3, {2, 12, 13}, dtype);
    for (int variant = 0; variant < 4; ++variant) {
      for (bool masked : {false, true}) {
        std::vector<Tensor> inputs{x};
        if (masked) inputs.push_back(suffix_mask({9, 12}, 12));
        auto make = [&](bool reference, std::optional<long> p) {
          ea::SelfAttentionOptions o{.n_heads = 6,
                                     .d_qk = 7,
                                     .d_v = 5,
                                     .share_qk = variant % 2 == 1,
                                     .causal = variant >= 2,
                                     .masked = masked,
                                     .bias = true,
                                     .attention_dropout = 0.2,
                                     .output_dropout = 0.1,
                                     .n_parallel_heads = p,
                                     .use_reference_code = reference};
          if (variant == 2 || variant == 3) {
            o.chunk_len = 4;
            o.n_chunks_before = 1;
            o.n_chunks_after = 1;
          }
          return ea::SelfAttention(o);
        };
        check_equivalence_to_reference(make, inputs, tol, tol,
                                       "SelfAttention variant " + std::to_string(variant) +
                                           (masked ? " masked " : " ") +
                                           std::string(core::dtype_name(dtype)));
      }
    }
    for (bool causal : {false, true}) {
      for (bool masked : {false, true}) {
        std::vector<Tensor> inputs{x};
        if (masked) inputs.push_back(suffix_mask({8, 12}, 12));
        auto make = [&](bool reference, std::optional<long> p) {
          return ea::LSHSelfAttention({.n_heads = 6,
                                       .d_qk = 7,
                                       .d_v = 5,
                                       .causal = causal,
                                       .masked = masked,
                                       .chunk_len = 4,
                                       .n_chunks_before = 1,
                                       .n_chunks_after = 1,
                                       .n_hashes = 2,
                                       .n_buckets = {2, 4},
                                       .attention_dropout = 0.2,
                                       .output_dropout = 0.1,
                                       .n_parallel_heads = p,
                                       .use_reference_code = reference,
                                       .max_length_for_buckets = 16});
        };
        check_equivalence_to_reference(make, inputs, tol, tol,
                                       std::string("LSH factorised") + (causal ? " causal" : "") +
                                           (masked ? " masked " : " ") +
                                           std::string(core::dtype_name(dtype)));
      }
    }
  }
}

TEST_CASE("efficient attention: LSH determinism given the init and call keys (Trax test)") {
  const Tensor x = Tensor::ones({3, 32, 8});
  for (bool causal : {true, false}) {
    for (bool reference : {true, false}) {
      auto layer = ea::LSHSelfAttention({.n_heads = 5,
                                         .d_qk = 7,
                                         .d_v = 17,
                                         .causal = causal,
                                         .chunk_len = 8,
                                         .n_chunks_before = 1,
                                         .n_chunks_after = 0,
                                         .n_hashes = 2,
                                         .n_buckets = {4},
                                         .mode = Mode::train,
                                         .attention_dropout = 0.0,
                                         .use_reference_code = reference});
      auto get_output = [&] {
        layer->init(sig_of({x}), key_from_seed(0));
        return layer->apply({Var(x)}, key_from_seed(1)).at(0).value();
      };
      const Tensor y0 = get_output();
      CHECK(y0.shape() == x.shape());
      for (int i = 1; i < 10; ++i) CHECK(core::equal(get_output(), y0));
    }
  }
}

TEST_CASE("efficient attention: LSH rehashes on every state-updating call, not on the call rng") {
  const Tensor x = uniform(3, {1, 32, 8});
  auto layer = ea::LSHSelfAttention(
      {.n_heads = 2, .d_qk = 4, .d_v = 4, .chunk_len = 8, .n_hashes = 2, .n_buckets = {8}});
  layer->init(sig_of({x}), key_from_seed(0));
  layer->apply({Var(x)}, key_from_seed(1));
  const Tensor buckets1 = layer->flat_state()[0].value;
  const Tensor key1 = layer->flat_state()[1].value;
  layer->apply({Var(x)}, key_from_seed(1));
  const Tensor buckets2 = layer->flat_state()[0].value;
  CHECK_FALSE(core::equal(buckets1, buckets2));  // a fresh hash key, new rotations
  CHECK_FALSE(core::equal(key1, layer->flat_state()[1].value));
  // Buckets of round r lie in [r * n_buckets, (r + 1) * n_buckets).
  const Vec b = vals(buckets2);
  for (std::size_t row = 0; row < 2; ++row)
    for (std::size_t i = 0; i < 64; ++i) {
      const double r = static_cast<double>(i / 32);
      CHECK(b[row * 64 + i] >= 8 * r);
      CHECK(b[row * 64 + i] < 8 * (r + 1));
    }
  // With update_state off, the stored buckets are reused and the state is unchanged.
  layer->set_update_state(false);
  const Tensor y_a = layer->apply({Var(x)}, key_from_seed(1)).at(0).value();
  const Tensor y_b = layer->apply({Var(x)}, key_from_seed(1)).at(0).value();
  CHECK(core::equal(y_a, y_b));
  CHECK(core::equal(layer->flat_state()[0].value, buckets2));
}

TEST_CASE("efficient attention: masked non-causal LSH ignores the padded inputs (Trax test)") {
  const long batch = 5, max_len = 32, hidden = 8;
  const Tensor lengths_t = core::randint(key_from_seed(0), {5}, 1, max_len - 1);
  std::vector<long> lengths;
  for (double v : vals(lengths_t)) lengths.push_back(static_cast<long>(v));
  const Tensor mask = suffix_mask(lengths, max_len);
  for (bool reference : {true, false}) {
    auto layer = ea::LSHSelfAttention({.n_heads = 5,
                                       .d_qk = 7,
                                       .d_v = 17,
                                       .causal = false,
                                       .masked = true,
                                       .chunk_len = 8,
                                       .n_chunks_before = 1,
                                       .n_chunks_after = 0,
                                       .n_hashes = 2,
                                       .n_buckets = {4},
                                       .mode = Mode::train,
                                       .attention_dropout = 0.0,
                                       .use_reference_code = reference});
    Tensor x = uniform(1, {5, 32, 8});
    auto get_output = [&](const Tensor& xv) {
      layer->init(sig_of({xv, mask}), key_from_seed(0));
      return layer->apply({Var(xv), Var(mask)}, key_from_seed(1)).at(0).value();
    };
    const Tensor y = get_output(x);
    // Change x only in the padded region.
    Tensor x2 = x.clone();
    const Tensor noise = uniform(2, {5, 32, 8});
    for (long b = 0; b < batch; ++b)
      for (long t = lengths[static_cast<std::size_t>(b)]; t < max_len; ++t)
        for (long d = 0; d < hidden; ++d) {
          const std::size_t i = static_cast<std::size_t>((b * max_len + t) * hidden + d);
          x2.data<float>()[i] = noise.data<float>()[i];
        }
    const Tensor y2 = get_output(x2);
    for (long b = 0; b < batch; ++b) {
      const long len = lengths[static_cast<std::size_t>(b)];
      const Tensor yb = core::slice(core::slice(y, 0, b, b + 1), 1, 0, len);
      const Tensor y2b = core::slice(core::slice(y2, 0, b, b + 1), 1, 0, len);
      CHECK(max_abs(yb, y2b) < 1e-6);
      const Tensor pb = core::slice(core::slice(y, 0, b, b + 1), 1, len, max_len);
      const Tensor p2b = core::slice(core::slice(y2, 0, b, b + 1), 1, len, max_len);
      const double mean_diff = core::mean(core::abs(core::sub(pb, p2b))).item<double>();
      CHECK(mean_diff > 1e-5);
    }
  }
}

// =============================================================================================
// values against independent computations
// =============================================================================================

TEST_CASE("efficient attention: SelfAttention equals a naive per-head loop") {
  struct Case {
    bool causal, masked;
    std::optional<long> chunk;
    long before, after;
  };
  const Case cases[] = {{false, false, {}, 0, 0}, {true, false, {}, 0, 0}, {true, false, 4, 1, 0},
                        {false, false, 4, 1, 1},  {false, true, {}, 0, 0}, {true, true, 4, 2, 0},
                        {false, false, 4, 3, 0}};
  const Tensor x = uniform(5, {2, 12, 6}, DType::f64);
  const Tensor mask = suffix_mask({9, 12}, 12);
  const std::vector<std::int32_t> mask_v = mask.to_vector<std::int32_t>();
  for (const Case& c : cases) {
    for (bool reference : {true, false}) {
      CAPTURE(c.causal);
      CAPTURE(c.masked);
      CAPTURE(c.chunk.value_or(0));
      CAPTURE(c.before);
      CAPTURE(reference);
      auto layer = ea::SelfAttention({.n_heads = 3,
                                      .d_qk = 4,
                                      .d_v = 5,
                                      .causal = c.causal,
                                      .masked = c.masked,
                                      .chunk_len = c.chunk,
                                      .n_chunks_before = c.before,
                                      .n_chunks_after = c.after,
                                      .use_reference_code = reference});
      std::vector<Tensor> inputs{x};
      if (c.masked) inputs.push_back(mask);
      layer->init(sig_of(inputs), key_from_seed(7));
      Stack xs;
      for (const Tensor& t : inputs) xs.emplace_back(t);
      const Tensor y = (*layer)(xs).at(0).value();
      NaiveSpec sp;
      sp.causal = c.causal;
      sp.chunk_len = c.chunk.value_or(0);
      sp.before = c.before;
      sp.after = c.after;
      sp.mask = c.masked ? &mask_v : nullptr;
      const Vec want = naive_self_attention(x, flat_values(*layer), 3, sp);
      check_close(y, Tensor::from<double>(y.shape(), want), 1e-9, 1e-9, "SelfAttention vs naive");
    }
  }
}

TEST_CASE(
    "efficient attention: LSH with one chunk per round equals full shared-QK attention "
    "(the lab's invariant)") {
  // chunk_len = L and no adjacent chunks: every round's chunk is the whole sequence, so
  // for ANY hashing the output is full shared-QK attention with the -1e5 self mask.
  const Tensor x = uniform(0, {2, 8, 5}, DType::f64);
  for (std::int64_t seed : {1, 2, 3}) {
    for (bool reference : {true, false}) {
      auto lsh = ea::LSHSelfAttention({.n_heads = 3,
                                       .d_qk = 3,
                                       .d_v = 4,
                                       .causal = false,
                                       .masked = false,
                                       .chunk_len = 8,
                                       .n_chunks_before = 0,
                                       .n_chunks_after = 0,
                                       .n_hashes = 5,
                                       .n_buckets = {4},
                                       .use_reference_code = reference});
      lsh->init(sig_of({x}), key_from_seed(seed));
      const Tensor y = lsh->apply({Var(x)}, key_from_seed(seed + 10)).at(0).value();
      NaiveSpec sp;
      sp.share_qk = true;
      const Vec want = naive_self_attention(x, flat_values(*lsh), 3, sp);
      check_close(y, Tensor::from<double>(y.shape(), want), 1e-9, 1e-9, "LSH vs full shared-QK");

      // And SelfAttention(share_qk) with the same weights computes the same.
      auto sa = ea::SelfAttention({.n_heads = 3, .d_qk = 3, .d_v = 4, .share_qk = true});
      sa->init(sig_of({x}), key_from_seed(seed));
      CHECK(max_abs(core::Tensor(flat_values(*sa)[0]), flat_values(*lsh)[0]) == 0.0);
      CHECK(max_abs((*sa)(Var(x)).value(), y) < 1e-12);
    }
  }
}

TEST_CASE("efficient attention: the course lab's numbers (Trax's init draws reproduced)") {
  // x = jax.random.uniform(PRNGKey(0), (1, 8, 5)); init with get_prng(1).
  const Tensor x = core::uniform(key_from_seed(0), {1, 8, 5}, DType::f32);
  // Item 3: OurSelfAttention(n_heads 3, d_qk 3, d_v 4, causal False), reference code.
  auto sa = ea::SelfAttention(
      {.n_heads = 3, .d_qk = 3, .d_v = 4, .causal = false, .use_reference_code = true});
  sa->init(sig_of({x}), key_from_seed(1));
  const Tensor y = (*sa)(Var(x)).value();
  const std::vector<float> want_sa{0.6704142f, -0.1043198f, -0.5338223f, 0.1927118f, -4.54e-05f};
  const Tensor row0 = core::slice(core::slice(y, 0, 0, 1), 1, 0, 1).reshape(Shape{5});
  MESSAGE("SelfAttention row 0: " << row0.str() << ", max deviation from the lab "
                                  << max_abs(row0, Tensor::from<float>({5}, want_sa)));
  check_close(row0, Tensor::from<float>({5}, want_sa), 0.0, 2e-6, "lab item 3 row 0");

  // Item 7: OurLSHSelfAttention (chunk_len 8, no adjacent chunks, n_hashes 5, n_buckets 4).
  for (bool reference : {true, false}) {
    auto lsh = ea::LSHSelfAttention({.n_heads = 3,
                                     .d_qk = 3,
                                     .d_v = 4,
                                     .causal = false,
                                     .masked = false,
                                     .chunk_len = 8,
                                     .n_chunks_before = 0,
                                     .n_chunks_after = 0,
                                     .n_hashes = 5,
                                     .n_buckets = {4},
                                     .use_reference_code = reference});
    lsh->init(sig_of({x}), key_from_seed(1));
    const Tensor z = (*lsh)(Var(x)).value();
    const Tensor z0 = core::slice(core::slice(z, 0, 0, 1), 1, 0, 1).reshape(Shape{5});
    const Tensor z7 = core::slice(core::slice(z, 0, 0, 1), 1, 7, 8).reshape(Shape{5});
    const Tensor want0 = Tensor::from<float>(
        {5}, {0.66842824f, -0.11364323f, -0.5443061f, 0.21126242f, -0.010988623f});
    const Tensor want7 = Tensor::from<float>(
        {5}, {0.72203505f, -0.1019966f, -0.55215168f, 0.17872262f, -0.022289157f});
    MESSAGE("LSHSelfAttention rows 0 and 7: " << z0.str() << " " << z7.str()
                                              << ", max deviation from the lab "
                                              << std::max(max_abs(z0, want0), max_abs(z7, want7)));
    check_close(z0, want0, 0.0, 2e-6, "lab item 7 row 0");
    check_close(z7, want7, 0.0, 2e-6, "lab item 7 row 7");
  }
}

TEST_CASE("efficient attention: causal layers do not look ahead") {
  const Tensor x = uniform(11, {1, 16, 6});
  Tensor x2 = x.clone();
  for (long d = 0; d < 6; ++d) x2.data<float>()[static_cast<std::size_t>(10 * 6 + d)] += 1.0f;
  std::vector<std::shared_ptr<ea::EfficientAttentionBase>> layers{
      ea::SelfAttention({.n_heads = 2,
                         .d_qk = 4,
                         .d_v = 4,
                         .causal = true,
                         .chunk_len = 4,
                         .n_chunks_before = 1}),
      ea::LSHSelfAttention({.n_heads = 2,
                            .d_qk = 4,
                            .d_v = 4,
                            .causal = true,
                            .chunk_len = 4,
                            .n_hashes = 2,
                            .n_buckets = {4}})};
  for (auto& layer : layers) {
    layer->init(sig_of({x}), key_from_seed(0));
    layer->set_update_state(false);  // LSH: the same buckets for both inputs
    const Tensor y = (*layer)(Var(x)).value();
    const Tensor y2 = (*layer)(Var(x2)).value();
    CHECK(max_abs(core::slice(y, 1, 0, 10), core::slice(y2, 1, 0, 10)) == 0.0);
    CHECK(max_abs(core::slice(y, 1, 10, 11), core::slice(y2, 1, 10, 11)) > 1e-4);
  }
}

TEST_CASE("efficient attention: fixed rotations hash as hash_vectors_with does") {
  const Tensor x = uniform(4, {1, 16, 6});
  auto layer = ea::LSHSelfAttention(
      {.n_heads = 2, .d_qk = 4, .d_v = 4, .chunk_len = 8, .n_hashes = 2, .n_buckets = {2, 4}});
  layer->init(sig_of({x}), key_from_seed(0));
  const Tensor rot = core::normal(key_from_seed(9), {4, 2, 3});  // rot_size = 2 + 4
  layer->set_fixed_rotations(rot);
  (*layer)(Var(x));
  const Tensor b1 = layer->flat_state()[0].value;
  (*layer)(Var(x));  // a new hash key, but the same fixed rotations
  CHECK(core::equal(layer->flat_state()[0].value, b1));
  // Head 1 of example 0: buckets of q = x w_q[1].
  const Tensor wq1 = core::slice(flat_values(*layer)[0], 0, 1, 2).reshape(Shape{6, 4});
  const Tensor q = core::matmul(x.reshape(Shape{16, 6}), wq1);
  const Tensor want = ea::hash_vectors_with(q, rot, {2, 4}, 2);
  CHECK(core::equal(core::slice(b1, 0, 1, 2).reshape(Shape{32}), want));
  CHECK_THROWS_AS(layer->set_fixed_rotations(core::normal(key_from_seed(9), {4, 2, 2})),
                  ShapeError);
}

TEST_CASE("efficient attention: a sequence length other than the init one works in both paths") {
  const Tensor x_init = uniform(1, {2, 16, 6});
  const Tensor x = uniform(2, {2, 24, 6});
  for (bool reference : {true, false}) {
    auto sa = ea::SelfAttention({.n_heads = 2,
                                 .d_qk = 4,
                                 .d_v = 4,
                                 .causal = true,
                                 .chunk_len = 8,
                                 .n_chunks_before = 1,
                                 .use_reference_code = reference});
    sa->init(sig_of({x_init}), key_from_seed(0));
    CHECK((*sa)(Var(x)).shape() == x.shape());
    auto lsh = ea::LSHSelfAttention({.n_heads = 2,
                                     .d_qk = 4,
                                     .d_v = 4,
                                     .chunk_len = 8,
                                     .n_hashes = 2,
                                     .n_buckets = {4},
                                     .use_reference_code = reference});
    lsh->init(sig_of({x_init}), key_from_seed(0));
    CHECK((*lsh)(Var(x)).shape() == x.shape());
    CHECK(lsh->flat_state()[0].value.shape() == Shape{4, 48});
    auto padded = ea::LSHSelfAttention({.n_heads = 2,
                                        .d_qk = 4,
                                        .d_v = 4,
                                        .chunk_len = 8,
                                        .n_hashes = 2,
                                        .n_buckets = {4},
                                        .use_reference_code = reference,
                                        .max_length_for_buckets = 32});
    padded->init(sig_of({x_init}), key_from_seed(0));
    CHECK(padded->flat_state()[0].value.shape() == Shape{4, 64});
    CHECK((*padded)(Var(x)).shape() == x.shape());
    CHECK(padded->flat_state()[0].value.shape() == Shape{4, 64});
    padded->set_update_state(false);
    CHECK((*padded)(Var(x)).shape() == x.shape());
  }
}

// =============================================================================================
// gradients and memory
// =============================================================================================

TEST_CASE("efficient attention: float64 gradcheck of SelfAttention (inputs and weights)") {
  const Tensor x = uniform(21, {1, 8, 4}, DType::f64);
  const Tensor mask = suffix_mask({6}, 8);
  struct Case {
    bool causal, share_qk, bias, masked;
    std::optional<long> chunk;
    long before;
    double dropout;
  };
  const Case cases[] = {{false, false, false, false, {}, 0, 0.0},
                        {true, false, true, false, 4, 1, 0.2},
                        {true, true, false, true, {}, 0, 0.0},
                        {false, true, true, false, 4, 1, 0.3}};
  for (const Case& c : cases) {
    for (bool reference : {true, false}) {
      CAPTURE(c.causal);
      CAPTURE(c.share_qk);
      CAPTURE(c.chunk.value_or(0));
      CAPTURE(reference);
      auto layer = ea::SelfAttention({.n_heads = 2,
                                      .d_qk = 3,
                                      .d_v = 3,
                                      .share_qk = c.share_qk,
                                      .causal = c.causal,
                                      .masked = c.masked,
                                      .chunk_len = c.chunk,
                                      .n_chunks_before = c.before,
                                      .bias = c.bias,
                                      .attention_dropout = c.dropout,
                                      .output_dropout = c.dropout / 2,
                                      .use_reference_code = reference});
      std::vector<Tensor> inputs{x};
      if (c.masked) inputs.push_back(mask);
      layer->init(sig_of(inputs), key_from_seed(3));
      // Non-zero biases, so their gradients are checked at a generic point.
      std::vector<Tensor> ws = flat_values(*layer);
      for (std::size_t i = 0; i < ws.size(); ++i) {
        if (ws[i].ndim() == 2)
          ws[i] = uniform(40 + static_cast<std::int64_t>(i), ws[i].shape(), DType::f64);
      }
      layer->set_flat_weights(ws);
      const auto r = base::gradcheck_layer(*layer, inputs, key_from_seed(5));
      CHECK_MESSAGE(r.ok, r.message);
    }
  }
}

TEST_CASE("efficient attention: float64 gradcheck of LSHSelfAttention (buckets fixed)") {
  const Tensor x = uniform(22, {1, 8, 4}, DType::f64);
  for (long n_hashes : {1L, 2L, 4L}) {
    for (bool reference : {true, false}) {
      CAPTURE(n_hashes);
      CAPTURE(reference);
      auto layer = ea::LSHSelfAttention({.n_heads = 2,
                                         .d_qk = 3,
                                         .d_v = 3,
                                         .causal = true,
                                         .chunk_len = 4,
                                         .n_chunks_before = 1,
                                         .n_hashes = n_hashes,
                                         .n_buckets = {4},
                                         .attention_dropout = 0.2,
                                         .output_dropout = 0.1,
                                         .use_reference_code = reference});
      layer->init(sig_of({x}), key_from_seed(4));
      (*layer)(Var(x));                // hash once: buckets in the state
      layer->set_update_state(false);  // then keep them while x and weights move
      const auto r = base::gradcheck_layer(*layer, {x}, key_from_seed(6));
      CHECK_MESSAGE(r.ok, r.message);
    }
  }
}

TEST_CASE("efficient attention: the memory-lean path keeps far fewer values on the tape") {
  const Tensor x = uniform(8, {2, 16, 8});
  auto stats_of = [&](base::Layer& layer) {
    Tape tape;
    Var xv = tape.watch(x);
    std::vector<Var> ws;
    for (const Tensor& w : flat_values(layer)) ws.push_back(tape.watch(w));
    layer.set_flat_weights(ws);
    Var y = fastmath::sum(layer(xv));
    const autodiff::TapeStats s = tape.stats();
    (void)tape.gradient(y, xv);
    return s;
  };
  for (int kind = 0; kind < 2; ++kind) {
    std::shared_ptr<ea::EfficientAttentionBase> ref, lean;
    if (kind == 0) {
      ref = ea::SelfAttention({.n_heads = 4,
                               .d_qk = 4,
                               .d_v = 4,
                               .causal = true,
                               .chunk_len = 4,
                               .n_chunks_before = 1,
                               .use_reference_code = true});
      lean = ea::SelfAttention({.n_heads = 4,
                                .d_qk = 4,
                                .d_v = 4,
                                .causal = true,
                                .chunk_len = 4,
                                .n_chunks_before = 1});
    } else {
      ref = ea::LSHSelfAttention({.n_heads = 4,
                                  .d_qk = 4,
                                  .d_v = 4,
                                  .chunk_len = 4,
                                  .n_hashes = 2,
                                  .n_buckets = {4},
                                  .use_reference_code = true});
      lean = ea::LSHSelfAttention(
          {.n_heads = 4, .d_qk = 4, .d_v = 4, .chunk_len = 4, .n_hashes = 2, .n_buckets = {4}});
    }
    ref->init(sig_of({x}), key_from_seed(0));
    lean->init(sig_of({x}), key_from_seed(0));
    const auto r = stats_of(*ref);
    const auto l = stats_of(*lean);
    const std::string which = kind == 0 ? "SelfAttention" : "LSHSelfAttention";
    MESSAGE(which << ": reference tape " << r.nodes << " nodes, " << r.saved_buffers << " buffers, "
                  << r.saved_bytes << " bytes; memory-lean " << l.nodes << " nodes, "
                  << l.saved_buffers << " buffers, " << l.saved_bytes << " bytes");
    CHECK(l.saved_bytes * 5 < r.saved_bytes);
    CHECK(l.nodes * 10 < r.nodes);
  }
}

// =============================================================================================
// errors
// =============================================================================================

TEST_CASE("efficient attention: errors say what to change") {
  auto message_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto contains = [](const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
  };
  // n_buckets odd or too small.
  for (long nb : {3L, 0L, 1L}) {
    const std::string m =
        message_of([&] { ea::LSHSelfAttention({.chunk_len = 8, .n_buckets = {nb}}); });
    CHECK_MESSAGE(contains(m, "n_buckets must be even and >= 2"), m);
  }
  CHECK_THROWS_AS(ea::LSHSelfAttention({.chunk_len = 8, .n_buckets = {4, 5}}), ValueError);
  CHECK_THROWS_AS(ea::LSHSelfAttention({}), ValueError);  // chunk_len required
  // Length not a multiple of chunk_len.
  {
    auto lsh = ea::LSHSelfAttention(
        {.n_heads = 1, .d_qk = 2, .d_v = 2, .chunk_len = 64, .n_buckets = {4}});
    const std::string m = message_of([&] { lsh->init({{{1, 444, 4}, DType::f32}}); });
    CHECK_MESSAGE(contains(m, "sequence length 444 is not a multiple of chunk_len 64; pad to 448"),
                  m);
    auto lsh2 = ea::LSHSelfAttention(
        {.n_heads = 1, .d_qk = 2, .d_v = 2, .chunk_len = 8, .n_hashes = 2, .n_buckets = {4}});
    lsh2->init({{{1, 8, 4}, DType::f32}});
    const std::string m2 = message_of([&] { (*lsh2)(Var(Tensor::zeros({1, 6, 4}))); });
    CHECK_MESSAGE(contains(m2, "pad to 8"), m2);
    auto sa = ea::SelfAttention({.chunk_len = 5});
    const std::string m3 = message_of([&] { sa->init({{{1, 12, 4}, DType::f32}}); });
    CHECK_MESSAGE(contains(m3, "sequence length 12 is not a multiple of chunk_len 5; pad to 15"),
                  m3);
  }
  // Adjacent chunks without chunking.
  {
    const std::string m = message_of([] { ea::SelfAttention({.n_chunks_before = 1}); });
    CHECK_MESSAGE(contains(m, "need chunk_len"), m);
  }
  // n_parallel_heads neither a multiple nor a divisor.
  CHECK_THROWS_AS(ea::SelfAttention({.n_heads = 6, .n_parallel_heads = 4}), ValueError);
  CHECK_NOTHROW(ea::SelfAttention({.n_heads = 6, .n_parallel_heads = 12}));
  // Predict mode.
  CHECK_THROWS_AS(ea::SelfAttention({.mode = Mode::predict}), ValueError);
  // Wrong d_model, wrong mask shape, mask dtype.
  {
    auto sa = ea::SelfAttention({.n_heads = 2, .d_qk = 3, .d_v = 3, .masked = true});
    sa->init({{{2, 8, 4}, DType::f32}, {{2, 8}, DType::i32}});
    const std::string m = message_of([&] {
      (*sa)({Var(Tensor::zeros({2, 8, 5})), Var(Tensor::ones({2, 8}, DType::i32))});
    });
    CHECK_MESSAGE(contains(m, "expected d_model 4"), m);
    const std::string m2 = message_of([&] {
      (*sa)({Var(Tensor::zeros({2, 8, 4})), Var(Tensor::ones({2, 7}, DType::i32))});
    });
    CHECK_MESSAGE(contains(m2, "mask of shape [batch, length] = [2, 8]"), m2);
    CHECK_THROWS_AS((*sa)({Var(Tensor::zeros({2, 8, 4})), Var(Tensor::ones({2, 8}))}),
                    base::LayerError);
  }
  // LSH state made for another batch size.
  {
    auto lsh =
        ea::LSHSelfAttention({.n_heads = 2, .d_qk = 2, .d_v = 2, .chunk_len = 4, .n_buckets = {4}});
    lsh->init({{{2, 8, 4}, DType::f32}});
    // A state-updating call with another batch gets fresh state for that batch ...
    const Tensor x3 = core::uniform(core::key_from_seed(4), {3, 8, 4});
    (void)lsh->apply({Var(x3)}, core::key_from_seed(5));
    CHECK(lsh->flat_state()[0].value.dim(0) == 6);
    // ... equal to what init with that batch and the call's key makes, then rehashes.
    auto fresh =
        ea::LSHSelfAttention({.n_heads = 2, .d_qk = 2, .d_v = 2, .chunk_len = 4, .n_buckets = {4}});
    fresh->init({{{3, 8, 4}, DType::f32}}, core::key_from_seed(5));
    fresh->set_weights(lsh->weights());
    (void)fresh->apply({Var(x3)}, core::key_from_seed(5));
    CHECK(core::max_abs_diff(lsh->flat_state()[0].value, fresh->flat_state()[0].value) == 0.0);
    // A recomputation (no state update) must match the state's batch.
    lsh->set_update_state(false);
    const std::string m = message_of([&] { (*lsh)(Var(Tensor::zeros({2, 8, 4}))); });
    CHECK_MESSAGE(contains(m, "a recomputation (update_state = false) must use the batch"), m);
  }
}
