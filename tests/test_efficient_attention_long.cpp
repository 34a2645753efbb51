// Fast path == reference at lengths where the fast path's tiling matters
// (layers/research/efficient_attention.cpp). The other test files use sequences of 8-32
// positions, where unchunked attention is one tile; here:
//   * SelfAttention without chunking at L = 1088: query tiles of 256 rows and a last one
//     of 64, with causal attention the skipped future columns of each tile, and the
//     core's outputs handed from the forward pass to the backward pass (windows of at
//     least 1024 keys);
//   * SelfAttention without chunking at L = 640, causal: query tiles of 128 rows (the
//     causal tiling up to 1024 rows), each skipping its future columns;
//   * SelfAttention with two chunks of 544 (> 512: tiled inside the chunk) and one chunk
//     before (a window of 1088 keys from two chunks, wrapping around);
//   * LSHSelfAttention with many sorted chunks, windows before and after, 4 hash rounds,
//     factorised buckets, padding, dropout (the node that reads q and v through the sort).
// Outputs, input gradients and weight gradients agree within 1e-5 (float32) and 1e-11
// (float64); states are equal.
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using base::Mode;
using base::Signature;
using base::Stack;
using core::key_from_seed;

namespace {

void check_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = std::abs(x[i] - y[i]) / (tol + tol * std::abs(y[i]));
    if (r > worst) {
      worst = r;
      at = i;
    }
  }
  CHECK_MESSAGE(worst <= 1.0, what << ": element " << at << ": " << x[at] << " vs " << y[at]
                                   << " (ratio to tolerance " << worst << ")");
}

struct Run {
  Tensor out;
  std::vector<Tensor> state, grads;  // grads: x, then the weights
};

Run run(base::Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>& weights,
        const base::State& state) {
  Tape tape;
  Stack xs{tape.watch(inputs[0])};
  for (std::size_t i = 1; i < inputs.size(); ++i) xs.emplace_back(inputs[i]);
  std::vector<Var> ws;
  for (const Tensor& w : weights) ws.push_back(tape.watch(w));
  layer.set_flat_weights(ws);
  auto [ys, new_state] = layer.pure_fn(xs, layer.weight_vars(), state, key_from_seed(7));
  // A cotangent that is not constant, so that every output row matters differently.
  const Tensor ct = core::uniform(key_from_seed(9), ys.at(0).shape(), ys[0].dtype());
  Var total = fastmath::sum(ys[0] * Var(ct));
  autodiff::VarList wrt{xs[0]};
  wrt.insert(wrt.end(), ws.begin(), ws.end());
  return {ys[0].value(), new_state.flatten(), tape.gradient(total, wrt)};
}

template <class Make>
void check_fast_equals_reference(const Make& make, const std::vector<Tensor>& inputs,
                                 const std::string& what) {
  Signature sig;
  for (const Tensor& t : inputs) sig.push_back({t.shape(), t.dtype()});
  auto ref = make(true);
  ref->init(sig, key_from_seed(123));
  std::vector<Tensor> weights;
  for (const auto& nt : ref->flat_weights()) weights.push_back(nt.value);
  const Run r = run(*ref, inputs, weights, ref->state());
  auto fast = make(false);
  fast->init(sig, key_from_seed(123));
  const Run f = run(*fast, inputs, weights, fast->state());
  const double tol = inputs[0].dtype() == DType::f32 ? 1e-5 : 1e-11;
  check_close(f.out, r.out, tol, what + " output");
  REQUIRE(f.state.size() == r.state.size());
  for (std::size_t i = 0; i < r.state.size(); ++i) {
    CHECK_MESSAGE(core::equal(f.state[i], r.state[i]), what << " state " << i);
  }
  REQUIRE(f.grads.size() == r.grads.size());
  for (std::size_t i = 0; i < r.grads.size(); ++i) {
    check_close(f.grads[i], r.grads[i], tol, what + " gradient " + std::to_string(i));
  }
}

// [B, L] int32: 1 up to lengths[b], 0 after.
Tensor suffix_mask(const std::vector<long>& lengths, long L) {
  std::vector<std::int32_t> m;
  for (long len : lengths) {
    for (long t = 0; t < L; ++t) m.push_back(t < len ? 1 : 0);
  }
  return Tensor::from<std::int32_t>({lengths.size(), static_cast<std::size_t>(L)}, m);
}

}  // namespace

