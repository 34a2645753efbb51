// minitrax/autodiff/fastmath_nn.cpp: softmax, log_softmax, layer_norm and dropout.
//
// The pattern of fastmath_arith.cpp: forward with core/ kernels (the fused row-wise
// kernels of core/kernels.hpp), then `record` with the VJP rule beside it.
#include <string>

#include "autodiff/fastmath.hpp"
#include "core/ops.hpp"

namespace minitrax::fastmath {

using autodiff::record;
using autodiff::record1;
using autodiff::VjpContext;

Var softmax(const Var& x) {
  // y = exp(x) / sum(exp(x), -1)   =>  dx = y * (g - sum(g * y, -1))
  const Var in[] = {x};
  Tensor y = core::softmax(x.value());
  return record1("softmax", in, y, {y}, [](VjpContext& ctx) {
    ctx.accumulate(0, core::softmax_backward(ctx.saved(0), ctx.ct()));
  });
}

Var log_softmax(const Var& x) {
  // y = x - logsumexp(x, -1)   =>  dx = g - exp(y) * sum(g, -1)
  const Var in[] = {x};
  Tensor y = core::log_softmax(x.value());
  return record1("log_softmax", in, y, {y}, [](VjpContext& ctx) {
    ctx.accumulate(0, core::log_softmax_backward(ctx.saved(0), ctx.ct()));
  });
}

Var layer_norm(const Var& x, const Var& scale, const Var& bias, double eps) {
  // y = (x - mean) * rstd * scale + bias   =>  dx, dscale, dbias from one fused kernel
  const Var in[] = {x, scale, bias};
  core::LayerNormResult r = core::layer_norm(x.value(), scale.value(), bias.value(), eps);
  return record1("layer_norm", in, r.y, {x.value(), scale.value(), r.mean, r.rstd},
                 [](VjpContext& ctx) {
                   if (!ctx.needs(0) && !ctx.needs(1) && !ctx.needs(2)) return;
                   core::LayerNormGrads gr = core::layer_norm_backward(
                       ctx.saved(0), ctx.saved(1), ctx.saved(2), ctx.saved(3), ctx.ct());
                   ctx.accumulate(0, gr.dx);
                   ctx.accumulate(1, gr.dscale);
                   ctx.accumulate(2, gr.dbias);
                 });
}

Var dropout(const Var& x, const Var& mask, double keep_prob) {
  // out = x * mask / keep_prob   =>  dx = g * mask / keep_prob; the mask is not differentiated
  if (!(keep_prob > 0.0 && keep_prob <= 1.0)) {
    throw ValueError("dropout: keep_prob must be in (0, 1], got " + std::to_string(keep_prob));
  }
  core::check_floating("dropout", x.value());
  if (!mask.defined()) throw ValueError("dropout: the mask is undefined");
  (void)core::broadcast_shapes(x.shape(), mask.shape(), "dropout");
  // The mask may be given as integers or in the other float type: use x's dtype.
  const Tensor m = mask.dtype() == x.dtype() ? mask.value() : mask.value().astype(x.dtype());
  const Tensor scaled = core::mul(m, 1.0 / keep_prob);  // mask / keep_prob
  const Var in[] = {x, mask};
  std::vector<Tensor> outs{core::mul(x.value(), scaled)};
  return std::move(
      record("dropout", in, std::move(outs), {scaled},
             [](VjpContext& ctx) { ctx.accumulate(0, core::mul(ctx.ct(), ctx.saved(0))); },
             {true, false})[0]);
}

}  // namespace minitrax::fastmath
