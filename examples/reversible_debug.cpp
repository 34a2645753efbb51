// examples/reversible_debug.cpp: one training step of a reversible block with LSH attention,
// small enough to follow in gdb (docs/debugging.md, "Walkthrough: a reversible block's
// backward pass").
//
// The model is the Reformer's attention half-block alone:
//
//   ReversibleSerial([ReversibleHalfResidual([LayerNorm], LSHSelfAttention)])
//   [x1, x2] -> [y1, y2] = [x1 + LSHSelfAttention(LayerNorm(x2)), x2]
//
// x1 is the accumulator, x2 the context. The forward pass keeps nothing but the outputs;
// the backward pass (ReversibleHalfResidualLayer::reverse_and_grad) recomputes the
// residual LSHSelfAttention(LayerNorm(x2)) from y2 = x2 on a private tape, turns the
// output back into the input (x1 = y1 - residual) and differentiates the residual there.
// During that recomputation the attention layer runs with update_state = false: it does
// not hash again but reuses the buckets the forward pass stored in its state, so the
// recomputed residual is the one the forward pass added.
//
// The program prints x1, x2, the buckets the forward pass stored and the loss before and
// after one SGD step, with Tensor::str(), so what gdb shows can be compared with them:
//
//   cmake --preset debug && cmake --build --preset debug --target reversible_debug
//   tools/gdb/sessions/run.sh build/debug reversible     (the session of docs/debugging.md)
//   gdb --args build/debug/examples/reversible_debug      (your own)
//
// The inputs: x1 is the course lab's x = uniform(PRNGKey(0), (1, 8, 5)); x2 is
// uniform(PRNGKey(1), (1, 8, 5)). The attention layer uses the reference path
// (use_reference_code: one forward_unbatched call per example and head), one head,
// 2 hash rounds of 4 buckets, causal, chunks of 4 that also see the chunk before.
#include <iostream>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "layers/core.hpp"
#include "layers/research/efficient_attention.hpp"
#include "layers/reversible.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
namespace research = minitrax::layers::research;
using autodiff::Var;
using autodiff::VarList;
using core::DType;
using core::Tensor;

int main() try {
  // The inputs: the accumulator x1 (the lab's x) and the context x2.
  const Tensor x1 = core::uniform(core::key_from_seed(0), {1, 8, 5});
  const Tensor x2 = core::uniform(core::key_from_seed(1), {1, 8, 5});
  std::cout << "x1: " << x1.str() << "\n";
  std::cout << "x2: " << x2.str() << "\n";

  // The block: HalfResidual(LayerNorm, LSHSelfAttention), the attention on its reference path.
  research::LSHSelfAttentionOptions opt;
  opt.n_heads = 1;
  opt.d_qk = 3;
  opt.d_v = 4;
  opt.causal = true;
  opt.chunk_len = 4;
  opt.n_chunks_before = 1;
  opt.n_chunks_after = 0;
  opt.n_hashes = 2;
  opt.n_buckets = {4};
  opt.attention_dropout = 0.0;
  opt.output_dropout = 0.0;
  opt.use_reference_code = true;
  const auto attention = research::LSHSelfAttention(opt);
  const auto model =
      layers::ReversibleSerial({layers::ReversibleHalfResidual({layers::LayerNorm()}, attention)});
  model->init({{x1.shape(), DType::f32}, {x2.shape(), DType::f32}}, core::key_from_seed(1));
  const core::Key rng = core::key_from_seed(2);

  // The loss of one step: mean(y1^2), differentiated with respect to the flat weights.
  std::vector<Tensor> weights;
  for (const auto& w : model->flat_weights()) weights.push_back(w.value);
  auto loss_of = [&](const VarList& w) {
    model->set_flat_weights(w);
    const base::Stack y = model->apply({Var(x1), Var(x2)}, rng);
    return VarList{fm::mean(fm::square(y[0])), y[0]};
  };

  // Forward pass: hashes x2's queries and stores the buckets in the attention layer's state.
  std::cout << "== forward\n";
  autodiff::VjpResult step = autodiff::vjp(loss_of, weights);
  std::cout << "loss: " << step.outputs[0].str() << "\n";
  std::cout << "y1: " << step.outputs[1].str() << "\n";
  std::cout << "stored buckets: " << attention->state()[0].leaf().str(100) << "\n";

  // Backward pass: reverse_and_grad rebuilds x1 from y1 and differentiates the residual.
  std::cout << "== backward\n";
  const std::vector<Tensor> grads =
      step.pullback({Tensor::ones({}, DType::f32), Tensor::zeros_like(step.outputs[1])});

  // The SGD step, then the loss again with the new weights.
  const double learning_rate = 0.5;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    weights[i] = core::sub(weights[i], core::mul(grads[i], learning_rate));
  }
  model->set_flat_weights(weights);
  std::cout << "== after one SGD step (learning rate " << learning_rate << ")\n";
  const base::Stack y = model->apply({Var(x1), Var(x2)}, rng);
  std::cout << "loss: " << fm::mean(fm::square(y[0])).value().str() << "\n";
  return 0;
} catch (const std::exception& e) {
  // minitrax reports bad input and failed files with exceptions (core/error.hpp): say
  // what went wrong and exit 1, as the main job does, instead of std::terminate.
  std::cerr << "reversible_debug: error: " << e.what() << "\n";
  return 1;
}