TEST_CASE("efficient attention, long sequences: SelfAttention fast path == reference") {
  const long L = 1088;
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor x = core::uniform(key_from_seed(1), {1, static_cast<std::size_t>(L), 12}, dtype);
    for (bool causal : {true, false}) {
      // float64: causal and masked only (the reference path at this length is slow).
      if (dtype == DType::f64 && !causal) continue;
      for (bool masked : {false, true}) {
        if (dtype == DType::f64 && !masked) continue;
        for (std::optional<long> chunk : {std::optional<long>(), std::optional<long>(L / 2)}) {
          std::vector<Tensor> inputs;  // not {x}: GCC 12 warns (-Warray-bounds)
          inputs.reserve(2);
          inputs.push_back(x);
          if (masked) inputs.push_back(suffix_mask({700}, L));
          auto make = [&](bool reference) {
            return ea::SelfAttention({.n_heads = 2,
                                      .d_qk = 8,
                                      .d_v = 6,
                                      .causal = causal,
                                      .masked = masked,
                                      .chunk_len = chunk,
                                      .n_chunks_before = chunk ? 1 : 0,
                                      .attention_dropout = 0.1,
                                      .output_dropout = 0.1,
                                      .n_parallel_heads = 2,
                                      .use_reference_code = reference});
          };
          check_fast_equals_reference(make, inputs,
                                      std::string("SelfAttention L 1088 ") +
                                          std::string(core::dtype_name(dtype)) +
                                          (causal ? " causal" : "") + (masked ? " masked" : "") +
                                          (chunk ? " chunk 544" : ""));
        }
      }
    }
  }
}

TEST_CASE("efficient attention, long sequences: causal SelfAttention in 128-row tiles") {
  const long L = 640;
  const Tensor x = core::uniform(key_from_seed(3), {1, static_cast<std::size_t>(L), 12});
  for (bool masked : {false, true}) {
    std::vector<Tensor> inputs;  // not {x}: GCC 12 warns (-Warray-bounds)
    inputs.reserve(2);
    inputs.push_back(x);
    if (masked) inputs.push_back(suffix_mask({333}, L));
    auto make = [&](bool reference) {
      return ea::SelfAttention({.n_heads = 2,
                                .d_qk = 8,
                                .d_v = 6,
                                .causal = true,
                                .masked = masked,
                                .attention_dropout = 0.1,
                                .output_dropout = 0.1,
                                .n_parallel_heads = 2,
                                .use_reference_code = reference});
    };
    check_fast_equals_reference(
        make, inputs, std::string("SelfAttention L 640 causal") + (masked ? " masked" : ""));
  }
}

TEST_CASE("efficient attention, long sequences: LSHSelfAttention fast path == reference") {
  const long L = 256;
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor x = core::uniform(key_from_seed(2), {2, static_cast<std::size_t>(L), 10}, dtype);
    for (long n_hashes : {1L, 4L}) {
      for (bool causal : {true, false}) {
        for (bool masked : {false, true}) {
          std::vector<Tensor> inputs;  // not {x}: GCC 12 warns (-Warray-bounds)
          inputs.reserve(2);
          inputs.push_back(x);
          // float64: 56 padded positions, so some windows hold only padding (every key
          // masked by -1e9). In float32 such rows are degenerate in the reference too
          // (s - 1e9 rounds to steps of 64: every probability becomes 1) and their
          // gradients are large and ill-conditioned; float32 keeps windows with valid keys.
          if (masked) inputs.push_back(suffix_mask({dtype == DType::f64 ? 200 : 250, L}, L));
          auto make = [&](bool reference) {
            return ea::LSHSelfAttention({.n_heads = 3,
                                         .d_qk = 8,
                                         .d_v = 5,
                                         .causal = causal,
                                         .masked = masked,
                                         .chunk_len = 16,
                                         .n_chunks_before = 1,
                                         .n_chunks_after = 1,
                                         .n_hashes = n_hashes,
                                         .n_buckets = {4, 4},
                                         .attention_dropout = 0.1,
                                         .output_dropout = 0.1,
                                         .n_parallel_heads = 6,
                                         .use_reference_code = reference});
          };
          check_fast_equals_reference(
              make, inputs,
              std::string("LSH L 256 ") + std::string(core::dtype_name(dtype)) + " n_hashes " +
                  std::to_string(n_hashes) + (causal ? " causal" : "") + (masked ? " masked" : ""));
        }
      }
    }
  }
}
