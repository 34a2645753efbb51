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
#include "efficient_attention_test_util.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;
using base::Mode;
using base::Signature;
using base::Stack;
using core::key_from_seed;
using namespace minitrax::eatest;

namespace {

template <class Make>
void check_fast_equals_reference(const Make& make, const std::vector<Tensor>& inputs,
                                 const std::string& what) {
  const Signature sig = sig_of(inputs);
  auto ref = make(true);
  ref->init(sig, key_from_seed(123));
  const std::vector<Tensor> weights = flat_values(*ref);
  const RunResult r =
      run_forward_backward(*ref, inputs, weights, ref->state(), key_from_seed(7), key_from_seed(9));
  auto fast = make(false);
  fast->init(sig, key_from_seed(123));
  const RunResult f = run_forward_backward(*fast, inputs, weights, fast->state(), key_from_seed(7),
                                           key_from_seed(9));
  const double tol = inputs[0].dtype() == DType::f32 ? 1e-5 : 1e-11;
  check_same_run(r, f, tol, tol, what);
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
