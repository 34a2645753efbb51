// minitrax/tests/gdb/gdb_target.cpp: the program the gdb test (check_printers.py) debugs.
//
// One LSHSelfAttention layer through its reference path (use_reference_code = true:
// a loop over (example, head) calling forward_unbatched), on a deterministic input,
// recorded on a tape:
//
//   x [1, 16, 8] float32, x[0, i, j] = (8 i + j) / 100     (row 0: 0, 0.01, ..., 0.07)
//   LSHSelfAttention: 1 head, d_qk = d_v = 4, chunk_len 4, 1 chunk before,
//                     2 hashes of 4 buckets; weights and hash key from key_from_seed(0)
//
// With one example and one head, forward_unbatched runs once and its output is the
// layer's output y[0]. The program writes what it computed with Tensor::str() to the
// file named by its first argument (stdout without one), one "name: text" block each:
// x, w_q (the layer's first weight, [1, 8, 4]) and y. The gdb test compares what the
// pretty-printers read from memory with these lines, and x with numbers it knows.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "autodiff/tape.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace ea = minitrax::layers::research;

int main(int argc, char** argv) {
  constexpr std::size_t L = 16, d_model = 8;
  std::vector<float> xs(L * d_model);
  for (std::size_t k = 0; k < xs.size(); ++k) xs[k] = static_cast<float>(k) / 100.0f;
  const Tensor x0 = Tensor::from<float>({1, L, d_model}, xs);

  auto layer = ea::LSHSelfAttention({.n_heads = 1,
                                     .d_qk = 4,
                                     .d_v = 4,
                                     .chunk_len = 4,
                                     .n_chunks_before = 1,
                                     .n_chunks_after = 0,
                                     .n_hashes = 2,
                                     .n_buckets = {4},
                                     .use_reference_code = true});
  layer->init({{x0.shape(), DType::f32}}, core::key_from_seed(0));

  Tape tape;
  const Var x = tape.watch(x0);
  const Var y = (*layer)(x);  // the test breaks in forward_unbatched here

  std::ofstream file;
  if (argc > 1) file.open(argv[1]);
  std::ostream& out = argc > 1 ? static_cast<std::ostream&>(file) : std::cout;
  out << "x: " << x.value().str() << "\n";
  out << "w_q: " << layer->flat_weights().at(0).value.str() << "\n";
  out << "y: " << y.value().str() << "\n";
  return out ? 0 : 1;
}
