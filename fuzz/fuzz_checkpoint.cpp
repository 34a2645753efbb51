// fuzz/fuzz_checkpoint.cpp: libFuzzer target for checkpoints: training::load_checkpoint
// on a file holding the input, then training::restore_model into a small model
// (Serial(Dense(3), LayerNorm) on [1, 2] float32), whose check of names, shapes and
// dtypes must refuse anything that does not fit before it changes the model.
//
// Allowed outcomes: a loaded checkpoint, core::FileError (not a readable .npz) or
// training::CheckpointError (a readable .npz that is not a checkpoint or not this
// model's). A failed restore must leave the model's weights as they were.
#include <cstring>

#include "core/npy.hpp"
#include "core/rng.hpp"
#include "fuzz_util.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "training/checkpoint.hpp"

using namespace minitrax;

namespace {

base::LayerPtr make_model() {
  auto m = layers::Serial({layers::Dense(3), layers::LayerNorm()});
  m->init({{{1, 2}, core::DType::f32}}, core::key_from_seed(1));
  return m;
}

bool same_bytes(const core::Tensor& a, const core::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::TempFile file("fuzz_ckpt");
  static const base::LayerPtr model = make_model();
  static const std::vector<base::NamedTensor> initial = model->flat_weights();

  file.write(fuzz::as_bytes(data, size));
  training::Checkpoint ckpt;
  try {
    ckpt = training::load_checkpoint(file.path());
  } catch (const core::FileError&) {
    return 0;
  } catch (const training::CheckpointError&) {
    return 0;
  }
  try {
    training::restore_model(*model, ckpt, file.path());
  } catch (const training::CheckpointError&) {
    const auto now = model->flat_weights();
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (!same_bytes(now[i].value, initial[i].value)) {
        fuzz::invariant_failed("a refused checkpoint changed the model");
      }
    }
    return 0;
  }
  model->set_flat_weights([] {  // back to the initial weights for the next input
    std::vector<core::Tensor> w;
    for (const auto& nt : initial) w.push_back(nt.value);
    return w;
  }());
  return 0;
}
